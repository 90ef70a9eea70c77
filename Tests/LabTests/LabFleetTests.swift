import Foundation
import Testing
@testable import flotilla_lab

/// End to end: real sshd hosts brought up by the flotilla-lab binary, driven with the
/// OpenSSH client exactly as an operator (or Ansible) would.
@Suite struct LabFleetTests {
    /// These tests drive the simulated tools themselves, as root runs them on a real host
    /// (flotilla's own tests log in as the sudo user, TestLab's default).
    static let login = "root"

    static let healthySpec = """
        defaults:
          kv: 75
          audit_logs: [st2api.audit.log]
        hosts:
          - name: deb
            os: ubuntu20.04
            packages: {st2: 3.7.1-1, st2web: 3.7.1-1}
            available: [3.7.1-1, 3.8.0-1, 3.8.1-1]
            st2_cluster: east
            zone: a
            vars: {flotilla_rack: r1}
          - name: el7
            os: el7
            packages: {st2: 3.6.0-1}
            available: [3.6.0-1, 3.8.1-1]
            st2_cluster: east
          - name: rocky
            os: el8
            host_key: ecdsa
            packages: {st2: 3.7.0-1}
            available: [3.7.0-1, 3.8.1-1]
          - name: old
            os: ubuntu18.04
            host_key: rsa
            packages: {st2: 3.0.1-1, st2mistral: 3.0.1-1}
            available: [3.0.1-1, 3.1.0-1, 3.2.0-1]
        """

