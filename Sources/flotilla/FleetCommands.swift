import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation

/// Flags of the commands that gather facts: parallelism and the probe's time limit.
struct GatherOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Hosts contacted at once.", valueName: "n"))
    var forks = 32

    @Option(help: ArgumentHelp("Seconds the facts probe may run on a host.", valueName: "seconds"))
    var timeout: Double = 60

    func validate() throws {
        guard forks > 0 else { throw ValidationError("--forks must be at least 1") }
        guard timeout > 0, timeout <= 1e9 else { throw ValidationError("--timeout must be more than 0 seconds (and at most 1e9)") }
    }
}

/// The upgrade target and the catalog it is planned with.
struct TargetOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Path of a migration catalog to use instead of the bundled one.", valueName: "path"))
    var catalog: String?

    @Flag(help: "Plan the catalog's optional migrations too.")
    var withOptionalMigrations = false

    @Flag(inversion: .prefixedNo, help: "Export the key-value store and fetch the audit logs before stopping st2.")
    var backup = true

    @Option(help: ArgumentHelp("Free space needed on / and /opt, in MiB.", valueName: "MiB"))
    var minFreeDisk: Int64 = 1024

    static func version(_ text: String) throws -> StackStormVersion {
        guard let version = StackStormVersion.upgradeTarget(text) else {
            throw ValidationError("--to '\(text)' is not an st2 release such as 3.8.1")
        }
        return version
    }

    /// The catalog to plan with (a bad one: exit 65, see ``FlotillaError/exit(for:)``).
    func loadCatalog() throws -> MigrationCatalog { try MigrationCatalog.load(path: catalog) }

    func planner(_ catalog: MigrationCatalog, target: StackStormVersion) -> UpgradePlanner {
        UpgradePlanner(catalog: catalog, options: UpgradePlanner.Options(target: target, withOptionalMigrations: withOptionalMigrations,
                                                                         backup: backup, minimumFreeMiB: minFreeDisk))
    }
}

extension GatherOptions {
    /// Facts of every host `selection` names, gathered as these flags say.
    func facts(_ selection: InventoryOptions, _ connection: ConnectionOptions, packages: [String]) async throws -> [HostFactsResult] {
        await facts(try Targets(selection, connection), packages: packages)
    }

    func facts(_ targets: Targets, packages: [String]) async -> [HostFactsResult] {
        await targets.gatherFacts(packages: packages, forks: forks, timeout: .milliseconds(Int(timeout * 1000)), note: Console.note)
    }
}

