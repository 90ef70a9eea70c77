import Foundation
import Testing
@testable import FlotillaCore

private typealias Policy = RolloutPolicy

/// A fixed instant; every test counts seconds from it.
private let t0 = Date(timeIntervalSince1970: 1_800_000_000) // 2027-01-15T08:00:00Z

private func at(_ seconds: TimeInterval) -> Date { t0.addingTimeInterval(seconds) }

private func config(_ batches: [[Int]], targeted: Int? = nil, _ change: (inout Policy.Config) -> Void = { _ in }) -> Policy.Config {
    var config = Policy.Config(batches: batches, targeted: targeted ?? batches.joined().count)
    change(&config)
    return config
}

private func starts(_ hosts: some Sequence<Int>) -> [Policy.Action] { hosts.map { .start($0) } }

/// Drives a policy with a clock the test moves.
private struct Driver {
    var policy: Policy
    var now = t0

    init(_ config: Policy.Config, finished: [Int: Policy.HostResult] = [:]) {
        policy = Policy(config: config, finished: finished)
    }

    mutating func send(_ event: Policy.Event, at seconds: TimeInterval? = nil) -> [Policy.Action] {
        if let seconds { now = at(seconds) }
        return policy.handle(event, now: now)
    }

    mutating func begin(at seconds: TimeInterval? = nil) -> [Policy.Action] { send(.begin, at: seconds) }

    mutating func done(_ host: Int, _ result: Policy.HostResult = .succeeded, duration: TimeInterval = 60,
                       at seconds: TimeInterval? = nil) -> [Policy.Action] {
        send(.hostFinished(host, result, duration: duration), at: seconds)
    }
}

@Suite struct RolloutPolicyTests {
    // MARK: Batches

    @Test func rampOneFiveTwentyFivePercentRunsBatchAfterBatch() throws {
        let batches = BatchSpec.batches(count: 20, spec: try BatchSpec(parsing: "1,5,25%"), canary: nil, targeted: 20)
        #expect(batches.map(\.count) == [1, 5, 5, 5, 4])
        var driver = Driver(config(batches))
        #expect(driver.begin() == [.start(0)])
        for (index, batch) in batches.enumerated() {
            // Finish in reverse order: only the last one to finish opens the next batch.
            for host in batch.reversed().dropLast() {
                #expect(driver.done(host) == [])
                #expect(driver.policy.currentBatch == index)
            }
            let next = driver.done(batch[0])
            if index + 1 < batches.count {
                #expect(next == starts(batches[index + 1]))
            } else {
                #expect(next == [.finish(.succeeded)])
            }
        }
        #expect(driver.policy.counts.succeeded == 20)
    }

    @Test func canaryThenPercentBatches() throws {
        let batches = BatchSpec.batches(count: 8, spec: try BatchSpec(parsing: "50%"), canary: 2, targeted: 8)
        #expect(batches == [[0, 1], [2, 3, 4, 5], [6, 7]])
        var driver = Driver(config(batches) { $0.canary = true })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.done(1) == [])
        #expect(driver.done(0) == starts(2...5))
        for host in 2...4 { #expect(driver.done(host) == []) }
        #expect(driver.done(5) == [.start(6), .start(7)])
        #expect(driver.done(6) == [])
        #expect(driver.done(7) == [.finish(.succeeded)])
    }

    @Test func emptyBatchesAndNoHostsFinishAtOnce() {
        var none = Driver(config([]))
        #expect(none.begin() == [.finish(.succeeded)])
        var empties = Driver(config([[], [0], []]))
        #expect(empties.begin() == [.start(0)])
        #expect(empties.done(0) == [.finish(.succeeded)])
    }

    // MARK: max-parallel

