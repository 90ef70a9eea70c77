import Foundation

/// The inventory-driven fleet report: reachability, OS and st2 version spread, hosts behind
/// a target and what they still need, component state, config drift, unreadable facts.
public struct FleetReport: Sendable {
    public var generatedAt: String
    public var target: StackStormVersion?
    public var results: [HostFactsResult]
    /// Each host's plan towards `target` (when one was given), by host name.
    public var plans: [String: HostPlan]

    public init(generatedAt: String, target: StackStormVersion?, results: [HostFactsResult], plans: [String: HostPlan]) {
        self.generatedAt = generatedAt
        self.target = target
        self.results = results
        self.plans = plans
    }

    /// The report with every reachable host planned by `planner` (nil: no target, no
    /// plans).
    public init(generatedAt: String, results: [HostFactsResult], planner: UpgradePlanner?) {
        var plans: [String: HostPlan] = [:]
        if let planner {
            for result in results where result.unreachable == nil { plans[result.name] = planner.plan(result.facts) }
        }
        self.init(generatedAt: generatedAt, target: planner?.options.target, results: results, plans: plans)
    }

    /// SPEC §1 for `report`: 69 when no host was reached (or none selected); unreachable
    /// hosts and unreadable facts are part of the report, not errors.
    public var exitStatus: ExitStatus { results.allSatisfy { $0.unreachable != nil } ? .unavailable : .success }

    var reachable: [HostFactsResult] { results.filter { $0.unreachable == nil } }
    var unreachable: [HostFactsResult] { results.filter { $0.unreachable != nil } }

    /// Counts per OS name, most common first (ties by name); unreadable OS as "unknown".
    public var osSpread: [(label: String, count: Int)] {
        Self.count(reachable.map { $0.facts.os.value?.name ?? "unknown" }).sorted { $0.count != $1.count ? $0.count > $1.count : $0.label < $1.label }
    }

    /// Counts per installed st2 release, oldest first; then "not installed" and "unknown".
    public var versionSpread: [(label: String, count: Int)] {
        let labels = reachable.map { result -> String in
            guard let installed = result.facts.installed.value else { return "unknown" }
            return installed["st2"].flatMap(StackStormVersion.init)?.releaseString ?? "not installed"
        }
        return Self.count(labels).sorted { a, b in
            switch (StackStormVersion(a.label), StackStormVersion(b.label)) {
            case let (x?, y?): return x < y
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return a.label > b.label // "unknown" after "not installed"
            }
        }
    }

    /// Hosts with at least one st2 component not running, with those components.
    public var stoppedComponents: [(host: String, components: [String])] {
        reachable.compactMap { result in
            guard let list = result.facts.expectedComponents else { return nil }
            let stopped = list.filter { !$0.running }.map(\.name)
            return stopped.isEmpty ? nil : (result.name, stopped)
        }
    }

    public var allRunning: Int {
        reachable.filter { ($0.facts.expectedComponents.map { !$0.isEmpty && $0.allSatisfy(\.running) }) ?? false }.count
    }

    public var drift: [(host: String, files: [String])] {
        reachable.compactMap { result in
            guard let files = result.facts.leftoverConfigs.value, !files.isEmpty else { return nil }
            return (result.name, files)
        }
    }

    public var unreadable: [(host: String, problems: [(fact: String, reason: String)])] {
        reachable.compactMap { $0.facts.problems.isEmpty ? nil : ($0.name, $0.facts.problems) }
    }

    /// A host behind the target, and what its upgrade still involves.
    public struct Behind: Sendable {
        public var host: String
        public var from: String
        public var to: String
        public var hops: [String]
        /// Names of the database and migration steps (`migration 3.5: ...`, `mistral-db-manage populate`).
        public var migrations: [String]
        public var notes: [String]
    }

    public var behind: [Behind] {
        results.compactMap { result in
            guard let plan = plans[result.name], plan.action == .upgrade else { return nil }
            let migrations = plan.steps.filter { $0.kind == .migration || $0.kind == .mistralDB }.map(\.name)
            return Behind(host: result.name, from: plan.fromVersion ?? "?", to: plan.toVersion ?? "?", hops: plan.hops,
                          migrations: migrations, notes: plan.notes)
        }
    }

    public var refused: [(host: String, reason: String)] {
        results.compactMap { result in
            guard let plan = plans[result.name], plan.action == .refuse else { return nil }
            return (result.name, plan.reason ?? "")
        }
    }

    public var atTarget: [String] { results.filter { plans[$0.name]?.action == .skip }.map(\.name) }

    static func count(_ labels: [String]) -> [(label: String, count: Int)] {
        var counts: [(label: String, count: Int)] = []
        for label in labels {
            if let index = counts.firstIndex(where: { $0.label == label }) { counts[index].count += 1 } else { counts.append((label, 1)) }
        }
        return counts
    }

    // MARK: JSON

