import Foundation

/// Where a run's journal lives: the embedded SQLite journal of the state dir (the
/// default), or a shared PostgreSQL database (SPEC §8.6).
public enum JournalLocation: Sendable, Equatable, CustomStringConvertible {
    case stateDir(URL)
    case postgres(PostgresURL)

    /// The environment variable naming the journal when `--journal` is not given.
    public static let environmentVariable = "FLOTILLA_JOURNAL"

    /// `--journal` (its value, from the command line), else `$FLOTILLA_JOURNAL`, else the
    /// state dir.
    ///
    /// - Throws: ``JournalLocation/BadAddress`` for an address that is not
    ///   `postgresql://`, or a
    ///   password on the command line (it would be visible to every user in the process
    ///   list).
    public static func resolve(option: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                               stateDir: URL) throws(BadAddress) -> JournalLocation {
        let fromOption = option.map { ($0, true) }
        let fromEnvironment = environment[environmentVariable].flatMap { $0.isEmpty ? nil : ($0, false) }
        guard let (text, onCommandLine) = fromOption ?? fromEnvironment else { return .stateDir(stateDir) }
        guard let url = PostgresURL(text) else {
            let shown = PostgresURL("postgresql://" + text)?.redacted.dropFirst("postgresql://".count) ?? ""
            throw BadAddress(message: "\(onCommandLine ? "--journal" : "$\(environmentVariable)") '\(shown)' is not a journal address: give postgresql://USER@HOST:PORT/DB (the default journal is the state dir's)")
        }
        if url.hasPassword && onCommandLine {
            throw BadAddress(message: "--journal \(url.redacted): a password does not go on the command line (every user can read it there); give it in PGPASSWORD or ~/.pgpass")
        }
        return .postgres(url)
    }

    /// An address flotilla does not take.
    public struct BadAddress: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public var description: String {
        switch self {
        case .stateDir(let url): url.path
        case .postgres(let url): url.redacted
        }
    }

    /// Whether several controllers can share this journal.
    public var isShared: Bool {
        if case .postgres = self { return true }
        return false
    }
}

extension Journal {
    // MARK: - Either journal

    /// Creates the journal of a new run where `location` says (see
    /// ``create(stateDir:run:)`` for the state dir's).
    public static func create(at location: JournalLocation, run: RunRecord) throws -> Journal {
        switch location {
        case .stateDir(let stateDir): try create(stateDir: stateDir, run: run)
        case .postgres(let url): try PostgresJournals(url: url).create(run)
        }
    }

    /// Opens run `runID` (the latest when nil) where `location` says.
    public static func open(at location: JournalLocation, runID: String?) throws -> Journal {
        switch location {
        case .stateDir(let stateDir): try open(stateDir: stateDir, runID: runID)
        case .postgres(let url): try PostgresJournals(url: url).open(runID: runID)
        }
    }

    /// Checks that `location` can be used: for PostgreSQL, connects and brings the layout
    /// up to date (the state dir is checked when a run is created or opened).
    /// - Throws: ``PostgresError`` (SQLSTATE class 08) for a database that cannot be reached.
    public static func check(_ location: JournalLocation) throws {
        guard case .postgres(let url) = location else { return }
        try PostgresJournals(url: url).database.close()
    }

    /// Every run `location` holds, oldest first.
    public static func listRuns(at location: JournalLocation) throws -> [RunSummary] {
        switch location {
        case .stateDir(let stateDir): try listRuns(stateDir: stateDir)
        case .postgres(let url): try PostgresJournals(url: url).listRuns()
        }
    }
}

/// The runs of a PostgreSQL journal database: the `flotilla` schema lists them
/// (`flotilla.runs`) and records the layout's version (`flotilla.schema_version`); each
/// run has its own schema, `flotilla_run_<seq>`, holding the same tables as an SQLite
/// journal file, so every transition is the same statement on either database.
///
/// The layout is created on first use and upgraded in place, under a transaction-scoped
/// advisory lock, so controllers starting together do not race each other.
struct PostgresJournals {
    let url: PostgresURL
    let database: PostgresDatabase

    /// The layout this code writes; it reads this one and older ones, upgrading them.
    /// - 1: `flotilla.runs`, one schema per run with the tables of SQLite schema 3.
    /// - 2: each run has a `holder` table: which controller holds which host.
    static let schemaVersion = 2
    /// The advisory lock that serialises layout changes ("Flot").
    static let layoutLock: Int64 = 0x466C_6F74

    /// Connects and brings the layout up to date.
    ///
    /// - Throws: ``PostgresError`` (a connection failure: SQLSTATE class 08) when the
    ///   server cannot be reached; ``JournalError`` `.unsupportedSchema` for a layout a
    ///   newer flotilla wrote.
    init(url: PostgresURL) throws {
        self.url = url
        database = try PostgresDatabase(url: url)
        try migrate()
    }

