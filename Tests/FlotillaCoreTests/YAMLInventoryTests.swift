import Foundation
import Testing
@testable import FlotillaCore

@Suite struct YAMLInventoryTests {
    @Test func structureAndYAML11Typing() throws {
        let inv = try inventory(["inv.yaml": """
            all:
              hosts:
                loose:
              vars:
                top: 1
              children:
                st2:
                  hosts:
                    st2-[01:02]:
                      flag: yes
                      switch: Off
                      octal: 0777
                      hex: 0x1F
                      big: 1_000
                      sexagesimal: 1:30
                      text: 1e3
                      float: 1.5
                      float2: 1.0e+3
                      nothing: ~
                      quoted: "yes"
                      tagged: !!str 42
                      anchored: &n !!str 7
                      again: *n
                      list: [1, two, 3.0]
                      map: {a: 1}
                  children:
                    dc1:
                      hosts: st2-01
            """])
        #expect(inv.hosts.map(\.name) == ["loose", "st2-01", "st2-02"])
        #expect(inv.host(named: "loose")?.groups == ["ungrouped"])
        #expect(inv.host(named: "st2-01")?.groups == ["dc1", "st2"])
        let vars = inv.vars("st2-02")
        #expect(vars["top"] == .int(1))
        #expect(vars["flag"] == .bool(true))
        #expect(vars["switch"] == .bool(false))
        #expect(vars["octal"] == .int(511))
        #expect(vars["hex"] == .int(31))
        #expect(vars["big"] == .int(1000))
        #expect(vars["sexagesimal"] == .int(90))
        #expect(vars["text"] == .string("1e3"))
        #expect(vars["float"] == .double(1.5))
        #expect(vars["float2"] == .double(1000))
        #expect(vars["nothing"] == .null)
        #expect(vars["quoted"] == .string("yes"))
        #expect(vars["tagged"] == .string("42"))
        #expect(vars["anchored"] == .string("7") && vars["again"] == .string("7"))
        #expect(vars["list"] == .list([.int(1), .string("two"), .double(3)]))
        #expect(vars["map"] == .map(["a": .int(1)]))
    }

    @Test(arguments: [
        ("2024-01-05", "2024-01-05"),
        ("2024-1-5 10:20:30", "2024-01-05T10:20:30"),
        ("2024-01-05t10:20:30.5Z", "2024-01-05T10:20:30.500000+00:00"),
        ("2024-01-05 10:20:30 -5", "2024-01-05T10:20:30-05:00"),
        ("2024-1-5", "2024-1-5"),
    ])
    func timestampsAsPythonWritesThem(text: String, expected: String) throws {
        #expect(try YAMLReader.scalar(text, tag: "", plain: true, at: SourceLocation(file: "x")) == .string(expected))
    }

    @Test func anchorsAliasesAndMergeKeys() throws {
        let inv = try inventory(["inv.yml": """
            all:
              children:
                web:
                  vars: &common
                    ntp: ntp1
                    dns: dns1
                db:
                  vars:
                    <<: *common
                    dns: dns2
                  hosts:
                    db1:
                web2:
                  vars: *common
                  hosts: {w1: }
            """])
        #expect(inv.vars("db1") == ["ntp": .string("ntp1"), "dns": .string("dns2")])
        #expect(inv.vars("w1") == ["ntp": .string("ntp1"), "dns": .string("dns1")])
    }

    @Test func vaultValuesAreOpaque() throws {
        let inv = try inventory(["inv.yml": """
            all:
              hosts:
                h1:
                  ansible_become_password: !vault |
                    $ANSIBLE_VAULT;1.1;AES256
                    6162
            """])
        #expect(inv.vars("h1")["ansible_become_password"] == .encrypted)
        #expect(InventoryValue.encrypted.json() == "\"<redacted>\"")
    }

