import FlotillaCore
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

/// Each lab gets its own loopback /24 (a big one several in a row), so tests run in
/// parallel without clashing; each test process its own range of second octets (ten of
/// them, 2,500 blocks), claimed by an exclusive lock on a file that the kernel releases
/// when the process ends, so test processes running side by side never share a block.
private let addressBlocks = AddressBlocks(base: claimAddressRange())

private func claimAddressRange() -> Int {
    for range in 0..<16 {
        let fd = open("/tmp/flotilla-lab-tests-range-\(range).lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 { return 90 + range * 10 } // held (fd left open) until the process exits
        if fd >= 0 { close(fd) }
    }
    fatalError("sixteen test processes already hold every range of lab addresses")
}
private final class AddressBlocks: @unchecked Sendable {
    // @unchecked: `next` is only touched while holding `lock`.
    private let lock = NSLock()
    private let base: Int
    private var next = 0
    init(base: Int) { self.base = base }
    func take(_ count: Int) -> String {
        lock.withLock {
            next += 1
            if next % 250 + count > 250 { next += 250 - next % 250 } // keep the blocks of one lab in a row
            defer { next += count - 1 }
            return "127.\(base + next / 250).\(next % 250 + 1).1"
        }
    }
}

/// The lab tests that start a hundred hosts or more take turns (`withPermit`). Side by side
/// (400 sshd and two controllers on a CI machine's two cores) they slowed each other's
/// healthy steps past the step timeouts their own runs assert on. A test waits for its turn
/// suspended, not holding a thread of the pool that the other tests run on.
let largeFleetTurn = AsyncSemaphore(permits: 1)

/// A program started in the background (its own session, stdin /dev/null, output to
/// `log`), such as a controller a test signals or kills. If the test leaves before it
/// has been waited for, it is killed and reaped: only this pid, never a recycled one.
final class Background {
    let pid: Int32
    let log: URL
    private var status: Int32?

    init(_ argv: [String], log: URL) throws {
        self.log = log
        pid = try ProcessTable.spawnDetached(argv, log: log)
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Whether it has exited (a zombie not reaped yet counts).
    var exited: Bool {
        guard status == nil else { return true }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.lastIndex(of: ")").map { stat[stat.index($0, offsetBy: 2)] == "Z" } ?? true
    }

    func signal(_ number: Int32) {
        if status == nil { kill(pid, number) }
    }

    /// Waits for it to end; its wait status.
    @discardableResult
    func wait() -> Int32 {
        if let status { return status }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        status = raw
        return raw
    }

    /// Its exit code, once it has ended (waits).
    var exitCode: Int32 { (wait() >> 8) & 0xff }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            wait()
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

    /// - Parameter blocks: the /24 blocks of addresses the lab needs (254 hosts each).
    /// - Parameter login: `flotilla-lab up --login`: `user` (st2ops, sudo with its
    ///   password, the default: most sites log in so) or `root` (one case, named).
    init(spec: String, blocks: Int = 1, login: String = "user") throws {
        reapOrphanedLabs
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("flotilla-lab-test-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let specFile = dir.appendingPathComponent("spec.yaml")
        try spec.write(to: specFile, atomically: true, encoding: .utf8)
        // A lab left running by something else may hold a block: move on to the next one.
        var attempt: (address: String, result: Run)
        repeat {
            let address = addressBlocks.take(blocks)
            attempt = (address, try run([labExecutable, "up", "--dir", dir.appendingPathComponent("lab").path, "--spec", specFile.path, "--first-address", address, "--login", login]))
        } while attempt.result.status == 64 && attempt.result.stderr.contains("already in use")
        (firstAddress, upResult) = attempt
        guard upResult.status == 0 else { throw LabUpFailed(message: "flotilla-lab up exited \(upResult.status): \(upResult.stderr)") }
    }

    /// A spec of Ubuntu hosts at st2 3.7.1 that can go to 3.8.1, each slow to stop its
    /// services (`delay`), so a test can act while an upgrade is in flight.
    static func slowStopSpec(_ names: [String], delay: String) -> String {
        """
        defaults:
          os: ubuntu20.04
          packages: {st2: 3.7.1-1}
          available: [3.7.1-1, 3.8.1-1]
          faults:
            slow: [{match: "st2ctl stop", delay: \(delay)}]
        hosts: [\(names.map { "{name: \($0)}" }.joined(separator: ", "))]

        """
    }

    var labDir: URL { dir.appendingPathComponent("lab") }

    /// Writes `text` to NAME in the test's directory (a runbook, say); its URL.
    func write(_ name: String, _ text: String) throws -> URL {
        let file = dir.appendingPathComponent(name)
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }
    func path(_ name: String) -> String { labDir.appendingPathComponent(name).path }

    /// `ssh -F lab/ssh_config HOST COMMAND`.
    func ssh(_ host: String, _ command: String, input: String = "", options: [String] = []) throws -> Run {
        try run(["/usr/bin/ssh", "-F", path("ssh_config")] + options + [host, command], input: input)
    }

    /// `command` as root on `host`: through sudo with the lab's password under the default
    /// user login (a root login runs it as it is), so `$HOME` and `~` are those of the
    /// become user, where steps under become keep their files and step records.
    func asRoot(_ host: String, _ command: String) throws -> Run {
        let password = try String(contentsOfFile: path("password"), encoding: .utf8)
        return try ssh(host, "sudo -S -p '' sh -c \(ShellQuote.quote(command))", input: password)
    }

    func state(_ host: String) throws -> [String: Any] {
        let data = try Data(contentsOf: labDir.appendingPathComponent("hosts/\(host)/state.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func packages(_ host: String) throws -> [String: String] {
        try #require(try state(host)["packages"] as? [String: String])
    }

    /// The host's command log, one record per line; fails the test on a malformed line.
    ///
    /// A detached step's start (SPEC §8.1) is shown as the step's own command as it was
    /// sent before steps ran detached (through the same sudo wrapper under become), with
    /// `detached: true`, so "the host ran X once" reads as before; the protocol's other
    /// lines (attach, query, kill, cleanup) are of kind `detached`, not `ssh`.
    func commandLog(_ host: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: labDir.appendingPathComponent("hosts/\(host)/commands.log"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            var record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "bad log line: \(line)")
            if record["kind"] as? String == "ssh", let sent = (record["argv"] as? [String])?.first, sent.contains("flotilla-step") {
                if let command = Self.detachedCommand(sent) {
                    record["argv"] = [command]
                    record["detached"] = true
                } else {
                    record["kind"] = "detached"
                }
            }
            return record
        }
    }

    /// The commands clients sent to the host, in order, each as it reads without the become
    /// wrapper (``unwrapBecome(_:)``).
    func commands(_ host: String) throws -> [String] {
        try commandLog(host).filter { $0["kind"] as? String == "ssh" }.compactMap { ($0["argv"] as? [String])?.first.map(Self.unwrapBecome) }
    }

    /// The step's command in a detached start line as sent (under become, wrapped in the
    /// same sudo line it would have been sent in); nil for the protocol's other lines.
    static func detachedCommand(_ sent: String) -> String? {
        var script = sent, wrap: (String) -> String = { $0 }
        if sent.hasPrefix("sudo "), let shell = sent.range(of: " -- sh -c ") {
            guard let word = unquote(sent[shell.upperBound...]) else { return nil }
            let stdinClosed = "exec </dev/null; "
            script = word.hasPrefix(stdinClosed) ? String(word.dropFirst(stdinClosed.count)) : word
            let prefix = String(sent[..<shell.upperBound])
            wrap = { prefix + ShellQuote.quote((word.hasPrefix(stdinClosed) ? stdinClosed : "") + $0) }
        }
        // The line that writes `.cmd`: its header, then the command as one quoted word.
        let writer = "if ! { printf '\(DetachedStep.header) %s%s\\n%s' \"${fl_b:--}\" \"${fl_r:+ $fl_r}\" ", end = " >\"$d.cmd\"; } 2>/dev/null; then"
        for line in script.split(separator: "\n") where line.hasPrefix(writer) && line.hasSuffix(end) {
            return unquote(line.dropFirst(writer.count).dropLast(end.count)).map(wrap)
        }
        return nil
    }

    /// The command a become line (`sudo … -- sh -c 'exec </dev/null; COMMAND'`) runs, so
    /// checks of "the host ran X" read the same under become as with a root login; any
    /// other line as it is.
    static func unwrapBecome(_ sent: String) -> String {
        guard sent.hasPrefix("sudo "), let shell = sent.range(of: " -- sh -c "), let word = unquote(sent[shell.upperBound...]) else { return sent }
        let stdinClosed = "exec </dev/null; "
        return word.hasPrefix(stdinClosed) ? String(word.dropFirst(stdinClosed.count)) : word
    }

    /// One shell word as `ShellQuote.quote` writes it: bare, or single-quoted with `'\''`.
    static func unquote<S: StringProtocol>(_ word: S) -> String? {
        guard word.hasPrefix("'") else { return String(word) }
        var out = "", inside = false, escaped = false
        for character in word {
            if escaped { out.append(character); escaped = false; continue }
            switch (character, inside) {
            case ("'", _): inside.toggle()
            case ("\\", false): escaped = true
            default: out.append(character)
            }
        }
        return inside ? nil : out
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

    /// Cuts a host off as an outage would: its sshd stops answering (SIGSTOP: connections
    /// get no banner) and the sshd processes serving its open connections are killed, so
    /// those connections drop. Returns the stopped sshd, for `restore`.
    func cut(_ host: String) throws -> Int32 {
        let record = try #require(try readRecord(labDir))
        let hostInit = try #require(record.hosts.first { $0.name == host }?.processes.first { $0.role == "init" && ProcessTable.isAlive($0) })
        // The listening sshd: the child of the host's init that is an sshd.
        let sshd = try #require(ProcessTable.children(of: hostInit.pid).first { Self.isSSHD($0) }, "no sshd under the init of \(host)")
        kill(sshd, SIGSTOP)
        var pending = ProcessTable.children(of: sshd)
        while let pid = pending.popLast() {
            pending += ProcessTable.children(of: pid)
            if Self.isSSHD(pid) { kill(pid, SIGKILL) }
        }
        return sshd
    }

    static func isSSHD(_ pid: Int32) -> Bool {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix("sshd")
    }

    /// Ends an outage `cut` began.
    func restore(_ sshd: Int32) { kill(sshd, SIGCONT) }

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
