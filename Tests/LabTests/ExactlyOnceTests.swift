import Foundation
import FlotillaCore
import Testing
@testable import flotilla_lab

/// "Every step exactly once" (SPEC §8.1) end to end on lab fleets: a host rebooted
/// mid-step, controller kills aimed inside the steps that must never run twice, network
/// cuts during a package step and a cluster's database step, and `runs --prune`. Proven
/// from the hosts' own command logs.
@Suite struct ExactlyOnceTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr.suffix(3000))")
    }

    /// The steps of `host` in a run report, by name.
    static func steps(_ report: [String: Any], _ host: String) -> [String: [String: Any]] {
        let entry = (report["hosts"] as? [[String: Any]] ?? []).first { $0["name"] as? String == host }
        return Dictionary((entry?["steps"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// A host's command log records of `kind` (`started`, `sim`, `ssh`) whose line (the
    /// simulated tool's name and arguments, or the command sent, unwrapped from sudo)
    /// starts with `prefix`.
    static func records(_ lab: TestLab, _ host: String, _ kind: String, _ prefix: String) throws -> [[String: Any]] {
        guard FileManager.default.fileExists(atPath: lab.labDir.appendingPathComponent("hosts/\(host)/commands.log").path) else { return [] }
        return try lab.commandLog(host).filter { record in
            guard record["kind"] as? String == kind, let argv = record["argv"] as? [String], let first = argv.first else { return false }
            // A command sent through sudo (the default user login) reads as the command itself.
            let line = kind == "ssh" ? TestLab.unwrapBecome(first) : ([URL(fileURLWithPath: first).lastPathComponent] + argv.dropFirst()).joined(separator: " ")
            return line.hasPrefix(prefix)
        }
    }

    // MARK: (d) a host rebooted mid-step

    /// The host reboots 500 ms into a step: the step's process dies with the host, whose
    /// boot id changes, so its record cannot say how the step ended: `unknown`, the host
    /// failed, never run again by the run or by a plain `resume`; `resume --rerun-unknown`
    /// runs it again and the host finishes.
    @Test func aHostRebootedMidStepIsUnknownUntilResumeRerunUnknown() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.8.1-1}}
            hosts:
              - {name: b1, faults: {reboot: [{match: "mark-reboot", delay: 500ms}]}}
            """)
        let step = "sleep 2; echo mark-reboot >>$HOME/marks; echo migrated"
        let book = try lab.write("book.yaml", """
            steps:
              - {name: before, run: "echo before"}
              - {name: migrate, run: "\(step)"}
              - {name: after, run: "echo after"}
            """)
        let state = lab.dir.appendingPathComponent("state").path
        let bootBefore = try lab.asRoot("b1", "cat /proc/sys/kernel/random/boot_id").stdout

        let first = try run([Self.flotilla, "run", "-i", lab.path("inventory.ini"), book.path, "--json", "--state-dir", state])
        #expect(first.status == 2, "halted: its one host failed: \(first.stderr.suffix(2000))")
        var steps = Self.steps(try json(first), "b1")
        #expect(steps["migrate"]?["status"] as? String == "unknown" && steps["migrate"]?["attempts"] as? Int == 1, "\(steps["migrate"] ?? [:])")
        #expect(steps["after"]?["status"] as? String != "succeeded")
        let reboots = try Self.records(lab, "b1", "ssh", step).filter { $0["fault"] as? String == "reboot" }
        #expect(reboots.count == 1 && reboots.first?["detached"] as? Bool == true, "the host rebooted during the detached step")
        #expect(try lab.asRoot("b1", "cat /proc/sys/kernel/random/boot_id").stdout != bootBefore, "a new boot id")
        #expect(try lab.asRoot("b1", "cat ~/marks").status != 0, "the step died with the host, before its mark")

        let plain = try run([Self.flotilla, "resume", "--json", "--state-dir", state])
        #expect(plain.status == 2 && plain.stderr.contains("unknown, left failed"), "\(plain.stderr.suffix(2000))")
        steps = Self.steps(try json(plain), "b1")
        #expect(steps["migrate"]?["status"] as? String == "unknown" && steps["migrate"]?["attempts"] as? Int == 1)
        #expect(try Self.records(lab, "b1", "ssh", step).count == 1, "a plain resume does not run it again")

        let rerun = try run([Self.flotilla, "resume", "--rerun-unknown", "--json", "--state-dir", state])
        #expect(rerun.status == 0, "\(rerun.stderr.suffix(2000))")
        let report = try json(rerun)
        #expect(report["outcome"] as? String == "succeeded")
        steps = Self.steps(report, "b1")
        #expect(["before", "migrate", "after"].map { steps[$0]?["status"] as? String } == ["succeeded", "succeeded", "succeeded"])
        #expect(steps["migrate"]?["attempts"] as? Int == 2 && steps["migrate"]?["stdout_tail"] as? String == "migrated\n", "\(steps["migrate"] ?? [:])")
        let starts = try Self.records(lab, "b1", "ssh", step)
        #expect(starts.count == 2 && starts.last?["exit_status"] as? Int == 0 && starts.last?["fault"] == nil, "\(starts)")
        #expect(try lab.asRoot("b1", "cat ~/marks").stdout == "mark-reboot\n")
    }

    // MARK: (b) controller kills inside the steps that must not run twice

    static let databaseTools = [
        "apt-get install -y",
        "mistral-db-manage --config-file /etc/mistral/mistral.conf upgrade head",
        "st2-migrate-runners.sh",
    ]

    /// Hosts at st2 2.0.1 with Mistral going to 3.0.1: the package upgrade, Mistral's
    /// `upgrade head` and `populate`, the 2.1 migration scripts. Each tool in
    /// `databaseTools` logs its start and then works `delay` longer.
    static func mistralSpec(_ hosts: String, delay: String, extraFaults: String = "") -> String {
        """
        defaults:
          os: ubuntu18.04
          packages: {st2: 2.0.1-1, st2mistral: 2.0.1-1}
          available: [2.0.1-1, 3.0.1-1]
          faults:
            tool_slow: [{match: "^apt-get install -y", delay: \(delay)}, {match: "^mistral-db-manage .*upgrade head", delay: \(delay)}, {match: "^st2-migrate-runners", delay: \(delay)}]
        \(extraFaults)
        hosts: \(hosts)
        """
    }

    /// SIGKILL lands while the package upgrade, then Mistral's `upgrade head`, then a
    /// migration script runs on every host (each seen started in the host's log, not
    /// ended), each followed by `resume`: the run ends succeeded, and every one of those
    /// commands ran exactly once on every host, to its end.
    @Test func killsInsideThePackageMistralAndMigrationStepsRunEachOnceToItsEnd() throws {
        let hosts = ["u1", "u2"]
        let lab = try TestLab(spec: Self.mistralSpec("[{name: u1, st2_cluster: a}, {name: u2, st2_cluster: b}]", delay: "3s"))
        let state = lab.dir.appendingPathComponent("state").path
        var argv = [Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--no-backup", "--batch", "2", "--state-dir", state]
        for (number, tool) in Self.databaseTools.enumerated() {
            let controller = try Background(argv, log: lab.dir.appendingPathComponent("controller-\(number).log"))
            let started = try lab.waitFor(seconds: 60) { try hosts.allSatisfy { try !Self.records(lab, $0, "started", tool).isEmpty } || controller.exited }
            controller.signal(SIGKILL)
            let status = controller.wait()
            try #require(started && status & 0x7f == SIGKILL, "'\(tool)' never started on every host: \(controller.output.suffix(2000))")
            for host in hosts {
                #expect(try Self.records(lab, host, "sim", tool).isEmpty, "\(host): the kill landed while '\(tool)' ran")
            }
            argv = [Self.flotilla, "resume", "--state-dir", state]
        }
        let final = try run(argv + ["--json"])
        #expect(final.status == 0, "\(final.stderr.suffix(3000))")
        let report = try json(final)
        #expect(report["outcome"] as? String == "succeeded")
        for host in hosts {
            #expect(try lab.packages(host)["st2"] == "3.0.1-1")
            for tool in Self.databaseTools {
                let ran = try Self.records(lab, host, "sim", tool)
                #expect(try Self.records(lab, host, "started", tool).count == 1 && ran.count == 1, "\(host): '\(tool)' ran \(ran.count) times")
                #expect(ran.first?["exit_status"] as? Int == 0, "\(host): '\(tool)' ran to its end: \(ran)")
            }
            let steps = Self.steps(report, host)
            for name in ["upgrade packages", "mistral-db-manage upgrade head", "migration 2.1: st2-migrate-runners.sh"] {
                #expect(steps[name]?["attempts"] as? Int == 1 && steps[name]?["reattached"] as? Int == 1, "\(host) '\(name)': \(steps[name] ?? [:])")
            }
            let mistral = try #require(try lab.state(host)["mistral"] as? [String: Any])
            #expect(mistral["schema"] as? String == "3.0.1-1" && mistral["populated"] as? Bool == true, "\(host): \(mistral)")
        }
    }

    // MARK: (c) network cuts

    /// Every connection of four hosts is cut while all four upgrade their packages at once:
    /// each re-attaches, the upgrade ran once on each, the report counts the re-attachment.
    @Test func aCutDuringThePackageStepOfFourHostsAtOnceIsReattached() throws {
        let hosts = ["p1", "p2", "p3", "p4"]
        let lab = try TestLab(spec: """
            defaults:
              os: ubuntu20.04
              packages: {st2: 3.7.1-1, st2web: 3.7.1-1}
              available: [3.7.1-1, 3.8.1-1]
              faults:
                tool_slow: [{match: "^apt-get install -y", delay: 2s}]
                cut: [{match: "apt-get install -y", delay: 500ms}]
            hosts: [\(hosts.map { "{name: \($0)}" }.joined(separator: ", "))]
            """)
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--no-backup", "--batch", "4",
                              "--json", "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        #expect(try json(result)["outcome"] as? String == "succeeded")
        let shown = try json(try run([Self.flotilla, "show", "--format", "json", "--state-dir", state]))
        var starts: [String] = [], ends: [String] = []
        for host in hosts {
            #expect(try lab.packages(host)["st2"] == "3.8.1-1")
            let sent = try Self.records(lab, host, "ssh", "DEBIAN_FRONTEND=noninteractive apt-get install")
            #expect(sent.count == 1 && sent.first?["fault"] as? String == "cut", "\(host): one start, cut: \(sent)")
            let ran = try Self.records(lab, host, "sim", "apt-get install -y")
            #expect(ran.count == 1 && ran.first?["exit_status"] as? Int == 0, "\(host): \(ran)")
            starts += try Self.records(lab, host, "started", "apt-get install -y").compactMap { $0["start"] as? String }
            ends += ran.compactMap { $0["end"] as? String }
            let step = Self.steps(shown, host)["upgrade packages"]
            #expect(step?["status"] as? String == "succeeded" && step?["attempts"] as? Int == 1 && step?["reattached"] as? Int == 1, "\(host): \(step ?? [:])")
        }
        // (The timestamps are fixed-width UTC, so they sort as text.)
        #expect(starts.count == 4 && starts.max()! < ends.min()!, "the four upgrades ran at once: started \(starts), ended \(ends)")
    }

    /// A cut during a cluster's Mistral `upgrade head` (a once-per-cluster step): the host
    /// running it re-attaches, the step ran once in the cluster, the other host skipped it.
    @Test func aCutDuringAClustersDatabaseStepIsReattached() throws {
        let hosts = ["e1", "e2"]
        let lab = try TestLab(spec: Self.mistralSpec("[{name: e1, st2_cluster: east}, {name: e2, st2_cluster: east}]", delay: "2s",
                                                     extraFaults: "    cut: [{match: \"upgrade head\", delay: 500ms}]"))
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.0.1", "--no-backup", "--json", "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        #expect(try json(result)["outcome"] as? String == "succeeded")
        let shown = try json(try run([Self.flotilla, "show", "--format", "json", "--state-dir", state]))
        let tool = Self.databaseTools[1]
        let runs = try hosts.map { try Self.records(lab, $0, "sim", tool) }
        #expect(runs.map(\.count).sorted() == [0, 1], "once in the cluster: \(runs)")
        let (runner, other) = runs[0].isEmpty ? (hosts[1], hosts[0]) : (hosts[0], hosts[1])
        #expect(runs.joined().first?["exit_status"] as? Int == 0)
        #expect(try Self.records(lab, runner, "ssh", "/opt/stackstorm/mistral/bin/\(tool)").map { $0["fault"] as? String } == ["cut"])
        let step = Self.steps(shown, runner)["mistral-db-manage upgrade head"]
        #expect(step?["status"] as? String == "succeeded" && step?["attempts"] as? Int == 1 && step?["reattached"] as? Int == 1, "\(step ?? [:])")
        #expect(Self.steps(shown, other)["mistral-db-manage upgrade head"]?["status"] as? String == "skipped")
        for host in hosts { #expect(try lab.packages(host)["st2"] == "3.0.1-1") }
    }

    // MARK: the last step removes the run's records

    /// The host's last detached step (not under become) removes the run's records over its
    /// own channel once the journal holds its end: no cleanup command follows it. Under
    /// become (root's records, an earlier step here) the cleanup command still does.
    @Test func theLastStepRemovesTheRunsRecordsAndNoCleanupCommandFollows() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.8.1-1}}
            hosts:
              - {name: r1}
            """)
        let book = try lab.write("book.yaml", """
            steps:
              - {name: as-root, run: "echo root"}
              - {name: mine, run: "echo mine", become: false}
              - {name: last, run: "id -un", become: false}
            """)
        let result = try run([Self.flotilla, "run", "-i", lab.path("inventory.ini"), book.path, "--json", "--state-dir", lab.dir.appendingPathComponent("state").path])
        #expect(result.status == 0, "\(result.stderr.suffix(2000))")
        #expect(Self.steps(try json(result), "r1")["last"]?["stdout_tail"] as? String == "st2ops\n")
        let log = try lab.commandLog("r1")
        let last = try #require(log.first { ($0["argv"] as? [String])?.first == "id -un" })
        #expect(last["exit_status"] as? Int == Int(DetachedStep.removedExit), "the last step's line removed the records: \(last)")
        let protocolLines = log.filter { $0["kind"] as? String == "detached" }.compactMap { ($0["argv"] as? [String])?.first }
        #expect(protocolLines.count == 1 && protocolLines[0].hasPrefix("sudo "), "only root's records needed a cleanup command: \(protocolLines.map { $0.prefix(60) })")
        #expect(try lab.asRoot("r1", "ls -A ~st2ops/.flotilla/steps ~root/.flotilla/steps").stdout.split(separator: "\n").allSatisfy { $0.hasSuffix(":") },
                "both homes' records are gone")
    }

    /// A controller that dies while the last step's line waits for its answer leaves the
    /// records: `resume` re-attaches, records the step without running it again, and the
    /// records are gone after it.
    @Test func aControllerThatDiesBeforeItAnswersLeavesTheRecordsToResume() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.8.1-1}}
            hosts:
              - {name: r2}
            """)
        let step = "while [ ! -e $HOME/go ]; do sleep 0.05; done; echo ran >>$HOME/marks; echo last"
        let book = try lab.write("book.yaml", """
            steps:
              - {name: first, run: "echo first", become: false}
              - {name: last, run: "\(step)", become: false}
            """)
        let state = lab.dir.appendingPathComponent("state").path
        let controller = try Background([Self.flotilla, "run", "-i", lab.path("inventory.ini"), book.path, "--state-dir", state],
                                        log: lab.dir.appendingPathComponent("controller.log"))
        let records = "~st2ops/.flotilla/steps/*/r2.1.1"
        let started = try lab.waitFor(seconds: 60) { try lab.asRoot("r2", "test -e \(records).cmd").status == 0 || controller.exited }
        try #require(started && !controller.exited, "\(controller.output.suffix(2000))")
        // Stopped, the controller cannot answer: the step ends, its line sends the output and waits.
        controller.signal(SIGSTOP)
        #expect(try lab.asRoot("r2", "touch ~st2ops/go").status == 0)
        #expect(try lab.waitFor(seconds: 30) { try lab.asRoot("r2", "test -s \(records).exit").status == 0 })
        controller.signal(SIGKILL)
        _ = controller.wait()
        // The line ends with the connection, without an answer: the step's own status, the records kept.
        let ended = try lab.waitFor(seconds: 30) { try !Self.records(lab, "r2", "ssh", step).isEmpty }
        try #require(ended)
        #expect(try Self.records(lab, "r2", "ssh", step).first?["exit_status"] as? Int == 0)
        #expect(try lab.asRoot("r2", "ls \(records).cmd \(records).exit").status == 0)

        let resumed = try run([Self.flotilla, "resume", "--json", "--state-dir", state])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(2000))")
        let last = Self.steps(try json(resumed), "r2")["last"]
        #expect(last?["status"] as? String == "succeeded" && last?["attempts"] as? Int == 1 && last?["reattached"] as? Int == 1, "\(last ?? [:])")
        #expect(last?["stdout_tail"] as? String == "last\n")
        #expect(try lab.asRoot("r2", "cat ~st2ops/marks").stdout == "ran\n", "it ran once")
        #expect(try lab.asRoot("r2", "ls -A ~st2ops/.flotilla/steps | wc -l").stdout == "0\n")
    }

    // MARK: runs --prune

    /// A run loses a host mid-step for good (its sshd stopped): the run finishes without
    /// it, leaving that host's step records. `runs --prune` removes the records of the
    /// steps that ended and keeps the one still running; once that step has ended, the
    /// host keeps its records for `resume --retry-failed`.
    @Test func pruneRemovesWhatAFinishedRunLeftAndKeepsARunningStep() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.8.1-1}}
            hosts:
              - {name: k1, vars: {hold: "no"}}
              - {name: k2, vars: {hold: "yes"}}
            """)
        let book = try lab.write("book.yaml", """
            steps:
              - {name: quick, run: "echo quick"}
              - {name: gate, run: "rm -f $HOME/gate; mkfifo $HOME/gate"}
              - {name: long, run: "if [ {{ hold }} = yes ]; then read x <$HOME/gate; fi; echo released"}
            """)
        let state = lab.dir.appendingPathComponent("state").path
        let controller = try Background([Self.flotilla, "run", "-i", lab.path("inventory.ini"), book.path, "--max-fail", "1", "--connect-timeout", "1",
                                         "--state-dir", state], log: lab.dir.appendingPathComponent("controller.log"))
        // k2's long step waits on its gate: cut k2 off for good while it runs.
        let waiting = try lab.waitFor(seconds: 60) { try Self.records(lab, "k2", "ssh", "rm -f $HOME/gate").contains { $0["exit_status"] as? Int == 0 } }
        try #require(waiting, "\(controller.output.suffix(2000))")
        let shownRunning = lab.waitFor(seconds: 30) {
            guard let report = try? json(try run([Self.flotilla, "show", "--state-dir", state, "--json"])) else { return false }
            return Self.steps(report, "k2")["long"]?["status"] as? String == "running"
        }
        try #require(shownRunning)
        let stopped = try lab.cut("k2")
        #expect(controller.exitCode == 1, "completed with k2 failed: \(controller.output.suffix(2000))")
        lab.restore(stopped)

        let runID = try #require(try FileManager.default.contentsOfDirectory(atPath: state + "/runs").first)
        // One `.cmd` per step record (DetachedStep's layout).
        let records = "cd ~/.flotilla/steps/\(DetachedStep.fileName(runID)) && ls *.cmd"
        #expect(try lab.asRoot("k1", "ls -A ~/.flotilla/steps | wc -l").stdout == "0\n", "k1 finished: its records went with it")
        let before = try lab.asRoot("k2", records).stdout.split(separator: "\n")
        #expect(before.count == 3, "quick, gate and long: \(before)")

        let prune = try run([Self.flotilla, "runs", "--prune", runID, "--state-dir", state])
        #expect(prune.status == 0, "\(prune.stdout)\(prune.stderr)")
        #expect(prune.stdout.contains("k2: removed the step records; kept, still running: 'long'"), "\(prune.stdout)")
        let after = try lab.asRoot("k2", records).stdout.split(separator: "\n")
        #expect(after.count == 1 && before.contains(after[0]), "only the running step's record is left: \(after)")

        // The step ends; its record now tells `resume --retry-failed` how: prune keeps it.
        // (Until the host has it ended, a prune finds it running, as above.)
        #expect(try lab.asRoot("k2", "echo go >$HOME/gate").status == 0)
        var again = try run([Self.flotilla, "runs", "--prune", "--state-dir", state])
        #expect(try lab.waitFor(seconds: 20) {
            again = try run([Self.flotilla, "runs", "--prune", "--state-dir", state])
            return !again.stdout.contains("still running: 'long'")
        })
        #expect(again.status == 0 && again.stdout.contains("k2: kept the step records: 'long' ended on the host"), "\(again.stdout)\(again.stderr)")
        #expect(try lab.asRoot("k2", records).stdout.split(separator: "\n") == after)
        let resumed = try run([Self.flotilla, "resume", "--retry-failed", "--json", "--state-dir", state])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(2000))")
        let long = Self.steps(try json(resumed), "k2")["long"]
        #expect(long?["attempts"] as? Int == 1 && long?["stdout_tail"] as? String == "released\n", "\(long ?? [:])")
        #expect(try lab.asRoot("k2", "ls -A ~/.flotilla/steps | wc -l").stdout == "0\n")

        let unfinished = try run([Self.flotilla, "runs", "--prune", "nope", "--state-dir", state])
        #expect(unfinished.status == 64, "\(unfinished.stderr)")
    }
}
