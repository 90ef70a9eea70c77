import Foundation
import Synchronization

// How a roll-over's steps run. OLD's steps are the backup (SPEC §8.4) plus an archive of
// the packs to copy, all read-only. NEW's changes (packs unpacked, registration,
// virtualenvs, `st2 key load`) run detached and journaled like upgrade steps, so a resume
// re-attaches to them and never runs one twice; the files they use are first staged on
// NEW over SFTP by steps that change nothing st2 reads, and are simply sent again on resume.
//
// Secrets: the keys are exported *decrypted* from OLD and loaded in clear into NEW, whose
// API encrypts them with NEW's own datastore key. The other way, carrying the encrypted
// values with OLD's crypto key, would need OLD's key on NEW (or on the controller with an
// AES implementation of st2's format) and `st2 key load` would store OLD's ciphertext
// as it is, which NEW's key cannot decrypt. So the clear export exists only: in memory
// while it is read; in one owner-only temporary file under the run's folder, removed as
// soon as SFTP sent it; in NEW's 0700 staging directory (0600, the login user's), removed
// by the load step whatever its outcome. Its stdout never reaches a log, the journal or a
// report (the outcome's tails are blanked), and no value is ever in a command line.

extension StepKind {
    /// Unpacks the staged pack archive under /opt/stackstorm/packs on NEW.
    public static let rolloverInstallPacks: StepKind = "rollover-install-packs"
    /// `st2 run packs.setup_virtualenv packs=…` on NEW.
    public static let rolloverVirtualenvs: StepKind = "rollover-virtualenvs"
    /// `st2 pack install URL…` on NEW (`--packs-from`).
    public static let rolloverPackInstall: StepKind = "rollover-pack-install"
    /// `st2 key load` of the staged keys on NEW; the file is removed whatever happens.
    public static let rolloverLoadKeys: StepKind = "rollover-load-keys"
}

/// A connection that can send a file to its host (SFTP, as the login user).
public protocol HostFileUpload: Sendable {
    /// Copies `localPath` to `remotePath` (relative to the login user's home), owner-only,
    /// renamed into place once complete.
    /// - Throws: `TransportError` when the copy fails.
    func upload(_ localPath: String, to remotePath: String) async throws
}

/// What a staging or verify step needs beyond its command, kept in its `expect` as JSON.
public struct RolloverStepSpec: Codable, Sendable, Equatable {
    /// OLD's host name.
    public var old: String
    /// A staging step of a backup artifact: its file name under `backups/OLD/`.
    public var artifact: String?
    /// OLD's decrypted export command (key staging and verification).
    public var export: String?
    /// NEW's decrypted export command (verification).
    public var newExport: String?
    /// The packs NEW must list (verification).
    public var packs: [String]?

    public init(old: String, artifact: String? = nil, export: String? = nil, newExport: String? = nil, packs: [String]? = nil) {
        self.old = old
        self.artifact = artifact
        self.export = export
        self.newExport = newExport
        self.packs = packs
    }

    // Strings and a list of strings always encode: nothing to ignore.
    var text: String { String(decoding: (try? JSONEncoder.sorted.encode(self)) ?? Data(), as: UTF8.self) }

    init?(_ step: RunStep) {
        // Not one of ours: nil, and the handler fails the step saying so.
        guard let data = step.expect?.data(using: .utf8), let spec = try? JSONDecoder().decode(Self.self, from: data) else { return nil }
        self = spec
    }
}

private extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// Where a roll-over stages files on NEW.
public enum RolloverStaging {
    public static let packsFile = "packs.tar"
    public static let keysFile = "keys.json"
    /// The backup-files artifact of OLD's packs to copy.
    public static let packsArtifact = "rollover-packs.tar"

    /// The staging directory, relative to the login user's home (as SFTP takes it).
    public static func directory(run: String) -> String { ".flotilla/rollover/\(DetachedStep.fileName(run))" }

    /// Sets `$d` to the staging directory: the login user's, also under sudo (where
    /// `$HOME` may be the become user's).
    static func prelude(run: String) -> String {
        "h=$HOME; if [ -n \"${SUDO_USER:-}\" ]; then h=$(getent passwd \"$SUDO_USER\" | cut -d: -f6); fi; d=\"$h/\(directory(run: run))\"; "
    }

