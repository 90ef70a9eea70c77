import CLibSSH2
import Glibc
import Synchronization

/// A thread that runs Swift jobs and waits on sockets with epoll: the executor every
/// SSH session runs on. A session is an actor whose executor is its loop, so all of its
/// libssh2 calls happen on that one thread; when libssh2 would block, the session
/// suspends on ``wait(for:events:until:)`` and the loop resumes it when the socket is
/// ready or the deadline passes. No thread is blocked per host and nothing spins, and
/// nothing waits for a thread of Swift's shared pool.
/// Waits are registered through the same locked queue as jobs, so the loop's tables
/// are only ever touched by the loop thread.
public final class EventLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: `pending` is guarded by its Mutex; every other mutable
    // property is touched only on the loop thread (by the loop itself, or by jobs it runs).

    /// The deadline of a wait passed.
    public struct TimedOut: Error {}

    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: UInt32(EPOLLIN.rawValue))
        public static let writable = Events(rawValue: UInt32(EPOLLOUT.rawValue))
    }

    private struct Pending {
        var jobs: [UnownedJob] = []
        var registrations: [(UInt64, Waiter)] = []
        var cancelled: [UInt64] = []
        /// ``wakeWaiters(on:)``: a descriptor and the last waiter id issued then.
        var wakeUps: [(fd: Int32, upTo: UInt64)] = []
    }

    private struct Waiter {
        /// Descriptors and the events wanted on each; any one of them ready wakes it.
        var interests: [(fd: Int32, events: UInt32)]
        var deadline: ContinuousClock.Instant?
        var continuation: UnsafeContinuation<Void, any Error>

        func events(on fd: Int32) -> UInt32 { interests.first { $0.fd == fd }?.events ?? 0 }
    }

    private let epoll: Int32
    private let wakeFD: Int32
    private let pending = Mutex(Pending())
    private var waiters: [UInt64: Waiter] = [:]
    private var waitersByFD: [Int32: Set<UInt64>] = [:]
    private var interest: [Int32: UInt32] = [:]
    private var cancelledBeforeRegistration: Set<UInt64> = []
    /// Per descriptor, the last waiter id a ``wakeWaiters(on:)`` covered. A wait's
    /// registration can reach the loop after a wake-up meant for it (its task hopped to the
    /// loop as a job of its own first), so a registration that comes late is woken on
    /// arrival.
    private var wokenUpTo: [Int32: UInt64] = [:]
    fileprivate static let waiterIDs = Atomic<UInt64>(0)

    /// Starts a loop on its own thread; it runs for the life of the process.
    public init(name: String = "flotilla-ssh") {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        precondition(epoll >= 0 && wakeFD >= 0, "cannot create the event loop: \(String(cString: strerror(errno)))")
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: wakeFD))
        precondition(epoll_ctl(epoll, EPOLL_CTL_ADD, wakeFD, &event) == 0, "cannot watch the event loop's wake-up descriptor")
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { argument in
            let loop = Unmanaged<EventLoop>.fromOpaque(argument!).takeRetainedValue()
            loop.run()
            return nil
        }, box.toOpaque())
        precondition(created == 0, "cannot start the event loop thread")
        pthread_detach(thread)
    }

    /// Loops shared by the whole process: one per core, at most four.
    public static let shared: [EventLoop] = {
        let count = max(1, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        return (0..<count).map { EventLoop(name: "flotilla-ssh-\($0)") }
    }()

    private static let counter = Atomic<Int>(0)

    /// The next shared loop, round robin.
    public static func next() -> EventLoop {
        shared[counter.wrappingAdd(1, ordering: .relaxed).oldValue % shared.count]
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        pending.withLock { $0.jobs.append(unowned) }
        wake()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// As a task executor (see ``wait(forAnyOf:until:isolation:)``) the loop runs a job as it
    /// runs the jobs of its sessions: on its thread, one at a time.
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Suspends until `fd` is ready for `events` (an error or hang-up also wakes it).
    /// May be called from any context: the loop thread does the registering.
    ///
    /// - Throws: ``TimedOut`` when `deadline` passes first; `CancellationError` when the
    ///   task is cancelled.
    ///
    /// It runs in the caller's isolation (a session, on this loop): registering never waits
    /// for a thread of the shared pool, which a busy process may have none of to spare.
    public func wait(for fd: Int32, events: Events, until deadline: ContinuousClock.Instant?, ticket: Ticket? = nil,
                     isolation: isolated (any Actor)? = #isolation) async throws {
        try await wait(forAnyOf: fd >= 0 ? [(fd, events)] : [], until: deadline, ticket: ticket)
    }

    /// A wait's place in line, taken before the call that found nothing to do: a
    /// ``wakeWaiters(on:)`` after it wakes the wait, even when the waiting task reaches the
    /// loop later (entering the wait can hop through the loop's queue first).
    public struct Ticket: Sendable {
        fileprivate let id: UInt64
        public init() { id = EventLoop.waiterIDs.wrappingAdd(1, ordering: .relaxed).newValue }
    }

    /// Suspends until any of `interests` is ready (or the deadline passes).
    ///
    /// Neither registering nor resuming needs a thread of the shared pool. Two hops to it
    /// hid here, and a pool whose threads were all blocked (the test process's synchronous
    /// waits for the programs it starts) held every session's waits, so their deadlines
    /// passed on an idle loop:
    /// - the operation closure did not capture `isolation`, so it was nonisolated (a closure
    ///   runs in an isolated parameter's actor only if it captures it, SE-0420) and
    ///   registering ran on the pool; `isolation:` is now passed explicitly;
    /// - a continuation resumes on the generic executor and only then hops to the caller's
    ///   actor; with this loop as the task's executor preference, "generic" is this loop.
    public func wait(forAnyOf interests: [(fd: Int32, events: Events)], until deadline: ContinuousClock.Instant?, ticket: Ticket? = nil,
                     isolation: isolated (any Actor)? = #isolation) async throws {
        try Task.checkCancellation()
        let id = (ticket ?? Ticket()).id
        try await withTaskExecutorPreference(self, isolation: isolation) {
            try await withTaskCancellationHandler(operation: {
                try await withUnsafeThrowingContinuation(isolation: isolation) { (continuation: UnsafeContinuation<Void, any Error>) in
                    let waiter = Waiter(interests: interests.map { ($0.fd, $0.events.rawValue) }, deadline: deadline, continuation: continuation)
                    pending.withLock { $0.registrations.append((id, waiter)) }
                    wake()
                }
            }, onCancel: {
                pending.withLock { $0.cancelled.append(id) }
                wake()
            }, isolation: isolation)
        }
    }

    /// Wakes the tasks that wait on `fd` now (not those that start waiting later), as if it
    /// were ready: they try again. For a socket several tasks share (channels of one SSH
    /// session), when one of them read what the others wait for into a buffer of its own.
    /// A wait that began before this call is woken even if its registration reaches the
    /// loop after it (``wokenUpTo``).
    public func wakeWaiters(on fd: Int32) {
        guard fd >= 0 else { return }
        let upTo = Self.waiterIDs.load(ordering: .relaxed)
        pending.withLock { $0.wakeUps.append((fd, upTo)) }
        wake()
    }

    /// The descriptor was closed through ``close(_:)`` while a task waited on it.
    public struct Closed: Error {}

    /// Closes `fd` after taking it out of the loop: a task still waiting on it is woken
    /// with ``Closed``, and epoll and the loop's tables forget it before its number can be
    /// reused by the next socket. Call it on the loop's thread (from a session), for every
    /// descriptor that was ever waited on here.
    public func close(_ fd: Int32) {
        precondition(EventLoop.current === self, "a descriptor is closed on the loop that watches it")
        guard fd >= 0 else { return }
        var touched: Set<Int32> = []
        for id in waitersByFD[fd] ?? [] { touched.formUnion(resume(id, throwing: Closed())) }
        waitersByFD[fd] = nil
        wokenUpTo[fd] = nil
        touched.forEach(updateInterest)
        Glibc.close(fd)
    }

    /// Makes epoll's registration of `fd` match what its waiters want.
    ///
    /// The table is keyed by descriptor number, and a number outlives its file: closed
    /// behind the loop's back (a double close elsewhere in the process), the file leaves
    /// epoll and the next socket gets the same number. So a wanted registration is always
    /// re-issued, not trusted from the table: MOD falls back to ADD when epoll no longer
    /// knows the descriptor, ADD to MOD when it still does, and a descriptor epoll refuses
    /// wakes its waiters to find out why.
    private func updateInterest(_ fd: Int32) {
        guard fd >= 0 else { return }
        let wanted = (waitersByFD[fd] ?? []).reduce(UInt32(0)) { $0 | (waiters[$1]?.events(on: fd) ?? 0) }
        var event = epoll_event(events: wanted, data: epoll_data_t(fd: fd))
        if wanted == 0 {
            // The result does not matter: a descriptor already closed has left epoll by itself.
            if interest[fd] != nil { _ = epoll_ctl(epoll, EPOLL_CTL_DEL, fd, &event) }
            interest[fd] = nil
            waitersByFD[fd] = nil
            return
        }
        let (first, fallback, retryOn) = interest[fd] == nil
            ? (EPOLL_CTL_ADD, EPOLL_CTL_MOD, EEXIST)
            : (EPOLL_CTL_MOD, EPOLL_CTL_ADD, ENOENT)
        if epoll_ctl(epoll, first, fd, &event) == 0 || (errno == retryOn && epoll_ctl(epoll, fallback, fd, &event) == 0) {
            interest[fd] = wanted
        } else {
            interest[fd] = nil
            failWaiters(on: fd)
        }
    }

    /// A descriptor epoll refuses (closed, say): wake its waiters so they retry and see
    /// the error themselves.
    private func failWaiters(on fd: Int32) {
        for id in waitersByFD[fd] ?? [] { resume(id, throwing: nil) }
        waitersByFD[fd] = nil
    }

    /// Resumes a waiter; returns the descriptors whose interest may have changed.
    @discardableResult
    private func resume(_ id: UInt64, throwing error: (any Error)?) -> [Int32] {
        guard let waiter = waiters.removeValue(forKey: id) else { return [] }
        for (fd, _) in waiter.interests { waitersByFD[fd]?.remove(id) }
        defer { if let error { waiter.continuation.resume(throwing: error) } else { waiter.continuation.resume() } }
        return waiter.interests.map(\.fd)
    }

    /// The loop whose thread is running the caller, if any.
    public static var current: EventLoop? {
        pthread_getspecific(currentKey).map { Unmanaged<EventLoop>.fromOpaque($0).takeUnretainedValue() }
    }

    private static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    private func run() {
        pthread_setspecific(Self.currentKey, Unmanaged.passUnretained(self).toOpaque())
        var events = [epoll_event](repeating: epoll_event(), count: 128)
        while true {
            let (jobs, registrations, cancelled, wakeUps) = pending.withLock { state in
                defer {
                    state.jobs.removeAll(keepingCapacity: true)
                    state.registrations.removeAll(keepingCapacity: true)
                    state.cancelled.removeAll()
                    state.wakeUps.removeAll()
                }
                return (state.jobs, state.registrations, state.cancelled, state.wakeUps)
            }
            // Run as both executors: a job of a task that prefers this loop (a wait) would
            // otherwise be enqueued again on entering a session, behind later jobs.
            for job in jobs { job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor()) }
            var touched: Set<Int32> = []
            for (fd, upTo) in wakeUps { wokenUpTo[fd] = max(wokenUpTo[fd] ?? 0, upTo) }
            for (id, waiter) in registrations {
                waiters[id] = waiter
                for (fd, _) in waiter.interests {
                    waitersByFD[fd, default: []].insert(id)
                    touched.insert(fd)
                }
                if cancelledBeforeRegistration.remove(id) != nil {
                    touched.formUnion(resume(id, throwing: CancellationError()))
                } else if waiter.interests.contains(where: { id <= wokenUpTo[$0.fd] ?? 0 }) {
                    touched.formUnion(resume(id, throwing: nil))
                }
            }
            for id in cancelled {
                guard waiters[id] != nil else {
                    cancelledBeforeRegistration.insert(id)
                    continue
                }
                touched.formUnion(resume(id, throwing: CancellationError()))
            }
            for (fd, upTo) in wakeUps {
                for id in waitersByFD[fd] ?? [] where id <= upTo { touched.formUnion(resume(id, throwing: nil)) }
            }
            let now = ContinuousClock.now
            for (id, waiter) in waiters {
                if let deadline = waiter.deadline, deadline <= now {
                    touched.formUnion(resume(id, throwing: TimedOut()))
                }
            }
            touched.forEach(updateInterest)
            let hasJobs = pending.withLock { !$0.jobs.isEmpty || !$0.cancelled.isEmpty || !$0.registrations.isEmpty || !$0.wakeUps.isEmpty }
            var timeout: Int32 = -1
            if hasJobs {
                timeout = 0
            } else if let nearest = waiters.values.compactMap(\.deadline).min() {
                let (seconds, attoseconds) = (nearest - ContinuousClock.now).components
                let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
                timeout = Int32(clamping: max(0, milliseconds))
            }
            let count = epoll_wait(epoll, &events, Int32(events.count), timeout)
            guard count > 0 else { continue }
            for index in 0..<Int(count) {
                let fd = events[index].data.fd
                if fd == wakeFD {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    continue
                }
                let ready = events[index].events
                let failed = ready & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
                var touched: Set<Int32> = [fd]
                for id in waitersByFD[fd] ?? [] where failed || (waiters[id].map { $0.events(on: fd) & ready != 0 } ?? false) {
                    touched.formUnion(resume(id, throwing: nil))
                }
                touched.forEach(updateInterest)
            }
        }
    }
}
