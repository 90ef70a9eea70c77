import Foundation
import Testing

/// Shell completions: the scripts argument-parser generates, and `--limit` completing
/// host and group names from the inventory on the command line.
@Suite struct CompletionTests {
    let scratch: Scratch

    init() throws {
        scratch = try Scratch(["hosts.ini": "[web]\nweb-[01:03]\n[db]\ndb-01\n[prod:children]\nweb\n"])
    }

    /// Runs bash's completion for `line` (the cursor at its end) and returns the candidates.
    func complete(_ words: [String]) throws -> [String] {
        let script = try runFlotilla(["--generate-completion-script", "bash"], in: scratch.url)
        #expect(script.status == 0)
        try script.stdout.write(to: scratch.url.appendingPathComponent("flotilla.bash"), atomically: true, encoding: .utf8)
        let quoted = words.map { "'\($0)'" }.joined(separator: " ")
        let program = """
            source ./flotilla.bash
            COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1); COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
            _flotilla flotilla "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        let bin = URL(fileURLWithPath: flotilla).deletingLastPathComponent().path
        let result = try runFlotilla(["-c", program], in: scratch.url, program: "/bin/bash", environment: ["PATH": "\(bin):/usr/bin:/bin"])
        #expect(result.status == 0, "\(result.stderr)")
        return result.stdout.split(separator: "\n").map(String.init).sorted()
    }

    @Test func limitCompletesHostsAndGroupsFromTheInventory() throws {
        #expect(try complete(["flotilla", "plan", "-i", "hosts.ini", "--limit", "web"]) == ["web", "web-01", "web-02", "web-03"])
        #expect(try complete(["flotilla", "upgrade", "--inventory", "hosts.ini", "-l", "p"]) == ["prod"])
        #expect(try complete(["flotilla", "hosts", "-i", "hosts.ini", "--limit", "zzz"]) == [])
        // No inventory on the line and none in the environment: nothing, and no error.
        #expect(try complete(["flotilla", "ping", "--limit", "web"]) == [])
    }

    @Test func subcommandsAndOptionsComplete() throws {
        #expect(try complete(["flotilla", "re"]) == ["report", "resume"])
        #expect(try complete(["flotilla", "upgrade", "--max-f"]) == ["--max-fail", "--max-fail-batch"])
    }

    @Test(arguments: ["zsh", "fish"])
    func otherShellsGetScripts(shell: String) throws {
        let script = try runFlotilla(["--generate-completion-script", shell], in: scratch.url)
        #expect(script.status == 0)
        #expect(script.stdout.contains("---completion upgrade -- --limit"))
    }
}
