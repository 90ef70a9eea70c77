/// Host lists written compactly, as `clush -b` and `dshbak -c` do: `st2-[01-03,07]`.
public enum HostNameSet {
    /// Folds names that differ only in a trailing number into `prefix[ranges]suffix`;
    /// other names stay as they are. Keeps the order of first appearance of each fold.
    public static func fold(_ names: [String]) -> String {
        struct Key: Hashable { var prefix: String; var width: Int }
        var order: [Key] = []
        var numbers: [Key: [Int]] = [:]
        var texts: [Key: [String]] = [:]
        for name in names {
            let digits = String(name.reversed().prefix { $0.isASCII && $0.isNumber }.reversed())
            guard !digits.isEmpty, digits.count < 10, let number = Int(digits) else {
                let key = Key(prefix: name, width: -1)
                if texts[key] == nil { order.append(key) }
                texts[key, default: []].append(name)
                continue
            }
            // Zero-padded numbers fold with their width; plain ones with any length.
            let key = Key(prefix: String(name.dropLast(digits.count)), width: digits.first == "0" && digits.count > 1 ? digits.count : 0)
            if numbers[key] == nil { order.append(key) }
            numbers[key, default: []].append(number)
        }
        // `st2-10` prints the same as a padded `st2-10`: fold it with st2-01..09.
        for key in order where key.width > 0 {
            let plain = Key(prefix: key.prefix, width: 0)
            guard let candidates = numbers[plain] else { continue }
            let same = candidates.filter { String($0).count == key.width }
            numbers[key]! += same
            numbers[plain] = candidates.filter { String($0).count != key.width }
            if numbers[plain]!.isEmpty {
                numbers[plain] = nil
                order.removeAll { $0 == plain }
            }
        }
        return order.map { key -> String in
            if key.width < 0 { return key.prefix }
            let sorted = Array(Set(numbers[key]!)).sorted()
            func pad(_ n: Int) -> String {
                let text = String(n)
                return key.width > text.count ? String(repeating: "0", count: key.width - text.count) + text : text
            }
            if sorted.count == 1 { return key.prefix + pad(sorted[0]) }
            var ranges: [String] = []
            var index = 0
            while index < sorted.count {
                var end = index
                while end + 1 < sorted.count, sorted[end + 1] == sorted[end] + 1 { end += 1 }
                ranges.append(end == index ? pad(sorted[index]) : "\(pad(sorted[index]))-\(pad(sorted[end]))")
                index = end + 1
            }
            return key.prefix + "[" + ranges.joined(separator: ",") + "]"
        }.joined(separator: ",")
    }
}

/// Hosts whose results are identical, shown once (dshbak-style).
public struct OutputGroup<Outcome: Hashable>: Sendable where Outcome: Sendable {
    public var outcome: Outcome
    public var hosts: [String]

    /// Groups `(host, outcome)` pairs by equal outcomes, keeping the order in which each
    /// outcome first appears; `isFailure` groups go last.
    public static func group(_ results: [(host: String, outcome: Outcome)], isFailure: (Outcome) -> Bool) -> [OutputGroup] {
        var order: [Outcome] = []
        var hosts: [Outcome: [String]] = [:]
        for (host, outcome) in results {
            if hosts[outcome] == nil { order.append(outcome) }
            hosts[outcome, default: []].append(host)
        }
        let groups = order.map { OutputGroup(outcome: $0, hosts: hosts[$0]!) }
        return groups.filter { !isFailure($0.outcome) } + groups.filter { isFailure($0.outcome) }
    }
}
