import Foundation
import Testing
@testable import FlotillaCore

/// A `/bin/sh -c SCRIPT` child standing in for the controller's SSH channel: its own
/// process group (so a test can kill it as a dropped connection would), HOME set to a test
/// directory, stdout and stderr kept apart byte for byte.
private final class Channel {
    let pid: pid_t
    private var stdoutFD: Int32
    private var stderrFD: Int32
    private(set) var stdout: [UInt8] = []
    private(set) var stderr: [UInt8] = []
    private var status: Int32?
    /// stdin's writing end while it is held open (see ``answer(_:)``).
    private var inputFD: Int32 = -1

    /// `sessionLeader`: the shell leads a session of its own, as sshd starts it; otherwise
    /// it only leads a process group. `holdInput`: stdin stays open until ``answer(_:)``.
    init(_ script: String, home: URL, input: [UInt8] = [], shell: String = "/bin/sh", sessionLeader: Bool = false, holdInput: Bool = false) throws {
        // Socket pairs are created close-on-exec atomically: a child another test spawns
        // meanwhile never inherits them. Index 0 is the child's end.
        func pair() throws -> [Int32] {
            var ends: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
                throw POSIXError(.init(rawValue: errno) ?? .EIO)
            }
            return ends
        }
        let inPair = try pair(), outPair = try pair(), errPair = try pair()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPair[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPair[0], 1)
        posix_spawn_file_actions_adddup2(&actions, errPair[0], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new process group, no blocked signals, default dispositions: whatever the test
        // runner's own mask, the shell behaves as under sshd.
        let group = sessionLeader ? Int16(0x80) : Int16(POSIX_SPAWN_SETPGROUP) // 0x80: POSIX_SPAWN_SETSID, not imported
        posix_spawnattr_setflags(&attributes, group | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        let argv: [UnsafeMutablePointer<CChar>?] = ([shell, "-c", script] as [String]).map { strdup($0) } + [nil]
        let environment: [UnsafeMutablePointer<CChar>?] = (["HOME=\(home.path)", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"] as [String]).map { strdup($0) } + [nil]
        defer { (argv + environment).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, shell, &actions, &attributes, argv, environment)
        for fd in [inPair[0], outPair[0], errPair[0]] { close(fd) }
        guard spawned == 0 else { throw POSIXError(.init(rawValue: spawned) ?? .EIO) }
        self.pid = pid
        signal(SIGPIPE, SIG_IGN) // a write to a closed channel is an error, not the end of the test runner
        if !input.isEmpty { _ = input.withUnsafeBytes { write(inPair[1], $0.baseAddress, $0.count) } }
        if holdInput { inputFD = inPair[1] } else { close(inPair[1]) }
        stdoutFD = outPair[1]
        stderrFD = errPair[1]
    }

    /// Reads both streams until `condition` holds for stdout or both reach their end;
    /// whether it held.
    @discardableResult
    func read(until condition: ([UInt8]) -> Bool) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !condition(stdout) {
            let open = [stdoutFD, stderrFD].filter { $0 >= 0 }
            guard !open.isEmpty else { return false }
            var polls = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&polls, nfds_t(polls.count), -1) >= 0 || errno == EINTR else { return false }
            for entry in polls where entry.revents != 0 {
                let count = Glibc.read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if entry.fd == stdoutFD { stdout += buffer[0..<count] } else { stderr += buffer[0..<count] }
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    if entry.fd == stdoutFD { stdoutFD = -1 } else { stderrFD = -1 }
                }
            }
        }
        return true
    }

    /// Reads until the first line of stdout is complete.
    func readLine() -> String? {
        guard read(until: { $0.contains(10) }), let newline = stdout.firstIndex(of: 10) else { return nil }
        return String(decoding: stdout[..<newline], as: UTF8.self)
    }

    /// Drains both streams to their end and waits for the shell; its exit status (128+N
    /// after signal N).
    func finish() -> Int32 {
        read { _ in false }
        return wait()
    }

    private func wait() -> Int32 {
        if let status { return status }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let signaled = raw & 0x7f
        status = signaled == 0 ? (raw >> 8) & 0xff : 128 + signaled
        return status!
    }

    /// Kills the shell's whole process group, as a controller crash or a dropped
    /// connection would end everything the channel started, and closes the channel.
    func killGroup() {
        kill(-pid, SIGKILL)
        for fd in [stdoutFD, stderrFD] where fd >= 0 { close(fd) }
        stdoutFD = -1
        stderrFD = -1
        _ = wait()
    }

    /// Closes the channel and kills nothing, as sshd does when the connection ends (it
    /// signals no process of a session without a terminal).
    func hangUp() {
        for fd in [stdoutFD, stderrFD] where fd >= 0 { close(fd) }
        stdoutFD = -1
        stderrFD = -1
    }

