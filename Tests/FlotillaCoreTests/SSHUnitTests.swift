import Foundation
import Glibc
import CLibSSH2
@testable import SSH
import Testing

@Suite struct TailBufferTests {
    @Test func keepsTheLastBytesAndCountsAll() {
        var tail = TailBuffer(limit: 5)
        tail.append(Array("abc".utf8))
        #expect(tail.text == "abc" && !tail.truncated)
        tail.append(Array("defg".utf8))
        #expect(tail.text == "cdefg" && tail.total == 7 && tail.truncated)
        tail.append(Array("0123456789".utf8))
        #expect(tail.text == "56789" && tail.total == 17)
        tail.append(Array("x".utf8))
        #expect(tail.text == "6789x")
    }

    @Test func invalidUTF8BecomesReplacementCharacters() {
        var tail = TailBuffer(limit: 16)
        tail.append([0x61, 0xff, 0x62])
        #expect(tail.bytes == [0x61, 0xff, 0x62])
        #expect(tail.text == "a\u{FFFD}b")
    }
}

/// The event loop on real descriptors (a pipe), no sleeping: readiness, deadlines and
/// cancellation each resume the waiting task.
/// Their bounds are measured on the loop, which needs no thread of the shared pool, so
/// they run in the shared test process however busy its pool is.
@Suite struct EventLoopTests {
    let loop = EventLoop(name: "test-loop")

    @Test func resumesWhenTheDescriptorIsReady() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let readEnd = fds[0]
        async let waited: Void = loop.wait(for: readEnd, events: .readable, until: .now + .seconds(30))
        #expect(write(fds[1], "x", 1) == 1)
        try await waited
        var byte: UInt8 = 0
        #expect(read(fds[0], &byte, 1) == 1 && byte == UInt8(ascii: "x"))
    }

    @Test func deadlineThrowsTimedOut() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let start = ContinuousClock.now
        await #expect(throws: EventLoop.TimedOut.self) {
            try await loop.wait(for: fds[0], events: .readable, until: .now + .milliseconds(50))
        }
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    @Test func cancellationResumesTheWaiter() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let loop = self.loop
        let read = fds[0]
        let task = Task { try await loop.wait(for: read, events: .readable, until: nil) }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    /// `wakeWaiters(on:)` resumes a task waiting on a descriptor that never becomes ready
    /// (what one channel of a session does for another whose packet it read).
    @Test func aWakeUpResumesTheWaitersOfItsDescriptor() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let waiter = await OnLoop(loop).startWaiting(on: fds[0])
        loop.wakeWaiters(on: fds[0])
        try await waiter.value
    }

    /// A wait whose ticket was taken before a wake-up is woken by it even when the wait
    /// reaches the loop after it; a ticket taken after the wake-up waits for the descriptor.
    @Test func aWakeUpCoversTheTicketsTakenBeforeIt() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let before = EventLoop.Ticket()
        loop.wakeWaiters(on: fds[0])
        try await loop.wait(for: fds[0], events: .readable, until: .now + .seconds(30), ticket: before)
        await #expect(throws: EventLoop.TimedOut.self) {
            try await loop.wait(for: fds[0], events: .readable, until: .now + .milliseconds(50), ticket: EventLoop.Ticket())
        }
    }

    @Test func anyOfSeveralDescriptors() async throws {
        var a: [Int32] = [0, 0], b: [Int32] = [0, 0]
        #expect(pipe(&a) == 0 && pipe(&b) == 0)
        defer { [a[0], a[1], b[0], b[1]].forEach { close($0) } }
        let (first, second) = (a[0], b[0])
        async let waited: Void = loop.wait(forAnyOf: [(first, .readable), (second, .readable)], until: .now + .seconds(30))
        #expect(write(b[1], "y", 1) == 1)
        try await waited
    }

    /// The mechanism of the stalls once seen in the shared test process: a descriptor the
    /// loop watches is closed behind its back (a double close elsewhere in the process)
    /// while a task waits on it; epoll drops the closed file, the next socket gets the
    /// same number, and the loop, keying its table by number, believed it still watched
    /// it: the new socket's waiter slept until its deadline (the connect timeout).
    @Test func aReusedDescriptorNumberIsWatchedAfterTheOldOneWasClosedUnderAWaiter() async throws {
        let old = try Self.socketPair()
        defer { close(old[1]) }
        let number = old[0]
        let probe = OnLoop(loop)
        let stale = await probe.startWaiting(on: number)
        let fresh = try Self.socketPair() // made while `number` is open, so neither end is `number`
        defer { close(fresh[1]) }
        // Closed behind the loop's back (its waiter still registered) and the number reused,
        // as the next socket() would, in one step: dup2 replaces the file atomically, so no
        // descriptor another test opens meanwhile can take the number and be closed here.
        #expect(dup2(fresh[0], number) == number)
        defer { close(number) }
        close(fresh[0])
        #expect(write(fresh[1], "x", 1) == 1)
        // A bound, not a wait: ready at once, this returns at once; before the fix it
        // threw TimedOut after the whole 20 s.
        try await loop.wait(for: number, events: .readable, until: .now + .seconds(20))
        stale.cancel()
        _ = await stale.result  // woken by the new socket's data or cancelled: either ends it
    }

    /// A descriptor closed through the loop wakes the task still waiting on it, and the
    /// loop forgets it, so its number is free for the next socket.
    @Test func closingThroughTheLoopWakesItsWaiter() async throws {
        let pair = try Self.socketPair()
        defer { close(pair[1]) }
        let probe = OnLoop(loop)
        // Registered and closed in one go on the loop: a busy test process, whose shared
        // pool may not run this test for a while, cannot let the bound pass in between.
        let waiter = await probe.startWaitingThenClose(pair[0], until: .now + .seconds(20))
        await #expect(throws: EventLoop.Closed.self) { try await waiter.value }
    }

    static func socketPair() throws -> [Int32] {
        var fds: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        return fds
    }
}

