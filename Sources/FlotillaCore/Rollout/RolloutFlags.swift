import Foundation

/// The rolling flags of SPEC §5 as text (as typed, and as stored in a run's record so
/// `resume` continues under the same rules), parsed into the policy's configuration.
public enum RolloutFlags {
    public struct FlagError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    /// `3` or `10%`.
    public static func threshold(_ text: String, flag: String) throws -> RolloutPolicy.Threshold {
        if text.hasSuffix("%") {
            return .percent(try percent(text, flag: flag))
        }
        guard let count = Int(text), count >= 0 else {
            throw FlagError("\(flag) '\(text)' is not a number of hosts (0 or more) or a percentage such as 10%")
        }
        return .count(count)
    }

    /// `25%` (or `25`) -> 25.
    public static func percent(_ text: String, flag: String) throws -> Double {
        let digits = text.hasSuffix("%") ? String(text.dropLast()) : text
        guard let value = Double(digits), value >= 0, value <= 100 else {
            throw FlagError("\(flag) '\(text)' is not a percentage from 0% to 100%")
        }
        return value
    }

    /// `zone=1` -> ("zone", 1).
    public static func maxPer(_ text: String) throws -> (variable: String, limit: Int) {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }),
              let limit = Int(parts[1]), limit >= 1 else {
            throw FlagError("--max-per '\(text)' is not VAR=N (a host variable and a number of hosts, at least 1), such as zone=1")
        }
        return (parts[0], limit)
    }

    /// `90`, `30s`, `5m`, `1h`.
    public static func duration(_ text: String, flag: String) throws -> TimeInterval {
        guard let seconds = parseDuration(text) else { throw FlagError("\(flag) '\(text)' is not a duration such as 30s, 5m or 1h") }
        return seconds
    }

    /// `01:00-05:00` (local time: the window now open, else the next one; it may span
    /// midnight) or two ISO 8601 timestamps `2026-11-22T01:00:00Z/2026-11-22T05:00:00Z`
    /// (a `/` or a `-` between them).
    public static func window(_ text: String, now: Date, timeZone: TimeZone = .current) throws -> RolloutPolicy.Window {
        // Two timestamps fit in 100 characters; longer text would cost a date parse per `-`.
        guard text.count <= 100 else {
            throw FlagError("--window '\(text.prefix(40))...' (\(text.count) characters) is not HH:MM-HH:MM (local time) or START/END as ISO 8601 timestamps")
        }
        let iso = ISO8601DateFormatter()
        for separator in ["/", "-"] {
            var searchStart = text.startIndex
            while let range = text[searchStart...].range(of: separator) {
                if let start = iso.date(from: String(text[..<range.lowerBound])), let end = iso.date(from: String(text[range.upperBound...])) {
                    guard end > start else { throw FlagError("--window '\(text)': the end is not after the start") }
                    return RolloutPolicy.Window(start: start, end: end)
                }
                searchStart = range.upperBound
            }
        }
        let parts = text.split(separator: "-").map { $0.trimmingCharacters(in: .whitespaces) }
        func minutes(_ clock: String) -> Int? {
            let hm = clock.split(separator: ":")
            guard hm.count == 2, let h = Int(hm[0]), let m = Int(hm[1]), (0...23).contains(h), (0...59).contains(m) else { return nil }
            return h * 60 + m
        }
        guard parts.count == 2, let from = minutes(parts[0]), let to = minutes(parts[1]), from != to else {
            throw FlagError("--window '\(text)' is not HH:MM-HH:MM (local time) or START/END as ISO 8601 timestamps")
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let midnight = calendar.startOfDay(for: now)
        // Today's window, or yesterday's when it spans midnight and is still open.
        for dayOffset in [-1, 0, 1] {
            guard let day = calendar.date(byAdding: .day, value: dayOffset, to: midnight),
                  let start = calendar.date(byAdding: .minute, value: from, to: day),
                  let end = calendar.date(byAdding: .minute, value: to + (to < from ? 24 * 60 : 0), to: day) else { continue }
            if end > now { return RolloutPolicy.Window(start: start, end: end) }
        }
        throw FlagError("--window '\(text)': no such window")
    }

    /// The policy configuration for a run, from its stored flags.
    public static func config(_ options: [String: String], record: RunRecord, now: Date) throws -> RolloutPolicy.Config {
        let index = Dictionary(uniqueKeysWithValues: record.hosts.enumerated().map { ($1.name, $0) })
        var config = RolloutPolicy.Config(batches: record.batches.map { $0.compactMap { index[$0] } }, targeted: record.hosts.count)
        config.canary = options["canary"] != nil
        if let text = options["max-parallel"] {
            guard let value = Int(text), value >= 1 else { throw FlagError("--max-parallel '\(text)' must be a number of hosts, at least 1") }
            config.maxParallel = value
        }
        for item in (options["max-per"] ?? "").split(separator: ",") {
            let (variable, limit) = try maxPer(String(item))
            config.maxPer.append(RolloutPolicy.MaxPer(variable: variable, limit: limit, values: record.hosts.map { $0.groups[variable] }))
        }
        if let text = options["max-fail"] { config.maxFail = try threshold(text, flag: "--max-fail") }
        if let text = options["max-fail-batch"] { config.maxFailBatch = try percent(text, flag: "--max-fail-batch") }
        if let text = options["unreachable-counts"] {
            guard ["yes", "no"].contains(text) else { throw FlagError("--unreachable-counts must be yes or no") }
            config.unreachableCounts = text == "yes"
        }
        if let text = options["on-halt"] {
            guard let mode = RolloutPolicy.OnHalt(rawValue: text) else { throw FlagError("--on-halt must be drain or stop") }
            config.onHalt = mode
        }
        if let text = options["pause"] { config.pause = try duration(text, flag: "--pause") }
        config.confirm = options["confirm"] == "yes"
        if let text = options["window"] { config.window = try window(text, now: now) }
        return config
    }

    /// Checks every stored flag without building a configuration (for `validate()`).
    public static func check(_ options: [String: String]) throws {
        let record = RunRecord(id: "check", kind: "check", targetVersion: nil, createdAt: Date(), hosts: [], batches: [], options: [:])
        _ = try config(options, record: record, now: Date())
        for flag in ["healthy-for", "health-deadline", "step-timeout"] {
            if let text = options[flag] { _ = try duration(text, flag: "--\(flag)") }
        }
    }
}
