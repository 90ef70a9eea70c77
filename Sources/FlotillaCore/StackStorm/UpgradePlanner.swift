/// One step of a host's upgrade plan: an exact command and how its result is judged.
public struct PlanStep: Sendable, Equatable, Hashable {
    /// The step kinds of a plan (and of a run): ``StepKind``.
    public typealias Kind = StepKind

    public var name: String
    public var command: String
    public var kind: Kind
    /// `st2_cluster` for database steps (once per cluster), else nil.
    public var oncePer: String?
    /// Which pass of a hopped upgrade the step belongs to (0 without hops; backup is in 0).
    public var pass: Int
    /// What stdout must be, for `verify-version`; the installed packages, for `verify-services`.
    public var expect: String?
    /// The barriers (``Barrier``, of `st2_cluster`) the node meets the rest of its whole
    /// cluster at before this step (``ClusterPlanning``); empty node by node.
    public var barriers: [String] = []

    public init(name: String, command: String, kind: Kind, oncePer: String? = nil, pass: Int = 0, expect: String? = nil) {
        self.name = name
        self.command = command
        self.kind = kind
        self.oncePer = oncePer
        self.pass = pass
        self.expect = expect
    }
}

/// What flotilla will do to one host, and why.
public struct HostPlan: Sendable, Equatable {
    public enum Action: String, Sendable { case upgrade, skip, refuse, unreachable }

    public var action: Action
    public var reason: String?
    /// The installed st2 package version (`3.7.1-1`).
    public var fromVersion: String?
    /// The st2 package version the host ends on (`3.8.1-1`).
    public var toVersion: String?
    /// Intermediate releases the host goes through first (`3.0.1`).
    public var hops: [String]
    public var steps: [PlanStep]
    /// Operator notes: the catalog's `manual` notes of every crossed version, hops, skipped optional migrations.
    public var notes: [String]

    public init(action: Action, reason: String? = nil, fromVersion: String? = nil, toVersion: String? = nil,
                hops: [String] = [], steps: [PlanStep] = [], notes: [String] = []) {
        self.action = action
        self.reason = reason
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.hops = hops
        self.steps = steps
        self.notes = notes
    }

    public static func refuse(_ reason: String, from: String? = nil, notes: [String] = []) -> HostPlan {
        HostPlan(action: .refuse, reason: reason, fromVersion: from, notes: notes)
    }
}

/// Turns a host's facts into its upgrade plan (SPEC §4). Pure: no I/O, no clock.
public struct UpgradePlanner: Sendable {
    public struct Options: Sendable {
        public var target: StackStormVersion
        public var withOptionalMigrations = false
        public var backup = true
        /// Free space needed on / and on /opt.
        public var minimumFreeKiB: Int64 = 1024 * 1024

        public init(target: StackStormVersion) { self.target = target }

        /// The options the `plan`, `upgrade` and `report` flags give: free space in MiB.
        public init(target: StackStormVersion, withOptionalMigrations: Bool, backup: Bool, minimumFreeMiB: Int64) {
            self.target = target
            self.withOptionalMigrations = withOptionalMigrations
            self.backup = backup
            minimumFreeKiB = minimumFreeMiB * 1024
        }
    }

    public let catalog: MigrationCatalog
    public let options: Options

    public init(catalog: MigrationCatalog, options: Options) {
        self.catalog = catalog
        self.options = options
    }

    static let cluster = "st2_cluster"

    /// A reason the host cannot be upgraded safely.
    struct Refusal: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// What the facts say is installed, once they say enough to plan from.
    struct Installation {
        var os: OSInfo
        var manager: String
        var packages: [String: String]
        /// The installed st2 package version (`3.7.1-1`).
        var st2Package: String
        var st2: StackStormVersion
        /// Components `st2ctl status` shows running; nil when that could not be read.
        var running: Set<String>?
    }

    /// One upgrade pass, and the version each installed package is pinned to in it.
    struct Pass {
        var from: StackStormVersion
        var to: StackStormVersion
        var pinned: [(package: String, version: String)] = []
    }

    /// The plan of a host whose facts were gathered; an unreachable host's plan says
    /// why it could not be reached.
    public func plan(_ result: HostFactsResult) -> HostPlan {
        result.unreachable.map { HostPlan(action: .unreachable, reason: $0) } ?? plan(result.facts)
    }

