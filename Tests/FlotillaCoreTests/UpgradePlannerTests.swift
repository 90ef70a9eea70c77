import Foundation
import Testing
@testable import FlotillaCore

// MARK: Building facts and expected steps

/// A host's facts: the OS from its ID and version, the package manager that fits it unless
/// given, and free space on / and /opt.
fileprivate func facts(os: String = "ubuntu", version: String = "18.04", manager: String? = nil, installed: [String: String],
           offered: [String: [String]], freeKiB: Int64 = 20 * 1024 * 1024, optFreeKiB: Int64? = nil,
           components: Fact<[ComponentState]> = .known([ComponentState(name: "st2api", pid: 100)])) -> HostFacts {
    let family: OSInfo.Family
    let name: String
    switch os {
    case "ubuntu": family = .debian; name = "Ubuntu \(version) LTS"
    case "debian": family = .debian; name = "Debian GNU/Linux \(version)"
    case "centos": family = .redhat; name = "CentOS Linux \(version) (Core)"
    case "rocky": family = .redhat; name = "Rocky Linux \(version)"
    default: family = .other; name = "\(os) \(version)"
    }
    let major = Int(version.split(separator: ".").first ?? "") ?? 0
    let packageManager = manager ?? (family == .debian ? "apt" : major >= 8 ? "dnf" : "yum")
    return HostFacts(
        os: .known(OSInfo(id: os, versionID: version, name: name, family: family)),
        packageManager: .known(packageManager),
        installed: .known(installed),
        offered: .known(offered),
        components: components,
        disk: .known([DiskSpace(path: "/", mountPoint: "/", availableKiB: freeKiB),
                      DiskSpace(path: "/opt", mountPoint: "/", availableKiB: optFreeKiB ?? freeKiB)]),
        leftoverConfigs: .known([]))
}

/// The plan's backup comes first: the key-value export and four backup-files steps, so a
/// host's first change is step 6 (index 5).
fileprivate enum Expect {
    static let apt = "DEBIAN_FRONTEND=noninteractive apt-get install -y --only-upgrade -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
    static let dpkgQuery = "dpkg-query -W -f='${Version}' st2"
    static let rpmQuery = "rpm -q --qf '%{VERSION}-%{RELEASE}' st2"
    static let cluster = "st2_cluster"

    static let scopeSecret = "/opt/stackstorm/st2/bin/st2-migrate-datastore-to-include-scope-secret.py"
    static let scopes = "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py"
    static let runners = "/opt/stackstorm/st2/bin/st2-migrate-runners.sh"
    static let dictValues = "/opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values --yes"
    static let mistralUpgrade = "/opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf upgrade head"
    static let mistralPopulate = "/opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf populate"

    static func backup(from25: Bool) -> [PlanStep] {
        [PlanStep(name: "export key-value store", command: from25 ? "st2 key list -j -n -1 -s all" : "st2 key list -j -s all", kind: .backupKeyValue),
         PlanStep(name: "back up the datastore crypto key", command: "/etc/st2/keys", kind: .backupFiles, expect: "st2-keys.tar optional"),
         PlanStep(name: "back up /etc/st2", command: "/etc/st2", kind: .backupFiles, expect: "etc-st2.tar"),
         PlanStep(name: "back up /etc/mistral", command: "/etc/mistral", kind: .backupFiles, expect: "etc-mistral.tar optional"),
         PlanStep(name: "back up audit logs", command: "/var/log/st2/*.audit.log", kind: .backupFiles, expect: "audit-logs.tar optional")]
    }

    static let databases = Preflight.databasesCommand(mistral: false)
    static let databasesWithMistral = Preflight.databasesCommand(mistral: true)

    /// The pre-flight before the first stop: one simulated transaction per pass (the
    /// pinned arguments of each), all in pass 0.
    static func preflight(_ passes: [String], manager: String = "apt", from25: Bool, mistral: Bool = false) -> [PlanStep] {
        let index = ["apt": "apt-get update", "yum": "yum makecache fast", "dnf": "dnf makecache --refresh"][manager]!
        return [PlanStep(name: "pre-flight disk", command: Preflight.diskCommand(manager: manager, minimumFreeKiB: 1024 * 1024), kind: .preflight),
                PlanStep(name: "pre-flight index", command: index, kind: .preflight)]
            + passes.enumerated().map { number, pins in
                PlanStep(name: "pre-flight packages" + (passes.count > 1 ? " (pass \(number + 1))" : ""),
                         command: (manager == "apt" ? "apt-get install -s --only-upgrade " : "\(manager) update -y --setopt=tsflags=test ") + pins,
                         kind: .preflight)
            }
            + [PlanStep(name: "pre-flight databases", command: mistral ? databasesWithMistral : databases, kind: .preflight),
               PlanStep(name: "pre-flight st2 CLI", command: from25 ? "st2 key list -j -n 1 >/dev/null" : "st2 key list -j >/dev/null", kind: .preflight)]
    }

    /// Steps 3–7 of one pass, with the mistral and migration steps in the middle; `packages`
    /// are the installed packages whose components must run.
    static func pass(_ pass: Int, upgrade: String, middle: [PlanStep] = [], query: String, expect: String, packages: String = "st2") -> [PlanStep] {
        [PlanStep(name: "stop services", command: "st2ctl stop", kind: .stop, pass: pass),
         PlanStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped, pass: pass),
         PlanStep(name: "upgrade packages", command: upgrade, kind: .upgradePackages, pass: pass)]
            + middle
            + [PlanStep(name: "reload content", command: "st2ctl reload --register-all", kind: .reload, pass: pass),
               PlanStep(name: "start services", command: "st2ctl start", kind: .start, pass: pass),
               PlanStep(name: "verify version", command: query, kind: .verifyVersion, pass: pass, expect: expect),
               PlanStep(name: "verify services", command: "st2ctl status", kind: .verifyServices, pass: pass, expect: packages)]
    }

    static func migration(_ series: String, _ script: String, pass: Int = 0, cluster: Bool = true) -> PlanStep {
        let file = String(script.split(separator: " ")[0].split(separator: "/").last!)
        return PlanStep(name: "migration \(series): \(file)", command: script, kind: .migration, oncePer: cluster ? Self.cluster : nil, pass: pass)
    }

    static func mistral(pass: Int = 0) -> [PlanStep] {
        [PlanStep(name: "mistral-db-manage upgrade head", command: mistralUpgrade, kind: .mistralDB, oncePer: cluster, pass: pass),
         PlanStep(name: "mistral-db-manage populate", command: mistralPopulate, kind: .mistralDB, oncePer: cluster, pass: pass)]
    }
}

@Suite struct UpgradePlannerTests {
    let catalog: MigrationCatalog

    init() throws { catalog = try MigrationCatalog.bundled() }

    func plan(_ facts: HostFacts, to target: String, optional: Bool = false, backup: Bool = true, minimumFreeKiB: Int64? = nil,
              catalog: MigrationCatalog? = nil) -> HostPlan {
        var options = UpgradePlanner.Options(target: StackStormVersion(target)!)
        options.withOptionalMigrations = optional
        options.backup = backup
        if let minimumFreeKiB { options.minimumFreeKiB = minimumFreeKiB }
        return UpgradePlanner(catalog: catalog ?? self.catalog, options: options).plan(facts)
    }

    /// The catalog's manual notes of the given series, as the plan shows them.
    func manual(_ series: String...) -> [String] {
        series.flatMap { series in
            catalog.entries.first { $0.version.series == series }!.manual.map { "\(series): \($0)" }
        }
    }

