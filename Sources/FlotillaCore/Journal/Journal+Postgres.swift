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
    /// - 3: each run has a `host_group` table (each host's group values, for the
    ///   run-wide `--max-per`, once-per-cluster and barrier rules; runs made before it
    ///   have it empty) and a `barrier_arrival` table (who reached which barrier).
    static let schemaVersion = 3
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
        { database in
            for sequence in try database.query("SELECT seq FROM flotilla.runs", row: { $0.int(0) ?? 0 }) {
                try database.execute(groupTable(schema: schemaName(sequence)))
            }
        },
    ]

    static func groupTable(schema: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(schema).host_group (
            host TEXT NOT NULL REFERENCES \(schema).host (name),
            grp TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (host, grp)
        );
        CREATE TABLE IF NOT EXISTS \(schema).barrier_arrival (
            grp TEXT NOT NULL,
            value TEXT NOT NULL,
            name TEXT NOT NULL,
            host TEXT NOT NULL REFERENCES \(schema).host (name),
            PRIMARY KEY (grp, value, name, host)
        )
        """
    }

    /// Records the group values of `hosts` (a run's, or those a controller adds on joining).
    static func insertGroups(_ hosts: [RunHost], into database: any JournalDatabase) throws {
        for host in hosts {
            for (group, value) in host.groups.sorted(by: { $0.key < $1.key }) {
                try database.run("INSERT INTO host_group (host, grp, value) VALUES (?, ?, ?)", .text(host.name), .text(group), .text(value))
            }
        }
    }

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

    /// The tables of one run, in its own schema: SQLite schema 3's (``Journal/schema``), in
    /// PostgreSQL's types (times and counts BIGINT, the event sequence BIGSERIAL), so both
    /// journals always have the same columns.
    static let runSchema = Journal.schema
        .replacingOccurrences(of: "INTEGER PRIMARY KEY AUTOINCREMENT", with: "BIGSERIAL PRIMARY KEY")
        .replacingOccurrences(of: "INTEGER", with: "BIGINT")
        .replacingOccurrences(of: ") WITHOUT ROWID;", with: ");")

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
            try database.execute(Self.groupTable(schema: Self.schemaName(sequence)))
            try Journal.insert(run, into: database, location: "\(url.redacted) (run \(run.id))")
            try Self.insertGroups(run.hosts, into: database)
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
                throw JournalError(.unknownRun, path: url.redacted,
                                   "no run \(runID) in \(url.redacted); known runs: \(Journal.knownRuns(runs.map(\.0).sorted()))")
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
        guard let sharedRun else { return }
        let (taken, refused) = try tryHolding(hosts)
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
        try recordHolder(taken, stateDir: stateDir, at: now)
    }

    /// Holds those of `hosts` no live controller holds (`resume` of a shared run takes over
    /// a dead controller's hosts while the others go on with theirs); returns them, in
    /// order, and the others. Every host, for a state dir journal.
    public func holdFreeHosts(_ hosts: [String], stateDir: URL, at now: Date = Date()) throws -> (held: [String], heldElsewhere: [String]) {
        guard sharedRun != nil else { return (hosts, []) }
        let (taken, refused) = try tryHolding(hosts)
        try recordHolder(taken, stateDir: stateDir, at: now)
        return (taken, refused)
    }

    /// Tries each host's session lock: those taken, and those another controller holds.
    private func tryHolding(_ hosts: [String]) throws -> (taken: [String], refused: [String]) {
        guard let sharedRun else { return (hosts, []) }
        var taken: [String] = []
        var refused: [String] = []
        for host in hosts {
            let got = try database.query("SELECT pg_try_advisory_lock(?::integer, hashtext(?))", .int(sharedRun), .text(host)) {
                $0.text(0) == "t"
            }.first ?? false
            if got { taken.append(host) } else { refused.append(host) }
        }
        return (taken, refused)
    }

    /// Records this controller as the holder of `hosts`, to name it to the next one.
    private func recordHolder(_ hosts: [String], stateDir: URL, at now: Date) throws {
        guard let postgres = database as? PostgresDatabase else { return }
        let holder = LockHolder.current(stateDir: stateDir, runID: runID, since: now).description
        try database.transaction {
            for host in hosts {
                try database.run("""
                    INSERT INTO holder (host, holder, backend_pid, since_ms) VALUES (?, ?, ?, ?)
                    ON CONFLICT (host) DO UPDATE SET holder = excluded.holder, backend_pid = excluded.backend_pid, since_ms = excluded.since_ms
                    """, .text(host), .text(holder), .int(Int(postgres.backendPID)), Self.ms(now))
            }
        }
    }
}

// MARK: - Several controllers, one run

/// A controller asked to join a shared run with other flags than the run's: the
/// differences, flag by flag.
public struct JoinRefusal: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension Journal {
    /// Creates the shared run `run.id` in `location`, or joins it when another controller
    /// created it (SPEC §8.6): the target and the rollout flags must be the run's (only
    /// the host selection and connection flags may differ); this controller's hosts that
    /// the run does not have yet are added to it, each batch to the run's batch of the
    /// same number, in one transaction. Returns the journal and whether it joined.
    ///
    /// - Throws: ``JoinRefusal`` naming each difference; ``JournalError``
    ///   `.invalidTransition` for a state dir journal (a run is shared only through
    ///   PostgreSQL).
    public static func createOrJoin(at location: JournalLocation, run: RunRecord) throws -> (journal: Journal, joined: Bool) {
        guard case .postgres(let url) = location else {
            throw JournalError(.invalidTransition, "--run \(run.id): a run is shared through a PostgreSQL journal (--journal postgresql://...)")
        }
        return try PostgresJournals(url: url).createOrJoin(run)
    }

    /// The differences between `mine` and `theirs` that forbid joining: kind, target,
    /// runbook, and every rollout flag.
    static func joinDifferences(_ mine: RunRecord, _ theirs: RunRecord) throws -> [String] {
        var differences: [String] = []
        if mine.kind != theirs.kind { differences.append("kind: \(mine.kind.rawValue) here, \(theirs.kind.rawValue) in the run") }
        if mine.targetVersion != theirs.targetVersion {
            differences.append("--to: \(mine.targetVersion ?? "none") here, \(theirs.targetVersion ?? "none") in the run")
        }
        if mine.name != theirs.name { differences.append("runbook: \(mine.name ?? "none") here, \(theirs.name ?? "none") in the run") }
        func flags(_ options: RunOptions) throws -> [String: String] {
            let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(options)) as? [String: Any] ?? [:]
            var flags: [String: String] = [:]
            for (key, value) in object where !["selection", "connection", "state-dir"].contains(key) {
                let data = try JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys])
                flags[key] = String(decoding: data, as: UTF8.self)
            }
            return flags
        }
        let here = try flags(mine.options), there = try flags(theirs.options)
        for key in Set(here.keys).union(there.keys).sorted() where here[key] != there[key] {
            differences.append("--\(key): \(here[key] ?? "unset") here, \(there[key] ?? "unset") in the run")
        }
        return differences
    }

    /// The first controller's position in the run's events when it started: a halt
    /// recorded after it concerns this controller's run (resume does not trip on an
    /// old halt).
    public func eventHighWater() throws -> Int {
        try database.query("SELECT COALESCE(max(seq), 0) FROM event") { $0.int(0) ?? 0 }.first ?? 0
    }

    /// For a shared run, why the whole run halts now, decided in one transaction over
    /// every controller's hosts: a halt another controller recorded since `since`
    /// (``eventHighWater()``), or the failures of the whole run crossing `maxFail` with
    /// other controllers' hosts among them, or those of one batch of the whole run crossing
    /// `maxFailBatch` percent (this controller's own policy halts on its own failures
    /// alone, with its own reason); nil when the run goes on (and always for a state dir
    /// journal, whose one controller's policy decides alone).
    public func runWideHalt(since: Int, maxFail: RolloutPolicy.Threshold, maxFailBatch: Double? = nil, unreachableCounts: Bool, own: [String]) throws -> String? {
        guard sharedRun != nil else { return nil }
        return try database.transaction {
            if let halt = try database.query("SELECT message FROM event WHERE kind = 'halt' AND seq > ? ORDER BY seq LIMIT 1",
                                             .int(since), row: { $0.text(0) }).first ?? nil {
                return "the run halted on another controller: \(halt)"
            }
            let failing = unreachableCounts ? "'failed', 'unreachable'" : "'failed'"
            let counts = try database.query("""
                SELECT count(*) FILTER (WHERE status IN (\(failing))), count(*),
                    count(*) FILTER (WHERE status IN (\(failing)) AND name <> ALL(string_to_array(?, chr(31))))
                FROM host
                """, .text(own.joined(separator: "\u{1F}"))) {
                ($0.int(0) ?? 0, $0.int(1) ?? 0, $0.int(2) ?? 0)
            }.first ?? (0, 0, 0)
            guard counts.2 > 0 else { return nil }
            switch maxFail {
            case .count(let limit) where counts.0 > limit:
                return "max-fail \(limit) exceeded across the run's controllers: \(counts.0) hosts failed"
            case .percent(let percent) where Double(counts.0) * 100 > percent * Double(counts.1):
                return "max-fail \(RolloutFlags.text(maxFail)) exceeded across the run's controllers: \(counts.0) of \(counts.1) hosts failed"
            default:
                break
            }
            guard let maxFailBatch else { return nil }
            let batches = try database.query("""
                SELECT batch, count(*) FILTER (WHERE status IN (\(failing))), count(*),
                    count(*) FILTER (WHERE status IN (\(failing)) AND name <> ALL(string_to_array(?, chr(31))))
                FROM host WHERE batch IS NOT NULL GROUP BY batch ORDER BY batch
                """, .text(own.joined(separator: "\u{1F}"))) {
                (batch: $0.int(0) ?? 0, failed: $0.int(1) ?? 0, size: $0.int(2) ?? 0, others: $0.int(3) ?? 0)
            }
            guard let over = batches.first(where: { $0.others > 0 && Double($0.failed) * 100 > maxFailBatch * Double($0.size) }) else { return nil }
            return "max-fail-batch \(RolloutPolicy.percent(maxFailBatch)) exceeded in the run's batch \(over.batch + 1) across its controllers: "
                + "\(over.failed) of \(over.size) hosts failed"
        }
    }
}

extension PostgresJournals {
    /// See ``Journal/createOrJoin(at:run:)``.
    func createOrJoin(_ run: RunRecord) throws -> (journal: Journal, joined: Bool) {
        try Journal.validateRunID(run.id)
        return try database.transaction {
            // Controllers starting together: one creates, the others join what it made.
            try database.run("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))", .integer(Self.layoutLock), .text(run.id))
            guard let sequence = try database.query("SELECT seq FROM flotilla.runs WHERE id = ?", .text(run.id), row: { $0.int(0) }).first ?? nil else {
                return (try create(run), false)
            }
            try database.execute("SET search_path TO \(Self.schemaName(sequence))")
            let json = try database.query("SELECT record_json FROM run", row: { $0.text(0) ?? "" }).first ?? ""
            var shared = try Journal.decodeRecord(Data(json.utf8), schema: Journal.schemaVersion)
            let differences = try Journal.joinDifferences(run, shared)
            guard differences.isEmpty else {
                throw JoinRefusal(message: "run \(run.id) in \(url.redacted) was started with other flags; to join it, use the run's: "
                                  + differences.joined(separator: "; "))
            }
            let known = Set(shared.hosts.map(\.name))
            let added = run.hosts.filter { !known.contains($0.name) }
            try Journal.insertHosts(added, from: shared.hosts.count, of: run.id, into: database)
            try Self.insertGroups(added, into: database)
            shared.hosts += added
            for (index, batch) in run.batches.enumerated() {
                let mine = batch.filter { name in added.contains { $0.name == name } }
                if index < shared.batches.count {
                    shared.batches[index] += mine
                } else {
                    shared.batches.append(mine)
                    try database.run("INSERT INTO batch (idx) VALUES (?)", .int(index))
                }
            }
            try database.run("UPDATE run SET record_json = ?", .text(try Journal.encodeRecord(shared)))
            return (journal(runID: run.id, sequence: sequence), true)
        }
    }
}
