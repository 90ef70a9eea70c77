/// One row of a query's result, whichever database it came from.
protocol JournalRow {
    func isNull(_ column: Int32) -> Bool
    func int64(_ column: Int32) -> Int64?
    func text(_ column: Int32) -> String?
}

extension JournalRow {
    func int(_ column: Int32) -> Int? { int64(column).map { Int($0) } }
}

/// The connection a ``Journal`` writes through: SQLite (``SQLiteDatabase``, a file of the
/// state dir) or PostgreSQL (``PostgresDatabase``, shared by several controllers).
///
/// The journal's statements are written once, in the SQL both understand: `?` or `?N`
/// parameters (PostgreSQL's connection renumbers them `$N`), single-row UPDATEs, upserts
/// with `ON CONFLICT`. Not Sendable, like the journal that owns it.
protocol JournalDatabase: AnyObject {
    /// Runs one or more statements that take no parameters.
    func execute(_ sql: String) throws
    /// Runs one statement that returns no rows; returns the number of rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: SQLiteValue...) throws -> Int
    /// Runs a query and maps each row.
    func query<T>(_ sql: String, _ values: SQLiteValue..., row: (any JournalRow) throws -> T) throws -> [T]
    /// Runs `body` in one transaction (a savepoint when one is open already): committed if
    /// it returns, rolled back if it throws. `immediate` asks for the write lock at once
    /// where the database has one (SQLite).
    @discardableResult
    func transaction<T>(immediate: Bool, _ body: () throws -> T) throws -> T
    /// Closes the connection (idempotent).
    func close()
    /// Whether `error` is this database refusing a duplicate key.
    func isUniqueViolation(_ error: Error) -> Bool
}

extension JournalDatabase {
    @discardableResult
    func transaction<T>(_ body: () throws -> T) throws -> T { try transaction(immediate: true, body) }
}
