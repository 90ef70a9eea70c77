import Foundation
import Synchronization

/// The live-control socket of a running controller (`STATE/ctl.sock`, owner-only): one
/// line in (`pause`, `continue`, `abort`, `skip HOST`, `set max-parallel N`), one line out.
/// Connections from any other user are refused (peer credentials checked).
public final class ControlServer: Sendable {
    /// The socket's path.
    public let path: URL
    /// The run this controller drives: a command naming another run is refused.
    public let runID: String
    let handle: @Sendable (String) -> String
    /// The listening socket, -1 once closed. The accept thread closes it when stop() has
    /// shut it down: closed by stop() itself, its number could be reused by another socket
    /// before the thread reached accept(), which would then serve that socket's clients.
    private let listener = Mutex<Int32>(-1)

    /// A server that answers each command line with what `handle` returns (`ok`, or
    /// `error: …`); nothing listens until ``start()``.
    public init(socket path: URL, runID: String, handle: @escaping @Sendable (String) -> String) {
        self.path = path
        self.runID = runID
        self.handle = handle
    }

    /// A server for a run of `hosts`: a known command goes to `send` as its policy event
    /// (with the line as typed) and is answered `ok`; any other is refused with the list
    /// of commands.
    public convenience init(socket path: URL, runID: String, hosts: [String],
                            send: @escaping @Sendable (String, RolloutPolicy.Event) -> Void) {
        self.init(socket: path, runID: runID) { command in
            guard let event = Self.event(command, hosts: hosts) else {
                return "error: unknown command '\(command)' (pause, continue, abort, skip HOST, set max-parallel N)"
            }
            send(command, event)
            return "ok"
        }
    }

    /// Maps a command line to a policy event; nil for an unknown command or host.
    public static func event(_ command: String, hosts: [String]) -> RolloutPolicy.Event? {
        let words = command.split(separator: " ").map(String.init)
        switch words.first {
        case "pause" where words.count == 1: return .pause
        case "continue" where words.count == 1: return .resume
        case "abort" where words.count == 1: return .abort
        case "skip" where words.count == 2: return hosts.firstIndex(of: words[1]).map { .skip($0) }
        case "set" where words.count == 3 && words[1] == "max-parallel":
            return Int(words[2]).flatMap { $0 >= 1 ? .setMaxParallel($0) : nil }
        default: return nil
        }
    }

    /// Listens on the socket (replacing a stale one) and serves commands one at a time
    /// on a thread of its own.
    /// - Throws: ``ControlSocketError`` when the socket cannot be created or bound.
    public func start() throws {
        unlink(path.path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(message: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw ControlSocketError(message: "the control socket path is too long: \(path.path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        // Owner-only from the start: no window where another user could connect.
        let previous = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previous)
        guard bound == 0, listen(fd, 8) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw ControlSocketError(message: "cannot listen on \(path.path): \(message)")
        }
        listener.withLock { $0 = fd }
        let thread = Thread { [self] in acceptLoop(fd) }
        thread.name = "flotilla.ctl"
        thread.start()
    }

    private func acceptLoop(_ socket: Int32) {
        while true {
            let client = accept(socket, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                // Shut down by stop() (or broken): the socket is this thread's to close.
                listener.withLock { fd in
                    close(fd)
                    fd = -1
                }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC) // a program started meanwhile must not keep the connection open
            serve(client)
            close(client)
        }
    }

    private func serve(_ client: Int32) {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (glibc declares it only with _GNU_SOURCE).
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, UInt32.max, UInt32.max)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(client, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.uid == geteuid() else {
            Self.send(client, "error: only the controller's owner may control this run\n")
            return
        }
        guard let line = Self.readLine(client) else { return }
        var words = line.split(separator: " ").map(String.init)
        // `RUN command...`: the run must be this one.
        if let first = words.first, first.first?.isNumber == true {
            guard first == runID else {
                Self.send(client, "error: the running run is \(runID), not \(first)\n")
                return
            }
            words.removeFirst()
        }
        Self.send(client, handle(words.joined(separator: " ")) + "\n")
    }

    /// Stops listening and removes the socket.
    public func stop() {
        // Wakes the accept thread (or fails its next accept), which then closes the socket.
        listener.withLock { fd in
            if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
        }
        unlink(path.path)
    }

    private static func readLine(_ fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while bytes.count < 4096 {
            let count = read(fd, &byte, 1)
            if count < 0 && errno == EINTR { continue } // a signal (a child's SIGCHLD, say) is not the end of the line
            guard count == 1, byte != UInt8(ascii: "\n") else { break }
            bytes.append(byte)
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }

    private static func send(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        _ = write(fd, &bytes, bytes.count)
    }

    /// Sends one command to the controller of `stateDir` and returns its answer.
    /// - Throws: ``ControlSocketError`` when no controller listens there or the socket
    ///   refuses this user.
    public static func request(stateDir: URL, _ line: String) throws -> String {
        let path = stateDir.appendingPathComponent("ctl.sock").path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in Array(path.utf8).prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            if errno == EACCES || errno == EPERM {
                throw ControlSocketError(message: "cannot reach the run's control socket \(path): \(String(cString: strerror(errno))) (only the controller's owner may control it)")
            }
            throw ControlSocketError(message: "no run is in progress in \(stateDir.path) (nothing listens on \(path))")
        }
        send(fd, line + "\n")
        return readLine(fd) ?? "error: no answer"
    }
}

/// The control socket could not be set up or reached.
public struct ControlSocketError: Error, CustomStringConvertible {
    /// What went wrong, with the socket's path.
    public var message: String
    public var description: String { message }
}
