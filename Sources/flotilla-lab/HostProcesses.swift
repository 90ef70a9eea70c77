import Foundation

/// What runs inside (or in place of) a lab host: the namespace boot, the session wrapper
/// that applies faults and logs every SSH command, and the silent listener.
enum HostProcesses {
    /// Pid 1 of a host's namespaces: gives the host its own /etc, /opt, /var/log, /run,
    /// shadowed package managers and boot id, then runs the host's sshd as its init
    /// (``HostInit``).
    static func boot(hostDir: String) -> Never {
        let paths = HostPaths(dir: URL(fileURLWithPath: hostDir))
        do {
            let config = try HostConfig.load(paths)
            let bin = URL(fileURLWithPath: config.labDir).appendingPathComponent("bin/\(config.spec.os.key)").path
            try mountOverlay(at: "/usr/bin", options: "lowerdir=\(bin):/usr/bin")
            for (mountPoint, layer) in HostPaths.overlays {
                try mountOverlay(at: mountPoint, options: "lowerdir=\(mountPoint),upperdir=\(paths.upper(layer).path),workdir=\(paths.work(layer).path)")
            }
            try HostInit.newBootID(paths)
            // The host's own boot id: its file bound over the kernel's, in this mount
            // namespace only, so `cat /proc/sys/kernel/random/boot_id` on the host reads it.
            guard mount(paths.bootID.path, HostInit.kernelBootID, nil, UInt(MS_BIND), nil) == 0 else {
                throw LabError.failed("bind \(paths.bootID.path) over \(HostInit.kernelBootID): \(String(cString: strerror(errno)))")
            }
        } catch {
            FileHandle.standardError.write(Data("flotilla-lab boot \(hostDir): \(error)\n".utf8))
            exit(70)
        }
        HostInit(paths: paths).run()
    }

    private static func mountOverlay(at target: String, options: String) throws {
        guard mount("overlay", target, "overlay", 0, options) == 0 else {
            throw LabError.failed("mount overlay on \(target) (\(options)): \(String(cString: strerror(errno)))")
        }
    }

    /// Listens on ADDR:PORT and never accepts: the kernel completes connections, and the
    /// client waits for a banner that never comes.
    static func silent(address: String, port: Int) -> Never {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound = withSocketAddress(address, port) { bind(fd, $0, $1) }
        guard fd >= 0, bound == 0, listen(fd, 1024) == 0 else {
            FileHandle.standardError.write(Data("flotilla-lab: cannot listen on \(address):\(port): \(String(cString: strerror(errno)))\n".utf8))
            exit(70)
        }
        while true { pause() }
    }
}

/// The init of a lab host (pid 1 of its pid namespace): starts the host's sshd, reaps
/// orphans, and on SIGUSR1 (or a byte in its reboot fifo) reboots the host (the `reboot` fault): kills every other process
/// of the host, gives it a new boot id and starts sshd again. SIGTERM ends the host (`down`):
/// when pid 1 exits, the kernel ends every process of the namespace.
struct HostInit {
    static let kernelBootID = "/proc/sys/kernel/random/boot_id"
    static let rebootSignal = SIGUSR1

    let paths: HostPaths

    func run() -> Never {
        var waited = sigset_t()
        sigemptyset(&waited)
        for number in [SIGTERM, SIGINT, SIGHUP, SIGCHLD, Self.rebootSignal] { sigaddset(&waited, number) }
        // Handled through sigwait; a handler besides, since a namespace's init gets only the
        // signals it handles.
        signal(Self.rebootSignal) { _ in }
        sigprocmask(SIG_BLOCK, &waited, nil)
        // Reboot requests by fifo (opened read-write: it never reads as ended), turned into
        // the signal this loop waits for; the thread inherits the blocked mask.
        let requests = open(paths.rebootRequest.path, O_RDWR | O_CLOEXEC)
        if requests >= 0 {
            Thread.detachNewThread {
                var byte: UInt8 = 0
                while true {
                    if read(requests, &byte, 1) == 1 { kill(getpid(), Self.rebootSignal) } else if errno != EINTR { return }
                }
            }
        }
        // The databases st2.conf names, and the processes `st2ctl stop` leaves (faults).
        if let config = try? HostConfig.load(paths) {
            LabDatabases.listen(config) { appendLine($0, to: paths.bootLog) }
            LabLeftovers.start(config, executable: config.executable, log: paths.bootLog)
        }
        startSSHD()
        while true {
            var number: Int32 = 0
            guard sigwait(&waited, &number) == 0 else { continue }
            switch number {
            case SIGCHLD: reap()
            case Self.rebootSignal: reboot()
            default: exit(0)
            }
        }
    }

