import Foundation
import Testing
@testable import FlotillaCore

@Suite struct HostPatternTests {
    static let ini = """
        [web]
        web01
        web02
        web03
        [db]
        db01
        db02
        [prod:children]
        web
        db
        [staging]
        st2-01.stg
        web03
        [empty]
        """

    let inv: Inventory

    init() throws { inv = try inventory(ini: Self.ini) }

    @Test(arguments: [
        ("web", ["web01", "web02", "web03"]),
        ("web:db", ["web01", "web02", "web03", "db01", "db02"]),
        ("db,web01", ["web01", "db01", "db02"]),
        ("prod:&staging", ["web03"]),
        ("prod:!web03", ["web01", "web02", "db01", "db02"]),
        ("!prod", ["st2-01.stg"]),
        ("web0*", ["web01", "web02", "web03"]),
        ("*.stg", ["st2-01.stg"]),
        ("web0[!2]", ["web01", "web03"]),
        ("web*[2]", ["web03"]),  // a subscript of the wildcard's matches, as in Ansible
        ("~db0[12]", ["db01", "db02"]),
        ("~(web|db)01", ["web01", "db01"]),
        ("web[0]", ["web01"]),
        ("web[-1]", ["web03"]),
        ("web[1:2]", ["web02", "web03"]),
        ("web[1:]", ["web02", "web03"]),
        ("prod[3]", ["db01"]),
        ("all:!prod", ["st2-01.stg"]),
        ("db02:web01", ["web01", "db02"]),
        ("empty:db", ["db01", "db02"]),
        ("~[", ["web01", "web02", "web03", "db01", "db02", "st2-01.stg"]),  // splits to '~', an empty regex  // an existing group with no host is not a typo
    ])
    func selects(pattern: String, expected: [String]) throws {
        #expect(try inv.names(pattern) == expected)
    }

    @Test func completionsCompleteTheLastPartOfAPattern() {
        #expect(inv.completions(of: "we").sorted() == ["web", "web01", "web02", "web03"])
        #expect(inv.completions(of: "prod:&d").sorted() == ["prod:&db", "prod:&db01", "prod:&db02"])
        #expect(inv.completions(of: "web,!st").sorted() == ["web,!st2-01.stg", "web,!staging"])
        #expect(!inv.completions(of: "").contains("all"))
        #expect(inv.completions(of: "nothing").isEmpty)
    }

    @Test func sshConfigOption() throws {
        let files = try TemporaryFiles(["home/.ssh/config": "Host web*\n  User deploy\n"])
        let home = files.path("home")
        #expect(try SSHConfig.load(option: "none", home: home) == nil)
        #expect(try SSHConfig.load(option: "~/.ssh/config", home: home) != nil)
        #expect(try SSHConfig.load(option: "~/.ssh/config", home: files.path("nobody")) == nil) // the default may be missing
        #expect(throws: InventoryError.self) { try SSHConfig.load(option: files.path("missing"), home: home) }
    }

    @Test func noLimitSelectsEverythingInInventoryOrder() throws {
        #expect(try inv.names(nil) == ["web01", "web02", "web03", "db01", "db02", "st2-01.stg"])
    }

    @Test func limitFile() throws {
        let temporary = try TemporaryFiles(["limit": "web01\n\n  db*  \n"])
        #expect(try inv.names("@" + temporary.path("limit")) == ["web01", "db01", "db02"])
    }

    @Test(arguments: [
        ("nosuch", "'nosuch' matches no host or group"),
        ("web:nosuch", "'nosuch' matches no host or group"),
        ("web:!web-typo", "'web-typo' matches no host or group"),
        ("web:&db", "selects no host"),
        ("~web(", "not a valid regular expression"),
        ("web[7]", "out of range"),
        ("!", "has no pattern"),
    ])
    func errors(pattern: String, message: String) {
        #expect {
            _ = try inv.select(pattern)
        } throws: { error in
            (error as? InventoryError)?.message.contains(message) == true
        }
    }

    @Test func splitting() {
        #expect(HostPatternSyntax.split("a:b[1:2]:!c") == ["a", "b[1:2]", "!c"])
        #expect(HostPatternSyntax.split("a, b ,c") == ["a", "b", "c"])
        #expect(HostPatternSyntax.split("host.example.com:22") == ["host.example.com:22"])
    }
}
