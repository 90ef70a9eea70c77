import Foundation
import Testing
@testable import FlotillaCore

/// Building a run from plans and runbooks, and what its options make of the policy and
/// the engine: no SSH, no journal.
@Suite struct RunBuilderTests {
    static let hosts = try! inventory(ini: """
        st2-01 st2_cluster=blue flotilla_zone=a
        st2-02 st2_cluster=blue flotilla_zone=b
        st2-03 flotilla_zone=a
        st2-04
        st2-05 flotilla_zone=b
        """).hosts

    static let step = PlanStep(name: "stop", command: "st2ctl stop", kind: .stop)

    static func plans() -> [HostPlan] {
        [
            HostPlan(action: .upgrade, fromVersion: "3.7.1-1", toVersion: "3.8.1-1", hops: ["3.0.1"],
                     steps: [step, PlanStep(name: "stop", command: "st2ctl stop", kind: .stop, pass: 1)]),
            HostPlan(action: .skip, reason: "already at 3.8.1 (st2 3.8.1-1)", fromVersion: "3.8.1-1", toVersion: "3.8.1-1"),
            HostPlan(action: .refuse, reason: "crossing 3.3 removes Mistral"),
            HostPlan(action: .unreachable, reason: "connect: refused"),
            HostPlan(action: .upgrade, fromVersion: "3.7.1-1", toVersion: "3.8.1-1", steps: [step]),
        ]
    }

    static func upgradeRun(_ options: RunOptions) -> RunRecord {
        let hosts = zip(Self.hosts, plans()).map { host, plan in
            RunBuilder.upgradeHost(host, address: "10.0.0.1", plan: plan, target: "3.8.1", health: options.health,
                                   groupVariables: options.groupVariables)
        }
        return RunBuilder.record(id: "run-1", kind: .stackstormUpgrade, name: nil, target: "3.8.1", createdAt: Date(timeIntervalSince1970: 0),
                                 hosts: hosts, options: options)
    }

