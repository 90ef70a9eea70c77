import CSQLite

/// An error SQLite returned: its (extended) result code, its message, and the statement
/// that failed when there was one.
///
/// Codes are SQLite's own numbers (`SQLITE_BUSY` is 5, `SQLITE_FULL` 13, extended codes
/// such as `SQLITE_CONSTRAINT_PRIMARYKEY` 1555), kept as they are rather than mapped onto
/// a closed enum, so nothing SQLite reports is lost.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var sql: String?

    public init(code: Int32, message: String, sql: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
    }

    /// The primary result code (`SQLITE_CONSTRAINT` for `SQLITE_CONSTRAINT_PRIMARYKEY`).
    public var primaryCode: Int32 { code & 0xff }

    public var description: String {
        var text = "SQLite error \(code): \(message)"
        if let sql { text += " (in: \(sql))" }
        return text
    }
}

/// A value bound to a statement parameter.
enum SQLiteValue {
    case null
    case integer(Int64)
    case text(String)

    static func int(_ value: Int?) -> SQLiteValue { value.map { .integer(Int64($0)) } ?? .null }
    static func string(_ value: String?) -> SQLiteValue { value.map { .text($0) } ?? .null }
}

/// One connection to an SQLite database file: the only place that calls `sqlite3_*`, one
/// small method per C function used.
///
/// Not thread-safe and not Sendable: the connection is opened in SQLite's multi-thread
/// mode (`SQLITE_OPEN_NOMUTEX`), so it may move between threads but must never be used by
/// two at once. Its owner (``Journal``) is confined the same way.
final class SQLiteDatabase: JournalDatabase {
    private var handle: OpaquePointer?
    let path: String

    enum Mode { case readOnly, readWrite }

    /// Opens an existing database file; never creates one (callers create the file
    /// themselves, with the mode they want) and never follows a symbolic link.
    init(path: String, mode: Mode) throws {
        self.path = path
        var flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW
        flags |= mode == .readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE
        var db: OpaquePointer?
        let result = sqlite3_open_v2(path, &db, flags, nil)
        guard result == SQLITE_OK, let db else {
            // Even a failed open may allocate a handle, which carries the message.
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(result))
            sqlite3_close_v2(db)
            throw SQLiteError(code: result, message: "cannot open \(path): \(message)")
        }
        sqlite3_extended_result_codes(db, 1)
        handle = db
    }

    deinit { close() }

    /// Closes the connection (idempotent). With WAL, closing the last connection to a file
    /// checkpoints and removes the -wal file.
    func close() {
        guard let handle else { return }
        // close_v2: statements still alive (there should be none) become zombies that are
        // freed with their last finalize instead of making the close fail.
        sqlite3_close_v2(handle)
        self.handle = nil
    }

    func open() throws -> OpaquePointer {
        guard let handle else { throw SQLiteError(code: SQLITE_MISUSE, message: "\(path) is closed") }
        return handle
    }

    func error(_ code: Int32, sql: String?) -> SQLiteError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(code))
        return SQLiteError(code: handle.map { sqlite3_extended_errcode($0) } ?? code, message: message, sql: sql)
    }

    /// Runs one or more statements that take no parameters (schema, pragmas, BEGIN/COMMIT).
    func execute(_ sql: String) throws {
        let result = sqlite3_exec(try open(), sql, nil, nil, nil)
        guard result == SQLITE_OK else { throw error(result, sql: sql) }
    }

    func setBusyTimeout(milliseconds: Int32) throws {
        let result = sqlite3_busy_timeout(try open(), milliseconds)
        guard result == SQLITE_OK else { throw error(result, sql: nil) }
    }

    func isUniqueViolation(_ error: Error) -> Bool {
        (error as? SQLiteError)?.primaryCode == SQLITE_CONSTRAINT
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { handle.map { Int(sqlite3_changes($0)) } ?? 0 }

    /// Prepares `sql`, hands the statement to `body` and finalizes it on every path.
    func withStatement<T>(_ sql: String, _ values: [SQLiteValue] = [], _ body: (SQLiteStatement) throws -> T) throws -> T {
        let statement = try SQLiteStatement(database: self, sql: sql)
        defer { statement.finalize() }
        try statement.bind(values)
        return try body(statement)
    }

    /// Runs one statement that returns no rows; returns the number of rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: SQLiteValue...) throws -> Int {
        try withStatement(sql, values) { statement in
            while try statement.step() {}
            return changes
        }
    }

    /// Runs a query and maps each row.
    func query<T>(_ sql: String, _ values: SQLiteValue..., row: (any JournalRow) throws -> T) throws -> [T] {
        try withStatement(sql, values) { statement in
            var rows: [T] = []
            while try statement.step() { rows.append(try row(statement)) }
            return rows
        }
    }

    func inTransaction() throws -> Bool { sqlite3_get_autocommit(try open()) == 0 }

    /// `immediate` takes the write lock at BEGIN, so a writer never fails half-way with
    /// SQLITE_BUSY after reading.
    func begin(immediate: Bool) -> String { immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED" }
}

/// A prepared statement. Finalized by ``SQLiteDatabase/withStatement(_:_:_:)`` when its
/// scope ends (deinit is only a backstop); it keeps its connection alive meanwhile.
final class SQLiteStatement: JournalRow {
    private var handle: OpaquePointer?
    private let database: SQLiteDatabase
    let sql: String

    init(database: SQLiteDatabase, sql: String) throws {
        self.database = database
        self.sql = sql
        var statement: OpaquePointer?
        let result = sqlite3_prepare_v2(try database.open(), sql, -1, &statement, nil)
        guard result == SQLITE_OK, let statement else {
            sqlite3_finalize(statement)
            throw database.error(result == SQLITE_OK ? SQLITE_MISUSE : result, sql: sql)
        }
        handle = statement
    }

    deinit { finalize() }

    func finalize() {
        sqlite3_finalize(handle)
        handle = nil
    }

    func bind(_ values: [SQLiteValue]) throws {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let result: Int32
            switch value {
            case .null:
                result = sqlite3_bind_null(handle, index)
            case .integer(let number):
                result = sqlite3_bind_int64(handle, index, number)
            case .text(let text):
                // An explicit byte length (the buffer minus its terminator): a string with
                // NUL characters is stored whole.
                result = text.utf8CString.withUnsafeBufferPointer {
                    sqlite3_bind_text(handle, index, $0.baseAddress, Int32($0.count - 1), csqlite_transient())
                }
            }
            guard result == SQLITE_OK else { throw database.error(result, sql: sql) }
        }
    }

    /// Advances to the next row: true when there is one, false when the statement is done.
    func step() throws -> Bool {
        let result = sqlite3_step(handle)
        switch result {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw database.error(result, sql: sql)
        }
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64? { isNull(column) ? nil : sqlite3_column_int64(handle, column) }

    func text(_ column: Int32) -> String? {
        guard !isNull(column), let bytes = sqlite3_column_text(handle, column) else { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}
