import Foundation
import Testing
@testable import FlotillaCore
@testable import FlotillaSSH

/// What the run commands decide before any host is reached, out of the executable:
/// `runs --prune` choosing runs and summing up, `resume`'s setup, a new run's journal, a
/// roll-over's hosts and record, `ctl` without a controller, `show`'s formats, the rolling
/// flags by value, `--limit` completion. No SSH: journals in a state dir of their own.
@Suite struct CommandSetupTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    /// An owner-only state dir under `files` (removed with it).
    static func stateDir(_ files: TemporaryFiles) throws -> URL {
        let url = files.root.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return url
    }

    static func record(_ id: String, hosts: [String] = ["a", "b"]) -> RunRecord {
        RunRecord(id: id, kind: .runbook, targetVersion: nil, createdAt: t0,
                  hosts: hosts.map { RunHost(name: $0, address: "10.0.0.1", batch: 0, steps: [RunStep(name: "s", command: "true")]) },
                  batches: [hosts], options: RunOptions())
    }

    /// A run journaled in `stateDir`, left in `state`.
    @discardableResult
    static func run(_ id: String, _ state: RunState, in stateDir: URL) throws -> Journal {
        let journal = try Journal.create(stateDir: stateDir, run: record(id))
        try journal.runStatus(state: state, haltReason: nil, at: t0)
        return journal
    }

    // MARK: runs --prune

    @Test func pruneSummaryCountsHostsAndGivesTheExitStatus() {
        typealias Outcome = StepRecordPruner.Outcome
        let pruned = Outcome(host: "a")
        var kept = Outcome(host: "b", problem: "'s' ended on the host after the run lost it")
        kept.kept = ["t"]
        let failed = Outcome(host: "c", problem: "connect: refused", failed: true)
        #expect(StepRecordPruner.summary(runs: 0, []) == ("0 finished runs: pruned 0 hosts", nil))
        let some = StepRecordPruner.summary(runs: 2, [pruned, kept, failed])
        #expect(some.line == "2 finished runs: pruned 1 host, 1 left for resume, 1 failed")
        #expect(some.failure == .someHostsFailed)
        #expect(StepRecordPruner.summary(runs: 1, [failed]) == ("1 finished run: pruned 0 hosts, 1 failed", .unavailable))
        #expect(StepRecordPruner.summary(runs: 1, [pruned, pruned]) == ("1 finished run: pruned 2 hosts", nil))

        var running = pruned
        running.kept = ["upgrade", "migrate"]
        #expect(running.line(run: "r") == "r a: removed the step records; kept, still running: 'upgrade', 'migrate'")
        #expect(kept.line(run: "r") == "r b: kept the step records: 's' ended on the host after the run lost it")
        #expect(failed.line(run: "r") == "r c: FAILED: connect: refused")
    }

    @Test func pruneReadsOnlyTheStateDirsOwnJournal() async throws {
        let files = try TemporaryFiles([:])
        let stateDir = try Self.stateDir(files)
        for (journal, message) in [
            ("postgresql://flotilla@127.0.0.1:5432/runs", "--prune reads the state dir's own journal; it does not go with a PostgreSQL journal yet"),
            ("mysql://db", "--journal 'mysql://db' is not a journal address"),
        ] {
            let error = await #expect(throws: UsageError.self) {
                _ = try await StepRecordPruner.prune(stateDir: stateDir, journal: journal, runID: nil, targets: { _ in throw UsageError("unused") },
                                                     print: { _ in }, note: { _ in })
            }
            #expect(error?.message.hasPrefix(message) == true, "\(error?.message ?? "")")
        }
    }

    @Test func pruneLeavesRunsNotFinishedAloneAndReachesNoHostWithoutRecords() async throws {
        let files = try TemporaryFiles([:])
        let stateDir = try Self.stateDir(files)
        try Self.run("20270115-080000-aaaa", .succeeded, in: stateDir)
        try Self.run("20270115-090000-bbbb", .stopped, in: stateDir)
        var printed: [String] = [], noted: [String] = []
        let summary = try await StepRecordPruner.prune(stateDir: stateDir, journal: nil, runID: nil, targets: { record in
            Issue.record("\(record.id): no host has records, so none is reached")
            throw UsageError("unreachable")
        }, print: { printed.append($0) }, note: { noted.append($0) })
        #expect(noted == ["run 20270115-090000-bbbb: stopped, not finished; left alone"])
        #expect(printed == ["20270115-080000-aaaa: no host has step records of this run"])
        #expect(summary.line == "1 finished run: pruned 0 hosts")
        #expect(summary.failure == nil)

        let error = #expect(throws: FlotillaError.self) {
            _ = try StepRecordPruner.runs(stateDir: stateDir, runID: "20270115-090000-bbbb", leftAlone: { _ in })
        }
        #expect(error?.status == .usage)
        #expect(error?.message == "run 20270115-090000-bbbb is stopped, not finished: 'flotilla resume 20270115-090000-bbbb' "
                + "reads its step records on the hosts; resume it first")
    }

    // MARK: resume

    @Test func resumeSetupPlansRecordsAndTellsTheOperator() throws {
        let files = try TemporaryFiles([:])
        let stateDir = try Self.stateDir(files)
        let journal = try Self.run("20270115-080000-cccc", .stopped, in: stateDir)
        try journal.hostStatus(host: "a", status: .succeeded, error: nil, at: Self.t0)

        #expect(throws: RolloutFlags.FlagError.self) {
            _ = try RunResumption(journal, retryFailed: false, maxFail: "many", rerunUnknown: false)
        }
        let resumption = try RunResumption(journal, retryFailed: false, maxFail: "2", rerunUnknown: false)
        #expect(resumption.plan.record.options.maxFail == .count(2))
        #expect(resumption.plan.preset == [0: .succeeded])
        #expect(resumption.note == "resuming run 20270115-080000-cccc (stopped); no step was in flight")
        #expect(try resumption.knownFailures().isEmpty, "a runbook run is judged against no catalog")
        try resumption.record(in: journal)
        let events = try journal.load().events.filter { $0.kind == "resume" }
        #expect(events.map(\.message) == ["resumed by pid \(getpid())"])
    }

    // MARK: A new run

    @Test func aRunIsSharedOnlyThroughAPostgreSQLJournal() throws {
        let files = try TemporaryFiles(["hosts": "a ansible_host=10.0.0.1\nb ansible_host=10.0.0.2\n"])
        let stateDir = try Self.stateDir(files)
        let driver = RunDriver(targets: try Self.targets(files), locks: try RunLocks(stateDir: stateDir), location: .stateDir(stateDir))
        var record = Self.record("20270115-080000-dddd")
        let error = #expect(throws: UsageError.self) { _ = try driver.createJournal(&record, sharedName: "window-1") }
        #expect(error?.message == "--run window-1: a run is shared through a PostgreSQL journal (--journal postgresql://USER@HOST:PORT/DB)")
        #expect(record.id == "20270115-080000-dddd")
        let journal = try driver.createJournal(&record, sharedName: nil)
        #expect(journal.runID == record.id)
        #expect(try journal.load().state == .created)
        #expect(driver.journalFix == "free the space or fix the state dir")
    }

    static func targets(_ files: TemporaryFiles) throws -> Targets {
        let selected = try HostSelection.load(sources: [files.path("hosts")], limit: nil, sshConfig: "none", localUser: "ops",
                                              home: files.path(), warn: { _ in })
        let policy = ConnectionPolicy(hostKeyCheck: .strict, knownHosts: nil, connectTimeout: .seconds(1), localUser: "ops", home: files.path())
        return Targets(selected, policy: policy, secrets: Secrets())
    }

    // MARK: rollover

    @Test func rolloverTakesOldThenNewAndOneHostAtATime() throws {
        let files = try TemporaryFiles(["hosts": "st2-old ansible_host=10.0.0.1\nst2-new ansible_host=10.0.0.2\nother ansible_host=10.0.0.3\n"])
        let all = try Self.targets(files)
        let error = #expect(throws: FlotillaError.self) { _ = try RolloverRun.targets(all, from: "st2-old", to: "st2-gone") }
        #expect(error?.status == .usage)
        #expect(error?.message == "st2-gone is not a host of the inventory")
        let targets = try RolloverRun.targets(all, from: "st2-old", to: "st2-new")
        #expect(targets.hosts.map(\.name) == ["st2-old", "st2-new"])

        #expect(throws: RolloutFlags.FlagError.self) { _ = try RolloverRun.options(stepTimeout: "soon") }
        let options = try RolloverRun.options(stepTimeout: "5m")
        #expect(options.batch?.description == "1")
        #expect(options.maxFail == .count(0))
        #expect(options.stepTimeout == 300)
        let plan = RolloverPlan.plan(old: RolloverSide(host: "st2-old", version: StackStormVersion("3.7.1"), packs: ["core", "acme"]),
                                     new: RolloverSide(host: "st2-new", version: StackStormVersion("3.8.1"), packs: ["core"]))
        #expect(plan.refusal == nil)
        let record = RolloverRun.record(plan, targets: targets, catalog: try MigrationCatalog.bundled(), options: options, now: Self.t0)
        #expect(record.kind == .rollover)
        #expect(record.name == "rollover st2-old -> st2-new")
        #expect(record.targetVersion == "3.8.1")
        #expect(record.hosts.map(\.name) == ["st2-old", "st2-new"])
        #expect(record.hosts.map(\.address) == ["10.0.0.1", "10.0.0.2"])
        #expect(record.hosts[0].fromVersion == "3.7.1")
        #expect(!record.hosts[1].steps.isEmpty)
        #expect(record.createdAt == Self.t0)
    }

    // MARK: ctl, show, flags, completion

    @Test func ctlWithoutAControllerIsAUsageError() throws {
        let files = try TemporaryFiles([:])
        let stateDir = try Self.stateDir(files)
        let error = #expect(throws: UsageError.self) { _ = try ControlRequest.send(["pause"], stateDir: stateDir, location: .stateDir(stateDir)) }
        #expect(error?.message == "no run is in progress in \(stateDir.path) (nothing listens on \(stateDir.path)/ctl.sock)")
    }

    @Test func showRendersEachFormatAsItsRenderer() throws {
        let files = try TemporaryFiles([:])
        let stateDir = try Self.stateDir(files)
        let state = try Self.run("20270115-080000-eeee", .succeeded, in: stateDir).load()
        #expect(RunReports.rendered(state, .json) == RunResult.json(state).rendered() + "\n")
        #expect(RunReports.rendered(state, .table) == RunReports.table(state))
        #expect(RunReports.rendered(state, .junit) == RunReports.junit(state))
        #expect(RunReports.rendered(state, .markdown) == RunReports.markdown(state))
        #expect(RunReports.Format.allCases.map(\.rawValue) == ["table", "json", "junit", "html", "markdown"])
    }

    @Test func rollingFlagsByValueAreCheckedAsTyped() throws {
        let typed = try RunOptions(batch: "1,5,25%", canary: 1, maxParallel: 2, maxPer: ["zone=1", "rack=2"], maxFail: "10%", maxFailBatch: "50%",
                                   unreachableCounts: "no", onHalt: "stop", pause: "30s", confirm: true, window: "01:00-05:00", health: "true",
                                   healthyFor: "10s", healthDeadline: "1m", stepTimeout: "2m")
        let flags = try RunOptions(flags: ["batch": "1,5,25%", "canary": "1", "max-parallel": "2", "max-per": "zone=1,rack=2", "max-fail": "10%",
                                           "max-fail-batch": "50%", "unreachable-counts": "no", "on-halt": "stop", "pause": "30s", "confirm": "yes",
                                           "window": "01:00-05:00", "health": "true", "healthy-for": "10s", "health-deadline": "1m", "step-timeout": "2m"])
        #expect(typed == flags)
        #expect(try RunOptions(batch: nil, canary: nil, maxParallel: nil, maxPer: []) == RunOptions())
        let error = #expect(throws: RolloutFlags.FlagError.self) { _ = try RunOptions(batch: nil, canary: 0, maxParallel: nil, maxPer: []) }
        #expect(error?.message == "--canary must be at least 1")
    }

    @Test func limitCompletionReadsTheInventoryTheCommandLineNames() throws {
        let files = try TemporaryFiles(["hosts": "[st2]\nst2-01\nst2-02\n[db]\ndb-01\n"])
        let path = files.path("hosts")
        #expect(Inventory.completions(commandLine: ["flotilla", "ping", "-i", path, "--limit"], prefix: "st", environment: [:]).sorted()
                == ["st2", "st2-01", "st2-02"])
        #expect(Inventory.completions(commandLine: ["flotilla", "--inventory=\(path)"], prefix: "db:!d", environment: [:]).sorted()
                == ["db:!db", "db:!db-01"])
        #expect(Inventory.completions(commandLine: ["flotilla"], prefix: "d", environment: ["FLOTILLA_INVENTORY": path]).sorted() == ["db", "db-01"])
        #expect(Inventory.completions(commandLine: ["flotilla"], prefix: "", environment: [:]).isEmpty, "no inventory: nothing")
        #expect(Inventory.completions(commandLine: ["-i", files.path("missing")], prefix: "", environment: [:]).isEmpty, "unreadable: nothing, quietly")
    }
}
