import Foundation
import Yams

/// The StackStorm version-specific upgrade catalog (`stackstorm-migrations.yaml`).
///
/// The catalog is data: the planner and the lab read it at run time, so a new release's
/// steps are added by editing the YAML, not code.
public struct MigrationCatalog: Sendable {
    /// One release's entry: what must happen when a host crosses it.
    public struct Entry: Sendable, Decodable {
        public enum Scope: String, Sendable, Decodable { case database, host }

        /// A command the planner adds, after the content reload, to every pass that crosses
        /// this release on a host it fits (`steps:`).
        public struct Step: Sendable, Decodable {
            public var name: String
            public var command: String
            /// OS keys (`ubuntu16.04`, `el7`) the step is for; empty: every OS.
            public var os: [String]
            /// Components of which one must run on the host (`st2ctl status`); empty: every host.
            public var components: [String]

            enum CodingKeys: String, CodingKey { case name, command, os, components }

            public init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                name = try c.decode(String.self, forKey: .name)
                command = try c.decode(String.self, forKey: .command)
                for (key, text) in [(CodingKeys.name, name), (.command, command)] where text.trimmingCharacters(in: .whitespaces).isEmpty {
                    throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "must not be empty")
                }
                os = try c.decodeIfPresent([String].self, forKey: .os) ?? []
                components = try c.decodeIfPresent([String].self, forKey: .components) ?? []
            }
        }

        /// The release, e.g. `3.5`.
        public var version: StackStormVersion { _version! }
        var _version: StackStormVersion?
        public var scripts: [String]
        public var scope: Scope
        public var optional: Bool
        public var flag: String?
        public var shippedUntil: StackStormVersion?
        public var mistralDB: Bool
        public var removes: [String]
        public var blocksIf: String?
        /// Per removed package, why the planner refuses and what the operator must do
        /// (`blocks_if` written as a mapping); a package not listed falls back to `blocksIf`.
        public var removalReasons: [String: String]
        public var steps: [Step]
        public var manual: [String]
        public var source: String?

        enum CodingKeys: String, CodingKey {
            case scripts, scope, optional, flag, removes, manual, source, steps
            case shippedUntil = "shipped_until", mistralDB = "mistral_db", blocksIf = "blocks_if"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            scripts = try c.decodeIfPresent([String].self, forKey: .scripts) ?? []
            scope = try c.decodeIfPresent(Scope.self, forKey: .scope) ?? .host
            optional = try c.decodeIfPresent(Bool.self, forKey: .optional) ?? false
            flag = try c.decodeIfPresent(String.self, forKey: .flag)
            if let text = try c.decodeIfPresent(String.self, forKey: .shippedUntil) {
                guard let version = StackStormVersion(text) else {
                    throw DecodingError.dataCorruptedError(forKey: .shippedUntil, in: c, debugDescription: "not a version: \(text)")
                }
                shippedUntil = version
            }
            mistralDB = try c.decodeIfPresent(Bool.self, forKey: .mistralDB) ?? false
            removes = try c.decodeIfPresent([String].self, forKey: .removes) ?? []
            // `blocks_if` is one reason for every removed package, or one per package; when
            // it is not a mapping, the text form is decoded (and its errors thrown) below.
            if let reasons = try? c.decodeIfPresent([String: String].self, forKey: .blocksIf) {
                blocksIf = nil
                removalReasons = reasons
                for package in reasons.keys.sorted() where !removes.contains(package) {
                    throw DecodingError.dataCorruptedError(forKey: .blocksIf, in: c, debugDescription: "'\(package)' is not listed in removes")
                }
            } else {
                blocksIf = try c.decodeIfPresent(String.self, forKey: .blocksIf)
                removalReasons = [:]
            }
            steps = try c.decodeIfPresent([Step].self, forKey: .steps) ?? []
            manual = try c.decodeIfPresent([String].self, forKey: .manual) ?? []
            source = try c.decodeIfPresent(String.self, forKey: .source)
        }
    }

    public struct Mistral: Sendable, Decodable {
        public struct KnownFailure: Sendable, Decodable {
            public var match: String
            public var cause: String
            public var recovery: [String]
        }
        public var commands: [String]
        public var knownFailure: KnownFailure?
        public var note: String?

        enum CodingKeys: String, CodingKey { case commands, note, knownFailure = "known_failure" }
    }

    /// Entries ordered by version, oldest first.
    public var entries: [Entry]
    /// Packages the upgrade touches, in catalog order.
    public var packages: [String]
    /// Highest st2 release per OS key (`el7`, `ubuntu18.04`).
    public var osCeilings: [String: StackStormVersion]
    public var mistral: Mistral
    public var facts: [String: String]
    /// Arguments appended to every migration script of a pass whose target is below a release.
    public var scriptArguments: [ScriptArguments]
    /// The key-value export's flags by release, oldest first (`key_export:`).
    public var keyExport: [KeyExport]

    /// `script_arguments:` one rule: on passes to a release below `below`, append `append`.
    public struct ScriptArguments: Sendable, Decodable {
        public var below: StackStormVersion
        public var append: String
        public var source: String?

        enum CodingKeys: String, CodingKey { case below, append, source }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            below = try c.decodeVersion(forKey: .below)
            append = try c.decode(String.self, forKey: .append)
            guard !append.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw DecodingError.dataCorruptedError(forKey: .append, in: c, debugDescription: "must not be empty")
            }
            source = try c.decodeIfPresent(String.self, forKey: .source)
        }
    }

    /// `key_export:` one rule: from release `from` on, the key-value export takes `flags`
    /// (the newest rule at or below the installed release applies).
    public struct KeyExport: Sendable, Decodable {
        public var from: StackStormVersion
        public var flags: String
        public var source: String?

        enum CodingKeys: String, CodingKey { case from, flags, source }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            from = try c.decodeVersion(forKey: .from)
            flags = try c.decode(String.self, forKey: .flags).trimmingCharacters(in: .whitespaces)
            // The flags go into a shell command line, and the backup keeps secrets encrypted.
            let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -=_.")
            guard !flags.isEmpty, flags.allSatisfy(allowed.contains) else {
                throw DecodingError.dataCorruptedError(forKey: .flags, in: c, debugDescription: "must be st2 key list options (letters, digits, spaces, - = _ .)")
            }
            guard !flags.split(separator: " ").contains(where: { $0 == "--decrypt" }) else {
                throw DecodingError.dataCorruptedError(forKey: .flags, in: c, debugDescription: "--decrypt would keep secrets in clear")
            }
            source = try c.decodeIfPresent(String.self, forKey: .source)
        }
    }

    /// The key-value export's command for a host running `installed`: every key of every
    /// scope, encrypted values left encrypted, with the flags of ``keyExport`` for that release.
    public func keyExportCommand(installed: StackStormVersion) -> String {
        let rule = keyExport.last { installed.compareRelease($0.from) >= 0 }
        return "st2 key list -j" + (rule.map { " \($0.flags)" } ?? "") + " -s all"
    }

    /// A migration script line as run on a pass to `target`, with the arguments the
    /// catalog's `script_arguments` add below their release.
    public func scriptCommand(_ script: String, target: StackStormVersion) -> String {
        scriptArguments.filter { target.compareRelease($0.below) < 0 }.reduce(script) { "\($0) \($1.append)" }
    }

    /// An error in the catalog file, naming what is wrong.
    public struct LoadError: Error, CustomStringConvertible {
        public var file: String
        public var message: String
        public var description: String { "\(file): \(message)" }
    }

    /// Parses catalog YAML.
    /// - Throws: `LoadError` naming the file and the problem (bad YAML, a key that is not a version, a wrong type).
    public init(yaml: String, file: String = "stackstorm-migrations.yaml") throws {
        struct Raw: Decodable {
            var versions: [String: Entry]
            var packages: [String]
            var os_ceilings: [String: String]
            var mistral: Mistral
            var facts: [String: String]?
            var script_arguments: [ScriptArguments]?
            var key_export: [KeyExport]?
        }
        let raw: Raw
        if let (line, _, message) = YAMLLimits.violation(yaml) {
            throw LoadError(file: file, message: "line \(line): \(message)")
        }
        do {
            raw = try YAMLDecoder().decode(Raw.self, from: yaml)
        } catch DecodingError.dataCorrupted(let context) where context.underlyingError is YamlError {
            // Not YAML at all: say where, as for inventories.
            let error = YAMLReader.describe(context.underlyingError as! YamlError, file: file)
            throw LoadError(file: file, message: (error.location?.line.map { "line \($0): " } ?? "") + error.message)
        } catch let error as DecodingError {
            throw LoadError(file: file, message: Self.line(of: error, in: yaml).map { "line \($0): " }.map { $0 + Self.describe(error) } ?? Self.describe(error))
        } catch let error as YamlError {
            let error = YAMLReader.describe(error, file: file)
            throw LoadError(file: file, message: (error.location?.line.map { "line \($0): " } ?? "") + error.message)
        } catch {
            throw LoadError(file: file, message: "\(error)")
        }
        var entries: [Entry] = []
        for (key, var entry) in raw.versions {
            guard let version = StackStormVersion(key) else {
                throw LoadError(file: file, message: "versions: '\(key)' is not a version")
            }
            entry._version = version
            entries.append(entry)
        }
        self.entries = entries.sorted { $0.version < $1.version }
        packages = raw.packages
        var ceilings: [String: StackStormVersion] = [:]
        for (os, text) in raw.os_ceilings {
            guard let version = StackStormVersion(text) else {
                throw LoadError(file: file, message: "os_ceilings.\(os): '\(text)' is not a version")
            }
            ceilings[os] = version
        }
        osCeilings = ceilings
        mistral = raw.mistral
        facts = raw.facts ?? [:]
        scriptArguments = raw.script_arguments ?? []
        keyExport = raw.key_export ?? []
        for (index, rule) in keyExport.enumerated().dropFirst() where rule.from.compareRelease(keyExport[index - 1].from) <= 0 {
            let line = Self.line(at: ["key_export", index, "from"], in: yaml).map { "line \($0): " } ?? ""
            throw LoadError(file: file, message: "\(line)key_export.\(index).from: '\(rule.from.releaseString)' must be above the rule before it (\(keyExport[index - 1].from.releaseString))")
        }
    }

    /// The catalog bundled with flotilla.
    public static func bundled() throws -> MigrationCatalog {
        guard let url = Bundle.module.url(forResource: "stackstorm-migrations", withExtension: "yaml") else {
            throw LoadError(file: "stackstorm-migrations.yaml", message: "the bundled catalog is missing from the installation")
        }
        return try load(from: url)
    }

    /// The catalog at `path` (`--catalog`), else the bundled one.
    /// - Throws: `LoadError` naming the file and the problem.
    public static func load(path: String?) throws -> MigrationCatalog {
        try path.map { try load(from: URL(fileURLWithPath: $0)) } ?? bundled()
    }

    /// Reads and parses a catalog file.
    public static func load(from url: URL) throws -> MigrationCatalog {
        let text: String
        do {
            text = try InventoryText.read(url.path, what: "a migration catalog")
        } catch {
            throw LoadError(file: url.path, message: (error.location?.line.map { "line \($0): " } ?? "") + error.message)
        }
        return try MigrationCatalog(yaml: text, file: url.path)
    }

    /// Entries for a host going from `from` to `to`: `from < version <= to`, oldest first.
    public func entries(crossingFrom from: StackStormVersion, to: StackStormVersion) -> [Entry] {
        entries.filter { $0.version.compareRelease(from) > 0 && $0.version.compareRelease(to) <= 0 }
    }

    /// The migration scripts a given installed st2 release ships: those introduced at or
    /// before it and not dropped before it (`shipped_until`).
    public func scriptsShipped(by installed: StackStormVersion) -> [String] {
        entries.filter { entry in
            entry.version.compareRelease(installed) <= 0
                && (entry.shippedUntil.map { installed.compareRelease($0) <= 0 } ?? true)
        }.flatMap { $0.scripts.map(Self.scriptPath) }
    }

    /// The executable path of a script line (`/path --yes` -> `/path`).
    public static func scriptPath(_ line: String) -> String {
        String(line.split(separator: " ", maxSplits: 1).first ?? Substring(line))
    }

    /// The line of the node a decoding error is about, found by walking its coding path
    /// through the composed YAML (as far as the path goes).
    static func line(of error: DecodingError, in yaml: String) -> Int? {
        let context: DecodingError.Context
        switch error {
        case .keyNotFound(_, let c), .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): context = c
        @unknown default: return nil
        }
        // A YAML that decoded this far composes; without a node there is no line to give.
        guard var node = try? Yams.compose(yaml: yaml) else { return nil }
        for key in context.codingPath {
            if let index = key.intValue, let item = node.sequence?[index] {
                node = item
            } else if let item = node.mapping?.first(where: { $0.key.string == key.stringValue })?.value {
                node = item
            } else {
                break
            }
        }
        return node.mark?.line
    }

    /// The line of the node at `path` (keys and list indexes) in the YAML.
    static func line(at path: [Any], in yaml: String) -> Int? {
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int?
            init(stringValue: String) { self.stringValue = stringValue }
            init(intValue: Int) { self.intValue = intValue; stringValue = "\(intValue)" }
        }
        let keys: [any CodingKey] = path.map { ($0 as? Int).map(Key.init(intValue:)) ?? Key(stringValue: "\($0)") }
        return line(of: .dataCorrupted(DecodingError.Context(codingPath: keys, debugDescription: "")), in: yaml)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return (context.codingPath.isEmpty ? "" : "\(path(context)).") + "\(key.stringValue): missing"
        case .typeMismatch(let type, let context):
            let name = "\(type)"
            let expected = name.hasPrefix("Array") || name == "Sequence" ? "a list" : name.hasPrefix("Dictionary") || name == "Mapping" ? "a mapping"
                : name == "Bool" ? "true or false" : name == "String" ? "text" : name
            return "\(path(context)): expected \(expected)"
        case .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

extension KeyedDecodingContainer {
    /// A release written as text (`"2.8"`); text that is not a version is a data error at `key`.
    func decodeVersion(forKey key: Key) throws -> StackStormVersion {
        let text = try decode(String.self, forKey: key)
        guard let version = StackStormVersion(text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not a version: \(text)")
        }
        return version
    }
}
