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
        let knownFailures = record.kind == .stackstormUpgrade ? Upgrade.knownFailures(try TargetOptions.loadCatalog(nil)) : []
        try await RolloutRunner(targets: targets, locks: locks, output: output)
            .execute(record: record, journal: journal, preset: plan.preset, done: plan.done, reattach: plan.reattach, knownFailures: knownFailures)
    }
}

struct Runs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the runs of a state dir, newest first.",
        discussion: """
        Examples:
          flotilla runs
          flotilla runs --state-dir /var/lib/flotilla --json

        Exit codes: 0 listed; 64 usage error.
        """
    )

    @OptionGroup var state: StateDirOption

    @Flag(help: "Print JSON on stdout.")
    var json = false

    func run() throws {
        let url = state.url
        let runs: [RunSummary] = try Journal.listRuns(stateDir: url).reversed()
        let stamp = ISO8601DateFormatter()
        if json {
            let items: [JSONValue] = runs.map { run in
                .object([
                    ("run_id", .string(run.id)), ("kind", .string(run.kind?.rawValue ?? "")), ("name", .string(run.name)),
                    ("target_version", .string(run.targetVersion)), ("created_at", .string(stamp.string(from: run.createdAt))),
                    ("state", .string(run.state?.rawValue ?? "unreadable")), ("halt_reason", .string(run.haltReason)),
                    ("hosts", .object(HostRunStatus.allCases.compactMap { s in run.hostCounts[s].map { (s.rawValue, .int($0)) } })),
                    ("problem", .string(run.problem)),
                ])
            }
            print(JSONValue.object([("runs", .array(items))]).rendered())
            return
        }
        guard !runs.isEmpty else {
            print("no runs in \(url.path)")
            return
        }
        var rows = [["RUN", "KIND", "TARGET", "CREATED", "STATE", "HOSTS"]]
        for run in runs {
            let counts = HostRunStatus.allCases.compactMap { s in run.hostCounts[s].map { "\($0) \(s.rawValue)" } }.joined(separator: ", ")
            rows.append([run.id, run.name ?? run.kind?.rawValue ?? "", run.targetVersion ?? "-", stamp.string(from: run.createdAt),
                         run.problem.map { "unreadable: \($0)" } ?? (run.state?.rawValue ?? "") + (run.haltReason.map { " (\($0))" } ?? ""), counts])
        }
        print(TextTable.render(rows), terminator: "")
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
            guard state.host(host) != nil else { throw ValidationError("run \(state.record.id) has no host '\(host)'") }
            let log = url.appendingPathComponent("runs/\(state.record.id)/logs/\(FileName.host(host)).log")
            let text: String
            if FileManager.default.fileExists(atPath: log.path) {
                do {
                    text = try String(contentsOf: log, encoding: .utf8)
                } catch {
                    throw FlotillaError(.software, "cannot read \(log.path): \(error.localizedDescription)")
                }
            } else {
                text = "(no log: the host never started)\n"
            }
            guard let step else {
                print(text, terminator: "")
                return
            }
            let steps = state.record.hosts.first { $0.name == host }?.steps ?? []
            guard let number = Int(step).map({ $0 - 1 }) ?? steps.firstIndex(where: { $0.name == step }), steps.indices.contains(number) else {
                throw ValidationError("host '\(host)' has no step '\(step)' (steps: \(steps.enumerated().map { "\($0 + 1) \($1.name)" }.joined(separator: ", ")))")
            }
            print(HostLog.section(of: text, step: number), terminator: "")
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
        print("run \(state.record.id) (\(state.record.name ?? state.record.kind.rawValue)\(state.record.targetVersion.map { " to \($0)" } ?? "")): \(RunResult.outcome(state.state))"
              + (state.haltReason.map { " — \($0)" } ?? ""))
        var rows = [["HOST", "BATCH", "STATUS", "FROM", "TO", "STEPS", "ERROR"]]
        for (planned, host) in zip(state.record.hosts, state.hosts) {
            let finished = host.steps.filter { $0.status == .succeeded || $0.status == .skipped }.count
            rows.append([host.name, planned.batch.map { String($0 + 1) } ?? "-", host.status.rawValue, planned.fromVersion ?? "-",
                         planned.toVersion ?? "-", "\(finished)/\(host.steps.count)", host.error ?? planned.skipReason ?? ""])
        }
        print(TextTable.render(rows), terminator: "")
    }
}
