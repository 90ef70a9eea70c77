import Foundation
import Logging

/// Drives a run: feeds the rollout policy its events, performs its actions, runs each
/// host's steps over the transport (each step by the handler of its kind), and records
/// every transition in the journal before the next step starts.
///
/// The engine knows steps only as commands, `--health`, once-per-cluster and reconnects;
/// what a kind of step means is its ``StepHandler``'s business. Time comes from a
/// ``RolloutClock``, so tests drive pauses, backoffs and health checks without waiting.
public actor RolloutEngine {
    public struct Settings: Sendable {
        /// Per-step limit where the step sets none (`--step-timeout`).
        public var stepTimeout: Double?
        /// How the health check step (`--health CMD`, a step of every host's plan) is judged.
        public var healthyFor: TimeInterval = 0
        public var healthDeadline: TimeInterval = 300
        public var healthInterval: TimeInterval = 3
        /// `--force-stop`: kill st2 processes left after `st2ctl stop`.
        public var forceStop = false
        /// Reconnect attempts before a step, when a session was lost (backoff doubles).
        public var reconnectAttempts = 3
        public var reconnectBackoff: TimeInterval = 1
        /// The run's folder: `logs/HOST.log`, `artifacts/HOST/`.
        public var runDirectory: URL
        /// Recognised failure of the Mistral DB steps (from the catalog).
        public var knownFailures: [KnownFailure] = []
        /// Debug and info logs of the engine (metadata `run.id`, `host.name`, `step.name`,
        /// `step.index`, `batch.index`); silent unless the executable sets a level.
        public var logger = Logger(label: "flotilla.engine")

        public init(runDirectory: URL) { self.runDirectory = runDirectory }
    }

    /// A failure text the operator gets an explanation and a recovery procedure for.
    public struct KnownFailure: Sendable {
        public var stepKind: StepKind
        public var match: String
        public var explanation: String

        public init(stepKind: StepKind, match: String, explanation: String) {
            self.stepKind = stepKind
            self.match = match
            self.explanation = explanation
        }
    }

    /// What the engine reports as it goes, for progress output.
    public enum Progress: Sendable {
        case batchStarted(index: Int, hosts: [String])
        case hostStarted(String)
        case stepStarted(host: String, step: String)
        case stepFinished(host: String, step: String, status: StepRunStatus, seconds: Double)
        case hostFinished(host: String, status: HostRunStatus, error: String?, seconds: Double)
        case note(String)
    }

    let record: RunRecord
    let journal: Journal
    var policy: RolloutPolicy
    let transport: any HostTransport
    let settings: Settings
    let clock: any RolloutClock
    let handlers: StepHandlers
    let progress: @Sendable (Progress) -> Void
    let confirm: @Sendable (Int) async -> Bool

    /// Steps already finished per host (resume): indices never run again.
    var done: [Int: Set<Int>]
    /// Per host and step, the detached attempt a resume re-attaches to (in flight when
    /// the run stopped) instead of running the step again.
    let reattach: [Int: [Int: DetachedStep.Token]]
    var stopAfterCurrentStep = false
    var batchOf: [Int: Int] = [:]
    var remainingInBatch: [Int: Int] = [:]
    var startedBatches: Set<Int> = []
    var clusterLocks: [String: AsyncSemaphore] = [:]
    /// The run's barriers, decided when it begins (``barrierStates(_:started:finished:)``).
    var barrierStates: [BarrierKey: BarrierState] = [:]
    var events: AsyncStream<RolloutPolicy.Event>.Continuation?
    var hostTasks: [Int: Task<Void, Never>] = [:]
    /// A shared run: where the run's events stood when this controller began
    /// (``Journal/eventHighWater()``), this controller's hosts that went past the run-wide
    /// rules and have not finished, and the waits already shown.
    var runWideSince: Int?
    /// This controller's hosts by name: what the journal's run-wide rules call its own.
    let ownHosts: [String]
    var runWideInFlight: Set<Int> = []
    var runWideWaitsShown: Set<String> = []
    /// Told every event the policy handled and the actions it returned (tests).
    var eventObserver: (@Sendable (RolloutPolicy.Event, [RolloutPolicy.Action]) -> Void)?

    /// Why the journal could not be written, if it could not: the run then starts nothing
    /// more and stops (resumable once the cause is fixed).
    public internal(set) var journalProblem: String?
    /// Transitions waiting for the next commit, and who waits for each.
    var pendingWrites: [(what: String, write: () throws -> Void, done: CheckedContinuation<Bool, Never>)] = []
    var committing = false

    /// - Parameters:
    ///   - done: per host index, the steps recorded as finished (resume).
    ///   - reattach: per host index and step, the token of a detached attempt in flight
    ///     (resume): the host is asked about it before anything runs.
    ///   - clock: where time comes from; the wall clock unless a test drives it.
    ///   - handlers: how each kind of step runs; every kind flotilla plans by default.
    ///   - confirm: asks the operator before a batch (`--confirm`).
    public init(record: RunRecord, journal: sending Journal, policy: RolloutPolicy, transport: any HostTransport, settings: Settings,
                done: [Int: Set<Int>] = [:], reattach: [Int: [Int: DetachedStep.Token]] = [:], clock: any RolloutClock = SystemClock(), handlers: StepHandlers = .standard,
                progress: @escaping @Sendable (Progress) -> Void,
                confirm: @escaping @Sendable (Int) async -> Bool = { _ in true }) {
        self.record = record
        ownHosts = record.hosts.map(\.name)
        self.journal = journal
        self.policy = policy
        self.transport = transport
        self.settings = settings
        self.done = done
        self.reattach = reattach
        self.clock = clock
        self.handlers = handlers
        self.progress = progress
        self.confirm = confirm
        for (index, batch) in record.batches.enumerated() {
            for name in batch {
                if let host = record.hosts.firstIndex(where: { $0.name == name }) { batchOf[host] = index }
            }
            remainingInBatch[index] = batch.count
        }
    }

    /// The run as its journal has it now.
    public func state() throws -> JournalState { try journal.load() }

    /// Sends an operator or signal event (`ctl`, SIGINT) to the policy.
    public func send(_ event: RolloutPolicy.Event) {
        events?.yield(event)
    }

    /// Calls `observer` with every event the policy handles and the actions it returns.
    func observeEvents(_ observer: @escaping @Sendable (RolloutPolicy.Event, [RolloutPolicy.Action]) -> Void) {
        eventObserver = observer
    }

    /// Runs until the policy finishes; returns its outcome.
    public func run() async -> RolloutPolicy.Outcome {
        let (stream, continuation) = AsyncStream.makeStream(of: RolloutPolicy.Event.self)
        events = continuation
        var outcome = RolloutPolicy.Outcome.stopped("no events")
        let begun = clock.now
        decideBarriers()
        recordNow("the start of the run") { [journal] in try journal.runStatus(state: .running, haltReason: nil, at: begun) }
        runWideSince = sharedRunStart()
        if runWidePaused() { continuation.yield(.pause) }
        continuation.yield(.begin)
        loop: for await next in stream {
            // A shared run: before anything that may start a host, what the whole run
            // decided (another controller's halt, the run-wide --max-fail) comes first.
            for event in sharedHalt(before: next, since: runWideSince).map({ [.haltRun($0), next] }) ?? [next] {
                if let finished = handle(event, continuation) {
                    outcome = finished
                    break loop
                }
            }
        }
        continuation.finish()
        events = nil
        for task in hostTasks.values { await task.value }
        let (state, reason): (RunState, String?) = switch outcome {
        case .succeeded: (.succeeded, nil)
        case .completedWithFailures: (.completedWithFailures, nil)
        case .halted(let why): (.halted, why)
        case .stopped(let why): (.stopped, why)
        }
        let ended = clock.now
        recordNow("the end of the run") { [journal] in try journal.runStatus(state: state, haltReason: reason, at: ended) }
        return outcome
    }

    /// Hands `event` to the policy and performs the actions it returns, in order; the
    /// run's outcome once the policy finishes it (the actions after that are not done).
    private func handle(_ event: RolloutPolicy.Event, _ continuation: AsyncStream<RolloutPolicy.Event>.Continuation) -> RolloutPolicy.Outcome? {
        let now = clock.now
        let actions = policy.handle(event, now: now)
        eventObserver?(event, actions)
        if case .skip(let host) = event, policy.skipped.contains(host) {
            let name = record.hosts[host].name
            recordNow("the skip of \(name)") { [journal] in
                try journal.hostStatus(host: name, status: .skipped, error: "skipped by the operator (flotilla ctl skip)", at: now)
            }
            leaveBarriers(host, status: .skipped, error: "skipped by the operator")
        }
        for action in actions {
            switch action {
            case .start(let host):
                startHost(host)
            case .wakeAt(let date):
                Task { [clock, continuation] in
                    // `try?`: only cancellation ends the sleep early, and nothing cancels it;
                    // a tick early or after the run finished is ignored by the policy.
                    try? await clock.sleep(until: date)
                    continuation.yield(.tick)
                }
            case .askConfirmation(let batch):
                Task { [confirm, continuation] in continuation.yield(.confirmed(await confirm(batch))) }
            case .halt(let reason):
                progress(.note("halting: \(reason)"))
                recordNow("the halt") { [journal] in try journal.event(kind: "halt", message: reason, at: now) }
            case .stopInFlight:
                stopAfterCurrentStep = true
            case .finish(let result):
                return result
            }
        }
        return nil
    }

    /// Where the run's events stood when this controller began (shared runs only).
    private func sharedRunStart() -> Int? {
        guard journal.sharedRun != nil else { return nil }
        do {
            return try journal.eventHighWater()
        } catch {
            journalFailed("the start of the run", error)
            return nil
        }
    }

    /// Why the shared run halts before `event` is handled, if it does.
    private func sharedHalt(before event: RolloutPolicy.Event, since: Int?) -> String? {
        guard let since, policy.haltReason == nil else { return nil }
        switch event {
        case .begin, .hostFinished, .tick, .resume, .confirmed: break
        default: return nil
        }
        do {
            return try runWideHalt(since: since)
        } catch {
            journalFailed("the run-wide decision", error)
            return nil
        }
    }

    /// The barriers as the journal leaves them: passed, broken, or still to meet at. A
    /// journal that cannot be read leaves the steps this controller was told are done.
    func decideBarriers() {
        var started: [Int: Set<Int>] = done
        for (host, steps) in reattach { started[host, default: []].formUnion(steps.keys) }
        do {
            let state = try journal.load()
            // By name: a shared run's journal holds other controllers' hosts too.
            let indices = Dictionary(record.hosts.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
            for host in state.hosts {
                guard let index = indices[host.name] else { continue }
                started[index, default: []].formUnion(host.steps.filter { $0.status != .pending }.map(\.index))
            }
        } catch {
            settings.logger.warning("cannot read the journal to decide the barriers; going by the steps done", metadata: ["error": "\(error)"])
        }
        var finished: [Int: HostRunStatus] = [:]
        for index in record.hosts.indices {
            if let status = policy.status(of: index), status != .notStarted, status != .running { finished[index] = status }
        }
        barrierStates = Self.barrierStates(record, started: started, finished: finished)
    }

    func startHost(_ index: Int) {
        if let batch = batchOf[index], startedBatches.insert(batch).inserted {
            let now = clock.now
            recordNow("the start of batch \(batch + 1)") { [journal] in try journal.batchStarted(index: batch, at: now) }
            progress(.batchStarted(index: batch, hosts: record.batches[batch]))
        }
        hostTasks[index] = Task { await self.runHost(index) }
    }

    func hostDone(_ index: Int, status: HostRunStatus, error: String?, seconds: Double) async {
        let host = record.hosts[index]
        let now = clock.now
        runWideInFlight.remove(index)
        _ = await durably("the status of \(host.name)") { [journal] in try journal.hostStatus(host: host.name, status: status, error: error, at: now) }
        progress(.hostFinished(host: host.name, status: status, error: error, seconds: seconds))
        if let batch = batchOf[index] {
            remainingInBatch[batch, default: 1] -= 1
            if remainingInBatch[batch] == 0 {
                let finished = clock.now
                recordNow("the end of batch \(batch + 1)") { [journal] in try journal.batchFinished(index: batch, at: finished) }
            }
        }
        let result: RolloutPolicy.HostResult = switch status {
        case .succeeded, .skipped: .succeeded
        case .unreachable: .unreachable
        default: .failed
        }
        events?.yield(.hostFinished(index, result, duration: seconds))
    }
}
