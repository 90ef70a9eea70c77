import ArgumentParser
import SSH

@main
struct Flotilla: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "flotilla",
        abstract: "Rolling StackStorm upgrades and fleet operations over SSH.",
        discussion: """
        flotilla reads an Ansible inventory, opens one SSH session per host and pushes \
        each host's plan in rolling batches, halting when failures cross a threshold.

        Exit codes: 0 every targeted host at the goal; 1 some hosts failed below the \
        threshold; 2 halted by the failure threshold; 3 stopped by the operator or the \
        maintenance window (resumable); 64 usage error; 65 bad input data; 69 no host \
        reachable; 70 internal error.
        """,
        version: "flotilla \(version) (libssh2 \(LibSSH2.version))"
    )
}
