import CLibPQ
import Foundation

// libpq is loaded when the first PostgreSQL journal connects, not when the program starts:
// a flotilla that journals in SQLite, and every lab host's session wrapper (flotilla-lab
// shares this module), then never loads libpq and the twenty-odd libraries it needs, which
// cost each start about 3.6 ms of CPU. The function pointers below, each looked up on first
// use, shadow libpq's functions in this module (``PostgresDatabase`` calls them by their C
// names); `CLibPQ` gives only the types.

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

let PQconnectdb = LibPQ.function("PQconnectdb", (@convention(c) (UnsafePointer<CChar>?) -> OpaquePointer?).self)
let PQstatus = LibPQ.function("PQstatus", (@convention(c) (OpaquePointer?) -> ConnStatusType).self)
let PQerrorMessage = LibPQ.function("PQerrorMessage", (@convention(c) (OpaquePointer?) -> UnsafeMutablePointer<CChar>).self)
let PQfinish = LibPQ.function("PQfinish", (@convention(c) (OpaquePointer?) -> Void).self)
let PQbackendPID = LibPQ.function("PQbackendPID", (@convention(c) (OpaquePointer?) -> Int32).self)
let PQtransactionStatus = LibPQ.function("PQtransactionStatus", (@convention(c) (OpaquePointer?) -> PGTransactionStatusType).self)
let PQsocket = LibPQ.function("PQsocket", (@convention(c) (OpaquePointer?) -> Int32).self)
let PQconsumeInput = LibPQ.function("PQconsumeInput", (@convention(c) (OpaquePointer?) -> Int32).self)
let PQnotifies = LibPQ.function("PQnotifies", (@convention(c) (OpaquePointer?) -> UnsafeMutablePointer<PGnotify>?).self)
let PQfreemem = LibPQ.function("PQfreemem", (@convention(c) (UnsafeMutableRawPointer?) -> Void).self)
let PQexec = LibPQ.function("PQexec", (@convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> OpaquePointer?).self)
let PQexecParams = LibPQ.function("PQexecParams", (@convention(c) (
    OpaquePointer?, UnsafePointer<CChar>?, Int32, UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?,
    UnsafePointer<Int32>?, UnsafePointer<Int32>?, Int32) -> OpaquePointer?).self)
let PQclear = LibPQ.function("PQclear", (@convention(c) (OpaquePointer?) -> Void).self)
let PQresultStatus = LibPQ.function("PQresultStatus", (@convention(c) (OpaquePointer?) -> ExecStatusType).self)
let PQresultErrorField = LibPQ.function("PQresultErrorField", (@convention(c) (OpaquePointer?, Int32) -> UnsafeMutablePointer<CChar>?).self)
let PQresultErrorMessage = LibPQ.function("PQresultErrorMessage", (@convention(c) (OpaquePointer?) -> UnsafeMutablePointer<CChar>).self)
let PQcmdTuples = LibPQ.function("PQcmdTuples", (@convention(c) (OpaquePointer?) -> UnsafeMutablePointer<CChar>).self)
let PQntuples = LibPQ.function("PQntuples", (@convention(c) (OpaquePointer?) -> Int32).self)
let PQgetisnull = LibPQ.function("PQgetisnull", (@convention(c) (OpaquePointer?, Int32, Int32) -> Int32).self)
let PQgetvalue = LibPQ.function("PQgetvalue", (@convention(c) (OpaquePointer?, Int32, Int32) -> UnsafeMutablePointer<CChar>).self)
let PQgetlength = LibPQ.function("PQgetlength", (@convention(c) (OpaquePointer?, Int32, Int32) -> Int32).self)
