/// Reads an INI inventory value the way Ansible does: through Python's
/// `ast.literal_eval`, keeping the text as a string when it is not a Python literal.
/// So `2222` is an int, `True` a bool, `[1, 'a']` a list, `'x y'` the string `x y`,
/// while `yes`, `007` and `a b` stay strings.
enum PythonLiteral {
    static func value(of text: String) -> InventoryValue {
        var parser = Parser(Array(text.unicodeScalars))
        return parser.parseTopLevel() ?? .string(text)
    }

    private struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        /// Open brackets; Python's parser gives up past 200 ("too many nested
        /// parentheses"), and so does this one, keeping the text as a string.
        var depth = 0

        init(_ scalars: [Unicode.Scalar]) { s = scalars }

        mutating func parseTopLevel() -> InventoryValue? {
            // literal_eval strips leading spaces and tabs only.
            while i < s.count, s[i] == " " || s[i] == "\t" { i += 1 }
            guard let first = parseExpression() else { return nil }
            skipSpace()
            var result = first
            if peek(",") {
                // A bare tuple: `1, 2` is the list [1, 2].
                var items = [first]
                while consume(",") {
                    skipSpace()
                    if atEnd { break }
                    guard let next = parseExpression() else { return nil }
                    items.append(next)
                    skipSpace()
                }
                result = .list(items)
            }
            skipSpace()
            return atEnd ? result : nil
        }

        var atEnd: Bool { i >= s.count }

        mutating func skipSpace() {
            while i < s.count {
                if s[i] == " " || s[i] == "\t" || s[i] == "\n" || s[i] == "\r" || s[i] == "\u{0C}" {
                    i += 1
                } else if s[i] == "#" {
                    while i < s.count, s[i] != "\n" { i += 1 }
                } else if s[i] == "\\", i + 1 < s.count, s[i + 1] == "\n" {
                    i += 2
                } else {
                    break
                }
            }
        }

        func peek(_ c: Unicode.Scalar) -> Bool { i < s.count && s[i] == c }

        mutating func consume(_ c: Unicode.Scalar) -> Bool {
            skipSpace()
            guard peek(c) else { return false }
            i += 1
            return true
        }

        mutating func parseExpression() -> InventoryValue? {
            skipSpace()
            guard i < s.count else { return nil }
            let c = s[i]
            if c == "+" || c == "-" || isDigit(c) || (c == "." && i + 1 < s.count && isDigit(s[i + 1])) {
                return parseNumeric()
            }
            if c == "[" || c == "(" || c == "{" {
                guard depth < 200 else { return nil }
                depth += 1
                defer { depth -= 1 }
                i += 1
                return c == "{" ? parseBraces() : parseSequence(closing: c == "[" ? "]" : ")", tuple: c == "(")
            }
            if c == "." && i + 2 < s.count && s[i + 1] == "." && s[i + 2] == "." {
                i += 3
                return .string("...")
            }
            if c == "'" || c == "\"" || isLetter(c) { return parseNameOrStrings() }
            return nil
        }

        mutating func parseSequence(closing: Unicode.Scalar, tuple: Bool) -> InventoryValue? {
            var items: [InventoryValue] = []
            var sawComma = false
            while true {
                if consume(closing) { break }
                guard let item = parseExpression() else { return nil }
                items.append(item)
                if consume(",") { sawComma = true; continue }
                guard consume(closing) else { return nil }
                break
            }
            // `(x)` is just x; `(x,)` and `()` are tuples, read as lists.
            if tuple && items.count == 1 && !sawComma { return items[0] }
            return .list(items)
        }

        mutating func parseBraces() -> InventoryValue? {
            if consume("}") { return .map([:]) }
            guard let first = parseExpression() else { return nil }
            if consume(":") {
                var map: [String: InventoryValue] = [:]
                var key = first
                while true {
                    guard let value = parseExpression(), let name = Self.keyText(key) else { return nil }
                    map[name] = value
                    if consume("}") { return .map(map) }
                    guard consume(",") else { return nil }
                    if consume("}") { return .map(map) }
                    guard let next = parseExpression(), consume(":") else { return nil }
                    key = next
                }
            }
            // A set literal; Ansible turns sets into lists.
            var items = [first]
            var seen: Set<InventoryValue> = [first]
            while true {
                if consume("}") { return .list(items) }
                guard consume(",") else { return nil }
                if consume("}") { return .list(items) }
                guard let next = parseExpression() else { return nil }
                if seen.insert(next).inserted { items.append(next) }
            }
        }