    @Test func maxParallelIsASlidingWindow() {
        var driver = Driver(config([[0, 1, 2, 3, 4]]) { $0.maxParallel = 2 })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.policy.inFlight == [0, 1])
        #expect(driver.done(1) == [.start(2)])
        #expect(driver.done(0) == [.start(3)])
        #expect(driver.done(2) == [.start(4)])
        #expect(driver.done(3) == [])
        #expect(driver.done(4) == [.finish(.succeeded)])
    }

    @Test func maxParallelNeverReachesIntoTheNextBatch() {
        var driver = Driver(config([[0, 1, 2], [3, 4]]) { $0.maxParallel = 2 })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.done(0) == [.start(2)])
        #expect(driver.done(1) == [])
        #expect(driver.done(2) == [.start(3), .start(4)])
    }

    // MARK: max-per

    @Test func maxPerStartsALaterHostWhenTheNextIsHeldBack() {
        let zones: [String?] = ["a", "a", "b", nil, "b", "a"]
        var driver = Driver(config([Array(0...5)]) { $0.maxPer = [.init(variable: "zone", limit: 1, values: zones)] })
        #expect(driver.begin() == [.start(0), .start(2), .start(3)])
        #expect(driver.done(3) == [])
        #expect(driver.done(0) == [.start(1)])
        #expect(driver.done(2) == [.start(4)])
        #expect(driver.done(1) == [.start(5)])
        #expect(driver.done(4) == [])
        #expect(driver.done(5) == [.finish(.succeeded)])
    }

    @Test func severalMaxPerRulesAndMaxParallelAllApply() {
        let zones: [String?] = ["z1", "z1", "z1", "z2", "z2", nil]
        let racks: [String?] = ["r1", "r1", "r2", "r3", "r3", "r4"]
        var driver = Driver(config([Array(0...5)]) {
            $0.maxParallel = 3
            $0.maxPer = [.init(variable: "zone", limit: 2, values: zones), .init(variable: "rack", limit: 1, values: racks)]
        })
        #expect(driver.begin() == [.start(0), .start(2), .start(3)])
        #expect(driver.done(0) == [.start(1)])
        #expect(driver.done(3) == [.start(4)])
        #expect(driver.done(2) == [.start(5)])
        #expect(driver.done(1) == [])
        #expect(driver.done(4) == [])
        #expect(driver.done(5) == [.finish(.succeeded)])
    }

    @Test func hostsWithoutTheVariableAreNotRestricted() {
        var driver = Driver(config([[0, 1, 2, 3]]) { $0.maxPer = [.init(variable: "pair", limit: 1, values: [nil, nil, "p"])] })
        // Host 3 is past the end of `values`: no value either.
        #expect(driver.begin() == starts(0...3))
    }

    @Test func maxPerIsNeverExceededInASeededSimulation() {
        var random = FuzzRandom(seed: 7)
        for _ in 0..<200 {
            let count = Int.random(in: 1...40, using: &random)
            let zones = (0..<count).map { _ in [nil, "a", "b", "c"].randomElement(using: &random)! }
            let pairs = (0..<count).map { _ in ["p1", "p2", "p3", "p4", "p5", nil].randomElement(using: &random)! }
            let zoneLimit = Int.random(in: 1...3, using: &random)
            let size = Int.random(in: 1...count, using: &random)
            let batches = BatchSpec.batches(count: count, spec: BatchSpec(sizes: [.count(size)]), canary: nil, targeted: count)
            var policy = Policy(config: config(batches) {
                $0.maxPer = [.init(variable: "zone", limit: zoneLimit, values: zones), .init(variable: "pair", limit: 1, values: pairs)]
                $0.maxParallel = Bool.random(using: &random) ? nil : Int.random(in: 1...6, using: &random)
            })
            var inFlight: [Int] = []
            var pending = policy.handle(.begin, now: t0)
            var finished = false
            while !finished {
                for action in pending {
                    switch action {
                    case .start(let host): inFlight.append(host)
                    case .finish(let outcome):
                        #expect(outcome == .succeeded)
                        finished = true
                    default: Issue.record("unexpected \(action)")
                    }
                }
                for value in Set(zones.compactMap { $0 }) {
                    #expect(inFlight.filter { zones[$0] == value }.count <= zoneLimit)
                }
                for value in Set(pairs.compactMap { $0 }) {
                    #expect(inFlight.filter { pairs[$0] == value }.count <= 1)
                }
                if finished { break }
                guard !inFlight.isEmpty else {
                    Issue.record("stuck with nothing in flight")
                    break
                }
                let host = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &random))
                pending = policy.handle(.hostFinished(host, .succeeded, duration: 1), now: t0)
            }
        }
    }

    // MARK: Thresholds

    @Test func maxFailCountHaltsJustOverTheLimit() {
        var driver = Driver(config([[0, 1, 2, 3]]) { $0.maxFail = .count(1) })
        #expect(driver.begin() == starts(0...3))
        #expect(driver.done(0, .failed) == [])
        #expect(!driver.policy.isHalted)
        let reason = "max-fail 1 exceeded: 2 hosts failed"
        #expect(driver.done(1, .failed) == [.halt(reason)])
        #expect(driver.policy.haltReason == reason)
        #expect(driver.done(2) == [])
        #expect(driver.done(3) == [.finish(.halted(reason))])
    }

    @Test func failuresAtTheLimitCompleteWithFailures() {
        var driver = Driver(config([[0, 1], [2, 3]]) { $0.maxFail = .count(1) })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.done(0, .failed) == [])
        #expect(driver.done(1) == [.start(2), .start(3)])
        #expect(driver.done(2) == [])
        #expect(driver.done(3) == [.finish(.completedWithFailures)])
    }

    @Test func maxFailPercentIsOfTheTargetedHosts() {
        var driver = Driver(config([Array(0..<10)]) { $0.maxFail = .percent(20) })
        #expect(driver.begin() == starts(0..<10))
        #expect(driver.done(0, .failed) == [])
        #expect(driver.done(1, .failed) == []) // 2 of 10 is exactly 20%: not over
        #expect(driver.done(2, .failed) == [.halt("max-fail 20% exceeded: 3 of 10 hosts failed")])

        // Targeted hosts outside any batch (refused, already at target) still count.
        var wide = Driver(config([Array(0..<10)], targeted: 20) { $0.maxFail = .percent(10) })
        _ = wide.begin()
        #expect(wide.done(0, .failed) == [])
        #expect(wide.done(1, .failed) == [])
        #expect(wide.done(2, .failed) == [.halt("max-fail 10% exceeded: 3 of 20 hosts failed")])

        var fractional = Driver(config([Array(0..<8)]) { $0.maxFail = .percent(12.5) })
        _ = fractional.begin()
        #expect(fractional.done(0, .failed) == [])
        #expect(fractional.done(1, .failed) == [.halt("max-fail 12.5% exceeded: 2 of 8 hosts failed")])
    }

    @Test func maxFailBatchIsPerBatch() {
        var driver = Driver(config([[0, 1, 2, 3], [4, 5, 6, 7]]) {
            $0.maxFail = .count(10)
            $0.maxFailBatch = 50
        })
        #expect(driver.begin() == starts(0...3))
        #expect(driver.done(0, .failed) == [])
        #expect(driver.done(1, .failed) == [])
        #expect(driver.done(2) == [])
        #expect(driver.done(3) == starts(4...7)) // the first batch's failures do not count in the second
        #expect(driver.done(4, .failed) == [])
        #expect(driver.done(5, .unreachable) == [])
        let reason = "max-fail-batch 50% exceeded in batch 2: 3 of 4 hosts failed (1 unreachable)"
        #expect(driver.done(6, .failed) == [.halt(reason)])
        #expect(driver.done(7) == [.finish(.halted(reason))])
    }

    @Test func unreachableCountsByDefault() {
        var driver = Driver(config([[0, 1]]))
        _ = driver.begin()
        let reason = "max-fail 0 exceeded: 1 host failed (1 unreachable)"
        #expect(driver.done(0, .unreachable) == [.halt(reason)])
        #expect(driver.done(1) == [.finish(.halted(reason))])
    }

    @Test func unreachableCanBeLeftOutOfTheThresholds() {
        var driver = Driver(config([[0, 1], [2]]) { $0.unreachableCounts = false })
        _ = driver.begin()
        #expect(driver.done(0, .unreachable) == [])
        #expect(driver.done(1, .unreachable) == [.start(2)]) // not even "every host failed"
        #expect(driver.policy.counts.unreachable == 2)
        #expect(driver.policy.counts.failures == 0)
        #expect(driver.done(2, .failed) == [.halt("max-fail 0 exceeded: 1 host failed"), .finish(.halted("max-fail 0 exceeded: 1 host failed"))])

        var completes = Driver(config([[0, 1]]) { $0.unreachableCounts = false })
        _ = completes.begin()
        #expect(completes.done(0, .unreachable) == [])
        #expect(completes.done(1) == [.finish(.completedWithFailures)])
    }

    @Test func aFailedCanaryHaltsWhateverTheThreshold() {
        var driver = Driver(config([[0], [1, 2]]) {
            $0.canary = true
            $0.maxFail = .count(5)
        })
        #expect(driver.begin() == [.start(0)])
        let reason = "canary failed: 1 of 1 host did not succeed"
        #expect(driver.done(0, .failed) == [.halt(reason), .finish(.halted(reason))])

        // An unreachable canary halts even when unreachable hosts do not count.
        var unreachable = Driver(config([[0, 1], [2]]) {
            $0.canary = true
            $0.maxFail = .percent(100)
            $0.unreachableCounts = false
        })
        #expect(unreachable.begin() == [.start(0), .start(1)])
        let why = "canary failed: 1 of 2 hosts did not succeed (1 unreachable)"
        #expect(unreachable.done(1, .unreachable) == [.halt(why)])
        #expect(unreachable.done(0) == [.finish(.halted(why))])
    }

    @Test func aSucceededCanaryLeavesLaterFailuresToTheThreshold() {
        var driver = Driver(config([[0], [1, 2]]) {
            $0.canary = true
            $0.maxFail = .count(1)
        })
        _ = driver.begin()
        #expect(driver.done(0) == [.start(1), .start(2)])
        #expect(driver.done(1, .failed) == [])
        #expect(driver.done(2) == [.finish(.completedWithFailures)])
    }

    @Test func aBatchInWhichEveryHostFailedHalts() {
        var driver = Driver(config([[0, 1], [2, 3]]) { $0.maxFail = .count(10) })
        _ = driver.begin()
        #expect(driver.done(0, .failed) == [])
        let reason = "every host of batch 1 failed: 2 hosts (1 unreachable)"
        #expect(driver.done(1, .unreachable) == [.halt(reason), .finish(.halted(reason))])
    }

    @Test func everyHostFailedIsAllowedAtMaxFailOneHundredPercent() {
        var driver = Driver(config([[0, 1], [2, 3]]) { $0.maxFail = .percent(100) })
        _ = driver.begin()
        #expect(driver.done(0, .failed) == [])
        #expect(driver.done(1, .failed) == [.start(2), .start(3)])
        #expect(driver.done(2, .failed) == [])
        #expect(driver.done(3, .failed) == [.finish(.completedWithFailures)])
    }

    @Test func hostsSkippedByTheOperatorDoNotCountInTheWholeBatchRule() {
        var driver = Driver(config([[0, 1, 2], [3]]) {
            $0.maxFail = .count(10)
            $0.maxParallel = 2
        })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.send(.skip(2)) == [])
        #expect(driver.done(0, .failed) == [])
        let reason = "every host of batch 1 failed: 2 hosts"
        #expect(driver.done(1, .failed) == [.halt(reason), .finish(.halted(reason))])
        #expect(driver.policy.status(of: 2) == .skipped)
        #expect(driver.policy.status(of: 3) == .notStarted)

        var mixed = Driver(config([[0, 1], [2]]) { $0.maxFail = .count(10) })
        _ = mixed.begin()
        #expect(mixed.done(0, .failed) == [])
        #expect(mixed.done(1) == [.start(2)])
    }

    // MARK: Halting

    @Test func nothingStartsAfterAHaltEvenWithFreeSlots() {
        var driver = Driver(config([[0, 1, 2, 3], [4, 5]]) { $0.maxParallel = 2 })
        #expect(driver.begin() == [.start(0), .start(1)])
        let reason = "max-fail 0 exceeded: 1 host failed"
        #expect(driver.done(0, .failed) == [.halt(reason)]) // a slot is free, host 2 is not started
        #expect(driver.send(.setMaxParallel(10)) == [])
        #expect(driver.send(.skip(3)) == [])
        #expect(driver.send(.tick) == [])
        #expect(driver.send(.abort) == [])
        #expect(driver.done(1, .failed) == [.finish(.halted(reason))]) // only one halt, even with more failures
        #expect(driver.policy.outcome == .halted(reason))
        for event: Policy.Event in [.begin, .resume, .tick, .confirmed(true), .interrupt, .setMaxParallel(4)] {
            #expect(driver.send(event) == [])
        }
        #expect(driver.policy.status(of: 2) == .notStarted)
        #expect(driver.policy.status(of: 4) == .notStarted)
    }

    @Test func onHaltStopStopsInFlightHosts() {
        var driver = Driver(config([[0, 1, 2]]) { $0.onHalt = .stop })
        _ = driver.begin()
        let reason = "max-fail 0 exceeded: 1 host failed"
        #expect(driver.done(0, .failed) == [.halt(reason), .stopInFlight])
        #expect(driver.done(2, .failed) == [])
        #expect(driver.done(1, .failed) == [.finish(.halted(reason))])
    }

    @Test func onHaltStopWithNothingInFlightFinishesAtOnce() {
        var driver = Driver(config([[0], [1]]) { $0.onHalt = .stop })
        _ = driver.begin()
        let reason = "max-fail 0 exceeded: 1 host failed"
        #expect(driver.done(0, .failed) == [.halt(reason), .finish(.halted(reason))])
    }

    // MARK: Between batches

    @Test func pauseBetweenBatchesWaitsForTheTick() {
        var driver = Driver(config([[0], [1, 2], [3]]) { $0.pause = 300 })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.done(0, at: 100) == [.wakeAt(at(400))])
        #expect(driver.policy.nextBatch == 1)
        #expect(driver.policy.pauseEndsAt == at(400))
        #expect(driver.send(.tick, at: 399) == [])
        #expect(driver.send(.resume, at: 399.5) == [])
        #expect(driver.send(.tick, at: 400) == [.start(1), .start(2)])
        #expect(driver.done(1, at: 500) == [])
        #expect(driver.done(2, at: 600) == [.wakeAt(at(900))])
        #expect(driver.send(.tick, at: 950) == [.start(3)])
        #expect(driver.done(3, at: 1000) == [.finish(.succeeded)]) // no pause after the last batch
    }

    @Test func confirmAsksBeforeEachBatchAfterTheFirst() {
        var driver = Driver(config([[0], [1], [2]]) { $0.confirm = true })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.send(.confirmed(true)) == []) // nothing was asked
        #expect(driver.done(0) == [.askConfirmation(batch: 1)])
        #expect(driver.policy.isAwaitingConfirmation)
        #expect(driver.send(.confirmed(true)) == [.start(1)])
        #expect(driver.done(1) == [.askConfirmation(batch: 2)])
        #expect(driver.send(.confirmed(true)) == [.start(2)])
        #expect(driver.done(2) == [.finish(.succeeded)])
    }

    @Test func aRefusedConfirmationStopsTheRun() {
        var driver = Driver(config([[0], [1], [2]]) { $0.confirm = true })
        _ = driver.begin()
        #expect(driver.done(0) == [.askConfirmation(batch: 1)])
        #expect(driver.send(.confirmed(false)) == [.finish(.stopped("not confirmed: batch 2 of 3 was not started"))])
    }

    @Test func confirmationComesAfterThePause() {
        var driver = Driver(config([[0], [1]]) {
            $0.confirm = true
            $0.pause = 60
        })
        _ = driver.begin()
        #expect(driver.done(0, at: 10) == [.wakeAt(at(70))])
        #expect(driver.send(.tick, at: 70) == [.askConfirmation(batch: 1)])
        #expect(driver.send(.confirmed(true), at: 80) == [.start(1)])
    }

    @Test func aCtlPauseDefersTheQuestionUntilContinue() {
        var driver = Driver(config([[0], [1]]) {
            $0.confirm = true
            $0.pause = 60
        })
        _ = driver.begin()
        #expect(driver.done(0) == [.wakeAt(at(60))])
        #expect(driver.send(.pause, at: 30) == [])
        #expect(driver.send(.tick, at: 60) == [])
        #expect(!driver.policy.isAwaitingConfirmation)
        #expect(driver.send(.resume, at: 90) == [.askConfirmation(batch: 1)])
        #expect(driver.send(.confirmed(true), at: 95) == [.start(1)])
    }

    @Test func batchesWithNothingToStartArePassedOver() {
        var driver = Driver(config([[0], [1], [2]]) {
            $0.confirm = true
            $0.pause = 60
        })
        _ = driver.begin()
        #expect(driver.send(.skip(1)) == [])
        #expect(driver.done(0) == [.wakeAt(at(60))])
        #expect(driver.send(.tick, at: 60) == [.askConfirmation(batch: 2)])
    }

    // MARK: Maintenance window

    @Test func nothingStartsBeforeTheWindowOpens() {
        var driver = Driver(config([[0, 1]]) { $0.window = .init(start: at(3600), end: at(7200)) })
        #expect(driver.begin() == [.wakeAt(at(3600))])
        #expect(driver.send(.tick, at: 3599) == [])
        #expect(driver.send(.tick, at: 3600) == [.start(0), .start(1)])
    }

    @Test func nearTheEndAHostStartsOnlyIfTheTimeLeftExceedsTheMedian() {
        var driver = Driver(config([[0], [1], [2], [3]]) { $0.window = .init(start: t0, end: at(1000)) })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.done(0, duration: 300, at: 300) == [.start(1)]) // 700 s left, median 300
        #expect(driver.done(1, duration: 350, at: 674) == [.start(2)]) // 326 s left, median 325
        #expect(driver.policy.medianDuration == 325)
        let reason = "maintenance window ended: 300s left before 2027-01-15T08:16:40Z, not more than the median host duration of 350s"
        #expect(driver.done(2, duration: 400, at: 700) == [.finish(.stopped(reason))]) // 300 s left, median 350
        #expect(driver.policy.status(of: 3) == .notStarted)
    }

    @Test func timeLeftEqualToTheMedianIsNotEnough() {
        var driver = Driver(config([[0], [1]]) { $0.window = .init(start: t0, end: at(1000)) })
        _ = driver.begin()
        let reason = "maintenance window ended: 500s left before 2027-01-15T08:16:40Z, not more than the median host duration of 500s"
        #expect(driver.done(0, duration: 500, at: 500) == [.finish(.stopped(reason))])
    }

    @Test func aShortHostFinishingLowersTheMedianAndLetsTheNextStart() {
        var driver = Driver(config([[0, 1, 2]]) {
            $0.window = .init(start: t0, end: at(1000))
            $0.maxParallel = 2
        })
        #expect(driver.begin() == [.start(0), .start(1)])
        #expect(driver.done(0, duration: 600, at: 600) == []) // 400 s left, median 600: host 2 waits
        #expect(driver.done(1, duration: 10, at: 610) == [.start(2)]) // 390 s left, median 305
    }

    @Test func theRunStopsAtTheEndOfTheWindow() {
        var driver = Driver(config([[0, 1, 2]]) {
            $0.window = .init(start: t0, end: at(1000))
            $0.maxParallel = 1
        })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.done(0, duration: 1000, at: 1000) == [.finish(.stopped("maintenance window ended at 2027-01-15T08:16:40Z"))])
        #expect(driver.policy.isStopping)
    }

    @Test func aPausedRunStopsWhenTheWindowEnds() {
        var driver = Driver(config([[0, 1]]) {
            $0.window = .init(start: t0, end: at(1000))
            $0.maxParallel = 1
        })
        _ = driver.begin()
        #expect(driver.send(.pause, at: 10) == [])
        #expect(driver.done(0, duration: 100, at: 100) == [.wakeAt(at(1000))])
        #expect(driver.send(.tick, at: 500) == []) // 500 s left, median 100: still paused, not stopped
        #expect(driver.send(.tick, at: 1000) == [.finish(.stopped("maintenance window ended at 2027-01-15T08:16:40Z"))])
    }

    @Test func anUnansweredConfirmationStopsWhenTheWindowEnds() {
        var driver = Driver(config([[0], [1]]) {
            $0.window = .init(start: t0, end: at(1000))
            $0.confirm = true
        })
        _ = driver.begin()
        #expect(driver.done(0, duration: 100, at: 100) == [.askConfirmation(batch: 1), .wakeAt(at(1000))])
        #expect(driver.send(.tick, at: 1000) == [.finish(.stopped("maintenance window ended at 2027-01-15T08:16:40Z"))])
        #expect(driver.send(.confirmed(true), at: 1001) == [])
    }

    @Test func aPauseBetweenBatchesThatOutlastsTheWindowStopsAtItsEnd() {
        var driver = Driver(config([[0], [1]]) {
            $0.window = .init(start: t0, end: at(1000))
            $0.pause = 3600
        })
        _ = driver.begin()
        #expect(driver.done(0, duration: 100, at: 100) == [.wakeAt(at(3700)), .wakeAt(at(1000))])
        #expect(driver.send(.tick, at: 1000) == [.finish(.stopped("maintenance window ended at 2027-01-15T08:16:40Z"))])
    }

    // MARK: Operator control

    @Test func pauseAndResume() {
        var driver = Driver(config([[0, 1, 2]]) { $0.maxParallel = 1 })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.send(.pause) == [])
        #expect(driver.policy.isPaused)
        #expect(driver.done(0) == [])
        #expect(driver.send(.tick) == [])
        #expect(driver.send(.resume) == [.start(1)])
        #expect(!driver.policy.isPaused)
        #expect(driver.done(1) == [.start(2)])
        #expect(driver.send(.pause) == [])
        #expect(driver.done(2) == [.finish(.succeeded)]) // nothing more to start: paused or not, it is over
    }

    @Test func pauseBeforeBeginHoldsTheFirstStart() {
        var driver = Driver(config([[0]]))
        #expect(driver.send(.pause) == [])
        #expect(driver.begin() == [])
        #expect(driver.send(.resume) == [.start(0)])
    }

    @Test func abortHaltsWithTheOperatorAsReason() {
        var driver = Driver(config([[0, 1, 2]]) { $0.maxParallel = 2 })
        _ = driver.begin()
        #expect(driver.send(.abort) == [.halt("aborted by the operator")])
        #expect(driver.done(0) == [])
        #expect(driver.done(1) == [.finish(.halted("aborted by the operator"))])

        var stop = Driver(config([[0, 1]]) { $0.onHalt = .stop })
        _ = stop.begin()
        #expect(stop.send(.abort) == [.halt("aborted by the operator"), .stopInFlight])

        var idle = Driver(config([[0], [1]]) { $0.confirm = true })
        _ = idle.begin()
        #expect(idle.done(0) == [.askConfirmation(batch: 1)])
        #expect(idle.send(.abort) == [.halt("aborted by the operator"), .finish(.halted("aborted by the operator"))])
    }

    @Test func skipNeverStartsAHostAndIgnoresOthers() {
        var driver = Driver(config([[0, 1, 2, 3]]) { $0.maxParallel = 1 })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.send(.skip(1)) == [])
        #expect(driver.send(.skip(0)) == []) // in flight: ignored
        #expect(driver.send(.skip(42)) == []) // unknown: ignored
        #expect(driver.done(0) == [.start(2)])
        #expect(driver.send(.skip(3)) == [])
        #expect(driver.policy.skipped == [1, 3])
        #expect(driver.policy.counts.skipped == 2)
        #expect(driver.done(2) == [.finish(.succeeded)])
        #expect(driver.policy.status(of: 0) == .succeeded)
    }

    @Test func skippingTheLastPendingHostCanCompleteTheRun() {
        var driver = Driver(config([[0, 1]]) { $0.maxParallel = 1 })
        _ = driver.begin()
        #expect(driver.send(.pause) == [])
        #expect(driver.done(0) == [])
        #expect(driver.send(.skip(1)) == [.finish(.succeeded)])
    }

    @Test func setMaxParallelTakesEffectAtOnce() {
        var driver = Driver(config([Array(0...5)]) { $0.maxParallel = 1 })
        #expect(driver.begin() == [.start(0)])
        #expect(driver.send(.setMaxParallel(3)) == [.start(1), .start(2)])
        #expect(driver.policy.maxParallel == 3)
        #expect(driver.send(.setMaxParallel(1)) == [])
        #expect(driver.done(0) == [])
        #expect(driver.done(1) == [])
        #expect(driver.done(2) == [.start(3)])
        #expect(driver.send(.setMaxParallel(0)) == []) // counts as 1
        #expect(driver.policy.maxParallel == 1)
        #expect(driver.done(3) == [.start(4)])
    }

    @Test func interruptLetsInFlightHostsFinishThenStops() {
        var driver = Driver(config([[0, 1, 2], [3]]) { $0.maxParallel = 2 })
        _ = driver.begin()
        #expect(driver.send(.interrupt) == [])
        #expect(driver.policy.isStopping)
        #expect(driver.done(0) == []) // a free slot, but nothing starts
        #expect(driver.send(.interrupt) == [])
        #expect(driver.done(1) == [.finish(.stopped("stopped by signal"))])
    }

    @Test func anInterruptDuringTheLastHostsEndsTheRunAsComplete() {
        var driver = Driver(config([[0, 1]]) { $0.maxFail = .count(1) })
        _ = driver.begin()
        #expect(driver.send(.interrupt) == [])
        #expect(driver.done(0, .failed) == [])
        #expect(driver.done(1) == [.finish(.completedWithFailures)]) // nothing left to resume
    }

    @Test func interruptWhileWaitingBetweenBatchesStopsAtOnce() {
        var driver = Driver(config([[0], [1]]) { $0.pause = 60 })
        _ = driver.begin()
        #expect(driver.done(0) == [.wakeAt(at(60))])
        #expect(driver.send(.interrupt, at: 30) == [.finish(.stopped("stopped by signal"))])
        #expect(driver.send(.tick, at: 60) == [])
    }

    @Test func aThresholdCrossedAfterASignalStillHalts() {
        var driver = Driver(config([[0, 1]]))
        _ = driver.begin()
        #expect(driver.send(.interrupt) == [])
        let reason = "max-fail 0 exceeded: 1 host failed"
        #expect(driver.done(0, .failed) == [.halt(reason)])
        #expect(driver.done(1) == [.finish(.halted(reason))])
    }

    // MARK: Resume

    @Test func resumePassesOverFinishedHostsAndCountsTheirFailures() {
        var driver = Driver(config([[0], [1, 2, 3], [4, 5]]) {
            $0.maxFail = .count(1)
            $0.confirm = true
            $0.pause = 60
        }, finished: [0: .succeeded, 1: .succeeded, 2: .failed])
        #expect(driver.policy.counts.notStarted == 3)
        // Resuming is the operator's go-ahead: no pause or question before the first batch.
        #expect(driver.begin() == [.start(3)])
        #expect(driver.policy.currentBatch == 1)
        #expect(driver.done(3) == [.wakeAt(at(60))])
        #expect(driver.send(.tick, at: 60) == [.askConfirmation(batch: 2)])
        #expect(driver.send(.confirmed(true)) == [.start(4), .start(5)])
        let reason = "max-fail 1 exceeded: 2 hosts failed (1 already recorded when this controller started)"
        #expect(driver.done(4, .failed) == [.halt(reason)])
        #expect(driver.done(5) == [.finish(.halted(reason))])
    }

    @Test func aRunResumedOverItsThresholdHaltsAtOnceWithAClearReason() {
        var driver = Driver(config([[0, 1], [2]]), finished: [0: .failed, 1: .succeeded])
        let reason = "max-fail 0 exceeded: 1 host failed (1 already recorded when this controller started)"
        #expect(driver.begin() == [.halt(reason), .finish(.halted(reason))])

        // Raising the threshold lets it go on.
        var raised = Driver(config([[0, 1], [2]]) { $0.maxFail = .count(1) }, finished: [0: .failed, 1: .succeeded])
        #expect(raised.begin() == [.start(2)])
        #expect(raised.done(2) == [.finish(.completedWithFailures)])
    }

    @Test func resultsOfHostsInNoBatchCount() {
        var driver = Driver(config([[0, 1]]) { $0.maxFail = .count(1) }, finished: [7: .unreachable])
        _ = driver.begin()
        let reason = "max-fail 1 exceeded: 2 hosts failed (1 unreachable, 1 already recorded when this controller started)"
        #expect(driver.done(0, .failed) == [.halt(reason)])
    }

    @Test func aResumedRunWithEverythingDoneFinishesAtOnce() {
        var done = Driver(config([[0], [1]]), finished: [0: .succeeded, 1: .succeeded])
        #expect(done.begin() == [.finish(.succeeded)])
        var partial = Driver(config([[0, 1]]) { $0.maxFail = .count(3) }, finished: [0: .succeeded, 1: .failed])
        #expect(partial.begin() == [.finish(.completedWithFailures)])
    }

    // MARK: Robustness

    @Test func unexpectedEventsAreIgnored() {
        var driver = Driver(config([[0, 1]]) { $0.maxParallel = 1 })
        #expect(driver.done(0) == []) // before begin
        #expect(driver.send(.interrupt) == [])
        #expect(driver.send(.abort) == [])
        #expect(driver.begin() == [.start(0)])
        #expect(driver.begin() == [])
        #expect(driver.done(1) == []) // not in flight
        #expect(driver.done(0) == [.start(1)])
        #expect(driver.done(0) == []) // twice
        #expect(driver.policy.counts == {
            var counts = Policy.Counts()
            counts.succeeded = 1
            counts.inFlight = 1
            return counts
        }())
    }

    // MARK: Properties

    @Test func randomRunsKeepEveryInvariant() {
        var random = FuzzRandom(seed: 2026)
        for run in 0..<600 {
            let log = Simulation.run(seed: random.next(), index: run)
            // Same configuration and same events: same actions.
            #expect(Simulation.run(seed: log.seed, index: run).actions == log.actions)
        }
    }
}

