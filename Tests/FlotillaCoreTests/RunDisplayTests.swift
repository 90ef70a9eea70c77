import Foundation
import Testing
@testable import FlotillaCore

private let t0 = Date(timeIntervalSince1970: 1_800_000_000)

/// The frames of a run's progress (SPEC §5) as text: lines only, the live area redrawn in
/// place, quiet. The printer that writes them, replayed on a screen model, is tested in
/// `TerminalProgressTests`.
@Suite struct RunDisplayTests {
    static let record = RunRecord(id: "20261121-153000-ab12", kind: .stackstormUpgrade, targetVersion: "3.8.1", createdAt: t0,
                                  hosts: ["st2-01", "st2-02"].map { RunHost(name: $0, address: "127.0.0.1", batch: 0, steps: []) },
                                  batches: [["st2-01", "st2-02"]], options: RunOptions())

    static func live(colour: Bool = false) -> RunDisplay.Mode { .live(colour: colour, size: { (80, 24) }) }

    @Test func modeFollowsTheTerminalAndTheEnvironment() {
        func isLive(_ mode: RunDisplay.Mode) -> Bool? {
            if case .live(let colour, _) = mode { return colour }
            return nil
        }
        #expect(isLive(.forStream(isTerminal: true, environment: ["TERM": "xterm"], size: { (80, nil) })) == true)
        #expect(isLive(.forStream(isTerminal: true, environment: ["NO_COLOR": "1"], size: { (80, nil) })) == false)
        #expect(isLive(.forStream(isTerminal: true, environment: ["NO_COLOR": ""], size: { (80, nil) })) == true)
        #expect(isLive(.forStream(isTerminal: true, environment: ["TERM": "dumb"], size: { (80, nil) })) == nil)
        #expect(isLive(.forStream(isTerminal: false, environment: ["TERM": "xterm"], size: { (80, nil) })) == nil)
        #expect(!RunDisplay(record: Self.record, quiet: true, mode: Self.live(), started: t0).isLive, "quiet: no status area")
    }

    @Test func linesAreWrittenPlainAndNothingIsRedrawn() {
        var display = RunDisplay(record: Self.record, quiet: false, mode: .lines, started: t0)
        #expect(display.show(.batchStarted(index: 0, hosts: ["st2-01", "st2-02"]), now: t0)?.hasSuffix("] batch 1/1 started: st2-[01-02] (2)\n") == true)
        #expect(display.show(.stepStarted(host: "st2-01", step: "stop"), now: t0) == nil)
        #expect(display.redraw(now: t0) == nil)
        #expect(display.note("control: pause", now: t0)?.hasSuffix("] control: pause\n") == true)
        #expect(display.finish(now: t0) == nil)
        #expect(display.drawn == 0)
    }

    @Test func liveAreaGoesBackOverItselfAndAwayForGood() throws {
        var display = RunDisplay(record: Self.record, quiet: false, mode: Self.live(), started: t0)
        // Before the first batch: no area.
        #expect(display.show(.hostStarted("st2-01"), now: t0) == nil)
        let started = display.show(.batchStarted(index: 0, hosts: ["st2-01", "st2-02"]), now: t0)
        let first = try #require(started)
        #expect(!first.hasPrefix("\r"), "nothing on screen to go back over")
        #expect(first.contains("batch 1/1 started") && first.contains("\u{1B}[2Kbatch 1/1 · 0 done · 1 in flight"))
        let area = display.drawn
        #expect(area == 2)
        // A redraw goes up over the area, draws it again, and clears what is below.
        let redrawn = display.redraw(now: t0.addingTimeInterval(1))
        let again = try #require(redrawn)
        #expect(again.hasPrefix("\r\u{1B}[2A\u{1B}[2K") && again.hasSuffix("\u{1B}[J"))
        // Hidden (a prompt): the area is cleared; the next event brings it back.
        display.hidden = true
        #expect(display.redraw(now: t0) == "\r\u{1B}[2A\u{1B}[J")
        #expect(display.drawn == 0)
        #expect(display.redraw(now: t0) == nil)
        #expect(display.show(.stepStarted(host: "st2-01", step: "stop"), now: t0)?.contains("st2-01  stop") == true)
        #expect(!display.hidden)
        // The end: cleared for good, whatever comes next.
        #expect(display.finish(now: t0) == "\r\u{1B}[2A\u{1B}[J")
        #expect(display.show(.hostStarted("st2-02"), now: t0) == nil)
        #expect(display.note("after the end", now: t0)?.hasSuffix("] after the end\n\u{1B}[J") == true)
    }

    @Test func colourOnlyWhenAsked() throws {
        var plain = RunDisplay(record: Self.record, quiet: false, mode: Self.live(), started: t0)
        var colour = RunDisplay(record: Self.record, quiet: false, mode: Self.live(colour: true), started: t0)
        let event = RolloutEngine.Progress.hostFinished(host: "st2-01", status: .failed, error: "exit 1", seconds: 1)
        let plainFrame = plain.show(event, now: t0), colourFrame = colour.show(event, now: t0)
        #expect(try #require(plainFrame).contains("FAILED in 1.0 s"))
        #expect(!(try #require(plainFrame).contains("\u{1B}[31m")))
        #expect(try #require(colourFrame).contains("\u{1B}[31mFAILED\u{1B}[0m"))
    }

    @Test func quietShowsNoNotesOfItsOwn() {
        var display = RunDisplay(record: Self.record, quiet: true, mode: Self.live(), started: t0)
        #expect(display.note("control: pause", now: t0) == nil)
        #expect(display.show(.batchStarted(index: 0, hosts: ["st2-01"]), now: t0) == nil)
        #expect(display.show(.note("halting: max-fail 0 exceeded"), now: t0)?.hasSuffix("] halting: max-fail 0 exceeded\n") == true)
    }
}
