import Foundation

/// `90`, `120s`, `500ms`, `2m`, `1h` -> seconds; nil beyond 10^9 seconds (about 31 years),
/// which would not fit the milliseconds and `Duration`s timeouts are turned into.
public func parseDuration(_ text: String) -> Double? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where trimmed.hasSuffix(suffix) {
        guard let value = Double(trimmed.dropLast(suffix.count)), value >= 0, value * factor <= 1e9 else { return nil }
        return value * factor
    }
    guard let value = Double(trimmed), value >= 0, value <= 1e9 else { return nil }
    return value
}
