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

    /// Starts a detached process (own session, stdin from /dev/null, output to `log`):
    /// `argv[0]` run with this process's environment, or `program` run as `argv` (its
    /// `argv[0]` what `ps` shows) with `environment`.
    static func spawnDetached(_ argv: [String], log: URL, program: String? = nil, environment: [String]? = nil) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The host outlives this command: it must not hold any other descriptor open (a
        // caller's pipe would then never see its end).
        closeInheritedDescriptors(&actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new session (POSIX_SPAWN_SETSID, not imported into Swift).
        resetSignals(&attributes, flags: 0x80)
        var pid: pid_t = 0
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var cEnvironment = environment.map { $0.map { strdup($0) } + [nil] }
        defer { cEnvironment?.forEach { free($0) } }
        let result = cEnvironment == nil ? posix_spawn(&pid, program ?? argv[0], &actions, &attributes, &cArgs, environ)
            : posix_spawn(&pid, program ?? argv[0], &actions, &attributes, &cArgs, &cEnvironment!)
        guard result == 0 else { throw LabError.failed("cannot start \(argv[0]): \(String(cString: strerror(result)))") }
        return pid
    }
}

/// Spawn attributes for a child with no blocked signals and default dispositions: the
/// caller's mask (a test process may block SIGTERM) must not make the child deaf to them.
func resetSignals(_ attributes: inout posix_spawnattr_t, flags: Int32 = 0) {
    posix_spawnattr_setflags(&attributes, Int16(flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGALRM, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
}

/// What a finished program printed and how it exited.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion, feeding it `input` and then the end of its stdin.
///
/// posix_spawn and plain pipes rather than Foundation's Process: with many processes run
/// at once, Process and Pipe can close a descriptor number twice (swiftlang/swift#57827),
/// which in a busy process closes someone else's socket. The child starts with no
/// blocked signals and default dispositions whatever the caller's mask.
/// Adds a close, in the child, of every descriptor above stderr that this process has open
/// now: a file another thread opened without close-on-exec (Foundation's reads do) is not
/// the program's to keep, and counts against a low open-file limit it runs under.
/// (posix_spawn_file_actions_addclosefrom_np is not imported into Swift.)
func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    for fd in open.compactMap(Int32.init) where fd > 2 {
        posix_spawn_file_actions_addclose(&actions, fd) // glibc ignores fds closed meanwhile
    }
}

func runProcess(_ argv: [String], input: String = "", environment: [String: String]? = nil) throws -> ProcessResult {
    // Socket pairs stand in for pipes: they can be created close-on-exec atomically, so a
    // program started by another thread meanwhile never inherits them. Index 0 is the
    // child's end.
    func channel() throws -> [Int32] {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw LabError.failed("cannot create a socket pair: \(String(cString: strerror(errno)))")
        }
        return ends
    }
    let stdinPipe = try channel(), stdoutPipe = try channel(), stderrPipe = try channel()
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, stdoutPipe[0], 1)
    posix_spawn_file_actions_adddup2(&actions, stderrPipe[0], 2)
    closeInheritedDescriptors(&actions)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    resetSignals(&attributes)
    var cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    var cEnvironment = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
    defer { cEnvironment?.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = cEnvironment == nil
        ? posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, environ)
        : posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, &cEnvironment!)
    for fd in [stdinPipe[0], stdoutPipe[0], stderrPipe[0]] { close(fd) }
    guard spawned == 0 else {
        for fd in [stdinPipe[1], stdoutPipe[1], stderrPipe[1]] { close(fd) }
        throw LabError.failed("cannot run \(argv[0]): \(String(cString: strerror(spawned)))")
    }
    // Feed stdin, and drain stdout and stderr, all at once with poll: a full pipe on either
    // side never blocks the child.
    signal(SIGPIPE, SIG_IGN)
    var pending = Array(input.utf8)
    var inputFD: Int32 = stdinPipe[1]
    if pending.isEmpty { close(inputFD); inputFD = -1 }
    var output: [Int32: [UInt8]] = [stdoutPipe[1]: [], stderrPipe[1]: []]
    var open = [stdoutPipe[1], stderrPipe[1]]
    var buffer = [UInt8](repeating: 0, count: 65536)
    while !open.isEmpty || inputFD >= 0 {
        var polls = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        if inputFD >= 0 { polls.append(pollfd(fd: inputFD, events: Int16(POLLOUT), revents: 0)) }
        guard poll(&polls, nfds_t(polls.count), -1) >= 0 || errno == EINTR else { break }
        for entry in polls where entry.revents != 0 {
            if entry.fd == inputFD {
                let written = pending.withUnsafeBytes { write(inputFD, $0.baseAddress, $0.count) }
                if written > 0 { pending.removeFirst(written) }
                if written < 0 || pending.isEmpty {
                    close(inputFD)
                    inputFD = -1
                }
            } else {
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    output[entry.fd]!.append(contentsOf: buffer[0..<count])
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let signaled = status & 0x7f
    let exitStatus = signaled == 0 ? (status >> 8) & 0xff : 128 + signaled
    return ProcessResult(status: exitStatus, stdout: String(decoding: output[stdoutPipe[1]]!, as: UTF8.self),
                         stderr: String(decoding: output[stderrPipe[1]]!, as: UTF8.self))
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
