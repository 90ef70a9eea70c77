// Pre-flight before any service stops (SPEC §8.3): read-only checks a host must pass
// before its `st2ctl stop`, so a transaction that cannot work, a database out of reach or
// a full disk fails the host while st2 still runs.

/// The pre-flight steps of a host's plan and how their failures read.
public enum Preflight {
    /// The step names, in the order they run.
    public static let diskName = "pre-flight disk"
    public static let indexName = "pre-flight index"
    public static let transactionName = "pre-flight packages"
    public static let databasesName = "pre-flight databases"
    public static let exportName = "pre-flight st2 CLI"

    /// Whether a step is the index refresh, the one pre-flight step `plan --preflight`
    /// leaves out: it rewrites the package index, which `plan` never changes.
    public static func refreshesIndex(_ step: PlanStep) -> Bool { step.kind == .preflight && step.name == indexName }

    /// Free space for the download in the package cache and on /opt, in KiB: each path's
    /// nearest existing directory is measured (an EL host's cache may not exist yet).
    static func diskCommand(manager: String, minimumFreeKiB: Int64) -> String {
        let cache = manager == "apt" ? "/var/cache/apt/archives" : "/var/cache/\(manager)"
        return "bad=0; for d in \(cache) /opt; do while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; "
            + "a=$(df -Pk \"$d\" | awk 'NR==2{print $4}'); "
            + "if [ \"${a:-0}\" -lt \(minimumFreeKiB) ]; then echo \"only $((${a:-0} / 1024)) MiB free on $d (needs \(minimumFreeKiB / 1024) MiB)\" >&2; bad=1; "
            + "else echo \"$d: $((a / 1024)) MiB free\"; fi; done; exit $bad"
    }

    /// The repository index refreshed. `yum makecache fast` and `dnf makecache --refresh`
    /// fetch expired (dnf: all) metadata and fail on a repository they cannot read or
    /// verify; `apt-get update` fails (exit 100) on a signature it cannot verify, and only
    /// warns on a repository it cannot reach, which ``reason(_:_:)`` turns into a failure.
    static func indexCommand(manager: String) -> String {
        switch manager {
        case "apt": return "apt-get update"
        case "dnf": return "dnf makecache --refresh"
        default: return "yum makecache fast"
        }
    }

    /// The pass's package transaction, simulated with the same pinned arguments.
    /// - apt: `apt-get install -s` ("No action; perform a simulation of events that would
    ///   occur based on the current system state but do not actually change the system",
    ///   apt-get(8)): it resolves dependencies as the real install does and exits 100 on
    ///   unmet ones.
    /// - yum/dnf: the real command with `--setopt=tsflags=test` (dnf.conf(5) `tsflags`,
    ///   yum.conf(5) the same): dependencies are resolved and the packages downloaded as for
    ///   the real transaction, then RPM runs it with RPMTRANS_FLAG_TEST (`rpm --test`: "do
    ///   not install, simply check for and report potential conflicts"). Unlike
    ///   `--assumeno`, whose exit status is 1 both when resolution fails and when it
    ///   succeeds and is declined, this exits 0 only when the transaction would work and
    ///   also catches file conflicts. It writes only to the package cache (the download
    ///   the real transaction then reuses).
    static func transactionCommand(manager: String, pinned: [(package: String, version: String)]) -> String {
        if manager == "apt" {
            return "apt-get install -s --only-upgrade " + pinned.map { "\($0.package)=\($0.version)" }.joined(separator: " ")
        }
        return "\(manager) update -y --setopt=tsflags=test " + pinned.map { "\($0.package)-\($0.version)" }.joined(separator: " ")
    }

