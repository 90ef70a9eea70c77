import Foundation

/// How a run continues from its journal (`flotilla resume`): which hosts the policy
/// starts with as finished, which steps of each host are never run again, which hosts
/// are retried, and which steps were in flight (they run again).
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

    /// Why a run cannot be resumed.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// - Parameters:
    ///   - retryFailed: run hosts that failed or were unreachable (after starting) again,
    ///     from their failed step.
    ///   - maxFail: a new `--max-fail` for the rest of the run.
    /// - Throws: ``Refusal`` when the run already finished (`completed_with_failures` may
    ///   go on with `retryFailed`).
    public init(_ journal: JournalState, retryFailed: Bool, maxFail: RolloutPolicy.Threshold?) throws(Refusal) {
        let state = journal.state
        guard state != .succeeded, state != .completedWithFailures || retryFailed else {
            throw Refusal(message: "run \(journal.record.id) already finished (\(state.rawValue)); nothing to resume"
                          + (state == .completedWithFailures ? " (--retry-failed runs its failed hosts again)" : ""))
        }
        var record = journal.record
        if let maxFail { record.options.maxFail = maxFail }
        var preset: [Int: RolloutPolicy.HostResult] = [:]
        var done: [Int: Set<Int>] = [:]
        var retried: [String] = []
        for (index, host) in journal.hosts.enumerated() {
            done[index] = Set(host.steps.filter { Journal.doneStepStatuses.contains($0.status) }.map(\.index))
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
        inFlight = journal.hosts.flatMap { host in host.steps.filter { $0.status == .running }.map { "\(host.name): \($0.name)" } }
    }
}
