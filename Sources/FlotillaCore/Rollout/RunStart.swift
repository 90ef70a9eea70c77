import Foundation

/// A new run's journal could not be set up.
public struct RunStartError: Error, CustomStringConvertible {
    /// What failed, with the journal's error.
    public var message: String
    public var description: String { message }
}

extension RunBuilder {
    /// Creates the journal of a new run, records in the state dir lock that this
    /// controller runs it, and records the hosts the run never starts (skipped, refused,
    /// unreachable) with their status, so the journal holds every host from the start.
    /// - Throws: ``RunStartError`` saying which of these failed.
    /// With `join`, a shared run of that id is joined when it exists (``JoinRefusal`` when
    /// its flags differ).
    public static func createJournal(_ record: RunRecord, locks: RunLocks, at location: JournalLocation? = nil,
                                     join: Bool = false) throws -> sending Journal {
        let journal: Journal
        do {
            let location = location ?? .stateDir(locks.stateDir)
            journal = join ? try Journal.createOrJoin(at: location, run: record).journal : try Journal.create(at: location, run: record)
            try locks.stateLock.record(runID: record.id)
        } catch let refusal as JoinRefusal {
            throw refusal
        } catch {
            throw RunStartError(message: "cannot create the run's journal: \(error)")
        }
        do {
            _ = try journal.batch(notStarted(record).map { host in
                { try journal.hostStatus(host: record.hosts[host.index].name, status: host.status, error: host.error, at: record.createdAt) }
            }).compactMap { $0 }.first.map { throw $0 }
        } catch {
            throw RunStartError(message: "cannot record the hosts not started in the journal \(journal.location): \(error)")
        }
        return journal
    }
}
