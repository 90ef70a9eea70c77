import FlotillaCore
import Foundation
import PostgresTestSupport
import Testing
@testable import flotilla_lab

/// Three controllers on the three zones of a 60-host lab fleet under one run, journaled in
/// a real PostgreSQL server (SPEC §8.6), logged in as the non-root user with sudo: one
/// controller is killed mid-step and `resume` on a fourth machine takes over its hosts
/// while the other two go on; a cluster spanning two zones is upgraded whole, its
/// database step once.
@Suite struct SharedFleetTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    /// 20 hosts per zone on 3.7.1; zone b's hosts are slow to stop (the kill lands in a
    /// stop); a20 and b20 are the cluster `east`, on 3.4.1, so going to 3.8.1 crosses
    /// 3.5's database migration (with --with-optional-migrations).
    static let fleet = """
        defaults:
          os: ubuntu20.04
          packages: {st2: 3.7.1-1}
          available: [3.4.1-1, 3.7.1-1, 3.8.1-1]
        hosts:
        \(["a", "b", "c"].flatMap { zone in (1...20).map { number in
            let slow = zone == "b" ? ", faults: {slow: [{match: \"st2ctl stop\", delay: 2s}]}" : ""
            return number == 20 && zone != "c"
                ? "  - {name: \(zone)\(number), zone: \(zone), st2_cluster: east, os: ubuntu18.04, packages: {st2: 3.4.1-1}\(slow)}"
                : "  - {name: \(zone)\(number), zone: \(zone)\(slow)}"
        } }.joined(separator: "\n"))

        """

    /// The hosts whose "stop services" step `show --json` has running.
    static func stopping(_ journal: String, runID: String) throws -> [String] {
        let shown = try run([flotilla, "show", runID, "--json", "--journal", journal])
        guard shown.status == 0, let report = try? SharedJournalTests.json(shown) else { return [] }
        return (report["hosts"] as? [[String: Any]] ?? []).filter { host in
            (host["steps"] as? [[String: Any]] ?? []).contains { $0["name"] as? String == "stop services" && $0["status"] as? String == "running" }
        }.compactMap { $0["name"] as? String }
    }

    @Test func aKilledControllersZoneIsTakenOverWhileTheOthersGoOnAndTheClusterMigratesOnce() throws {
        let journal = try SharedJournalTests.newJournal(try PostgresTestServer.shared)
        let lab = try TestLab(spec: Self.fleet)
        /// A controller "machine": its own home (its host locks) and state dir.
        func machine(_ name: String) -> [String] {
            ["/usr/bin/env", "HOME=\(lab.dir.appendingPathComponent("home-\(name)").path)", Self.flotilla]
        }
        func controller(_ zone: String) throws -> Background {
            try Background(machine(zone) + ["upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--limit", "zone_\(zone)",
                                            "--batch", "5", "--max-parallel", "5", "--with-optional-migrations", "--no-backup",
                                            "--run", "fleet-60", "--journal", journal,
                                            "--state-dir", lab.dir.appendingPathComponent("state-\(zone)").path, "--json"],
                           log: lab.dir.appendingPathComponent("controller-\(zone).log"))
        }
        let controllers = try ["a", "b", "c"].map(controller)
        let inFlight = try lab.waitFor(seconds: 180) { try Self.stopping(journal, runID: "fleet-60").contains { $0.hasPrefix("b") } }
        try #require(inFlight, "zone b never stopped a host: \(controllers[1].output.suffix(3000))")
        controllers[1].signal(SIGKILL)
        controllers[1].wait()

        // A fourth machine takes over what the dead controller held; a and c keep theirs.
        let resumed = try run(machine("d") + ["resume", "fleet-60", "--journal", journal, "--json",
                                             "--state-dir", lab.dir.appendingPathComponent("state-d").path])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(3000))")
        if resumed.status != 0 {
            // The others would wait for zone b's hosts for ever: ended, so the test reports.
            [controllers[0], controllers[2]].forEach { $0.signal(SIGKILL) }
        }
        #expect(resumed.stderr.contains("taking over 20 hosts, leaving 40 to the live controllers that hold them"), "\(resumed.stderr.suffix(3000))")
        #expect(resumed.stderr.contains("re-attaching to the steps in flight"), "\(resumed.stderr.suffix(3000))")
        for (zone, controller) in zip(["a", "c"], [controllers[0], controllers[2]]) {
            #expect(controller.exitCode == 0, "\(zone): \(controller.output.suffix(3000))")
            // Their later batches waited for zone b's, in flight when its controller died.
            #expect(controller.output.contains("waiting: the run's batch 1 has hosts not finished on other controllers")
                    || controller.output.contains("waiting: the run's batch 1 has a host not finished on other controllers"), "\(zone): \(controller.output.suffix(3000))")
        }

        let report = try SharedJournalTests.json(try run([Self.flotilla, "show", "fleet-60", "--json", "--journal", journal]))
        let statuses = Dictionary(uniqueKeysWithValues: (report["hosts"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0["status"] as? String ?? "") })
        #expect(statuses.count == 60 && statuses.values.allSatisfy { $0 == "succeeded" }, "\(statuses.filter { $0.value != "succeeded" })")
        let hosts = ["a", "b", "c"].flatMap { zone in (1...20).map { "\(zone)\($0)" } }
        for host in hosts {
            #expect(try lab.packages(host)["st2"] == "3.8.1-1", "\(host)")
            let tools = try ClusterStrategyLabTests.tools(lab, [host])
            // Each host stopped once: the kill's stops were re-attached, not run again.
            #expect(tools.filter { $0.line.hasPrefix("st2ctl stop") }.count == 1, "\(host): \(tools.map(\.line))")
        }
        // The cluster across zones a and b: its migration once, after both nodes stopped.
        let cluster = try ClusterStrategyLabTests.tools(lab, ["a20", "b20"])
        let database = cluster.filter(ClusterStrategyLabTests.isDatabaseStep)
        #expect(database.count == 1, "\(cluster.map { "\($0.host) \($0.line)" })")
        for stop in cluster.filter({ $0.line.hasPrefix("st2ctl stop") }) {
            #expect(database.allSatisfy { stop.end < $0.start }, "\(stop.host) stopped at \(stop.end), the migration began at \(database.map(\.start))")
        }
    }
}
