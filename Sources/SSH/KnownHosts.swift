import CLibSSH2
import Foundation
import Glibc
import Synchronization

/// A host key algorithm as libssh2, known_hosts and OpenSSH name it.
struct HostKeyType: Sendable {
    let libssh2Type: Int32
    let knownHostMask: Int32
    let name: String
    /// Algorithms to offer for it in key exchange, best first.
    let algorithms: [String]

    static let all: [HostKeyType] = [
        HostKeyType(libssh2Type: LIBSSH2_HOSTKEY_TYPE_ED25519, knownHostMask: LIBSSH2_KNOWNHOST_KEY_ED25519,
                    name: "ssh-ed25519", algorithms: ["ssh-ed25519"]),
        HostKeyType(libssh2Type: LIBSSH2_HOSTKEY_TYPE_ECDSA_256, knownHostMask: LIBSSH2_KNOWNHOST_KEY_ECDSA_256,
                    name: "ecdsa-sha2-nistp256", algorithms: ["ecdsa-sha2-nistp256"]),
        HostKeyType(libssh2Type: LIBSSH2_HOSTKEY_TYPE_ECDSA_384, knownHostMask: LIBSSH2_KNOWNHOST_KEY_ECDSA_384,
                    name: "ecdsa-sha2-nistp384", algorithms: ["ecdsa-sha2-nistp384"]),
        HostKeyType(libssh2Type: LIBSSH2_HOSTKEY_TYPE_ECDSA_521, knownHostMask: LIBSSH2_KNOWNHOST_KEY_ECDSA_521,
                    name: "ecdsa-sha2-nistp521", algorithms: ["ecdsa-sha2-nistp521"]),
        HostKeyType(libssh2Type: LIBSSH2_HOSTKEY_TYPE_RSA, knownHostMask: LIBSSH2_KNOWNHOST_KEY_SSHRSA,
                    name: "ssh-rsa", algorithms: ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
    ]

    init(libssh2Type: Int32, knownHostMask: Int32, name: String, algorithms: [String]) {
        self.libssh2Type = libssh2Type
        self.knownHostMask = knownHostMask
        self.name = name
        self.algorithms = algorithms
    }

    init(libssh2Type: Int32) {
        self = Self.all.first { $0.libssh2Type == libssh2Type }
            ?? HostKeyType(libssh2Type: libssh2Type, knownHostMask: LIBSSH2_KNOWNHOST_KEY_UNKNOWN, name: "unknown", algorithms: [])
    }
}

/// A known_hosts file read through libssh2's knownhost API (plain, hashed and
/// `[host]:port` entries), with the line of every entry kept for messages.
final class KnownHosts {
    enum Check {
        case match
        /// A different key of the same type; the known_hosts line holding it.
        case mismatch(line: Int?)
        case notFound
    }

    private let handle: OpaquePointer
    /// The key (base64) of each entry read, with its line.
    private var lines: [(key: String, line: Int)] = []

    /// Reads the entries of `file` that may be about `address`:`port` (a missing file is
    /// an empty one): those naming it, hashed ones and patterns. Lines libssh2 cannot read
    /// (comments, `@cert-authority` markers, malformed lines) are skipped.
    init(file: String, address: String, port: Int, session: OpaquePointer) throws {
        guard let handle = libssh2_knownhost_init(session) else {
            throw SSHError(code: .protocolError, message: "libssh2 could not allocate known hosts", operation: "host key")
        }
        self.handle = handle
        let names = Set([address.lowercased(), "[\(address.lowercased())]:\(port)"])
        for entry in try Self.entries(of: file) where entry.hosts.contains(where: { names.contains($0) || $0.hasPrefix("|") || $0.contains(where: "*?!".contains) }) {
            let added = entry.text.withCString { libssh2_knownhost_readline(handle, $0, strlen($0), LIBSSH2_KNOWNHOST_FILE_OPENSSH) }
            if added == 0 { lines.append((entry.key, entry.line)) }
        }
    }

    /// A known_hosts line: its host names or patterns (lowercased), its key, its number.
    private struct Entry {
        var text: String
        var hosts: [String]
        var key: String
        var line: Int
    }

    /// The entries of each file read so far, with the bytes they were read from: every
    /// session of a wide run shares one parsing (a 1,000-host run would otherwise parse
    /// the file a thousand times), and a file that changed is parsed again.
    private static let read = Mutex<[String: (data: Data, entries: [Entry])]>([:])

