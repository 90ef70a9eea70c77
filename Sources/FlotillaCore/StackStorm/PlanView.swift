import Foundation

/// The fleet's plans as `flotilla plan` shows them: identical plans grouped, skips,
/// refusals and unreachable hosts listed apart with their reasons, batches when asked.
public struct PlanView: Sendable {
    public struct Entry: Sendable {
        public var name: String
        public var address: String
        public var plan: HostPlan

        public init(name: String, address: String, plan: HostPlan) {
            self.name = name
            self.address = address
            self.plan = plan
        }
    }

    public var target: StackStormVersion
    public var entries: [Entry]
    /// Batches of upgrade hosts (names), when batch flags were given.
    public var batches: [[String]]?
    public var canary: Bool
    /// Each cluster's strategy and why (``ClusterPlanning``).
    public var clusters: [RunCluster]
    /// `plan --preflight`: each checked host's pre-flight, by host name; nil without it.
    public var preflight: [String: PreflightReport]?

    /// Builds the view as a run of these plans would start (``RunBuilder/record(id:kind:name:target:createdAt:hosts:options:clusters:)``):
    /// with `--batch` or `--canary` in `options`, the upgrade hosts split into batches
    /// (percentages of all targeted hosts, a whole cluster never split); a whole cluster
    /// that `--max-parallel` or a `--max-per` limit could never let run at once is refused,
    /// every node of it, with the reason.
    ///
    /// - Parameter groups: each host's values of `st2_cluster` and the `--max-per`
    ///   variables, by host name; a host's cluster in `clusters` is used when it has none.
    public init(target: StackStormVersion, entries: [Entry], options: RunOptions, groups: [String: [String: String]] = [:],
                clusters: [RunCluster] = []) {
        self.target = target
        self.canary = (options.canary ?? 0) > 0
        let hosts = entries.map { entry in
            var hostGroups = groups[entry.name] ?? [:]
            for cluster in clusters where cluster.hosts.contains(entry.name) && hostGroups[cluster.variable] == nil {
                hostGroups[cluster.variable] = cluster.value
            }
            return RunBuilder.upgradeHost(name: entry.name, address: entry.address, groups: hostGroups, plan: entry.plan,
                                          target: target.releaseString, health: nil)
        }
        let run = RunBuilder.record(id: "plan", kind: .stackstormUpgrade, name: nil, target: target.releaseString, createdAt: Date(),
                                    hosts: hosts, options: options, clusters: clusters)
        self.entries = zip(entries, run.hosts).map { entry, host in
            var entry = entry
            if entry.plan.action == .upgrade, let skip = host.skip {
                entry.plan.action = .refuse
                entry.plan.reason = skip.reason
            }
            return entry
        }
        self.clusters = run.clusters ?? clusters
        if options.batch != nil || options.canary != nil { batches = run.batches }
    }

    /// The view with `--batch` as `spec` and `--canary`, and no other limit.
    public init(target: StackStormVersion, entries: [Entry], spec: BatchSpec?, canary: Int?, clusters: [RunCluster] = []) {
        var options = RunOptions()
        options.batch = spec
        options.canary = canary
        self.init(target: target, entries: entries, options: options, clusters: clusters)
    }

    /// SPEC §1 for `plan`: no host reached (or none selected) 69; some host refused or
    /// unreachable 1; else 0.
    public var exitStatus: ExitStatus {
        if entries.allSatisfy({ $0.plan.action == .unreachable }) { return .unavailable }
        if entries.contains(where: { $0.plan.action == .refuse || $0.plan.action == .unreachable }) { return .someHostsFailed }
        // A host whose pre-flight fails would fail its upgrade before its stop.
        if preflightFailures > 0 { return .someHostsFailed }
        return .success
    }

    public func batch(of host: String) -> Int? { batches?.firstIndex { $0.contains(host) } }

    func hosts(_ action: HostPlan.Action) -> [Entry] { entries.filter { $0.plan.action == action } }

    /// Upgrade plans grouped by identical steps, target, hops and notes (the versions
    /// the hosts start from may differ), in order of first appearance.
    public var groups: [(hosts: [String], from: [String], plan: HostPlan)] {
        var groups: [(hosts: [String], from: [String], plan: HostPlan)] = []
        for entry in hosts(.upgrade) {
            var plan = entry.plan
            let from = plan.fromVersion ?? "?"
            plan.fromVersion = nil
            if let index = groups.firstIndex(where: { $0.plan == plan }) {
                groups[index].hosts.append(entry.name)
                if !groups[index].from.contains(from) { groups[index].from.append(from) }
            } else {
                groups.append(([entry.name], [from], plan))
            }
        }
        return groups
    }

    /// `18 to upgrade in 4 batches, 1 skipped (at target), 1 refused, 1 unreachable`.
    public var summaryLine: String {
        let upgrade = hosts(.upgrade).count
        var parts = ["\(upgrade) to upgrade" + (batches.map { " in \($0.count) batch\($0.count == 1 ? "" : "es")" } ?? "")]
        let skipped = hosts(.skip).count
        if skipped > 0 { parts.append("\(skipped) skipped (at target)") }
        let refused = hosts(.refuse).count
        if refused > 0 { parts.append("\(refused) refused") }
        let unreachable = hosts(.unreachable).count
        if unreachable > 0 { parts.append("\(unreachable) unreachable") }
        if preflight != nil { parts.append("\(preflightFailures) failing pre-flight") }
        return parts.joined(separator: ", ")
    }