/// The local side of a download closes its file exactly once, whatever fails.
@Suite struct PartialFileTests {
    /// Before the fix, a download whose rename failed closed its descriptor a second time
    /// on the way out, closing whatever had taken that number meanwhile: in a busy
    /// process, another session's socket.
    @Test func aFailedRenameClosesTheFileOnlyOnce() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("partial-\(UUID().uuidString)")
        let target = dir.appendingPathComponent("target")
        try FileManager.default.createDirectory(at: target.appendingPathComponent("inside"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }  // a temporary directory: leftovers are harmless
        var partial = try PartialFile(beside: target.path)
        // Counted, not observed through a reused number: making another descriptor take
        // the number here would race with the other tests of this process.
        let closes = Closes()
        partial.closeDescriptor = { closes.record($0) }
        let number = partial.fd
        try Array("bytes".utf8).withUnsafeBytes { try partial.write($0) }
        #expect { try partial.commit(mode: 0o600) } throws: { error in
            (error as? PartialFile.Failure)?.message.contains("cannot rename") == true
        }
        partial.discard()
        #expect(closes.closed == [number], "the descriptor is closed once, however the download ends")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["target"], "no partial file is left")
    }

    @Test func aWriteFailureClosesTheFileOnce() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("partial-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }  // a temporary directory: leftovers are harmless
        var partial = try PartialFile(beside: dir.appendingPathComponent("target").path)
        let closes = Closes()
        partial.closeDescriptor = { closes.record($0) }
        let number = partial.fd
        partial.discard()
        partial.discard()
        #expect(closes.closed == [number])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    /// Closes descriptors for real and remembers which.
    final class Closes {
        var closed: [Int32] = []
        func record(_ fd: Int32) -> Int32 {
            closed.append(fd)
            return close(fd)
        }
    }
}

