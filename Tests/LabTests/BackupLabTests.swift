import FlotillaCore
import Foundation
import Testing
@testable import flotilla_lab

/// The backup on lab hosts (SPEC §8.4), logging in as the non-root user with sudo: every
/// key of a paged 2.4 API and of a 3.8 one with secrets and user keys, the root-only audit
/// logs and crypto key read through become, `show --backups` telling what is on disk, and
/// a corrupted backup failing its host before `st2ctl stop`.
@Suite(.serialized, .timeLimit(.minutes(5))) struct BackupLabTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr.suffix(3000))")
    }

    /// Whether the host's command log shows `st2ctl stop`, sent or run by a simulated tool.
    static func sawStop(_ lab: TestLab, _ host: String) throws -> Bool {
        try lab.commandLog(host).contains { record in
            guard let argv = record["argv"] as? [String], let first = argv.first else { return false }
            let line = record["kind"] as? String == "ssh" ? TestLab.unwrapBecome(first)
                : ([URL(fileURLWithPath: first).lastPathComponent] + argv.dropFirst()).joined(separator: " ")
            return line.contains("st2ctl stop")
        }
    }

    /// The member `name` of the tar archive at `archive`, as the system's tar reads it.
    static func member(_ archive: String, _ name: String) throws -> String {
        let result = try run(["/usr/bin/tar", "-xOf", archive, name])
        #expect(result.status == 0, "\(archive): \(result.stderr)")
        return result.stdout
    }

    @Test func everyKeyAndEveryRootOnlyFileIsBackedUpAndShown() throws {
        let newKeys = [
            ("api_url", "https://example.test", "st2kv.system", false, nil),
            ("db_password", "s3cr3t-db", "st2kv.system", true, nil),
            ("token", "s3cr3t-user", "st2kv.user", true, "stanley"),
            ("theme", "dark", "st2kv.user", false, "stanley"),
        ] as [(String, String, String, Bool, String?)]
        let newSpec = newKeys.map { name, value, scope, secret, user in
            "{name: \(name), value: \"\(value)\", scope: \(scope), secret: \(secret)\(user.map { ", user: \($0)" } ?? "")}"
        }.joined(separator: ", ")
        let lab = try TestLab(spec: """
            hosts:
              - {name: old, os: el7, packages: {st2: 2.4.1-1}, available: {st2: [2.4.1-1, 3.8.1-1]}, kv: 120, audit_logs: 2}
              - {name: new, os: ubuntu20.04, packages: {st2: 3.8.0-1}, available: {st2: [3.8.0-1, 3.8.1-1]}, kv: [\(newSpec)],
                 audit_logs: [st2api.audit.log]}
            """)
        // Root's alone on the hosts: the login user cannot read them.
        #expect(try lab.ssh("old", "cat /var/log/st2/st2component1.audit.log").status != 0)
        #expect(try lab.ssh("new", "cat /etc/st2/keys/datastore_key.json").status != 0)

        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--batch", "2", "--json", "--state-dir", state])
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        let runID = try #require(try json(result)["run_id"] as? String)
        let backups = URL(fileURLWithPath: state).appendingPathComponent("runs/\(runID)/backups")

        // The 2.4 host's API pages at 50 keys: every one of its 120 is in the export.
        let old = try JSONSerialization.jsonObject(with: Data(contentsOf: backups.appendingPathComponent("old/st2-key-list.json"))) as? [[String: Any]]
        #expect(Set((old ?? []).compactMap { $0["name"] as? String }) == Set((1...120).map { "key\($0)" }))
        let exported = try lab.commandLog("old").compactMap { ($0["argv"] as? [String])?.joined(separator: " ") }.filter { $0.hasSuffix("st2 key list -j -n 0 -s all") }
        #expect(!exported.isEmpty, "the 2.4 flags of the catalog")

        // The 3.8 host: system and user keys, secrets still encrypted.
        let newText = try String(contentsOf: backups.appendingPathComponent("new/st2-key-list.json"), encoding: .utf8)
        let new = try #require(try JSONSerialization.jsonObject(with: Data(newText.utf8)) as? [[String: Any]])
        #expect(Set(new.map { "\($0["name"] ?? "")|\($0["scope"] ?? "")|\($0["secret"] as? Bool ?? false)|\($0["user"] ?? "")" })
                == Set(newKeys.map { "\($0.0)|\($0.2)|\($0.3)|\($0.4 ?? "")" }))
        #expect(!newText.contains("s3cr3t"), "secrets stay encrypted")

        // Root-only files, read through become, are in the archives as they are on the hosts.
        for (host, log) in [("old", "st2component1.audit.log"), ("old", "st2component2.audit.log"), ("new", "st2api.audit.log")] {
            let archive = backups.appendingPathComponent("\(host)/audit-logs.tar").path
            #expect(try Self.member(archive, "var/log/st2/\(log)") == lab.asRoot(host, "cat /var/log/st2/\(log)").stdout)
        }
        for host in ["old", "new"] {
            let key = try lab.asRoot(host, "cat /etc/st2/keys/datastore_key.json").stdout
            #expect(key.contains("aesKeyString"))
            #expect(try Self.member(backups.appendingPathComponent("\(host)/st2-keys.tar").path, "etc/st2/keys/datastore_key.json") == key)
            #expect(try Self.member(backups.appendingPathComponent("\(host)/etc-st2.tar").path, "etc/st2/st2.conf").contains("st2.conf of \(host)"))
            #expect(!FileManager.default.fileExists(atPath: backups.appendingPathComponent("\(host)/etc-mistral.tar").path), "no /etc/mistral")
            let log = try String(contentsOfFile: state + "/runs/\(runID)/logs/\(host).log", encoding: .utf8)
            #expect(log.contains("backup: nothing at /etc/mistral on the host; not kept (optional)"))
        }

        // `show --backups` lists every file with its size and SHA-256 as they are on disk.
        let shown = try run([Self.flotilla, "show", runID, "--backups", "--state-dir", state])
        #expect(shown.status == 0, "\(shown.stderr)")
        let rows = shown.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.count == 8, "\(shown.stdout)")
        for row in rows {
            let path = try #require(row.last)
            #expect(path.hasPrefix(backups.appendingPathComponent(row[0]).path + "/\(row[1])"))
            let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
            #expect(row[2] == String(size))
            let sum = try run(["/usr/bin/sha256sum", path]).stdout.prefix(64)
            #expect(row[3] == String(sum), "\(path)")
            #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        }
        for directory in [backups.path, backups.appendingPathComponent("old").path] {
            #expect(try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int == 0o700)
        }
    }

    @Test func aBackupCorruptedOnItsWayFailsTheHostBeforeSt2ctlStop() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.7.1-1}, available: [3.7.1-1, 3.8.1-1]}
            hosts:
              - {name: bad, faults: {corrupt: [{match: "for p in etc/st2;"}]}}
            """)
        let state = lab.dir.appendingPathComponent("state").path
        let result = try run([Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--json", "--state-dir", state])
        #expect(result.status != 0)
        let host = try #require((try json(result)["hosts"] as? [[String: Any]])?.first)
        #expect(host["status"] as? String == "failed")
        #expect((host["error"] as? String ?? "").contains("step 'back up /etc/st2' failed: etc-st2.tar arrived corrupted"), "\(host["error"] ?? "")")
        #expect(try lab.commandLog("bad").contains { $0["fault"] as? String == "corrupt" }, "the fault fired")
        #expect(try !Self.sawStop(lab, "bad"), "st2ctl stop never ran")
        #expect(try lab.packages("bad")["st2"] == "3.7.1-1")
        let runID = try #require(try json(result)["run_id"] as? String)
        let backups = URL(fileURLWithPath: state).appendingPathComponent("runs/\(runID)/backups/bad")
        #expect(FileManager.default.fileExists(atPath: backups.appendingPathComponent("st2-keys.tar").path), "taken before")
        #expect(!FileManager.default.fileExists(atPath: backups.appendingPathComponent("etc-st2.tar").path), "not left as a backup")
    }
}