    /// Writes `line` (if any) to the held stdin, then closes it, as the controller answers
    /// a line that waits for it (or dies first).
    func answer(_ line: String?) {
        if let line { _ = Array((line + "\n").utf8).withUnsafeBytes { write(inputFD, $0.baseAddress, $0.count) } }
        close(inputFD)
        inputFD = -1
    }

    /// stdout after its first line (the state line of an attach).
    var streamedStdout: [UInt8] {
        guard let newline = stdout.firstIndex(of: 10) else { return [] }
        return Array(stdout[(newline + 1)...])
    }

    deinit {
        for fd in [stdoutFD, stderrFD, inputFD] where fd >= 0 { close(fd) }
    }
}

/// A temporary HOME per test, removed at the end; steps a test leaves blocked are killed.
private final class Host {
    let home: URL
    /// The shell that runs the lines, as the login shell would (dash on Debian, bash on EL).
    let shell: String

    /// Whether the shell leads a session of its own, as under sshd (see ``Channel``).
    let sessionLeader: Bool

    init(shell: String = "/bin/sh", sessionLeader: Bool = false) throws {
        self.shell = shell
        self.sessionLeader = sessionLeader
        home = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("detached-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    }

    func run(_ script: String, input: [UInt8] = []) throws -> (status: Int32, stdout: [UInt8], stderr: [UInt8]) {
        let channel = try Channel(script, home: home, input: input, shell: shell, sessionLeader: sessionLeader)
        let status = channel.finish()
        return (status, channel.stdout, channel.stderr)
    }

    func start(_ script: String, input: [UInt8] = [], holdInput: Bool = false) throws -> Channel {
        try Channel(script, home: home, input: input, shell: shell, sessionLeader: sessionLeader, holdInput: holdInput)
    }

    func file(_ name: String) -> URL { home.appendingPathComponent(name) }

    /// The attempt's record file `NAME.suffix` (`cmd`, `out`, `exit`, ...).
    func recordFile(_ token: DetachedStep.Token, _ suffix: String = "cmd") -> URL {
        home.appendingPathComponent(".flotilla/steps/\(token.path).\(suffix)")
    }

    func record(_ token: DetachedStep.Token, _ suffix: String) -> String? {
        try? String(contentsOf: recordFile(token, suffix), encoding: .utf8)
    }

    func exists(_ token: DetachedStep.Token) -> Bool { FileManager.default.fileExists(atPath: recordFile(token).path) }

    /// Waits until the step's command writes a line into the fifo `ready` (it blocks until then).
    func awaitLine(_ ready: URL) -> String? {
        guard let handle = FileHandle(forReadingAtPath: ready.path) else { return nil }
        defer { try? handle.close() }
        let data = handle.readDataToEndOfFile()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init)
    }

    /// The runner's pid, which leads the step's process group: in `.runner`, or in the
    /// header of `.cmd` when the channel's shell is the runner.
    func runner(_ token: DetachedStep.Token) -> pid_t? {
        if let runner = record(token, "runner") { return runner.split(separator: " ").first.flatMap { pid_t($0) } }
        let header = record(token, "cmd")?.split(separator: "\n").first?.split(separator: " ") ?? []
        return header.count > 3 && header[0...1].joined(separator: " ") == DetachedStep.header ? pid_t(header[3]) : nil
    }

    /// Puts another boot id on the step's record, in the header of `.cmd`.
    func recordBoot(_ token: DetachedStep.Token, _ id: String) throws {
        let command = try #require(record(token, "cmd"))
        var lines = command.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        var header = lines[0].split(separator: " ").map(String.init)
        try #require(header.count >= 3 && header[0...1].joined(separator: " ") == DetachedStep.header, "no header: \(lines[0])")
        header[2] = id
        lines[0] = header.joined(separator: " ")
        try lines.joined(separator: "\n").write(to: recordFile(token, "cmd"), atomically: false, encoding: .utf8)
    }

    /// A fifo the step's command blocks on (`read x < GATE`) until `open` writes a line.
    func gate(_ name: String) throws -> URL {
        let url = file(name)
        guard mkfifo(url.path, 0o600) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return url
    }

    func open(_ gate: URL, with line: String = "go") {
        // Opening a fifo for writing waits until the command opens it for reading.
        let fd = Glibc.open(gate.path, O_WRONLY)
        _ = Array((line + "\n").utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Kills the process group of a step left blocked, so no test leaves a process behind.
    func killStep(_ token: DetachedStep.Token) {
        if let group = runner(token) { kill(-group, SIGKILL) }
    }

    deinit { try? FileManager.default.removeItem(at: home) }
}

/// Whether `pid` is gone: no process, or a zombie waiting for a parent that is not ours.
private func isGone(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)] == "Z"
}

/// Opens a pidfd for `pid` (not a child of ours); the function returned waits until the
/// process has ended (a zombie or gone), as the kernel signals on the pidfd.
private func awaitExit(of pid: pid_t) throws -> () -> Void {
    typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32
    let symbol = try #require(dlsym(nil, "pidfd_open"), "glibc 2.36 has pidfd_open")
    let fd = unsafeBitCast(symbol, to: PidfdOpen.self)(pid, 0)
    try #require(fd >= 0, "pidfd_open: \(errno)")
    return {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&entry, 1, -1) < 0 && errno == EINTR {}
        close(fd)
    }
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

@Suite struct DetachedStepTests {
    static func token(_ step: Int = 1, run: String = "20240101T000000-abc", host: String = "st2-01.example.com") -> DetachedStep.Token {
        DetachedStep.Token(run: run, host: host, step: step, attempt: 1)
    }

