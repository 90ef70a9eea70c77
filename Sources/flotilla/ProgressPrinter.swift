import FlotillaCore
import Foundation

/// Line-per-event progress on stderr, each line timestamped.
final class ProgressPrinter: @unchecked Sendable {
    // @unchecked: every mutable field is only touched while holding `lock`.
    private let lock = NSLock()
    private let record: RunRecord
    private var finished = 0
    private let total: Int

    init(record: RunRecord) {
        self.record = record
        total = record.hosts.filter { $0.batch != nil }.count
    }

    func show(_ progress: RolloutEngine.Progress) {
        switch progress {
        case .batchStarted(let index, let hosts):
            note("batch \(index + 1)/\(record.batches.count) started: \(HostNameSet.fold(hosts)) (\(hosts.count))")
        case .hostStarted(let host):
            note("\(host): started")
        case .stepStarted:
            break
        case .stepFinished(let host, let step, let status, let seconds):
            if status != .succeeded { note(String(format: "%@: step '%@' %@ (%.1f s)", host, step, status.rawValue, seconds)) }
        case .hostFinished(let host, let status, let error, let seconds):
            let count = lock.withLock { finished += 1; return finished }
            note(String(format: "%@: %@ in %.1f s [%d/%d]", host, status.rawValue.uppercased(), seconds, count, total) + (error.map { " — \($0)" } ?? ""))
        case .note(let text):
            note(text)
        }
    }

    func note(_ text: String) {
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .current, formatOptions: [.withTime, .withColonSeparatorInTime])
        lock.withLock { FileHandle.standardError.write(Data("[\(stamp)] \(text)\n".utf8)) }
    }

    func summary(_ state: JournalState, outcome: RolloutPolicy.Outcome) {
        let counts = state.hostCounts
        let parts = HostRunStatus.allCases.compactMap { status in counts[status].map { "\($0) \(status.rawValue)" } }
        var line = "run \(state.record.id) \(RunResult.outcome(state.state))"
        if let reason = state.haltReason { line += " (\(reason))" }
        note(line + ": " + parts.joined(separator: ", "))
        if ["halted", "stopped"].contains(state.state) {
            note("continue with: flotilla resume \(state.record.id)" + (state.record.options["state-dir"].map { " --state-dir \($0)" } ?? ""))
        }
    }
}
