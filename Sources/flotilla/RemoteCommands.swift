import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation
import SSH

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
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        let logs = URL(fileURLWithPath: logDir ?? ".flotilla/exec/\(stamp)")
        try await RemoteRun(selection: selection, connection: connection, forks: forks, json: json)
            .execute(command: words.joined(separator: " "), timeout: timeout.map { .milliseconds(Int($0 * 1000)) },
                     logs: logs, grouped: true)
    }
}

/// What ping and exec share: resolve the hosts, connect in parallel, report.
struct RemoteRun {
    var selection: InventoryOptions
    var connection: ConnectionOptions
    var forks: Int
    var json: Bool

    func execute(command: String, timeout: Duration?, logs: URL?, grouped: Bool) async throws {
        let targets = try Targets(selection, connection)
        if let logs { try Self.makePrivateDirectory(logs) }
        let clock = ContinuousClock()
        let start = clock.now
        let outcomes = await targets.run(command, forks: forks, timeout: timeout) { name in
            logs?.appendingPathComponent(FileName.host(name) + ".log")
        }
        let elapsed = clock.now - start
        let output = json ? Self.json(outcomes, elapsed: elapsed, hostKeyCheck: connection.hostKeyCheck)
            : (grouped ? Self.grouped(outcomes) : Self.pingTable(outcomes)) + Self.summary(outcomes, elapsed: elapsed, hostKeyCheck: connection.hostKeyCheck)
        FileHandle.standardOutput.write(Data(output.utf8))
        if outcomes.allSatisfy(\.unreachable) { throw ExitCode(69) }
        if !outcomes.allSatisfy(\.succeeded) { throw ExitCode(1) }
    }

    /// Creates `url` and its missing parents 0700 from the first instant, whatever the
    /// umask (an existing directory is kept as it is).
    static func makePrivateDirectory(_ url: URL) throws {
        do { try PrivateFiles.createMissingDirectories(url) } catch { throw ValidationError("\(error)") }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func pingTable(_ outcomes: [HostOutcome]) -> String {
        let width = outcomes.map(\.name.count).max() ?? 0
        let ordered = outcomes.filter(\.succeeded) + outcomes.filter { !$0.succeeded }
        return ordered.map { outcome in
            let name = outcome.name.padding(toLength: width, withPad: " ", startingAt: 0)
            if outcome.succeeded, let t = outcome.timings {
                let phases = String(format: "tcp %.1f, handshake %.1f, auth %.1f ms", milliseconds(t.tcp), milliseconds(t.handshake), milliseconds(t.authentication))
                return String(format: "%@  ok      %7.1f ms  (%@)", name, milliseconds(outcome.duration), phases)
                    + (outcome.hostKeyWarning.map { "  WARNING: \($0)" } ?? "") + "\n"
            }
            return "\(name)  FAILED  \(outcome.error ?? "exit status \(outcome.exitStatus.map(String.init) ?? "?")")\n"
        }.joined()
    }

    struct Shown: Hashable {
        var stdout: String
        var stderr: String
        var status: String
        var failed: Bool
    }

    static func grouped(_ outcomes: [HostOutcome]) -> String {
        let pairs = outcomes.map { outcome -> (host: String, outcome: Shown) in
            let status = outcome.error.map { "error: \($0)" } ?? "exit \(outcome.exitStatus.map(String.init) ?? "?")"
            return (outcome.name, Shown(stdout: outcome.stdout, stderr: outcome.stderr, status: status, failed: !outcome.succeeded))
        }
        var text = ""
        for group in OutputGroup.group(pairs, isFailure: \.failed) {
            let count = group.hosts.count
            text += "==== \(HostNameSet.fold(group.hosts)) (\(count) host\(count == 1 ? "" : "s")) \(group.outcome.status) ====\n"
            if !group.outcome.stdout.isEmpty { text += group.outcome.stdout + (group.outcome.stdout.hasSuffix("\n") ? "" : "\n") }
            if !group.outcome.stderr.isEmpty {
                text += group.outcome.stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast(group.outcome.stderr.hasSuffix("\n") ? 1 : 0)
                    .map { "stderr: \($0)\n" }.joined()
            }
        }
        let truncated = outcomes.filter(\.truncated)
        if !truncated.isEmpty, let log = truncated.first?.log {
            text += "(output of \(HostNameSet.fold(truncated.map(\.name))) shortened to its last 64 KiB per stream; full output in \((log as NSString).deletingLastPathComponent))\n"
        }
        return text
    }

    static func summary(_ outcomes: [HostOutcome], elapsed: Duration, hostKeyCheck: SSHSession.HostKeyCheck) -> String {
        let ok = outcomes.filter(\.succeeded).count
        let unreachable = outcomes.filter(\.unreachable).count
        let failed = outcomes.count - ok - unreachable
        var line = "\(outcomes.count) host\(outcomes.count == 1 ? "" : "s"): \(ok) ok, \(failed) failed, \(unreachable) unreachable"
        line += String(format: " in %.2f s", milliseconds(elapsed) / 1000)
        if hostKeyCheck == .off { line += " — host keys NOT verified (--host-key-check off)" }
        return line + "\n"
    }

    static func json(_ outcomes: [HostOutcome], elapsed: Duration, hostKeyCheck: SSHSession.HostKeyCheck) -> String {
        func string(_ text: String?) -> String { text.map(JSONText.string) ?? "null" }
        let hosts = outcomes.map { o in
            var fields = [
                "\"name\": \(string(o.name))", "\"address\": \(string(o.address))",
                "\"exit_status\": \(o.exitStatus.map(String.init) ?? "null")",
                "\"stdout\": \(string(o.stdout))", "\"stderr\": \(string(o.stderr))",
                "\"error\": \(string(o.error))", "\"error_kind\": \(string(o.errorKind))",
                "\"duration_ms\": \(String(format: "%.1f", milliseconds(o.duration)))",
            ]
            if let t = o.timings {
                fields.append(String(format: "\"timings_ms\": {\"tcp\": %.2f, \"handshake\": %.2f, \"auth\": %.2f}",
                                     milliseconds(t.tcp), milliseconds(t.handshake), milliseconds(t.authentication)))
            }
            fields.append("\"output_truncated\": \(o.truncated)")
            fields.append("\"log\": \(string(o.log))")
            if let warning = o.hostKeyWarning { fields.append("\"host_key_warning\": \(string(warning))") }
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        let ok = outcomes.filter(\.succeeded).count
        let unreachable = outcomes.filter(\.unreachable).count
        let summary = "{\"hosts\": \(outcomes.count), \"ok\": \(ok), \"failed\": \(outcomes.count - ok - unreachable), "
            + "\"unreachable\": \(unreachable), \"elapsed_ms\": \(String(format: "%.1f", milliseconds(elapsed))), "
            + "\"host_key_check\": \(string(hostKeyCheck.rawValue))}"
        return "{\"hosts\": [\n" + hosts.joined(separator: ",\n") + "\n], \"summary\": \(summary)}\n"
    }
}
