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

    @Test func anyOfSeveralDescriptors() async throws {
        var a: [Int32] = [0, 0], b: [Int32] = [0, 0]
        #expect(pipe(&a) == 0 && pipe(&b) == 0)
        defer { [a[0], a[1], b[0], b[1]].forEach { close($0) } }
        let (first, second) = (a[0], b[0])
        async let waited: Void = loop.wait(forAnyOf: [(first, .readable), (second, .readable)], until: .now + .seconds(30))
        #expect(write(b[1], "y", 1) == 1)
        try await waited
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
