import Foundation
import Testing
@testable import FlotillaCore

/// What `flotilla resume` continues with, from a journal's state: no SSH, no journal file.
@Suite struct ResumePlanTests {
    static func step(_ index: Int, _ status: StepRunStatus) -> JournalState.Step {
        JournalState.Step(index: index, name: "step \(index)", status: status, exitStatus: nil, stdoutTail: "", stderrTail: "", error: nil,
                          startedAt: nil, finishedAt: nil, durationMS: nil, attempts: status == .pending ? 0 : 1)
    }

    /// ok (succeeded), bad (failed at step 1), lost (unreachable after starting), gone
    /// (unreachable at plan time, in no batch), flight (step 1 in flight), later (not
    /// started), same (already at the target), cut (cancelled by --on-halt stop).
    static func journal(_ state: RunState) -> JournalState {
        let rows: [(String, Int?, HostRunStatus, [StepRunStatus])] = [
            ("ok", 0, .succeeded, [.succeeded, .succeeded]),
            ("bad", 0, .failed, [.succeeded, .failed]),
            ("lost", 0, .unreachable, [.pending, .pending]),
            ("gone", nil, .unreachable, []),
            ("flight", 1, .running, [.skipped, .running]),
            ("later", 1, .notStarted, [.pending, .pending]),
            ("same", nil, .skipped, []),
            ("cut", 1, .cancelled, [.succeeded, .cancelled]),
        ]
        let hosts = rows.map { name, batch, _, steps in
            RunHost(name: name, address: "10.0.0.1", batch: batch, steps: steps.indices.map { RunStep(name: "step \($0)", command: "true") },
                    skip: name == "gone" ? SkipCause(.unreachable, "no route") : name == "same" ? SkipCause(.atTarget, "already at 3.8.1") : nil)
        }
        let record = RunRecord(id: "run-1", kind: .runbook, targetVersion: nil, createdAt: Date(timeIntervalSince1970: 0), hosts: hosts,
                               batches: [["ok", "bad", "lost"], ["flight", "later", "cut"]], options: RunOptions())
        return JournalState(record: record, state: state, haltReason: nil, startedAt: nil, finishedAt: nil,
                            hosts: rows.map { name, _, status, steps in
                                JournalState.Host(name: name, status: status, error: nil, startedAt: nil, finishedAt: nil,
                                                  steps: steps.enumerated().map { step($0, $1) })
                            },
                            batches: [], clusterSteps: [], events: [], artifacts: [])
    }

    @Test func finishedHostsAndStepsAreNeverRunAgain() throws {
        let plan = try ResumePlan(Self.journal(.stopped), retryFailed: false, maxFail: nil)
        #expect(plan.state == .stopped)
        #expect(plan.preset == [0: .succeeded, 1: .failed, 2: .unreachable, 3: .unreachable, 6: .succeeded])
        #expect(plan.done == [0: [0, 1], 1: [0], 2: [], 3: [], 4: [0], 5: [], 6: [], 7: [0]])
        #expect(plan.retried.isEmpty)
        #expect(plan.inFlight == ["flight: step 1"])
        #expect(plan.record == Self.journal(.stopped).record)
    }

    @Test func aPlanRestrictedToSomeHostsKeepsTheirOwnStateUnderNewIndices() throws {
        let whole = try ResumePlan(Self.journal(.running), retryFailed: false, maxFail: nil)
        let plan = whole.restricted(to: ["bad", "flight", "later"])
        #expect(plan.record.hosts.map(\.name) == ["bad", "flight", "later"])
        #expect(plan.record.batches == [["bad"], ["flight", "later"]])
        #expect(plan.preset == [0: .failed])
        #expect(plan.done == [0: [0], 1: [0], 2: []])
        #expect(plan.inFlight == ["flight: step 1"])
        #expect(whole.restricted(to: ["ok"]).inFlight.isEmpty)
    }

    @Test func retryFailedRunsFailedAndUnreachableHostsAgainFromTheirFailedStep() throws {
        let plan = try ResumePlan(Self.journal(.completedWithFailures), retryFailed: true, maxFail: nil)
        #expect(plan.retried == ["bad", "lost"])
        // gone never started: it is not retried.
        #expect(plan.preset == [0: .succeeded, 3: .unreachable, 6: .succeeded])
        #expect(plan.done[1] == [0])
    }

    @Test func maxFailOverridesTheRunsThreshold() throws {
        let plan = try ResumePlan(Self.journal(.halted), retryFailed: false, maxFail: .percent(50))
        #expect(plan.record.options.maxFail == .percent(50))
        #expect(try ResumePlan(Self.journal(.halted), retryFailed: false, maxFail: nil).record.options.maxFail == .count(0))
    }

    @Test func aFinishedRunIsNotResumed() throws {
        #expect(throws: ResumePlan.Refusal(message: "run run-1 already finished (succeeded); nothing to resume")) {
            try ResumePlan(Self.journal(.succeeded), retryFailed: true, maxFail: nil)
        }
        #expect(throws: ResumePlan.Refusal(message: "run run-1 already finished (completed_with_failures); nothing to resume (--retry-failed runs its failed hosts again)")) {
            try ResumePlan(Self.journal(.completedWithFailures), retryFailed: false, maxFail: nil)
        }
        for state in [RunState.created, .running, .halted, .stopped] {
            #expect(try ResumePlan(Self.journal(state), retryFailed: false, maxFail: nil).state == state)
        }
    }
}