    /// The host's plan: the upgrade, a skip (already at the target) or a refusal with the
    /// first reason found, in the order the checks are listed in SPEC §4.
    public func plan(_ facts: HostFacts) -> HostPlan {
        let target = options.target
        let host: Installation
        do { host = try installation(facts) } catch { return .refuse(error.reason) }
        let order = host.st2.compareRelease(target)
        if order == 0 {
            return HostPlan(action: .skip, reason: "already at \(target.releaseString) (st2 \(host.st2Package))",
                            fromVersion: host.st2Package, toVersion: host.st2Package)
        }
        if order > 0 {
            return .refuse("st2 \(host.st2Package) is newer than the target \(target.releaseString); flotilla never downgrades", from: host.st2Package)
        }
        let crossed = catalog.entries(crossingFrom: host.st2, to: target)
        let notes = crossed.flatMap { entry in entry.manual.map { "\(entry.version.series): \($0)" } }
        do {
            return try upgrade(host, facts, crossed: crossed, notes: notes)
        } catch {
            return .refuse(error.reason, from: host.st2Package, notes: notes)
        }
    }

    func installation(_ facts: HostFacts) throws(Refusal) -> Installation {
        guard let os = facts.os.value else { throw Refusal("OS unknown: \(facts.os.problem ?? "")") }
        guard os.family != .other else {
            throw Refusal("unsupported OS \(os.name): flotilla upgrades Debian/Ubuntu (apt) and RHEL/CentOS/Rocky (yum/dnf) hosts")
        }
        guard let manager = facts.packageManager.value else { throw Refusal("package manager unknown: \(facts.packageManager.problem ?? "")") }
        guard (os.family == .debian) == (manager == "apt") else {
            throw Refusal("package manager \(manager) does not fit \(os.name)")
        }
        guard let installed = facts.installed.value else { throw Refusal("installed packages unknown: \(facts.installed.problem ?? "")") }
        guard let st2Package = installed["st2"] else { throw Refusal("st2 is not installed") }
        guard let st2 = StackStormVersion(st2Package) else { throw Refusal("the installed st2 version '\(st2Package)' is not a version") }
        let running = facts.components.value.map { Set($0.filter(\.running).map(\.name)) }
        return Installation(os: os, manager: manager, packages: installed, st2Package: st2Package, st2: st2, running: running)
    }

    /// The plan of a host below the target, or why it cannot be upgraded.
    func upgrade(_ host: Installation, _ facts: HostFacts, crossed: [MigrationCatalog.Entry], notes: [String]) throws(Refusal) -> HostPlan {
        let target = options.target
        if let ceiling = catalog.osCeilings[host.os.key], Self.exceeds(target, ceiling: ceiling) {
            throw Refusal("the target \(target.releaseString) is above the highest release \(host.os.name) can run (\(ceiling))")
        }
        for entry in crossed {
            let removed = entry.removes.filter { host.packages[$0] != nil }
            if !removed.isEmpty {
                let reasons = removed.compactMap { entry.removalReasons[$0] }
                let general = removed.allSatisfy { entry.removalReasons[$0] != nil } ? nil
                    : entry.blocksIf ?? "\(removed.joined(separator: ", ")) is installed and \(entry.version.series) no longer ships it"
                throw Refusal("crossing \(entry.version.series): " + ([general].compactMap { $0 } + reasons).joined(separator: "; "))
            }
        }
        guard let offered = facts.offered.value else { throw Refusal("repository versions unknown: \(facts.offered.problem ?? "")") }
        var (passes, hopNotes) = try self.passes(from: host.st2, offered: offered)
        let packages = catalog.packages.filter { host.packages[$0] != nil }
        for index in passes.indices { passes[index].pinned = try pins(packages, to: passes[index].to, offered: offered) }
        try checkRoom(facts)

        var allNotes = hopNotes + notes
        for entry in crossed where entry.optional && !entry.scripts.isEmpty && !options.withOptionalMigrations {
            allNotes.append("\(entry.version.series): optional migration not planned (\(entry.scripts.joined(separator: "; "))); add \(entry.flag ?? "--with-optional-migrations") to run it")
        }
        if packages.contains("st2mistral"), let note = catalog.mistral.note { allNotes.append("mistral: \(note)") }
        return HostPlan(action: .upgrade, fromVersion: host.st2Package, toVersion: passes.last?.pinned.first { $0.package == "st2" }?.version,
                        hops: passes.dropLast().map(\.to.releaseString), steps: steps(host, passes), notes: allNotes)
    }

