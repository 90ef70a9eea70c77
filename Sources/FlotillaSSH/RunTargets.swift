import FlotillaCore
import Foundation

extension Targets {
    /// The hosts of a StackStorm upgrade run, in target order: each host's plan (`plans`,
    /// one per target) as ``RunBuilder/upgradeHost(_:address:plan:target:health:groupVariables:)``
    /// makes it, with the health check and the `--max-per` groups of `options`.
    public func upgradeHosts(plans: [HostPlan], target: String, options: RunOptions) -> [RunHost] {
        zip(hosts.indices, plans).map { index, plan in
            RunBuilder.upgradeHost(hosts[index], address: settings[index].address, plan: plan, target: target, health: options.health,
                                   groupVariables: options.groupVariables)
        }
    }

    /// The targets as the cluster strategy sees them (``ClusterPlanning/apply(_:to:)``):
    /// each one's name, `st2_cluster` value (nil without one) and plan (`plans`, one per
    /// target).
    public func clusterMembers(plans: [HostPlan]) -> [ClusterPlanning.Member] {
        zip(hosts, plans).map { host, plan in
            ClusterPlanning.Member(name: host.name, cluster: RunBuilder.groups(host, ["st2_cluster"])["st2_cluster"], plan: plan)
        }
    }

    /// The hosts of a runbook run, in target order: the runbook's steps for each host
    /// (`become` defaulting to the host's), with the health check and the `--max-per`
    /// groups of `options`.
    /// - Throws: `InventoryError` for a variable a host lacks, before any host runs.
    public func runbookHosts(_ book: Runbook, options: RunOptions) throws -> [RunHost] {
        try hosts.indices.map { index in
            RunBuilder.runbookHost(hosts[index], address: settings[index].address,
                                   steps: try book.steps(for: hosts[index], become: settings[index].become),
                                   health: options.health, groupVariables: options.groupVariables)
        }
    }

    /// Each target's plan from its facts (`facts`, one per target) and `planner`, with the
    /// cluster strategy applied (``ClusterPlanning/apply(_:to:)``): the plans in target
    /// order, each cluster's decision, and warnings for the operator.
    public func plans(_ facts: [HostFactsResult], planner: UpgradePlanner,
                      strategy: ClusterStrategy) -> (plans: [HostPlan], clusters: [RunCluster], warnings: [String]) {
        ClusterPlanning.apply(strategy, to: clusterMembers(plans: facts.map(planner.plan)))
    }

    /// A new StackStorm upgrade run to `target` created `now`: these targets with their
    /// `plans` (``upgradeHosts(plans:target:options:)``), batched as `options` say, with the
    /// clusters' decisions.
    public func upgradeRecord(plans: [HostPlan], clusters: [RunCluster], target: String, options: RunOptions, now: Date) -> RunRecord {
        RunBuilder.record(kind: .stackstormUpgrade, name: nil, target: target, hosts: upgradeHosts(plans: plans, target: target, options: options),
                          options: options, now: now, clusters: clusters)
    }

    /// A new run of the runbook `book` created `now` (``runbookHosts(_:options:)``).
    /// - Throws: `InventoryError` for a variable a host lacks, before any host runs.
    public func runbookRecord(_ book: Runbook, options: RunOptions, now: Date) throws -> RunRecord {
        RunBuilder.record(kind: .runbook, name: book.name, target: nil, hosts: try runbookHosts(book, options: options), options: options, now: now)
    }

    /// By host name, each target's values of the host variables `variables` (those it
    /// has): what `plan` batches by.
    public func groups(_ variables: Set<String>) -> [String: [String: String]] {
        Dictionary(hosts.map { ($0.name, RunBuilder.groups($0, variables)) }, uniquingKeysWith: { first, _ in first })
    }
}
