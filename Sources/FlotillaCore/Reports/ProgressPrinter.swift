import Foundation

/// A run's progress on stderr (SPEC §5), framed by ``RunDisplay``: lines, the live
/// status area (redrawn on every event and every half second), or quiet. Writes each
/// frame in one call under a lock, so a frame is never torn by another thread's output.
///
/// Anything else writing to stderr while the live area is up must go through `aside`
/// (or call `suspend` first), or it is drawn over.
public final class ProgressPrinter: @unchecked Sendable {
    // @unchecked: every mutable field is only touched while holding `lock`.
    private let lock = NSLock()
    private let write: @Sendable (String) -> Void
    private let clock: @Sendable () -> Date
    /// What is on screen and what comes next (hidden until the next event by `suspend`,
    /// gone for good after `finish`).
    private var display: RunDisplay
    private var timer: DispatchSourceTimer?

    /// - Parameters:
    ///   - quiet: only halts, errors and the final summary (see ``RunProgress``).
    ///   - write: where the text goes (stderr); called with the lock held, one call per
    ///     event.
    public init(record: RunRecord, quiet: Bool, mode: RunDisplay.Mode, refresh: Double = 0.5,
         clock: @escaping @Sendable () -> Date = Date.init, write: @escaping @Sendable (String) -> Void) {
        self.write = write
        self.clock = clock
        display = RunDisplay(record: record, quiet: quiet, mode: mode, started: clock())
        if display.isLive, refresh > 0 {
            // Elapsed times move on between events.
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "flotilla.progress"))
            timer.schedule(deadline: .now() + refresh, repeating: refresh)
            timer.setEventHandler { [weak self] in self?.tick() }
            timer.resume()
            self.timer = timer
        }
    }

    deinit { timer?.cancel() }

    /// Whether the status area is drawn (a terminal), not lines.
    public var isLive: Bool { display.isLive }

    /// Shows an engine event.
    public func show(_ progress: RolloutEngine.Progress) {
        let now = clock()
        lock.withLock { emit(display.show(progress, now: now)) }
    }

    /// A note for the operator (e.g. a control command received); not shown when quiet.
    public func note(_ text: String) {
        let now = clock()
        lock.withLock { emit(display.note(text, now: now)) }
    }

    /// Runs `body`, which writes to stderr itself, with the status area out of the way.
    public func aside(_ body: () -> Void) {
        lock.withLock {
            let wasHidden = display.hidden
            display.hidden = true
            emit(display.redraw(now: clock()))
            body()
            display.hidden = wasHidden
            emit(display.redraw(now: clock()))
        }
    }

    /// Takes the status area off the screen until the next event (before a prompt).
    public func suspend() {
        lock.withLock {
            display.hidden = true
            emit(display.redraw(now: clock()))
        }
    }

    /// Takes the status area off the screen for good and stops its timer: call when the
    /// engine is done, before anything else is written to stdout or stderr.
    public func finish() {
        lock.withLock {
            guard !display.ended else { return }
            timer?.cancel()
            timer = nil
            emit(display.finish(now: clock()))
        }
    }

    /// Takes the status area away and writes the run's closing summary.
    public func summary(_ state: JournalState, outcome: RolloutPolicy.Outcome) {
        finish()
        let now = clock()
        lock.withLock { emit(display.summary(state, now: now)) }
    }

    /// Writes a frame, if there is one. Lock held.
    private func emit(_ text: String?) {
        if let text { write(text) }
    }

    /// The timer: redraws the area in place (elapsed times, ETA).
    private func tick() {
        lock.withLock {
            guard display.drawn > 0 else { return }
            emit(display.redraw(now: clock()))
        }
    }
}
