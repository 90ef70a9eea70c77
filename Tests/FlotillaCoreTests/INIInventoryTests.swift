import Foundation
import Testing
@testable import FlotillaCore

@Suite struct INIInventoryTests {
    @Test func groupsChildrenAndImplicitGroups() throws {
        let inv = try inventory(ini: """
            loose1
            [web]
            web1
            web2
            [db]
            db1
            [prod:children]
            web
            db
            [dc1:children]   # declared before its child group exists
            racks
            [racks]
            web1
            """)
        #expect(inv.hosts.map(\.name) == ["loose1", "web1", "web2", "db1"])
        #expect(inv.host(named: "loose1")?.groups == ["ungrouped"])
        #expect(inv.host(named: "web1")?.groups == ["dc1", "prod", "racks", "web"])
        #expect(inv.host(named: "db1")?.groups == ["db", "prod"])
        #expect(inv.groupNames.prefix(2) == ["all", "ungrouped"])
    }

    @Test func rangesNumericAlphaStrideAndSeveral() throws {
        let inv = try inventory(ini: """
            [a]
            st2-[01:03].dc1.example.com
            node-[a:c]
            web[1:10:4]
            r[1:2]-[x:y]
            10.0.0.[8:9]
            """)
        #expect(inv.hosts.map(\.name) == [
            "st2-01.dc1.example.com", "st2-02.dc1.example.com", "st2-03.dc1.example.com",
            "node-a", "node-b", "node-c", "web1", "web5", "web9",
            "r1-x", "r1-y", "r2-x", "r2-y", "10.0.0.8", "10.0.0.9",
        ])
    }

    /// A line of many ranges is refused once their product passes the limit, before any
    /// name is built (fuzz input b34c59c58e50901b #153, 10,000 `[a:Z]`s, took 31 s of CPU
    /// when each range was expanded before the next was read); many one-piece ranges make
    /// one host.
    @Test func aLineOfManyRangesIsRefusedOrExpandedWithoutBuildingEveryPrefix() throws {
        let error = try #require(inventoryError(["hosts": "[g]\n" + String(repeating: "h[a:Z]", count: 10_000) + "\n"]))
        #expect(error.location?.line == 2 && error.message.contains("yields more than 100000 hosts"), "\(error.message.suffix(80))")
        let inv = try inventory(ini: "[g]\n" + String(repeating: "x[7:7]", count: 10_000) + "\n")
        #expect(inv.hosts.map(\.name) == [String(repeating: "x7", count: 10_000)])
    }

    @Test func inlineVariablesTypedAsAnsibleReadsThem() throws {
        let inv = try inventory(ini: """
            [g]
            h1 port=2222 ratio=1.5 on=True off=False none=None list="[1, 'a']" map="{'k': 2}" word=yes \
            zero=007 quoted="two words" single='x y' hex=0x1F neg=-3 exp=1e3 trailing=a#comment
            """)
        let vars = inv.vars("h1")
        #expect(vars["port"] == .int(2222))
        #expect(vars["ratio"] == .double(1.5))
        #expect(vars["on"] == .bool(true))
        #expect(vars["off"] == .bool(false))
        #expect(vars["none"] == .null)
        #expect(vars["list"] == .list([.int(1), .string("a")]))
        #expect(vars["map"] == .map(["k": .int(2)]))
        #expect(vars["word"] == .string("yes"))
        #expect(vars["zero"] == .string("007"))
        #expect(vars["quoted"] == .string("two words"))
        #expect(vars["single"] == .string("x y"))
        #expect(vars["hex"] == .int(31))
        #expect(vars["neg"] == .int(-3))
        #expect(vars["exp"] == .double(1000))
        #expect(vars["trailing"] == .string("a"))
    }

    @Test func complexNumbersBecomePythonText() throws {
        let vars = try inventory(ini: "h1 a=2+3j b=3j c=-1j d=1+2 e=1.5-0.5j\n").vars("h1")
        #expect(vars["a"] == .string("(2+3j)"))
        #expect(vars["b"] == .string("3j"))
        #expect(vars["c"] == .string("(-0-1j)"))
        #expect(vars["d"] == .string("1+2"))
        #expect(vars["e"] == .string("(1.5-0.5j)"))
    }

    @Test func groupVarsSectionValues() throws {
        let inv = try inventory(ini: """
            [g]
            h1
            [g:vars]
            a = 'quoted string'
            b=some text # not a comment here
            c=[1,2] # but a Python comment here
            ; a comment line
            # another
            """)
        let vars = inv.vars("h1")
        #expect(vars["a"] == .string("quoted string"))
        #expect(vars["b"] == .string("some text # not a comment here"))
        #expect(vars["c"] == .list([.int(1), .int(2)]))
    }

    @Test func portSyntaxCountsOnTheFirstDefinitionOnly() throws {
        let inv = try inventory(ini: """
            [a]
            h1:2201
            [b]
            h1:2202 role=b
            [v6]
            [2001:db8::1]:2203
            """)
        #expect(inv.vars("h1")["ansible_port"] == .int(2201))
        #expect(inv.vars("h1")["role"] == .string("b"))
        #expect(inv.vars("2001:db8::1")["ansible_port"] == .int(2203))
    }

    @Test func laterDefinitionsOverrideHostVariables() throws {
        let inv = try inventory(ini: """
            [a]
            h1 x=1 y=1
            [b]
            h1 x=2
            """)
        #expect(inv.vars("h1")["x"] == .int(2))
        #expect(inv.vars("h1")["y"] == .int(1))
    }

    @Test func ungroupedHostsLeaveUngroupedWhenGroupedElsewhere() throws {
        let inv = try inventory(ini: """
            h1
            h2
            [g]
            h1
            """)
        #expect(inv.host(named: "h1")?.groups == ["g"])
        #expect(inv.host(named: "h2")?.groups == ["ungrouped"])
    }

    @Test(arguments: [
        ("[web:children]\nmissing\n", 2, "names group 'missing', which is not defined"),
        ("[web]\nh1\n[db:vars]\nx=1\n", 3, "[db:vars] sets variables for group 'db', which is not defined"),
        ("[a:children]\nb\n[b:children]\na\n", 4, "creates a cycle"),
        ("[a:children]\na\n", 2, "cannot be a child of itself"),
        ("[a:children]\nall\n", 2, "'all' cannot be a child of 'a'"),
        ("[g]\nst2-[01:5]\n", 2, "same width"),
        ("[g]\nst2-[3:1]\n", 2, "yields no host"),
        ("[g]\nst2-[1:]\n", 2, "no end value"),
        ("[g]\nst2-[1:2:3:4]\n", 2, "a range is [begin:end]"),
        ("[g]\nst2-[x:5]\n", 2, "must be numbers or single letters"),
        ("[g]\nst2-[1:3\n", 2, "malformed range"),
        ("[g]\nh1 motd=\"unterminated\n", 2, "unterminated quote"),
        ("[g]\nh1 novalue\n", 2, "expected key=value host variable"),
        ("[g]\nh1:\n", 2, "trailing ':'"),
        ("[g:vars]\n[g]\nh\n[g:vars]\nnovalue\n", 5, "expected key=value in [g:vars]"),
        ("[g:weird]\n", 1, "unknown type 'weird'"),
        ("[web servers]\n", 1, "invalid section header"),
        ("[g]\nh\n[g:vars]\nansible_group_priority=high\n", 4, "ansible_group_priority must be an integer"),
    ])
    func badInputNamesTheLine(text: String, line: Int, message: String) throws {
        let error = try #require(inventoryError(["hosts": text]))
        #expect(error.location?.file == "hosts")
        #expect(error.location?.line == line)
        #expect(error.message.contains(message), "\(error.message)")
    }

    @Test func nonUTF8AndBinaryFilesAreRefused() throws {
        let temporary = try TemporaryFiles([:])
        let path = temporary.path("bin")
        try FileManager.default.createDirectory(atPath: temporary.path(), withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: path, contents: Data([0x5b, 0x67, 0x5d, 0x0a, 0x68, 0xff, 0x0a]))
        #expect(throws: InventoryError.self) { try Inventory.load(sources: [path]) }
        FileManager.default.createFile(atPath: path, contents: Data([0x68, 0x0a, 0x00]))
        do {
            _ = try Inventory.load(sources: [path])
            Issue.record("a NUL byte was accepted")
        } catch {
            #expect(error.location?.line == 2)
            #expect(error.message.contains("binary"))
        }
    }
}
