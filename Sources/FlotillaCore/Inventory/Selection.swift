import Foundation

extension SSHConfig {
    /// The OpenSSH client config `--ssh-config` names: `none` reads none, a leading `~`
    /// is the home directory, and the default `~/.ssh/config` may be missing (nil).
    /// - Throws: `InventoryError` for another file that is missing or for a bad config.
    public static func load(option: String, home: String) throws -> SSHConfig? {
        guard option != "none" else { return nil }
        let path = option == "~" ? home : (option.hasPrefix("~/") ? home + option.dropFirst() : option)
        if FileManager.default.fileExists(atPath: path) { return try load(path: path, home: home) }
        guard option == "~/.ssh/config" else { throw InventoryError(SourceLocation(file: path), "no such SSH config file") }
        return nil
    }
}

extension Inventory {
    /// Shell completions of a host pattern being typed: the group and host names that
    /// start with its last part (after `:`, `,`, `&` or `!`), with what comes before kept.
    public func completions(of prefix: String) -> [String] {
        let cut = prefix.lastIndex { ":,&!".contains($0) }.map { prefix.index(after: $0) } ?? prefix.startIndex
        let head = String(prefix[..<cut]), tail = String(prefix[cut...])
        // Quiet: a completion never prints an error, so hosts that cannot be listed are left out.
        let names = groupNames + ((try? select(nil))?.map(\.name) ?? [])
        return names.filter { $0.hasPrefix(tail) && $0 != "all" }.map { head + $0 }
    }

    /// Completions of the host pattern `prefix` (``completions(of:)``) from the inventory
    /// the command line being completed names (`words`: `-i PATH`, `--inventory PATH`,
    /// `--inventory=PATH`), else the environment's (``sources(environment:)``). None when
    /// there is no inventory or it cannot be read: a completion never prints an error.
    public static func completions(commandLine words: [String], prefix: String, environment: [String: String]) -> [String] {
        var sources: [String] = []
        var position = 0
        while position < words.count {
            let word = words[position]
            if word == "-i" || word == "--inventory", position + 1 < words.count {
                sources.append(words[position + 1])
                position += 1
            } else if word.hasPrefix("--inventory=") {
                sources.append(String(word.dropFirst("--inventory=".count)))
            }
            position += 1
        }
        if sources.isEmpty { sources = Inventory.sources(environment: environment) ?? [] }
        // Quiet on any error, as above.
        guard !sources.isEmpty, let inventory = try? Inventory.load(sources: sources.map { ($0 as NSString).expandingTildeInPath }) else { return [] }
        return inventory.completions(of: prefix)
    }
}

extension Inventory {
    /// The inventory sources the environment names: `$FLOTILLA_INVENTORY`, else
    /// `$ANSIBLE_INVENTORY`, each a comma list; nil when neither is set and non-empty.
    public static func sources(environment: [String: String]) -> [String]? {
        for name in ["FLOTILLA_INVENTORY", "ANSIBLE_INVENTORY"] {
            if let value = environment[name], !value.isEmpty { return value.split(separator: ",").map(String.init) }
        }
        return nil
    }

    /// The inventory sources when no `-i` is given: the environment's, else
    /// `/etc/ansible/hosts` when it exists (`fallback`), as Ansible looks for them.
    public static func defaultSources(environment: [String: String], fallback: String = "/etc/ansible/hosts") -> [String]? {
        if let sources = sources(environment: environment) { return sources }
        return FileManager.default.fileExists(atPath: fallback) ? [fallback] : nil
    }
}

/// The hosts a command works on: those the limit pattern selects from the inventory, with
/// their connection settings (the SSH client config filling what the inventory leaves
/// unset).
public struct HostSelection: Sendable {
    public var hosts: [Inventory.Host]
    public var settings: [ConnectionSettings]

    public init(hosts: [Inventory.Host], settings: [ConnectionSettings]) {
        self.hosts = hosts
        self.settings = settings
    }

    /// Reads the inventory `sources` and the SSH client config `sshConfig` (an
    /// ``SSHConfig/load(option:home:)`` option), applies `limit`, and resolves each
    /// selected host's connection settings.
    /// - Parameter warn: gets the inventory's and the config's warnings as soon as they
    ///   are read, before the settings are resolved.
    /// - Throws: `InventoryError` for a bad inventory, pattern, config or host variable.
    public static func load(sources: [String], limit: String?, sshConfig: String, localUser: String, home: String,
                            warn: (String) -> Void) throws -> HostSelection {
        let inventory = try Inventory.load(sources: sources)
        let hosts = try inventory.select(limit)
        let config = try SSHConfig.load(option: sshConfig, home: home)
        for warning in inventory.warnings + (config?.warnings ?? []) { warn(warning.description) }
        let settings = try hosts.map { try ConnectionSettings.resolve($0, sshConfig: config, localUser: localUser, home: home) }
        return HostSelection(hosts: hosts, settings: settings)
    }
}
