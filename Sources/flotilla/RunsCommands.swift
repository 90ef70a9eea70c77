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
        let locks = try RunLocks(stateDir: output.stateURL)
        let journal = try Journal.open(stateDir: output.stateURL, runID: runID)
        let plan = try ResumePlan(try journal.load(), retryFailed: retryFailed,
                                  maxFail: try maxFail.map { try RolloutFlags.threshold($0, flag: "--max-fail") }, rerunUnknown: rerunUnknown)
        let record = plan.record
        try locks.stateLock.record(runID: record.id)
        let selection = try InventoryOptions.parse(record.options.selection)
        let connection = try ConnectionOptions.parse(record.options.connection)
        let targets = try Targets(selection, connection).ordered(record.hosts.map(\.name))
        try locks.lockHosts(targets, runID: record.id)

        let message = "resumed by pid \(getpid())" + (plan.retried.isEmpty ? "" : "; retrying \(plan.retried.joined(separator: ", "))")
        do {
            try journal.event(kind: "resume", message: message, at: Date())
        } catch {
            throw FlotillaError(.software, "cannot record the resume in the journal: \(error)")
        }
        Console.note("resuming run \(record.id) (\(plan.state.rawValue)); "
                     + (plan.inFlight.isEmpty ? "no step was in flight" : "re-attaching to the steps in flight: \(plan.inFlight.joined(separator: "; "))")
                     + (plan.unknown.isEmpty ? "" : (rerunUnknown ? "; running again the unknown steps: " : "; unknown, left failed (--rerun-unknown runs them): ")
                        + plan.unknown.joined(separator: "; ")))
        let knownFailures = record.kind == .stackstormUpgrade ? try MigrationCatalog.bundled().knownFailures : []
        try await RolloutRunner(targets: targets, locks: locks, output: output)
            .execute(record: record, journal: journal, preset: plan.preset, done: plan.done, reattach: plan.reattach, knownFailures: knownFailures)
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
            try await StepRecordPruner(stateDir: url).prune(runID: runID)
            return
        }
        let runs: [RunSummary] = try Journal.listRuns(stateDir: url).reversed()
        if json {
            print(RunListView.json(runs).rendered())
            return
        }
        guard !runs.isEmpty else {
            print("no runs in \(url.path)")
            return
        }
        print(RunListView.table(runs), terminator: "")
    }
}

/// `flotilla runs --prune`: removes the host-side step records (SPEC §8.1) that finished
/// runs left on their hosts, connecting as `resume` does, through the hosts' one cleanup
/// (``HostConnection/cleanupDetached(run:olderThanDays:become:)``).
struct StepRecordPruner {
    let stateDir: URL

    /// The runs whose records nothing reads any more: `resume` goes on only from the others.
    static let finished: Set<RunState> = [.succeeded, .completedWithFailures]
    /// As a run's own cleanup: other runs' records older than this go too.
    static let olderThanDays = 7
    static let hostsAtOnce = 32

    /// What became of one host's records of one run.
    struct Outcome: Sendable {
        var host: String
        /// Why the records were not removed (unreachable, a failed cleanup, a step to record first).
        var problem: String?
        /// Whether the host could not be reached or cleaned (as opposed to records kept on purpose).
        var failed = false
        /// The steps whose records the host keeps because they still run.
        var kept: [String] = []
    }

    func prune(runID: String?) async throws {
        let locks = try RunLocks(stateDir: stateDir)
        var runs: [JournalState] = []
        if let runID {
            let run = try Journal.open(stateDir: stateDir, runID: runID).load()
            guard Self.finished.contains(run.state) else {
                throw FlotillaError(.usage, "run \(run.record.id) is \(run.state.rawValue), not finished: 'flotilla resume \(run.record.id)' "
                                    + "reads its step records on the hosts; resume it first")
            }
            runs = [run]
        } else {
            for summary in try Journal.listRuns(stateDir: stateDir) {
                guard let state = summary.state, Self.finished.contains(state) else {
                    Console.note("run \(summary.id): \(summary.state?.rawValue ?? "unreadable"), not finished; left alone")
                    continue
                }
                runs.append(try Journal.open(stateDir: stateDir, runID: summary.id).load())
            }
        }
        var outcomes: [Outcome] = []
        for run in runs { outcomes += try await prune(run, locks: locks) }
        let failed = outcomes.filter(\.failed).count, left = outcomes.filter { $0.problem != nil && !$0.failed }.count
        print("\(runs.count) finished run\(runs.count == 1 ? "" : "s"): pruned \(outcomes.count - failed - left) host\(outcomes.count - failed - left == 1 ? "" : "s")"
              + (left > 0 ? ", \(left) left for resume" : "") + (failed > 0 ? ", \(failed) failed" : ""))
        if failed > 0 { throw ExitCode(failed == outcomes.count ? ExitStatus.unavailable.rawValue : ExitStatus.someHostsFailed.rawValue) }
    }