    private func startSSHD() {
        do {
            _ = try ProcessTable.spawnDetached(["/usr/sbin/sshd", "-D", "-f", paths.sshdConfig.path, "-E", paths.sshdLog.path], log: paths.bootLog)
        } catch {
            FileHandle.standardError.write(Data("flotilla-lab boot: \(error)\n".utf8))
            exit(70)
        }
    }

    private func reap() {
        var status: Int32 = 0
        while waitpid(-1, &status, WNOHANG) > 0 {}
    }

    /// Every process but this one killed (reparented orphans included, until none is
    /// left), a new boot id, sshd started again: what a client sees of a reboot.
    private func reboot() {
        while true {
            // (The host's own /proc, always readable to its init; were it not, there would be
            // no process this init could name to kill.)
            let others = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(pid_t.init).filter { $0 != getpid() }
            if others.isEmpty { break }
            for pid in others { kill(pid, SIGKILL) }
            reap()
            usleep(1_000) // a killed process leaves /proc only once reaped, after it has died
        }
        do {
            try Self.newBootID(paths)
        } catch {
            FileHandle.standardError.write(Data("flotilla-lab reboot: \(error)\n".utf8))
        }
        startSSHD()
    }

    /// Writes a new random boot id into the host's file, in place: the bind mount over the
    /// kernel's file follows the inode.
    static func newBootID(_ paths: HostPaths) throws {
        let fd = open(paths.bootID.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LabError.failed("cannot write \(paths.bootID.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((UUID().uuidString.lowercased() + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw LabError.failed("cannot write \(paths.bootID.path): \(String(cString: strerror(errno)))")
        }
    }
}

nonisolated(unsafe) private var sessionChild: pid_t = 0

/// The ForceCommand of every lab host: applies the host's command faults, runs the client's
/// command with the login shell, and appends a record of it to the host's command log.
enum SessionWrapper {
    static func run() -> Never {
        let environment = ProcessInfo.processInfo.environment
        guard let command = environment["SSH_ORIGINAL_COMMAND"] else {
            execShell(["-bash"]) // an interactive login
        }
        guard let paths = HostPaths.current(), let config = try? HostConfig.load(paths) else {
            execShell(["bash", "-c", command])
        }
        let start = Date()
        var record = CommandRecord(kind: "ssh", argv: [command], start: start, end: start, exitStatus: 0)
        let faults = config.spec.faults
        let store = StateStore(paths: paths)

        for fault in faults.slow where matches(fault, command) { usleep(useconds_t(fault.delay * 1_000_000)) }
        if let fault = firing(faults.fail, kind: "fail", command, store) {
            if !fault.stdout.isEmpty { FileHandle.standardOutput.write(Data((fault.stdout + "\n").utf8)) }
            if !fault.stderr.isEmpty { FileHandle.standardError.write(Data((fault.stderr + "\n").utf8)) }
            record.fault = "fail"
            record.end = Date()
            record.exitStatus = fault.exitCode
            record.append(to: paths)
            exit(fault.exitCode)
        }
        if firing(faults.hang, kind: "hang", command, store) != nil {
            record.fault = "hang"
            record.exitStatus = -1
            record.append(to: paths)
            while true { pause() }
        }
        if firing(faults.drop, kind: "drop", command, store) != nil {
            record.fault = "drop"
            record.exitStatus = -1
            record.append(to: paths)
            dropConnection()
        }
        let cut = firing(faults.cut, kind: "cut", command, store)
        let corrupt = firing(faults.corrupt, kind: "corrupt", command, store) != nil
        let reboot = firing(faults.reboot, kind: "reboot", command, store).map { HostReboot(delay: $0.delay, record: record, paths: paths) }

        let shellArgs: [String] = ["bash", "-c", command]
        var cArgs: [UnsafeMutablePointer<CChar>?] = shellArgs.map { strdup($0) }
        cArgs.append(nil)
        // Under a cut, the command's output goes through the wrapper, which drops it once
        // the connection is gone: the command goes on as it would behind a real network
        // cut instead of dying of SIGPIPE.
        var relay: [Int32] = []
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        if cut != nil || corrupt {
            for target in [STDOUT_FILENO, STDERR_FILENO] {
                var ends: [Int32] = [-1, -1]
                guard pipe(&ends) == 0 else { exit(126) }
                // Single-threaded here, so no other spawn can inherit them before this.
                for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
                posix_spawn_file_actions_adddup2(&actions, ends[1], target)
                relay += [ends[0], ends[1]]
            }
        }
        // The shell leads a session of its own, as the one sshd starts does (sshd makes its
        // session child a session leader; here that child is this wrapper).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        posix_spawnattr_setflags(&attributes, 0x80) // POSIX_SPAWN_SETSID (glibc 2.26), not imported into Swift
        var pid: pid_t = 0
        guard posix_spawn(&pid, "/bin/bash", &actions, &attributes, &cArgs, environ) == 0 else {
            exit(126)
        }
        posix_spawnattr_destroy(&attributes)
        posix_spawn_file_actions_destroy(&actions)
        sessionChild = pid
        // The channel is the shell's alone from here: a command that closes its stdout and
        // stderr (a detached step's line waiting for the controller's answer) ends the
        // channel's output, as it does when sshd starts the shell itself.
        if relay.isEmpty { releaseStandardStreams() }
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT] {
            signal(sig) { received in kill(sessionChild, received) }
        }
        if let reboot {
            Thread.detachNewThread {
                usleep(useconds_t(reboot.delay * 1_000_000))
                reboot.fire(exitStatus: -1)
            }
        }
        if let cut {
            record.fault = "cut"
            close(relay[1])
            close(relay[3])
            let connections = Connections()
            Thread.detachNewThread {
                usleep(useconds_t(cut.delay * 1_000_000))
                connections.cut()
            }
            relayOutput(stdout: relay[0], stderr: relay[2], connections)
            releaseStandardStreams()
            // A command quicker than the delay still loses its connection before its
            // status could reach the client.
            connections.cut()
        } else if corrupt {
            record.fault = "corrupt"
            close(relay[1])
            close(relay[3])
            relayOutput(stdout: relay[0], stderr: relay[2], Connections(), corruptStdout: true)
            releaseStandardStreams()
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        record.end = Date()
        let signaled = status & 0x7f
        record.exitStatus = signaled == 0 ? (status >> 8) & 0xff : 128 + signaled
        // A command quicker than the delay still loses its host before its status could
        // reach the client.
        reboot?.fire(exitStatus: record.exitStatus)
        record.append(to: paths)
        if signaled != 0 {
            signal(signaled, SIG_DFL)
            kill(getpid(), signaled)
        }
        exit((status >> 8) & 0xff)
    }

