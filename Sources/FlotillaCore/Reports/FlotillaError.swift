/// An error a command ends with: what to print (without the `flotilla: error: ` prefix)
/// and the exit status of SPEC §1.
public struct FlotillaError: Error, Sendable, CustomStringConvertible {
    public var status: ExitStatus
    public var message: String
    public var description: String { message }

    public init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    /// flotilla's own errors with their status: bad input data 65, a held lock 75, a bad
    /// flag or an unknown run 64, a file or journal flotilla cannot read or write 70. Nil
    /// for any other error (argument parsing, or one flotilla did not expect), which the
    /// executable maps itself.
    public init?(mapping error: any Error) {
        switch error {
        case let error as FlotillaError: self = error
        case let error as InventoryError: self.init(.dataError, error.description)
        case let error as LockError: self.init(.locked, error.message)
        case let error as JournalError: self = Self.journal(error)
        case let error as RolloutFlags.FlagError: self.init(.usage, error.message)
        case let error as ResumePlan.Refusal: self.init(.usage, error.message)
        case let error as RunStartError: self.init(.software, error.message)
        case let error as MigrationCatalog.LoadError: self.init(.dataError, "bad migration catalog: \(error)")
        case let error as PrivateFiles.WriteError: self.init(.software, error.message)
        default: return nil
        }
    }

    /// A journal error: naming a run that is not there is a usage error; a journal or
    /// state dir that cannot be read or written is flotilla's failure (70), but an unsafe
    /// state dir is refused as a usage error, as always.
    static func journal(_ error: JournalError) -> FlotillaError {
        switch error.code {
        case .noRuns, .unknownRun, .unsafePath, .unsupportedSchema: FlotillaError(.usage, error.message)
        case .invalidTransition where error.path == nil: FlotillaError(.usage, error.message) // a malformed run id
        default: FlotillaError(.software, error.message)
        }
    }
}

/// A usage error found after parsing (a flag that does not go with the journal given, a
/// log folder that cannot be made): the executable shows it as argument-parser shows
/// its own, with the usage line, and exits 64.
public struct UsageError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }

    public init(_ message: String) { self.message = message }
}
