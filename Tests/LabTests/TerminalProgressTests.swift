import Foundation
import Testing
@testable import flotilla
@testable import flotilla_lab
import FlotillaCore

/// Live progress on a terminal (SPEC §5) (the status area's frames: `StatusBoardTests`; the
/// printer's redraws on a screen model: `ProgressPrinterTests`): stderr's mode, and
/// `flotilla upgrade` under tmux with the pane read while it runs.
@Suite struct TerminalProgressTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    @Test func noTerminalWhenTermIsDumb() {
        // NO_COLOR set and non-empty turns colour off; TERM=dumb is no terminal at all.
        // (stderr is not a tty under `swift test`, so only the negative case is checkable.)
        let record = RunRecord(id: "20261121-153000-ab12", kind: .stackstormUpgrade, targetVersion: "3.8.1", createdAt: Date(),
                               hosts: [RunHost(name: "st2-01", address: "127.0.0.1", batch: 0, steps: [])], batches: [["st2-01"]], options: RunOptions())
        #expect(!ProgressPrinter(record: record, quiet: false, mode: .standardError(environment: ["TERM": "dumb"]), refresh: 0, write: { _ in }).isLive)
    }

    // MARK: The binary on a terminal

    static let slowFleet = TestLab.slowStopSpec(["st2-01", "st2-02", "st2-03", "st2-04"], delay: "1500ms")

    /// A tmux server of the test's own (its socket in the lab's directory), so nothing
    /// touches the user's sessions.
    struct Tmux {
        let binary: String
        let socket: String
        let session = "progress"

        static func binary() throws -> String {
            let found = try run(["/bin/sh", "-c", "command -v tmux"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !found.isEmpty else {
                throw LabUpFailed(message: "tmux is required for the terminal progress test and is not installed (apt-get install tmux)")
            }
            return found
        }

        @discardableResult
        func callAsFunction(_ arguments: [String]) throws -> Run {
            try run([binary, "-S", socket] + arguments)
        }

        /// The pane's text; with `escapes`, its colours and attributes as SGR codes.
        func pane(escapes: Bool = false) throws -> String {
            try self(["capture-pane", "-p", "-t", session] + (escapes ? ["-e"] : [])).stdout
        }

        /// Polls the pane until `condition` holds; the last capture either way.
        func waitForPane(seconds: Double, escapes: Bool = false, _ condition: (String) -> Bool) throws -> (Bool, String) {
            let deadline = Date().addingTimeInterval(seconds)
            var text = try pane(escapes: escapes)
            while !condition(text) {
                guard Date() < deadline else { return (false, text) }
                usleep(50_000)
                text = try pane(escapes: escapes)
            }
            return (true, text)
        }

        func kill() {
            _ = try? self(["kill-session", "-t", session])
            _ = try? self(["kill-server"])
        }
    }

    static func quoted(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// `  st2-01  stop services  1.2s`: host, step, elapsed.
    static func hostLines(_ pane: String) -> [(host: String, step: String, elapsed: Double)] {
        pane.matches(of: /(?m)^  (st2-0\d)  (\S+(?: \S+)*)\s+(\d+\.\d)s$/).map { (String($0.1), String($0.2), Double($0.3)!) }
    }

    static func unstyled(_ text: String) -> String {
        text.replacing(/\x1B\[[0-9;]*m/, with: "")
    }

    @Test(arguments: [true, false])
    func liveProgressUnderTmux(colour: Bool) throws {
        let binary = try Tmux.binary()
        let lab = try TestLab(spec: Self.slowFleet)
        let tmux = Tmux(binary: binary, socket: lab.dir.appendingPathComponent("tmux.sock").path)
        let state = lab.dir.appendingPathComponent("state")
        let environment = colour ? ["env", "-u", "NO_COLOR", "TERM=xterm-256color"] : ["env", "NO_COLOR=1", "TERM=xterm-256color"]
        let command = (environment + [Self.flotilla, "upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--batch", "2",
                                      "--state-dir", state.path]).map(Self.quoted).joined(separator: " ")
        defer {
            tmux.kill()
            withExtendedLifetime(lab) {} // up until the session is gone
        }
        let started = try tmux(["new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "40", "\(command); echo EXIT=$?; sleep 60"])
        try #require(started.status == 0, "tmux new-session: \(started.stderr)")

        // While the first batch stops its services (1.5 s): the area, redrawn in place.
        let (live, styled) = try tmux.waitForPane(seconds: 60, escapes: true) { text in
            let plain = Self.unstyled(text)
            return plain.contains("batch 1/2 ·") && Self.hostLines(plain).contains { $0.step == "stop services" }
        }
        let pane = Self.unstyled(styled)
        try #require(live, "no status area with a host in 'stop services':\n\(pane)")
        let area = pane.split(separator: "\n").filter { $0.hasPrefix("batch 1/2 ·") }
        #expect(area.count == 1, "\(pane)")
        #expect(area.first?.wholeMatch(of: /batch 1\/2 · [0-2] done · [12] in flight · 0 failed · [23] left · ETA (\?|\d+s) · elapsed \d+s/) != nil, "\(pane)")
        if colour {
            #expect(styled.contains("\u{1B}[1mbatch 1/2"), "no colour in the area:\n\(styled)")
            #expect(styled.contains("\u{1B}[2mstop services"), "steps not dim:\n\(styled)")
        } else {
            for code in ["\u{1B}[3", "\u{1B}[1m", "\u{1B}[2m"] {
                #expect(!styled.contains(code), "NO_COLOR=1 but \(code.debugDescription) is used:\n\(styled)")
            }
        }
        // Elapsed times move on with no event in between (the timer): a host seen in
        // 'stop services' (no event for 1.5 s) at times 0.4 s or more apart.
        var seen: [String: [Double]] = [:]
        func moved() -> Bool { seen.values.contains { ($0.max() ?? 0) - ($0.min() ?? 0) >= 0.4 } }
        let (_, later) = try tmux.waitForPane(seconds: 30) { text in
            for line in Self.hostLines(text) where line.step == "stop services" { seen[line.host, default: []].append(line.elapsed) }
            return moved() || text.contains("EXIT=")
        }
        #expect(moved(), "elapsed time not redrawn between events: \(seen)\n\(later)")

        // The end: one line per host, the summary, and no area left over.
        let (ended, final) = try tmux.waitForPane(seconds: 90) { $0.contains("EXIT=") }
        #expect(ended, "the run did not end:\n\(final)")
        #expect(final.contains("EXIT=0"), "\(final)")
        let lines = final.split(separator: "\n").map(String.init)
        for host in ["st2-01", "st2-02", "st2-03", "st2-04"] {
            let pattern = try Regex(#"\[\d\d:\d\d:\d\d\] "# + host + #": SUCCEEDED in \d+\.\d s \[\d/4\]"#)
            let finished = lines.filter { $0.wholeMatch(of: pattern) != nil }
            #expect(finished.count == 1, "\(host):\n\(final)")
        }
        #expect(lines.contains { $0.wholeMatch(of: /\[\d\d:\d\d:\d\d\] run \d{8}-\d{6}-[0-9a-f]+ succeeded: 4 succeeded/) != nil }, "\(final)")
        #expect(!final.contains("in flight") && !final.contains("ETA") && !lines.contains { $0.hasPrefix("  st2-") }, "status area left over:\n\(final)")

        let finalStyled = try tmux.pane(escapes: true)
        if colour {
            #expect(finalStyled.contains("\u{1B}[32mSUCCEEDED"), "no colour:\n\(finalStyled)")
        } else {
            for code in ["\u{1B}[3", "\u{1B}[1m", "\u{1B}[2m"] {
                #expect(!finalStyled.contains(code), "NO_COLOR=1 but \(code.debugDescription) is used:\n\(finalStyled)")
            }
        }
    }
}