struct Facts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Gather facts: OS, package manager, st2 packages and the versions offered, services, disk, leftover configs.",
        discussion: """
        One read-only round trip per host (a POSIX shell script; under sudo when the \
        inventory sets ansible_become): /etc/os-release, dpkg-query or rpm, apt-cache \
        madison or yum/dnf list --showduplicates, st2ctl status, df -Pk / /opt, and \
        *.dpkg-dist, *.dpkg-old, *.rpmnew files under /etc/st2 and /etc/mistral. A fact \
        that cannot be read is reported as unreadable, with the reason, never guessed.

        Examples:
          flotilla facts -i lab/inventory.ini
          flotilla facts -i prod/ --limit dc1 --json > facts.json

        Exit codes: 0 every fact of every host read; 1 some host unreachable or some fact \
        unreadable; 69 no host reachable; 64 usage error; 65 bad inventory or pattern.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Gathering") var gather: GatherOptions

    @Flag(help: "Print JSON on stdout.")
    var json = false

    func run() async throws {
        let catalog = try MigrationCatalog.bundled()
        let results = try await gather.facts(selection, connection, packages: catalog.packages)
        let output = json ? FactsView.json(results).rendered() + "\n" : FactsView.table(results)
        FileHandle.standardOutput.write(Data(output.utf8))
        try FactsView.exitStatus(results).end()
    }
}

/// The batch flags of `plan`, `upgrade` and `run` (in ``RolloutOptions``).
struct BatchOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Batch sizes as Ansible serial: 5, 25%, or a ramp 1,5,25% whose last size repeats.", valueName: "spec"))
    var batch: String?

    @Option(help: ArgumentHelp("A first batch of N hosts that must all succeed before anything else starts.", valueName: "n"))
    var canary: Int?

    @Option(help: ArgumentHelp("Hosts in flight at once within a batch (default: the whole batch).", valueName: "n"))
    var maxParallel: Int?

    @Option(help: ArgumentHelp("Never more than N hosts in flight sharing a value of host variable VAR, e.g. zone=1 (repeatable).", valueName: "VAR=N"))
    var maxPer: [String] = []

    /// The run options these flags set (checked by `validate()`).
    func runOptions() throws -> RunOptions {
        do {
            return try RunOptions(batch: batch, canary: canary, maxParallel: maxParallel, maxPer: maxPer)
        } catch let error as RolloutFlags.FlagError {
            throw ValidationError(error.message)
        }
    }

    func validate() throws { _ = try runOptions() }
}

struct Plan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show every host's upgrade plan to an st2 release, grouped; changes nothing on any host.",
        discussion: """
        Gathers facts (read-only, see 'flotilla facts') and plans each host from them and \
        the migration catalog: backup, st2ctl stop and confirm, the package upgrade pinned \
        to the exact version the host's repositories offer, Mistral database steps, the \
        migration scripts of every crossed version, reload, start, verify. Hosts with \
        identical plans are shown once; hosts at the target are skipped; hosts that \
        cannot be upgraded safely are refused with the reason. Steps marked "once per \
        st2_cluster" run on one host of each cluster. The batch flags batch the hosts as \
        'upgrade' would: a whole cluster in one batch, and refused, every node, when \
        --max-parallel or a --max-per limit could never let it run at once.

        Examples:
          flotilla plan -i lab/inventory.ini --to 3.8.1
          flotilla plan -i prod/ --to 3.8.1 --canary 1 --batch 5,25% --json
          flotilla plan -i prod/ --to 3.5.0 --batch 25% --max-per zone=1
          flotilla plan -i prod/ --limit 'dc1:!st2-07' --to 3.5.0 --with-optional-migrations
          flotilla plan -i prod/ --to 3.8.1 --preflight

        Before a host's first st2ctl stop, 'upgrade' runs its pre-flight (SPEC 8.3), \
        read-only towards st2: free disk for the download, the repository index \
        refreshed (apt-get update, dnf makecache --refresh, yum makecache fast), every \
        pass's package transaction simulated with the same pinned arguments (apt-get \
        install -s; yum/dnf with --setopt=tsflags=test, an RPM test transaction), MongoDB \
        and RabbitMQ from /etc/st2/st2.conf (and PostgreSQL from /etc/mistral/mistral.conf \
        when st2mistral is upgraded) reachable from the host, and the st2 CLI able to list \
        the key-value store. A failing check fails the host with its services untouched \
        (it counts against --max-fail), the reason in the report. --preflight runs these \
        checks now, but the index refresh (which rewrites the package index), and shows \
        each host's result.

        Exit codes: 0 every host can be upgraded or is at the target (and, with \
        --preflight, passed its pre-flight); 1 some host is refused or unreachable, or \
        failed its pre-flight; 69 no host reachable; 64 usage error; 65 bad inventory, \
        pattern or catalog.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Gathering") var gather: GatherOptions
    @OptionGroup(title: "Plan") var targetOptions: TargetOptions
    @OptionGroup(title: "Batches") var batches: BatchOptions
    @OptionGroup(title: "Clusters") var clusters: ClusterStrategyOption

    @Option(help: ArgumentHelp("The st2 release to upgrade to, e.g. 3.8.1.", valueName: "version"))
    var to: String

    @Flag(help: "Print JSON on stdout (SPEC §4).")
    var json = false

    @Flag(help: "Also run each upgrade host's pre-flight checks (read-only; all but the index refresh) and show their results.")
    var preflight = false

    func validate() throws { _ = try TargetOptions.version(to) }

    func run() async throws {
        let target = try TargetOptions.version(to)
        let catalog = try targetOptions.loadCatalog()
        let planner = targetOptions.planner(catalog, target: target)
        let targets = try Targets(selection, connection)
        let facts = await gather.facts(targets, packages: catalog.packages)
        var view = targets.planView(facts, planner: planner, strategy: clusters.clusterStrategy, options: try batches.runOptions(), warn: Console.warn)
        if preflight { await targets.preflight(&view, forks: gather.forks, timeout: gather.timeout, note: Console.note) }
        FileHandle.standardOutput.write(Data((json ? view.json.rendered() + "\n" : view.text).utf8))
        try view.exitStatus.end()
    }
}

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The fleet report: reachability, OS and st2 version spread, hosts behind a target, components, config drift.",
        discussion: """
        Gathers facts (read-only) and summarises the fleet. With --to, it also plans every \
        host towards that release and lists the hosts behind it with the migrations they \
        still need, the catalog's operator notes, and refusals. The HTML format is one \
        self-contained file (no external resources) with a version-spread chart.

        Examples:
          flotilla report -i lab/inventory.ini
          flotilla report -i prod/ --to 3.8.1 --format html --output fleet.html
          flotilla report -i prod/ --to 3.8.1 --format markdown > FLEET.md

        Exit codes: 0 report written; 69 no host reachable; 64 usage error; 65 bad \
        inventory, pattern or catalog. Unreachable hosts and unreadable facts are part of \
        the report, not errors.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Gathering") var gather: GatherOptions
    @OptionGroup(title: "Plan") var targetOptions: TargetOptions

    @Option(help: ArgumentHelp("Also report against this st2 release: hosts behind it and what they need.", valueName: "version"))
    var to: String?

    @Option(help: ArgumentHelp("table, json, markdown or html.", valueName: "format"))
    var format: FleetReport.Format = .table

    @Option(help: ArgumentHelp("Write the report to this file (owner-only) instead of stdout.", valueName: "path"))
    var output: String?

    func validate() throws { _ = try to.map(TargetOptions.version) }

    func run() async throws {
        let target = try to.map(TargetOptions.version)
        let catalog = try targetOptions.loadCatalog()
        let results = try await gather.facts(selection, connection, packages: catalog.packages)
        let stamp = ISO8601DateFormatter().string(from: Date())
        let report = FleetReport(generatedAt: stamp, results: results, planner: target.map { targetOptions.planner(catalog, target: $0) })
        let text = report.rendered(format)
        if let output {
            try PrivateFiles.writeOwnerOnly(text, to: output)
            Console.note("report written to \(output)")
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }
        try report.exitStatus.end()
    }
}

extension FleetReport.Format: ExpressibleByArgument {}
