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
///
/// Detached steps run "on the host" natively: a host keeps each token's step, running or
/// ended, whatever becomes of the connections, so a step cut off by a lost connection
/// goes on and can be re-attached; ``Event/ran(host:command:)`` is recorded once per
/// start on the host, so `commands(_:)` says how many times a step really ran.
final class FakeTransport: HostTransport, @unchecked Sendable {
    /// What a command does when it runs.
    indirect enum Behaviour: Sendable {
        case exit(Int32, stdout: String = "", stderr: String = "")
        /// Waits for ``release(_:_:exit:stdout:)``.
        case hang
        /// The session was already gone: the command does not run.
        case notStarted
        /// The session breaks while the command runs. A detached step goes on and exits 0
        /// on the host (as `.cut(.exit(0))`).
        case lost
        /// Past its timeout: a plain command's channel is closed; a detached step still
        /// runs on the host until killed.
        case timedOut
        /// Detached: the session breaks just after the start; the step goes on on the host
        /// as the inner behaviour says (an exit: it ends while no one follows it).
        case cut(Behaviour)
        /// Detached: the session breaks and the host loses the step's record (a reboot).
        case reboot
        /// Detached: the session breaks before the host sees the start (nothing ran).
        case unseen
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
        /// An attach to a step the host knows (running or ended).
        case attached(host: Int, command: String)
        case killed(host: Int, command: String)
        case cleaned(host: Int, run: String, become: Bool)
    }

    /// A detached step as the host keeps it.
    private struct HostStep {
        var command: String
        var ended: StepOutcome?
        var lost = false
        /// Who follows it, waiting for its end.
        var followers: [Int: (continuation: CheckedContinuation<DetachedOutcome, Never>, output: @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void)] = [:]
    }

    let events = Recorder<Event>()
    // @unchecked: the fields below are only touched under `lock`.
    private let lock = NSLock()
    private var connectScripts: [Int: [Connect]] = [:]
    private var commandScripts: [Int: [String: [Behaviour]]] = [:]
    private var hung: [String: CheckedContinuation<StepOutcome, Never>] = [:]
    private var sessions = 0
    private var hostSteps: [String: HostStep] = [:]
    private var nextFollower = 0

    /// The next runs of `command` on `host` do these, in order; then it exits 0.
    func script(_ host: Int, _ command: String, _ behaviours: Behaviour...) {
        lock.withLock { commandScripts[host, default: [:]][command, default: []] += behaviours }
    }

    /// The next connection attempts to `host` do these, in order; then they open.
    func scriptConnect(_ host: Int, _ attempts: Connect...) {
        lock.withLock { connectScripts[host, default: []] += attempts }
    }

    /// Ends a command that hangs (a plain one, or a detached step running on the host).
    func release(_ host: Int, _ command: String, exit: Int32 = 0, stdout: String = "") {
        let outcome = StepOutcome(exitStatus: exit, stdoutTail: stdout)
        let continuation = lock.withLock { hung.removeValue(forKey: "\(host)|\(command)") }
        continuation?.resume(returning: outcome)
        let key = lock.withLock { hostSteps.first { $0.key.hasPrefix("\(host)|") && $0.value.command == command && $0.value.ended == nil && !$0.value.lost }?.key }
        if let key { end(key, outcome) }
    }

    /// Drops every connection of `host` while its detached steps go on: their followers
    /// see the session break.
    func cut(_ host: Int) {
        let followers = lock.withLock {
            hostSteps.filter { $0.key.hasPrefix("\(host)|") }.flatMap { key, step in
                hostSteps[key]!.followers = [:]
                return step.followers.values.map(\.continuation)
            }
        }
        for follower in followers { follower.resume(returning: .connectionLost("network cut")) }
    }

    /// Puts a detached step on `host` as a controller that died left it: running, or ended.
    func seedDetached(_ host: Int, _ token: DetachedStep.Token, command: String, ended: StepOutcome? = nil) {
        lock.withLock { hostSteps["\(host)|\(token.path)"] = HostStep(command: command, ended: ended) }
    }

