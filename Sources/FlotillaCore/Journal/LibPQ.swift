import CLibPQ
import Foundation

// libpq is loaded when the first PostgreSQL journal connects, not when the program starts:
// a flotilla that journals in SQLite, and every lab host's session wrapper (flotilla-lab
// shares this module), then never loads libpq and the twenty-odd libraries it needs, which
// cost each start about 3.6 ms of CPU. The functions below shadow libpq's own in this
// module (``PostgresDatabase`` calls them by their C names); `CLibPQ` gives only the types.

enum LibPQ {
    /// The library's handle, or why it cannot be loaded (set once; dlopen's handles may be
    /// used from any thread).
    nonisolated(unsafe) static let handle: Result<UnsafeMutableRawPointer, PostgresError> = {
        if let handle = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL) { return .success(handle) }
        let reason = dlerror().map { String(cString: $0) } ?? "not found"
        // As a server that cannot be reached: the journal is unavailable (exit 69).
        return .failure(PostgresError(sqlState: PostgresError.connectionFailure,
                                      message: "a PostgreSQL journal needs libpq (Debian: apt-get install libpq5): \(reason)"))
    }()

    /// Throws when libpq cannot be loaded; call before any other function here.
    static func load() throws { _ = try handle.get() }

    fileprivate static func function<T>(_ name: String, _ type: T.Type) -> T {
        guard case .success(let handle) = handle, let address = dlsym(handle, name) else {
            fatalError("libpq has no \(name)") // load() was not called, or a libpq older than 9.x
        }
        return unsafeBitCast(address, to: type)
    }
}

private typealias Conn = OpaquePointer
private typealias PGres = OpaquePointer

private let connectdb = LibPQ.function("PQconnectdb", (@convention(c) (UnsafePointer<CChar>?) -> Conn?).self)
private let status = LibPQ.function("PQstatus", (@convention(c) (Conn?) -> ConnStatusType).self)
private let errorMessage = LibPQ.function("PQerrorMessage", (@convention(c) (Conn?) -> UnsafeMutablePointer<CChar>?).self)
private let finish = LibPQ.function("PQfinish", (@convention(c) (Conn?) -> Void).self)
private let backendPID = LibPQ.function("PQbackendPID", (@convention(c) (Conn?) -> Int32).self)
private let transactionStatus = LibPQ.function("PQtransactionStatus", (@convention(c) (Conn?) -> PGTransactionStatusType).self)
private let socket = LibPQ.function("PQsocket", (@convention(c) (Conn?) -> Int32).self)
private let consumeInput = LibPQ.function("PQconsumeInput", (@convention(c) (Conn?) -> Int32).self)
private let notifies = LibPQ.function("PQnotifies", (@convention(c) (Conn?) -> UnsafeMutablePointer<PGnotify>?).self)
private let freemem = LibPQ.function("PQfreemem", (@convention(c) (UnsafeMutableRawPointer?) -> Void).self)
private let exec = LibPQ.function("PQexec", (@convention(c) (Conn?, UnsafePointer<CChar>?) -> PGres?).self)
private let execParams = LibPQ.function("PQexecParams", (@convention(c) (
    Conn?, UnsafePointer<CChar>?, Int32, UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?,
    UnsafePointer<Int32>?, UnsafePointer<Int32>?, Int32) -> PGres?).self)
private let clear = LibPQ.function("PQclear", (@convention(c) (PGres?) -> Void).self)
private let resultStatus = LibPQ.function("PQresultStatus", (@convention(c) (PGres?) -> ExecStatusType).self)
private let resultErrorField = LibPQ.function("PQresultErrorField", (@convention(c) (PGres?, Int32) -> UnsafeMutablePointer<CChar>?).self)
private let resultErrorMessage = LibPQ.function("PQresultErrorMessage", (@convention(c) (PGres?) -> UnsafeMutablePointer<CChar>?).self)
private let cmdTuples = LibPQ.function("PQcmdTuples", (@convention(c) (PGres?) -> UnsafeMutablePointer<CChar>?).self)
private let ntuples = LibPQ.function("PQntuples", (@convention(c) (PGres?) -> Int32).self)
private let getisnull = LibPQ.function("PQgetisnull", (@convention(c) (PGres?, Int32, Int32) -> Int32).self)
private let getvalue = LibPQ.function("PQgetvalue", (@convention(c) (PGres?, Int32, Int32) -> UnsafeMutablePointer<CChar>?).self)
private let getlength = LibPQ.function("PQgetlength", (@convention(c) (PGres?, Int32, Int32) -> Int32).self)

func PQconnectdb(_ conninfo: UnsafePointer<CChar>?) -> OpaquePointer? { connectdb(conninfo) }
func PQstatus(_ conn: OpaquePointer?) -> ConnStatusType { status(conn) }
func PQerrorMessage(_ conn: OpaquePointer?) -> UnsafeMutablePointer<CChar>! { errorMessage(conn) }
func PQfinish(_ conn: OpaquePointer?) { finish(conn) }
func PQbackendPID(_ conn: OpaquePointer?) -> Int32 { backendPID(conn) }
func PQtransactionStatus(_ conn: OpaquePointer?) -> PGTransactionStatusType { transactionStatus(conn) }
func PQsocket(_ conn: OpaquePointer?) -> Int32 { socket(conn) }
func PQconsumeInput(_ conn: OpaquePointer?) -> Int32 { consumeInput(conn) }
func PQnotifies(_ conn: OpaquePointer?) -> UnsafeMutablePointer<PGnotify>? { notifies(conn) }
func PQfreemem(_ pointer: UnsafeMutableRawPointer?) { freemem(pointer) }
func PQexec(_ conn: OpaquePointer?, _ query: UnsafePointer<CChar>?) -> OpaquePointer? { exec(conn, query) }
func PQexecParams(_ conn: OpaquePointer?, _ command: UnsafePointer<CChar>?, _ count: Int32, _ types: UnsafePointer<Oid>?,
                  _ values: UnsafePointer<UnsafePointer<CChar>?>?, _ lengths: UnsafePointer<Int32>?, _ formats: UnsafePointer<Int32>?,
                  _ resultFormat: Int32) -> OpaquePointer? {
    execParams(conn, command, count, types, values, lengths, formats, resultFormat)
}
func PQclear(_ result: OpaquePointer?) { clear(result) }
func PQresultStatus(_ result: OpaquePointer?) -> ExecStatusType { resultStatus(result) }
func PQresultErrorField(_ result: OpaquePointer?, _ field: Int32) -> UnsafeMutablePointer<CChar>! { resultErrorField(result, field) }
func PQresultErrorMessage(_ result: OpaquePointer?) -> UnsafeMutablePointer<CChar>! { resultErrorMessage(result) }
func PQcmdTuples(_ result: OpaquePointer?) -> UnsafeMutablePointer<CChar>! { cmdTuples(result) }
func PQntuples(_ result: OpaquePointer?) -> Int32 { ntuples(result) }
func PQgetisnull(_ result: OpaquePointer?, _ row: Int32, _ column: Int32) -> Int32 { getisnull(result, row, column) }
func PQgetvalue(_ result: OpaquePointer?, _ row: Int32, _ column: Int32) -> UnsafeMutablePointer<CChar>! { getvalue(result, row, column) }
func PQgetlength(_ result: OpaquePointer?, _ row: Int32, _ column: Int32) -> Int32 { getlength(result, row, column) }
