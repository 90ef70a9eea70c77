import Foundation

/// How the engine reaches hosts. The CLI implements it over libssh2 sessions; tests use
/// fakes. FlotillaCore never talks to libssh2 itself.
public protocol HostTransport: Sendable {
    /// Opens a session to the host with this index of the run's host list.
    /// - Throws: `TransportError` (`unreachable` when no session could be set up).
    func connect(_ host: Int) async throws -> any HostConnection
}

/// One host's session: steps run as channels on it.
public protocol HostConnection: Sendable {
    /// Runs `command` (through sudo when `become` and the host's settings allow), streaming
    /// its output to `output` as it arrives. A command that exits non-zero is a result.
    /// - Throws: `TransportError` when the session broke (`connectionLost`).
    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome
    /// Fetches every remote file matching `glob` (a directory and a `*` pattern) into
    /// `directory`; returns the remote paths fetched.
    func fetch(glob: String, into directory: URL) async throws -> [String]
    func close() async
}

public enum OutputKind: Sendable { case stdout, stderr }

/// What a remote command did.
public struct StepOutcome: Sendable {
    public var exitStatus: Int32?
    public var exitSignal: String?
    public var stdoutTail: String
    public var stderrTail: String
    public var timedOut: Bool

    public init(exitStatus: Int32?, exitSignal: String? = nil, stdoutTail: String = "", stderrTail: String = "", timedOut: Bool = false) {
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
        self.stdoutTail = stdoutTail
        self.stderrTail = stderrTail
        self.timedOut = timedOut
    }
}

/// A transport failure, classified for the engine's reconnect policy.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// No session could be set up: refused, timeout, host key, authentication.
        case unreachable
        /// The session broke while in use.
        case connectionLost
        /// The session was gone before the command started: it did not run, and may be
        /// run over a new session.
        case notStarted
        /// Anything else (SFTP errors, a missing file).
        case other
    }

    public var kind: Kind
    public var message: String
    /// Whether retrying the connection may help (network trouble, not a host key or
    /// authentication refusal).
    public var retryable: Bool

    public init(_ kind: Kind, _ message: String, retryable: Bool = false) {
        self.kind = kind
        self.message = message
        self.retryable = retryable
    }

    public var description: String { message }
}
