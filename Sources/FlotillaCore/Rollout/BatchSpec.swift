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
        batches(units: Array(repeating: 1, count: max(0, count)), spec: spec, canary: canary, targeted: targeted)
    }

    /// Splits units of hosts that never part (a whole cluster; a single host is a unit of
    /// 1), in order, into batches sized as ``batches(count:spec:canary:targeted:)`` says,
    /// counting hosts: a batch takes units while their hosts fit its size, and a unit
    /// larger than the size makes a batch of its own (a batch never splits a unit). The
    /// canary likewise: when the first unit is a whole cluster larger than `--canary`, that
    /// cluster alone is the canary. Returns each batch's unit indices.
    public static func batches(units: [Int], spec: BatchSpec?, canary: Int?, targeted: Int) -> [[Int]] {
        var batches: [[Int]] = []
        var next = 0
        /// The units from `next` whose hosts fit `size` (at least one unit).
        func take(_ size: Int) -> [Int] {
            var taken: [Int] = []
            var hosts = 0
            while next < units.count, taken.isEmpty || units[next] <= size - hosts {
                hosts += units[next]
                taken.append(next)
                next += 1
            }
            return taken
        }
        if let canary, canary > 0, !units.isEmpty {
            batches.append(take(canary))
        }
        var step = 0
        while next < units.count {
            let size: Int
            if let spec, !spec.sizes.isEmpty {
                size = max(resolve(spec.sizes[min(step, spec.sizes.count - 1)], targeted: targeted), 1)
            } else {
                size = Int.max
            }
            batches.append(take(size))
            step += 1
        }
        return batches
    }
}
