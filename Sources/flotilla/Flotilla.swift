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
        subcommands: [Hosts.self, Ping.self, Exec.self, Facts.self, Plan.self, Upgrade.self, RunRunbook.self, Resume.self, Runs.self, Show.self, Ctl.self, Report.self]
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

/// An error a command ends with: what to print (without the `flotilla: error: ` prefix)
/// and the exit status.
struct FlotillaError: Error, CustomStringConvertible {
    var status: ExitStatus
    var message: String
    var description: String { message }

    init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    /// The error to exit with for `error`: argument-parser's own (usage, help, an
    /// explicit `ExitCode`) as they are; flotilla's errors with their status, their
    /// message printed here; anything else is an internal error (70), never 1 (which
    /// means some hosts failed).
    static func exit(for error: any Error) -> any Error {
        if error is ExitCode { return error }
        // As argument-parser shows a usage error: the run's hosts must be selectable again.
        if let error = error as? Targets.MissingHosts { return ValidationError(error.description) }
        let mapped: FlotillaError
        switch error {
        case let error as FlotillaError: mapped = error
        case let error as InventoryError: mapped = FlotillaError(.dataError, error.description)
        case let error as LockError: mapped = FlotillaError(.locked, error.message)
        case let error as JournalError: mapped = journal(error)
        case let error as RolloutFlags.FlagError: mapped = FlotillaError(.usage, error.message)
        case let error as ResumePlan.Refusal: mapped = FlotillaError(.usage, error.message)
        case let error as RunStartError: mapped = FlotillaError(.software, error.message)
        case let error as MigrationCatalog.LoadError: mapped = FlotillaError(.dataError, "bad migration catalog: \(error)")
        default:
            // argument-parser's errors (usage, --help, CleanExit) exit with their own status;
            // it gives every other error 1.
            if Flotilla.exitCode(for: error) != .failure { return error }
            mapped = FlotillaError(.software, "internal error: \(error)")
        }
        Console.error(mapped.message)
        return ExitCode(mapped.status.rawValue)
    }

    /// A journal error: naming a run that is not there is a usage error; a journal or
    /// state dir that cannot be read or written is flotilla's failure (70), but an unsafe
    /// state dir is refused as a usage error, as always.
    static func journal(_ error: JournalError) -> FlotillaError {
        switch error.code {
        case .noRuns, .unknownRun, .unsafePath, .unsupportedSchema: FlotillaError(.usage, error.message)
        case .invalidTransition where error.path == nil: FlotillaError(.usage, error.message) // a malformed run id
        default: FlotillaError(.software, error.message)
        }
    }
}
