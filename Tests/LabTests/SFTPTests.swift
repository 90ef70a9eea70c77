import FlotillaCore
import Foundation
import SSH
import Testing
@testable import flotilla_lab

/// The SSH module itself on a lab host: SFTP transfers, stdin and output streams, scoped
/// sessions, and sessions that need no thread of the shared pool. They run in the shared
/// test process, beside tests that block its pool with synchronous waits for programs.
@Suite struct SFTPTests {
    static func options(_ lab: TestLab, host: String) throws -> SSHSession.Options {
        let inventory = try Inventory.load(sources: [lab.path("inventory.ini")])
        let vars = try #require(inventory.host(named: host)?.variables)
        var options = SSHSession.Options(name: host, address: vars["ansible_host"]!.value.scalarText!,
                                         port: Int(vars["ansible_port"]!.value.scalarText!)!, user: vars["ansible_user"]?.value.scalarText ?? "root",
                                         knownHostsFile: lab.path("known_hosts"))
        options.identityFiles = [lab.path("id_ed25519")]
        options.useAgent = false
        options.connectTimeout = .seconds(30)
        return options
    }

    static func session(_ lab: TestLab, host: String) async throws -> SSHSession {
        try await SSHSession.connect(options(lab, host: host))
    }

    /// `body`'s value, or nil when `bound` passed first (then `body` is cancelled): a hang
    /// must not hang the test run.
    static func within<T: Sendable>(_ bound: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await body() }
            group.addTask {
                // The bound of a hang, not a wait for an event: the body's end is awaited.
                try? await Task.sleep(for: bound)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// A scoped session is closed however its body ends: a later command finds it closed.
    @Test func withSessionClosesWhenTheBodyThrowsOrIsCancelled() async throws {
        struct Stop: Error {}
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let options = try Self.options(lab, host: "deb")
        let (started, startedContinuation) = AsyncStream.makeStream(of: SSHSession.self)
        let thrown = Task {
            try await SSHSession.withSession(options) { session in
                startedContinuation.yield(session)
                throw Stop()
            }
        }
        let cancelled = Task {
            try await SSHSession.withSession(options) { session in
                startedContinuation.yield(session)
                return try await session.run("sleep 600")
            }
        }
        var sessions: [SSHSession] = []
        for await session in started {
            sessions.append(session)
            if sessions.count == 2 { break }
        }
        cancelled.cancel()
        await #expect(throws: Stop.self) { try await thrown.value }
        await #expect(throws: (any Error).self) { try await cancelled.value }
        for session in sessions {
            await #expect { _ = try await session.run("true") } throws: { ($0 as? SSHError)?.code == .notStarted }
        }
    }

    /// A session connects and runs a command while every thread of the shared pool is
    /// blocked (as the tests' synchronous waits for programs block them): connecting,
    /// reading and every deadline run on the event loops, so a busy pool can delay the
    /// caller but never make a session's deadline pass.
    @Test func aSessionNeedsNoThreadOfTheSharedPool() async throws {
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let options = try Self.options(lab, host: "deb")
        let outcome = await PoolBlockade.run(bound: .seconds(60)) { _ in
            do {
                let session = try await SSHSession.connect(options)
                let result = try await session.run("echo alive")
                await session.close()
                return result.stdout.text
            } catch {
                return "failed: \(error)"
            }
        }
        #expect(!outcome.poolRanMeanwhile, "the pool was not blocked: the test proves nothing")
        #expect(outcome.value == "alive\n", "\(outcome.value ?? "no outcome within the bound: the session waited for the pool")")
    }

    /// Many channels of one session at once, opening, starting and reading while the
    /// others do: a packet for one channel that another channel's call pulled off the socket
    /// must still wake its channel. No keepalive (whose timer would wake a lost waiter
    /// after 15 s) and no deadline: a lost wake-up hangs until the bound.
    @Test func channelsOfOneSessionWakeEachOther() async throws {
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        var options = try Self.options(lab, host: "deb")
        options.keepalive = nil
        let session = try await SSHSession.connect(options)
        let outcome = await Self.within(.seconds(120)) {
            await withTaskGroup(of: [String].self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        var answers: [String] = []
                        for round in 0..<25 {
                            let pause = (lane * 7 + round) % 4 == 0 ? "sleep 0.0$((RANDOM % 9));" : ""
                            do {
                                answers.append(try await session.run("\(pause) echo \(lane).\(round)").stdout.text)
                            } catch {
                                answers.append("failed: \(error)")
                            }
                        }
                        return answers
                    }
                }
                return await group.reduce(into: []) { $0 += $1 }
            }
        }
        let answers = try #require(outcome, "a channel never woke up: no answer within the bound")
        #expect(answers.count == 200)
        #expect(Set(answers) == Set((0..<8).flatMap { lane in (0..<25).map { "\(lane).\($0)\n" } }), "\(answers.filter { $0.hasPrefix("failed") }.prefix(3))")
        await session.close()
    }

    @Test func stdinReachesTheCommandAndStreamsStaySeparate() async throws {
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let session = try await Self.session(lab, host: "el7")
        let input = Array("secret line\n".utf8) + [0xff, 0x00, 0x0a]
        let result = try await session.run("cat; echo done >&2; exit 7", stdin: input)
        #expect(result.stdout.bytes == input)
        #expect(result.stderr.text == "done\n")
        #expect(result.exitStatus == 7 && !result.timedOut)
        await session.close()
    }

    @Test func roundTripKeepsBytesAndModeAndLeavesNoPartialFile() async throws {
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let session = try await Self.session(lab, host: "deb")
        let local = lab.dir.appendingPathComponent("payload")
        let bytes = (0..<(3 * 1024 * 1024 + 17)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        try Data(bytes).write(to: local)
        chmod(local.path, 0o640)
        // Relative paths are in the login user's home, the host's own (the lab's hosts share
        // the machine's /tmp).
        let sent = try await session.upload(local.path, to: "payload")
        #expect(sent == bytes.count)
        let remote = try lab.ssh("deb", "stat -c '%a %s' ~/payload; ls -a ~ | grep -c partial || true")
        #expect(remote.stdout == "640 \(bytes.count)\n0\n", "\(remote.stdout)\(remote.stderr)")

        let back = lab.dir.appendingPathComponent("back/payload")
        try FileManager.default.createDirectory(at: back.deletingLastPathComponent(), withIntermediateDirectories: true)
        let received = try await session.download("payload", to: back.path)
        #expect(received == bytes.count)
        #expect(try Data(contentsOf: back) == Data(bytes))
        let mode = try FileManager.default.attributesOfItem(atPath: back.path)[.posixPermissions] as? Int
        #expect(mode == 0o640)

        // Overwriting an existing remote file replaces it whole.
        try Data("new\n".utf8).write(to: local)
        _ = try await session.upload(local.path, to: "payload", mode: 0o600)
        #expect(try lab.ssh("deb", "cat ~/payload; stat -c %a ~/payload").stdout == "new\n600\n")

        await #expect { _ = try await session.download("/tmp/nosuch", to: back.path + "2") } throws: { error in
            (error as? SSHError)?.code == .sftp && "\(error)".contains("no such file")
        }
        await #expect { _ = try await session.upload(local.path, to: "/nosuch-dir/x") } throws: { error in
            (error as? SSHError)?.code == .sftp
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: back.deletingLastPathComponent().path)
        #expect(leftovers == ["payload"], "no partial download is left behind: \(leftovers)")
        await session.close()
    }

    /// A download whose rename fails (the target is a non-empty directory) says so, leaves
    /// no partial file, and closes nothing but its own file: the sessions still work.
    @Test func aFailedRenameLeavesOtherSessionsWorking() async throws {
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let session = try await Self.session(lab, host: "deb")
        let other = try await Self.session(lab, host: "el7")
        let target = lab.dir.appendingPathComponent("occupied")
        try FileManager.default.createDirectory(at: target.appendingPathComponent("inside"), withIntermediateDirectories: true)
        _ = try await session.run("printf data > small")
        await #expect { _ = try await session.download("small", to: target.path) } throws: { error in
            (error as? SSHError)?.code == .sftp && "\(error)".contains("cannot rename")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: target.path) == ["inside"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: lab.dir.path).allSatisfy { !$0.contains(".partial-") })
        #expect(try await other.run("echo alive").stdout.text == "alive\n")
        #expect(try await session.run("echo alive").stdout.text == "alive\n")
        await other.close()
        await session.close()
    }
}
