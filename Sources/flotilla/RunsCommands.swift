import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue an interrupted, halted, stopped or window-paused run from its journal.",
        discussion: """
        Never runs a step recorded as finished, and never touches a host recorded as \
        succeeded. A step that changes the host and was in flight when the run stopped \
        (a second Ctrl-C, a dead controller, a lost connection) is re-attached: flotilla \
        asks the host about it, waits for it if it still runs, and records how it ended \
        without running it again; it runs only if the host never saw it. A step the host \
        cannot account for (its record lost, e.g. a reboot mid-step) is 'unknown': its \
        host stays failed until --rerun-unknown runs it again, after you checked the \
        host. Read-only steps in flight run again. The hosts, plans, batches and flags are the run's own; the \
        inventory and connection flags it was started with are used again. Hosts that \
        failed stay failed and count against --max-fail unless --retry-failed runs them \
        again from their failed step; --max-fail raises the threshold for the rest of the run.

        Examples:
          flotilla resume
          flotilla resume 20261121-153000-ab12 --state-dir /var/lib/flotilla
          flotilla resume --retry-failed --max-fail 2
          flotilla resume --rerun-unknown

        \(Flotilla.exitCodes) 75 another controller holds the state dir or some of the hosts.
        """
    )

    @OptionGroup(title: "Output") var output: RunOutputOptions

    @Argument(help: ArgumentHelp("The run (default: the latest in the state dir).", valueName: "run"))
    var runID: String?

    @Flag(help: "Run failed hosts again, from the step that failed.")
    var retryFailed = false

    @Option(help: ArgumentHelp("A new failure threshold for the rest of the run.", valueName: "N|P%"))
    var maxFail: String?

    @Flag(help: "Run the steps recorded unknown (the host lost its record of them) again, as new attempts.")
    var rerunUnknown = false

    func run() async throws {
        let location = try output.state.journalLocation()
        let locks = try RunLocks(stateDir: output.stateURL)
        let journal = try Journal.open(at: location, runID: runID)
        var resumption = try RunResumption(journal, retryFailed: retryFailed, maxFail: maxFail, rerunUnknown: rerunUnknown)
        try resumption.takeOver(in: journal, stateDir: output.stateURL)
        let plan = resumption.plan, record = plan.record
        try locks.stateLock.record(runID: record.id)
        let targets = try Targets(reselecting: record)
        try locks.lockHosts(targets, runID: record.id)
        try resumption.record(in: journal)
        Console.note(resumption.note)
        let knownFailures = try resumption.knownFailures()
        try await RolloutRunner(targets: targets, locks: locks, output: output, journal: location)
            .execute(record: record, journal: journal, preset: plan.preset, done: plan.done, reattach: plan.reattach,
                     knownFailures: knownFailures, handlers: targets.handlers(for: record.kind))
    }
}

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the runs of a state dir, newest first; --prune removes the step records finished runs left on their hosts.",
        discussion: """
        A step that changes a host keeps a record on it (its output and exit status, under \
        ~/.flotilla/steps of the login or become user) until the host is done with the run. \
        A run that lost a host mid-step, or whose controller died, can leave records \
        behind. --prune connects to the hosts of the finished run RUN (default: of every \
        finished run of the state dir) as 'flotilla resume' would, and removes them, with \
        any older than 7 days. Steps still running on a host are kept and listed. A host \
        whose step ended after the run lost it keeps its records: 'flotilla resume \
        --retry-failed RUN' records how that step ended instead of running it again. Runs \
        not finished (stopped, halted, killed) are left alone: resume reads their records.

        Examples:
          flotilla runs
          flotilla runs --state-dir /var/lib/flotilla --json
          flotilla runs --prune
          flotilla runs --prune 20261121-153000-ab12 --state-dir /var/lib/flotilla

        Exit codes: 0 listed, or every host pruned; 1 some hosts could not be pruned; 69 no \
        host could be reached; 64 usage error (or RUN not finished); 75 another controller \
        holds the state dir or some of the hosts.
        """
    )

    @OptionGroup var state: StateDirOption

    @Flag(help: "Print JSON on stdout.")
    var json = false

    @Flag(help: "Remove the step records finished runs left on their hosts (steps still running are kept).")
    var prune = false

    @Argument(help: ArgumentHelp("With --prune: the run (default: every finished run).", valueName: "run"))
    var runID: String?

    func validate() throws {
        if runID != nil && !prune { throw ValidationError("a run goes with --prune (to see one run: flotilla show RUN)") }
        if prune && json { throw ValidationError("--json does not go with --prune") }
    }

    func run() async throws {
        let url = state.url
        if prune {
            let summary = try await StepRecordPruner.prune(stateDir: url, journal: state.journal, runID: runID, targets: Targets.init(reselecting:),
                                                           print: { print($0) }, note: Console.note)
            print(summary.line)
            if let failure = summary.failure { throw ExitCode(failure.rawValue) }
            return
        }
        let runs: [RunSummary] = try Journal.listRuns(at: try state.journalLocation()).reversed()
        if json {
            print(RunListView.json(runs).rendered())
            return
        }
        guard !runs.isEmpty else {
            print("no runs in \(try state.journalLocation())")
            return
        }
        print(RunListView.table(runs), terminator: "")
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one run's per-host results from its journal (the latest run by default).",
        discussion: """
        Without options: the run's outcome and a table of its hosts. --format renders the \
        whole run again from the journal: json (SPEC §6), junit, html (a self-contained \
        page with a timeline) or markdown. --host prints that host's log of the run: every \
        step's command, times and full output; --step narrows it to one step (its number \
        or name). --backups lists each host's backup (SPEC §8.4): every artifact under \
        STATE/runs/RUN/backups/HOST/ with its size in bytes and SHA-256, as verified \
        against the host when it was taken (`sha256sum FILE` checks it again).

        Examples:
          flotilla show
          flotilla show 20261121-153000-ab12 --format html > run.html
          flotilla show --host st2-03 --step 'upgrade packages'
          flotilla show 20261121-153000-ab12 --backups

        Exit codes: 0 shown; 64 usage error (no such run or host).
        """
    )

    @OptionGroup var state: StateDirOption

    @Argument(help: ArgumentHelp("The run (default: the latest).", valueName: "run"))
    var runID: String?

    @Flag(help: "Print the run result JSON (SPEC §6); the same as --format json.")
    var json = false

    @Option(help: ArgumentHelp("table, json, junit, html or markdown.", valueName: "format"))
    var format: RunReports.Format = .table

    @Option(help: ArgumentHelp("Print this host's log of the run.", valueName: "name"))
    var host: String?

    @Option(help: ArgumentHelp("With --host: only this step (its number, from 1, or its name).", valueName: "step"))
    var step: String?

    @Flag(help: "List each host's backup artifacts: name, size, SHA-256, path.")
    var backups = false

    func validate() throws {
        if step != nil && host == nil { throw ValidationError("--step goes with --host") }
        if backups && (host != nil || json || format != .table) { throw ValidationError("--backups goes alone (not with --host, --json or --format)") }
    }

    func run() throws {
        let url = state.url
        let state = try Journal.open(at: try self.state.journalLocation(), runID: runID).load()
        if backups {
            print(BackupList.text(state), terminator: "")
            return
        }
        if let host {
            do throws(HostLog.ReadError) {
                print(try HostLog.read(stateDir: url, state: state, host: host, step: step), terminator: "")
            } catch {
                if error.isUnknownName { throw ValidationError(error.message) }
                throw FlotillaError(.software, error.message)
            }
            return
        }
        print(RunReports.rendered(state, json ? .json : format), terminator: "")
    }
}

extension RunReports.Format: ExpressibleByArgument {}
