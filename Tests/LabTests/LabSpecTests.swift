import Foundation
import FlotillaCore
import Testing
@testable import flotilla_lab

@Suite struct LabSpecTests {
    @Test func readsHostsDefaultsAndFaults() throws {
        let specs = try LabSpec.parse("""
            defaults:
              os: el8
              available: [3.7.0-1, 3.8.1]
            hosts:
              - name: a
                packages: {st2: 3.7.0-1, st2mistral: 3.2.0-1}
                st2_cluster: c1
                kv: 3
                faults:
                  slow: 300ms
                  fail:
                    - {match: "yum update", exit: 1, stderr: "boom", times: 2}
                  hang: ["st2ctl start"]
              - name: b
                os: ubuntu18.04
            """, file: "spec.yaml")
        #expect(specs.map(\.name) == ["a", "b"])
        #expect(specs[0].os.packageManager == "dnf" && specs[1].os.packageManager == "apt")
        #expect(specs[0].available["st2"] == ["3.7.0-1", "3.8.1-1"])
        #expect(specs[0].available["st2mistral"] == [], "st2mistral is never offered past 3.2")
        #expect(specs[0].kv.count == 3 && specs[0].cluster == "c1")
        #expect(specs[0].faults.slow == [CommandFault(pattern: "", delay: 0.3)])
        #expect(specs[0].faults.fail.first?.times == 2 && specs[0].faults.fail.first?.stderr == "boom")
        #expect(specs[0].faults.hang.map(\.pattern) == ["st2ctl start"])
    }

    @Test func cutFiresOnceUnlessToldOtherwise() throws {
        let specs = try LabSpec.parse("""
            hosts:
              - name: a
                faults:
                  cut: ["apt-get install"]
              - name: b
                faults:
                  cut: [{match: "st2ctl", delay: 1.5s, times: 3}]
            """, file: "spec.yaml")
        #expect(specs[0].faults.cut == [CommandFault(pattern: "apt-get install", times: 1)])
        #expect(specs[1].faults.cut == [CommandFault(pattern: "st2ctl", times: 3, delay: 1.5)])
        #expect(specs[1].faults.summary == "cut")
    }

    @Test func rebootFiresOnceAndToolSlowNeedsADelay() throws {
        let specs = try LabSpec.parse("""
            hosts:
              - name: a
                faults:
                  reboot: [{match: "upgrade head", delay: 1s}]
                  tool_slow: [{match: "^apt-get install", delay: 3s}]
            """, file: "spec.yaml")
        #expect(specs[0].faults.reboot == [CommandFault(pattern: "upgrade head", times: 1, delay: 1)])
        #expect(specs[0].faults.toolSlow == [CommandFault(pattern: "^apt-get install", delay: 3)])
        #expect(specs[0].faults.summary == "tool-slow,reboot")
        #expect(throws: (any Error).self) { try LabSpec.parse("hosts:\n  - {name: a, faults: {tool_slow: [{match: x}]}}\n", file: "spec.yaml") }
    }

    @Test(arguments: [
        ("hosts:\n  - name: a\n    faults: {cut: [{match: x, exit: 3}]}\n", 3, "unknown key 'exit'"),
        ("hosts:\n  - name: a\n    os: solaris\n", 3, "unknown os 'solaris'"),
        ("hosts:\n  - name: a\n  - name: a\n", 3, "listed twice"),
        ("hosts:\n  - name: a\n    colour: red\n", 3, "unknown key 'colour'"),
        ("hosts:\n  - name: a\n    packages: {st2: banana}\n", 3, "not a package version"),
        ("hosts:\n  - name: a\n    faults: {fail: [{match: \"(\"}]}\n", 3, "not a valid regular expression"),
        ("hosts:\n  - name: a\n    faults: {slow: fast}\n", 3, "not a duration"),
        ("hosts:\n  - name: a\n    faults: {unreachable: maybe}\n", 3, "faults.unreachable"),
        ("hosts: []\n", 1, "non-empty list"),
        ("hosts:\n  - name: 'a b'\n", 2, "may hold only"),
    ])
    func badSpecsNameFileLineAndProblem(_ yaml: String, _ line: Int, _ message: String) {
        #expect {
            try LabSpec.parse(yaml, file: "lab.yaml")
        } throws: { error in
            guard let error = error as? LabError else { return false }
            return error.exitCode == 65 && error.message.hasPrefix("lab.yaml:\(line):") && error.message.contains(message)
        }
    }

    @Test func generatedFleetIsVariedAndDeterministic() {
        let fleet = LabSpec.generate(count: 30)
        #expect(fleet == LabSpec.generate(count: 30))
        #expect(Set(fleet.map(\.name)).count == 30 && fleet.first?.name == "st2-01")
        #expect(Set(fleet.map(\.os.family)) == [.debian, .redhat])
        #expect(Set(fleet.compactMap { $0.packages["st2"] }).count >= 4)
        #expect(Set(fleet.compactMap(\.cluster)).count == 10 && Set(fleet.compactMap(\.zone)).count == 3)
        for host in fleet {
            #expect(host.available["st2"]?.contains(host.packages["st2"]!) == true, "\(host.name) can stay where it is")
        }
    }

    @Test func loopbackAddressesSkipNetworkAndBroadcastAndStayInLoopback() throws {
        #expect(try loopbackAddresses(from: "127.0.0.254", count: 3) == ["127.0.0.254", "127.0.1.1", "127.0.1.2"])
        #expect(throws: LabError.self) { try loopbackAddresses(from: "10.0.0.1", count: 1) }
        #expect(throws: LabError.self) { try loopbackAddresses(from: "127.255.255.250", count: 10) }
    }

    @Test func durations() {
        #expect(parseDuration("2") == 2 && parseDuration("1.5s") == 1.5 && parseDuration("300ms") == 0.3 && parseDuration("2m") == 120)
        #expect(parseDuration("-1") == nil && parseDuration("soon") == nil)
    }
}