    @Test func startRunsToCompletionWithExactSeparateStreamsAndItsExitStatus() throws {
        let host = try Host()
        let token = Self.token()
        let command = #"printf 'out\377\376\n'; seq 1 20000; printf 'err\001\n' >&2; exit 3"#
        let channel = try host.start(DetachedStep.start(token, command: command))
        let status = channel.finish()
        let numbers = (1...20000).map { "\($0)\n" }.joined()
        #expect(status == 3)
        let line = String(decoding: channel.stdout.prefix { $0 != 10 }, as: UTF8.self)
        #expect(DetachedStep.State.parse(line) == DetachedStep.State(phase: .ended, exitStatus: 3, sameBoot: true), "\(line)")
        #expect(channel.streamedStdout == [0x6f, 0x75, 0x74, 0xff, 0xfe, 0x0a] + Array(numbers.utf8), "the whole of stdout after the state line: \(channel.stdout.count) bytes")
        #expect(channel.stderr == Array("err\u{01}\n".utf8))

        let query = try host.run(DetachedStep.query(token))
        #expect(query.status == 0)
        let state = try #require(DetachedStep.State.parse(text(query.stdout)), "\(text(query.stdout))")
        #expect(state == DetachedStep.State(phase: .ended, exitStatus: 3, sameBoot: true, stdoutBytes: 6 + numbers.utf8.count, stderrBytes: 5))
    }

    @Test func killedControllerLeavesTheStepRunningAndAttachStreamsTheRest() throws {
        let host = try Host()
        let token = Self.token()
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let count = host.file("count")
        let command = "echo run >>\(count.path); echo started; echo up >\(ready.path); read x <\(gate.path); echo \"after $x\"; echo late >&2; exit 7"
        let controller = try host.start(DetachedStep.start(token, command: command))
        #expect(host.awaitLine(ready) == "up")
        #expect(controller.stdout.isEmpty, "a start prints nothing before the step ends")
        controller.killGroup() // kill -9 of the controller and everything its channel ran

        let attach = try host.start(DetachedStep.attach(token, stdoutOffset: "started\n".utf8.count, stderrOffset: 0))
        let line = try #require(attach.readLine())
        #expect(DetachedStep.State.parse(line)?.phase == .running, "\(line)")
        host.open(gate)
        #expect(attach.finish() == 7, "the step's own status")
        #expect(text(attach.streamedStdout) == "after go\n", "the rest of stdout, from the offset")
        #expect(text(attach.stderr) == "late\n")
        #expect(host.record(token, "exit") == "rc=7 signal=0 timedout=0\n", "\(host.record(token, "exit") ?? "none")")
        #expect(try String(contentsOf: count, encoding: .utf8) == "run\n")
    }

    @Test func anEndedStepIsReportedFromItsRecordAndASecondStartNeverRunsIt() throws {
        let host = try Host()
        let token = Self.token(4)
        let count = host.file("count")
        let command = "echo run >>\(count.path); echo out; echo err >&2; exit 5"
        #expect(try host.run(DetachedStep.start(token, command: command)).status == 5)

        let again = try host.run(DetachedStep.start(token, command: command))
        #expect(again.status == DetachedStep.protocolExit)
        #expect(DetachedStep.State.parse(text(again.stdout)) == DetachedStep.State(phase: .exists))

        let attach = try host.start(DetachedStep.attach(token, stdoutOffset: 3, stderrOffset: 3))
        let line = try #require(attach.readLine())
        #expect(attach.finish() == 5)
        #expect(DetachedStep.State.parse(line) == DetachedStep.State(phase: .ended, exitStatus: 5, sameBoot: true, stdoutBytes: 4, stderrBytes: 4))
        #expect(text(attach.streamedStdout) == "out\n" && text(attach.stderr) == "err\n", "an ended step prints its tails whole")
        #expect(try String(contentsOf: count, encoding: .utf8) == "run\n", "ran once in all")
    }

    @Test func theTailsOfAnEndedStepAreBounded() throws {
        let host = try Host()
        let token = Self.token()
        #expect(try host.run(DetachedStep.start(token, command: "head -c 100000 /dev/zero")).status == 0)
        let attach = try host.run(DetachedStep.attach(token))
        #expect(attach.status == 0)
        let line = String(decoding: attach.stdout.prefix { $0 != 10 }, as: UTF8.self)
        #expect(DetachedStep.State.parse(line)?.stdoutBytes == 100_000)
        #expect(attach.stdout.count == line.utf8.count + 1 + DetachedStep.tailBytes)
    }

