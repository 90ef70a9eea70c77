import Foundation
import Testing
@testable import FlotillaCore

/// Everything appended to it, in order, and a way to wait for the first that matches
/// (already there or still to come) without sleeping.
final class Recorder<Event: Sendable>: @unchecked Sendable {
    // @unchecked: every field is only touched under `lock`.
    private let lock = NSLock()
    private var events: [Event] = []
    private var waiters: [(matches: @Sendable (Event) -> Bool, continuation: CheckedContinuation<Event, Never>)] = []

    func append(_ event: Event) {
        let ready = lock.withLock {
            events.append(event)
            let ready = waiters.filter { $0.matches(event) }
            waiters.removeAll { $0.matches(event) }
            return ready
        }
        for waiter in ready { waiter.continuation.resume(returning: event) }
    }

    var all: [Event] { lock.withLock { events } }

    @discardableResult
    func first(where matches: @escaping @Sendable (Event) -> Bool) async -> Event {
        await withCheckedContinuation { continuation in
            let found: Event? = lock.withLock {
                if let event = events.first(where: matches) { return event }
                waiters.append((matches, continuation))
                return nil
            }
            if let found { continuation.resume(returning: found) }
        }
    }
}

/// A clock that moves only when the test says: sleeps end when it is advanced past them.
final class ManualClock: RolloutClock, @unchecked Sendable {
    // @unchecked: `current` and `sleepers` are only touched under `lock`.
    private let lock = NSLock()
    private var current: Date
    private var sleepers: [(deadline: Date, continuation: CheckedContinuation<Void, Error>)] = []
    /// The deadline of every sleep, as it begins.
    let sleeps = Recorder<Date>()

