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
}
