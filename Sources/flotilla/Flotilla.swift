import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation
import SSH

@main
struct Flotilla: AsyncParsableCommand {
    static let version = "0.1.0"

    static let exitCodes = """
        Exit codes: 0 every targeted host at the goal; 1 some hosts failed below the \
        threshold; 2 halted by the failure threshold; 3 stopped by the operator or the \
        maintenance window (resumable); 64 usage error; 65 bad input data (inventory, \
        pattern); 69 no host reachable; 70 internal error.
        """

    static let configuration = CommandConfiguration(
        commandName: "flotilla",
        abstract: "Rolling StackStorm upgrades and fleet operations over SSH.",
        discussion: """
        flotilla reads an Ansible inventory, opens one SSH session per host and pushes \
        each host's plan in rolling batches, halting when failures cross a threshold.

        \(exitCodes)
        """,
        version: "flotilla \(version) (libssh2 \(LibSSH2.version))",
        subcommands: [Hosts.self, Ping.self, Exec.self, Facts.self, Plan.self, Upgrade.self, Rollover.self, RunRunbook.self, Resume.self, Runs.self, Show.self, Ctl.self, Report.self]
    )

    /// Parses and runs the command; every error that ends it goes through
    /// ``FlotillaError/exit(for:)``, the one place errors become exit statuses.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: FlotillaError.exit(for: error))
        }
    }
}

extension FlotillaError {
    /// The error to exit with for `error`: argument-parser's own (usage, help, an
    /// explicit `ExitCode`) as they are; flotilla's errors with their status, their
    /// message printed here; anything else is an internal error (70), never 1 (which
    /// means some hosts failed).
    static func exit(for error: any Error) -> any Error {
        if error is ExitCode { return error }
        // As argument-parser shows a usage error: the run's hosts must be selectable again.
        if let error = error as? Targets.MissingHosts { return ValidationError(error.description) }
        if let error = error as? UsageError { return ValidationError(error.message) }
        let mapped: FlotillaError
        if let known = FlotillaError(mapping: error) {
            mapped = known
        } else if Flotilla.exitCode(for: error) != .failure {
            // argument-parser's errors (usage, --help, CleanExit) exit with their own status;
            // it gives every other error 1.
            return error
        } else {
            mapped = FlotillaError(.software, "internal error: \(error)")
        }
        Console.error(mapped.message)
        return ExitCode(mapped.status.rawValue)
    }
}

extension ExitStatus {
    /// Ends the command with this status, unless it is success.
    func end() throws {
        if self != .success { throw ExitCode(rawValue) }
    }
}
