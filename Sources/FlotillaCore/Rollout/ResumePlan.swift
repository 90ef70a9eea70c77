import Foundation

/// How a run continues from its journal (`flotilla resume`): which hosts the policy
/// starts with as finished, which steps of each host are never run again, which hosts
/// are retried, and which steps were in flight: a detached step in flight is re-attached
/// (its result read from the host, never run again), a read-only one runs again.
public struct ResumePlan: Sendable, Equatable {
    /// The run's record, with `--max-fail` replaced when resume overrides it.
    public var record: RunRecord
    /// The state the run was in.
    public var state: RunState
    /// Per host index: its result as far as the policy goes, for hosts not run again.
    public var preset: [Int: RolloutPolicy.HostResult]
    /// Per host index: the steps recorded as finished (succeeded, or skipped for a
    /// once-per step done elsewhere).
    public var done: [Int: Set<Int>]
    /// Hosts that failed or were unreachable and run again (`--retry-failed`).
    public var retried: [String]
    /// `host: step` for every step recorded `running`: its result was lost.
    public var inFlight: [String]
    /// Per host index and step, the token of each detached step in flight: the engine
    /// asks the host about it instead of running it again.
    public var reattach: [Int: [Int: DetachedStep.Token]]
    /// `host: step` for every step recorded `unknown`: their hosts stay failed unless
    /// `rerunUnknown`, which runs them again as new attempts.
    public var unknown: [String]

    /// Why a run cannot be resumed.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// - Parameters:
    ///   - retryFailed: run hosts that failed or were unreachable (after starting) again,
    ///     from their failed step.
    ///   - maxFail: a new `--max-fail` for the rest of the run.
    ///   - rerunUnknown: run the steps recorded `unknown` again (`--rerun-unknown`), and so
    ///     their hosts; without it those hosts stay failed, even with `retryFailed`.
    /// - Throws: ``Refusal`` when the run already finished (`completed_with_failures` may
    ///   go on with `retryFailed` or `rerunUnknown`).
    public init(_ journal: JournalState, retryFailed: Bool, maxFail: RolloutPolicy.Threshold?, rerunUnknown: Bool = false) throws(Refusal) {
        let state = journal.state
        guard state != .succeeded, state != .completedWithFailures || retryFailed || rerunUnknown else {
            throw Refusal(message: "run \(journal.record.id) already finished (\(state.rawValue)); nothing to resume"
                          + (state == .completedWithFailures ? " (--retry-failed runs its failed hosts again)" : ""))
        }
        var record = journal.record
        if let maxFail { record.options.maxFail = maxFail }
        var preset: [Int: RolloutPolicy.HostResult] = [:]
        var done: [Int: Set<Int>] = [:]
        var retried: [String] = []
        var reattach: [Int: [Int: DetachedStep.Token]] = [:]
        for (index, host) in journal.hosts.enumerated() {
            done[index] = Set(host.steps.filter { Journal.doneStepStatuses.contains($0.status) }.map(\.index))
            for step in host.steps where step.status == .running {
                let token = DetachedStep.Token(run: record.id, host: host.name, step: step.index, attempt: step.attempts)
                if step.token == token.path { reattach[index, default: [:]][step.index] = token }
            }
            if host.steps.contains(where: { $0.status == .unknown }) {
                if rerunUnknown { retried.append(host.name) } else { preset[index] = .failed }
                continue
            }
            switch host.status {
            case .succeeded: preset[index] = .succeeded
            // Unreachable when the run was planned: in no batch, never started, never retried.
            case .unreachable where record.hosts[index].batch == nil: preset[index] = .unreachable
            case .failed, .unreachable:
                if retryFailed { retried.append(host.name) } else { preset[index] = host.status == .failed ? .failed : .unreachable }
            case .skipped: preset[index] = .succeeded
            case .notStarted, .running, .cancelled: break
            }
        }
        self.record = record
        self.state = state
        self.preset = preset
        self.done = done
        self.retried = retried
        self.reattach = reattach
        inFlight = journal.hosts.flatMap { host in host.steps.filter { $0.status == .running }.map { "\(host.name): \($0.name)" } }
        unknown = journal.hosts.flatMap { host in host.steps.filter { $0.status == .unknown }.map { "\(host.name): \($0.name)" } }
    }
}

extension ResumePlan {
    /// The plan for `hosts` alone (in the run's order), the others left to whoever holds
    /// them: a shared run resumed while other controllers still work their hosts.
    public func restricted(to hosts: Set<String>) -> ResumePlan {
        let kept = record.hosts.indices.filter { hosts.contains(record.hosts[$0].name) }
        let newIndex = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($1, $0) })
        func remap<Value>(_ values: [Int: Value]) -> [Int: Value] {
            Dictionary(uniqueKeysWithValues: values.compactMap { old, value in newIndex[old].map { ($0, value) } })
        }
        var plan = self
        plan.record.hosts = kept.map { record.hosts[$0] }
        plan.record.batches = record.batches.map { $0.filter(hosts.contains) }
        plan.preset = remap(preset)
        plan.done = remap(done)
        plan.reattach = remap(reattach)
        plan.retried = retried.filter(hosts.contains)
        let ownStep = { (line: String) in hosts.contains { line.hasPrefix("\($0): ") } }
        plan.inFlight = inFlight.filter(ownStep)
        plan.unknown = unknown.filter(ownStep)
        return plan
    }
}
