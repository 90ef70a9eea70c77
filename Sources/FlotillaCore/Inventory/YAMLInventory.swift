import CYaml
import Foundation
import Yams

/// Turns YAML into inventory values with the YAML 1.1 rules Ansible's PyYAML loader
/// applies: `yes`/`no`/`on`/`off` are booleans, `0777` is octal, `1_000` is 1000,
/// `1e3` (no dot) is a string, `<<` merges mappings.
struct YAMLReader {
    let file: String
    /// The text is a JSON document: Ansible's loader reads it with a JSON parser, so
    /// numbers follow JSON (`1e3` is a float), not YAML 1.1.
    var json = false

    /// The source lines, to tell an explicit `!!str` from a plain scalar Yams left
    /// untyped.
    private var lines: [Substring] = []

    init(file: String, text: String? = nil) {
        self.file = file
        if let text { read(text) }
    }

    mutating func read(_ text: String) {
        json = Self.isJSON(text)
        lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
    }

    /// Whether the node at `mark` is written with a tag (`!!str 1`, `&a !!int "2"`).
    func hasExplicitTag(_ mark: Mark?) -> Bool {
        guard let mark, mark.line >= 1, mark.line <= lines.count else { return false }
        var rest = lines[mark.line - 1].unicodeScalars.dropFirst(mark.column - 1)
        if rest.first == "&" {
            rest = rest.drop { $0 != " " && $0 != "\t" }.drop { $0 == " " || $0 == "\t" }
        }
        return rest.first == "!"
    }

    static func isJSON(_ text: String) -> Bool {
        guard let first = text.first(where: { !$0.isWhitespace }), first == "{" || first == "[" else { return false }
        // Only a question: text that does not parse as JSON is read as YAML.
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil
    }

    func location(_ node: Node) -> SourceLocation {
        SourceLocation(file: file, line: node.mark?.line, column: node.mark?.column)
    }

    /// Parses a document; nil for an empty one.
    func compose(_ text: String) throws(InventoryError) -> Node? {
        try YAMLLimits.check(text, file: file)
        do {
            // The basic resolver (everything a string) is enough: scalars are typed here, by
            // PyYAML's rules; it spares Yams a regular expression per node.
            return try Yams.compose(yaml: text, .basic)
        } catch let error as YamlError {
            if case .duplicatedKeysInMapping(let keys, let context) = error, let key = keys.first {
                throw Self.duplicate(key, first: context.mark, in: text, file: file)
            }
            throw Self.describe(error, file: file)
        } catch {
            throw InventoryError(SourceLocation(file: file), "not valid YAML: \(error)")
        }
    }

    /// Points at the repeated occurrence of a duplicate key (Yams reports the first):
    /// the next line at the same column that starts with the key.
    static func duplicate(_ key: String, first: Mark, in text: String, file: String) -> InventoryError {
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        var line = first.line
        for index in first.line..<lines.count {
            let candidate = lines[index].dropFirst(first.column - 1)
            if lines[index].prefix(first.column - 1).allSatisfy({ $0 == " " || $0 == "-" }),
               candidate.hasPrefix(key), candidate.dropFirst(key.count).drop(while: { $0 == " " }).first == ":" {
                line = index + 1
                break
            }
        }
        let location = SourceLocation(file: file, line: line, column: first.column)
        return InventoryError(location, "duplicate key '\(key)' in a YAML mapping (first at line \(first.line))")
    }

