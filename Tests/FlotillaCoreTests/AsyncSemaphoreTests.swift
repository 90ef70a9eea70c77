import Testing
@testable import FlotillaCore

/// The semaphore behind cluster locks (one permit) and the connection gate (32).
@Suite struct AsyncSemaphoreTests {
    actor Counter {
        var now = 0, most = 0, done = 0
        func enter() { now += 1; most = max(most, now) }
        func leave() { now -= 1; done += 1 }
    }

    @Test(arguments: [1, 3]) func neverMoreHoldersThanPermits(permits: Int) async {
        let semaphore = AsyncSemaphore(permits: permits)
        let counter = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    await semaphore.acquire()
                    await counter.enter()
                    await Task.yield() // let the others pile up behind the permits
                    await counter.leave()
                    await semaphore.release()
                }
            }
        }
        let (most, done) = (await counter.most, await counter.done)
        #expect(most == permits && done == 20)
    }

    /// `withPermit` gives the permit back when its body throws, as when it returns.
    @Test func withPermitGivesThePermitBackEitherWay() async throws {
        struct Failed: Error {}
        let semaphore = AsyncSemaphore(permits: 1)
        await #expect(throws: Failed.self) { try await semaphore.withPermit { throw Failed() } }
        try #require(await semaphore.free == 1)
        #expect(await semaphore.withPermit { await semaphore.free } == 0)
        #expect(await semaphore.free == 1)
    }
}