    /// The passes from `from` to the target: a hop wherever a needed script stopped
    /// shipping before the target, to the highest release offered that still ships it.
    func passes(from: StackStormVersion, offered: [String: [String]]) throws(Refusal) -> (passes: [Pass], notes: [String]) {
        let target = options.target
        var passes: [Pass] = []
        var current = from
        var hopNotes: [String] = []
        while true {
            let limits = neededEntries(from: current, to: target).compactMap { entry -> (MigrationCatalog.Entry, StackStormVersion)? in
                guard let until = entry.shippedUntil, until.compareRelease(target) < 0 else { return nil }
                return (entry, until)
            }
            guard let (entry, limit) = limits.min(by: { $0.1.compareRelease($1.1) < 0 }) else {
                passes.append(Pass(from: current, to: target))
                return (passes, hopNotes)
            }
            let candidates = (offered["st2"] ?? []).compactMap(StackStormVersion.init).filter {
                $0.compareRelease(current) > 0 && $0.compareRelease(entry.version) >= 0 && $0.compareRelease(limit) <= 0
            }
            guard let hop = candidates.max(by: { $0.compareRelease($1) < 0 }) else {
                throw Refusal("needs an intermediate release from \(entry.version.series) to \(limit) (the \(entry.version.series) migrations stopped shipping after \(limit)), and the host's repositories offer none")
            }
            let hopRelease = StackStormVersion(hop.releaseString)!
            hopNotes.append("goes through \(hopRelease.releaseString) first: the \(entry.version.series) migration scripts stopped shipping after \(limit)")
            passes.append(Pass(from: current, to: hopRelease))
            current = hopRelease
        }
    }

    /// Each package pinned to the highest version offered of release `release`.
    func pins(_ packages: [String], to release: StackStormVersion, offered: [String: [String]]) throws(Refusal) -> [(package: String, version: String)] {
        var pinned: [(package: String, version: String)] = []
        for package in packages {
            let versions = (offered[package] ?? []).filter { StackStormVersion($0)?.compareRelease(release) == 0 }
            guard let best = versions.max(by: { StackStormVersion($0)! < StackStormVersion($1)! }) else {
                let list = offered[package].map { $0.isEmpty ? "none" : $0.joined(separator: ", ") } ?? "none"
                let what = release == options.target ? "the target" : "the intermediate release"
                throw Refusal("\(what) \(release.releaseString) of \(package) is not offered by the host's repositories (offered: \(list))")
            }
            pinned.append((package, best))
        }
        return pinned
    }

    /// Enough free disk, and, for the backup, an st2api to export the key-value store from.
    func checkRoom(_ facts: HostFacts) throws(Refusal) {
        guard let disk = facts.disk.value else { throw Refusal("free disk unknown: \(facts.disk.problem ?? "")") }
        for space in disk where space.availableKiB < options.minimumFreeKiB {
            throw Refusal("only \(space.availableKiB / 1024) MiB free on \(space.path) (needs \(options.minimumFreeKiB / 1024) MiB)")
        }
        if options.backup, let components = facts.components.value, components.contains(where: { $0.name == "st2api" && !$0.running }) {
            throw Refusal("st2api is not running, so the key-value store cannot be exported: start st2 first, or plan with --no-backup")
        }
    }