    @Test func plansBecomeHostsWithStepsOrSkipCauses() throws {
        var options = try RunOptions(flags: ["max-per": "flotilla_zone=1", "health": "curl -fsS http://127.0.0.1:9101/v1/"])
        options.forceStop = true
        let record = Self.upgradeRun(options)
        #expect(record.hosts.map(\.skip) == [nil, SkipCause(.atTarget, "already at 3.8.1 (st2 3.8.1-1)"),
                                             SkipCause(.refused, "crossing 3.3 removes Mistral"), SkipCause(.unreachable, "connect: refused"), nil])
        // Users read the same text as before the causes were typed.
        #expect(record.hosts.map(\.skipReason) == [nil, "already at 3.8.1 (st2 3.8.1-1)", "refused: crossing 3.3 removes Mistral",
                                                   "unreachable: connect: refused", nil])
        let first = record.hosts[0]
        #expect(first.steps.map(\.name) == ["stop", "stop", "health check"])
        #expect(first.steps.map(\.stage) == ["3.0.1", "3.8.1", nil])
        #expect(first.steps.map(\.become) == [true, true, false])
        #expect(first.groups == ["st2_cluster": "blue", "flotilla_zone": "a"])
        #expect(record.hosts[3].groups == [:])
        #expect(record.hosts[1].steps.isEmpty, "no health check for a host that is not upgraded")
    }

    @Test func onlyHostsWithoutASkipCauseAreBatched() throws {
        let record = Self.upgradeRun(try RunOptions(flags: ["canary": "1", "batch": "25%"]))
        // 25% of the 5 targeted hosts is 1.
        #expect(record.batches == [["st2-01"], ["st2-05"]])
        #expect(record.hosts.map(\.batch) == [0, nil, nil, nil, 1])
        #expect(RunBuilder.notStarted(record) == [
            RunBuilder.NotStarted(index: 1, status: .skipped, error: "already at 3.8.1 (st2 3.8.1-1)"),
            RunBuilder.NotStarted(index: 2, status: .skipped, error: "refused: crossing 3.3 removes Mistral"),
            RunBuilder.NotStarted(index: 3, status: .unreachable, error: "unreachable: connect: refused"),
        ])
        #expect(RunBuilder.presetResults(record) == [3: .unreachable])
    }

    @Test func runbookHostsGroupByTheirOncePerVariables() {
        let steps = [RunStep(name: "migrate", command: "st2-migrate", oncePer: "st2_cluster"), RunStep(name: "echo", command: "echo")]
        let host = RunBuilder.runbookHost(Self.hosts[0], address: "10.0.0.1", steps: steps, health: "true", groupVariables: [])
        #expect(host.groups == ["st2_cluster": "blue"])
        #expect(host.steps.map(\.name) == ["migrate", "echo", "health check"] && host.steps.last?.kind == "health")
        let record = RunBuilder.record(id: "run-2", kind: .runbook, name: "book", target: nil, createdAt: Date(), hosts: [host], options: RunOptions())
        #expect(record.batches == [["st2-01"]] && RunBuilder.notStarted(record).isEmpty)
    }

    @Test func optionsAreCheckedOnceWithTheFlagInTheMessage() {
        for (flags, message) in [
            (["max-fail": "many"], "--max-fail 'many' is not a number of hosts (0 or more) or a percentage such as 10%"),
            (["batch": "0"], "--batch: '0' in '0' is not a batch size (a whole number of hosts above 0, or a percentage such as 25%)"),
            (["canary": "0"], "--canary must be at least 1"),
            (["on-halt": "later"], "--on-halt must be drain or stop"),
            (["step-timeout": "soon"], "--step-timeout 'soon' is not a duration such as 30s, 5m or 1h"),
        ] {
            #expect(throws: RolloutFlags.FlagError.self) { try RunOptions(flags: flags) }
            do {
                _ = try RunOptions(flags: flags)
            } catch let error as RolloutFlags.FlagError {
                #expect(error.message == message)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test func optionsRoundTripThroughTheirStoredForm() throws {
        var options = try RunOptions(flags: [
            "batch": "1,5,25%", "canary": "1", "max-parallel": "3", "max-per": "flotilla_zone=1,rack=2", "max-fail": "12.5%",
            "max-fail-batch": "40%", "unreachable-counts": "no", "on-halt": "stop", "pause": "30s", "confirm": "yes",
            "window": "01:00-05:00", "health": "true", "healthy-for": "1m", "health-deadline": "2m", "step-timeout": "90",
            "force-stop": "yes", "selection": #"["-i","/inv.ini"]"#, "connection": #"["--host-key-check","strict"]"#, "state-dir": "st",
        ])
        #expect(options.maxFail == .percent(12.5) && options.pause == 30 && options.healthyFor == 60 && options.stepTimeout == 90)
        #expect(options.maxPer == [.init(variable: "flotilla_zone", limit: 1), .init(variable: "rack", limit: 2)])
        #expect(options.selection == ["-i", "/inv.ini"] && options.stateDir == "st" && options.forceStop && options.confirm)
        let decoded = try JSONDecoder().decode(RunOptions.self, from: try JSONEncoder().encode(options))
        #expect(decoded == options)
        options = RunOptions()
        #expect(try JSONDecoder().decode(RunOptions.self, from: try JSONEncoder().encode(options)) == options)
        #expect(try JSONDecoder().decode(RunOptions.self, from: Data("{}".utf8)) == options)
    }

    @Test func optionsMakeThePolicyConfigurationAndTheEngineSettings() throws {
        let options = try RunOptions(flags: [
            "canary": "1", "max-parallel": "2", "max-per": "flotilla_zone=1", "max-fail": "1", "max-fail-batch": "50%",
            "unreachable-counts": "no", "on-halt": "stop", "pause": "5m", "confirm": "yes",
            "window": "2026-11-22T01:00:00Z/2026-11-22T05:00:00Z", "health": "curl -f x", "healthy-for": "30s", "step-timeout": "2m",
            "force-stop": "yes",
        ])
        let record = Self.upgradeRun(options)
        let config = try options.policyConfig(for: record, now: Date(timeIntervalSince1970: 1_790_000_000))
        #expect(config.batches == [[0], [4]] && config.targeted == 5 && config.canary)
        #expect(config.maxParallel == 2 && config.maxFail == .count(1) && config.maxFailBatch == 50 && !config.unreachableCounts)
        #expect(config.onHalt == .stop && config.pause == 300 && config.confirm)
        #expect(config.maxPer == [RolloutPolicy.MaxPer(variable: "flotilla_zone", limit: 1, values: ["a", "b", "a", nil, "b"])])
        #expect(config.window == RolloutPolicy.Window(start: Date(timeIntervalSince1970: 1_795_309_200), end: Date(timeIntervalSince1970: 1_795_323_600)))

        let known = RolloutEngine.KnownFailure(stepKind: "mistral-db", match: "exists", explanation: "why")
        let settings = options.engineSettings(runDirectory: URL(fileURLWithPath: "/state/runs/run-1"), knownFailures: [known])
        #expect(settings.runDirectory.path == "/state/runs/run-1" && settings.knownFailures.map(\.match) == ["exists"])
        #expect(settings.stepTimeout == 120 && settings.healthyFor == 30 && settings.healthDeadline == 300)
        #expect(settings.forceStop)
        let defaults = RunOptions().engineSettings(runDirectory: URL(fileURLWithPath: "/r"), knownFailures: [])
        #expect(defaults.stepTimeout == nil && defaults.healthyFor == 0 && !defaults.forceStop)
        let plain = try RunOptions().policyConfig(for: record, now: Date())
        #expect(plain.maxFail == .count(0) && plain.unreachableCounts && plain.onHalt == .drain && plain.window == nil && plain.pause == 0)
    }
}
