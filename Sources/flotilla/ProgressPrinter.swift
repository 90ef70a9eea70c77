import FlotillaCore
import Foundation

/// A run's progress on stderr (SPEC §5), in one of three forms:
///
/// - **Lines** (stderr is not a terminal, or TERM=dumb): one timestamped line per event,
///   nothing redrawn, e.g. `[14:02:11] st2-01: SUCCEEDED in 0.5 s [1/11]`. Scripts and
///   tests parse these lines: keep them as they are.
/// - **Live** (stderr is a terminal): the same lines for started batches, finished hosts,
///   steps that did not succeed and notes scroll by above a status area at the bottom
///   (`StatusBoard`: batch k/n, counts, ETA, each in-flight host with its step and
///   elapsed time), redrawn in place with ANSI cursor movement on every event and every
///   half second; in colour unless NO_COLOR is set (non-empty). `summary` clears the area
///   for good and prints the result.
/// - **Quiet** (`quiet: true`, either kind of stderr): only halts and the engine's other
///   notes, the hosts that did not reach the goal, and the final summary; no status area.
///
/// Anything else writing to stderr while the live area is up must go through `aside`
/// (or call `suspend` first), or it is drawn over.
final class ProgressPrinter: @unchecked Sendable {
    // @unchecked: every mutable field is only touched while holding `lock`.
    private let lock = NSLock()
    private let quiet: Bool
    private let terminal: Terminal?
    private let write: @Sendable (String) -> Void
    private let clock: @Sendable () -> Date

    /// The lines and the live area's state; its lines now on screen (the cursor is just
    /// below them); hidden until the next event (`suspend`); gone for good (`finish`).
    private var state: RunProgress
    private var drawn = 0
    private var hidden = false
    private var ended = false
    private var timer: DispatchSourceTimer?

    /// What the live mode knows of the terminal.
    struct Terminal: Sendable {
        var colour: Bool
        /// Columns and rows (nil: unknown), asked again at every redraw (the window may be
        /// resized).
        var size: @Sendable () -> (width: Int, height: Int?)

        /// The terminal on stderr, or nil when stderr is not one that takes ANSI cursor
        /// movement (not a tty, or TERM=dumb). Colour unless NO_COLOR is set and non-empty.
        static func standardError(environment: [String: String] = ProcessInfo.processInfo.environment) -> Terminal? {
            guard isatty(STDERR_FILENO) != 0, environment["TERM"] != "dumb" else { return nil }
            return Terminal(colour: (environment["NO_COLOR"] ?? "").isEmpty, size: windowSize)
        }

        /// TIOCGWINSZ on stderr; 80 columns when it cannot tell.
        @Sendable static func windowSize() -> (width: Int, height: Int?) {
            var size = winsize()
            guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return (80, nil) }
            return (Int(size.ws_col), size.ws_row > 0 ? Int(size.ws_row) : nil)
        }
    }

    /// - Parameters:
    ///   - quiet: only halts, errors and the final summary (see ``RunProgress``).
    ///   - terminal: nil for line-per-event output.
    ///   - write: where the text goes (stderr); called with the lock held, one call per
    ///     event, so a frame is never torn by another thread's output.
    init(record: RunRecord, quiet: Bool, terminal: Terminal?, refresh: Double = 0.5,
         clock: @escaping @Sendable () -> Date = Date.init, write: @escaping @Sendable (String) -> Void) {
        self.quiet = quiet
        self.terminal = quiet ? nil : terminal
        self.write = write
        self.clock = clock
        state = RunProgress(record: record, quiet: quiet, live: self.terminal != nil, started: clock())
        if self.terminal != nil, refresh > 0 {
            // Elapsed times move on between events.
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "flotilla.progress"))
            timer.schedule(deadline: .now() + refresh, repeating: refresh)
            timer.setEventHandler { [weak self] in self?.tick() }
            timer.resume()
            self.timer = timer
        }
    }

    deinit { timer?.cancel() }

    var isLive: Bool { terminal != nil }

    func show(_ progress: RolloutEngine.Progress) {
        let now = clock()
        lock.withLock {
            hidden = false
            redraw(state.lines(for: progress, now: now), now: now)
        }
    }

    /// A note for the operator (e.g. a control command received); not shown when quiet.
    func note(_ text: String) {
        guard !quiet else { return }
        let now = clock()
        lock.withLock { redraw([RunProgress.line(now, text)], now: now) }
    }

    /// Runs `body`, which writes to stderr itself, with the status area out of the way.
    func aside(_ body: () -> Void) {
        lock.withLock {
            let wasHidden = hidden
            hidden = true
            redraw([], now: clock())
            body()
            hidden = wasHidden
            redraw([], now: clock())
        }
    }

    /// Takes the status area off the screen until the next event (before a prompt).
    func suspend() {
        lock.withLock {
            hidden = true
            redraw([], now: clock())
        }
    }

    /// Takes the status area off the screen for good and stops its timer: call when the
    /// engine is done, before anything else is written to stdout or stderr.
    func finish() {
        lock.withLock {
            guard !ended else { return }
            ended = true
            timer?.cancel()
            timer = nil
            redraw([], now: clock())
        }
    }

    func summary(_ state: JournalState, outcome: RolloutPolicy.Outcome) {
        finish()
        let now = clock()
        lock.withLock { redraw(RunProgress.summary(state, now: now), now: now) }
    }

    // MARK: Output

    /// Writes `above` (lines that stay), then, when live, the status area below them
    /// (unless hidden or ended), all in one write. Lock held.
    private func redraw(_ above: [StyledLine], now: Date) {
        guard let terminal else {
            if !above.isEmpty { write(above.map { $0.plain + "\n" }.joined()) }
            return
        }
        var lines: [StyledLine] = []
        if !ended && !hidden && state.board.batch != nil {
            let (width, height) = terminal.size()
            lines = state.board.lines(now: now, width: width, height: height)
        }
        guard drawn > 0 || !above.isEmpty || !lines.isEmpty else { return }
        // Back to the area's first line. Lines that stay may wrap, so the area goes first;
        // else each line of the new frame is cleared as it is drawn over, and whatever the
        // old frame had below the new one is cleared at the end.
        var text = drawn > 0 ? "\r\u{1B}[\(drawn)A" : ""
        if !above.isEmpty { text += "\u{1B}[J" }
        for line in above { text += line.rendered(colour: terminal.colour) + "\n" }
        for line in lines { text += "\u{1B}[2K" + line.rendered(colour: terminal.colour) + "\n" }
        text += "\u{1B}[J"
        drawn = lines.count
        write(text)
    }

    /// The timer: redraws the area in place (elapsed times, ETA).
    private func tick() {
        lock.withLock {
            guard drawn > 0 else { return }
            redraw([], now: clock())
        }
    }
}
