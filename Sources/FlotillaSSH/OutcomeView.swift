import FlotillaCore
import Foundation
import SSH

/// What `flotilla ping` and `flotilla exec` print for their hosts' outcomes: the ping
/// table, the grouped output, the summary line and the JSON of SPEC §1.
public enum OutcomeView {
    /// `duration` in milliseconds, fractions kept.
    public static func ms(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// `ping`'s lines: each host's latency and phases, or why it failed; failures last.
    public static func pingTable(_ outcomes: [HostOutcome]) -> String {
        let width = outcomes.map(\.name.count).max() ?? 0
        let ordered = outcomes.filter(\.succeeded) + outcomes.filter { !$0.succeeded }
        return ordered.map { outcome in
            let name = outcome.name.padding(toLength: width, withPad: " ", startingAt: 0)
            if outcome.succeeded, let t = outcome.timings {
                let phases = String(format: "tcp %.1f, handshake %.1f, auth %.1f ms", ms(t.tcp), ms(t.handshake), ms(t.authentication))
                return String(format: "%@  ok      %7.1f ms  (%@)", name, ms(outcome.duration), phases)
                    + (outcome.hostKeyWarning.map { "  WARNING: \($0)" } ?? "") + "\n"
            }
            return "\(name)  FAILED  \(outcome.error ?? "exit status \(outcome.exitStatus.map(String.init) ?? "?")")\n"
        }.joined()
    }

    /// What `exec` groups hosts by.
    struct Shown: Hashable {
        var stdout: String
        var stderr: String
        var status: String
        var failed: Bool
    }

    /// `exec`'s output: hosts with the same output and status once, failures last.
    public static func grouped(_ outcomes: [HostOutcome]) -> String {
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

    /// The closing line: hosts ok, failed and unreachable, the time taken.
    public static func summary(_ outcomes: [HostOutcome], elapsed: Duration, hostKeyCheck: SSHSession.HostKeyCheck) -> String {
        let ok = outcomes.filter(\.succeeded).count
        let unreachable = outcomes.filter(\.unreachable).count
        let failed = outcomes.count - ok - unreachable
        var line = "\(outcomes.count) host\(outcomes.count == 1 ? "" : "s"): \(ok) ok, \(failed) failed, \(unreachable) unreachable"
        line += String(format: " in %.2f s", ms(elapsed) / 1000)
        if hostKeyCheck == .off { line += " — host keys NOT verified (--host-key-check off)" }
        return line + "\n"
    }

    /// The JSON of SPEC §1 for `ping --json` and `exec --json`.
    public static func json(_ outcomes: [HostOutcome], elapsed: Duration, hostKeyCheck: SSHSession.HostKeyCheck) -> String {
        func string(_ text: String?) -> String { text.map(JSONText.string) ?? "null" }
        let hosts = outcomes.map { o in
            var fields = [
                "\"name\": \(string(o.name))", "\"address\": \(string(o.address))",
                "\"exit_status\": \(o.exitStatus.map(String.init) ?? "null")",
                "\"stdout\": \(string(o.stdout))", "\"stderr\": \(string(o.stderr))",
                "\"error\": \(string(o.error))", "\"error_kind\": \(string(o.errorKind))",
                "\"duration_ms\": \(String(format: "%.1f", ms(o.duration)))",
            ]
            if let t = o.timings {
                fields.append(String(format: "\"timings_ms\": {\"tcp\": %.2f, \"handshake\": %.2f, \"auth\": %.2f}",
                                     ms(t.tcp), ms(t.handshake), ms(t.authentication)))
            }
            fields.append("\"output_truncated\": \(o.truncated)")
            fields.append("\"log\": \(string(o.log))")
            if let warning = o.hostKeyWarning { fields.append("\"host_key_warning\": \(string(warning))") }
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        let ok = outcomes.filter(\.succeeded).count
        let unreachable = outcomes.filter(\.unreachable).count
        let summary = "{\"hosts\": \(outcomes.count), \"ok\": \(ok), \"failed\": \(outcomes.count - ok - unreachable), "
            + "\"unreachable\": \(unreachable), \"elapsed_ms\": \(String(format: "%.1f", ms(elapsed))), "
            + "\"host_key_check\": \(string(hostKeyCheck.rawValue))}"
        return "{\"hosts\": [\n" + hosts.joined(separator: ",\n") + "\n], \"summary\": \(summary)}\n"
    }
}
