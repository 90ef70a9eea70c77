import Foundation
import Testing
@testable import FlotillaCore

@Suite struct ConnectionSettingsTests {
    func settings(_ ini: String, host: String, sshConfig: String? = nil) throws -> ConnectionSettings {
        let inv = try inventory(ini: ini)
        let config = try sshConfig.map { try SSHConfig.parse($0, file: "config", home: "/home/op") }
        return try ConnectionSettings.resolve(try #require(inv.host(named: host)), sshConfig: config, localUser: "op", home: "/home/op")
    }

    @Test func defaultsAreTheNameThePort22AndTheLocalUser() throws {
        let s = try settings("h1\n", host: "h1")
        #expect((s.address, s.port, s.user) == ("h1", 22, "op"))
        #expect(s.identityFiles.isEmpty && s.proxyJump.isEmpty && !s.become && s.becomeUser == "root")
    }

    @Test func inventoryVariablesAndTheirAliases() throws {
        let s = try settings("""
            h1 ansible_host=10.0.0.1 ansible_ssh_host=10.0.0.2 ansible_port=2222 ansible_user=deploy \
            ansible_ssh_private_key_file=~/.ssh/fleet ansible_password=pw ansible_become=yes \
            ansible_become_user=st2 ansible_become_pass=bpw
            """, host: "h1")
        #expect(s.address == "10.0.0.2")  // Ansible: the last alias in its list wins
        #expect(s.port == 2222)
        #expect(s.user == "deploy")
        #expect(s.identityFiles == ["/home/op/.ssh/fleet"])
        #expect(s.password?.value == "pw")
        #expect("\(s.password!)" == "<redacted>")
        #expect(s.become && s.becomeUser == "st2" && s.becomePassword?.value == "bpw")
    }

    @Test func sshConfigFillsWhatTheInventoryLeavesUnset() throws {
        let config = """
            Host bastion
                HostName 192.0.2.10
                User jump
                Port 2200
            Host st2-* !st2-99
                HostName %h.dc1.example.com
                User st2admin
                IdentityFile ~/.ssh/st2
                ProxyJump bastion
            Host *
                User fallback
                Port 2022
                IdentityFile ~/.ssh/default
            """
        let s = try settings("st2-01\nst2-99\nother ansible_user=me ansible_port=22\n", host: "st2-01", sshConfig: config)
        #expect(s.address == "st2-01.dc1.example.com")
        #expect(s.user == "st2admin")
        #expect(s.port == 2022)
        #expect(s.identityFiles == ["/home/op/.ssh/st2", "/home/op/.ssh/default"])
        #expect(s.proxyJump == [.init(user: "jump", host: "192.0.2.10", port: 2200)])
        let excluded = try settings("st2-99\n", host: "st2-99", sshConfig: config)
        #expect(excluded.address == "st2-99" && excluded.user == "fallback" && excluded.proxyJump.isEmpty)
        let own = try settings("other ansible_user=me ansible_port=22\n", host: "other", sshConfig: config)
        #expect(own.user == "me" && own.port == 22)
    }

    @Test(arguments: [
        ("-J ops@bastion:2200", ["ops@bastion:2200"]),
        ("-o ProxyJump=ops@b1,b2", ["ops@b1", "b2"]),
        ("-oProxyJump=b1", ["b1"]),
        ("-o \"ProxyJump b1\"", ["b1"]),
        ("-o ProxyCommand=\"ssh -W %h:%p -q ops@bastion\"", ["ops@bastion"]),
        ("-o ProxyCommand=\"ssh -W %h:%p -p 2200 bastion\"", ["bastion:2200"]),
        ("-o StrictHostKeyChecking=no", []),
    ])
    func jumpHostsFromSSHArguments(arguments: String, expected: [String]) throws {
        let s = try settings("[g]\nh1\n[g:vars]\nansible_ssh_common_args=\(arguments)\n", host: "h1")
        #expect(s.proxyJump.map(\.description) == expected)
    }

    @Test func otherSSHArguments() throws {
        let s = try settings("""
            [g]
            h1
            [g:vars]
            ansible_ssh_common_args=-o UserKnownHostsFile=/lab/known_hosts -o StrictHostKeyChecking=yes -C
            ansible_ssh_extra_args=-o ProxyCommand="nc -x proxy %h %p"
            """, host: "h1")
        #expect(s.knownHostsFile == "/lab/known_hosts")
        #expect(s.problems.count == 1 && s.problems[0].contains("ProxyCommand"))
    }

    @Test func templatedAddress() throws {
        let s = try settings("""
            [g]
            st2-01.dc1.example.com
            [g:vars]
            ansible_host={{ inventory_hostname_short }}.{{ dc }}.internal
            dc=dc1
            """, host: "st2-01.dc1.example.com")
        #expect(s.address == "st2-01.dc1.internal")
        #expect(throws: InventoryError.self) {
            _ = try settings("h1 ansible_host=\"{{ lookup('env', 'X') }}\"\n", host: "h1")
        }
    }

