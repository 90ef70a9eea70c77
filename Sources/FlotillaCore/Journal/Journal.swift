import CSQLite
import Foundation

/// The durable journal of one run: an SQLite database at
/// `<stateDir>/runs/<id>/journal.sqlite`.
///
/// ``create(stateDir:run:)`` stores the whole ``RunRecord`` before anything runs; every
/// transition afterwards (a step started or finished, a host's status, a batch, the run's
/// state, an operator event) is one transaction that is on disk when the call returns
/// (WAL with `synchronous=FULL`: each commit fsyncs the log). So a controller killed at
/// any instant loses at most the results of steps in flight, which ``load()`` shows as
/// `running`.
///
/// Secrets are never stored: no method takes a password, a passphrase or a key, and the
/// record's `options` hold policy and connection flags only (callers must not put
/// secrets there). Step output tails are stored as given.
///
/// Files are owner-only (directories 0700, the database and its -wal/-shm files 0600), and
/// a state dir that another user owns or can write to is refused.
///
/// Confinement: a `Journal` owns one SQLite connection and is not thread-safe. It is not
/// Sendable; the engine creates or opens it and then uses it from one actor only (the
/// connection may move between threads, as an actor's executor does, but never serve two
/// at once). Other processes may read the same file at the same time (`flotilla show`
/// while a run is going): WAL readers do not block the writer.
public final class Journal {
    /// The id of the run.
    public let runID: String
    /// The database file; for a PostgreSQL journal, its address (password redacted).
    public let file: URL
    /// What messages name: the file's path, or the PostgreSQL address (password redacted)
    /// and the run.
    public let location: String
    let database: any JournalDatabase
    /// The schema of this file (``schemaVersion``, or 1 for a journal an older flotilla
    /// wrote: the tables are the same, only the stored record differs).
    public let schema: Int
    /// Set by ``seal(state:reason:at:)``: every later transition is refused.
    private var sealed = false
    /// For a run in a shared PostgreSQL journal: its number there (the key of its
    /// schema, of its host holds and of its control channel).
    public internal(set) var sharedRun: Int?

    /// The schema this code writes; it reads this one and every older one. Stored as
    /// `PRAGMA user_version`.
    /// - 1: the record's `options` are a map of flag texts, a host's skip cause is the
    ///   text users read (`skipReason`).
    /// - 2: `options` are a ``RunOptions``, a host's skip cause a ``SkipCause`` (`skip`).
    /// - 3: a step has the token of its detached attempt (`token`, recorded when it starts),
    ///   how many times the controller re-attached to it (`reattached`), and may be
    ///   `unknown` (SPEC §8.1). A journal of schema 1 or 2 gets these two columns when it
    ///   is opened (they are additive: older readers ignore them) and keeps its number,
    ///   which names the format of its stored record. An artifact has its `size` and
    ///   `sha256` (a backup's, SPEC §8.4); a journal without them gets them when opened,
    ///   the same additive way, whatever its number.
    public static let schemaVersion = 3
    /// `PRAGMA application_id` of every journal ("Flot"), so a stray database is not taken
    /// for one.
    static let applicationID: Int64 = 0x466C_6F74
    static let fileName = "journal.sqlite"
    /// The states ``runStatus(state:haltReason:at:)`` accepts: all but `created`.
    public static let runStates = Set(RunState.allCases).subtracting([.created])
    /// Step statuses that are final: a step recorded so is never started again.
    static let doneStepStatuses: Set<StepRunStatus> = [.succeeded, .skipped]

    init(database: any JournalDatabase, file: URL, location: String, runID: String, schema: Int) {
        self.database = database
        self.file = file
        self.location = location
        self.runID = runID
        self.schema = schema
    }

    /// A journal on an SQLite file, its schema read from the file.
    private convenience init(database: SQLiteDatabase, file: URL, runID: String) throws {
        let schema = Int(try database.query("PRAGMA user_version") { $0.int64(0) }.first.flatMap { $0 } ?? 0)
        self.init(database: database, file: file, location: file.path, runID: runID, schema: schema)
    }

    /// Gives a journal of schema 1 or 2 the step columns of schema 3, in one transaction.
    private func addStepColumns() throws {
        guard schema < 3 else { return }
        let columns = try database.query("SELECT name FROM pragma_table_info('step')") { $0.text(0) ?? "" }
        guard !columns.contains("token") else { return }
        try database.transaction {
            try database.execute("ALTER TABLE step ADD COLUMN token TEXT; ALTER TABLE step ADD COLUMN reattached INTEGER NOT NULL DEFAULT 0")
        }
    }

    /// Gives a journal written before artifacts had a size and a SHA-256 those columns.
    private func addArtifactColumns() throws {
        let columns = try database.query("SELECT name FROM pragma_table_info('artifact')") { $0.text(0) ?? "" }
        guard !columns.contains("sha256") else { return }
        try database.transaction {
            try database.execute("ALTER TABLE artifact ADD COLUMN size INTEGER; ALTER TABLE artifact ADD COLUMN sha256 TEXT")
        }
    }

