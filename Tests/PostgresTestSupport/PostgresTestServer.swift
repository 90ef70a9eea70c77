import CLibPQ
import Foundation
import Synchronization

/// A real PostgreSQL server for the tests, started by them: `initdb` into a private
/// temporary directory, listening on 127.0.0.1 and a free port only, its unix socket in
/// that directory, password (SCRAM) logins over TCP. Run as the `postgres` user when
/// the tests run as root (PostgreSQL refuses root), else as the current user.
///
/// ``shared`` is started once per test process and stopped (by its pid) when the
/// process exits; a test that needs a server of its own to stop (the database lost
/// mid-run) starts one with ``start()`` and stops it with ``stop()``.
public final class PostgresTestServer: Sendable {
    /// Where Debian and Ubuntu put the server binaries: the newest version installed.
    public static let binaries: String = {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(Int.init).sorted()
        // No version installed: the error names the directory the package would fill.
        return "/usr/lib/postgresql/\(versions.last.map(String.init) ?? "15")/bin"
    }()
    public static let user = "flotilla"
    /// The test role's password: given to libpq in the address (in-process tests) or in
    /// PGPASSWORD (the CLI tests), never on a command line.
    public static let password = "test-\(UInt32.random(in: 0...UInt32.max))"

    public let directory: URL
    public let port: Int
    private let runAs: [String]
    private let process: Mutex<Process>

    /// The postmaster's pid (of the latest start).
    public var pid: pid_t { process.withLock { $0.processIdentifier } }

    /// The server of this test process, started on first use.
    public static var shared: PostgresTestServer {
        get throws {
            try sharedServer.withLock { server in
                if let server { return server }
                let started = try start()
                server = started
                atexit { PostgresTestServer.stopShared() }
                return started
            }
        }
    }

    private static let sharedServer = Mutex<PostgresTestServer?>(nil)

    private static func stopShared() {
        sharedServer.withLock { $0?.stop() }
    }

    private init(directory: URL, port: Int, runAs: [String], process: Process) {
        self.directory = directory
        self.port = port
        self.runAs = runAs
        self.process = Mutex(process)
    }

    /// The server's address for database `database`. The password is in the password
    /// file that `PGPASSFILE` names (set for this process and its children), as an
    /// operator's ~/.pgpass would hold it.
    public func url(database: String) -> String {
        "postgresql://\(Self.user)@127.0.0.1:\(port)/\(database)"
    }

    /// A new, empty database (so tests running at once never see each other's runs);
    /// returns its name.
    public func newDatabase(prefix: String = "t") throws -> String {
        let name = "\(prefix)_\(UInt64.random(in: 0...UInt64.max))"
        try execute("CREATE DATABASE \(name)", database: "postgres")
        return name
    }

