import Foundation

/// The rolling-execution rules of SPEC §5 as a pure state machine.
///
/// The engine feeds it events (the run begins, a host finished, a timer fired, the operator
/// answered or sent a `ctl` command, a signal arrived) together with the current wall time,
/// and performs the actions it returns (start a host, wake me at, ask the operator, halt,
/// stop in-flight hosts, finish). The policy does no I/O and reads no clock, so every rule
/// is tested with synthetic dates in microseconds, and the same events always give the same
/// actions in the same order.
///
/// Rules decided where SPEC §5 is silent (an operator's expectations):
/// - Batches run strictly in order: batch k+1 starts only when every host of batch k has
///   finished or was skipped. Batches with nothing left to start (all done before a resume,
///   all skipped, empty) are passed over without pause or confirmation.
/// - The first batch this policy starts hosts from is never delayed by `pause` nor
///   preceded by `confirm`: for a new run it is the first batch (the canary, if any); for
///   a resumed run, `flotilla resume` is itself the operator's go-ahead.
/// - Between batches the `pause` runs first, then the window must be open, then the
///   confirmation is asked. A `ctl pause` defers the question until `continue`.
/// - Thresholds count every result the policy knows: the `finished` preset (also hosts in
///   no batch, such as refused ones the engine reports as failed) and this run's results.
///   Percentages of `--max-fail` are of `targeted`; those of `--max-fail-batch` are of the
///   planned batch size (hosts skipped by `ctl skip` included), like Ansible's
///   `max_fail_percentage`. A reason names the failures already recorded when the controller started (a resume, or hosts unreachable at plan time), so a
///   resumed run that halts at once says why.
/// - When several rules are crossed by one event, the reason is the first of: canary,
///   `--max-fail`, `--max-fail-batch`, whole batch failed. A threshold crossed after a
///   signal or after the window closed still halts (exit 2 says more than exit 3).
/// - A run stopped by a signal whose in-flight hosts were the last ones to run finishes
///   as complete (`.succeeded` or `.completedWithFailures`): there is nothing to resume.
/// - `.stopInFlight` is only returned when something is in flight.
/// - `.abort` after a halt changes nothing; after a signal it turns the stop into a halt.
/// - `setMaxParallel` and `--max-per` limits below 1 count as 1 (a limit of 0 would leave
///   the batch unable to finish); lowering `maxParallel` below the number in flight starts
///   nothing until enough hosts have finished.
/// - The median host duration of the window rule is over the hosts finished in this run
///   (the `finished` preset carries no durations); with an even count it is the mean of the
///   two middle values. A host starts only if `end - now` is strictly greater.
/// - When the window keeps a host from starting and nothing is in flight, nothing can
///   change that any more (time only moves on and the median only changes when a host
///   finishes), so the run stops at once — also while paused or waiting for a
///   confirmation. For those idle cases, and for a pause between batches that outlasts
///   the window, the policy asks to be woken at the window's end (an idle run passing the
///   median cut-off stops at the next event or at the end).
/// - The whole-batch rule is waived for `--max-fail` of 100% or more; the canary rule
///   ignores `unreachableCounts` (a canary must succeed).
/// - Hosts of one `startTogether` set (a whole cluster) start at once or not at all: when
///   the batch order reaches the first of them, all of its pending hosts start if
///   `maxParallel` and every `--max-per` limit hold them all (or nothing is in flight);
///   otherwise nothing after them starts until they fit, so a set is never starved by the
///   hosts behind it and never half started (its hosts would wait for each other at
///   their barriers while holding slots).
/// - Determinism: hosts start in batch order, reasons list hosts in index order, and no
///   action depends on hashing order.
/// - Events before `.begin` are ignored, except `pause`, `resume`, `skip` and
///   `setMaxParallel`, which are recorded and take effect at `.begin`. After `.finish`,
///   every event returns no action. A `hostFinished` for a host not in flight is ignored.
/// - Human texts number batches from 1 ("batch 2 of 5"); the `batch:` of
///   `askConfirmation` is an index into `Config.batches`.
public struct RolloutPolicy: Sendable {
    /// A failure threshold: `--max-fail N` (`count`) or `--max-fail P%` (`percent`).
    public enum Threshold: Sendable, Equatable {
        /// The run halts when more than this many hosts failed.
        case count(Int)
        /// The run halts when failures exceed this percentage (0–100) of the hosts counted.
        case percent(Double)
    }

