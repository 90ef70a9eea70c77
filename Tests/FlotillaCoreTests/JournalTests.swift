import Foundation
import PostgresTestSupport
import Testing
@testable import FlotillaCore

/// The journals the transition tests run against: the state dir's SQLite file, and a
/// PostgreSQL database of the server the tests start (SPEC §8.6).
enum JournalBackend: String, CaseIterable, Sendable {
    case sqlite, postgresql
}

/// Where one test's runs live: its scratch state dir, or a new database of the test
/// server. `name` is what the journal's messages call it.
struct JournalPlace {
    let location: JournalLocation
    let name: String

    init(_ backend: JournalBackend, stateDir: URL) throws {
        switch backend {
        case .sqlite:
            location = .stateDir(stateDir)
            name = stateDir.path
        case .postgresql:
            let server = try PostgresTestServer.shared
            let url = try #require(PostgresURL(server.url(database: try server.newDatabase(prefix: "journal"))))
            location = .postgres(url)
            name = url.redacted
        }
    }

    func create(_ run: RunRecord) throws -> Journal { try Journal.create(at: location, run: run) }
    func open(_ runID: String?) throws -> Journal { try Journal.open(at: location, runID: runID) }
    func listRuns() throws -> [RunSummary] { try Journal.listRuns(at: location) }
}

/// A private temporary directory (0700, from mkdtemp) for one test; removed afterwards.
private final class Scratch {
    let root: URL

