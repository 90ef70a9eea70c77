import Foundation
import Testing
@testable import flotilla_lab

/// The built `flotilla` binary, beside the test bundle.
let flotilla: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("flotilla").path
}()

struct Output {
    var status: Int32
    var stdout: String
    var stderr: String

    var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]
    }
}

/// Runs flotilla (or `program`) with `arguments` in `directory`, with a clean environment
/// (no inventory variables, HOME pointing at the directory so no real ~/.ssh/config is read).
func runFlotilla(_ arguments: [String], in directory: URL, program: String = flotilla,
                 environment: [String: String] = [:]) throws -> Output {
    // The lab's runner (posix_spawn, not Foundation's Process); `cd` through a shell.
    let result = try runProcess(["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory.path, program] + arguments,
                                environment: ["PATH": "/usr/bin:/bin", "HOME": directory.path].merging(environment) { $1 })
    return Output(status: result.status, stdout: result.stdout, stderr: result.stderr)
}

final class Scratch {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-cli-\(UUID().uuidString)")

    init(_ files: [String: String]) throws {
        for (path, text) in files {
            let file = url.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: file, atomically: true, encoding: .utf8)
        }
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

@Suite struct HostsCommandTests {
    static let inventory = """
        [web]
        web-[01:02] ansible_host=10.0.0.1 ansible_password=hunter2
        [db]
        db01 ansible_port=2222 db_token='t0k3n'
        [prod:children]
        web
        db
        [prod:vars]
        ansible_user=deploy
        ansible_become=true
        ansible_ssh_common_args='-J ops@bastion:2200'
        """

    @Test func jsonListsHostsWithSettingsAndRedactedVars() throws {
        let scratch = try Scratch(["hosts.ini": Self.inventory])
        let result = try runFlotilla(["hosts", "-i", "hosts.ini", "--json", "--vars"], in: scratch.url)
        #expect(result.status == 0, "\(result.stderr)")
        let hosts = try #require(result.json?["hosts"] as? [[String: Any]])
        #expect(hosts.map { $0["name"] as? String } == ["web-01", "web-02", "db01"])
        let db = hosts[2]
        #expect(db["address"] as? String == "db01")
        #expect(db["port"] as? Int == 2222)
        #expect(db["user"] as? String == "deploy")
        #expect(db["groups"] as? [String] == ["db", "prod"])
        #expect(db["proxy_jump"] as? [String] == ["ops@bastion:2200"])
        #expect(db["become"] as? Bool == true)
        let vars = try #require(db["vars"] as? [String: Any])
        #expect(vars["db_token"] as? String == "<redacted>")
        #expect(vars["ansible_port"] as? Int == 2222)
        #expect((hosts[0]["vars"] as? [String: Any])?["ansible_password"] as? String == "<redacted>")
        #expect(!result.stdout.contains("hunter2") && !result.stdout.contains("t0k3n"))
        #expect(result.stderr.isEmpty)
    }

    @Test func tableWithVarsNeverShowsSecrets() throws {
        let scratch = try Scratch(["hosts.ini": Self.inventory])
        let result = try runFlotilla(["hosts", "-i", "hosts.ini", "--vars", "--limit", "web"], in: scratch.url)
        #expect(result.status == 0)
        #expect(result.stdout.contains("web-01") && !result.stdout.contains("db01"))
        #expect(result.stdout.contains("ansible_password = \"<redacted>\""))
        #expect(!result.stdout.contains("hunter2"))
        #expect(result.stdout.hasSuffix("2 hosts\n"))
    }

    @Test(arguments: [
        (["hosts", "-i", "bad.ini"], "bad.ini:4: [web:children] names group 'nosuch'"),
        (["hosts", "-i", "hosts.ini", "--limit", "web:nosuch"], "'nosuch' matches no host or group"),
        (["hosts", "-i", "missing.ini"], "missing.ini: no such inventory file or directory"),
        (["hosts", "-i", "port.ini"], "port.ini:1: port 'ssh' of host 'h1' is not a number"),
    ])
    func badInputExits65AndPrintsNothing(arguments: [String], message: String) throws {
        let scratch = try Scratch([
            "hosts.ini": Self.inventory,
            "bad.ini": "[web]\nw1\n[web:children]\nnosuch\n",
            "port.ini": "h1 ansible_port=ssh\n",
        ])
        let result = try runFlotilla(arguments, in: scratch.url)
        #expect(result.status == 65)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("flotilla: error: "), "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test func inventoryFromTheEnvironmentOrAUsageError() throws {
        let scratch = try Scratch(["hosts.ini": "h1\n"])
        let none = try runFlotilla(["hosts"], in: scratch.url)
        #expect(none.status == 64)
        #expect(none.stderr.contains("no inventory given"))
        let fromEnvironment = try runFlotilla(["hosts"], in: scratch.url, environment: ["ANSIBLE_INVENTORY": "hosts.ini"])
        #expect(fromEnvironment.status == 0)
        #expect(fromEnvironment.stdout.contains("h1"))
    }

    @Test func sshConfigOptionFillsUnsetSettings() throws {
        let scratch = try Scratch([
            "hosts.ini": "st2-01\nst2-02 ansible_user=own\n",
            "ssh_config": "Host st2-*\n  HostName 127.0.0.9\n  User cfg\n  Port 2201\n",
        ])
        let result = try runFlotilla(["hosts", "-i", "hosts.ini", "--ssh-config", "ssh_config", "--json"], in: scratch.url)
        let hosts = try #require(result.json?["hosts"] as? [[String: Any]])
        #expect(hosts.map { "\($0["address"]!) \($0["port"]!) \($0["user"]!)" } == ["127.0.0.9 2201 cfg", "127.0.0.9 2201 own"])
        let ignored = try runFlotilla(["hosts", "-i", "hosts.ini", "--ssh-config", "none", "--json"], in: scratch.url)
        #expect((ignored.json?["hosts"] as? [[String: Any]])?.first?["port"] as? Int == 22)
    }

    @Test func helpShowsExamplesAndExitCodes() throws {
        let scratch = try Scratch([:])
        try FileManager.default.createDirectory(at: scratch.url, withIntermediateDirectories: true)
        let result = try runFlotilla(["hosts", "--help"], in: scratch.url)
        #expect(result.status == 0)
        #expect(result.stdout.contains("Examples:"))
        #expect(result.stdout.contains("65 bad input data"))
        #expect(result.stdout.contains("--limit <pattern>"))
    }
}