    /// Runs `body` with `$f` the staged `file`, failing plainly when it is not there.
    static func using(_ file: String, run: String, _ body: String) -> String {
        prelude(run: run) + "f=\"$d/\(file)\"; [ -f \"$f\" ] || { echo \"flotilla-rollover: $f is not staged\" >&2; exit 66; }; " + body
    }
}

extension RolloverPlan {
    /// The run's steps: OLD's backup and pack archive (read-only), then NEW's staging,
    /// changes and verification. `run` is the run's id (the staging directory's name).
    public func steps(run: String, catalog: MigrationCatalog) -> (old: [RunStep], new: [RunStep]) {
        guard let from = old.version, let to = new.version else { return ([], []) }
        let oldExport = catalog.keyExportCommand(installed: from) + " --decrypt"
        let newExport = catalog.keyExportCommand(installed: to) + " --decrypt"
        var oldSteps = [RunStep(name: "export key-value store", command: catalog.keyExportCommand(installed: from), kind: .backupKeyValue, become: true)]
        oldSteps += BackupItem.files.map { RunStep(name: $0.stepName, command: $0.paths, kind: .backupFiles, expect: $0.expect, become: true) }
        var newSteps: [RunStep] = []
        if packsFrom != nil, !packsToCopy.isEmpty {
            // `st2 pack install` registers the packs and sets up their virtualenvs itself.
            newSteps.append(RunStep(name: "install packs from the repository",
                                    command: "st2 pack install " + packsToCopy.compactMap(packURL).map(ShellQuote.quote).joined(separator: " "),
                                    kind: .rolloverPackInstall, become: true))
        } else if !packsToCopy.isEmpty {
            let paths = packsToCopy.map { "/opt/stackstorm/packs/\($0)" }.joined(separator: " ")
            oldSteps.append(RunStep(name: "archive packs to copy", command: paths, kind: .backupFiles, expect: RolloverStaging.packsArtifact, become: true))
            let list = packsToCopy.joined(separator: ",")
            newSteps += [
                RunStep(name: "stage packs on NEW", command: RolloverStaging.packsFile, kind: .rolloverStage,
                        expect: RolloverStepSpec(old: old.host, artifact: RolloverStaging.packsArtifact).text),
                RunStep(name: "install packs", command: RolloverStaging.using(RolloverStaging.packsFile, run: run, "tar -xf \"$f\" -C / && rm -f \"$f\""),
                        kind: .rolloverInstallPacks, become: true),
                RunStep(name: "register packs", command: "st2ctl reload --register-all", kind: .rolloverRegister, become: true),
                RunStep(name: "set up virtualenvs", command: "st2 run packs.setup_virtualenv packs=\(list)", kind: .rolloverVirtualenvs, become: true),
            ]
        }
        if !old.keys.isEmpty {
            newSteps += [
                RunStep(name: "stage keys on NEW", command: RolloverStaging.keysFile, kind: .rolloverStage,
                        expect: RolloverStepSpec(old: old.host, export: oldExport).text),
                RunStep(name: "load keys", command: RolloverStaging.using(RolloverStaging.keysFile, run: run,
                                                                         "st2 key load \"$f\" >/dev/null; rc=$?; rm -f \"$f\"; exit $rc"),
                        kind: .rolloverLoadKeys, become: true),
            ]
        }
        newSteps.append(RunStep(name: "verify keys and packs", command: newExport, kind: .rolloverVerify,
                                expect: RolloverStepSpec(old: old.host, export: oldExport, newExport: newExport, packs: packsToCopy).text,
                                become: true))
        return (oldSteps, newSteps)
    }
}

/// Key exports as the roll-over reads them: decrypted, loaded, compared.
public enum RolloverKeys {
    public struct ExportError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    struct Pair: Equatable {
        var name: String
        var scope: String
        var user: String?
        var secret: Bool
        var value: String
        var id: String { "\(scope)/\(user.map { "\($0)/" } ?? "")\(name)" }
    }

