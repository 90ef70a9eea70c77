import Foundation

/// Runs and judges the steps of some kinds. The engine picks one per ``StepKind`` (see
/// ``StepHandlers``) and knows nothing of what a kind means beyond that.
public protocol StepHandler: Sendable {
    /// Runs `step` over `connection` and says how it went. A command that fails is a
    /// result, not an error; so is a session that broke (`failed`, no outcome) or was gone
    /// before the command started (``StepResult/notStarted(_:)``).
    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult
}

/// What a handler works with besides the step and the session.
public struct StepContext: Sendable {
    /// The host the step runs on.
    public var host: RunHost
    /// The host's log: handlers write the output and notes there.
    public var log: HostLog
    public var settings: RolloutEngine.Settings
    public var clock: any RolloutClock
    /// The attempt of a step that runs detached (``StepKind/runsDetached``); nil for a
    /// read-only step, which runs as a plain command.
    public var detached: DetachedRun?

    /// The step's limit: its own, else the run's `--step-timeout`; nil: none.
    public func timeout(of step: RunStep) -> Duration? {
        (step.timeout ?? settings.stepTimeout).map { Duration.milliseconds(Int($0 * 1000)) }
    }

    /// `artifacts/HOST/` of the run's folder, where files kept for the host go.
    public var artifactDirectory: URL {
        settings.runDirectory.appendingPathComponent("artifacts/\(FileName.host(host.name))")
    }

    /// `backups/HOST/` of the run's folder, where the host's backup goes (SPEC §8.4).
    public var backupDirectory: URL {
        settings.runDirectory.appendingPathComponent("backups/\(FileName.host(host.name))")
    }
}

/// How a step went: its status, what the command did (nil when it did not run to an
/// end), and why it failed.
public struct StepResult: Sendable {
    /// `succeeded` or `failed`; `pending` when nothing ran (``notStarted(_:)``); for a
    /// detached step also `unknown` (the host cannot account for it) and `running` (it
    /// may still run on the host, which the controller lost).
    public var status: StepRunStatus
    public var outcome: StepOutcome?
    public var message: String?
    /// Files the step kept on the controller (a backup), recorded in the journal with the step.
    public var artifacts: [BackupArtifact] = []

    public init(_ status: StepRunStatus, _ outcome: StepOutcome?, _ message: String? = nil) {
        self.status = status
        self.outcome = outcome
        self.message = message
    }

    /// The session was gone before the command started: nothing ran, so the engine may run
    /// the step over a new session.
    public static func notStarted(_ message: String) -> StepResult { StepResult(.pending, nil, message) }

    /// Whether nothing ran (see ``notStarted(_:)``).
    public var didNotStart: Bool { status == .pending }
}

/// The handler of each step kind; kinds without one run as plain commands.
public struct StepHandlers: Sendable {
    private var byKind: [StepKind: any StepHandler]
    private let fallback: any StepHandler

    /// Plain commands and `--health` only; add others with ``setting(_:for:)``.
    public static var generic: StepHandlers {
        StepHandlers(byKind: [.health: HealthCheck()], fallback: CommandStep())
    }

    /// The handler for `kind`.
    public subscript(kind: StepKind) -> any StepHandler { byKind[kind] ?? fallback }

    /// These handlers with `handler` for each of `kinds`.
    public func setting(_ handler: any StepHandler, for kinds: [StepKind]) -> StepHandlers {
        var copy = self
        for kind in kinds { copy.byKind[kind] = handler }
        return copy
    }
}

/// A plain command step: it succeeds when the command exits 0.
public struct CommandStep: StepHandler {
    public init() {}

