import Foundation

/// A resolved Ansible inventory: every host with its groups and merged variables, as
/// `ansible-inventory --list` would show them.
///
/// Read it with ``load(sources:)``; select hosts with ``select(_:)``.
public struct Inventory: Sendable {
    public struct Host: Sendable {
        public var name: String
        /// Every group the host is in, directly or through children, except `all`; sorted.
        public var groups: [String]
        /// The host's variables merged in Ansible's order, each with where it was set.
        public var variables: InventoryVariables
        /// Where the host first appears.
        public var location: SourceLocation
    }

    /// Hosts in inventory order (the order of their first appearance).
    public private(set) var hosts: [Host]
    /// Every group name, in order of first appearance, `all` and `ungrouped` first.
    public private(set) var groupNames: [String]
    /// Problems Ansible also only warns about (for example an unknown key in a YAML group).
    public private(set) var warnings: [InventoryError]
    /// Each group's hosts in Ansible's order (its own hosts, then its children's).
    private var groupHosts: [[Int]]
    private var hostIndex: [String: Int]

    /// Reads inventory sources in order: files (INI or YAML, told apart by content),
    /// directories (every inventory file in them, recursively, skipping what Ansible
    /// skips), or comma-separated host lists such as `web1,web2,`. `group_vars/` and
    /// `host_vars/` beside each source are applied as Ansible applies them.
    ///
    /// - Throws: ``InventoryError`` naming the file and line of the first problem.
    public static func load(sources: [String]) throws(InventoryError) -> Inventory {
        var loader = Loader()
        for source in sources { try loader.read(source: source) }
        loader.graph.reconcile()
        return try Inventory(graph: loader.graph, varsDirectories: loader.varsDirectories, warnings: loader.warnings)
    }

    private init(graph: InventoryGraph, varsDirectories: [String], warnings: [InventoryError]) throws(InventoryError) {
        self.warnings = warnings
        groupNames = graph.groups.map(\.name)
        hostIndex = Dictionary(uniqueKeysWithValues: graph.hosts.enumerated().map { ($1.name, $0) })
        groupHosts = graph.groups.indices.map { graph.hostsOf(group: $0) }

        let depths = graph.depths()
        var ancestorCache: [Int: Set<Int>] = [:]
        func ancestors(_ group: Int) -> Set<Int> {
            if let known = ancestorCache[group] { return known }
            let found = graph.ancestors(of: group)
            ancestorCache[group] = found
            return found
        }
        var files = try VarsFiles(directories: varsDirectories)
        let allInline = graph.groups[InventoryGraph.all].vars
        var allFromFiles: InventoryVariables = [:]
        for directory in varsDirectories {
            allFromFiles.merge(try files.variables(directory: directory, kind: .group, name: "all")) { $1 }
        }
        // Hosts that share a set of groups share the group part of their variables.
        var groupPart: [[Int]: InventoryVariables] = [:]
        var result: [Host] = []
        result.reserveCapacity(graph.hosts.count)
        for host in graph.hosts {
            var memberOf: Set<Int> = []
            for group in host.groups {
                memberOf.insert(group)
                memberOf.formUnion(ancestors(group))
            }
            memberOf.remove(InventoryGraph.all)
            let sorted = memberOf.sorted {
                let (a, b) = (graph.groups[$0], graph.groups[$1])
                return (depths[$0], a.priority, a.name) < (depths[$1], b.priority, b.name)
            }
            var variables: InventoryVariables
            if let known = groupPart[sorted] {
                variables = known
            } else {
                variables = allInline.merging(allFromFiles) { $1 }
                for group in sorted { variables.merge(graph.groups[group].vars) { $1 } }
                for directory in varsDirectories {
                    for group in sorted {
                        variables.merge(try files.variables(directory: directory, kind: .group, name: graph.groups[group].name)) { $1 }
                    }
                }
                groupPart[sorted] = variables
            }
            variables.merge(host.vars) { $1 }
            for directory in varsDirectories {
                variables.merge(try files.variables(directory: directory, kind: .host, name: host.name)) { $1 }
            }
            for name in Self.magicNames { variables[name] = nil }
            result.append(Host(name: host.name, groups: sorted.map { graph.groups[$0].name }.sorted(),
                               variables: variables, location: host.location))
        }
        hosts = result
    }