    static func pairs(_ data: Data) throws(ExportError) -> [Pair] {
        // Whatever the parser's complaint, the export is unusable: said as such.
        guard let items = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] else {
            throw ExportError(description: "the export is not a JSON list of pairs")
        }
        var pairs: [Pair] = []
        for item in items {
            guard let name = item["name"] as? String else { throw ExportError(description: "an exported pair has no name") }
            if item["encrypted"] as? Bool == true {
                throw ExportError(description: "'\(name)' was exported encrypted, not decrypted")
            }
            let value: String
            if let text = item["value"] as? String {
                value = text
            } else if let other = item["value"], // parsed from JSON, so it serializes again
                      let data = try? JSONSerialization.data(withJSONObject: other, options: [.fragmentsAllowed, .sortedKeys]) {
                value = String(decoding: data, as: UTF8.self)
            } else {
                value = ""
            }
            let key = RolloverKey(name: name, scope: item["scope"] as? String, secret: item["secret"] as? Bool, user: item["user"] as? String)
            pairs.append(Pair(name: name, scope: key.loadScope, user: key.user, secret: key.secret ?? false, value: value))
        }
        return pairs
    }

    /// The file `st2 key load` takes, from OLD's decrypted export: every pair with its
    /// name, value, scope and secret flag (pairs written before 1.5 get scope system and
    /// secret false), and its user where it has one; `encrypted` is left out, so NEW
    /// encrypts the secrets with its own key.
    /// - Throws: ``ExportError`` when the export is not a decrypted list of pairs.
    public static func loadFile(fromDecryptedExport data: Data) throws(ExportError) -> (json: Data, count: Int) {
        let items: [[String: Any]] = try pairs(data).map { pair in
            var item: [String: Any] = ["name": pair.name, "value": pair.value, "scope": pair.scope, "secret": pair.secret]
            if let user = pair.user { item["user"] = user }
            return item
        }
        // Strings and booleans only: serializing cannot fail.
        let json = (try? JSONSerialization.data(withJSONObject: items, options: [.sortedKeys])) ?? Data("[]".utf8)
        return (json, items.count)
    }

    /// What verification found: the counts, and each pair of OLD that NEW lacks or holds
    /// otherwise (by name and scope, never by value).
    public struct Comparison: Sendable, Equatable {
        public var expected: Int
        public var matching: Int
        public var secrets: Int
        public var problems: [String]
    }

    /// Compares OLD's and NEW's decrypted exports: every pair of OLD must be on NEW with the
    /// same scope, user, secret flag and value. Pairs NEW has besides are fine.
    public static func compare(old: Data, new: Data) throws(ExportError) -> Comparison {
        let wanted = try pairs(old)
        var held: [String: Pair] = [:]
        for pair in try pairs(new) { held[pair.id] = pair }
        var problems: [String] = []
        for pair in wanted {
            guard let found = held[pair.id] else { problems.append("\(pair.id) is missing on NEW"); continue }
            if found.secret != pair.secret { problems.append("\(pair.id) is \(found.secret ? "" : "not ")secret on NEW") }
            else if found.value != pair.value { problems.append("\(pair.id) has another value on NEW") }
        }
        return Comparison(expected: wanted.count, matching: wanted.count - problems.count, secrets: wanted.filter(\.secret).count, problems: problems)
    }

    /// The pack refs of `st2 pack list -j`.
    public static func packRefs(_ data: Data) -> Set<String>? {
        // Not a JSON list: nil, which fails the verification.
        guard let items = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] else { return nil }
        return Set(items.compactMap { ($0["ref"] ?? $0["name"]) as? String })
    }
}

/// The roll-over's handlers; `connectOld` opens a session to OLD (through its become
/// settings), which key staging and verification read.
public struct RolloverHandlers: Sendable {
    public var connectOld: @Sendable () async throws -> any HostConnection

    public init(connectOld: @escaping @Sendable () async throws -> any HostConnection) { self.connectOld = connectOld }

    /// The standard handlers with the roll-over's kinds.
    public var handlers: StepHandlers {
        StepHandlers.standard
            .setting(RolloverStageStep(connectOld: connectOld), for: [.rolloverStage])
            .setting(RolloverRegisterStep(), for: [.rolloverRegister])
            .setting(RolloverVerifyStep(connectOld: connectOld), for: [.rolloverVerify])
    }
}

/// Collects a command's stdout in memory only (a decrypted export).
final class MemorySink: Sendable {
    private let bytes = Mutex(Data())
    func append(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: buffer) } }
    var data: Data { bytes.withLock { $0 } }
}

