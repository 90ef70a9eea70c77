import Foundation
import Testing
@testable import FlotillaCore
@testable import FlotillaSSH

/// What the commands decide that is not parsing or printing: which error exits with which
/// status, where the inventory comes from, what `resume` is told to select and connect
/// with, the exit status of each view, the hosts of a new run. No SSH.
@Suite struct CommandLogicTests {
    // MARK: Errors and exit statuses

    @Test func flotillasErrorsMapToTheirExitStatus() {
        let cases: [(any Error, FlotillaCore.ExitStatus, String)] = [
            (InventoryError(SourceLocation(file: "hosts", line: 3), "bad range"), .dataError, "hosts:3: bad range"),
            (LockError(path: "/s/lock", holders: [], hosts: [], message: "held by pid 7"), .locked, "held by pid 7"),
            (JournalError(.unknownRun, "no run 20261121-153000-ab12"), .usage, "no run 20261121-153000-ab12"),
            (JournalError(.unsafePath, path: "/s", "unsafe"), .usage, "unsafe"),
            (JournalError(.invalidTransition, "not a run id"), .usage, "not a run id"),
            (JournalError(.io, path: "/s/journal", "disk full"), .software, "disk full"),
            (RolloutFlags.FlagError("--max-fail 'x' is not a number"), .usage, "--max-fail 'x' is not a number"),
            (ResumePlan.Refusal(message: "the run succeeded"), .usage, "the run succeeded"),
            (RunStartError(message: "cannot create the run's journal"), .software, "cannot create the run's journal"),
            (MigrationCatalog.LoadError(file: "c.yaml", message: "line 2: bad"), .dataError, "bad migration catalog: "),
            (PrivateFiles.WriteError("/r.html", "Permission denied"), .software, "cannot write /r.html: Permission denied"),
            (FlotillaError(.software, "cannot read the journal back"), .software, "cannot read the journal back"),
        ]
        for (error, status, message) in cases {
            let mapped = FlotillaError(mapping: error)
            #expect(mapped?.status == status, "\(error)")
            #expect(mapped?.message.hasPrefix(message) == true, "\(mapped?.message ?? "nil")")
        }
        struct Unexpected: Error {}
        #expect(FlotillaError(mapping: Unexpected()) == nil, "left to the executable: an internal error (70)")
    }

    @Test func viewsGiveTheExitStatusOfSpec() {
        let reached = HostFactsResult(name: "a", address: "a", unreachable: nil, facts: HostFacts(unreadable: "no st2"))
        let down = HostFactsResult(name: "b", address: "b", unreachable: "connect: refused", facts: HostFacts(unreadable: "unreachable"))
        #expect(FactsView.exitStatus([down]) == .unavailable)
        #expect(FactsView.exitStatus([]) == .unavailable)
        #expect(FactsView.exitStatus([reached, down]) == .someHostsFailed)
        #expect(FactsView.exitStatus([reached]) == .someHostsFailed, "a fact unreadable")
        #expect(FleetReport(generatedAt: "now", results: [down], planner: nil).exitStatus == .unavailable)
        #expect(FleetReport(generatedAt: "now", results: [reached, down], planner: nil).exitStatus == .success)

        let target = StackStormVersion.upgradeTarget("3.8.1")!
        func view(_ actions: [HostPlan.Action]) -> PlanView {
            PlanView(target: target, entries: actions.enumerated().map { PlanView.Entry(name: "h\($0)", address: "h", plan: HostPlan(action: $1)) },
                     spec: nil, canary: nil)
        }
        #expect(view([.upgrade, .skip]).exitStatus == .success)
        #expect(view([.upgrade, .refuse]).exitStatus == .someHostsFailed)
        #expect(view([.upgrade, .unreachable]).exitStatus == .someHostsFailed)
        #expect(view([.unreachable, .unreachable]).exitStatus == .unavailable)
    }

    @Test func fanOutExitStatus() {
        var ok = HostOutcome(name: "a", address: "a")
        ok.connected = true
        ok.exitStatus = 0
        var failed = ok
        failed.exitStatus = 2
        let down = HostOutcome(name: "c", address: "c")
        #expect(FanOut(outcomes: [ok], elapsed: .zero).exitStatus == .success)
        #expect(FanOut(outcomes: [ok, failed], elapsed: .zero).exitStatus == .someHostsFailed)
        #expect(FanOut(outcomes: [ok, down], elapsed: .zero).exitStatus == .someHostsFailed)
        #expect(FanOut(outcomes: [down], elapsed: .zero).exitStatus == .unavailable)
        #expect(FanOut(outcomes: [], elapsed: .zero).exitStatus == .unavailable)
        let fanOut = FanOut(outcomes: [ok, down], elapsed: .milliseconds(1500))
        #expect(fanOut.output(json: false, grouped: true, hostKeyCheck: .strict).hasSuffix("2 hosts: 1 ok, 0 failed, 1 unreachable in 1.50 s\n"))
        #expect(fanOut.output(json: false, grouped: false, hostKeyCheck: .strict).contains("\nc  FAILED  exit status ?\n"))
        #expect(fanOut.output(json: false, grouped: true, hostKeyCheck: .strict).hasPrefix("==== a (1 host) exit 0 ====\n"))
        #expect(fanOut.output(json: true, grouped: true, hostKeyCheck: .off).contains("\"host_key_check\": \"off\""))
    }

