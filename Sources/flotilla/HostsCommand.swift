import ArgumentParser
import FlotillaCore
import Foundation

struct Hosts: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resolve the inventory and list the selected hosts with their connection settings.",
        discussion: """
        Reads Ansible INI and YAML inventories unchanged (groups, children, group_vars/, \
        host_vars/, ranges), applies the --limit pattern as Ansible does, and prints the \
        hosts in inventory order. Secret variables (passwords, tokens) are shown as \
        <redacted>. Nothing connects to any host.

        JSON (--json): {"hosts": [{"name", "address", "port", "user", "groups", \
        "proxy_jump", "identity_files", "become", "become_user", "vars"}]}; "groups" holds \
        every group of the host except "all", sorted; "vars" (only with --vars) the \
        merged variables, keys sorted.

        Examples:
          flotilla hosts -i inventories/multi-dc.ini
          flotilla hosts -i prod/ --limit 'st2:&dc1:!st2-dc1-03' --vars
          flotilla hosts -i lab/inventory.ini --limit '~st2-0[1-4]' --json

        \(Flotilla.exitCodes)
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions

    @Flag(help: "Print JSON on stdout (stable format, see above).")
    var json = false

    @Flag(help: "Include every host's merged variables (secrets redacted).")
    var vars = false

    func run() throws {
        try Console.run {
            let (_, hosts, sshConfig) = try selection.load()
            let settings = try hosts.map { try selection.connectionSettings(for: $0, sshConfig: sshConfig) }
            for (host, setting) in zip(hosts, settings) {
                for problem in setting.problems { Console.warn("host \(host.name): \(problem)") }
            }
            let output = json ? jsonText(hosts, settings) : table(hosts, settings)
            FileHandle.standardOutput.write(Data(output.utf8))
        }
    }

    private func jsonText(_ hosts: [Inventory.Host], _ settings: [ConnectionSettings]) -> String {
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
            if vars {
                let entries = host.variables.keys.sorted().map { key in
                    JSONText.string(key) + ": " + host.variables[key]!.value.json(redacted: InventoryValue.isSecret(name: key))
                }
                fields.append("\"vars\": {" + entries.joined(separator: ", ") + "}")
            }
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        return "{\"hosts\": [\n" + lines.joined(separator: ",\n") + "\n]}\n"
    }

    private func table(_ hosts: [Inventory.Host], _ settings: [ConnectionSettings]) -> String {
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
            if vars && index > 0 {
                let host = hosts[index - 1]
                for key in host.variables.keys.sorted() {
                    out += "    \(key) = \(host.variables[key]!.value.json(redacted: InventoryValue.isSecret(name: key)))\n"
                }
            }
        }
        return out + "\(hosts.count) host\(hosts.count == 1 ? "" : "s")\n"
    }
}
