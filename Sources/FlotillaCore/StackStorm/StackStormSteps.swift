import Foundation

// How the steps of a StackStorm upgrade plan run and are judged: what the generic engine
// leaves to handlers (see `StepHandler`).

extension StepHandlers {
    /// Every kind flotilla runs: plain commands, `--health`, and the StackStorm plan steps.
    public static var standard: StepHandlers {
        generic
            .setting(StackStormCommand(), for: [.stop, .confirmStopped, .upgradePackages, .mistralDB, .migration, .reload, .start,
                                                .verifyVersion, .verifyServices])
            .setting(BackupStep(), for: [.backupKeyValue, .backupFiles, .fetchAuditLogs])
            .setting(PreflightCheck(), for: [.preflight])
    }
}

extension MigrationCatalog {
    /// The catalog's recognised failures, explained with their recovery when a step of
    /// their kind fails with their message (the Mistral migration's known failure).
    public var knownFailures: [RolloutEngine.KnownFailure] {
        guard let known = mistral.knownFailure else { return [] }
        let recovery = known.recovery.enumerated().map { "\($0 + 1). \($1)" }.joined(separator: " ")
        return [RolloutEngine.KnownFailure(stepKind: .mistralDB, match: known.match,
                                           explanation: "\(known.match): \(known.cause). Recovery: \(recovery)")]
    }
}

/// A plan step run as a command, then judged by what it printed where the exit status is
/// not the whole story (``StepJudge``); a recognised failure (``RolloutEngine/KnownFailure``)
/// is explained; `--force-stop` kills what `st2ctl stop` left running.
struct StackStormCommand: StepHandler {
    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        await StackStormSteps.judge(step, CommandStep.execute(step, on: connection, context: context), on: connection, context: context)
    }
}

/// A pre-flight check (SPEC §8.3): run as a plain command, failed with the reason its
/// output gives (``Preflight/reason(_:_:)``), which the report shows.
struct PreflightCheck: StepHandler {
    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        switch await CommandStep.execute(step, on: connection, context: context) {
        case .ended(let result): return result
        case .exited(let outcome):
            let planned = PlanStep(name: step.name, command: step.command, kind: step.kind)
            return Preflight.reason(planned, outcome).map { StepResult(.failed, outcome, $0) } ?? StepResult(.succeeded, outcome)
        }
    }
}

enum StackStormSteps {
    /// Judges a plan step's command: a non-zero exit fails (explained when it is a known
    /// failure), exit 0 is then judged on its output; `--force-stop` gets a second chance
    /// at `confirm-stopped`.
    static func judge(_ step: RunStep, _ execution: CommandStep.Execution, on connection: any HostConnection,
                      context: StepContext) async -> StepResult {
        let outcome: StepOutcome
        switch execution {
        case .ended(let result): return result
        case .exited(let exited): outcome = exited
        }
        guard outcome.exitStatus == 0 else {
            let known = knownFailure(step, outcome, among: context.settings.knownFailures)
            return StepResult(.failed, outcome, CommandStep.exitMessage(outcome, explanation: known?.explanation))
        }
        guard step.kind == .confirmStopped else { return StepJudge.judge(step, outcome) }
        return await confirmStopped(step, outcome, on: connection, context: context)
    }

    /// `confirm-stopped`: neither `st2ctl status` nor `ps` may show an st2 process (the
    /// status misses a sensor container or action runner wrappers left behind). With
    /// `--force-stop`, every pid either shows is killed, and both are asked again.
    static func confirmStopped(_ step: RunStep, _ status: StepOutcome, on connection: any HostConnection,
                               context: StepContext) async -> StepResult {
        let log = context.log
        var judged = StepJudge.judge(step, status)
        guard let components = ComponentState.parse(st2ctlStatus: status.stdoutTail) else { return judged }
        let processes: [St2Process]
        do {
            processes = try await leftovers(step, on: connection, log: log)
        } catch {
            return StepResult(.failed, status, "listing processes (\(St2Process.psCommand)): \(error)")
        }
        let listed = components.filter(\.running)
        if judged.status == .succeeded, !processes.isEmpty {
            judged = StepResult(.failed, status, "st2 processes left after st2ctl stop that st2ctl status does not list: "
                                + describe(processes) + " (stop them, or rerun with --force-stop)")
        } else if judged.status != .succeeded, !processes.isEmpty, let message = judged.message {
            judged.message = message + "; ps also shows " + describe(processes)
        }
        guard judged.status != .succeeded, context.settings.forceStop else { return judged }
        let pids = Set(listed.compactMap(\.pid) + processes.map(\.pid)).sorted()
        return await forceStop(pids, step, on: connection, log: log)
    }

