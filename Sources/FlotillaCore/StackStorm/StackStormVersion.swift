/// A StackStorm release or package version, compared numerically.
///
/// Accepts `3.8`, `3.8.1`, and package versions such as `3.8.1-1` (Debian revision or RPM
/// release) or `1:3.8.1-1.el8` (epoch). Missing parts compare as zero, so `3.8` == `3.8.0`.
/// The package revision takes part in the ordering only when the releases are equal.
public struct StackStormVersion: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// major, minor, patch (and any further numeric parts).
    public let release: [Int]
    /// The package revision after the first `-`, if any (`1` in `3.8.1-1`).
    public let revision: String?

    /// Parses a version; returns nil for text that is not one (`abc`, `3..1`, ``).
    public init?(_ text: String) {
        var body = Substring(text)
        if let colon = body.firstIndex(of: ":") { body = body[body.index(after: colon)...] }
        var revision: String?
        if let dash = body.firstIndex(of: "-") {
            revision = String(body[body.index(after: dash)...])
            body = body[..<dash]
        }
        let parts = body.split(separator: ".", omittingEmptySubsequences: false)
        var numbers: [Int] = []
        for part in parts {
            guard !part.isEmpty, part.allSatisfy(\.isASCII), let value = Int(part), value >= 0 else { return nil }
            numbers.append(value)
        }
        guard !numbers.isEmpty else { return nil }
        self.release = numbers
        self.revision = revision
    }

    /// Parses a release to upgrade to (`3.8.1`, `3.8`): no package revision, at least
    /// major and minor; nil for anything else.
    public static func upgradeTarget(_ text: String) -> StackStormVersion? {
        guard let version = StackStormVersion(text), version.revision == nil, version.release.count >= 2 else { return nil }
        return version
    }

    /// The release without the package revision, as `major.minor.patch`.
    public var releaseString: String {
        var parts = release
        while parts.count < 3 { parts.append(0) }
        return parts.map(String.init).joined(separator: ".")
    }

    /// `major.minor`, e.g. `3.8`.
    public var series: String { "\(part(0)).\(part(1))" }

    public var description: String {
        release.map(String.init).joined(separator: ".") + (revision.map { "-\($0)" } ?? "")
    }

    private func part(_ index: Int) -> Int { index < release.count ? release[index] : 0 }

    /// Compares only the release numbers, ignoring the package revision.
    public func compareRelease(_ other: StackStormVersion) -> Int {
        for index in 0..<max(release.count, other.release.count) where part(index) != other.part(index) {
            return part(index) < other.part(index) ? -1 : 1
        }
        return 0
    }

    public static func < (lhs: StackStormVersion, rhs: StackStormVersion) -> Bool {
        let byRelease = lhs.compareRelease(rhs)
        if byRelease != 0 { return byRelease < 0 }
        return (lhs.revision ?? "").compare(numericallyWith: rhs.revision ?? "") < 0
    }

    public static func == (lhs: StackStormVersion, rhs: StackStormVersion) -> Bool {
        lhs.compareRelease(rhs) == 0 && (lhs.revision ?? "") == (rhs.revision ?? "")
    }

    public func hash(into hasher: inout Hasher) {
        var trimmed = release
        while trimmed.count > 1, trimmed.last == 0 { trimmed.removeLast() }
        hasher.combine(trimmed)
        hasher.combine(revision ?? "")
    }
}

extension String {
    /// Orders strings by their runs of digits as numbers (`1.el8` < `10.el8`).
    func compare(numericallyWith other: String) -> Int {
        var left = Substring(self), right = Substring(other)
        while !left.isEmpty || !right.isEmpty {
            let leftDigits = left.prefix(while: \.isNumber), rightDigits = right.prefix(while: \.isNumber)
            if !leftDigits.isEmpty, !rightDigits.isEmpty {
                let l = Int(leftDigits) ?? 0, r = Int(rightDigits) ?? 0
                if l != r { return l < r ? -1 : 1 }
                left = left.dropFirst(leftDigits.count)
                right = right.dropFirst(rightDigits.count)
                continue
            }
            guard let l = left.first else { return -1 }
            guard let r = right.first else { return 1 }
            if l != r { return l < r ? -1 : 1 }
            left = left.dropFirst()
            right = right.dropFirst()
        }
        // Equal as numbers but spelled apart (`el08`, `el8`): order by spelling, so that
        // only equal strings compare equal and the order stays total.
        return self == other ? 0 : (self < other ? -1 : 1)
    }
}