    public var text: String {
        var out = ""
        for group in groups {
            let plan = group.plan
            let count = group.hosts.count
            out += "== \(HostNameSet.fold(group.hosts)) (\(count) host\(count == 1 ? "" : "s")): upgrade st2 \(group.from.joined(separator: ", ")) -> \(plan.toVersion ?? "?")"
            out += plan.hops.isEmpty ? " ==\n" : " through \(plan.hops.joined(separator: ", ")) ==\n"
            let width = plan.steps.map(\.name.count).max() ?? 0
            var lastPass = -1
            for (number, step) in plan.steps.enumerated() {
                if !plan.hops.isEmpty, !StepKind.backups.contains(step.kind), step.kind != .preflight, step.pass != lastPass {
                    lastPass = step.pass
                    let to = step.pass < plan.hops.count ? plan.hops[step.pass] : target.releaseString
                    out += "   pass \(step.pass + 1): to \(to)\n"
                }
                let command = step.kind == .backupFiles ? "tar -c \(step.command)\(step.expect?.hasSuffix(" optional") == true ? " (if present)" : "")" : step.command
                for barrier in step.barriers {
                    out += "      -- \(barrier): every node of the \(UpgradePlanner.cluster) gets here first --\n"
                }
                out += String(format: "  %2d. ", number + 1) + step.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(command)"
                out += step.oncePer.map { "  [once per \($0)]" } ?? ""
                out += "\n"
            }
            if !plan.notes.isEmpty {
                out += "  notes:\n" + plan.notes.map { "    - \($0)\n" }.joined()
            }
            out += "\n"
        }
        for (title, action) in [("Skipped", HostPlan.Action.skip), ("Refused", .refuse), ("Unreachable", .unreachable)] {
            let list = hosts(action)
            guard !list.isEmpty else { continue }
            out += "\(title):\n"
            // Hosts sharing a reason are listed together.
            var reasons: [(reason: String, hosts: [String])] = []
            for entry in list {
                let reason = entry.plan.reason ?? ""
                if let index = reasons.firstIndex(where: { $0.reason == reason }) { reasons[index].hosts.append(entry.name) } else { reasons.append((reason, [entry.name])) }
            }
            for item in reasons { out += "  \(HostNameSet.fold(item.hosts)): \(item.reason)\n" }
            out += "\n"
        }
        if !clusters.isEmpty {
            out += "Clusters:\n" + clusters.map { "  \($0.text)\n" }.joined() + "\n"
        }
        out += preflightText
        if let batches {
            out += "Batches:\n"
            for (index, batch) in batches.enumerated() {
                out += "  \(index + 1)\(canary && index == 0 ? " (canary)" : ""): \(HostNameSet.fold(batch)) (\(batch.count))\n"
            }
            out += "\n"
        }
        return out + summaryLine + "\n"
    }

    public var json: JSONValue {
        let hosts: [JSONValue] = entries.map { entry in
            let plan = entry.plan
            var fields: [(String, JSONValue)] = [
                ("name", .string(entry.name)), ("address", .string(entry.address)), ("action", .string(plan.action.rawValue)),
                ("reason", .string(plan.reason)), ("from_version", .string(plan.fromVersion)), ("to_version", .string(plan.toVersion)),
                ("hops", .strings(plan.hops)),
            ]
            if batches != nil { fields.append(("batch", .int(batch(of: entry.name)))) }
            fields.append(("steps", .array(plan.steps.map { step in
                .object([
                    ("name", .string(step.name)), ("command", .string(step.command)), ("kind", .string(step.kind.rawValue)),
                    ("once_per", .string(step.oncePer)), ("pass", .int(step.pass)),
                ] + [step.expect.map { ("expect", .string($0)) }].compactMap { $0 }
                  + (step.barriers.isEmpty ? [] : [("barriers", .strings(step.barriers))]))
            })))
            fields.append(("notes", .strings(plan.notes)))
            if let report = preflightJSON(entry.name) { fields.append(("preflight", report)) }
            return .object(fields)
        }
        var summary: [(String, JSONValue)] = [("targeted", .int(entries.count))]
        for action in [HostPlan.Action.upgrade, .skip, .refuse, .unreachable] {
            summary.append((action.rawValue, .int(self.hosts(action).count)))
        }
        summary.append(("target_version", .string(target.releaseString)))
        if let batches { summary.append(("batches", .array(batches.map { .strings($0) }))) }
        if preflight != nil { summary.append(("preflight_failed", .int(preflightFailures))) }
        summary.append(("text", .string(summaryLine)))
        return .object([("hosts", .array(hosts)), ("clusters", .array(clusters.map(\.json))), ("summary", .object(summary))])
    }
}