    public func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        switch await Self.execute(step, on: connection, context: context) {
        case .exited(let outcome): return Self.judgeExit(outcome)
        case .ended(let result): return result
        }
    }

    /// What became of a command.
    public enum Execution: Sendable {
        /// It ran to an exit status, zero or not.
        case exited(StepOutcome)
        /// It did not: the session was gone or broke, it timed out, or a signal killed it.
        case ended(StepResult)
    }

    /// Runs the step's command under its timeout, its output to the host log (and stdout
    /// to `stdout` too, when given). For handlers that judge an exit status their own way.
    public static func execute(_ step: RunStep, on connection: any HostConnection, context: StepContext,
                               stdout: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil) async -> Execution {
        let timeout = context.timeout(of: step)
        let log = context.log
        if let detached = context.detached {
            return await detached.execute(step, timeout: timeout, context: context) { kind, bytes in
                log.write(bytes)
                if kind == .stdout { stdout?(bytes) }
            }
        }
        let outcome: StepOutcome
        do {
            outcome = try await connection.run(step.command, become: step.become, timeout: timeout) { kind, bytes in
                log.write(bytes)
                if kind == .stdout { stdout?(bytes) }
            }
        } catch let error as TransportError where error.kind == .notStarted {
            return .ended(.notStarted(error.message))
        } catch let error as TransportError {
            return .ended(StepResult(.failed, nil, "the connection was lost during the step: \(error.message)"))
        } catch {
            return .ended(StepResult(.failed, nil, "\(error)"))
        }
        if outcome.timedOut {
            return .ended(StepResult(.failed, outcome, "timed out after \(timeout.map { "\($0.components.seconds)" } ?? "?") s (channel closed)"))
        }
        if let signal = outcome.exitSignal { return .ended(StepResult(.failed, outcome, "killed by signal \(signal)")) }
        return .exited(outcome)
    }

    /// Exit 0 succeeds; anything else fails, saying the status and the last line of
    /// stderr (else of stdout).
    public static func judgeExit(_ outcome: StepOutcome) -> StepResult {
        guard outcome.exitStatus == 0 else { return StepResult(.failed, outcome, exitMessage(outcome)) }
        return StepResult(.succeeded, outcome)
    }

    /// `exit N: LAST LINE`, the last line of stderr (else of stdout) when there is one.
    public static func exitMessage(_ outcome: StepOutcome, explanation: String? = nil) -> String {
        let status = "exit \(outcome.exitStatus.map(String.init) ?? "?")"
        if let explanation { return "\(status): \(explanation)" }
        let last = outcome.stderrTail.split(separator: "\n").last.map(String.init) ?? outcome.stdoutTail.split(separator: "\n").last.map(String.init)
        return status + (last.map { ": \($0)" } ?? "")
    }
}

/// `--health CMD`: must exit 0, and with `--healthy-for` keep passing that long (re-run
/// every `healthInterval` seconds), within `--health-deadline`.
public struct HealthCheck: StepHandler {
    public init() {}

    public func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        let settings = context.settings, clock = context.clock, log = context.log
        let start = clock.now
        var passingSince: Date?
        var last: StepOutcome?
        while true {
            do {
                let outcome = try await connection.run(step.command, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
                last = outcome
                if outcome.exitStatus == 0 {
                    let since = passingSince ?? clock.now
                    passingSince = since
                    if clock.now.timeIntervalSince(since) >= settings.healthyFor { return StepResult(.succeeded, outcome) }
                } else {
                    passingSince = nil
                }
            } catch {
                return StepResult(.failed, nil, "the connection was lost during the health check: \(error)")
            }
            if clock.now.timeIntervalSince(start) >= settings.healthDeadline {
                let what = settings.healthyFor > 0 ? "did not pass for \(Int(settings.healthyFor)) s in a row" : "did not pass"
                return StepResult(.failed, last, "health check \(what) within \(Int(settings.healthDeadline)) s (last exit \(last?.exitStatus.map(String.init) ?? "?"))")
            }
            do {
                try await clock.sleep(for: settings.healthInterval)
            } catch {
                return StepResult(.failed, last, "health check cancelled")
            }
        }
    }
}
