import CLibPQ
import Foundation

/// An error PostgreSQL (or libpq) returned: its SQLSTATE when the server sent one
/// (`23505` a duplicate key, `08006` a lost connection), its message, and the statement
/// that failed.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public var sqlState: String?
    public var message: String
    public var sql: String?

    /// The state libpq reports for a connection that is gone (its class 08).
    public static let connectionFailure = "08006"

    public var isConnectionLost: Bool { sqlState?.hasPrefix("08") == true }

    public var description: String {
        var text = "PostgreSQL error\(sqlState.map { " \($0)" } ?? ""): \(message)"
        if let sql { text += " (in: \(sql.split(separator: "\n").first.map(String.init) ?? sql))" }
        return text
    }
}

/// A `postgresql://` journal address as given (`--journal` or `$FLOTILLA_JOURNAL`), and
/// the same address with any password replaced by `***`, which is the only form ever
/// printed or stored.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    /// The address as given, for libpq only.
    let raw: String
    /// The address with the password (in the user part or a `password=` parameter) redacted.
    public let redacted: String
    /// Whether the address itself carries a password.
    public let hasPassword: Bool

    /// nil for anything that is not a `postgresql://` or `postgres://` URL.
    public init?(_ text: String) {
        guard text.hasPrefix("postgresql://") || text.hasPrefix("postgres://") else { return nil }
        raw = text
        let scheme = text.range(of: "://")!.upperBound
        var redacted = String(text[..<scheme])
        var rest = Substring(text[scheme...])
        var password = false
        // The user part ends at the last '@' before the path: a password may hold '@'s
        // only percent-encoded, but a careless one is still hidden whole.
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") {
            let user = rest[..<at]
            if let colon = user.firstIndex(of: ":") {
                redacted += user[..<colon] + ":***"
                password = true
            } else {
                redacted += user
            }
            rest = rest[at...]
        }
        // Query parameters: password=... hidden the same way.
        if let question = rest.firstIndex(of: "?") {
            redacted += rest[..<question] + "?"
            let parameters = rest[rest.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map { part in
                guard part.lowercased().hasPrefix("password=") else { return String(part) }
                password = true
                return "password=***"
            }
            redacted += parameters.joined(separator: "&")
        } else {
            redacted += rest
        }
        self.redacted = redacted
        hasPassword = password
    }

    public var description: String { redacted }

    /// The address libpq connects to: the given one, with a connect timeout and keepalives
    /// unless it names its own, so a database that is gone is noticed in seconds, not at
    /// the kernel's TCP timeout.
    var connectionString: String {
        var defaults = ["connect_timeout=10", "keepalives_idle=10", "keepalives_interval=5", "keepalives_count=3",
                        "tcp_user_timeout=30000", "application_name=flotilla"]
        let lower = raw.lowercased()
        defaults.removeAll { lower.contains($0.split(separator: "=")[0] + "=") }
        guard !defaults.isEmpty else { return raw }
        return raw + (raw.contains("?") ? "&" : "?") + defaults.joined(separator: "&")
    }
}

/// One connection to a PostgreSQL server through libpq: the only place that calls `PQ*`,
/// one small method per C function used. Statements run synchronously, as the SQLite
/// journal's do (the engine already commits from one actor, batching many hosts' steps
/// per commit).
///
/// Text is stored with backslashes doubled and NUL characters as `\0`, since a
/// PostgreSQL text value cannot hold NUL and a step's output may (the SQLite journal
/// keeps it); reading reverses it, so both journals give back the same strings.
///
/// Not thread-safe and not Sendable: one connection per ``Journal``, confined the same
/// way.
final class PostgresDatabase: JournalDatabase {
    private var connection: OpaquePointer?
    let url: PostgresURL

