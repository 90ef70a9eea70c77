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
    private let record: RunRecord
    private var finished = 0
    private let total: Int
    private let quiet: Bool
    private let terminal: Terminal?
    private let write: @Sendable (String) -> Void
    private let clock: @Sendable () -> Date

    /// The live area's state; its lines now on screen (the cursor is just below them);
    /// hidden until the next event (`suspend`); gone for good (`finish`).
    private var board: StatusBoard
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

    /// Progress on stderr: live when it is a terminal, else line per event.
    /// - Parameter quiet: only halts, errors (hosts that failed, were unreachable or were
    ///   cancelled; the engine's notes) and the final summary.
    convenience init(record: RunRecord, quiet: Bool = false) {
        self.init(record: record, quiet: quiet, terminal: Terminal.standardError(),
                  write: { FileHandle.standardError.write(Data($0.utf8)) })
    }

    /// - Parameters:
    ///   - terminal: nil for line-per-event output.
    ///   - write: where the text goes (stderr); called with the lock held, one call per
    ///     event, so a frame is never torn by another thread's output.
    init(record: RunRecord, quiet: Bool, terminal: Terminal?, refresh: Double = 0.5,
         clock: @escaping @Sendable () -> Date = Date.init, write: @escaping @Sendable (String) -> Void) {
        self.record = record
        self.quiet = quiet
        self.terminal = quiet ? nil : terminal
        self.write = write
        self.clock = clock
        total = record.hosts.filter { $0.batch != nil }.count
        board = StatusBoard(batchCount: record.batches.count, total: total, started: clock())
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
            var above: [StyledLine] = []
            switch progress {
            case .batchStarted(let index, let hosts):
                board.batch = index
                if !quiet { above.append(line(now, "batch \(index + 1)/\(record.batches.count) started: \(HostNameSet.fold(hosts)) (\(hosts.count))")) }
            case .hostStarted(let host):
                board.inFlight.removeAll { $0.host == host }
                board.inFlight.append(.init(host: host, started: now))
                board.peakParallel = max(board.peakParallel, board.inFlight.count)
                if !quiet && !isLive { above.append(line(now, "\(host): started")) }
            case .stepStarted(let host, let step):
                if let position = board.inFlight.firstIndex(where: { $0.host == host }) { board.inFlight[position].step = step }
            case .stepFinished(let host, let step, let status, let seconds):
                if status != .succeeded && !quiet {
                    var text = line(now, "\(host): step '\(step)' ")
                    text.append(status.rawValue, Self.style(status))
                    text.append(String(format: " (%.1f s)", seconds))
                    above.append(text)
                }
            case .hostFinished(let host, let status, let error, let seconds):
                finished += 1
                board.inFlight.removeAll { $0.host == host }
                board.durations.append(seconds)
                switch status {
                case .succeeded, .skipped: board.done += 1
                case .failed, .unreachable: board.failed += 1
                default: board.cancelled += 1
                }
                if !quiet || ![.succeeded, .skipped].contains(status) {
                    var text = line(now, "\(host): ")
                    text.append(status.rawValue.uppercased(), Self.style(status))
                    text.append(String(format: " in %.1f s [%d/%d]", seconds, finished, total) + (error.map { " — \($0)" } ?? ""))
                    above.append(text)
                }
            case .note(let text):
                // Halts and journal trouble: shown even when quiet.
                above.append(line(now, text, text.hasPrefix("halting") ? .red : .plain))
            }
            redraw(above, now: now)
        }
    }

    /// A note for the operator (e.g. a control command received); not shown when quiet.
    func note(_ text: String) {
        guard !quiet else { return }
        let now = clock()
        lock.withLock { redraw([line(now, text)], now: now) }
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
        let counts = state.hostCounts
        let parts = HostRunStatus.allCases.compactMap { status in counts[status].map { "\($0) \(status.rawValue)" } }
        let result = RunResult.outcome(state.state)
        let now = clock()
        var head = line(now, "run \(state.record.id) ")
        let style: TextStyle = switch result {
        case "succeeded": .green
        case "stopped": .yellow
        default: .red
        }
        head.append(result, style)
        if let reason = state.haltReason { head.append(" (\(reason))") }
        head.append(": " + parts.joined(separator: ", "))
        var lines = [head]
        if [.halted, .stopped].contains(state.state) {
            lines.append(line(now, "continue with: flotilla resume \(state.record.id)" + (state.record.options.stateDir.map { " --state-dir \($0)" } ?? "")))
        }
        lock.withLock { redraw(lines, now: now) }
    }

    // MARK: Output

    /// `[HH:MM:SS] text`.
    private func line(_ now: Date, _ text: String, _ style: TextStyle = .plain) -> StyledLine {
        let stamp = ISO8601DateFormatter.string(from: now, timeZone: .current, formatOptions: [.withTime, .withColonSeparatorInTime])
        var line = StyledLine("[\(stamp)] ")
        line.append(text, style)
        return line
    }

    private static func style(_ status: HostRunStatus) -> TextStyle {
        switch status {
        case .succeeded: .green
        case .failed, .unreachable: .red
        case .skipped, .cancelled: .yellow
        default: .plain
        }
    }

    private static func style(_ status: StepRunStatus) -> TextStyle {
        switch status {
        case .succeeded: .green
        case .failed: .red
        default: .yellow
        }
    }

    /// Writes `above` (lines that stay), then, when live, the status area below them
    /// (unless hidden or ended), all in one write. Lock held.
    private func redraw(_ above: [StyledLine], now: Date) {
        guard let terminal else {
            if !above.isEmpty { write(above.map { $0.plain + "\n" }.joined()) }
            return
        }
        var lines: [StyledLine] = []
        if !ended && !hidden && board.batch != nil {
            let (width, height) = terminal.size()
            lines = board.lines(now: now, width: width, height: height)
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
