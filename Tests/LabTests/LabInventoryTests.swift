import Foundation
import Testing
@testable import flotilla_lab

/// `flotilla hosts` on the inventories flotilla-lab writes: INI, YAML and the ssh_config
/// all resolve to the lab's hosts, as ansible-inventory resolves them. No lab is started:
/// the files are written for a generated fleet.
@Suite final class LabInventoryTests {
    let dir: URL
    let hosts: [LabRecord.Host]

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-lab-inv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let specs = LabSpec.generate(count: 30)
        hosts = specs.enumerated().map { index, spec in
            LabRecord.Host(name: spec.name, address: "127.66.0.\(index + 1)", port: 2222, dir: "")
        }
        let files = LabInventory(dir: dir, specs: specs, hosts: hosts, clientKey: dir.appendingPathComponent("id_ed25519"))
        try files.ini().write(to: dir.appendingPathComponent("inventory.ini"), atomically: true, encoding: .utf8)
        try files.yaml().write(to: dir.appendingPathComponent("inventory.yaml"), atomically: true, encoding: .utf8)
        try files.sshConfig().write(to: dir.appendingPathComponent("ssh_config"), atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: dir) }

    let flotilla = productsDir.appendingPathComponent("flotilla").path

    func resolve(_ arguments: [String]) throws -> [[String: Any]] {
        let result = try run([flotilla, "hosts", "--json", "--vars", "--ssh-config", "none"] + arguments)
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return try #require(json?["hosts"] as? [[String: Any]])
    }

    @Test func iniAndYAMLResolveToTheLabHosts() throws {
        let ini = try resolve(["-i", dir.appendingPathComponent("inventory.ini").path])
        let yaml = try resolve(["-i", dir.appendingPathComponent("inventory.yaml").path])
        #expect(ini.map { $0["name"] as? String } == hosts.map(\.name))
        #expect(NSArray(array: ini) == NSArray(array: yaml))
        for (entry, host) in zip(ini, hosts) {
            #expect(entry["address"] as? String == host.address)
            #expect(entry["port"] as? Int == host.port)
            #expect(entry["user"] as? String == "root")
            #expect((entry["groups"] as? [String])?.contains("st2") == true)
            #expect((entry["identity_files"] as? [String]) == [dir.appendingPathComponent("id_ed25519").path])
        }
        let clusters = try resolve(["-i", dir.appendingPathComponent("inventory.ini").path, "--limit", "cluster_c2:&zone_b"])
        #expect(clusters.map { $0["name"] as? String } == ["st2-05"])
    }

    @Test func userLoginResolvesToTheLoginUserWithBecome() throws {
        let files = LabInventory(dir: dir, specs: LabSpec.generate(count: 30), hosts: hosts, clientKey: dir.appendingPathComponent("id_ed25519"),
                                 login: .user, becomePassword: "lab-Secret-1")
        for (name, text) in [("user.ini", files.ini()), ("user.yaml", files.yaml())] {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
            let resolved = try resolve(["-i", dir.appendingPathComponent(name).path])
            #expect(resolved.count == hosts.count)
            for entry in resolved {
                #expect(entry["user"] as? String == "st2ops" && entry["become"] as? Bool == true, "\(name): \(entry)")
                #expect(entry["become_user"] as? String == "root", "\(name)")
            }
        }
        #expect(files.sshConfig().contains("    User st2ops\n"))
    }

    @Test func sshConfigAloneGivesTheSameAddresses() throws {
        let names = hosts.map(\.name).joined(separator: ",") + ","
        let viaConfig = try resolve(["-i", names, "--ssh-config", dir.appendingPathComponent("ssh_config").path])
        #expect(viaConfig.map { "\($0["address"]!):\($0["port"]!):\($0["user"]!)" } == hosts.map { "\($0.address):\($0.port):root" })
    }

    @Test func matchesAnsibleInventory() throws {
        let tool = try #require(LabAnsibleTests.tool("ansible-inventory"), "ansible-inventory is not installed (scripts/test installs ansible-core)")
        for file in ["inventory.ini", "inventory.yaml"] {
            let path = dir.appendingPathComponent(file).path
            let ansible = try run([tool, "-i", path, "--list"])
            #expect(ansible.status == 0, "\(ansible.stderr)")
            let listed = try #require(try JSONSerialization.jsonObject(with: Data(ansible.stdout.utf8)) as? [String: Any])
            let hostvars = try #require((listed["_meta"] as? [String: Any])?["hostvars"] as? [String: Any])
            for entry in try resolve(["-i", path]) {
                let name = try #require(entry["name"] as? String)
                let expected = try #require(hostvars[name] as? [String: Any])
                #expect(NSDictionary(dictionary: expected) == NSDictionary(dictionary: entry["vars"] as? [String: Any] ?? [:]), "\(name)")
                #expect(Set(entry["groups"] as? [String] ?? []) == Self.groups(of: name, in: listed))
            }
        }
    }

    /// Every group holding `host` directly or through children, except `all`, from
    /// ansible-inventory's `--list` tree.
    static func groups(of host: String, in listed: [String: Any]) -> Set<String> {
        var parents: [String: [String]] = [:]
        var direct: Set<String> = []
        for (group, body) in listed where group != "_meta" {
            let body = body as? [String: Any] ?? [:]
            for child in body["children"] as? [String] ?? [] { parents[child, default: []].append(group) }
            if (body["hosts"] as? [String] ?? []).contains(host) { direct.insert(group) }
        }
        var result = direct
        var stack = Array(direct)
        while let next = stack.popLast() {
            for parent in parents[next] ?? [] where result.insert(parent).inserted { stack.append(parent) }
        }
        result.remove("all")
        return result
    }
}
