import Foundation

/// A run's progress as written to stderr (SPEC §5), event by event, in one of three
/// forms:
///
/// - **Lines** (stderr is not a terminal, or TERM=dumb): one timestamped line per event,
///   nothing redrawn, e.g. `[14:02:11] st2-01: SUCCEEDED in 0.5 s [1/11]`. Scripts and
///   tests parse these lines: keep them as they are.
/// - **Live** (stderr is a terminal): the same lines for started batches, finished hosts,
///   steps that did not succeed and notes scroll by above a status area at the bottom
///   (``StatusBoard``: batch k/n, counts, ETA, each in-flight host with its step and
///   elapsed time), redrawn in place with ANSI cursor movement; in colour unless
///   NO_COLOR is set (non-empty). `summary` clears the area for good and adds the result.
/// - **Quiet** (`quiet: true`, either kind of stderr): only halts and the engine's other
///   notes, the hosts that did not reach the goal, and the final summary; no status area.
///
/// Each call returns the text to write (nil: nothing), so whoever writes it (the CLI's
/// progress printer) owns only stderr, a lock and the redraw timer.
public struct RunDisplay: Sendable {
    /// No terminal (or one without cursor movement): lines only, nothing redrawn; else
    /// the live area, in colour or not, `size` giving the terminal's columns and rows
    /// (nil: unknown), asked at every redraw (the window may be resized).
    public enum Mode: Sendable {
        case lines
        case live(colour: Bool, size: @Sendable () -> (width: Int, height: Int?))
    }

    private var progress: RunProgress
    private let mode: Mode
    /// Off the screen until the next event (before a prompt, or while something else
    /// writes to stderr).
    public var hidden = false
    /// Off the screen for good: the run ended.
    public private(set) var ended = false
    /// The area's lines now on screen (the cursor is just below them).
    public private(set) var drawn = 0

    /// - Parameter quiet: only halts, errors and the final summary (see ``RunProgress``),
    ///   and no status area whatever `mode` says.
    public init(record: RunRecord, quiet: Bool, mode: Mode, started: Date) {
        self.mode = quiet ? .lines : mode
        var live = false
        if case .live = self.mode { live = true }
        progress = RunProgress(record: record, quiet: quiet, live: live, started: started)
    }

    /// Whether a status area is drawn.
    public var isLive: Bool {
        if case .live = mode { return true }
        return false
    }

    /// An engine event: the lines it adds, and the area shown again.
    public mutating func show(_ event: RolloutEngine.Progress, now: Date) -> String? {
        hidden = false
        return frame(above: progress.lines(for: event, now: now), now: now)
    }

    /// A note for the operator (e.g. a control command received); none when quiet.
    public mutating func note(_ text: String, now: Date) -> String? {
        guard !progress.quiet else { return nil }
        return frame(above: [RunProgress.line(now, text)], now: now)
    }

    /// The area as it is now (after `hidden` changed, or as time passes).
    public mutating func redraw(now: Date) -> String? { frame(above: [], now: now) }

    /// Takes the area off the screen for good.
    public mutating func finish(now: Date) -> String? {
        ended = true
        return frame(above: [], now: now)
    }

    /// The run's result (``RunProgress/summary(_:now:)``), the area gone for good.
    public mutating func summary(_ state: JournalState, now: Date) -> String? {
        ended = true
        return frame(above: RunProgress.summary(state, now: now), now: now)
    }

    /// Writes `above` (lines that stay), then, when live, the area below them (unless
    /// hidden or ended, or before the first batch), all in one text.
    private mutating func frame(above: [StyledLine], now: Date) -> String? {
        guard case .live(let colour, let size) = mode else {
            return above.isEmpty ? nil : above.map { $0.plain + "\n" }.joined()
        }
        var lines: [StyledLine] = []
        if !ended && !hidden && progress.board.batch != nil {
            let (width, height) = size()
            lines = progress.board.lines(now: now, width: width, height: height)
        }
        guard drawn > 0 || !above.isEmpty || !lines.isEmpty else { return nil }
        // Back to the area's first line. Lines that stay may wrap, so the area goes first;
        // else each line of the new frame is cleared as it is drawn over, and whatever the
        // old frame had below the new one is cleared at the end.
        var text = drawn > 0 ? "\r\u{1B}[\(drawn)A" : ""
        if !above.isEmpty { text += "\u{1B}[J" }
        for line in above { text += line.rendered(colour: colour) + "\n" }
        for line in lines { text += "\u{1B}[2K" + line.rendered(colour: colour) + "\n" }
        text += "\u{1B}[J"
        drawn = lines.count
        return text
    }
}

extension RunDisplay.Mode {
    /// The mode for a stream: live when it is a terminal that takes ANSI cursor movement
    /// (not TERM=dumb), in colour unless NO_COLOR is set and non-empty; else lines.
    public static func forStream(isTerminal: Bool, environment: [String: String],
                                 size: @escaping @Sendable () -> (width: Int, height: Int?)) -> RunDisplay.Mode {
        guard isTerminal, environment["TERM"] != "dumb" else { return .lines }
        return .live(colour: (environment["NO_COLOR"] ?? "").isEmpty, size: size)
    }
}
