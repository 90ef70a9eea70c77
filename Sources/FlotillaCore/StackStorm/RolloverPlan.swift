import Foundation

// Content roll-over (SPEC §8.5): OLD's packs and key-value pairs moved to NEW, a fresh
// instance already running st2. The plan is pure: it reads what the probe found on both
// sides and says what will be copied, what will not, or why the roll-over is refused.

extension StepKind {
    /// A roll-over file sent to NEW's staging directory (`~/.flotilla/rollover/RUN/` of the
    /// login user, 0700) over SFTP: the step's command is the staged file's name, its
    /// `expect` what is sent (``RolloverStaging``). Sent again on resume: staging changes
    /// nothing st2 reads.
    public static let rolloverStage: StepKind = "rollover-stage"
    /// `st2ctl reload --register-all` on NEW: a pack that fails is named in the result.
    public static let rolloverRegister: StepKind = "rollover-register"
    /// The end of a roll-over: NEW holds every key of OLD (name, scope, secret flag,
    /// decrypted value) and lists every copied pack. Reads both hosts.
    public static let rolloverVerify: StepKind = "rollover-verify"

    /// The roll-over's kinds that run as plain commands over the session, and again on
    /// resume: staging only sends a file into the login user's staging directory, which
    /// nothing of st2 reads (sending it again is the right recovery), and verification only
    /// reads both hosts.
    public static let rolloverPlain: Set<StepKind> = [.rolloverStage, .rolloverVerify]
}

/// A key-value pair as `st2 key list -j` shows it, its value left out.
public struct RolloverKey: Sendable, Equatable {
    public var name: String
    /// `st2kv.system`, `st2kv.user`; nil for a pair written before st2 1.5.
    public var scope: String?
    /// nil for a pair written before st2 1.5 (which had no secrets).
    public var secret: Bool?
    public var user: String?

    public init(name: String, scope: String?, secret: Bool?, user: String? = nil) {
        self.name = name
        self.scope = scope
        self.secret = secret
        self.user = user
    }

    /// The scope as it is loaded: a pair from before 1.5 is a system one.
    public var loadScope: String { scope.map { $0.hasPrefix("st2kv.") ? $0 : "st2kv.\($0)" } ?? "st2kv.system" }

    /// The pairs of a `st2 key list -j` export (nil when it is not a JSON list of pairs).
    public static func parse(export data: Data) -> [RolloverKey]? {
        // Not JSON and not a list of pairs are alike: nil, which the caller reports.
        guard let items = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] else { return nil }
        var keys: [RolloverKey] = []
        for item in items {
            guard let name = item["name"] as? String else { return nil }
            keys.append(RolloverKey(name: name, scope: item["scope"] as? String, secret: item["secret"] as? Bool, user: item["user"] as? String))
        }
        return keys
    }
}

/// What the probe found on one side of a roll-over.
public struct RolloverSide: Sendable, Equatable {
    public var host: String
    /// nil when st2 is not installed (or its version unreadable).
    public var version: StackStormVersion?
    /// The directories under /opt/stackstorm/packs.
    public var packs: [String]
    /// OLD's pairs (values left out); NEW's are not read.
    public var keys: [RolloverKey]

    public init(host: String, version: StackStormVersion?, packs: [String], keys: [RolloverKey] = []) {
        self.host = host
        self.version = version
        self.packs = packs
        self.keys = keys
    }
}

/// The roll-over's plan, or why there is none.
public struct RolloverPlan: Sendable, Equatable {
    public var old: RolloverSide
    public var new: RolloverSide
    /// Packs on OLD, not on NEW, not shipped with st2: what is copied.
    public var packsToCopy: [String]
    /// Custom packs NEW has already: left as they are.
    public var packsOnBoth: [String]
    /// Set when the roll-over must not start.
    public var refusal: String?
    /// `--packs-from`: the packs are installed on NEW from this repository
    /// (``packURL(_:)``) instead of copied from OLD.
    public var packsFrom: String?

    /// Where `--packs-from` installs `pack` from: `{pack}` in the URL replaced by its name,
    /// else the name appended as a path component.
    public func packURL(_ pack: String) -> String? {
        guard let base = packsFrom else { return nil }
        if base.contains("{pack}") { return base.replacingOccurrences(of: "{pack}", with: pack) }
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/" + pack
    }

    /// The packs every st2 install ships: never copied (NEW has its own release's).
    public static let shippedPacks: Set<String> = ["chatops", "core", "default", "linux", "packs", "st2"]

    /// What does not carry over, said plainly in every plan.
    public static let notCarried = [
        "execution history (executions, workflow results, traces, rule enforcements): it stays in OLD's database; OLD's audit logs, kept with the backup, are the record",
        "OLD's datastore crypto key: NEW keeps its own, and the secrets are re-encrypted with it",
        "OLD's configuration (/etc/st2, /etc/mistral): kept with the backup, not applied to NEW",
    ]

