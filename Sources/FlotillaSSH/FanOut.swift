import FlotillaCore
import Foundation
import SSH

/// What an ad-hoc fan-out (`flotilla ping`, `flotilla exec`) ends with: every host's
/// outcome, in host order, and the time the whole took.
public struct FanOut: Sendable {
    public var outcomes: [HostOutcome]
    public var elapsed: Duration

    public init(outcomes: [HostOutcome], elapsed: Duration) {
        self.outcomes = outcomes
        self.elapsed = elapsed
    }

    /// What goes to stdout: the JSON of SPEC §1, else the hosts (`exec`'s grouped output,
    /// or `ping`'s table when not `grouped`) and the summary line.
    public func output(json: Bool, grouped: Bool, hostKeyCheck: SSHSession.HostKeyCheck) -> String {
        if json { return OutcomeView.json(outcomes, elapsed: elapsed, hostKeyCheck: hostKeyCheck) }
        return (grouped ? OutcomeView.grouped(outcomes) : OutcomeView.pingTable(outcomes))
            + OutcomeView.summary(outcomes, elapsed: elapsed, hostKeyCheck: hostKeyCheck)
    }

    /// Where `exec` writes each host's full output: `option` (`--log-dir`), else
    /// `.flotilla/exec/TIME` (`now` in ISO 8601, without colons).
    public static func logDirectory(option: String?, now: Date) -> URL {
        let stamp = ISO8601DateFormatter().string(from: now).replacingOccurrences(of: ":", with: "")
        return URL(fileURLWithPath: option ?? ".flotilla/exec/\(stamp)")
    }

    /// SPEC §1: no host reached (or none selected) 69; some host failed 1; else 0.
    public var exitStatus: ExitStatus {
        if outcomes.allSatisfy(\.unreachable) { return .unavailable }
        return outcomes.allSatisfy(\.succeeded) ? .success : .someHostsFailed
    }
}

extension Targets {
    /// Runs `command` on every host, `forks` at once, and times the whole.
    /// - Parameter logs: a folder (it must exist) for each host's full output,
    ///   `HOST.log`; nil for none.
    /// Makes the log folder `logs` (owner-only) when given, then fans out
    /// (``fanOut(_:forks:timeout:logs:)``).
    /// - Throws: ``UsageError`` when the folder cannot be made.
    public func fanOut(_ command: String, forks: Int, timeout: Duration?, makingLogs logs: URL?) async throws -> FanOut {
        if let logs {
            do { try PrivateFiles.createMissingDirectories(logs) } catch { throw UsageError("\(error)") }
        }
        return await fanOut(command, forks: forks, timeout: timeout, logs: logs)
    }

    public func fanOut(_ command: String, forks: Int, timeout: Duration?, logs: URL?) async -> FanOut {
        let clock = ContinuousClock()
        let start = clock.now
        let outcomes = await run(command, forks: forks, timeout: timeout) { name in
            logs?.appendingPathComponent(FileName.host(name) + ".log")
        }
        return FanOut(outcomes: outcomes, elapsed: clock.now - start)
    }
}
