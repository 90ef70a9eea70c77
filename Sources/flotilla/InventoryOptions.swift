import ArgumentParser
import FlotillaCore
import Foundation

/// The host selection every command shares: inventory sources, a limit pattern and the
/// SSH client configuration.
struct InventoryOptions: ParsableArguments {
    @Option(name: [.short, .customLong("inventory")],
            help: ArgumentHelp("Inventory file, directory or comma list (repeatable). Default: $FLOTILLA_INVENTORY, then $ANSIBLE_INVENTORY, then /etc/ansible/hosts.", valueName: "path"),
            completion: .file())
    var inventory: [String] = []

    @Option(name: [.short, .customLong("limit")],
            help: ArgumentHelp("Ansible host pattern selecting hosts: web:&prod, st2-*:!st2-03, ~regex, group[0:2], @file.", valueName: "pattern"),
            completion: .custom(Completions.patterns))
    var limit: String?

    @Option(name: .customLong("ssh-config"),
            help: ArgumentHelp("OpenSSH client config filling what the inventory leaves unset ('none' to read none).", valueName: "path"),
            completion: .file())
    var sshConfig: String = "~/.ssh/config"

    var sources: [String] {
        get throws {
            if !inventory.isEmpty { return inventory }
            guard let sources = Inventory.defaultSources(environment: ProcessInfo.processInfo.environment) else {
                throw ValidationError("no inventory given: pass -i PATH (an Ansible INI or YAML inventory, or a directory)")
            }
            return sources
        }
    }

    /// The selected hosts with their connection settings; warnings go to stderr.
    func load() throws -> HostSelection {
        try HostSelection.load(sources: try sources, limit: limit, sshConfig: sshConfig, localUser: LocalAccount.user,
                               home: LocalAccount.home, warn: Console.warn)
    }
}

/// Shell completion of host and group names for `--limit`, from the inventory the
/// command line names (or $FLOTILLA_INVENTORY / $ANSIBLE_INVENTORY). Quiet on any error:
/// a completion never prints one.
enum Completions {
    @Sendable static func patterns(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        Inventory.completions(commandLine: words, prefix: prefix, environment: ProcessInfo.processInfo.environment)
    }
}
