import Foundation

/// Everything a journal holds about one run: what was planned (the ``RunRecord``) and
/// where every host, step and batch stands. What `flotilla resume` and `flotilla show`
/// read.
///
/// A step recorded `running` was in flight when the journal was last written: if the
/// controller is gone, resume re-attaches to it through its token (a detached step), or
/// runs it again (a read-only step, which has none).
public struct JournalState: Sendable, Equatable {
    public var record: RunRecord
    public var state: RunState
    public var haltReason: String?
    /// The first time the run was recorded `running`.
    public var startedAt: Date?
    /// When it last reached a final state; nil while running.
    public var finishedAt: Date?
    /// In the order of `record.hosts`.
    public var hosts: [Host]
    /// In the order of `record.batches`.
    public var batches: [Batch]
    public var clusterSteps: [ClusterStep]
    /// Oldest first.
    public var events: [Event]
    public var artifacts: [Artifact]

    public struct Host: Sendable, Equatable {
        public var name: String
        public var status: HostRunStatus
        public var error: String?
        /// The first time the host was recorded `running`.
        public var startedAt: Date?
        /// When it was last recorded in a final status.
        public var finishedAt: Date?
        /// In plan order; `index` is the position in `RunHost.steps`.
        public var steps: [Step]
    }

    public struct Step: Sendable, Equatable {
        public var index: Int
        public var name: String
        public var status: StepRunStatus
        public var exitStatus: Int32?
        public var stdoutTail: String
        public var stderrTail: String
        public var error: String?
        /// The start of the latest attempt.
        public var startedAt: Date?
        public var finishedAt: Date?
        public var durationMS: Int?
        /// How many times the step was started (more than 1 after a resume re-ran it).
        public var attempts: Int
        /// The latest attempt's ``DetachedStep/Token`` path, for a step that runs detached.
        public var token: String? = nil
        /// How many times the controller re-attached to the latest attempt (after a lost
        /// connection, or on resume) instead of running it again.
        public var reattached: Int = 0
    }

    public struct Batch: Sendable, Equatable {
        public var index: Int
        public var hosts: [String]
        /// The first start (a batch resumed later keeps it).
        public var startedAt: Date?
        public var finishedAt: Date?
    }

    /// A once-per-cluster step and the host that ran it.
    public struct ClusterStep: Sendable, Equatable {
        /// The host variable (`st2_cluster`) and its value.
        public var group: String
        public var value: String
        public var step: Int
        public var host: String
        public var at: Date
    }

    /// An operator or audit line: a ctl command, a signal, a resume.
    public struct Event: Sendable, Equatable {
        /// Increasing with every event of the run.
        public var sequence: Int
        public var at: Date
        public var kind: String
        public var message: String
    }

    /// A file the run kept for a host (its backup, SPEC §8.4).
    public struct Artifact: Sendable, Equatable {
        public var host: String
        public var name: String
        public var path: String
        /// Bytes, and the SHA-256 as 64 hex digits, as verified when it was written; nil in
        /// a journal written before they were recorded.
        public var size: Int64?
        public var sha256: String?

        public init(host: String, name: String, path: String, size: Int64? = nil, sha256: String? = nil) {
            self.host = host
            self.name = name
            self.path = path
            self.size = size
            self.sha256 = sha256
        }
    }

    /// The host of that name, if the run has one.
    public func host(_ name: String) -> Host? { hosts.first { $0.name == name } }

    /// How many hosts are in each status (statuses with no host are absent).
    public var hostCounts: [HostRunStatus: Int] { hosts.reduce(into: [:]) { $0[$1.status, default: 0] += 1 } }
}

/// One line of `flotilla runs`: a run as its journal describes it.
public struct RunSummary: Sendable, Equatable {
    public var id: String
    /// nil when `problem` is set.
    public var kind: RunKind?
    public var name: String?
    public var targetVersion: String?
    /// The run's creation time; for an unreadable journal, its directory's modification
    /// time.
    public var createdAt: Date
    /// As in ``JournalState/state``; nil when `problem` is set.
    public var state: RunState?
    public var haltReason: String?
    public var startedAt: Date?
    public var finishedAt: Date?
    /// How many hosts are in each status (statuses with no host are absent).
    public var hostCounts: [HostRunStatus: Int]
    /// The journal file.
    public var journal: URL
    /// Why the journal could not be read (the run is still listed, so it is not silently
    /// lost).
    public var problem: String?

    public var hostCount: Int { hostCounts.values.reduce(0, +) }
}