    /// What happens to hosts in flight when the run halts (`--on-halt`).
    public enum OnHalt: String, Sendable {
        /// They finish their whole plan (a host stopped between `st2ctl stop` and `start` is down).
        case drain
        /// They stop after their current step.
        case stop
    }

    /// A maintenance window (`--window`): hosts start at or after `start` and before `end`.
    public struct Window: Sendable, Equatable {
        public var start: Date
        public var end: Date

        public init(start: Date, end: Date) {
            self.start = start
            self.end = end
        }
    }

    /// `--max-per VAR=N`: at most `limit` hosts in flight sharing one non-nil value of `variable`.
    public struct MaxPer: Sendable, Equatable {
        /// The host variable's name, for messages.
        public var variable: String
        /// The most hosts in flight with the same value (below 1 counts as 1).
        public var limit: Int
        /// The variable's value per host index; nil (or an index past the end) is not restricted.
        public var values: [String?]

        public init(variable: String, limit: Int, values: [String?]) {
            self.variable = variable
            self.limit = limit
            self.values = values
        }

        func value(of host: Int) -> String? {
            host >= 0 && host < values.count ? values[host] : nil
        }
    }

    /// The rules of one run.
    public struct Config: Sendable {
        /// Host indices (0..<hostCount) per batch, in start order. A host listed twice keeps
        /// its first place.
        public var batches: [[Int]]
        /// `batches[0]` is a canary: it must all succeed, any failure (also unreachable) halts.
        public var canary: Bool = false
        /// Hosts in flight at once within a batch (a sliding window); nil: no limit.
        public var maxParallel: Int? = nil
        /// `--max-per VAR=N`, possibly several; all of them apply.
        public var maxPer: [MaxPer] = []
        /// `--max-fail`: the run halts when failures exceed it. Default: the first failure halts.
        public var maxFail: Threshold = .count(0)
        /// `--max-fail-batch P%`: the run halts when the failures of one batch exceed P% of its size.
        public var maxFailBatch: Double? = nil
        /// Whether unreachable hosts count as failures for `maxFail`, `maxFailBatch` and the
        /// whole-batch rule (never for the canary).
        public var unreachableCounts: Bool = true
        /// What happens to hosts in flight on a halt.
        public var onHalt: OnHalt = .drain
        /// Seconds to wait between batches (`--pause`).
        public var pause: TimeInterval = 0
        /// Ask the operator before each batch after the first one (`--confirm`).
        public var confirm: Bool = false
        /// The maintenance window, if any.
        public var window: Window? = nil
        /// Number of targeted hosts, for `--max-fail P%` (includes hosts in no batch).
        public var targeted: Int
        /// Sets of hosts that start together or not at all (each within one batch): hosts
        /// that wait for each other at barriers.
        public var startTogether: [[Int]] = []

        public init(batches: [[Int]], targeted: Int) {
            self.batches = batches
            self.targeted = targeted
        }
    }

    /// How a host ended, as far as thresholds go.
    public enum HostResult: Sendable, Equatable {
        case succeeded, failed, unreachable
    }