    static func describe(_ error: YamlError, file: String) -> InventoryError {
        func at(_ mark: Mark) -> SourceLocation { SourceLocation(file: file, line: mark.line, column: mark.column) }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text), " } ?? ""
            return InventoryError(at(mark), "invalid YAML: \(prefix)\(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let names = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return InventoryError(at(context.mark), "duplicate key \(names) in a YAML mapping")
        case .reader(let problem, _, _, _):
            return InventoryError(SourceLocation(file: file), "cannot read the YAML text: \(problem)")
        default:
            return InventoryError(SourceLocation(file: file), "invalid YAML: \(error)")
        }
    }

    /// A mapping's entries in order with `<<` merges applied (explicit keys win, then
    /// the first merged mapping); nil when the node is not a mapping.
    func entries(_ node: Node) throws(InventoryError) -> [(key: Node, value: Node)]? {
        guard case .mapping(let mapping) = node else { return nil }
        var own: [(key: Node, value: Node)] = []
        var merged: [(key: Node, value: Node)] = []
        for (key, value) in mapping {
            if case .scalar(let scalar) = key, scalar.string == "<<", scalar.style == .plain {
                let sources: [Node]
                if case .sequence(let sequence) = value { sources = Array(sequence) } else { sources = [value] }
                var pieces: [[(key: Node, value: Node)]] = []
                for source in sources {
                    guard let sub = try entries(source) else {
                        throw InventoryError(location(source), "a '<<' merge needs a mapping or a list of mappings")
                    }
                    pieces.append(sub)
                }
                for piece in pieces.reversed() { merged += piece }
            } else {
                own.append((key, value))
            }
        }
        guard !merged.isEmpty else { return own }
        // Later entries win for a repeated key; the key keeps its first position.
        var order: [String] = []
        var latest: [String: (key: Node, value: Node)] = [:]
        for entry in merged + own {
            let name = keyText(entry.key)
            if latest[name] == nil { order.append(name) }
            latest[name] = entry
        }
        return order.map { latest[$0]! }
    }

    /// The text a mapping key becomes (as Ansible's JSON output would print it).
    func keyText(_ key: Node) -> String {
        // Not propagated (yet): a key whose value cannot be read (a bad tag) is named
        // "null" here, as it always was; making this throw changes which inventories load.
        switch (try? value(key)) ?? .null {
        case .string(let text): return text
        case .int(let number): return String(number)
        case .double(let number): return JSONText.number(number)
        case .bool(let flag): return flag ? "true" : "false"
        case .null: return "null"
        default: return key.string ?? ""
        }
    }

    func value(_ node: Node) throws(InventoryError) -> InventoryValue {
        switch node {
        case .scalar(let scalar):
            if json, scalar.style == .plain, let number = Self.jsonNumber(scalar.string) { return number }
            var tag = scalar.tag.rawValue
            // The basic resolver marks every untagged scalar as a string: read those by
            // PyYAML's rules unless the source really says `!!str`.
            if tag == "tag:yaml.org,2002:str", scalar.style == .plain, !hasExplicitTag(scalar.mark) { tag = "" }
            return try Self.scalar(scalar.string, tag: tag, plain: scalar.style == .plain, at: location(node))
        case .sequence(let sequence):
            var items: [InventoryValue] = []
            for item in sequence { items.append(try value(item)) }
            return .list(items)
        case .mapping:
            var map: [String: InventoryValue] = [:]
            for (key, item) in try entries(node) ?? [] { map[keyText(key)] = try value(item) }
            return .map(map)
        case .alias:
            throw InventoryError(location(node), "unresolved YAML alias")
        }
    }

    /// A JSON number: an int without fraction or exponent, else a float.
    static func jsonNumber(_ text: String) -> InventoryValue? {
        var rest = Substring(text)
        if rest.first == "-" { rest = rest.dropFirst() }
        let whole = rest.prefix(while: \.isASCIIDigitCharacter)
        guard !whole.isEmpty, whole == "0" || whole.first != "0" else { return nil }
        rest = rest.dropFirst(whole.count)
        var isFloat = false
        if rest.first == "." {
            let fraction = rest.dropFirst().prefix(while: \.isASCIIDigitCharacter)
            guard !fraction.isEmpty else { return nil }
            rest = rest.dropFirst(1 + fraction.count)
            isFloat = true
        }
        if let e = rest.first, e == "e" || e == "E" {
            rest = rest.dropFirst()
            if let sign = rest.first, sign == "+" || sign == "-" { rest = rest.dropFirst() }
            let digits = rest.prefix(while: \.isASCIIDigitCharacter)
            guard !digits.isEmpty else { return nil }
            rest = rest.dropFirst(digits.count)
            isFloat = true
        }
        guard rest.isEmpty else { return nil }
        return isFloat ? Double(text).map(InventoryValue.double) : Int(text).map(InventoryValue.int)
    }

    private static let boolWords: [String: Bool] = [
        "yes": true, "Yes": true, "YES": true, "no": false, "No": false, "NO": false,
        "true": true, "True": true, "TRUE": true, "false": false, "False": false, "FALSE": false,
        "on": true, "On": true, "ON": true, "off": false, "Off": false, "OFF": false,
    ]

    /// PyYAML's implicit resolution of a plain scalar (YAML 1.1), or the explicit tag.
    static func scalar(_ text: String, tag: String, plain: Bool, at location: SourceLocation) throws(InventoryError) -> InventoryValue {
        switch tag {
        case "", "?", "!":
            break
        case "tag:yaml.org,2002:str", "!unsafe":
            return .string(text)
        case "!vault", "!vault-encrypted":
            return .encrypted
        case "tag:yaml.org,2002:int":
            guard let number = int(text) else { throw InventoryError(location, "'\(text)' is not an integer") }
            return .int(number)
        case "tag:yaml.org,2002:float":
            guard let number = float(text) ?? int(text).map(Double.init) else {
                throw InventoryError(location, "'\(text)' is not a number")
            }
            return .double(number)
        case "tag:yaml.org,2002:bool":
            guard let flag = boolWords[text] else { throw InventoryError(location, "'\(text)' is not a boolean") }
            return .bool(flag)
        case "tag:yaml.org,2002:null":
            return .null
        default:
            throw InventoryError(location, "unsupported YAML tag '\(tag)'")
        }
        guard plain else { return .string(text) }
        if let flag = boolWords[text] { return .bool(flag) }
        if ["", "~", "null", "Null", "NULL"].contains(text) { return .null }
        if let number = int(text) { return .int(number) }
        if let number = float(text) { return .double(number) }
        if let timestamp = timestamp(text) { return .string(timestamp) }
        return .string(text)
    }

    private static let timestampPattern = try! NSRegularExpression(pattern:
        #"^([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:(?:[Tt]|[ \t]+)([0-9]{1,2}):([0-9]{2}):([0-9]{2})"#
        + #"(?:\.([0-9]*))?(?:[ \t]*(Z|([-+])([0-9]{1,2})(?::([0-9]{2}))?))?)?$"#)

    /// A YAML 1.1 timestamp, written as Python's `isoformat()` writes the date or
    /// datetime PyYAML makes of it (`2024-01-05 10:20:30Z` is `2024-01-05T10:20:30+00:00`).
    static func timestamp(_ text: String) -> String? {
        guard text.count >= 10, text.first!.isASCIIDigitCharacter,
              let match = timestampPattern.firstMatch(in: text, range: NSRange(text.startIndex..., in: text))
        else { return nil }
        func group(_ index: Int) -> String? {
            Range(match.range(at: index), in: text).map { String(text[$0]) }
        }
        func two(_ value: String) -> String { value.count == 1 ? "0" + value : value }
        let date = "\(group(1)!)-\(two(group(2)!))-\(two(group(3)!))"
        guard let hour = group(4) else {
            // A date alone must be written YYYY-MM-DD to be a timestamp.
            return text.count == 10 ? date : nil
        }
        var result = "\(date)T\(two(hour)):\(group(5)!):\(group(6)!)"
        if let fraction = group(7), let micro = Int(String((fraction + "000000").prefix(6))), micro != 0 {
            result += "." + String(format: "%06d", micro)
        }
        if let zone = group(8) {
            if zone == "Z" {
                result += "+00:00"
            } else {
                result += group(9)! + two(group(10)!) + ":" + (group(11) ?? "00")
            }
        }
        return result
    }

    /// PyYAML's YAML 1.1 integers: decimal, 0b binary, 0 octal, 0x hex, base 60, with `_`.
    static func int(_ text: String) -> Int? {
        guard let first = text.first else { return nil }
        var body = Substring(text)
        var negative = false
        if first == "-" || first == "+" {
            negative = first == "-"
            body = body.dropFirst()
        }
        guard let lead = body.first, lead.isASCIIDigitCharacter else { return nil }
        let value: Int?
        if body.hasPrefix("0b") {
            let digits = body.dropFirst(2)
            guard !digits.isEmpty, digits.allSatisfy({ "01_".contains($0) }) else { return nil }
            value = Int(digits.filter { $0 != "_" }, radix: 2)
        } else if body.hasPrefix("0x") {
            let digits = body.dropFirst(2)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isHexDigit || $0 == "_" }) else { return nil }
            value = Int(digits.filter { $0 != "_" }, radix: 16)
        } else if body.contains(":") {
            // Base 60: 1:30 is 90.
            let parts = body.split(separator: ":", omittingEmptySubsequences: false)
            guard lead != "0", parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCIIDigitCharacter || $0 == "_" } }),
                  parts.dropFirst().allSatisfy({ $0.count <= 2 && Int($0)! < 60 })
            else { return nil }
            value = parts.reduce(0) { $0 * 60 + Int($1.filter { $0 != "_" })! }
        } else {
            guard body.allSatisfy({ $0.isASCIIDigitCharacter || $0 == "_" }) else { return nil }
            if lead == "0" && body.count > 1 {
                value = body.dropFirst().allSatisfy({ "01234567_".contains($0) }) ? Int(body.filter { $0 != "_" }, radix: 8) : nil
            } else {
                guard lead != "0" || body.count == 1 else { return nil }
                value = Int(body.filter { $0 != "_" })
            }
        }
        guard let value else { return nil }
        return negative ? -value : value
    }

    /// PyYAML's YAML 1.1 floats: a dot is required (`1.5`, `1.`, `.5`, `1.0e+3`), plus
    /// `.inf`, `.nan` and base 60.
    static func float(_ text: String) -> Double? {
        var body = Substring(text)
        var sign = 1.0
        if let first = body.first, first == "-" || first == "+" {
            sign = first == "-" ? -1 : 1
            body = body.dropFirst()
        }
        if [".inf", ".Inf", ".INF"].contains(body) { return sign * .infinity }
        if [".nan", ".NaN", ".NAN"].contains(body) && text.first != "-" && text.first != "+" { return .nan }
        guard let dot = body.firstIndex(of: ".") else { return nil }
        let whole = body[..<dot]
        var fraction = body[body.index(after: dot)...]
        var exponent: Substring = ""
        if let e = fraction.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = fraction[fraction.index(after: e)...]
            fraction = fraction[..<e]
            guard let s = exponent.first, s == "+" || s == "-", exponent.count > 1,
                  exponent.dropFirst().allSatisfy(\.isASCIIDigitCharacter) else { return nil }
        }
        guard fraction.allSatisfy({ $0.isASCIIDigitCharacter || $0 == "_" }) else { return nil }
        if whole.contains(":") {
            let parts = whole.split(separator: ":", omittingEmptySubsequences: false)
            guard exponent.isEmpty, let lead = parts.first?.first, lead.isASCIIDigitCharacter,
                  parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCIIDigitCharacter || $0 == "_" } }),
                  parts.dropFirst().allSatisfy({ $0.count <= 2 && Int($0)! < 60 })
            else { return nil }
            let base = parts.reduce(0.0) { $0 * 60 + Double(Int($1.filter { $0 != "_" })!) }
            let fractionValue = Double("0." + fraction.filter { $0 != "_" } + "0") ?? 0
            return sign * (base + fractionValue)
        }
        if whole.isEmpty {
            guard let lead = fraction.first, lead.isASCIIDigitCharacter else { return nil }
        } else {
            guard whole.first!.isASCIIDigitCharacter, whole.allSatisfy({ $0.isASCIIDigitCharacter || $0 == "_" }) else { return nil }
        }
        let wholeDigits: String = whole.isEmpty ? "0" : String(whole.filter { $0 != "_" })
        let fractionDigits = String(fraction.filter { $0 != "_" }) + "0"
        let exponentPart: String = exponent.isEmpty ? "" : "e" + exponent
        let clean = wholeDigits + "." + fractionDigits + exponentPart
        return Double(clean).map { sign * $0 }
    }
}

