import Foundation
import SSH
import Synchronization

/// Runs async code while every thread of Swift's shared (cooperative) pool is blocked, as
/// a test's synchronous wait for a program blocks one: the code runs on an actor of an
/// event loop of its own, started from a plain thread, so it can only finish if it never
/// needs a thread of the pool.
enum PoolBlockade {
    /// An actor on an event loop of its own: the code under the blockade runs here.
    actor Driver {
        let loop = EventLoop(name: "pool-blockade")
        nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

        func run<T: Sendable>(_ body: @Sendable (isolated Driver) async -> T, then done: @Sendable (T) -> Void) async {
            done(await body(self))
        }
    }

    /// A box that lets escaping closures share an atomic or a mutex.
    final class Shared<Value: ~Copyable & Sendable>: Sendable {
        let value: Value
        init(_ value: consuming Value) { self.value = value }
    }

    struct Outcome<T: Sendable>: Sendable {
        /// What `body` returned; nil when it had not finished within the bound.
        var value: T?
        /// Whether a job queued behind the blockers ran while `body` did: if it did, the
        /// pool was not fully blocked and the outcome proves nothing.
        var poolRanMeanwhile: Bool
    }

    /// Blocks the pool (more blocked jobs than it can ever have threads, so anything queued
    /// after them waits), runs `body` on a ``Driver``, and lifts the blockade when `body`
    /// has finished or `bound` has passed (a hang must not hang the test run).
    static func run<T: Sendable>(bound: Duration, _ body: @escaping @Sendable (isolated Driver) async -> T) async -> Outcome<T> {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outcome<T>, Never>) in
            Thread.detachNewThread {
                var gate: [Int32] = [-1, -1]
                precondition(pipe(&gate) == 0, "cannot create the blockade's pipe")
                // Far more than the pool's threads: libdispatch adds a few per core when its
                // workers block, never this many.
                let readEnd = gate[0], blockers = 64 + 8 * ProcessInfo.processInfo.activeProcessorCount
                let released = Shared(Atomic<Int>(0))
                for _ in 0..<blockers {
                    Task.detached {
                        // Blocked in read until the write end closes (the result is that end
                        // of file): the pool thread is taken. The last one out closes the pipe.
                        var byte: UInt8 = 0
                        _ = read(readEnd, &byte, 1)
                        if released.value.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue == blockers { close(readEnd) }
                    }
                }
                let probe = Shared(Atomic<Bool>(false))
                Task.detached { probe.value.store(true, ordering: .sequentiallyConsistent) }
                let finished = DispatchSemaphore(value: 0)
                let result = Shared(Mutex<T?>(nil))
                let driver = Driver()
                Task.immediate {
                    // Runs on this thread up to the hop to the driver's loop; the pool is
                    // needed only after `done`, once the blockade is lifted.
                    await driver.run(body) { value in
                        result.value.withLock { $0 = value }
                        finished.signal()
                    }
                }
                let (seconds, attoseconds) = bound.components
                let done = finished.wait(timeout: .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))) == .success
                let outcome = Outcome(value: done ? result.value.withLock { $0 } : nil, poolRanMeanwhile: probe.value.load(ordering: .sequentiallyConsistent))
                close(gate[1])
                continuation.resume(returning: outcome)
            }
        }
    }
}
