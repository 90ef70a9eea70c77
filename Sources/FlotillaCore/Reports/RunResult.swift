import Foundation

/// The run result of SPEC §6 (`--json`, `--report`, `flotilla show RUN --json`), built
/// from a run's journal.
public enum RunResult {
    static func stamp(_ date: Date?) -> JSONValue {
        guard let date else { return .null }
        return .string(date.ISO8601Format())
    }

    /// SPEC's outcome word for a journal state.
    public static func outcome(_ state: RunState) -> String {
        switch state {
        case .succeeded, .completedWithFailures, .halted, .stopped: return state.rawValue
        case .created, .running: return RunState.stopped.rawValue // the controller is gone or still at work
        }
    }

    public static func json(_ journal: JournalState) -> JSONValue {
        let record = journal.record
        let batches: [JSONValue] = journal.batches.map { batch in
            .object([("index", .int(batch.index)), ("hosts", .strings(batch.hosts)),
                     ("started_at", stamp(batch.startedAt)), ("finished_at", stamp(batch.finishedAt))])
        }
        let hosts: [JSONValue] = zip(record.hosts, journal.hosts).map { planned, state in
            let steps: [JSONValue] = zip(planned.steps, state.steps).filter { $0.1.status != .pending }.map { step, run in
                .object([
                    ("name", .string(step.name)), ("command", .string(step.command)), ("status", .string(run.status.rawValue)),
                    ("exit_status", run.exitStatus.map { .int(Int64($0)) } ?? .null), ("started_at", stamp(run.startedAt)),
                    ("duration_ms", .int(run.durationMS)), ("stdout_tail", .string(run.stdoutTail)),
                    ("stderr_tail", .string(run.stderrTail)), ("error", .string(run.error)), ("attempts", .int(run.attempts)),
                    // How many times the controller re-attached to the step instead of running it again (SPEC §8.1).
                    ("reattached", .int(run.reattached)),
                ])
            }
            var error = state.error
            if state.status == .skipped, error == nil { error = planned.skipReason }
            return .object([
                ("name", .string(planned.name)), ("address", .string(planned.address)), ("batch", .int(planned.batch)),
                ("status", .string(state.status.rawValue)), ("from_version", .string(planned.fromVersion)),
                ("to_version", .string(planned.toVersion)), ("error", .string(error)),
                ("reason", .string(state.status == .skipped ? planned.skipReason ?? state.error : nil)),
                ("started_at", stamp(state.startedAt)), ("finished_at", stamp(state.finishedAt)),
                ("steps", .array(steps)),
            ])
        }
        let counts = journal.hostCounts
        let unreachable = counts[.unreachable] ?? 0
        let summary: JSONValue = .object([
            ("targeted", .int(journal.hosts.count)), ("succeeded", .int(counts[.succeeded] ?? 0)),
            ("failed", .int(counts[.failed] ?? 0)), ("unreachable", .int(unreachable)),
            ("skipped", .int(counts[.skipped] ?? 0)), ("not_started", .int(counts[.notStarted] ?? 0)),
            ("cancelled", .int(counts[.cancelled] ?? 0)),
        ])
        return .object([
            ("run_id", .string(record.id)), ("kind", .string(record.kind.rawValue)), ("name", .string(record.name)),
            ("target_version", .string(record.targetVersion)), ("outcome", .string(outcome(journal.state))),
            ("halt_reason", .string(journal.haltReason)), ("started_at", stamp(journal.startedAt ?? record.createdAt)),
            ("finished_at", stamp(journal.finishedAt)), ("batches", .array(batches)), ("hosts", .array(hosts)),
            ("summary", summary),
        ] + (record.clusters.map { [("clusters", .array($0.map(\.json)))] } ?? []))
    }

    /// The exit status SPEC §1 gives a run: 2 halted, 3 stopped (resumable), 69 every
    /// started host unreachable, 1 some host failed, unreachable or refused, else 0.
    public static func exitCode(_ journal: JournalState) -> Int32 {
        switch journal.state {
        case .halted: return 2
        case .succeeded, .completedWithFailures: break
        case .created, .running, .stopped: return 3
        }
        let started = journal.hosts.filter { $0.status != .skipped && $0.status != .notStarted }
        if !started.isEmpty, started.allSatisfy({ $0.status == .unreachable }) { return 69 }
        let refused = zip(journal.record.hosts, journal.hosts).contains { planned, state in
            state.status == .skipped && planned.skip?.kind == .refused
        }
        if refused || journal.hosts.contains(where: { [.failed, .unreachable, .cancelled].contains($0.status) }) { return 1 }
        return 0
    }
}