/// Ansible's YAML inventory format: top-level groups with `hosts`, `children` and
/// `vars`, read as Ansible's `yaml` plugin reads them.
struct YAMLInventoryParser {
    var reader: YAMLReader
    var graph: InventoryGraph
    var warnings: [InventoryError] = []

    init(file: String, graph: InventoryGraph) {
        reader = YAMLReader(file: file)
        self.graph = graph
    }

    mutating func parse(_ text: String) throws(InventoryError) {
        let file = reader.file
        reader.read(text)
        guard let root = try reader.compose(text), !Self.isEmpty(root) else {
            throw InventoryError(SourceLocation(file: file), "the YAML inventory is empty")
        }
        guard let top = try reader.entries(root) else {
            throw InventoryError(reader.location(root), "a YAML inventory must be a mapping of group names (such as 'all:') to groups")
        }
        if top.contains(where: { $0.key.string == "plugin" }) {
            throw InventoryError(reader.location(root), "this is an inventory plugin configuration, not an inventory; flotilla reads static INI and YAML inventories")
        }
        for (key, value) in top { _ = try parseGroup(key, value) }
    }

    static func isEmpty(_ node: Node) -> Bool {
        if case .scalar(let scalar) = node, scalar.style == .plain, ["", "~", "null", "Null", "NULL"].contains(scalar.string) {
            return true
        }
        return false
    }