    /// What the engine tells the policy.
    public enum Event: Sendable, Equatable {
        /// The run starts (or resumes).
        case begin
        /// A host the policy started has finished its plan (duration in seconds).
        case hostFinished(Int, HostResult, duration: TimeInterval)
        /// A host the policy started did not start after all (a shared run's rules held it
        /// back until the run halted or stopped): it is pending again.
        case hostWithdrawn(Int)
        /// Time passed: sent at (or after) an instant the policy asked for with `wakeAt`.
        case tick
        /// The operator's answer to `askConfirmation`.
        case confirmed(Bool)
        /// `flotilla ctl pause`: no host starts until `resume`.
        case pause
        /// `flotilla ctl continue`.
        case resume
        /// `flotilla ctl abort`: a halt with the reason "aborted by the operator".
        case abort
        /// `flotilla ctl skip HOST`: a host not yet started is never started; ignored for others.
        case skip(Int)
        /// `flotilla ctl set max-parallel N` (below 1 counts as 1).
        case setMaxParallel(Int)
        /// The first SIGINT/SIGTERM: start nothing new, let in-flight hosts finish, then stop.
        case interrupt
        /// A run shared by several controllers halted as a whole (another controller
        /// halted, or the failures of the whole run crossed --max-fail), decided in the
        /// shared journal: a halt with that reason.
        case haltRun(String)
    }

    /// How the run ended (exit codes 0, 1, 2, 3 of SPEC §1).
    public enum Outcome: Sendable, Equatable {
        /// Every host succeeded (or was skipped by the operator).
        case succeeded
        /// Every batch ran; some hosts failed without crossing a threshold.
        case completedWithFailures
        /// A threshold was crossed or the operator aborted; the reason says which.
        case halted(String)
        /// A signal, the window or a refused confirmation stopped the run; it can be resumed.
        case stopped(String)
    }

    /// What the policy asks the engine to do, in the order given.
    public enum Action: Sendable, Equatable {
        /// Start this host now.
        case start(Int)
        /// Send `.tick` at (or after) this time (pause between batches, window opening,
        /// window end). The same instant is never asked for twice.
        case wakeAt(Date)
        /// Ask before starting this batch (an index into `Config.batches`); answer with `.confirmed`.
        case askConfirmation(batch: Int)
        /// From now on no host starts, in this batch or any other.
        case halt(String)
        /// With `onHalt == .stop`, after `.halt`: in-flight hosts stop after their current step.
        case stopInFlight
        /// Nothing is in flight and nothing more will start: the run is over. Always the last
        /// action, returned exactly once.
        case finish(Outcome)
    }

    /// Host totals for progress display.
    public struct Counts: Sendable, Equatable {
        public var succeeded = 0
        public var failed = 0
        public var unreachable = 0
        /// Skipped by `ctl skip`.
        public var skipped = 0
        public var inFlight = 0
        /// Hosts of a batch not started yet (and not skipped).
        public var notStarted = 0
        /// Failures as the thresholds count them (unreachable included when it counts).
        public var failures = 0

        public init() {}
    }

    // MARK: State

    private enum Confirmation: Sendable, Equatable {
        case notNeeded, toAsk, asked
    }

    /// Waiting before `batch` starts: for the pause, then for the operator's answer.
    private struct Gate: Sendable, Equatable {
        var batch: Int
        var pauseUntil: Date?
        var confirmation: Confirmation
    }

    private enum Phase: Sendable, Equatable {
        case notBegun
        /// Hosts of this batch start (index == batches.count: nothing left).
        case running(batch: Int)
        case betweenBatches(Gate)
        /// No host starts again; finishes `.halted` once nothing is in flight.
        case halted(String)
        /// No host starts again; finishes `.stopped` once nothing is in flight.
        case stopping(String)
        case finished(Outcome)
    }

    private enum WindowState {
        case open
        case notYetOpen(Date)
        case closed(String)
    }

    private(set) var config: Config
    private let batches: [[Int]]
    private let batchOf: [Int: Int]
    /// Per host of a `startTogether` set, the whole set.
    private let together: [Int: [Int]]
    private let preset: Set<Int>
    private var results: [Int: HostResult]
    private var durations: [TimeInterval] = []
    private var phase: Phase = .notBegun
    private var requestedWakes: Set<Date> = []
    private var lastRunningBatch: Int?

    /// Hosts started and not finished yet.
    public private(set) var inFlight: Set<Int> = []
    /// Hosts skipped by `ctl skip` (never started).
    public private(set) var skipped: Set<Int> = []
    /// Whether `ctl pause` is in effect.
    public private(set) var isPaused = false

