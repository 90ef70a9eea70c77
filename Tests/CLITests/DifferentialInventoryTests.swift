import Foundation
import Testing

/// flotilla and Ansible resolve the same inventories the same way: the corpus under
/// Tests/Fixtures/inventory-corpus is resolved by both (`ansible-inventory --list` and
/// `ansible PATTERN --list-hosts`), and compare.py checks host sets, group membership,
/// variables (strictly typed) and pattern selections.
@Suite struct DifferentialInventoryTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../Fixtures/inventory-corpus").standardizedFileURL

    @Test func corpusResolvesAsAnsibleResolvesIt() throws {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let hasAnsible = path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/ansible-inventory") }
        try #require(hasAnsible, "ansible-inventory is not installed (scripts/test installs ansible-core)")
        let result = try runFlotilla(
            ["python3", Self.corpus.appendingPathComponent("compare.py").path, "-j", "2", "--flotilla", flotilla],
            in: Self.corpus, program: "/usr/bin/env", environment: ["PATH": path, "HOME": NSTemporaryDirectory()])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let summary = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.hasSuffix(" 0 failed"), "\(summary)")
        let cases = Int(summary.split(separator: " ").first ?? "") ?? 0
        #expect(cases >= 20, "the corpus should hold at least 20 cases, found \(cases)")
    }
}