    private func groupName(_ key: Node) throws(InventoryError) -> String {
        guard case .scalar = key, case .string(let name) = try reader.value(key), !name.isEmpty else {
            // Already failing: a key that cannot be read at all is described as a collection.
            throw InventoryError(reader.location(key), "a group name must be a non-empty string, got \((try? reader.value(key))?.json() ?? "a collection")")
        }
        return name
    }

    private mutating func parseGroup(_ key: Node, _ body: Node) throws(InventoryError) -> Int? {
        let name = try groupName(key)
        var isGroup = Self.isEmpty(body)
        if !isGroup { isGroup = try reader.entries(body) != nil }
        guard isGroup else {
            warnings.append(InventoryError(reader.location(body), "skipping '\(name)': a group must be a mapping with hosts, children or vars"))
            return nil
        }
        let group = graph.addGroup(name)
        guard let entries = try reader.entries(body) else { return group }
        for (sectionKey, section) in entries {
            let sectionName = sectionKey.string ?? ""
            guard ["hosts", "children", "vars"].contains(sectionName) else {
                warnings.append(InventoryError(reader.location(sectionKey), "skipping unexpected key '\(sectionName)' in group '\(name)': only hosts, children and vars are valid"))
                continue
            }
            if Self.isEmpty(section) { continue }
            // `hosts: web01` is short for `hosts: {web01: }`.
            var items: [(key: Node, value: Node)]
            if case .scalar = section, case .string = try reader.value(section) {
                items = [(section, Node.scalar(.init("", .implicit, .plain)))]
            } else if let mapping = try reader.entries(section) {
                items = mapping
            } else {
                let kind = if case .sequence = section { "a list" } else { "a scalar" }
                throw InventoryError(reader.location(section), "'\(sectionName)' of group '\(name)' must be a mapping, found \(kind)")
            }
            switch sectionName {
            case "vars":
                for (varKey, value) in items {
                    try graph.setVariable(group: group, reader.keyText(varKey), InventoryVariable(try reader.value(value), at: reader.location(varKey)))
                }
            case "children":
                for (childKey, childBody) in items {
                    guard let child = try parseGroup(childKey, childBody) else {
                        throw InventoryError(reader.location(childKey), "child '\(reader.keyText(childKey))' of group '\(name)' is not a valid group")
                    }
                    try graph.addChild(parent: group, child: child, at: reader.location(childKey))
                }
            default:
                for (hostKey, hostBody) in items {
                    guard case .string(let expression) = try reader.value(hostKey) else {
                        throw InventoryError(reader.location(hostKey), "host name \(reader.keyText(hostKey)) must be a string; quote it")
                    }
                    let here = reader.location(hostKey)
                    let (names, port) = try HostExpression.expand(expression, at: here)
                    var variables: [(String, InventoryVariable)] = []
                    if !Self.isEmpty(hostBody) {
                        guard let mapping = try reader.entries(hostBody) else {
                            throw InventoryError(reader.location(hostBody), "the variables of host '\(expression)' must be a mapping")
                        }
                        for (varKey, value) in mapping {
                            variables.append((reader.keyText(varKey), InventoryVariable(try reader.value(value), at: reader.location(varKey))))
                        }
                    }
                    for hostName in names {
                        graph.addHost(hostName, group: group, port: port, at: here)
                        let host = graph.host(named: hostName)!
                        for (varName, variable) in variables { graph.setVariable(host: host, varName, variable) }
                    }
                }
            }
        }
        return group
    }
}