    /// The st2 processes `ps` shows on the host.
    static func leftovers(_ step: RunStep, on connection: any HostConnection, log: HostLog) async throws -> [St2Process] {
        let listing = try await connection.run(St2Process.psCommand, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
        return St2Process.parse(ps: listing.stdoutTail)
    }

    /// `ps`'s processes as the report names them: `st2sensorcontainer (pid 4242)`.
    static func describe(_ processes: [St2Process]) -> String {
        processes.map { "\($0.name) (pid \($0.pid))" }.joined(separator: ", ")
    }

    /// The known failure of this step's kind whose text the output holds, if any.
    static func knownFailure(_ step: RunStep, _ outcome: StepOutcome, among known: [RolloutEngine.KnownFailure]) -> RolloutEngine.KnownFailure? {
        let text = outcome.stdoutTail + outcome.stderrTail
        // Quotes vary between versions of the message (`relation "x" already exists`).
        func bare(_ text: String) -> String { text.filter { $0 != "\"" && $0 != "'" } }
        return known.first { $0.stepKind == step.kind && bare(text).contains(bare($0.match)) }
    }

    /// `--force-stop`: kills the st2 processes `st2ctl status` still lists and those `ps`
    /// shows, then checks both again; what survives fails the step.
    static func forceStop(_ pids: [Int], _ step: RunStep, on connection: any HostConnection, log: HostLog) async -> StepResult {
        // A pid gone meanwhile makes kill exit 1; what counts is the check after it.
        let kill = "kill -9 \(pids.map(String.init).joined(separator: " ")) 2>/dev/null; true"
        log.note("--force-stop: \(kill)")
        do {
            if !pids.isEmpty {
                _ = try await connection.run(kill, become: step.become, timeout: .seconds(30)) { _, bytes in log.write(bytes) }
            }
            let again = try await connection.run(step.command, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
            let judged = StepJudge.judge(step, again)
            let survivors = try await leftovers(step, on: connection, log: log)
            if judged.status == .succeeded, !survivors.isEmpty {
                return StepResult(.failed, again, "--force-stop: still running after kill -9: \(describe(survivors))")
            }
            guard judged.status == .succeeded else {
                return StepResult(.failed, again, "--force-stop: " + (judged.message ?? "st2 still running after kill -9"))
            }
            return judged
        } catch {
            return StepResult(.failed, nil, "--force-stop: \(error)")
        }
    }
}

/// Judges steps whose exit status is not the whole story.
enum StepJudge {
    static func judge(_ step: RunStep, _ outcome: StepOutcome) -> StepResult {
        switch step.kind {
        case .confirmStopped:
            guard let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) else {
                return StepResult(.failed, outcome, "st2ctl status did not list the components")
            }
            let running = components.filter(\.running).map(\.name)
            return running.isEmpty ? StepResult(.succeeded, outcome)
                : StepResult(.failed, outcome, "still running after st2ctl stop: \(running.joined(separator: ", ")) (stop them, or rerun with --force-stop)")
        case .verifyServices:
            guard let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) else {
                return StepResult(.failed, outcome, "st2ctl status did not list the components")
            }
            let installed = Dictionary(uniqueKeysWithValues: (step.expect ?? "").split(separator: " ").map { (String($0), "") })
            let stopped = ComponentState.expected(components, installed: installed).filter { !$0.running }.map(\.name)
            return stopped.isEmpty ? StepResult(.succeeded, outcome)
                : StepResult(.failed, outcome, "not running after st2ctl start: \(stopped.joined(separator: ", "))")
        case .verifyVersion:
            let found = outcome.stdoutTail.trimmingCharacters(in: .whitespacesAndNewlines)
            return found == step.expect ? StepResult(.succeeded, outcome)
                : StepResult(.failed, outcome, "installed st2 is '\(found)', expected \(step.expect ?? "?")")
        default:
            return StepResult(.succeeded, outcome)
        }
    }
}