    @Test func everyHostAnswersWithTheWrittenInventoryKnownHostsAndKey() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        #expect(lab.upResult.status == 0, "\(lab.upResult.stderr)")
        // Read the INI inventory the way Ansible would use it: address, port, user, key, known_hosts.
        let ini = try String(contentsOfFile: lab.path("inventory.ini"), encoding: .utf8)
        let hostLines = ini.split(separator: "\n").filter { $0.contains("ansible_host=") }
        #expect(hostLines.count == 4)
        #expect(ini.contains("[cluster_east]\ndeb\nel7") && ini.contains("[debian:children]") && ini.contains("flotilla_rack=r1"))
        for line in hostLines {
            let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").dropFirst().map {
                let pair = $0.split(separator: "=", maxSplits: 1)
                return (String(pair[0]), String(pair[1]))
            })
            let result = try run([
                "/usr/bin/ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=\(lab.path("known_hosts"))",
                "-o", "IdentitiesOnly=yes", "-i", lab.path("id_ed25519"), "-p", fields["ansible_port"]!, "root@\(fields["ansible_host"]!)",
                "cat /etc/os-release",
            ])
            #expect(result.status == 0, "\(line): \(result.stderr)")
            #expect(result.stdout.contains("VERSION_ID="), "each host has its own /etc/os-release")
        }
        let yaml = try String(contentsOfFile: lab.path("inventory.yaml"), encoding: .utf8)
        #expect(yaml.contains("ansible_host: \(lab.firstAddress)") && yaml.contains("st2_cluster: east"))
        // Password authentication works too, with the password the lab wrote (owner-only).
        let attributes = try FileManager.default.attributesOfItem(atPath: lab.path("password"))
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func aptUpgradeChangesTheVersionAndLogsEveryCommand() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let upgrade = try lab.ssh("deb", "sudo /usr/bin/apt-get install -y --only-upgrade -o Dpkg::Options::=--force-confold st2=3.8.1-1 st2web=3.8.1-1")
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        #expect(upgrade.stdout.contains("Unpacking st2 (3.8.1-1) over (3.7.1-1) ..."))
        #expect(try lab.packages("deb") == ["st2": "3.8.1-1", "st2web": "3.8.1-1"])
        let query = try lab.ssh("deb", "dpkg-query -W -f='${Version}' st2; echo; st2 --version; ls /etc/st2")
        #expect(query.stdout == "3.8.1-1\nst2 3.8.1, on Python 3.8.10\nkeys\nst2.conf\nst2.conf.dpkg-dist\n")
        let log = try lab.commandLog("deb")
        let sim = log.filter { $0["kind"] as? String == "sim" }
        #expect(sim.map { ($0["argv"] as? [String])?.first } == ["/usr/bin/apt-get", "dpkg-query", "st2"])
        #expect(sim.first?["exit_status"] as? Int == 0 && sim.first?["start"] is String && sim.first?["end"] is String)
        #expect(log.filter { $0["kind"] as? String == "ssh" }.count == 2)
    }

    @Test func aVersionTheRepositoryDoesNotOfferFailsLikeTheRealTools() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let apt = try lab.ssh("deb", "apt-get install -y st2=3.9.9-1")
        #expect(apt.status == 100 && apt.stderr.contains("E: Version '3.9.9-1' for 'st2' was not found"))
        let yum = try lab.ssh("el7", "yum update -y st2-3.9.9-1")
        #expect(yum.status == 1 && yum.stdout.contains("No package st2-3.9.9-1 available.") && yum.stderr.contains("Error: Nothing to do"))
        let dnf = try lab.ssh("rocky", "dnf upgrade -y st2-3.9.9")
        #expect(dnf.status == 1 && dnf.stderr.contains("Error: Unable to find a match: st2-3.9.9"))
        let wrongFamily = try lab.ssh("deb", "yum --version")
        #expect(wrongFamily.status == 127)
        // Nothing changed on any host.
        #expect(try lab.packages("deb")["st2"] == "3.7.1-1" && lab.packages("el7")["st2"] == "3.6.0-1")
    }

    @Test func yumUpgradeRestartsRunningServicesAndLeavesRpmnew() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let before = try #require(try lab.state("el7")["services"] as? [String: Int])
        let result = try lab.ssh("el7", "yum update -y st2-3.8.1-1 && rpm -q --qf '%{VERSION}-%{RELEASE}\\n' st2 && ls /etc/st2")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasSuffix("Complete!\n3.8.1-1\nkeys\nst2.conf\nst2.conf.rpmnew\n"))
        let after = try #require(try lab.state("el7")["services"] as? [String: Int])
        #expect(Set(after.keys) == Set(before.keys) && after["st2api"] != before["st2api"], "the RPM %postun restarted the running services")
    }

    @Test func st2ctlStatusHasTheRealFormatAndAlwaysExitsZero() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let running = try lab.ssh("deb", "st2ctl status")
        let lines = running.stdout.split(separator: "\n")
        #expect(running.status == 0 && lines.first == "##### st2 components status #####")
        #expect(lines.dropFirst().allSatisfy { $0.wholeMatch(of: /[a-z0-9.\-]+ (PID: \d+|is not running\.)/) != nil })
        #expect(lines.contains("st2chatops is not running."), "st2chatops is listed but not installed on deb")
        let stopped = try lab.ssh("deb", "st2ctl stop && st2ctl status")
        #expect(stopped.status == 0 && stopped.stdout.split(separator: "\n").dropFirst().allSatisfy { $0.hasSuffix(" is not running.") })
        let old = try lab.ssh("old", "st2ctl status")
        #expect(old.stdout.contains("mistral-server PID:") && old.stdout.contains("st2resultstracker PID:"))
    }

    @Test func packageQueriesAnswerInTheRealFormats() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let policy = try lab.ssh("deb", "apt-cache policy st2")
        #expect(policy.stdout.hasPrefix("st2:\n  Installed: 3.7.1-1\n  Candidate: 3.8.1-1\n  Version table:\n"))
        #expect(policy.stdout.contains(" *** 3.7.1-1 500\n"))
        let madison = try lab.ssh("deb", "apt-cache madison st2 | head -1; apt-cache show st2=3.8.0-1 | grep ^Version")
        #expect(madison.stdout.contains("st2 |    3.8.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu focal/main amd64 Packages\nVersion: 3.8.0-1\n"))
        let dpkg = try lab.ssh("deb", "dpkg -s st2 | grep -E '^(Status|Version)'; dpkg -s st2chatops")
        #expect(dpkg.status == 1 && dpkg.stdout == "Status: install ok installed\nVersion: 3.7.1-1\n")
        #expect(dpkg.stderr.contains("package 'st2chatops' is not installed and no information is available"))
        let yum = try lab.ssh("el7", "yum list --showduplicates st2; rpm -q st2web")
        #expect(yum.stdout.contains("Installed Packages\nst2.x86_64") && yum.stdout.contains("Available Packages\nst2.x86_64"))
        #expect(yum.stdout.components(separatedBy: "StackStorm_stable").count - 1 == 3, "one installed and two offered lines")
        #expect(yum.status == 1 && yum.stdout.hasSuffix("package st2web is not installed\n"))
    }

    @Test func reloadRegistersContentAndRejectsUnknownFlags() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let reload = try lab.ssh("rocky", "st2ctl reload --register-all")
        #expect(reload.status == 0 && reload.stdout.hasPrefix("Registering content...[flags = --config-file /etc/st2/st2.conf --register-all]\n"))
        #expect(try lab.state("rocky")["registrations"] as? Int == 1)
        let bad = try lab.ssh("rocky", "st2ctl reload --register-everything")
        #expect(bad.status == 1 && bad.stdout.contains("Invalid flag provided: --register-everything"))
    }

    @Test func keyValueExportHonoursTheClientsDefaults() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let defaultList = try lab.ssh("deb", "st2 key list -j")
        let all = try lab.ssh("deb", "st2 key list -j -n -1")
        let count = { (text: String) in ((try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [Any])?.count }
        #expect(count(defaultList.stdout) == 50, "the st2 client returns 50 keys unless told otherwise")
        #expect(count(all.stdout) == 75)
        let file = "/tmp/kv-\(UUID().uuidString).json"
        let load = try lab.ssh("rocky", "cat > \(file) && st2 key load \(file) && rm \(file)", input: "[{\"name\": \"restored\", \"value\": \"v1\"}]")
        #expect(load.status == 0, "\(load.stderr)")
        #expect(try lab.ssh("rocky", "st2 key list -j -n -1").stdout.contains("\"restored\""))
        let stopped = try lab.ssh("deb", "st2ctl stop; st2 key list -j")
        #expect(stopped.status == 1 && stopped.stderr.contains("Connection refused"), "the API is down once st2 is stopped")
    }

    @Test func migrationScriptsExistAtTheirRealPathsOnlyWhileShipped() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let script = "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py"
        let ran = try lab.ssh("old", "\(script) && sudo /opt/stackstorm/mistral/bin/mistral-db-manage --config-file /etc/mistral/mistral.conf upgrade head")
        #expect(ran.status == 0, "\(ran.stderr)")
        let migrations = try #require(try lab.state("old")["migrations"] as? [[String: Any]])
        #expect(migrations.map { $0["script"] as? String } == [script])
        let upgrade = try lab.ssh("old", "apt-get install -y -o Dpkg::Options::=--force-confold st2=3.1.0-1 >/dev/null && test ! -e \(script)")
        #expect(upgrade.status == 0, "3.1.0 no longer ships \(script): \(upgrade.stderr)")
        #expect(try lab.ssh("deb", "test -x /opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values && test ! -e \(script)").status == 0)
    }

    @Test func concurrentCommandsOnOneHostLoseNothing() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let writers = 16
        // Each client loads its own key at the same moment; a lost update would drop keys.
        try withThrowingTaskGroupSync(count: writers) { index in
            let file = "/tmp/kv-\(index).json"
            let result = try lab.ssh("deb", "cat > \(file) && st2 key load \(file)", input: "[{\"name\": \"parallel-\(index)\", \"value\": \"\(index)\"}]")
            #expect(result.status == 0, "\(result.stderr)")
        }
        let kv = try #require(try lab.state("deb")["kv"] as? [[String: Any]])
        #expect(Set(kv.compactMap { $0["name"] as? String }.filter { $0.hasPrefix("parallel-") }).count == writers)
        #expect(try lab.commandLog("deb").filter { ($0["argv"] as? [String])?.first == "st2" }.count == writers)
    }

    @Test func downStopsEverythingAndASecondUpIsRefusedWhileLive() throws {
        let lab = try TestLab(spec: Self.healthySpec, login: Self.login)
        let again = try run([labExecutable, "up", "--dir", lab.labDir.path, "--hosts", "2", "--first-address", "127.89.0.1"])
        #expect(again.status == 64 && again.stderr.contains("already running"))
        #expect(!lab.processesMentioningLab().isEmpty)
        let status = try run([labExecutable, "status", "--dir", lab.labDir.path])
        #expect(status.status == 0 && status.stdout.contains("up, 4 hosts"))
        // A command left running on a host must not survive down.
        let hung = Process()
        hung.executableURL = URL(fileURLWithPath: "/usr/bin/ssh")
        hung.arguments = ["-F", lab.path("ssh_config"), "deb", "echo started; exec sleep 600"]
        let pipe = Pipe()
        hung.standardOutput = pipe
        try hung.run()
        #expect(pipe.fileHandleForReading.availableData.starts(with: Data("started".utf8)))
        let down = try lab.down()
        #expect(down.status == 0, "\(down.stderr)")
        hung.waitUntilExit()
        #expect(lab.processesMentioningLab().isEmpty)
        let ssh = try lab.ssh("deb", "true", options: ["-o", "ConnectTimeout=2"])
        #expect(ssh.status == 255 && ssh.stderr.contains("Connection refused"))
    }
}