    static let optionalNote = "3.5: optional migration not planned (/opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values --yes); add --with-optional-migrations to run it"
    static let mistralNote = "mistral: populate may print ERROR lines from mistral.actions.openstack.action_generator; they are harmless (StackStorm/st2#3844). Judge populate by its exit status."

    // MARK: Crossed versions

    @Test func from201To301RunsThe21ScriptsInOrder() {
        let host = facts(version: "16.04", installed: ["st2": "2.0.1-1"], offered: ["st2": ["2.0.1-1", "3.0.1-1"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.action == .upgrade)
        #expect(result.reason == nil)
        #expect(result.fromVersion == "2.0.1-1")
        #expect(result.toVersion == "3.0.1-1")
        #expect(result.hops == [])
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2=3.0.1-1"], from25: false) + Expect.pass(
            0, upgrade: Expect.apt + "st2=3.0.1-1",
            middle: [Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners)],
            query: Expect.dpkgQuery, expect: "3.0.1-1"))
        #expect(result.steps.map(\.name)[13...14] == ["migration 2.1: st2-migrate-datastore-scopes.py", "migration 2.1: st2-migrate-runners.sh"])
        #expect(result.notes == manual("2.1", "2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0"))
        #expect(result.notes[0] == "2.1: Pack metadata became stricter (semver version, valid email, ref [a-z0-9_]); old packs may fail to register.")
    }

    @Test func skippedVersionsStillRunTheirScriptsOldestFirst() {
        let host = facts(version: "16.04", installed: ["st2": "1.4.0-3"], offered: ["st2": ["3.0.1-1"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.action == .upgrade)
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2=3.0.1-1"], from25: false) + Expect.pass(
            0, upgrade: Expect.apt + "st2=3.0.1-1",
            middle: [Expect.migration("1.5", Expect.scopeSecret), Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners)],
            query: Expect.dpkgQuery, expect: "3.0.1-1"))
        #expect(result.steps[13].name == "migration 1.5: st2-migrate-datastore-to-include-scope-secret.py")
        #expect(result.notes == manual("2.1", "2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0"))
    }

    @Test func aVersionBetweenEntriesCrossesOnlyTheLaterOnes() {
        // 2.1.0 itself is not crossed from 2.1.0 (from < v <= to).
        let host = facts(version: "16.04", installed: ["st2": "2.1.0-1"], offered: ["st2": ["3.0.1-1"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.steps.filter { $0.kind == .migration } == [])
        #expect(result.notes == manual("2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0"))
    }

    @Test func optionalMigrationOnlyWithTheFlag() {
        let host = facts(installed: ["st2": "3.4.1-1"], offered: ["st2": ["3.4.1-1", "3.5.0-1"]])

        let without = plan(host, to: "3.5.0")
        #expect(without.action == .upgrade)
        #expect(without.steps == Expect.backup(from25: true) + Expect.preflight(["st2=3.5.0-1"], from25: true) + Expect.pass(0, upgrade: Expect.apt + "st2=3.5.0-1", query: Expect.dpkgQuery, expect: "3.5.0-1"))
        #expect(without.notes == manual("3.5") + [Self.optionalNote])

        let with = plan(host, to: "3.5.0", optional: true)
        #expect(with.steps == Expect.backup(from25: true) + Expect.preflight(["st2=3.5.0-1"], from25: true) + Expect.pass(
            0, upgrade: Expect.apt + "st2=3.5.0-1", middle: [Expect.migration("3.5", Expect.dictValues)], query: Expect.dpkgQuery, expect: "3.5.0-1"))
        #expect(with.steps[13].name == "migration 3.5: st2-migrate-db-dict-field-values")
        #expect(with.steps[13].command == "/opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values --yes")
        #expect(with.notes == manual("3.5"))
        #expect(!with.notes.contains { $0.contains("optional migration not planned") })
    }

    @Test func longJumpCollectsEveryCrossedNote() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "3.0.1-1.el7"], offered: ["st2": ["3.0.1-1.el7", "3.8.1-1.el7"]])
        let result = plan(host, to: "3.8.1")
        #expect(result.steps == Expect.backup(from25: true) + Expect.preflight(["st2-3.8.1-1.el7"], manager: "yum", from25: true) + Expect.pass(0, upgrade: "yum update -y st2-3.8.1-1.el7", query: Expect.rpmQuery, expect: "3.8.1-1.el7"))
        #expect(result.notes == manual("3.2", "3.3", "3.4", "3.5", "3.6", "3.7") + [Self.optionalNote])
        #expect(result.notes[1] == "3.3: MongoDB must go 3.4 -> 3.6 -> 4.0 with setFeatureCompatibilityVersion at each step (Ubuntu 16.04 / EL7).")
    }

    // MARK: Backup

    @Test func keyExportListsEveryKeyWithTheFlagsOfItsRelease() {
        // The client pages from 2.4; `-n 0` is no limit in 2.4 and 2.5, `-n -1` from 2.6 (catalog key_export).
        let offered = ["st2": ["3.0.1-1"]]
        #expect(plan(facts(version: "16.04", installed: ["st2": "2.3.0-1"], offered: offered), to: "3.0.1").steps[0].command == "st2 key list -j -s all")
        #expect(plan(facts(version: "16.04", installed: ["st2": "2.4.1-1"], offered: offered), to: "3.0.1").steps[0].command == "st2 key list -j -n 0 -s all")
        #expect(plan(facts(version: "16.04", installed: ["st2": "2.5.0-1"], offered: offered), to: "3.0.1").steps[0].command == "st2 key list -j -n 0 -s all")
        #expect(plan(facts(version: "16.04", installed: ["st2": "2.6.0-1"], offered: offered), to: "3.0.1").steps[0].command == "st2 key list -j -n -1 -s all")
        #expect(plan(facts(version: "16.04", installed: ["st2": "2.10.4-1"], offered: offered), to: "3.0.1").steps[0].command == "st2 key list -j -n -1 -s all")
    }

    @Test func noBackupRemovesTheBackupSteps() {
        let host = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        let with = plan(host, to: "3.8.1")
        let without = plan(host, to: "3.8.1", backup: false)
        #expect(with.steps.map(\.kind).prefix(5) == [.backupKeyValue, .backupFiles, .backupFiles, .backupFiles, .backupFiles])
        #expect(without.steps == Array(with.steps.dropFirst(5)))
        #expect(without.steps == Expect.preflight(["st2=3.8.1-1"], from25: true) + Expect.pass(0, upgrade: Expect.apt + "st2=3.8.1-1", query: Expect.dpkgQuery, expect: "3.8.1-1"))
        #expect(!without.steps.contains { StepKind.backups.contains($0.kind) })
    }

    // MARK: Hops

    @Test func hopsThroughAReleaseThatStillShipsThe21Scripts() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7"],
                         offered: ["st2": ["2.0.1-1.el7", "2.10.4-1.el7", "3.0.1-1.el7", "3.4.1-1.el7", "3.5.0-1.el7"]])
        let result = plan(host, to: "3.5.0")
        #expect(result.action == .upgrade)
        #expect(result.hops == ["3.0.1"])
        #expect(result.fromVersion == "2.0.1-1.el7")
        #expect(result.toVersion == "3.5.0-1.el7")
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2-3.0.1-1.el7", "st2-3.5.0-1.el7"], manager: "yum", from25: false)
                + Expect.pass(0, upgrade: "yum update -y st2-3.0.1-1.el7",
                              middle: [Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners)],
                              query: Expect.rpmQuery, expect: "3.0.1-1.el7")
                + Expect.pass(1, upgrade: "yum update -y st2-3.5.0-1.el7", query: Expect.rpmQuery, expect: "3.5.0-1.el7"))
        #expect(result.steps.filter { $0.kind == .stop }.map(\.pass) == [0, 1])
        #expect(result.steps.filter { $0.kind == .verifyVersion }.map(\.expect) == ["3.0.1-1.el7", "3.5.0-1.el7"])
        #expect(result.notes == ["goes through 3.0.1 first: the 2.1 migration scripts stopped shipping after 3.0.1"]
                + manual("2.1", "2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0", "3.2", "3.3", "3.4", "3.5") + [Self.optionalNote])

        // With the optional migration it runs in the second pass.
        let with = plan(host, to: "3.5.0", optional: true)
        #expect(with.hops == ["3.0.1"])
        #expect(with.steps.filter { $0.kind == .migration } == [
            Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners),
            Expect.migration("3.5", Expect.dictValues, pass: 1),
        ])
    }

    @Test func hopFromBefore15RunsBothOldEntriesInTheFirstPass() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "1.4.0-1.el7"], offered: ["st2": ["2.0.1-1.el7", "3.0.1-1.el7", "3.4.1-1.el7"]])
        let result = plan(host, to: "3.4.1")
        #expect(result.hops == ["3.0.1"])
        #expect(result.steps.filter { $0.kind == .migration } == [
            Expect.migration("1.5", Expect.scopeSecret), Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners),
        ])
        #expect(result.notes.first == "goes through 3.0.1 first: the 1.5 migration scripts stopped shipping after 3.0.1")
    }

    @Test func noHopWhenTheTargetStillShipsTheScripts() {
        // 3.0.1 is the last release shipping the 2.1 scripts (there is no 3.0.2).
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7"], offered: ["st2": ["3.0.0-1.el7", "3.0.1-1.el7"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.hops == [])
        #expect(result.steps.filter { $0.kind == .stop }.count == 1)
        #expect(result.toVersion == "3.0.1-1.el7")
    }

    @Test func refusesWhenNoHopReleaseIsOffered() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7"], offered: ["st2": ["2.0.1-1.el7", "3.1.0-1.el7", "3.5.0-1.el7"]])
        let result = plan(host, to: "3.5.0")
        #expect(result == HostPlan(
            action: .refuse,
            reason: "needs an intermediate release from 2.1 to 3.0.1 (the 2.1 migrations stopped shipping after 3.0.1), and the host's repositories offer none",
            fromVersion: "2.0.1-1.el7",
            notes: manual("2.1", "2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0", "3.2", "3.3", "3.4", "3.5")))
    }

    @Test func refusesWhenTheHopReleaseLacksAPackage() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7", "st2web": "2.0.1-1.el7"],
                         offered: ["st2": ["3.0.1-1.el7", "3.5.0-1.el7"], "st2web": ["2.0.1-1.el7", "3.5.0-1.el7"]])
        let result = plan(host, to: "3.5.0")
        #expect(result.action == .refuse)
        #expect(result.reason == "the intermediate release 3.0.1 of st2web is not offered by the host's repositories (offered: 2.0.1-1.el7, 3.5.0-1.el7)")
    }

    @Test func severalHopsFromASyntheticCatalog() throws {
        let synthetic = try MigrationCatalog(yaml: """
            versions:
              "1.1":
                scripts: [/opt/tools/host-fix.sh --all, /opt/tools/second.sh]
                scope: host
                shipped_until: "1.3"
                manual: ["check A"]
              "1.4":
                scripts: [/opt/tools/db.py]
                scope: database
                shipped_until: "1.6"
              "1.8":
                scripts: [/opt/tools/extra.py]
                scope: database
                optional: true
                flag: --with-extra
            packages: [st2, st2web]
            os_ceilings: {}
            mistral:
              commands: []
            """)
        let host = facts(installed: ["st2": "1.0.0-1"],
                         offered: ["st2": ["1.0.0-1", "1.2.0-1", "1.3.0-1", "1.5.0-1", "1.6.0-1", "1.7.0-1", "2.0.0-1"]])
        let result = plan(host, to: "2.0", catalog: synthetic)
        #expect(result.action == .upgrade)
        #expect(result.hops == ["1.3.0", "1.6.0"])
        #expect(result.toVersion == "2.0.0-1")
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2=1.3.0-1", "st2=1.6.0-1", "st2=2.0.0-1"], from25: false)
                + Expect.pass(0, upgrade: Expect.apt + "st2=1.3.0-1",
                              middle: [PlanStep(name: "migration 1.1: host-fix.sh", command: "/opt/tools/host-fix.sh --all", kind: .migration, pass: 0),
                                       PlanStep(name: "migration 1.1: second.sh", command: "/opt/tools/second.sh", kind: .migration, pass: 0)],
                              query: Expect.dpkgQuery, expect: "1.3.0-1")
                + Expect.pass(1, upgrade: Expect.apt + "st2=1.6.0-1",
                              middle: [PlanStep(name: "migration 1.4: db.py", command: "/opt/tools/db.py", kind: .migration, oncePer: "st2_cluster", pass: 1)],
                              query: Expect.dpkgQuery, expect: "1.6.0-1")
                + Expect.pass(2, upgrade: Expect.apt + "st2=2.0.0-1", query: Expect.dpkgQuery, expect: "2.0.0-1"))
        #expect(result.notes == [
            "goes through 1.3.0 first: the 1.1 migration scripts stopped shipping after 1.3",
            "goes through 1.6.0 first: the 1.4 migration scripts stopped shipping after 1.6",
            "1.1: check A",
            "1.8: optional migration not planned (/opt/tools/extra.py); add --with-extra to run it",
        ])
        // Host-scope scripts run on every host: no once_per.
        #expect(result.steps.filter { $0.oncePer != nil }.map(\.name) == ["migration 1.4: db.py"])
    }

    // MARK: Refusals

    @Test func refusesATargetTheRepositoriesDoNotOffer() {
        let host = facts(installed: ["st2": "3.7.1-1", "st2web": "3.7.1-1"],
                         offered: ["st2": ["3.7.0-1", "3.7.1-1", "3.8.0-1"], "st2web": ["3.8.1-1"]])
        let result = plan(host, to: "3.8.1")
        #expect(result == HostPlan(action: .refuse,
                                   reason: "the target 3.8.1 of st2 is not offered by the host's repositories (offered: 3.7.0-1, 3.7.1-1, 3.8.0-1)",
                                   fromVersion: "3.7.1-1"))
        let noWeb = facts(installed: ["st2": "3.7.1-1", "st2web": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        #expect(plan(noWeb, to: "3.8.1").reason == "the target 3.8.1 of st2web is not offered by the host's repositories (offered: none)")
        let empty = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": []])
        #expect(plan(empty, to: "3.8.1").reason == "the target 3.8.1 of st2 is not offered by the host's repositories (offered: none)")
    }

    @Test func ubuntu1404StopsAt30() {
        let trusty = facts(version: "14.04", installed: ["st2": "2.10.4-1"], offered: ["st2": ["3.0.1-1", "3.1.0-1"]])
        #expect(plan(trusty, to: "3.1.0") == HostPlan(action: .refuse, reason: "the target 3.1.0 is above the highest release Ubuntu 14.04 LTS can run (3.0)",
                                                      fromVersion: "2.10.4-1", notes: manual("3.0")))
        #expect(plan(trusty, to: "3.0.1").action == .upgrade)
    }

    @Test func refusesATargetAboveTheOSCeiling() {
        let xenial = facts(version: "16.04", installed: ["st2": "3.4.0-1"], offered: ["st2": ["3.4.1-1", "3.5.0-1"]])
        let refused = plan(xenial, to: "3.5.0")
        #expect(refused == HostPlan(action: .refuse, reason: "the target 3.5.0 is above the highest release Ubuntu 16.04 LTS can run (3.4)",
                                    fromVersion: "3.4.0-1", notes: manual("3.5")))
        // 3.4.x is within the 3.4 ceiling.
        let allowed = plan(xenial, to: "3.4.1")
        #expect(allowed.action == .upgrade)
        #expect(allowed.toVersion == "3.4.1-1")

        let el7 = facts(os: "centos", version: "7", installed: ["st2": "3.8.1-1.el7"], offered: ["st2": ["3.9.0-1.el7"]])
        #expect(plan(el7, to: "3.9.0").reason == "the target 3.9.0 is above the highest release CentOS Linux 7 (Core) can run (3.8)")
        let el6 = facts(os: "centos", version: "6.10", installed: ["st2": "3.2.0-1.el6"], offered: ["st2": ["3.3.0-1.el6"]])
        #expect(plan(el6, to: "3.3.0").reason == "the target 3.3.0 is above the highest release CentOS Linux 6.10 (Core) can run (3.2)")
        // No ceiling for Rocky 8.
        let rocky = facts(os: "rocky", version: "8.9", installed: ["st2": "3.8.1-1.el8"], offered: ["st2": ["3.9.0-1.el8"]])
        #expect(plan(rocky, to: "3.9.0").action == .upgrade)
    }

    @Test func ceilingsAreSeriesOrReleases() {
        let series = StackStormVersion("3.4")!, release = StackStormVersion("3.4.1")!
        #expect(!UpgradePlanner.exceeds(StackStormVersion("3.4.9")!, ceiling: series))
        #expect(UpgradePlanner.exceeds(StackStormVersion("3.5.0")!, ceiling: series))
        #expect(UpgradePlanner.exceeds(StackStormVersion("4.0")!, ceiling: series))
        #expect(!UpgradePlanner.exceeds(StackStormVersion("3.4.1")!, ceiling: release))
        #expect(UpgradePlanner.exceeds(StackStormVersion("3.4.2")!, ceiling: release))
        #expect(!UpgradePlanner.exceeds(StackStormVersion("2.10")!, ceiling: series))
    }

    @Test func refusesCrossing33WithMistralInstalled() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "3.2.0-1.el7", "st2mistral": "3.2.0-1.el7"],
                         offered: ["st2": ["3.3.0-1.el7", "3.4.1-1.el7"], "st2mistral": ["3.2.0-1.el7"]])
        let result = plan(host, to: "3.4.1")
        #expect(result == HostPlan(
            action: .refuse,
            reason: "crossing 3.3: st2mistral is installed: Mistral was removed in 3.3.0; Mistral workflows must be converted to Orquesta and st2mistral purged first",
            fromVersion: "3.2.0-1.el7", notes: manual("3.3", "3.4")))
        // Without st2mistral the same jump is planned.
        let clean = facts(os: "centos", version: "7", installed: ["st2": "3.2.0-1.el7"], offered: ["st2": ["3.4.1-1.el7"]])
        #expect(plan(clean, to: "3.4.1").action == .upgrade)
        // Up to 3.2 st2mistral is upgraded with st2.
        let kept = facts(os: "centos", version: "7", installed: ["st2": "3.1.0-1.el7", "st2mistral": "3.1.0-1.el7"],
                         offered: ["st2": ["3.2.0-1.el7"], "st2mistral": ["3.2.0-1.el7"]])
        #expect(plan(kept, to: "3.2.0").action == .upgrade)
    }

    @Test func bwcEnterpriseMustBeRemovedBeforeCrossing33() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "3.2.0-1.el7", "bwc-enterprise": "3.2.0-1.el7"],
                         offered: ["st2": ["3.3.0-1.el7", "3.4.1-1.el7"], "bwc-enterprise": ["3.2.0-1.el7"]])
        let result = plan(host, to: "3.4.1")
        #expect(result.action == .refuse)
        #expect(result.reason == "crossing 3.3: bwc-enterprise is installed: the enterprise add-on ends at 3.2 (no 3.3 package); remove it "
                + "(apt-get purge bwc-enterprise / yum remove bwc-enterprise) before crossing 3.3, keeping RBAC through st2-rbac-backend if used")
        #expect(!(result.reason ?? "").contains("not offered"))
        #expect(result.notes.contains("3.3: bwc-enterprise is not shipped after 3.2 (Workflow Designer moved into st2web): remove it before crossing 3.3."))
        // With st2mistral too, both are named, in the catalog's removes order.
        var both = host
        both.installed = .known(["st2": "3.2.0-1.el7", "bwc-enterprise": "3.2.0-1.el7", "st2mistral": "3.2.0-1.el7"])
        let reason = plan(both, to: "3.4.1").reason ?? ""
        #expect(reason.hasPrefix("crossing 3.3: st2mistral is installed: Mistral was removed in 3.3.0;"))
        #expect(reason.contains("; bwc-enterprise is installed: the enterprise add-on ends at 3.2"))
    }

    @Test func blocksIfTextStillCoversEveryRemovedPackage() throws {
        let synthetic = try MigrationCatalog(yaml: """
            versions:
              "1.2":
                removes: [st2web, st2chatops]
                blocks_if:
                  st2web: "st2web must go first"
            packages: [st2, st2web, st2chatops]
            os_ceilings: {}
            mistral:
              commands: []
            """)
        let host = facts(installed: ["st2": "1.0.0-1", "st2web": "1.0.0-1", "st2chatops": "1.0.0-1"], offered: ["st2": ["1.2.0-1"]])
        // A package without its own reason gets the general one.
        #expect(plan(host, to: "1.2", catalog: synthetic).reason
                == "crossing 1.2: st2web, st2chatops is installed and 1.2 no longer ships it; st2web must go first")
    }

    @Test func removedPackageWithoutAnExplanationInTheCatalog() throws {
        let synthetic = try MigrationCatalog(yaml: """
            versions:
              "1.2":
                removes: [st2web, st2chatops]
            packages: [st2, st2web, st2chatops]
            os_ceilings: {}
            mistral:
              commands: []
            """)
        let host = facts(installed: ["st2": "1.0.0-1", "st2web": "1.0.0-1"], offered: ["st2": ["1.2.0-1"]])
        #expect(plan(host, to: "1.2", catalog: synthetic) == .refuse("crossing 1.2: st2web is installed and 1.2 no longer ships it", from: "1.0.0-1"))
        #expect(plan(facts(installed: ["st2": "1.0.0-1"], offered: ["st2": ["1.2.0-1"]]), to: "1.2", catalog: synthetic).action == .upgrade)
    }

    @Test func refusesABackupWhileSt2apiIsDown() {
        var host = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        host.components = .known([ComponentState(name: "st2actionrunner", pid: 10), ComponentState(name: "st2api", pid: nil)])
        #expect(plan(host, to: "3.8.1") == .refuse("st2api is not running, so the key-value store cannot be exported: start st2 first, or plan with --no-backup",
                                                  from: "3.7.1-1"))
        #expect(plan(host, to: "3.8.1", backup: false).action == .upgrade)
        // Other components being down does not matter to the backup.
        host.components = .known([ComponentState(name: "st2api", pid: 11), ComponentState(name: "st2chatops", pid: nil)])
        #expect(plan(host, to: "3.8.1").action == .upgrade)
    }

    @Test func neverDowngrades() {
        let host = facts(installed: ["st2": "3.8.1-1"], offered: ["st2": ["3.8.0-1", "3.8.1-1"]])
        #expect(plan(host, to: "3.8.0") == HostPlan(action: .refuse, reason: "st2 3.8.1-1 is newer than the target 3.8.0; flotilla never downgrades",
                                                    fromVersion: "3.8.1-1"))
        #expect(plan(host, to: "3.7").reason == "st2 3.8.1-1 is newer than the target 3.7.0; flotilla never downgrades")
    }

    @Test func skipsAHostAlreadyAtTheTarget() {
        // Nothing else is needed to skip: not the offers, not the disk.
        var host = facts(installed: ["st2": "3.8.1-2"], offered: [:])
        host.offered = .unreadable("repository query: exit 100")
        host.disk = .unreadable("df: exit 1")
        #expect(plan(host, to: "3.8.1") == HostPlan(action: .skip, reason: "already at 3.8.1 (st2 3.8.1-2)", fromVersion: "3.8.1-2", toVersion: "3.8.1-2"))
        #expect(plan(host, to: "3.8.1").steps == [])
    }

    @Test func refusesUnknownOrUnsupportedOperatingSystems() {
        let alpine = facts(os: "alpine", version: "3.19", installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        #expect(plan(alpine, to: "3.8.1") == .refuse("unsupported OS alpine 3.19: flotilla upgrades Debian/Ubuntu (apt) and RHEL/CentOS/Rocky (yum/dnf) hosts"))
        var unreadable = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        unreadable.os = .unreadable("/etc/os-release: no ID in it")
        #expect(plan(unreadable, to: "3.8.1") == .refuse("OS unknown: /etc/os-release: no ID in it"))
        let never = HostFacts(unreadable: "the facts probe did not run (exit 1): sudo: a password is required")
        #expect(plan(never, to: "3.8.1") == .refuse("OS unknown: the facts probe did not run (exit 1): sudo: a password is required"))
    }

    @Test func refusesAPackageManagerThatDoesNotFitTheOS() {
        let host = facts(manager: "yum", installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        #expect(plan(host, to: "3.8.1").reason == "package manager yum does not fit Ubuntu 18.04 LTS")
        let rocky = facts(os: "rocky", version: "8.9", manager: "apt", installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        #expect(plan(rocky, to: "3.8.1").reason == "package manager apt does not fit Rocky Linux 8.9")
        var none = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        none.packageManager = .unreadable("no apt-get, dnf or yum on the host")
        #expect(plan(none, to: "3.8.1").reason == "package manager unknown: no apt-get, dnf or yum on the host")
    }

    @Test func refusesWithoutSt2() {
        #expect(plan(facts(installed: [:], offered: ["st2": ["3.8.1-1"]]), to: "3.8.1") == .refuse("st2 is not installed"))
        #expect(plan(facts(installed: ["st2web": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]]), to: "3.8.1") == .refuse("st2 is not installed"))
        #expect(plan(facts(installed: ["st2": "unknown"], offered: ["st2": ["3.8.1-1"]]), to: "3.8.1")
                == .refuse("the installed st2 version 'unknown' is not a version"))
    }

    @Test func refusesWhenFreeDiskIsTooLow() {
        let root = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]], freeKiB: 512 * 1024)
        #expect(plan(root, to: "3.8.1") == .refuse("only 512 MiB free on / (needs 1024 MiB)", from: "3.7.1-1"))
        let opt = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]], optFreeKiB: 100 * 1024 + 5)
        #expect(plan(opt, to: "3.8.1").reason == "only 100 MiB free on /opt (needs 1024 MiB)")
        // Exactly the minimum is enough; the minimum is an option.
        let exact = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]], freeKiB: 1024 * 1024)
        #expect(plan(exact, to: "3.8.1").action == .upgrade)
        #expect(plan(exact, to: "3.8.1", minimumFreeKiB: 2048 * 1024).reason == "only 1024 MiB free on / (needs 2048 MiB)")
    }

    @Test func refusesWhenFactsCannotBeRead() {
        var offered = facts(installed: ["st2": "3.7.1-1"], offered: [:])
        offered.offered = .unreadable("repository query: exit 1: Cannot retrieve repository metadata (repomd.xml)")
        #expect(plan(offered, to: "3.8.1") == .refuse("repository versions unknown: repository query: exit 1: Cannot retrieve repository metadata (repomd.xml)",
                                                     from: "3.7.1-1"))
        var installed = facts(installed: [:], offered: ["st2": ["3.8.1-1"]])
        installed.installed = .unreadable("exit 127: neither dpkg-query nor rpm is installed (package query failed)")
        #expect(plan(installed, to: "3.8.1") == .refuse("installed packages unknown: exit 127: neither dpkg-query nor rpm is installed (package query failed)"))
        var disk = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        disk.disk = .unreadable("output ended before the disk section finished (exit ?)")
        #expect(plan(disk, to: "3.8.1") == .refuse("free disk unknown: output ended before the disk section finished (exit ?)", from: "3.7.1-1"))
    }

    @Test func unreadableComponentsOrLeftoversDoNotBlockThePlan() {
        var host = facts(installed: ["st2": "3.7.1-1"], offered: ["st2": ["3.8.1-1"]])
        host.components = .unreadable("st2ctl status: not the usual component list")
        host.leftoverConfigs = .unreadable("find: exit 1")
        #expect(plan(host, to: "3.8.1").action == .upgrade)
    }

    // MARK: Commands and pinned versions

    @Test func aptPinsEveryInstalledPackageInCatalogOrder() {
        let host = facts(installed: ["st2web": "3.7.1-1", "st2": "3.7.1-1"],
                         offered: ["st2": ["3.7.1-1", "3.8.1-1"], "st2web": ["3.8.1-1"], "st2chatops": ["3.8.1-1"]])
        let result = plan(host, to: "3.8.1")
        #expect(result.steps == Expect.backup(from25: true) + Expect.preflight(["st2=3.8.1-1 st2web=3.8.1-1"], from25: true) + Expect.pass(
            0, upgrade: "DEBIAN_FRONTEND=noninteractive apt-get install -y --only-upgrade -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold st2=3.8.1-1 st2web=3.8.1-1",
            query: "dpkg-query -W -f='${Version}' st2", expect: "3.8.1-1", packages: "st2 st2web"))
    }

    @Test func pinsTheHighestRevisionOfTheTargetRelease() {
        let apt = facts(installed: ["st2": "3.7.1-1", "st2web": "3.7.1-1"],
                        offered: ["st2": ["3.8.0-1", "3.8.1-1", "3.8.1-2", "3.9.0-1"], "st2web": ["3.8.1-1"]])
        let result = plan(apt, to: "3.8.1")
        #expect(result.steps.first { $0.kind == .upgradePackages }?.command == Expect.apt + "st2=3.8.1-2 st2web=3.8.1-1")
        #expect(result.steps.first { $0.kind == .verifyVersion }?.expect == "3.8.1-2")
        #expect(result.toVersion == "3.8.1-2")

        let dnf = facts(os: "rocky", version: "8.9", installed: ["st2": "3.7.0-1.el8", "st2web": "3.7.0-1.el8"],
                        offered: ["st2": ["3.8.1-1.el8", "3.8.1-10.el8", "3.8.1-2.el8"], "st2web": ["3.8.1-1.el8"]])
        let rocky = plan(dnf, to: "3.8.1")
        #expect(rocky.steps == Expect.backup(from25: true) + Expect.preflight(["st2-3.8.1-10.el8 st2web-3.8.1-1.el8"], manager: "dnf", from25: true) + Expect.pass(
            0, upgrade: "dnf update -y st2-3.8.1-10.el8 st2web-3.8.1-1.el8", query: Expect.rpmQuery, expect: "3.8.1-10.el8", packages: "st2 st2web"))
        #expect(rocky.toVersion == "3.8.1-10.el8")
    }

    @Test func yumOnCentOS7() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "3.7.0-1.el7"], offered: ["st2": ["3.7.0-1.el7", "3.8.1-1.el7"]])
        let result = plan(host, to: "3.8.1")
        #expect(result.steps == Expect.backup(from25: true) + Expect.preflight(["st2-3.8.1-1.el7"], manager: "yum", from25: true) + Expect.pass(
            0, upgrade: "yum update -y st2-3.8.1-1.el7", query: "rpm -q --qf '%{VERSION}-%{RELEASE}' st2", expect: "3.8.1-1.el7"))
        #expect(result.fromVersion == "3.7.0-1.el7")
        #expect(result.notes == [])
    }

    // MARK: Mistral

    @Test func mistralDatabaseStepsAfterThePackagesWhileTheTargetShipsMistral() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.9.0-1.el7", "st2mistral": "2.9.0-1.el7"],
                         offered: ["st2": ["2.9.0-1.el7", "3.2.0-1.el7"], "st2mistral": ["2.9.0-1.el7", "3.2.0-1.el7"]])
        let result = plan(host, to: "3.2.0")
        #expect(result.action == .upgrade)
        #expect(result.steps == Expect.backup(from25: true) + Expect.preflight(["st2-3.2.0-1.el7 st2mistral-3.2.0-1.el7"], manager: "yum", from25: true, mistral: true) + Expect.pass(
            0, upgrade: "yum update -y st2-3.2.0-1.el7 st2mistral-3.2.0-1.el7", middle: Expect.mistral(), query: Expect.rpmQuery, expect: "3.2.0-1.el7",
            packages: "st2 st2mistral"))
        #expect(result.steps[13].name == "mistral-db-manage upgrade head")
        #expect(result.steps[14].name == "mistral-db-manage populate")
        #expect(result.notes == manual("2.10", "3.0", "3.2") + [Self.mistralNote])
    }

    @Test func mistralStepsComeBeforeTheMigrationScripts() {
        let host = facts(version: "16.04", installed: ["st2": "2.0.1-1", "st2mistral": "2.0.1-1", "st2web": "2.0.1-1"],
                         offered: ["st2": ["3.0.1-1"], "st2mistral": ["3.0.1-1"], "st2web": ["3.0.1-1"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2=3.0.1-1 st2web=3.0.1-1 st2mistral=3.0.1-1"], from25: false, mistral: true) + Expect.pass(
            0, upgrade: Expect.apt + "st2=3.0.1-1 st2web=3.0.1-1 st2mistral=3.0.1-1",
            middle: Expect.mistral() + [Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners)],
            query: Expect.dpkgQuery, expect: "3.0.1-1", packages: "st2 st2web st2mistral"))
        #expect(result.notes.last == Self.mistralNote)
    }

    @Test func mistralStepsInEveryPassOfAHop() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7", "st2mistral": "2.0.1-1.el7"],
                         offered: ["st2": ["3.0.1-1.el7", "3.2.0-1.el7"], "st2mistral": ["3.0.1-1.el7", "3.2.0-1.el7"]])
        let result = plan(host, to: "3.2.0")
        #expect(result.hops == ["3.0.1"])
        #expect(result.steps == Expect.backup(from25: false) + Expect.preflight(["st2-3.0.1-1.el7 st2mistral-3.0.1-1.el7", "st2-3.2.0-1.el7 st2mistral-3.2.0-1.el7"], manager: "yum", from25: false, mistral: true)
                + Expect.pass(0, upgrade: "yum update -y st2-3.0.1-1.el7 st2mistral-3.0.1-1.el7",
                              middle: Expect.mistral() + [Expect.migration("2.1", Expect.scopes), Expect.migration("2.1", Expect.runners)],
                              query: Expect.rpmQuery, expect: "3.0.1-1.el7", packages: "st2 st2mistral")
                + Expect.pass(1, upgrade: "yum update -y st2-3.2.0-1.el7 st2mistral-3.2.0-1.el7", middle: Expect.mistral(pass: 1),
                              query: Expect.rpmQuery, expect: "3.2.0-1.el7", packages: "st2 st2mistral"))
    }

    @Test func allInstalledPackagesArePinnedInCatalogOrder() {
        let version = "3.2.0-1.el7"
        let installed = ["bwc-enterprise": "3.1.0-1.el7", "st2mistral": "3.1.0-1.el7", "st2chatops": "3.1.0-1.el7", "st2web": "3.1.0-1.el7", "st2": "3.1.0-1.el7"]
        let offered = Dictionary(uniqueKeysWithValues: installed.keys.map { ($0, [version]) })
        let result = plan(facts(os: "centos", version: "7", installed: installed, offered: offered), to: "3.2.0")
        #expect(result.steps.first { $0.kind == .upgradePackages }?.command
                == "yum update -y st2-3.2.0-1.el7 st2web-3.2.0-1.el7 st2chatops-3.2.0-1.el7 st2mistral-3.2.0-1.el7 bwc-enterprise-3.2.0-1.el7")
        // The installed packages say which components must run after the upgrade.
        #expect(result.steps.last?.kind == .verifyServices)
        #expect(result.steps.last?.expect == "st2 st2web st2chatops st2mistral bwc-enterprise")
    }

    @Test func onlyDatabaseStepsAreOncePerCluster() {
        let host = facts(version: "16.04", installed: ["st2": "1.4.0-1", "st2mistral": "1.4.0-1"],
                         offered: ["st2": ["3.0.1-1"], "st2mistral": ["3.0.1-1"]])
        let result = plan(host, to: "3.0.1")
        #expect(result.steps.count == 22)
        for step in result.steps {
            let database = step.kind == .mistralDB || step.kind == .migration
            #expect(step.oncePer == (database ? "st2_cluster" : nil), "\(step.name)")
        }
        #expect(result.steps.filter { $0.oncePer != nil }.map(\.kind) == [.mistralDB, .mistralDB, .migration, .migration, .migration])
    }
}