    /// MongoDB and RabbitMQ from `/etc/st2/st2.conf` (and PostgreSQL from
    /// `/etc/mistral/mistral.conf` with `mistral`), each reachable over TCP from the host:
    /// a service passes when one of its listed addresses answers within 5 s (a replica set
    /// or cluster with one member down still works). Only `host:port` is ever printed: the
    /// URLs' credentials are cut off on the host. Defaults as st2 has them: MongoDB
    /// 127.0.0.1:27017, RabbitMQ amqp://guest:guest@127.0.0.1:5672/, PostgreSQL port 5432.
    static func databasesCommand(mistral: Bool) -> String {
        // conf FILE SECTION KEY: the key's value in an INI file (st2.conf, mistral.conf).
        let conf = #"conf() { awk -v s="[$2]" -v k="$3" '/^[ \t]*\[/ { gsub(/[ \t\r]/, ""); in_s = ($0 == s); next } in_s { line = $0; sub(/[ \t]*=.*/, "", line); gsub(/[ \t]/, "", line); if (line == k) { sub(/^[^=]*=[ \t]*/, ""); sub(/[ \t\r]*$/, ""); print; exit } }' "$1" 2>/dev/null; }"#
        // hosts URL PORT: each host:port of a URL (credentials, path and query cut off).
        let hosts = #"hosts() { u=${1#*://}; u=${u##*@}; u=${u%%/*}; u=${u%%\?*}; IFS=,; for hp in $u; do case $hp in *:*) echo "$hp";; *) echo "$hp:$2";; esac; done; unset IFS; }"#
        // probe NAME HOST:PORT...: one line per address, and whether any answered.
        let probe = #"probe() { name=$1; shift; ok=1; for hp in "$@"; do if timeout 5 bash -c "exec 3<>/dev/tcp/${hp%:*}/${hp##*:}" 2>/dev/null; then echo "$name $hp reachable"; ok=0; else echo "$name $hp unreachable" >&2; fi; done; [ $ok = 0 ] || bad=1; }"#
        var lines = [conf, hosts, probe, "bad=0; c=/etc/st2/st2.conf"]
        lines.append(#"h=$(conf $c database host); p=$(conf $c database port); p=${p:-27017}; case ${h:-127.0.0.1} in mongodb*://*) set -- $(hosts "$h" $p);; *) set -- $(hosts "x://${h:-127.0.0.1}" $p);; esac; probe MongoDB "$@""#)
        lines.append(#"u=$(conf $c messaging url); set -- $(hosts "${u:-amqp://127.0.0.1:5672/}" 5672); probe RabbitMQ "$@""#)
        if mistral {
            lines.append(#"u=$(conf /etc/mistral/mistral.conf database connection); set -- $(hosts "${u:-postgresql://127.0.0.1/mistral}" 5432); probe PostgreSQL "$@""#)
        }
        lines.append("exit $bad")
        return lines.joined(separator: "; ")
    }

    /// The st2 CLI reaching the API with its credentials: one key listed (from 2.5 the
    /// client pages; before, `-n` is unknown and the whole list is read), the values
    /// thrown away so none reaches a log.
    static func exportCommand(installed: StackStormVersion) -> String {
        let limit = installed.compareRelease(StackStormVersion("2.5")!) >= 0 ? " -n 1" : ""
        return "st2 key list -j\(limit) >/dev/null"
    }

    /// Why a pre-flight step failed, from what it printed: the check's own complaints
    /// (apt's `E:` lines and its unmet dependencies, yum/dnf's `Error:` and problems, the
    /// unreachable databases, the disk) rather than only the last line. A refresh that
    /// exited 0 but could not fetch an index (apt only warns) fails here too; nil: passed.
    public static func reason(_ step: PlanStep, _ outcome: StepOutcome) -> String? {
        let lines = (outcome.stderrTail + "\n" + outcome.stdoutTail).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let what = step.name.hasPrefix("pre-flight ") ? String(step.name.dropFirst("pre-flight ".count)) : step.name
        if outcome.exitStatus == 0 {
            guard step.name == indexName, let stale = lines.first(where: { $0.hasPrefix("W: Failed to fetch") || $0.hasPrefix("W: Some index files failed") })
            else { return nil }
            return "pre-flight \(what) failed (the index is stale): \(stale)"
        }
        let telling = lines.filter { line in
            ["E: ", "Error", "ERROR", "W: GPG error", "Problem", "- nothing provides", "Requires:", "only "].contains { line.hasPrefix($0) }
                || [" : Depends: ", " unreachable"].contains { line.contains($0) }
        }
        var seen: Set<String> = []
        let unique = telling.filter { seen.insert($0).inserted }
        let status = "exit \(outcome.exitStatus.map(String.init) ?? "?")"
        let detail = unique.isEmpty ? (lines.last { !$0.isEmpty } ?? "") : unique.prefix(6).joined(separator: "; ")
        return "pre-flight \(what) failed (\(status))" + (detail.isEmpty ? "" : ": \(detail)")
    }
}

/// An st2 process `ps` shows: a component, an action runner's or sensor's wrapper, or
/// anything run from StackStorm's own interpreters under /opt/stackstorm.
public struct St2Process: Sendable, Equatable {
    public var pid: Int
    /// The component or script it runs (`st2sensorcontainer`, `python_action_wrapper.py`).
    public var name: String

    public init(pid: Int, name: String) {
        self.pid = pid
        self.name = name
    }

    /// What lists them: every process's pid and full command line, narrowed on the host
    /// to lines naming st2 (the `grep` itself never matches ``parse(ps:)``).
    public static let psCommand = "ps -eo pid=,args= | grep -E 'st2|stackstorm|mistral|hubot' || true"

    /// The components' program names, as their command lines hold them.
    static let components: Set<String> = [
        "st2actionrunner", "st2api", "st2stream", "st2auth", "st2garbagecollector", "st2notifier", "st2resultstracker",
        "st2rulesengine", "st2sensorcontainer", "st2timersengine", "st2workflowengine", "st2scheduler", "mistral-server",
        "python_action_wrapper.py", "sensor_wrapper.py",
    ]

    /// The st2 processes of `ps -eo pid=,args=` output: a line counts when its program is
    /// a component, or when its program is StackStorm's own (under /opt/stackstorm/) or an
    /// interpreter (python, node, gunicorn) that runs a component, a wrapper, an st2 WSGI
    /// app (`st2api.wsgi:application`) or a script under /opt/stackstorm/. An operator's
    /// editor or `tail` on a file there does not count.
    public static func parse(ps text: String) -> [St2Process] {
        text.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard words.count >= 2, let pid = Int(words[0]) else { return nil }
            let command = Array(words.dropFirst())
            func base(_ word: String) -> String { word.split(separator: "/").last.map(String.init) ?? word }
            let program = base(command[0])
            if components.contains(program) { return St2Process(pid: pid, name: program) }
            // Beyond that, only StackStorm's own programs, and interpreters, are looked into.
            let own = command[0].hasPrefix("/opt/stackstorm/")
            guard own || ["python", "node", "gunicorn"].contains(where: { program.hasPrefix($0) }) else { return nil }
            if let app = command.first(where: { $0.hasPrefix("st2") && $0.contains(".wsgi") }) {
                return St2Process(pid: pid, name: String(app.prefix { $0 != "." }))
            }
            if let named = command.prefix(4).first(where: { components.contains(base($0)) }) {
                return St2Process(pid: pid, name: base(named))
            }
            let script = command.dropFirst().first { !$0.hasPrefix("-") }
            if let script, script.hasPrefix("/opt/stackstorm/") { return St2Process(pid: pid, name: base(script)) }
            return own ? St2Process(pid: pid, name: program) : nil
        }
    }
}

/// One host's pre-flight as `plan --preflight` ran it: the checks that ran, in order,
/// the first failure ending them (as it would end the host's upgrade).
public struct PreflightReport: Sendable, Equatable {
    public struct Check: Sendable, Equatable {
        public var name: String
        /// nil: passed.
        public var failure: String?

        public init(name: String, failure: String?) {
            self.name = name
            self.failure = failure
        }
    }

    public var checks: [Check]
    /// Why the checks could not run at all (the host unreachable), else nil.
    public var problem: String?

    public init(checks: [Check], problem: String? = nil) {
        self.checks = checks
        self.problem = problem
    }

    /// The first failure, or the problem; nil when every check passed.
    public var failure: String? { problem ?? checks.first { $0.failure != nil }?.failure }

    /// The steps `plan --preflight` runs of a plan: its pre-flight but the index refresh.
    public static func steps(of plan: HostPlan) -> [PlanStep] {
        plan.steps.filter { $0.kind == .preflight && !Preflight.refreshesIndex($0) }
    }
}

extension PlanView {
    /// The `Pre-flight:` section of `plan --preflight`: one line per host checked.
    public var preflightText: String {
        guard let preflight else { return "" }
        var out = "Pre-flight (read-only; the index refresh runs only in 'upgrade'):\n"
        for entry in entries {
            guard let report = preflight[entry.name] else { continue }
            if let failure = report.failure {
                out += "  \(entry.name): FAILED: \(failure)\n"
            } else {
                out += "  \(entry.name): passed (\(report.checks.map { $0.name.replacingOccurrences(of: "pre-flight ", with: "") }.joined(separator: ", ")))\n"
            }
        }
        return out + "\n"
    }

    /// The hosts whose pre-flight failed.
    var preflightFailures: Int { preflight.map { $0.values.filter { $0.failure != nil }.count } ?? 0 }

    func preflightJSON(_ name: String) -> JSONValue? {
        guard let report = preflight?[name] else { return nil }
        return .object([
            ("passed", .bool(report.failure == nil)),
            ("problem", .string(report.problem)),
            ("checks", .array(report.checks.map { .object([("name", .string($0.name)), ("passed", .bool($0.failure == nil)),
                                                          ("reason", .string($0.failure))]) })),
        ])
    }
}
