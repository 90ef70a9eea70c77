import Foundation
import FlotillaCore
import Testing
@testable import flotilla_lab

/// `flotilla rollover` (SPEC §8.5) end to end on lab pairs, logged in as the sudo user:
/// OLD only read (its state and command log), NEW holding every key and pack, a kill
/// mid-load resumed without loading twice, an older NEW refused, a broken pack named, and
/// no secret value anywhere the controller writes.
@Suite struct RolloverTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    /// 120 keys: 75 system (5 of them written before 1.5), 20 system secrets, 15 user
    /// keys and 10 user secrets.
    static let keys: [(name: String, value: String, scope: String, secret: Bool, user: String?, legacy: Bool)] = {
        var keys: [(String, String, String, Bool, String?, Bool)] = []
        for n in 1...75 { keys.append(("sys\(n)", "plain-value-\(n)", "st2kv.system", false, nil, n <= 5)) }
        for n in 1...20 { keys.append(("syssecret\(n)", "Xyzzy-secret-sys-\(n)-Q", "st2kv.system", true, nil, false)) }
        for n in 1...15 { keys.append(("pref\(n)", "user-value-\(n)", "st2kv.user", false, "admin", false)) }
        for n in 1...10 { keys.append(("token\(n)", "Xyzzy-secret-user-\(n)-Q", "st2kv.user", true, "admin", false)) }
        return keys
    }()

    static var secrets: [String] { keys.filter(\.secret).map(\.value) }

    static func spec(newPackages: String = "{st2: 3.8.1-1}", brokenPack: Bool = false, newFaults: String = "{}") -> String {
        let kv = keys.map { key in
            "{name: \(key.name), value: \(key.value), scope: \(key.scope), secret: \(key.secret)" + (key.user.map { ", user: \($0)" } ?? "")
                + (key.legacy ? ", legacy: true" : "") + "}"
        }
        let packs = "[{name: acme_ops}, {name: netbox, version: 2.1.0}, {name: slack_alerts\(brokenPack ? ", broken: true" : "")}]"
        return """
            hosts:
              - name: old
                os: ubuntu18.04
                packages: {st2: 2.10.4-1}
                audit_logs: 2
                packs: \(packs)
                kv: [\(kv.joined(separator: ", "))]
              - name: new
                os: ubuntu20.04
                packages: \(newPackages)
                faults: \(newFaults)
            """
    }

    func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr.suffix(3000))")
    }

    /// Every file under `dir` holding one of `secrets` (bytes, so the SQLite journal too).
    static func filesHolding(_ secrets: [String], under dir: URL) -> [String] {
        var found: [String] = []
        let enumerator = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)
        while let url = enumerator?.nextObject() as? URL {
            guard let data = try? Data(contentsOf: url) else { continue }
            for secret in secrets where data.range(of: Data(secret.utf8)) != nil { found.append("\(url.path): \(secret)") }
        }
        return found
    }

    /// OLD's state and command log show it was only read: nothing registered, loaded,
    /// installed, started or stopped, no detached step, no simulated tool but `st2
    /// --version` and `st2 key list`.
    static func expectOnlyRead(_ lab: TestLab, before: [String: Any]) throws {
        let after = try lab.state("old")
        #expect(NSDictionary(dictionary: before).isEqual(to: after), "OLD's state changed")
        for record in try lab.commandLog("old") {
            let argv = record["argv"] as? [String] ?? []
            switch record["kind"] as? String {
            case "sim":
                let line = ([URL(fileURLWithPath: argv.first ?? "").lastPathComponent] + argv.dropFirst()).joined(separator: " ")
                #expect(line == "st2 --version" || line.hasPrefix("st2 key list"), "OLD ran \(line)")
            case "ssh":
                let line = TestLab.unwrapBecome(argv.first ?? "")
                #expect(record["detached"] == nil, "a detached step on OLD: \(line)")
                for word in ["st2 key load", "st2ctl", "tar -x", "st2 run", "apt-get", "rm -f /opt", "flotilla-step"] {
                    #expect(!line.contains(word), "OLD was sent '\(word)': \(line)")
                }
            default:
                Issue.record("OLD's log has a \(record["kind"] ?? "?") record: \(record)")
            }
        }
    }

    /// NEW holds every key (name, scope, user, secret flag, value) and the three packs.
    static func expectContentOnNew(_ lab: TestLab) throws {
        let state = try lab.state("new")
        let kv = state["kv"] as? [[String: Any]] ?? []
        for key in keys {
            let held = kv.first { $0["name"] as? String == key.name && $0["scope"] as? String == key.scope }
            #expect(held?["value"] as? String == key.value && held?["secret"] as? Bool == key.secret
                    && held?["user"] as? String == key.user && held?["foreign"] as? Bool != true, "\(key.name): \(held ?? [:])")
        }
        let packs = state["packs"] as? [String: String] ?? [:]
        #expect(packs["acme_ops"] == "1.0.0" && packs["netbox"] == "2.1.0" && packs["slack_alerts"] == "1.0.0", "\(packs)")
        let venvs = try lab.asRoot("new", "ls /opt/stackstorm/virtualenvs").stdout.split(separator: "\n")
        #expect(Set(venvs) == ["acme_ops", "netbox", "slack_alerts"])
    }

    @Test func rollsOver120KeysAndThreePacksFromA2xHostReadingOldOnly() throws {
        let lab = try TestLab(spec: Self.spec())
        let state = lab.dir.appendingPathComponent("state").path
        let oldBefore = try lab.state("old")

        let dry = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--dry-run", "--state-dir", state])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("st2 2.10.4") && dry.stdout.contains("st2 3.8.1"), "\(dry.stdout)")
        #expect(dry.stdout.contains("packs to copy: acme_ops, netbox, slack_alerts"), "\(dry.stdout)")
        #expect(dry.stdout.contains("120 keys (system 95, user 25; 30 secrets)"), "\(dry.stdout)")
        #expect(dry.stdout.contains("5 keys written before st2 1.5"), "\(dry.stdout)")
        #expect(dry.stdout.contains("execution history"), "\(dry.stdout)")
        #expect(!FileManager.default.fileExists(atPath: state + "/runs"), "a dry run creates no run")
        #expect(try (lab.state("new")["kv"] as? [Any])?.isEmpty == true, "a dry run changes nothing")

        let result = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--json",
                              "--report", lab.dir.appendingPathComponent("report.json").path, "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(4000))")
        let report = try json(result)
        #expect(report["outcome"] as? String == "succeeded")
        let verify = ExactlyOnceTests.steps(report, "new")["verify keys and packs"]
        #expect(verify?["stdout_tail"] as? String == "verified: 120/120 keys (30 secrets) and 3/3 packs on NEW\n", "\(verify ?? [:])")
        try Self.expectContentOnNew(lab)
        try Self.expectOnlyRead(lab, before: oldBefore)
        let backups = try run([Self.flotilla, "show", "--backups", "--state-dir", state])
        #expect(backups.stdout.contains("audit-logs.tar") && backups.stdout.contains("rollover-packs.tar"), "\(backups.stdout)")

        // No secret in clear: not in the state dir (journal, logs, reports, backups), the
        // controller's output, the report, nor left on NEW.
        #expect(Self.filesHolding(Self.secrets, under: lab.dir.appendingPathComponent("state")).isEmpty)
        #expect(Self.filesHolding(Self.secrets, under: lab.dir.appendingPathComponent("report.json")).isEmpty)
        #expect(Self.filesHolding(Self.secrets, under: lab.labDir.appendingPathComponent("hosts/new")).count >= Self.secrets.count,
                "the search finds the values where they are in clear: the simulated NEW's own state")
        #expect(!Self.secrets.contains { result.stdout.contains($0) || result.stderr.contains($0) })
        // The secrets were re-encrypted with NEW's own datastore key: NEW's ciphertext is
        // not OLD's, and NEW decrypts it. Carrying OLD's ciphertext instead (the backup's
        // export, loaded as it is) leaves NEW unable to decrypt it: why the keys go over
        // decrypted (see RolloverSteps.swift).
        let get = "st2 key get syssecret1 -j"
        let oldCipher = try json(try lab.asRoot("old", get))["value"] as? String
        let newCipher = try json(try lab.asRoot("new", get))["value"] as? String
        #expect(oldCipher != nil && newCipher != nil && oldCipher != newCipher && newCipher != "Xyzzy-secret-sys-1-Q")
        #expect(try json(try lab.asRoot("new", get + " --decrypt"))["value"] as? String == "Xyzzy-secret-sys-1-Q")
        let runDir = try #require(try FileManager.default.contentsOfDirectory(atPath: state + "/runs").first)
        let encrypted = try String(contentsOfFile: "\(state)/runs/\(runDir)/backups/old/st2-key-list.json", encoding: .utf8)
        #expect(encrypted.contains(oldCipher ?? "?") && !encrypted.contains("Xyzzy"), "the backup keeps OLD's values encrypted")
        #expect(try lab.ssh("new", "cat > encrypted.json", input: encrypted).status == 0)
        #expect(try lab.asRoot("new", "st2 key load ~st2ops/encrypted.json >/dev/null").status == 0)
        let carried = try lab.asRoot("new", get + " --decrypt")
        #expect(carried.status != 0 && carried.stderr.contains("InvalidSignatureError"), "\(carried.stdout) \(carried.stderr)")

        let leftovers = try lab.asRoot("new", "ls -A ~st2ops/.flotilla/rollover 2>/dev/null; ls -A /root/.flotilla/steps/*/ 2>/dev/null | grep -c . ; grep -rl Xyzzy ~st2ops/.flotilla /root/.flotilla 2>/dev/null; true")
        #expect(!leftovers.stdout.contains("Xyzzy") && !leftovers.stdout.contains("keys.json"), "\(leftovers.stdout)")
    }

    @Test func aKillDuringTheKeyLoadIsResumedWithoutLoadingTwice() throws {
        let lab = try TestLab(spec: Self.spec(newFaults: #"{tool_slow: [{match: "^st2 key load", delay: 3s}]}"#))
        let state = lab.dir.appendingPathComponent("state").path
        let controller = try Background([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--state-dir", state],
                                        log: lab.dir.appendingPathComponent("controller.log"))
        let started = try lab.waitFor(seconds: 90) { try !ExactlyOnceTests.records(lab, "new", "started", "st2 key load").isEmpty || controller.exited }
        controller.signal(SIGKILL)
        let status = controller.wait()
        try #require(started && status & 0x7f == SIGKILL, "st2 key load never started: \(controller.output.suffix(3000))")
        #expect(try ExactlyOnceTests.records(lab, "new", "sim", "st2 key load").isEmpty, "the kill landed while the load ran")

        let resumed = try run([Self.flotilla, "resume", "--json", "--state-dir", state])
        #expect(resumed.status == 0, "\(resumed.stderr.suffix(4000))")
        let steps = ExactlyOnceTests.steps(try json(resumed), "new")
        #expect(steps["load keys"]?["reattached"] as? Int == 1 && steps["load keys"]?["attempts"] as? Int == 1, "\(steps["load keys"] ?? [:])")
        #expect(steps["verify keys and packs"]?["status"] as? String == "succeeded", "\(steps["verify keys and packs"] ?? [:])")
        let loads = try ExactlyOnceTests.records(lab, "new", "sim", "st2 key load")
        #expect(try ExactlyOnceTests.records(lab, "new", "started", "st2 key load").count == 1 && loads.count == 1, "loaded \(loads.count) times")
        try Self.expectContentOnNew(lab)
        #expect(Self.filesHolding(Self.secrets, under: lab.dir.appendingPathComponent("state")).isEmpty)
    }

    @Test func packsFromInstallsThePacksFromTheRepository() throws {
        let lab = try TestLab(spec: Self.spec(brokenPack: true))
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--json",
                              "--packs-from", "https://git.example.com/st2/stackstorm-{pack}.git", "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        let steps = ExactlyOnceTests.steps(try json(result), "new")
        #expect(steps["install packs from the repository"]?["status"] as? String == "succeeded" && steps["install packs"] == nil)
        #expect(steps["verify keys and packs"]?["stdout_tail"] as? String == "verified: 120/120 keys (30 secrets) and 3/3 packs on NEW\n")
        let installs = try ExactlyOnceTests.records(lab, "new", "sim", "st2 pack install https://git.example.com/st2/stackstorm-acme_ops.git")
        #expect(installs.count == 1)
        #expect(try lab.state("new")["packs"] as? [String: String] ?? [:] == ["chatops": "3.8.1", "core": "3.8.1", "default": "3.8.1", "linux": "3.8.1",
                                                                            "packs": "3.8.1", "acme_ops": "1.0.0", "netbox": "1.0.0", "slack_alerts": "1.0.0"])
    }

    @Test func aNewHostRunningAnOlderReleaseIsRefused() throws {
        let lab = try TestLab(spec: Self.spec(newPackages: "{st2: 2.9.3-1}"))
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--state-dir", state])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains("new (NEW) runs st2 2.9.3, older than old (OLD) at 2.10.4"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state + "/runs"), "nothing started")
        #expect(try ExactlyOnceTests.records(lab, "new", "sim", "st2 key").isEmpty)
        let dry = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--dry-run", "--state-dir", state])
        #expect(dry.status == 1 && dry.stdout.contains("refused: new (NEW) runs st2 2.9.3"), "\(dry.stdout)")
    }

    @Test func aPackThatFailsToRegisterFailsTheRunNamingIt() throws {
        let lab = try TestLab(spec: Self.spec(brokenPack: true))
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "rollover", "-i", lab.path("inventory.ini"), "--from", "old", "--to", "new", "--json", "--state-dir", state])
        #expect(result.status == 2, "\(result.stderr.suffix(3000))")
        let register = ExactlyOnceTests.steps(try json(result), "new")["register packs"]
        #expect(register?["status"] as? String == "failed")
        #expect((register?["error"] as? String)?.hasPrefix("pack slack_alerts failed to register on NEW") == true, "\(register ?? [:])")
        #expect(ExactlyOnceTests.steps(try json(result), "new")["load keys"]?["status"] as? String != "succeeded")
    }
}
