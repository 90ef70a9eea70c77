import Foundation
import Testing

/// The bad-input corpus (Tests/Fixtures/bad-input, listed in its cases.tsv): malformed,
/// truncated, huge, binary and deeply nested inventories, runbooks, catalogs, SSH configs
/// and known_hosts files, and bad flag values. The built binary must refuse each with
/// the expected exit status and message, print nothing on stdout, and take under 10 s.
@Suite struct BadInputTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var id: String
        var status: Int32
        var message: String
        var arguments: [String]
        var line: Int

        var testDescription: String { id }
    }

    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/bad-input")

    static let cases: [Case] = {
        guard let text = try? String(contentsOf: corpus.appendingPathComponent("cases.tsv"), encoding: .utf8) else { return [] }
        var cases: [Case] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            let columns = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard columns.count == 4, let status = Int32(columns[1]) else {
                // A malformed line becomes a case that fails, naming the line.
                cases.append(Case(id: "cases.tsv:\(index + 1)", status: -1, message: String(line), arguments: [], line: index + 1))
                continue
            }
            let arguments = columns[3].split(separator: " ").map { expand(String($0)) }
            cases.append(Case(id: columns[0], status: status, message: columns[2], arguments: arguments, line: index + 1))
        }
        return cases
    }()

    /// `{repeat:TEXT:N}` is TEXT written N times.
    static func expand(_ argument: String) -> String {
        guard let open = argument.range(of: "{repeat:"), let close = argument.range(of: "}", range: open.upperBound..<argument.endIndex) else {
            return argument
        }
        let body = argument[open.upperBound..<close.lowerBound]
        guard let colon = body.lastIndex(of: ":"), let count = Int(body[body.index(after: colon)...]) else { return argument }
        let repeated = String(repeating: String(body[..<colon]), count: count)
        return String(argument[..<open.lowerBound]) + repeated + expand(String(argument[close.upperBound...]))
    }

    @Test func theCorpusIsListedAndLarge() throws {
        #expect(Self.cases.count >= 100, "cases.tsv lists \(Self.cases.count) cases")
        #expect(Set(Self.cases.map(\.id)).count == Self.cases.count, "case names repeat")
        // Every file of the corpus is used by some case, so none goes stale unnoticed.
        let walker = try #require(FileManager.default.enumerator(at: Self.corpus, includingPropertiesForKeys: [.isRegularFileKey]))
        let used = Set(Self.cases.flatMap(\.arguments).flatMap { $0.split(separator: "@", omittingEmptySubsequences: true).map(String.init) })
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true {
            let relative = String(url.standardizedFileURL.path.dropFirst(Self.corpus.standardizedFileURL.path.count + 1))
            guard relative != "cases.tsv" else { continue }
            // Files only reached through another (an SSH config's Include) count as used.
            let included = relative == "ssh/binary.conf"
            #expect(used.contains(relative) || included, "\(relative) is not used by any case in cases.tsv")
        }
    }

    @Test(arguments: cases)
    func refusedClearly(_ badInput: Case) throws {
        try #require(badInput.status >= 0, "cases.tsv:\(badInput.line) is not 'case<TAB>status<TAB>message<TAB>arguments': \(badInput.message)")
        // A fresh folder per case (the working directory and HOME), with the corpus linked
        // in, so what a command writes (a state dir) never lands in the repository.
        let scratch = try Scratch([:])
        try FileManager.default.createDirectory(at: scratch.url, withIntermediateDirectories: true)
        for entry in try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path) {
            try FileManager.default.createSymbolicLink(at: scratch.url.appendingPathComponent(entry),
                                                       withDestinationURL: Self.corpus.appendingPathComponent(entry))
        }
        let clock = ContinuousClock()
        let start = clock.now
        // timeout(1) turns a hang into exit 124 (then a kill), never a stuck test run.
        let result = try runFlotilla(["-k", "2", "10", flotilla] + badInput.arguments, in: scratch.url, program: "/usr/bin/timeout")
        let elapsed = clock.now - start
        let context = "flotilla \(badInput.arguments.joined(separator: " ").prefix(300)) -> exit \(result.status)\nstdout: \(result.stdout.prefix(500))\nstderr: \(result.stderr.prefix(1000))"
        #expect(elapsed < .seconds(10), "took \(elapsed): \(context)")
        #expect(result.status == badInput.status, "\(context)")
        #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("crashed"), "\(context)")
        switch badInput.status {
        case 0:
            #expect(result.stdout.contains(badInput.message), "\(context)")
        case 69:
            #expect((result.stdout + result.stderr).contains(badInput.message), "\(context)")
        default:
            #expect(result.stdout.isEmpty, "\(context)")
            #expect(result.stderr.contains(badInput.message), "\(context)")
            #expect(result.stderr.hasPrefix("flotilla: error: ") || result.stderr.hasPrefix("Error: "), "\(context)")
        }
    }
}
