import Foundation
import Synchronization

/// One attempt of a detached step as the engine runs it (SPEC §8.1): its token (recorded in
/// the journal before the command starts), the host's session, which it replaces when the
/// session breaks, and how to reconnect. ``CommandStep/execute(_:on:context:stdout:)``
/// runs a step of a kind that ``StepKind/runsDetached`` through it.
public final class DetachedRun: Sendable {
    public let token: DetachedStep.Token
    /// Whether the attempt was started before (a resume of a step in flight): the host is
    /// asked about it first, and it is started only if the host never saw it.
    public let attachFirst: Bool
    let reconnect: @Sendable () async -> Result<any HostConnection, TransportError>
    let reattached: @Sendable () async -> Void
    let reconnectAttempts: Int
    /// For the host's last detached step: its first start removes the run's records on
    /// the host when the engine answers (``RecordsRemoval/answer(_:)``).
    let removal: RecordsRemoval?
    private let current: Mutex<(any HostConnection)?>

    init(token: DetachedStep.Token, attachFirst: Bool, connection: any HostConnection, reconnectAttempts: Int, removal: RecordsRemoval? = nil,
         reconnect: @escaping @Sendable () async -> Result<any HostConnection, TransportError>,
         reattached: @escaping @Sendable () async -> Void) {
        self.token = token
        self.attachFirst = attachFirst
        self.removal = removal
        current = Mutex(connection)
        self.reconnectAttempts = reconnectAttempts
        self.reconnect = reconnect
        self.reattached = reattached
    }

    /// The host's session now: the one given, or the one that replaced it; nil when it
    /// broke and none could be opened.
    public var connection: (any HostConnection)? { current.withLock { $0 } }

    private func replace(with connection: (any HostConnection)?) { current.withLock { $0 = connection } }

    private enum Mode { case start, attach, kill }

    /// Starts (or re-attaches to) the step and follows it to its end: a lost session is
    /// reopened and the step re-attached, never run again; a step past its timeout is
    /// killed on the host. A result of status `running` means the step may still run on
    /// the host and the controller lost it (a session that could not be reopened, or the
    /// task cancelled by a second SIGINT): it stays in flight in the journal.
    func execute(_ step: RunStep, timeout: Duration?, context: StepContext,
                 output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> CommandStep.Execution {
        let clock = context.clock, log = context.log
        let tails = DetachedShell.Passed(output)
        let received = tails.take
        let deadline = timeout.map { clock.now.addingTimeInterval(Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18) }
        let limit = "timed out after \(timeout.map { "\($0.components.seconds)" } ?? "?") s"
        var mode: Mode = attachFirst ? .attach : .start
        // Whether the step is being followed again, rather than from its start.
        var following = attachFirst
        var losses = 0, starts = 0
        var turns = 0
        while true {
            turns += 1
            guard turns <= 20 else { return .ended(StepResult(.failed, nil, "the host's answers about the step did not settle")) }
            guard let connection else { return .ended(StepResult(.running, nil, "no session")) }
            let remaining = deadline.map { $0.timeIntervalSince(clock.now) }
            if let remaining, remaining <= 0 {
                // Past the limit: a step that may run is killed; one the host never saw is not started.
                if mode == .start {
                    return .ended(StepResult(.failed, nil, starts > 0 ? lostEachTime(starts) : "\(limit) before it started"))
                }
                mode = .kill
            }
            let wait = remaining.map { Duration.milliseconds(max(1, Int($0 * 1000))) }
            let outcome: DetachedOutcome
            switch mode {
            case .start:
                // A start the connection keeps cutting (the host never saw it each time) is given up.
                guard starts <= max(1, reconnectAttempts) else {
                    return .ended(StepResult(.failed, nil, lostEachTime(starts)))
                }
                starts += 1
                outcome = await connection.startDetached(token, command: step.command, become: step.become, timeout: wait,
                                                         removal: starts == 1 ? removal : nil, output: received)
            case .attach:
                let offsets = tails.counts
                outcome = await connection.attach(token, stdoutOffset: offsets.stdout, stderrOffset: offsets.stderr, become: step.become,
                                                  timeout: wait, output: received)
            case .kill:
                outcome = await connection.killDetached(token, become: step.become)
            }
            if Task.isCancelled {
                return .ended(StepResult(.running, nil, "stopped at once; the step goes on on the host"))
            }
            switch outcome {
            case .ended(var ended):
                if following {
                    await reattached()
                    log.note("re-attached to '\(step.name)' (\(token.path)): it ran once, not again")
                }
                if mode == .attach || mode == .kill { (ended.stdoutTail, ended.stderrTail) = tails.tails }
                if mode == .kill && ended.timedOut {
                    return .ended(StepResult(.failed, ended, "\(limit) (killed on the host)"))
                }
                if let signal = ended.exitSignal { return .ended(StepResult(.failed, ended, "killed by signal \(signal)")) }
                return .exited(ended)
            case .timedOut:
                log.note("'\(step.name)' ran past its timeout; killing it on the host")
                mode = .kill
            case .exists:
                mode = .attach
                following = true
            case .never:
                guard mode == .attach else { return .ended(StepResult(.failed, nil, "\(limit); the host never saw the step")) }
                log.note("the host never saw '\(step.name)' (\(token.path)); starting it")
                mode = .start
                following = false
            case .lost:
                return .ended(StepResult(.unknown, nil, "the host cannot account for the step (its record is gone: a reboot mid-step?); it may or may not have run"))
            case .failed(let why):
                return .ended(StepResult(.failed, nil, why))
            case .notStarted(let why):
                log.note("the session was lost before '\(step.name)' started (\(why)); reconnecting")
                await connection.close()
                replace(with: nil)
                if mode == .start { starts -= 1 }
                switch await reconnect() {
                case .success(let opened):
                    replace(with: opened)
                case .failure(let failure) where mode == .start:
                    // Nothing ran: the host never saw the start.
                    return .ended(StepResult(.failed, nil, "lost the connection before '\(step.name)' and could not reconnect: \(failure.message)"))
                case .failure(let failure):
                    return .ended(StepResult(.running, nil, "the connection was lost during the step and could not be re-established: \(failure.message)"))
                }
            case .connectionLost(let why):
                losses += 1
                log.note("the connection was lost during '\(step.name)' (\(why)); reconnecting to re-attach")
                await connection.close()
                replace(with: nil)
                guard losses <= 10 else {
                    return .ended(StepResult(.running, nil, "the connection was lost \(losses) times during the step"))
                }
                switch await reconnect() {
                case .success(let opened):
                    replace(with: opened)
                    if mode == .start { mode = .attach }
                    following = true
                case .failure(let failure):
                    return .ended(StepResult(.running, nil, "the connection was lost during the step and could not be re-established: \(failure.message)"))
                }
            }
        }
    }
}

private func lostEachTime(_ starts: Int) -> String {
    "the connection was lost during the step each time it started (\(starts) time\(starts == 1 ? "" : "s")); the host never ran it"
}