/// A seeded random run of the policy against a model engine that checks every invariant
/// on every action list.
private struct Simulation {
    var seed: UInt64
    var actions: [[Policy.Action]] = []

    static func run(seed: UInt64, index: Int) -> Simulation {
        var random = FuzzRandom(seed: seed)
        var simulation = Simulation(seed: seed)
        let count = Int.random(in: 0...30, using: &random)
        let targeted = count + Int.random(in: 0...3, using: &random)
        let spec: BatchSpec? = [nil, BatchSpec(sizes: [.count(Int.random(in: 1...8, using: &random))]),
                                BatchSpec(sizes: [.count(1), .percent(Double(Int.random(in: 10...50, using: &random)))])]
            .randomElement(using: &random)!
        let canaryCount = Bool.random(using: &random) ? Int.random(in: 1...3, using: &random) : nil
        let batches = BatchSpec.batches(count: count, spec: spec, canary: canaryCount, targeted: targeted)
        var config = Policy.Config(batches: batches, targeted: targeted)
        config.canary = canaryCount != nil && count > 0
        config.maxParallel = Bool.random(using: &random) ? nil : Int.random(in: 1...5, using: &random)
        config.maxPer = (0..<Int.random(in: 0...2, using: &random)).map { number in
            let pool: [String?] = [nil, "a", "b", "c"]
            return .init(variable: "v\(number)", limit: Int.random(in: 1...2, using: &random),
                         values: (0..<count).map { _ in pool.randomElement(using: &random)! })
        }
        config.maxFail = Bool.random(using: &random) ? .count(Int.random(in: 0...6, using: &random))
            : .percent([10, 25, 50, 100].randomElement(using: &random)!)
        config.maxFailBatch = Bool.random(using: &random) ? nil : [34, 50, 75].randomElement(using: &random)!
        config.unreachableCounts = Bool.random(using: &random)
        config.onHalt = Bool.random(using: &random) ? .drain : .stop
        config.pause = Bool.random(using: &random) ? 0 : 30
        config.confirm = Int.random(in: 0..<4, using: &random) == 0
        if Int.random(in: 0..<3, using: &random) == 0 {
            config.window = .init(start: t0.addingTimeInterval(Double(Int.random(in: 0...100, using: &random))),
                                  end: t0.addingTimeInterval(Double(Int.random(in: 200...3000, using: &random))))
        }
        var preset: [Int: Policy.HostResult] = [:]
        if Bool.random(using: &random) {
            for host in 0..<count where Int.random(in: 0..<4, using: &random) == 0 {
                preset[host] = Int.random(in: 0..<8, using: &random) == 0 ? .failed : .succeeded
            }
        }
        let context = "run \(index) seed \(seed)"

        var policy = Policy(config: config, finished: preset)
        var model = Model(config: config, preset: preset)
        var now = t0
        var events = 0

        func deliver(_ event: Policy.Event) {
            let actions = policy.handle(event, now: now)
            simulation.actions.append(actions)
            model.check(event, actions, now: now, context: context)
        }

        deliver(.begin)
        while !model.finished {
            events += 1
            if events > 5000 {
                Issue.record("\(context): no finish after 5000 events")
                return simulation
            }
            let roll = Int.random(in: 0..<100, using: &random)
            if roll < 2 {
                deliver(.pause)
            } else if roll < 4 && count > 0 {
                deliver(.skip(Int.random(in: 0..<count, using: &random)))
            } else if roll < 6 {
                deliver(.setMaxParallel(Int.random(in: 0...4, using: &random)))
            } else if roll == 6 && Int.random(in: 0..<5, using: &random) == 0 {
                deliver(.abort)
            } else if roll == 7 && Int.random(in: 0..<5, using: &random) == 0 {
                deliver(.interrupt)
            } else if model.paused && roll < 30 {
                deliver(.resume)
            } else if model.asked != nil && roll < 50 {
                deliver(.confirmed(Int.random(in: 0..<10, using: &random) > 0))
            } else if !model.inFlight.isEmpty {
                let host = model.inFlight.sorted()[Int.random(in: 0..<model.inFlight.count, using: &random)]
                let duration = Double(Int.random(in: 1...400, using: &random))
                now = now.addingTimeInterval(Double(Int.random(in: 0...200, using: &random)))
                let result: Policy.HostResult = switch Int.random(in: 0..<10, using: &random) {
                case 0: .failed
                case 1: .unreachable
                default: .succeeded
                }
                deliver(.hostFinished(host, result, duration: duration))
            } else if let wake = model.wakes.min() {
                now = max(now, wake)
                model.wakes = model.wakes.filter { $0 > now }
                deliver(.tick)
            } else if model.paused {
                deliver(.resume)
            } else if model.asked != nil {
                deliver(.confirmed(true))
            } else {
                Issue.record("\(context): stuck: nothing in flight, no wake-up, no question, not paused")
                return simulation
            }
        }
        // After the finish, nothing happens any more.
        for event: Policy.Event in [.tick, .resume, .begin, .confirmed(true), .setMaxParallel(9), .skip(0), .abort] {
            let late = policy.handle(event, now: now)
            #expect(late.isEmpty, "\(context): \(late) after finish")
        }
        return simulation
    }
}

