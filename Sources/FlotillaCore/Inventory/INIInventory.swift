/// Ansible's INI inventory format: `[group]`, `[group:vars]`, `[group:children]`, host
/// lines with inline `key=value` variables, `#` and `;` comments. Follows Ansible's
/// `ini` plugin rule for rule; every error names the file and line.
struct INIInventoryParser {
    let file: String
    var graph: InventoryGraph

    private enum State: String { case hosts, vars, children }

    private struct Pending {
        var line: Int
        var kind: State
        var parents: [(group: Int, line: Int)] = []
    }

    /// Where the parser stands: the section it is in, and the groups named before they
    /// are declared, in order (Ansible's pending_declarations).
    private struct Position {
        var groupName = "ungrouped"
        var group = InventoryGraph.ungrouped
        var state = State.hosts
        var pending: [String: Pending] = [:]
        var pendingOrder: [String] = []
    }

    mutating func parse(_ text: String) throws(InventoryError) {
        var position = Position()
        var lineNumber = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            let here = SourceLocation(file: file, line: lineNumber)
            let line = rawLine.trimmingPythonWhitespace()
            guard let first = line.first, first != "#", first != ";" else { continue }

            if first == "[" {
                if let (name, tag) = Self.section(line) {
                    try enterSection(name, tag: tag, lineNumber: lineNumber, &position)
                    continue
                } else if line.last == "]" {
                    throw InventoryError(here, "invalid section header '\(line)': a header is [group], [group:vars] or [group:children], with no spaces")
                }
            }

            switch position.state {
            case .hosts: try addHosts(line, to: position.group, at: here)
            case .vars: try setGroupVariable(line, in: position, at: here)
            case .children: try addChild(line, lineNumber: lineNumber, &position)
            }
        }
        try checkPendingDeclared(position)
    }

    /// A `[name]`, `[name:vars]` or `[name:children]` header.
    private mutating func enterSection(_ name: String, tag: String?, lineNumber: Int, _ position: inout Position) throws(InventoryError) {
        let here = SourceLocation(file: file, line: lineNumber)
        guard let kind = State(rawValue: tag ?? "hosts") else {
            throw InventoryError(here, "section [\(name):\(tag!)] has an unknown type '\(tag!)' (expected vars or children)")
        }
        position.groupName = name
        position.state = kind
        if graph.group(named: name) == nil, kind == .vars, position.pending[name] == nil {
            position.pending[name] = Pending(line: lineNumber, kind: .vars)
            position.pendingOrder.append(name)
        }
        position.group = graph.addGroup(name)
        if kind != .vars, let waiting = position.pending[name] {
            if waiting.kind == .children {
                try resolvePending(name, &position.pending)
            } else {
                position.pending[name] = nil
            }
        }
    }

    /// A host line: a host name or range, an optional port, inline `key=value` variables.
    private mutating func addHosts(_ line: String, to group: Int, at here: SourceLocation) throws(InventoryError) {
        let words: [String]
        do {
            words = try ShellWords.split(line)
        } catch {
            throw InventoryError(here, "cannot parse host line '\(line)': \(error.message == "No closing quotation" ? "unterminated quote" : "a backslash ends the line")")
        }
        guard let expression = words.first, !expression.isEmpty else {
            throw InventoryError(here, "expected a host name, got '\(line)'")
        }
        let (names, port) = try HostExpression.expand(expression, at: here)
        if expression.hasSuffix(":") && port == nil {
            throw InventoryError(here, "invalid host '\(expression)': a trailing ':' must be followed by a port number")
        }
        if names.contains("---") {
            throw InventoryError(here, "invalid host '---': this looks like a YAML file")
        }
        var variables: [(String, InventoryValue)] = []
        for word in words.dropFirst() {
            guard let equals = word.firstIndex(of: "=") else {
                throw InventoryError(here, "expected key=value host variable after the host name, got '\(word)'")
            }
            variables.append((String(word[..<equals]), PythonLiteral.value(of: String(word[word.index(after: equals)...]))))
        }
        for name in names {
            graph.addHost(name, group: group, port: port, at: here)
            let host = graph.host(named: name)!
            for (key, value) in variables { graph.setVariable(host: host, key, InventoryVariable(value, at: here)) }
        }
    }

    /// A `key=value` line of a `[group:vars]` section.
    private mutating func setGroupVariable(_ line: String, in position: Position, at here: SourceLocation) throws(InventoryError) {
        guard let equals = line.firstIndex(of: "=") else {
            throw InventoryError(here, "expected key=value in [\(position.groupName):vars], got '\(line)'")
        }
        let key = line[..<equals].trimmingPythonWhitespace()
        let value = line[line.index(after: equals)...].trimmingPythonWhitespace()
        guard !key.isEmpty else { throw InventoryError(here, "a variable needs a name before '=' in '\(line)'") }
        try graph.setVariable(group: position.group, key, InventoryVariable(PythonLiteral.value(of: value), at: here))
    }

    /// A group name in a `[group:children]` section; one not declared yet waits for its
    /// declaration.
    private mutating func addChild(_ line: String, lineNumber: Int, _ position: inout Position) throws(InventoryError) {
        let here = SourceLocation(file: file, line: lineNumber)
        guard let child = Self.groupName(line) else {
            throw InventoryError(here, "expected a group name in [\(position.groupName):children], got '\(line)'")
        }
        if let childIndex = graph.group(named: child) {
            try graph.addChild(parent: position.group, child: childIndex, at: here)
        } else if position.pending[child] != nil {
            position.pending[child]!.parents.append((position.group, lineNumber))
        } else {
            position.pending[child] = Pending(line: lineNumber, kind: .children, parents: [(position.group, lineNumber)])
            position.pendingOrder.append(child)
        }
    }

    /// At the end of the file, a group still waiting for its declaration is an error.
    private func checkPendingDeclared(_ position: Position) throws(InventoryError) {
        for name in position.pendingOrder {
            guard let waiting = position.pending[name] else { continue }
            let here = SourceLocation(file: file, line: waiting.line)
            if waiting.kind == .vars {
                throw InventoryError(here, "[\(name):vars] sets variables for group '\(name)', which is not defined in this file (declare it with [\(name)] or [\(name):children])")
            }
            let parent = graph.groups[waiting.parents.last!.group].name
            throw InventoryError(here, "[\(parent):children] names group '\(name)', which is not defined (declare it with [\(name)] or [\(name):children])")
        }
    }

    /// A child group that has just been declared: attach it to its waiting parents,
    /// and any of those parents that were themselves waiting children.
    private mutating func resolvePending(_ name: String, _ pending: inout [String: Pending]) throws(InventoryError) {
        guard let waiting = pending[name] else { return }
        let child = graph.group(named: name)!
        for (parent, line) in waiting.parents {
            try graph.addChild(parent: parent, child: child, at: SourceLocation(file: file, line: line))
            let parentName = graph.groups[parent].name
            if pending[parentName]?.kind == .children { try resolvePending(parentName, &pending) }
        }
        pending[name] = nil
    }

    /// `[name]` or `[name:tag]`, optionally followed by a comment.
    static func section(_ line: String) -> (String, String?)? {
        var rest = Substring(line).dropFirst()
        let name = rest.prefix { $0 != ":" && $0 != "]" && !$0.isWhitespace }
        guard !name.isEmpty else { return nil }
        rest = rest.dropFirst(name.count)
        var tag: String?
        if rest.first == ":" {
            let word = rest.dropFirst().prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            guard !word.isEmpty else { return nil }
            tag = String(word)
            rest = rest.dropFirst(1 + word.count)
        }
        guard rest.first == "]" else { return nil }
        rest = rest.dropFirst().drop { $0.isWhitespace }
        guard rest.isEmpty || rest.first == "#" else { return nil }
        return (String(name), tag)
    }

    /// A group name on a `[x:children]` line, optionally followed by a comment.
    static func groupName(_ line: String) -> String? {
        let name = line.prefix { $0 != ":" && $0 != "]" && !$0.isWhitespace }
        guard !name.isEmpty else { return nil }
        let rest = line.dropFirst(name.count).drop { $0.isWhitespace }
        guard rest.isEmpty || rest.first == "#" else { return nil }
        return String(name)
    }
}

extension StringProtocol {
    /// Python's `str.strip()`: Unicode whitespace at both ends.
    func trimmingPythonWhitespace() -> String {
        guard let start = firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let end = lastIndex(where: { !$0.isWhitespace })!
        return String(self[start...end])
    }
}
