import Foundation

/// Builds a new run from what the commands found: hosts with their steps (from upgrade
/// plans or a runbook) or the reason they are not started, batches, and the results the
/// run starts with for the hosts it never starts.
public enum RunBuilder {
    /// The host's values of the variables a run groups by (`st2_cluster`, `--max-per`
    /// variables, runbook `once_per`); variables the host lacks or that are not scalars
    /// are left out.
    public static func groups(_ host: Inventory.Host, _ variables: Set<String>) -> [String: String] {
        var groups: [String: String] = [:]
        for variable in variables {
            if let value = host.variables[variable]?.value.scalarText { groups[variable] = value }
        }
        return groups
    }

    /// A host of a StackStorm upgrade run: the plan's steps (under sudo), then the health
    /// check when there is one; or, for a host the plan does not upgrade, why not.
    ///
    /// - Parameters:
    ///   - target: the release of the run (`3.8.1`), the stage of steps after the hops.
    ///   - groupVariables: the `--max-per` variables (`st2_cluster` is always added).
    public static func upgradeHost(_ host: Inventory.Host, address: String, plan: HostPlan, target: String, health: String?,
                                   groupVariables: [String]) -> RunHost {
        upgradeHost(name: host.name, address: address, groups: groups(host, Set(["st2_cluster"] + groupVariables)), plan: plan,
                    target: target, health: health)
    }

    /// A host of a StackStorm upgrade run by name, with its values of the run's group
    /// variables (`st2_cluster` and the `--max-per` ones) already read.
    public static func upgradeHost(name: String, address: String, groups: [String: String], plan: HostPlan, target: String,
                                   health: String?) -> RunHost {
        var steps = plan.steps.map { step in
            RunStep(name: step.name, command: step.command, kind: step.kind, oncePer: step.oncePer, expect: step.expect,
                    become: true, stage: step.pass < plan.hops.count ? plan.hops[step.pass] : target,
                    barriers: step.barriers.map { Barrier(group: UpgradePlanner.cluster, name: $0) })
        }
        if plan.action == .upgrade, let health {
            steps.append(RunStep(name: "health check", command: health, kind: .health, become: false))
        }
        let skip: SkipCause? = switch plan.action {
        case .upgrade: nil
        case .skip: SkipCause(.atTarget, plan.reason ?? "already at \(target)")
        case .refuse: SkipCause(.refused, plan.reason ?? "")
        case .unreachable: SkipCause(.unreachable, plan.reason ?? "")
        }
        return RunHost(name: name, address: address, batch: nil, groups: groups,
                       fromVersion: plan.fromVersion, toVersion: plan.toVersion, steps: steps, skip: skip)
    }

    /// A host of a runbook run: the runbook's steps for it, then the health check when
    /// there is one.
    ///
    /// - Parameter groupVariables: the `--max-per` variables (the steps' `once_per`
    ///   variables are added).
    public static func runbookHost(_ host: Inventory.Host, address: String, steps: [RunStep], health: String?,
                                   groupVariables: [String]) -> RunHost {
        var steps = steps
        let variables = Set(steps.compactMap(\.oncePer) + groupVariables)
        if let health { steps.append(RunStep(name: "health check", command: health, kind: .health)) }
        return RunHost(name: host.name, address: address, batch: nil, groups: groups(host, variables), steps: steps)
    }

