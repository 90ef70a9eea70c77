import Foundation
import Testing
@testable import flotilla_lab

/// Each fault of inventories/lab-faults.yaml (the example spec the README documents),
/// observed from a real OpenSSH client.
@Suite struct LabFaultTests {
    static let spec: String = {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../inventories/lab-faults.yaml")
        return (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    }()

    @Test func unreachableHostsRefuseOrNeverSpeak() throws {
        let lab = try TestLab(spec: Self.spec)
        #expect(lab.upResult.status == 0, "\(lab.upResult.stderr)")
        let refused = try lab.ssh("refused", "true", options: ["-o", "ConnectTimeout=5"])
        #expect(refused.status == 255 && refused.stderr.contains("Connection refused"))
        let silent = try lab.ssh("silent", "true", options: ["-o", "ConnectTimeout=1"])
        #expect(silent.status == 255 && silent.stderr.contains("timed out during banner exchange"))
        let status = try run([labExecutable, "status", "--dir", lab.labDir.path])
        #expect(status.status == 0, "every host is as its spec says: \(status.stdout)")
    }

    @Test func changedAndUnknownHostKeysAreRefusedUnderStrictChecking() throws {
        let lab = try TestLab(spec: Self.spec)
        let changed = try lab.ssh("new-key", "true")
        #expect(changed.status == 255 && changed.stderr.contains("has changed"))
        let unknown = try lab.ssh("unknown-key", "true")
        #expect(unknown.status == 255 && unknown.stderr.contains("No ECDSA host key is known"))
        let healthy = try lab.ssh("ok-ubuntu", "true")
        #expect(healthy.status == 0, "\(healthy.stderr)")
    }

    @Test func slowHostDelaysEveryCommand() throws {
        let lab = try TestLab(spec: Self.spec)
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
        let lab = try TestLab(spec: Self.spec)
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
        let lab = try TestLab(spec: Self.spec)
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
    }

    @Test func mistralUpgradeHeadFailsWithEventTriggersAlreadyExists() throws {
        let lab = try TestLab(spec: Self.spec)
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
        let lab = try TestLab(spec: Self.mistralHost)
        let manage = "/opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf"
        let steps = "st2ctl stop && apt-get install -y -o Dpkg::Options::=--force-confold st2=3.2.0-1 st2mistral=3.2.0-1 >/dev/null"
        #expect(try lab.ssh("m", steps).status == 0)
        #expect(try lab.ssh("m", "st2ctl start >/dev/null && \(manage) upgrade head").stderr.contains("event_triggers_v2"))

        let right = try TestLab(spec: Self.mistralHost)
        let ordered = try right.ssh("m", "\(steps) && \(manage) upgrade head && \(manage) populate && st2ctl start >/dev/null")
        #expect(ordered.status == 0, "the documented order works: \(ordered.stderr)")
        let mistral = try #require(try right.state("m")["mistral"] as? [String: Any])
        #expect(mistral["schema"] as? String == "3.2.0-1" && mistral["populated"] as? Bool == true && mistral["tablesAhead"] as? Bool == false)
    }
}
