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
    /// Whether a transaction is open on the connection.
    func inTransaction() throws -> Bool
    /// The statement that opens a transaction; `immediate` asks for the write lock at
    /// once where the database has one (SQLite).
    func begin(immediate: Bool) -> String
    /// Closes the connection (idempotent).
    func close()
    /// Whether `error` is this database refusing a duplicate key.
    func isUniqueViolation(_ error: Error) -> Bool
}

extension JournalDatabase {
    @discardableResult
    func transaction<T>(_ body: () throws -> T) throws -> T { try transaction(immediate: true, body) }

    /// Runs `body` in one transaction: committed if it returns, rolled back if it throws.
    /// Inside a transaction already (a batch of transitions): a savepoint, so a failed
    /// part is undone alone and the batch commits once.
    @discardableResult
    func transaction<T>(immediate: Bool, _ body: () throws -> T) throws -> T {
        if try inTransaction() {
            try execute("SAVEPOINT part")
            do {
                let value = try body()
                try execute("RELEASE part")
                return value
            } catch {
                // The body's error is the one to report; a savepoint that cannot be rolled
                // back leaves the outer transaction to fail and roll back.
                try? execute("ROLLBACK TO part")
                try? execute("RELEASE part")
                throw error
            }
        }
        try execute(begin(immediate: immediate))
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            // The body's error is the one to report; a transaction whose ROLLBACK failed is
            // rolled back when its connection closes.
            try? execute("ROLLBACK")
            throw error
        }
    }
}