    /// Names Ansible computes itself (its "magic" and internal variables): a value an
    /// inventory sets for them never reaches a host, so they are left out, as
    /// `ansible-inventory` leaves them out.
    static let magicNames = [
        "ansible_diff_mode", "ansible_config_file", "ansible_facts", "ansible_forks", "ansible_inventory_sources",
        "ansible_limit", "ansible_playbook_python", "ansible_run_tags", "ansible_skip_tags", "ansible_verbosity",
        "ansible_version", "inventory_dir", "inventory_file", "inventory_hostname", "inventory_hostname_short",
        "groups", "group_names", "omit", "playbook_dir",
    ]

    public func host(named name: String) -> Host? { hostIndex[name].map { hosts[$0] } }

    func groupHostIndexes(_ group: Int) -> [Int] { groupHosts[group] }
    func index(ofHost name: String) -> Int? { hostIndex[name] }
}

// MARK: - Reading sources

private struct Loader {
    var graph = InventoryGraph()
    var varsDirectories: [String] = []
    var warnings: [InventoryError] = []

    /// File names Ansible skips in an inventory directory.
    static let ignoredNames: Set<String> = ["host_vars", "group_vars", "vars_plugins"]
    static let ignoredEndings = [".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry"]

    mutating func read(source: String) throws(InventoryError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) {
            if isDirectory.boolValue {
                try readDirectory(source)
                varsDirectories.append(source)
            } else {
                try readFile(source)
                varsDirectories.append((source as NSString).deletingLastPathComponent.nonEmpty ?? ".")
            }
        } else if source.contains(",") {
            try readHostList(source)
        } else {
            throw InventoryError(SourceLocation(file: source), "no such inventory file or directory")
        }
    }

    private mutating func readDirectory(_ directory: String) throws(InventoryError) {
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw InventoryError(SourceLocation(file: directory), "cannot list the inventory directory: \(error.localizedDescription)")
        }
        for entry in entries {
            if entry.hasPrefix(".") || Self.ignoredNames.contains(entry) || Self.ignoredEndings.contains(where: entry.hasSuffix) {
                continue
            }
            let path = (directory as NSString).appendingPathComponent(entry)
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            if isDirectory.boolValue { try readDirectory(path) } else { try readFile(path) }
        }
    }

    private mutating func readHostList(_ list: String) throws(InventoryError) {
        let here = SourceLocation(file: "host list '\(list)'")
        for item in list.split(separator: ",") {
            let text = item.trimmingPythonWhitespace()
            guard !text.isEmpty else { continue }
            let (name, port) = HostExpression.address(text) ?? (text, nil)
            graph.addHost(name, group: InventoryGraph.ungrouped, port: port, at: here)
        }
    }

    private mutating func readFile(_ path: String) throws(InventoryError) {
        let text = try InventoryText.read(path)
        if InventoryText.looksLikeYAML(text) {
            var parser = YAMLInventoryParser(file: path, graph: graph)
            try parser.parse(text)
            graph = parser.graph
            warnings += parser.warnings
        } else {
            var parser = INIInventoryParser(file: path, graph: graph)
            try parser.parse(text)
            graph = parser.graph
        }
    }
}

enum InventoryText {
    /// A file's text; refuses binary and non-UTF-8 content with the line it is on.
    /// `what` names the kind of file in the message for a binary one.
    static func read(_ path: String, what: String = "an inventory file") throws(InventoryError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InventoryError(SourceLocation(file: path), "cannot read the file (missing or not readable)")
        }
        let bytes = [UInt8](data)
        if let bad = bytes.firstIndex(of: 0) {
            throw InventoryError(SourceLocation(file: path, line: lineNumber(bytes, bad)), "binary data (a NUL byte): not \(what)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            var line = 1
            for (index, chunk) in bytes.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
                if String(validating: chunk, as: UTF8.self) == nil { line = index + 1; break }
            }
            throw InventoryError(SourceLocation(file: path, line: line), "this line is not valid UTF-8 text")
        }
        return text
    }

    private static func lineNumber(_ bytes: [UInt8], _ offset: Int) -> Int {
        bytes[..<offset].reduce(1) { $1 == 10 ? $0 + 1 : $0 }
    }

    /// YAML (or JSON) if the first meaningful line starts a document or a mapping
    /// (`---`, `{`, `all:`); INI otherwise.
    static func looksLikeYAML(_ text: String) -> Bool {
        var rest = Substring(text)
        while !rest.isEmpty {
            let end = rest.firstIndex(where: \.isNewline) ?? rest.endIndex
            let trimmed = rest[..<end].trimmingPythonWhitespace()
            rest = end == rest.endIndex ? "" : rest[rest.index(after: end)...]
            guard let first = trimmed.first, first != "#", first != ";" else { continue }
            if trimmed.hasPrefix("---") || first == "%" || first == "{" { return true }
            if first == "[" { return false }
            let word = trimmed.prefix { !$0.isWhitespace }
            return word.hasSuffix(":")
        }
        return false
    }
}