    /// Whether `host` still keeps a record of `token`.
    func hasRecord(_ host: Int, _ token: DetachedStep.Token) -> Bool { lock.withLock { hostSteps["\(host)|\(token.path)"] != nil } }

    /// Ends a running detached step and tells its followers.
    private func end(_ key: String, _ outcome: StepOutcome) {
        let followers = lock.withLock {
            hostSteps[key]?.ended = outcome
            let followers = hostSteps[key]?.followers.values.map { $0 } ?? []
            hostSteps[key]?.followers = [:]
            return followers
        }
        for follower in followers {
            Array(outcome.stdoutTail.utf8).withUnsafeBytes { follower.output(.stdout, $0) }
            follower.continuation.resume(returning: .ended(outcome))
        }
    }

    /// Waits for the step's end as a follower; a cancelled task stops following (the
    /// step goes on).
    private func follow(_ key: String, output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        let id = lock.withLock {
            nextFollower += 1
            return nextFollower
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now: DetachedOutcome? = lock.withLock {
                    guard let step = hostSteps[key] else { return .lost }
                    if let ended = step.ended { return .ended(ended) }
                    if Task.isCancelled { return .connectionLost("cancelled") }
                    hostSteps[key]!.followers[id] = (continuation, output)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let follower = lock.withLock { hostSteps[key]?.followers.removeValue(forKey: id) }
            follower?.continuation.resume(returning: .connectionLost("cancelled"))
        }
    }

    fileprivate func startDetached(_ token: DetachedStep.Token, command: String, host: Int,
                                   output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        let key = "\(host)|\(token.path)"
        let (behaviour, exists): (Behaviour, Bool) = lock.withLock {
            if hostSteps[key] != nil { return (.exit(0), true) }
            let behaviour = commandScripts[host]?[command]?.isEmpty == false ? commandScripts[host]![command]!.removeFirst() : .exit(0)
            if case .notStarted = behaviour { return (behaviour, false) }
            if case .unseen = behaviour { return (behaviour, false) }
            hostSteps[key] = HostStep(command: command)
            return (behaviour, false)
        }
        if exists { return .exists }
        if case .notStarted = behaviour { return .notStarted("session gone") }
        if case .unseen = behaviour { return .connectionLost("connection reset by peer") }
        events.append(.ran(host: host, command: command))
        return await startedDetached(key, behaviour, host: host, command: command, output: output)
    }

    private func startedDetached(_ key: String, _ behaviour: Behaviour, host: Int, command: String,
                                 output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        switch behaviour {
        case .exit(let status, let stdout, let stderr):
            let outcome = StepOutcome(exitStatus: status, stdoutTail: stdout, stderrTail: stderr)
            lock.withLock { hostSteps[key]?.ended = outcome }
            Array(stdout.utf8).withUnsafeBytes { output(.stdout, $0) }
            return .ended(outcome)
        case .hang:
            events.append(.hanging(host: host, command: command))
            return await follow(key, output: output)
        case .lost:
            lock.withLock { hostSteps[key]?.ended = StepOutcome(exitStatus: 0) }
            return .connectionLost("connection reset by peer")
        case .cut(let inner):
            switch inner {
            case .exit(let status, let stdout, let stderr):
                lock.withLock { hostSteps[key]?.ended = StepOutcome(exitStatus: status, stdoutTail: stdout, stderrTail: stderr) }
            default:
                events.append(.hanging(host: host, command: command))
            }
            return .connectionLost("network cut")
        case .reboot:
            lock.withLock { hostSteps[key]?.lost = true }
            return .connectionLost("host rebooted")
        case .timedOut:
            return .timedOut
        case .notStarted, .unseen:
            fatalError("handled before the start")
        }
    }

    fileprivate func attach(_ token: DetachedStep.Token, host: Int, stdoutOffset: Int, stderrOffset: Int,
                            output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        let key = "\(host)|\(token.path)"
        guard let step = lock.withLock({ hostSteps[key] }) else { return .never }
        if step.lost { return .lost }
        events.append(.attached(host: host, command: step.command))
        if let ended = step.ended {
            Array(ended.stdoutTail.utf8.dropFirst(stdoutOffset)).withUnsafeBytes { output(.stdout, $0) }
            Array(ended.stderrTail.utf8.dropFirst(stderrOffset)).withUnsafeBytes { output(.stderr, $0) }
            return .ended(ended)
        }
        return await follow(key, output: output)
    }

    fileprivate func kill(_ token: DetachedStep.Token, host: Int) -> DetachedOutcome {
        let key = "\(host)|\(token.path)"
        guard let step = lock.withLock({ hostSteps[key] }) else { return .never }
        if step.lost { return .lost }
        if let ended = step.ended { return .ended(ended) }
        events.append(.killed(host: host, command: step.command))
        let killed = StepOutcome(exitStatus: 143, timedOut: true)
        end(key, killed)
        return .ended(killed)
    }

    fileprivate func cleanup(run: String, host: Int, become: Bool) {
        events.append(.cleaned(host: host, run: run, become: become))
        lock.withLock {
            for (key, step) in hostSteps where key.hasPrefix("\(host)|\(DetachedStep.fileName(run))/") && (step.ended != nil || step.lost) {
                hostSteps[key] = nil
            }
        }
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
        case .lost, .cut, .reboot, .unseen:
            // A plain command dies with its channel, whatever goes on on the host.
            throw TransportError(.connectionLost, "connection reset by peer")
        case .timedOut:
            return StepOutcome(exitStatus: nil, timedOut: true)
        case .notStarted:
            fatalError("handled above")
        }
    }