    /// Closes the database (idempotent; also done on deinit). Transitions after it throw.
    /// For a PostgreSQL journal this also releases the hosts this controller held.
    public func close() {
        // The server lets a session's advisory locks go only once it notices the session
        // ended: released here, so whoever comes next finds the hosts free at once.
        // Nothing to do when the connection is gone already (its locks went with it).
        if sharedRun != nil { _ = try? database.run("SELECT pg_advisory_unlock_all()") }
        database.close()
    }

    // MARK: - Creating and opening

    /// Creates the journal of a new run and stores `run` in it, in one transaction.
    ///
    /// Creates `stateDir` (0700) and `stateDir/runs` (0700) if missing. The run appears
    /// under `runs/<id>` only once complete: it is built in a hidden directory and renamed
    /// into place, so a crash during creation leaves no half-made run behind.
    ///
    /// - Throws: ``JournalError`` `.unsafePath` if the state dir or the runs dir is owned
    ///   by another user or writable by group or others; `.runExists` if the id is taken;
    ///   `.invalidTransition` for an id that is not a plain name; ``SQLiteError`` if the
    ///   database cannot be written.
    public static func create(stateDir: URL, run: RunRecord) throws -> Journal {
        try validateRunID(run.id)
        let runs = stateDir.appendingPathComponent("runs")
        try PrivateFiles.makeDirectory(stateDir, what: "state dir")
        try PrivateFiles.makeDirectory(runs, what: "runs dir")
        let destination = runs.appendingPathComponent(run.id)
        if PrivateFiles.exists(destination) { throw runExists(run.id, runs) }

        let staging = runs.appendingPathComponent(".creating-\(run.id)-\(UInt32.random(in: 0...UInt32.max))")
        try PrivateFiles.makeDirectory(staging, what: "run dir")
        do {
            let stagingFile = staging.appendingPathComponent(fileName)
            // SQLite gives its -wal and -shm files the mode of the database file, so the
            // file is made 0600 before SQLite ever opens it.
            try PrivateFiles.createFile(stagingFile)
            let database = try openDatabase(stagingFile, mode: .readWrite, new: true)
            try database.transaction {
                try createSchema(database)
                try insert(run, into: database, location: stagingFile.path)
            }
            database.close()
            if rename(staging.path, destination.path) != 0 {
                let number = errno
                if number == EEXIST || number == ENOTEMPTY { throw runExists(run.id, runs) }
                throw JournalError(.io, path: destination.path,
                                   "cannot move the new run into \(PrivateFiles.display(destination)): \(PrivateFiles.errorText(number))")
            }
        } catch {
            // The creation's error is the one to report; a hidden staging dir left behind is
            // never listed as a run.
            try? FileManager.default.removeItem(at: staging)
            throw error
        }
        try PrivateFiles.syncDirectory(runs)
        let file = destination.appendingPathComponent(fileName)
        return try Journal(database: try openDatabase(file, mode: .readWrite), file: file, runID: run.id)
    }

    /// Opens the journal of run `runID` in `stateDir`, or of the latest run there (by
    /// creation time) when `runID` is nil, for reading and writing.
    ///
    /// - Throws: ``JournalError`` `.noRuns` when the state dir holds no run, `.unknownRun`
    ///   (listing the known ids) for an id it does not hold, `.unsafePath` as for
    ///   ``create(stateDir:run:)``, `.notAJournal` or `.unsupportedSchema` for a file this
    ///   flotilla cannot read.
    public static func open(stateDir: URL, runID: String?) throws -> Journal {
        let runs = stateDir.appendingPathComponent("runs")
        let id: String
        if let runID {
            try validateRunID(runID)
            try checkStateDir(stateDir, runs: runs)
            guard PrivateFiles.exists(runs.appendingPathComponent(runID)) else {
                let known = try runIDs(in: runs)
                guard !known.isEmpty else { throw noRuns(stateDir) }
                throw JournalError(.unknownRun, path: runs.path,
                                   "no run \(runID) in \(PrivateFiles.display(stateDir)); known runs: \(knownRuns(known))")
            }
            id = runID
        } else {
            let summaries = try listRuns(stateDir: stateDir)
            guard let latest = summaries.last else { throw noRuns(stateDir) }
            // An unreadable latest run is opened anyway, to throw why: resuming an older
            // run instead would be a surprise.
            id = latest.id
        }
        let directory = runs.appendingPathComponent(id)
        try PrivateFiles.check(directory, what: "run dir", directory: true)
        let file = directory.appendingPathComponent(fileName)
        guard PrivateFiles.exists(file) else {
            throw JournalError(.notAJournal, path: file.path, "run \(id) has no journal (\(PrivateFiles.display(file)) is missing)")
        }
        try PrivateFiles.check(file, what: "journal", directory: false)
        let journal = try Journal(database: try openDatabase(file, mode: .readWrite), file: file, runID: id)
        try journal.addStepColumns()
        try journal.addArtifactColumns()
        let recorded = try journal.database.query("SELECT id FROM run") { $0.text(0) }
        guard recorded == [id] else {
            throw JournalError(.notAJournal, path: file.path, "\(PrivateFiles.display(file)) is not the journal of run \(id)")
        }
        return journal
    }

