import Foundation
import Testing
@testable import FlotillaCore

/// The backup's pure parts (SHA-256, the export flags by release, the catalog's checks,
/// the journal's rows) and its steps on the engine over a fake transport (SPEC §8.4).
@Suite(.timeLimit(.minutes(1))) struct BackupTests {
    // MARK: SHA-256

    @Test func sha256MatchesTheStandardVectors() {
        #expect(SHA256.hex(Array("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func sha256FedInPiecesEqualsOneGo() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for cut in [0, 1, 55, 63, 64, 65, 500, 999] {
            var hasher = SHA256()
            hasher.update(bytes[..<cut])
            hasher.update(bytes[cut...])
            #expect(hasher.hexDigest() == SHA256.hex(bytes), "cut at \(cut)")
        }
    }

    // MARK: The export flags by release

    @Test func keyExportFlagsComeFromTheCatalogByRelease() throws {
        let catalog = try MigrationCatalog.bundled()
        let expected = ["2.2.1": "st2 key list -j -s all", "2.3.0": "st2 key list -j -s all",
                        "2.4.0": "st2 key list -j -n 0 -s all", "2.5.1": "st2 key list -j -n 0 -s all",
                        "2.6.0": "st2 key list -j -n -1 -s all", "3.8.0": "st2 key list -j -n -1 -s all"]
        for (release, command) in expected {
            #expect(catalog.keyExportCommand(installed: StackStormVersion(release)!) == command, "\(release)")
        }
        #expect(catalog.keyExport.allSatisfy { $0.source?.isEmpty == false })
    }

    @Test func keyExportRulesAreValidatedWithFileAndLine() {
        let head = "versions: {}\npackages: [st2]\nos_ceilings: {}\nmistral: {commands: []}\nkey_export:\n"
        func error(_ rules: String) -> String {
            do {
                _ = try MigrationCatalog(yaml: head + rules, file: "bad.yaml")
                return "loaded"
            } catch {
                return "\(error)"
            }
        }
        #expect(error("  - {from: \"2.4\", flags: \"-n 0\"}\n") == "loaded")
        #expect(error("  - from: \"two\"\n    flags: \"-n 0\"\n") == "bad.yaml: line 6: key_export.0.from: not a version: two")
        #expect(error("  - from: \"2.4\"\n    flags: \"-n 0 --decrypt\"\n") == "bad.yaml: line 7: key_export.0.flags: --decrypt would keep secrets in clear")
        #expect(error("  - from: \"2.4\"\n    flags: \"-n 0; rm -rf /\"\n").hasPrefix("bad.yaml: line 7: key_export.0.flags: must be st2 key list options"))
        #expect(error("  - from: \"2.6\"\n    flags: \"-n -1\"\n  - from: \"2.4\"\n    flags: \"-n 0\"\n")
                == "bad.yaml: line 8: key_export.1.from: '2.4.0' must be above the rule before it (2.6.0)")
        #expect(error("  - from: \"2.4\"\n") == "bad.yaml: line 6: key_export.0.flags: missing")
    }

    // MARK: The plan's backup steps

    @Test func backupFileStepsRoundTripThroughTheRunStep() {
        for item in BackupItem.files {
            let step = RunStep(name: item.stepName, command: item.paths, kind: .backupFiles, expect: item.expect, become: true)
            #expect(BackupItem(step) == item)
        }
        let injected = RunStep(name: "x", command: "/etc/st2; reboot", kind: .backupFiles, expect: "x.tar")
        #expect(BackupItem(injected) == nil)
        let escaping = RunStep(name: "x", command: "/etc/st2", kind: .backupFiles, expect: "../x.tar")
        #expect(BackupItem(escaping) == nil)
    }

    @Test func theArchiveScriptSkipsWhatIsMissingAndReportsTheHostsHash() {
        let script = BackupScript.archive("/etc/mistral /var/log/st2/*.audit.log")
        #expect(script.contains("for p in etc/mistral var/log/st2/*.audit.log; do"))
        #expect(script.contains("tar -cf - -- \"$@\""))
        let hash = String(repeating: "ab", count: 32)
        #expect(BackupScript.report("tar: noise\n\(BackupScript.hashMarker)\(hash)\n") == (hash, false))
        #expect(BackupScript.report("\(BackupScript.missingMarker)/etc/mistral\n").missing)
    }

    // MARK: The journal

    @Test func artifactsAreJournaledWithSizeAndHash() throws {
        let (journal, stateDir) = try Self.journal()
        defer { try? FileManager.default.removeItem(at: stateDir.deletingLastPathComponent()) } // a test's scratch dir
        try journal.artifact(host: "a", name: "etc-st2.tar", path: "/x/etc-st2.tar", size: 10240, sha256: String(repeating: "0", count: 64))
        try journal.artifact(host: "a", name: "legacy", path: "/x/legacy")
        let artifacts = try journal.load().artifacts
        #expect(artifacts == [
            JournalState.Artifact(host: "a", name: "etc-st2.tar", path: "/x/etc-st2.tar", size: 10240, sha256: String(repeating: "0", count: 64)),
            JournalState.Artifact(host: "a", name: "legacy", path: "/x/legacy"),
        ])
        #expect(BackupList.text(try journal.load()).contains("a     etc-st2.tar  10240  \(String(repeating: "0", count: 64))  /x/etc-st2.tar"))
    }

    @Test func aJournalWithoutTheArtifactColumnsOpensAndGainsThem() throws {
        let (journal, stateDir) = try Self.journal()
        defer { try? FileManager.default.removeItem(at: stateDir.deletingLastPathComponent()) } // a test's scratch dir
        // As the current schema's journals were written before the columns came.
        try journal.database.execute("ALTER TABLE artifact DROP COLUMN size; ALTER TABLE artifact DROP COLUMN sha256")
        try journal.database.execute("INSERT INTO artifact (host, name, path) VALUES ('a', 'old', '/x/old')")
        journal.close()
        let reopened = try Journal.open(stateDir: stateDir, runID: "20260101-000000-b001")
        #expect(reopened.schema == Journal.schemaVersion)
        try reopened.artifact(host: "a", name: "new", path: "/x/new", size: 1, sha256: String(repeating: "f", count: 64))
        #expect(try reopened.load().artifacts.map(\.size) == [1, nil])
    }

    static func journal() throws -> (Journal, URL) {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-backup-\(UUID().uuidString)")
        let stateDir = scratch.appendingPathComponent("state")
        let record = RunRecord(id: "20260101-000000-b001", kind: .runbook, name: "backup test", targetVersion: nil, createdAt: Date(),
                               hosts: [host("a", ["true"])], batches: [["a"]], options: RunOptions())
        return (try Journal.create(stateDir: stateDir, run: record), stateDir)
    }

    // MARK: On the engine

    static let export = "st2 key list -j -n -1 -s all"
    static let keys = #"[{"name":"k","value":"v"},{"name":"s","value":"0A1B","secret":true,"encrypted":true}]"#

    func backupSteps() -> [RunStep] {
        [RunStep(name: "export key-value store", command: Self.export, kind: .backupKeyValue, become: true)]
            + BackupItem.files.map { RunStep(name: $0.stepName, command: $0.paths, kind: .backupFiles, expect: $0.expect, become: true) }
            + [RunStep(name: "stop services", command: "st2ctl stop", kind: .stop, become: true)]
    }

    /// What the host says after sending `content`: the hash of what it sent.
    func sent(_ content: String) -> String { "\(BackupScript.hashMarker)\(SHA256.hex(Array(content.utf8)))\n" }

    @Test func everyArtifactIsKeptVerifiedAndJournaled() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        run.transport.script(0, BackupScript.hashed(Self.export), .exit(0, stdout: Self.keys, stderr: sent(Self.keys)))
        let archive = "etc/st2/st2.conf and the rest"
        run.transport.script(0, BackupScript.archive("/etc/st2"), .exit(0, stdout: archive, stderr: sent(archive)))
        run.transport.script(0, BackupScript.archive("/etc/st2/keys"), .exit(0, stdout: "key", stderr: sent("key")))
        for paths in ["/etc/mistral", "/var/log/st2/*.audit.log"] {
            run.transport.script(0, BackupScript.archive(paths), .exit(0, stderr: "\(BackupScript.missingMarker)\(paths)\n"))
        }
        #expect(await run.run() == .succeeded)
        let directory = run.stateDir.appendingPathComponent("runs/\(run.record.id)/backups/a")
        let state = try await run.state()
        #expect(state.artifacts.map(\.name) == ["etc-st2.tar", "st2-key-list.json", "st2-keys.tar"])
        for artifact in state.artifacts {
            let data = try Data(contentsOf: URL(fileURLWithPath: artifact.path))
            #expect(artifact.path == directory.appendingPathComponent(artifact.name).path)
            #expect(artifact.size == Int64(data.count))
            #expect(artifact.sha256 == SHA256.hex(data))
            #expect(try FileManager.default.attributesOfItem(atPath: artifact.path)[.posixPermissions] as? Int == 0o600)
        }
        #expect(try String(contentsOf: directory.appendingPathComponent("st2-key-list.json"), encoding: .utf8) == Self.keys)
        #expect(try FileManager.default.attributesOfItem(atPath: directory.path)[.posixPermissions] as? Int == 0o700)
        // What was backed up is in the files only: not in the journal, not in the host log.
        #expect(state.hosts[0].steps.allSatisfy { $0.stdoutTail.isEmpty })
        let log = try String(contentsOf: run.stateDir.appendingPathComponent("runs/\(run.record.id)/logs/a.log"), encoding: .utf8)
        #expect(!log.contains("0A1B") && !log.contains("the rest"))
        #expect(log.contains("nothing at /etc/mistral on the host; not kept (optional)"))
        #expect(log.contains("2 key(s) exported"))
    }

    @Test func aBackupCorruptedOnItsWayFailsTheHostBeforeAnyChange() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        run.transport.script(0, BackupScript.hashed(Self.export), .exit(0, stdout: Self.keys, stderr: sent(Self.keys + " ")))
        #expect(await run.run() != .succeeded)
        let state = try await run.state()
        #expect(state.hosts[0].error?.contains("step 'export key-value store' failed: st2-key-list.json arrived corrupted") == true)
        #expect(!run.transport.commands(0).contains("st2ctl stop"))
        #expect(state.artifacts.isEmpty)
        let file = run.stateDir.appendingPathComponent("runs/\(run.record.id)/backups/a/st2-key-list.json")
        #expect(!FileManager.default.fileExists(atPath: file.path), "what arrived corrupted is not left as a backup")
    }

    @Test func aBackupThatCannotBeWrittenFailsTheHostBeforeAnyChange() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        // Where the host's backup dir goes, a file: nothing can be created under it.
        try Data().write(to: run.stateDir.appendingPathComponent("runs/\(run.record.id)/backups"))
        #expect(await run.run() != .succeeded)
        let state = try await run.state()
        #expect(state.hosts[0].error?.hasPrefix("step 'export key-value store' failed: cannot keep the backup:") == true)
        #expect(run.transport.commands(0).isEmpty)
    }

    @Test func anExportThatIsNotAJSONListFailsTheHost() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        let cut = #"[{"name":"k","val"#
        run.transport.script(0, BackupScript.hashed(Self.export), .exit(0, stdout: cut, stderr: sent(cut)))
        #expect(await run.run() != .succeeded)
        #expect(try await run.state().hosts[0].error?.contains("is not a JSON list") == true)
        #expect(!run.transport.commands(0).contains("st2ctl stop"))
    }

    @Test func aMissingRequiredPathOrAFailedExportFailsTheHost() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        run.transport.script(0, BackupScript.hashed(Self.export), .exit(0, stdout: Self.keys, stderr: sent(Self.keys)))
        run.transport.script(0, BackupScript.archive("/etc/st2/keys"), .exit(0, stderr: "\(BackupScript.missingMarker)/etc/st2/keys\n"))
        run.transport.script(0, BackupScript.archive("/etc/st2"), .exit(0, stderr: "\(BackupScript.missingMarker)/etc/st2\n"))
        #expect(await run.run() != .succeeded)
        #expect(try await run.state().hosts[0].error == "step 'back up /etc/st2' failed: nothing at /etc/st2 on the host to back up")

        let failing = try EngineHarness(hosts: [host("a", steps: backupSteps())], batches: [[0]])
        failing.transport.script(0, BackupScript.hashed(Self.export), .exit(1, stderr: "ERROR: 500 Server Error: Internal Server Error\n" + sent("")))
        #expect(await failing.run() != .succeeded)
        #expect(try await failing.state().hosts[0].error?.hasPrefix("step 'export key-value store' failed: exit 1") == true)
    }

    @Test func anOlderRunsAuditLogStepIsTakenAsAnOptionalArchive() async throws {
        let steps = [RunStep(name: "fetch audit logs", command: "/var/log/st2/*.audit.log", kind: .fetchAuditLogs, become: true)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]])
        run.transport.script(0, BackupScript.archive("/var/log/st2/*.audit.log"), .exit(0, stdout: "logs", stderr: sent("logs")))
        #expect(await run.run() == .succeeded)
        #expect(try await run.state().artifacts.map(\.name) == ["audit-logs.tar"])
    }
}
