import FlotillaCore
import Foundation

/// What `up` records in `lab.json`, so `status` and `down` find exactly what it started.
struct LabRecord: Codable {
    struct Process: Codable {
        var pid: Int32
        /// The process start time (/proc/PID/stat field 22), so a recycled pid is never killed.
        var startTime: UInt64
        var role: String
    }

    struct Host: Codable {
        var name: String
        var address: String
        var port: Int
        var dir: String
        var unreachable: HostFaults.Unreachable?
        var processes: [Process] = []
    }

    var dir: String
    var createdAt: Date
    var state: String
    var hosts: [Host]
}

/// Process bookkeeping by pid and start time.
enum ProcessTable {
    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        // Field 22 overall is index 19 after the pid and the comm.
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Whether the recorded process is still the one the lab started (and not a zombie).
    static func isAlive(_ process: LabRecord.Process) -> Bool {
        guard let start = startTime(of: process.pid), start == process.startTime else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(process.pid)/stat", encoding: .utf8)) ?? ""
        return stat.lastIndex(of: ")").map { stat[stat.index($0, offsetBy: 2)] != "Z" } ?? false
    }

    static func children(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Starts a detached process (own session, stdin from /dev/null, output to `log`).
    static func spawnDetached(_ argv: [String], log: URL) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The host outlives this command: it must not hold any other descriptor open (a
        // caller's pipe would then never see its end).
        // (posix_spawn_file_actions_addclosefrom_np is not imported into Swift.)
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd) // glibc ignores fds closed meanwhile
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new session (POSIX_SPAWN_SETSID, not imported into Swift), no blocked signals and
        // default dispositions: the caller's mask must not make the host deaf to SIGTERM.
        posix_spawnattr_setflags(&attributes, Int16(0x80 | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var pid: pid_t = 0
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, environ)
        guard result == 0 else { throw LabError.failed("cannot start \(argv[0]): \(String(cString: strerror(result)))") }
        return pid
    }
}

/// What a finished program printed and how it exited.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion, feeding it `input` and then the end of its stdin.
func runProcess(_ argv: [String], input: String = "") throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0])
    process.arguments = Array(argv.dropFirst())
    let output = Pipe(), errors = Pipe(), stdin = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = stdin
    do {
        try process.run()
    } catch {
        throw LabError.failed("cannot run \(argv[0]): \(error.localizedDescription)")
    }
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try? stdin.fileHandleForWriting.close()
    // Drain stderr on another thread so a full pipe never blocks the child.
    let errData = DataBox()
    let group = DispatchGroup()
    DispatchQueue.global().async(group: group) { errData.value = errors.fileHandleForReading.readDataToEndOfFile() }
    let outData = output.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.value, as: UTF8.self))
}

private final class DataBox: @unchecked Sendable {
    // @unchecked: written by one thread before the DispatchGroup wait, read after it.
    var value = Data()
}

/// Runs a helper program that must succeed and returns its output.
@discardableResult
func runTool(_ argv: [String], input: String? = nil) throws -> String {
    let result = try runProcess(argv, input: input ?? "")
    guard result.status == 0 else {
        throw LabError.failed("\(argv[0]) failed (exit \(result.status)): \(result.stderr)")
    }
    return result.stdout
}

/// TCP probes of lab hosts.
enum Probe {
    enum Answer: String { case banner = "ssh", silent, refused }

    /// Connects and waits up to `timeout` for an SSH banner.
    static func check(address: String, port: Int, timeout: Double) -> Answer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .refused }
        defer { close(fd) }
        guard withSocketAddress(address, port, { connect(fd, $0, $1) }) == 0 else { return .refused }
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { return .silent }
        var buffer = [UInt8](repeating: 0, count: 8)
        let count = read(fd, &buffer, 8)
        return count >= 4 && String(decoding: buffer[0..<4], as: UTF8.self) == "SSH-" ? .banner : .silent
    }

    /// Whether ADDR:PORT can be bound now (nothing else listens there).
    static func isFree(address: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // As sshd does, so connections in TIME_WAIT from an earlier lab do not count.
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        return withSocketAddress(address, port, { bind(fd, $0, $1) }) == 0
    }
}

/// Calls `body` with the IPv4 socket address of ADDR:PORT (for bind or connect).
func withSocketAddress(_ address: String, _ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, address, &addr.sin_addr)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// IPv4 loopback addresses for the hosts: consecutive from the first, skipping .0 and .255.
func loopbackAddresses(from first: String, count: Int) throws -> [String] {
    let parts = first.split(separator: ".").compactMap { UInt32($0) }
    guard parts.count == 4, parts.allSatisfy({ $0 <= 255 }), parts[0] == 127 else {
        throw LabError.usage("--first-address must be an IPv4 loopback address (127.x.y.z), not '\(first)'")
    }
    var value = parts.reduce(0) { $0 << 8 | $1 }
    var addresses: [String] = []
    while addresses.count < count {
        let last = value & 0xff
        if last != 0 && last != 255 {
            addresses.append("\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(last)")
        }
        value += 1
        guard value >> 24 == 127 else {
            throw LabError.usage("\(count) hosts starting at \(first) would leave 127.0.0.0/8")
        }
    }
    return addresses
}
