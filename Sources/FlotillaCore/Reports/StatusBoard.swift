import Foundation

/// The live status area of a run on a terminal (SPEC §5): a pure function of the run's
/// state, the time and the terminal's size, so it can be tested without a terminal.
///
///     batch 1/2 · 1 done · 2 in flight · 0 failed · 1 left · ETA 4s · elapsed 6s
///       st2-02  stop services      1.2s
///       st2-03  connecting         0.1s
///
/// Every line fits the width (cut with "…"), and the area never takes more lines than
/// the terminal has, less a few.
public struct StatusBoard: Sendable {
    /// A host in flight: since when, and the step it is on (nil until the first starts).
    public struct InFlight: Sendable, Equatable {
        public var host: String
        public var started: Date
        public var step: String?

        public init(host: String, started: Date, step: String? = nil) {
            self.host = host
            self.started = started
            self.step = step
        }
    }

    /// The batch last started (0-based), nil before the first.
    public var batch: Int?
    /// Batches the run has.
    public var batchCount: Int
    /// Hosts the run's batches hold.
    public var total: Int
    /// Hosts finished at the goal (succeeded or skipped).
    public var done = 0
    /// Hosts finished failed or unreachable.
    public var failed = 0
    /// Hosts stopped before their plan's end (`--on-halt stop`, journal trouble).
    public var cancelled = 0
    /// In start order.
    public var inFlight: [InFlight] = []
    /// How long each finished host took, in seconds.
    public var durations: [Double] = []
    /// The most hosts seen in flight at once: the run's effective parallelism.
    public var peakParallel = 0
    /// When the run (this process's part of it) started.
    public var started: Date
    /// At most this many in-flight host lines; the rest are counted on one line.
    public var maxHostLines = 8

    public init(batchCount: Int, total: Int, started: Date) {
        self.batchCount = batchCount
        self.total = total
        self.started = started
    }

    /// Hosts not started yet.
    public var left: Int { max(total - done - failed - cancelled - inFlight.count, 0) }

    /// Seconds until the last host finishes, from the mean duration of the hosts finished
    /// so far: the work left (hosts not started, and what in-flight hosts still have to
    /// go) spread over the parallelism seen. Nil before the first host finished.
    public func eta(now: Date) -> Double? {
        guard !durations.isEmpty else { return nil }
        let mean = durations.reduce(0, +) / Double(durations.count)
        let inFlightLeft = inFlight.map { max(mean - now.timeIntervalSince($0.started), 0) }
        let work = Double(left) * mean + inFlightLeft.reduce(0, +)
        let parallel = Double(max(peakParallel, inFlight.count, 1))
        return max(work / parallel, inFlightLeft.max() ?? 0)
    }

    /// The area's lines for a terminal `width` columns wide and `height` rows high (nil:
    /// unknown).
    public func lines(now: Date, width: Int, height: Int? = nil) -> [StyledLine] {
        var header = StyledLine()
        header.append("batch \(batch.map { $0 + 1 } ?? 0)/\(batchCount)", .bold)
        header.append(" · ")
        header.append("\(done) done", done > 0 ? .green : .plain)
        header.append(" · \(inFlight.count) in flight · ")
        header.append("\(failed) failed", failed > 0 ? .red : .plain)
        if cancelled > 0 {
            header.append(" · ")
            header.append("\(cancelled) cancelled", .yellow)
        }
        header.append(" · \(left) left · ETA " + (eta(now: now).map { Self.duration($0, rounding: .up) } ?? "?"))
        // The run's elapsed time only where there is room for it.
        let elapsed = " · elapsed \(Self.duration(now.timeIntervalSince(started), rounding: .down))"
        if header.plain.count + elapsed.count < width { header.append(elapsed) }

        var cap = maxHostLines
        if let height { cap = min(cap, max(height - 4, 1)) }
        let shown = inFlight.count > cap ? Array(inFlight.prefix(cap - 1)) : inFlight
        let hostWidth = shown.map(\.host.count).max() ?? 0
        let stepWidth = shown.map { ($0.step ?? Self.connecting).count }.max() ?? 0
        var lines = [header]
        for host in shown {
            var line = StyledLine()
            line.append("  " + host.host.padding(toLength: hostWidth, withPad: " ", startingAt: 0) + "  ")
            line.append((host.step ?? Self.connecting).padding(toLength: stepWidth, withPad: " ", startingAt: 0), .dim)
            line.append("  " + String(format: "%.1fs", max(now.timeIntervalSince(host.started), 0)))
            lines.append(line)
        }
        if shown.count < inFlight.count {
            lines.append(StyledLine("  … and \(inFlight.count - shown.count) more in flight", .dim))
        }
        return lines.map { $0.truncated(to: max(width - 1, 10)) }
    }

    /// The step shown for a host that has not started its first step.
    public static let connecting = "connecting"

    /// `42s`, `3m05s`, `1h02m`: time gone by rounded down, time to go rounded up.
    public static func duration(_ seconds: Double, rounding: FloatingPointRoundingRule) -> String {
        let total = Int(max(seconds, 0).rounded(rounding))
        if total < 60 { return "\(total)s" }
        if total < 3600 { return String(format: "%dm%02ds", total / 60, total % 60) }
        return String(format: "%dh%02dm", total / 3600, total % 3600 / 60)
    }
}

/// How a piece of text is shown on a colour terminal.
public enum TextStyle: Sendable {
    case plain, bold, dim, green, red, yellow

    /// The ANSI SGR parameter of the style; nil for plain text.
    public var sgr: String? {
        switch self {
        case .plain: nil
        case .bold: "1"
        case .dim: "2"
        case .green: "32"
        case .red: "31"
        case .yellow: "33"
        }
    }
}

/// One line of terminal output made of styled pieces.
public struct StyledLine: Sendable, Equatable {
    public var pieces: [Piece] = []

    /// A run of text in one style.
    public struct Piece: Sendable, Equatable {
        public var text: String
        public var style: TextStyle
    }

    /// An empty line.
    public init() {}

    /// A line of one piece.
    public init(_ text: String, _ style: TextStyle = .plain) {
        append(text, style)
    }

    /// Adds a piece at the end.
    public mutating func append(_ text: String, _ style: TextStyle = .plain) {
        pieces.append(Piece(text: text, style: style))
    }

    /// The text without styles.
    public var plain: String { pieces.map(\.text).joined() }

    /// The line cut to `width` characters, its last one "…" when cut.
    public func truncated(to width: Int) -> StyledLine {
        guard plain.count > width else { return self }
        var copy = StyledLine()
        var room = width - 1
        for piece in pieces where room > 0 {
            let text = String(piece.text.prefix(room))
            copy.append(text, piece.style)
            room -= text.count
        }
        copy.append("…")
        return copy
    }

    /// The line as written to the terminal: with ANSI colour codes, or plain.
    public func rendered(colour: Bool) -> String {
        guard colour else { return plain }
        return pieces.map { piece in
            guard let sgr = piece.style.sgr, !piece.text.isEmpty else { return piece.text }
            return "\u{1B}[\(sgr)m\(piece.text)\u{1B}[0m"
        }.joined()
    }
}