    @Test func aTokenTheHostNeverSawIsNever() throws {
        let host = try Host()
        let query = try host.run(DetachedStep.query(Self.token()))
        #expect(query.status == 0)
        #expect(DetachedStep.State.parse(text(query.stdout))?.phase == .never)
        let attach = try host.run(DetachedStep.attach(Self.token()))
        #expect(attach.status == DetachedStep.protocolExit && DetachedStep.State.parse(text(attach.stdout))?.phase == .never)
        #expect(!host.exists(Self.token()), "asking creates nothing")
    }

    @Test(arguments: ["/bin/sh", "/bin/bash"])
    func aStepWhoseRunnerDiedUnseenIsLostAndOneSeenDyingIsRecorded(shell: String) throws {
        let host = try Host(shell: shell)
        let unseen = Self.token(1), seen = Self.token(2)
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let command = "echo up >\(ready.path); read x <\(gate.path)"
        // Unseen: the controller's channel is gone too, as after a reboot: nothing writes the record.
        let first = try host.start(DetachedStep.start(unseen, command: command))
        defer { host.killStep(unseen) }
        #expect(host.awaitLine(ready) == "up")
        first.killGroup()
        let runner = try #require(host.runner(unseen), "on record before the command runs")
        let exited = try awaitExit(of: runner)
        kill(-runner, SIGKILL)
        exited()
        let query = try host.run(DetachedStep.query(unseen))
        #expect(DetachedStep.State.parse(text(query.stdout)) == DetachedStep.State(phase: .lost, sameBoot: true), "\(text(query.stdout))")

        // Seen: the start line still waits for its runner and records how it died.
        let second = try host.start(DetachedStep.start(seen, command: command))
        defer { host.killStep(seen) }
        #expect(host.awaitLine(ready) == "up")
        kill(-(try #require(host.runner(seen))), SIGKILL)
        #expect(second.finish() == 137)
        #expect(host.record(seen, "exit") == "rc=137 signal=9 timedout=0\n")
    }

    @Test func askingAboutALostStepPrintsOnlyItsStateLine() throws {
        let host = try Host()
        let token = Self.token()
        // A record whose runner is gone (no such pid) and whose end was never written, in
        // the layout of earlier versions (no header in `.cmd`; `.boot` and `.runner`).
        try FileManager.default.createDirectory(at: host.recordFile(token).deletingLastPathComponent(), withIntermediateDirectories: true)
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
        for (suffix, content) in [("cmd", "true"), ("boot", boot), ("out", ""), ("err", ""), ("runner", "2147483646 1\n")] {
            try content.write(to: host.recordFile(token, suffix), atomically: false, encoding: .utf8)
        }
        for line in [DetachedStep.query(token), DetachedStep.attach(token)] {
            let asked = try host.run(line)
            #expect(DetachedStep.State.parse(text(asked.stdout)) == DetachedStep.State(phase: .lost, sameBoot: true), "\(text(asked.stdout))")
            #expect(asked.stderr.isEmpty, "nothing on stderr but what the step wrote: \(text(asked.stderr))")
        }
    }

    @Test func aRecordFromAnotherBootIsLostEvenIfItsPidIsAlive() throws {
        let host = try Host()
        let token = Self.token()
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let controller = try host.start(DetachedStep.start(token, command: "echo up >\(ready.path); read x <\(gate.path)"))
        defer {
            host.open(gate)
            _ = controller.finish()
        }
        #expect(host.awaitLine(ready) == "up")
        try host.recordBoot(token, "00000000-0000-0000-0000-000000000000")
        let query = try host.run(DetachedStep.query(token))
        #expect(DetachedStep.State.parse(text(query.stdout)) == DetachedStep.State(phase: .lost, sameBoot: false), "\(text(query.stdout))")
    }

    @Test(arguments: [("/bin/sh", false, false, 143, 15), ("/bin/sh", false, true, 137, 9), ("/bin/bash", false, false, 143, 15),
                      ("/bin/bash", false, true, 137, 9), ("/bin/bash", true, false, 143, 15), ("/bin/bash", true, true, 137, 9)])
    func killEndsTheWholeProcessGroupAndRecordsATimeout(shell: String, sshd: Bool, ignoresTerm: Bool, status: Int32, signal: Int32) throws {
        let host = try Host(shell: shell, sessionLeader: sshd)
        let token = Self.token()
        let pids = host.file("pids"), ready = try host.gate("ready")
        // `$$` gives the command a shell of its own; without it, bash runs it in a subshell.
        let me = ignoresTerm ? "$$" : "x"
        let command = (ignoresTerm ? "trap '' TERM; " : "") + "sleep 1000 & echo \"\(me) $!\" >\(pids.path); echo up >\(ready.path); wait"
        let controller = try host.start(DetachedStep.start(token, command: command))
        #expect(host.awaitLine(ready) == "up")

        let killed = try host.run(DetachedStep.kill(token, grace: 1))
        #expect(killed.status == 0, "\(text(killed.stderr))")
        let state = DetachedStep.State.parse(text(killed.stdout))
        #expect(state?.phase == .ended && state?.exitStatus == status && state?.signal == signal && state?.timedOut == true, "\(text(killed.stdout))")
        #expect(controller.finish() == status, "the stream ends with the status too")
        let both = try String(contentsOf: pids, encoding: .utf8).split(whereSeparator: \.isWhitespace).compactMap { pid_t($0) }
            + [try #require(host.runner(token))]
        #expect(both.count == (ignoresTerm ? 3 : 2) && both.allSatisfy(isGone), "the runner, the command's shell and its child: \(both)")
    }

    @Test(arguments: ["sh", "bash"])
    func aCommandKilledBySignalIsToldApartFromOneExitingWithTheSameNumber(shell: String) throws {
        let host = try Host(shell: "/bin/\(shell)")
        let exits = Self.token(1), killed = Self.token(2)
        #expect(try host.run(DetachedStep.start(exits, command: "exit 137")).status == 137)
        #expect(try host.run(DetachedStep.start(killed, command: "kill -KILL $$")).status == 137)
        #expect(DetachedStep.State.parse(text(try host.run(DetachedStep.query(exits)).stdout))?.signal == nil)
        #expect(DetachedStep.State.parse(text(try host.run(DetachedStep.query(killed)).stdout))?.signal == 9)
    }

    // Under sshd (bash leading its own session, no become) the channel's shell runs the step itself.

    @Test func underSshdBashRunsTheStepInTheChannelsOwnShellWithExactStreams() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let token = Self.token()
        let me = host.file("me")
        let command = #"printf 'out\377\n'; seq 1 20000; printf 'err\001\n' >&2; echo $$ >"# + me.path + "; exit 3"
        let channel = try host.start(DetachedStep.start(token, command: command))
        #expect(channel.finish() == 3)
        let line = String(decoding: channel.stdout.prefix { $0 != 10 }, as: UTF8.self)
        #expect(DetachedStep.State.parse(line) == DetachedStep.State(phase: .ended, exitStatus: 3, sameBoot: true), "\(line)")
        #expect(channel.streamedStdout == [0x6f, 0x75, 0x74, 0xff, 0x0a] + Array((1...20000).map { "\($0)\n" }.joined().utf8))
        #expect(channel.stderr == Array("err\u{01}\n".utf8))
        #expect(try String(contentsOf: me, encoding: .utf8) == "\(channel.pid)\n", "no process was started for the runner")
        #expect(host.runner(token) == channel.pid)
        #expect(host.record(token, "exit") == "rc=3 signal=0 timedout=0\n")
    }

    /// The short start line (no functions, no runner) runs the step in the channel's bash
    /// exactly as the whole line's in-shell path does, at about a third of its length.
    @Test func theShortStartLineRunsTheStepInTheChannelsOwnShell() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let token = Self.token()
        let command = #"printf 'out\377\n'; printf 'err\001\n' >&2; exit 3"#
        let line = DetachedStep.startInShell(token, command: command)
        #expect(line.utf8.count * 2 < DetachedStep.start(token, command: command).utf8.count, "\(line.utf8.count) bytes")
        let channel = try host.start(line)
        #expect(channel.finish() == 3)
        let first = String(decoding: channel.stdout.prefix { $0 != 10 }, as: UTF8.self)
        // The first short line of a session also tells what the session's later ones need not read again.
        let bootID = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .newlines)
        let mask = umask(0)
        umask(mask)
        let facts = DetachedStep.ShellFacts(root: host.file(".flotilla/steps").path, bootID: bootID, umask: String(format: "%04o", mask))
        #expect(DetachedStep.State.parse(first) == DetachedStep.State(phase: .ended, exitStatus: 3, sameBoot: true, facts: facts), "\(first)")
        #expect(channel.streamedStdout == [0x6f, 0x75, 0x74, 0xff, 0x0a] && channel.stderr == Array("err\u{01}\n".utf8))
        #expect(host.runner(token) == channel.pid)
        #expect(host.record(token, "exit") == "rc=3 signal=0 timedout=0\n")
        let again = try host.run(DetachedStep.startInShell(token, command: command))
        #expect(again.status == DetachedStep.protocolExit && text(again.stdout) == "flotilla-step state=exists\n", "started once only")
    }

