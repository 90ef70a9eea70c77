import Foundation

/// `flotilla ctl` through a shared journal (SPEC §8.6): the command is recorded as an
/// event of the run and sent with PostgreSQL's NOTIFY, in one transaction, to every
/// controller of the run, each of which LISTENs on its own connection
/// (``SharedControlListener``): delivered within a second, wherever they run.
public enum SharedControl {
    static func channel(_ sharedRun: Int) -> String { "flotilla_ctl_\(sharedRun)" }

    /// Sends `command` to every controller of the run `runID` (the latest when nil).
    /// Returns the run's id.
    ///
    /// - Throws: ``JournalError`` for a run that is not there; ``ControlSocketError``
    ///   for an unknown command (the commands named).
    @discardableResult
    public static func send(_ command: String, runID: String?, url: PostgresURL) throws -> String {
        let journal = try PostgresJournals(url: url).open(runID: runID)
        defer { journal.close() }
        let hosts = try journal.load().record.hosts.map(\.name)
        guard ControlServer.event(command, hosts: hosts) != nil else {
            throw ControlSocketError(message: "unknown command '\(command)' (pause, continue, abort, skip HOST, set max-parallel N)")
        }
        guard let sharedRun = journal.sharedRun else { return journal.runID }
        try journal.database.transaction {
            try journal.event(kind: "ctl", message: command, at: Date())
            try journal.database.run("SELECT pg_notify(?, ?)", .text(channel(sharedRun)), .text(command))
        }
        return journal.runID
    }
}

/// A controller's ear for ``SharedControl``: a connection of its own that LISTENs for
/// the run's commands, on a thread of its own, until ``stop()``.
public final class SharedControlListener: Sendable {
    /// The write end of the pipe that wakes the listening thread to end it.
    private let wake: Int32

    /// The listening connection, handed to the thread and used by it alone.
    private final class Connection: @unchecked Sendable {
        // @unchecked: only the listening thread touches it once the listener started.
        let database: PostgresDatabase
        init(_ database: PostgresDatabase) { self.database = database }
    }

    /// Connects and listens for the commands of the run `sharedRun`
    /// (``Journal/sharedRun``), calling `handle` with each, on the listening thread.
    /// - Throws: ``PostgresError`` when the database cannot be reached.
    public init(sharedRun: Int, url: PostgresURL, handle: @escaping @Sendable (String) -> Void) throws {
        let connection = Connection(try PostgresDatabase(url: url))
        try connection.database.execute("LISTEN \(SharedControl.channel(sharedRun))")
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw PostgresError(sqlState: nil, message: "pipe: \(String(cString: strerror(errno)))") }
        wake = ends[1]
        let wakeRead = ends[0]
        Thread.detachNewThread {
            defer { close(wakeRead) }
            while true {
                // A lost connection ends the listening: the run notices through its journal.
                guard let payloads = try? connection.database.notifications(wakingOn: wakeRead), !payloads.isEmpty else { return }
                payloads.forEach(handle)
            }
        }
    }

    /// Stops listening: the thread ends and its connection closes. Call it once.
    public func stop() {
        // The thread wakes on the pipe's end of file as well: writing is not needed.
        close(wake)
    }
}