    /// The backup, the pre-flight, then for each pass: stop, confirm, upgrade, database
    /// steps and migrations, reload, start, verify.
    func steps(_ host: Installation, _ passes: [Pass]) -> [PlanStep] {
        var steps: [PlanStep] = []
        if options.backup {
            steps.append(PlanStep(name: "export key-value store", command: catalog.keyExportCommand(installed: host.st2), kind: .backupKeyValue))
            for item in BackupItem.files {
                steps.append(PlanStep(name: item.stepName, command: item.paths, kind: .backupFiles, expect: item.expect))
            }
        }
        steps += preflightSteps(host, passes)
        for (index, pass) in passes.enumerated() {
            let pinned = pass.pinned
            steps.append(PlanStep(name: "stop services", command: "st2ctl stop", kind: .stop, pass: index))
            steps.append(PlanStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped, pass: index))
            steps.append(PlanStep(name: "upgrade packages", command: upgradeCommand(host.manager, pinned), kind: .upgradePackages, pass: index))
            if pinned.contains(where: { $0.package == "st2mistral" }) {
                for command in catalog.mistral.commands {
                    let words = command.split(separator: " ")
                    let name = "mistral-db-manage " + (words.last == "head" ? words.suffix(2).joined(separator: " ") : String(words.last ?? ""))
                    steps.append(PlanStep(name: name, command: command, kind: .mistralDB, oncePer: Self.cluster, pass: index))
                }
            }
            for entry in neededEntries(from: pass.from, to: pass.to) {
                for script in entry.scripts {
                    let file = MigrationCatalog.scriptPath(script).split(separator: "/").last.map(String.init) ?? script
                    steps.append(PlanStep(name: "migration \(entry.version.series): \(file)", command: catalog.scriptCommand(script, target: pass.to), kind: .migration,
                                          oncePer: entry.scope == .database ? Self.cluster : nil, pass: index))
                }
            }
            steps.append(PlanStep(name: "reload content", command: "st2ctl reload --register-all", kind: .reload, pass: index))
            for step in catalogSteps(host, pass) {
                steps.append(PlanStep(name: step.name, command: step.command, kind: .reload, pass: index))
            }
            steps.append(PlanStep(name: "start services", command: "st2ctl start", kind: .start, pass: index))
            let query = host.manager == "apt" ? "dpkg-query -W -f='${Version}' st2" : "rpm -q --qf '%{VERSION}-%{RELEASE}' st2"
            steps.append(PlanStep(name: "verify version", command: query, kind: .verifyVersion, pass: index, expect: pinned.first { $0.package == "st2" }?.version))
            // The installed packages say which listed components must run (st2chatops, Mistral).
            steps.append(PlanStep(name: "verify services", command: "st2ctl status", kind: .verifyServices, pass: index,
                                  expect: pinned.map(\.package).joined(separator: " ")))
        }
        return steps
    }

    /// The pre-flight before the first `st2ctl stop` (SPEC §8.3), all in pass 0: disk for
    /// the download, the index refreshed, every pass's transaction simulated (from the
    /// installed state; a later pass differs from it only in the st2 packages it pins, so
    /// its dependencies resolve alike), the databases reachable, the key-value store
    /// exportable. Later passes get none: their host is already down, so a late failure
    /// there saves nothing.
    func preflightSteps(_ host: Installation, _ passes: [Pass]) -> [PlanStep] {
        var steps = [
            PlanStep(name: Preflight.diskName, command: Preflight.diskCommand(manager: host.manager, minimumFreeKiB: options.minimumFreeKiB), kind: .preflight),
            PlanStep(name: Preflight.indexName, command: Preflight.indexCommand(manager: host.manager), kind: .preflight),
        ]
        for (index, pass) in passes.enumerated() {
            let name = Preflight.transactionName + (passes.count > 1 ? " (pass \(index + 1))" : "")
            steps.append(PlanStep(name: name, command: Preflight.transactionCommand(manager: host.manager, pinned: pass.pinned), kind: .preflight))
        }
        let mistral = passes.contains { $0.pinned.contains { $0.package == "st2mistral" } }
        steps.append(PlanStep(name: Preflight.databasesName, command: Preflight.databasesCommand(mistral: mistral), kind: .preflight))
        steps.append(PlanStep(name: Preflight.exportName, command: Preflight.exportCommand(installed: host.st2), kind: .preflight))
        return steps
    }

    /// The catalog's extra steps of the releases a pass crosses that fit the host: its OS
    /// listed, and one of the listed components running (or the components unknown, as
    /// the steps are safe to run where they are not needed); each command once.
    func catalogSteps(_ host: Installation, _ pass: Pass) -> [MigrationCatalog.Entry.Step] {
        var seen: Set<String> = []
        return catalog.entries(crossingFrom: pass.from, to: pass.to).flatMap(\.steps).filter { step in
            (step.os.isEmpty || step.os.contains(host.os.key))
                && (step.components.isEmpty || host.running.map { !$0.isDisjoint(with: step.components) } ?? true)
                && seen.insert(step.command).inserted
        }
    }

    /// Crossed entries whose scripts this run executes (optional ones only when asked).
    func neededEntries(from: StackStormVersion, to: StackStormVersion) -> [MigrationCatalog.Entry] {
        catalog.entries(crossingFrom: from, to: to).filter { !$0.scripts.isEmpty && (!$0.optional || options.withOptionalMigrations) }
    }

    func upgradeCommand(_ manager: String, _ pinned: [(package: String, version: String)]) -> String {
        if manager == "apt" {
            return "DEBIAN_FRONTEND=noninteractive apt-get install -y --only-upgrade -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
                + pinned.map { "\($0.package)=\($0.version)" }.joined(separator: " ")
        }
        return "\(manager) update -y " + pinned.map { "\($0.package)-\($0.version)" }.joined(separator: " ")
    }

    /// Whether `version` is past a ceiling given as a series (`3.4` allows 3.4.x) or a release.
    static func exceeds(_ version: StackStormVersion, ceiling: StackStormVersion) -> Bool {
        for index in 0..<ceiling.release.count {
            let mine = index < version.release.count ? version.release[index] : 0
            if mine != ceiling.release[index] { return mine > ceiling.release[index] }
        }
        return false
    }
}
