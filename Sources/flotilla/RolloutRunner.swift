import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation
import Logging
import SSH

/// Creates or reopens a run, and drives it to its end: engine, signals, control socket,
/// progress, result.
struct RolloutRunner {
    let targets: Targets
    let locks: RunLocks
    let output: RunOutputOptions
    let selection: InventoryOptions
    let connection: ConnectionOptions

    /// Creates the run (batches, record, journal) and executes it.
    func start(kind: String, name: String?, target: String?, hosts: [RunHost], batchable: [String], spec: BatchSpec?,
               canary: Int?, options: [String: String], knownFailures: [RolloutEngine.KnownFailure]) async throws {
        var hosts = hosts
        let batches = BatchSpec.batches(count: batchable.count, spec: spec, canary: canary, targeted: hosts.count)
            .map { $0.map { batchable[$0] } }
        let position = Dictionary(uniqueKeysWithValues: hosts.enumerated().map { ($1.name, $0) })
        for (index, batch) in batches.enumerated() {
            for name in batch { hosts[position[name]!].batch = index }
        }
        var options = options
        options["selection"] = Self.encode(selection.arguments)
        options["connection"] = Self.encode(connection.arguments)
        options["state-dir"] = output.stateDir
        let now = Date()
        let record = RunRecord(id: RunRecord.newID(at: now), kind: kind, name: name, targetVersion: target, createdAt: now,
                               hosts: hosts, batches: batches, options: options)
        let journal: Journal
        do {
            journal = try Journal.create(stateDir: locks.stateDir, run: record)
            try locks.stateLock.record(runID: record.id)
        } catch {
            Console.error("cannot create the run's journal: \(error)")
            throw ExitCode(70)
        }
        var preset: [Int: RolloutPolicy.HostResult] = [:]
        for (index, host) in hosts.enumerated() {
            guard let reason = host.skipReason else { continue }
            let unreachable = reason.hasPrefix("unreachable:")
            if unreachable { preset[index] = .unreachable }
            try? journal.hostStatus(host: host.name, status: unreachable ? .unreachable : .skipped, error: reason, at: now)
        }
        Console.note("run \(record.id): \(batchable.count) host\(batchable.count == 1 ? "" : "s") in \(batches.count) batch\(batches.count == 1 ? "" : "es")"
                     + (hosts.count > batchable.count ? ", \(hosts.count - batchable.count) not started (skipped, refused or unreachable)" : "")
                     + "; journal \(journal.file.path)")
        try await execute(record: record, journal: journal, preset: preset, done: [:], knownFailures: knownFailures)
    }

    /// Runs (or continues) a run to its end and exits with SPEC §1's status.
    func execute(record: RunRecord, journal: sending Journal, preset: [Int: RolloutPolicy.HostResult], done: [Int: Set<Int>],
                 knownFailures: [RolloutEngine.KnownFailure]) async throws {
        let options = record.options
        let config: RolloutPolicy.Config
        do {
            config = try RolloutFlags.config(options, record: record, now: Date())
        } catch let error as RolloutFlags.FlagError {
            throw ValidationError(error.message)
        }
        var settings = RolloutEngine.Settings(runDirectory: locks.stateDir.appendingPathComponent("runs/\(record.id)"))
        settings.stepTimeout = try options["step-timeout"].map { try RolloutFlags.duration($0, flag: "--step-timeout") }
        settings.health = options["health"]
        settings.healthyFor = try options["healthy-for"].map { try RolloutFlags.duration($0, flag: "--healthy-for") } ?? 0
        settings.healthDeadline = try options["health-deadline"].map { try RolloutFlags.duration($0, flag: "--health-deadline") } ?? 300
        settings.forceStop = options["force-stop"] == "yes"
        settings.knownFailures = knownFailures
        settings.logger = Console.logger(label: "flotilla.engine", verbose: output.verbose)

        // --verbose logs go straight to stderr: line-per-event output then, no status area to garble.
        let printer = ProgressPrinter(record: record, quiet: output.quiet, terminal: output.verbose ? nil : ProgressPrinter.Terminal.standardError(),
                                      write: { FileHandle.standardError.write(Data($0.utf8)) })
        let engine = RolloutEngine(record: record, journal: journal, policy: RolloutPolicy(config: config, finished: preset),
                                   transport: SSHTransport(targets: targets), settings: settings, done: done,
                                   progress: { printer.show($0) }, confirm: { batch in printer.suspend(); return await Console.confirmBatch(batch, of: record.batches.count) })
        let signals = SignalWatcher(
            first: { signal in
                printer.aside { Console.note("\(signal): starting no new host; in-flight steps finish, then the run stops (again to stop at once)") }
                Task { await engine.send(.interrupt) }
            },
            second: { signal in
                printer.finish()
                Console.note("\(signal) again: stopping now; 'flotilla resume' re-runs the steps that were in flight")
                exit(3)
            })
        let control = ControlServer(socket: locks.stateDir.appendingPathComponent("ctl.sock"), runID: record.id) { command in
            guard let event = ControlServer.event(command, hosts: record.hosts.map(\.name)) else {
                return "error: unknown command '\(command)' (pause, continue, abort, skip HOST, set max-parallel N)"
            }
            Task { await engine.send(event) }
            printer.note("control: \(command)")
            return "ok"
        }
        do {
            try control.start()
        } catch {
            Console.warn("live control is unavailable: \(error)")
        }
        let outcome = await engine.run()
        printer.finish()
        control.stop()
        if let problem = await engine.journalProblem {
            Console.error("\(problem)\nthe run stopped; free the space or fix the state dir, then: flotilla resume \(record.id) --state-dir \(output.stateDir)")
        }
        _ = signals
        let state: JournalState
        do {
            state = try await engine.state()
        } catch {
            Console.error("cannot read the journal back: \(error)")
            throw ExitCode(70)
        }
        let json = RunResult.json(state).rendered() + "\n"
        // A report that cannot be written does not hide how the run went: the exit code
        // stays the run's, and the journal can render the report again.
        for (path, format, render) in [(output.report, "json", { json }), (output.junit, "junit", { RunReports.junit(state) }),
                                       (output.html, "html", { RunReports.html(state) })] {
            guard let path else { continue }
            do {
                try Console.writeOwnerOnly(render(), to: path)
            } catch {
                Console.error("\(error); the run is in the journal: flotilla show \(record.id) --format \(format) --state-dir \(output.stateDir) > FILE")
            }
        }
        if output.json { FileHandle.standardOutput.write(Data(json.utf8)) }
        printer.summary(state, outcome: outcome)
        throw ExitCode(RunResult.exitCode(state))
    }

