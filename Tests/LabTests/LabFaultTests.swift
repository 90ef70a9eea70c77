import Foundation
import Testing
@testable import flotilla_lab

/// Each fault of inventories/lab-faults.yaml (the example spec the README documents),
/// observed from a real OpenSSH client.
@Suite struct LabFaultTests {
    /// These tests drive the simulated tools themselves, as root runs them on a real host
    /// (flotilla's own tests log in as the sudo user, TestLab's default).
    static let login = "root"

    static let spec: String = {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../inventories/lab-faults.yaml")
        return (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    }()

    @Test func unreachableHostsRefuseOrNeverSpeak() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        #expect(lab.upResult.status == 0, "\(lab.upResult.stderr)")
        let refused = try lab.ssh("refused", "true", options: ["-o", "ConnectTimeout=5"])
        #expect(refused.status == 255 && refused.stderr.contains("Connection refused"))
        let silent = try lab.ssh("silent", "true", options: ["-o", "ConnectTimeout=1"])
        #expect(silent.status == 255 && silent.stderr.contains("timed out during banner exchange"))
        let status = try run([labExecutable, "status", "--dir", lab.labDir.path])
        #expect(status.status == 0, "every host is as its spec says: \(status.stdout)")
    }

    @Test func changedAndUnknownHostKeysAreRefusedUnderStrictChecking() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        let changed = try lab.ssh("new-key", "true")
        #expect(changed.status == 255 && changed.stderr.contains("has changed"))
        let unknown = try lab.ssh("unknown-key", "true")
        #expect(unknown.status == 255 && unknown.stderr.contains("No ECDSA host key is known"))
        let healthy = try lab.ssh("ok-ubuntu", "true")
        #expect(healthy.status == 0, "\(healthy.stderr)")
    }

    @Test func slowHostDelaysEveryCommand() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        let result = try lab.ssh("slow", "true")
        #expect(result.status == 0)
        let record = try #require(try lab.commandLog("slow").first)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let start = try #require(formatter.date(from: record["start"] as? String ?? ""))
        let end = try #require(formatter.date(from: record["end"] as? String ?? ""))
        #expect(end.timeIntervalSince(start) >= 1.0, "the spec makes every command on 'slow' take 1 s longer")
    }

    @Test func failingCommandFiresTheGivenNumberOfTimes() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        let command = "apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1"
        let first = try lab.ssh("apt-broken", command)
        #expect(first.status == 100 && first.stderr.contains("Could not get lock"))
        #expect(try lab.packages("apt-broken")["st2"] == "3.7.1-1", "a failed command changes nothing")
        let second = try lab.ssh("apt-broken", command)
        #expect(second.status == 0, "times: 1 -> the retry succeeds: \(second.stderr)")
        #expect(try lab.packages("apt-broken")["st2"] == "3.8.1-1")
        let faults = try lab.commandLog("apt-broken").compactMap { $0["fault"] as? String }
        #expect(faults == ["fail"])
    }

    @Test func hangingCommandNeverEndsAndDroppedConnectionCloses() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        let hang = try lab.startSSH("hangs", "st2ctl start")
        let recorded = lab.waitFor { (try? lab.commandLog("hangs"))?.last?["fault"] as? String == "hang" }
        #expect(recorded && hang.isRunning, "the command hangs and the client waits")
        kill(hang.processIdentifier, SIGKILL)
        hang.waitUntilExit()
        #expect(try lab.ssh("hangs", "st2ctl status").status == 0, "other commands still work")

        let drop = try lab.ssh("drops", "st2ctl stop")
        #expect(drop.status == 255 && drop.stderr.contains("closed by remote host"))
        #expect(try lab.commandLog("drops").last?["fault"] as? String == "drop")
        let services = try #require(try lab.state("drops")["services"] as? [String: Int])
        #expect(!services.isEmpty, "the connection dropped before st2ctl stop ran")
        #expect(try lab.ssh("drops", "true").status == 0, "only that connection dropped: the host's listener stays")
    }

    static let cutHost = """
        hosts:
          - name: cut
            faults:
              cut: [{match: "read x", delay: 300ms}]
        """

    /// Opens `fifo` for reading (waiting for a writer) and returns the line written.
    static func readLine(_ fifo: URL) -> String {
        let fd = open(fifo.path, O_RDONLY)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            bytes.append(byte)
            if byte == 10 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func cutDropsEveryConnectionWhileTheCommandGoesOn() throws {
        let lab = try TestLab(spec: Self.cutHost, login: Self.login)
        let ready = lab.dir.appendingPathComponent("ready"), gate = lab.dir.appendingPathComponent("gate")
        let written = lab.dir.appendingPathComponent("written")
        #expect(mkfifo(ready.path, 0o600) == 0 && mkfifo(gate.path, 0o600) == 0)
        // Another connection, idle in a command of its own: a cut drops it too.
        let idle = try lab.startSSH("cut", "echo up >\(ready.path); sleep 600")
        #expect(Self.readLine(ready) == "up\n")

        let command = "echo before; read x <\(gate.path); echo after; echo \"$x\" >\(written.path)"
        let exec = try TransportTests.json(["exec", "-i", lab.path("inventory.ini"), "--", command])
        let host = try #require(exec.hosts["cut"])
        #expect(exec.status != 0 && host.exitStatus == nil && !host.error.isEmpty, "the connection is lost: \(exec.stdout)")
        idle.waitUntilExit()
        #expect(idle.terminationStatus == 255, "the idle connection dropped as well")

        // The command still runs: it takes the line, prints to the dead connection and
        // writes its file.
        let fd = open(gate.path, O_WRONLY)
        _ = Array("after-cut\n".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let ended = lab.waitFor { (try? lab.commandLog("cut"))?.contains { $0["fault"] as? String == "cut" } == true }
        let record = try #require(try lab.commandLog("cut").first { $0["fault"] as? String == "cut" }, "ended: \(ended)")
        #expect(record["exit_status"] as? Int == 0, "it ran to its end, no SIGPIPE: \(record)")
        #expect(try String(contentsOf: written, encoding: .utf8) == "after-cut\n")

        let again = try lab.ssh("cut", "echo read x")
        #expect(again.status == 0 && again.stdout == "read x\n", "the listener stayed and the cut fired once: \(again.stderr)")
    }

    static let rebootHost = """
        hosts:
          - name: rb
            faults:
              reboot: [{match: "read x", delay: 300ms}]
        """

    @Test func rebootKillsEveryProcessOfTheHostChangesItsBootIDAndSSHDComesBack() throws {
        let lab = try TestLab(spec: Self.rebootHost, login: Self.login)
        let machine = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
        let before = try lab.ssh("rb", "cat /proc/sys/kernel/random/boot_id")
        #expect(before.status == 0 && before.stdout.count == machine.count && before.stdout != machine, "the host's own boot id: \(before.stdout)")
        // A process of its own session, as a detached step runs: a reboot takes it too.
        #expect(try lab.ssh("rb", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started").stdout == "started\n")
        let gate = lab.dir.appendingPathComponent("gate")
        #expect(mkfifo(gate.path, 0o600) == 0)
        let command = try lab.ssh("rb", "echo before; read x <\(gate.path); echo after")
        #expect(command.status == 255 && command.stdout == "before\n", "the connection died with the host: \(command.stderr)")
        let record = try #require(try lab.commandLog("rb").last)
        #expect(record["fault"] as? String == "reboot" && record["exit_status"] as? Int == -1, "\(record)")

        var after = try lab.ssh("rb", "true")
        #expect(try lab.waitFor(seconds: 10) {
            after = try lab.ssh("rb", "cat /proc/sys/kernel/random/boot_id; ps -e -o comm=")
            return after.status == 0
        }, "sshd came back: \(after.stderr)")
        let lines = after.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first.map { $0 + "\n" } != before.stdout && lines.first?.count == machine.count - 1, "a new boot id: \(lines)")
        #expect(!lines.contains("sleep") && !lines.contains("read"), "every process of the host was killed: \(lines)")
        let again = try lab.ssh("rb", "echo read x")
        #expect(again.status == 0 && again.stdout == "read x\n", "a reboot fires once: \(again.stderr)")
        #expect(try run([labExecutable, "status", "--dir", lab.labDir.path]).status == 0)
        #expect(try lab.down().status == 0)
        #expect(lab.processesMentioningLab().isEmpty, "down ends the rebooted host too")
    }

    @Test func mistralUpgradeHeadFailsWithEventTriggersAlreadyExists() throws {
        let lab = try TestLab(spec: Self.spec, login: Self.login)
        let manage = "/opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf"
        let first = try lab.ssh("old-mistral", "\(manage) upgrade head")
        #expect(first.status == 1 && first.stderr.contains("relation \"event_triggers_v2\" already exists"))
        let populate = try lab.ssh("old-mistral", "\(manage) populate")
        #expect(populate.status == 0, "the schema is unchanged, populate still works: \(populate.stderr)")
    }

    static let mistralHost = """
        hosts:
          - name: m
            os: ubuntu18.04
            packages: {st2: 3.1.0-1, st2mistral: 3.1.0-1}
            available: [3.1.0-1, 3.2.0-1]
        """

    @Test func mistralTablesCreatedAheadWhenServicesStartBeforeUpgradeHead() throws {
        let lab = try TestLab(spec: Self.mistralHost, login: Self.login)
        let manage = "/opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf"
        let steps = "st2ctl stop && apt-get install -y -o Dpkg::Options::=--force-confold st2=3.2.0-1 st2mistral=3.2.0-1 >/dev/null"
        #expect(try lab.ssh("m", steps).status == 0)
        #expect(try lab.ssh("m", "st2ctl start >/dev/null && \(manage) upgrade head").stderr.contains("event_triggers_v2"))

        let right = try TestLab(spec: Self.mistralHost, login: Self.login)
        let ordered = try right.ssh("m", "\(steps) && \(manage) upgrade head && \(manage) populate && st2ctl start >/dev/null")
        #expect(ordered.status == 0, "the documented order works: \(ordered.stderr)")
        let mistral = try #require(try right.state("m")["mistral"] as? [String: Any])
        #expect(mistral["schema"] as? String == "3.2.0-1" && mistral["populated"] as? Bool == true && mistral["tablesAhead"] as? Bool == false)
    }
}
