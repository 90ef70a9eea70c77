import Foundation

// The backup before the first change to a host (SPEC §8.4): every artifact is streamed
// from the host through the step's become (sudo reads what the login user cannot), hashed
// on the host as it streams, written to `backups/HOST/` on the controller, then checked:
// the file on disk, what came over the connection and what the host sent must agree in
// size and SHA-256. Any step that cannot do all of that fails, and the host with it,
// before `st2ctl stop`.

/// Files the backup keeps of a host besides its key-value store: one backup-files step
/// each, its command the remote paths, its `expect` the artifact's file name and
/// `optional` when the paths may be missing.
public struct BackupItem: Sendable, Equatable {
    public var stepName: String
    /// Remote absolute paths (`*` allowed), space-separated.
    public var paths: String
    /// The file under `backups/HOST/` (a tar archive of the paths).
    public var artifact: String
    /// Nothing at the paths is said in the host log and kept as no artifact, not a failure.
    public var optional: Bool

    public init(stepName: String, paths: String, artifact: String, optional: Bool) {
        self.stepName = stepName
        self.paths = paths
        self.artifact = artifact
        self.optional = optional
    }

    /// What the step's `expect` holds for this item.
    public var expect: String { optional ? "\(artifact) optional" : artifact }

    /// The item a backup-files step stands for; nil when the step's paths or artifact are
    /// not ones this code would put in a shell command line or a file name.
    public init?(_ step: RunStep) {
        let words = (step.expect ?? "").split(separator: " ").map(String.init)
        let pathCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-*")
        guard let artifact = words.first, Self.isArtifactName(artifact), words.dropFirst().allSatisfy({ $0 == "optional" }),
              !step.command.isEmpty,
              step.command.split(separator: " ").allSatisfy({ $0.hasPrefix("/") && !$0.contains("..") && $0.allSatisfy(pathCharacters.contains) })
        else { return nil }
        self.init(stepName: step.name, paths: step.command, artifact: artifact, optional: words.contains("optional"))
    }

    /// The key-value export's file under `backups/HOST/`.
    public static let keyValueArtifact = "st2-key-list.json"

    /// The files of a StackStorm host's backup: the datastore crypto key (without it the
    /// encrypted values of the export cannot be restored), the st2 and Mistral
    /// configuration, the audit logs.
    public static let files: [BackupItem] = [
        BackupItem(stepName: "back up the datastore crypto key", paths: "/etc/st2/keys", artifact: "st2-keys.tar", optional: true),
        BackupItem(stepName: "back up /etc/st2", paths: "/etc/st2", artifact: "etc-st2.tar", optional: false),
        BackupItem(stepName: "back up /etc/mistral", paths: "/etc/mistral", artifact: "etc-mistral.tar", optional: true),
        BackupItem(stepName: "back up audit logs", paths: "/var/log/st2/*.audit.log", artifact: "audit-logs.tar", optional: true),
    ]

    static func isArtifactName(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(".") && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }
}

/// One artifact of a host's backup as the journal records it.
public struct BackupArtifact: Sendable, Equatable {
    /// The file name under `backups/HOST/` (`st2-key-list.json`).
    public var name: String
    /// Where it is on the controller.
    public var path: String
    public var size: Int64
    /// 64 lowercase hex digits.
    public var sha256: String

    public init(name: String, path: String, size: Int64, sha256: String) {
        self.name = name
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}

/// The shell text run on the host (through become) for a backup step.
enum BackupScript {
    /// Starts the stderr line with the SHA-256 the host computed of what it sent.
    static let hashMarker = "flotilla-backup sha256 "
    /// Starts the stderr line saying none of the paths exists.
    static let missingMarker = "flotilla-backup: nothing at "

    /// `producer`'s stdout, hashed on the host as it is sent (through a FIFO, so what is
    /// hashed is exactly what is sent, even of a log being appended to); exits with the
    /// producer's status, 125 when the hashing cannot be set up.
    static func hashed(_ producer: String) -> String {
        """
        d=$(mktemp -d) || exit 125
        trap 'rm -rf "$d"' EXIT
        mkfifo "$d/p" || exit 125
        sha256sum < "$d/p" > "$d/sum" &
        { \(producer); echo $? > "$d/rc"; } | tee "$d/p"
        wait
        printf '\(hashMarker)%s\\n' "$(cut -c1-64 "$d/sum")" >&2
        exit "$(cat "$d/rc")"
        """
    }