        /// How a Python dict key looks once Ansible's output turns it into a JSON key.
        static func keyText(_ key: InventoryValue) -> String? {
            switch key {
            case .string(let text): text
            case .int(let n): String(n)
            case .double(let d): JSONText.number(d)
            case .bool(let b): b ? "true" : "false"
            case .null: "null"
            case .list, .map, .encrypted: nil
            }
        }

        mutating func parseNameOrStrings() -> InventoryValue? {
            var text = ""
            var kind: Bool? = nil  // true: bytes, false: str
            var parsedAny = false
            while true {
                skipSpace()
                let start = i
                var prefix = ""
                while i < s.count, isLetter(s[i]), prefix.count < 3 {
                    prefix.unicodeScalars.append(s[i]); i += 1
                }
                if i < s.count, s[i] == "'" || s[i] == "\"" {
                    let lower = prefix.lowercased()
                    guard ["", "r", "u", "b", "br", "rb"].contains(lower) else { return nil }
                    let bytes = lower.contains("b")
                    if let kind, kind != bytes { return nil }
                    kind = bytes
                    guard let piece = parseString(raw: lower.contains("r")) else { return nil }
                    text += piece
                    parsedAny = true
                    continue
                }
                i = start
                if parsedAny { return .string(text) }
                // A name: True, False, None, or `set()`.
                var name = ""
                while i < s.count, isLetter(s[i]) || isDigit(s[i]) || s[i] == "_" {
                    name.unicodeScalars.append(s[i]); i += 1
                }
                switch name {
                case "True": return .bool(true)
                case "False": return .bool(false)
                case "None": return .null
                case "set":
                    guard consume("("), consume(")") else { return nil }
                    return .list([])
                default: return nil
                }
            }
        }

        mutating func parseString(raw: Bool) -> String? {
            let quote = s[i]
            let triple = i + 2 < s.count && s[i + 1] == quote && s[i + 2] == quote
            i += triple ? 3 : 1
            var out = String.UnicodeScalarView()
            while i < s.count {
                let c = s[i]
                if triple {
                    if c == quote, i + 2 < s.count, s[i + 1] == quote, s[i + 2] == quote {
                        i += 3
                        return String(out)
                    }
                } else if c == quote {
                    i += 1
                    return String(out)
                } else if c == "\n" {
                    return nil
                }
                if c == "\\", i + 1 < s.count {
                    if raw {
                        out.append(c); out.append(s[i + 1]); i += 2
                        continue
                    }
                    guard let escaped = parseEscape() else { return nil }
                    // One scalar at a time: append(contentsOf:) copied the whole string each time.
                    for scalar in escaped.unicodeScalars { out.append(scalar) }
                    continue
                }
                out.append(c)
                i += 1
            }
            return nil
        }

        /// One backslash escape, starting at the backslash. Unknown escapes keep their
        /// backslash, as Python does.
        mutating func parseEscape() -> String? {
            let e = s[i + 1]
            i += 2
            switch e {
            case "\n": return ""
            case "\\": return "\\"
            case "'": return "'"
            case "\"": return "\""
            case "a": return "\u{07}"
            case "b": return "\u{08}"
            case "f": return "\u{0C}"
            case "n": return "\n"
            case "r": return "\r"
            case "t": return "\t"
            case "v": return "\u{0B}"
            case "0"..."7":
                var value = Int(e.value - 48)
                var digits = 1
                while digits < 3, i < s.count, ("0"..."7").contains(s[i]) {
                    value = value * 8 + Int(s[i].value - 48); i += 1; digits += 1
                }
                return Unicode.Scalar(value).map { String($0) }
            case "x", "u", "U":
                let width = e == "x" ? 2 : (e == "u" ? 4 : 8)
                guard i + width <= s.count else { return nil }
                let hex = String(String.UnicodeScalarView(s[i..<(i + width)]))
                guard let value = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(value) else { return nil }
                i += width
                return String(scalar)
            default:
                return "\\" + String(e)
            }
        }

        /// `[sign] number`, or a complex `[sign] real (+|-) imaginary`, which Ansible turns
        /// into Python's text for it (`2+3j` becomes `(2+3j)`).
        mutating func parseNumeric() -> InventoryValue? {
            var negative = false
            if s[i] == "+" || s[i] == "-" {
                negative = s[i] == "-"
                i += 1
                skipSpace()
            }
            guard let (value, imaginary) = parseNumber() else { return nil }
            if let imaginary {
                return .string(Self.complexText(real: negative ? -0.0 : 0.0, imaginary: negative ? -imaginary : imaginary))
            }
            var real = value!
            if negative {
                switch real {
                case .int(let n): real = n == Int.min ? .double(-Double(n)) : .int(-n)
                case .double(let d): real = .double(-d)
                default: break
                }
            }
            let save = i
            skipSpace()
            if i < s.count, s[i] == "+" || s[i] == "-" {
                let minus = s[i] == "-"
                i += 1
                skipSpace()
                if i < s.count, s[i] != "+", s[i] != "-", let (_, imaginary) = parseNumber(), let imaginary {
                    let realPart: Double = switch real { case .int(let n): Double(n); case .double(let d): d; default: 0 }
                    return .string(Self.complexText(real: realPart, imaginary: minus ? -imaginary : imaginary))
                }
            }
            i = save
            return real
        }

