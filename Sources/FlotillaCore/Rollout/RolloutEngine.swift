import Foundation
import Logging

/// Drives a run: feeds the rollout policy its events, performs its actions, runs each
/// host's steps over the transport, and records every transition in the journal before
/// the next step starts.
public actor RolloutEngine {
    public struct Settings: Sendable {
        /// Per-step limit where the step sets none (`--step-timeout`).
        public var stepTimeout: Double?
        /// `--health CMD`, run after a host's plan.
        public var health: String?
        public var healthyFor: TimeInterval = 0
        public var healthDeadline: TimeInterval = 300
        public var healthInterval: TimeInterval = 3
        /// `--force-stop`: kill st2 processes left after `st2ctl stop`.
        public var forceStop = false
        /// Reconnect attempts before a step, when a session was lost (backoff doubles).
        public var reconnectAttempts = 3
        public var reconnectBackoff: TimeInterval = 1
        /// The run's folder: `logs/HOST.log`, `artifacts/HOST/`.
        public var runDirectory: URL
        /// Recognised failure of the Mistral DB steps (from the catalog).
        public var knownFailures: [KnownFailure] = []
        /// Debug and info logs of the engine (metadata `run.id`, `host.name`, `step.name`,
        /// `step.index`, `batch.index`); silent unless the executable sets a level.
        public var logger = Logger(label: "flotilla.engine")

        public init(runDirectory: URL) { self.runDirectory = runDirectory }
    }

    /// A failure text the operator gets an explanation and a recovery procedure for.
    public struct KnownFailure: Sendable {
        public var stepKind: String
        public var match: String
        public var explanation: String

        public init(stepKind: String, match: String, explanation: String) {
            self.stepKind = stepKind
            self.match = match
            self.explanation = explanation
        }
    }

    /// What the engine reports as it goes, for progress output.
    public enum Progress: Sendable {
        case batchStarted(index: Int, hosts: [String])
        case hostStarted(String)
        case stepStarted(host: String, step: String)
        case stepFinished(host: String, step: String, status: StepRunStatus, seconds: Double)
        case hostFinished(host: String, status: HostRunStatus, error: String?, seconds: Double)
        case note(String)
    }

    let record: RunRecord
    let journal: Journal
    var policy: RolloutPolicy
    let transport: any HostTransport
    let settings: Settings
    let progress: @Sendable (Progress) -> Void
    let confirm: @Sendable (Int) async -> Bool

    /// Steps already finished per host (resume): indices never run again.
    var done: [Int: Set<Int>]
    var stopAfterCurrentStep = false
    var batchOf: [Int: Int] = [:]
    var remainingInBatch: [Int: Int] = [:]
    var startedBatches: Set<Int> = []
    var clusterLocks: [String: AsyncSemaphore] = [:]
    var events: AsyncStream<RolloutPolicy.Event>.Continuation?
    var hostTasks: [Int: Task<Void, Never>] = [:]

    /// - Parameters:
    ///   - done: per host index, the steps recorded as finished (resume).
    ///   - confirm: asks the operator before a batch (`--confirm`).
    public init(record: RunRecord, journal: sending Journal, policy: RolloutPolicy, transport: any HostTransport, settings: Settings,
                done: [Int: Set<Int>] = [:], progress: @escaping @Sendable (Progress) -> Void,
                confirm: @escaping @Sendable (Int) async -> Bool = { _ in true }) {
        self.record = record
        self.journal = journal
        self.policy = policy
        self.transport = transport
        self.settings = settings
        self.done = done
        self.progress = progress
        self.confirm = confirm
        for (index, batch) in record.batches.enumerated() {
            for name in batch {
                if let host = record.hosts.firstIndex(where: { $0.name == name }) { batchOf[host] = index }
            }
            remainingInBatch[index] = batch.count
        }
    }

    /// The run as its journal has it now.
    public func state() throws -> JournalState { try journal.load() }

    /// Sends an operator or signal event (`ctl`, SIGINT) to the policy.
    public func send(_ event: RolloutPolicy.Event) {
        events?.yield(event)
    }

    /// Runs until the policy finishes; returns its outcome.
    public func run() async -> RolloutPolicy.Outcome {
        let (stream, continuation) = AsyncStream.makeStream(of: RolloutPolicy.Event.self)
        events = continuation
        var outcome = RolloutPolicy.Outcome.stopped("no events")
        try? journal.runStatus(state: "running", haltReason: nil, at: Date())
        continuation.yield(.begin)
        loop: for await event in stream {
            let actions = policy.handle(event, now: Date())
            if case .skip(let host) = event, policy.skipped.contains(host) {
                try? journal.hostStatus(host: record.hosts[host].name, status: .skipped, error: "skipped by the operator (flotilla ctl skip)", at: Date())
            }
            for action in actions {
                switch action {
                case .start(let host):
                    startHost(host)
                case .wakeAt(let date):
                    Task { [continuation] in
                        let delay = date.timeIntervalSinceNow
                        if delay > 0 { try? await Task.sleep(for: .milliseconds(Int(delay * 1000) + 1)) }
                        continuation.yield(.tick)
                    }
                case .askConfirmation(let batch):
                    Task { [confirm, continuation] in continuation.yield(.confirmed(await confirm(batch))) }
                case .halt(let reason):
                    progress(.note("halting: \(reason)"))
                    try? journal.event(kind: "halt", message: reason, at: Date())
                case .stopInFlight:
                    stopAfterCurrentStep = true
                case .finish(let result):
                    outcome = result
                    break loop
                }
            }
        }
        continuation.finish()
        events = nil
        for task in hostTasks.values { await task.value }
        let (state, reason): (String, String?) = switch outcome {
        case .succeeded: ("succeeded", nil)
        case .completedWithFailures: ("completed_with_failures", nil)
        case .halted(let why): ("halted", why)
        case .stopped(let why): ("stopped", why)
        }
        try? journal.runStatus(state: state, haltReason: reason, at: Date())
        return outcome
    }

    func startHost(_ index: Int) {
        if let batch = batchOf[index], startedBatches.insert(batch).inserted {
            try? journal.batchStarted(index: batch, at: Date())
            progress(.batchStarted(index: batch, hosts: record.batches[batch]))
        }
        hostTasks[index] = Task { await self.runHost(index) }
    }

    func hostDone(_ index: Int, status: HostRunStatus, error: String?, seconds: Double) async {
        let host = record.hosts[index]
        let now = Date()
        _ = await durably("the status of \(host.name)") { [journal] in try journal.hostStatus(host: host.name, status: status, error: error, at: now) }
        progress(.hostFinished(host: host.name, status: status, error: error, seconds: seconds))
        if let batch = batchOf[index] {
            remainingInBatch[batch, default: 1] -= 1
            if remainingInBatch[batch] == 0 { try? journal.batchFinished(index: batch, at: Date()) }
        }
        let result: RolloutPolicy.HostResult = switch status {
        case .succeeded, .skipped: .succeeded
        case .unreachable: .unreachable
        default: .failed
        }
        events?.yield(.hostFinished(index, result, duration: seconds))
    }

    // MARK: One host

    func runHost(_ index: Int) async {
        let host = record.hosts[index]
        let started = Date()
        _ = await durably("the start of \(host.name)") { [journal] in try journal.hostStatus(host: host.name, status: .running, error: nil, at: started) }
        progress(.hostStarted(host.name))
        let log = HostLog(settings.runDirectory.appendingPathComponent("logs/\(Self.fileName(host.name)).log"))
        var connection: (any HostConnection)?
        var ranAStep = !(done[index] ?? []).isEmpty
        var status = HostRunStatus.succeeded
        var error: String?
        stepLoop: for (number, step) in host.steps.enumerated() where !(done[index] ?? []).contains(number) {
            if stopAfterCurrentStep {
                status = .cancelled
                error = "stopped before '\(step.name)' (--on-halt stop)"
                break
            }
            // Once per cluster: the first host of the cluster runs it, under a lock; the
            // others wait for it and skip.
            var lock: AsyncSemaphore?
            var groupValue = ""
            if let group = step.oncePer {
                groupValue = host.groups[group] ?? host.name
                lock = clusterLock("\(group)=\(groupValue)")
                await lock!.acquire()
                if let by = try? journal.clusterStepDoneBy(group: group, value: groupValue, step: step.clusterKey) {
                    await record(host.name, number, .skipped, "done on \(by) (once per \(group))", log: log)
                    await lock!.release()
                    continue stepLoop
                }
            }
            defer { if let lock { Task { await lock.release() } } }
            if connection == nil {
                switch await connect(index, log: log) {
                case .success(let opened): connection = opened
                case .failure(let failure):
                    status = ranAStep ? .failed : .unreachable
                    error = ranAStep ? "lost the connection before '\(step.name)': \(failure.message)" : failure.message
                    break stepLoop
                }
            }
            ranAStep = true
            let stepStart = Date()
            guard await durably("the start of '\(step.name)' on \(host.name)", { [journal] in try journal.stepStarted(host: host.name, step: number, at: stepStart) }) else {
                status = .cancelled
                error = "not started '\(step.name)': the journal cannot be written"
                break
            }
            progress(.stepStarted(host: host.name, step: step.name))
            settings.logger.debug("step started", metadata: [
                "run.id": "\(record.id)", "host.name": "\(host.name)", "step.index": "\(number)", "step.name": "\(step.name)",
                "step.command": "\(step.command)", "batch.index": "\(batchOf[index].map(String.init) ?? "-")",
            ])
            log.begin(step, number: number)
            var (stepStatus, outcome, message) = await perform(step, on: connection!, host: host, log: log)
            if stepStatus == .pending {
                // The session died while the host was idle (between steps): the command
                // never started, so it runs over a new session.
                log.note("the session was lost before '\(step.name)' started (\(message ?? "")); reconnecting")
                await connection?.close()
                connection = nil
                switch await connect(index, log: log) {
                case .success(let opened):
                    connection = opened
                    (stepStatus, outcome, message) = await perform(step, on: opened, host: host, log: log)
                case .failure(let failure):
                    message = "lost the connection before '\(step.name)' and could not reconnect: \(failure.message)"
                }
                if stepStatus == .pending { stepStatus = .failed }
            }
            let seconds = Date().timeIntervalSince(stepStart)
            log.end(stepStatus, outcome: outcome, message: message, seconds: seconds)
            let finishedAt = Date()
            let recorded = await durably("the end of '\(step.name)' on \(host.name)") { [journal] in
                try journal.stepFinished(host: host.name, step: number, status: stepStatus, exitStatus: outcome?.exitStatus,
                                         stdoutTail: outcome?.stdoutTail ?? "", stderrTail: outcome?.stderrTail ?? "",
                                         error: message, at: finishedAt, durationMS: Int(seconds * 1000))
            }
            progress(.stepFinished(host: host.name, step: step.name, status: stepStatus, seconds: seconds))
            settings.logger.debug("step finished", metadata: [
                "run.id": "\(record.id)", "host.name": "\(host.name)", "step.index": "\(number)", "step.name": "\(step.name)",
                "step.status": "\(stepStatus.rawValue)", "step.exit_status": "\(outcome?.exitStatus.map(String.init) ?? "-")",
                "step.duration_ms": "\(Int(seconds * 1000))",
            ])
            if stepStatus == .succeeded, let group = step.oncePer {
                _ = await durably("the cluster step") { [journal] in
                    try journal.clusterStepDone(group: group, value: groupValue, step: step.clusterKey, byHost: host.name, at: finishedAt)
                }
            }
            if !recorded {
                status = .cancelled
                error = "stopped after '\(step.name)': the journal cannot be written"
                break
            }
            if stepStatus != .succeeded {
                status = .failed
                error = "step '\(step.name)' failed: \(message ?? "exit \(outcome?.exitStatus.map(String.init) ?? "?")")"
                if outcome == nil { connection = nil } // the session broke mid-step: never retried blindly
                break
            }
        }
        await connection?.close()
        log.close()
        await hostDone(index, status: status, error: error, seconds: Date().timeIntervalSince(started))
    }

    /// Why the journal could not be written, if it could not: the run then starts nothing
    /// more and stops (resumable once the cause is fixed).
    public private(set) var journalProblem: String?

    /// Transitions waiting for the next commit, and who waits for each.
    var pendingWrites: [(what: String, write: () throws -> Void, done: CheckedContinuation<Bool, Never>)] = []
    var committing = false

    /// Records a transition and returns once it is on disk (false if it could not be
    /// written: the run then stops). Transitions of many hosts that arrive together share
    /// one commit, so a wide run does not wait for one fsync per step.
    func durably(_ what: String, _ write: @escaping () throws -> Void) async -> Bool {
        await withCheckedContinuation { continuation in
            pendingWrites.append((what, write, continuation))
            if !committing {
                committing = true
                Task { await self.commitPending() }
            }
        }
    }

    func commitPending() async {
        while !pendingWrites.isEmpty {
            await Task.yield() // transitions already on their way join this commit
            let batch = pendingWrites
            pendingWrites = []
            let errors: [Error?]
            do {
                errors = try journal.batch(batch.map(\.write))
            } catch {
                errors = Array(repeating: error, count: batch.count)
            }
            for (item, error) in zip(batch, errors) {
                if let error, journalProblem == nil {
                    journalProblem = "cannot record \(item.what) in the journal: \(error)"
                    progress(.note("\(journalProblem!); starting no new host, stopping after the steps in flight"))
                    events?.yield(.interrupt)
                }
                item.done.resume(returning: error == nil)
            }
        }
        committing = false
    }

    /// A step that does not run here (done elsewhere in its cluster).
    func record(_ host: String, _ step: Int, _ status: StepRunStatus, _ message: String, log: HostLog) async {
        let now = Date()
        _ = await durably("step \(step + 1) of \(host)") { [journal] in
            try journal.stepStarted(host: host, step: step, at: now)
            try journal.stepFinished(host: host, step: step, status: status, exitStatus: nil, stdoutTail: "",
                                     stderrTail: "", error: message, at: now, durationMS: 0)
        }
        log.note("step \(step + 1) skipped: \(message)")
    }

    func clusterLock(_ key: String) -> AsyncSemaphore {
        if let lock = clusterLocks[key] { return lock }
        let lock = AsyncSemaphore(permits: 1)
        clusterLocks[key] = lock
        return lock
    }

    /// Connects, retrying with backoff while the failure is one that retrying may cure.
    nonisolated func connect(_ index: Int, log: HostLog) async -> Result<any HostConnection, TransportError> {
        var delay = settings.reconnectBackoff
        var attempt = 0
        while true {
            do {
                return .success(try await transport.connect(index))
            } catch let error as TransportError {
                attempt += 1
                guard error.retryable, attempt <= settings.reconnectAttempts else { return .failure(error) }
                log.note("connect failed (\(error.message)); retry \(attempt) of \(settings.reconnectAttempts) in \(delay) s")
                settings.logger.info("reconnecting", metadata: ["host.index": "\(index)", "attempt": "\(attempt)", "error": "\(error.message)"])
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                delay *= 2
            } catch {
                return .failure(TransportError(.other, "\(error)"))
            }
        }
    }

    /// Runs one step and judges it. A nil outcome means the step did not run to a result.
    nonisolated func perform(_ step: RunStep, on connection: any HostConnection, host: RunHost, log: HostLog) async
        -> (StepRunStatus, StepOutcome?, String?) {
        let timeout = (step.timeout ?? settings.stepTimeout).map { Duration.milliseconds(Int($0 * 1000)) }
        if step.kind == PlanStep.Kind.fetchAuditLogs.rawValue {
            let directory = settings.runDirectory.appendingPathComponent("artifacts/\(Self.fileName(host.name))/audit")
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                let fetched = try await connection.fetch(glob: step.command, into: directory)
                log.note("fetched \(fetched.count) file(s) into \(directory.path)")
                return (.succeeded, StepOutcome(exitStatus: 0, stdoutTail: fetched.joined(separator: "\n")), nil)
            } catch {
                return (.failed, nil, "fetching \(step.command): \(error)")
            }
        }
        if step.kind == "health" { return await healthCheck(step, on: connection, log: log) }
        var artifact: FileHandle?
        if step.kind == PlanStep.Kind.backupKeyValue.rawValue {
            let directory = settings.runDirectory.appendingPathComponent("artifacts/\(Self.fileName(host.name))")
            try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let file = directory.appendingPathComponent("st2-key-list.json")
            if FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]) {
                artifact = try? FileHandle(forWritingTo: file)
            }
        }
        defer { try? artifact?.close() }
        let outcome: StepOutcome
        do {
            outcome = try await connection.run(step.command, become: step.become, timeout: timeout) { [artifact] kind, bytes in
                log.write(bytes)
                if kind == .stdout { try? artifact?.write(contentsOf: Data(bytes)) } // a full disk fails the journal, not this process
            }
        } catch let error as TransportError where error.kind == .notStarted {
            return (.pending, nil, error.message)
        } catch let error as TransportError {
            return (.failed, nil, "the connection was lost during the step: \(error.message)")
        } catch {
            return (.failed, nil, "\(error)")
        }
        if outcome.timedOut {
            return (.failed, outcome, "timed out after \(timeout.map { "\($0.components.seconds)" } ?? "?") s (channel closed)")
        }
        if let signal = outcome.exitSignal { return (.failed, outcome, "killed by signal \(signal)") }
        guard outcome.exitStatus == 0 else {
            let text = outcome.stdoutTail + outcome.stderrTail
            // Quotes vary between versions of the message (`relation "x" already exists`).
            func bare(_ text: String) -> String { text.filter { $0 != "\"" && $0 != "'" } }
            if let known = settings.knownFailures.first(where: { $0.stepKind == step.kind && bare(text).contains(bare($0.match)) }) {
                return (.failed, outcome, "exit \(outcome.exitStatus.map(String.init) ?? "?"): \(known.explanation)")
            }
            let last = outcome.stderrTail.split(separator: "\n").last.map(String.init) ?? outcome.stdoutTail.split(separator: "\n").last.map(String.init)
            return (.failed, outcome, "exit \(outcome.exitStatus.map(String.init) ?? "?")" + (last.map { ": \($0)" } ?? ""))
        }
        let judged = StepJudge.judge(step, outcome)
        if judged.0 != .succeeded, step.kind == PlanStep.Kind.confirmStopped.rawValue, settings.forceStop,
           let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) {
            return await forceStop(components.compactMap(\.pid), step, on: connection, log: log)
        }
        return judged
    }

    /// `--force-stop`: kills the st2 processes `st2ctl status` still lists, then checks again.
    nonisolated func forceStop(_ pids: [Int], _ step: RunStep, on connection: any HostConnection, log: HostLog) async
        -> (StepRunStatus, StepOutcome?, String?) {
        log.note("--force-stop: kill -9 \(pids.map(String.init).joined(separator: " "))")
        do {
            _ = try await connection.run("kill -9 \(pids.map(String.init).joined(separator: " "))", become: step.become, timeout: .seconds(30)) { _, bytes in
                log.write(bytes)
            }
            let again = try await connection.run(step.command, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
            return StepJudge.judge(step, again)
        } catch {
            return (.failed, nil, "--force-stop: \(error)")
        }
    }

    /// `--health CMD`: must exit 0, and with --healthy-for keep passing that long (re-run
    /// every few seconds), within --health-deadline.
    nonisolated func healthCheck(_ step: RunStep, on connection: any HostConnection, log: HostLog) async
        -> (StepRunStatus, StepOutcome?, String?) {
        let start = Date()
        var passingSince: Date?
        var last: StepOutcome?
        while true {
            do {
                let outcome = try await connection.run(step.command, become: step.become, timeout: .seconds(60)) { _, bytes in log.write(bytes) }
                last = outcome
                if outcome.exitStatus == 0 {
                    let since = passingSince ?? Date()
                    passingSince = since
                    if Date().timeIntervalSince(since) >= settings.healthyFor { return (.succeeded, outcome, nil) }
                } else {
                    passingSince = nil
                }
            } catch {
                return (.failed, nil, "the connection was lost during the health check: \(error)")
            }
            if Date().timeIntervalSince(start) >= settings.healthDeadline {
                let what = settings.healthyFor > 0 ? "did not pass for \(Int(settings.healthyFor)) s in a row" : "did not pass"
                return (.failed, last, "health check \(what) within \(Int(settings.healthDeadline)) s (last exit \(last?.exitStatus.map(String.init) ?? "?"))")
            }
            try? await Task.sleep(for: .milliseconds(Int(settings.healthInterval * 1000)))
        }
    }

    /// A host name as a file name (anything but letters, digits, `._-` becomes `_`).
    public static func fileName(_ host: String) -> String {
        String(host.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "_" })
    }
}

