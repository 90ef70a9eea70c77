import Foundation

/// One step a host runs in a rolling run: a StackStorm plan step or a runbook step.
public struct RunStep: Sendable, Codable, Equatable, Hashable {
    public var name: String
    /// The shell command (for `backup-files`, the remote paths archived; for
    /// `fetch-audit-logs`, of older runs, the remote glob).
    public var command: String
    /// The plan step's kind for upgrade steps, `command` for runbook steps, `health`.
    public var kind: StepKind
    /// `st2_cluster` (or another host variable): run once per distinct value of it.
    public var oncePer: String?
    /// What stdout must be (trimmed), for version checks.
    public var expect: String?
    /// Run through sudo (when the host's become settings allow).
    public var become: Bool
    /// Seconds the step may run; nil: the run's --step-timeout.
    public var timeout: Double?
    /// The release a hopped upgrade's pass goes to, so the same command in two passes is
    /// two different once-per-cluster steps.
    public var stage: String?
    /// The barriers the host waits at before this step, in order (nil: none; journals
    /// written before barriers existed have none).
    public var barriers: [Barrier]?

    public init(name: String, command: String, kind: StepKind = .command, oncePer: String? = nil, expect: String? = nil,
                become: Bool = false, timeout: Double? = nil, stage: String? = nil, barriers: [Barrier] = []) {
        self.name = name
        self.command = command
        self.kind = kind
        self.oncePer = oncePer
        self.expect = expect
        self.become = become
        self.timeout = timeout
        self.stage = stage
        self.barriers = barriers.isEmpty ? nil : barriers
    }

    /// The same number for the same step on every host of a cluster, whatever its place in
    /// each host's plan: what once-per-cluster steps are recorded under (FNV-1a of the
    /// name and stage; not the command, which may hold per-host values).
    public var clusterKey: Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(name)\u{0}\(stage ?? "")".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return Int(hash >> 11) // 53 bits: exact in SQLite and JSON
    }
}

/// A point where the hosts of a group meet (SPEC §8.2's whole clusters): a host reaching
/// the step that holds it waits until every host of the run that shares its value of
/// `group` and has a barrier of the same `name` has reached it too. When one of them ends
/// before it gets there (failed, unreachable, cancelled, skipped), the barrier breaks and
/// every other stops there, so none goes past what all of them could do.
public struct Barrier: Sendable, Codable, Equatable, Hashable {
    /// The host variable the hosts meet by (`st2_cluster`).
    public var group: String
    /// Which of the group's meeting points (`stop`, `database 1`).
    public var name: String

    public init(group: String, name: String) {
        self.group = group
        self.name = name
    }
}

/// How the hosts sharing a value of a group variable go through a run, and why (SPEC
/// §8.2: a cluster upgraded whole or node by node), for the plan, `show` and the reports.
public struct RunCluster: Sendable, Codable, Equatable {
    /// The host variable (`st2_cluster`).
    public var variable: String
    public var value: String
    /// The targeted hosts sharing the value, in inventory order.
    public var hosts: [String]
    /// `whole` or `rolling`.
    public var strategy: String
    /// Why: the strategy asked for, the database changes crossed, a node that keeps the
    /// cluster from starting.
    public var reason: String

    public init(variable: String, value: String, hosts: [String], strategy: String, reason: String) {
        self.variable = variable
        self.value = value
        self.hosts = hosts
        self.strategy = strategy
        self.reason = reason
    }

    /// `{"variable", "value", "hosts", "strategy", "reason"}` (plan and run result JSON).
    public var json: JSONValue {
        .object([("variable", .string(variable)), ("value", .string(value)), ("hosts", .strings(hosts)),
                 ("strategy", .string(strategy)), ("reason", .string(reason))])
    }

    /// `st2_cluster=c1 (st2-01, st2-02): whole: crosses ...`.
    public var text: String { "\(variable)=\(value) (\(hosts.joined(separator: ", "))): \(strategy): \(reason)" }
}

/// Where a host stands in a run (the `status` of SPEC §6).
public enum HostRunStatus: String, Sendable, Codable, CaseIterable {
    case notStarted = "not_started"
    case running
    case succeeded
    case failed
    case unreachable
    case skipped
    case cancelled
}

/// Where a step stands.
public enum StepRunStatus: String, Sendable, Codable, CaseIterable {
    case pending
    case running
    case succeeded
    case failed
    /// Not run here: a once-per step already done by another host of the same cluster.
    case skipped
    case cancelled
    /// The host cannot account for the step (its record lost, e.g. a reboot mid-step): it
    /// may or may not have run. Run again only by `flotilla resume --rerun-unknown`.
    case unknown
}

