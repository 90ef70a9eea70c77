import Foundation
import Testing
@testable import FlotillaCore

/// The roll-over's pure parts (SPEC §8.5): the plan from what a (fake) probe found, the
/// steps it becomes, the key file `st2 key load` gets, and the verification's comparison.
@Suite(.timeLimit(.minutes(1))) struct RolloverPlanTests {
    static func side(_ host: String, _ version: String?, packs: [String], keys: [RolloverKey] = []) -> RolloverSide {
        RolloverSide(host: host, version: version.flatMap(StackStormVersion.init), packs: packs, keys: keys)
    }

    static let oldKeys = [
        RolloverKey(name: "a", scope: "st2kv.system", secret: false),
        RolloverKey(name: "b", scope: "st2kv.system", secret: true),
        RolloverKey(name: "c", scope: "st2kv.user", secret: true, user: "admin"),
        RolloverKey(name: "d", scope: nil, secret: nil),
    ]

    static let plan = RolloverPlan.plan(old: side("old", "2.10.4", packs: ["acme", "chatops", "core", "default", "linux", "netbox", "packs", "shared"], keys: oldKeys),
                                        new: side("new", "3.8.1", packs: ["chatops", "core", "default", "linux", "packs", "shared", "st2"]))

    @Test func copiesThePacksOldHasNewLacksAndStackStormDoesNotShip() {
        #expect(Self.plan.refusal == nil)
        #expect(Self.plan.packsToCopy == ["acme", "netbox"])
        #expect(Self.plan.packsOnBoth == ["shared"])
    }

    @Test func countsTheKeysPerScopeWithPairsFromBefore15AsSystem() {
        let counts = Self.plan.keyCounts
        #expect(counts.byScope.map(\.scope) == ["system", "user"] && counts.byScope.map(\.count) == [3, 1])
        #expect(counts.secrets == 2 && counts.legacy == 1)
        #expect(Self.plan.keySummary == "4 keys (system 3, user 1; 2 secrets)")
    }

    @Test func theRenderedPlanSaysWhatDoesNotCarryOver() {
        let text = Self.plan.rendered
        #expect(text.hasPrefix("roll-over old (OLD, st2 2.10.4) -> new (NEW, st2 3.8.1)"))
        #expect(text.contains("packs to copy: acme, netbox"))
        #expect(text.contains("packs NEW has already (left as they are): shared"))
        #expect(text.contains("1 key written before st2 1.5 gets scope system and secret false"))
        #expect(text.contains("execution history") && text.contains("audit logs, kept with the backup, are the record"))
    }

    @Test func refusesAnOlderNewAHostWithoutSt2AndOneHostAsBoth() {
        let older = RolloverPlan.plan(old: Self.side("old", "3.4.1", packs: []), new: Self.side("new", "3.2.0", packs: []))
        #expect(older.refusal == "new (NEW) runs st2 3.2.0, older than old (OLD) at 3.4.1: NEW must run the same release or newer")
        #expect(older.rendered.contains("refused: new (NEW) runs st2 3.2.0"))
        #expect(RolloverPlan.plan(old: Self.side("old", "3.4.1", packs: []), new: Self.side("new", nil, packs: [])).refusal?.contains("does not run st2") == true)
        #expect(RolloverPlan.plan(old: Self.side("old", nil, packs: []), new: Self.side("new", "3.8.1", packs: [])).refusal == "old (OLD) does not run st2")
        #expect(RolloverPlan.plan(old: Self.side("a", "3.8.1", packs: []), new: Self.side("a", "3.8.1", packs: [])).refusal?.contains("same host") == true)
        // The same release is fine; so is a newer package revision of it.
        #expect(RolloverPlan.plan(old: Self.side("old", "3.8.1", packs: []), new: Self.side("new", "3.8.1", packs: [])).refusal == nil)
    }

    @Test func oldOnlyReadsNewChangesDetachedAndStagingRunsAgainOnResume() throws {
        let steps = Self.plan.steps(run: "20261203-101010-ab12", catalog: try MigrationCatalog.bundled())
        #expect(steps.old.allSatisfy { !$0.kind.runsDetached }, "OLD's steps only read: \(steps.old.map(\.kind))")
        #expect(steps.old.map(\.name) == ["export key-value store", "back up the datastore crypto key", "back up /etc/st2", "back up /etc/mistral",
                                          "back up audit logs", "archive packs to copy"])
        #expect(steps.old.last?.command == "/opt/stackstorm/packs/acme /opt/stackstorm/packs/netbox")
        #expect(steps.new.map(\.name) == ["stage packs on NEW", "install packs", "register packs", "set up virtualenvs", "stage keys on NEW",
                                          "load keys", "verify keys and packs"])
        #expect(steps.new.map(\.kind.runsDetached) == [false, true, true, true, false, true, false])
        #expect(steps.new.allSatisfy { $0.become || $0.kind == .rolloverStage })
        #expect(steps.new[3].command == "st2 run packs.setup_virtualenv packs=acme,netbox")
        #expect(steps.new[5].command.contains("st2 key load \"$f\" >/dev/null; rc=$?; rm -f \"$f\"; exit $rc"))
        #expect(steps.new[5].command.contains(".flotilla/rollover/20261203-101010-ab12"))
        let verify = try #require(RolloverStepSpec(steps.new[6]))
        #expect(verify.old == "old" && verify.packs == ["acme", "netbox"] && verify.export?.hasSuffix("--decrypt") == true)
    }

    @Test func withNothingToCopyOnlyTheVerificationRunsOnNew() throws {
        let plan = RolloverPlan.plan(old: Self.side("old", "3.8.1", packs: ["core"]), new: Self.side("new", "3.8.1", packs: ["core"]))
        let steps = plan.steps(run: "r", catalog: try MigrationCatalog.bundled())
        #expect(steps.new.map(\.name) == ["verify keys and packs"])
        #expect(!steps.old.contains { $0.name == "archive packs to copy" })
    }

    @Test func packsFromInstallsFromTheRepositoryInsteadOfCopying() throws {
        var plan = RolloverPlan.plan(old: Self.plan.old, new: Self.plan.new, packsFrom: "https://git.example.com/st2/{pack}.git")
        #expect(plan.packURL("acme") == "https://git.example.com/st2/acme.git")
        let steps = plan.steps(run: "r", catalog: try MigrationCatalog.bundled())
        #expect(!steps.old.contains { $0.name == "archive packs to copy" })
        #expect(steps.new.map(\.name) == ["install packs from the repository", "stage keys on NEW", "load keys", "verify keys and packs"])
        #expect(steps.new[0].command == "st2 pack install https://git.example.com/st2/acme.git https://git.example.com/st2/netbox.git")
        #expect(steps.new[0].kind.runsDetached && steps.new[0].become)
        #expect(plan.rendered.contains("packs to install on NEW with st2 pack install (--packs-from): https://git.example.com/st2/acme.git, "))
        plan.packsFrom = "https://git.example.com/packs/"
        #expect(plan.packURL("netbox") == "https://git.example.com/packs/netbox")
    }

    @Test func theProbeReadsBothVersionFormsAndThePacks() {
        let new = RolloverProbe.parse("flotilla-rollover st2\nst2 3.8.1, on Python 3.8.10\nflotilla-rollover packs\ncore\nacme\n")
        #expect(new.version == StackStormVersion("3.8.1") && new.packs == ["acme", "core"])
        #expect(RolloverProbe.parse("flotilla-rollover st2\nst2 2.10.4\nflotilla-rollover packs\n").version == StackStormVersion("2.10.4"))
        #expect(RolloverProbe.parse("flotilla-rollover st2\nsh: 1: st2: not found\nflotilla-rollover packs\n").version == nil)
    }

    // MARK: Keys

    static let decrypted = #"""
        [{"name": "a", "value": "1", "scope": "st2kv.system", "secret": false, "encrypted": false},
         {"name": "b", "value": "hunter2", "scope": "st2kv.system", "secret": true, "encrypted": false},
         {"name": "c", "value": "tok", "scope": "st2kv.user", "user": "admin", "secret": true},
         {"name": "d", "value": "old"}]
        """#

    @Test func theLoadFileHasEveryPairWithScopeAndSecretAndNoEncryptedFlag() throws {
        let file = try RolloverKeys.loadFile(fromDecryptedExport: Data(Self.decrypted.utf8))
        #expect(file.count == 4)
        let items = try #require(try JSONSerialization.jsonObject(with: file.json) as? [[String: Any]])
        #expect(items.allSatisfy { $0["encrypted"] == nil && $0["scope"] is String && $0["secret"] is Bool })
        let legacy = try #require(items.first { $0["name"] as? String == "d" })
        #expect(legacy["scope"] as? String == "st2kv.system" && legacy["secret"] as? Bool == false && legacy["value"] as? String == "old")
        let user = try #require(items.first { $0["name"] as? String == "c" })
        #expect(user["user"] as? String == "admin" && user["scope"] as? String == "st2kv.user" && user["secret"] as? Bool == true)
    }

    @Test func anExportStillEncryptedIsRefusedNotLoadedAsCiphertext() {
        let encrypted = #"[{"name": "b", "value": "0A1B2C", "scope": "st2kv.system", "secret": true, "encrypted": true}]"#
        #expect(throws: RolloverKeys.ExportError.self) { try RolloverKeys.loadFile(fromDecryptedExport: Data(encrypted.utf8)) }
        #expect(throws: RolloverKeys.ExportError.self) { try RolloverKeys.loadFile(fromDecryptedExport: Data("not json".utf8)) }
    }

    @Test func verificationNamesMissingAndDifferentPairsButNeverTheirValues() throws {
        let new = #"""
            [{"name": "a", "value": "1", "scope": "st2kv.system", "secret": false},
             {"name": "b", "value": "hunter3", "scope": "st2kv.system", "secret": true},
             {"name": "c", "value": "tok", "scope": "st2kv.user", "user": "admin", "secret": false},
             {"name": "extra", "value": "x", "scope": "st2kv.system", "secret": false}]
            """#
        let comparison = try RolloverKeys.compare(old: Data(Self.decrypted.utf8), new: Data(new.utf8))
        #expect(comparison.expected == 4 && comparison.matching == 1 && comparison.secrets == 2)
        #expect(comparison.problems == ["st2kv.system/b has another value on NEW", "st2kv.user/admin/c is not secret on NEW", "st2kv.system/d is missing on NEW"])
        #expect(!comparison.problems.joined().contains("hunter"))
        let same = try RolloverKeys.compare(old: Data(Self.decrypted.utf8), new: Data(Self.decrypted.utf8))
        #expect(same.problems.isEmpty && same.matching == 4)
    }

    @Test func aRegistrationFailureNamesItsPack() {
        let text = "2026-12-03 10:00:00,000 ERROR [-] Failed to register pack \"slack_alerts\": Pack requires Python 2.x"
        #expect(RolloverRegisterStep.failedPack(text) == "slack_alerts")
        #expect(RolloverRegisterStep.failedPack("Registered 7 packs.") == nil)
        #expect(RolloverKeys.packRefs(Data(#"[{"ref": "core"}, {"name": "acme"}]"#.utf8)) == ["core", "acme"])
    }
}
