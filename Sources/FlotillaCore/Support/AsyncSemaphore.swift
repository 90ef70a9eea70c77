/// A lock tasks wait for without blocking a thread, granted in arrival order.
/// At most `permits` holders at once; the others wait in order. With one permit, a lock.
public actor AsyncSemaphore {
    private var free: Int
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