    /// Connects; throws with libpq's reason (never the password) when the server cannot
    /// be reached or refuses the login.
    init(url: PostgresURL) throws {
        self.url = url
        try LibPQ.load()
        let connection = PQconnectdb(url.connectionString)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(connection)
            throw PostgresError(sqlState: PostgresError.connectionFailure,
                                message: "cannot connect to \(url.redacted): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        self.connection = connection
        // "already exists, skipping" and the like are not for the operator's terminal.
        try execute("SET client_min_messages = warning")
    }

    deinit { close() }

    func close() {
        guard let connection else { return }
        PQfinish(connection)
        self.connection = nil
    }

    fileprivate func open() throws -> OpaquePointer {
        guard let connection else { throw PostgresError(sqlState: nil, message: "the connection to \(url.redacted) is closed") }
        return connection
    }

    /// The server process of this connection: what its session locks belong to.
    var backendPID: Int32 { connection.map { PQbackendPID($0) } ?? 0 }

    func execute(_ sql: String) throws {
        let result = PQexec(try open(), sql)
        defer { PQclear(result) }
        try check(result, sql: sql)
    }

    @discardableResult
    func run(_ sql: String, _ values: SQLiteValue...) throws -> Int {
        try withResult(sql, values) { result in Int(String(cString: PQcmdTuples(result))) ?? 0 }
    }

    func query<T>(_ sql: String, _ values: SQLiteValue..., row: (any JournalRow) throws -> T) throws -> [T] {
        try withResult(sql, values) { result in
            try (0..<PQntuples(result)).map { try row(PostgresRow(result: result, row: $0)) }
        }
    }

    /// Runs one parameterised statement and hands its result to `body`, cleared on every
    /// path. Integers go as int8 and text as text, so a parameter the statement leaves
    /// unused still has a type.
    private func withResult<T>(_ sql: String, _ values: [SQLiteValue], _ body: (OpaquePointer) throws -> T) throws -> T {
        let connection = try open()
        let translated = Self.numberParameters(sql)
        let texts: [String?] = values.map {
            switch $0 {
            case .null: nil
            case .integer(let number): String(number)
            case .text(let text): Self.encode(text)
            }
        }
        let types: [Oid] = values.map {
            switch $0 {
            case .null: 0
            case .integer: 20
            case .text: 25
            }
        }
        let result = withCStrings(texts) { pointers in
            PQexecParams(connection, translated, Int32(values.count), types, pointers, nil, nil, 0)
        }
        defer { PQclear(result) }
        try check(result, sql: sql)
        return try body(result!)
    }

    private func check(_ result: OpaquePointer?, sql: String) throws {
        guard let result else { throw connectionError(sql: sql) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK: return
        default:
            let state = PQresultErrorField(result, clibpq_diag_sqlstate()).map { String(cString: $0) }
            let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
            if let connection, PQstatus(connection) == CONNECTION_BAD {
                throw PostgresError(sqlState: PostgresError.connectionFailure, message: "lost the connection to \(url.redacted): \(message)", sql: sql)
            }
            throw PostgresError(sqlState: state, message: message, sql: sql)
        }
    }

    fileprivate func connectionError(sql: String) -> PostgresError {
        let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "closed"
        return PostgresError(sqlState: PostgresError.connectionFailure,
                             message: "lost the connection to \(url.redacted): \(message.trimmingCharacters(in: .whitespacesAndNewlines))", sql: sql)
    }

    func inTransaction() throws -> Bool { PQtransactionStatus(try open()) != PQTRANS_IDLE }

    func begin(immediate: Bool) -> String { "BEGIN" }

    func isUniqueViolation(_ error: Error) -> Bool { (error as? PostgresError)?.sqlState == "23505" }

    // MARK: - Text and parameters

    /// `?` becomes `$1`, `$2`, ... in order; `?N` becomes `$N`. Question marks inside
    /// quoted literals are left alone.
    static func numberParameters(_ sql: String) -> String {
        var output = ""
        var next = 1
        var quoted = false
        var characters = sql.makeIterator()
        var pending: Character? = nil
        while let character = pending ?? characters.next() {
            pending = nil
            if character == "'" { quoted.toggle() }
            guard character == "?", !quoted else {
                output.append(character)
                continue
            }
            var digits = ""
            while let digit = characters.next() {
                if digit.isASCII && digit.isNumber {
                    digits.append(digit)
                } else {
                    pending = digit
                    break
                }
            }
            if digits.isEmpty {
                output += "$\(next)"
                next += 1
            } else {
                output += "$" + digits
            }
        }
        return output
    }

    static func encode(_ text: String) -> String {
        guard text.contains(where: { $0 == "\\" || $0 == "\u{0}" }) else { return text }
        var output = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": output += "\\\\"
            case "\u{0}": output += "\\0"
            default: output.unicodeScalars.append(scalar)
            }
        }
        return output
    }

    static func decode(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var output = ""
        var escaped = false
        for scalar in text.unicodeScalars {
            if escaped {
                output.unicodeScalars.append(scalar == "0" ? "\u{0}" : scalar)
                escaped = false
            } else if scalar == "\\" {
                escaped = true
            } else {
                output.unicodeScalars.append(scalar)
            }
        }
        return output
    }
}

@available(*, unavailable, message: "a PostgreSQL connection is confined to one actor or thread")
extension PostgresDatabase: Sendable {}

/// A row of a result, read as text (libpq's text format).
struct PostgresRow: JournalRow {
    let result: OpaquePointer
    let row: Int32

    func isNull(_ column: Int32) -> Bool { PQgetisnull(result, row, column) != 0 }

    func int64(_ column: Int32) -> Int64? {
        guard !isNull(column) else { return nil }
        return Int64(String(cString: PQgetvalue(result, row, column)))
    }

    func text(_ column: Int32) -> String? {
        guard !isNull(column) else { return nil }
        let value = PQgetvalue(result, row, column)
        let count = Int(PQgetlength(result, row, column))
        return PostgresDatabase.decode(value.withMemoryRebound(to: UInt8.self, capacity: count) {
            String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self)
        })
    }

    /// A boolean column (`t` or `f`).
    func bool(_ column: Int32) -> Bool { text(column) == "t" }
}

/// Calls `body` with C strings for `strings` (nil stays NULL), alive for the call.
private func withCStrings<T>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let copies = strings.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    return body(copies.map { $0.map { UnsafePointer($0) } })
}

extension PostgresDatabase {
    /// Waits until a notification arrives on a channel this connection LISTENs to, or
    /// `wake` (a pipe's read end) becomes readable; returns the payloads received (none
    /// when woken).
    /// - Throws: ``PostgresError`` when the connection is lost.
    func notifications(wakingOn wake: Int32) throws -> [String] {
        let connection = try open()
        var fds = [pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        while poll(&fds, 2, -1) < 0 && errno == EINTR {}
        if fds[1].revents != 0 { return [] }
        guard PQconsumeInput(connection) == 1 else { throw connectionError(sql: "LISTEN") }
        var payloads: [String] = []
        while let notification = PQnotifies(connection) {
            payloads.append(String(cString: notification.pointee.extra))
            PQfreemem(notification)
        }
        return payloads
    }
}