/// Why a host of a run is never started. Rendered (``text``) as users see it in `show`,
/// the reports and the run result's `reason`: `already at 3.8.1 (st2 3.8.1-1)`,
/// `refused: ...`, `unreachable: ...`.
public struct SkipCause: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// The plan has nothing to do: the host is already at the target.
        case atTarget = "at_target"
        /// The plan refused the host (SPEC §4): it does not count against `--max-fail`.
        case refused
        /// Facts could not be gathered: the host counts as unreachable.
        case unreachable
    }

    public var kind: Kind
    /// The planner's or the transport's words, without the `refused: ` prefix.
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// `already at ...` as is, else the kind as a prefix: `refused: REASON`.
    public var text: String {
        switch kind {
        case .atTarget: reason
        case .refused: "refused: \(reason)"
        case .unreachable: "unreachable: \(reason)"
        }
    }

    /// The cause a rendered text stands for (journals of schema 1 stored only the text).
    public init(text: String) {
        if text.hasPrefix("refused: ") {
            self.init(.refused, String(text.dropFirst("refused: ".count)))
        } else if text.hasPrefix("unreachable: ") {
            self.init(.unreachable, String(text.dropFirst("unreachable: ".count)))
        } else {
            self.init(.atTarget, text)
        }
    }
}

/// A host as a run sees it: who it is, its batch, its cluster and its steps.
public struct RunHost: Sendable, Codable, Equatable {
    public var name: String
    public var address: String
    /// Index into `RunRecord.batches`; nil for hosts never started (refused, at target).
    public var batch: Int?
    /// Values of the host variables the run groups by (`st2_cluster`, `--max-per` variables).
    public var groups: [String: String]
    public var fromVersion: String?
    public var toVersion: String?
    public var steps: [RunStep]
    /// For hosts that are not run: why.
    public var skip: SkipCause?

    /// The skip cause as users read it (`refused: ...`, `already at 3.8.1`).
    public var skipReason: String? { skip?.text }

    public init(name: String, address: String, batch: Int?, groups: [String: String] = [:], fromVersion: String? = nil,
                toVersion: String? = nil, steps: [RunStep], skip: SkipCause? = nil) {
        self.name = name
        self.address = address
        self.batch = batch
        self.groups = groups
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.steps = steps
        self.skip = skip
    }
}

/// What a run does: the StackStorm upgrade or a runbook. The raw values are what the
/// journal, `runs` and the run result (`kind`) show.
public enum RunKind: String, Sendable, Codable, CaseIterable {
    case stackstormUpgrade = "stackstorm-upgrade"
    case runbook
    /// A content roll-over from one st2 instance to another (SPEC §8.5).
    case rollover
}

/// Where a run stands, as its journal records it (SPEC §6 `outcome` for the final ones).
public enum RunState: String, Sendable, Codable, CaseIterable {
    /// Recorded, nothing started yet.
    case created
    case running
    case succeeded
    case completedWithFailures = "completed_with_failures"
    /// A failure threshold was crossed, or the operator aborted.
    case halted
    /// A signal, the window or the operator stopped it; resumable.
    case stopped

    /// Whether the run reached its end: nothing is left to resume (but `--retry-failed`
    /// after `completed_with_failures`).
    public var isFinished: Bool { self == .succeeded || self == .completedWithFailures }

    /// The state a policy outcome leaves the run in, and its reason.
    public init(_ outcome: RolloutPolicy.Outcome) {
        switch outcome {
        case .succeeded: self = .succeeded
        case .completedWithFailures: self = .completedWithFailures
        case .halted: self = .halted
        case .stopped: self = .stopped
        }
    }
}

/// Everything fixed when a run is created: what runs where, in which batches, under
/// which policy. Stored in the journal before the first step starts.
public struct RunRecord: Sendable, Codable, Equatable {
    /// `20261121-153000-ab12`.
    public var id: String
    public var kind: RunKind
    public var name: String?
    public var targetVersion: String?
    public var createdAt: Date
    public var hosts: [RunHost]
    /// Host names per batch, in start order.
    public var batches: [[String]]
    /// The options the run was started with (policy and connection flags, never
    /// secrets), so `resume` continues under the same rules.
    public var options: RunOptions
    /// How each cluster goes through the run and why (nil for runs without clusters, and
    /// for journals written before the cluster strategy).
    public var clusters: [RunCluster]?

    public init(id: String, kind: RunKind, name: String? = nil, targetVersion: String?, createdAt: Date, hosts: [RunHost],
                batches: [[String]], options: RunOptions, clusters: [RunCluster]? = nil) {
        self.clusters = clusters
        self.id = id
        self.kind = kind
        self.name = name
        self.targetVersion = targetVersion
        self.createdAt = createdAt
        self.hosts = hosts
        self.batches = batches
        self.options = options
    }

    /// A new run id from a time and random bytes: `20261121-153000-ab12`.
    public static func newID(at date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let suffix = String(format: "%04x", UInt16.random(in: 0...UInt16.max))
        return String(format: "%04d%02d%02d-%02d%02d%02d-", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec)) + suffix
    }
}