/// What an engine would know, and the invariants every action list must keep.
private struct Model {
    let config: Policy.Config
    let preset: [Int: Policy.HostResult]
    let batchOf: [Int: Int]
    var maxParallel: Int?
    var inFlight: Set<Int> = []
    var started: Set<Int> = []
    var skipped: Set<Int> = []
    var results: [Int: Policy.HostResult]
    var durations: [TimeInterval] = []
    var wakes: Set<Date> = []
    var asked: Int?
    var paused = false
    var halted: String?
    var interrupted = false
    var finished = false

    init(config: Policy.Config, preset: [Int: Policy.HostResult]) {
        self.config = config
        self.preset = preset
        results = preset
        maxParallel = config.maxParallel
        var batchOf: [Int: Int] = [:]
        for (index, batch) in config.batches.enumerated() { for host in batch { batchOf[host] = index } }
        self.batchOf = batchOf
    }

    func failures() -> Int {
        results.values.filter { $0 == .failed || ($0 == .unreachable && config.unreachableCounts) }.count
    }

    func median() -> TimeInterval? {
        guard !durations.isEmpty else { return nil }
        let sorted = durations.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    mutating func check(_ event: Policy.Event, _ actions: [Policy.Action], now: Date, context: String) {
        let failuresBefore = failures()
        switch event {
        case .hostFinished(let host, let result, let duration):
            #expect(inFlight.remove(host) != nil, "\(context): finished a host not in flight")
            results[host] = result
            durations.append(duration)
        case .pause: paused = true
        case .resume: paused = false
        case .skip(let host):
            if batchOf[host] != nil && !started.contains(host) && preset[host] == nil { skipped.insert(host) }
        case .setMaxParallel(let limit): maxParallel = max(1, limit)
        case .confirmed: asked = nil
        case .interrupt: interrupted = true
        default: break
        }

        // A threshold crossed by this event halts in this very action list.
        if case .hostFinished = event, halted == nil, case .count(let limit) = config.maxFail,
           failures() > limit, failuresBefore <= limit {
            #expect(actions.contains { if case .halt = $0 { true } else { false } }, "\(context): \(failures()) failures, no halt")
        }

        for (position, action) in actions.enumerated() {
            #expect(!finished, "\(context): \(action) after finish")
            switch action {
            case .start(let host):
                #expect(halted == nil, "\(context): start after halt")
                #expect(!interrupted, "\(context): start after a signal")
                #expect(!paused, "\(context): start while paused")
                #expect(!started.contains(host), "\(context): host \(host) started twice")
                #expect(preset[host] == nil && !skipped.contains(host), "\(context): host \(host) was done or skipped")
                guard let batch = batchOf[host] else {
                    Issue.record("\(context): host \(host) is in no batch")
                    continue
                }
                for earlier in config.batches[..<batch].joined() {
                    #expect(results[earlier] != nil || skipped.contains(earlier), "\(context): host \(host) started before batch \(batch - 1) ended")
                }
                #expect(inFlight.allSatisfy { batchOf[$0] == batch }, "\(context): two batches in flight")
                if let window = config.window {
                    #expect(now >= window.start && now < window.end, "\(context): start outside the window")
                    if let median = median() { #expect(window.end.timeIntervalSince(now) > median, "\(context): too late to start") }
                }
                started.insert(host)
                inFlight.insert(host)
                if let maxParallel { #expect(inFlight.count <= maxParallel, "\(context): \(inFlight.count) in flight") }
                for rule in config.maxPer {
                    guard let value = rule.value(of: host) else { continue }
                    #expect(inFlight.filter { rule.value(of: $0) == value }.count <= max(1, rule.limit), "\(context): max-per \(rule.variable)")
                }
            case .wakeAt(let date):
                #expect(date > now, "\(context): wake-up in the past")
                #expect(!wakes.contains(date), "\(context): same wake-up asked twice")
                wakes.insert(date)
            case .askConfirmation(let batch):
                #expect(config.confirm && batch > 0 && asked == nil, "\(context): unexpected question")
                #expect(!paused, "\(context): question while paused")
                asked = batch
            case .halt(let reason):
                #expect(halted == nil, "\(context): halted twice")
                halted = reason
            case .stopInFlight:
                #expect(config.onHalt == .stop && !inFlight.isEmpty, "\(context): stopInFlight")
                #expect(position > 0 && actions[position - 1] == .halt(halted ?? ""), "\(context): stopInFlight not right after halt")
            case .finish(let outcome):
                #expect(position == actions.count - 1, "\(context): finish is not the last action")
                #expect(inFlight.isEmpty, "\(context): finish with hosts in flight")
                finished = true
                switch outcome {
                case .halted(let reason):
                    #expect(reason == halted, "\(context): halted outcome without halt")
                case .succeeded, .completedWithFailures:
                    #expect(halted == nil, "\(context): \(outcome) after a halt")
                    for host in config.batches.joined() {
                        #expect(results[host] != nil || skipped.contains(host), "\(context): host \(host) never ran")
                    }
                    #expect((outcome == .succeeded) == results.values.allSatisfy { $0 == .succeeded }, "\(context): \(outcome)")
                    if case .count(let limit) = config.maxFail { #expect(failures() <= limit, "\(context): over the threshold") }
                case .stopped:
                    #expect(halted == nil, "\(context): stopped after a halt")
                    let remaining = config.batches.joined().filter { results[$0] == nil && !skipped.contains($0) }
                    #expect(!remaining.isEmpty, "\(context): stopped with nothing left to run")
                }
            }
        }
    }
}