    /// Every run in `stateDir`, oldest first (by creation time, then id). A run whose
    /// journal cannot be read is listed with `problem` set. A state dir that does not
    /// exist has no runs.
    ///
    /// - Throws: ``JournalError`` `.unsafePath` for a state dir or runs dir that is not
    ///   private, `.io` if the runs dir cannot be read.
    public static func listRuns(stateDir: URL) throws -> [RunSummary] {
        let runs = stateDir.appendingPathComponent("runs")
        guard PrivateFiles.exists(stateDir) else { return [] }
        try checkStateDir(stateDir, runs: runs)
        return try runIDs(in: runs).map { summary(id: $0, directory: runs.appendingPathComponent($0)) }
            .sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    // MARK: - Transitions

    /// Runs several transitions in one transaction: one commit (one fsync) for all of
    /// them, durable when this returns. A transition that throws is undone alone (its
    /// error is returned in its place); the others still commit.
    public func batch(_ transitions: [() throws -> Void]) throws -> [Error?] {
        try requireOpen()
        return try database.transaction {
            transitions.map { transition in
                do {
                    try database.transaction { try transition() }
                    return nil
                } catch {
                    return error
                }
            }
        }
    }

    /// Records that `step` (its index in the host's steps) of `host` started: status
    /// `running`, a new attempt, the previous attempt's result cleared. For a detached
    /// step, the attempt's token (``DetachedStep/Token``) is recorded with it, before the
    /// command starts: what `resume` re-attaches to.
    ///
    /// - Returns: the attempt's number (1 for the first).
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host or step, or a
    ///   step recorded as succeeded or skipped (a finished step is never run again).
    @discardableResult
    public func stepStarted(host: String, step: Int, at: Date, detached: Bool = false) throws -> Int {
        try transaction {
            let changed = try database.run("""
                UPDATE step SET status = 'running', started_ms = ?, finished_ms = NULL, duration_ms = NULL,
                    exit_status = NULL, stdout_tail = '', stderr_tail = '', error = NULL, attempts = attempts + 1,
                    token = NULL, reattached = 0
                WHERE host = ? AND idx = ? AND status NOT IN ('succeeded', 'skipped')
                """, Self.ms(at), .text(host), .int(step))
            if changed == 0 { throw try missingStep(host: host, step: step, starting: true) }
            let attempt = try database.query("SELECT attempts FROM step WHERE host = ? AND idx = ?", .text(host), .int(step)) {
                $0.int(0) ?? 0
            }.first ?? 0
            if detached {
                let token = DetachedStep.Token(run: runID, host: host, step: step, attempt: attempt)
                try database.run("UPDATE step SET token = ? WHERE host = ? AND idx = ?", .text(token.path), .text(host), .int(step))
            }
            return attempt
        }
    }

    /// Records that the controller re-attached to `step` of `host` (after a lost
    /// connection, or on resume) instead of running it again.
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host or step.
    public func stepReattached(host: String, step: Int) throws {
        try transaction {
            let changed = try database.run("UPDATE step SET reattached = reattached + 1 WHERE host = ? AND idx = ?", .text(host), .int(step))
            if changed == 0 { throw try missingStep(host: host, step: step, starting: false) }
        }
    }

    /// Records how `step` of `host` ended. `status` is final (succeeded, failed, skipped,
    /// cancelled or unknown); a step never started (skipped, cancelled) may be finished
    /// directly. With `cluster`, the step's cluster is recorded as done by `host` in the
    /// same transaction (SPEC §8.1): neither is on disk without the other.
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host or step, a
    ///   status that is not final, or a cluster already done by another host (as
    ///   ``clusterStepDone(group:value:step:byHost:at:)``); nothing is recorded then.
    public func stepFinished(host: String, step: Int, status: StepRunStatus, exitStatus: Int32?, stdoutTail: String,
                             stderrTail: String, error: String?, at: Date, durationMS: Int, cluster: ClusterMark? = nil) throws {
        guard status != .pending, status != .running else {
            throw JournalError(.invalidTransition, path: location, "a step cannot finish as \(status.rawValue)")
        }
        try transaction {
            let changed = try database.run("""
                UPDATE step SET status = ?, exit_status = ?, stdout_tail = ?, stderr_tail = ?, error = ?,
                    finished_ms = ?, duration_ms = ?
                WHERE host = ? AND idx = ?
                """, .text(status.rawValue), .int(exitStatus.map(Int.init)), .text(stdoutTail), .text(stderrTail),
                .string(error), Self.ms(at), .int(durationMS), .text(host), .int(step))
            if changed == 0 { throw try missingStep(host: host, step: step, starting: false) }
            if let cluster {
                try clusterStepDone(group: cluster.group, value: cluster.value, step: cluster.step, byHost: host, at: at)
            }
        }
    }

    /// A once-per-cluster step's done-marker, recorded with the step's result.
    public struct ClusterMark: Sendable, Equatable {
        /// The host variable (`st2_cluster`), its value, and the step's cluster key.
        public var group: String
        public var value: String
        public var step: Int

        public init(group: String, value: String, step: Int) {
            self.group = group
            self.value = value
            self.step = step
        }
    }

    /// Records a host's status. `running` keeps the first start time and clears the
    /// finish time; a final status (succeeded, failed, unreachable, skipped, cancelled)
    /// sets the finish time; `not_started` clears it. `error` replaces the previous one.
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host.
    public func hostStatus(host: String, status: HostRunStatus, error: String?, at: Date) throws {
        let times: String
        switch status {
        case .running: times = "started_ms = COALESCE(started_ms, ?1), finished_ms = NULL"
        case .notStarted: times = "finished_ms = NULL"
        default: times = "finished_ms = ?1"
        }
        try transaction {
            let changed = try database.run("UPDATE host SET \(times), status = ?2, error = ?3 WHERE name = ?4",
                                           Self.ms(at), .text(status.rawValue), .string(error), .text(host))
            if changed == 0 { throw unknownHost(host) }
        }
    }

    /// Records that batch `index` started (the first start is kept; a resumed batch is
    /// no longer finished).
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an index the run does not have.
    public func batchStarted(index: Int, at: Date) throws {
        try transaction {
            let changed = try database.run("UPDATE batch SET started_ms = COALESCE(started_ms, ?), finished_ms = NULL WHERE idx = ?",
                                           Self.ms(at), .int(index))
            if changed == 0 { throw unknownBatch(index) }
        }
    }

    /// Records that batch `index` finished.
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an index the run does not have.
    public func batchFinished(index: Int, at: Date) throws {
        try transaction {
            let changed = try database.run("UPDATE batch SET finished_ms = ? WHERE idx = ?", Self.ms(at), .int(index))
            if changed == 0 { throw unknownBatch(index) }
        }
    }

    /// Records that `byHost` ran the once-per step `step` for the hosts whose variable
    /// `group` is `value`, so no other host of that cluster runs it. Recording the same
    /// host again is not an error (the first time is kept).
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host or when another
    ///   host is already recorded for this step of this cluster.
    public func clusterStepDone(group: String, value: String, step: Int, byHost: String, at: Date) throws {
        try transaction {
            try requireHost(byHost)
            if let done = try doneBy(group: group, value: value, step: step) {
                guard done == byHost else {
                    throw JournalError(.invalidTransition, path: location,
                                       "step \(step) for \(group)=\(value) is already recorded as run by \(done), not \(byHost)")
                }
                return
            }
            try database.run("INSERT INTO cluster_step (grp, value, step, host, done_ms) VALUES (?, ?, ?, ?, ?)",
                             .text(group), .text(value), .int(step), .text(byHost), Self.ms(at))
        }
    }

    /// The host recorded as having run once-per step `step` for `group` = `value`, if any.
    public func clusterStepDoneBy(group: String, value: String, step: Int) throws -> String? {
        try doneBy(group: group, value: value, step: step)
    }

    /// Records the run's state: `running` (keeps the first start time, clears the finish
    /// time), or a final one (`halted`, `stopped`, `succeeded`, `completed_with_failures`)
    /// which sets the finish time. `haltReason` replaces the previous one.
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for `created`.
    public func runStatus(state: RunState, haltReason: String?, at: Date) throws {
        guard Self.runStates.contains(state) else {
            throw JournalError(.invalidTransition, path: location,
                               "'\(state.rawValue)' is not a state a run goes to (\(Self.runStates.map(\.rawValue).sorted().joined(separator: ", ")))")
        }
        let times = state == .running ? "started_ms = COALESCE(started_ms, ?1), finished_ms = NULL" : "finished_ms = ?1"
        try transaction {
            try database.run("UPDATE run SET \(times), state = ?2, halt_reason = ?3", Self.ms(at), .text(state.rawValue), .string(haltReason))
        }
    }

    /// Ends the run's record at once, for a controller that exits without waiting for
    /// its steps in flight (a second SIGINT): records `state` (`stopped`) with `reason`
    /// and an event, in one transaction, then refuses every later transition of this
    /// connection. So the steps in flight stay `running` in the journal, whatever their
    /// channels report while they are torn down, and resume re-attaches to them.
    ///
    /// - Throws: as ``runStatus(state:haltReason:at:)``; the journal is sealed even then.
    public func seal(state: RunState, reason: String, at: Date) throws {
        defer { sealed = true }
        try transaction {
            try runStatus(state: state, haltReason: reason, at: at)
            try event(kind: "signal", message: reason, at: at)
        }
    }

    /// Appends an operator or audit line (`kind`: `ctl`, `signal`, `resume`, ...).
    public func event(kind: String, message: String, at: Date) throws {
        try transaction {
            try database.run("INSERT INTO event (at_ms, kind, message) VALUES (?, ?, ?)", Self.ms(at), .text(kind), .text(message))
        }
    }

    /// Records a file kept for `host` under `name` (replacing an earlier one of that name),
    /// with its size and SHA-256 when known (a backup's always are).
    ///
    /// - Throws: ``JournalError`` `.invalidTransition` for an unknown host.
    public func artifact(host: String, name: String, path: String, size: Int64? = nil, sha256: String? = nil) throws {
        try transaction {
            try requireHost(host)
            try database.run("""
                INSERT INTO artifact (host, name, path, size, sha256) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (host, name) DO UPDATE SET path = excluded.path, size = excluded.size, sha256 = excluded.sha256
                """,
                             .text(host), .text(name), .text(path), size.map { .integer($0) } ?? .null, .string(sha256))
        }
    }

    // MARK: - Reading

    /// Reads the whole journal, as one consistent snapshot.
    ///
    /// - Throws: ``JournalError`` `.notAJournal` if the stored record cannot be decoded,
    ///   ``SQLiteError`` if the database cannot be read.
    public func load() throws -> JournalState {
        try database.transaction(immediate: false) {
            let runs = try database.query("SELECT record_json, state, halt_reason, started_ms, finished_ms FROM run") {
                ($0.text(0) ?? "", $0.text(1) ?? "", $0.text(2), $0.int64(3), $0.int64(4))
            }
            guard runs.count == 1, let run = runs.first else {
                throw JournalError(.notAJournal, path: location, "\(location) holds \(runs.count) runs instead of one")
            }
            let record: RunRecord
            do {
                record = try Self.decodeRecord(Data(run.0.utf8), schema: schema)
            } catch {
                throw JournalError(.notAJournal, path: location, "the run record in \(location) cannot be read: \(error)")
            }
            guard let state = RunState(rawValue: run.1) else {
                throw JournalError(.notAJournal, path: location, "run \(record.id) has an unknown state '\(run.1)'")
            }
            var steps: [String: [JournalState.Step]] = [:]
            for (host, step) in try database.query("""
                SELECT host, idx, name, status, exit_status, stdout_tail, stderr_tail, error, started_ms, finished_ms,
                    duration_ms, attempts, token, reattached
                FROM step ORDER BY host, idx
                """, row: { row in
                    (row.text(0) ?? "", JournalState.Step(
                        index: row.int(1) ?? 0, name: row.text(2) ?? "", status: try stepStatus(row.text(3)),
                        exitStatus: row.int64(4).map { Int32(truncatingIfNeeded: $0) }, stdoutTail: row.text(5) ?? "",
                        stderrTail: row.text(6) ?? "", error: row.text(7), startedAt: Self.date(row.int64(8)),
                        finishedAt: Self.date(row.int64(9)), durationMS: row.int(10), attempts: row.int(11) ?? 0,
                        token: row.text(12), reattached: row.int(13) ?? 0))
                }) {
                steps[host, default: []].append(step)
            }
            let hosts = try database.query("SELECT name, status, error, started_ms, finished_ms FROM host ORDER BY position") { row in
                let name = row.text(0) ?? ""
                guard let status = HostRunStatus(rawValue: row.text(1) ?? "") else {
                    throw JournalError(.notAJournal, path: location, "host \(name) has an unknown status '\(row.text(1) ?? "")'")
                }
                return JournalState.Host(name: name, status: status, error: row.text(2), startedAt: Self.date(row.int64(3)),
                                         finishedAt: Self.date(row.int64(4)), steps: steps[name] ?? [])
            }
            let batches = try database.query("SELECT idx, started_ms, finished_ms FROM batch ORDER BY idx") { row in
                let index = row.int(0) ?? 0
                return JournalState.Batch(index: index, hosts: record.batches.indices.contains(index) ? record.batches[index] : [],
                                          startedAt: Self.date(row.int64(1)), finishedAt: Self.date(row.int64(2)))
            }
            let clusterSteps = try database.query("SELECT grp, value, step, host, done_ms FROM cluster_step ORDER BY done_ms, grp, value, step") {
                JournalState.ClusterStep(group: $0.text(0) ?? "", value: $0.text(1) ?? "", step: $0.int(2) ?? 0, host: $0.text(3) ?? "",
                                         at: Self.date($0.int64(4)) ?? Date(timeIntervalSince1970: 0))
            }
            let events = try database.query("SELECT seq, at_ms, kind, message FROM event ORDER BY seq") {
                JournalState.Event(sequence: $0.int(0) ?? 0, at: Self.date($0.int64(1)) ?? Date(timeIntervalSince1970: 0),
                                   kind: $0.text(2) ?? "", message: $0.text(3) ?? "")
            }
            let artifacts = try database.query("SELECT host, name, path, size, sha256 FROM artifact ORDER BY host, name") {
                JournalState.Artifact(host: $0.text(0) ?? "", name: $0.text(1) ?? "", path: $0.text(2) ?? "", size: $0.int64(3), sha256: $0.text(4))
            }
            return JournalState(record: record, state: state, haltReason: run.2, startedAt: Self.date(run.3),
                                finishedAt: Self.date(run.4), hosts: hosts, batches: batches, clusterSteps: clusterSteps,
                                events: events, artifacts: artifacts)
        }
    }

    // MARK: - Schema

    /// Version 3 (see ``schemaVersion``). Times are INTEGER milliseconds since 1970 (UTC), readable with
    /// `datetime(x / 1000, 'unixepoch')`. `run.record_json` is the whole RunRecord as JSON;
    /// `host`, `step` and `batch` have one row each, made at creation, so a transition is
    /// a single-row UPDATE.
    static let schema = """
        CREATE TABLE run (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            name TEXT,
            target_version TEXT,
            created_ms INTEGER NOT NULL,
            record_json TEXT NOT NULL,
            state TEXT NOT NULL,
            halt_reason TEXT,
            started_ms INTEGER,
            finished_ms INTEGER
        );
        CREATE TABLE host (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL UNIQUE,
            address TEXT NOT NULL,
            batch INTEGER,
            status TEXT NOT NULL,
            error TEXT,
            started_ms INTEGER,
            finished_ms INTEGER
        );
        CREATE TABLE step (
            host TEXT NOT NULL REFERENCES host (name),
            idx INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            exit_status INTEGER,
            stdout_tail TEXT NOT NULL DEFAULT '',
            stderr_tail TEXT NOT NULL DEFAULT '',
            error TEXT,
            started_ms INTEGER,
            finished_ms INTEGER,
            duration_ms INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            token TEXT,
            reattached INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (host, idx)
        ) WITHOUT ROWID;
        CREATE TABLE batch (
            idx INTEGER PRIMARY KEY,
            started_ms INTEGER,
            finished_ms INTEGER
        );
        CREATE TABLE cluster_step (
            grp TEXT NOT NULL,
            value TEXT NOT NULL,
            step INTEGER NOT NULL,
            host TEXT NOT NULL REFERENCES host (name),
            done_ms INTEGER NOT NULL,
            PRIMARY KEY (grp, value, step)
        ) WITHOUT ROWID;
        CREATE TABLE event (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            kind TEXT NOT NULL,
            message TEXT NOT NULL
        );
        CREATE TABLE artifact (
            host TEXT NOT NULL REFERENCES host (name),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER,
            sha256 TEXT,
            PRIMARY KEY (host, name)
        ) WITHOUT ROWID;
        """

    private static func createSchema(_ database: SQLiteDatabase) throws {
        try database.execute(schema)
        try database.execute("PRAGMA user_version = \(schemaVersion); PRAGMA application_id = \(applicationID)")
    }

    static func insert(_ run: RunRecord, into database: any JournalDatabase, location: String) throws {
        try database.run("""
            INSERT INTO run (id, kind, name, target_version, created_ms, record_json, state) VALUES (?, ?, ?, ?, ?, ?, ?)
            """, .text(run.id), .text(run.kind.rawValue), .string(run.name), .string(run.targetVersion), ms(run.createdAt),
            .text(try encodeRecord(run)), .text(RunState.created.rawValue))
        try insertHosts(run.hosts, from: 0, of: run.id, into: database)
        for index in run.batches.indices {
            try database.run("INSERT INTO batch (idx) VALUES (?)", .int(index))
        }
    }

    /// The record as stored: JSON with sorted keys.
    static func encodeRecord(_ run: RunRecord) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Dates as Foundation's own numbers: the record reads back exactly equal.
        encoder.dateEncodingStrategy = .deferredToDate
        return String(decoding: try encoder.encode(run), as: UTF8.self)
    }