@Suite struct PlanViewTests {
    let catalog: MigrationCatalog
    init() throws { catalog = try MigrationCatalog.bundled() }

    func plan(_ facts: HostFacts, to target: String = "3.8.1") -> HostPlan {
        UpgradePlanner(catalog: catalog, options: .init(target: StackStormVersion(target)!)).plan(facts)
    }

    /// 20 hosts: st2-01..12 from 3.7.1, st2-13..16 from 3.7.0 (the same plan), st2-17..18
    /// from 3.6.0 (crosses 3.7: other notes), st2-19 at the target, st2-20 on Ubuntu 16.04.
    func fleet() -> [PlanView.Entry] {
        (1...20).map { number in
            let name = String(format: "st2-%02d", number)
            let from = number <= 12 ? "3.7.1-1" : number <= 16 ? "3.7.0-1" : number <= 18 ? "3.6.0-1" : number == 19 ? "3.8.1-1" : "3.4.0-1"
            let host = facts(version: number == 20 ? "16.04" : "18.04", installed: ["st2": from], offered: ["st2": ["3.8.1-1"]])
            return PlanView.Entry(name: name, address: "10.0.0.\(number)", plan: plan(host))
        }
    }

    @Test func summaryLine() throws {
        let entries = fleet()
        let view = PlanView(target: StackStormVersion("3.8.1")!, entries: entries, spec: try BatchSpec(parsing: "25%"), canary: nil)
        #expect(view.summaryLine == "18 to upgrade in 4 batches, 1 skipped (at target), 1 refused")
        #expect(view.batches?.map(\.count) == [5, 5, 5, 3])
        #expect(view.batches?.first == ["st2-01", "st2-02", "st2-03", "st2-04", "st2-05"])
        #expect(view.batches?.last == ["st2-16", "st2-17", "st2-18"])
        #expect(view.batch(of: "st2-06") == 1)
        #expect(view.batch(of: "st2-19") == nil)

        let unbatched = PlanView(target: StackStormVersion("3.8.1")!, entries: entries, spec: nil, canary: nil)
        #expect(unbatched.batches == nil)
        #expect(unbatched.summaryLine == "18 to upgrade, 1 skipped (at target), 1 refused")

        let canary = PlanView(target: StackStormVersion("3.8.1")!, entries: entries, spec: nil, canary: 1)
        #expect(canary.batches?.map(\.count) == [1, 17])
        #expect(canary.summaryLine == "18 to upgrade in 2 batches, 1 skipped (at target), 1 refused")

        let unreachable = entries + [PlanView.Entry(name: "st2-21", address: "10.0.0.21", plan: HostPlan(action: .unreachable, reason: "connect: Connection refused"))]
        let withUnreachable = PlanView(target: StackStormVersion("3.8.1")!, entries: unreachable, spec: try BatchSpec(parsing: "1,100%"), canary: nil)
        #expect(withUnreachable.summaryLine == "18 to upgrade in 2 batches, 1 skipped (at target), 1 refused, 1 unreachable")

        let one = PlanView(target: StackStormVersion("3.8.1")!, entries: Array(entries.prefix(1)), spec: try BatchSpec(parsing: "5"), canary: nil)
        #expect(one.summaryLine == "1 to upgrade in 1 batch")
    }

