import FlotillaCore
import Foundation

/// `flotilla runs --prune`: removes the host-side step records (SPEC §8.1) that finished
/// runs left on their hosts, connecting as `resume` does, through the hosts' one cleanup
/// (``HostConnection/cleanupDetached(run:olderThanDays:become:)``).
public enum StepRecordPruner {
    /// The runs whose records nothing reads any more: `resume` goes on only from the others.
    public static let finished: Set<RunState> = [.succeeded, .completedWithFailures]
    /// As a run's own cleanup: other runs' records older than this go too.
    public static let olderThanDays = 7
    public static let hostsAtOnce = 32

    /// What became of one host's records of one run.
    public struct Outcome: Sendable {
        public var host: String
        /// Why the records were not removed (unreachable, a failed cleanup, a step to record first).
        public var problem: String?
        /// Whether the host could not be reached or cleaned (as opposed to records kept on purpose).
        public var failed = false
        /// The steps whose records the host keeps because they still run.
        public var kept: [String] = []

        /// The line `runs --prune` prints for this host of `run`.
        public func line(run: String) -> String {
            let kept = kept.isEmpty ? "" : "; kept, still running: " + kept.map { "'\($0)'" }.joined(separator: ", ")
            switch (problem, failed) {
            case (nil, _): return "\(run) \(host): removed the step records\(kept)"
            case (let problem?, true): return "\(run) \(host): FAILED: \(problem)"
            case (let problem?, false): return "\(run) \(host): kept the step records: \(problem)"
            }
        }
    }

    /// The runs to prune: `runID` (which must be finished) or every finished run of the
    /// state dir; each run left alone is passed to `leftAlone` with why.
    /// - Throws: `FlotillaError(.usage)` when `runID` is not finished; journal errors.
    public static func runs(stateDir: URL, runID: String?, leftAlone: (String) -> Void) throws -> [JournalState] {
        if let runID {
            let run = try Journal.open(stateDir: stateDir, runID: runID).load()
            guard finished.contains(run.state) else {
                throw FlotillaError(.usage, "run \(run.record.id) is \(run.state.rawValue), not finished: 'flotilla resume \(run.record.id)' "
                                    + "reads its step records on the hosts; resume it first")
            }
            return [run]
        }
        var runs: [JournalState] = []
        for summary in try Journal.listRuns(stateDir: stateDir) {
            guard let state = summary.state, finished.contains(state) else {
                leftAlone("run \(summary.id): \(summary.state?.rawValue ?? "unreadable"), not finished; left alone")
                continue
            }
            runs.append(try Journal.open(stateDir: stateDir, runID: summary.id).load())
        }
        return runs
    }

    /// `flotilla runs --prune` on the state dir `stateDir`: the runs to prune (``runs(stateDir:runID:leftAlone:)``),
    /// each one's hosts locked and pruned in turn.
    /// - Parameters:
    ///   - journal: `--journal`, which must leave the state dir's own journal.
    ///   - targets: a run's hosts, selected and reached again with its stored arguments.
    ///   - print: the result lines (stdout); `note`: what is being done, and the runs left alone (stderr).
    /// - Returns: the closing line, and the exit status when some hosts failed.
    /// - Throws: ``UsageError`` for a journal that is not the state dir's; `LockError`
    ///   for hosts another controller holds; what ``runs(stateDir:runID:leftAlone:)`` and `targets` throw.
    public static func prune(stateDir: URL, journal option: String?, runID: String?, targets: (RunRecord) throws -> Targets,
                             print: (String) -> Void, note: (String) -> Void) async throws -> (line: String, failure: ExitStatus?) {
        let location: JournalLocation
        do {
            location = try JournalLocation.resolve(option: option, stateDir: stateDir)
        } catch {
            throw UsageError(error.message)
        }
        if location.isShared {
            throw UsageError("--prune reads the state dir's own journal; it does not go with a PostgreSQL journal yet")
        }
        let locks = try RunLocks(stateDir: stateDir)
        let runs = try runs(stateDir: stateDir, runID: runID, leftAlone: note)
        var outcomes: [Outcome] = []
        for run in runs {
            let record = run.record, hosts = hostsWithRecords(run)
            guard !hosts.isEmpty else {
                print("\(record.id): no host has step records of this run")
                continue
            }
            let targets = try targets(record)
            try locks.lockHosts(targets, runID: record.id)
            note("run \(record.id): removing its step records from \(hosts.count) host\(hosts.count == 1 ? "" : "s")")
            outcomes += await prune(run, hosts: hosts, over: SSHTransport(targets: targets)) { print($0.line(run: record.id)) }
        }
        return summary(runs: runs.count, outcomes)
    }