    @Test(arguments: ["ansible_port=abc", "ansible_port=70000", "ansible_port=[22]"])
    func badPortNamesItsLine(assignment: String) throws {
        #expect {
            _ = try settings("[g]\nh1\n[g:vars]\n\(assignment)\n", host: "h1")
        } throws: { error in
            guard let error = error as? InventoryError else { return false }
            return error.location?.line == 4 && error.message.contains("port") || error.message.contains("single value")
        }
    }

    @Test func vaultEncryptedPasswordsAreProblemsWithWhatToDoInstead() throws {
        let vault = "!vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          6162\n"
        let inv = try inventory(["hosts.yml": """
            all:
              hosts:
                h1:
                  ansible_password: \(vault)      ansible_become_password: \(vault)
            """])
        let s = try ConnectionSettings.resolve(try #require(inv.host(named: "h1")), sshConfig: nil, localUser: "op", home: "/home/op")
        #expect(s.password == nil && s.becomePassword == nil)
        #expect(s.problems == [
            "ansible_password is vault-encrypted; flotilla cannot decrypt it (use --ask-pass)",
            "ansible_become_password is vault-encrypted; flotilla cannot decrypt it (give it unencrypted in an owner-only vars file, or let sudo run without a password)",
        ], "\(s.problems)")
    }

    @Test func becomeMustBeBoolean() throws {
        #expect(throws: InventoryError.self) { _ = try settings("h1 ansible_become=maybe\n", host: "h1") }
        #expect(try settings("h1 ansible_become=false\n", host: "h1").become == false)
    }

    @Test func secretNames() {
        for name in ["ansible_password", "ansible_become_pass", "db_password", "api_token", "vault_secret", "ssh_passphrase"] {
            #expect(InventoryValue.isSecret(name: name), "\(name)")
        }
        for name in ["ansible_user", "password_file_path_hint", "st2_cluster"] {
            #expect(!InventoryValue.isSecret(name: name), "\(name)")
        }
    }
}

@Suite struct SSHConfigTests {
    @Test func firstValueWinsAndIncludeAndMatch() throws {
        let files = try TemporaryFiles([
            "config": "Include conf.d/*.conf\nHost *\n  User last\nMatch host db*\n  Port 2200\nMatch exec true\n  User never\n",
            "conf.d/10-web.conf": "Host web*\n  User first\n  HostName=%h.example.com\n",
        ])
        let config = try SSHConfig.load(path: files.path("config"), home: "/home/op")
        #expect(config.options(for: "web1").user == "first")
        #expect(config.options(for: "web1").hostName == "web1.example.com")
        #expect(config.options(for: "db1").port == 2200)
        #expect(config.options(for: "db1").user == "last")
        #expect(config.warnings.count == 1)
    }

    @Test func badPortNamesTheLine() {
        #expect {
            _ = try SSHConfig.parse("Host a\n  Port twenty\n", file: "cfg", home: "/h")
        } throws: { error in
            (error as? InventoryError)?.location?.line == 2
        }
    }

    @Test func wildcardsAndNegation() {
        #expect(SSHConfig.matches(host: "St2-01", patterns: ["st2-*"]))
        #expect(!SSHConfig.matches(host: "st2-01", patterns: ["st2-*", "!st2-01"]))
        #expect(SSHConfig.matches(host: "a1", patterns: ["a?"]))
        #expect(!SSHConfig.matches(host: "a12", patterns: ["a?"]))
    }
}