    /// - Parameter finished: hosts already done (resume). They are never started again,
    ///   their batches are passed over when complete, and their failures count toward every
    ///   threshold as they did before.
    public init(config: Config, finished: [Int: HostResult] = [:]) {
        var seen = Set<Int>()
        var batches: [[Int]] = []
        var batchOf: [Int: Int] = [:]
        for (index, batch) in config.batches.enumerated() {
            var kept: [Int] = []
            for host in batch where seen.insert(host).inserted {
                kept.append(host)
                batchOf[host] = index
            }
            batches.append(kept)
        }
        self.config = config
        self.batches = batches
        self.batchOf = batchOf
        var together: [Int: [Int]] = [:]
        for set in config.startTogether where set.count > 1 {
            for host in set { together[host] = set }
        }
        self.together = together
        self.results = finished
        self.preset = Set(finished.keys)
    }

    // MARK: Read-only views

    /// Number of batches.
    public var batchCount: Int { batches.count }

    /// The batch whose hosts are starting or in flight (the last one entered); nil before any.
    public var currentBatch: Int? { lastRunningBatch }

    /// The batch waiting for the pause between batches or for a confirmation; nil otherwise.
    public var nextBatch: Int? {
        if case .betweenBatches(let gate) = phase { return gate.batch }
        return nil
    }

    /// When the pause between batches ends, while it runs.
    public var pauseEndsAt: Date? {
        if case .betweenBatches(let gate) = phase { return gate.pauseUntil }
        return nil
    }

    /// Whether the policy waits for the operator's answer to `askConfirmation`.
    public var isAwaitingConfirmation: Bool {
        if case .betweenBatches(let gate) = phase { return gate.confirmation == .asked }
        return false
    }

    /// Whether the run halted (threshold or abort).
    public var isHalted: Bool { haltReason != nil }

    /// Why the run halted, once it has.
    public var haltReason: String? {
        switch phase {
        case .halted(let reason), .finished(.halted(let reason)): return reason
        default: return nil
        }
    }

    /// Whether a signal, the window or a refused confirmation is stopping the run.
    public var isStopping: Bool {
        switch phase {
        case .stopping, .finished(.stopped): return true
        default: return false
        }
    }

    /// The outcome, once `.finish` was returned.
    public var outcome: Outcome? {
        if case .finished(let outcome) = phase { return outcome }
        return nil
    }

    /// Whether `.finish` was returned.
    public var isFinished: Bool { outcome != nil }

    /// The `max-parallel` in effect (after `ctl set max-parallel`).
    public var maxParallel: Int? { config.maxParallel }