/// Judges steps whose exit status is not the whole story.
enum StepJudge {
    static func judge(_ step: RunStep, _ outcome: StepOutcome) -> (StepRunStatus, StepOutcome?, String?) {
        switch step.kind {
        case PlanStep.Kind.confirmStopped.rawValue:
            guard let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) else {
                return (.failed, outcome, "st2ctl status did not list the components")
            }
            let running = components.filter(\.running).map(\.name)
            return running.isEmpty ? (.succeeded, outcome, nil)
                : (.failed, outcome, "still running after st2ctl stop: \(running.joined(separator: ", ")) (stop them, or rerun with --force-stop)")
        case PlanStep.Kind.verifyServices.rawValue:
            guard let components = ComponentState.parse(st2ctlStatus: outcome.stdoutTail) else {
                return (.failed, outcome, "st2ctl status did not list the components")
            }
            let installed = Dictionary(uniqueKeysWithValues: (step.expect ?? "").split(separator: " ").map { (String($0), "") })
            let stopped = ComponentState.expected(components, installed: installed).filter { !$0.running }.map(\.name)
            return stopped.isEmpty ? (.succeeded, outcome, nil) : (.failed, outcome, "not running after st2ctl start: \(stopped.joined(separator: ", "))")
        case PlanStep.Kind.verifyVersion.rawValue:
            let found = outcome.stdoutTail.trimmingCharacters(in: .whitespacesAndNewlines)
            return found == step.expect ? (.succeeded, outcome, nil) : (.failed, outcome, "installed st2 is '\(found)', expected \(step.expect ?? "?")")
        default:
            return (.succeeded, outcome, nil)
        }
    }
}

