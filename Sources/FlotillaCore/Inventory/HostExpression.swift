import Foundation

/// Host expressions in inventory files: `name[:port]`, `[v6]:port`, and ranges such as
/// `st2-[01:20].dc1.example.com`, `node-[a:f]`, `web[1:20:5]`, as Ansible reads them.
enum HostExpression {
    /// Splits an optional port off and expands ranges. A port is only split off when
    /// what is left is a valid host name or address, as Ansible's `parse_address` does.
    static func expand(_ expression: String) throws(RangeError) -> (names: [String], port: Int?) {
        var name = expression
        var port: Int?
        if expression.contains(":"), let split = address(expression), let splitPort = split.port {
            name = split.host
            port = splitPort
        }
        let names = name.contains("[") ? try expandRanges(name) : [name]
        return (names, port)
    }

    struct RangeError: Error { var message: String }

    /// ``expand(_:)`` with its error placed at `location`.
    static func expand(_ expression: String, at location: SourceLocation) throws(InventoryError) -> (names: [String], port: Int?) {
        do {
            return try expand(expression)
        } catch {
            throw InventoryError(location, error.message)
        }
    }

    // MARK: Ports

    /// Ansible's `parse_address`: the host and optional port of `host`, `host:port`,
    /// `[host]:port`, or nil when what is left is not a host name or IP address.
    static func address(_ text: String) -> (host: String, port: Int?)? {
        var address = text
        var port: Int?
        for pattern in [bracketedHostPort, hostPort] {
            let range = NSRange(address.startIndex..., in: address)
            if let match = pattern.firstMatch(in: address, range: range),
               let hostRange = Range(match.range(at: 1), in: address),
               let portRange = Range(match.range(at: 2), in: address) {
                port = Int(address[portRange])
                address = String(address[hostRange])
            }
        }
        let range = NSRange(address.startIndex..., in: address)
        guard [ipv4, ipv6, hostname].contains(where: { $0.firstMatch(in: address, range: range) != nil }) else { return nil }
        return (address, port)
    }

    static func isIPAddress(_ text: String) -> Bool {
        let range = NSRange(text.startIndex..., in: text)
        return ipv4.firstMatch(in: text, range: range) != nil || ipv6.firstMatch(in: text, range: range) != nil
    }