    public var json: JSONValue {
        func pairs(_ list: [(label: String, count: Int)]) -> JSONValue {
            .array(list.map { .object([("label", .string($0.label)), ("count", .int($0.count))]) })
        }
        var fields: [(String, JSONValue)] = [
            ("generated_at", .string(generatedAt)),
            ("target_version", .string(target?.releaseString)),
            ("reachability", .object([
                ("hosts", .int(results.count)), ("reachable", .int(reachable.count)), ("unreachable", .int(unreachable.count)),
                ("unreachable_hosts", .array(unreachable.map { .object([("host", .string($0.name)), ("error", .string($0.unreachable))]) })),
            ])),
            ("os", pairs(osSpread)),
            ("st2_versions", pairs(versionSpread)),
        ]
        if target != nil {
            fields.append(("behind_target", .array(behind.map { item in
                .object([("host", .string(item.host)), ("from_version", .string(item.from)), ("to_version", .string(item.to)),
                         ("hops", .strings(item.hops)), ("migrations", .strings(item.migrations)), ("notes", .strings(item.notes))])
            })))
            fields.append(("at_target", .strings(atTarget)))
            fields.append(("refused", .array(refused.map { .object([("host", .string($0.host)), ("reason", .string($0.reason))]) })))
        }
        fields.append(("components", .object([
            ("all_running", .int(allRunning)),
            ("hosts_with_stopped", .array(stoppedComponents.map { .object([("host", .string($0.host)), ("stopped", .strings($0.components))]) })),
        ])))
        fields.append(("config_drift", .array(drift.map { .object([("host", .string($0.host)), ("files", .strings($0.files))]) })))
        fields.append(("unreadable_facts", .array(unreadable.map { item in
            .object([("host", .string(item.host)), ("facts", .object(item.problems.map { ($0.fact, .string($0.reason)) }))])
        })))
        fields.append(("hosts", .array(results.map { result in
            let f = result.facts
            return .object([
                ("name", .string(result.name)), ("address", .string(result.address)), ("reachable", .bool(result.unreachable == nil)),
                ("os", .string(result.unreachable == nil ? f.os.value?.name : nil)),
                ("st2", .string(f.installed.value?["st2"])),
                ("action", .string(plans[result.name]?.action.rawValue)),
            ])
        })))
        return .object(fields)
    }

    // MARK: Text and Markdown

    /// The report as sections of lines; `markdown` switches headings, lists and tables.
    public func text(markdown: Bool) -> String {
        var out = ""
        func heading(_ title: String) { out += markdown ? "\n## \(title)\n\n" : "\n\(title.uppercased())\n" }
        func item(_ line: String) { out += markdown ? "- \(line)\n" : "  \(line)\n" }
        func table(_ header: [String], _ rows: [[String]]) {
            if markdown {
                out += "| " + header.joined(separator: " | ") + " |\n|" + header.map { _ in " --- |" }.joined() + "\n"
                for row in rows { out += "| " + row.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |\n" }
            } else {
                out += TextTable.render([header] + rows).split(separator: "\n").map { "  \($0)\n" }.joined()
            }
        }
        out += markdown ? "# StackStorm fleet report\n\n" : "StackStorm fleet report\n"
        out += (markdown ? "" : "  ") + "Generated \(generatedAt); \(results.count) hosts" + (target.map { "; target st2 \($0.releaseString)" } ?? "") + "\n"

        heading("Reachability")
        item("\(reachable.count) of \(results.count) reachable")
        for host in unreachable { item("\(host.name): unreachable: \(host.unreachable ?? "")") }

        heading("Operating systems")
        table(["OS", "HOSTS"], osSpread.map { [$0.label, String($0.count)] })

        heading("st2 versions")
        let widest = versionSpread.map(\.count).max() ?? 1
        table(["VERSION", "HOSTS", ""], versionSpread.map { [$0.label, String($0.count), markdown ? "" : String(repeating: "#", count: max(1, $0.count * 30 / max(widest, 1)))] })

        if let target {
            heading("Behind \(target.releaseString)")
            if behind.isEmpty { item("none") } else { table(["HOST", "FROM", "TO", "HOPS", "MIGRATIONS"], behind.map {
                [$0.host, $0.from, $0.to, $0.hops.isEmpty ? "-" : $0.hops.joined(separator: ", "), $0.migrations.isEmpty ? "-" : $0.migrations.joined(separator: ", ")]
            }) }
            let notes = behind.flatMap(\.notes).reduce(into: [String]()) { list, note in if !list.contains(note) { list.append(note) } }
            if !notes.isEmpty {
                out += markdown ? "\nOperator notes for the versions these hosts cross:\n\n" : "\n  Operator notes for the versions these hosts cross:\n"
                for note in notes { item(note) }
            }
            if !atTarget.isEmpty { out += (markdown ? "\n" : "") ; item("at target: \(HostNameSet.fold(atTarget)) (\(atTarget.count))") }
            for host in refused { item("\(host.host): refused: \(host.reason)") }
        }

        heading("Components")
        item("\(allRunning) hosts with every component running")
        for host in stoppedComponents { item("\(host.host): not running: \(host.components.joined(separator: ", "))") }

        heading("Config drift")
        if drift.isEmpty { item("none") }
        for host in drift { item("\(host.host): \(host.files.joined(separator: ", "))") }

        heading("Unreadable facts")
        if unreadable.isEmpty { item("none") }
        for host in unreadable {
            for problem in host.problems { item("\(host.host): \(problem.fact): \(problem.reason)") }
        }
        return out
    }

    // MARK: HTML

    /// One self-contained page (inline CSS and script, no external resources), made from
    /// the `Reports/fleet-report` resources. The version-spread chart is drawn by the
    /// page's script from the embedded report data; when it has drawn,
    /// `<body data-rendered="ok">`.
    public var html: String {
        HTMLPage.fleetReport.render(["fallback": HTMLPage.escape(text(markdown: false)), "data": HTMLPage.scriptData(json)])
    }
}

extension FleetReport {
    /// The forms `flotilla report --format` writes.
    public enum Format: String, Sendable, CaseIterable { case table, json, markdown, html }

    /// The report in `format`, ending with a newline where the form has lines.
    public func rendered(_ format: Format) -> String {
        switch format {
        case .table: text(markdown: false)
        case .markdown: text(markdown: true)
        case .json: json.rendered() + "\n"
        case .html: html
        }
    }
}
