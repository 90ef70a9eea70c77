import Foundation
import Synchronization
import Testing
@testable import FlotillaCore

/// `flotilla ctl`: the command lines the controller takes, and one round trip over the
/// socket.
@Suite struct ControlServerTests {
    static let hosts = ["st2-01", "st2-02", "st2-03"]

    /// A new directory for a test's socket; the test removes it.
    static func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-ctl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test(arguments: [
        ("pause", RolloutPolicy.Event.pause),
        ("continue", .resume),
        ("abort", .abort),
        ("skip st2-02", .skip(1)),
        ("set max-parallel 4", .setMaxParallel(4)),
        ("set max-parallel 1", .setMaxParallel(1)),
    ])
    func commandsBecomeEvents(command: String, event: RolloutPolicy.Event) {
        #expect(ControlServer.event(command, hosts: Self.hosts) == event)
    }

    @Test(arguments: ["", "resume", "pause now", "abort st2-01", "skip", "skip st2-09", "skip st2-01 st2-02",
                      "set max-parallel 0", "set max-parallel -1", "set max-parallel many", "set max-fail 2", "set max-parallel"])
    func otherLinesAreRefused(command: String) {
        #expect(ControlServer.event(command, hosts: Self.hosts) == nil)
    }

    @Test func aCommandGoesThroughTheSocket() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) } // a leftover temp dir is harmless
        let received = Mutex<[String]>([])
        let server = ControlServer(socket: directory.appendingPathComponent("ctl.sock"), runID: "20261121-153000-ab12") { command in
            received.withLock { $0.append(command) }
            return command == "pause" ? "ok" : "error: no"
        }
        try server.start()
        defer { server.stop() }
        let mode = try FileManager.default.attributesOfItem(atPath: server.path.path)[.posixPermissions] as? Int
        #expect(mode.map { $0 & 0o077 } == 0)

        #expect(try ControlServer.request(stateDir: directory, "pause") == "ok")
        #expect(try ControlServer.request(stateDir: directory, "20261121-153000-ab12 abort") == "error: no")
        // Another run's id is refused before the handler sees it.
        #expect(try ControlServer.request(stateDir: directory, "20261121-160000-cd34 pause")
            == "error: the running run is 20261121-153000-ab12, not 20261121-160000-cd34")
        #expect(received.withLock { $0 } == ["pause", "abort"])

        server.stop()
        #expect(throws: ControlSocketError.self) { try ControlServer.request(stateDir: directory, "pause") }
    }

    /// A server stopped before its accept thread reached accept() must not serve the next
    /// socket that gets its descriptor's number (seen as `pause` answered by another test's
    /// server).
    @Test func aStoppedServerNeverAnswersForTheNextOne() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) } // a leftover temp dir is harmless
        let elsewhere = directory.appendingPathComponent("stopped")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        for round in 0..<200 {
            let stopped = ControlServer(socket: elsewhere.appendingPathComponent("ctl.sock"), runID: "20261121-153000-ab12") { _ in "stopped" }
            try stopped.start()
            stopped.stop()
            let server = ControlServer(socket: directory.appendingPathComponent("ctl.sock"), runID: "20261121-153000-ab12") { _ in "this one" }
            try server.start()
            defer { server.stop() }
            let answer = try ControlServer.request(stateDir: directory, "pause")
            try #require(answer == "this one", "round \(round): \(answer)")
        }
    }

    @Test func aRunsServerSendsEventsAndRefusesOtherLines() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) } // a leftover temp dir is harmless
        let sent = Mutex<[RolloutPolicy.Event]>([])
        let server = ControlServer(socket: directory.appendingPathComponent("ctl.sock"), runID: "20261121-153000-ab12",
                                   hosts: Self.hosts) { _, event in sent.withLock { $0.append(event) } }
        try server.start()
        defer { server.stop() }
        #expect(try ControlServer.request(stateDir: directory, "skip st2-03") == "ok")
        #expect(try ControlServer.request(stateDir: directory, "skip st2-99")
            == "error: unknown command 'skip st2-99' (pause, continue, abort, skip HOST, set max-parallel N)")
        #expect(sent.withLock { $0 } == [.skip(2)])
    }
}
