/// Batch sizes as Ansible's `serial`: `5`, `25%`, or a ramp `1,5,25%` whose last size
/// repeats. Percentages are of the targeted hosts, rounded down, at least 1.
public struct BatchSpec: Sendable, Equatable, CustomStringConvertible {
    public enum Size: Sendable, Equatable {
        case count(Int)
        case percent(Double)
    }

    public var sizes: [Size]

    public init(sizes: [Size]) { self.sizes = sizes }

    /// Parses `5`, `25%`, `1,5,25%`.
    /// - Throws: `BatchSpec.ParseError` saying which part is wrong.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var sizes: [Size] = []
        for part in parts {
            if part.hasSuffix("%") {
                guard let value = Double(part.dropLast()), value > 0, value <= 100 else {
                    throw ParseError(message: "'\(part)' in '\(text)' is not a percentage from 0 (excluded) to 100%")
                }
                sizes.append(.percent(value))
            } else {
                guard let value = Int(part), value > 0 else {
                    throw ParseError(message: "'\(part)' in '\(text)' is not a batch size (a whole number of hosts above 0, or a percentage such as 25%)")
                }
                sizes.append(.count(value))
            }
        }
        self.sizes = sizes
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public var description: String {
        sizes.map { size in
            switch size {
            case .count(let n): return String(n)
            case .percent(let p): return p == p.rounded() ? "\(Int(p))%" : "\(p)%"
            }
        }.joined(separator: ",")
    }

    /// The size of a batch given the number of targeted hosts.
    static func resolve(_ size: Size, targeted: Int) -> Int {
        switch size {
        case .count(let n): return n
        case .percent(let p): return max(1, Int((p / 100 * Double(targeted)).rounded(.down)))
        }
    }

    /// Splits `count` hosts (in order) into batches: an optional canary batch first, then
    /// the ramp (its last size repeating), percentages taken of `targeted`. Without a spec
    /// the hosts after the canary form one batch. Returns each batch's host indices.
    public static func batches(count: Int, spec: BatchSpec?, canary: Int?, targeted: Int) -> [[Int]] {
        var batches: [[Int]] = []
        var next = 0
        if let canary, canary > 0, count > 0 {
            let size = min(canary, count)
            batches.append(Array(0..<size))
            next = size
        }
        var step = 0
        while next < count {
            let size: Int
            if let spec, !spec.sizes.isEmpty {
                size = resolve(spec.sizes[min(step, spec.sizes.count - 1)], targeted: targeted)
            } else {
                size = count - next
            }
            // `next + size` could overflow (`--canary 1 --batch 9223372036854775807`).
            let end = next + min(max(size, 1), count - next)
            batches.append(Array(next..<end))
            next = end
            step += 1
        }
        return batches
    }
}
