import Foundation
import Testing
@testable import FlotillaCore

/// Every step exactly once (SPEC §8.1), over the fake transport, whose hosts keep their
/// detached steps going whatever becomes of the connections: re-attached after a lost
/// connection and on resume, never run twice; unknown when the host lost its record;
/// killed on the host at its timeout; left running by a second SIGINT.
@Suite(.timeLimit(.minutes(1))) struct DetachedEngineTests {
    static let run = "20260101-000000-e001"

    func token(_ host: String, _ step: Int, attempt: Int = 1) -> DetachedStep.Token {
        DetachedStep.Token(run: Self.run, host: host, step: step, attempt: attempt)
    }

    @Test func readOnlyKindsRunPlainAndEveryOtherKindDetached() {
        #expect(StepKind.readOnly == [.health, .preflight, .confirmStopped, .verifyVersion, .verifyServices, .backupKeyValue, .backupFiles, .fetchAuditLogs])
        let detached: [StepKind] = [.command, .stop, .upgradePackages, .mistralDB, .migration, .reload, .start, "a-kind-from-elsewhere"]
        #expect(detached.allSatisfy { $0.runsDetached })
    }

    @Test func aStepCutMidwayIsReattachedAndRunsOnce() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two", "three"])], batches: [[0]])
        harness.transport.script(0, "two", .hang)
        let task = await harness.start()
        await harness.transport.events.first { $0 == .hanging(host: 0, command: "two") }
        harness.transport.cut(0)
        await harness.transport.events.first { $0 == .attached(host: 0, command: "two") }
        harness.transport.release(0, "two", stdout: "migrated\n")
        #expect(await task.value == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two", "three"])
        let state = try await harness.state()
        let step = state.hosts[0].steps[1]
        #expect(step.status == .succeeded && step.attempts == 1 && step.reattached == 1)
        #expect(step.token == token("a", 1).path && step.stdoutTail == "migrated\n")
        #expect(state.hosts[0].steps.map(\.reattached) == [0, 1, 0])
        let sessions = harness.transport.events.all.filter { if case .connected = $0 { true } else if case .closed = $0 { true } else { false } }
        #expect(sessions == [.connected(host: 0, session: 1), .closed(host: 0, session: 1),
                             .connected(host: 0, session: 2), .closed(host: 0, session: 2)])
        #expect(try harness.log("a").contains("re-attached to 'two'"))
        // The host's records of the run are removed once the host is done.
        #expect(harness.transport.events.all.contains(.cleaned(host: 0, run: Self.run, become: false)))
        #expect(!harness.transport.hasRecord(0, token("a", 1)))
    }

    @Test func aStepThatEndedWhileDisconnectedIsRecordedWithoutRunningAgain() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]], policy: { $0.maxFail = .percent(100) })
        harness.transport.script(0, "one", .cut(.exit(3, stdout: "half\n", stderr: "dpkg: error\n")))
        #expect(await harness.run() == .completedWithFailures)
        #expect(harness.transport.commands(0) == ["one"])
        let state = try await harness.state()
        #expect(state.hosts[0].steps[0].status == .failed && state.hosts[0].steps[0].exitStatus == 3)
        #expect(state.hosts[0].steps[0].reattached == 1 && state.hosts[0].steps[0].attempts == 1)
        #expect(state.hosts[0].error == "step 'one' failed: exit 3: dpkg: error")
    }

    @Test func aStepTheHostNeverSawRunsOnce() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]])
        harness.transport.script(0, "one", .unseen)
        #expect(await harness.run() == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two"])
        let state = try await harness.state()
        #expect(state.hosts[0].steps.map(\.attempts) == [1, 1] && state.hosts[0].steps.map(\.reattached) == [0, 0])
        #expect(try harness.log("a").contains("the host never saw 'one'"))
    }

    @Test func aStepWhoseSessionWasGoneIsStartedOverANewOneOrFailsUnstarted() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]])
        harness.transport.script(0, "two", .notStarted)
        #expect(await harness.run() == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two"])
        #expect(!harness.transport.events.all.contains { if case .attached = $0 { true } else { false } })
        #expect(try harness.log("a").contains("the session was lost before 'two' started"))

        let refused = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]])
        refused.transport.script(0, "two", .notStarted)
        refused.transport.scriptConnect(0, .open, .refused(retryable: false))
        #expect(await refused.run() != .succeeded)
        let state = try await refused.state()
        #expect(state.hosts[0].error == "step 'two' failed: lost the connection before 'two' and could not reconnect: connection refused")
        #expect(state.hosts[0].steps[1].status == .failed && refused.transport.commands(0) == ["one"])
    }

    /// A connection cut every time the step starts (the host never sees it): given up
    /// after the reconnect attempts, the host failed, nothing ran.
    @Test func aStartCutEveryTimeIsGivenUp() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one"])], batches: [[0]], policy: { $0.maxFail = .percent(100) })
        harness.transport.script(0, "one", .unseen, .unseen, .unseen, .unseen, .unseen)
        #expect(await harness.run() == .completedWithFailures)
        let state = try await harness.state()
        #expect(state.hosts[0].error == "step 'one' failed: the connection was lost during the step each time it started (4 times); the host never ran it")
        #expect(harness.transport.commands(0).isEmpty)
    }

    @Test func aStepTheHostLostIsUnknownAndRunsAgainOnlyWithRerunUnknown() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two", "three"])], batches: [[0]], policy: { $0.maxFail = .percent(100) })
        harness.transport.script(0, "two", .reboot)
        #expect(await harness.run() == .completedWithFailures)
        #expect(harness.transport.commands(0) == ["one", "two"])
        let state = try await harness.state()
        #expect(state.hosts[0].status == .failed)
        #expect(state.hosts[0].steps.map(\.status) == [.succeeded, .unknown, .pending])
        let error = try #require(state.hosts[0].error)
        #expect(error.hasPrefix("step 'two' is unknown: the host cannot account for the step"))
        #expect(error.hasSuffix("run `flotilla resume --rerun-unknown` after checking the host"))

        // Without the flag (even with --retry-failed) the host stays failed and nothing runs.
        let plain = try ResumePlan(state, retryFailed: true, maxFail: nil)
        #expect(plain.preset[0] == .failed && plain.retried.isEmpty && plain.unknown == ["a: two"])
        let again = try ResumePlan(state, retryFailed: false, maxFail: nil, rerunUnknown: true)
        #expect(again.retried == ["a"] && again.preset[0] == nil && again.done[0] == [0])

        let resumed = try EngineHarness(resuming: harness, rerunUnknown: true, policy: { $0.maxFail = .percent(100) })
        #expect(await resumed.run() == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two", "two", "three"])
        let after = try await resumed.state()
        #expect(after.hosts[0].status == .succeeded)
        #expect(after.hosts[0].steps.map(\.attempts) == [1, 2, 1])
        #expect(after.hosts[0].steps[1].token == token("a", 1, attempt: 2).path)
    }

    @Test func aStepPastItsTimeoutIsKilledOnTheHost() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]], policy: { $0.maxFail = .percent(100) },
                                        settings: { $0.stepTimeout = 5 })
        harness.transport.script(0, "one", .timedOut)
        #expect(await harness.run() == .completedWithFailures)
        #expect(harness.transport.events.all.contains(.killed(host: 0, command: "one")))
        #expect(harness.transport.commands(0) == ["one"])
        let state = try await harness.state()
        #expect(state.hosts[0].error == "step 'one' failed: timed out after 5 s (killed on the host)")
        #expect(state.hosts[0].steps[0].exitStatus == 143)
    }

    /// What a controller killed during step two left: the step recorded running with its
    /// token; on the host it still runs (or it ended meanwhile).
    @Test(arguments: [false, true]) func aResumeAfterACrashReattachesInsteadOfRunningAgain(endedMeanwhile: Bool) async throws {
        let started = Date(timeIntervalSince1970: 1_700_000_000)
        let harness = try EngineHarness(hosts: [host("a", ["one", "two", "three"])], batches: [[0]], resume: { journal in
            try journal.runStatus(state: .running, haltReason: nil, at: started)
            try journal.hostStatus(host: "a", status: .running, error: nil, at: started)
            try journal.stepStarted(host: "a", step: 0, at: started, detached: true)
            try journal.stepFinished(host: "a", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "", stderrTail: "",
                                     error: nil, at: started, durationMS: 1)
            #expect(try journal.stepStarted(host: "a", step: 1, at: started, detached: true) == 1)
            return EngineHarness.doneSteps(try journal.load())
        }, reattach: { journal in try ResumePlan(try journal.load(), retryFailed: false, maxFail: nil).reattach })
        harness.transport.seedDetached(0, token("a", 1), command: "two", ended: endedMeanwhile ? StepOutcome(exitStatus: 0, stdoutTail: "ok\n") : nil)
        let task = await harness.start()
        if !endedMeanwhile {
            await harness.transport.events.first { $0 == .attached(host: 0, command: "two") }
            harness.transport.release(0, "two", stdout: "ok\n")
        }
        #expect(await task.value == .succeeded)
        #expect(harness.transport.commands(0) == ["three"])
        let state = try await harness.state()
        #expect(state.hosts[0].steps.map(\.status) == [.succeeded, .succeeded, .succeeded])
        #expect(state.hosts[0].steps.map(\.attempts) == [1, 1, 1])
        #expect(state.hosts[0].steps[1].reattached == 1 && state.hosts[0].steps[1].stdoutTail == "ok\n")
    }

    @Test func aSecondSignalLeavesTheStepRunningAndResumeRecordsIt() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]])
        harness.transport.script(0, "one", .hang)
        _ = await harness.start()
        await harness.transport.events.first { $0 == .hanging(host: 0, command: "one") }
        try await harness.engine.stopAtOnce(reason: "SIGINT twice")
        #expect(!harness.transport.events.all.contains { if case .killed = $0 { true } else { false } })
        #expect(harness.transport.hasRecord(0, token("a", 0)))
        let stopped = try await harness.state()
        #expect(stopped.state == .stopped && stopped.hosts[0].steps[0].status == .running)
        #expect(stopped.hosts[0].steps[0].token == token("a", 0).path)

        let resumed = try EngineHarness(resuming: harness)
        let task = await resumed.start()
        await harness.transport.events.first { $0 == .attached(host: 0, command: "one") }
        harness.transport.release(0, "one")
        #expect(await task.value == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two"])
        let state = try await resumed.state()
        #expect(state.hosts[0].steps.map(\.attempts) == [1, 1] && state.hosts[0].steps[0].reattached == 1)
    }

    @Test func aSessionThatCannotBeReopenedLeavesTheStepInFlightForResume() async throws {
        let harness = try EngineHarness(hosts: [host("a", ["one", "two"])], batches: [[0]], policy: { $0.maxFail = .percent(100) })
        harness.transport.script(0, "one", .cut(.hang))
        harness.transport.scriptConnect(0, .open, .refused(retryable: false))
        #expect(await harness.run() == .completedWithFailures)
        let state = try await harness.state()
        #expect(state.hosts[0].status == .failed && state.hosts[0].steps[0].status == .running)
        #expect(state.hosts[0].error?.hasSuffix("`flotilla resume --retry-failed` re-attaches to it") == true)

        let resumed = try EngineHarness(resuming: harness, retryFailed: true)
        let task = await resumed.start()
        await harness.transport.events.first { $0 == .attached(host: 0, command: "one") }
        harness.transport.release(0, "one")
        #expect(await task.value == .succeeded)
        #expect(harness.transport.commands(0) == ["one", "two"])
    }

    /// A once-per-cluster step's result and its done-marker are one transaction: when the
    /// marker cannot be written, the step is not recorded done either.
    @Test func aClusterStepAndItsMarkerAreOneTransaction() async throws {
        let steps = [RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster")]
        let harness = try EngineHarness(hosts: ["a", "b"].map { host($0, steps: steps, groups: ["st2_cluster": "blue"]) }, batches: [[0, 1]])
        let journal = try Journal.open(at: harness.journalLocation, runID: Self.run)
        let at = Date(timeIntervalSince1970: 1_700_000_000)
        try journal.stepStarted(host: "a", step: 0, at: at, detached: true)
        try journal.clusterStepDone(group: "st2_cluster", value: "blue", step: steps[0].clusterKey, byHost: "b", at: at)
        let mark = Journal.ClusterMark(group: "st2_cluster", value: "blue", step: steps[0].clusterKey)
        #expect(throws: JournalError.self) {
            try journal.stepFinished(host: "a", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "", stderrTail: "",
                                     error: nil, at: at, durationMS: 1, cluster: mark)
        }
        let state = try journal.load()
        #expect(state.hosts[0].steps[0].status == .running)
        #expect(state.clusterSteps.map(\.host) == ["b"])
        // Both, when the marker can be written.
        try journal.stepStarted(host: "b", step: 0, at: at, detached: true)
        try journal.stepFinished(host: "b", step: 0, status: .succeeded, exitStatus: 0, stdoutTail: "", stderrTail: "",
                                 error: nil, at: at, durationMS: 1, cluster: mark)
        #expect(try journal.load().hosts[1].steps[0].status == .succeeded)
    }
}