    @Test func identicalPlansAreGroupedWhateverVersionTheyStartFrom() {
        let view = PlanView(target: StackStormVersion("3.8.1")!, entries: fleet(), spec: nil, canary: nil)
        let groups = view.groups
        #expect(groups.count == 2)
        #expect(groups[0].hosts == (1...16).map { String(format: "st2-%02d", $0) })
        #expect(groups[0].from == ["3.7.1-1", "3.7.0-1"])
        #expect(groups[0].plan.fromVersion == nil)
        #expect(groups[0].plan.notes == [])
        #expect(groups[1].hosts == ["st2-17", "st2-18"])
        #expect(groups[1].from == ["3.6.0-1"])
        #expect(groups[1].plan.notes.count == 1)
        #expect(groups[1].plan.notes.allSatisfy { $0.hasPrefix("3.7: ") })
    }

    @Test func textListsGroupsRefusalsAndBatches() throws {
        let view = PlanView(target: StackStormVersion("3.8.1")!, entries: fleet(), spec: try BatchSpec(parsing: "25%"), canary: 1)
        let text = view.text
        #expect(text.contains("== st2-[01-16] (16 hosts): upgrade st2 3.7.1-1, 3.7.0-1 -> 3.8.1-1 ==\n"))
        #expect(text.contains("== st2-[17-18] (2 hosts): upgrade st2 3.6.0-1 -> 3.8.1-1 ==\n"))
        #expect(text.contains("   1. export key-value store            st2 key list -j -n -1 -s all\n"))
        #expect(text.contains("   2. back up the datastore crypto key  tar -c /etc/st2/keys (if present)\n"))
        #expect(text.contains("   3. back up /etc/st2                  tar -c /etc/st2\n"))
        #expect(text.contains("   5. back up audit logs                tar -c /var/log/st2/*.audit.log (if present)\n"))
        #expect(text.contains("Skipped:\n  st2-19: already at 3.8.1 (st2 3.8.1-1)\n"))
        #expect(text.contains("Refused:\n  st2-20: the target 3.8.1 is above the highest release Ubuntu 16.04 LTS can run (3.4)\n"))
        #expect(text.contains("Batches:\n  1 (canary): st2-01 (1)\n  2: st2-[02-06] (5)\n  3: st2-[07-11] (5)\n  4: st2-[12-16] (5)\n  5: st2-[17-18] (2)\n"))
        #expect(text.hasSuffix("\n18 to upgrade in 5 batches, 1 skipped (at target), 1 refused\n"))
    }

