import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to every selected host, verify its host key, log in and run `true`.",
        discussion: """
        Reports each host's latency (with the time of each phase: TCP, SSH handshake, \
        authentication) or why it failed: refused, timeout, host key unknown or changed, \
        key file, passphrase, authentication denied.

        Examples:
          flotilla ping -i lab/inventory.ini
          flotilla ping -i prod/ --limit dc1 --forks 100 --json
          flotilla ping -i new-hosts.ini --host-key-check accept-new

        Exit codes: 0 every host answered; 1 some did not; 69 none did; 64 usage error; \
        65 bad inventory or pattern.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions

    @Option(help: ArgumentHelp("Hosts contacted at once.", valueName: "n"))
    var forks = 32

    @Flag(help: "Print JSON on stdout.")
    var json = false

    func validate() throws {
        guard forks > 0 else { throw ValidationError("--forks must be at least 1") }
    }

    func run() async throws {
        try await RemoteRun(selection: selection, connection: connection, forks: forks, json: json)
            .execute(command: "true", timeout: nil, logs: nil, grouped: false)
    }
}

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command on every selected host in parallel and show the output grouped.",
        discussion: """
        Hosts with identical output and exit status are shown once, with a compact host \
        list (st2-[01-04,07]); failures come last. Each host's full output is written to \
        its log file as it arrives (under --log-dir); memory keeps only the last 64 KiB \
        per stream, whatever the command prints. With ansible_become, the command runs \
        through sudo (the become password, if any, goes to sudo on stdin, never in argv).

        Examples:
          flotilla exec -i lab/inventory.ini -- st2 --version
          flotilla exec -i prod/ --limit 'st2:&dc2' --forks 50 -- 'df -h /opt | tail -1'
          flotilla exec -i prod/ --timeout 30 --json -- st2ctl status

        Exit codes: 0 the command succeeded everywhere; 1 it failed or could not run on \
        some hosts; 69 no host could be reached; 64 usage error; 65 bad inventory or pattern.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions

    @Option(help: ArgumentHelp("Hosts run at once.", valueName: "n"))
    var forks = 32

    @Option(help: ArgumentHelp("Seconds a command may run before its channel is closed (default: no limit).", valueName: "seconds"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Folder for the per-host output logs (default: .flotilla/exec/<time>).", valueName: "path"))
    var logDir: String?

    @Flag(help: "Print JSON on stdout.")
    var json = false

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The command, after --.", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        guard forks > 0 else { throw ValidationError("--forks must be at least 1") }
        if let timeout, !(timeout > 0 && timeout <= 1e9) { throw ValidationError("--timeout must be more than 0 seconds (and at most 1e9)") }
        guard !command.filter({ $0 != "--" }).isEmpty else { throw ValidationError("no command given: flotilla exec [options] -- COMMAND") }
    }

    func run() async throws {
        let words = command.first == "--" ? Array(command.dropFirst()) : command
        try await RemoteRun(selection: selection, connection: connection, forks: forks, json: json)
            .execute(command: words.joined(separator: " "), timeout: timeout.map { .milliseconds(Int($0 * 1000)) },
                     logs: FanOut.logDirectory(option: logDir, now: Date()), grouped: true)
    }
}

/// What ping and exec share: resolve the hosts, connect in parallel, report.
struct RemoteRun {
    var selection: InventoryOptions
    var connection: ConnectionOptions
    var forks: Int
    var json: Bool

    func execute(command: String, timeout: Duration?, logs: URL?, grouped: Bool) async throws {
        let fanOut = try await Targets(selection, connection).fanOut(command, forks: forks, timeout: timeout, makingLogs: logs)
        FileHandle.standardOutput.write(Data(fanOut.output(json: json, grouped: grouped, hostKeyCheck: connection.hostKeyCheck).utf8))
        try fanOut.exitStatus.end()
    }
}
