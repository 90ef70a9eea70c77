import FlotillaCore
import Foundation
import SSH
import Testing
@testable import flotilla_lab

/// Runs the in-process SSH tests (`SFTPTests` here, `EventLoopTests` in the unit tests)
/// in a test process of their own. In the shared process some 300 tests block the
/// cooperative thread pool (2 threads on a 2-core machine) with synchronous waits for the
/// programs they start (gdb showed both pool threads in `poll`/`wait4` under `runProcess`
/// and `Background.wait`, for minutes, while the SSH event loops sat idle); an in-process
/// session then timed out on its connect deadline though its socket was intact. Two real
/// causes of such stalls were found and fixed (an event loop that trusted a reused
/// descriptor number, a download that closed its file twice: see EventLoopTests and
/// PartialFileTests), but runs on a loaded machine still showed the whole-process stall,
/// so these tests keep their own process. The flotilla binary blocks no pool thread this
/// way and never showed it (up to 1,000 hosts).
@Suite struct SSHModuleInItsOwnProcess {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["FLOTILLA_SSH_MODULE_TESTS"] == nil))
    func sshModuleTestsPass() throws {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var environment = ProcessInfo.processInfo.environment
        environment["FLOTILLA_SSH_MODULE_TESTS"] = "1"
        // One process each: EventLoopTests close and reuse descriptor numbers on purpose,
        // which must not race another test's sessions.
        for (suite, tests) in [("SFTPTests", ["withSessionClosesWhenTheBodyThrowsOrIsCancelled", "stdinReachesTheCommandAndStreamsStaySeparate",
                                              "roundTripKeepsBytesAndModeAndLeavesNoPartialFile", "aFailedRenameLeavesOtherSessionsWorking"]),
                               ("EventLoopTests", ["aReusedDescriptorNumberIsWatchedAfterTheOldOneWasClosedUnderAWaiter", "closingThroughTheLoopWakesItsWaiter"])] {
            let result = try runProcess([exe, "--testing-library", "swift-testing", "--filter", suite], environment: environment)
            let output = result.stdout + result.stderr
            #expect(result.status == 0, "\(output.suffix(6000))")
            for test in tests {
                #expect(output.contains("Test \(test)() passed"), "\(output.suffix(6000))")
            }
        }
    }
}

/// The SSH module itself on a lab host: SFTP transfers, stdin and output streams, scoped
/// sessions. Run by `SSHModuleInItsOwnProcess`.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["FLOTILLA_SSH_MODULE_TESTS"] != nil))
struct SFTPTests {
    static func options(_ lab: TestLab, host: String) throws -> SSHSession.Options {
        let inventory = try Inventory.load(sources: [lab.path("inventory.ini")])
        let vars = try #require(inventory.host(named: host)?.variables)
        var options = SSHSession.Options(name: host, address: vars["ansible_host"]!.value.scalarText!,
                                         port: Int(vars["ansible_port"]!.value.scalarText!)!, user: "root",
                                         knownHostsFile: lab.path("known_hosts"))
        options.identityFiles = [lab.path("id_ed25519")]
        options.useAgent = false
        options.connectTimeout = .seconds(30)
        return options
    }

    static func session(_ lab: TestLab, host: String) async throws -> SSHSession {
        try await SSHSession.connect(options(lab, host: host))
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
        let sent = try await session.upload(local.path, to: "/tmp/payload")
        #expect(sent == bytes.count)
        let remote = try lab.ssh("deb", "stat -c '%a %s' /tmp/payload; ls -a /tmp | grep -c partial || true")
        #expect(remote.stdout == "640 \(bytes.count)\n0\n", "\(remote.stdout)\(remote.stderr)")

        let back = lab.dir.appendingPathComponent("back/payload")
        try FileManager.default.createDirectory(at: back.deletingLastPathComponent(), withIntermediateDirectories: true)
        let received = try await session.download("/tmp/payload", to: back.path)
        #expect(received == bytes.count)
        #expect(try Data(contentsOf: back) == Data(bytes))
        let mode = try FileManager.default.attributesOfItem(atPath: back.path)[.posixPermissions] as? Int
        #expect(mode == 0o640)

        // Overwriting an existing remote file replaces it whole.
        try Data("new\n".utf8).write(to: local)
        _ = try await session.upload(local.path, to: "/tmp/payload", mode: 0o600)
        #expect(try lab.ssh("deb", "cat /tmp/payload; stat -c %a /tmp/payload").stdout == "new\n600\n")

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
        _ = try await session.run("printf data > /tmp/small")
        await #expect { _ = try await session.download("/tmp/small", to: target.path) } throws: { error in
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
