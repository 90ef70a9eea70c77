import Foundation
import Testing

/// `facts`, `plan` and `report` refuse bad flags and catalogs before connecting anywhere.
@Suite struct PlanCommandTests {
    let scratch: Scratch

    init() throws {
        // 192.0.2.0/24 is TEST-NET: never contacted, every case below fails before connecting.
        scratch = try Scratch([
            "hosts.ini": "st2-01 ansible_host=192.0.2.1\n",
            "catalog.yaml": "versions:\n  \"3.5\":\n    scripts: /not/a/list\npackages: [st2]\nos_ceilings: {}\nmistral: {commands: []}\n",
        ])
    }

    @Test(arguments: [
        (["plan", "--to", "3.8.1-1"], "not an st2 release"),
        (["plan", "--to", "banana"], "not an st2 release"),
        (["plan", "--to", "3.8.1", "--batch", "0"], "'0' in '0' is not a batch size"),
        (["plan", "--to", "3.8.1", "--batch", "1,150%"], "'150%' in '1,150%' is not a percentage"),
        (["plan", "--to", "3.8.1", "--canary", "0"], "--canary must be at least 1"),
        (["plan"], "--to"),
        (["report", "--format", "pdf"], "pdf"),
        (["facts", "--forks", "0"], "--forks must be at least 1"),
    ])
    func usageErrorsExit64(arguments: [String], message: String) throws {
        let result = try runFlotilla(arguments + ["-i", "hosts.ini"], in: scratch.url)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test func badCatalogExits65NamingTheFile() throws {
        let result = try runFlotilla(["plan", "-i", "hosts.ini", "--to", "3.8.1", "--catalog", "catalog.yaml"], in: scratch.url)
        #expect(result.status == 65)
        #expect(result.stderr.contains("catalog.yaml") && result.stderr.contains("versions.3.5.scripts"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test(arguments: ["facts", "plan", "report"])
    func helpHasExamplesAndExitCodes(command: String) throws {
        let result = try runFlotilla([command, "--help"], in: scratch.url)
        #expect(result.status == 0)
        #expect(result.stdout.contains("Examples:") && result.stdout.contains("Exit codes:"))
        #expect(result.stdout.contains("flotilla \(command) -i"))
    }
}
