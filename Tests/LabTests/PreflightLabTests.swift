import Foundation
import Testing
@testable import flotilla_lab

/// Pre-flight before any stop (SPEC §8.3) and the stop confirmed by processes, end to end
/// on lab hosts logged into as the non-root user with sudo: a host whose transaction, index
/// or databases would fail never sees `st2ctl stop`; `plan --preflight` shows the same
/// failures and changes nothing; processes `st2ctl status` misses fail `confirm stopped`
/// unless `--force-stop` kills them.
@Suite struct PreflightLabTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    /// The simulated commands a host ran, as `PROGRAM ARGS`.
    static func simulated(_ lab: TestLab, _ host: String) throws -> [String] {
        try lab.commandLog(host).compactMap { record in
            guard record["kind"] as? String == "sim", let argv = record["argv"] as? [String], let first = argv.first else { return nil }
            return ([URL(fileURLWithPath: first).lastPathComponent] + argv.dropFirst()).joined(separator: " ")
        }
    }

    static func report(_ result: Run) throws -> [String: [String: Any]] {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stderr.suffix(2000))")
        return Dictionary(uniqueKeysWithValues: (json["hosts"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0) })
    }

    static let faultySpec = """
        defaults:
          os: ubuntu20.04
          packages: {st2: 3.7.1-1, st2chatops: 3.7.1-1}
          available: [3.7.1-1, 3.8.1-1]
        hosts:
          - {name: fine}
          - {name: unmet, faults: {unmet_dependency: {st2chatops: "nodejs (>= 14.0.0)"}}}
          - {name: unmet-el8, os: el8, packages: {st2: 3.7.0-1, st2chatops: 3.7.0-1}, available: [3.7.0-1, 3.8.1-1],
             faults: {unmet_dependency: {st2chatops: "nodejs (>= 14.0.0)"}}}
          - {name: no-mongo, faults: {databases_down: [mongodb]}}
          - {name: new-key, faults: {index: signing-key}}
          - {name: stale, faults: {index: unreachable}}
        """

    /// What each faulty host's failure must say.
    static let reasons: [String: String] = [
        "unmet": "step 'pre-flight packages' failed: pre-flight packages failed (exit 100): E: Unable to correct problems, you have held broken packages.; st2chatops : Depends: nodejs (>= 14.0.0) but it is not installable",
        "unmet-el8": "nothing provides nodejs >= 14.0.0 needed by st2chatops-3.8.1-1.x86_64",
        "no-mongo": "step 'pre-flight databases' failed: pre-flight databases failed (exit 1): MongoDB ",
        "new-key": "step 'pre-flight index' failed: pre-flight index failed (exit 100): ",
        "stale": "step 'pre-flight index' failed: pre-flight index failed (the index is stale): W: Failed to fetch",
    ]

    @Test func failingPreflightShowsInThePlanAndFailsTheHostBeforeItsStop() throws {
        let lab = try TestLab(spec: Self.faultySpec)
        let faulty = Self.reasons.keys.sorted()
        let before = try Dictionary(uniqueKeysWithValues: (faulty + ["fine"]).map { ($0, try lab.state($0)["services"] as? [String: Int] ?? [:]) })

        // plan --preflight: the same failures, read-only (no index refresh, no package change).
        let plan = try run([Self.flotilla, "plan", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--preflight", "--json"])
        #expect(plan.status == 1, "\(plan.stderr.suffix(2000))")
        let planned = try Self.report(plan)
        #expect((planned["fine"]?["preflight"] as? [String: Any])?["passed"] as? Bool == true, "\(planned["fine"] ?? [:])")
        for name in ["unmet", "unmet-el8", "no-mongo"] {
            let preflight = planned[name]?["preflight"] as? [String: Any] ?? [:]
            #expect(preflight["passed"] as? Bool == false, "\(name): \(preflight)")
            let failed: [String: Any] = (preflight["checks"] as? [[String: Any]])?.last ?? [:]
            let reason = Self.reasons[name] ?? "?"
            let expected = reason.replacingOccurrences(of: "step 'pre-flight packages' failed: ", with: "")
                .replacingOccurrences(of: "step 'pre-flight databases' failed: ", with: "")
            let found = failed["reason"] as? String ?? ""
            #expect(found.contains(expected), "\(name): \(failed)")
        }
        // The index refresh is left to 'upgrade': the index faults do not show here.
        #expect((planned["new-key"]?["preflight"] as? [String: Any])?["passed"] as? Bool == true)
        let text = try run([Self.flotilla, "plan", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--preflight"])
        #expect(text.status == 1)
        #expect(text.stdout.contains("Pre-flight (read-only; the index refresh runs only in 'upgrade'):\n"), "\(text.stdout)")
        #expect(text.stdout.contains("  fine: passed (disk, packages, databases, st2 CLI)\n"), "\(text.stdout)")
        #expect(text.stdout.contains("  no-mongo: FAILED: pre-flight databases failed (exit 1): MongoDB "), "\(text.stdout)")
        for name in faulty + ["fine"] {
            let commands = try Self.simulated(lab, name)
            #expect(!commands.contains { $0.hasPrefix("apt-get update") || $0.contains("makecache") || $0.hasPrefix("st2ctl stop") }, "\(name): \(commands)")
            #expect(try lab.state(name)["services"] as? [String: Int] == before[name], "\(name): services changed")
        }
        // The databases' credentials never left the host.
        #expect(!plan.stdout.contains("secret") && !text.stdout.contains("secret"))

        // The upgrade: each faulty host fails at its pre-flight, services untouched, and
        // counts against --max-fail (5 failures at --max-fail 5: completed, not halted).
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--max-fail", "5",
                              "--json", "--state-dir", state])
        #expect(result.status == 1, "\(result.stderr.suffix(3000))")
        let hosts = try Self.report(result)
        #expect(hosts["fine"]?["status"] as? String == "succeeded", "\(hosts["fine"]?["error"] ?? "")")
        #expect(try lab.packages("fine")["st2"] == "3.8.1-1")
        #expect(try Self.simulated(lab, "fine").contains("apt-get install -s --only-upgrade st2=3.8.1-1 st2chatops=3.8.1-1"))
        for name in faulty {
            #expect(hosts[name]?["status"] as? String == "failed", "\(name)")
            let error = hosts[name]?["error"] as? String ?? ""
            #expect(error.contains(Self.reasons[name] ?? "?"), "\(name): \(error)")
            let commands = try Self.simulated(lab, name)
            #expect(!commands.contains("st2ctl stop"), "\(name) was stopped: \(commands)")
            #expect(try lab.packages(name)["st2"]?.hasPrefix("3.7.") == true)
            #expect(try lab.state(name)["services"] as? [String: Int] == before[name], "\(name): services changed")
        }
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let summary = try #require(json["summary"] as? [String: Any])
        #expect(summary["failed"] as? Int == 5 && summary["succeeded"] as? Int == 1, "\(summary)")
        // The same fleet at --max-fail 4: the fifth pre-flight failure halts the run.
        let halted = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--max-fail", "4",
                              "--max-parallel", "1", "--json", "--state-dir", lab.dir.appendingPathComponent("state2").path])
        #expect(halted.status == 2, "\(halted.stderr.suffix(2000))")
    }

    @Test func processesTheStatusMissesFailTheStopUnlessForceStopKillsThem() throws {
        let lab = try TestLab(spec: """
            defaults:
              os: ubuntu20.04
              packages: {st2: 3.7.1-1}
              available: [3.7.1-1, 3.8.1-1]
              faults: {survive_stop: [st2sensorcontainer]}
            hosts: [{name: kept}, {name: forced}]
            """)
        func leftovers(_ host: String) throws -> [String] {
            try lab.asRoot(host, "ps -eo args=").stdout.split(separator: "\n").map(String.init).filter { $0.contains("bin/st2sensorcontainer") }
        }
        #expect(try leftovers("kept") == ["/opt/stackstorm/st2/bin/python /opt/stackstorm/st2/bin/st2sensorcontainer --config-file /etc/st2/st2.conf"])

        let plain = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--limit", "kept", "--to", "3.8.1", "--json",
                             "--state-dir", lab.dir.appendingPathComponent("state").path])
        // Its batch's only host failed: the run halts (exit 2).
        #expect(plain.status == 2, "\(plain.stderr.suffix(2000))")
        let kept = try #require(try Self.report(plain)["kept"])
        #expect(kept["status"] as? String == "failed")
        let error = kept["error"] as? String ?? ""
        #expect(error.hasPrefix("step 'confirm stopped' failed: st2 processes left after st2ctl stop that st2ctl status does not list: st2sensorcontainer (pid "),
                "\(error)")
        #expect(error.hasSuffix("(stop them, or rerun with --force-stop)"))
        #expect(try lab.packages("kept")["st2"] == "3.7.1-1")
        #expect(try leftovers("kept").count == 1)
        // st2ctl says it is stopped: only ps shows what is left.
        #expect(try lab.ssh("kept", "st2ctl status").stdout.contains("st2sensorcontainer is not running."))

        let forced = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--limit", "forced", "--to", "3.8.1", "--force-stop",
                              "--json", "--state-dir", lab.dir.appendingPathComponent("state2").path])
        #expect(forced.status == 0, "\(forced.stderr.suffix(2000))")
        #expect(try Self.report(forced)["forced"]?["status"] as? String == "succeeded")
        #expect(try lab.packages("forced")["st2"] == "3.8.1-1")
        #expect(try leftovers("forced").isEmpty)
        // The kill came between the stop and the package upgrade.
        let commands = try lab.commandLog("forced").compactMap { ($0["argv"] as? [String])?.first }.map(TestLab.unwrapBecome)
        let kill = try #require(commands.firstIndex { $0.hasPrefix("kill -9 ") }, "\(commands)")
        let stop = try #require(commands.firstIndex { $0 == "st2ctl stop" || $0.hasSuffix("st2ctl stop") }, "\(commands)")
        let upgrade = try #require(commands.firstIndex { $0.contains("apt-get install -y") }, "\(commands)")
        #expect(stop < kill && kill < upgrade)
    }
}
