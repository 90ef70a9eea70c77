import Foundation
import Synchronization

// Detached execution over any connection that runs `sh` command lines: each operation is
// one of ``DetachedStep``'s lines, sent through ``HostConnection/run(_:become:timeout:output:)``
// (so under become through the same sudo wrapper, the password on stdin, never in the line),
// its state line parsed, and a ``DetachedStep/protocolExit`` answered by a query.
extension HostConnection {
    /// Starts the step and waits for it. The start line prints the step's output when it
    /// ends (no program runs on the host to stream it meanwhile, so a short step costs what
    /// a plain command costs); a step still running after ``DetachedShell/followAfter`` is
    /// followed live over a second channel, and what that passed on is not passed again.
    public func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?,
                              output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        await startDetached(token, command: command, become: become, timeout: timeout, followAfter: DetachedShell.followAfter, output: output)
    }

    /// Starts the step as ``startDetached(_:command:become:timeout:output:)`` does; with
    /// `removal` (over a connection that can answer a line, not through sudo, see
    /// ``run(_:become:timeout:output:answer:)``) the host then waits, the step's output
    /// sent, for ``RecordsRemoval/answer(_:)`` to remove the run's records over this same
    /// channel.
    public func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?, removal: RecordsRemoval?,
                              output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        if let removal, let outcome = await startDetached(token, command: command, become: become, timeout: timeout,
                                                          followAfter: DetachedShell.followAfter, removal: removal, output: output) {
            return outcome
        }
        return await startDetached(token, command: command, become: become, timeout: timeout, output: output)
    }

    /// The same, followed live after `followAfter` rather than ``DetachedShell/followAfter``.
    public func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?, followAfter: Duration,
                              output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        // Without a removal the line is always run.
        await startDetached(token, command: command, become: become, timeout: timeout, followAfter: followAfter, removal: nil, output: output)!
    }

    /// nil when `removal` was asked for and this connection cannot answer a line: nothing ran.
    func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?, followAfter: Duration,
                       removal: RecordsRemoval?,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome? {
        let passed = DetachedShell.Passed(output)
        let follower = DetachedShell.Follower()
        let following = Task {
            guard (try? await Task.sleep(for: followAfter)) != nil, follower.begin() else { return }
            // Its outcome does not matter: the start line's own end says how the step ended.
            _ = await attach(token, stdoutOffset: 0, stderrOffset: 0, become: become, timeout: nil, output: passed.take)
        }
        let held = DetachedShell.Held()
        let ran: Result<StepOutcome, any Error>
        if let removal {
            let line = DetachedStep.start(token, command: command, become: become, thenRemovingOlderThan: removal.olderThanDays)
            guard let answered = await removal.run(line, become: become, timeout: timeout, on: self, output: held.take) else {
                following.cancel()
                return nil
            }
            ran = answered
        } else {
            do {
                ran = .success(try await start(token, command: command, become: become, timeout: timeout, output: held.take))
            } catch {
                ran = .failure(error)
            }
        }
        // A follower already attached ends with the step (or its channel); one not yet begun never begins.
        let stopFollower: Bool
        if case .success(let outcome) = ran, !outcome.timedOut { stopFollower = !follower.end() } else { stopFollower = true }
        if stopFollower { following.cancel() }
        await following.value
        let outcome: StepOutcome
        switch ran {
        case .failure(let error): return DetachedShell.lostOrFailed(error)
        case .success(let value): outcome = value
        }
        if outcome.timedOut { return .timedOut }
        // What the start line printed at the end is the whole of each stream: drop what the follower passed on.
        let filter = DetachedShell.StreamFilter(stateLineFirst: true, offsets: passed.counts, output: passed.take)
        held.replay(into: filter.take)
        // Only a session's first short start line tells the session's facts.
        if let facts = filter.state?.facts { shellRunner?.learn(facts) }
        var concluded = outcome
        if removal != nil, concluded.exitStatus == nil, let state = filter.state, state.phase == .ended {
            // The line waits for the answer: its state line has the step's status.
            concluded.exitStatus = state.exitStatus
        }
        return await DetachedShell.conclude(concluded, filter: filter, passed: passed, token: token, starting: true, become: become, on: self)
    }

    /// Runs the start line: the short one first where this session's shell may run the
    /// step itself (``shellRunner``), the whole one when it declines (nothing recorded) or
    /// has declined before.
    private func start(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        if let shellRunner, shellRunner.mayRun, DetachedStep.runsInShell(command: command, become: become) {
            let held = DetachedShell.Held()
            let facts = shellRunner.facts
            let outcome = try await run(DetachedStep.startInShell(token, command: command, facts: facts), become: become, timeout: timeout,
                                        output: held.take)
            guard outcome.exitStatus == DetachedStep.protocolExit && outcome.stateLine?.phase == .never else {
                held.replay(into: output)
                return outcome
            }
            shellRunner.decline()
        }
        return try await run(DetachedStep.start(token, command: command, become: become), become: become, timeout: timeout, output: output)
    }

    public func attach(_ token: DetachedStep.Token, stdoutOffset: Int, stderrOffset: Int, become: Bool, timeout: Duration?,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        let line = DetachedStep.attach(token, stdoutOffset: stdoutOffset, stderrOffset: stderrOffset)
        return await DetachedShell.follow(line, token: token, stateLineFirst: true, offsets: (stdoutOffset, stderrOffset),
                                          become: become, timeout: timeout, on: self, output: output)
    }

    public func killDetached(_ token: DetachedStep.Token, become: Bool) async -> DetachedOutcome {
        let outcome: StepOutcome
        do {
            outcome = try await run(DetachedStep.kill(token), become: become, timeout: .seconds(60)) { _, _ in }
        } catch {
            return DetachedShell.lostOrFailed(error)
        }
        guard let state = outcome.stateLine else {
            return .failed("the host's answer to the kill is not a step state: \(outcome.stderrTail)")
        }
        return DetachedShell.outcome(of: state, tails: nil)
    }

    public func cleanupDetached(run: String, olderThanDays: Int, become: Bool) async throws {
        let outcome = try await self.run(DetachedStep.cleanup(run: run, olderThanDays: olderThanDays), become: become, timeout: .seconds(60)) { _, _ in }
        guard outcome.exitStatus == 0 else {
            throw TransportError(.other, "cleaning the step records failed: exit \(outcome.exitStatus.map(String.init) ?? "?") \(outcome.stderrTail)")
        }
    }
}