/// Limits checked on libyaml's event stream before a document is composed: Yams builds
/// nodes recursively, so very deep nesting would overflow the stack, and walking a node
/// expands its aliases, so a "billion laughs" document (anchors of aliases of anchors)
/// would never finish. Syntax errors are left to the composer, which reports them.
enum YAMLLimits {
    static let maxDepth = 500
    /// Nodes aliases may add, beyond 10 per node written out.
    static let maxAliasedNodes = 1_000_000

    static func check(_ text: String, file: String) throws(InventoryError) {
        if let (line, column, message) = violation(text) {
            throw InventoryError(SourceLocation(file: file, line: line, column: column), message)
        }
    }

    /// The line, column and description of the first limit the text exceeds.
    static func violation(_ text: String) -> (Int, Int, String)? {
        var bytes = Array(text.utf8)
        return bytes.withUnsafeMutableBufferPointer { buffer in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else { return nil }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var sizes: [String: Int] = [:]
            var open: [(anchor: String?, size: Int)] = []
            var plain = 0, aliased = 0
            func name(_ anchor: UnsafeMutablePointer<yaml_char_t>?) -> String? { anchor.map { String(cString: $0) } }
            func add(_ a: Int, _ b: Int) -> Int { let (sum, overflow) = a.addingReportingOverflow(b); return overflow ? .max : sum }
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    // libyaml's own limit (1000 levels) can strike first, while it looks ahead.
                    guard let problem = parser.problem, String(cString: problem).hasPrefix("Maximum nesting level") else { return nil }
                    let mark = parser.problem_mark
                    return (Int(mark.line) + 1, Int(mark.column) + 1, "YAML nested more than \(maxDepth) levels deep; flotilla refuses such documents")
                }
                defer { yaml_event_delete(&event) }
                let line = Int(event.start_mark.line) + 1, column = Int(event.start_mark.column) + 1
                var size: Int
                var anchor: String?
                switch event.type {
                case YAML_STREAM_END_EVENT, YAML_NO_EVENT:
                    return nil
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    guard open.count < maxDepth else {
                        return (line, column, "YAML nested more than \(maxDepth) levels deep; flotilla refuses such documents")
                    }
                    plain += 1
                    open.append((name(event.type == YAML_SEQUENCE_START_EVENT ? event.data.sequence_start.anchor : event.data.mapping_start.anchor), 1))
                    continue
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let closed = open.popLast() else { return nil }
                    (anchor, size) = closed
                case YAML_SCALAR_EVENT:
                    plain += 1
                    (anchor, size) = (name(event.data.scalar.anchor), 1)
                case YAML_ALIAS_EVENT:
                    size = name(event.data.alias.anchor).flatMap { sizes[$0] } ?? 1
                    aliased = add(aliased, size)
                    if aliased > maxAliasedNodes && aliased / 10 > plain {
                        return (line, column, "YAML aliases expand to more than \(maxAliasedNodes) nodes (an alias bomb?); flotilla refuses such documents")
                    }
                default:
                    continue
                }
                if let anchor { sizes[anchor] = size }
                if !open.isEmpty { open[open.count - 1].size = add(open[open.count - 1].size, size) }
            }
        }
    }
}
