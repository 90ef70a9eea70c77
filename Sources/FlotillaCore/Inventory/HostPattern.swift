import Foundation

extension Inventory {
    /// The hosts an Ansible host pattern selects, in inventory order: `web`, `web:db`,
    /// `web,db`, `web:&prod`, `web:!web03`, wildcards `st2-*`, regular expressions
    /// `~st2-0[1-5]`, subscripts `web[0]`, `web[1:3]` (inclusive, as in Ansible), and
    /// `@file` with one pattern per line. nil or empty selects every host.
    ///
    /// - Throws: ``InventoryError`` when the pattern is malformed, when any of its parts
    ///   names no host and no group (stricter than Ansible, which warns: a typo in a limit or an
    ///   exclusion must not silently change which hosts are touched), or when nothing
    ///   is selected.
    public func select(_ pattern: String?) throws(InventoryError) -> [Host] {
        guard let pattern, !pattern.trimmingPythonWhitespace().isEmpty else { return hosts }
        // A pattern of thousands of characters is shown cut short, not echoed whole.
        func shown(_ text: some StringProtocol) -> String { text.count > 100 ? "\(text.prefix(60))...' (\(text.count) characters)" : "\(text)'" }
        let where_ = SourceLocation(file: "--limit '\(shown(pattern))")
        var parts: [String] = []
        for part in HostPatternSyntax.split(pattern) {
            guard part.hasPrefix("@") else { parts.append(part); continue }
            let file = String(part.dropFirst())
            let text = try InventoryText.read(file, what: "a file of host patterns")
            parts += text.split(whereSeparator: \.isNewline).map { $0.trimmingPythonWhitespace() }.filter { !$0.isEmpty }
        }
        // Ansible selects nothing when the pattern has no part (`[`, `:`): never everything.
        guard !parts.isEmpty else { throw InventoryError(where_, "the pattern names no host or group") }
        let regular = parts.filter { !$0.hasPrefix("&") && !$0.hasPrefix("!") }
        let ordered = (regular.isEmpty ? ["all"] : regular) + parts.filter { $0.hasPrefix("&") } + parts.filter { $0.hasPrefix("!") }
        var selected: [Int] = []
        var selectedSet: Set<Int> = []
        // A part repeated (10,000 lines of `*` in an @file) is matched once, as Ansible caches it.
        var known: [String: ([Int], Bool)] = [:]
        for part in ordered {
            var matches: [Int] = []
            var namesGroup = false
            if let exact = index(ofHost: part) {
                matches = [exact]
            } else if let cached = known[part] {
                (matches, namesGroup) = cached
            } else {
                (matches, namesGroup) = try match(part, in: where_)
                known[part] = (matches, namesGroup)
            }
            guard !matches.isEmpty || namesGroup else {
                throw InventoryError(where_, "'\(shown(part.drop { $0 == "&" || $0 == "!" })) matches no host or group in the inventory")
            }
            if part.hasPrefix("!") {
                let removed = Set(matches)
                selected.removeAll { removed.contains($0) }
                selectedSet.subtract(removed)
            } else if part.hasPrefix("&") {
                let kept = Set(matches)
                selected.removeAll { !kept.contains($0) }
                selectedSet.formIntersection(kept)
            } else {
                for host in matches where selectedSet.insert(host).inserted { selected.append(host) }
            }
        }
        guard !selectedSet.isEmpty else { throw InventoryError(where_, "the pattern selects no host") }
        return selected.sorted().map { hosts[$0] }
    }

    /// One pattern part without its `&`/`!`: groups it names (with their hosts), then
    /// hosts it names, then the subscript; and whether it named a group (even an empty one).
    private func match(_ part: String, in location: SourceLocation) throws(InventoryError) -> ([Int], Bool) {
        let body = String(part.drop { $0 == "&" || $0 == "!" })
        guard !body.isEmpty else { throw InventoryError(location, "'\(part)' has no pattern after the '\(part.first!)'") }
        let (expression, range) = HostPatternSyntax.splitSubscript(body)
        let matcher = try HostPatternSyntax.Matcher(expression, location: location)
        var results: [Int] = []
        var matchedGroup = false
        for (index, name) in groupNames.enumerated() where matcher.matches(name) {
            matchedGroup = true
            results += groupHostIndexes(index)
        }
        if !matchedGroup || expression.hasPrefix("~") || expression.contains(where: { ".?*[".contains($0) }) {
            for (index, host) in hosts.enumerated() where matcher.matches(host.name) { results.append(index) }
        }
        guard let (start, end) = range, !results.isEmpty else { return (results, matchedGroup) }
        let count = results.count
        let first = start < 0 ? count + start : start
        guard first >= 0, first < count else {
            throw InventoryError(location, "subscript [\(start)\(end.map { ":\($0)" } ?? "")] is out of range: '\(expression)' has \(count) host\(count == 1 ? "" : "s")")
        }
        guard let end, end != 0 else { return ([results[first]], matchedGroup) }
        let last = end == -1 ? count - 1 : min(end, count - 1)
        return (first <= last ? Array(results[first...last]) : [], matchedGroup)
    }
}