    @Test func textShowsPassesOfAHopAndClusterSteps() {
        let host = facts(os: "centos", version: "7", installed: ["st2": "2.0.1-1.el7"], offered: ["st2": ["3.0.1-1.el7", "3.5.0-1.el7"]])
        let view = PlanView(target: StackStormVersion("3.5.0")!, entries: [.init(name: "old", address: "10.0.0.9", plan: plan(host, to: "3.5.0"))],
                            spec: nil, canary: nil)
        let text = view.text
        #expect(text.contains("== old (1 host): upgrade st2 2.0.1-1.el7 -> 3.5.0-1.el7 through 3.0.1 ==\n"))
        #expect(text.contains("   pass 1: to 3.0.1\n"))
        #expect(text.contains("   pass 2: to 3.5.0\n"))
        #expect(text.contains("st2-migrate-runners.sh  [once per st2_cluster]\n"))
        #expect(text.contains("    - goes through 3.0.1 first: the 2.1 migration scripts stopped shipping after 3.0.1\n"))
        #expect(text.hasSuffix("\n1 to upgrade\n"))
    }

    @Test func json() throws {
        let view = PlanView(target: StackStormVersion("3.8.1")!, entries: fleet(), spec: try BatchSpec(parsing: "25%"), canary: nil)
        let json = view.json
        let hosts = try #require(json["hosts"]?.items)
        #expect(hosts.count == 20)
        let first = try #require(hosts.first)
        #expect(first.keys == ["name", "address", "action", "reason", "from_version", "to_version", "hops", "batch", "steps", "notes"])
        #expect(first["name"]?.text == "st2-01")
        #expect(first["address"]?.text == "10.0.0.1")
        #expect(first["action"]?.text == "upgrade")
        #expect(first["reason"]?.isNull == true)
        #expect(first["from_version"]?.text == "3.7.1-1")
        #expect(first["to_version"]?.text == "3.8.1-1")
        #expect(first["hops"]?.items?.isEmpty == true)
        #expect(first["batch"]?.number == 0)
        let steps = try #require(first["steps"]?.items)
        #expect(steps.count == 17)
        #expect(steps[0].keys == ["name", "command", "kind", "once_per", "pass"])
        #expect(steps[0]["command"]?.text == "st2 key list -j -n -1 -s all")
        #expect(steps[0]["kind"]?.text == "backup-kv")
        #expect(steps[0]["once_per"]?.isNull == true)
        #expect(steps[0]["pass"]?.number == 0)
        let verify = try #require(steps.first { $0["kind"]?.text == "verify-version" })
        #expect(verify["expect"]?.text == "3.8.1-1")
        #expect(verify["command"]?.text == "dpkg-query -W -f='${Version}' st2")
        let services = try #require(steps.last)
        #expect(services.keys == ["name", "command", "kind", "once_per", "pass", "expect"])
        #expect(services["kind"]?.text == "verify-services")
        #expect(services["expect"]?.text == "st2")
        #expect(steps.map { $0["kind"]?.text ?? "" } == ["backup-kv", "backup-files", "backup-files", "backup-files", "backup-files", "preflight", "preflight", "preflight", "preflight", "preflight", "stop", "confirm-stopped", "upgrade-packages", "reload", "start",
                                                         "verify-version", "verify-services"])
        #expect(first["notes"]?.items?.isEmpty == true)

        let refused = hosts[19]
        #expect(refused["action"]?.text == "refuse")
        #expect(refused["reason"]?.text == "the target 3.8.1 is above the highest release Ubuntu 16.04 LTS can run (3.4)")
        #expect(refused["to_version"]?.isNull == true)
        #expect(refused["batch"]?.isNull == true)
        #expect(refused["steps"]?.items?.isEmpty == true)
        #expect(hosts[18]["action"]?.text == "skip")

        let summary = try #require(json["summary"])
        #expect(summary.keys == ["targeted", "upgrade", "skip", "refuse", "unreachable", "target_version", "batches", "text"])
        #expect(summary["targeted"]?.number == 20)
        #expect(summary["upgrade"]?.number == 18)
        #expect(summary["skip"]?.number == 1)
        #expect(summary["refuse"]?.number == 1)
        #expect(summary["unreachable"]?.number == 0)
        #expect(summary["target_version"]?.text == "3.8.1")
        #expect(summary["batches"]?.items?.map { $0.items?.count ?? -1 } == [5, 5, 5, 3])
        #expect(summary["text"]?.text == "18 to upgrade in 4 batches, 1 skipped (at target), 1 refused")

        // Without batch flags there is no batch field, and the text still renders.
        let plain = PlanView(target: StackStormVersion("3.8.1")!, entries: fleet(), spec: nil, canary: nil).json
        #expect(plain["hosts"]?.items?.first?.keys.contains("batch") == false)
        #expect(plain["summary"]?.keys.contains("batches") == false)
        #expect(plain.rendered().contains("\"text\": \"18 to upgrade, 1 skipped (at target), 1 refused\""))
    }
}

