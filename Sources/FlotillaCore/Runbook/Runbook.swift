import Foundation
import Yams

/// A generic runbook for `flotilla run` (SPEC §6): ordered shell steps, each with an
/// optional timeout, become and once-per grouping; `{{ var }}` expands inventory variables,
/// shell-quoted.
public struct Runbook: Sendable {
    public struct Step: Sendable {
        public var name: String
        public var run: String
        public var timeout: Double?
        public var become: Bool?
        public var oncePer: String?
        public var location: SourceLocation
    }

    public var name: String
    public var steps: [Step]
    public var file: String

    /// Reads a runbook file.
    /// - Throws: `InventoryError` naming the file, the line and what is wrong.
    public static func load(path: String) throws(InventoryError) -> Runbook {
        // Missing, binary and non-UTF-8 files are refused with the line at fault.
        return try parse(try InventoryText.read(path, what: "a runbook"), file: path)
    }

    static let stepKeys: Set<String> = ["name", "run", "timeout", "become", "once_per"]

    public static func parse(_ text: String, file: String) throws(InventoryError) -> Runbook {
        func at(_ node: Node?) -> SourceLocation { SourceLocation(file: file, line: node?.mark?.line) }
        let root: Node
        try YAMLLimits.check(text, file: file)
        do {
            guard let node = try Yams.compose(yaml: text) else { throw InventoryError(at(nil), "the runbook is empty") }
            root = node
        } catch let error as InventoryError {
            throw error
        } catch let error as YamlError {
            throw YAMLReader.describe(error, file: file)
        } catch {
            throw InventoryError(at(nil), "not valid YAML: \(error)")
        }
        func mapping(_ node: Node, _ what: String, allowed: Set<String>) throws(InventoryError) -> [String: Node] {
            guard case .mapping(let map) = node else { throw InventoryError(at(node), "\(what) must be a mapping") }
            var fields: [String: Node] = [:]
            for (key, value) in map {
                guard let name = key.string else { throw InventoryError(at(key), "keys of \(what) must be text") }
                guard allowed.contains(name) else {
                    throw InventoryError(at(key), "unknown key '\(name)' in \(what) (known: \(allowed.sorted().joined(separator: ", ")))")
                }
                guard fields[name] == nil else { throw InventoryError(at(key), "duplicate key '\(name)' in \(what)") }
                fields[name] = value
            }
            return fields
        }
        func scalar(_ node: Node, _ what: String) throws(InventoryError) -> String {
            guard case .scalar(let value) = node else { throw InventoryError(at(node), "\(what) must be a single value") }
            return value.string
        }
        let top = try mapping(root, "the runbook", allowed: ["name", "description", "steps"])
        guard let stepsNode = top["steps"] else { throw InventoryError(at(root), "the runbook has no 'steps' list") }
        guard case .sequence(let items) = stepsNode, !items.isEmpty else {
            throw InventoryError(at(stepsNode), "'steps' must be a non-empty list of steps")
        }
        var steps: [Step] = []
        var names: Set<String> = []
        for item in items {
            let fields = try mapping(item, "a step", allowed: stepKeys)
            guard let runNode = fields["run"] else { throw InventoryError(at(item), "a step needs 'run' (the shell command)") }
            let run = try scalar(runNode, "run")
            guard !run.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw InventoryError(at(runNode), "'run' is empty") }
            let name = try fields["name"].map { node throws(InventoryError) in try scalar(node, "name") } ?? run
            guard names.insert(name).inserted else { throw InventoryError(at(item), "two steps are named '\(name)'") }
            var step = Step(name: name, run: run, location: at(runNode))
            if let node = fields["timeout"] {
                let text = try scalar(node, "timeout")
                guard let seconds = parseDuration(text), seconds > 0 else {
                    throw InventoryError(at(node), "timeout '\(text)' is not a duration such as 90, 120s, 2m or 1h")
                }
                step.timeout = seconds
            }
            if let node = fields["become"] {
                guard let flag = node.bool else { throw InventoryError(at(node), "become must be true or false") }
                step.become = flag
            }
            if let node = fields["once_per"] {
                let variable = try scalar(node, "once_per")
                guard !variable.isEmpty, variable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw InventoryError(at(node), "once_per must name a host variable, such as st2_cluster")
                }
                step.oncePer = variable
            }
            // Check the template syntax now, before any host is looked at.
            _ = try Self.references(in: run, at: step.location)
            steps.append(step)
        }
        let title = try top["name"].map { node throws(InventoryError) in try scalar(node, "name") }
        return Runbook(name: title ?? URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent, steps: steps, file: file)
    }

    /// The steps for one host, `{{ var }}` replaced by the variable's value, shell-quoted.
    /// `become` defaults to the host's `ansible_become`.
    /// - Throws: `InventoryError` at the step's line when a variable is undefined or not a
    ///   single value.
    public func steps(for host: Inventory.Host, become: Bool) throws(InventoryError) -> [RunStep] {
        var result: [RunStep] = []
        for step in steps {
            var command = ""
            var rest = Substring(step.run)
            for reference in try Self.references(in: step.run, at: step.location) {
                command += rest[..<reference.range.lowerBound]
                let value: String
                switch reference.name {
                case "inventory_hostname": value = host.name
                default:
                    // A secret in a command would be in the host's process list, the
                    // journal, the logs and the reports: refused, as `hosts --vars` redacts it.
                    if InventoryValue.isSecret(name: reference.name) {
                        throw InventoryError(step.location, "step '\(step.name)' uses {{ \(reference.name) }}, a secret; flotilla never puts secrets into commands (they would show in the host's process list, the journal, logs and reports): have the step read it on the host, from a file only root can read")
                    }
                    guard let variable = host.variables[reference.name] else {
                        throw InventoryError(step.location, "step '\(step.name)' uses {{ \(reference.name) }}, which host '\(host.name)' does not define")
                    }
                    if case .encrypted = variable.value {
                        throw InventoryError(step.location, "step '\(step.name)' uses {{ \(reference.name) }}, which is vault-encrypted for host '\(host.name)'; flotilla cannot decrypt it")
                    }
                    value = variable.value.scalarText ?? variable.value.json()
                }
                command += ShellQuote.quote(value)
                rest = step.run[reference.range.upperBound...]
            }
            command += rest
            var oncePerValue: String?
            if let group = step.oncePer { oncePerValue = group }
            result.append(RunStep(name: step.name, command: command, kind: .command, oncePer: oncePerValue,
                                  become: step.become ?? become, timeout: step.timeout))
        }
        return result
    }

    struct Reference {
        var name: String
        var range: Range<String.Index>
    }

    /// The `{{ name }}` references of a command, in order.
    static func references(in text: String, at location: SourceLocation) throws(InventoryError) -> [Reference] {
        var references: [Reference] = []
        var searchFrom = text.startIndex
        while let open = text[searchFrom...].range(of: "{{") {
            guard let close = text[open.upperBound...].range(of: "}}") else {
                throw InventoryError(location, "unterminated '{{' in: \(text)")
            }
            let name = text[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), !name.first!.isNumber else {
                throw InventoryError(location, "'{{\(text[open.upperBound..<close.lowerBound])}}' is not a variable reference; runbooks expand {{ variable }} only")
            }
            references.append(Reference(name: name, range: open.lowerBound..<close.upperBound))
            searchFrom = close.upperBound
        }
        if text.contains("{%") { throw InventoryError(location, "Jinja2 statements ({% %}) are not supported; runbooks expand {{ variable }} only") }
        return references
    }
}