    /// Rows for `hosts` and their steps, at positions from `first` on.
    static func insertHosts(_ hosts: [RunHost], from first: Int, of runID: String, into database: any JournalDatabase) throws {
        let run = (id: runID, hosts: hosts)
        for (offset, host) in run.hosts.enumerated() {
            let position = first + offset
            do {
                try database.run("INSERT INTO host (name, position, address, batch, status) VALUES (?, ?, ?, ?, ?)",
                                 .text(host.name), .int(position), .text(host.address), .int(host.batch),
                                 .text(HostRunStatus.notStarted.rawValue))
            } catch where database.isUniqueViolation(error) {
                throw JournalError(.invalidTransition, "run \(run.id) lists host \(host.name) twice")
            }
            for (index, step) in host.steps.enumerated() {
                try database.run("INSERT INTO step (host, idx, name, status) VALUES (?, ?, ?, ?)",
                                 .text(host.name), .int(index), .text(step.name), .text(StepRunStatus.pending.rawValue))
            }
        }
    }

    /// Opens and configures a connection, and checks that the file is a journal this code
    /// reads (unless `new`).
    private static func openDatabase(_ file: URL, mode: SQLiteDatabase.Mode, new: Bool = false) throws -> SQLiteDatabase {
        let database = try SQLiteDatabase(path: file.path, mode: mode)
        // Another process reading or writing the file briefly holds locks; wait for them.
        try database.setBusyTimeout(milliseconds: 10_000)
        if !new { try checkSchema(database, file: file) }
        if mode == .readWrite {
            let journalMode = try database.query("PRAGMA journal_mode = WAL") { $0.text(0) }.first ?? nil
            guard journalMode?.lowercased() == "wal" else {
                throw JournalError(.io, path: file.path,
                                   "\(file.path) cannot use write-ahead logging (journal mode \(journalMode ?? "unknown")); is its file system a network one?")
            }
            try database.execute("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")
        }
        return database
    }

