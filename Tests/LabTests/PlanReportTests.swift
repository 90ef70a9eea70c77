import Foundation
import Testing
@testable import flotilla_lab

/// `flotilla facts`, `plan` and `report` end to end on a lab fleet of varied OS families,
/// versions and upgrade paths (inventories/lab-upgrade-paths.yaml): the plans are right,
/// nothing but read-only commands reach the hosts, and the report matches the lab's
/// ground truth (each host's simulated state).
@Suite(.serialized) final class PlanReportTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path
    static let spec: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("inventories/lab-upgrade-paths.yaml"), encoding: .utf8)) ?? ""
    }()

    let lab: TestLab
    let names: [String]

    init() throws {
        lab = try TestLab(spec: Self.spec)
        let record = try #require(try readRecord(lab.labDir))
        names = record.hosts.map(\.name)
    }

    func json(_ arguments: [String], status: Int32) throws -> [String: Any] {
        let result = try run([Self.flotilla] + arguments + ["-i", lab.path("inventory.ini")])
        #expect(result.status == status, "\(arguments): \(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
    }

    func byName(_ list: Any?) throws -> [String: [String: Any]] {
        let hosts = try #require(list as? [[String: Any]])
        return Dictionary(uniqueKeysWithValues: hosts.map { ($0["name"] as? String ?? "", $0) })
    }

    func stateBytes(_ host: String) throws -> Data {
        try Data(contentsOf: lab.labDir.appendingPathComponent("hosts/\(host)/state.json"))
    }

    /// Simulated commands a read-only probe may run, by program name.
    static func isReadOnly(_ argv: [String]) -> Bool {
        guard let program = argv.first.map({ URL(fileURLWithPath: $0).lastPathComponent }) else { return false }
        let arguments = Array(argv.dropFirst())
        switch program {
        case "st2ctl": return arguments == ["status"]
        case "dpkg-query": return arguments.first == "-W"
        case "rpm": return arguments.first == "-q"
        case "apt-cache": return arguments.first == "madison"
        case "yum", "dnf": return arguments.first == "list"
        default: return false
        }
    }

    @Test func planIsRightAndTouchesNothing() throws {
        let before = try names.map(stateBytes)
        // Node by node (old-1 and old-2 share a cluster crossing the 2.1 migrations, which
        // `auto` upgrades whole: below).
        let plan = try json(["plan", "--to", "3.5.0", "--json", "--canary", "1", "--batch", "2", "--cluster-strategy", "rolling"], status: 1)
        let hosts = try byName(plan["hosts"])
        #expect(Set(hosts.keys) == Set(names))
        func action(_ name: String) -> String? { hosts[name]?["action"] as? String }
        func reason(_ name: String) -> String { hosts[name]?["reason"] as? String ?? "" }
        func commands(_ name: String) -> [String] { (hosts[name]?["steps"] as? [[String: Any]] ?? []).compactMap { $0["command"] as? String } }

        for name in ["old-1", "old-2", "el7-a", "broken-st2ctl"] { #expect(action(name) == "upgrade", "\(name): \(reason(name))") }
        #expect(action("at-target") == "skip")
        #expect(action("down") == "unreachable")
        #expect(reason("down").contains("refused"))
        let refusals = [
            "mistral": "Mistral was removed in 3.3.0", "xenial": "highest release Ubuntu 16.04", "newer": "never downgrades",
            "stale-repo": "not offered by the host's repositories (offered: 3.4.1-1)", "alpine": "unsupported OS Alpine",
            "el8-stopped": "st2api is not running",
        ]
        for (name, text) in refusals {
            #expect(action(name) == "refuse")
            #expect(reason(name).contains(text), "\(name): \(reason(name))")
        }

        // The hop: 2.0.1 -> 3.0.1 (with the 2.1 scripts, once per cluster) -> 3.5.0.
        #expect(hosts["old-1"]?["hops"] as? [String] == ["3.0.1"])
        let old = commands("old-1")
        let scopes = try #require(old.firstIndex(of: "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py"))
        // The package upgrades themselves, not the pre-flight's simulations of them (`apt-get install -s`).
        let firstUpgrade = try #require(old.firstIndex { $0.hasPrefix("DEBIAN_FRONTEND=") && $0.hasSuffix("st2=3.0.1-1 st2web=3.0.1-1") })
        let secondUpgrade = try #require(old.firstIndex { $0.hasPrefix("DEBIAN_FRONTEND=") && $0.hasSuffix("st2=3.5.0-1 st2web=3.5.0-1") })
        #expect(old.contains("apt-get install -s --only-upgrade st2=3.0.1-1 st2web=3.0.1-1") && old.contains("apt-get install -s --only-upgrade st2=3.5.0-1 st2web=3.5.0-1"))
        #expect(firstUpgrade < scopes && scopes < secondUpgrade)
        #expect(old.filter { $0 == "st2ctl stop" }.count == 2)
        #expect(old.first == "st2 key list -j -s all") // 2.0 has no -n
        let oncePer = (hosts["old-1"]?["steps"] as? [[String: Any]] ?? []).filter { $0["once_per"] as? String == "st2_cluster" }
        #expect(oncePer.compactMap { $0["command"] as? String } == [
            "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py", "/opt/stackstorm/st2/bin/st2-migrate-runners.sh",
        ])
        #expect(commands("el7-a").contains("yum update -y st2-3.5.0-1"))
        #expect(!commands("el7-a").contains { $0.contains("st2-migrate-db-dict-field-values") })
        #expect((hosts["el7-a"]?["notes"] as? [String] ?? []).contains { $0.contains("--with-optional-migrations") })
        #expect(hosts["old-1"]?["batch"] as? Int == 0 && hosts["old-2"]?["batch"] as? Int == 1)
        let summary = try #require(plan["summary"] as? [String: Any])
        #expect(summary["text"] as? String == "4 to upgrade in 3 batches, 1 skipped (at target), 6 refused, 1 unreachable")

        // By default that cluster goes whole: one unit of batching, the canary being that
        // cluster; the plan says why, and marks where its nodes meet.
        let whole = try json(["plan", "--to", "3.5.0", "--json", "--canary", "1", "--batch", "2"], status: 1)
        let wholeHosts = try byName(whole["hosts"])
        #expect(wholeHosts["old-1"]?["batch"] as? Int == 0 && wholeHosts["old-2"]?["batch"] as? Int == 0)
        let clusters = try #require(whole["clusters"] as? [[String: Any]])
        let oldCluster = clusters.first { ($0["hosts"] as? [String])?.contains("old-1") == true }
        #expect(oldCluster?["strategy"] as? String == "whole" && oldCluster?["hosts"] as? [String] == ["old-1", "old-2"], "\(clusters)")
        #expect((oldCluster?["reason"] as? String)?.hasPrefix("crosses database changes (migration 2.1: st2-migrate-datastore-scopes.py") == true)
        let meeting = (wholeHosts["old-1"]?["steps"] as? [[String: Any]] ?? []).compactMap { step in
            (step["barriers"] as? [String]).map { "\(step["name"] as? String ?? ""): \($0.joined(separator: ","))" }
        }
        #expect(meeting == ["stop services: stop 1", "migration 2.1: st2-migrate-datastore-scopes.py: database 1",
                            "reload content: services 1", "stop services: stop 2"], "\(meeting)")

        // Optional migrations on request; the Mistral DB steps where the target keeps st2mistral.
        let optional = try byName(try json(["plan", "--to", "3.5.0", "--json", "--with-optional-migrations", "--limit", "el7-a"], status: 0)["hosts"])
        #expect((optional["el7-a"]?["steps"] as? [[String: Any]] ?? []).contains { $0["command"] as? String == "/opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values --yes" })
        let mistral = try byName(try json(["plan", "--to", "3.2.0", "--json", "--limit", "mistral"], status: 0)["hosts"])
        let mistralCommands = (mistral["mistral"]?["steps"] as? [[String: Any]] ?? []).compactMap { $0["command"] as? String }
        #expect(mistralCommands.contains("yum update -y st2-3.2.0-1 st2mistral-3.2.0-1"))
        #expect(mistralCommands.filter { $0.contains("mistral-db-manage") }.count == 2)

        // Nothing changed on any host, and only read-only commands ran there.
        #expect(try names.map(stateBytes) == before)
        for name in names where name != "down" {
            for record in try lab.commandLog(name) {
                let argv = record["argv"] as? [String] ?? []
                if record["kind"] as? String == "ssh" {
                    #expect(argv.count == 1 && argv[0].contains("@@flotilla-facts"), "\(name) ran \(argv)")
                } else {
                    #expect(Self.isReadOnly(argv), "\(name) ran \(argv)")
                }
            }
        }
    }

    @Test func reportMatchesTheLab() throws {
        #expect(try lab.asRoot("old-2", "touch /etc/st2/st2.conf.dpkg-dist").status == 0)
        let report = try json(["report", "--to", "3.5.0", "--format", "json"], status: 0)
        let states = try Dictionary(uniqueKeysWithValues: names.filter { $0 != "down" }.map { ($0, try lab.state($0)) })

        let reachability = try #require(report["reachability"] as? [String: Any])
        #expect(reachability["reachable"] as? Int == names.count - 1)
        #expect((reachability["unreachable_hosts"] as? [[String: Any]])?.compactMap { $0["host"] as? String } == ["down"])

        func counts(_ key: String) -> [String: Int] {
            Dictionary(uniqueKeysWithValues: (report[key] as? [[String: Any]] ?? []).map { ($0["label"] as? String ?? "", $0["count"] as? Int ?? 0) })
        }
        var osTruth: [String: Int] = [:], versionTruth: [String: Int] = [:]
        for state in states.values {
            let os = state["os"] as? [String: Any]
            osTruth[os?["prettyName"] as? String ?? "", default: 0] += 1
            // A host without dpkg or rpm (Alpine) cannot say what it has installed.
            let st2 = (state["packages"] as? [String: String])?["st2"] ?? ""
            versionTruth[os?["packageManager"] == nil ? "unknown" : String(st2.split(separator: "-")[0]), default: 0] += 1
        }
        #expect(counts("os") == osTruth)
        #expect(counts("st2_versions") == versionTruth)

        let behind = (report["behind_target"] as? [[String: Any]] ?? []).compactMap { $0["host"] as? String }
        #expect(Set(behind) == ["old-1", "old-2", "el7-a", "broken-st2ctl"])
        let old = (report["behind_target"] as? [[String: Any]])?.first { $0["host"] as? String == "old-1" }
        #expect(old?["migrations"] as? [String] == ["migration 2.1: st2-migrate-datastore-scopes.py", "migration 2.1: st2-migrate-runners.sh"])
        #expect(report["at_target"] as? [String] == ["at-target"])

        // Components: the stopped host lists exactly what the lab says should run there.
        let stopped = (report["components"] as? [String: Any])?["hosts_with_stopped"] as? [[String: Any]] ?? []
        #expect(stopped.compactMap { $0["host"] as? String } == ["el8-stopped"])
        let services = try #require(states["el8-stopped"]?["services"] as? [String: Any])
        #expect(services.isEmpty)
        #expect((stopped.first?["stopped"] as? [String])?.contains("st2api") == true)

        // Drift: exactly the leftover files in the hosts' /etc layers.
        var driftTruth: [String: [String]] = [:]
        for name in states.keys {
            let dir = lab.labDir.appendingPathComponent("hosts/\(name)/upper/etc/st2")
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [])
                .filter { $0.hasSuffix(".dpkg-dist") || $0.hasSuffix(".dpkg-old") || $0.hasSuffix(".rpmnew") }
            if !files.isEmpty { driftTruth[name] = files.map { "/etc/st2/\($0)" } }
        }
        let drift = Dictionary(uniqueKeysWithValues: (report["config_drift"] as? [[String: Any]] ?? []).map { ($0["host"] as? String ?? "", $0["files"] as? [String] ?? []) })
        #expect(drift == driftTruth && drift == ["old-2": ["/etc/st2/st2.conf.dpkg-dist"]])

        let unreadable = report["unreadable_facts"] as? [[String: Any]] ?? []
        #expect(unreadable.compactMap { $0["host"] as? String } == ["alpine", "broken-st2ctl"])
        #expect(((unreadable.last?["facts"] as? [String: String])?["components"] ?? "").contains("cannot read /etc/st2/st2.conf"))
        #expect((unreadable.first?["facts"] as? [String: String])?.keys.sorted() == ["offered", "package_manager", "packages"])

        // The human formats carry the same sections.
        let table = try run([Self.flotilla, "report", "-i", lab.path("inventory.ini"), "--to", "3.5.0"])
        #expect(table.status == 0)
        for heading in ["REACHABILITY", "OPERATING SYSTEMS", "ST2 VERSIONS", "BEHIND 3.5.0", "COMPONENTS", "CONFIG DRIFT", "UNREADABLE FACTS"] {
            #expect(table.stdout.contains(heading))
        }
        #expect(table.stdout.contains("old-2: /etc/st2/st2.conf.dpkg-dist"))
        let markdown = try run([Self.flotilla, "report", "-i", lab.path("inventory.ini"), "--format", "markdown", "--limit", "old-*"])
        #expect(markdown.stdout.hasPrefix("# StackStorm fleet report") && markdown.stdout.contains("| 2.0.1 | 2 |"))
    }

    @Test func factsReportUnreadableAndUnreachable() throws {
        let facts = try json(["facts", "--json"], status: 1)
        let hosts = try byName(facts["hosts"])
        #expect(hosts["down"]?["reachable"] as? Bool == false)
        let el7 = try #require(hosts["el7-a"])
        #expect(el7["package_manager"] as? String == "yum")
        #expect((el7["os"] as? [String: Any])?["key"] as? String == "el7")
        #expect(el7["packages"] as? [String: String] == ["st2": "3.4.1-1"])
        #expect((el7["offered"] as? [String: [String]])?["st2"]?.last == "3.5.0-1")
        #expect(hosts["el8-stopped"]?["package_manager"] as? String == "dnf")
        #expect(hosts["broken-st2ctl"]?["components"] is NSNull)
        #expect((hosts["broken-st2ctl"]?["unreadable"] as? [String: String])?.keys.sorted() == ["components"])
        let disk = try #require(hosts["old-1"]?["disk"] as? [[String: Any]])
        #expect(disk.compactMap { $0["path"] as? String } == ["/", "/opt"])
        #expect(disk.allSatisfy { ($0["available_kib"] as? Int ?? 0) > 0 })
        let summary = try #require(facts["summary"] as? [String: Any])
        #expect(summary["unreachable"] as? Int == 1 && summary["with_unreadable_facts"] as? Int == 2)

        let bad = try run([Self.flotilla, "plan", "-i", lab.path("inventory.ini"), "--to", "3.5.0-1"])
        #expect(bad.status == 64 && bad.stderr.contains("not an st2 release"))
    }
}