    @Test func jsonInventoryNumbersFollowJSON() throws {
        let inv = try inventory(["inv.yml": #"{"all": {"children": {"web": {"hosts": {"w1": {"p": 1, "e": 1e3, "f": 1.5E-1, "s": "1e3"}}}}}}"#])
        #expect(inv.vars("w1") == ["p": .int(1), "e": .double(1000), "f": .double(0.15), "s": .string("1e3")])
    }

    @Test func unexpectedKeysWarnLikeAnsible() throws {
        let inv = try inventory(["inv.yml": "all:\n  host:\n    h1:\n  hosts:\n    h2:\n"])
        #expect(inv.hosts.map(\.name) == ["h2"])
        #expect(inv.warnings.first?.message.contains("unexpected key 'host'") == true)
    }

    @Test(arguments: [
        ("all:\n  hosts:\n    h1:\n    h1:\n", 4, "duplicate key 'h1' in a YAML mapping (first at line 3)"),
        ("all:\n  hosts:\n    - h1\n    - h2\n", 3, "must be a mapping, found a list"),
        ("all:\n  hosts:\n    h1: just-a-string\n", 3, "variables of host 'h1' must be a mapping"),
        ("all:\n  hosts:\n    42:\n", 3, "must be a string"),
        ("plugin: aws_ec2\nregions: [x]\n", 1, "inventory plugin configuration"),
        ("all:\n  hosts:\n    st2-[1:]:\n", 3, "no end value"),
        ("all:\n  hosts:\n    h1:\n   bad: indent\n", 4, "invalid YAML"),
        ("all:\n  vars:\n    x: !custom 1\n", 3, "unsupported YAML tag"),
        ("all:\n  children:\n    a:\n      children:\n        all:\n", 5, "'all' cannot be a child of 'a'"),
        ("all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n", 5, "creates a cycle"),
    ])
    func badInputNamesTheLine(text: String, line: Int, message: String) throws {
        let error = try #require(inventoryError(["inv.yml": text]))
        #expect(error.location?.file == "inv.yml")
        #expect(error.location?.line == line, "\(error)")
        #expect(error.message.contains(message), "\(error.message)")
    }

    @Test func emptyYAMLFileIsAnError() throws {
        let error = try #require(inventoryError(["inv.yml": "---\n"]))
        #expect(error.message.contains("empty"))
    }
}

@Suite struct VariablePrecedenceTests {
    @Test func allThenParentThenChildThenHost() throws {
        let inv = try inventory(ini: """
            [child]
            h1 level=host
            h2
            [parent:children]
            child
            [parent:vars]
            level=parent
            only_parent=1
            [child:vars]
            level=child
            [all:vars]
            level=all
            only_all=1
            """)
        #expect(inv.vars("h1")["level"] == .string("host"))
        #expect(inv.vars("h2")["level"] == .string("child"))
        #expect(inv.vars("h2")["only_parent"] == .int(1))
        #expect(inv.vars("h2")["only_all"] == .int(1))
    }

    @Test func siblingsByNameThenPriority() throws {
        let ini = """
            [alpha]
            h1
            [beta]
            h1
            [alpha:vars]
            x=alpha
            [beta:vars]
            x=beta
            """
        #expect(try inventory(ini: ini).vars("h1")["x"] == .string("beta"))
        let prioritized = try inventory(ini: ini + "\n[alpha:vars]\nansible_group_priority=10\n")
        #expect(prioritized.vars("h1")["x"] == .string("alpha"))
        #expect(prioritized.vars("h1")["ansible_group_priority"] == nil)
    }

    @Test func deeperGroupWinsEvenIfSortedEarlier() throws {
        let inv = try inventory(ini: """
            [zeta:children]
            aaa
            [aaa]
            h1
            [zeta:vars]
            x=zeta
            [aaa:vars]
            x=aaa
            """)
        #expect(inv.vars("h1")["x"] == .string("aaa"))
    }

    @Test func groupVarsAndHostVarsFilesInAnsibleOrder() throws {
        let files = [
            "inv/hosts": "[child]\nh1 inline_host=1 file_host=inline\n[parent:children]\nchild\n[child:vars]\nfrom=child-inline\nonly_child=1\n",
            "inv/group_vars/all.yml": "from: all-file\nall_file: 1\n",
            "inv/group_vars/parent.yaml": "from: parent-file\n",
            "inv/group_vars/child/a.yml": "folder_a: 1\nshared: a\n",
            "inv/group_vars/child/b.yml": "shared: b\n",
            "inv/host_vars/h1": "file_host: file\n",
            "inv/notes.md": "not an inventory\n",
            "inv/.hidden": "not an inventory\n",
        ]
        let inv = try inventory(files, sources: ["inv"])
        let vars = inv.vars("h1")
        // Group files beat inline group vars of any group; the child's file is applied last.
        #expect(vars["from"] == .string("parent-file"))
        #expect(vars["only_child"] == .int(1))
        #expect(vars["all_file"] == .int(1))
        #expect(vars["folder_a"] == .int(1))
        #expect(vars["shared"] == .string("b"))
        #expect(vars["file_host"] == .string("file"))
        #expect(vars["inline_host"] == .int(1))
    }

    @Test func severalSourcesMerge() throws {
        let files = [
            "a/hosts.ini": "[web]\nw1 x=1\n",
            "b/more.yml": "all:\n  children:\n    web:\n      hosts:\n        w2:\n        w1:\n          x: 2\n",
            "b/group_vars/web.yml": "from_b: true\n",
        ]
        let inv = try inventory(files, sources: ["a/hosts.ini", "b/more.yml"])
        #expect(inv.hosts.map(\.name) == ["w1", "w2"])
        #expect(inv.vars("w1")["x"] == .int(2))
        #expect(inv.vars("w1")["from_b"] == .bool(true))
    }

    @Test func badVarsFileNamesItsLine() throws {
        let error = try #require(inventoryError(
            ["inv/hosts": "[web]\nw1\n", "inv/group_vars/web.yml": "a: 1\na: 2\n"], sources: ["inv"]))
        #expect(error.location?.file == "web.yml")
        #expect(error.message.contains("duplicate key 'a'"))
    }
}