    /// A new run's record: the hosts without a skip cause, in their order, split into
    /// batches by `options` (canary, then `--batch`; percentages of all `hosts`). Hosts that
    /// meet at barriers (a whole cluster) go in one batch and start together; a set of them
    /// that `--max-parallel` or a `--max-per` limit could never let run at once is refused,
    /// every host of it, with the reason (also added to its entry in `clusters`).
    public static func record(id: String, kind: RunKind, name: String?, target: String?, createdAt: Date, hosts: [RunHost],
                              options: RunOptions, clusters: [RunCluster]? = nil) -> RunRecord {
        var hosts = hosts
        var clusters = clusters
        for set in startTogether(hosts) {
            guard let reason = cannotFit(set.hosts.map { hosts[$0] }, options) else { continue }
            let what = "\(set.group)=\(set.value) goes whole (\(set.hosts.count) hosts: \(set.hosts.map { hosts[$0].name }.joined(separator: ", "))) "
                + "and \(reason)"
            for index in set.hosts { hosts[index].skip = SkipCause(.refused, what) }
            if let entry = clusters?.firstIndex(where: { $0.variable == set.group && $0.value == set.value }) {
                clusters?[entry].reason += "; refused: \(reason)"
            }
        }
        let batchable = hosts.indices.filter { hosts[$0].skip == nil }
        var units: [[Int]] = []
        var unitOf: [Int: Int] = [:]
        for set in startTogether(hosts) {
            for index in set.hosts { unitOf[index] = units.count }
            units.append(set.hosts)
        }
        var ordered: [[Int]] = []
        var placed: Set<Int> = []
        for index in batchable {
            if let unit = unitOf[index] {
                if placed.insert(unit).inserted { ordered.append(units[unit]) }
            } else {
                ordered.append([index])
            }
        }
        let batches = BatchSpec.batches(units: ordered.map(\.count), spec: options.batch, canary: options.canary, targeted: hosts.count)
            .map { $0.flatMap { ordered[$0] } }
        for (batch, members) in batches.enumerated() {
            for index in members { hosts[index].batch = batch }
        }
        return RunRecord(id: id, kind: kind, name: name, targetVersion: target, createdAt: createdAt, hosts: hosts,
                         batches: batches.map { $0.map { hosts[$0].name } }, options: options, clusters: clusters)
    }

    /// A set of hosts that meet at barriers: those with a skip cause are left out.
    public struct Together: Sendable, Equatable {
        public var group: String
        public var value: String
        /// Host indices, in order.
        public var hosts: [Int]
    }

    /// The hosts (without a skip cause) that meet at barriers, by group value, in order of
    /// their first host; a host without a value of the group meets only itself.
    public static func startTogether(_ hosts: [RunHost]) -> [Together] {
        var sets: [Together] = []
        for (index, host) in hosts.enumerated() where host.skip == nil {
            for group in Set(host.steps.flatMap { ($0.barriers ?? []).map(\.group) }).sorted() {
                let value = host.groups[group] ?? host.name
                if let at = sets.firstIndex(where: { $0.group == group && $0.value == value }) {
                    if !sets[at].hosts.contains(index) { sets[at].hosts.append(index) }
                } else {
                    sets.append(Together(group: group, value: value, hosts: [index]))
                }
            }
        }
        return sets
    }

    /// Why these hosts could never be in flight together under `options`, if so.
    static func cannotFit(_ hosts: [RunHost], _ options: RunOptions) -> String? {
        if let parallel = options.maxParallel, hosts.count > parallel {
            return "--max-parallel \(parallel) lets only \(parallel) run at once"
        }
        for rule in options.maxPer {
            var counts: [String: Int] = [:]
            for host in hosts { if let value = host.groups[rule.variable] { counts[value, default: 0] += 1 } }
            if let (value, count) = counts.sorted(by: { $0.key < $1.key }).first(where: { $0.value > rule.limit }) {
                return "\(count) of them share \(rule.variable)=\(value), above --max-per \(rule.variable)=\(rule.limit)"
            }
        }
        return nil
    }

    /// A new run's record created `now`, with a new id (``RunRecord/newID(at:)``).
    public static func record(kind: RunKind, name: String?, target: String?, hosts: [RunHost], options: RunOptions,
                              now: Date, clusters: [RunCluster]? = nil) -> RunRecord {
        record(id: RunRecord.newID(at: now), kind: kind, name: name, target: target, createdAt: now, hosts: hosts, options: options,
               clusters: clusters)
    }

    /// How a host the run never starts is recorded when the run is created.
    public struct NotStarted: Sendable, Equatable {
        /// Its index in the record's hosts.
        public var index: Int
        /// `unreachable` or `skipped`.
        public var status: HostRunStatus
        /// The skip cause as users read it.
        public var error: String
    }

    /// The hosts with a skip cause, and the status each is recorded with.
    public static func notStarted(_ record: RunRecord) -> [NotStarted] {
        record.hosts.enumerated().compactMap { index, host in
            guard let skip = host.skip else { return nil }
            return NotStarted(index: index, status: skip.kind == .unreachable ? .unreachable : .skipped, error: skip.text)
        }
    }

    /// What the policy starts with: unreachable hosts count (as `--unreachable-counts`
    /// says); skipped and refused ones are in no batch and do not count.
    public static func presetResults(_ record: RunRecord) -> [Int: RolloutPolicy.HostResult] {
        var preset: [Int: RolloutPolicy.HostResult] = [:]
        for host in notStarted(record) where host.status == .unreachable { preset[host.index] = .unreachable }
        return preset
    }
}