/// Runs `body(0..<count)` on concurrent threads and rethrows the first error.
func withThrowingTaskGroupSync(count: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    let errors = ErrorBox()
    DispatchQueue.concurrentPerform(iterations: count) { index in
        do { try body(index) } catch { errors.set(error) }
    }
    if let error = errors.first { throw error }
}

final class ErrorBox: @unchecked Sendable {
    // @unchecked: `stored` is only touched while holding `lock`.
    private let lock = NSLock()
    private var stored: Error?
    func set(_ error: Error) { lock.withLock { if stored == nil { stored = error } } }
    var first: Error? { lock.withLock { stored } }
}

/// Ansible, unchanged, against the lab's inventories (scripts/test installs ansible-core).
@Suite struct LabAnsibleTests {
    static func tool(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test func bothInventoriesResolveAlikeAndAnsibleReachesEveryHost() throws {
        let inventory = try #require(Self.tool("ansible-inventory"), "ansible-inventory is not installed (scripts/test installs ansible-core)")
        let ansible = try #require(Self.tool("ansible"))
        let lab = try TestLab(spec: LabFleetTests.healthySpec)
        let fromINI = try run([inventory, "-i", lab.path("inventory.ini"), "--list"])
        let fromYAML = try run([inventory, "-i", lab.path("inventory.yaml"), "--list"])
        #expect(fromINI.status == 0 && fromYAML.status == 0, "\(fromINI.stderr)\(fromYAML.stderr)")
        // A group variable of an INI file is a string ("true"), YAML's a boolean; Ansible's
        // become reads both as true.
        let iniText = fromINI.stdout.replacingOccurrences(of: "\"ansible_become\": \"true\"", with: "\"ansible_become\": true")
        let ini = try #require(try JSONSerialization.jsonObject(with: Data(iniText.utf8)) as? NSDictionary)
        let yaml = try #require(try JSONSerialization.jsonObject(with: Data(fromYAML.stdout.utf8)) as? NSDictionary)
        #expect(ini == yaml, "the INI and YAML inventories describe the same fleet")
        let hostvars = try #require((ini["_meta"] as? [String: Any])?["hostvars"] as? [String: [String: Any]])
        #expect(hostvars["deb"]?["st2_cluster"] as? String == "east" && hostvars["deb"]?["ansible_port"] as? Int == 2222)

        let ping = try run([ansible, "all", "-i", lab.path("inventory.yaml"), "-m", "raw", "-a", "st2 --version", "-o"])
        #expect(ping.status == 0, "\(ping.stdout)\(ping.stderr)")
        for host in ["deb", "el7", "rocky", "old"] {
            #expect(ping.stdout.contains("\(host) | CHANGED | rc=0"), "\(ping.stdout)")
        }
    }
}