    /// The steps from each version to the next: index 0 makes version 1.
    private static let migrations: [@Sendable (PostgresDatabase) throws -> Void] = [
        { database in
            try database.execute("""
                CREATE TABLE flotilla.runs (
                    id TEXT PRIMARY KEY,
                    seq BIGSERIAL UNIQUE,
                    created_ms BIGINT NOT NULL
                )
                """)
        },
        { database in
            for sequence in try database.query("SELECT seq FROM flotilla.runs", row: { $0.int(0) ?? 0 }) {
                try database.execute(holderTable(schema: schemaName(sequence)))
            }
        },
    ]

    static func holderTable(schema: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(schema).holder (
            host TEXT PRIMARY KEY REFERENCES \(schema).host (name),
            holder TEXT NOT NULL,
            backend_pid BIGINT NOT NULL,
            since_ms BIGINT NOT NULL
        )
        """
    }

    private func migrate() throws {
        try database.transaction {
            try database.run("SELECT pg_advisory_xact_lock(?)", .integer(Self.layoutLock))
            try database.execute("""
                CREATE SCHEMA IF NOT EXISTS flotilla;
                CREATE TABLE IF NOT EXISTS flotilla.schema_version (version INTEGER NOT NULL)
                """)
            let version = try database.query("SELECT max(version) FROM flotilla.schema_version") { $0.int(0) }.first.flatMap { $0 } ?? 0
            guard version <= Self.schemaVersion else {
                throw JournalError(.unsupportedSchema, path: url.redacted,
                                   "the journal at \(url.redacted) was written by a newer flotilla (layout \(version); this one reads up to \(Self.schemaVersion))")
            }
            guard version < Self.schemaVersion else { return }
            for step in Self.migrations[version...] { try step(database) }
            try database.execute("DELETE FROM flotilla.schema_version")
            try database.run("INSERT INTO flotilla.schema_version (version) VALUES (?)", .int(Self.schemaVersion))
        }
    }

    /// The tables of one run, in its own schema (SQLite schema 3's, in PostgreSQL types:
    /// times are BIGINT milliseconds).
    static let runSchema = """
        CREATE TABLE run (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            name TEXT,
            target_version TEXT,
            created_ms BIGINT NOT NULL,
            record_json TEXT NOT NULL,
            state TEXT NOT NULL,
            halt_reason TEXT,
            started_ms BIGINT,
            finished_ms BIGINT
        );
        CREATE TABLE host (
            name TEXT PRIMARY KEY,
            position BIGINT NOT NULL UNIQUE,
            address TEXT NOT NULL,
            batch BIGINT,
            status TEXT NOT NULL,
            error TEXT,
            started_ms BIGINT,
            finished_ms BIGINT
        );
        CREATE TABLE step (
            host TEXT NOT NULL REFERENCES host (name),
            idx BIGINT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            exit_status BIGINT,
            stdout_tail TEXT NOT NULL DEFAULT '',
            stderr_tail TEXT NOT NULL DEFAULT '',
            error TEXT,
            started_ms BIGINT,
            finished_ms BIGINT,
            duration_ms BIGINT,
            attempts BIGINT NOT NULL DEFAULT 0,
            token TEXT,
            reattached BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (host, idx)
        );
        CREATE TABLE batch (
            idx BIGINT PRIMARY KEY,
            started_ms BIGINT,
            finished_ms BIGINT
        );
        CREATE TABLE cluster_step (
            grp TEXT NOT NULL,
            value TEXT NOT NULL,
            step BIGINT NOT NULL,
            host TEXT NOT NULL REFERENCES host (name),
            done_ms BIGINT NOT NULL,
            PRIMARY KEY (grp, value, step)
        );
        CREATE TABLE event (
            seq BIGSERIAL PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL
        );
        CREATE TABLE artifact (
            host TEXT NOT NULL REFERENCES host (name),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            size BIGINT,
            sha256 TEXT,
            PRIMARY KEY (host, name)
        );
        """

    static func schemaName(_ sequence: Int) -> String { "flotilla_run_\(sequence)" }

    private func journal(runID: String, sequence: Int) -> Journal {
        let location = "\(url.redacted) (run \(runID))"
        let journal = Journal(database: database, file: URL(string: url.redacted) ?? URL(fileURLWithPath: "/"), location: location,
                              runID: runID, schema: Journal.schemaVersion)
        journal.sharedRun = sequence
        return journal
    }

    /// Creates run `run`'s schema and stores the record, in one transaction.
    func create(_ run: RunRecord) throws -> Journal {
        try Journal.validateRunID(run.id)
        return try database.transaction {
            let sequence: Int
            do {
                sequence = try database.query("INSERT INTO flotilla.runs (id, created_ms) VALUES (?, ?) RETURNING seq",
                                              .text(run.id), Journal.ms(run.createdAt)) { $0.int(0) ?? 0 }.first ?? 0
            } catch where database.isUniqueViolation(error) {
                throw JournalError(.runExists, path: url.redacted, "run \(run.id) already exists in \(url.redacted)")
            }
            try database.execute("CREATE SCHEMA \(Self.schemaName(sequence)); SET search_path TO \(Self.schemaName(sequence))")
            try database.execute(Self.runSchema)
            try database.execute(Self.holderTable(schema: Self.schemaName(sequence)))
            try Journal.insert(run, into: database, location: "\(url.redacted) (run \(run.id))")
            return journal(runID: run.id, sequence: sequence)
        }
    }

    /// Opens run `runID`, or the latest (by creation time, then id).
    func open(runID: String?) throws -> Journal {
        let runs = try database.query("SELECT id, seq FROM flotilla.runs ORDER BY created_ms, id") { ($0.text(0) ?? "", $0.int(1) ?? 0) }
        guard !runs.isEmpty else {
            throw JournalError(.noRuns, path: url.redacted, "no runs yet in \(url.redacted) (flotilla upgrade or flotilla run start one)")
        }
        let chosen: (String, Int)
        if let runID {
            try Journal.validateRunID(runID)
            guard let found = runs.first(where: { $0.0 == runID }) else {
                let known = runs.map(\.0).sorted()
                let shown = known.count > 20 ? known.suffix(20).joined(separator: ", ") + " (and \(known.count - 20) older)"
                    : known.joined(separator: ", ")
                throw JournalError(.unknownRun, path: url.redacted, "no run \(runID) in \(url.redacted); known runs: \(shown)")
            }
            chosen = found
        } else {
            chosen = runs[runs.count - 1]
        }
        try database.execute("SET search_path TO \(Self.schemaName(chosen.1))")
        return journal(runID: chosen.0, sequence: chosen.1)
    }

    /// Every run, oldest first; one that cannot be read is listed with its problem.
    func listRuns() throws -> [RunSummary] {
        defer { database.close() }
        let runs = try database.query("SELECT id, seq, created_ms FROM flotilla.runs ORDER BY created_ms, id") {
            ($0.text(0) ?? "", $0.int(1) ?? 0, $0.int64(2))
        }
        let address = URL(string: url.redacted) ?? URL(fileURLWithPath: "/")
        return runs.map { id, sequence, created in
            do {
                try database.execute("SET search_path TO \(Self.schemaName(sequence))")
                return try Journal.readSummary(database, id: id, location: "\(url.redacted) (run \(id))", journal: address)
            } catch {
                return RunSummary(id: id, kind: nil, createdAt: Journal.date(created) ?? Date(timeIntervalSince1970: 0), state: nil,
                                  hostCounts: [:], journal: address, problem: "run \(id) cannot be read: \(error)")
            }
        }
    }
}

// MARK: - Holding hosts

extension Journal {
    /// Holds `hosts` for this controller, all or none, for as long as this journal's
    /// database session lives: a session-level advisory lock per host (keyed by the run
    /// and the host's name), which PostgreSQL releases when the session ends, however the
    /// controller ends (`kill -9`, a lost machine). So a dead controller's hosts are free
    /// for `flotilla resume` from any machine, and a live one's never are. Who holds each
    /// host is recorded beside it, to name it to the next one. Nothing to do for an
    /// SQLite journal (the state dir's host locks do this on one machine).
    ///
    /// - Throws: ``LockError`` naming the hosts another controller holds, and that
    ///   controller; ``PostgresError`` if the database cannot be reached.
    public func holdHosts(_ hosts: [String], stateDir: URL, at now: Date = Date()) throws {
        guard let sharedRun, let postgres = database as? PostgresDatabase else { return }
        let holder = LockHolder.current(stateDir: stateDir, runID: runID, since: now).description
        var taken: [String] = []
        var refused: [String] = []
        for host in hosts {
            let got = try database.query("SELECT pg_try_advisory_lock(?::integer, hashtext(?))", .int(sharedRun), .text(host)) {
                $0.text(0) == "t"
            }.first ?? false
            if got { taken.append(host) } else { refused.append(host) }
        }
        guard refused.isEmpty else {
            for host in taken {
                try database.run("SELECT pg_advisory_unlock(?::integer, hashtext(?))", .int(sharedRun), .text(host))
            }
            let holders = try database.query("""
                SELECT DISTINCT holder FROM holder WHERE host = ANY(string_to_array(?, ','))
                    AND backend_pid IN (SELECT pid FROM pg_stat_activity)
                """, .text(refused.joined(separator: ",")), row: { $0.text(0) ?? "" }).sorted()
            let who = holders.isEmpty ? "another flotilla controller" : holders.joined(separator: "; ")
            throw LockError(path: location, holders: [], hosts: refused, message: """
                \(refused.count) of the \(hosts.count) hosts of run \(runID) are held by \(who): \(refused.joined(separator: ", ")); \
                no host was taken — a controller's hold lapses when it ends, then resume takes its hosts over
                """)
        }
        try database.transaction {
            for host in taken {
                try database.run("""
                    INSERT INTO holder (host, holder, backend_pid, since_ms) VALUES (?, ?, ?, ?)
                    ON CONFLICT (host) DO UPDATE SET holder = excluded.holder, backend_pid = excluded.backend_pid, since_ms = excluded.since_ms
                    """, .text(host), .text(holder), .int(Int(postgres.backendPID)), Self.ms(now))
            }
        }
    }
}
