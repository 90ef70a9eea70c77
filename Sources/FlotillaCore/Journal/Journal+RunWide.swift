import Foundation

// The rules of a shared run that no one controller can decide alone (SPEC §8.6): each
// controller's policy orders and limits its own hosts; these transactions add what the
// other controllers' hosts say, so that batches, `--max-per` and once-per-cluster steps
// hold across the whole run. Nothing here applies to a state dir journal.
extension Journal {
    /// Whether a host of a shared run may start now.
    public enum RunWideStart: Sendable, Equatable {
        /// It may: it is recorded running, in the same transaction.
        case go
        /// Not yet; the reason stays the same while the cause does (it is shown once).
        case wait(String)
        /// The run halted: the host must not start.
        case halt(String)
    }

    /// One `--max-per` rule as it applies to the host about to start.
    public struct RunWideLimit: Sendable, Equatable {
        public var group: String
        public var limit: Int
        /// The host's value of `group`.
        public var value: String
        /// This controller's hosts with that value that started and have not finished.
        public var ownInFlight: Int

        public init(group: String, limit: Int, value: String, ownInFlight: Int) {
            self.group = group
            self.limit = limit
            self.value = value
            self.ownInFlight = ownInFlight
        }
    }

    /// The transaction-scoped advisory lock under which hosts of run `sharedRun` start:
    /// one bigint key (a space apart from the two-key locks that hold hosts), "Star" and
    /// the run's sequence number.
    private static func startLock(_ sharedRun: Int) -> Int64 { 0x5374_6172 << 32 | Int64(sharedRun) }

    /// Decides, in one transaction under the run's start lock, whether `host` (batch
    /// `batch`) starts now: not when `halt` says the run halted; not while a host of an
    /// earlier batch of the run, on another controller (not in `own`), has not finished —
    /// so the canary batch goes before everything, and batch N+1 after all of batch N;
    /// not while a `--max-per` rule is full counting the other controllers' hosts in
    /// flight. Otherwise records the host running and says go. Always go for a state dir
    /// journal.
    public func runWideStart(host: String, batch: Int?, own: [String], limits: [RunWideLimit], at now: Date,
                             halt: () throws -> String?) throws -> RunWideStart {
        guard let sharedRun else { return .go }
        let others = own.joined(separator: "\u{1F}")
        return try database.transaction {
            try database.run("SELECT pg_advisory_xact_lock(?)", .integer(Self.startLock(sharedRun)))
            if let reason = try halt() { return .halt(reason) }
            if let batch, case let (earlier, count)? = try database.query("""
                SELECT batch, count(*) FROM host
                WHERE batch < ? AND status IN ('not_started', 'running') AND name <> ALL(string_to_array(?, chr(31)))
                GROUP BY batch ORDER BY batch LIMIT 1
                """, .int(batch), .text(others), row: { ($0.int(0) ?? 0, $0.int(1) ?? 0) }).first {
                return .wait("the run's batch \(earlier + 1) has \(count == 1 ? "a host" : "hosts") not finished on other controllers; batch \(batch + 1) starts after it")
            }
            for rule in limits {
                let busy = try database.query("""
                    SELECT count(*) FROM host JOIN host_group ON host_group.host = host.name
                    WHERE host_group.grp = ? AND host_group.value = ? AND host.status = 'running'
                        AND host.name <> ALL(string_to_array(?, chr(31)))
                    """, .text(rule.group), .text(rule.value), .text(others)) { $0.int(0) ?? 0 }.first ?? 0
                if busy > 0 && busy + rule.ownInFlight >= max(1, rule.limit) {
                    return .wait("--max-per \(rule.group)=\(rule.limit): \(rule.group)=\(rule.value) is full with other controllers' hosts in flight")
                }
            }
            try hostStatus(host: host, status: .running, error: nil, at: now)
            return .go
        }
    }

    /// Where a barrier stands across the controllers of a shared run.
    public enum RunWideBarrier: Sendable, Equatable {
        case open
        /// Other controllers' hosts have yet to get there (`unstarted`: some have not started).
        case waiting(String, unstarted: Bool)
        /// It never opens: why.
        case broken(String)
    }

