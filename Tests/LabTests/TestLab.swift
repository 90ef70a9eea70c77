import Foundation
import Testing
@testable import flotilla_lab

typealias Run = ProcessResult

/// Runs a program to completion, feeding `input` (or nothing: stdin is closed at once).
@discardableResult
func run(_ argv: [String], input: String = "") throws -> Run {
    try runProcess(argv, input: input)
}

/// The directory holding the built products (flotilla-lab sits beside the test bundle).
let productsDir: URL = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent()
}()

let labExecutable = productsDir.appendingPathComponent("flotilla-lab").path

/// Labs left behind by a test process that died (a crash skips deinit): brought down once,
/// before this process starts its first lab.
private let reapOrphanedLabs: Void = {
    let temporary = NSTemporaryDirectory()
    for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix("flotilla-lab-test-") {
        guard let owner = Int32(name.split(separator: "-")[3]), kill(owner, 0) != 0 else { continue }
        let dir = URL(fileURLWithPath: temporary).appendingPathComponent(name)
        _ = try? run([labExecutable, "down", "--dir", dir.appendingPathComponent("lab").path])
        try? FileManager.default.removeItem(at: dir)
    }
}()

/// Each lab gets its own loopback /24, so tests run in parallel without clashing.
private let addressBlocks = AddressBlocks()
private final class AddressBlocks: @unchecked Sendable {
    // @unchecked: `next` is only touched while holding `lock`.
    private let lock = NSLock()
    private var next = 0
    func take() -> String {
        lock.withLock {
            next += 1
            return "127.\(90 + next / 250).\(next % 250 + 1).1"
        }
    }
}

struct LabUpFailed: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A lab fleet brought up from a spec for one test, always brought down at the end.
final class TestLab: Sendable {
    let dir: URL
    let firstAddress: String
    let upResult: Run

    init(spec: String) throws {
        reapOrphanedLabs
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("flotilla-lab-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let specFile = dir.appendingPathComponent("spec.yaml")
        try spec.write(to: specFile, atomically: true, encoding: .utf8)
        // A lab left running by something else may hold a block: move on to the next one.
        var attempt: (address: String, result: Run)
        repeat {
            let address = addressBlocks.take()
            attempt = (address, try run([labExecutable, "up", "--dir", dir.appendingPathComponent("lab").path, "--spec", specFile.path, "--first-address", address]))
        } while attempt.result.status == 64 && attempt.result.stderr.contains("already in use")
        (firstAddress, upResult) = attempt
        guard upResult.status == 0 else { throw LabUpFailed(message: "flotilla-lab up exited \(upResult.status): \(upResult.stderr)") }
    }

    var labDir: URL { dir.appendingPathComponent("lab") }
    func path(_ name: String) -> String { labDir.appendingPathComponent(name).path }

    /// `ssh -F lab/ssh_config HOST COMMAND`.
    func ssh(_ host: String, _ command: String, input: String = "", options: [String] = []) throws -> Run {
        try run(["/usr/bin/ssh", "-F", path("ssh_config")] + options + [host, command], input: input)
    }

    func state(_ host: String) throws -> [String: Any] {
        let data = try Data(contentsOf: labDir.appendingPathComponent("hosts/\(host)/state.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func packages(_ host: String) throws -> [String: String] {
        try #require(try state(host)["packages"] as? [String: String])
    }

    /// The host's command log, one record per line; fails the test on a malformed line.
    func commandLog(_ host: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: labDir.appendingPathComponent("hosts/\(host)/commands.log"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "bad log line: \(line)")
        }
    }

    /// Waits for an event the test cannot be told about directly (a record in a host's
    /// log); gives up after `seconds`.
    func waitFor(seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(5_000)
        }
        return try condition()
    }

    /// Starts `ssh HOST COMMAND` without waiting for it.
    func startSSH(_ host: String, _ command: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ssh")
        process.arguments = ["-F", path("ssh_config"), host, command]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @discardableResult
    func down() throws -> Run {
        try run([labExecutable, "down", "--dir", labDir.path])
    }

    /// Processes whose command line mentions this lab.
    func processesMentioningLab() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard pid != getpid(), let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            let zombie = stat.lastIndex(of: ")").map { stat[stat.index($0, offsetBy: 2)] == "Z" } ?? true
            return !zombie && String(decoding: cmdline, as: UTF8.self).contains(labDir.path)
        }
    }

    deinit {
        _ = try? down()
        try? FileManager.default.removeItem(at: dir)
    }
}