    /// With the facts a session's first short line told, the later ones read none of them
    /// again: the step runs with the login's umask as told, its record has the boot id as
    /// told, a new run's directory is made owner-only, and a second start is refused.
    @Test func theShortStartLineUsesTheFactsTheSessionsFirstLineTold() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let root = host.file(".flotilla/steps").path
        let facts = try #require(DetachedStep.ShellFacts(root: root, bootID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", umask: "0027"))
        let token = Self.token(run: "20240102T000000-new")
        let line = DetachedStep.startInShell(token, command: "umask; echo err >&2; exit 6", facts: facts)
        #expect(!line.contains("/proc/$$/status") && !line.contains("boot_id") && !line.contains("$HOME"))
        let ran = try host.run(line)
        #expect(ran.status == 6 && text(ran.stdout) == "flotilla-step state=ended rc=6 signal=0 timedout=0 boot=same\n0027\n" && text(ran.stderr) == "err\n",
                "\(text(ran.stdout)) \(text(ran.stderr))")
        #expect(host.record(token, "cmd")?.hasPrefix("\(DetachedStep.header) 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 ") == true)
        for directory in [".flotilla", ".flotilla/steps", ".flotilla/steps/\(token.runDirectory)"] {
            let mode = try FileManager.default.attributesOfItem(atPath: host.file(directory).path)[.posixPermissions] as? Int
            #expect(mode == 0o700, "\(directory)")
        }
        let again = try host.run(DetachedStep.startInShell(token, command: "exit 6", facts: facts))
        #expect(again.status == DetachedStep.protocolExit && text(again.stdout) == "flotilla-step state=exists\n", "started once only")
        // Facts that could not stand in a line as they are are not taken.
        #expect(DetachedStep.ShellFacts(root: "/home/a b/.flotilla/steps", bootID: "x", umask: "0022") == nil)
        #expect(DetachedStep.ShellFacts(root: "/h/../steps", bootID: "x", umask: "0022") == nil)
        #expect(DetachedStep.ShellFacts(root: root, bootID: "x;y", umask: "0022") == nil)
        #expect(DetachedStep.ShellFacts(root: root, bootID: "x", umask: "0089") == nil)
    }

    /// Where the channel's shell cannot run the step (dash; bash that does not lead its own
    /// session), the short line records nothing and says so; the whole line then runs it.
    @Test(arguments: [("/bin/sh", true), ("/bin/sh", false), ("/bin/bash", false)])
    func theShortStartLineDeclinesWhereTheShellCannotRunTheStep(shell: String, sessionLeader: Bool) throws {
        let host = try Host(shell: shell, sessionLeader: sessionLeader)
        let token = Self.token()
        let declined = try host.run(DetachedStep.startInShell(token, command: "echo ran; exit 4"))
        #expect(declined.status == DetachedStep.protocolExit && text(declined.stdout) == "flotilla-step state=never\n" && declined.stderr.isEmpty,
                "\(text(declined.stdout)) \(text(declined.stderr))")
        #expect(DetachedStep.State.parse(text(try host.run(DetachedStep.query(token)).stdout))?.phase == .never)
        let ran = try host.run(DetachedStep.start(token, command: "echo ran; exit 4"))
        #expect(ran.status == 4 && text(ran.stdout).hasSuffix("\nran\n"), "\(text(ran.stdout))")
    }

    /// The host's last detached step removes the run's records over its own channel, once
    /// the controller answers `clean` (the journal has its end): in the channel's own bash
    /// (as sshd starts it), in a runner of its own (a command with `exec`) and under dash.
    @Test(arguments: [("/bin/bash", true, "echo out; echo err >&2; exit 3"), ("/bin/bash", true, "exec sh -c 'echo out; echo err >&2; exit 3'"),
                      ("/bin/sh", false, "echo out; echo err >&2; exit 3")])
    func theLastStepRemovesTheRunsRecordsWhenTheControllerAnswers(shell: String, sessionLeader: Bool, command: String) throws {
        let host = try Host(shell: shell, sessionLeader: sessionLeader)
        let earlier = Self.token(1), last = Self.token(2)
        #expect(try host.run(DetachedStep.start(earlier, command: "true")).status == 0)
        let channel = try host.start(DetachedStep.start(last, command: command, thenRemovingOlderThan: 7), holdInput: true)
        // The output ends (both streams closed) while the line waits for the answer.
        channel.read { _ in false }
        let line = String(decoding: channel.stdout.prefix { $0 != 10 }, as: UTF8.self)
        #expect(DetachedStep.State.parse(line)?.phase == .ended && DetachedStep.State.parse(line)?.exitStatus == 3, "\(line)")
        #expect(text(channel.streamedStdout) == "out\n" && text(channel.stderr) == "err\n", "\(text(channel.stderr))")
        #expect(!isGone(channel.pid) && host.exists(earlier) && host.record(last, "exit") == "rc=3 signal=0 timedout=0\n")
        channel.answer("clean")
        #expect(channel.finish() == DetachedStep.removedExit)
        #expect(!FileManager.default.fileExists(atPath: host.file(".flotilla/steps/\(last.runDirectory)").path))
    }

    /// A controller that dies before it could answer leaves the records for `resume`.
    @Test(arguments: [("/bin/bash", true), ("/bin/sh", false)])
    func theLastStepKeepsTheRecordsWithoutAnAnswer(shell: String, sessionLeader: Bool) throws {
        let host = try Host(shell: shell, sessionLeader: sessionLeader)
        let token = Self.token()
        let channel = try host.start(DetachedStep.start(token, command: "echo done; exit 4", thenRemovingOlderThan: 7), holdInput: true)
        channel.read { _ in false }
        channel.answer(nil)
        #expect(channel.finish() == 4)
        #expect(host.record(token, "exit") == "rc=4 signal=0 timedout=0\n")
        let attach = try host.run(DetachedStep.attach(token))
        #expect(attach.status == 4 && text(attach.stdout).hasSuffix("done\n"), "\(text(attach.stdout))")
    }

    @Test func underSshdAStepWhoseEndCannotBeRecordedStillReportsIt() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let token = Self.token()
        // The command takes its own record away: its end has nowhere to go but the channel.
        let channel = try host.start(DetachedStep.start(token, command: "echo bye; rm -rf \"$HOME/.flotilla\"; exit 5"))
        #expect(channel.finish() == 5)
        let line = String(decoding: channel.stdout.prefix { $0 != 10 }, as: UTF8.self)
        #expect(DetachedStep.State.parse(line) == DetachedStep.State(phase: .ended, exitStatus: 5, sameBoot: true), "\(line)")
        #expect(channel.stderr.isEmpty, "\(text(channel.stderr))")
        #expect(!host.exists(token))
    }

    @Test func underSshdTheStepOutlivesItsChannelAndIsRecordedOnce() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let token = Self.token()
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let count = host.file("count")
        let command = "echo run >>\(count.path); echo started; echo up >\(ready.path); read x <\(gate.path); echo \"after $x\"; echo late >&2; exit 7"
        let controller = try host.start(DetachedStep.start(token, command: command))
        defer { host.killStep(token) }
        #expect(host.awaitLine(ready) == "up")
        let ended = try awaitExit(of: controller.pid)
        controller.hangUp()
        host.open(gate)
        ended()
        _ = controller.finish()
        #expect(host.record(token, "exit") == "rc=7 signal=0 timedout=0\n", "\(host.record(token, "exit") ?? "none")")
        let attach = try host.run(DetachedStep.attach(token))
        #expect(attach.status == 7)
        #expect(text(attach.stdout).hasSuffix("started\nafter go\n") && text(attach.stderr) == "late\n", "\(text(attach.stdout))")
        #expect(try String(contentsOf: count, encoding: .utf8) == "run\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func underSshdWhatTheStepLeavesRunningDoesNotHoldTheChannel() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let child = host.file("child")
        let channel = try host.start(DetachedStep.start(Self.token(), command: "sleep 300 & echo $! >\(child.path); echo left"))
        #expect(channel.finish() == 0 && text(channel.streamedStdout) == "left\n")
        if let pid = pid_t(try String(contentsOf: child, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) { kill(pid, SIGKILL) }
    }

    @Test func underSshdACommandWithTrapsOrExecGetsARunnerOfItsOwn() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let trapping = Self.token(1), replacing = Self.token(2)
        let channel = try host.start(DetachedStep.start(trapping, command: "trap 'echo bye' EXIT; echo hi"))
        #expect(channel.finish() == 0 && text(channel.streamedStdout) == "hi\nbye\n")
        #expect(host.runner(trapping) != channel.pid)
        let replaced = try host.start(DetachedStep.start(replacing, command: "exec sh -c 'exit 4'"))
        #expect(replaced.finish() == 4)
        #expect(host.record(replacing, "exit") == "rc=4 signal=0 timedout=0\n")
    }

    @Test func underBecomeTheStepGetsARunnerOfItsOwn() throws {
        let host = try Host(shell: "/bin/bash", sessionLeader: true)
        let token = Self.token()
        let channel = try host.start(DetachedStep.start(token, command: "echo hi", become: true))
        #expect(channel.finish() == 0 && text(channel.streamedStdout) == "hi\n")
        #expect(host.runner(token) != channel.pid)
    }

    @Test func recordsAreOwnerOnlyAndHoldNothingFromStdin() throws {
        let host = try Host()
        let token = Self.token()
        let secret = "hunter2-become-password"
        let channel = try host.start(DetachedStep.start(token, command: "echo ok; cat; echo done >&2"), input: Array((secret + "\n").utf8))
        #expect(channel.finish() == 0 && text(channel.streamedStdout) == "ok\n", "the command reads /dev/null, not the channel")
        let root = host.home.appendingPathComponent(".flotilla")
        var checked = 0
        for path in [root.path] + (FileManager.default.subpaths(atPath: root.path) ?? []).map({ root.path + "/" + $0 }) {
            var info = stat()
            #expect(lstat(path, &info) == 0)
            let isDirectory = info.st_mode & S_IFMT == S_IFDIR
            #expect(info.st_mode & 0o777 == (isDirectory ? 0o700 : 0o600), "\(path): \(String(info.st_mode & 0o777, radix: 8))")
            if !isDirectory { #expect(!text(Array(FileManager.default.contents(atPath: path) ?? Data())).contains(secret), "\(path)") }
            checked += 1
        }
        #expect(checked >= 8, "~/.flotilla, the steps dir, the run dir and the attempt's five files")
    }

    @Test func cleanupOfARunKeepsOnlyStepsStillRunning() throws {
        let host = try Host()
        let done = Self.token(1), running = Self.token(2), otherRun = Self.token(1, run: "other")
        #expect(try host.run(DetachedStep.start(done, command: "true")).status == 0)
        #expect(try host.run(DetachedStep.start(otherRun, command: "true")).status == 0)
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let controller = try host.start(DetachedStep.start(running, command: "echo up >\(ready.path); read x <\(gate.path)"))
        #expect(host.awaitLine(ready) == "up")

        let first = try host.run(DetachedStep.cleanup(run: done.run, olderThanDays: 7))
        #expect(first.status == 0 && text(first.stdout) == "flotilla-step kept=\(running.name)\n")
        #expect(!host.exists(done) && !FileManager.default.fileExists(atPath: host.recordFile(done, "out").path))
        #expect(host.exists(running))
        host.open(gate)
        #expect(controller.finish() == 0)
        #expect(try host.run(DetachedStep.cleanup(run: done.run, olderThanDays: 7)).stdout.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: host.recordFile(running).deletingLastPathComponent().path), "the run's directory too")
        #expect(host.exists(otherRun), "another run's records stay")
    }

    @Test func cleanupByAgeRemovesOnlyOldRecords() throws {
        let host = try Host()
        let old = Self.token(1, run: "old"), recent = Self.token(1, run: "recent")
        for token in [old, recent] { #expect(try host.run(DetachedStep.start(token, command: "true")).status == 0) }
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-3 * 86400)], ofItemAtPath: host.recordFile(old).path)
        let gate = try host.gate("gate"), ready = try host.gate("ready")
        let oldRunning = Self.token(2, run: "old")
        let controller = try host.start(DetachedStep.start(oldRunning, command: "echo up >\(ready.path); read x <\(gate.path)"))
        #expect(host.awaitLine(ready) == "up")
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-3 * 86400)], ofItemAtPath: host.recordFile(oldRunning).path)
        let swept = try host.run(DetachedStep.cleanup(run: "this", olderThanDays: 2))
        #expect(swept.status == 0 && text(swept.stdout) == "flotilla-step kept=\(oldRunning.name)\n", "\(text(swept.stdout))")
        #expect(!host.exists(old) && host.exists(oldRunning), "an old step still running is kept")
        #expect(host.exists(recent))
        host.open(gate)
        #expect(controller.finish() == 0)
        #expect(try host.run(DetachedStep.cleanup(run: "this", olderThanDays: 2)).status == 0)
        #expect(!FileManager.default.fileExists(atPath: host.recordFile(old).deletingLastPathComponent().path))
    }

    @Test func tokenNamesAreSafeDistinctAndBounded() {
        let token = DetachedStep.Token(run: "20240101T000000-abc", host: "st2-01.example.com", step: 3, attempt: 2)
        #expect(token.path == "20240101T000000-abc/st2-01.example.com.3.2")
        #expect(DetachedStep.fileName("a b/c'$") == "a%20b%2Fc%27%24")
        #expect(DetachedStep.fileName("..") == "%2E.")
        #expect(DetachedStep.fileName("") == "%00")
        #expect(DetachedStep.fileName("100%") == "100%25", "'%' itself is escaped, so the encoding is one-to-one")
        let long = String(repeating: "h", count: 300)
        #expect(DetachedStep.fileName(long).utf8.count < 130 && DetachedStep.fileName(long) != DetachedStep.fileName(long + "x"))
    }

    @Test(arguments: [
        ("flotilla-step state=running pgid=42 boot=same\n", DetachedStep.State(phase: .running, sameBoot: true)),
        ("flotilla-step state=ended rc=143 signal=15 timedout=1 ended=1700000000 boot=other out=10 err=0",
         DetachedStep.State(phase: .ended, exitStatus: 143, signal: 15, timedOut: true, sameBoot: false, stdoutBytes: 10, stderrBytes: 0)),
        ("flotilla-step state=ended rc=0 signal=0 timedout=0 boot=unknown future=field", DetachedStep.State(phase: .ended, exitStatus: 0)),
        ("flotilla-step state=never boot=unknown", DetachedStep.State(phase: .never)),
        ("flotilla-step state=lost boot=same", DetachedStep.State(phase: .lost, sameBoot: true)),
        ("flotilla-step state=exists", DetachedStep.State(phase: .exists)),
    ])
    func stateLinesParse(_ line: String, _ expected: DetachedStep.State) {
        #expect(DetachedStep.State.parse(line) == expected)
    }

    @Test(arguments: ["", "flotilla-step", "flotilla-step state=paused", "flotilla-step state=ended", "flotilla-step state=ended rc=x",
                      "other state=ended rc=0", "flotilla-step state=never junk", "hello"])
    func otherLinesAreNotStateLines(_ line: String) {
        #expect(DetachedStep.State.parse(line) == nil)
    }
}
