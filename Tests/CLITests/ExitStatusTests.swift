import Foundation
import Testing

/// One mapping from errors to SPEC §1's exit statuses: a journal that cannot be read is
/// flotilla's failure (70), not a usage error (64) and never 1 (some hosts failed); a run
/// that is not there is a usage error.
@Suite struct ExitStatusTests {
    let scratch: Scratch
    let state: URL

    init() throws {
        scratch = try Scratch(["hosts.ini": "st2-01 ansible_host=192.0.2.1\n"])
        state = scratch.url.appendingPathComponent("state")
        let run = state.appendingPathComponent("runs/20261121-153000-ab12")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for directory in [state, state.appendingPathComponent("runs"), run] {
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory.path)
        }
        let journal = run.appendingPathComponent("journal.sqlite")
        #expect(FileManager.default.createFile(atPath: journal.path, contents: Data("not a database, a damaged journal".utf8),
                                               attributes: [.posixPermissions: 0o600]))
    }

    @Test(arguments: [["show"], ["show", "20261121-153000-ab12", "--json"], ["resume"]])
    func anUnreadableJournalIsAnInternalError(arguments: [String]) throws {
        let result = try runFlotilla(arguments + ["--state-dir", state.path], in: scratch.url)
        #expect(result.status == 70, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("flotilla: error: ") && result.stderr.contains("journal"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test func anUnknownRunIsAUsageError() throws {
        let result = try runFlotilla(["show", "20990101-000000-0000", "--state-dir", state.path], in: scratch.url)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains("no run 20990101-000000-0000"), "\(result.stderr)")
    }

    @Test func theUnreadableRunIsStillListed() throws {
        let result = try runFlotilla(["runs", "--state-dir", state.path, "--json"], in: scratch.url)
        #expect(result.status == 0, "\(result.stderr)")
        let runs = result.json?["runs"] as? [[String: Any]] ?? []
        #expect(runs.map { $0["state"] as? String } == ["unreadable"] && runs.first?["kind"] as? String == "", "\(result.stdout)")
    }
}
