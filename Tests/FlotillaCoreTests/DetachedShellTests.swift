import Foundation
import Synchronization
import Testing
@testable import FlotillaCore

/// A host connection that runs each command line in a local `bash -c` (HOME a test
/// directory), streaming its output as the SSH channel would: the default detached
/// execution (``DetachedShell``) over it, without SSH.
private struct LocalShell: HostConnection {
    let home: URL
    let shellRunner: ShellRunner?
    /// Every line run, in order.
    let sent = Sent()

    /// Whether bash leads a session of its own, as sshd starts it.
    let sessionLeader: Bool

    init(home: URL, shellRunner: ShellRunner? = nil, sessionLeader: Bool = false) {
        self.home = home
        self.shellRunner = shellRunner
        self.sessionLeader = sessionLeader
    }

    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        sent.lines.withLock { $0.append(command) }
        return try await withCheckedThrowingContinuation { continuation in
            // A thread of its own: the reads and the wait block, and must not hold a pool thread.
            Thread.detachNewThread {
                do {
                    continuation.resume(returning: try Self.runBlocking(command, home: home, sessionLeader: sessionLeader, output: output))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private static func runBlocking(_ command: String, home: URL, sessionLeader: Bool,
                                    output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) throws -> StepOutcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: sessionLeader ? "/usr/bin/setsid" : "/bin/bash")
        process.arguments = (sessionLeader ? ["--wait", "/bin/bash"] : []) + ["-c", command]
        process.environment = ["HOME": home.path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let group = DispatchGroup()
        let tails = Mutex<[OutputKind: [UInt8]]>([:])
        for (kind, pipe) in [(OutputKind.stdout, out), (.stderr, err)] {
            group.enter()
            Thread.detachNewThread {
                while true {
                    let data = pipe.fileHandleForReading.availableData
                    if data.isEmpty { break }
                    tails.withLock { $0[kind, default: []] += data }
                    data.withUnsafeBytes { output(kind, $0) }
                }
                group.leave()
            }
        }
        group.wait()
        process.waitUntilExit()
        let text = tails.withLock { tails in
            (String(decoding: tails[.stdout] ?? [], as: UTF8.self), String(decoding: tails[.stderr] ?? [], as: UTF8.self))
        }
        return StepOutcome(exitStatus: process.terminationStatus, stdoutTail: text.0, stderrTail: text.1)
    }

    func close() async {}
}

private final class Sent: Sendable {
    let lines = Mutex<[String]>([])
}

/// What a detached step passes on, in order, per stream; a test can await a text.
private final class Received: Sendable {
    private struct State {
        var bytes: [OutputKind: [UInt8]] = [:]
        var waiters: [(OutputKind, String, CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    @Sendable func take(_ kind: OutputKind, _ chunk: UnsafeRawBufferPointer) {
        let ready = state.withLock { state in
            state.bytes[kind, default: []] += chunk
            let text = String(decoding: state.bytes[kind] ?? [], as: UTF8.self)
            let ready = state.waiters.filter { $0.0 == kind && text.contains($0.1) }.map(\.2)
            state.waiters.removeAll { $0.0 == kind && text.contains($0.1) }
            return ready
        }
        ready.forEach { $0.resume() }
    }

    func text(_ kind: OutputKind) -> String { state.withLock { String(decoding: $0.bytes[kind] ?? [], as: UTF8.self) } }

    /// Returns once `kind` holds `part`.
    func awaitText(_ kind: OutputKind, _ part: String) async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state in
                if String(decoding: state.bytes[kind] ?? [], as: UTF8.self).contains(part) { return true }
                state.waiters.append((kind, part, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}

@Suite struct DetachedShellTests {
    let home: URL

    init() throws {
        home = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("detached-shell-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
    }

    static func token(_ step: Int) -> DetachedStep.Token { DetachedStep.Token(run: "r1", host: "h1", step: step, attempt: 1) }

    /// A short step: everything it printed, each stream whole and once, its status, its tails.
    @Test func aShortStepPassesItsWholeOutputOnceAtItsEnd() async throws {
        defer { try? FileManager.default.removeItem(at: home) }
        let received = Received()
        let outcome = await LocalShell(home: home).startDetached(Self.token(1), command: "echo one; echo 'Could not get lock' >&2; exit 100",
                                                                 become: false, timeout: nil, output: received.take)
        guard case .ended(let ended) = outcome else { Issue.record("\(outcome)"); return }
        #expect(ended.exitStatus == 100 && ended.exitSignal == nil)
        #expect(received.text(.stdout) == "one\n" && received.text(.stderr) == "Could not get lock\n")
        #expect(ended.stdoutTail == "one\n" && ended.stderrTail == "Could not get lock\n")
    }

    /// A session whose shell cannot run a step itself (here bash not leading its own
    /// session) declines the short start line before recording anything; the step then
    /// runs once from the whole line, and the session's later starts send only that.
    @Test func aShellThatDeclinesTheShortStartGetsTheWholeLineFromThenOn() async throws {
        defer { try? FileManager.default.removeItem(at: home) }
        let connection = LocalShell(home: home, shellRunner: ShellRunner())
        let marks = home.appendingPathComponent("marks")
        for step in 1...2 {
            let received = Received()
            let outcome = await connection.startDetached(Self.token(step), command: "echo \(step) >>\(marks.path); echo ran \(step)", become: false,
                                                         timeout: nil, output: received.take)
            guard case .ended(let ended) = outcome else { Issue.record("\(outcome)"); return }
            #expect(ended.exitStatus == 0 && received.text(.stdout) == "ran \(step)\n" && received.text(.stderr).isEmpty)
        }
        #expect(try String(contentsOf: marks, encoding: .utf8) == "1\n2\n", "each step ran once")
        let sent = connection.sent.lines.withLock { $0 }
        #expect(sent == [DetachedStep.startInShell(Self.token(1), command: "echo 1 >>\(marks.path); echo ran 1"),
                         DetachedStep.start(Self.token(1), command: "echo 1 >>\(marks.path); echo ran 1"),
                         DetachedStep.start(Self.token(2), command: "echo 2 >>\(marks.path); echo ran 2")],
                "\(sent.map { $0.count })")
    }

    /// A session's first short start line tells the session's facts; its later ones use
    /// them instead of reading them again, and each step runs once with its output whole.
    @Test func aSessionsLaterShortStartsUseTheFactsItsFirstTold() async throws {
        defer { try? FileManager.default.removeItem(at: home) }
        let runner = ShellRunner()
        let connection = LocalShell(home: home, shellRunner: runner, sessionLeader: true)
        let marks = home.appendingPathComponent("marks")
        for step in 1...3 {
            let received = Received()
            let outcome = await connection.startDetached(Self.token(step), command: "echo \(step) >>\(marks.path); echo ran \(step); echo e >&2",
                                                         become: false, timeout: nil, output: received.take)
            guard case .ended(let ended) = outcome else { Issue.record("\(outcome)"); return }
            #expect(ended.exitStatus == 0 && received.text(.stdout) == "ran \(step)\n" && received.text(.stderr) == "e\n")
        }
        #expect(try String(contentsOf: marks, encoding: .utf8) == "1\n2\n3\n", "each step ran once")
        let facts = try #require(runner.facts)
        #expect(facts.root == home.appendingPathComponent(".flotilla/steps").path)
        let sent = connection.sent.lines.withLock { $0 }
        #expect(sent == [DetachedStep.startInShell(Self.token(1), command: "echo 1 >>\(marks.path); echo ran 1; echo e >&2")]
                    + (2...3).map { DetachedStep.startInShell(Self.token($0), command: "echo \($0) >>\(marks.path); echo ran \($0); echo e >&2", facts: facts) },
                "\(sent.map { $0.count })")
    }

    /// A step that outlives the follow delay is followed live; its end passes on nothing twice.
    @Test func aLongStepIsFollowedLiveAndNothingIsPassedTwice() async throws {
        defer { try? FileManager.default.removeItem(at: home) }
        let received = Received()
        let gate = home.appendingPathComponent("gate")
        #expect(mkfifo(gate.path, 0o600) == 0)
        let connection = LocalShell(home: home)
        let step = Task {
            await connection.startDetached(Self.token(2), command: "echo before; echo early >&2; read x <\(gate.path); echo after; echo late >&2",
                                           become: false, timeout: nil, followAfter: .milliseconds(200), output: received.take)
        }
        // The first line arrives live, through the follower, while the step still waits.
        await received.awaitText(.stdout, "before\n")
        #expect(received.text(.stdout) == "before\n")
        let fd = open(gate.path, O_WRONLY)
        _ = write(fd, "go\n", 3)
        close(fd)
        guard case .ended(let ended) = await step.value else { Issue.record("not ended"); return }
        #expect(ended.exitStatus == 0)
        #expect(received.text(.stdout) == "before\nafter\n" && received.text(.stderr) == "early\nlate\n")
    }

    /// Output that does not start with a state line (a channel whose command something else
    /// answered) is the stream's own: passed on whole, stderr held back is passed at the end.
    @Test func outputWithoutAStateLineIsPassedOnWhole() {
        let received = Received()
        let filter = DetachedShell.StreamFilter(stateLineFirst: true, offsets: (0, 0), output: received.take)
        for (kind, text) in [(OutputKind.stderr, "E: Could not get lock\n"), (.stdout, "no state\nmore")] {
            Array(text.utf8).withUnsafeBytes { filter.take(kind, $0) }
        }
        filter.finish()
        #expect(filter.state == nil)
        #expect(received.text(.stdout) == "no state\nmore" && received.text(.stderr) == "E: Could not get lock\n")

        let onlyStderr = Received()
        let passed = DetachedShell.Passed(onlyStderr.take)
        let second = DetachedShell.StreamFilter(stateLineFirst: true, offsets: (0, 0), output: passed.take)
        Array("E: Could not get lock\n".utf8).withUnsafeBytes { second.take(.stderr, $0) }
        #expect(onlyStderr.text(.stderr).isEmpty, "held until the first line of stdout says what it is")
        second.finish()
        #expect(onlyStderr.text(.stderr) == "E: Could not get lock\n" && passed.tails.stderr == "E: Could not get lock\n")
    }
}