    /// Runs `sql` as the test role on `database`.
    public func execute(_ sql: String, database: String) throws {
        guard let connection = PQconnectdb(url(database: database) + "?password=\(Self.password)") else { throw ServerError("out of memory") }
        defer { PQfinish(connection) }
        guard PQstatus(connection) == CONNECTION_OK else { throw ServerError(String(cString: PQerrorMessage(connection))) }
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw ServerError(String(cString: PQerrorMessage(connection))) }
    }

    public struct ServerError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Starts a new server and returns once it accepts connections.
    public static func start() throws -> PostgresTestServer {
        var template = Array((FileManager.default.temporaryDirectory.path + "/flotilla-pg-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ServerError("mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        let directory = URL(fileURLWithPath: String(cString: made))
        let runAs: [String]
        if geteuid() == 0 {
            guard let entry = getpwnam("postgres") else { throw ServerError("no postgres user (install Debian's postgresql package)") }
            chown(directory.path, entry.pointee.pw_uid, entry.pointee.pw_gid)
            runAs = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        } else {
            runAs = []
        }
        let passwordFile = directory.appendingPathComponent("password")
        guard FileManager.default.createFile(atPath: passwordFile.path, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ServerError("cannot write \(passwordFile.path)")
        }
        if geteuid() == 0, let entry = getpwnam("postgres") { chown(passwordFile.path, entry.pointee.pw_uid, entry.pointee.pw_gid) }
        try writePasswordFile()
        let data = directory.appendingPathComponent("data")
        let initdb = try run(runAs + ["\(binaries)/initdb", "-D", data.path, "-U", user, "--pwfile", passwordFile.path,
                                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        guard initdb.status == 0 else { throw ServerError("initdb failed: \(initdb.output)") }

        // A free port: the kernel picks one for a socket bound to port 0; a server that
        // still finds it taken is started again on another.
        var lastError: Error = ServerError("postgres did not start")
        for _ in 0..<5 {
            let port = try freePort()
            do {
                let process = try launch(runAs: runAs, directory: directory, port: port)
                return PostgresTestServer(directory: directory, port: port, runAs: runAs, process: process)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// The password file every test server's role is found in (`PGPASSFILE`), written once
    /// per test process, owner-only.
    private static func writePasswordFile() throws {
        try passwordFileWritten.withLock { written in
            guard !written else { return }
            let file = passwordFile
            guard FileManager.default.createFile(atPath: file.path, contents: Data("127.0.0.1:*:*:\(user):\(password)\n".utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ServerError("cannot write \(file.path)")
            }
            setenv("PGPASSFILE", file.path, 1)
            // Removed when the test process ends: the password is of no use afterwards.
            atexit { unlink(PostgresTestServer.passwordFile.path) }
            written = true
        }
    }

    private static let passwordFileWritten = Mutex(false)
    private static let passwordFile = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-pgpass-\(getpid())")

    /// Starts postgres on the data dir of `directory` and returns once it accepts
    /// connections (read from its log: the log is the event, no polling).
    private static func launch(runAs: [String], directory: URL, port: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: runAs.first ?? "\(binaries)/postgres")
        process.arguments = Array(runAs.dropFirst()) + (runAs.isEmpty ? [] : ["\(binaries)/postgres"]) + [
            "-D", directory.appendingPathComponent("data").path, "-k", directory.path, "-p", String(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
        ]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let reader = pipe.fileHandleForReading
        var log = Data()
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            log += chunk
            guard String(decoding: log, as: UTF8.self).contains("ready to accept connections") else { continue }
            // The rest of the log is drained into a file, so the server never blocks on a full pipe.
            let logFile = directory.appendingPathComponent("server-\(port).log")
            guard FileManager.default.createFile(atPath: logFile.path, contents: log) else {
                kill(process.processIdentifier, SIGINT)
                process.waitUntilExit()
                throw ServerError("cannot write \(logFile.path)")
            }
            let sink = FileHandle(forWritingAtPath: logFile.path)
            sink?.seekToEndOfFile()
            reader.readabilityHandler = { handle in
                let chunk = handle.availableData
                if chunk.isEmpty { handle.readabilityHandler = nil } else { sink?.write(chunk) }
            }
            return process
        }
        process.waitUntilExit()
        throw ServerError("postgres did not start: \(String(decoding: log, as: UTF8.self))")
    }

    /// Stops the server (a fast shutdown: SIGINT to its pid) and waits for it; the data
    /// stays, for ``restart()``.
    public func halt() {
        process.withLock { process in
            if process.isRunning {
                kill(process.processIdentifier, SIGINT)
                process.waitUntilExit()
            }
        }
    }

    /// Starts the stopped server again, on the same port and data.
    public func restart() throws {
        let started = try Self.launch(runAs: runAs, directory: directory, port: port)
        process.withLock { $0 = started }
    }

    /// Stops the server (a fast shutdown: SIGINT to its pid), waits for it, and removes its
    /// directory.
    public func stop() {
        halt()
        // Only the test's own temporary directory; nothing to report if it is gone already.
        try? FileManager.default.removeItem(at: directory)
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw ServerError("cannot bind a port on 127.0.0.1") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
