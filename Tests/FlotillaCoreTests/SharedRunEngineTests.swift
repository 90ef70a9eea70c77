import Foundation
import PostgresTestSupport
import Testing
@testable import FlotillaCore

/// Two controllers of one shared run (SPEC §8.6), each an engine over its own fake hosts
/// and manual clock, sharing one PostgreSQL journal of the test server: what one
/// controller's hosts do holds the other's back, as the whole run's rules say.
@Suite(.timeLimit(.minutes(1))) struct SharedRunEngineTests {
    static func sharedJournal() throws -> JournalLocation {
        let server = try PostgresTestServer.shared
        return .postgres(try #require(PostgresURL(server.url(database: try server.newDatabase(prefix: "shared")))))
    }

    /// Waits until `harness`'s engine sleeps (its wait for the other controller), then
    /// lets the time pass, so it asks the journal again.
    static func wakeUp(_ harness: EngineHarness) async {
        await harness.clock.sleeps.first { _ in true }
        harness.clock.advance(by: RolloutEngine.runWidePoll)
    }

    /// Starts `b`, whose first host hangs in `command` until released, then `a` once it does.
    static func start(_ a: EngineHarness, after b: EngineHarness, hangingIn command: String)
        async -> (a: Task<RolloutPolicy.Outcome, Never>, b: Task<RolloutPolicy.Outcome, Never>) {
        b.transport.script(0, command, .hang)
        let runB = await b.start()
        await b.transport.events.first { $0 == .hanging(host: 0, command: command) }
        return (await a.start(), runB)
    }

    static func waited(_ harness: EngineHarness, for text: String) async {
        await harness.progress.first { if case .note(let note) = $0 { note.contains(text) } else { false } }
    }

    @Test func noHostOfALaterBatchStartsBeforeTheWholeRunsEarlierBatchFinished() async throws {
        let journal = try Self.sharedJournal()
        let a = try EngineHarness(hosts: [host("a1", ["one"]), host("a2", ["one"])], batches: [[0], [1]], sharing: journal)
        let b = try EngineHarness(hosts: [host("b1", ["one"]), host("b2", ["one"])], batches: [[0], [1]], sharing: journal)
        let (runA, runB) = await Self.start(a, after: b, hangingIn: "one")
        await Self.waited(a, for: "the run's batch 1 has a host not finished on other controllers")
        #expect(a.transport.commands(0) == ["one"] && a.transport.commands(1).isEmpty)
        b.transport.release(0, "one")
        #expect(await runB.value == .succeeded)
        await Self.wakeUp(a)
        #expect(await runA.value == .succeeded)
        #expect(a.transport.commands(1) == ["one"])
        let state = try await a.state()
        #expect(state.hosts.count == 4 && state.hosts.allSatisfy { $0.status == .succeeded })
    }

    @Test func maxPerCountsTheOtherControllersHostsInFlight() async throws {
        let journal = try Self.sharedJournal()
        let zone = { (config: inout RolloutPolicy.Config) in config.maxPer = [.init(variable: "zone", limit: 1, values: ["x"])] }
        let a = try EngineHarness(hosts: [host("a1", ["one"], groups: ["zone": "x"])], batches: [[0]], sharing: journal, policy: zone)
        let b = try EngineHarness(hosts: [host("b1", ["one"], groups: ["zone": "x"])], batches: [[0]], sharing: journal, policy: zone)
        let (runA, runB) = await Self.start(a, after: b, hangingIn: "one")
        await Self.waited(a, for: "--max-per zone=1: zone=x is full with other controllers' hosts in flight")
        #expect(a.transport.commands(0).isEmpty)
        b.transport.release(0, "one")
        #expect(await runB.value == .succeeded)
        await Self.wakeUp(a)
        #expect(await runA.value == .succeeded)
        #expect(a.transport.commands(0) == ["one"])
    }

    @Test func aClusterStepRunsOnceAcrossControllers() async throws {
        let journal = try Self.sharedJournal()
        let steps = [RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster"), RunStep(name: "start", command: "start")]
        let a = try EngineHarness(hosts: [host("a1", steps: steps, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal)
        let b = try EngineHarness(hosts: [host("b1", steps: steps, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal)
        let (runA, runB) = await Self.start(a, after: b, hangingIn: "migrate")
        await Self.waited(a, for: "a1 waits before 'migrate': 'migrate' is running on b1 of st2_cluster=c1")
        #expect(a.transport.commands(0).isEmpty)
        b.transport.release(0, "migrate")
        #expect(await runB.value == .succeeded)
        await Self.wakeUp(a)
        #expect(await runA.value == .succeeded)
        #expect(a.transport.commands(0) == ["start"], "the migration ran once in the cluster, on b1")
        let migrate = try #require(try await a.state().hosts.first { $0.name == "a1" }?.steps.first)
        #expect(migrate.status == .skipped && migrate.error?.contains("done on b1") == true, "\(migrate)")
    }

    /// Ends every sleep of `harness`'s engine as it begins (its waits for the other
    /// controller), until the run is over.
    static func pump(_ harness: EngineHarness) -> Task<Void, Never> {
        Task {
            var last = harness.clock.now
            while !Task.isCancelled {
                last = await harness.clock.sleeps.first { [last] in $0 > last }
                harness.clock.advance(to: last)
            }
        }
    }

    static let wholeCluster = [
        RunStep(name: "stop", command: "stop", barriers: [Barrier(group: "st2_cluster", name: "stop 1")]),
        RunStep(name: "migrate", command: "migrate", oncePer: "st2_cluster", barriers: [Barrier(group: "st2_cluster", name: "database 1")]),
        RunStep(name: "start", command: "start", barriers: [Barrier(group: "st2_cluster", name: "services 1")]),
    ]

    @Test func aWholeClusterAcrossControllersMigratesOnlyOnceEveryNodeStopped() async throws {
        let journal = try Self.sharedJournal()
        let a = try EngineHarness(hosts: [host("a1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal)
        let b = try EngineHarness(hosts: [host("b1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal)
        b.transport.script(0, "stop", .hang)
        let pumps = [Self.pump(a), Self.pump(b)]
        let runB = await b.start()
        let runA = await a.start()
        await b.transport.events.first { $0 == .hanging(host: 0, command: "stop") }
        // a1 stopped, and waits at the cluster's barrier before the migration for b1, still stopping.
        await Self.waited(a, for: "a1 waits before 'migrate' for every host of st2_cluster=c1: b1 on other controllers not there yet")
        #expect(a.transport.commands(0) == ["stop"])
        b.transport.release(0, "stop")
        #expect(await runA.value == .succeeded)
        #expect(await runB.value == .succeeded)
        pumps.forEach { $0.cancel() }
        let migrations = (a.transport.commands(0) + b.transport.commands(0)).filter { $0 == "migrate" }
        #expect(migrations.count == 1, "a1: \(a.transport.commands(0)), b1: \(b.transport.commands(0))")
        #expect(a.transport.commands(0).contains("start") && b.transport.commands(0).contains("start"))
    }

    @Test func aClusterNodeFailingOnAnotherControllerStopsTheOthersBeforeTheMigration() async throws {
        let journal = try Self.sharedJournal()
        let a = try EngineHarness(hosts: [host("a1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal,
                                  policy: { $0.maxFail = .count(5) })
        let b = try EngineHarness(hosts: [host("b1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal,
                                  policy: { $0.maxFail = .count(5) })
        b.transport.script(0, "stop", .hang)
        let pumps = [Self.pump(a), Self.pump(b)]
        let runB = await b.start()
        let runA = await a.start()
        await b.transport.events.first { $0 == .hanging(host: 0, command: "stop") }
        await Self.waited(a, for: "a1 waits before 'migrate'")
        b.transport.release(0, "stop", exit: 1)
        _ = await runB.value
        _ = await runA.value
        pumps.forEach { $0.cancel() }
        #expect(a.transport.commands(0) == ["stop"], "no migration under a node that never stopped")
        let a1 = try #require(try await a.state().hosts.first { $0.name == "a1" })
        #expect(a1.status == .failed && a1.error?.contains("b1 did not get there (failed on another controller)") == true, "\(a1.error ?? "")")
    }

    @Test func aClusterNodeWaitingForANodeThatWillNeverStartStopsWhenTheRunHalts() async throws {
        let journal = try Self.sharedJournal()
        let a = try EngineHarness(hosts: [host("a1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])], batches: [[0]], sharing: journal)
        let b = try EngineHarness(hosts: [host("b0", ["one"]), host("b1", steps: Self.wholeCluster, groups: ["st2_cluster": "c1"])],
                                  batches: [[0, 1]], sharing: journal, policy: { $0.maxParallel = 1 })
        let pumps = [Self.pump(a), Self.pump(b)]
        let (runA, runB) = await Self.start(a, after: b, hangingIn: "one")
        await Self.waited(a, for: "a1 waits before 'stop' for every host of st2_cluster=c1: b1 on other controllers not there yet")
        b.transport.release(0, "one", exit: 1)
        guard case .halted = await runB.value else { Issue.record("b did not halt"); return }
        let outcome = await runA.value
        pumps.forEach { $0.cancel() }
        guard case .halted = outcome else { Issue.record("\(outcome)"); return }
        #expect(a.transport.commands(0).isEmpty, "a1 never stopped its services for a cluster that cannot go together")
        let a1 = try #require(try await a.state().hosts.first { $0.name == "a1" })
        #expect(a1.status == .failed && a1.error?.contains("the run halted") == true, "\(a1.error ?? "")")
    }

    @Test func aControllerJoiningAPausedRunStartsPaused() async throws {
        let journal = try Self.sharedJournal()
        guard case .postgres(let url) = journal else { return }
        let a = try EngineHarness(hosts: [host("a1", ["one"])], batches: [[0]], sharing: journal)
        try SharedControl.send("pause", runID: a.record.id, url: url)
        let run = await a.start()
        let begun = await a.handled.first { $0.event == .begin }
        #expect(begun.actions.isEmpty, "paused: no host starts (\(begun.actions))")
        await a.engine.send(.resume)
        #expect(await run.value == .succeeded)
        #expect(a.transport.commands(0) == ["one"])
    }

    @Test func aHostWaitingForTheRunStartsNotWhenAnotherControllerHalts() async throws {
        let journal = try Self.sharedJournal()
        let a = try EngineHarness(hosts: [host("a1", ["one"]), host("a2", ["one"])], batches: [[0], [1]], sharing: journal)
        let b = try EngineHarness(hosts: [host("b1", ["one"]), host("b2", ["one"])], batches: [[0], [1]], sharing: journal)
        let (runA, runB) = await Self.start(a, after: b, hangingIn: "one")
        await Self.waited(a, for: "the run's batch 1 has a host not finished")
        b.transport.release(0, "one", exit: 1)
        guard case .halted = await runB.value else { Issue.record("b did not halt"); return }
        await Self.wakeUp(a)
        let outcome = await runA.value
        guard case .halted(let reason) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.contains("the run halted on another controller"), "\(reason)")
        #expect(a.transport.commands(1).isEmpty)
        let state = try await a.state()
        #expect(state.hosts.first { $0.name == "a2" }?.status == .notStarted)
        #expect(state.hosts.first { $0.name == "b2" }?.status == .notStarted)
    }
}
