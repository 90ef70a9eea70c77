import Foundation

/// Parsers of the rolling flags of SPEC §5 as typed (``RunOptions`` holds them parsed).
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

    /// A threshold as its flag text: `3` or `10%` (what ``threshold(_:flag:)`` reads).
    public static func text(_ threshold: RolloutPolicy.Threshold) -> String {
        switch threshold {
        case .count(let count): String(count)
        case .percent(let percent): percent == percent.rounded() ? "\(Int(percent))%" : "\(percent)%"
        }
    }
}
