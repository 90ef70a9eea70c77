/// A lock tasks wait for without blocking a thread, granted in arrival order.
/// At most `permits` holders at once; the others wait in order. With one permit, a lock.
public actor AsyncSemaphore {
    /// The permits no one holds.
    private(set) var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(permits: Int) { free = permits }

    /// Returns once the caller holds a permit (at once when one is free).
    public func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Gives a permit back: to the longest waiter, if any.
    public func release() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }
}

extension AsyncSemaphore {
    /// Runs `body` holding a permit, and gives the permit back however `body` ends.
    public nonisolated func withPermit<T>(_ body: () async throws -> T) async rethrows -> T {
        await acquire()
        do {
            let value = try await body()
            await release()
            return value
        } catch {
            await release()
            throw error
        }
    }
}
