import ArgumentParser
import FlotillaCore
import Foundation
import Logging

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

enum Console {
    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: warning: \(message)\n".utf8))
    }

    static func error(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: error: \(message)\n".utf8))
    }

    /// A logger writing to stderr: debug and up with `--verbose`, else warnings and up.
    /// The logging system is set up once, on first use.
    static func logger(label: String, verbose: Bool) -> Logger {
        _ = bootstrapLogging
        var logger = Logger(label: label)
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }

    private static let bootstrapLogging: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }

    /// Progress and notes for the operator, on stderr.
    static func note(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: \(message)\n".utf8))
    }

    /// Asks for a secret on the terminal without echoing it.
    static func prompt(_ text: String) throws -> String {
        guard isatty(STDIN_FILENO) != 0, let answer = getpass(text) else {
            throw ValidationError("\(text.trimmingCharacters(in: .whitespaces)) needed but there is no terminal to ask on")
        }
        return String(cString: answer)
    }
}

/// Shell completion of host and group names for `--limit`, from the inventory the
/// command line names (or $FLOTILLA_INVENTORY / $ANSIBLE_INVENTORY). Quiet on any error:
/// a completion never prints one.
enum Completions {
    @Sendable static func patterns(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
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
        if sources.isEmpty { sources = Inventory.sources(environment: ProcessInfo.processInfo.environment) ?? [] }
        guard !sources.isEmpty, let inventory = try? Inventory.load(sources: sources.map { ($0 as NSString).expandingTildeInPath }) else { return [] }
        return inventory.completions(of: prefix)
    }
}