    /// Points the wrapper's own stdin, stdout and stderr at /dev/null.
    private static func releaseStandardStreams() {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { return }
        for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] { dup2(null, fd) }
        close(null)
    }

    private static func execShell(_ argv: [String]) -> Never {
        var cArgs = argv.map { strdup($0) } + [nil]
        execv("/bin/bash", &cArgs)
        exit(127)
    }

    static func matches(_ fault: CommandFault, _ command: String) -> Bool {
        fault.pattern.isEmpty || command.range(of: fault.pattern, options: .regularExpression) != nil
    }

    /// The first fault of `list` that matches and has firings left; counts the firing.
    static func firing(_ list: [CommandFault], kind: String, _ command: String, _ store: StateStore) -> CommandFault? {
        for (index, fault) in list.enumerated() where matches(fault, command) {
            guard let times = fault.times else { return fault }
            let key = "\(kind).\(index)"
            let fired = (try? store.update { state -> Bool in
                guard state.faultHits[key, default: 0] < times else { return false }
                state.faultHits[key, default: 0] += 1
                return true
            }) ?? false
            if fired { return fault }
        }
        return nil
    }

    /// Copies the command's stdout and stderr to the connection's until both end, dropping
    /// what comes after the cut.
    /// With `corruptStdout`, the first byte of stdout is flipped on its way.
    private static func relayOutput(stdout: Int32, stderr: Int32, _ connections: Connections, corruptStdout: Bool = false) {
        var corruptNext = corruptStdout
        signal(SIGPIPE, SIG_IGN) // after the cut, writing to the dead connection is EPIPE, not death
        var open: [(from: Int32, to: Int32)] = [(stdout, STDOUT_FILENO), (stderr, STDERR_FILENO)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var polls = open.map { pollfd(fd: $0.from, events: Int16(POLLIN), revents: 0) }
            guard poll(&polls, nfds_t(polls.count), -1) >= 0 || errno == EINTR else { return }
            for (entry, stream) in zip(polls, open) where entry.revents != 0 {
                let count = read(stream.from, &buffer, buffer.count)
                if count > 0 {
                    if corruptNext, stream.from == stdout {
                        buffer[0] ^= 0x20
                        corruptNext = false
                    }
                    var offset = 0
                    while offset < count, !connections.isCut {
                        let written = buffer.withUnsafeBytes { write(stream.to, $0.baseAddress! + offset, count - offset) }
                        if written < 0 && errno != EINTR { break }
                        offset += max(0, written)
                    }
                } else if count == 0 || errno != EINTR {
                    close(stream.from)
                    open.removeAll { $0.from == stream.from }
                }
            }
        }
    }