enum RolloverRemote {
    /// Runs an export (or listing) with become, its stdout kept in memory only and its
    /// stderr in the log; the outcome's tails are blanked so no value reaches the journal.
    static func read(_ command: String, on connection: any HostConnection, what: String, log: HostLog) async -> Result<Data, StepFailure> {
        let sink = MemorySink()
        do {
            var outcome = try await connection.run(command, become: true, timeout: .seconds(600)) { kind, bytes in
                if kind == .stdout { sink.append(bytes) } else { log.write(bytes) }
            }
            outcome.stdoutTail = ""
            guard outcome.exitStatus == 0 else {
                return .failure(StepFailure(outcome: outcome, message: "\(what): " + CommandStep.exitMessage(outcome)))
            }
            return .success(sink.data)
        } catch {
            return .failure(StepFailure(outcome: nil, message: "\(what): the connection was lost: \(error)"))
        }
    }

    /// Opens a session to OLD, runs `command` there as ``read(_:on:what:log:)`` does, and
    /// closes the session.
    static func readOld(_ command: String, host: String, connectOld: @Sendable () async throws -> any HostConnection,
                        log: HostLog) async -> Result<Data, StepFailure> {
        let old: any HostConnection
        do {
            old = try await connectOld()
        } catch {
            return .failure(StepFailure(outcome: nil, message: "cannot reach \(host) (OLD): \(error)"))
        }
        let result = await read(command, on: old, what: "exporting the keys of \(host)", log: log)
        await old.close()
        return result
    }

    struct StepFailure: Error {
        var outcome: StepOutcome?
        var message: String
        var result: StepResult { StepResult(.failed, outcome, message) }
    }
}

/// Sends a file to NEW's staging directory: a backup artifact of OLD (the packs), or the
/// keys, exported decrypted from OLD at this moment (see the top of this file).
struct RolloverStageStep: StepHandler {
    let connectOld: @Sendable () async throws -> any HostConnection

    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        let log = context.log
        guard let spec = RolloverStepSpec(step), step.command == RolloverStaging.packsFile || step.command == RolloverStaging.keysFile else {
            return StepResult(.failed, nil, "'\(step.name)' is not a staging step this flotilla knows")
        }
        guard let upload = connection as? HostFileUpload else { return StepResult(.failed, nil, "this transport cannot send files") }
        let directory = RolloverStaging.directory(run: context.settings.runDirectory.lastPathComponent)
        do {
            let made = try await connection.run("mkdir -p \(directory) && chmod 700 .flotilla .flotilla/rollover \(directory)", become: false,
                                                timeout: .seconds(60)) { _, bytes in log.write(bytes) }
            guard made.exitStatus == 0 else { return StepResult(.failed, made, "cannot make ~/\(directory) on NEW: " + CommandStep.exitMessage(made)) }
        } catch let error as TransportError where error.kind == .notStarted {
            return .notStarted(error.message)
        } catch {
            return StepResult(.failed, nil, "the connection was lost: \(error)")
        }
        let remote = "\(directory)/\(step.command)"
        if let artifact = spec.artifact {
            let local = context.settings.runDirectory.appendingPathComponent("backups/\(FileName.host(spec.old))/\(artifact)")
            do {
                try await upload.upload(local.path, to: remote)
            } catch {
                return StepResult(.failed, nil, "cannot send \(artifact) to NEW: \(error)")
            }
            log.note("rollover: \(artifact) of \(spec.old) staged as ~/\(remote)")
            return StepResult(.succeeded, StepOutcome(exitStatus: 0))
        }
        guard let export = spec.export else { return StepResult(.failed, nil, "'\(step.name)' names nothing to stage") }
        let exported: Data
        switch await RolloverRemote.readOld(export, host: spec.old, connectOld: connectOld, log: log) {
        case .success(let data): exported = data
        case .failure(let failure): return failure.result
        }
        let file: (json: Data, count: Int)
        do {
            file = try RolloverKeys.loadFile(fromDecryptedExport: exported)
        } catch {
            return StepResult(.failed, nil, "the key export of \(spec.old): \(error)")
        }
        // One name per run: a controller killed between writing and removing it leaves it
        // (owner-only) for the resume's staging, which replaces and removes it.
        let temporary = context.settings.runDirectory.appendingPathComponent("rollover-keys.json")
        do {
            try PrivateFiles.writeOwnerOnly(String(decoding: file.json, as: UTF8.self), to: temporary.path)
        } catch {
            return StepResult(.failed, nil, "cannot write the owner-only temporary key file: \(error)")
        }
        defer {
            // Removed the moment it was sent (or could not be): the clear values must not stay.
            if unlink(temporary.path) != 0 && errno != ENOENT { log.note("rollover: cannot remove \(temporary.path): \(String(cString: strerror(errno)))") }
        }
        do {
            try await upload.upload(temporary.path, to: remote)
        } catch {
            return StepResult(.failed, nil, "cannot send the keys to NEW: \(error)")
        }
        log.note("rollover: \(file.count) key(s) of \(spec.old) exported decrypted and staged as ~/\(remote) (0600)")
        return StepResult(.succeeded, StepOutcome(exitStatus: 0))
    }
}