    private static func checkSchema(_ database: SQLiteDatabase, file: URL) throws {
        let applicationID: Int64?
        let version: Int64?
        do {
            applicationID = try database.query("PRAGMA application_id") { $0.int64(0) }.first ?? nil
            version = try database.query("PRAGMA user_version") { $0.int64(0) }.first ?? nil
        } catch let error as SQLiteError {
            throw JournalError(.notAJournal, path: file.path, "\(file.path) is not a flotilla journal: \(error.message)")
        }
        guard applicationID == Self.applicationID, let version, version >= 1 else {
            throw JournalError(.notAJournal, path: file.path, "\(file.path) is not a flotilla journal")
        }
        guard version <= schemaVersion else {
            throw JournalError(.unsupportedSchema, path: file.path,
                               "\(file.path) was written by a newer flotilla (journal schema \(version); this one reads up to \(schemaVersion))")
        }
    }

    private static func summary(id: String, directory: URL) -> RunSummary {
        let file = directory.appendingPathComponent(fileName)
        do {
            try PrivateFiles.check(directory, what: "run dir", directory: true)
            try PrivateFiles.check(file, what: "journal", directory: false)
            let database = try openDatabase(file, mode: .readOnly)
            defer { database.close() }
            return try readSummary(database, id: id, location: file.path, journal: file)
        } catch {
            // Only for the listing's order: an unreadable directory sorts first.
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory.path)
            let modified = attributes?[.modificationDate] as? Date ?? Date(timeIntervalSince1970: 0)
            return RunSummary(id: id, kind: nil, createdAt: modified, state: nil, hostCounts: [:], journal: file,
                              problem: "run \(id) cannot be read: \(error)")
        }
    }

    /// One run's line of the listing, read in one snapshot (the same queries on either
    /// database).
    static func readSummary(_ database: any JournalDatabase, id: String, location: String, journal: URL) throws -> RunSummary {
        return try database.transaction(immediate: false) {
            let counts = try database.query("SELECT status, count(*) FROM host GROUP BY status") {
                (HostRunStatus(rawValue: $0.text(0) ?? ""), $0.int(1) ?? 0)
            }
            let rows = try database.query("""
                SELECT id, kind, name, target_version, created_ms, state, halt_reason, started_ms, finished_ms FROM run
                """) { row in
                guard let kind = RunKind(rawValue: row.text(1) ?? ""), let state = RunState(rawValue: row.text(5) ?? "") else {
                    throw JournalError(.notAJournal, path: location, "run \(id) has an unknown kind or state")
                }
                return RunSummary(id: row.text(0) ?? "", kind: kind, name: row.text(2), targetVersion: row.text(3),
                           createdAt: date(row.int64(4)) ?? Date(timeIntervalSince1970: 0), state: state,
                           haltReason: row.text(6), startedAt: date(row.int64(7)), finishedAt: date(row.int64(8)),
                           hostCounts: counts.reduce(into: [:]) { if let status = $1.0 { $0[status, default: 0] += $1.1 } },
                           journal: journal, problem: nil)
            }
            guard rows.count == 1, let summary = rows.first, summary.id == id else {
                throw JournalError(.notAJournal, path: location, "\(location) is not the journal of run \(id)")
            }
            return summary
        }
    }

    // MARK: - Helpers

    /// A transition's transaction; refused once the journal is sealed.
    @discardableResult
    private func transaction<T>(_ body: () throws -> T) throws -> T {
        try requireOpen()
        return try database.transaction(body)
    }

    private func requireOpen() throws {
        if sealed {
            throw JournalError(.invalidTransition, path: location, "run \(runID) was stopped at once; its journal takes no more transitions")
        }
    }

    private static func checkStateDir(_ stateDir: URL, runs: URL) throws {
        guard PrivateFiles.exists(stateDir) else { throw noRuns(stateDir) }
        try PrivateFiles.check(stateDir, what: "state dir", directory: true)
        if PrivateFiles.exists(runs) { try PrivateFiles.check(runs, what: "runs dir", directory: true) }
    }

    /// The names of run directories (hidden entries are runs still being created).
    private static func runIDs(in runs: URL) throws -> [String] {
        guard PrivateFiles.exists(runs) else { return [] }
        do {
            return try FileManager.default.contentsOfDirectory(atPath: runs.path).filter { !$0.hasPrefix(".") }.sorted()
        } catch {
            throw JournalError(.io, path: runs.path, "cannot read \(PrivateFiles.display(runs)): \(error.localizedDescription)")
        }
    }

    /// Run ids become directory names: letters, digits, `.`, `_` and `-`, not starting
    /// with a dot.
    static func validateRunID(_ id: String) throws {
        let allowed = id.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)) }
        guard allowed, !id.isEmpty, !id.hasPrefix("."), id.utf8.count <= 200 else {
            throw JournalError(.invalidTransition, "'\(id)' is not a run id (letters, digits, '.', '_' and '-', not starting with '.')")
        }
    }

    /// The ids of an unknown run's message: the last 20, sorted.
    static func knownRuns(_ known: [String]) -> String {
        known.count > 20 ? known.suffix(20).joined(separator: ", ") + " (and \(known.count - 20) older)" : known.joined(separator: ", ")
    }

    private static func noRuns(_ stateDir: URL) -> JournalError {
        JournalError(.noRuns, path: stateDir.path,
                     "no runs yet in \(PrivateFiles.display(stateDir)) (flotilla upgrade or flotilla run start one)")
    }

    private static func runExists(_ id: String, _ runs: URL) -> JournalError {
        JournalError(.runExists, path: runs.appendingPathComponent(id).path, "run \(id) already exists in \(PrivateFiles.display(runs))")
    }

    private func unknownHost(_ host: String) -> JournalError {
        JournalError(.invalidTransition, path: location, "run \(runID) has no host \(host)")
    }

    private func unknownBatch(_ index: Int) -> JournalError {
        JournalError(.invalidTransition, path: location, "run \(runID) has no batch \(index)")
    }

    private func requireHost(_ host: String) throws {
        let found = try database.query("SELECT 1 FROM host WHERE name = ?", .text(host)) { _ in true }
        if found.isEmpty { throw unknownHost(host) }
    }

    /// Why no step row matched: an unknown host or step, or (when starting) a finished step.
    private func missingStep(host: String, step: Int, starting: Bool) throws -> JournalError {
        try requireHost(host)
        let rows = try database.query("SELECT name, status FROM step WHERE host = ? AND idx = ?", .text(host), .int(step)) {
            ($0.text(0) ?? "", $0.text(1) ?? "")
        }
        guard let (name, status) = rows.first else {
            let count = try database.query("SELECT count(*) FROM step WHERE host = ?", .text(host)) { $0.int(0) ?? 0 }.first ?? 0
            return JournalError(.invalidTransition, path: location, "host \(host) has no step \(step) (it has \(count))")
        }
        return JournalError(.invalidTransition, path: location,
                            "step \(step) (\(name)) of \(host) is recorded as \(status); a finished step is never run again")
    }

    private func doneBy(group: String, value: String, step: Int) throws -> String? {
        try database.query("SELECT host FROM cluster_step WHERE grp = ? AND value = ? AND step = ?",
                           .text(group), .text(value), .int(step)) { $0.text(0) }.first ?? nil
    }

    private func stepStatus(_ text: String?) throws -> StepRunStatus {
        guard let status = StepRunStatus(rawValue: text ?? "") else {
            throw JournalError(.notAJournal, path: location, "a step has an unknown status '\(text ?? "")'")
        }
        return status
    }

    static func ms(_ date: Date) -> SQLiteValue { .integer(Int64((date.timeIntervalSince1970 * 1000).rounded())) }

    static func date(_ milliseconds: Int64?) -> Date? { milliseconds.map { Date(timeIntervalSince1970: Double($0) / 1000) } }
}