    /// Every SSH connection of this host, cut once: each sshd process whose parent is an
    /// sshd (the per-connection monitor and session processes) is killed; the listener,
    /// whose parent is not an sshd, stays, so new connections are accepted. Inside the
    /// host's pid namespace, /proc holds only the host's own processes.
    private final class Connections: @unchecked Sendable { // `done` is only touched under `lock`
        private let lock = NSLock()
        private var done = false

        var isCut: Bool { lock.withLock { done } }

        func cut() {
            lock.withLock {
                guard !done else { return }
                done = true
                let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(pid_t.init)
                for pid in pids where Self.isSSHD(pid) && Self.isSSHD(Self.parent(of: pid)) {
                    kill(pid, SIGKILL)
                }
            }
        }

        private static func isSSHD(_ pid: pid_t?) -> Bool {
            guard let pid, let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
            return ["sshd", "sshd-session"].contains(comm.trimmingCharacters(in: .newlines))
        }

        private static func parent(of pid: pid_t) -> pid_t? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            return fields.count > 1 ? pid_t(fields[1]) : nil
        }
    }

    /// The `reboot` fault of one command: fired once, from a timer or at the command's end.
    /// It logs the command with `"fault": "reboot"`, then asks the host's init to reboot,
    /// which kills this process too.
    private final class HostReboot: @unchecked Sendable { // immutable but for `lock`
        let delay: Double
        private let record: CommandRecord
        private let paths: HostPaths
        private let lock = NSLock()

        init(delay: Double, record: CommandRecord, paths: HostPaths) {
            self.delay = delay
            self.record = record
            self.paths = paths
        }

        func fire(exitStatus: Int32) {
            // Never unlocked: the first caller never returns (the reboot kills this process
            // with the rest of the host), a second one waits here for the same end.
            lock.lock()
            var record = record
            record.fault = "reboot"
            record.end = Date()
            record.exitStatus = exitStatus
            record.append(to: paths)
            // The host's init (pid 1 of its pid namespace, root's) reads the request.
            let fd = open(paths.rebootRequest.path, O_WRONLY | O_CLOEXEC)
            if fd >= 0 { _ = write(fd, "r", 1) }
            while true { pause() }
        }
    }

    /// Kills the sshd processes serving this connection, so the client sees it drop; the
    /// listener (the child of the host's init, pid 1) stays.
    private static func dropConnection() -> Never {
        var pid = getppid()
        var victims: [pid_t] = []
        while pid > 1, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") {
            let comm = stat[stat.index(after: open)..<close]
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 1, let parent = pid_t(fields[1]), parent > 1 else { break }
            if comm == "sshd" { victims.append(pid) }
            pid = parent
        }
        for victim in victims { kill(victim, SIGKILL) }
        exit(255)
    }
}