    init() throws {
        var template = Array((FileManager.default.temporaryDirectory.path + "/flotilla-journal-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw JournalError(.io, "mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        root = URL(fileURLWithPath: String(cString: made))
    }

    var stateDir: URL { root.appendingPathComponent("state") }

    func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    func place(_ backend: JournalBackend) throws -> JournalPlace { try JournalPlace(backend, stateDir: stateDir) }

    deinit { try? FileManager.default.removeItem(at: root) }
}

private func at(_ seconds: Int) -> Date { Date(timeIntervalSince1970: 1_763_740_800 + Double(seconds)) }

private func mode(_ url: URL) -> mode_t? {
    var info = stat()
    return stat(url.path, &info) == 0 ? info.st_mode & 0o7777 : nil
}

private let sampleOptions = {
    var options = RunOptions()
    options.batch = BatchSpec(sizes: [.count(1)])
    options.selection = ["-i", "/etc/flotilla/inventory.ini"]
    return options
}()

/// Three hosts in two batches; st2-01 and st2-02 share a cluster with a once-per step.
private func sampleRun(id: String = "20251121-160000-ab12", createdAt: Date = at(0)) -> RunRecord {
    let steps = [
        RunStep(name: "stop services", command: "st2ctl stop", kind: "stop-services"),
        RunStep(name: "migrate", command: "/opt/stackstorm/st2/bin/st2-migrate", kind: "migration", oncePer: "st2_cluster"),
        RunStep(name: "start services", command: "st2ctl start", kind: "start-services", become: true, timeout: 120),
    ]
    return RunRecord(
        id: id, kind: .stackstormUpgrade, name: "upgrade to 3.8.1", targetVersion: "3.8.1", createdAt: createdAt,
        hosts: [
            RunHost(name: "st2-01", address: "10.0.0.11", batch: 0, groups: ["st2_cluster": "blue"], fromVersion: "3.7.0",
                    toVersion: "3.8.1", steps: steps),
            RunHost(name: "st2-02", address: "10.0.0.12", batch: 1, groups: ["st2_cluster": "blue"], fromVersion: "3.7.0",
                    toVersion: "3.8.1", steps: steps),
            RunHost(name: "st2-03", address: "10.0.0.13", batch: nil, steps: [], skip: SkipCause(.atTarget, "already at 3.8.1")),
        ],
        batches: [["st2-01"], ["st2-02"]],
        options: sampleOptions)
}

/// Runs `body` and returns the JournalError it throws (recording an issue otherwise).
private func journalError(_ body: () throws -> Void, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> JournalError? {
    do {
        try body()
        Issue.record("no error thrown", sourceLocation: sourceLocation)
    } catch let error as JournalError {
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

private func lockError(_ body: () throws -> Void, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> LockError? {
    do {
        try body()
        Issue.record("no error thrown", sourceLocation: sourceLocation)
    } catch let error as LockError {
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Every kind of transition, in the order an engine would write them, with st2-02's
/// "start services" left in flight.
private func writeTransitions(_ journal: Journal) throws {
    try journal.runStatus(state: .running, haltReason: nil, at: at(1))
    try journal.event(kind: "resume", message: "started by alice", at: at(1))
    try journal.batchStarted(index: 0, at: at(2))
    try journal.hostStatus(host: "st2-01", status: .running, error: nil, at: at(2))
    try journal.stepStarted(host: "st2-01", step: 0, at: at(3))
    try journal.stepFinished(host: "st2-01", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "stopped\n",
                             stderrTail: "", error: nil, at: at(4), durationMS: 1000)
    try journal.stepStarted(host: "st2-01", step: 1, at: at(5))
    try journal.stepFinished(host: "st2-01", step: 1, status: .succeeded, exitStatus: 0, stdoutTail: "migrated ✓",
                             stderrTail: "warning: nul \u{0} kept", error: nil, at: at(6), durationMS: 1500)
    try journal.clusterStepDone(group: "st2_cluster", value: "blue", step: 1, byHost: "st2-01", at: at(6))
    try journal.stepStarted(host: "st2-01", step: 2, at: at(7))
    try journal.stepFinished(host: "st2-01", step: 2, status: .failed, exitStatus: 3, stdoutTail: "", stderrTail: "st2api failed",
                             error: nil, at: at(8), durationMS: 900)
    try journal.hostStatus(host: "st2-01", status: .failed, error: "start services exited 3", at: at(8))
    try journal.artifact(host: "st2-01", name: "audit.log", path: "runs/x/st2-01/audit.log")
    try journal.batchFinished(index: 0, at: at(9))
    try journal.event(kind: "ctl", message: "pause", at: at(10))
    try journal.batchStarted(index: 1, at: at(11))
    try journal.hostStatus(host: "st2-02", status: .running, error: nil, at: at(11))
    try journal.stepStarted(host: "st2-02", step: 0, at: at(12))
    try journal.stepFinished(host: "st2-02", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "", stderrTail: "",
                             error: nil, at: at(13), durationMS: 700)
    try journal.stepFinished(host: "st2-02", step: 1, status: .skipped, exitStatus: nil, stdoutTail: "", stderrTail: "",
                             error: "done by st2-01", at: at(13), durationMS: 0)
    try journal.stepStarted(host: "st2-02", step: 2, at: at(14))
    try journal.hostStatus(host: "st2-03", status: .skipped, error: "already at 3.8.1", at: at(14))
}

@Suite struct JournalTests {
    // MARK: - Round trip

    @Test(arguments: JournalBackend.allCases)
    func createOpenAndLoadRoundTripEveryTransition(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let run = sampleRun()
        let journal = try place.create(run)
        if backend == .sqlite {
            #expect(journal.file.path == scratch.stateDir.appendingPathComponent("runs/\(run.id)/journal.sqlite").path)
        }

        let fresh = try journal.load()
        #expect(fresh.record == run)
        #expect(fresh.state == .created)
        #expect(fresh.hosts.map(\.status) == [.notStarted, .notStarted, .notStarted])
        #expect(fresh.hosts[0].steps.map(\.status) == [.pending, .pending, .pending])
        #expect(fresh.hosts[2].steps.isEmpty)
        #expect(fresh.batches.map(\.hosts) == [["st2-01"], ["st2-02"]])

        try writeTransitions(journal)
        try journal.runStatus(state: .halted, haltReason: "max-fail 0 exceeded: 1 host failed", at: at(20))
        journal.close()

        // A new process would do this: open by id, read everything back.
        let reopened = try place.open(run.id)
        let state = try reopened.load()
        #expect(state.record == run)
        #expect(state.state == .halted)
        #expect(state.haltReason == "max-fail 0 exceeded: 1 host failed")
        #expect(state.startedAt == at(1))
        #expect(state.finishedAt == at(20))

        let first = try #require(state.host("st2-01"))
        #expect(first.status == .failed)
        #expect(first.error == "start services exited 3")
        #expect(first.startedAt == at(2) && first.finishedAt == at(8))
        #expect(first.steps.map(\.status) == [.succeeded, .succeeded, .failed])
        #expect(first.steps.map(\.name) == ["stop services", "migrate", "start services"])
        #expect(first.steps[0] == JournalState.Step(index: 0, name: "stop services", status: .succeeded, exitStatus: 0,
                                                    stdoutTail: "stopped\n", stderrTail: "", error: nil, startedAt: at(3),
                                                    finishedAt: at(4), durationMS: 1000, attempts: 1))
        #expect(first.steps[1].stdoutTail == "migrated ✓")
        #expect(first.steps[1].stderrTail == "warning: nul \u{0} kept")
        #expect(first.steps[2].exitStatus == 3)
        #expect(first.steps[2].stderrTail == "st2api failed")

        let second = try #require(state.host("st2-02"))
        #expect(second.status == .running)
        #expect(second.finishedAt == nil)
        // The step in flight when the controller stopped writing is visible as such.
        #expect(second.steps.map(\.status) == [.succeeded, .skipped, .running])
        #expect(second.steps[1].startedAt == nil)
        #expect(second.steps[1].error == "done by st2-01")
        #expect(second.steps[2].startedAt == at(14) && second.steps[2].finishedAt == nil && second.steps[2].exitStatus == nil)

        let third = try #require(state.host("st2-03"))
        #expect(third.status == .skipped && third.error == "already at 3.8.1" && third.startedAt == nil && third.finishedAt == at(14))

        #expect(state.batches == [
            JournalState.Batch(index: 0, hosts: ["st2-01"], startedAt: at(2), finishedAt: at(9)),
            JournalState.Batch(index: 1, hosts: ["st2-02"], startedAt: at(11), finishedAt: nil),
        ])
        #expect(state.clusterSteps == [JournalState.ClusterStep(group: "st2_cluster", value: "blue", step: 1, host: "st2-01", at: at(6))])
        #expect(try reopened.clusterStepDoneBy(group: "st2_cluster", value: "blue", step: 1) == "st2-01")
        #expect(try reopened.clusterStepDoneBy(group: "st2_cluster", value: "green", step: 1) == nil)
        #expect(state.events.map(\.kind) == ["resume", "ctl"])
        #expect(state.events.map(\.message) == ["started by alice", "pause"])
        #expect(state.events.map(\.at) == [at(1), at(10)])
        #expect(state.events[0].sequence < state.events[1].sequence)
        #expect(state.artifacts == [JournalState.Artifact(host: "st2-01", name: "audit.log", path: "runs/x/st2-01/audit.log")])
        #expect(state.hostCounts == [.failed: 1, .running: 1, .skipped: 1])
    }

    @Test(arguments: JournalBackend.allCases)
    func resumingReRunsAStepInFlightAndKeepsFirstStartTimes(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let journal = try place.create(sampleRun())
        try writeTransitions(journal)
        try journal.runStatus(state: .stopped, haltReason: "SIGTERM", at: at(15))

        // The resume: same run, host and batch start again, the in-flight step is run anew.
        try journal.runStatus(state: .running, haltReason: nil, at: at(30))
        try journal.batchStarted(index: 1, at: at(30))
        try journal.hostStatus(host: "st2-02", status: .running, error: nil, at: at(31))
        try journal.stepStarted(host: "st2-02", step: 2, at: at(32))
        try journal.stepFinished(host: "st2-02", step: 2, status: .succeeded, exitStatus: 0, stdoutTail: "started", stderrTail: "",
                                 error: nil, at: at(33), durationMS: 1000)
        let state = try journal.load()
        #expect(state.state == .running && state.haltReason == nil && state.startedAt == at(1) && state.finishedAt == nil)
        #expect(state.batches[1].startedAt == at(11))
        let host = try #require(state.host("st2-02"))
        #expect(host.startedAt == at(11))
        #expect(host.steps[2].attempts == 2)
        #expect(host.steps[2].startedAt == at(32) && host.steps[2].status == .succeeded)
    }

    @Test(arguments: JournalBackend.allCases)
    func refusesTransitionsTheJournalContradicts(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let journal = try place.create(sampleRun())
        try writeTransitions(journal)

        // A finished step is never started again.
        let again = journalError { try journal.stepStarted(host: "st2-01", step: 0, at: at(40)) }
        #expect(again?.code == .invalidTransition)
        #expect(again?.message == "step 0 (stop services) of st2-01 is recorded as succeeded; a finished step is never run again")
        #expect(journalError { try journal.stepStarted(host: "st2-02", step: 1, at: at(40)) }?.code == .invalidTransition)
        // A failed step may be tried again.
        try journal.stepStarted(host: "st2-01", step: 2, at: at(40))

        #expect(journalError { try journal.stepStarted(host: "nope", step: 0, at: at(40)) }?.message
            == "run \(journal.runID) has no host nope")
        #expect(journalError { try journal.stepFinished(host: "st2-01", step: 7, status: .failed, exitStatus: 1, stdoutTail: "",
                                                         stderrTail: "", error: nil, at: at(40), durationMS: 1) }?.message
            == "host st2-01 has no step 7 (it has 3)")
        #expect(journalError { try journal.stepFinished(host: "st2-01", step: 2, status: .running, exitStatus: nil, stdoutTail: "",
                                                         stderrTail: "", error: nil, at: at(40), durationMS: 1) }?.code
            == .invalidTransition)
        #expect(journalError { try journal.hostStatus(host: "nope", status: .failed, error: nil, at: at(40)) }?.code == .invalidTransition)
        #expect(journalError { try journal.batchStarted(index: 2, at: at(40)) }?.message == "run \(journal.runID) has no batch 2")
        #expect(journalError { try journal.runStatus(state: .created, haltReason: nil, at: at(40)) }?.code == .invalidTransition)
        let cluster = journalError {
            try journal.clusterStepDone(group: "st2_cluster", value: "blue", step: 1, byHost: "st2-02", at: at(40))
        }
        #expect(cluster?.message == "step 1 for st2_cluster=blue is already recorded as run by st2-01, not st2-02")
        // The same host again is fine, and keeps the first record.
        try journal.clusterStepDone(group: "st2_cluster", value: "blue", step: 1, byHost: "st2-01", at: at(41))
        #expect(try journal.load().clusterSteps.map(\.at) == [at(6)])
        // Nothing refused was written.
        let state = try journal.load()
        #expect(state.state == .running)
        #expect(state.host("st2-01")?.steps[0].attempts == 1)
    }

    @Test(arguments: JournalBackend.allCases)
    func createRefusesATakenIdAndIdsThatAreNotNames(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        _ = try place.create(sampleRun())
        let taken = journalError { _ = try place.create(sampleRun()) }
        #expect(taken?.code == .runExists)
        for id in ["", "../x", ".hidden", "a/b", "a b"] {
            #expect(journalError { _ = try place.create(sampleRun(id: id)) }?.code == .invalidTransition)
        }
        var duplicate = sampleRun(id: "20251121-160000-dup0")
        duplicate.hosts.append(duplicate.hosts[0])
        #expect(journalError { _ = try place.create(duplicate) }?.message
            == "run 20251121-160000-dup0 lists host st2-01 twice")
        // Failed creations leave nothing behind, not even hidden staging directories.
        guard backend == .sqlite else {
            #expect(try place.listRuns().map(\.id) == ["20251121-160000-ab12"])
            return
        }
        let entries = try FileManager.default.contentsOfDirectory(atPath: scratch.stateDir.appendingPathComponent("runs").path)
        #expect(entries == ["20251121-160000-ab12"])
    }

    // MARK: - Selecting runs

    @Test(arguments: JournalBackend.allCases)
    func openWithoutAnIdTakesTheLatestRunByCreationTime(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        // Ids sort the other way round from creation times: creation time decides.
        let old = try place.create(sampleRun(id: "run-c", createdAt: at(100)))
        try old.hostStatus(host: "st2-01", status: .succeeded, error: nil, at: at(101))
        try old.runStatus(state: .completedWithFailures, haltReason: nil, at: at(102))
        _ = try place.create(sampleRun(id: "run-a", createdAt: at(300)))
        _ = try place.create(sampleRun(id: "run-b", createdAt: at(200)))

        let latest = try place.open(nil)
        #expect(latest.runID == "run-a")
        #expect(try latest.load().record.createdAt == at(300))

        let runs = try place.listRuns()
        #expect(runs.map(\.id) == ["run-c", "run-b", "run-a"])
        let first = try #require(runs.first)
        #expect(first.kind == .stackstormUpgrade && first.targetVersion == "3.8.1" && first.name == "upgrade to 3.8.1")
        #expect(first.createdAt == at(100) && first.state == .completedWithFailures && first.finishedAt == at(102))
        #expect(first.hostCounts == [.succeeded: 1, .notStarted: 2] && first.hostCount == 3)
        #expect(first.problem == nil)
        #expect(runs[2].state == .created && runs[2].hostCounts == [.notStarted: 3])
    }

    @Test(arguments: JournalBackend.allCases)
    func openExplainsMissingRuns(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let none = journalError { _ = try place.open(nil) }
        #expect(none?.code == .noRuns)
        #expect(none?.message == "no runs yet in \(place.name) (flotilla upgrade or flotilla run start one)")
        #expect(try place.listRuns().isEmpty)
        #expect(journalError { _ = try place.open("run-x") }?.code == .noRuns)

        _ = try place.create(sampleRun(id: "run-b"))
        _ = try place.create(sampleRun(id: "run-a"))
        let unknown = journalError { _ = try place.open("run-x") }
        #expect(unknown?.code == .unknownRun)
        #expect(unknown?.message == "no run run-x in \(place.name); known runs: run-a, run-b")
    }

    @Test func anUnreadableRunIsListedWithItsProblem() throws {
        let scratch = try Scratch()
        _ = try Journal.create(stateDir: scratch.stateDir, run: sampleRun(id: "good", createdAt: at(0)))
        let broken = scratch.stateDir.appendingPathComponent("runs/broken")
        try PrivateFiles.makeDirectory(broken, what: "run dir")
        let file = broken.appendingPathComponent("journal.sqlite")
        try PrivateFiles.createFile(file)
        try Data("not a database".utf8).write(to: file)

        let runs = try Journal.listRuns(stateDir: scratch.stateDir)
        #expect(runs.map(\.id).sorted() == ["broken", "good"])
        let listed = try #require(runs.first { $0.id == "broken" })
        #expect(listed.state == nil && listed.kind == nil)
        #expect(listed.problem?.hasPrefix("run broken cannot be read: ") == true)
        #expect(journalError { _ = try Journal.open(stateDir: scratch.stateDir, runID: "broken") }?.code == .notAJournal)
        // Its directory is newer than the good run's creation time, so it is the latest,
        // and opening the latest says why it cannot be read rather than opening an older run.
        #expect(journalError { _ = try Journal.open(stateDir: scratch.stateDir, runID: nil) }?.code == .notAJournal)
    }

    // MARK: - Files

    @Test func everythingCreatedIsOwnerOnly() throws {
        let scratch = try Scratch()
        let stateDir = scratch.url("deep/er/state")
        let journal = try Journal.create(stateDir: stateDir, run: sampleRun())
        try journal.event(kind: "ctl", message: "x", at: at(1)) // makes the -wal and -shm files
        let run = stateDir.appendingPathComponent("runs/\(journal.runID)")
        for directory in [scratch.url("deep"), scratch.url("deep/er"), stateDir, stateDir.appendingPathComponent("runs"), run] {
            #expect(mode(directory) == 0o700, "\(directory.path)")
        }
        for name in ["journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"] {
            #expect(mode(run.appendingPathComponent(name)) == 0o600, "\(name)")
        }
        let lock = try StateDirLock.acquire(stateDir: stateDir)
        #expect(mode(stateDir.appendingPathComponent("lock")) == 0o600)
        lock.release()
        let hosts = scratch.url("home/.local/state/flotilla/hosts")
        let locks = try HostLocks.acquire([.init(name: "st2-01", address: "10.0.0.11", port: 22)], directory: hosts,
                                          stateDir: stateDir, runID: nil)
        #expect(mode(hosts) == 0o700 && mode(scratch.url("home/.local")) == 0o700)
        #expect(mode(hosts.appendingPathComponent("10.0.0.11_22.lock")) == 0o600)
        locks.release()
    }

    @Test func refusesAStateDirOthersCanWriteTo() throws {
        let scratch = try Scratch()
        let stateDir = scratch.stateDir
        try FileManager.default.createDirectory(at: stateDir, withIntermediateDirectories: false)
        chmod(stateDir.path, 0o777)
        let error = journalError { _ = try Journal.create(stateDir: stateDir, run: sampleRun()) }
        #expect(error?.code == .unsafePath)
        #expect(error?.path == stateDir.path)
        #expect(error?.message == """
            state dir \(stateDir.path) is writable by every user (mode 777): anyone who can write there can replace \
            journals and locks; fix it with: chmod go-w \(stateDir.path)
            """)
        #expect(journalError { _ = try StateDirLock.acquire(stateDir: stateDir) }?.code == .unsafePath)
        #expect(journalError { _ = try Journal.listRuns(stateDir: stateDir) }?.code == .unsafePath)
        #expect(!FileManager.default.fileExists(atPath: stateDir.appendingPathComponent("runs").path))

        chmod(stateDir.path, 0o770)
        #expect(journalError { _ = try Journal.create(stateDir: stateDir, run: sampleRun()) }?.message
            .contains("is writable by its group (mode 770)") == true)

        // Readable by others is fine; the runs dir is checked too.
        chmod(stateDir.path, 0o755)
        let journal = try Journal.create(stateDir: stateDir, run: sampleRun())
        journal.close()
        chmod(stateDir.appendingPathComponent("runs").path, 0o757)
        let runs = journalError { _ = try Journal.open(stateDir: stateDir, runID: nil) }
        #expect(runs?.message.hasPrefix("runs dir \(stateDir.path)/runs is writable by every user") == true)
    }

    @Test(.enabled(if: geteuid() == 0, "only root can give a directory to another user"))
    func refusesAStateDirOwnedBySomeoneElse() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(at: scratch.stateDir, withIntermediateDirectories: false)
        chmod(scratch.stateDir.path, 0o700)
        #expect(chown(scratch.stateDir.path, 65534, 65534) == 0)
        let error = journalError { _ = try Journal.create(stateDir: scratch.stateDir, run: sampleRun()) }
        #expect(error?.code == .unsafePath)
        #expect(error?.message.hasPrefix("state dir \(scratch.stateDir.path) is owned by ") == true)
        #expect(error?.message.contains("use a state dir of your own (--state-dir)") == true)
    }

    @Test func journalsUseWALWithFullSyncAndAVersionedSchema() throws {
        let scratch = try Scratch()
        let journal = try Journal.create(stateDir: scratch.stateDir, run: sampleRun())
        func pragma(_ name: String) throws -> String? {
            try journal.database.query("PRAGMA \(name)") { $0.text(0) }.first ?? nil
        }
        #expect(try pragma("journal_mode") == "wal")
        #expect(try pragma("synchronous") == "2") // FULL
        #expect(try pragma("foreign_keys") == "1")
        #expect(try pragma("user_version") == "\(Journal.schemaVersion)")
        #expect(try pragma("application_id") == "\(0x466C_6F74)")
        let file = journal.file
        journal.close()

        // A journal from a newer flotilla is refused, not misread.
        let raw = try SQLiteDatabase(path: file.path, mode: .readWrite)
        try raw.execute("PRAGMA user_version = 4")
        raw.close()
        let newer = journalError { _ = try Journal.open(stateDir: scratch.stateDir, runID: nil) }
        #expect(newer?.code == .unsupportedSchema)
        #expect(newer?.message == "\(file.path) was written by a newer flotilla (journal schema 4; this one reads up to 3)")
    }

    /// A journal of schema 1 (options as flag texts, skip causes as the text users read),
    /// as the previous flotilla wrote it, opens, loads with typed options and causes, and
    /// takes transitions (resume writes to it), staying schema 1.
    @Test func aPostgresJournalHoldsHostsForItsSessionOnly() throws {
        let scratch = try Scratch()
        let place = try scratch.place(.postgresql)
        let first = try place.create(sampleRun())
        try first.holdHosts(["st2-01", "st2-02"], stateDir: scratch.stateDir)
        let second = try place.open(nil)
        let refused = lockError { try second.holdHosts(["st2-02", "st2-03"], stateDir: scratch.url("other")) }
        #expect(refused?.hosts == ["st2-02"])
        #expect(refused?.message.contains("held by pid \(getpid())") == true, "\(refused?.message ?? "")")
        // All or none: st2-03 was let go again.
        try first.holdHosts(["st2-03"], stateDir: scratch.stateDir)
        // The holds end with the session that took them.
        first.close()
        try second.holdHosts(["st2-01", "st2-02", "st2-03"], stateDir: scratch.url("other"))
    }

    @Test func anOlderPostgresLayoutIsUpgradedInPlace() throws {
        let scratch = try Scratch()
        let place = try scratch.place(.postgresql)
        let journal = try place.create(sampleRun())
        try writeTransitions(journal)
        // As layout 1 left it: no holder table.
        try journal.database.execute("DROP TABLE holder; UPDATE flotilla.schema_version SET version = 1")
        journal.close()
        let reopened = try place.open(nil)
        #expect(try reopened.database.query("SELECT version FROM flotilla.schema_version") { $0.int(0) } == [PostgresJournals.schemaVersion])
        try reopened.holdHosts(["st2-01"], stateDir: scratch.stateDir)
        #expect(try reopened.load().host("st2-02")?.steps[2].status == .running)
        // A layout from a newer flotilla is refused, not guessed at.
        try reopened.database.execute("UPDATE flotilla.schema_version SET version = 99")
        #expect(journalError { _ = try place.open(nil) }?.code == .unsupportedSchema)
    }

    @Test func aSchemaOneJournalStillOpensAndResumes() throws {
        let scratch = try Scratch()
        var run = sampleRun()
        run.hosts[2].skip = SkipCause(.refused, "crossing 3.3 removes Mistral")
        let journal = try Journal.create(stateDir: scratch.stateDir, run: run)
        try journal.runStatus(state: .stopped, haltReason: "SIGINT", at: at(5))
        let file = journal.file
        journal.close()

        // Rewrite the record exactly as schema 1 stored it.
        let steps = String(decoding: try JSONEncoder().encode(run.hosts[0].steps), as: UTF8.self)
        let old = """
            {"batches":[["st2-01"],["st2-02"]],"createdAt":\(at(0).timeIntervalSinceReferenceDate),"hosts":[\
            {"address":"10.0.0.11","batch":0,"fromVersion":"3.7.0","groups":{"st2_cluster":"blue"},"name":"st2-01","steps":\(steps),"toVersion":"3.8.1"},\
            {"address":"10.0.0.12","batch":1,"fromVersion":"3.7.0","groups":{"st2_cluster":"blue"},"name":"st2-02","steps":\(steps),"toVersion":"3.8.1"},\
            {"address":"10.0.0.13","groups":{},"name":"st2-03","skipReason":"refused: crossing 3.3 removes Mistral","steps":[]}],\
            "id":"\(run.id)","kind":"stackstorm-upgrade","name":"upgrade to 3.8.1","options":{"batch":"1","max-fail":"0",\
            "selection":"[\\"-i\\",\\"\\/etc\\/flotilla\\/inventory.ini\\"]","on-halt":"drain","unreachable-counts":"yes"},\
            "targetVersion":"3.8.1"}
            """
        let raw = try SQLiteDatabase(path: file.path, mode: .readWrite)
        try raw.run("UPDATE run SET record_json = ?", .text(old))
        try raw.execute("PRAGMA user_version = 1")
        raw.close()

        let reopened = try Journal.open(stateDir: scratch.stateDir, runID: nil)
        #expect(reopened.schema == 1)
        let state = try reopened.load()
        #expect(state.record == run)
        #expect(state.record.hosts[2].skipReason == "refused: crossing 3.3 removes Mistral")
        #expect(state.record.options.selection == ["-i", "/etc/flotilla/inventory.ini"])
        let plan = try ResumePlan(state, retryFailed: false, maxFail: .count(1))
        #expect(plan.record.options.maxFail == .count(1) && plan.state == .stopped)
        try reopened.runStatus(state: .running, haltReason: nil, at: at(6))
        try reopened.stepStarted(host: "st2-01", step: 0, at: at(7))
        #expect(try reopened.load().state == .running)
        #expect(try reopened.database.query("PRAGMA user_version") { $0.int64(0) }.first == 1)
    }

    /// After `seal`, the run is recorded stopped and no transition of that connection
    /// lands: a step in flight stays `running`, for resume to run it again.
    @Test(arguments: JournalBackend.allCases)
    func aSealedJournalKeepsTheStepsInFlightRunning(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let journal = try place.create(sampleRun())
        try journal.runStatus(state: .running, haltReason: nil, at: at(1))
        try journal.stepStarted(host: "st2-01", step: 0, at: at(2))
        try journal.seal(state: .stopped, reason: "SIGINT twice", at: at(3))
        #expect(journalError {
            try journal.stepFinished(host: "st2-01", step: 0, status: .failed, exitStatus: nil, stdoutTail: "", stderrTail: "",
                                     error: "cancelled", at: at(4), durationMS: 1)
        }?.code == .invalidTransition)
        #expect(journalError { _ = try journal.batch([{ try journal.hostStatus(host: "st2-01", status: .failed, error: nil, at: at(4)) }]) }?.code
                == .invalidTransition)
        let state = try journal.load()
        #expect(state.state == .stopped && state.haltReason == "SIGINT twice" && state.events.map(\.message) == ["SIGINT twice"])
        #expect(state.hosts[0].steps[0].status == .running && state.hosts[0].status == .notStarted)
    }

    // MARK: - Durability

    @Test(arguments: JournalBackend.allCases)
    func aSecondConnectionSeesEveryTransitionThatReturned(backend: JournalBackend) throws {
        let scratch = try Scratch()
        let place = try scratch.place(backend)
        let writer = try place.create(sampleRun())
        let reader = try place.open(nil)
        try writer.hostStatus(host: "st2-01", status: .running, error: nil, at: at(1))
        #expect(try reader.load().host("st2-01")?.status == .running)
        try writer.stepStarted(host: "st2-01", step: 0, at: at(2))
        #expect(try reader.load().host("st2-01")?.steps[0].status == .running)
        try writer.stepFinished(host: "st2-01", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "ok", stderrTail: "",
                                error: nil, at: at(3), durationMS: 1000)
        #expect(try reader.load().host("st2-01")?.steps[0].stdoutTail == "ok")
        try writer.event(kind: "signal", message: "SIGTERM", at: at(4))
        try writer.runStatus(state: .stopped, haltReason: "SIGTERM", at: at(4))
        let seen = try reader.load()
        #expect(seen.state == .stopped && seen.events.map(\.message) == ["SIGTERM"])
        #expect(seen == (try writer.load()))
    }

    @Test func theFilesAsACrashLeavesThemHoldEveryTransitionThatReturned() throws {
        let scratch = try Scratch()
        let journal = try Journal.create(stateDir: scratch.stateDir, run: sampleRun())
        try writeTransitions(journal)
        let expected = try journal.load()

        // What a kill -9 leaves on disk: the database and its write-ahead log, never
        // checkpointed or closed, and no shared-memory index (that one is rebuilt).
        let source = journal.file.deletingLastPathComponent()
        #expect((try FileManager.default.attributesOfItem(atPath: source.path + "/journal.sqlite-wal")[.size] as? Int ?? 0) > 0)
        let copyState = scratch.url("crashed")
        let copyRun = copyState.appendingPathComponent("runs/\(journal.runID)")
        try PrivateFiles.makeDirectory(copyRun, what: "run dir")
        for name in ["journal.sqlite", "journal.sqlite-wal"] {
            let data = try Data(contentsOf: source.appendingPathComponent(name))
            let copy = copyRun.appendingPathComponent(name)
            try PrivateFiles.createFile(copy)
            try data.write(to: copy)
        }
        withExtendedLifetime(journal) {}

        let recovered = try Journal.open(stateDir: copyState, runID: nil)
        let state = try recovered.load()
        #expect(state == expected)
        #expect(state.host("st2-02")?.steps[2].status == .running)
        // The recovered journal takes further transitions.
        try recovered.stepStarted(host: "st2-02", step: 2, at: at(50))
        #expect(try recovered.load().host("st2-02")?.steps[2].attempts == 2)
    }

    // MARK: - State dir lock

    @Test func aSecondStateDirLockNamesTheHolderAndSucceedsOnceReleased() throws {
        let scratch = try Scratch()
        let lock = try StateDirLock.acquire(stateDir: scratch.stateDir, now: at(0))
        try lock.record(runID: "20251121-160000-ab12")
        let error = lockError { _ = try StateDirLock.acquire(stateDir: scratch.stateDir) }
        let holder = try #require(error?.holders.first ?? nil)
        #expect(holder.pid == getpid())
        #expect(holder.runID == "20251121-160000-ab12")
        #expect(holder.stateDir == scratch.stateDir.path)
        #expect(error?.message.hasPrefix("""
            state dir \(scratch.stateDir.path) is in use by pid \(getpid()) (run 20251121-160000-ab12) \
            since 2025-11-21T16:00:00Z, user
            """) == true)
        #expect(error?.message.hasSuffix("the lock goes away with its process), or use another --state-dir") == true)

        lock.release()
        let again = try StateDirLock.acquire(stateDir: scratch.stateDir, runID: "next")
        #expect(LockFile.holder(at: scratch.stateDir.appendingPathComponent("lock"))?.runID == "next")
        // Dropping the object releases too.
        do { _ = consume again }
        _ = try StateDirLock.acquire(stateDir: scratch.stateDir)
    }

    @Test func aLockHeldByAnotherProcessIsFreedWhenThatProcessIsKilled() throws {
        let scratch = try Scratch()
        try PrivateFiles.makeDirectory(scratch.stateDir, what: "state dir")
        let lockFile = scratch.stateDir.appendingPathComponent("lock")
        // Another process takes the lock with flock(1) and names itself the way a
        // controller does, then stays.
        let script = """
            exec 9>>"$1"
            /usr/bin/flock 9 || exit 1
            printf '{"host":"other-box","pid":%s,"run_id":"20251121-150000-feed","since":"2025-11-21T15:00:00Z","state_dir":"/elsewhere","user":"bob"}\\n' $$ >"$1"
            echo ready
            exec sleep 60
            """
        let child = try ChildProcess(["/bin/sh", "-c", script, "sh", lockFile.path])
        defer { child.kill() }
        #expect(try child.readLine() == "ready")

        let error = lockError { _ = try StateDirLock.acquire(stateDir: scratch.stateDir) }
        #expect(error?.message.hasPrefix("""
            state dir \(scratch.stateDir.path) is in use by pid \(child.pid) (run 20251121-150000-feed) \
            since 2025-11-21T15:00:00Z, user bob on other-box;
            """) == true)

        // kill -9 of the holder: no cleanup ran, its name is still in the file, and yet
        // the lock is free.
        child.kill()
        #expect(LockFile.holder(at: lockFile)?.pid == child.pid)
        let lock = try StateDirLock.acquire(stateDir: scratch.stateDir, runID: "mine")
        #expect(LockFile.holder(at: lockFile)?.pid == getpid())
        lock.release()
    }

    // MARK: - Host locks

    @Test func hostLocksAreAllOrNothingAndNameTheConflicts() throws {
        let scratch = try Scratch()
        let directory = scratch.url("hosts")
        let one = HostLocks.Target(name: "st2-01", address: "10.0.0.11", port: 22)
        let two = HostLocks.Target(name: "st2-02", address: "10.0.0.12", port: 22)
        let three = HostLocks.Target(name: "st2-03", address: "10.0.0.13", port: 2222)
        let other = scratch.url("other/.flotilla")
        let held = try HostLocks.acquire([two, three], directory: directory, stateDir: other, runID: "run-other", now: at(0))

        let error = lockError {
            _ = try HostLocks.acquire([one, two, three], directory: directory, stateDir: scratch.stateDir, runID: "run-mine")
        }
        #expect(error?.hosts == ["st2-02 (10.0.0.12:22)", "st2-03 (10.0.0.13:2222)"])
        #expect(error?.holders.count == 1)
        #expect(error?.message.hasPrefix("""
            2 of the 3 hosts are in use by another flotilla controller: st2-02 (10.0.0.12:22), st2-03 (10.0.0.13:2222) \
            are in use by pid \(getpid()) (state dir \(other.path), run run-other) since 2025-11-21T16:00:00Z, user
            """) == true)
        #expect(error?.message.hasSuffix("no host was locked — wait for that run to finish, or leave these hosts out (--limit)") == true)

        // Nothing was kept: st2-01 is free for anyone.
        let first = try HostLocks.acquire([one], directory: directory, stateDir: scratch.stateDir, runID: nil)
        first.release()

        held.release()
        let mine = try HostLocks.acquire([one, two, three], directory: directory, stateDir: scratch.stateDir, runID: "run-mine")
        #expect(LockFile.holder(at: directory.appendingPathComponent("10.0.0.13_2222.lock"))?.runID == "run-mine")
        // Overlap with a different state dir is what the host locks are for.
        let overlap = lockError { _ = try HostLocks.acquire([three], directory: directory, stateDir: other, runID: nil) }
        #expect(overlap?.hosts == ["st2-03 (10.0.0.13:2222)"])
        mine.release()
    }

    @Test func twoNamesForOneAddressTakeOneLock() throws {
        let scratch = try Scratch()
        let directory = scratch.url("hosts")
        let locks = try HostLocks.acquire([
            .init(name: "st2-01", address: "ST2-01.example.com", port: 22),
            .init(name: "alias", address: "st2-01.example.com", port: 22),
            .init(name: "v6", address: "fe80::1", port: 22),
        ], directory: directory, stateDir: scratch.stateDir, runID: nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
            == ["fe80__1_22.lock", "st2-01.example.com_22.lock"])
        let error = lockError {
            _ = try HostLocks.acquire([.init(name: "v6", address: "fe80::1", port: 22)], directory: directory,
                                      stateDir: scratch.stateDir, runID: nil)
        }
        #expect(error?.hosts == ["v6 ([fe80::1]:22)"])
        locks.release()
        #expect(HostLocks.fileName(address: "..", port: 22) == "_.._22.lock")
        #expect(HostLocks.fileName(address: "a/b c", port: 1) == "a_b_c_1.lock")
    }

    @Test func theDefaultHostLockDirectoryIsUnderHome() {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? ""
        if home.hasPrefix("/") {
            #expect(HostLocks.defaultDirectory().path == URL(fileURLWithPath: home).appendingPathComponent(".local/state/flotilla/hosts").path)
        } else {
            #expect(HostLocks.defaultDirectory().path.hasSuffix("/.local/state/flotilla/hosts"))
        }
    }
}

/// A child process started with posix_spawn, its stdout on a socket this side reads.
private final class ChildProcess {
    let pid: pid_t
    private var output: Int32
    private var reaped = false
    private var buffer: [UInt8] = []

    init(_ argv: [String]) throws {
        var ends: [Int32] = [-1, -1]
        // Close-on-exec, so no other process started meanwhile inherits either end.
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw JournalError(.io, "socketpair: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, ends[0], 1)
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, nil, &cArgs, environ)
        close(ends[0])
        guard result == 0 else {
            close(ends[1])
            throw JournalError(.io, "cannot start \(argv[0]): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        output = ends[1]
    }

    /// The next line the child prints; nil at the end of its output.
    func readLine() throws -> String? {
        var chunk = [UInt8](repeating: 0, count: 256)
        while !buffer.contains(UInt8(ascii: "\n")) {
            let count = read(output, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return nil }
            buffer += chunk[0..<count]
        }
        let newline = buffer.firstIndex(of: UInt8(ascii: "\n"))!
        defer { buffer.removeSubrange(...newline) }
        return String(decoding: buffer[..<newline], as: UTF8.self)
    }

    /// SIGKILL to this child only, then reaps it (idempotent).
    func kill() {
        guard !reaped else { return }
        reaped = true
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        close(output)
    }

    deinit { kill() }
}
