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
        public var manual: [String]
        public var source: String?

        enum CodingKeys: String, CodingKey {
            case scripts, scope, optional, flag, removes, manual, source
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
            blocksIf = try c.decodeIfPresent(String.self, forKey: .blocksIf)
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
            throw LoadError(file: file, message: Self.describe(error))
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
