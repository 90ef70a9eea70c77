import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation

/// The rolling flags of SPEC §5, shared by `upgrade` and `run`.
struct RolloutOptions: ParsableArguments {
    @OptionGroup var batches: BatchOptions

    @Option(help: ArgumentHelp("Halt as soon as failed + unreachable hosts exceed N or P% of the targeted hosts.", valueName: "N|P%"))
    var maxFail = "0"

    @Option(help: ArgumentHelp("Halt as soon as failures exceed P% of one batch.", valueName: "P%"))
    var maxFailBatch: String?

    @Option(help: ArgumentHelp("Whether unreachable hosts count as failures: yes or no.", valueName: "yes|no"))
    var unreachableCounts = "yes"

    @Option(help: ArgumentHelp("After a halt, hosts in flight finish their plan (drain) or stop after their current step (stop).", valueName: "drain|stop"))
    var onHalt = "drain"

    @Option(help: ArgumentHelp("Wait this long between batches (30s, 5m).", valueName: "duration"))
    var pause: String?

    @Flag(help: "Ask before each batch after the first.")
    var confirm = false

    @Option(help: ArgumentHelp("Start hosts only inside this window: 01:00-05:00 (local time) or START/END ISO 8601 timestamps.", valueName: "window"))
    var window: String?

    @Option(help: ArgumentHelp("A command that must exit 0 on a host after its steps.", valueName: "command"))
    var health: String?

    @Option(help: ArgumentHelp("The health command must pass continuously this long (re-run every 3 s).", valueName: "duration"))
    var healthyFor: String?

    @Option(help: ArgumentHelp("Give up on the health check after this long (default 5m).", valueName: "duration"))
    var healthDeadline: String?

    @Option(help: ArgumentHelp("Time limit of each step without its own (default: none).", valueName: "duration"))
    var stepTimeout: String?

    /// The run options these flags set (`RolloutFlags.FlagError` for a bad one).
    func options() throws -> RunOptions {
        try RunOptions(batch: batches.batch, canary: batches.canary, maxParallel: batches.maxParallel, maxPer: batches.maxPer, maxFail: maxFail,
                       maxFailBatch: maxFailBatch, unreachableCounts: unreachableCounts, onHalt: onHalt, pause: pause, confirm: confirm,
                       window: window, health: health, healthyFor: healthyFor, healthDeadline: healthDeadline, stepTimeout: stepTimeout)
    }

    func validate() throws {
        do {
            _ = try options()
        } catch let error as RolloutFlags.FlagError {
            throw ValidationError(error.message)
        }
    }

    /// The run's options: these flags (checked by `validate()`), and what `resume` needs
    /// to select and reach the same hosts again.
    func runOptions(_ selection: InventoryOptions, _ connection: ConnectionOptions, _ output: RunOutputOptions) throws -> RunOptions {
        var options = try options()
        try options.reach(selection, connection, output)
        return options
    }
}

extension RunOptions {
    /// Adds what `resume` needs to select and reach the same hosts again, and the state dir.
    mutating func reach(_ selection: InventoryOptions, _ connection: ConnectionOptions, _ output: RunOutputOptions) throws {
        self.selection = RunOptions.selectionArguments(sources: try selection.sources, limit: selection.limit, sshConfig: selection.sshConfig)
        self.connection = RunOptions.connectionArguments(hostKeyCheck: connection.hostKeyCheck.rawValue, connectTimeout: connection.connectTimeout,
                                                         knownHosts: connection.knownHosts, keyPassphraseFile: connection.keyPassphraseFile,
                                                         askPass: connection.askPass)
        stateDir = output.stateDir
    }
}

/// `--cluster-strategy`, shared by `plan` and `upgrade`.
struct ClusterStrategyOption: ParsableArguments {
    @Option(help: ArgumentHelp("How a cluster (hosts sharing st2_cluster) is upgraded: whole (every node stopped before its database is migrated, all or nothing), rolling (node by node; unsafe across a database change) or auto (whole where a database change is crossed).",
                               valueName: "auto|whole|rolling"))
    var clusterStrategy: ClusterStrategy = .auto
}

extension ClusterStrategy: ExpressibleByArgument {}

/// The state dir: journals, logs, artifacts, locks, the control socket.
struct StateDirOption: ParsableArguments {
    @Option(help: ArgumentHelp("The state dir: journals, logs, artifacts, the control socket.", valueName: "path"))
    var stateDir = ".flotilla"

    @Option(help: ArgumentHelp("The journal: postgresql://USER@HOST:PORT/DB for one shared by several controllers (the password from PGPASSWORD or ~/.pgpass, never here); default $FLOTILLA_JOURNAL, else the state dir's own.",
                               valueName: "url"))
    var journal: String?

    var url: URL { URL(fileURLWithPath: stateDir, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL }

    /// Where runs are journaled (``JournalLocation/reach(option:stateDir:)``).
    func journalLocation() throws -> JournalLocation { try JournalLocation.reach(option: journal, stateDir: url) }

    /// The flags that name this journal again, for the commands flotilla suggests.
    var again: String {
        var text = "--state-dir \(stateDir)"
        if let journal, let url = PostgresURL(journal) { text += " --journal \(url.redacted)" }
        return text
    }
}

/// `--run NAME`: one run shared by several controllers through a PostgreSQL journal.
struct SharedRunOption: ParsableArguments {
    @Option(name: .customLong("run"),
            help: ArgumentHelp("Name the run, to share it: the first controller with --journal postgresql://... creates it, later ones (each with its own --limit) join it when the target and rollout flags match.",
                               valueName: "name"))
    var name: String?
}

/// Where runs live and what a run prints.
struct RunOutputOptions: ParsableArguments {
    @OptionGroup var state: StateDirOption
    var stateDir: String { state.stateDir }

