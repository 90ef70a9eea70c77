import Foundation
import Testing
@testable import FlotillaCore

/// The cluster strategy (SPEC §8.2) before anything runs: which clusters go whole and
/// why, their barriers, all or nothing at plan time, one unit of batching, the refusal of
/// a cluster the limits cannot hold, and start-together sets in the policy.
@Suite struct ClusterStrategyTests {
    /// A node's upgrade plan: backup, stop, confirm, upgrade, the database steps when
    /// `database` (once per cluster), reload, start, verify.
    static func plan(database: Bool, pass: Int = 0) -> [PlanStep] {
        var steps = [PlanStep(name: "stop services", command: "st2ctl stop", kind: .stop, pass: pass),
                     PlanStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped, pass: pass),
                     PlanStep(name: "upgrade packages", command: "apt-get install", kind: .upgradePackages, pass: pass)]
        if database {
            steps.append(PlanStep(name: "mistral-db-manage upgrade head", command: "mdm upgrade head", kind: .mistralDB, oncePer: "st2_cluster", pass: pass))
            steps.append(PlanStep(name: "migration 2.1: scopes.py", command: "scopes.py", kind: .migration, oncePer: "st2_cluster", pass: pass))
        }
        steps += [PlanStep(name: "reload content", command: "st2ctl reload", kind: .reload, pass: pass),
                  PlanStep(name: "start services", command: "st2ctl start", kind: .start, pass: pass),
                  PlanStep(name: "verify version", command: "dpkg-query", kind: .verifyVersion, pass: pass)]
        return steps
    }

    static func upgrade(database: Bool) -> HostPlan {
        HostPlan(action: .upgrade, fromVersion: "2.0.1-1", toVersion: "3.8.1-1",
                 steps: [PlanStep(name: "export key-value store", command: "st2 key list", kind: .backupKeyValue)] + plan(database: database))
    }

    static func members(_ plans: [HostPlan], clusters: [String?]) -> [ClusterPlanning.Member] {
        zip(plans.indices, plans).map { ClusterPlanning.Member(name: "st2-0\($0 + 1)", cluster: clusters[$0], plan: $1) }
    }

    // MARK: Decisions

    @Test func autoGoesWholeWhereADatabaseChangeIsCrossedAndNodeByNodeElsewhere() {
        let members = Self.members([Self.upgrade(database: true), Self.upgrade(database: false), Self.upgrade(database: false),
                                    Self.upgrade(database: false), Self.upgrade(database: true)],
                                   clusters: ["blue", "blue", "green", "green", nil])
        let decided = ClusterPlanning.apply(.auto, to: members)
        #expect(decided.clusters.map(\.value) == ["blue", "green"])
        #expect(decided.clusters.map(\.strategy) == ["whole", "rolling"])
        #expect(decided.clusters[0].hosts == ["st2-01", "st2-02"])
        #expect(decided.clusters[0].reason == "crosses database changes (mistral-db-manage upgrade head, migration 2.1: scopes.py): every node stops before they run")
        #expect(decided.clusters[1].reason == "no database change crossed (--cluster-strategy auto)")
        #expect(decided.warnings.isEmpty)
        // Node by node: no barriers; a host without a cluster is its own.
        #expect(decided.plans[2...].allSatisfy { $0.steps.allSatisfy(\.barriers.isEmpty) })
        // The node with the database steps meets before stop, before the first of them
        // and after the last; the node without them meets at both before its reload.
        let barriers = decided.plans[0].steps.map { "\($0.name): \($0.barriers.joined(separator: ","))" }
        #expect(barriers == ["export key-value store: ", "stop services: stop 1", "confirm stopped: ", "upgrade packages: ",
                             "mistral-db-manage upgrade head: database 1", "migration 2.1: scopes.py: ", "reload content: services 1",
                             "start services: ", "verify version: "])
        #expect(decided.plans[1].steps.filter { !$0.barriers.isEmpty }.map { "\($0.name): \($0.barriers.joined(separator: ","))" }
                == ["stop services: stop 1", "reload content: database 1,services 1"])
    }

    @Test func wholeForcesEveryClusterWholeAndRollingWarnsAcrossADatabaseChange() {
        let members = Self.members([Self.upgrade(database: false), Self.upgrade(database: false), Self.upgrade(database: true),
                                    Self.upgrade(database: true)], clusters: ["blue", "blue", "red", "red"])
        let whole = ClusterPlanning.apply(.whole, to: members)
        #expect(whole.clusters.map(\.strategy) == ["whole", "whole"])
        #expect(whole.clusters[0].reason == "--cluster-strategy whole; no database change crossed")
        // Without database steps a whole cluster still meets before stopping.
        #expect(whole.plans[0].steps.flatMap(\.barriers) == ["stop 1"])
        let rolling = ClusterPlanning.apply(.rolling, to: members)
        #expect(rolling.clusters.map(\.strategy) == ["rolling", "rolling"])
        #expect(rolling.plans.allSatisfy { $0.steps.allSatisfy(\.barriers.isEmpty) })
        #expect(rolling.warnings.count == 1)
        #expect(rolling.warnings.first?.hasPrefix("st2_cluster=red is upgraded node by node (--cluster-strategy rolling) though it crosses database changes") == true)
        #expect(rolling.clusters[1].reason.hasSuffix("(unsafe)"))
    }

    @Test func aRefusedOrUnreachableNodeKeepsItsWholeClusterFromStarting() {
        let members = Self.members([Self.upgrade(database: true), HostPlan.refuse("st2 is not installed"), Self.upgrade(database: true),
                                    Self.upgrade(database: true), HostPlan(action: .unreachable, reason: "connect: refused"),
                                    HostPlan(action: .skip, reason: "already at 3.8.1")],
                                   clusters: ["blue", "blue", "blue", "red", "red", "red"])
        let decided = ClusterPlanning.apply(.auto, to: members)
        #expect(decided.plans.map(\.action) == [.refuse, .refuse, .refuse, .refuse, .unreachable, .skip])
        #expect(decided.plans[0].reason == "st2_cluster=blue is upgraded whole and node st2-02 is refused: st2 is not installed")
        #expect(decided.plans[3].reason == "st2_cluster=red is upgraded whole and node st2-05 is unreachable: connect: refused")
        #expect(decided.plans[0].fromVersion == "2.0.1-1")
        #expect(decided.clusters[0].reason.hasSuffix("; no node is upgraded: node st2-02 is refused: st2 is not installed"))
        // Node by node, the others go on.
        let rolling = ClusterPlanning.apply(.rolling, to: members)
        #expect(rolling.plans.map(\.action) == [.upgrade, .refuse, .upgrade, .upgrade, .unreachable, .skip])
    }

    @Test func aHoppedUpgradeMeetsInEveryPassWithDatabaseSteps() {
        let steps = Self.plan(database: true, pass: 0) + Self.plan(database: false, pass: 1)
        let placed = ClusterPlanning.withBarriers(steps, databasePasses: [0])
        #expect(placed.filter { !$0.barriers.isEmpty }.map { "\($0.pass):\($0.name): \($0.barriers.joined(separator: ","))" }
                == ["0:stop services: stop 1", "0:mistral-db-manage upgrade head: database 1", "0:reload content: services 1",
                    "1:stop services: stop 2"])
    }

    // MARK: Runs

    static let inventoryHosts = try! inventory(ini: """
        st2-01 st2_cluster=blue flotilla_zone=a
        st2-02 st2_cluster=blue flotilla_zone=a
        st2-03 st2_cluster=blue flotilla_zone=b
        st2-04 flotilla_zone=a
        st2-05 flotilla_zone=b
        """).hosts

    static func run(_ options: RunOptions, strategy: ClusterStrategy = .auto) -> RunRecord {
        let plans = [upgrade(database: true), upgrade(database: true), upgrade(database: false), upgrade(database: false), upgrade(database: false)]
        let decided = ClusterPlanning.apply(strategy, to: zip(inventoryHosts, plans).map {
            ClusterPlanning.Member(name: $0.name, cluster: RunBuilder.groups($0, ["st2_cluster"])["st2_cluster"], plan: $1)
        })
        let hosts = zip(inventoryHosts, decided.plans).map {
            RunBuilder.upgradeHost($0, address: "10.0.0.1", plan: $1, target: "3.8.1", health: nil, groupVariables: options.groupVariables)
        }
        return RunBuilder.record(id: "r", kind: .stackstormUpgrade, name: nil, target: "3.8.1", createdAt: Date(timeIntervalSince1970: 0),
                                 hosts: hosts, options: options, clusters: decided.clusters)
    }

    @Test func aWholeClusterIsOneUnitOfBatchingAndStartsTogether() throws {
        var options = try RunOptions(flags: ["canary": "1", "batch": "2"])
        var record = Self.run(options)
        // The canary never splits the cluster: it is the whole cluster, the first unit.
        #expect(record.batches == [["st2-01", "st2-02", "st2-03"], ["st2-04", "st2-05"]])
        #expect(record.hosts[0].steps.first { $0.kind == .stop }?.barriers == [Barrier(group: "st2_cluster", name: "stop 1")])
        #expect(record.clusters?.map(\.strategy) == ["whole"])
        let config = try options.policyConfig(for: record, now: Date())
        #expect(config.startTogether == [[0, 1, 2]])
        options = try RunOptions(flags: ["batch": "1"])
        record = Self.run(options, strategy: .rolling)
        #expect(record.batches == [["st2-01"], ["st2-02"], ["st2-03"], ["st2-04"], ["st2-05"]])
        #expect(try options.policyConfig(for: record, now: Date()).startTogether.isEmpty)
    }

    @Test(arguments: [(["max-parallel": "2"], "--max-parallel 2 lets only 2 run at once"),
                      (["max-per": "flotilla_zone=1"], "2 of them share flotilla_zone=a, above --max-per flotilla_zone=1")])
    func aClusterTheLimitsCannotHoldIsRefusedWithTheReason(flags: [String: String], reason: String) throws {
        let record = Self.run(try RunOptions(flags: flags))
        let refusal = "st2_cluster=blue goes whole (3 hosts: st2-01, st2-02, st2-03) and " + reason
        #expect(record.hosts[0..<3].map(\.skip) == Array(repeating: SkipCause(.refused, refusal), count: 3))
        #expect(record.batches == [["st2-04", "st2-05"]])
        #expect(record.clusters?.first?.reason.hasSuffix("; refused: " + reason) == true)
        // Node by node the same limits are fine.
        #expect(Self.run(try RunOptions(flags: flags), strategy: .rolling).hosts.allSatisfy { $0.skip == nil })
    }

    /// `plan --max-parallel/--max-per` shows what `upgrade` would do: the same refusal,
    /// the same batches.
    @Test func thePlanRefusesWhatTheRunWouldRefuse() throws {
        let options = try RunOptions(flags: ["max-per": "flotilla_zone=1", "batch": "1"])
        let record = Self.run(options)
        let plans = [Self.upgrade(database: true), Self.upgrade(database: true), Self.upgrade(database: false),
                     Self.upgrade(database: false), Self.upgrade(database: false)]
        let decided = ClusterPlanning.apply(.auto, to: zip(Self.inventoryHosts, plans).map {
            ClusterPlanning.Member(name: $0.name, cluster: RunBuilder.groups($0, ["st2_cluster"])["st2_cluster"], plan: $1)
        })
        let groups = Dictionary(uniqueKeysWithValues: Self.inventoryHosts.map { ($0.name, RunBuilder.groups($0, ["st2_cluster", "flotilla_zone"])) })
        let view = PlanView(target: StackStormVersion("3.8.1")!, entries: zip(Self.inventoryHosts, decided.plans).map {
            PlanView.Entry(name: $0.name, address: "10.0.0.1", plan: $1)
        }, options: options, groups: groups, clusters: decided.clusters)
        #expect(view.entries.map(\.plan.action) == [.refuse, .refuse, .refuse, .upgrade, .upgrade])
        #expect(view.entries[0].plan.reason == record.hosts[0].skip?.reason)
        #expect(view.batches == record.batches)
        #expect(view.clusters.first?.reason == record.clusters?.first?.reason)
        #expect(view.exitStatus == .someHostsFailed)
        #expect(view.text.contains("Refused:\n  st2-[01-03]: st2_cluster=blue goes whole (3 hosts: st2-01, st2-02, st2-03) and 2 of them share flotilla_zone=a"), "\(view.text)")
    }

    @Test func unitsFillBatchesInOrderAndAUnitLargerThanItsBatchStandsAlone() {
        #expect(BatchSpec.batches(units: [1, 3, 1, 1], spec: BatchSpec(sizes: [.count(2)]), canary: 1, targeted: 6) == [[0], [1], [2, 3]])
        #expect(BatchSpec.batches(units: [3, 1, 1], spec: nil, canary: 2, targeted: 5) == [[0], [1, 2]])
        #expect(BatchSpec.batches(units: [1, 1, 2, 1], spec: BatchSpec(sizes: [.count(3)]), canary: nil, targeted: 5) == [[0, 1], [2, 3]])
    }

    @Test func theStrategyIsKeptInTheRunsOptions() throws {
        let options = try RunOptions(flags: ["cluster-strategy": "rolling"])
        #expect(options.clusterStrategy == .rolling)
        let stored = try JSONDecoder().decode(RunOptions.self, from: JSONEncoder().encode(options))
        #expect(stored.clusterStrategy == .rolling)
        #expect(try JSONDecoder().decode(RunOptions.self, from: Data("{}".utf8)).clusterStrategy == nil)
        #expect(throws: RolloutFlags.FlagError.self) { try RunOptions(flags: ["cluster-strategy": "half"]) }
    }

    // MARK: Policy

    @Test func aStartTogetherSetStartsWholeOrWaitsForRoom() {
        var config = RolloutPolicy.Config(batches: [[0, 1, 2, 3, 4]], targeted: 5)
        config.maxParallel = 3
        config.startTogether = [[1, 2, 3]]
        var policy = RolloutPolicy(config: config)
        let now = Date(timeIntervalSince1970: 0)
        // Host 0 takes a slot: the set of three does not fit, and host 4 behind it waits.
        #expect(policy.handle(.begin, now: now) == [.start(0)])
        #expect(policy.handle(.hostFinished(0, .succeeded, duration: 1), now: now) == [.start(1), .start(2), .start(3)])
        #expect(policy.handle(.hostFinished(2, .succeeded, duration: 1), now: now) == [.start(4)])
    }

    @Test func aStartTogetherSetRespectsMaxPerAndStartsWhenNothingIsInFlight() {
        var config = RolloutPolicy.Config(batches: [[0, 1, 2]], targeted: 3)
        config.maxParallel = 1 // lowered below the set by `ctl set max-parallel`
        config.startTogether = [[0, 1]]
        var policy = RolloutPolicy(config: config)
        let now = Date(timeIntervalSince1970: 0)
        #expect(policy.handle(.begin, now: now) == [.start(0), .start(1)])
        var zoned = RolloutPolicy.Config(batches: [[0, 1, 2]], targeted: 3)
        zoned.maxPer = [RolloutPolicy.MaxPer(variable: "zone", limit: 1, values: ["a", "b", "a"])]
        zoned.startTogether = [[1, 2]]
        var held = RolloutPolicy(config: zoned)
        // Host 0 holds zone a: the set (zones b and a) waits for it.
        #expect(held.handle(.begin, now: now) == [.start(0)])
        #expect(held.handle(.hostFinished(0, .succeeded, duration: 1), now: now) == [.start(1), .start(2)])
    }
}