    // MARK: Inventory sources and the selection

    @Test func inventorySourcesFromTheEnvironment() {
        #expect(Inventory.sources(environment: ["FLOTILLA_INVENTORY": "a.ini,b/", "ANSIBLE_INVENTORY": "c"]) == ["a.ini", "b/"])
        #expect(Inventory.sources(environment: ["FLOTILLA_INVENTORY": "", "ANSIBLE_INVENTORY": "c"]) == ["c"])
        #expect(Inventory.sources(environment: [:]) == nil)
        let missing = "/nonexistent-\(UUID().uuidString)"
        #expect(Inventory.defaultSources(environment: [:], fallback: missing) == nil)
        #expect(Inventory.defaultSources(environment: ["ANSIBLE_INVENTORY": "c"], fallback: missing) == ["c"])
        let files = try! TemporaryFiles(["hosts": "st2-01\n"])
        #expect(Inventory.defaultSources(environment: [:], fallback: files.path("hosts")) == [files.path("hosts")])
    }

    @Test func selectionWarnsBeforeResolvingSettings() throws {
        let files = try TemporaryFiles([
            "hosts": "[st2]\nst2-01 ansible_host=10.0.0.1 ansible_port=2222\nst2-02 ansible_port=nope\nweb-01\n",
            "ssh_config": "Match exec true\n  User ignored\n",
        ])
        var warnings: [String] = []
        let selected = try HostSelection.load(sources: [files.path("hosts")], limit: "st2-01", sshConfig: files.path("ssh_config"),
                                              localUser: "ops", home: files.path(), warn: { warnings.append($0) })
        #expect(selected.hosts.map(\.name) == ["st2-01"])
        #expect(selected.settings.map(\.address) == ["10.0.0.1"])
        #expect(selected.settings.map(\.port) == [2222])
        #expect(selected.settings.map(\.user) == ["ops"])
        #expect(warnings.count == 1 && warnings[0].contains("Match exec true is not supported"), "\(warnings)")
        // A bad port is the selection's error; the warnings came before it.
        warnings = []
        #expect(throws: InventoryError.self) {
            try HostSelection.load(sources: [files.path("hosts")], limit: "st2", sshConfig: files.path("ssh_config"), localUser: "ops",
                                   home: files.path(), warn: { warnings.append($0) })
        }
        #expect(warnings.count == 1)
    }

    // MARK: What resume is told

    @Test func resumeArgumentsAreAbsoluteAndHoldNoSecret() {
        let cwd = FileManager.default.currentDirectoryPath
        #expect(RunOptions.selectionArguments(sources: ["inv/hosts.ini", "/etc/ansible/hosts"], limit: "st2:!st2-03", sshConfig: "~/.ssh/config")
                == ["-i", "\(cwd)/inv/hosts.ini", "-i", "/etc/ansible/hosts", "--limit", "st2:!st2-03", "--ssh-config", "~/.ssh/config"])
        #expect(RunOptions.selectionArguments(sources: ["/a/./b"], limit: nil, sshConfig: "none") == ["-i", "/a/b", "--ssh-config", "none"])
        #expect(RunOptions.connectionArguments(hostKeyCheck: "strict", connectTimeout: 10, knownHosts: nil, keyPassphraseFile: nil, askPass: false)
                == ["--host-key-check", "strict", "--connect-timeout", "10.0"])
        #expect(RunOptions.connectionArguments(hostKeyCheck: "accept-new", connectTimeout: 2.5, knownHosts: "kh", keyPassphraseFile: "/p/../pass",
                                               askPass: true)
                == ["--host-key-check", "accept-new", "--connect-timeout", "2.5", "--known-hosts", "\(cwd)/kh",
                    "--key-passphrase-file", "/pass", "--ask-pass"])
    }

    // MARK: Plans and a new run

    @Test func releasesToUpgradeTo() {
        #expect(StackStormVersion.upgradeTarget("3.8.1")?.releaseString == "3.8.1")
        #expect(StackStormVersion.upgradeTarget("3.8")?.releaseString == "3.8.0")
        #expect(StackStormVersion.upgradeTarget("3") == nil)
        #expect(StackStormVersion.upgradeTarget("3.8.1-1") == nil)
        #expect(StackStormVersion.upgradeTarget("latest") == nil)
        let options = UpgradePlanner.Options(target: StackStormVersion.upgradeTarget("3.8.1")!, withOptionalMigrations: true, backup: false,
                                             minimumFreeMiB: 2)
        #expect(options.minimumFreeKiB == 2048)
        #expect(options.withOptionalMigrations && !options.backup)
    }

    @Test func reportPlansOnlyReachableHosts() throws {
        let catalog = try MigrationCatalog.bundled()
        let planner = UpgradePlanner(catalog: catalog, options: UpgradePlanner.Options(target: StackStormVersion.upgradeTarget("3.8.1")!))
        let reached = HostFactsResult(name: "a", address: "a", unreachable: nil, facts: HostFacts(unreadable: "no st2"))
        let down = HostFactsResult(name: "b", address: "b", unreachable: "connect: refused", facts: HostFacts(unreadable: "unreachable"))
        let report = FleetReport(generatedAt: "now", results: [reached, down], planner: planner)
        #expect(Set(report.plans.keys) == ["a"])
        #expect(report.target?.releaseString == "3.8.1")
        #expect(FleetReport(generatedAt: "now", results: [reached], planner: nil).plans.isEmpty)
    }

    @Test func targetsBecomeRunHostsInTheirOrder() throws {
        let files = try TemporaryFiles([
            "hosts": "st2-01 ansible_host=10.0.0.1 st2_cluster=blue zone=a ansible_become=true\nst2-02 ansible_host=10.0.0.2 zone=b\n",
            "book.yaml": "name: rotate\nsteps:\n  - run: logrotate -f {{ zone }}\n",
        ])
        let selected = try HostSelection.load(sources: [files.path("hosts")], limit: nil, sshConfig: "none", localUser: "ops",
                                              home: files.path(), warn: { _ in })
        let policy = ConnectionPolicy(hostKeyCheck: .strict, knownHosts: nil, connectTimeout: .seconds(1), localUser: "ops", home: files.path())
        let targets = Targets(selected, policy: policy, secrets: Secrets())
        var options = try RunOptions(flags: ["max-per": "zone=1", "health": "true"])
        options.forceStop = true
        let plans = [HostPlan(action: .upgrade, fromVersion: "3.7.1-1", toVersion: "3.8.1-1", steps: [RunBuilderTests.step]),
                     HostPlan(action: .refuse, reason: "crossing 3.3 removes Mistral")]
        let upgrade = targets.upgradeHosts(plans: plans, target: "3.8.1", options: options)
        #expect(upgrade.map(\.name) == ["st2-01", "st2-02"])
        #expect(upgrade.map(\.address) == ["10.0.0.1", "10.0.0.2"])
        #expect(upgrade[0].groups == ["st2_cluster": "blue", "zone": "a"])
        #expect(upgrade[0].steps.map(\.name) == ["stop", "health check"])
        #expect(upgrade[1].skip == SkipCause(.refused, "crossing 3.3 removes Mistral"))

        let book = try Runbook.load(path: files.path("book.yaml"))
        let runbook = try targets.runbookHosts(book, options: options)
        #expect(runbook.map(\.steps).map { $0.map(\.command) } == [["logrotate -f a", "true"], ["logrotate -f b", "true"]])
        #expect(runbook.map { $0.steps[0].become } == [true, false], "become as each host's inventory says")
        #expect(runbook.map(\.groups) == [["zone": "a"], ["zone": "b"]])

        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let record = RunBuilder.record(kind: .runbook, name: book.name, target: nil, hosts: runbook, options: options, now: now)
        #expect(record.id.hasPrefix("20270115-080000-"))
        #expect(record.createdAt == now)
        #expect(record.batches == [["st2-01", "st2-02"]])
    }

    @Test func startNoteCountsTheHostsNotStarted() {
        let hosts = [RunHost(name: "a", address: "a", batch: 0, steps: []),
                     RunHost(name: "b", address: "b", batch: nil, steps: [], skip: SkipCause(.refused, "no"))]
        let record = RunRecord(id: "r1", kind: .runbook, targetVersion: nil, createdAt: Date(timeIntervalSince1970: 0), hosts: hosts, batches: [["a"]],
                               options: RunOptions())
        #expect(RunProgress.startNote(record, journal: "/s/runs/r1/journal.db")
                == "run r1: 1 host in 1 batch, 1 not started (skipped, refused or unreachable); journal /s/runs/r1/journal.db")
        let two = RunRecord(id: "r2", kind: .runbook, targetVersion: nil, createdAt: Date(timeIntervalSince1970: 0), hosts: [hosts[0], hosts[0]],
                            batches: [["a"], ["a"]], options: RunOptions())
        #expect(RunProgress.startNote(two, journal: "j") == "run r2: 2 hosts in 2 batches; journal j")
    }
}
