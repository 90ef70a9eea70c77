/// `--cluster-strategy` (SPEC §8.2): how the nodes of a cluster (hosts sharing
/// `st2_cluster`, so one database) go through an upgrade.
public enum ClusterStrategy: String, Sendable, CaseIterable, Codable {
    /// Whole where the path crosses a database change, node by node elsewhere.
    case auto
    /// Every cluster whole.
    case whole
    /// Node by node everywhere: nodes still on the old release run against a database
    /// another node migrates. Unsafe where a database change is crossed; only by choice.
    case rolling
}

/// Applies the cluster strategy to the plans of a fleet: decides, per cluster, whole or
/// node by node, and why; gives the plans of a whole cluster its barriers; and refuses
/// every node of a whole cluster that one of its nodes keeps from going (all or nothing).
///
/// The phases of a whole cluster, each pass of a hopped upgrade alike:
/// 1. every node runs what comes before its `st2ctl stop` (backups, pre-flight), then
///    meets the others (barrier `stop N`): a node failing there leaves them all running,
///    untouched;
/// 2. every node stops, confirms it stopped and upgrades its packages, then meets the
///    others (`database N`): the migration scripts come with the new packages, so the
///    node that runs them has them, and every node's services are down;
/// 3. the database steps run once per cluster (the first node to reach each runs it, the
///    others wait for it and skip it), then every node meets the others (`services N`):
///    no node reloads or starts while a database step runs;
/// 4. every node reloads, starts and is verified.
/// A node that lacks the database steps (no st2mistral) meets at `database N` and
/// `services N` before its first step after the package upgrade all the same.
public enum ClusterPlanning {
    /// One targeted host: its name, its `st2_cluster` (nil: a cluster of its own) and its plan.
    public struct Member: Sendable {
        public var name: String
        public var cluster: String?
        public var plan: HostPlan

        public init(name: String, cluster: String?, plan: HostPlan) {
            self.name = name
            self.cluster = cluster
            self.plan = plan
        }
    }

    static let variable = UpgradePlanner.cluster

    /// The plans with the strategy applied (in the order of `members`), each cluster's
    /// decision (in order of its first node), and warnings for the operator (a rolling
    /// cluster crossing a database change).
    public static func apply(_ strategy: ClusterStrategy,
                             to members: [Member]) -> (plans: [HostPlan], clusters: [RunCluster], warnings: [String]) {
        var plans = members.map(\.plan)
        var clusters: [RunCluster] = []
        var warnings: [String] = []
        var order: [String] = []
        var nodes: [String: [Int]] = [:]
        for (index, member) in members.enumerated() {
            guard let cluster = member.cluster else { continue }
            if nodes[cluster] == nil { order.append(cluster) }
            nodes[cluster, default: []].append(index)
        }
        for cluster in order {
            let indices = nodes[cluster]!
            guard indices.contains(where: { plans[$0].action == .upgrade }) else { continue }
            let changes = databaseSteps(indices.map { plans[$0] })
            let crossing = changes.isEmpty ? "no database change crossed"
                : "crosses database changes (\(summary(changes)))"
            let names = indices.map { members[$0].name }
            let whole: Bool
            var reason: String
            switch strategy {
            case .auto:
                whole = !changes.isEmpty
                reason = whole ? "\(crossing): every node stops before they run" : "\(crossing) (--cluster-strategy auto)"
            case .whole:
                whole = true
                reason = "--cluster-strategy whole; \(crossing)"
            case .rolling:
                whole = false
                reason = "--cluster-strategy rolling; \(crossing)"
                if !changes.isEmpty {
                    reason += ": nodes still on the old release run against the database while another node migrates it (unsafe)"
                    warnings.append("\(variable)=\(cluster) is upgraded node by node (--cluster-strategy rolling) though it \(crossing); "
                                    + "nodes still on the old release run against the database while another node migrates it")
                }
            }
            if whole {
                if let blocker = indices.first(where: { plans[$0].action == .refuse || plans[$0].action == .unreachable }) {
                    let why = "node \(members[blocker].name) is \(plans[blocker].action == .refuse ? "refused" : "unreachable"): \(plans[blocker].reason ?? "")"
                    reason += "; no node is upgraded: \(why)"
                    for index in indices where plans[index].action == .upgrade {
                        plans[index] = .refuse("\(variable)=\(cluster) is upgraded whole and \(why)", from: plans[index].fromVersion,
                                               notes: plans[index].notes)
                    }
                } else {
                    let passes = Set(indices.flatMap { plans[$0].steps.filter { $0.oncePer != nil }.map(\.pass) })
                    for index in indices where plans[index].action == .upgrade {
                        plans[index].steps = withBarriers(plans[index].steps, databasePasses: passes)
                    }
                }
            }
            clusters.append(RunCluster(variable: variable, value: cluster, hosts: names, strategy: whole ? "whole" : "rolling", reason: reason))
        }
        return (plans, clusters, warnings)
    }

    /// The names of the once-per-cluster (database) steps of the plans, each once.
    static func databaseSteps(_ plans: [HostPlan]) -> [String] {
        var seen: Set<String> = []
        return plans.filter { $0.action == .upgrade }.flatMap(\.steps).filter { $0.oncePer != nil }.map(\.name).filter { seen.insert($0).inserted }
    }

    static func summary(_ names: [String]) -> String {
        names.count <= 3 ? names.joined(separator: ", ") : names.prefix(3).joined(separator: ", ") + " and \(names.count - 3) more"
    }

    /// A whole cluster's node's steps with its barriers: `stop N` before each pass's stop;
    /// in the passes with database steps, `database N` before the first of them (or, without
    /// any, the first step after the package upgrade) and `services N` after the last.
    static func withBarriers(_ steps: [PlanStep], databasePasses: Set<Int>) -> [PlanStep] {
        var steps = steps
        for pass in Set(steps.map(\.pass)).sorted() {
            let inPass = steps.indices.filter { steps[$0].pass == pass }
            if let stop = inPass.first(where: { steps[$0].kind == .stop }) { steps[stop].barriers.append("stop \(pass + 1)") }
            guard databasePasses.contains(pass), let upgrade = inPass.first(where: { steps[$0].kind == .upgradePackages }) else { continue }
            let database = inPass.filter { steps[$0].oncePer != nil }
            let after = inPass.first { $0 > upgrade }
            guard let first = database.first ?? after else { continue }
            steps[first].barriers.append("database \(pass + 1)")
            let next = database.last.map { last in inPass.first { $0 > last } } ?? after
            if let next { steps[next].barriers.append("services \(pass + 1)") }
        }
        return steps
    }
}
