import ArgumentParser
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
}