/// `st2ctl reload --register-all` on NEW: a pack that fails is named.
struct RolloverRegisterStep: StepHandler {
    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        switch await CommandStep.execute(step, on: connection, context: context) {
        case .ended(let result): return result
        case .exited(let outcome):
            guard outcome.exitStatus != 0 else { return StepResult(.succeeded, outcome) }
            if let pack = Self.failedPack(outcome.stdoutTail + "\n" + outcome.stderrTail) {
                return StepResult(.failed, outcome, "pack \(pack) failed to register on NEW (" + CommandStep.exitMessage(outcome) + ")")
            }
            return StepResult(.failed, outcome, CommandStep.exitMessage(outcome))
        }
    }

    /// The pack `Failed to register pack "NAME"` names, if the output has it.
    static func failedPack(_ text: String) -> String? {
        guard let range = text.range(of: "Failed to register pack \"") else { return nil }
        let rest = text[range.upperBound...]
        return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
    }
}

/// The roll-over's last step: NEW holds every key of OLD and lists every copied pack.
struct RolloverVerifyStep: StepHandler {
    let connectOld: @Sendable () async throws -> any HostConnection

    func perform(_ step: RunStep, on connection: any HostConnection, context: StepContext) async -> StepResult {
        let log = context.log
        guard let spec = RolloverStepSpec(step), let oldExport = spec.export, let newExport = spec.newExport else {
            return StepResult(.failed, nil, "'\(step.name)' is not a verification this flotilla knows")
        }
        let oldKeys: Data, newKeys: Data, packList: Data
        switch await RolloverRemote.readOld(oldExport, host: spec.old, connectOld: connectOld, log: log) {
        case .success(let data): oldKeys = data
        case .failure(let failure): return failure.result
        }
        switch await RolloverRemote.read(newExport, on: connection, what: "exporting the keys of NEW", log: log) {
        case .success(let data): newKeys = data
        case .failure(let failure): return failure.result
        }
        switch await RolloverRemote.read("st2 pack list -j", on: connection, what: "listing NEW's packs", log: log) {
        case .success(let data): packList = data
        case .failure(let failure): return failure.result
        }
        let comparison: RolloverKeys.Comparison
        do {
            comparison = try RolloverKeys.compare(old: oldKeys, new: newKeys)
        } catch {
            return StepResult(.failed, nil, "comparing the keys: \(error)")
        }
        let wanted = spec.packs ?? []
        guard let listed = RolloverKeys.packRefs(packList) else { return StepResult(.failed, nil, "st2 pack list -j on NEW is not a JSON list") }
        let missingPacks = wanted.filter { !listed.contains($0) }
        let summary = "verified: \(comparison.matching)/\(comparison.expected) keys (\(comparison.secrets) secret\(comparison.secrets == 1 ? "" : "s")) and "
            + "\(wanted.count - missingPacks.count)/\(wanted.count) packs on NEW"
        log.note("rollover: \(summary)")
        let outcome = StepOutcome(exitStatus: 0, stdoutTail: summary + "\n")
        var problems = comparison.problems.prefix(10).map { $0 }
        if comparison.problems.count > 10 { problems.append("and \(comparison.problems.count - 10) more") }
        if !missingPacks.isEmpty { problems.append("NEW does not list the pack(s) \(missingPacks.joined(separator: ", "))") }
        guard problems.isEmpty else { return StepResult(.failed, outcome, "\(summary): " + problems.joined(separator: "; ")) }
        // The staging directory is empty now (each file was removed by its step); best effort.
        let directory = RolloverStaging.directory(run: context.settings.runDirectory.lastPathComponent)
        _ = try? await connection.run("rmdir \(directory) 2>/dev/null; true", become: false, timeout: .seconds(30)) { _, _ in }
        return StepResult(.succeeded, outcome)
    }
}