/// A lock tasks wait for without blocking a thread, granted in arrival order.
/// At most `permits` holders at once; the others wait in order. With one permit, a lock.
public actor AsyncSemaphore {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(permits: Int) { free = permits }

    public func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    public func release() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }
}

/// A host's log for the run: every step's command, times, and full output as it arrives
/// (owner-only).
public final class HostLog: @unchecked Sendable {
    // @unchecked: the handle is written by one host task at a time (steps run in order).
    private let handle: FileHandle?

    init(_ url: URL) {
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        if !FileManager.default.fileExists(atPath: url.path) {
            FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        handle = try? FileHandle(forWritingTo: url)
        _ = try? handle?.seekToEnd()
    }

    func note(_ text: String) { line("--- \(Self.stamp()) \(text)") }

    func begin(_ step: RunStep, number: Int) {
        line("=== \(Self.stamp()) step \(number + 1): \(step.name)\n$ \(step.command)")
    }

    // `try?`: FileHandle.write(_: Data) traps on a full disk; the journal reports that instead.
    func write(_ bytes: UnsafeRawBufferPointer) { try? handle?.write(contentsOf: Data(bytes)) }

    func end(_ status: StepRunStatus, outcome: StepOutcome?, message: String?, seconds: Double) {
        line("\n=== \(Self.stamp()) \(status.rawValue)" + (outcome?.exitStatus.map { ", exit \($0)" } ?? "")
             + String(format: ", %.2f s", seconds) + (message.map { ": \($0)" } ?? ""))
    }

    func close() { try? handle?.close() }

    private func line(_ text: String) { try? handle?.write(contentsOf: Data((text + "\n").utf8)) }

    static func stamp() -> String { ISO8601DateFormatter().string(from: Date()) }

    /// The part of a host log about one step (0-based): from its `=== ... step N:` line to
    /// the next step's, every attempt of it (a resumed run appends to the log).
    public static func section(of log: String, step: Int) -> String {
        var out = ""
        var inside = false
        for line in log.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("=== "), let range = line.range(of: " step "), let colon = line[range.upperBound...].firstIndex(of: ":"),
               let number = Int(line[range.upperBound..<colon]) {
                inside = number == step + 1
            }
            if inside { out += line + "\n" }
        }
        return out
    }
}