    /// The median duration of the hosts finished in this run, used by the window rule.
    public var medianDuration: TimeInterval? {
        guard !durations.isEmpty else { return nil }
        let sorted = durations.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// Host totals over the batches and the `finished` preset.
    public var counts: Counts {
        var counts = Counts()
        for result in results.values {
            switch result {
            case .succeeded: counts.succeeded += 1
            case .failed: counts.failed += 1
            case .unreachable: counts.unreachable += 1
            }
            if isFailure(result) { counts.failures += 1 }
        }
        counts.skipped = skipped.count
        counts.inFlight = inFlight.count
        counts.notStarted = batches.joined().filter(isPending).count
        return counts
    }

    /// Where a host stands; nil for a host in no batch and not in the `finished` preset.
    public func status(of host: Int) -> HostRunStatus? {
        if let result = results[host] {
            switch result {
            case .succeeded: return .succeeded
            case .failed: return .failed
            case .unreachable: return .unreachable
            }
        }
        if inFlight.contains(host) { return .running }
        if skipped.contains(host) { return .skipped }
        return batchOf[host] == nil ? nil : .notStarted
    }

    // MARK: Events

    /// Takes one event at wall time `now` and returns what to do, in order.
    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        if case .finished = phase { return [] }
        let begun = phase != .notBegun
        switch event {
        case .begin:
            guard !begun else { return [] }
            let first = firstBatchWithPending(from: 0) ?? batches.count
            phase = .running(batch: first)
            if first < batches.count { lastRunningBatch = first }
            return checkThresholds() + advance(now: now)

        case .hostFinished(let host, let result, let duration):
            guard begun, inFlight.remove(host) != nil else { return [] }
            results[host] = result
            durations.append(max(0, duration))
            return checkThresholds() + advance(now: now)

        case .hostWithdrawn(let host):
            guard begun, inFlight.remove(host) != nil else { return [] }
            return advance(now: now)

        case .tick:
            guard begun else { return [] }
            requestedWakes = requestedWakes.filter { $0 > now }
            return advance(now: now)

        case .confirmed(let yes):
            guard case .betweenBatches(var gate) = phase, gate.confirmation == .asked else { return [] }
            if yes {
                gate.confirmation = .notNeeded
                phase = .betweenBatches(gate)
                return advance(now: now)
            }
            return [finish(.stopped("not confirmed: batch \(gate.batch + 1) of \(batches.count) was not started"))]

        case .pause:
            isPaused = true
            return []

        case .resume:
            isPaused = false
            return begun ? advance(now: now) : []

        case .abort:
            guard begun else { return [] }
            return enterHalt("aborted by the operator") + advance(now: now)

        case .haltRun(let reason):
            guard begun else { return [] }
            return enterHalt(reason) + advance(now: now)

        case .skip(let host):
            guard isPending(host) else { return [] }
            skipped.insert(host)
            return begun ? checkThresholds() + advance(now: now) : []

        case .setMaxParallel(let limit):
            config.maxParallel = max(1, limit)
            return begun ? advance(now: now) : []

        case .interrupt:
            guard begun else { return [] }
            switch phase {
            case .halted, .stopping: return []
            default:
                phase = .stopping("stopped by signal")
                return advance(now: now)
            }
        }
    }

    // MARK: Progress

    /// Moves the run as far as it can go at `now`: through complete batches, the pause and
    /// confirmation gates, and starts what the limits allow.
    private mutating func advance(now: Date) -> [Action] {
        var actions: [Action] = []
        while true {
            switch phase {
            case .notBegun, .finished:
                return actions

            case .halted(let reason):
                if inFlight.isEmpty { actions.append(finish(.halted(reason))) }
                return actions

            case .stopping(let reason):
                guard inFlight.isEmpty else { return actions }
                // Stopped with nothing left to start: the run is simply complete.
                let remains = batches.joined().contains(where: isPending)
                actions.append(finish(remains ? .stopped(reason) : allDoneOutcome))
                return actions

            case .running(let batch):
                let pendingHere = batch < batches.count && batches[batch].contains(where: isPending)
                if !pendingHere {
                    guard inFlight.isEmpty else { return actions }
                    guard let next = firstBatchWithPending(from: batch + 1) else {
                        actions.append(finish(allDoneOutcome))
                        return actions
                    }
                    var gate = Gate(batch: next, pauseUntil: nil, confirmation: config.confirm ? .toAsk : .notNeeded)
                    if config.pause > 0 {
                        let until = now.addingTimeInterval(config.pause)
                        gate.pauseUntil = until
                        actions += wake(at: until)
                    }
                    phase = .betweenBatches(gate)
                    continue
                }
                switch windowState(now: now) {
                case .closed(let reason):
                    if inFlight.isEmpty { actions.append(finish(.stopped(reason))) }
                    return actions
                case _ where isPaused:
                    return actions + wakeAtWindowEnd(now: now)
                case .notYetOpen(let opening):
                    return actions + wake(at: opening)
                case .open:
                    // With nothing in flight something always starts here: limits below 1
                    // count as 1 and a --max-per value never blocks an idle batch.
                    return actions + startEligible(in: batch).map(Action.start)
                }

            case .betweenBatches(var gate):
                // Nothing is in flight here: the previous batch is complete.
                let window = windowState(now: now)
                if case .closed(let reason) = window {
                    actions.append(finish(.stopped(reason)))
                    return actions
                }
                if let until = gate.pauseUntil {
                    if now < until {
                        // The pause may outlast the window: then stop at its end.
                        if let window = config.window, until > window.end { actions += wakeAtWindowEnd(now: now) }
                        return actions
                    }
                    gate.pauseUntil = nil
                    phase = .betweenBatches(gate)
                }
                if isPaused { return actions + wakeAtWindowEnd(now: now) }
                if case .notYetOpen(let opening) = window { return actions + wake(at: opening) }
                switch gate.confirmation {
                case .toAsk:
                    gate.confirmation = .asked
                    phase = .betweenBatches(gate)
                    actions.append(.askConfirmation(batch: gate.batch))
                    return actions + wakeAtWindowEnd(now: now)
                case .asked:
                    return actions
                case .notNeeded:
                    phase = .running(batch: gate.batch)
                    lastRunningBatch = gate.batch
                }
            }
        }
    }

