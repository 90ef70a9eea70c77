/// Which output stream of a remote command bytes came from.
public enum RemoteStream: String, Sendable {
    case stdout, stderr
}

/// The last `limit` bytes of a stream, and how many bytes it carried in all: what is
/// kept in memory of a command's output, however much the remote prints.
public struct TailBuffer: Sendable, Equatable {
    public let limit: Int
    public private(set) var total = 0
    private var storage: [UInt8] = []
    private var start = 0

    public init(limit: Int) { self.limit = max(0, limit) }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        total += bytes.count
        guard limit > 0 else { return }
        if bytes.count >= limit {
            storage = Array(bytes[(bytes.count - limit)...])
            start = 0
            return
        }
        if storage.count < limit {
            let room = limit - storage.count
            storage.append(contentsOf: bytes.prefix(room))
            guard bytes.count > room else { return }
            for byte in bytes.dropFirst(room) {
                storage[start] = byte
                start = (start + 1) % limit
            }
            return
        }
        for byte in bytes {
            storage[start] = byte
            start = (start + 1) % limit
        }
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// The kept bytes, oldest first.
    public var bytes: [UInt8] { Array(storage[start...] + storage[..<start]) }

    /// Whether bytes were dropped from the front.
    public var truncated: Bool { total > storage.count }

    /// The kept bytes as text; invalid UTF-8 becomes U+FFFD.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// What a remote command did. A non-zero exit is a result, not an error.
public struct CommandResult: Sendable {
    public var exitStatus: Int32?
    /// The signal that ended the command (`TERM`, `KILL`, ...), if one did.
    public var exitSignal: String?
    /// The per-command timeout passed; the channel was closed.
    public var timedOut = false
    public var stdout: TailBuffer
    public var stderr: TailBuffer
    public var duration: Duration = .zero
}