        /// Python's `repr(complex(real, imaginary))`.
        static func complexText(real: Double, imaginary: Double) -> String {
            func text(_ x: Double) -> String {
                x == x.rounded() && abs(x) < 1e16 ? (x == 0 && x.sign == .minus ? "-0" : String(Int(x))) : "\(x)"
            }
            if real == 0 && real.sign == .plus { return text(imaginary) + "j" }
            let imaginaryText = text(imaginary)
            return "(" + text(real) + (imaginaryText.hasPrefix("-") ? "" : "+") + imaginaryText + "j)"
        }

        /// A number token; imaginary numbers (`3j`) come back as their imaginary part.
        mutating func parseNumber() -> (InventoryValue?, Double?)? {
            let start = i
            while i < s.count, isLetter(s[i]) || isDigit(s[i]) || s[i] == "_" || s[i] == "." ||
                ((s[i] == "+" || s[i] == "-") && i > start && (s[i - 1] == "e" || s[i - 1] == "E")
                    && !isPrefixedInteger(start)) {
                i += 1
            }
            let token = String(String.UnicodeScalarView(s[start..<i]))
            if let last = token.last, last == "j" || last == "J" {
                switch Self.number(String(token.dropLast())) {
                case .int(let n): return (nil, Double(n))
                case .double(let d): return (nil, d)
                default:
                    // `1e3j` has no dot but is a valid imaginary literal.
                    return Double(token.dropLast().replacingOccurrences(of: "_", with: "")).map { (nil, $0) }
                }
            }
            return Self.number(token).map { ($0, nil) }
        }

        func isPrefixedInteger(_ start: Int) -> Bool {
            start + 1 < s.count && s[start] == "0" && ["x", "X", "o", "O", "b", "B"].contains(s[start + 1])
        }

        /// A Python number token: decimal, 0x/0o/0b integers, floats. Underscores only
        /// between digits; no leading zeros on non-zero decimals; imaginary numbers are
        /// not read (kept as text).
        static func number(_ token: String) -> InventoryValue? {
            let chars = Array(token)
            guard let first = chars.first else { return nil }
            // Underscores must sit between two digits.
            for (index, c) in chars.enumerated() where c == "_" {
                guard index > 0, index + 1 < chars.count, chars[index - 1].isHexDigit, chars[index + 1].isHexDigit
                else { return nil }
            }
            let clean = token.replacingOccurrences(of: "_", with: "")
            if chars.count > 1, first == "0", let radixChar = chars[1].lowercased().first, "xob".contains(radixChar) {
                let digits = String(clean.dropFirst(2))
                let radix = radixChar == "x" ? 16 : (radixChar == "o" ? 8 : 2)
                guard !digits.isEmpty, let value = Int(digits, radix: radix) else { return nil }
                return .int(value)
            }
            if clean.allSatisfy(\.isASCIIDigitCharacter) {
                if clean.count > 1, clean.first == "0", clean.contains(where: { $0 != "0" }) { return nil }
                return Int(clean).map(InventoryValue.int)
            }
            // Float: digits [. digits] [e[+-]digits], or . digits ...
            let lower = clean.lowercased()
            guard lower.allSatisfy({ $0.isASCIIDigitCharacter || $0 == "." || $0 == "e" || $0 == "+" || $0 == "-" }),
                  lower.filter({ $0 == "." }).count <= 1, lower.filter({ $0 == "e" }).count <= 1
            else { return nil }
            let parts = lower.split(separator: "e", omittingEmptySubsequences: false)
            let mantissa = parts[0]
            guard mantissa.contains(where: \.isASCIIDigitCharacter), !mantissa.contains("+"), !mantissa.contains("-")
            else { return nil }
            if parts.count == 2 {
                var exponent = parts[1]
                if exponent.first == "+" || exponent.first == "-" { exponent = exponent.dropFirst() }
                guard !exponent.isEmpty, exponent.allSatisfy(\.isASCIIDigitCharacter) else { return nil }
            } else if !mantissa.contains(".") {
                return nil
            }
            return Double(lower).map(InventoryValue.double)
        }

        func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }
        func isLetter(_ c: Unicode.Scalar) -> Bool { (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") }
    }
}

extension Character {
    var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
