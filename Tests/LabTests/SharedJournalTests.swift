import FlotillaCore
import Foundation
import PostgresTestSupport
import Testing
@testable import flotilla_lab

/// Runs journaled in PostgreSQL (SPEC §8.6), end to end on lab fleets against a real
/// server the tests start: the run commands through `--journal`, an unreachable database
/// at start, and the database lost mid-run.
@Suite struct SharedJournalTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    /// A fresh database of the shared test server; its address (no password: the
    /// server's password file, PGPASSFILE, holds it).
    static func newJournal(_ server: PostgresTestServer) throws -> String {
        server.url(database: try server.newDatabase(prefix: "lab"))
    }

    /// The latest run of `journal` as `show --json` has it: its id and the hosts whose
    /// "stop services" step is running; nil while it cannot be shown yet.
    static func stopsInFlight(_ journal: String) throws -> (runID: String, hosts: [String])? {
        let shown = try run([flotilla, "show", "--json", "--journal", journal])
        guard shown.status == 0, let report = try? json(shown) else { return nil }
        let hosts = (report["hosts"] as? [[String: Any]] ?? []).filter { host in
            (host["steps"] as? [[String: Any]] ?? []).contains { $0["name"] as? String == "stop services" && $0["status"] as? String == "running" }
        }
        return (report["run_id"] as? String ?? "", hosts.compactMap { $0["name"] as? String })
    }

    static func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr)")
    }

    @Test func everyRunCommandWorksThroughAPostgresJournal() throws {
        let server = try PostgresTestServer.shared
        let journal = try Self.newJournal(server)
        let lab = try TestLab(spec: TestLab.slowStopSpec(["p1", "p2", "p3"], delay: "10ms"))
        let state = lab.dir.appendingPathComponent("state")
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--batch", "2", "--json",
                              "--state-dir", state.path, "--journal", journal])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains(journal), "the start note names the journal: \(result.stderr)")
        let report = try Self.json(result)
        #expect(report["outcome"] as? String == "succeeded")
        let runID = try #require(report["run_id"] as? String)
        // The state dir keeps the run's logs, but no journal of its own.
        #expect(!FileManager.default.fileExists(atPath: state.appendingPathComponent("runs/\(runID)/journal.sqlite").path))

        let listed = try run([Self.flotilla, "runs", "--journal", journal, "--json"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stdout.contains(runID), "\(listed.stdout)")
        // $FLOTILLA_JOURNAL names it as well as --journal.
        var environment = ProcessInfo.processInfo.environment
        environment["FLOTILLA_JOURNAL"] = journal
        let shown = try runProcess([Self.flotilla, "show", runID, "--json", "--state-dir", state.path], environment: environment)
        #expect(shown.status == 0, "\(shown.stderr)")
        let again = try Self.json(shown)
        #expect(again["outcome"] as? String == "succeeded" && again["run_id"] as? String == runID)
        #expect((again["hosts"] as? [[String: Any]])?.count == 3)
        // Resume reads the run from the same journal: finished, nothing to do.
        let resumed = try run([Self.flotilla, "resume", runID, "--journal", journal, "--state-dir", state.path])
        #expect(resumed.status == 64 && resumed.stderr.contains("already finished (succeeded)"), "\(resumed.stderr)")
    }

    @Test func anUnreachableJournalStopsEveryCommandAtOnceNamingIt() throws {
        let address = "postgresql://flotilla@127.0.0.1:1/nowhere"
        let commands: [[String]] = [
            ["upgrade", "-i", "/nonexistent/inventory.ini", "--to", "3.8.1"],
            ["run", "-i", "/nonexistent/inventory.ini", "/nonexistent/book.yaml"],
            ["resume"], ["runs"], ["show"],
        ]
        for command in commands {
            let result = try run([Self.flotilla] + command + ["--journal", address, "--state-dir", "/nonexistent/state"])
            #expect(result.status == 69, "\(command): \(result.stderr)")
            #expect(result.stderr.contains("cannot reach the journal") && result.stderr.contains(address), "\(command): \(result.stderr)")
        }
        // A password in $FLOTILLA_JOURNAL is used but never shown.
        var environment = ProcessInfo.processInfo.environment
        environment["FLOTILLA_JOURNAL"] = "postgresql://flotilla:hunter2@127.0.0.1:1/nowhere"
        let fromEnvironment = try runProcess([Self.flotilla, "runs", "--state-dir", "/nonexistent/state"], environment: environment)
        #expect(fromEnvironment.status == 69, "\(fromEnvironment.stderr)")
        #expect(fromEnvironment.stderr.contains("postgresql://flotilla:***@127.0.0.1:1/nowhere") && !fromEnvironment.stderr.contains("hunter2"),
                "\(fromEnvironment.stderr)")
        // On the command line a password is refused: every user can read argv.
        let inArgv = try run([Self.flotilla, "runs", "--journal", "postgresql://flotilla:hunter2@127.0.0.1:1/nowhere"])
        #expect(inArgv.status == 64, "\(inArgv.stderr)")
        #expect(inArgv.stderr.contains("PGPASSWORD") && !inArgv.stderr.contains("hunter2"), "\(inArgv.stderr)")
        let notAnAddress = try run([Self.flotilla, "runs", "--journal", "mysql://x@y/z"])
        #expect(notAnAddress.status == 64, "\(notAnAddress.stderr)")
    }

    @Test func withoutLibpqSQLiteJournalsStillWorkAndAPostgreSQLJournalSaysWhatIsMissing() throws {
        // libpq hidden (an empty file bound over it in a mount namespace of its own), as on
        // a controller without libpq5: flotilla must still start.
        let maps = String(decoding: try #require(FileHandle(forReadingAtPath: "/proc/self/maps")).readDataToEndOfFile(), as: UTF8.self) // this test binary links libpq
        let library = try #require(maps.split(separator: "\n").compactMap { $0.split(separator: " ").last }.first { $0.contains("/libpq.so.5") })
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("nolibpq-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: state) }
        func withoutLibpq(_ arguments: [String]) throws -> Run {
            try run(["/usr/bin/unshare", "--mount", "--propagation", "private", "sh", "-c", "mount --bind /dev/null \"$0\" && exec \"$@\"",
                     String(library), Self.flotilla] + arguments)
        }
        let local = try withoutLibpq(["runs", "--state-dir", state.path])
        #expect(local.status == 0, "\(local.stderr)")
        let shared = try withoutLibpq(["runs", "--journal", "postgresql://flotilla@127.0.0.1:1/nowhere"])
        #expect(shared.status == 69, "\(shared.stderr)")
        #expect(shared.stderr.contains("cannot reach the journal: a PostgreSQL journal needs libpq (Debian: apt-get install libpq5)"), "\(shared.stderr)")
    }

    @Test func losingTheJournalMidRunStartsNoHostFinishesTheStepInFlightAndResumes() throws {
        // A server of its own, to stop under the controller.
        let server = try PostgresTestServer.start()
        defer { server.stop() }
        let journal = try Self.newJournal(server)
        let lab = try TestLab(spec: TestLab.slowStopSpec(["q1", "q2", "q3"], delay: "3s"))
        let state = lab.dir.appendingPathComponent("state")
        let controller = try Background([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--batch", "1",
                                         "--max-parallel", "1", "--state-dir", state.path, "--journal", journal],
                                        log: lab.dir.appendingPathComponent("controller.log"))
        // The slow stop of the first host in flight, as the journal shows it.
        var runID = ""
        let inFlight = try lab.waitFor(seconds: 120) {
            guard let shown = try Self.stopsInFlight(journal) else { return false }
            runID = shown.runID
            return !shown.hosts.isEmpty
        }
        try #require(inFlight, "no stop in flight: \(controller.output.suffix(2000))")
        server.halt()
        #expect(controller.exitCode == 3, "\(controller.output.suffix(3000))")
        #expect(controller.output.contains("cannot record") && controller.output.contains("flotilla resume \(runID)"),
                "\(controller.output.suffix(3000))")
        // The stop in flight ended on its host; no other host was touched.
        let stopped = try lab.commands("q1").filter { $0.contains("st2ctl stop") }
        #expect(!stopped.isEmpty, "q1 ran its stop")
        for host in ["q2", "q3"] {
            let upgraded = try lab.commandLog(host).contains { "\($0["argv"] ?? "")".contains("st2ctl stop") }
            #expect(!upgraded, "\(host) was not started")
        }

        try server.restart()
        let resumed = try run([Self.flotilla, "resume", runID, "--journal", journal, "--state-dir", state.path, "--json"])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(3000))")
        #expect(try Self.json(resumed)["outcome"] as? String == "succeeded")
        for host in ["q1", "q2", "q3"] {
            #expect(try lab.packages(host)["st2"] == "3.8.1-1", "\(host)")
            // Each host stopped its services once: the stop in flight was re-attached, not run again.
            let stops = try lab.commandLog(host).filter { $0["kind"] as? String == "sim" && "\($0["argv"] ?? "")".contains("st2ctl") && "\($0["argv"] ?? "")".contains("stop") }
            let log = try lab.commandLog(host)
            #expect(stops.count == 1, "\(host): \(log)\nresume: \(resumed.stderr)\ncontroller: \(controller.output)")
        }
    }

    @Test func aDeadControllersHostsAreTakenOverByResumeFromAnotherMachine() throws {
        let server = try PostgresTestServer.shared
        let journal = try Self.newJournal(server)
        let lab = try TestLab(spec: TestLab.slowStopSpec(["r1", "r2", "r3"], delay: "3s"))
        // Two controller machines: two state dirs and two homes (where each machine's own
        // host locks live), one journal.
        let first = lab.dir.appendingPathComponent("state-a")
        let second = lab.dir.appendingPathComponent("state-b")
        var otherMachine = ProcessInfo.processInfo.environment
        otherMachine["HOME"] = lab.dir.appendingPathComponent("home-b").path
        let controller = try Background([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--batch", "3",
                                         "--max-parallel", "3", "--state-dir", first.path, "--journal", journal],
                                        log: lab.dir.appendingPathComponent("controller-a.log"))
        var runID = ""
        let inFlight = try lab.waitFor(seconds: 120) {
            guard let shown = try Self.stopsInFlight(journal) else { return false }
            runID = shown.runID
            return shown.hosts.count == 3
        }
        try #require(inFlight, "no stops in flight: \(controller.output.suffix(2000))")
        // While the first controller lives, its hosts are its own.
        let refused = try runProcess([Self.flotilla, "resume", runID, "--journal", journal, "--state-dir", second.path], environment: otherMachine)
        #expect(refused.status == 75, "\(refused.stderr)")
        #expect(refused.stderr.contains("are held by pid \(controller.pid)") && refused.stderr.contains("r1, r2, r3"), "\(refused.stderr)")

        controller.signal(SIGKILL)
        controller.wait()
        // Its session ended with it: the hosts are free, and the second machine takes them over.
        let resumed = try runProcess([Self.flotilla, "resume", runID, "--journal", journal, "--state-dir", second.path, "--json"],
                                     environment: otherMachine)
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(3000))")
        #expect(resumed.stderr.contains("re-attaching to the steps in flight"), "\(resumed.stderr.suffix(3000))")
        #expect(try Self.json(resumed)["outcome"] as? String == "succeeded")
        for host in ["r1", "r2", "r3"] {
            #expect(try lab.packages(host)["st2"] == "3.8.1-1", "\(host)")
            let stops = try lab.commandLog(host).filter { $0["kind"] as? String == "sim" && "\($0["argv"] ?? "")".contains("st2ctl") && "\($0["argv"] ?? "")".contains("stop") }
            #expect(stops.count == 1, "\(host): its stop was re-attached, not run again")
        }
    }

    /// Twenty hosts in each of three zones (a 60-host fleet); the first of each zone fails
    /// its package install, the others are slow to stop their services.
    static let zones = """
        defaults:
          os: ubuntu20.04
          packages: {st2: 3.7.1-1}
          available: [3.7.1-1, 3.8.1-1]
          faults:
            slow: [{match: "st2ctl stop", delay: 3s}]
        hosts:
        \(["a", "b", "c"].flatMap { zone in (1...20).map { number in
            number == 1
                ? "  - {name: \(zone)\(number), zone: \(zone), faults: {fail: [{match: \"apt-get install -y\", exit: 100, stderr: \"E: broken\"}]}}"
                : "  - {name: \(zone)\(number), zone: \(zone)}"
        } }.joined(separator: "\n"))

        """

    @Test func threeControllersOnThreeZonesHaltTogetherAtTheRunsThirdFailure() throws {
        let server = try PostgresTestServer.shared
        let journal = try Self.newJournal(server)
        let lab = try TestLab(spec: Self.zones)
        func controller(_ zone: String, _ extra: [String] = []) throws -> Background {
            var otherMachine = ["/usr/bin/env", "HOME=\(lab.dir.appendingPathComponent("home-\(zone)").path)"]
            otherMachine += [Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--limit", "zone_\(zone)",
                             "--batch", "4", "--max-parallel", "1", "--max-fail", "2", "--run", "window-1", "--journal", journal,
                             "--state-dir", lab.dir.appendingPathComponent("state-\(zone)").path, "--json"] + extra
            return try Background(otherMachine, log: lab.dir.appendingPathComponent("controller-\(zone).log"))
        }
        let controllers = try ["a", "b", "c"].map { try controller($0) }
        for (zone, controller) in zip(["a", "b", "c"], controllers) {
            // Locally each saw one failure, under its --max-fail 2: the run's third halted them all.
            #expect(controller.exitCode == 2, "\(zone): \(controller.output.suffix(3000))")
        }
        let shown = try run([Self.flotilla, "show", "window-1", "--json", "--journal", journal])
        let report = try Self.json(shown)
        let hosts = report["hosts"] as? [[String: Any]] ?? []
        #expect(hosts.count == 60, "one run holds every controller's hosts: \(hosts.map { $0["name"] ?? "" })")
        let statuses = Dictionary(uniqueKeysWithValues: hosts.map { ($0["name"] as? String ?? "", $0["status"] as? String ?? "") })
        #expect(["a1", "b1", "c1"].allSatisfy { statuses[$0] == "failed" }, "\(statuses)")
        // Nobody started a host after the third failure: each zone's last hosts never ran.
        #expect(["a4", "b4", "c4"].allSatisfy { statuses[$0] == "not_started" }, "\(statuses)")
        #expect(statuses.values.filter { $0 == "failed" }.count == 3, "\(statuses)")
        let reasons = controllers.map(\.output).joined()
        #expect(reasons.contains("max-fail 2 exceeded across the run's controllers: 3 hosts failed"), "\(reasons.suffix(3000))")

        // A fourth controller with another --max-fail is refused, the difference named.
        let refused = try run(["/usr/bin/env", "HOME=\(lab.dir.appendingPathComponent("home-d").path)", Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"),
                               "--to", "3.8.1", "--limit", "zone_a", "--batch", "4", "--max-parallel", "1", "--max-fail", "5", "--run", "window-1",
                               "--journal", journal, "--state-dir", lab.dir.appendingPathComponent("state-d").path])
        #expect(refused.status == 64, "\(refused.stderr)")
        #expect(refused.stderr.contains("--max-fail: \"5\" here, \"2\" in the run"), "\(refused.stderr)")
    }

    @Test func ctlThroughTheJournalReachesEveryControllerOfTheRun() throws {
        let server = try PostgresTestServer.shared
        let journal = try Self.newJournal(server)
        let lab = try TestLab(spec: Self.zones)
        let controllers = try ["a", "b"].map { zone in
            try Background(["/usr/bin/env", "HOME=\(lab.dir.appendingPathComponent("home-\(zone)").path)", Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"),
                            "--to", "3.8.1", "--limit", "zone_\(zone)", "--batch", "4", "--max-parallel", "1", "--max-fail", "2", "--run", "window-2",
                            "--journal", journal, "--state-dir", lab.dir.appendingPathComponent("state-\(zone)").path],
                           log: lab.dir.appendingPathComponent("controller-\(zone).log"))
        }
        // Both controllers have a host in flight.
        let bothRunning = try lab.waitFor(seconds: 120) {
            let shown = try run([Self.flotilla, "show", "window-2", "--json", "--journal", journal])
            guard shown.status == 0, let report = try? Self.json(shown) else { return false }
            let running = (report["hosts"] as? [[String: Any]] ?? []).filter { $0["status"] as? String == "running" }.compactMap { $0["name"] as? String }
            return running.contains { $0.hasPrefix("a") } && running.contains { $0.hasPrefix("b") }
        }
        try #require(bothRunning, "\(controllers.map(\.output).joined().suffix(3000))")
        // From a third machine, with no state dir of the run: through the journal.
        let sent = try run([Self.flotilla, "ctl", "window-2", "abort", "--journal", journal, "--state-dir", lab.dir.appendingPathComponent("state-x").path])
        #expect(sent.status == 0 && sent.stdout.contains("ok (sent to every controller of run window-2)"), "\(sent.stdout)\(sent.stderr)")
        for (zone, controller) in zip(["a", "b"], controllers) {
            #expect(controller.exitCode == 2, "\(zone): \(controller.output.suffix(3000))")
            #expect(controller.output.contains("control (through the journal): abort"), "\(zone): \(controller.output.suffix(3000))")
        }
        let report = try Self.json(try run([Self.flotilla, "show", "window-2", "--json", "--journal", journal]))
        let statuses = Dictionary(uniqueKeysWithValues: (report["hosts"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0["status"] as? String ?? "") })
        #expect(statuses["a4"] == "not_started" && statuses["b4"] == "not_started", "\(statuses)")
        let unknown = try run([Self.flotilla, "ctl", "window-2", "reboot", "--journal", journal])
        #expect(unknown.status == 1 && unknown.stdout.contains("unknown command 'reboot'"), "\(unknown.stdout)\(unknown.stderr)")
    }
}