/// Runs on a loop (as a session does), so the waits it starts register in the order
/// they are started.
private actor OnLoop {
    let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(_ loop: EventLoop) { self.loop = loop }

    /// Starts a task waiting for `fd` to be readable; returns once the loop has
    /// registered it (a later wait on a ready descriptor has returned).
    func startWaiting(on fd: Int32, until deadline: ContinuousClock.Instant? = nil) async -> Task<Void, any Error> {
        // Started on the loop itself (its executor preference), never queued on the shared
        // pool: two tasks queued there could reach the loop in either order.
        let waiter = Task(executorPreference: loop) { [loop] in try await loop.wait(for: fd, events: .readable, until: deadline) }
        var ready: [Int32] = [-1, -1]
        socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ready)
        defer { close(ready[0]); close(ready[1]) }
        _ = write(ready[1], "x", 1)
        // Jobs run in order on the loop: the waiter's registration is queued first.
        let barrier = Task(executorPreference: loop) { [loop, ready] in try await loop.wait(for: ready[0], events: .readable, until: .now + .seconds(20)) }
        // Awaited under the loop's preference: a finished task's waiter is otherwise resumed
        // through the shared pool, and a busy pool could hold it past the waiter's deadline.
        _ = await withTaskExecutorPreference(loop) { await barrier.result }
        return waiter
    }

    func startWaitingThenClose(_ fd: Int32, until deadline: ContinuousClock.Instant) async -> Task<Void, any Error> {
        let waiter = await startWaiting(on: fd, until: deadline)
        loop.close(fd)
        return waiter
    }
}

/// known_hosts through libssh2, read once per file: each host sees the lines about it
/// (tabs or spaces, `[name]:port`, hashed lines) and a changed key names its line.
@Suite struct KnownHostsTests {
    static let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

    @Test func eachHostSeesTheLinesAboutIt() throws {
        try LibSSH2.initialize()
        let session = try #require(flotilla_libssh2_session_init())
        defer { libssh2_session_free(session) }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("known_hosts-\(UUID().uuidString)").path
        defer { unlink(file) }
        let other = "AAAAC3NzaC1lZDI1NTE5AAAAIBFf9oVHxUCbGgeeuGoHVfS0Ffj3JzLa7TKtJ3S2dc0Q"
        try """
            # fleet
            other ssh-ed25519 \(other)
            st2-01\tssh-ed25519\t\(Self.key)
            [st2-02]:2222 ssh-ed25519 \(Self.key)
            *.lab ssh-ed25519 \(Self.key)

            """.write(toFile: file, atomically: true, encoding: .utf8)
        let ed25519 = try #require(HostKeyType.all.first { $0.name == "ssh-ed25519" })
        func check(_ host: String, _ port: Int, _ base64: String) throws -> KnownHosts.Check {
            let raw = try #require(Data(base64Encoded: base64))
            return try raw.withUnsafeBytes { bytes in
                try KnownHosts(file: file, address: host, port: port, session: session)
                    .check(address: host, port: port, key: bytes.baseAddress!.assumingMemoryBound(to: CChar.self), length: raw.count, type: ed25519)
            }
        }
        #expect("\(try check("st2-01", 22, Self.key))" == "match")
        #expect("\(try check("st2-01", 22, other))" == "mismatch(line: Optional(3))")
        #expect("\(try check("st2-02", 2222, Self.key))" == "match")
        #expect("\(try check("st2-02", 22, Self.key))" == "notFound")
        // libssh2 1.10 matches plain and hashed names only: a pattern line matches nothing
        // (strict checking then refuses the host, as for any unknown key).
        #expect("\(try check("db.lab", 22, Self.key))" == "notFound")
        #expect("\(try check("st2-03", 22, Self.key))" == "notFound")
        // A file changed since it was read is read again.
        try "st2-03 ssh-ed25519 \(Self.key)\n".write(toFile: file, atomically: false, encoding: .utf8)
        #expect("\(try check("st2-03", 22, Self.key))" == "match")
        #expect("\(try check("st2-01", 22, Self.key))" == "notFound")
    }
}
