/// What a step is, which decides how the engine runs and judges it: the kinds of an
/// upgrade plan, `command` (a runbook step) and `health` (`--health`).
///
/// An open set of raw strings rather than a closed enum: the raw value is what journals
/// store, so a journal written by another flotilla, or with a kind this one does not
/// know, still opens (an unknown kind runs as a plain command, judged by its exit
/// status). The raw values below are the ones journals hold today; never change them.
public struct StepKind: RawRepresentable, Sendable, Hashable, Codable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// A plain shell command, judged by its exit status (runbook steps).
    public static let command: StepKind = "command"
    /// `--health CMD`: must exit 0 (for `--healthy-for`, that long in a row).
    public static let health: StepKind = "health"

    /// `st2 key list -j`: stdout is kept and verified on the controller (`backups/HOST/`).
    public static let backupKeyValue: StepKind = "backup-kv"
    /// Files kept and verified on the controller as a tar archive, read through become:
    /// the command is the remote paths, `expect` the archive's name (``BackupItem``).
    public static let backupFiles: StepKind = "backup-files"
    /// The audit logs of a run planned by an older flotilla; the step's command is the
    /// remote glob. Now taken as an optional backup-files step.
    public static let fetchAuditLogs: StepKind = "fetch-audit-logs"
    /// A pre-flight check before the host's first `st2ctl stop` (SPEC §8.3): read-only
    /// towards st2 and judged by its exit status and output.
    public static let preflight: StepKind = "preflight"
    public static let stop: StepKind = "stop"
    /// `st2ctl status` must list no running component.
    public static let confirmStopped: StepKind = "confirm-stopped"
    public static let upgradePackages: StepKind = "upgrade-packages"
    public static let mistralDB: StepKind = "mistral-db"
    public static let migration: StepKind = "migration"
    public static let reload: StepKind = "reload"
    public static let start: StepKind = "start"
    /// stdout must equal the step's `expect` (the pinned package version).
    public static let verifyVersion: StepKind = "verify-version"
    /// `st2ctl status` must list every component running that the installed packages
    /// (the step's `expect`, space-separated) provide.
    public static let verifyServices: StepKind = "verify-services"

    /// The kinds that only read the host: they run as plain commands over the session,
    /// and one cut off by a lost connection fails its host rather than being re-attached.
    /// The backups stay plain because their stdout is kept as it streams. The pre-flight's
    /// index refresh rewrites only the package index, and that atomically (apt and dnf fetch
    /// into a partial directory and move complete files into place): one cut off leaves the
    /// old index, and running it again is the right recovery, so it need not run detached.
    public static let readOnly: Set<StepKind> = [.health, .preflight, .confirmStopped, .verifyVersion, .verifyServices, .backupKeyValue,
                                                 .backupFiles, .fetchAuditLogs]

    /// The kinds of a host's backup, which come before its first change.
    public static let backups: Set<StepKind> = [.backupKeyValue, .backupFiles, .fetchAuditLogs]

    /// Whether a step of this kind runs detached from the connection (SPEC §8.1): every
    /// kind that changes the host (but a roll-over's staging, ``rolloverPlain``), including
    /// runbook commands and kinds this flotilla does not know (the safe side).
    public var runsDetached: Bool { !Self.readOnly.contains(self) && !Self.rolloverPlain.contains(self) }
}
