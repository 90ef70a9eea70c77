import Foundation
import Testing
@testable import FlotillaCore

/// Barriers on the fake transport (SPEC §8.2's whole clusters): hosts of a group meet
/// before a step, all or nothing, and a resume goes past the barriers already passed.
@Suite(.timeLimit(.minutes(1))) struct BarrierEngineTests {
    static func meet(_ name: String) -> [Barrier] { [Barrier(group: "st2_cluster", name: name)] }

    /// A whole cluster's node: a backup, then stop, the database step once per cluster,
    /// start; barriers before stop, before the database step and after it.
    static let steps = [
        RunStep(name: "backup", command: "backup"),
        RunStep(name: "stop", command: "stop", barriers: meet("stop 1")),
        RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster", barriers: meet("database 1")),
        RunStep(name: "start", command: "start", barriers: meet("services 1")),
    ]

    static func cluster(_ count: Int, steps: [RunStep] = steps) -> [RunHost] {
        (0..<count).map { host("n\($0)", steps: steps, groups: ["st2_cluster": "c1"]) }
    }

    @Test func noNodeStopsBeforeEveryNodeIsBackedUpNorStartsWhileTheDatabaseStepRuns() async throws {
        let run = try EngineHarness(hosts: Self.cluster(3), batches: [[0, 1, 2]], policy: { $0.startTogether = [[0, 1, 2]] })
        run.transport.script(2, "backup", .hang)
        for node in 0..<3 { run.transport.script(node, "migrate", .hang) }
        let task = await run.start()
        await run.transport.events.first { $0 == .hanging(host: 2, command: "backup") }
        for node in ["n0", "n1"] {
            await run.progress.first { if case .stepFinished(host: node, step: "backup", _, _) = $0 { true } else { false } }
        }
        // n0 and n1 are done with their backup; without the barrier they would stop now.
        #expect(!run.transport.ran.contains { $0.command == "stop" })
        run.transport.release(2, "backup")
        let migrating = await run.transport.events.first { if case .hanging(_, "migrate") = $0 { true } else { false } }
        guard case .hanging(let runner, _) = migrating else { return }
        // The database step runs: every node stopped, none started.
        #expect(Set(run.transport.ran.filter { $0.command == "stop" }.map(\.host)) == [0, 1, 2])
        #expect(!run.transport.ran.contains { $0.command == "start" })
        run.transport.release(runner, "migrate")
        #expect(await task.value == .succeeded)
        let ran = run.transport.ran.map(\.command)
        #expect(ran.filter { $0 == "migrate" }.count == 1)
        let lastStop = try #require(ran.lastIndex(of: "stop")), migrate = try #require(ran.firstIndex(of: "migrate"))
        let firstStart = try #require(ran.firstIndex(of: "start"))
        #expect(lastStop < migrate && migrate < firstStart)
        #expect(try run.log("n0").contains("waiting before 'stop' for every host of st2_cluster=c1 (stop 1): "))
    }

    @Test func aNodeFailingBeforeTheBarrierLeavesEveryNodeOfItsClusterUntouched() async throws {
        let run = try EngineHarness(hosts: Self.cluster(3) + [host("other", ["backup", "stop"])], batches: [[0, 1, 2, 3]],
                                    policy: { $0.startTogether = [[0, 1, 2]]; $0.maxFail = .count(10) })
        run.transport.script(1, "backup", .exit(1, stderr: "disk full"))
        #expect(await run.run() == .completedWithFailures)
        for node in [0, 2] { #expect(run.transport.commands(node) == ["backup"]) }
        #expect(run.transport.commands(3) == ["backup", "stop"])
        let state = try await run.state()
        #expect(state.hosts.map(\.status) == [.failed, .failed, .failed, .succeeded])
        for node in [0, 2] {
            let error = try #require(state.hosts[node].error)
            #expect(error.hasPrefix("not started 'stop': the hosts of st2_cluster=c1 go on only all together, and n1 did not get there (failed: step 'backup' failed"))
            #expect(state.hosts[node].steps[1].status == .pending)
        }
    }

    @Test func anUnreachableNodeLeavesTheOthersUntouched() async throws {
        let run = try EngineHarness(hosts: Self.cluster(3), batches: [[0, 1, 2]], policy: { $0.startTogether = [[0, 1, 2]]; $0.maxFail = .count(10) })
        run.transport.scriptConnect(2, .refused(retryable: false))
        _ = await run.run()
        for node in [0, 1] { #expect(run.transport.commands(node) == ["backup"]) }
        let state = try await run.state()
        #expect(state.hosts.map(\.status) == [.failed, .failed, .unreachable])
        #expect(state.hosts[0].error?.contains("n2 did not get there (unreachable: connection refused)") == true)
    }

    @Test func aFailureBetweenBarriersKeepsTheOthersFromTheDatabaseStepAndFromStarting() async throws {
        let steps = [RunStep(name: "stop", command: "stop", barriers: Self.meet("stop 1")),
                     RunStep(name: "upgrade", command: "upgrade"),
                     RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster", barriers: Self.meet("database 1")),
                     RunStep(name: "start", command: "start", barriers: Self.meet("services 1"))]
        let run = try EngineHarness(hosts: Self.cluster(2, steps: steps), batches: [[0, 1]], policy: { $0.startTogether = [[0, 1]]; $0.maxFail = .count(10) })
        run.transport.script(1, "upgrade", .exit(100))
        _ = await run.run()
        #expect(run.transport.commands(0) == ["stop", "upgrade"])
        #expect(run.transport.commands(1) == ["stop", "upgrade"])
    }

    /// The commands a host started, the once-per-cluster step left out (it runs on either).
    static func withoutMigrate(_ run: EngineHarness, _ host: Int) -> [String] { run.transport.commands(host).filter { $0 != "migrate" } }

    @Test func aResumedNodePastTheBarrierDoesNotWaitForIt() async throws {
        let first = try EngineHarness(hosts: Self.cluster(2), batches: [[0, 1]], policy: { $0.startTogether = [[0, 1]]; $0.maxFail = .count(10) })
        // n1 fails the step the barrier stands before: it went past the barrier; n0 stops
        // at the next one.
        first.transport.script(1, "stop", .exit(1))
        _ = await first.run()
        let failed = try await first.state()
        #expect(failed.hosts.map(\.status) == [.failed, .failed])
        #expect(failed.hosts[0].error?.hasPrefix("not started 'migrate'") == true)
        #expect(first.transport.commands(0) == ["backup", "stop"])
        // On resume n0 is past 'stop 1' (its stop is done) and never gets there again: n1,
        // running its stop again, must not wait for it.
        let second = try EngineHarness(resuming: first, retryFailed: true, policy: { $0.startTogether = [[0, 1]] })
        #expect(await second.run() == .succeeded)
        #expect(Self.withoutMigrate(second, 0) == ["backup", "stop", "start"])
        #expect(Self.withoutMigrate(second, 1) == ["backup", "stop", "stop", "start"])
        #expect(second.transport.ran.filter { $0.command == "migrate" }.count == 1)
    }

    @Test func aResumeBeforeTheBarrierMeetsAgainAndRunsEachStepOnce() async throws {
        let first = try EngineHarness(hosts: Self.cluster(2), batches: [[0, 1]], policy: { $0.startTogether = [[0, 1]]; $0.maxFail = .count(10) })
        first.transport.script(0, "backup", .exit(1))
        _ = await first.run()
        #expect(first.transport.commands(1) == ["backup"])
        #expect(try await first.state().hosts.map(\.status) == [.failed, .failed])
        let second = try EngineHarness(resuming: first, retryFailed: true, policy: { $0.startTogether = [[0, 1]] })
        #expect(await second.run() == .succeeded)
        #expect(Self.withoutMigrate(second, 0) == ["backup", "backup", "stop", "start"])
        #expect(Self.withoutMigrate(second, 1) == ["backup", "stop", "start"])
        #expect(second.transport.ran.filter { $0.command == "migrate" }.count == 1)
    }

    @Test func stoppingAtOnceEndsAWaitAtABarrierAndResumeMeetsAgain() async throws {
        let first = try EngineHarness(hosts: Self.cluster(2), batches: [[0, 1]], policy: { $0.startTogether = [[0, 1]] })
        first.transport.script(1, "backup", .hang)
        _ = await first.start()
        await first.transport.events.first { $0 == .hanging(host: 1, command: "backup") }
        await first.progress.first { if case .stepFinished(host: "n0", step: "backup", _, _) = $0 { true } else { false } }
        // n0 waits (or is about to wait) for n1, whose cancelled step ends its run and so
        // breaks the barrier: the stop returns, nothing recorded past the backups.
        try await first.engine.stopAtOnce(reason: "SIGINT twice")
        #expect(try await first.state().state == .stopped)
        #expect(first.transport.commands(0) == ["backup"])
        let second = try EngineHarness(resuming: first, policy: { $0.startTogether = [[0, 1]] })
        let task = await second.start()
        await first.transport.events.first { $0 == .attached(host: 1, command: "backup") }
        first.transport.release(1, "backup")
        #expect(await task.value == .succeeded)
        #expect(Self.withoutMigrate(second, 0) == ["backup", "stop", "start"])
        #expect(Self.withoutMigrate(second, 1) == ["backup", "stop", "start"])
    }

    @Test func aNodeSkippedByTheOperatorBreaksItsClustersBarriers() async throws {
        let hosts = [host("first", ["one"])] + Self.cluster(2)
        let run = try EngineHarness(hosts: hosts, batches: [[0], [1, 2]], policy: { $0.startTogether = [[1, 2]]; $0.maxFail = .count(10) })
        run.transport.script(0, "one", .hang)
        let task = await run.start()
        await run.transport.events.first { $0 == .hanging(host: 0, command: "one") }
        await run.engine.send(.skip(2))
        run.transport.release(0, "one")
        _ = await task.value
        #expect(run.transport.commands(1) == ["backup"])
        let state = try await run.state()
        #expect(state.hosts.map(\.status) == [.succeeded, .failed, .skipped])
        #expect(state.hosts[1].error?.contains("n1 did not get there (skipped: skipped by the operator)") == true)
    }
}
