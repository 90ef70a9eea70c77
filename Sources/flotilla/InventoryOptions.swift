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

    var home: String { Console.home }

    var sources: [String] {
        get throws {
            if !inventory.isEmpty { return inventory }
            let environment = ProcessInfo.processInfo.environment
            for name in ["FLOTILLA_INVENTORY", "ANSIBLE_INVENTORY"] {
                if let value = environment[name], !value.isEmpty { return value.split(separator: ",").map(String.init) }
            }
            if FileManager.default.fileExists(atPath: "/etc/ansible/hosts") { return ["/etc/ansible/hosts"] }
            throw ValidationError("no inventory given: pass -i PATH (an Ansible INI or YAML inventory, or a directory)")
        }
    }

    /// Reads the inventory and the SSH configuration and applies the limit; warnings go
    /// to stderr.
    func load() throws -> (inventory: Inventory, hosts: [Inventory.Host], sshConfig: SSHConfig?) {
        let inventory = try Inventory.load(sources: try sources)
        let selected = try inventory.select(limit)
        let config = try SSHConfig.load(option: sshConfig, home: home)
        for warning in inventory.warnings + (config?.warnings ?? []) { Console.warn(warning.description) }
        return (inventory, selected, config)
    }

    func connectionSettings(for host: Inventory.Host, sshConfig: SSHConfig?) throws -> ConnectionSettings {
        try ConnectionSettings.resolve(host, sshConfig: sshConfig, localUser: Console.localUser, home: home)
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

    /// ``PrivateFiles/writeOwnerOnly(_:to:)``, its failure as an I/O error (70).
    static func writeOwnerOnly(_ text: String, to path: String) throws {
        do { try PrivateFiles.writeOwnerOnly(text, to: path) } catch { throw FlotillaError(.software, error.message) }
    }

    /// ``PrivateFiles/createOwnerOnly(_:)``, its failure as an I/O error (70).
    static func createOwnerOnly(_ path: String) throws -> Int32 {
        do { return try PrivateFiles.createOwnerOnly(path) } catch { throw FlotillaError(.software, error.message) }
    }

    static let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()

    static let localUser: String = {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return ProcessInfo.processInfo.environment["USER"] ?? "root"
    }()

    /// Asks for a secret on the terminal without echoing it.
    static func prompt(_ text: String) throws -> String {
        guard isatty(STDIN_FILENO) != 0, let answer = getpass(text) else {
            throw ValidationError("\(text.trimmingCharacters(in: .whitespaces)) needed but there is no terminal to ask on")
        }
        return String(cString: answer)
    }

    /// Runs a command body, turning bad input into its message and exit status 65.
    static func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as InventoryError {
            self.error(error.description)
            throw ExitCode(65)
        }
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
        if sources.isEmpty {
            let environment = ProcessInfo.processInfo.environment
            sources = (environment["FLOTILLA_INVENTORY"] ?? environment["ANSIBLE_INVENTORY"]).map { $0.split(separator: ",").map(String.init) } ?? []
        }
        guard !sources.isEmpty, let inventory = try? Inventory.load(sources: sources.map { ($0 as NSString).expandingTildeInPath }) else { return [] }
        return inventory.completions(of: prefix)
    }
}