    fileprivate func closed(host: Int, session: Int) { events.append(.closed(host: host, session: session)) }

}

private struct FakeConnection: HostConnection {
    let transport: FakeTransport
    let host: Int
    let session: Int

    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        try await transport.run(command, host: host, output: output)
    }

    func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        await transport.startDetached(token, command: command, host: host, output: output)
    }

    func attach(_ token: DetachedStep.Token, stdoutOffset: Int, stderrOffset: Int, become: Bool, timeout: Duration?,
                output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        await transport.attach(token, host: host, stdoutOffset: stdoutOffset, stderrOffset: stderrOffset, output: output)
    }

    func killDetached(_ token: DetachedStep.Token, become: Bool) async -> DetachedOutcome { transport.kill(token, host: host) }

    func cleanupDetached(run: String, olderThanDays: Int, become: Bool) async throws { transport.cleanup(run: run, host: host, become: become) }

    func close() async { transport.closed(host: host, session: session) }
}

/// One engine over fakes: a real journal in a private temporary state dir, the fake
/// transport, the manual clock, and recorders of its progress and policy events.
final class EngineHarness: @unchecked Sendable {
    // @unchecked: every stored property is immutable and Sendable but `engine` and `resumed`, set once in init.
    let record: RunRecord
    let stateDir: URL
    let transport: FakeTransport
    let clock: ManualClock
    let progress = Recorder<RolloutEngine.Progress>()
    /// Each event the policy handled, with its actions.
    let handled = Recorder<(event: RolloutPolicy.Event, actions: [RolloutPolicy.Action])>()
    private(set) var engine: RolloutEngine!

