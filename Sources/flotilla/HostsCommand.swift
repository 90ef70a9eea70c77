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
        let selected = try selection.load()
        for (host, setting) in zip(selected.hosts, selected.settings) {
            for problem in setting.problems { Console.warn("host \(host.name): \(problem)") }
        }
        let view = HostsView(hosts: selected.hosts, settings: selected.settings, variables: vars)
        let output = json ? view.json : view.table
        FileHandle.standardOutput.write(Data(output.utf8))
    }
}
