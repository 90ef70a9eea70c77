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
        let judged = StepJudge.judge(step, outcome)
        if judged.status != .succeeded, step.kind == .confirmStopped, context.settings.forceStop,
           let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) {
            return await forceStop(components.compactMap(\.pid), step, on: connection, log: context.log)
        }
        return judged
    }

    /// The known failure of this step's kind whose text the output holds, if any.
    static func knownFailure(_ step: RunStep, _ outcome: StepOutcome, among known: [RolloutEngine.KnownFailure]) -> RolloutEngine.KnownFailure? {
        let text = outcome.stdoutTail + outcome.stderrTail
        // Quotes vary between versions of the message (`relation "x" already exists`).
        func bare(_ text: String) -> String { text.filter { $0 != "\"" && $0 != "'" } }
        return known.first { $0.stepKind == step.kind && bare(text).contains(bare($0.match)) }
    }

    /// `--force-stop`: kills the st2 processes `st2ctl status` still lists, then checks again.
    static func forceStop(_ pids: [Int], _ step: RunStep, on connection: any HostConnection, log: HostLog) async -> StepResult {
        let kill = "kill -9 \(pids.map(String.init).joined(separator: " "))"
        log.note("--force-stop: \(kill)")
        do {
            _ = try await connection.run(kill, become: step.become, timeout: .seconds(30)) { _, bytes in log.write(bytes) }
            let again = try await connection.run(step.command, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
            return StepJudge.judge(step, again)
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