    /// Where the clock started.
    let start: Date

    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.start = start
        current = start
    }

    var now: Date { lock.withLock { current } }

    func sleep(until deadline: Date) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            let passed = lock.withLock {
                if deadline <= current { return true }
                sleepers.append((deadline, continuation))
                return false
            }
            sleeps.append(deadline)
            if passed { continuation.resume() }
        }
    }

    /// Moves the time to `date` (never back) and ends the sleeps due by then.
    func advance(to date: Date) {
        let due = lock.withLock {
            current = max(current, date)
            let due = sleepers.filter { $0.deadline <= current }
            sleepers.removeAll { $0.deadline <= current }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    func advance(by seconds: TimeInterval) { advance(to: now.addingTimeInterval(seconds)) }
}

/// A fleet that exists only in memory: each host scripted, every command recorded.
final class FakeTransport: HostTransport, @unchecked Sendable {
    /// What a command does when it runs.
    enum Behaviour: Sendable {
        case exit(Int32, stdout: String = "", stderr: String = "")
        /// Waits for ``release(_:_:exit:stdout:)``.
        case hang
        /// The session was already gone: the command does not run.
        case notStarted
        /// The session breaks while the command runs.
        case lost
        case timedOut
    }

    /// What a connection attempt does.
    enum Connect: Sendable {
        case open
        case refused(retryable: Bool)
    }

    enum Event: Sendable, Equatable {
        case connected(host: Int, session: Int)
        case refused(host: Int)
        /// The command started (a `notStarted` attempt is not one).
        case ran(host: Int, command: String)
        case hanging(host: Int, command: String)
        case closed(host: Int, session: Int)
        case fetched(host: Int, glob: String)
    }

    let events = Recorder<Event>()
    // @unchecked: the fields below are only touched under `lock`.
    private let lock = NSLock()
    private var connectScripts: [Int: [Connect]] = [:]
    private var commandScripts: [Int: [String: [Behaviour]]] = [:]
    private var hung: [String: CheckedContinuation<StepOutcome, Never>] = [:]
    private var sessions = 0

    /// The next runs of `command` on `host` do these, in order; then it exits 0.
    func script(_ host: Int, _ command: String, _ behaviours: Behaviour...) {
        lock.withLock { commandScripts[host, default: [:]][command, default: []] += behaviours }
    }

    /// The next connection attempts to `host` do these, in order; then they open.
    func scriptConnect(_ host: Int, _ attempts: Connect...) {
        lock.withLock { connectScripts[host, default: []] += attempts }
    }

    /// Ends a command that hangs.
    func release(_ host: Int, _ command: String, exit: Int32 = 0, stdout: String = "") {
        let continuation = lock.withLock { hung.removeValue(forKey: "\(host)|\(command)") }
        continuation?.resume(returning: StepOutcome(exitStatus: exit, stdoutTail: stdout))
    }

    /// The commands `host` started, in order.
    func commands(_ host: Int) -> [String] {
        events.all.compactMap { if case .ran(host, let command) = $0 { command } else { nil } }
    }

    /// Every command started, with its host, in order.
    var ran: [(host: Int, command: String)] {
        events.all.compactMap { if case .ran(let host, let command) = $0 { (host, command) } else { nil } }
    }

    func connect(_ host: Int) async throws -> any HostConnection {
        let (attempt, session): (Connect, Int) = lock.withLock {
            let attempt = connectScripts[host]?.isEmpty == false ? connectScripts[host]!.removeFirst() : .open
            if case .open = attempt { sessions += 1 }
            return (attempt, sessions)
        }
        switch attempt {
        case .open:
            events.append(.connected(host: host, session: session))
            return FakeConnection(transport: self, host: host, session: session)
        case .refused(let retryable):
            events.append(.refused(host: host))
            throw TransportError(.unreachable, "connection refused", retryable: retryable)
        }
    }

    fileprivate func run(_ command: String, host: Int, output: @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        let behaviour: Behaviour = lock.withLock {
            commandScripts[host]?[command]?.isEmpty == false ? commandScripts[host]![command]!.removeFirst() : .exit(0)
        }
        if case .notStarted = behaviour { throw TransportError(.notStarted, "session gone") }
        events.append(.ran(host: host, command: command))
        switch behaviour {
        case .exit(let status, let stdout, let stderr):
            Array(stdout.utf8).withUnsafeBytes { output(.stdout, $0) }
            return StepOutcome(exitStatus: status, stdoutTail: stdout, stderrTail: stderr)
        case .hang:
            let outcome = await withCheckedContinuation { continuation in
                lock.withLock { hung["\(host)|\(command)"] = continuation }
                events.append(.hanging(host: host, command: command))
            }
            Array(outcome.stdoutTail.utf8).withUnsafeBytes { output(.stdout, $0) }
            return outcome
        case .lost:
            throw TransportError(.connectionLost, "connection reset by peer")
        case .timedOut:
            return StepOutcome(exitStatus: nil, timedOut: true)
        case .notStarted:
            fatalError("handled above")
        }
    }

    fileprivate func closed(host: Int, session: Int) { events.append(.closed(host: host, session: session)) }

    fileprivate func fetch(glob: String, host: Int, into directory: URL) throws -> [String] {
        events.append(.fetched(host: host, glob: glob))
        let name = "st2api.audit.log"
        try Data("audit\n".utf8).write(to: directory.appendingPathComponent(name))
        return ["/var/log/st2/\(name)"]
    }
}

private struct FakeConnection: HostConnection {
    let transport: FakeTransport
    let host: Int
    let session: Int

    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        try await transport.run(command, host: host, output: output)
    }

    func fetch(glob: String, into directory: URL) async throws -> [String] {
        try transport.fetch(glob: glob, host: host, into: directory)
    }

    func close() async { transport.closed(host: host, session: session) }
}

/// One engine over fakes: a real journal in a private temporary state dir, the fake
/// transport, the manual clock, and recorders of its progress and policy events.
final class EngineHarness: @unchecked Sendable {
    // @unchecked: every stored property is immutable and Sendable but `engine`, set once in init.
    let record: RunRecord
    let stateDir: URL
    let transport = FakeTransport()
    let clock = ManualClock()
    let progress = Recorder<RolloutEngine.Progress>()
    /// Each event the policy handled, with its actions.
    let handled = Recorder<(event: RolloutPolicy.Event, actions: [RolloutPolicy.Action])>()
    private(set) var engine: RolloutEngine!

