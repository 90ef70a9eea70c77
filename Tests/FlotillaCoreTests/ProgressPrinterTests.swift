import Foundation
import Testing
@testable import FlotillaCore

/// The run's progress printer (SPEC §5) (the status area's frames: `StatusBoardTests`; the
/// binary under tmux: `TerminalProgressTests`): its in-place redraws replayed on a small
/// screen model, the unchanged plain lines, and quiet output.
@Suite struct ProgressPrinterTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func record(hosts: Int, batches: [[String]]) -> RunRecord {
        let names = (1...hosts).map { String(format: "st2-%02d", $0) }
        let runHosts = names.map { name in
            RunHost(name: name, address: "127.0.0.1", batch: batches.firstIndex { $0.contains(name) }, steps: [])
        }
        return RunRecord(id: "20261121-153000-ab12", kind: .stackstormUpgrade, targetVersion: "3.8.1", createdAt: t0,
                         hosts: runHosts, batches: batches, options: RunOptions())
    }

    /// What a terminal shows after the printer's output: text, `\n`, `\r`, cursor up
    /// (`ESC[nA`), clear line (`ESC[2K`), clear to the end of the screen (`ESC[J`);
    /// colours are dropped.
    final class Screen: @unchecked Sendable {
        // @unchecked: only touched while holding `lock`.
        private let lock = NSLock()
        private var rows: [[Character]] = [[]]
        private var row = 0, column = 0
        private(set) var raw = ""

        func write(_ text: String) {
            lock.withLock {
                raw += text
                var characters = Array(text)[...]
                while let character = characters.popFirst() {
                    switch character {
                    case "\n":
                        row += 1
                        column = 0
                        while rows.count <= row { rows.append([]) }
                    case "\r":
                        column = 0
                    case "\u{1B}":
                        guard characters.popFirst() == "[" else { continue }
                        var parameter = ""
                        parse: while let next = characters.popFirst() {
                            if next.isNumber || next == ";" { parameter.append(next); continue }
                            switch next {
                            case "A": row = max(row - (Int(parameter) ?? 1), 0)
                            case "K" where parameter == "2": rows[row] = []
                            case "J":
                                rows[row] = Array(rows[row].prefix(column))
                                rows.removeSubrange((row + 1)...)
                            default: break // colours
                            }
                            break parse
                        }
                    default:
                        while rows[row].count < column { rows[row].append(" ") }
                        if column < rows[row].count { rows[row][column] = character } else { rows[row].append(character) }
                        column += 1
                    }
                }
            }
        }

        /// The screen's lines, without the empty one the cursor sits on at the end.
        var lines: [String] {
            lock.withLock {
                var lines = rows.map { String($0) }
                while lines.last == "" { lines.removeLast() }
                return lines
            }
        }
    }

    /// Drops the `[HH:MM:SS] ` stamp.
    static func unstamped(_ line: String) -> String {
        line.replacingOccurrences(of: #"^\[\d\d:\d\d:\d\d\] "#, with: "", options: .regularExpression)
    }

    @Test func liveAreaIsRedrawnInPlaceBelowTheFinishedHosts() {
        let screen = Screen()
        let clock = Clock(Self.t0)
        let record = Self.record(hosts: 4, batches: [["st2-01", "st2-02"], ["st2-03", "st2-04"]])
        let printer = ProgressPrinter(record: record, quiet: false, mode: .live(colour: true, size: { (72, 24) }),
                                      refresh: 0, clock: { clock.now }, write: screen.write)
        printer.show(.batchStarted(index: 0, hosts: ["st2-01", "st2-02"]))
        printer.show(.hostStarted("st2-01"))
        printer.show(.hostStarted("st2-02"))
        printer.show(.stepStarted(host: "st2-01", step: "stop services"))
        clock.now = Self.t0.addingTimeInterval(1.3)
        printer.show(.stepStarted(host: "st2-02", step: "stop services"))
        #expect(screen.lines.map(Self.unstamped) == [
            "batch 1/2 started: st2-[01-02] (2)",
            "batch 1/2 · 0 done · 2 in flight · 0 failed · 2 left · ETA ?",
            "  st2-01  stop services  1.3s",
            "  st2-02  stop services  1.3s",
        ])
        #expect(screen.raw.contains("\u{1B}[2mstop services\u{1B}[0m"))

        clock.now = Self.t0.addingTimeInterval(2)
        printer.show(.stepFinished(host: "st2-01", step: "stop services", status: .failed, seconds: 2))
        printer.show(.hostFinished(host: "st2-01", status: .failed, error: "step 'stop services' failed: exit 1", seconds: 2))
        printer.note("halting: max-fail 0 exceeded")
        printer.aside { screen.write("flotilla: SIGINT: starting no new host\n") }
        #expect(screen.lines.map(Self.unstamped) == [
            "batch 1/2 started: st2-[01-02] (2)",
            "st2-01: step 'stop services' failed (2.0 s)",
            "st2-01: FAILED in 2.0 s [1/4] — step 'stop services' failed: exit 1",
            "halting: max-fail 0 exceeded",
            "flotilla: SIGINT: starting no new host",
            "batch 1/2 · 0 done · 1 in flight · 1 failed · 2 left · ETA 2s", // no room for the elapsed time
            "  st2-02  stop services  2.0s",
        ])
        #expect(screen.raw.contains("\u{1B}[31mFAILED\u{1B}[0m"))

        // Before a prompt the area goes, and comes back with the next event.
        printer.suspend()
        #expect(!screen.lines.contains { $0.contains("in flight") })
        printer.show(.hostFinished(host: "st2-02", status: .succeeded, error: nil, seconds: 2.5))
        #expect(screen.lines.last?.hasPrefix("batch 1/2 · 1 done · 0 in flight · 1 failed · 2 left · ") == true)

        // The end: the area goes for good; nothing after it redraws it.
        printer.finish()
        printer.note("after the end")
        let lines = screen.lines.map(Self.unstamped)
        #expect(lines.suffix(2) == ["st2-02: SUCCEEDED in 2.5 s [2/4]", "after the end"])
        #expect(!lines.contains { $0.contains("in flight") || $0.hasPrefix("  st2-") })
    }

    @Test func plainLinesWhenNotATerminal() {
        let screen = Screen()
        let record = Self.record(hosts: 3, batches: [["st2-01", "st2-02"], ["st2-03"]])
        let printer = ProgressPrinter(record: record, quiet: false, mode: .lines, clock: { Self.t0 }, write: screen.write)
        printer.show(.batchStarted(index: 0, hosts: ["st2-01", "st2-02"]))
        printer.show(.hostStarted("st2-01"))
        printer.show(.stepStarted(host: "st2-01", step: "stop services"))
        printer.show(.stepFinished(host: "st2-01", step: "stop services", status: .succeeded, seconds: 0.2))
        printer.show(.stepFinished(host: "st2-01", step: "migrate", status: .skipped, seconds: 0))
        printer.show(.hostFinished(host: "st2-01", status: .succeeded, error: nil, seconds: 0.51))
        printer.show(.hostFinished(host: "st2-02", status: .unreachable, error: "connection refused", seconds: 0.1))
        printer.show(.note("halting: too many failures"))
        printer.note("control: pause")
        printer.finish()
        #expect(!screen.raw.contains("\u{1B}"))
        #expect(screen.raw.split(separator: "\n").allSatisfy { $0.wholeMatch(of: /\[\d\d:\d\d:\d\d\] .*/) != nil })
        #expect(screen.lines.map(Self.unstamped) == [
            "batch 1/2 started: st2-[01-02] (2)",
            "st2-01: started",
            "st2-01: step 'migrate' skipped (0.0 s)",
            "st2-01: SUCCEEDED in 0.5 s [1/3]",
            "st2-02: UNREACHABLE in 0.1 s [2/3] — connection refused",
            "halting: too many failures",
            "control: pause",
        ])
    }

    @Test func quietShowsOnlyHaltsAndErrors() {
        for mode in [RunDisplay.Mode.lines, .live(colour: false, size: { (80, 24) })] {
            let screen = Screen()
            let record = Self.record(hosts: 3, batches: [["st2-01", "st2-02", "st2-03"]])
            let printer = ProgressPrinter(record: record, quiet: true, mode: mode, refresh: 0, clock: { Self.t0 }, write: screen.write)
            printer.show(.batchStarted(index: 0, hosts: ["st2-01", "st2-02", "st2-03"]))
            printer.show(.hostStarted("st2-01"))
            printer.show(.stepStarted(host: "st2-01", step: "stop services"))
            printer.show(.stepFinished(host: "st2-01", step: "stop services", status: .failed, seconds: 1))
            printer.show(.hostFinished(host: "st2-01", status: .failed, error: "step 'stop services' failed: exit 1", seconds: 1))
            printer.show(.hostFinished(host: "st2-02", status: .succeeded, error: nil, seconds: 1))
            printer.show(.note("halting: max-fail 0 exceeded"))
            printer.note("control: pause")
            #expect(!printer.isLive)
            #expect(screen.lines.map(Self.unstamped) == [
                "st2-01: FAILED in 1.0 s [1/3] — step 'stop services' failed: exit 1",
                "halting: max-fail 0 exceeded",
            ])
        }
    }

    final class Clock: @unchecked Sendable {
        // @unchecked: only touched while holding `lock`.
        private let lock = NSLock()
        private var value: Date
        init(_ value: Date) { self.value = value }
        var now: Date {
            get { lock.withLock { value } }
            set { lock.withLock { value = newValue } }
        }
    }
}
