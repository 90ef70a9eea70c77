import Foundation

extension JournalLocation {
    /// Where runs are journaled (``resolve(option:environment:stateDir:)``). A PostgreSQL
    /// journal is reached here, before anything else happens, so one that cannot be
    /// reached stops the command at once.
    /// - Throws: ``UsageError`` for an address flotilla does not take; `FlotillaError`
    ///   (69, the address shown without its password) for a database it cannot reach.
    public static func reach(option: String?, stateDir: URL) throws -> JournalLocation {
        let location: JournalLocation
        do {
            location = try resolve(option: option, stateDir: stateDir)
        } catch {
            throw UsageError(error.message)
        }
        do {
            try Journal.check(location)
        } catch let error as PostgresError where error.isConnectionLost {
            throw FlotillaError(.unavailable, "cannot reach the journal: \(error.message)")
        }
        return location
    }
}