enum HostPatternSyntax {
    /// Ansible's `split_host_pattern`: commas if there are any; otherwise the whole
    /// text if it is one host address (`[::1]`, `host:22`), else colon-separated parts
    /// with `[x:y]` brackets kept whole.
    static func split(_ pattern: String) -> [String] {
        let parts: [String]
        if pattern.contains(",") {
            parts = pattern.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        } else if HostExpression.address(pattern) != nil {
            parts = [pattern]
        } else {
            var found: [String] = []
            var current = ""
            var index = pattern.startIndex
            // No `]` after the last one: without this, `[[[[...` would search to the end for each `[`.
            let lastClose = pattern.lastIndex(of: "]")
            while index < pattern.endIndex {
                let c = pattern[index]
                if c == "[", let lastClose, index < lastClose, let close = pattern[index...].firstIndex(of: "]") {
                    current += pattern[index...close]
                    index = pattern.index(after: close)
                    continue
                }
                if c == ":" || c == "[" || c == "]" || c.isWhitespace {
                    if !current.isEmpty { found.append(current) }
                    current = ""
                } else {
                    current.append(c)
                }
                index = pattern.index(after: index)
            }
            if !current.isEmpty { found.append(current) }
            parts = found
        }
        return parts.map { $0.trimmingPythonWhitespace() }.filter { !$0.isEmpty }
    }

    /// Splits `expr[3]`, `expr[1:4]` or `expr[2:]` into the expression and an inclusive
    /// (start, end) subscript (end nil for one host, -1 for "to the last"). Regular
    /// expressions (`~...`) never carry a subscript.
    static func splitSubscript(_ pattern: String) -> (String, (Int, Int?)?) {
        guard !pattern.hasPrefix("~"), pattern.hasSuffix("]"), let open = pattern.lastIndex(of: "["),
              open > pattern.startIndex else { return (pattern, nil) }
        let inside = pattern[pattern.index(after: open)..<pattern.index(before: pattern.endIndex)]
        let expression = String(pattern[..<open])
        if let single = Int(inside), inside.first != "+" { return (expression, (single, nil)) }
        guard let separator = inside.firstIndex(where: { $0 == ":" || $0 == "-" }) else { return (pattern, nil) }
        let startText = inside[..<separator]
        let endText = inside[inside.index(after: separator)...]
        guard !startText.isEmpty, startText.allSatisfy(\.isASCIIDigitCharacter),
              endText.allSatisfy(\.isASCIIDigitCharacter) else { return (pattern, nil) }
        // Digits beyond Int are past any group's end: out of range, or "to the last".
        return (expression, (Int(startText) ?? .max, endText.isEmpty ? -1 : Int(endText) ?? .max))
    }

    /// A shell wildcard (fnmatch: `*`, `?`, `[abc]`, `[!abc]`) or a `~` regular
    /// expression anchored at the start, as Ansible's `_match_list` compiles them.
    struct Matcher {
        let regex: NSRegularExpression?
        let literal: String?

        init(_ pattern: String, location: SourceLocation) throws(InventoryError) {
            if pattern.hasPrefix("~") {
                do {
                    // An empty expression matches everything, as Python's re does.
                    regex = try NSRegularExpression(pattern: pattern == "~" ? "(?:)" : String(pattern.dropFirst()))
                } catch {
                    throw InventoryError(location, "'\(pattern.dropFirst())' is not a valid regular expression")
                }
                literal = nil
            } else if pattern.contains(where: { "*?[".contains($0) }) {
                do {
                    regex = try NSRegularExpression(pattern: Self.translate(pattern))
                } catch {
                    throw InventoryError(location, "'\(pattern)' is not a valid wildcard pattern")
                }
                literal = nil
            } else {
                regex = nil
                literal = pattern
            }
        }

        func matches(_ name: String) -> Bool {
            if let literal { return name == literal }
            let range = NSRange(name.startIndex..., in: name)
            return regex!.firstMatch(in: name, options: [.anchored], range: range) != nil
        }

        /// Python's `fnmatch.translate` (3.9 and later), anchored at both ends: a run of
        /// `*` is one `.*`, and a `*` between fixed parts is an atomic `(?>.*?fixed)`, so
        /// `********x` or `*a*a*a*b` cannot backtrack for minutes.
        static func translate(_ pattern: String) -> String {
            let chars = Array(pattern)
            // A `[` after the last `]` opens no set: known at once, not by scanning to the end.
            let lastClose = chars.lastIndex(of: "]") ?? -1
            var pieces: [String?] = []  // nil stands for a `*`
            var i = 0
            while i < chars.count {
                let c = chars[i]
                i += 1
                switch c {
                case "*": if pieces.last != .some(nil) { pieces.append(nil) }
                case "?": pieces.append(".")
                case "[" where i > lastClose:
                    pieces.append("\\[")
                case "[":
                    var j = i
                    if j < chars.count, chars[j] == "!" { j += 1 }
                    if j < chars.count, chars[j] == "]" { j += 1 }
                    while j < chars.count, chars[j] != "]" { j += 1 }
                    if j >= chars.count {
                        pieces.append("\\[")
                    } else {
                        var body = String(chars[i..<j]).replacingOccurrences(of: "\\", with: "\\\\")
                            .replacingOccurrences(of: "[", with: "\\[")
                        if body.hasPrefix("!") { body = "^" + body.dropFirst() } else if body.hasPrefix("^") { body = "\\" + body }
                        pieces.append("[" + body + "]")
                        i = j + 1
                    }
                default:
                    pieces.append(NSRegularExpression.escapedPattern(for: String(c)))
                }
            }
            // Fixed pieces up to the first `*`, then `*fixed` pairs: atomic unless last.
            var out = ""
            var k = 0
            while k < pieces.count, let piece = pieces[k] { out += piece; k += 1 }
            while k < pieces.count {
                k += 1  // the `*`
                var fixed = ""
                while k < pieces.count, let piece = pieces[k] { fixed += piece; k += 1 }
                out += k == pieces.count ? ".*" + fixed : "(?>.*?" + fixed + ")"
            }
            return out + "$"
        }
    }
}
