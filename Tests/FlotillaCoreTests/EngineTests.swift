import Foundation
import Testing
@testable import FlotillaCore

/// The rolling engine over a fake transport, a manual clock and a real journal: every
/// test runs in milliseconds, and waits for events, never for time.
@Suite(.timeLimit(.minutes(1))) struct EngineTests {
    // MARK: Step kinds

    @Test func stepKindsKeepTheStringsJournalsHold() throws {
        let stored = #"{"name":"confirm stopped","command":"st2ctl status","kind":"confirm-stopped","become":true}"#
        let step = try JSONDecoder().decode(RunStep.self, from: Data(stored.utf8))
        #expect(step.kind == .confirmStopped)
        let encoded = String(decoding: try JSONEncoder().encode(step), as: UTF8.self)
        #expect(encoded.contains(#""kind":"confirm-stopped""#))
        let kinds: [StepKind] = [.backupKeyValue, .fetchAuditLogs, .stop, .confirmStopped, .upgradePackages, .mistralDB, .migration,
                                 .reload, .start, .verifyVersion, .verifyServices, .command, .health]
        #expect(kinds.map(\.rawValue) == ["backup-kv", "fetch-audit-logs", "stop", "confirm-stopped", "upgrade-packages", "mistral-db",
                                          "migration", "reload", "start", "verify-version", "verify-services", "command", "health"])
        // A kind this flotilla does not know still opens, and is written back as it was.
        let unknown = try JSONDecoder().decode(RunStep.self, from: Data(#"{"name":"x","command":"x","kind":"stop-services","become":false}"#.utf8))
        #expect(unknown.kind.rawValue == "stop-services")
        #expect(String(decoding: try JSONEncoder().encode(unknown), as: UTF8.self).contains(#""kind":"stop-services""#))
    }

    @Test func plannedStepsAndRunStepsShareTheirKinds() {
        let planned = PlanStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped)
        let run = RunStep(name: planned.name, command: planned.command, kind: planned.kind)
        #expect(run.kind == StepKind.confirmStopped && RunStep(name: "n", command: "c").kind == .command)
    }

    // MARK: Order

    @Test func stepsRunInOrderAndTheCanaryBatchFirst() async throws {
        let run = try EngineHarness(hosts: ["a", "b", "c"].map { host($0, ["one", "two"]) }, batches: [[0], [1, 2]],
                                    policy: { $0.canary = true })
        #expect(await run.run() == .succeeded)
        for index in 0..<3 { #expect(run.transport.commands(index) == ["one", "two"]) }
        let ran = run.transport.ran
        let lastOfCanary = try #require(ran.lastIndex { $0.host == 0 })
        #expect(ran.prefix(through: lastOfCanary).allSatisfy { $0.host == 0 })
        let state = try await run.state()
        #expect(state.state == .succeeded)
        #expect(state.hosts.map(\.status) == [.succeeded, .succeeded, .succeeded])
        #expect(state.hosts.allSatisfy { $0.steps.allSatisfy { $0.status == .succeeded && $0.attempts == 1 } })
        #expect(state.batches.allSatisfy { $0.startedAt != nil && $0.finishedAt != nil })
    }

    // MARK: Halts

    @Test func maxFailHaltsAndNoHostStartsAfterIt() async throws {
        let run = try EngineHarness(hosts: ["a", "b", "c", "d"].map { host($0, ["one", "two"]) }, batches: [[0, 1], [2, 3]])
        run.transport.script(0, "one", .exit(1, stderr: "disk full"))
        let outcome = await run.run()
        guard case .halted(let reason) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.contains("max-fail 0 exceeded"))
        #expect(!run.transport.events.all.contains { $0 == .connected(host: 2, session: 3) || $0 == .connected(host: 3, session: 3) })
        #expect(run.transport.commands(2).isEmpty && run.transport.commands(3).isEmpty)
        let state = try await run.state()
        #expect(state.state == .halted && state.haltReason == reason)
        #expect(state.hosts.map(\.status) == [.failed, .succeeded, .notStarted, .notStarted])
        #expect(state.hosts[0].error == "step 'one' failed: exit 1: disk full")
        #expect(state.hosts[0].steps.map(\.status) == [.failed, .pending])
        #expect(state.hosts[0].steps[0].exitStatus == 1)
        #expect(state.events.contains { $0.kind == "halt" && $0.message == reason })
    }

    /// Host b is in its first step when a fails; the halt lets it finish (drain) or stops
    /// it after that step (stop).
    @Test(arguments: [RolloutPolicy.OnHalt.drain, .stop])
    func onHaltDecidesWhatHostsInFlightDo(onHalt: RolloutPolicy.OnHalt) async throws {
        let run = try EngineHarness(hosts: ["a", "b", "c"].map { host($0, ["one", "two"]) }, batches: [[0, 1], [2]],
                                    policy: { $0.onHalt = onHalt })
        run.transport.script(0, "one", .exit(1))
        run.transport.script(1, "one", .hang)
        let task = await run.start()
        await run.transport.events.first { $0 == .hanging(host: 1, command: "one") }
        await run.progress.first { if case .note(let text) = $0 { text.hasPrefix("halting:") } else { false } }
        run.transport.release(1, "one")
        guard case .halted = await task.value else { Issue.record("not halted"); return }
        let state = try await run.state()
        switch onHalt {
        case .drain:
            #expect(run.transport.commands(1) == ["one", "two"])
            #expect(state.hosts[1].status == .succeeded)
        case .stop:
            #expect(run.transport.commands(1) == ["one"])
            #expect(state.hosts[1].status == .cancelled)
            #expect(state.hosts[1].error == "stopped before 'two' (--on-halt stop)")
            #expect(state.hosts[1].steps.map(\.status) == [.succeeded, .pending])
        }
        #expect(run.transport.commands(2).isEmpty && state.hosts[2].status == .notStarted)
    }

    // MARK: Operator commands

    @Test func pauseHoldsTheNextBatchUntilContinue() async throws {
        let run = try EngineHarness(hosts: ["a", "b"].map { host($0, ["one"]) }, batches: [[0], [1]])
        run.transport.script(0, "one", .hang)
        let task = await run.start()
        await run.transport.events.first { $0 == .hanging(host: 0, command: "one") }
        await run.engine.send(.pause)
        run.transport.release(0, "one")
        let finished = await run.handled.first { if case .hostFinished(0, _, _) = $0.event { true } else { false } }
        #expect(finished.actions.isEmpty)
        #expect(run.transport.commands(1).isEmpty)
        await run.engine.send(.resume)
        let resumed = await run.handled.first { $0.event == .resume }
        #expect(resumed.actions == [.start(1)])
        #expect(await task.value == .succeeded)
        #expect(run.transport.commands(1) == ["one"])
    }

    @Test func skipKeepsAHostFromEverStarting() async throws {
        let run = try EngineHarness(hosts: ["a", "b", "c"].map { host($0, ["one"]) }, batches: [[0], [1, 2]])
        run.transport.script(0, "one", .hang)
        let task = await run.start()
        await run.transport.events.first { $0 == .hanging(host: 0, command: "one") }
        await run.engine.send(.skip(1))
        run.transport.release(0, "one")
        #expect(await task.value == .succeeded)
        #expect(!run.transport.events.all.contains { if case .connected(1, _) = $0 { true } else { false } })
        let state = try await run.state()
        #expect(state.hosts.map(\.status) == [.succeeded, .skipped, .succeeded])
        #expect(state.hosts[1].error == "skipped by the operator (flotilla ctl skip)")
        #expect(state.hosts[1].steps.map(\.status) == [.pending])
    }

    // MARK: Once per cluster

    @Test func aOncePerClusterStepRunsOnOneHostOfEachCluster() async throws {
        let steps = [RunStep(name: "prepare", command: "prepare"),
                     RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster"),
                     RunStep(name: "finish", command: "finish")]
        let clusters = ["blue", "blue", "blue", "green"]
        let hosts = clusters.enumerated().map { host("h\($0)", steps: steps, groups: ["st2_cluster": $1]) }
        let run = try EngineHarness(hosts: hosts, batches: [[0, 1, 2, 3]], policy: { $0.maxParallel = 4 })
        #expect(await run.run() == .succeeded)
        let blueRunners = (0..<3).filter { run.transport.commands($0).contains("migrate") }
        #expect(blueRunners.count == 1)
        #expect(run.transport.commands(3) == ["prepare", "migrate", "finish"])
        let state = try await run.state()
        #expect(state.hosts.allSatisfy { $0.status == .succeeded && $0.steps[2].status == .succeeded })
        let runner = try #require(blueRunners.first)
        for index in 0..<3 where index != runner {
            #expect(run.transport.commands(index) == ["prepare", "finish"])
            #expect(state.hosts[index].steps[1].status == .skipped)
            #expect(state.hosts[index].steps[1].error == "done on h\(runner) (once per st2_cluster)")
        }
        #expect(Set(state.clusterSteps.map { "\($0.value)=\($0.host)" }) == ["blue=h\(runner)", "green=h3"])
    }

    // MARK: Sessions (read-only steps: plain commands over the session)

    /// Steps of a read-only kind, which run as plain commands (not detached).
    /// (`verify-version` expecting empty stdout: judged as a plain command would be; the
    /// backup kinds wrap their command and keep its stdout.)
    func readOnly(_ commands: [String]) -> [RunStep] { commands.map { RunStep(name: $0, command: $0, kind: .verifyVersion, expect: "") } }

    @Test func aSessionLostBetweenStepsIsReopenedAndTheStepRunsOnce() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: readOnly(["one", "two", "three"]))], batches: [[0]])
        run.transport.script(0, "two", .notStarted)
        #expect(await run.run() == .succeeded)
        #expect(run.transport.commands(0) == ["one", "two", "three"])
        let sessions = run.transport.events.all.filter { if case .connected = $0 { true } else if case .closed = $0 { true } else { false } }
        #expect(sessions == [.connected(host: 0, session: 1), .closed(host: 0, session: 1),
                             .connected(host: 0, session: 2), .closed(host: 0, session: 2)])
        let state = try await run.state()
        #expect(state.hosts[0].steps.map(\.attempts) == [1, 1, 1])
        #expect(try run.log("a").contains("the session was lost before 'two' started"))
    }

    @Test func aSessionThatCannotBeReopenedFailsTheHost() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: readOnly(["one", "two"]))], batches: [[0]])
        run.transport.script(0, "two", .notStarted)
        run.transport.scriptConnect(0, .open, .refused(retryable: false))
        #expect(await run.run() != .succeeded)
        let state = try await run.state()
        #expect(state.hosts[0].status == .failed)
        #expect(state.hosts[0].error == "step 'two' failed: lost the connection before 'two' and could not reconnect: connection refused")
        #expect(run.transport.commands(0) == ["one"])
    }

    /// A read-only step cut off fails its host; only detached steps are re-attached.
    @Test func aStepCutMidwayFailsTheHostAndIsNotRetried() async throws {
        // --max-fail 100%: failures end the run complete, not halted (the whole-batch rule is waived).
        let run = try EngineHarness(hosts: [host("a", steps: readOnly(["one", "two", "three"]))], batches: [[0]], policy: { $0.maxFail = .percent(100) })
        run.transport.script(0, "two", .lost)
        #expect(await run.run() == .completedWithFailures)
        #expect(run.transport.commands(0) == ["one", "two"])
        // The broken session is closed once, and no other is opened.
        let sessions = run.transport.events.all.filter { if case .connected = $0 { true } else if case .closed = $0 { true } else { false } }
        #expect(sessions == [.connected(host: 0, session: 1), .closed(host: 0, session: 1)])
        let state = try await run.state()
        #expect(state.hosts[0].status == .failed)
        #expect(state.hosts[0].error == "step 'two' failed: the connection was lost during the step: connection reset by peer")
        #expect(state.hosts[0].steps.map(\.status) == [.succeeded, .failed, .pending])
    }

    @Test func anUnreachableHostCountsAsAFailure() async throws {
        let run = try EngineHarness(hosts: ["a", "b"].map { host($0, ["one"]) }, batches: [[0, 1]])
        run.transport.scriptConnect(0, .refused(retryable: false))
        let outcome = await run.run()
        guard case .halted(let reason) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.contains("1 unreachable"))
        let state = try await run.state()
        #expect(state.hosts[0].status == .unreachable && state.hosts[0].error == "connection refused")
        #expect(run.transport.commands(0).isEmpty)
    }

    @Test func retryableConnectFailuresBackOffOnTheClock() async throws {
        let run = try EngineHarness(hosts: [host("a", ["one"])], batches: [[0]], settings: { $0.reconnectBackoff = 1 })
        run.transport.scriptConnect(0, .refused(retryable: true), .refused(retryable: true))
        let task = await run.start()
        await run.endSleeps(at: [1.0, 3.0]) // 1 s, then 2 s more
        #expect(await task.value == .succeeded)
        #expect(run.transport.commands(0) == ["one"])
        let log = try run.log("a")
        #expect(log.contains("retry 1 of 3 in 1.0 s") && log.contains("retry 2 of 3 in 2.0 s"))
    }

    @Test func aHostStillRefusingAfterTheRetriesIsUnreachable() async throws {
        let run = try EngineHarness(hosts: [host("a", ["one"])], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.reconnectAttempts = 2 })
        run.transport.scriptConnect(0, .refused(retryable: true), .refused(retryable: true), .refused(retryable: true))
        let task = await run.start()
        await run.endSleeps(at: [1.0, 3.0])
        #expect(await task.value == .completedWithFailures)
        #expect(run.transport.events.all.filter { $0 == .refused(host: 0) }.count == 3)
        #expect(try await run.state().hosts[0].status == .unreachable)
    }

    // MARK: Resume

    @Test func aResumeRunsNoFinishedStepAgainAndReRunsTheOneInFlight() async throws {
        let started = Date(timeIntervalSince1970: 1_700_000_000)
        var done: [Int: Set<Int>] = [:]
        let run = try EngineHarness(hosts: [host("a", ["one", "two", "three"])], batches: [[0]], resume: { journal in
            // What a controller killed during step two left behind.
            try journal.runStatus(state: .running, haltReason: nil, at: started)
            try journal.batchStarted(index: 0, at: started)
            try journal.hostStatus(host: "a", status: .running, error: nil, at: started)
            try journal.stepStarted(host: "a", step: 0, at: started)
            try journal.stepFinished(host: "a", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "", stderrTail: "",
                                     error: nil, at: started, durationMS: 1)
            try journal.stepStarted(host: "a", step: 1, at: started)
            done = EngineHarness.doneSteps(try journal.load())
            return done
        })
        #expect(done == [0: [0]])
        #expect(await run.run() == .succeeded)
        #expect(run.transport.commands(0) == ["two", "three"])
        let state = try await run.state()
        #expect(state.hosts[0].status == .succeeded)
        #expect(state.hosts[0].steps.map(\.status) == [.succeeded, .succeeded, .succeeded])
        #expect(state.hosts[0].steps.map(\.attempts) == [1, 2, 1])
    }

    // MARK: Time

    @Test func thePauseBetweenBatchesWaitsOnTheClock() async throws {
        let run = try EngineHarness(hosts: ["a", "b"].map { host($0, ["one"]) }, batches: [[0], [1]], policy: { $0.pause = 60 })
        let start = run.clock.now
        let task = await run.start()
        await run.clock.sleeps.first { $0 == start.addingTimeInterval(60) }
        #expect(run.transport.commands(1).isEmpty)
        run.clock.advance(by: 60)
        #expect(await task.value == .succeeded)
        let state = try await run.state()
        #expect(state.batches[1].startedAt == start.addingTimeInterval(60))
    }

    @Test func aHealthCheckPassesOnceHealthyForLongEnough() async throws {
        let steps = [RunStep(name: "one", command: "one"), RunStep(name: "health check", command: "curl", kind: .health)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]], settings: {
            $0.healthyFor = 10
            $0.healthInterval = 3
        })
        run.transport.script(0, "curl", .exit(0), .exit(7), .exit(0), .exit(0), .exit(0), .exit(0))
        let task = await run.start()
        // Run every 3 s: passing at 0, failing at 3, passing from 6 on, so healthy for 10 s
        // at the 7th run, at 18.
        await run.endSleeps(at: Array(stride(from: 3.0, through: 18, by: 3)))
        #expect(await task.value == .succeeded)
        #expect(run.transport.commands(0) == ["one"] + Array(repeating: "curl", count: 7))
    }

    @Test func aHealthCheckFailsAtItsDeadline() async throws {
        let steps = [RunStep(name: "health check", command: "curl", kind: .health)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]], policy: { $0.maxFail = .percent(100) }, settings: {
            $0.healthDeadline = 5
            $0.healthInterval = 3
        })
        run.transport.script(0, "curl", .exit(7), .exit(7), .exit(7))
        let task = await run.start()
        await run.endSleeps(at: [3.0, 6.0])
        #expect(await task.value == .completedWithFailures)
        let state = try await run.state()
        #expect(state.hosts[0].error == "step 'health check' failed: health check did not pass within 5 s (last exit 7)")
        #expect(state.hosts[0].steps[0].durationMS == 6000)
    }

    // MARK: Plain commands

    @Test func aStepPastItsTimeoutFails() async throws {
        let run = try EngineHarness(hosts: [host("a", steps: readOnly(["one", "two"]))], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.stepTimeout = 5 })
        run.transport.script(0, "one", .timedOut)
        #expect(await run.run() == .completedWithFailures)
        let state = try await run.state()
        #expect(state.hosts[0].error == "step 'one' failed: timed out after 5 s (channel closed)")
        #expect(run.transport.commands(0) == ["one"])
    }

    // MARK: StackStorm steps

    static let statusRunning = "##### st2 components status #####\nst2api PID: 123\nst2auth is not running.\n"
    static let statusStopped = "##### st2 components status #####\nst2api is not running.\nst2auth is not running.\n"

    @Test(arguments: [false, true]) func confirmStoppedJudgesWhatStillRuns(forceStop: Bool) async throws {
        let steps = [RunStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.forceStop = forceStop })
        run.transport.script(0, "st2ctl status", .exit(0, stdout: Self.statusRunning), .exit(0, stdout: Self.statusStopped))
        let outcome = await run.run()
        let state = try await run.state()
        if forceStop {
            #expect(outcome == .succeeded)
            #expect(run.transport.commands(0) == ["st2ctl status", St2Process.psCommand, "kill -9 123 2>/dev/null; true", "st2ctl status", St2Process.psCommand])
        } else {
            #expect(outcome == .completedWithFailures)
            #expect(state.hosts[0].error == "step 'confirm stopped' failed: still running after st2ctl stop: st2api (stop them, or rerun with --force-stop)")
            #expect(run.transport.commands(0) == ["st2ctl status", St2Process.psCommand])
        }
    }

    static let psLeftover = "  1 /usr/sbin/sshd -D\n812 /opt/stackstorm/st2/bin/python /opt/stackstorm/st2/bin/st2sensorcontainer --config-file /etc/st2/st2.conf\n"

    @Test(arguments: [false, true]) func confirmStoppedAlsoFindsProcessesTheStatusMisses(forceStop: Bool) async throws {
        let steps = [RunStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.forceStop = forceStop })
        run.transport.script(0, "st2ctl status", .exit(0, stdout: Self.statusStopped), .exit(0, stdout: Self.statusStopped))
        run.transport.script(0, St2Process.psCommand, .exit(0, stdout: Self.psLeftover), .exit(0, stdout: ""))
        let outcome = await run.run()
        let state = try await run.state()
        if forceStop {
            #expect(outcome == .succeeded)
            #expect(run.transport.commands(0) == ["st2ctl status", St2Process.psCommand, "kill -9 812 2>/dev/null; true", "st2ctl status", St2Process.psCommand])
        } else {
            #expect(outcome == .completedWithFailures)
            #expect(state.hosts[0].error == "step 'confirm stopped' failed: st2 processes left after st2ctl stop that st2ctl status does not list: "
                    + "st2sensorcontainer (pid 812) (stop them, or rerun with --force-stop)")
        }
    }

    @Test func forceStopFailsWhenAProcessSurvives() async throws {
        let steps = [RunStep(name: "confirm stopped", command: "st2ctl status", kind: .confirmStopped)]
        let run = try EngineHarness(hosts: [host("a", steps: steps)], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.forceStop = true })
        run.transport.script(0, "st2ctl status", .exit(0, stdout: Self.statusStopped), .exit(0, stdout: Self.statusStopped))
        run.transport.script(0, St2Process.psCommand, .exit(0, stdout: Self.psLeftover), .exit(0, stdout: Self.psLeftover))
        #expect(await run.run() == .completedWithFailures)
        let state = try await run.state()
        #expect(state.hosts[0].error == "step 'confirm stopped' failed: --force-stop: still running after kill -9: st2sensorcontainer (pid 812)")
    }

    @Test func aKnownMistralFailureIsExplainedAndOnlyForItsKind() async throws {
        let steps = [RunStep(name: "plain", command: "plain"), RunStep(name: "mistral db", command: "mistral-db-manage", kind: .mistralDB)]
        let failure = RolloutEngine.KnownFailure(stepKind: .mistralDB, match: "relation x already exists", explanation: "see the recovery notes")
        let hosts = [host("a", steps: [steps[1]]), host("b", steps: [steps[0]])]
        let run = try EngineHarness(hosts: hosts, batches: [[0, 1]], policy: { $0.maxFail = .percent(100) },
                                    settings: { $0.knownFailures = [failure] })
        run.transport.script(0, "mistral-db-manage", .exit(1, stderr: #"ERROR: relation "x" already exists"#))
        run.transport.script(1, "plain", .exit(1, stderr: #"ERROR: relation "x" already exists"#))
        #expect(await run.run() == .completedWithFailures)
        let state = try await run.state()
        #expect(state.hosts[0].error == "step 'mistral db' failed: exit 1: see the recovery notes")
        #expect(state.hosts[1].error == #"step 'plain' failed: exit 1: ERROR: relation "x" already exists"#)
    }
}