    /// Records that `host` (batch `batch`) reached the barrier `name` of `group=value`, and
    /// says whether every other controller's host of that group value (not in `own`, in a
    /// batch) got there too: one that ended without reaching it breaks it, and so does one
    /// not started in a later batch (it would wait for this batch, which waits for it).
    /// Always open for a state dir journal.
    public func meetRunWide(group: String, value: String, name: String, host: String, batch: Int?, own: [String]) throws -> RunWideBarrier {
        guard sharedRun != nil else { return .open }
        return try database.transaction {
            try database.run("INSERT INTO barrier_arrival (grp, value, name, host) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             .text(group), .text(value), .text(name), .text(host))
            let others = try database.query("""
                SELECT host.name, host.status, host.batch, EXISTS (SELECT 1 FROM barrier_arrival AS arrival
                    WHERE arrival.grp = host_group.grp AND arrival.value = host_group.value AND arrival.name = ? AND arrival.host = host.name)
                FROM host JOIN host_group ON host_group.host = host.name
                WHERE host_group.grp = ? AND host_group.value = ? AND host.batch IS NOT NULL AND host.name <> ALL(string_to_array(?, chr(31)))
                ORDER BY host.position
                """, .text(name), .text(group), .text(value), .text(own.joined(separator: "\u{1F}"))) {
                (name: $0.text(0) ?? "", status: HostRunStatus(rawValue: $0.text(1) ?? "") ?? .notStarted, batch: $0.int(2), arrived: $0.text(3) == "t")
            }
            var waiting: [String] = []
            var unstarted = false
            for other in others where !other.arrived {
                switch other.status {
                case .failed, .unreachable, .cancelled, .skipped:
                    return .broken("\(other.name) did not get there (\(other.status.rawValue) on another controller)")
                case .notStarted where (other.batch ?? 0) > (batch ?? 0):
                    return .broken("\(other.name) is in the run's batch \((other.batch ?? 0) + 1) on another controller, \(host) in batch \((batch ?? 0) + 1)")
                case .notStarted, .running:
                    waiting.append(other.name)
                    unstarted = unstarted || other.status == .notStarted
                case .succeeded:
                    continue // it went through without this barrier: not one of its hosts
                }
            }
            return waiting.isEmpty ? .open : .waiting("\(waiting.joined(separator: ", ")) on other controllers not there yet", unstarted: unstarted)
        }
    }

    /// The latest of `commands` that `flotilla ctl` sent to the run through the journal.
    public func lastControl(among commands: [String]) throws -> String? {
        try database.query("SELECT message FROM event WHERE kind = 'ctl' AND message = ANY(string_to_array(?, chr(31))) ORDER BY seq DESC LIMIT 1",
                           .text(commands.joined(separator: "\u{1F}"))) { $0.text(0) }.first ?? nil
    }

    /// Where a once-per-cluster step stands across the controllers of a shared run.
    public enum RunWideClusterClaim: Sendable, Equatable {
        /// This controller holds the step's cluster-wide lock until ``releaseClusterStep(group:value:step:)``.
        case held
        /// A host of the cluster ran it.
        case done(by: String)
        /// Not now; the reason stays the same while the cause does.
        case busy(String)
    }

    /// The two-key advisory lock of one cluster step in run `sharedRun`.
    private func clusterKey(group: String, value: String, step: Int) -> String { "cluster \(group)=\(value) \(step)" }

    /// Claims `step` (named `name`) of the cluster `group=value` for `host`, across the
    /// controllers of a shared run, in one transaction: done when a host of the cluster
    /// ran it; busy while another host of the cluster has it in flight or unknown (its
    /// controller runs it, or died and `resume` has yet to re-attach it: running it here
    /// could run it twice) or another controller holds the claim; else held, by a
    /// session-level advisory lock that lapses with this controller's connection. Always
    /// held for a state dir journal (the engine's own lock is the cluster's lock there).
    public func claimClusterStep(group: String, value: String, step: Int, name: String, host: String) throws -> RunWideClusterClaim {
        guard let sharedRun else { return .held }
        return try database.transaction {
            if let doneBy = try clusterStepDoneBy(group: group, value: value, step: step) { return .done(by: doneBy) }
            if case let (other, status)? = try database.query("""
                SELECT step.host, step.status FROM step JOIN host_group ON host_group.host = step.host
                WHERE host_group.grp = ? AND host_group.value = ? AND step.name = ? AND step.status IN ('running', 'unknown') AND step.host <> ?
                ORDER BY step.host LIMIT 1
                """, .text(group), .text(value), .text(name), .text(host), row: { ($0.text(0) ?? "", $0.text(1) ?? "") }).first {
                return .busy("'\(name)' is \(status) on \(other) of \(group)=\(value)"
                             + (status == "unknown" ? " (resume --rerun-unknown decides it)" : " (if its controller died, resume re-attaches it)"))
            }
            let got = try database.query("SELECT pg_try_advisory_lock(?::integer, hashtext(?))", .int(sharedRun),
                                         .text(clusterKey(group: group, value: value, step: step))) { $0.text(0) == "t" }.first ?? false
            return got ? .held : .busy("another controller runs '\(name)' for \(group)=\(value)")
        }
    }

    /// Lets go of a claim ``claimClusterStep(group:value:step:name:host:)`` held, once the
    /// step and its cluster's marker are recorded.
    public func releaseClusterStep(group: String, value: String, step: Int) throws {
        guard let sharedRun else { return }
        try database.run("SELECT pg_advisory_unlock(?::integer, hashtext(?))", .int(sharedRun),
                         .text(clusterKey(group: group, value: value, step: step)))
    }
}