    private static func entries(of file: String) throws -> [Entry] {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return [] }
            // Any other failure (too many open files, say): an empty reading would call
            // every host key unknown.
            throw SSHError(code: .protocolError, message: "cannot read \(file): \(String(cString: strerror(errno)))", operation: "host key")
        }
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
        if let cached = read.withLock({ $0[file] }), cached.data == data { return cached.entries }
        var entries: [Entry] = []
        var number = 0
        for line in data.split(separator: 10, omittingEmptySubsequences: false) {
            number += 1
            let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty, !text.hasPrefix("#"), !text.hasPrefix("@") else { continue }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 3 else { continue }
            entries.append(Entry(text: text, hosts: fields[0].lowercased().split(separator: ",").map(String.init), key: String(fields[2]), line: number))
        }
        read.withLock { $0[file] = (data, entries) }
        return entries
    }

    deinit { libssh2_knownhost_free(handle) }

    func check(address: String, port: Int, key: UnsafePointer<CChar>, length: Int, type: HostKeyType) -> Check {
        var entry: UnsafeMutablePointer<libssh2_knownhost>?
        let mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | type.knownHostMask
        switch libssh2_knownhost_checkp(handle, address, Int32(port), key, length, mask, &entry) {
        case LIBSSH2_KNOWNHOST_CHECK_MATCH:
            return .match
        case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
            let stored = entry.flatMap { $0.pointee.key }.map { String(cString: $0) }
            return .mismatch(line: lines.first { $0.key == stored }?.line)
        default:
            return .notFound
        }
    }

    /// Host key algorithms to offer, those known_hosts holds for this host first (as
    /// OpenSSH does), so a host known by its ECDSA key is not asked for its ed25519 one.
    func preferredHostKeyAlgorithms(address: String, port: Int) -> String {
        // A probe key of each type: a "mismatch" means an entry of that type exists.
        let probe = [CChar](repeating: 65, count: 16)
        var known: [HostKeyType] = []
        var unknown: [HostKeyType] = []
        for type in HostKeyType.all {
            if case .mismatch = check(address: address, port: port, key: probe, length: probe.count, type: type) {
                known.append(type)
            } else {
                unknown.append(type)
            }
        }
        return (known + unknown).flatMap(\.algorithms).joined(separator: ",")
    }

    /// Appends `[host]:port type key` to `file` under an exclusive lock, so many hosts
    /// accepted at once never interleave or tear lines. Creates the file owner-only.
    static func append(target: String, type: HostKeyType, key: UnsafeRawBufferPointer, to file: String) throws {
        let directory = (file as NSString).deletingLastPathComponent
        if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let fd = Glibc.open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SSHError(code: .protocolError, message: "cannot write \(file): \(String(cString: strerror(errno)))", operation: "host key")
        }
        defer { Glibc.close(fd) }
        flock(fd, LOCK_EX)
        defer { flock(fd, LOCK_UN) }
        var line = "\(target) \(type.name) \(Data(key).base64EncodedString())\n"
        var info = stat()
        if fstat(fd, &info) == 0, info.st_size > 0 {
            var last: UInt8 = 0
            let reader = Glibc.open(file, O_RDONLY | O_CLOEXEC)
            if reader >= 0 {
                _ = pread(reader, &last, 1, info.st_size - 1)
                Glibc.close(reader)
            }
            if last != 10 { line = "\n" + line }
        }
        let written = line.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written == line.utf8.count else {
            throw SSHError(code: .protocolError, message: "cannot append to \(file): \(String(cString: strerror(errno)))", operation: "host key")
        }
    }
}

public enum PrivateKeyFile {
    /// Whether a private key file holds an RSA key (PEM or OpenSSH format).
    public static func isRSA(_ path: String) -> Bool {
        // Only a hint for a refusal's message: an unreadable file is reported by libssh2.
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        if text.contains("BEGIN RSA PRIVATE KEY") { return true }
        // The public half (with its key type) is stored unencrypted.
        return openSSHKey(text)?.range(of: Data("ssh-rsa".utf8)) != nil
    }

    /// Whether a private key file is passphrase-protected (OpenSSH or PEM format).
    public static func isEncrypted(_ path: String) -> Bool {
        // An unreadable file is not known to be encrypted: using it then says why it failed.
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        if text.contains("ENCRYPTED") { return true }
        guard let data = openSSHKey(text), data.count > 19 else { return false }
        // "openssh-key-v1\0", then a length-prefixed cipher name.
        let bytes = [UInt8](data)
        let length = Int(bytes[15]) << 24 | Int(bytes[16]) << 16 | Int(bytes[17]) << 8 | Int(bytes[18])
        guard length > 0, 19 + length <= bytes.count else { return false }
        return String(decoding: bytes[19..<(19 + length)], as: UTF8.self) != "none"
    }

    /// The decoded body of an OpenSSH-format private key file, nil for other formats.
    private static func openSSHKey(_ text: String) -> Data? {
        guard text.contains("BEGIN OPENSSH PRIVATE KEY") else { return nil }
        return Data(base64Encoded: text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())
    }
}
