import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation
import SSH

/// SSH connection flags shared by every command that connects (SPEC §3). It only
/// parses: FlotillaSSH turns them into session options.
struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("strict (default): refuse unknown and changed host keys; accept-new: record unknown keys, refuse changed ones; off: accept any key (reported in every summary).", valueName: "mode"))
    var hostKeyCheck: SSHSession.HostKeyCheck = .strict

    @Option(help: ArgumentHelp("known_hosts file (default: the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts).", valueName: "path"))
    var knownHosts: String?

    @Option(help: ArgumentHelp("File holding the passphrase of encrypted private keys (else you are asked when a key needs one).", valueName: "path"))
    var keyPassphraseFile: String?

    @Flag(help: "Ask once for the SSH password (used where the inventory sets none).")
    var askPass = false

    @Option(help: ArgumentHelp("Seconds allowed for TCP, banner, key exchange and authentication.", valueName: "seconds"))
    var connectTimeout: Double = 10

    func validate() throws {
        guard connectTimeout > 0, connectTimeout <= 1e9 else { throw ValidationError("--connect-timeout must be more than 0 seconds (and at most 1e9)") }
    }

    var policy: ConnectionPolicy {
        ConnectionPolicy(hostKeyCheck: hostKeyCheck, knownHosts: knownHosts, connectTimeout: .milliseconds(Int(connectTimeout * 1000)),
                         localUser: LocalAccount.user, home: LocalAccount.home)
    }

    /// Secrets gathered once, before any connection, asked for on the terminal.
    func secrets(for settings: [ConnectionSettings]) throws -> Secrets {
        do {
            return try Secrets.gather(for: settings, passphraseFile: keyPassphraseFile, askPassword: askPass, prompt: Console.prompt)
        } catch let error as Secrets.Unreadable {
            throw ValidationError(error.description)
        }
    }
}

extension SSHSession.HostKeyCheck: ExpressibleByArgument {}

extension Targets {
    /// Reads the inventory (bad input: exit 65), gathers the secrets once, and prepares
    /// each host's session options.
    init(_ selection: InventoryOptions, _ connection: ConnectionOptions) throws {
        let selected = try selection.load()
        self.init(selected, policy: connection.policy, secrets: try connection.secrets(for: selected.settings))
        // A tunnel or a host may close its end while we write: an error, not a signal.
        signal(SIGPIPE, SIG_IGN)
        if connection.hostKeyCheck == .off { Console.warn("--host-key-check off: host keys are NOT verified") }
        if let warning = Self.raiseOpenFileLimit(for: sessionDescriptors) { Console.warn(warning) }
    }

    /// The hosts of `record`, in its order, selected and reached with its stored arguments
    /// (`resume`, `runs --prune`).
    init(reselecting record: RunRecord) throws {
        // The record names its hosts; --limit is not needed to find them, and a shared run's
        // record holds the first controller's, whose --limit left the others' hosts out.
        var selection = try InventoryOptions.parse(record.options.selection)
        selection.limit = nil
        self = try Targets(selection, try ConnectionOptions.parse(record.options.connection)).ordered(record.hosts.map(\.name))
    }
}