    /// - Parameters:
    ///   - hosts: the run's hosts; their `batch` is set from `batches`.
    ///   - batches: host indices per batch.
    ///   - resume: writes what an earlier controller left in the journal, and returns the
    ///     steps done per host (``doneSteps(_:)``), as `flotilla resume` passes them.
    ///   - reattach: then, the detached steps in flight to re-attach to (as
    ///     ``ResumePlan/reattach``).
    ///   - sharing: a PostgreSQL journal whose run of the same id this controller
    ///     creates or joins, as `--run NAME` does (another controller's hosts are others).
    init(hosts: [RunHost], batches: [[Int]], sharing: JournalLocation? = nil, policy configure: (inout RolloutPolicy.Config) -> Void = { _ in },
         settings tune: (inout RolloutEngine.Settings) -> Void = { _ in },
         resume: (Journal) throws -> [Int: Set<Int>] = { _ in [:] },
         reattach: (Journal) throws -> [Int: [Int: DetachedStep.Token]] = { _ in [:] }) throws {
        transport = FakeTransport()
        clock = ManualClock()
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
        journalLocation = try sharing ?? EngineHarness.journalLocation(stateDir: stateDir)
        let journal = try sharing.map { try Journal.createOrJoin(at: $0, run: record).journal } ?? Journal.create(at: journalLocation, run: record)
        if journalLocation.isShared {
            // The run's own directory of the state dir (logs, backups), which the SQLite
            // journal's file creates, as the tests expect it.
            try FileManager.default.createDirectory(at: stateDir.appendingPathComponent("runs/\(record.id)"), withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        let done = try resume(journal)
        let inFlight = try reattach(journal)
        let progress = progress
        engine = RolloutEngine(record: record, journal: journal, policy: RolloutPolicy(config: config),
                               transport: transport, settings: settings, done: done, reattach: inFlight, clock: clock,
                               progress: { progress.append($0) })
    }

    /// `flotilla resume` of `previous`'s run, after its controller stopped or died: the
    /// same journal (reopened), the same fake hosts (their detached steps as they are),
    /// the resume plan made as the CLI makes it.
    init(resuming previous: EngineHarness, retryFailed: Bool = false, rerunUnknown: Bool = false,
         policy configure: (inout RolloutPolicy.Config) -> Void = { _ in }) throws {
        transport = previous.transport
        clock = previous.clock
        stateDir = previous.stateDir
        journalLocation = previous.journalLocation
        let journal = try Journal.open(at: journalLocation, runID: previous.record.id)
        let plan = try ResumePlan(try journal.load(), retryFailed: retryFailed, maxFail: nil, rerunUnknown: rerunUnknown)
        record = plan.record
        var config = RolloutPolicy.Config(batches: record.batches.map { $0.compactMap { name in record.hosts.firstIndex { $0.name == name } } },
                                          targeted: record.hosts.count)
        configure(&config)
        var settings = RolloutEngine.Settings(runDirectory: stateDir.appendingPathComponent("runs/\(record.id)"))
        settings.logger.logLevel = .critical
        let progress = progress
        engine = RolloutEngine(record: record, journal: journal, policy: RolloutPolicy(config: config, finished: plan.preset),
                               transport: transport, settings: settings, done: plan.done, reattach: plan.reattach, clock: clock,
                               progress: { progress.append($0) })
        resumed = previous
    }

    /// Where the run is journaled: the state dir, or with `FLOTILLA_TEST_JOURNAL=postgresql`
    /// a new database of the test server, so the whole engine suite runs on either
    /// journal (`FLOTILLA_TEST_JOURNAL=postgresql swift test --filter EngineTests`).
    let journalLocation: JournalLocation

    static func journalLocation(stateDir: URL) throws -> JournalLocation {
        guard ProcessInfo.processInfo.environment["FLOTILLA_TEST_JOURNAL"] == "postgresql" else { return .stateDir(stateDir) }
        return try JournalPlace(.postgresql, stateDir: stateDir).location
    }

    /// The run this one resumes, kept so its state dir outlives this one.
    private var resumed: EngineHarness?

    /// The steps a resume never runs again: those recorded succeeded or skipped.
    static func doneSteps(_ state: JournalState) -> [Int: Set<Int>] {
        var done: [Int: Set<Int>] = [:]
        for (index, host) in state.hosts.enumerated() {
            done[index] = Set(host.steps.filter { $0.status == .succeeded || $0.status == .skipped }.map(\.index))
        }
        return done
    }

    // `try?`: a temporary dir left behind harms no test. The first harness of a run removes it.
    deinit { if resumed == nil { try? FileManager.default.removeItem(at: stateDir.deletingLastPathComponent()) } }

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
