import CLibSSH2

/// Process-wide libssh2 state.
///
/// libssh2 must be initialised exactly once before any session is created; `initialize()`
/// does that on first use and is safe to call from any thread.
public enum LibSSH2 {
    private static let initResult: Int32 = libssh2_init(0)

    /// Initialises libssh2 once for the whole process.
    /// - Throws: `SSHError` when the crypto backend cannot be initialised.
    public static func initialize() throws {
        if initResult != 0 {
            throw SSHError(code: .initFailed, libssh2Code: initResult, message: "libssh2_init failed", operation: "init")
        }
    }

    /// The version of the libssh2 library this process runs with, e.g. `1.10.0`.
    public static var version: String {
        guard let cString = libssh2_version(0) else { return "unknown" }
        return String(cString: cString)
    }
}

/// An SSH failure, as an open struct so new kinds never break callers' switches.
public struct SSHError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
        public static let initFailed = Code("init")
        /// The TCP connection was refused, reset or could not be routed.
        public static let connectFailed = Code("connect")
        /// The connect timeout (TCP, banner, key exchange and authentication) passed.
        public static let timeout = Code("timeout")
        /// Key exchange or the SSH protocol itself failed (no banner, bad packet...).
        public static let protocolError = Code("protocol")
        /// The host key is not in known_hosts (strict checking).
        public static let hostKeyUnknown = Code("host key unknown")
        /// The host key differs from the one known_hosts holds.
        public static let hostKeyChanged = Code("host key changed")
        /// A private key file named for the host does not exist or cannot be read.
        public static let keyFile = Code("key file")
        /// The passphrase does not decrypt the private key.
        public static let passphrase = Code("passphrase")
        /// The server refused every credential offered.
        public static let authDenied = Code("auth denied")
        /// No credential left to try that the server accepts.
        public static let noAuthMethod = Code("no auth method")
        /// The session broke (connection lost) while in use.
        public static let disconnected = Code("disconnected")
        /// The session was gone before a command could start (no channel opened): the
        /// command did not run, so running it over a new session is safe.
        public static let notStarted = Code("not started")
        /// A channel operation failed.
        public static let channel = Code("channel")
        /// An SFTP transfer failed (the message names the path and the reason).
        public static let sftp = Code("sftp")
    }

    public var code: Code
    /// The raw (negative) libssh2 error code, when libssh2 reported one.
    public var libssh2Code: Int32?
    public var message: String
    public var host: String?
    public var operation: String

    public init(code: Code, libssh2Code: Int32? = nil, message: String, host: String? = nil, operation: String) {
        self.code = code
        self.libssh2Code = libssh2Code
        self.message = message
        self.host = host
        self.operation = operation
    }

    public var description: String {
        var text = host.map { "\($0): " } ?? ""
        text += "\(operation): \(message)"
        if let libssh2Code { text += " (libssh2 \(libssh2Code))" }
        return text
    }
}