    /// One run: every host that started a step that leaves a record, a few at once.
    private func prune(_ run: JournalState, locks: RunLocks) async throws -> [Outcome] {
        let record = run.record
        let hosts = record.hosts.indices.filter { run.host(record.hosts[$0].name)?.steps.contains { $0.token != nil } ?? false }
        guard !hosts.isEmpty else {
            print("\(record.id): no host has step records of this run")
            return []
        }
        let targets = try Targets(try InventoryOptions.parse(record.options.selection), try ConnectionOptions.parse(record.options.connection))
            .ordered(record.hosts.map(\.name))
        try locks.lockHosts(targets, runID: record.id)
        let transport = SSHTransport(targets: targets)
        Console.note("run \(record.id): removing its step records from \(hosts.count) host\(hosts.count == 1 ? "" : "s")")
        return await withTaskGroup(of: Outcome.self) { group in
            var pending = hosts.makeIterator(), outcomes: [Outcome] = []
            for _ in 0..<Self.hostsAtOnce {
                guard let index = pending.next() else { break }
                group.addTask { await Self.prune(host: index, of: run, over: transport) }
            }
            for await outcome in group {
                Self.show(outcome, run: record.id)
                outcomes.append(outcome)
                if let index = pending.next() { group.addTask { await Self.prune(host: index, of: run, over: transport) } }
            }
            return outcomes
        }
    }

    private static func prune(host index: Int, of run: JournalState, over transport: SSHTransport) async -> Outcome {
        let planned = run.record.hosts[index]
        var outcome = Outcome(host: planned.name)
        let connection: any HostConnection
        do {
            connection = try await transport.connect(index)
        } catch {
            outcome.problem = "\(error)"
            outcome.failed = true
            return outcome
        }
        // A step the journal still has in flight (the run lost the host mid-step): its
        // record is how `resume --retry-failed` learns how it ended, so a host whose step
        // has ended keeps its records until then.
        for step in run.host(planned.name)?.steps ?? [] where step.status == .running {
            let token = DetachedStep.Token(run: run.record.id, host: planned.name, step: step.index, attempt: step.attempts)
            guard step.token == token.path else { continue }
            switch await query(token, become: planned.steps[step.index].become, on: connection) {
            case .success(.running):
                outcome.kept.append(step.name)
            case .success(.ended), .success(.exists):
                outcome.problem = "'\(step.name)' ended on the host after the run lost it; 'flotilla resume --retry-failed \(run.record.id)' records it"
            case .success(.never), .success(.lost):
                break // nothing on the host to learn from
            case .failure(let error):
                outcome.problem = "cannot ask the host about '\(step.name)': \(error.message)"
                outcome.failed = true
            }
        }
        if outcome.problem == nil {
            let becomes = Set(planned.steps.filter(\.kind.runsDetached).map(\.become)).sorted { !$0 && $1 }
            for become in becomes {
                do {
                    try await connection.cleanupDetached(run: run.record.id, olderThanDays: olderThanDays, become: become)
                } catch {
                    outcome.problem = "\(error)"
                    outcome.failed = true
                    break
                }
            }
        }
        await connection.close()
        return outcome
    }

    private static func query(_ token: DetachedStep.Token, become: Bool, on connection: any HostConnection) async -> Result<DetachedStep.State.Phase, TransportError> {
        do {
            let answer = try await connection.run(DetachedStep.query(token), become: become, timeout: .seconds(60)) { _, _ in }
            guard let state = answer.stdoutTail.split(separator: "\n").first.flatMap(DetachedStep.State.parse) else {
                return .failure(TransportError(.other, "the answer is not a step state: \(answer.stderrTail)"))
            }
            return .success(state.phase)
        } catch let error as TransportError {
            return .failure(error)
        } catch {
            return .failure(TransportError(.other, "\(error)"))
        }
    }

    private static func show(_ outcome: Outcome, run: String) {
        let kept = outcome.kept.isEmpty ? "" : "; kept, still running: " + outcome.kept.map { "'\($0)'" }.joined(separator: ", ")
        switch (outcome.problem, outcome.failed) {
        case (nil, _): print("\(run) \(outcome.host): removed the step records\(kept)")
        case (let problem?, true): print("\(run) \(outcome.host): FAILED: \(problem)")
        case (let problem?, false): print("\(run) \(outcome.host): kept the step records: \(problem)")
        }
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
        or name).

        Examples:
          flotilla show
          flotilla show 20261121-153000-ab12 --format html > run.html
          flotilla show --host st2-03 --step 'upgrade packages'

        Exit codes: 0 shown; 64 usage error (no such run or host).
        """
    )

    @OptionGroup var state: StateDirOption

    @Argument(help: ArgumentHelp("The run (default: the latest).", valueName: "run"))
    var runID: String?

    enum Format: String, ExpressibleByArgument, CaseIterable { case table, json, junit, html, markdown }

    @Flag(help: "Print the run result JSON (SPEC §6); the same as --format json.")
    var json = false

    @Option(help: ArgumentHelp("table, json, junit, html or markdown.", valueName: "format"))
    var format: Format = .table

    @Option(help: ArgumentHelp("Print this host's log of the run.", valueName: "name"))
    var host: String?

    @Option(help: ArgumentHelp("With --host: only this step (its number, from 1, or its name).", valueName: "step"))
    var step: String?

    func validate() throws {
        if step != nil && host == nil { throw ValidationError("--step goes with --host") }
    }

    func run() throws {
        let url = state.url
        let state = try Journal.open(stateDir: url, runID: runID).load()
        if let host {
            do throws(HostLog.ReadError) {
                print(try HostLog.read(stateDir: url, state: state, host: host, step: step), terminator: "")
            } catch {
                if error.isUnknownName { throw ValidationError(error.message) }
                throw FlotillaError(.software, error.message)
            }
            return
        }
        switch json ? .json : format {
        case .json: print(RunResult.json(state).rendered())
        case .junit: print(RunReports.junit(state), terminator: "")
        case .html: print(RunReports.html(state), terminator: "")
        case .markdown: print(RunReports.markdown(state), terminator: "")
        case .table: break
        }
        guard format == .table, !json else { return }
        print(RunReports.table(state), terminator: "")
    }
}
