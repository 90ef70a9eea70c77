import FlotillaCore
import Foundation
import Logging

/// A run driven on SSH, for the executable: a new run's journal created (or a shared run
/// joined), the engine built from the run's stored options, live control served (the
/// state dir's socket, and a shared journal's channel), the run read back at its end.
/// Printing, prompts and signals are the caller's.
public struct RunDriver {
    /// The run's hosts, in the run's order.
    public let targets: Targets
    public let locks: RunLocks
    /// Where the run is journaled (the state dir's SQLite file unless `--journal` names
    /// a shared PostgreSQL database).
    public let location: JournalLocation

    public init(targets: Targets, locks: RunLocks, location: JournalLocation) {
        self.targets = targets
        self.locks = locks
        self.location = location
    }

    /// Creates the journal of the new run `record`, with the hosts it never starts
    /// recorded as such. With `sharedName` (`--run NAME`), the run of that name in the
    /// shared journal is created, or joined when another controller created it; `record`
    /// takes that name as its id.
    /// - Throws: ``UsageError`` for `sharedName` without a shared journal;
    ///   `FlotillaError(.usage)` when the shared run's flags differ; ``RunStartError``.
    public func createJournal(_ record: inout RunRecord, sharedName: String?) throws -> sending Journal {
        if let sharedName {
            guard location.isShared else {
                throw UsageError("--run \(sharedName): a run is shared through a PostgreSQL journal (--journal postgresql://USER@HOST:PORT/DB)")
            }
            record.id = sharedName
        }
        do {
            return try RunBuilder.createJournal(record, locks: locks, at: location, join: sharedName != nil)
        } catch let refusal as JoinRefusal {
            throw FlotillaError(.usage, refusal.message)
        }
    }

    /// The engine of `record` over these targets, its policy and settings from the run's
    /// stored options (`--window` resolved now); in a shared journal, this controller
    /// holds the run's hosts for as long as it lives. Also the run's number in a shared
    /// journal (for ``serveControl(_:record:sharedRun:note:warn:)``).
    /// - Parameters:
    ///   - preset: the hosts the policy starts with as finished; `done`: the steps never
    ///     run again; `reattach`: the detached steps in flight (see ``ResumePlan``).
    /// - Throws: `LockError` (75) when another live controller holds some of the hosts;
    ///   `RolloutFlags.FlagError` when the window cannot be resolved.
    public func engine(record: RunRecord, journal: sending Journal, preset: [Int: RolloutPolicy.HostResult], done: [Int: Set<Int>],
                       reattach: [Int: [Int: DetachedStep.Token]], knownFailures: [RolloutEngine.KnownFailure], handlers: StepHandlers,
                       logger: Logger, progress: @escaping @Sendable (RolloutEngine.Progress) -> Void,
                       confirm: @escaping @Sendable (Int) async -> Bool) throws -> (engine: RolloutEngine, sharedRun: Int?) {
        try journal.holdHosts(record.hosts.map(\.name), stateDir: locks.stateDir)
        let config = try record.options.policyConfig(for: record, now: Date())
        var settings = record.options.engineSettings(runDirectory: locks.stateDir.appendingPathComponent("runs/\(record.id)"),
                                                     knownFailures: knownFailures)
        settings.logger = logger
        let sharedRun = journal.sharedRun
        let engine = RolloutEngine(record: record, journal: journal, policy: RolloutPolicy(config: config, finished: preset),
                                   transport: SSHTransport(targets: targets), settings: settings, done: done, reattach: reattach,
                                   handlers: handlers, progress: progress, confirm: confirm)
        return (engine, sharedRun)
    }

    /// Serves live control of `engine`'s run: the state dir's socket and, for a shared run
    /// (`sharedRun`), its channel in the journal, so `flotilla ctl --journal URL` from any
    /// machine reaches this controller too. Each command is sent to the engine and told to
    /// `note`; a control that cannot start is told to `warn`, and the run goes on without it.
    public func serveControl(_ engine: RolloutEngine, record: RunRecord, sharedRun: Int?, note: @escaping @Sendable (String) -> Void,
                             warn: (String) -> Void) -> RunControl {
        let hosts = record.hosts.map(\.name)
        let server = ControlServer(socket: locks.stateDir.appendingPathComponent("ctl.sock"), runID: record.id, hosts: hosts) { command, event in
            Task { await engine.send(event) }
            note("control: \(command)")
        }
        do {
            try server.start()
        } catch {
            warn("live control is unavailable: \(error)")
        }
        var listener: SharedControlListener?
        if let sharedRun, case .postgres(let url) = location {
            do {
                listener = try SharedControlListener(sharedRun: sharedRun, url: url) { command in
                    // A command for a host of another controller is that controller's.
                    guard let event = ControlServer.event(command, hosts: hosts) else { return }
                    Task { await engine.send(event) }
                    note("control (through the journal): \(command)")
                }
            } catch {
                warn("live control through the journal is unavailable: \(error)")
            }
        }
        return RunControl(server: server, listener: listener)
    }

    /// What the operator must fix when the journal was lost mid-run, before resuming.
    public var journalFix: String { location.isShared ? "bring the database back" : "free the space or fix the state dir" }

    /// The run as its journal holds it at its end; nil when the journal was lost mid-run
    /// (the engine's `journalProblem`): the steps in flight finished on their hosts, no
    /// new host started, and `resume` picks the run up (exit 3).
    /// - Throws: `FlotillaError(.software)` when the journal cannot be read back otherwise.
    public func finalState(of engine: RolloutEngine) async throws -> JournalState? {
        do {
            return try await engine.state()
        } catch {
            if await engine.journalProblem != nil { return nil }
            throw FlotillaError(.software, "cannot read the journal back: \(error)")
        }
    }
}

/// The live control a run serves (``RunDriver/serveControl(_:record:sharedRun:note:warn:)``).
public struct RunControl: Sendable {
    let server: ControlServer
    let listener: SharedControlListener?

    /// Stops listening, on the socket and in the journal.
    public func stop() {
        server.stop()
        listener?.stop()
    }
}