/// `group_vars/` and `host_vars/` files, found as Ansible's `host_group_vars` plugin
/// finds them: `NAME`, `NAME.yml`, `NAME.yaml` or `NAME.json`, or a folder `NAME/`
/// whose files are read in sorted order. Each file is read once.
private struct VarsFiles {
    enum Kind: String { case group = "group_vars", host = "host_vars" }

    /// Per folder (e.g. `inv/group_vars`): the entries it holds, listed once.
    private var listings: [String: Set<String>] = [:]
    private var loaded: [String: InventoryVariables] = [:]

    init(directories: [String]) throws(InventoryError) {
        for directory in directories {
            for kind in [Kind.group, .host] {
                let folder = (directory as NSString).appendingPathComponent(kind.rawValue)
                if listings[folder] == nil {
                    listings[folder] = Set(try Self.list(folder))
                }
            }
        }
    }

    /// The entries of a vars folder: none when there is no such folder (or something
    /// else by that name, which Ansible skips too); one that cannot be read is an error,
    /// not a silent lack of variables.
    private static func list(_ folder: String) throws(InventoryError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else { return [] }
        do {
            return try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw InventoryError(SourceLocation(file: folder), "cannot list the variables folder: \(error.localizedDescription)")
        }
    }

    mutating func variables(directory: String, kind: Kind, name: String) throws(InventoryError) -> InventoryVariables {
        guard !name.hasPrefix("/") else { return [:] }
        let folder = (directory as NSString).appendingPathComponent(kind.rawValue)
        guard let listing = listings[folder], !listing.isEmpty else { return [:] }
        guard let entry = ["", ".yml", ".yaml", ".json"].lazy.map({ name + $0 }).first(where: listing.contains) else {
            return [:]
        }
        let path = (folder as NSString).appendingPathComponent(entry)
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        var result: InventoryVariables = [:]
        for file in isDirectory.boolValue ? try Self.filesBelow(path) : [path] {
            result.merge(try load(file)) { $1 }
        }
        return result
    }

    private static func filesBelow(_ folder: String) throws(InventoryError) -> [String] {
        let entries = try list(folder).sorted()
        var files: [String] = []
        for entry in entries where !entry.hasPrefix(".") && !entry.hasSuffix("~") {
            let path = (folder as NSString).appendingPathComponent(entry)
            let ext = (entry as NSString).pathExtension
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            if isDirectory.boolValue {
                if ext.isEmpty { files += try filesBelow(path) }
            } else if ext.isEmpty || ["yml", "yaml", "json"].contains(ext) {
                files.append(path)
            }
        }
        return files
    }

    private mutating func load(_ path: String) throws(InventoryError) -> InventoryVariables {
        if let known = loaded[path] { return known }
        let text = try InventoryText.read(path)
        let reader = YAMLReader(file: path, text: text)
        var result: InventoryVariables = [:]
        if let root = try reader.compose(text), !YAMLInventoryParser.isEmpty(root) {
            guard let entries = try reader.entries(root) else {
                throw InventoryError(reader.location(root), "a variables file must be a YAML mapping of variable names to values")
            }
            for (key, value) in entries {
                result[reader.keyText(key)] = InventoryVariable(try reader.value(value), at: reader.location(key))
            }
        }
        loaded[path] = result
        return result
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
