import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation
import Synchronization

/// Creates or reopens a run, and drives it to its end (``RunDriver``) with what only the
/// terminal does: progress, prompts, signals, the result printed.
struct RolloutRunner {
    let driver: RunDriver
    let output: RunOutputOptions

    init(targets: Targets, locks: RunLocks, output: RunOutputOptions, journal: JournalLocation) {
        driver = RunDriver(targets: targets, locks: locks, location: journal)
        self.output = output
    }

    /// Creates the run's journal (``RunDriver/createJournal(_:sharedName:)``) and executes the run.
    func start(_ record: RunRecord, knownFailures: [RolloutEngine.KnownFailure], sharedName: String? = nil,
               handlers: StepHandlers = .standard) async throws {
        var record = record
        let journal = try driver.createJournal(&record, sharedName: sharedName)
        Console.note(RunProgress.startNote(record, journal: journal.location))
        try await execute(record: record, journal: journal, preset: RunBuilder.presetResults(record), done: [:], knownFailures: knownFailures,
                          handlers: handlers)
    }

    /// Runs (or continues) a run to its end and exits with SPEC §1's status.
    func execute(record: RunRecord, journal: sending Journal, preset: [Int: RolloutPolicy.HostResult], done: [Int: Set<Int>],
                 reattach: [Int: [Int: DetachedStep.Token]] = [:], knownFailures: [RolloutEngine.KnownFailure],
                 handlers: StepHandlers = .standard) async throws {
        // --verbose logs go straight to stderr: line-per-event output then, no status area to garble.
        let printer = ProgressPrinter(record: record, quiet: output.quiet, mode: output.verbose ? .lines : .standardError(),
                                      write: { FileHandle.standardError.write(Data($0.utf8)) })
        let stopping = StopAtOnce()
        let (engine, sharedRun) = try driver.engine(
            record: record, journal: journal, preset: preset, done: done, reattach: reattach, knownFailures: knownFailures, handlers: handlers,
            logger: Console.logger(label: "flotilla.engine", verbose: output.verbose),
            // Once stopping at once, the channels torn down and the journal's refusals are expected: not news.
            progress: { if !stopping.isStopping { printer.show($0) } },
            confirm: { batch in printer.suspend(); return await Console.confirmBatch(batch, of: record.batches.count) })
        let signals = SignalWatcher(
            first: { signal in
                printer.aside { Console.note("\(signal): starting no new host; in-flight steps finish, then the run stops (again to detach at once: the steps go on on their hosts)") }
                Task { await engine.send(.interrupt) }
            },
            second: { signal in
                printer.finish()
                Console.note("\(signal) again: detaching now; the steps in flight go on on their hosts, and 'flotilla resume' records how they ended without running them again")
                stopping.start(engine, reason: "\(signal) twice: stopped without waiting for the steps in flight")
            })
        let control = driver.serveControl(engine, record: record, sharedRun: sharedRun, note: printer.note, warn: Console.warn)
        let outcome = await engine.run()
        // Stopping at once: that path records the stop and exits; nothing more to report.
        if stopping.isStopping { await stopping.wait() }
        printer.finish()
        control.stop()
        if let problem = await engine.journalProblem {
            Console.error("\(problem)\nthe run stopped; \(driver.journalFix), then: flotilla resume \(record.id) \(output.state.again)")
        }
        withExtendedLifetime(signals) {}
        guard let state = try await driver.finalState(of: engine) else { throw ExitCode(ExitStatus.stopped.rawValue) }
        // A report that cannot be written does not hide how the run went: the exit code
        // stays the run's, and the journal can render the report again.
        for (format, error) in RunReports.write(state, json: output.report, junit: output.junit, html: output.html) {
            Console.error("\(error); the run is in the journal: flotilla show \(record.id) --format \(format) \(output.state.again) > FILE")
        }
        if output.json { FileHandle.standardOutput.write(Data((RunResult.json(state).rendered() + "\n").utf8)) }
        printer.summary(state, outcome: outcome)
        throw ExitCode(RunResult.exitCode(state))
    }
}

/// The second signal: the engine records the run as stopped and closes the channels of
/// the steps in flight, which detached steps outlive on their hosts; then the process
/// exits 3, without waiting for those steps (and after at most `deadline` seconds, should
/// closing hang).
final class StopAtOnce: Sendable {
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Whether the stop began.
    var isStopping: Bool { task.withLock { $0 != nil } }

    /// Begins the stop (once; later calls do nothing).
    func start(_ engine: RolloutEngine, reason: String, deadline: Double = 5) {
        task.withLock { task in
            guard task == nil else { return }
            DispatchQueue.global().asyncAfter(deadline: .now() + deadline) {
                Console.warn("the channels in flight did not close within \(Int(deadline)) s; exiting anyway")
                exit(ExitStatus.stopped.rawValue)
            }
            task = Task {
                do {
                    try await engine.stopAtOnce(reason: reason)
                } catch {
                    Console.error("cannot record the stop in the journal (\(error)); resume still re-attaches to the steps recorded as running")
                }
                exit(ExitStatus.stopped.rawValue)
            }
        }
    }

    /// Returns when the stop ended, which is never: it exits the process.
    func wait() async {
        await task.withLock { $0 }?.value
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
