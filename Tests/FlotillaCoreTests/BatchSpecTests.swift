import Foundation
import Testing
@testable import FlotillaCore

@Suite struct BatchSpecTests {
    /// The batch sizes for `count` upgrade hosts out of `targeted`.
    func sizes(_ spec: String?, count: Int, targeted: Int? = nil, canary: Int? = nil) throws -> [Int] {
        let parsed = try spec.map { try BatchSpec(parsing: $0) }
        let batches = BatchSpec.batches(count: count, spec: parsed, canary: canary, targeted: targeted ?? count)
        // Every host exactly once, in order.
        #expect(batches.flatMap { $0 } == Array(0..<count))
        return batches.map(\.count)
    }

    @Test func parsesCountsPercentagesAndRamps() throws {
        #expect(try BatchSpec(parsing: "5").sizes == [.count(5)])
        #expect(try BatchSpec(parsing: "25%").sizes == [.percent(25)])
        #expect(try BatchSpec(parsing: "1,5,25%").sizes == [.count(1), .count(5), .percent(25)])
        #expect(try BatchSpec(parsing: " 1 , 12.5% ").sizes == [.count(1), .percent(12.5)])
        #expect(try BatchSpec(parsing: "100%").sizes == [.percent(100)])
        #expect(try BatchSpec(parsing: "1,5,25%").description == "1,5,25%")
        #expect(try BatchSpec(parsing: "2,12.5%").description == "2,12.5%")
    }

    @Test(arguments: ["0", "-1", "0%", "101%", "-5%", "a", "1,,2", "", "5,", "%", "2.5", "1 2", "nan%", "inf%"])
    func rejectsWhatIsNotABatchSize(_ text: String) {
        #expect(throws: BatchSpec.ParseError.self) { try BatchSpec(parsing: text) }
    }

    @Test func parseErrorNamesTheWrongPart() {
        do {
            _ = try BatchSpec(parsing: "1,,2")
            Issue.record("'1,,2' parsed")
        } catch let error as BatchSpec.ParseError {
            #expect(error.description == "'' in '1,,2' is not a batch size (a whole number of hosts above 0, or a percentage such as 25%)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
        do {
            _ = try BatchSpec(parsing: "5,101%")
            Issue.record("'5,101%' parsed")
        } catch let error as BatchSpec.ParseError {
            #expect(error.description == "'101%' in '5,101%' is not a percentage from 0 (excluded) to 100%")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func fixedCountRepeats() throws {
        #expect(try sizes("5", count: 12) == [5, 5, 2])
        #expect(try sizes("5", count: 5) == [5])
        #expect(try sizes("50", count: 3) == [3])
    }

    @Test func twentyHostsAtTwentyFivePercentAreFourBatchesOfFive() throws {
        let batches = BatchSpec.batches(count: 20, spec: try BatchSpec(parsing: "25%"), canary: nil, targeted: 20)
        #expect(batches == [Array(0..<5), Array(5..<10), Array(10..<15), Array(15..<20)])
    }

    @Test func rampsAndRepeatsTheLastSize() throws {
        #expect(try sizes("1,5,25%", count: 10) == [1, 5, 2, 2])
        #expect(try sizes("1,2", count: 7) == [1, 2, 2, 2])
        #expect(try sizes("1,5,10", count: 4) == [1, 3])
    }

    @Test func percentagesAreOfTheTargetedHostsRoundedDown() throws {
        // 18 of 20 targeted hosts upgrade: 25% of 20 is 5 (not 25% of 18 = 4).
        #expect(try sizes("25%", count: 18, targeted: 20) == [5, 5, 5, 3])
        // 30% of 10 = 3; of the remaining hosts it would shrink.
        #expect(try sizes("30%", count: 10) == [3, 3, 3, 1])
        // 33% of 10 = 3.3 -> 3 (rounded down, not up).
        #expect(try sizes("33%", count: 10) == [3, 3, 3, 1])
        // 12.5% of 20 = 2.5 -> 2.
        #expect(try sizes("12.5%", count: 6, targeted: 20) == [2, 2, 2])
    }

    @Test func aPercentageBelowOneHostIsOneHost() throws {
        #expect(try sizes("10%", count: 3) == [1, 1, 1])
        #expect(try sizes("1,1%", count: 4, targeted: 50) == [1, 1, 1, 1])
        #expect(BatchSpec.resolve(.percent(1), targeted: 50) == 1)
        #expect(BatchSpec.resolve(.percent(1), targeted: 250) == 2)
    }

    @Test func canaryComesFirst() throws {
        #expect(try sizes("50%", count: 10, canary: 1) == [1, 5, 4])
        #expect(try sizes("1,5,25%", count: 10, canary: 2) == [2, 1, 5, 2])
        let batches = BatchSpec.batches(count: 4, spec: try BatchSpec(parsing: "50%"), canary: 1, targeted: 4)
        #expect(batches == [[0], [1, 2], [3]])
    }

    @Test func canaryWithoutSpecThenTheRestAsOneBatch() throws {
        #expect(try sizes(nil, count: 10, canary: 1) == [1, 9])
        #expect(try sizes(nil, count: 10, canary: 3) == [3, 7])
        #expect(try sizes(nil, count: 2, canary: 5) == [2])
        #expect(try sizes(nil, count: 10, canary: 0) == [10])
        #expect(try sizes(nil, count: 10) == [10])
    }

    @Test func noHostsNoBatches() throws {
        #expect(BatchSpec.batches(count: 0, spec: try BatchSpec(parsing: "25%"), canary: 1, targeted: 3) == [])
        #expect(BatchSpec.batches(count: 0, spec: nil, canary: nil, targeted: 0) == [])
    }
}
