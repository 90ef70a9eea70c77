import FlotillaCore
import Foundation
import Glibc
import SSH

/// One host's outcome of a remote command, as `ping` and `exec` report it.
public struct HostOutcome: Sendable {
    public var name: String
    public var address: String
    public var exitStatus: Int32?
    public var exitSignal: String?
    public var stdout = ""
    public var stderr = ""
    public var truncated = false
    public var error: String?
    public var errorKind: String?
    public var duration: Duration = .zero
    public var timings: SSHSession.Timings?
    public var hostKeyWarning: String?
    public var log: String?

    /// The session was set up (connected, host key accepted, logged in).
    public var connected = false

    public init(name: String, address: String) {
        self.name = name
        self.address = address
    }

    public var succeeded: Bool { error == nil && exitStatus == 0 }
    /// The connection never got as far as running anything.
    public var unreachable: Bool { !connected }
}

/// Ad-hoc fan-out: sessions to many hosts at once.
public enum Fleet {
    /// Connections being set up at once (TCP, key exchange, authentication); sessions
    /// already up are not counted. A thousand handshakes started together share the CPU
    /// (the controller's and, on small machines, the hosts') so evenly that none finishes
    /// within its connect timeout; queued, each gets its timeout from when it starts.
    static let connecting = AsyncSemaphore(permits: 32)

    /// Connects, counting against ``connecting`` only while the connection is set up.
    public static func connect(_ options: SSHSession.Options, through jumps: [SSHSession.Options]) async throws -> SSHSession {
        try await connecting.withPermit {
            try checkDescriptorsLeft(for: options.name)
            return try await SSHSession.connect(options, through: jumps)
        }
    }

    /// Connects, runs `body` with the session and closes it however `body` ends
    /// (returning, throwing, or cancelled).
    public static func withSession<T>(_ options: SSHSession.Options, through jumps: [SSHSession.Options],
                                      isolation: isolated (any Actor)? = #isolation,
                                      _ body: (SSHSession) async throws -> T) async throws -> T {
        try await connect(options, through: jumps).closing(body)
    }

    /// A session needs a few descriptors at once (its socket, its key file, libssh2's and
    /// OpenSSL's own); without them libssh2 fails in ways that blame the host ("denied",
    /// "unable to exchange keys"). Says plainly when the process is out of them.
    static func checkDescriptorsLeft(for host: String) throws {
        var probes: [Int32] = []
        defer { probes.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                var limit = rlimit()
                getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
                throw SSHError(code: .connectFailed, message: "no file descriptor left for a new session: \(String(cString: strerror(errno))) (limit \(limit.rlim_cur)); raise ulimit -n or lower --forks/--max-parallel",
                               host: host, operation: "connect")
            }
            probes.append(fd)
        }
    }

    /// Runs `body` for every host with at most `forks` at once: fill up to the limit,
    /// then one in, one out. Results keep the hosts' order.
    public static func each<Result: Sendable>(_ count: Int, forks: Int, _ body: @escaping @Sendable (Int) async -> Result) async -> [Result] {
        await withTaskGroup(of: (Int, Result).self) { group in
            var results = [Result?](repeating: nil, count: count)
            var next = 0
            while next < min(forks, count) {
                let index = next
                group.addTask { (index, await body(index)) }
                next += 1
            }
            for await (index, outcome) in group {
                results[index] = outcome
                if next < count {
                    let index = next
                    group.addTask { (index, await body(index)) }
                    next += 1
                }
            }
            return results.map { $0! }
        }
    }

    /// Connects to one host, runs `command`, and closes, whatever happens. Every failure
    /// becomes the host's outcome, never an exception.
    static func run(_ command: String, host: Inventory.Host, settings: ConnectionSettings, options: SSHSession.Options,
                    jumps: [SSHSession.Options], timeout: Duration?, tailLimit: Int, log: URL?,
                    openLog: (String) throws -> Int32) async -> HostOutcome {
        var outcome = HostOutcome(name: host.name, address: settings.address)
        let clock = ContinuousClock()
        let start = clock.now
        if let problem = settings.problems.first {
            outcome.error = problem
            outcome.errorKind = "settings"
            return outcome
        }
        // A log that cannot be created leaves the host without its full output, as the
        // summary's tails still show; the command runs all the same.
        let writer = log.flatMap { url in (try? openLog(url.path)).map { LogWriter(fd: $0) } }
        do {
            let result = try await Fleet.withSession(options, through: jumps) { session in
                outcome.connected = true
                outcome.timings = await session.timings
                outcome.hostKeyWarning = await session.hostKeyWarning
                let (remote, stdin) = Become.wrap(command, become: settings.become, user: settings.becomeUser,
                                                  password: settings.becomePassword?.value)
                return try await session.run(remote, stdin: stdin, timeout: timeout, tailLimit: tailLimit) { stream, bytes in
                    writer?.write(stream, bytes)
                }
            }
            outcome.exitStatus = result.exitStatus
            outcome.exitSignal = result.exitSignal
            outcome.stdout = result.stdout.text
            outcome.stderr = result.stderr.text
            outcome.truncated = result.stdout.truncated || result.stderr.truncated
            if result.timedOut {
                outcome.error = "timeout: the command ran longer than \(timeout.map { "\($0.components.seconds)" } ?? "?") s (channel closed)"
                outcome.errorKind = "timeout-command"
            } else if let signal = result.exitSignal {
                outcome.error = "killed by signal \(signal)"
                outcome.errorKind = "signal"
            }
        } catch let error as SSHError {
            outcome.error = error.message
            outcome.errorKind = error.code.rawValue
        } catch {
            outcome.error = "\(error)"
            outcome.errorKind = "internal"
        }
        writer?.close()
        outcome.log = log?.path
        outcome.duration = clock.now - start
        return outcome
    }
}

/// A host's full output, written as it arrives (to an owner-only file its creator opened).
final class LogWriter: @unchecked Sendable {
    // @unchecked: written only from the host's session loop, one callback at a time.
    private let handle: FileHandle

    init(fd: Int32) {
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    func write(_ stream: RemoteStream, _ bytes: UnsafeRawBufferPointer) {
        // stdout and stderr interleave in one file; stderr lines are not marked, so the
        // bytes stay exactly as the host sent them. A failed write (a full disk) must not
        // fail the host's command: the command's own outcome is what is reported.
        // (FileHandle.write(_: Data) would trap instead.)
        try? handle.write(contentsOf: Data(bytes))
    }

    /// Closes the file; a failure to close a log changes nothing for the host's outcome.
    func close() { try? handle.close() }
}