@available(*, unavailable, message: "a Journal is confined to one actor or thread")
extension Journal: Sendable {}

// MARK: - The stored record, by schema

extension Journal {
    /// The run record stored in a journal of `schema`.
    ///
    /// - Throws: `DecodingError`, or ``RolloutFlags/FlagError`` for schema 1 options that
    ///   no longer parse.
    static func decodeRecord(_ json: Data, schema: Int) throws -> RunRecord {
        guard schema == 1 else { return try JSONDecoder().decode(RunRecord.self, from: json) }
        let old = try JSONDecoder().decode(RecordV1.self, from: json)
        let hosts = old.hosts.map { host in
            RunHost(name: host.name, address: host.address, batch: host.batch, groups: host.groups, fromVersion: host.fromVersion,
                    toVersion: host.toVersion, steps: host.steps, skip: host.skipReason.map(SkipCause.init(text:)))
        }
        return RunRecord(id: old.id, kind: old.kind, name: old.name, targetVersion: old.targetVersion, createdAt: old.createdAt,
                         hosts: hosts, batches: old.batches, options: try RunOptions(flags: old.options))
    }

    /// The record as schema 1 stored it.
    struct RecordV1: Codable {
        var id: String
        var kind: RunKind
        var name: String?
        var targetVersion: String?
        var createdAt: Date
        var hosts: [HostV1]
        var batches: [[String]]
        var options: [String: String]
    }

    struct HostV1: Codable {
        var name: String
        var address: String
        var batch: Int?
        var groups: [String: String]
        var fromVersion: String?
        var toVersion: String?
        var steps: [RunStep]
        var skipReason: String?
    }
}