    /// Starts hosts of `batch` in batch order while `maxParallel` allows, passing over hosts
    /// a `--max-per` limit holds back so that no slot idles while a later host could start.
    private mutating func startEligible(in batch: Int) -> [Int] {
        let parallel = config.maxParallel.map { max(1, $0) }
        var perValue: [[String: Int]] = config.maxPer.map { rule in
            var counts: [String: Int] = [:]
            for host in inFlight { if let value = rule.value(of: host) { counts[value, default: 0] += 1 } }
            return counts
        }
        var started: [Int] = []
        for host in batches[batch] where isPending(host) {
            if let parallel, inFlight.count >= parallel { break }
            let hosts = together[host].map { $0.filter { isPending($0) && batchOf[$0] == batch } } ?? [host]
            var adding = perValue
            for index in config.maxPer.indices {
                for member in hosts {
                    if let value = config.maxPer[index].value(of: member) { adding[index][value, default: 0] += 1 }
                }
            }
            let blocked = config.maxPer.indices.contains { index in
                let rule = config.maxPer[index]
                return hosts.contains { member in
                    guard let value = rule.value(of: member) else { return false }
                    return adding[index][value, default: 0] > max(1, rule.limit)
                }
            }
            if hosts.count > 1 {
                let room = parallel.map { inFlight.count + hosts.count <= $0 } ?? true
                // A set that does not fit waits for room, holding back the hosts behind it.
                if (blocked || !room) && !inFlight.isEmpty { break }
            } else if blocked {
                continue
            }
            perValue = adding
            for member in hosts {
                inFlight.insert(member)
                started.append(member)
            }
        }
        return started
    }

    private func windowState(now: Date) -> WindowState {
        guard let window = config.window else { return .open }
        if now < window.start { return .notYetOpen(window.start) }
        if now >= window.end { return .closed("maintenance window ended at \(window.end.ISO8601Format())") }
        if let median = medianDuration {
            let left = window.end.timeIntervalSince(now)
            if left <= median {
                return .closed("maintenance window ended: \(Self.seconds(left)) left before \(window.end.ISO8601Format()), "
                    + "not more than the median host duration of \(Self.seconds(median))")
            }
        }
        return .open
    }

    /// While the run idles (nothing in flight), a wake-up at the window's end lets it stop
    /// then instead of waiting for an operator who may not come.
    private mutating func wakeAtWindowEnd(now: Date) -> [Action] {
        guard let window = config.window, inFlight.isEmpty, now < window.end else { return [] }
        return wake(at: window.end)
    }

    private mutating func wake(at date: Date) -> [Action] {
        requestedWakes.insert(date).inserted ? [.wakeAt(date)] : []
    }

    private mutating func finish(_ outcome: Outcome) -> Action {
        phase = .finished(outcome)
        requestedWakes = []
        return .finish(outcome)
    }

    private var allDoneOutcome: Outcome {
        results.values.allSatisfy { $0 == .succeeded } ? .succeeded : .completedWithFailures
    }