    /// A tar archive of those of `paths` that exist (relative to `/`, so tar keeps the
    /// names and says nothing of leading slashes), or the missing marker and exit 0.
    static func archive(_ paths: String) -> String {
        let relative = paths.split(separator: " ").map { String($0.drop { $0 == "/" }) }
        return """
            cd / || exit 125
            set --
            for p in \(relative.joined(separator: " ")); do [ -e "$p" ] && set -- "$@" "$p"; done
            if [ $# -eq 0 ]; then echo '\(missingMarker)\(paths)' >&2; exit 0; fi

            """ + hashed("tar -cf - -- \"$@\"")
    }

    /// What the host's stderr says: the hash it computed, whether nothing was there.
    static func report(_ stderr: String) -> (sha256: String?, missing: Bool) {
        let lines = stderr.split(separator: "\n")
        let hash = lines.last { $0.hasPrefix(hashMarker) }.map { String($0.dropFirst(hashMarker.count)) }
        return (hash, lines.contains { $0.hasPrefix(missingMarker) })
    }
}

/// A backup file written on the controller as its bytes arrive: owner-only, in an
/// owner-only directory; every failure kept (the first one), never ignored.
final class BackupWriter: @unchecked Sendable {
    // @unchecked: written by one command's output callback at a time, and finished after
    // the command returned; nothing else touches it.
    let url: URL
    private var fd: Int32 = -1
    private var hasher = SHA256()
    private(set) var size: Int64 = 0
    private(set) var failure: String?

    /// Creates `url` afresh (replacing one of an earlier attempt) and its directories.
    init(_ url: URL) {
        self.url = url
        do {
            try PrivateFiles.makeDirectory(url.deletingLastPathComponent(), what: "backup dir")
            fd = try PrivateFiles.createOwnerOnly(url.path)
        } catch {
            failure = "\(error)"
        }
    }

    /// The SHA-256 of what was written so far.
    var sha256: String {
        var copy = hasher
        return copy.hexDigest()
    }

    func write(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bytes)
        size += Int64(bytes.count)
        guard failure == nil, fd >= 0, let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let written = Foundation.write(fd, base + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                failure = "cannot write \(url.path): \(String(cString: strerror(errno)))"
                return
            }
            offset += written
        }
    }

    /// Flushes the file to disk and closes it; a failure is kept in ``failure``.
    func finish() {
        guard fd >= 0 else { return }
        if failure == nil, fsync(fd) != 0 { failure = "cannot sync \(url.path): \(String(cString: strerror(errno)))" }
        if close(fd) != 0, failure == nil { failure = "cannot close \(url.path): \(String(cString: strerror(errno)))" }
        fd = -1
    }

    /// The size and SHA-256 of the file as it is on disk now.
    static func measure(_ url: URL) throws -> (size: Int64, sha256: String) {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() } // read-only: closing cannot lose data
        var hasher = SHA256()
        var size: Int64 = 0
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            chunk.withUnsafeBytes { hasher.update($0) }
            size += Int64(chunk.count)
        }
        return (size, hasher.hexDigest())
    }
}