    /// The hosts of `run` (indices into its record) that started a step that leaves a record.
    public static func hostsWithRecords(_ run: JournalState) -> [Int] {
        run.record.hosts.indices.filter { run.host(run.record.hosts[$0].name)?.steps.contains { $0.token != nil } ?? false }
    }

    /// Prunes `hosts` of `run`, a few at once, passing each outcome to `each` as it comes.
    public static func prune(_ run: JournalState, hosts: [Int], over transport: SSHTransport,
                             each: (Outcome) -> Void) async -> [Outcome] {
        await withTaskGroup(of: Outcome.self) { group in
            var pending = hosts.makeIterator(), outcomes: [Outcome] = []
            for _ in 0..<hostsAtOnce {
                guard let index = pending.next() else { break }
                group.addTask { await prune(host: index, of: run, over: transport) }
            }
            for await outcome in group {
                each(outcome)
                outcomes.append(outcome)
                if let index = pending.next() { group.addTask { await prune(host: index, of: run, over: transport) } }
            }
            return outcomes
        }
    }

    /// The closing line of `runs --prune` over `runs` runs, and its exit status when some hosts failed.
    public static func summary(runs: Int, _ outcomes: [Outcome]) -> (line: String, failure: ExitStatus?) {
        let failed = outcomes.filter(\.failed).count, left = outcomes.filter { $0.problem != nil && !$0.failed }.count
        let pruned = outcomes.count - failed - left
        let line = "\(runs) finished run\(runs == 1 ? "" : "s"): pruned \(pruned) host\(pruned == 1 ? "" : "s")"
            + (left > 0 ? ", \(left) left for resume" : "") + (failed > 0 ? ", \(failed) failed" : "")
        return (line, failed == 0 ? nil : failed == outcomes.count ? .unavailable : .someHostsFailed)
    }

    private static func prune(host index: Int, of run: JournalState, over transport: SSHTransport) async -> Outcome {
        let planned = run.record.hosts[index]
        var outcome = Outcome(host: planned.name)
        let connection: any HostConnection
        do {
            connection = try await transport.connect(index)
        } catch {
            outcome.problem = "\(error)"
            outcome.failed = true
            return outcome
        }
        // A step the journal still has in flight (the run lost the host mid-step): its
        // record is how `resume --retry-failed` learns how it ended, so a host whose step
        // has ended keeps its records until then.
        for step in run.host(planned.name)?.steps ?? [] where step.status == .running {
            let token = DetachedStep.Token(run: run.record.id, host: planned.name, step: step.index, attempt: step.attempts)
            guard step.token == token.path else { continue }
            switch await query(token, become: planned.steps[step.index].become, on: connection) {
            case .success(.running):
                outcome.kept.append(step.name)
            case .success(.ended), .success(.exists):
                outcome.problem = "'\(step.name)' ended on the host after the run lost it; 'flotilla resume --retry-failed \(run.record.id)' records it"
            case .success(.never), .success(.lost):
                break // nothing on the host to learn from
            case .failure(let error):
                outcome.problem = "cannot ask the host about '\(step.name)': \(error.message)"
                outcome.failed = true
            }
        }
        if outcome.problem == nil {
            let becomes = Set(planned.steps.filter(\.kind.runsDetached).map(\.become)).sorted { !$0 && $1 }
            for become in becomes {
                do {
                    try await connection.cleanupDetached(run: run.record.id, olderThanDays: olderThanDays, become: become)
                } catch {
                    outcome.problem = "\(error)"
                    outcome.failed = true
                    break
                }
            }
        }
        await connection.close()
        return outcome
    }

    private static func query(_ token: DetachedStep.Token, become: Bool, on connection: any HostConnection) async -> Result<DetachedStep.State.Phase, TransportError> {
        do {
            let answer = try await connection.run(DetachedStep.query(token), become: become, timeout: .seconds(60)) { _, _ in }
            guard let state = answer.stateLine else {
                return .failure(TransportError(.other, "the answer is not a step state: \(answer.stderrTail)"))
            }
            return .success(state.phase)
        } catch let error as TransportError {
            return .failure(error)
        } catch {
            return .failure(TransportError(.other, "\(error)"))
        }
    }
}