    static func encode(_ arguments: [String]) -> String {
        JSONValue.strings(arguments).rendered()
    }

    static func decode(_ text: String?) -> [String] {
        guard let text, let data = text.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String] else { return [] }
        return list
    }
}

extension InventoryOptions {
    /// The arguments that select the same hosts again (for `resume`).
    var arguments: [String] {
        let sources = (try? self.sources) ?? inventory
        return sources.flatMap { ["-i", URL(fileURLWithPath: $0).standardizedFileURL.path] } + (limit.map { ["--limit", $0] } ?? [])
            + ["--ssh-config", sshConfig]
    }
}

extension ConnectionOptions {
    /// The non-secret arguments that connect the same way again (for `resume`).
    var arguments: [String] {
        var arguments = ["--host-key-check", hostKeyCheck.rawValue, "--connect-timeout", String(connectTimeout)]
        if let knownHosts { arguments += ["--known-hosts", URL(fileURLWithPath: knownHosts).standardizedFileURL.path] }
        if let keyPassphraseFile { arguments += ["--key-passphrase-file", URL(fileURLWithPath: keyPassphraseFile).standardizedFileURL.path] }
        if askPass { arguments.append("--ask-pass") }
        return arguments
    }
}

extension Targets {
    /// The targets in the order of `names` (a run's hosts).
    /// - Throws: `ValidationError` naming hosts the inventory no longer has.
    func ordered(_ names: [String]) throws -> Targets {
        let position = Dictionary(uniqueKeysWithValues: hosts.enumerated().map { ($1.name, $0) })
        let missing = names.filter { position[$0] == nil }
        guard missing.isEmpty else {
            throw ValidationError("the inventory no longer selects \(missing.joined(separator: ", ")), which the run has; restore them or pass -i/--limit selecting them")
        }
        var copy = self
        let order = names.map { position[$0]! }
        copy.hosts = order.map { hosts[$0] }
        copy.settings = order.map { settings[$0] }
        copy.options = order.map { options[$0] }
        copy.jumps = order.map { jumps[$0] }
        return copy
    }
}

/// SIGINT/SIGTERM: the first starts a graceful stop, the second stops at once.
final class SignalWatcher: @unchecked Sendable {
    // @unchecked: `count` is only touched on `queue`.
    private let queue = DispatchQueue(label: "flotilla.signals")
    private var sources: [DispatchSourceSignal] = []
    private var count = 0

    init(first: @escaping @Sendable (String) -> Void, second: @escaping @Sendable (String) -> Void) {
        for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [unowned self] in
                count += 1
                if count == 1 { first(name) } else { second(name) }
            }
            source.resume()
            sources.append(source)
        }
    }

    deinit { sources.forEach { $0.cancel() } }
}

extension Console {
    /// Asks before a batch (`--confirm`); no terminal means no.
    static func confirmBatch(_ batch: Int, of count: Int) async -> Bool {
        guard isatty(STDIN_FILENO) != 0 else {
            warn("--confirm: no terminal to ask on; not starting batch \(batch + 1)")
            return false
        }
        FileHandle.standardError.write(Data("flotilla: start batch \(batch + 1) of \(count)? [y/N] ".utf8))
        let answer = readLine() ?? ""
        return answer.lowercased().hasPrefix("y")
    }
}