    @Flag(help: "Print the run result JSON (SPEC §6) on stdout.")
    var json = false

    @Option(help: ArgumentHelp("Also write the run result JSON to this file (owner-only).", valueName: "path"))
    var report: String?

    @Option(help: ArgumentHelp("Also write the run as JUnit XML: a testsuite per batch, a testcase per host (owner-only).", valueName: "path"))
    var junit: String?

    @Option(help: ArgumentHelp("Also write the run as one self-contained HTML page with a timeline (owner-only).", valueName: "path"))
    var html: String?

    @Flag(name: .shortAndLong, help: "Only halts, failures and the final summary on stderr.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Debug logs of every step (swift-log, with host.name, step.name ... metadata) on stderr.")
    var verbose = false

    func validate() throws {
        if quiet && verbose { throw ValidationError("--quiet and --verbose do not go together") }
    }

    var stateURL: URL { state.url }
}

struct Upgrade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The rolling StackStorm upgrade: plan every host, then upgrade in batches, halting on failures.",
        discussion: """
        Gathers facts and plans every host exactly as 'flotilla plan' shows (refused hosts \
        are never started; hosts at the target are skipped), then runs the plans in \
        batches. Every step transition is recorded in the journal under --state-dir \
        before the next step starts, so 'flotilla resume' continues an interrupted run \
        without running a finished step twice. Each host's full output goes to \
        STATE/runs/RUN/logs/HOST.log. Before a host's first change its backup is taken \
        through become and verified (the key-value store with its release's export flags, \
        /etc/st2 with the datastore crypto key, /etc/mistral, the audit logs) into \
        STATE/runs/RUN/backups/HOST/; a backup that fails fails the host with nothing \
        changed. 'flotilla show RUN --backups' lists them.

        Examples:
          flotilla upgrade -i lab/inventory.ini --to 3.8.1 --canary 1 --batch 25% --max-fail 1
          flotilla upgrade -i prod/ --to 3.8.1 --batch 1,5,25% --max-per zone=1 --window 01:00-05:00
          flotilla upgrade -i prod/ --to 3.8.1 --health 'curl -fsS http://127.0.0.1:9101/v1/' --healthy-for 30s

        \(Flotilla.exitCodes) 75 another controller holds the state dir or some of the hosts.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Gathering") var gather: GatherOptions
    @OptionGroup(title: "Plan") var targetOptions: TargetOptions
    @OptionGroup(title: "Rollout") var rollout: RolloutOptions
    @OptionGroup(title: "Output") var output: RunOutputOptions
    @OptionGroup(title: "Several controllers") var shared: SharedRunOption

    @Option(help: ArgumentHelp("The st2 release to upgrade to, e.g. 3.8.1.", valueName: "version"))
    var to: String

    @Flag(help: "Kill st2 processes still running after st2ctl stop (else such a host fails).")
    var forceStop = false

    @OptionGroup(title: "Clusters") var clusters: ClusterStrategyOption

    func validate() throws { _ = try TargetOptions.version(to) }

    func run() async throws {
        let target = try TargetOptions.version(to)
        let catalog = try targetOptions.loadCatalog()
        let planner = targetOptions.planner(catalog, target: target)
        let journal = try output.state.journalLocation()
        let locks = try RunLocks(stateDir: output.stateURL)
        let targets = try Targets(selection, connection)
        try locks.lockHosts(targets)
        var options = try rollout.runOptions(selection, connection, output)
        options.forceStop = forceStop
        options.clusterStrategy = clusters.clusterStrategy
        let decided = targets.plans(await gather.facts(targets, packages: catalog.packages), planner: planner, strategy: clusters.clusterStrategy)
        decided.warnings.forEach(Console.warn)
        let record = targets.upgradeRecord(plans: decided.plans, clusters: decided.clusters, target: target.releaseString, options: options, now: Date())
        try await RolloutRunner(targets: targets, locks: locks, output: output, journal: journal)
            .start(record, knownFailures: catalog.knownFailures, sharedName: shared.name)
    }
}

struct RunRunbook: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "A rolling run of a runbook (ordered shell steps) with batches, thresholds and the journal.",
        discussion: """
        The runbook is YAML (SPEC §6): a name and steps, each with run (a shell \
        command), and optionally name, timeout (120s), become (true/false; default the \
        host's ansible_become) and once_per (a host variable such as st2_cluster: the \
        step runs on the first host of each group, the others skip it). {{ var }} \
        expands the host's inventory variables, shell-quoted; an undefined variable is an \
        error before anything runs.

        Examples:
          flotilla run -i lab/inventory.ini rotate-logs.yaml --batch 25% --max-fail 10%
          flotilla run -i prod/ maintenance.yaml --window 01:00-05:00 --max-per zone=1

        \(Flotilla.exitCodes) 75 another controller holds the state dir or some of the hosts.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Rollout") var rollout: RolloutOptions
    @OptionGroup(title: "Output") var output: RunOutputOptions
    @OptionGroup(title: "Several controllers") var shared: SharedRunOption

    @Argument(help: ArgumentHelp("The runbook file.", valueName: "runbook.yaml"))
    var runbook: String

    func run() async throws {
        let journal = try output.state.journalLocation()
        let book = try Runbook.load(path: runbook)
        let locks = try RunLocks(stateDir: output.stateURL)
        let targets = try Targets(selection, connection)
        let options = try rollout.runOptions(selection, connection, output)
        let record = try targets.runbookRecord(book, options: options, now: Date())
        try locks.lockHosts(targets)
        try await RolloutRunner(targets: targets, locks: locks, output: output, journal: journal).start(record, knownFailures: [], sharedName: shared.name)
    }
}
