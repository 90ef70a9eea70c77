import Foundation

/// What a run's progress shows (SPEC §5), without a terminal: the timestamped lines each
/// engine event adds, e.g. `[14:02:11] st2-01: SUCCEEDED in 0.5 s [1/11]`, and the
/// ``StatusBoard`` of the live area. Scripts and tests parse these lines: keep them as
/// they are. Whoever prints them (the CLI's progress printer) owns the terminal.
public struct RunProgress: Sendable {
    /// The live area's state.
    public private(set) var board: StatusBoard
    /// Only halts, the hosts that did not reach the goal and the engine's notes.
    public let quiet: Bool
    /// A live status area shows the hosts in flight, so no line says a host started.
    public let live: Bool
    private let batchCount: Int
    private var finished = 0

    /// - Parameters:
    ///   - quiet: only halts, errors (hosts that failed, were unreachable or were
    ///     cancelled; the engine's notes) and the final summary.
    ///   - live: whether a status area is drawn below the lines.
    public init(record: RunRecord, quiet: Bool, live: Bool, started: Date) {
        self.quiet = quiet
        self.live = live
        batchCount = record.batches.count
        board = StatusBoard(batchCount: batchCount, total: record.hosts.filter { $0.batch != nil }.count, started: started)
    }

    /// Takes `progress` into the board and returns the lines it adds (none for most
    /// events when quiet).
    public mutating func lines(for progress: RolloutEngine.Progress, now: Date) -> [StyledLine] {
        switch progress {
        case .batchStarted(let index, let hosts):
            board.batch = index
            return quiet ? [] : [Self.line(now, "batch \(index + 1)/\(batchCount) started: \(HostNameSet.fold(hosts)) (\(hosts.count))")]
        case .hostStarted(let host):
            board.inFlight.removeAll { $0.host == host }
            board.inFlight.append(.init(host: host, started: now))
            board.peakParallel = max(board.peakParallel, board.inFlight.count)
            return quiet || live ? [] : [Self.line(now, "\(host): started")]
        case .stepStarted(let host, let step):
            if let position = board.inFlight.firstIndex(where: { $0.host == host }) { board.inFlight[position].step = step }
            return []
        case .stepFinished(let host, let step, let status, let seconds):
            guard status != .succeeded && !quiet else { return [] }
            var text = Self.line(now, "\(host): step '\(step)' ")
            text.append(status.rawValue, Self.style(status))
            text.append(String(format: " (%.1f s)", seconds))
            return [text]
        case .hostFinished(let host, let status, let error, let seconds):
            finished += 1
            board.inFlight.removeAll { $0.host == host }
            board.durations.append(seconds)
            switch status {
            case .succeeded, .skipped: board.done += 1
            case .failed, .unreachable: board.failed += 1
            default: board.cancelled += 1
            }
            guard !quiet || ![.succeeded, .skipped].contains(status) else { return [] }
            var text = Self.line(now, "\(host): ")
            text.append(status.rawValue.uppercased(), Self.style(status))
            text.append(String(format: " in %.1f s [%d/%d]", seconds, finished, board.total) + (error.map { " — \($0)" } ?? ""))
            return [text]
        case .note(let text):
            // Halts and journal trouble: shown even when quiet.
            return [Self.line(now, text, text.hasPrefix("halting") ? .red : .plain)]
        }
    }

    /// The note a new run starts with: its hosts in batches, those it never starts, and
    /// where its journal is.
    public static func startNote(_ record: RunRecord, journal: String) -> String {
        let notStarted = RunBuilder.notStarted(record).count
        let batchable = record.hosts.count - notStarted
        return "run \(record.id): \(batchable) host\(batchable == 1 ? "" : "s") in \(record.batches.count) batch\(record.batches.count == 1 ? "" : "es")"
            + (notStarted == 0 ? "" : ", \(notStarted) not started (skipped, refused or unreachable)") + "; journal \(journal)"
    }

    /// The run's result: its outcome and host counts, and how to continue it when it
    /// halted or stopped.
    public static func summary(_ state: JournalState, now: Date) -> [StyledLine] {
        let counts = state.hostCounts
        let parts = HostRunStatus.allCases.compactMap { status in counts[status].map { "\($0) \(status.rawValue)" } }
        let result = RunResult.outcome(state.state)
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
        return lines
    }

    /// `[HH:MM:SS] text`, in local time.
    public static func line(_ now: Date, _ text: String, _ style: TextStyle = .plain) -> StyledLine {
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
}
