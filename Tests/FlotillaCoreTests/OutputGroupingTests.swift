import Testing
@testable import FlotillaCore

@Suite struct OutputGroupingTests {
    @Test(arguments: [
        (["st2-01", "st2-02", "st2-03", "st2-07"], "st2-[01-03,07]"),
        (["web1", "web2", "web10"], "web[1-2,10]"),
        (["db", "st2-01", "st2-02"], "db,st2-[01-02]"),
        (["a.example.com", "b.example.com"], "a.example.com,b.example.com"),
        (["st2-05"], "st2-05"),
        (["st2-09", "st2-10", "st2-11"], "st2-[09-11]"),
        (["web1", "web01"], "web1,web01"),
        (["n1.dc1", "n2.dc1"], "n1.dc1,n2.dc1"),
    ])
    func foldsTrailingNumbers(names: [String], expected: String) {
        #expect(HostNameSet.fold(names) == expected)
    }

    @Test func identicalOutcomesShownOnceFailuresLast() {
        let groups = OutputGroup.group([
            (host: "a", outcome: "fail"), (host: "b", outcome: "ok"), (host: "c", outcome: "fail"), (host: "d", outcome: "ok"),
        ], isFailure: { $0 == "fail" })
        #expect(groups.map(\.outcome) == ["ok", "fail"])
        #expect(groups.map(\.hosts) == [["b", "d"], ["a", "c"]])
    }
}
