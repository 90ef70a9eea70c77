import Foundation
import Testing
@testable import flotilla_lab

/// Whole clusters end to end on the lab (SPEC §8.2), logged in as the non-root user with
/// sudo: no node runs st2 services while its cluster's database is migrated, proven from
/// the hosts' command logs (each simulated tool's start and end); a cluster with a node
/// that cannot go is left entirely untouched.
@Suite struct ClusterStrategyLabTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr.suffix(3000))")
    }

    /// A tool's run on a host as its command log has it: what, when (fixed-width UTC
    /// timestamps, which sort as text).
    struct ToolRun {
        var host: String
        var line: String
        var start: String
        var end: String
    }

    /// The simulated tools (`st2ctl`, `mistral-db-manage`, migration scripts) each host ran.
    static func tools(_ lab: TestLab, _ hosts: [String]) throws -> [ToolRun] {
        try hosts.flatMap { host -> [ToolRun] in
            guard FileManager.default.fileExists(atPath: lab.labDir.appendingPathComponent("hosts/\(host)/commands.log").path) else { return [] }
            return try lab.commandLog(host).compactMap { record in
                guard record["kind"] as? String == "sim", let argv = record["argv"] as? [String], let first = argv.first,
                      let start = record["start"] as? String, let end = record["end"] as? String else { return nil }
                let line = ([URL(fileURLWithPath: first).lastPathComponent] + argv.dropFirst()).joined(separator: " ")
                return ToolRun(host: host, line: line, start: start, end: end)
            }
        }
    }

    static func isDatabaseStep(_ run: ToolRun) -> Bool { run.line.hasPrefix("mistral-db-manage") || run.line.hasPrefix("st2-migrate") }

    /// Three nodes of one cluster on 2.0.1 with Mistral, going to 3.0.1 (Mistral's
    /// database and the 2.1 migrations); `c3`'s stop is slow, so a node that did not wait
    /// for it would migrate while c3 still runs.
    static func spec(extraHosts: String = "") -> String {
        """
        defaults:
          os: ubuntu18.04
          packages: {st2: 2.0.1-1, st2mistral: 2.0.1-1}
          available: [2.0.1-1, 3.0.1-1]
          faults:
            tool_slow: [{match: "^mistral-db-manage .*upgrade head", delay: 1s}]
        hosts:
          - {name: c1, st2_cluster: east}
          - {name: c2, st2_cluster: east}
          - {name: c3, st2_cluster: east, faults: {tool_slow: [{match: "^st2ctl stop", delay: 2s}]}}
        \(extraHosts)
        """
    }

    @Test func noNodeOfAWholeClusterRunsWhileItsDatabaseIsMigrated() throws {
        let hosts = ["c1", "c2", "c3"]
        let lab = try TestLab(spec: Self.spec())
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--no-backup", "--json", "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        let report = try json(result)
        #expect(report["outcome"] as? String == "succeeded")
        let clusters = try #require(report["clusters"] as? [[String: Any]])
        #expect(clusters.map { $0["strategy"] as? String } == ["whole"])
        #expect((clusters.first?["reason"] as? String)?.hasPrefix("crosses database changes (mistral-db-manage upgrade head") == true)
        let tools = try Self.tools(lab, hosts)
        let stops = tools.filter { $0.line.hasPrefix("st2ctl stop") }
        let starts = tools.filter { $0.line.hasPrefix("st2ctl start") }
        let database = tools.filter(Self.isDatabaseStep)
        #expect(Set(stops.map(\.host)) == Set(hosts) && Set(starts.map(\.host)) == Set(hosts), "\(tools.map { "\($0.host) \($0.line)" })")
        let firstDatabase = try #require(database.map(\.start).min()), lastDatabase = try #require(database.map(\.end).max())
        // Every node's stop ended before the first database step anywhere began, and every
        // start began after the last one ended.
        for stop in stops { #expect(stop.end < firstDatabase, "\(stop.host) stopped at \(stop.end), the database steps began at \(firstDatabase)") }
        for start in starts { #expect(start.start > lastDatabase, "\(start.host) started at \(start.start), the database steps ended at \(lastDatabase)") }
        // Once per cluster, on one node.
        #expect(database.filter { $0.line.hasSuffix("upgrade head") }.count == 1)
        for host in hosts { #expect(try lab.packages(host)["st2"] == "3.0.1-1") }
        let shown = try run([Self.flotilla, "show", "--state-dir", state])
        #expect(shown.stdout.contains("clusters:\n  st2_cluster=east (c1, c2, c3): whole: crosses database changes"), "\(shown.stdout)")
    }

    /// The same cluster node by node, one host at a time (`--cluster-strategy rolling`, the
    /// documented unsafe choice): the command logs show a node stopping only after the
    /// database steps ran, which is what the test above proves never happens whole; and
    /// whole, one host at a time cannot hold the cluster: refused before anything runs.
    @Test func rollingOneAtATimeMigratesUnderRunningNodesAndWholeIsRefusedThen() throws {
        let hosts = ["c1", "c2", "c3"]
        let lab = try TestLab(spec: Self.spec())
        let state = lab.dir.appendingPathComponent("state").path
        let refused = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--no-backup", "--max-parallel", "1",
                               "--json", "--state-dir", state])
        #expect(refused.status == 1, "\(refused.stderr.suffix(3000))")
        let refusal = try json(refused)
        for host in refusal["hosts"] as? [[String: Any]] ?? [] {
            #expect(host["status"] as? String == "skipped")
            #expect(host["reason"] as? String == "refused: st2_cluster=east goes whole (3 hosts: c1, c2, c3) and --max-parallel 1 lets only 1 run at once")
        }
        #expect(try Self.tools(lab, hosts).filter { $0.line.hasPrefix("st2ctl stop") }.isEmpty)

        let rolling = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--no-backup", "--max-parallel", "1",
                               "--cluster-strategy", "rolling", "--json", "--state-dir", state])
        #expect(rolling.status == 0, "\(rolling.stderr.suffix(3000))")
        #expect(rolling.stderr.contains("st2_cluster=east is upgraded node by node (--cluster-strategy rolling) though it crosses database changes"))
        let tools = try Self.tools(lab, hosts)
        let firstDatabase = try #require(tools.filter(Self.isDatabaseStep).map(\.start).min())
        #expect(tools.contains { $0.line.hasPrefix("st2ctl stop") && $0.start > firstDatabase })
    }

    /// All or nothing: in `east`, c2's repositories do not offer 3.0.1 (the planner refuses
    /// it); in `west`, w2's key-value export fails (a step before the barrier); in `south`,
    /// s2's package transaction cannot be resolved (its pre-flight simulation fails). No node
    /// of those clusters is stopped; the node outside them is upgraded; the report names the
    /// node that kept each cluster back.
    @Test func aClusterWithANodeThatCannotGoIsLeftUntouched() throws {
        let lab = try TestLab(spec: Self.spec(extraHosts: """
              - {name: w1, st2_cluster: west}
              - {name: w2, st2_cluster: west, faults: {tool_fail: [{match: "^st2 key list", stderr: "ERROR: 503 Service Unavailable"}]}}
              - {name: s1, st2_cluster: south}
              - {name: s2, st2_cluster: south, faults: {unmet_dependency: {st2: "libpython3.6 (>= 3.6.0)"}}}
              - {name: solo}
            """).replacingOccurrences(of: "{name: c2, st2_cluster: east}", with: "{name: c2, st2_cluster: east, available: [2.0.1-1]}"))
        let state = lab.dir.appendingPathComponent("state").path
        let plan = try run([Self.flotilla, "plan", "-i", lab.path("inventory.ini"), "--to", "3.0.1"])
        #expect(plan.stdout.contains("st2_cluster=east (c1, c2, c3): whole: crosses database changes"), "\(plan.stdout)")
        #expect(plan.stdout.contains("no node is upgraded: node c2 is refused: the target 3.0.1 of st2 is not offered"), "\(plan.stdout)")
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--max-fail", "10", "--json", "--state-dir", state])
        #expect(result.status == 1, "\(result.stderr.suffix(3000))")
        let report = try json(result)
        let hosts = Dictionary(uniqueKeysWithValues: (report["hosts"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0) })
        for host in ["c1", "c3"] {
            #expect(hosts[host]?["status"] as? String == "skipped")
            #expect((hosts[host]?["reason"] as? String)?.hasPrefix("refused: st2_cluster=east is upgraded whole and node c2 is refused: ") == true,
                    "\(hosts[host] ?? [:])")
        }
        #expect(hosts["w2"]?["status"] as? String == "failed")
        #expect(hosts["w1"]?["status"] as? String == "failed")
        #expect((hosts["w1"]?["error"] as? String)?.contains("the hosts of st2_cluster=west go on only all together, and w2 did not get there (failed: step 'export key-value store' failed") == true,
                "\(hosts["w1"] ?? [:])")
        #expect(hosts["s2"]?["status"] as? String == "failed")
        #expect((hosts["s2"]?["error"] as? String)?.contains("libpython3.6") == true, "\(hosts["s2"] ?? [:])")
        #expect(hosts["s1"]?["status"] as? String == "failed")
        #expect((hosts["s1"]?["error"] as? String)?.contains("the hosts of st2_cluster=south go on only all together, and s2 did not get there") == true,
                "\(hosts["s1"] ?? [:])")
        #expect(hosts["solo"]?["status"] as? String == "succeeded")
        let kept = ["c1", "c2", "c3", "w1", "w2", "s1", "s2"]
        let untouched = try Self.tools(lab, kept)
        #expect(!untouched.contains { $0.line.hasPrefix("st2ctl stop") }, "\(untouched.map { "\($0.host) \($0.line)" })")
        for host in kept { #expect(try lab.packages(host)["st2"] == "2.0.1-1") }
        #expect(try lab.packages("solo")["st2"] == "3.0.1-1")
    }
}