extension StepOutcome {
    /// The protocol's state line, when it is the first line of the output (a query's, a
    /// kill's, a pruning's, a start's).
    public var stateLine: DetachedStep.State? { stdoutTail.split(separator: "\n").first.flatMap(DetachedStep.State.parse) }
}

/// The shell protocol's parsing side, for ``HostConnection``'s default detached execution.
enum DetachedShell {
    /// How much of each stream a followed step keeps for its outcome's tails.
    static let tailLimit = 64 * 1024

    /// Runs a start or attach line, passing the step's output on (without the protocol's
    /// state line, and without what an attach to an ended step repeats of what `offsets`
    /// says was received already), and says what became of the step.
    static func follow(_ line: String, token: DetachedStep.Token, stateLineFirst: Bool, offsets: (Int, Int), become: Bool,
                       timeout: Duration?, on connection: some HostConnection,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome {
        let passed = Passed(output)
        let filter = StreamFilter(stateLineFirst: stateLineFirst, offsets: offsets, output: passed.take)
        let outcome: StepOutcome
        do {
            outcome = try await connection.run(line, become: become, timeout: timeout) { kind, bytes in filter.take(kind, bytes) }
        } catch {
            return lostOrFailed(error)
        }
        if outcome.timedOut { return .timedOut }
        return await conclude(outcome, filter: filter, passed: passed, token: token, starting: false, become: become, on: connection)
    }

    /// What became of the step, from a start's or an attach's end: its state line, else
    /// its exit status, else (254, the protocol's own status, or none) a query.
    static func conclude(_ outcome: StepOutcome, filter: StreamFilter, passed: Passed,
                         token: DetachedStep.Token, starting: Bool, become: Bool, on connection: some HostConnection) async -> DetachedOutcome {
        filter.finish()
        let tails = passed.tails
        if let state = filter.state, state.phase != .running, state.phase != .ended {
            return self.outcome(of: state, tails: tails)
        }
        guard outcome.exitStatus == DetachedStep.protocolExit || outcome.exitStatus == nil else {
            return .ended(StepOutcome(exitStatus: outcome.exitStatus, exitSignal: filter.state?.signal.map { String($0) },
                                      stdoutTail: tails.stdout, stderrTail: tails.stderr, timedOut: filter.state?.timedOut ?? false))
        }
        // 254 (or no status): the step's own, a refusal, or a follow that ended early.
        let queried: StepOutcome
        do {
            queried = try await connection.run(DetachedStep.query(token), become: become, timeout: .seconds(60)) { _, _ in }
        } catch {
            return lostOrFailed(error)
        }
        guard let state = queried.stateLine else {
            return .failed("the host's answer is not a step state: \(outcome.stderrTail)\(queried.stderrTail)")
        }
        switch state.phase {
        case .never where starting:
            // The start line failed before making the record.
            return .failed("cannot start the step on the host: \(outcome.stderrTail.trimmingCharacters(in: .whitespacesAndNewlines))")
        case .running:
            // The follow ended while the step runs on (its tail died): follow it again.
            return .connectionLost("the step's output stopped arriving while it runs")
        default:
            return self.outcome(of: state, tails: tails)
        }
    }

    static func outcome(of state: DetachedStep.State, tails: (stdout: String, stderr: String)?) -> DetachedOutcome {
        switch state.phase {
        case .ended:
            return .ended(StepOutcome(exitStatus: state.exitStatus, exitSignal: state.signal.map { String($0) },
                                      stdoutTail: tails?.stdout ?? "", stderrTail: tails?.stderr ?? "", timedOut: state.timedOut))
        case .running: return .connectionLost("the step still runs")
        case .never: return .never
        case .lost: return .lost
        case .exists: return .exists
        }
    }

    static func lostOrFailed(_ error: any Error) -> DetachedOutcome {
        if let error = error as? TransportError, error.kind == .notStarted { return .notStarted(error.message) }
        if let error = error as? TransportError, error.kind == .connectionLost { return .connectionLost(error.message) }
        return .failed("\(error)")
    }

    /// How long a step runs before the controller follows its output live. Long enough that
    /// the steps of a busy fleet (hundreds of hosts on a controller's few cores, each step
    /// taking seconds there) end first: a follower is a second channel and host process per
    /// step, and at 1 s they took half of `bench-engine 200 20`'s time.
    static let followAfter: Duration = .seconds(10)

    /// Output passed on to the caller: how many bytes of each stream, and their tails (for
    /// the outcome, and the offsets a re-attach resumes from).
    final class Passed: Sendable {
        private let state = Mutex<(counts: [OutputKind: Int], tails: [OutputKind: [UInt8]])>(([:], [:]))
        private let output: @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void

        init(_ output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) { self.output = output }

        @Sendable func take(_ kind: OutputKind, _ bytes: UnsafeRawBufferPointer) {
            state.withLock { state in
                state.counts[kind, default: 0] += bytes.count
                state.tails[kind, default: []] += bytes
                let extra = state.tails[kind, default: []].count - DetachedShell.tailLimit
                if extra > 0 { state.tails[kind]!.removeFirst(extra) }
            }
            output(kind, bytes)
        }

        var counts: (stdout: Int, stderr: Int) { state.withLock { ($0.counts[.stdout, default: 0], $0.counts[.stderr, default: 0]) } }

        var tails: (stdout: String, stderr: String) {
            state.withLock { (String(decoding: $0.tails[.stdout, default: []], as: UTF8.self), String(decoding: $0.tails[.stderr, default: []], as: UTF8.self)) }
        }
    }

    /// Whether the live follower began: it begins only if the start has not ended first.
    final class Follower: Sendable {
        private enum Phase { case waiting, begun, ended }
        private let phase = Mutex(Phase.waiting)

        /// The follower's turn; false when the start ended first.
        func begin() -> Bool { phase.withLock { if $0 == .waiting { $0 = .begun; return true }; return false } }

        /// The start ended; whether the follower had begun.
        func end() -> Bool { phase.withLock { let begun = $0 == .begun; $0 = .ended; return begun } }
    }

    /// A start line's output, held until its end (when what the follower passed is known).
    final class Held: Sendable {
        private let chunks = Mutex<[(OutputKind, [UInt8])]>([])

        @Sendable func take(_ kind: OutputKind, _ bytes: UnsafeRawBufferPointer) { chunks.withLock { $0.append((kind, Array(bytes))) } }

        func replay(into take: (OutputKind, UnsafeRawBufferPointer) -> Void) {
            for (kind, bytes) in chunks.withLock({ $0 }) { bytes.withUnsafeBytes { take(kind, $0) } }
        }
    }

    /// Passes a start's or an attach's output on: holds it back until the state line (the
    /// first line of an attach's stdout) is read, then drops what an ended step's tail
    /// repeats of the bytes already received (its output goes through a ``Passed``, which
    /// keeps the tails).
    final class StreamFilter: Sendable {
        private struct Held {
            var stateLine: [UInt8] = []
            var state: DetachedStep.State?
            var decided: Bool
            var pending: [(OutputKind, [UInt8])] = []
            var skip: [OutputKind: Int] = [:]
        }

        private let held: Mutex<Held>
        private let offsets: (Int, Int)
        private let output: @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void

        init(stateLineFirst: Bool, offsets: (Int, Int), output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) {
            held = Mutex(Held(decided: !stateLineFirst))
            self.offsets = offsets
            self.output = output
        }

        var state: DetachedStep.State? { held.withLock { $0.state } }

        func take(_ kind: OutputKind, _ bytes: UnsafeRawBufferPointer) {
            let ready: [(OutputKind, [UInt8])] = held.withLock { held in
                var incoming = Array(bytes)
                if !held.decided {
                    if kind == .stdout {
                        guard let newline = incoming.firstIndex(of: UInt8(ascii: "\n")) else {
                            held.stateLine += incoming
                            return []
                        }
                        held.stateLine += incoming[..<newline]
                        incoming = Array(incoming[(newline + 1)...])
                        // A first line that is not a state line is the stream's own.
                        if !decide(&held) { incoming = held.stateLine + [UInt8(ascii: "\n")] + incoming }
                    } else {
                        held.pending.append((kind, incoming))
                        return []
                    }
                }
                held.pending.append((kind, incoming))
                return release(&held)
            }
            pass(ready)
        }

        /// The output ended: a state line without its newline is read now, and what was
        /// held back is passed on.
        func finish() {
            let ready: [(OutputKind, [UInt8])] = held.withLock { held in
                if !held.decided, !decide(&held) { held.pending.append((.stdout, held.stateLine)) }
                return release(&held)
            }
            pass(ready)
        }

        /// The held chunks, without what the controller has already.
        private func release(_ held: inout Held) -> [(OutputKind, [UInt8])] {
            let ready = held.pending
            held.pending = []
            return ready.compactMap { kind, chunk in
                let skipped = min(held.skip[kind, default: 0], chunk.count)
                held.skip[kind, default: 0] -= skipped
                let kept = Array(chunk.dropFirst(skipped))
                guard !kept.isEmpty else { return nil }
                return (kind, kept)
            }
        }

        private func pass(_ ready: [(OutputKind, [UInt8])]) {
            for (kind, chunk) in ready { chunk.withUnsafeBytes { output(kind, $0) } }
        }

        /// Reads the held first line as the state line; false when it is not one.
        @discardableResult
        private func decide(_ held: inout Held) -> Bool {
            held.decided = true
            held.state = DetachedStep.State.parse(String(decoding: held.stateLine, as: UTF8.self))
            // An ended step's tail starts `size - tailBytes` bytes in (or at 0): skip what
            // the controller has already.
            if let state = held.state, state.phase == .ended {
                for (kind, size, offset) in [(OutputKind.stdout, state.stdoutBytes, offsets.0), (.stderr, state.stderrBytes, offsets.1)] {
                    let tailStart = max(0, (size ?? 0) - DetachedStep.tailBytes)
                    held.skip[kind] = max(0, offset - tailStart)
                }
            }
            return held.state != nil
        }

    }
}

/// The removal of a run's records on a host by its last detached step's own line (see
/// ``DetachedStep/start(_:command:become:thenRemovingOlderThan:)``), so that the run needs
/// no cleanup command after it: the line, its output sent, waits for ``answer(_:)``, which
/// the engine gives once the journal holds the step's end (a controller that dies first
/// leaves the records to `resume`).
public final class RecordsRemoval: Sendable {
    /// How old another run's records are before the line removes them too.
    public let olderThanDays: Int
    private let reply = OneShot<Bool>()
    private let line = Mutex<Task<Int32?, Never>?>(nil)