    // MARK: Thresholds

    private mutating func checkThresholds() -> [Action] {
        switch phase {
        case .notBegun, .halted, .finished: return []
        default: break
        }
        guard let reason = crossedThreshold() else { return [] }
        return enterHalt(reason)
    }

    private mutating func enterHalt(_ reason: String) -> [Action] {
        switch phase {
        case .notBegun, .halted, .finished: return []
        default: break
        }
        phase = .halted(reason)
        var actions: [Action] = [.halt(reason)]
        if config.onHalt == .stop && !inFlight.isEmpty { actions.append(.stopInFlight) }
        return actions
    }

    /// The reason of the first rule the known results cross, or nil.
    private func crossedThreshold() -> String? {
        if config.canary, let canary = batches.first, !canary.isEmpty {
            let bad = canary.filter { results[$0].map { $0 != .succeeded } ?? false }
            if !bad.isEmpty {
                return "canary failed: \(bad.count) of \(Self.hosts(canary.count)) did not succeed" + detail(bad, unreachableAlways: true)
            }
        }
        let failing = results.keys.sorted().filter { isFailure(results[$0]!) }
        switch config.maxFail {
        case .count(let limit):
            if failing.count > limit {
                return "max-fail \(limit) exceeded: \(Self.hosts(failing.count)) failed" + detail(failing)
            }
        case .percent(let percent):
            if Double(failing.count) * 100 > percent * Double(config.targeted) {
                return "max-fail \(Self.percent(percent)) exceeded: \(failing.count) of \(Self.hosts(config.targeted)) failed"
                    + detail(failing)
            }
        }
        if let percent = config.maxFailBatch {
            for (index, batch) in batches.enumerated() where !batch.isEmpty {
                let bad = batch.filter { results[$0].map(isFailure) ?? false }
                if Double(bad.count) * 100 > percent * Double(batch.count) {
                    return "max-fail-batch \(Self.percent(percent)) exceeded in batch \(index + 1): "
                        + "\(bad.count) of \(Self.hosts(batch.count)) failed" + detail(bad)
                }
            }
        }
        if case .percent(let percent) = config.maxFail, percent >= 100 { return nil }
        for (index, batch) in batches.enumerated() {
            let counted = batch.filter { !skipped.contains($0) }
            guard !counted.isEmpty, counted.allSatisfy({ results[$0].map(isFailure) ?? false }) else { continue }
            return "every host of batch \(index + 1) failed: \(Self.hosts(counted.count))" + detail(counted)
        }
        return nil
    }

    /// " (1 unreachable, 2 already recorded when this controller started)", or "" when neither applies.
    private func detail(_ hosts: [Int], unreachableAlways: Bool = false) -> String {
        var parts: [String] = []
        let unreachable = hosts.filter { results[$0] == .unreachable }.count
        if unreachable > 0 && (config.unreachableCounts || unreachableAlways) { parts.append("\(unreachable) unreachable") }
        let before = hosts.filter(preset.contains).count
        if before > 0 { parts.append("\(before) already recorded when this controller started") }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: ", ") + ")"
    }

    private func isFailure(_ result: HostResult) -> Bool {
        switch result {
        case .succeeded: return false
        case .failed: return true
        case .unreachable: return config.unreachableCounts
        }
    }

    // MARK: Hosts and batches

    private func isPending(_ host: Int) -> Bool {
        batchOf[host] != nil && results[host] == nil && !inFlight.contains(host) && !skipped.contains(host)
    }

    private func firstBatchWithPending(from start: Int) -> Int? {
        guard start < batches.count else { return nil }
        return (start..<batches.count).first { batches[$0].contains(where: isPending) }
    }

    private static func hosts(_ count: Int) -> String { count == 1 ? "1 host" : "\(count) hosts" }

    static func percent(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? "\(Int(value))%" : "\(value)%"
    }

    private static func seconds(_ value: TimeInterval) -> String { "\(Int(value.rounded()))s" }
}
