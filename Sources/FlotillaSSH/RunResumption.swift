import FlotillaCore
import Foundation

/// `flotilla resume` up to the engine: how the run goes on (``ResumePlan``), the resume
/// recorded in its journal, what the operator is told, the failures its steps are judged
/// against. The locks stay the caller's (a `Journal` and the locks are never passed
/// together, so the journal can go on to the engine alone).
public struct RunResumption: Sendable {
    public private(set) var plan: ResumePlan
    let rerunUnknown: Bool
    /// A shared run's hosts that live controllers hold, left to them.
    public private(set) var heldElsewhere: [String] = []

    /// Plans how the run of `journal` goes on (`maxFail` is the `--max-fail` text).
    /// - Throws: journal errors; ``ResumePlan/Refusal`` for a finished run;
    ///   `RolloutFlags.FlagError` for a bad `maxFail`.
    public init(_ journal: Journal, retryFailed: Bool, maxFail: String?, rerunUnknown: Bool) throws {
        plan = try ResumePlan(try journal.load(), retryFailed: retryFailed,
                              maxFail: try maxFail.map { try RolloutFlags.threshold($0, flag: "--max-fail") }, rerunUnknown: rerunUnknown)
        self.rerunUnknown = rerunUnknown
    }

    /// A shared run (SPEC §8.6): holds the hosts no live controller holds (a dead
    /// controller's, and those no one works any more) and goes on with those alone; the
    /// live controllers go on with theirs. Nothing to do for a state dir journal.
    /// - Throws: ``PostgresError`` when the database cannot be reached; `LockError`
    ///   naming the live controllers when they hold every host left to run.
    public mutating func takeOver(in journal: Journal, stateDir: URL) throws {
        let (held, elsewhere) = try journal.holdFreeHosts(plan.record.hosts.map(\.name), stateDir: stateDir)
        guard !elsewhere.isEmpty else { return }
        let mine = plan.restricted(to: Set(held))
        guard mine.record.hosts.indices.contains(where: { mine.preset[$0] == nil }) else {
            // Nothing here to run: the run is in live hands. Refused, naming who holds it.
            try journal.holdHosts(elsewhere, stateDir: stateDir)
            return
        }
        heldElsewhere = elsewhere
        plan = mine
    }

    /// Records the resume (this process, the hosts retried) in `journal`.
    /// - Throws: `FlotillaError(.software)` when the journal cannot record it.
    public func record(in journal: Journal) throws {
        let message = "resumed by pid \(getpid())" + (plan.retried.isEmpty ? "" : "; retrying \(plan.retried.joined(separator: ", "))")
        do {
            try journal.event(kind: "resume", message: message, at: Date())
        } catch {
            throw FlotillaError(.software, "cannot record the resume in the journal: \(error)")
        }
    }

    /// What the operator is told: the run and its state, the steps in flight re-attached
    /// to, and the unknown steps run again or left failed.
    public var note: String {
        "resuming run \(plan.record.id) (\(plan.state.rawValue)); "
            + (heldElsewhere.isEmpty ? "" : "taking over \(plan.record.hosts.count) hosts, leaving \(heldElsewhere.count) to the live controllers that hold them; ")
            + (plan.inFlight.isEmpty ? "no step was in flight" : "re-attaching to the steps in flight: \(plan.inFlight.joined(separator: "; "))")
            + (plan.unknown.isEmpty ? "" : (rerunUnknown ? "; running again the unknown steps: " : "; unknown, left failed (--rerun-unknown runs them): ")
               + plan.unknown.joined(separator: "; "))
    }

    /// The failures the run's steps are judged against: an upgrade's, from the bundled
    /// catalog; none for other runs.
    /// - Throws: `MigrationCatalog.LoadError` when the bundled catalog cannot be read.
    public func knownFailures() throws -> [RolloutEngine.KnownFailure] {
        plan.record.kind == .stackstormUpgrade ? try MigrationCatalog.bundled().knownFailures : []
    }
}