    public init(olderThanDays: Int) { self.olderThanDays = olderThanDays }

    /// Runs `line` over `connection` until its output ends (or the line ends without
    /// waiting, or fails); the line goes on meanwhile, waiting for ``answer(_:)``. nil when
    /// the connection cannot answer this line: nothing ran.
    func run(_ line: String, become: Bool, timeout: Duration?, on connection: some HostConnection,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> Result<StepOutcome, any Error>? {
        let outputEnd = OneShot<Result<StepOutcome, any Error>?>()
        let reply = reply
        let task = Task { () -> Int32? in
            do {
                let ended = try await connection.run(line, become: become, timeout: timeout, output: output) { sofar in
                    outputEnd.set(.success(sofar))
                    // Only an ended step's line waits (a refused start has ended already).
                    let state = sofar.stateLine
                    guard state?.phase == .ended else { return nil }
                    return await reply.value ? "clean\n" : nil
                }
                outputEnd.set(ended.map { .success($0) })
                return ended?.exitStatus
            } catch {
                outputEnd.set(.failure(error))
                return nil
            }
        }
        self.line.withLock { $0 = task }
        return await outputEnd.value
    }

    /// Tells the host whether to remove the run's records (true once the journal holds
    /// the step's end) and waits for the line to end: whether it removed them. False when
    /// the line did not wait for an answer.
    public func answer(_ remove: Bool) async -> Bool {
        reply.set(remove)
        guard let task = line.withLock({ $0 }) else { return false }
        return await task.value == DetachedStep.removedExit
    }
}

/// Whether a session's shell may run a detached step itself (bash leading its own session,
/// as sshd starts it): yes until a start is declined, then no for the session's later
/// starts; and what its first short start line told of it (``DetachedStep/ShellFacts``).
public final class ShellRunner: Sendable {
    private let state = Mutex<(declined: Bool, facts: DetachedStep.ShellFacts?)>((false, nil))

    public init() {}

    /// Whether to send the short start line: no start of this session has declined it.
    var mayRun: Bool { !state.withLock { $0.declined } }

    func decline() { state.withLock { $0.declined = true } }

    /// The session's shell facts, once a short start line told them.
    var facts: DetachedStep.ShellFacts? { state.withLock { $0.facts } }

    func learn(_ facts: DetachedStep.ShellFacts) { state.withLock { $0.facts = facts } }
}

/// A value set once, awaited by any number of tasks.
final class OneShot<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, isSet: Bool, waiters: [CheckedContinuation<Value, Never>])>((nil, false, []))

    /// Sets the value; a value set before stays.
    func set(_ value: Value) {
        let waiters: [CheckedContinuation<Value, Never>] = state.withLock { state in
            guard !state.isSet else { return [] }
            state.value = value
            state.isSet = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    var value: Value {
        get async {
            await withCheckedContinuation { continuation in
                let value: Value?? = state.withLock { state in
                    if state.isSet { return .some(state.value) }
                    state.waiters.append(continuation)
                    return .none
                }
                if case .some(let value) = value { continuation.resume(returning: value!) }
            }
        }
    }
}