/// The backup steps: the key-value export (its command's stdout, which must be a JSON
/// list) and the backup-files steps (a tar archive of their paths), each streamed through
/// become into `backups/HOST/` and verified (see the top of this file).
struct BackupStep: StepHandler {
    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        let artifact: String, script: String, optional: Bool
        if step.kind == .backupKeyValue {
            (artifact, script, optional) = (BackupItem.keyValueArtifact, BackupScript.hashed(step.command), false)
        } else if let item = BackupItem(step.kind == .fetchAuditLogs ? Self.asBackupFiles(step) : step) {
            (artifact, script, optional) = (item.artifact, BackupScript.archive(item.paths), item.optional)
        } else {
            return StepResult(.failed, nil, "'\(step.name)' is not a backup this flotilla can take: paths '\(step.command)', artifact '\(step.expect ?? "")'")
        }
        let url = context.backupDirectory.appendingPathComponent(artifact)
        let result = await take(step, script: script, artifact: artifact, optional: optional, into: url, on: connection, context: context)
        if result.status != .succeeded, result.artifacts.isEmpty {
            // What is there is no backup (partial, corrupted or unverified): not left to be
            // taken for one. Best effort: the step has failed already, which is what counts.
            try? FileManager.default.removeItem(at: url)
        }
        return result
    }

    /// A fetch-audit-logs step of a run planned by an older flotilla (its command the
    /// glob) as the optional backup-files step it now is.
    static func asBackupFiles(_ step: RunStep) -> RunStep {
        var step = step
        step.expect = "audit-logs.tar optional"
        return step
    }

    private func take(_ step: RunStep, script: String, artifact: String, optional: Bool, into url: URL,
                      on connection: any HostConnection, context: StepContext) async -> StepResult {
        let log = context.log
        let writer = BackupWriter(url)
        if let failure = writer.failure { return StepResult(.failed, nil, "cannot keep the backup: \(failure)") }
        var outcome: StepOutcome
        do {
            // The archive and the export hold secrets (st2.conf's passwords, the crypto
            // key): stdout goes to the backup file only, never to the log or the journal.
            outcome = try await connection.run(script, become: step.become, timeout: context.timeout(of: step)) { kind, bytes in
                if kind == .stdout { writer.write(bytes) } else { log.write(bytes) }
            }
        } catch let error as TransportError where error.kind == .notStarted {
            writer.finish()
            return .notStarted(error.message)
        } catch {
            writer.finish()
            return StepResult(.failed, nil, "the connection was lost during the backup: \(error)")
        }
        writer.finish()
        outcome.stdoutTail = ""
        let (hostHash, missing) = BackupScript.report(outcome.stderrTail)
        if outcome.timedOut { return StepResult(.failed, outcome, "timed out; the backup is incomplete") }
        if let signal = outcome.exitSignal { return StepResult(.failed, outcome, "killed by signal \(signal); the backup is incomplete") }
        if missing {
            try? FileManager.default.removeItem(at: url) // empty; nothing was there to keep (best effort)
            if optional {
                log.note("backup: nothing at \(step.command) on the host; not kept (optional)")
                return StepResult(.succeeded, outcome)
            }
            return StepResult(.failed, outcome, "nothing at \(step.command) on the host to back up")
        }
        // GNU tar exits 1 for a file that grew while it was read (a live audit log): the
        // archive is whole up to where it read, and the hash covers what was sent.
        let grew = outcome.exitStatus == 1 && step.kind != .backupKeyValue && outcome.stderrTail.contains("file changed as we read it")
        guard outcome.exitStatus == 0 || grew else { return StepResult(.failed, outcome, CommandStep.exitMessage(outcome)) }
        if let failure = writer.failure { return StepResult(.failed, outcome, "cannot keep the backup: \(failure)") }
        let received = writer.sha256
        guard let hostHash, hostHash.count == 64 else {
            return StepResult(.failed, outcome, "the host did not say the SHA-256 of \(artifact); the backup cannot be verified")
        }
        guard hostHash == received else {
            return StepResult(.failed, outcome, "\(artifact) arrived corrupted: SHA-256 \(received) received, \(hostHash) sent by the host")
        }
        let onDisk: (size: Int64, sha256: String)
        do {
            onDisk = try BackupWriter.measure(url)
        } catch {
            return StepResult(.failed, outcome, "cannot read back \(url.path): \(error)")
        }
        guard onDisk.size == writer.size, onDisk.sha256 == received else {
            return StepResult(.failed, outcome, "\(url.path) on disk (\(onDisk.size) bytes, SHA-256 \(onDisk.sha256)) is not what was received (\(writer.size) bytes, SHA-256 \(received))")
        }
        if step.kind == .backupKeyValue {
            // Unreadable and not JSON fail alike: either way the export could not be loaded back.
            let keys = (try? Data(contentsOf: url)).flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [Any]
            guard let keys else { return StepResult(.failed, outcome, "the key-value export in \(url.path) is not a JSON list") }
            log.note("backup: \(keys.count) key(s) exported")
        }
        if grew { log.note("backup: a file grew while it was archived; the archive holds it as it was read") }
        log.note("backup: \(url.path) (\(onDisk.size) bytes, SHA-256 \(onDisk.sha256)), verified against the host's SHA-256")
        var result = StepResult(.succeeded, outcome)
        result.artifacts = [BackupArtifact(name: artifact, path: url.path, size: onDisk.size, sha256: onDisk.sha256)]
        return result
    }
}
