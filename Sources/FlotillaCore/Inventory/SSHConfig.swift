import Foundation

/// The parts of an OpenSSH client configuration (`~/.ssh/config`) flotilla uses:
/// `Host` and `Match host` blocks, `Include`, and the `HostName`, `User`, `Port`,
/// `IdentityFile` and `ProxyJump` keywords, with OpenSSH's "first value wins" rule.
public struct SSHConfig: Sendable {
    /// What the configuration says for one host.
    public struct Options: Sendable, Equatable {
        public var hostName: String?
        public var user: String?
        public var port: Int?
        public var identityFiles: [String] = []
        /// Raw ProxyJump value (`none` already removed).
        public var proxyJump: String?
        /// Where the ProxyJump value was set, so a bad value can be reported there.
        public var proxyJumpLocation: SourceLocation?
    }

    private enum Condition: Sendable {
        case always
        case host([String])
        case matchHost([String])
        case never
    }

    private struct Line: Sendable {
        var keyword: String
        var arguments: [String]
        var location: SourceLocation
        var conditions: [Condition]
    }

    private var lines: [Line] = []
    public private(set) var warnings: [InventoryError] = []

    public init() {}

    /// Reads a configuration file and the files it includes.
    ///
    /// - Throws: ``InventoryError`` for an unreadable file, unterminated quote or a bad
    ///   `Port`.
    public static func load(path: String, home: String) throws(InventoryError) -> SSHConfig {
        var config = SSHConfig()
        try config.read(path: path, home: home, conditions: [], depth: 0)
        return config
    }

    public static func parse(_ text: String, file: String, home: String) throws(InventoryError) -> SSHConfig {
        var config = SSHConfig()
        try config.read(text: text, file: file, home: home, conditions: [], depth: 0)
        return config
    }

    private mutating func read(path: String, home: String, conditions: [Condition], depth: Int) throws(InventoryError) {
        try read(text: try InventoryText.read(path, what: "an SSH config file"), file: path, home: home, conditions: conditions, depth: depth)
    }

    private mutating func read(text: String, file: String, home: String, conditions outer: [Condition], depth: Int) throws(InventoryError) {
        var conditions = outer
        var number = 0
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            number += 1
            let here = SourceLocation(file: file, line: number)
            let line = raw.trimmingPythonWhitespace()
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            let keywordEnd = line.firstIndex { $0.isWhitespace || $0 == "=" } ?? line.endIndex
            let keyword = line[..<keywordEnd].lowercased()
            // `Keyword value`, `Keyword=value` or `Keyword = value`.
            var rest = line[keywordEnd...].drop { $0.isWhitespace }
            if rest.first == "=" { rest = rest.dropFirst().drop { $0.isWhitespace } }
            let arguments: [String]
            do {
                arguments = try ShellWords.split(String(rest), comments: true)
            } catch {
                throw InventoryError(here, "cannot parse '\(line)': unterminated quote")
            }
            switch keyword {
            case "host":
                guard !arguments.isEmpty else { throw InventoryError(here, "Host needs at least one pattern") }
                conditions = outer + [.host(arguments)]
            case "match":
                conditions = outer + [matchCondition(arguments, at: here)]
            case "include":
                guard depth < 16 else { throw InventoryError(here, "Include nested more than 16 levels deep (does a file include itself?)") }
                for pattern in arguments {
                    for path in Self.expandInclude(pattern, configFile: file, home: home) {
                        try read(path: path, home: home, conditions: conditions, depth: depth + 1)
                    }
                }
            default:
                if keyword == "port", let value = arguments.first, Int(value).map({ (1...65535).contains($0) }) != true {
                    throw InventoryError(here, "Port '\(value)' is not a port number (1-65535)")
                }
                lines.append(Line(keyword: keyword, arguments: arguments, location: here, conditions: conditions))
            }
        }
    }

    private mutating func matchCondition(_ arguments: [String], at here: SourceLocation) -> Condition {
        if arguments.map({ $0.lowercased() }) == ["all"] { return .always }
        if arguments.count == 2, ["host", "originalhost"].contains(arguments[0].lowercased()) {
            return .matchHost(arguments[1].split(separator: ",").map(String.init))
        }
        warnings.append(InventoryError(here, "Match \(arguments.joined(separator: " ")) is not supported by flotilla; the block is ignored"))
        return .never
    }

    private static func expandInclude(_ pattern: String, configFile: String, home: String) -> [String] {
        var path = pattern.hasPrefix("~/") ? home + pattern.dropFirst() : pattern
        if !path.hasPrefix("/") {
            path = (((configFile as NSString).deletingLastPathComponent) as NSString).appendingPathComponent(path)
        }
        guard path.contains(where: { "*?[".contains($0) }) else {
            return FileManager.default.fileExists(atPath: path) ? [path] : []
        }
        let folder = (path as NSString).deletingLastPathComponent
        // As OpenSSH's glob(3): a pattern that cannot match and a folder that cannot be
        // read include nothing, without an error.
        let matcher = try? HostPatternSyntax.Matcher((path as NSString).lastPathComponent, location: SourceLocation(file: configFile))
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return entries.sorted().filter { matcher?.matches($0) == true }.map { (folder as NSString).appendingPathComponent($0) }
    }

    /// The options for a host name as given to ssh (before HostName), with OpenSSH's
    /// rule that the first value obtained for a keyword is used.
    public func options(for host: String) -> Options {
        var options = Options()
        var seen: Set<String> = []
        for line in lines where line.conditions.allSatisfy({ Self.holds($0, host: host) }) {
            guard let value = line.arguments.first else { continue }
            if line.keyword == "identityfile" {
                options.identityFiles.append(value)
                continue
            }
            guard seen.insert(line.keyword).inserted else { continue }
            switch line.keyword {
            case "hostname": options.hostName = Self.expandHostName(value, host: host)
            case "user": options.user = value
            case "port": options.port = Int(value)
            case "proxyjump":
                if value.lowercased() != "none" {
                    options.proxyJump = value
                    options.proxyJumpLocation = line.location
                }
            default: break
            }
        }
        return options
    }

    private static func holds(_ condition: Condition, host: String) -> Bool {
        switch condition {
        case .always: return true
        case .never: return false
        case .host(let patterns), .matchHost(let patterns): return matches(host: host, patterns: patterns)
        }
    }

    /// OpenSSH host matching: any positive pattern matches and no `!` pattern does;
    /// `*` and `?` wildcards; case-insensitive.
    static func matches(host: String, patterns: [String]) -> Bool {
        let name = host.lowercased()
        var matched = false
        for raw in patterns.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let negated = raw.hasPrefix("!")
            let pattern = (negated ? String(raw.dropFirst()) : raw).lowercased()
            if wildcard(pattern, name) {
                if negated { return false }
                matched = true
            }
        }
        return matched
    }

    static func wildcard(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.unicodeScalars), t = Array(text.unicodeScalars)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == "?" || p[pi] == t[ti] {
                pi += 1; ti += 1
            } else if pi < p.count, p[pi] == "*" {
                star = pi; mark = ti; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == "*" { pi += 1 }
        return pi == p.count
    }

    private static func expandHostName(_ value: String, host: String) -> String {
        value.replacingOccurrences(of: "%%", with: "\u{0}").replacingOccurrences(of: "%h", with: host)
            .replacingOccurrences(of: "\u{0}", with: "%")
    }
}