    // The patterns of ansible/parsing/utils/addresses.py.
    private static let numericRange = #"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"#
    private static let hexRange = #"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"#
    private static let alphanumericRange = #"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"#
    private static let bracketedHostPort = regex(#"^\[(.+)\]:([0-9]+)$"#)
    private static let hostPort = regex(#"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"#)
    private static let ipv4: NSRegularExpression = {
        let part = "(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|\(numericRange))"
        return regex("^(?:\(part)\\.){3}\(part)$", caseInsensitive: true)
    }()
    private static let ipv6: NSRegularExpression = {
        let c = "(?:[0-9a-f]{1,4}|\(hexRange))"
        let v4 = "(?:\(c)\\.){3}\(c)"
        let forms = [
            "(?:\(c):){7}\(c)", "(?:\(c):){1,6}:", "(?:\(c):)(?::\(c)){1,6}", "(?:\(c):){2}(?::\(c)){1,5}",
            "(?:\(c):){3}(?::\(c)){1,4}", "(?:\(c):){4}(?::\(c)){1,3}", "(?:\(c):){5}(?::\(c)){1,2}",
            "(?:\(c):){6}(?::\(c))", ":(?::\(c)){1,6}", "\(c)?::", "(?:0:){6}\(v4)", "::(?:ffff:)?\(v4)",
            "(?:0:){5}ffff:\(v4)",
        ]
        return regex("^(" + forms.joined(separator: "|") + ")$", caseInsensitive: true)
    }()
    private static let hostname: NSRegularExpression = {
        let label = "(?:[\\w]|\(alphanumericRange))(?:[\\w_-]|\(alphanumericRange))*(?<![_-])"
        return regex("^\(label)(?:\\.\(label))*$", caseInsensitive: true)
    }()

    private static func regex(_ pattern: String, caseInsensitive: Bool = false) -> NSRegularExpression {
        // The patterns are constants of this file; a failure here is a programming error.
        try! NSRegularExpression(pattern: pattern, options: caseInsensitive ? [.caseInsensitive] : [])
    }

    // MARK: Ranges

    private static let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

    /// The most host names one expression may expand to: `h[0:99999999]` is refused
    /// before anything is allocated.
    static let maxExpansion = 100_000

    /// Expands every `[begin:end(:step)]` range, the first one varying slowest, like
    /// Ansible's `expand_hostname_range`. The ranges are read first and their product
    /// checked against ``maxExpansion`` before any name is built, so a line of many ranges
    /// is refused at once. An empty expansion is an error here (Ansible silently yields no
    /// host).
    static func expandRanges(_ line: String) throws(RangeError) -> [String] {
        // The text around the ranges, and each range's pieces (which hold no bracket).
        var literals: [Substring] = []
        var ranges: [[String]] = []
        var count = 1
        var rest = line[...]
        repeat {
            guard let open = rest.firstIndex(of: "["), let close = rest.firstIndex(of: "]"), open < close else {
                throw RangeError(message: "malformed range in '\(line)': expected [begin:end] or [begin:end:step]")
            }
            literals.append(rest[..<open])
            let pieces = try rangePieces(rest[rest.index(after: open)..<close], in: line)
            let (product, overflow) = count.multipliedReportingOverflow(by: pieces.count)
            guard !overflow, product <= maxExpansion else {
                throw RangeError(message: "'\(line)' yields more than \(maxExpansion) hosts; one host expression may yield at most \(maxExpansion)")
            }
            count = product
            ranges.append(pieces)
            rest = rest[rest.index(after: close)...]
        } while rest.contains("[")
        literals.append(rest)
        var names = [String(literals[0])]
        for (index, pieces) in ranges.enumerated() {
            let after = literals[index + 1]
            names = names.flatMap { name in pieces.map { name + $0 + after } }
        }
        return names
    }

    /// The pieces of one range's `body` (`begin:end` or `begin:end:step`, numbers or single
    /// letters) in host expression `line`.
    private static func rangePieces(_ body: Substring, in line: String) throws(RangeError) -> [String] {
        let bounds = body.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard bounds.count == 2 || bounds.count == 3 else {
            throw RangeError(message: "malformed range '[\(body)]' in '\(line)': a range is [begin:end] or [begin:end:step]")
        }
        let begin = bounds[0].isEmpty ? "0" : bounds[0]
        let end = bounds[1]
        guard !end.isEmpty else { throw RangeError(message: "malformed range '[\(body)]' in '\(line)': no end value") }
        var step = 1
        if bounds.count == 3 {
            guard let value = Int(bounds[2]), value > 0 else {
                throw RangeError(message: "malformed range '[\(body)]' in '\(line)': the step must be a positive number")
            }
            step = value
        }
        var width = 0
        if begin.hasPrefix("0") && begin.count > 1 {
            guard begin.count == end.count else {
                throw RangeError(message: "malformed range '[\(body)]' in '\(line)': zero-padded begin and end must have the same width")
            }
            width = begin.count
        }
        var pieces: [String] = []
        if begin.count == 1, end.count == 1, let first = letters.firstIndex(of: Character(begin)),
           let last = letters.firstIndex(of: Character(end)) {
            guard first <= last else {
                throw RangeError(message: "malformed range '[\(body)]' in '\(line)': begin must not be after end")
            }
            pieces = stride(from: first, through: last, by: step).map { String(letters[$0]) }
        } else {
            guard let low = Int(begin), let high = Int(end) else {
                throw RangeError(message: "malformed range '[\(body)]' in '\(line)': begin and end must be numbers or single letters")
            }
            if high > low {
                let (span, overflow) = high.subtractingReportingOverflow(low)
                guard !overflow, span / step < maxExpansion else {
                    throw RangeError(message: "range '[\(body)]' in '\(line)' yields \(overflow || span / step == .max ? "too many" : String(span / step + 1)) hosts; one host expression may yield at most \(maxExpansion)")
                }
            }
            pieces = stride(from: low, through: high, by: step).map { number in
                let digits = String(number)
                return digits.count < width ? String(repeating: "0", count: width - digits.count) + digits : digits
            }
        }
        guard !pieces.isEmpty else {
            throw RangeError(message: "range '[\(body)]' in '\(line)' yields no host (begin is after end)")
        }
        return pieces
    }
}

/// POSIX shell-like word splitting as Python's `shlex.split(line, comments=True)` does
/// it: quotes, backslash escapes, and `#` starting a comment even inside a word.
enum ShellWords {
    struct SplitError: Error { var message: String }

    static func split(_ line: String, comments: Bool = true) throws(SplitError) -> [String] {
        var words: [String] = []
        var word = String.UnicodeScalarView()
        var inWord = false
        var quote: Unicode.Scalar?
        var scalars = line.unicodeScalars.makeIterator()
        func finish() {
            if inWord { words.append(String(word)) }
            word = String.UnicodeScalarView()
            inWord = false
        }
        while let c = scalars.next() {
            if let q = quote {
                if c == q {
                    quote = nil
                } else if q == "\"" && c == "\\" {
                    guard let next = scalars.next() else { throw SplitError(message: "No escaped character") }
                    if next != "\"" && next != "\\" { word.append(c) }
                    word.append(next)
                } else {
                    word.append(c)
                }
                continue
            }
            switch c {
            case " ", "\t", "\n", "\r":
                finish()
            case "#" where comments:
                finish()
                return words
            case "'", "\"":
                quote = c
                inWord = true
            case "\\":
                guard let next = scalars.next() else { throw SplitError(message: "No escaped character") }
                word.append(next)
                inWord = true
            default:
                word.append(c)
                inWord = true
            }
        }
        if quote != nil { throw SplitError(message: "No closing quotation") }
        finish()
        return words
    }
}
