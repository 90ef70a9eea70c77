import Foundation
import Synchronization
import Testing
@testable import FlotillaCore

/// The roll-over's staging and verification handlers over fake sessions: the keys go over
/// decrypted through one owner-only temporary file that is gone once sent, and no value
/// reaches the log or the step's outcome (which the journal records).
@Suite(.timeLimit(.minutes(1))) struct RolloverStepTests {
    /// A session answering each command with scripted stdout, recording what is uploaded
    /// (the local file's bytes and mode at the moment it is sent).
    final class FakeSession: HostConnection, HostFileUpload {
        let answers: [String: String]
        let uploads = Mutex<[(remote: String, bytes: Data, mode: mode_t)]>([])
        let commands = Mutex<[String]>([])

        init(_ answers: [String: String]) { self.answers = answers }

        func run(_ command: String, become: Bool, timeout: Duration?,
                 output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
            commands.withLock { $0.append(command) }
            let text = answers.first { command.hasPrefix($0.key) }?.value ?? ""
            Array(text.utf8).withUnsafeBytes { output(.stdout, $0) }
            return StepOutcome(exitStatus: 0, stdoutTail: text)
        }

        func close() async {}

        func upload(_ localPath: String, to remotePath: String) async throws {
            var info = stat()
            stat(localPath, &info)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: localPath))
            uploads.withLock { $0.append((remotePath, bytes, info.st_mode & 0o777)) }
        }
    }

    static let export = "st2 key list -j -n -1 -s all --decrypt"
    static let oldKeys = #"""
        [{"name": "a", "value": "1", "scope": "st2kv.system", "secret": false, "encrypted": false},
         {"name": "pw", "value": "Sup3r-Secret-Value", "scope": "st2kv.system", "secret": true, "encrypted": false},
         {"name": "legacy", "value": "x"}]
        """#

    func context(_ dir: URL) -> StepContext {
        let run = dir.appendingPathComponent("runs/20261203-000000-aaaa")
        try? FileManager.default.createDirectory(at: run.appendingPathComponent("logs"), withIntermediateDirectories: true)
        return StepContext(host: RunHost(name: "new", address: "127.0.0.1", batch: 1, steps: []),
                           log: HostLog(run.appendingPathComponent("logs/new.log")), settings: RolloutEngine.Settings(runDirectory: run),
                           clock: SystemClock())
    }

    func scratch() throws -> URL {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("rollover-steps-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func stagingSendsTheDecryptedKeysOwnerOnlyAndLeavesNoTemporaryFile() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) } // scratch space; nothing to keep
        let old = FakeSession([Self.export: Self.oldKeys]), new = FakeSession([:])
        let step = RunStep(name: "stage keys on NEW", command: RolloverStaging.keysFile, kind: .rolloverStage,
                           expect: RolloverStepSpec(old: "old", export: Self.export).text)
        let context = context(dir)
        let result = await RolloverStageStep(connectOld: { old }).perform(step, on: new, context: context)
        #expect(result.status == .succeeded, "\(result.message ?? "")")
        #expect(result.outcome?.stdoutTail == "" && result.outcome?.stderrTail == "")
        let sent = try #require(new.uploads.withLock { $0 }.first)
        #expect(sent.remote == ".flotilla/rollover/20261203-000000-aaaa/keys.json" && sent.mode == 0o600)
        let items = try #require(try JSONSerialization.jsonObject(with: sent.bytes) as? [[String: Any]])
        #expect(items.count == 3 && items.allSatisfy { $0["encrypted"] == nil && $0["scope"] != nil && $0["secret"] != nil })
        #expect(items.contains { $0["name"] as? String == "pw" && $0["value"] as? String == "Sup3r-Secret-Value" && $0["secret"] as? Bool == true })
        let left = try FileManager.default.contentsOfDirectory(atPath: context.settings.runDirectory.path)
        #expect(left == ["logs"], "the temporary key file is gone: \(left)")
        let log = try String(contentsOf: context.settings.runDirectory.appendingPathComponent("logs/new.log"), encoding: .utf8)
        #expect(log.contains("3 key(s) of old exported decrypted") && !log.contains("Sup3r"))
        #expect(new.commands.withLock { $0 }.first?.hasPrefix("mkdir -p .flotilla/rollover/20261203-000000-aaaa && chmod 700") == true)
    }

    @Test func verificationCountsAndNamesWhatDiffersWithoutItsValue() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) } // scratch space; nothing to keep
        let packs = #"[{"ref": "core"}, {"ref": "acme"}]"#
        let step = RunStep(name: "verify keys and packs", command: Self.export, kind: .rolloverVerify,
                           expect: RolloverStepSpec(old: "old", export: Self.export, newExport: Self.export, packs: ["acme"]).text, become: true)
        let old = FakeSession([Self.export: Self.oldKeys])
        let same = FakeSession([Self.export: Self.oldKeys.replacingOccurrences(of: "\"value\": \"x\"}", with: "\"value\": \"x\", \"scope\": \"st2kv.system\", \"secret\": false}"),
                                "st2 pack list": packs])
        let good = await RolloverVerifyStep(connectOld: { old }).perform(step, on: same, context: context(dir))
        #expect(good.status == .succeeded && good.outcome?.stdoutTail == "verified: 3/3 keys (1 secret) and 1/1 packs on NEW\n", "\(good.message ?? "")")

        let other = FakeSession([Self.export: Self.oldKeys.replacingOccurrences(of: "Sup3r-Secret-Value", with: "changed"), "st2 pack list": #"[{"ref": "core"}]"#])
        let bad = await RolloverVerifyStep(connectOld: { old }).perform(step, on: other, context: context(dir))
        #expect(bad.status == .failed)
        #expect(bad.message == "verified: 2/3 keys (1 secret) and 0/1 packs on NEW: st2kv.system/pw has another value on NEW; NEW does not list the pack(s) acme")
        #expect(!(bad.message ?? "").contains("Sup3r") && !(bad.outcome?.stdoutTail ?? "").contains("Sup3r"))
    }
}
