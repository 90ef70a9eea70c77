import FlotillaCore
import Foundation
import SSH
import Testing
@testable import flotilla_lab

/// Runs `SFTPTests` in a test process of its own. In the shared process, beside some 300
/// tests that spawn hundreds of processes and block the task pool, an in-process session's
/// connection now and then made no progress for over 90 s (both a TCP connect and a key
/// exchange were seen stalled, on an idle event loop); the cause is not found, and the
/// flotilla binary, which runs nothing else, never showed it (up to 1,000 hosts).
@Suite struct SFTPInItsOwnProcess {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["FLOTILLA_SSH_MODULE_TESTS"] == nil))
    func sshModuleTestsPass() throws {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var environment = ProcessInfo.processInfo.environment
        environment["FLOTILLA_SSH_MODULE_TESTS"] = "1"
        let result = try runProcess([exe, "--testing-library", "swift-testing", "--filter", "SFTPTests"], environment: environment)
        let output = result.stdout + result.stderr
        #expect(result.status == 0, "\(output.suffix(6000))")
        for test in ["stdinReachesTheCommandAndStreamsStaySeparate", "roundTripKeepsBytesAndModeAndLeavesNoPartialFile"] {
            #expect(output.contains("Test \(test)() passed"), "\(output.suffix(6000))")
        }
    }
}

/// The SSH module itself on a lab host: SFTP transfers, stdin and output streams. Run by
/// `SFTPInItsOwnProcess`.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["FLOTILLA_SSH_MODULE_TESTS"] != nil))
struct SFTPTests {
    static func session(_ lab: TestLab, host: String) async throws -> SSHSession {
        let inventory = try Inventory.load(sources: [lab.path("inventory.ini")])
        let vars = try #require(inventory.host(named: host)?.variables)
        var options = SSHSession.Options(name: host, address: vars["ansible_host"]!.value.scalarText!,
                                         port: Int(vars["ansible_port"]!.value.scalarText!)!, user: "root",
                                         knownHostsFile: lab.path("known_hosts"))
        options.identityFiles = [lab.path("id_ed25519")]
        options.useAgent = false
        options.connectTimeout = .seconds(30)
        return try await SSHSession.connect(options)
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
}