    /// Plans a roll-over from what the probe found (with `packsFrom`, the packs are
    /// installed from that repository instead of copied). Refused when either side lacks st2, when
    /// NEW runs an older release than OLD, or when OLD and NEW are the same host.
    public static func plan(old: RolloverSide, new: RolloverSide, packsFrom: String? = nil) -> RolloverPlan {
        let custom = old.packs.filter { !shippedPacks.contains($0) }
        let onNew = Set(new.packs)
        var plan = RolloverPlan(old: old, new: new, packsToCopy: custom.filter { !onNew.contains($0) }.sorted(),
                                packsOnBoth: custom.filter { onNew.contains($0) }.sorted(), refusal: nil, packsFrom: packsFrom)
        if old.host == new.host {
            plan.refusal = "OLD and NEW are the same host (\(old.host))"
        } else if old.version == nil {
            plan.refusal = "\(old.host) (OLD) does not run st2"
        } else if new.version == nil {
            plan.refusal = "\(new.host) (NEW) does not run st2: install st2 there first (same release as OLD or newer)"
        } else if let from = old.version, let to = new.version, to.compareRelease(from) < 0 {
            plan.refusal = "\(new.host) (NEW) runs st2 \(to.releaseString), older than \(old.host) (OLD) at \(from.releaseString): NEW must run the same release or newer"
        }
        return plan
    }

    /// OLD's pairs counted by scope (a pair from before 1.5 counts as system), secrets apart.
    public var keyCounts: (byScope: [(scope: String, count: Int)], secrets: Int, legacy: Int) {
        var counts: [String: Int] = [:]
        for key in old.keys { counts[key.loadScope.replacingOccurrences(of: "st2kv.", with: ""), default: 0] += 1 }
        return (counts.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, old.keys.filter { $0.secret == true }.count,
                old.keys.filter { $0.scope == nil || $0.secret == nil }.count)
    }

    /// `120 keys (system 100, user 20; 40 secrets)`.
    public var keySummary: String {
        let counts = keyCounts
        let scopes = counts.byScope.map { "\($0.scope) \($0.count)" }.joined(separator: ", ")
        return "\(old.keys.count) key\(old.keys.count == 1 ? "" : "s")" + (old.keys.isEmpty ? "" : " (\(scopes); \(counts.secrets) secret\(counts.secrets == 1 ? "" : "s"))")
    }

    /// The plan as the operator reads it (`--dry-run` and the start of every run).
    public var rendered: String {
        var lines = ["roll-over \(old.host) (OLD, st2 \(old.version?.releaseString ?? "none")) -> \(new.host) (NEW, st2 \(new.version?.releaseString ?? "none"))"]
        if let refusal {
            lines.append("  refused: \(refusal)")
            return lines.joined(separator: "\n")
        }
        lines.append("  OLD is only read: backed up (SPEC 8.4) into the run's backups/\(old.host)/, with its audit logs")
        if packsFrom != nil, !packsToCopy.isEmpty {
            lines.append("  packs to install on NEW with st2 pack install (--packs-from): "
                         + packsToCopy.compactMap(packURL).joined(separator: ", "))
        } else {
            lines.append("  packs to copy: " + (packsToCopy.isEmpty ? "none" : packsToCopy.joined(separator: ", "))
                         + (packsToCopy.isEmpty ? "" : " (then registered on NEW and their virtualenvs set up)"))
        }
        if !packsOnBoth.isEmpty { lines.append("  packs NEW has already (left as they are): \(packsOnBoth.joined(separator: ", "))") }
        lines.append("  keys to load: \(keySummary), secrets re-encrypted with NEW's datastore key; a key NEW has of the same name and scope is replaced")
        let legacy = keyCounts.legacy
        if legacy > 0 { lines.append("  \(legacy) key\(legacy == 1 ? " written before st2 1.5 gets" : "s written before st2 1.5 get") scope system and secret false") }
        lines.append("  not carried over:")
        lines += Self.notCarried.map { "    - \($0)" }
        return lines.joined(separator: "\n")
    }
}

/// The read-only probe the roll-over plans from: st2's version and the packs on disk.
public enum RolloverProbe {
    static let marker = "flotilla-rollover "

    /// The probe's command (run through become).
    public static let command = "echo '\(marker)st2'; st2 --version 2>&1 | head -n 1; echo '\(marker)packs'; ls -1 /opt/stackstorm/packs 2>/dev/null; true"

    /// What the probe printed: the version (nil when st2 did not answer with one) and the packs.
    public static func parse(_ output: String) -> (version: StackStormVersion?, packs: [String]) {
        var section = "", versionLine = "", packs: [String] = []
        for line in output.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if line.hasPrefix(marker) { section = String(line.dropFirst(marker.count)); continue }
            if section == "st2", versionLine.isEmpty { versionLine = line }
            if section == "packs", !line.isEmpty, !line.hasPrefix(".") { packs.append(line) }
        }
        // `st2 2.10.4` (on stderr before 3.0) or `st2 3.8.1, on Python 3.8.10`.
        let words = versionLine.split(whereSeparator: { $0 == " " || $0 == "," })
        let version = words.first == "st2" && words.count >= 2 ? StackStormVersion(String(words[1])) : nil
        return (version, packs.sorted())
    }
}
