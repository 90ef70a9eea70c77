import Foundation

/// `flotilla hosts` output: the selected hosts with their connection settings, as a table
/// or JSON; secret variables redacted.
public struct HostsView: Sendable {
    public var hosts: [Inventory.Host]
    /// The connection settings of each host, in the same order.
    public var settings: [ConnectionSettings]
    /// Whether every host's merged variables are shown.
    public var variables: Bool

    public init(hosts: [Inventory.Host], settings: [ConnectionSettings], variables: Bool) {
        self.hosts = hosts
        self.settings = settings
        self.variables = variables
    }

    /// `{"hosts": [...]}`, one host a line (the stable format `flotilla hosts --help` describes).
    public var json: String {
        let lines = zip(hosts, settings).map { host, setting in
            var fields = [
                "\"name\": " + JSONText.string(host.name),
                "\"address\": " + JSONText.string(setting.address),
                "\"port\": \(setting.port)",
                "\"user\": " + JSONText.string(setting.user),
                "\"groups\": [" + host.groups.map(JSONText.string).joined(separator: ", ") + "]",
                "\"proxy_jump\": [" + setting.proxyJump.map { JSONText.string($0.description) }.joined(separator: ", ") + "]",
                "\"identity_files\": [" + setting.identityFiles.map(JSONText.string).joined(separator: ", ") + "]",
                "\"become\": \(setting.become)",
                "\"become_user\": " + JSONText.string(setting.becomeUser),
            ]
            if variables {
                let entries = host.variables.keys.sorted().map { key in
                    JSONText.string(key) + ": " + host.variables[key]!.value.json(redacted: InventoryValue.isSecret(name: key))
                }
                fields.append("\"vars\": {" + entries.joined(separator: ", ") + "}")
            }
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        return "{\"hosts\": [\n" + lines.joined(separator: ",\n") + "\n]}\n"
    }

    /// A table of the hosts (with a VIA column when some host has jump hosts), each
    /// host's variables below it when asked for, and the count.
    public var table: String {
        var rows = [["NAME", "ADDRESS", "PORT", "USER", "GROUPS"]]
        let showJumps = settings.contains { !$0.proxyJump.isEmpty }
        if showJumps { rows[0].append("VIA") }
        for (host, setting) in zip(hosts, settings) {
            var row = [host.name, setting.address, String(setting.port), setting.user, host.groups.joined(separator: ",")]
            if showJumps { row.append(setting.proxyJump.map(\.description).joined(separator: ",")) }
            rows.append(row)
        }
        var out = ""
        for (index, line) in TextTable.lines(rows).enumerated() {
            out += line + "\n"
            if variables && index > 0 {
                let host = hosts[index - 1]
                for key in host.variables.keys.sorted() {
                    out += "    \(key) = \(host.variables[key]!.value.json(redacted: InventoryValue.isSecret(name: key)))\n"
                }
            }
        }
        return out + "\(hosts.count) host\(hosts.count == 1 ? "" : "s")\n"
    }
}