    /// - Parameters:
    ///   - hosts: the run's hosts; their `batch` is set from `batches`.
    ///   - batches: host indices per batch.
    ///   - resume: writes what an earlier controller left in the journal, and returns the
    ///     steps done per host (``doneSteps(_:)``), as `flotilla resume` passes them.
    init(hosts: [RunHost], batches: [[Int]], policy configure: (inout RolloutPolicy.Config) -> Void = { _ in },
         settings tune: (inout RolloutEngine.Settings) -> Void = { _ in },
         resume: (Journal) throws -> [Int: Set<Int>] = { _ in [:] }) throws {
        var template = Array((FileManager.default.temporaryDirectory.path + "/flotilla-engine-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw JournalError(.io, "mkdtemp failed")
        }
        stateDir = URL(fileURLWithPath: String(cString: made)).appendingPathComponent("state")
        var hosts = hosts
        for (index, batch) in batches.enumerated() {
            for host in batch { hosts[host].batch = index }
        }
        record = RunRecord(id: "20260101-000000-e001", kind: .runbook, name: "engine test", targetVersion: nil, createdAt: clock.now,
                           hosts: hosts, batches: batches.map { $0.map { hosts[$0].name } }, options: RunOptions())
        var config = RolloutPolicy.Config(batches: batches, targeted: hosts.count)
        configure(&config)
        var settings = RolloutEngine.Settings(runDirectory: stateDir.appendingPathComponent("runs/\(record.id)"))
        settings.logger.logLevel = .critical // the tests read the journal and the host logs
        tune(&settings)
        let journal = try Journal.create(stateDir: stateDir, run: record)
        let done = try resume(journal)
        let progress = progress
        engine = RolloutEngine(record: record, journal: journal, policy: RolloutPolicy(config: config),
                               transport: transport, settings: settings, done: done, clock: clock,
                               progress: { progress.append($0) })
    }

    /// The steps a resume never runs again: those recorded succeeded or skipped.
    static func doneSteps(_ state: JournalState) -> [Int: Set<Int>] {
        var done: [Int: Set<Int>] = [:]
        for (index, host) in state.hosts.enumerated() {
            done[index] = Set(host.steps.filter { $0.status == .succeeded || $0.status == .skipped }.map(\.index))
        }
        return done
    }

    deinit { try? FileManager.default.removeItem(at: stateDir.deletingLastPathComponent()) }

    /// Starts the run; its outcome comes from the task.
    func start() async -> Task<RolloutPolicy.Outcome, Never> {
        let handled = handled
        await engine.observeEvents { handled.append(($0, $1)) }
        let engine = engine!
        return Task { await engine.run() }
    }

    /// Runs to the end.
    func run() async -> RolloutPolicy.Outcome { await start().value }

    func state() async throws -> JournalState { try await engine.state() }

    /// Ends, in order, the sleeps the run takes until these seconds after the clock's start
    /// (each once the engine sleeps until it).
    func endSleeps(at offsets: [TimeInterval]) async {
        for offset in offsets {
            let deadline = clock.start.addingTimeInterval(offset)
            await clock.sleeps.first { $0 == deadline }
            clock.advance(to: deadline)
        }
    }

    /// Waits until `host` has finished (as the progress reports it).
    func hostFinished(_ name: String) async {
        await progress.first { if case .hostFinished(host: name, _, _, _) = $0 { true } else { false } }
    }

    /// The host's log file.
    func log(_ name: String) throws -> String {
        try String(contentsOf: stateDir.appendingPathComponent("runs/\(record.id)/logs/\(name).log"), encoding: .utf8)
    }
}

/// A host named `name` with one step per command (plain commands unless given).
func host(_ name: String, _ commands: [String], groups: [String: String] = [:]) -> RunHost {
    RunHost(name: name, address: "10.0.0.1", batch: nil, groups: groups, steps: commands.map { RunStep(name: $0, command: $0) })
}

func host(_ name: String, steps: [RunStep], groups: [String: String] = [:]) -> RunHost {
    RunHost(name: name, address: "10.0.0.1", batch: nil, groups: groups, steps: steps)
}
