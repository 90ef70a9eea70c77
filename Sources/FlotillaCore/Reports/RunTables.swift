import Foundation

/// `flotilla runs` output: the runs of a state dir, as given (newest first), as a table or
/// JSON. A run whose journal cannot be read is listed with the problem.
public enum RunListView {
    /// `{"runs": [{"run_id", "kind", "name", "target_version", "created_at", "state",
    /// "halt_reason", "hosts", "problem"}]}`; `state` is "unreadable" for such a journal.
    public static func json(_ runs: [RunSummary]) -> JSONValue {
        let stamp = ISO8601DateFormatter()
        let items: [JSONValue] = runs.map { run in
            .object([
                ("run_id", .string(run.id)), ("kind", .string(run.kind?.rawValue ?? "")), ("name", .string(run.name)),
                ("target_version", .string(run.targetVersion)), ("created_at", .string(stamp.string(from: run.createdAt))),
                ("state", .string(run.state?.rawValue ?? "unreadable")), ("halt_reason", .string(run.haltReason)),
                ("hosts", .object(HostRunStatus.allCases.compactMap { s in run.hostCounts[s].map { (s.rawValue, .int($0)) } })),
                ("problem", .string(run.problem)),
            ])
        }
        return .object([("runs", .array(items))])
    }

    /// One row per run: id, kind (or runbook name), target, creation time, state, host counts.
    public static func table(_ runs: [RunSummary]) -> String {
        let stamp = ISO8601DateFormatter()
        var rows = [["RUN", "KIND", "TARGET", "CREATED", "STATE", "HOSTS"]]
        for run in runs {
            let counts = HostRunStatus.allCases.compactMap { s in run.hostCounts[s].map { "\($0) \(s.rawValue)" } }.joined(separator: ", ")
            rows.append([run.id, run.name ?? run.kind?.rawValue ?? "", run.targetVersion ?? "-", stamp.string(from: run.createdAt),
                         run.problem.map { "unreadable: \($0)" } ?? (run.state?.rawValue ?? "") + (run.haltReason.map { " (\($0))" } ?? ""), counts])
        }
        return TextTable.render(rows)
    }
}

extension RunReports {
    /// `flotilla show`'s default: the run's outcome on one line, then a row per host
    /// (batch, status, versions, steps finished, error or skip reason).
    public static func table(_ state: JournalState) -> String {
        let record = state.record
        var text = "run \(record.id) (\(record.name ?? record.kind.rawValue)\(record.targetVersion.map { " to \($0)" } ?? "")): \(RunResult.outcome(state.state))"
            + (state.haltReason.map { " — \($0)" } ?? "") + "\n"
        var rows = [["HOST", "BATCH", "STATUS", "FROM", "TO", "STEPS", "ERROR"]]
        for (planned, host) in zip(record.hosts, state.hosts) {
            let finished = host.steps.filter { $0.status == .succeeded || $0.status == .skipped }.count
            rows.append([host.name, planned.batch.map { String($0 + 1) } ?? "-", host.status.rawValue, planned.fromVersion ?? "-",
                         planned.toVersion ?? "-", "\(finished)/\(host.steps.count)", host.error ?? planned.skipReason ?? ""])
        }
        text += TextTable.render(rows)
        if let clusters = record.clusters, !clusters.isEmpty {
            text += "clusters:\n" + clusters.map { "  \($0.text)\n" }.joined()
        }
        return text
    }
}

extension RunReports {
    /// What `show --format` renders a run as.
    public enum Format: String, Sendable, CaseIterable { case table, json, junit, html, markdown }

    /// The run in `format`, as `show` prints it: the result JSON (SPEC §6) on one line of
    /// its own, the others as their renderers end them.
    public static func rendered(_ state: JournalState, _ format: Format) -> String {
        switch format {
        case .json: RunResult.json(state).rendered() + "\n"
        case .junit: junit(state)
        case .html: html(state)
        case .markdown: markdown(state)
        case .table: table(state)
        }
    }
}
