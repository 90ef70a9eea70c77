import Foundation
import Testing
@testable import FlotillaCore

private let t0 = Date(timeIntervalSince1970: 1_800_000_000)

/// The live status area's frames (SPEC §5): counts, ETA, in-flight hosts, cut to the
/// terminal; and styled lines. The printer that draws them is tested in
/// `TerminalProgressTests`.
@Suite struct StatusBoardTests {
    @Test func frameShowsBatchCountsAndInFlightHosts() {
        var board = StatusBoard(batchCount: 2, total: 4, started: t0)
        board.batch = 0
        board.inFlight = [.init(host: "st2-01", started: t0.addingTimeInterval(1.5), step: "stop services"),
                          .init(host: "st2-002", started: t0.addingTimeInterval(2.8), step: nil)]
        board.peakParallel = 2
        let now = t0.addingTimeInterval(3.04)
        #expect(board.lines(now: now, width: 120).map(\.plain) == [
            "batch 1/2 · 0 done · 2 in flight · 0 failed · 2 left · ETA ? · elapsed 3s",
            "  st2-01   stop services  1.5s",
            "  st2-002  connecting     0.2s",
        ])

        // ETA: mean 3 s; 2 hosts left (6 s) and what the two in flight still need (2 s
        // and 1 s), over 2 at once: 4.5 s, shown rounded up.
        board.inFlight = [.init(host: "st2-03", started: now.addingTimeInterval(-1), step: "upgrade packages"),
                          .init(host: "st2-04", started: now.addingTimeInterval(-2), step: "start services")]
        board.batch = 1
        board.done = 1
        board.failed = 1
        board.durations = [2, 4]
        board.total = 6
        #expect(board.eta(now: now) == 4.5)
        #expect(board.lines(now: now, width: 120)[0].plain == "batch 2/2 · 1 done · 2 in flight · 1 failed · 2 left · ETA 5s · elapsed 3s")
        // Nothing left: done.
        board.inFlight = []
        board.total = 2
        #expect(board.eta(now: now) == 0)
        #expect(StatusBoard.duration(185, rounding: .up) == "3m05s" && StatusBoard.duration(7322, rounding: .down) == "2h02m")
    }

    @Test func frameIsCappedAndCutToTheWidth() {
        var board = StatusBoard(batchCount: 1, total: 40, started: t0)
        board.batch = 0
        board.inFlight = (1...12).map { .init(host: "host-\($0)-with-a-rather-long-name.example.com", started: t0, step: "upgrade packages") }
        let lines = board.lines(now: t0.addingTimeInterval(61), width: 40)
        #expect(lines.count == 9) // header, 7 hosts, "… and 5 more"
        #expect(lines.last?.plain == "  … and 5 more in flight")
        #expect(lines.allSatisfy { $0.plain.count <= 39 })
        #expect(lines[0].plain.hasSuffix("…") && lines[1].plain.hasSuffix("…"))
        // A short terminal: fewer host lines, so the area always fits.
        #expect(board.lines(now: t0, width: 80, height: 8).count == 5)
    }

    @Test func colourOnlyWhenAsked() {
        var line = StyledLine("st2-01: ")
        line.append("FAILED", .red)
        line.append(" in 1.0 s")
        #expect(line.rendered(colour: false) == "st2-01: FAILED in 1.0 s")
        #expect(line.rendered(colour: true) == "st2-01: \u{1B}[31mFAILED\u{1B}[0m in 1.0 s")
        // Cutting keeps the styles of what is left.
        #expect(line.truncated(to: 11).rendered(colour: true) == "st2-01: \u{1B}[31mFA\u{1B}[0m…")
    }

    @Test func progressLinesOfARun() {
        let hosts = ["st2-01", "st2-02"].map { RunHost(name: $0, address: "127.0.0.1", batch: 0, steps: []) }
        let record = RunRecord(id: "20261121-153000-ab12", kind: .runbook, targetVersion: nil, createdAt: t0, hosts: hosts,
                               batches: [["st2-01", "st2-02"]], options: RunOptions())
        var live = RunProgress(record: record, quiet: false, live: true, started: t0)
        #expect(live.lines(for: .hostStarted("st2-01"), now: t0).isEmpty) // the area shows it
        #expect(live.board.inFlight.map(\.host) == ["st2-01"])
        var quiet = RunProgress(record: record, quiet: true, live: false, started: t0)
        #expect(quiet.lines(for: .hostFinished(host: "st2-01", status: .succeeded, error: nil, seconds: 1), now: t0).isEmpty)
        let failed = quiet.lines(for: .hostFinished(host: "st2-02", status: .failed, error: "exit 1", seconds: 2), now: t0)
        #expect(failed.map(\.plain).map { String($0.drop { $0 != "]" }.dropFirst(2)) } == ["st2-02: FAILED in 2.0 s [2/2] — exit 1"])
        #expect(quiet.board.done == 1 && quiet.board.failed == 1)
    }
}