fileprivate extension JSONValue {
    subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields.first { $0.0 == key }?.1 }
        return nil
    }
    var keys: [String] {
        if case .object(let fields) = self { return fields.map(\.0) }
        return []
    }
    var items: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }
    var text: String? {
        if case .string(let text) = self { return text }
        return nil
    }
    var number: Int64? {
        if case .int(let number) = self { return number }
        return nil
    }
    var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension UpgradePlannerTests {
    // MARK: Catalog steps and script arguments

    static let recreate = "st2ctl reload --register-recreate-virtualenvs"

    func running(_ names: String...) -> Fact<[ComponentState]> {
        .known(([ComponentState(name: "st2api", pid: 100)] + names.enumerated().map { ComponentState(name: $1, pid: 200 + $0) }))
    }

    @Test func migrationScriptsGetTheConfigFileBelow28() {
        let host = facts(version: "16.04", installed: ["st2": "1.4.0-1"], offered: ["st2": ["2.7.2-1", "2.8.0-1"]])
        let below = plan(host, to: "2.7.2")
        #expect(below.steps.filter { $0.kind == .migration }.map(\.command) == [
            Expect.scopeSecret + " --config-file /etc/st2/st2.conf",
            Expect.scopes + " --config-file /etc/st2/st2.conf",
            Expect.runners + " --config-file /etc/st2/st2.conf",
        ])
        // The step names stay the script names.
        #expect(below.steps.filter { $0.kind == .migration }.map(\.name)[0] == "migration 1.5: st2-migrate-datastore-to-include-scope-secret.py")
        let from28 = plan(host, to: "2.8.0")
        #expect(from28.steps.filter { $0.kind == .migration }.map(\.command) == [Expect.scopeSecret, Expect.scopes, Expect.runners])
    }

    @Test func virtualenvsAreRecreatedCrossing34OnXenialAndEL7WhereRunnersRun() {
        let xenial = facts(version: "16.04", installed: ["st2": "3.3.0-1"], offered: ["st2": ["3.4.1-1"]], components: running("st2actionrunner"))
        let result = plan(xenial, to: "3.4.1")
        #expect(result.steps == Expect.backup(from25: true) + Expect.preflight(["st2=3.4.1-1"], from25: true) + Expect.pass(0, upgrade: Expect.apt + "st2=3.4.1-1", query: Expect.dpkgQuery, expect: "3.4.1-1")
            .flatMap { step in
                step.kind == .reload ? [step, PlanStep(name: "recreate pack virtualenvs", command: Self.recreate, kind: .reload)] : [step]
            })
        let el7 = facts(os: "centos", version: "7", installed: ["st2": "3.2.0-1.el7"], offered: ["st2": ["3.4.1-1.el7"]],
                        components: running("st2sensorcontainer"))
        #expect(plan(el7, to: "3.4.1").steps.filter { $0.command == Self.recreate }.count == 1)
        // Not where neither st2actionrunner nor st2sensorcontainer runs, nor on Bionic.
        let apiOnly = facts(version: "16.04", installed: ["st2": "3.3.0-1"], offered: ["st2": ["3.4.1-1"]])
        #expect(!plan(apiOnly, to: "3.4.1").steps.contains { $0.command == Self.recreate })
        let bionic = facts(installed: ["st2": "3.3.0-1"], offered: ["st2": ["3.4.1-1"]], components: running("st2actionrunner"))
        #expect(!plan(bionic, to: "3.4.1").steps.contains { $0.command == Self.recreate })
        // Components unknown: the step is planned (harmless where not needed).
        let unknown = facts(version: "16.04", installed: ["st2": "3.3.0-1"], offered: ["st2": ["3.4.1-1"]], components: .unreadable("no st2ctl"))
        #expect(plan(unknown, to: "3.4.1", backup: false).steps.contains { $0.command == Self.recreate })
    }

    @Test func virtualenvsAreRecreatedCrossing37OnEL8Only() {
        let el8 = facts(os: "rocky", version: "8.9", installed: ["st2": "3.6.0-1.el8"], offered: ["st2": ["3.7.0-1.el8", "3.8.1-1.el8"]],
                        components: running("st2actionrunner", "st2sensorcontainer"))
        let steps = plan(el8, to: "3.8.1").steps
        #expect(steps.filter { $0.command == Self.recreate } == [PlanStep(name: "recreate pack virtualenvs", command: Self.recreate, kind: .reload)])
        #expect(steps.firstIndex { $0.command == Self.recreate } == (steps.firstIndex { $0.name == "reload content" } ?? -2) + 1)
        // Already past 3.7, or on EL7 crossing 3.7: no recreation.
        let past = facts(os: "rocky", version: "8.9", installed: ["st2": "3.7.0-1.el8"], offered: ["st2": ["3.8.1-1.el8"]], components: running("st2actionrunner"))
        #expect(!plan(past, to: "3.8.1").steps.contains { $0.command == Self.recreate })
        let el7 = facts(os: "centos", version: "7", installed: ["st2": "3.6.0-1.el7"], offered: ["st2": ["3.8.1-1.el7"]], components: running("st2actionrunner"))
        #expect(!plan(el7, to: "3.8.1").steps.contains { $0.command == Self.recreate })
    }

    @Test func catalogNotesOfIssue15() {
        func note(_ series: String) -> String { manual(series).joined(separator: "\n") }
        #expect(note("2.3").contains("st2.notifiers.work is empty"))
        #expect(note("2.10").contains("signing key was rotated"))
        #expect(note("3.0").contains("[rbac] backend = enterprise"))
        #expect(note("3.2").contains("workflow execution finish"))
        #expect(note("3.5").contains("last 30 days by default"))
        #expect(note("3.6").contains("RabbitMQ"))
        #expect(note("3.9").contains("ssl_* options are renamed to tls_*"))
        // The virtualenv recreation is a step now, not a note.
        #expect(!note("3.4").contains("--register-recreate-virtualenvs") && !note("3.7").contains("--register-recreate-virtualenvs"))
        // Every entry says where its facts come from.
        #expect(catalog.entries.filter { ($0.source ?? "").isEmpty }.map(\.version.series) == [])
        #expect(catalog.scriptArguments.allSatisfy { !($0.source ?? "").isEmpty })
    }
}
