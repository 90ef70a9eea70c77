import Foundation
import Testing
@testable import FlotillaCore

@Suite struct PreflightTests {
    let catalog: MigrationCatalog
    init() throws { catalog = try MigrationCatalog.bundled() }

    func facts(os: OSInfo, manager: String, installed: [String: String], offered: [String: [String]]) -> HostFacts {
        HostFacts(os: .known(os), packageManager: .known(manager), installed: .known(installed), offered: .known(offered),
                  components: .known([ComponentState(name: "st2api", pid: 100)]),
                  disk: .known([DiskSpace(path: "/", mountPoint: "/", availableKiB: 1 << 30), DiskSpace(path: "/opt", mountPoint: "/", availableKiB: 1 << 30)]),
                  leftoverConfigs: .known([]))
    }

    func plan(_ facts: HostFacts, to target: String) -> HostPlan {
        UpgradePlanner(catalog: catalog, options: .init(target: StackStormVersion(target)!)).plan(facts)
    }

    static let focal = OSInfo(id: "ubuntu", versionID: "20.04", name: "Ubuntu 20.04 LTS", family: .debian)
    static let rocky = OSInfo(id: "rocky", versionID: "8.9", name: "Rocky Linux 8.9", family: .redhat)
    static let centos = OSInfo(id: "centos", versionID: "7", name: "CentOS Linux 7 (Core)", family: .redhat)

    @Test func preflightSitsBetweenTheBackupAndTheFirstStopWithTheExactTransaction() throws {
        let host = facts(os: Self.focal, manager: "apt", installed: ["st2": "3.7.1-1", "st2chatops": "3.7.1-1"],
                         offered: ["st2": ["3.8.1-1"], "st2chatops": ["3.8.1-1"]])
        let steps = plan(host, to: "3.8.1").steps
        #expect(steps.map(\.name).prefix(11) == ["export key-value store", "back up the datastore crypto key", "back up /etc/st2", "back up /etc/mistral",
                                                 "back up audit logs", "pre-flight disk", "pre-flight index", "pre-flight packages",
                                                 "pre-flight databases", "pre-flight st2 CLI", "stop services"])
        let preflight = steps.filter { $0.kind == .preflight }
        #expect(preflight.allSatisfy { $0.pass == 0 && $0.oncePer == nil })
        #expect(preflight[1].command == "apt-get update")
        #expect(preflight[2].command == "apt-get install -s --only-upgrade st2=3.8.1-1 st2chatops=3.8.1-1")
        // The simulation pins what the real transaction pins.
        let upgrade = try #require(steps.first { $0.kind == .upgradePackages })
        #expect(upgrade.command.hasSuffix(" st2=3.8.1-1 st2chatops=3.8.1-1"))
        #expect(preflight[4].command == "st2 key list -j -n 1 >/dev/null")
        #expect(preflight[0].command.contains("/var/cache/apt/archives /opt"))
        #expect(preflight[0].command.contains("-lt 1048576"))
        #expect(StepKind.preflight.runsDetached == false)
    }

    @Test func rpmHostsSimulateWithATestTransactionPerPass() {
        let rocky = facts(os: Self.rocky, manager: "dnf", installed: ["st2": "3.7.0-1.el8"], offered: ["st2": ["3.8.1-1.el8"]])
        let dnf = plan(rocky, to: "3.8.1").steps.filter { $0.kind == .preflight }.map(\.command)
        #expect(dnf[1] == "dnf makecache --refresh")
        #expect(dnf[2] == "dnf update -y --setopt=tsflags=test st2-3.8.1-1.el8")

        let old = facts(os: Self.centos, manager: "yum", installed: ["st2": "2.0.1-1.el7", "st2mistral": "2.0.1-1.el7"],
                        offered: ["st2": ["3.0.1-1.el7", "3.2.0-1.el7"], "st2mistral": ["3.0.1-1.el7", "3.2.0-1.el7"]])
        let hopped = plan(old, to: "3.2.0")
        #expect(hopped.hops == ["3.0.1"])
        let steps = hopped.steps.filter { $0.kind == .preflight }
        #expect(steps.map(\.name) == ["pre-flight disk", "pre-flight index", "pre-flight packages (pass 1)", "pre-flight packages (pass 2)",
                                      "pre-flight databases", "pre-flight st2 CLI"])
        #expect(steps[1].command == "yum makecache fast")
        #expect(steps[2].command == "yum update -y --setopt=tsflags=test st2-3.0.1-1.el7 st2mistral-3.0.1-1.el7")
        #expect(steps[3].command == "yum update -y --setopt=tsflags=test st2-3.2.0-1.el7 st2mistral-3.2.0-1.el7")
        // st2mistral is upgraded: its PostgreSQL is probed too; 2.0 has no `-n`.
        #expect(steps[4].command.contains("/etc/mistral/mistral.conf database connection"))
        #expect(steps[5].command == "st2 key list -j >/dev/null")
        // Only the first pass is pre-flighted: every pre-flight step precedes the first stop.
        let firstStop = hopped.steps.firstIndex { $0.kind == .stop }!
        #expect(hopped.steps.lastIndex { $0.kind == .preflight }! < firstStop)
    }

    @Test func databaseProbeReadsSt2ConfAndNeverPrintsCredentials() {
        let plain = Preflight.databasesCommand(mistral: false)
        #expect(plain.contains("conf $c database host"))
        #expect(plain.contains("conf $c messaging url"))
        #expect(!plain.contains("mistral.conf"))
        #expect(plain.contains("/dev/tcp/"))
        // The URL's user and password are cut off (`${u##*@}`) before anything is echoed.
        #expect(plain.contains("u=${u##*@}"))
    }

    @Test func reasonsSayWhatTheCheckFound() {
        let step = PlanStep(name: "pre-flight packages", command: "apt-get install -s --only-upgrade st2chatops=3.8.1-1", kind: .preflight)
        let unmet = StepOutcome(exitStatus: 100, stdoutTail: """
            Reading package lists...
            The following packages have unmet dependencies:
             st2chatops : Depends: nodejs (>= 14.0.0) but it is not installable
            """, stderrTail: "E: Unable to correct problems, you have held broken packages.\n")
        #expect(Preflight.reason(step, unmet)
                == "pre-flight packages failed (exit 100): E: Unable to correct problems, you have held broken packages.; st2chatops : Depends: nodejs (>= 14.0.0) but it is not installable")
        #expect(Preflight.reason(step, StepOutcome(exitStatus: 0, stdoutTail: "Inst st2chatops [3.7.1-1] (3.8.1-1 x [amd64])")) == nil)

        let index = PlanStep(name: "pre-flight index", command: "apt-get update", kind: .preflight)
        let stale = StepOutcome(exitStatus: 0, stderrTail: "W: Failed to fetch https://packagecloud.io/x focal InRelease  Could not resolve 'packagecloud.io'\nW: Some index files failed to download.\n")
        #expect(Preflight.reason(index, stale)?.hasPrefix("pre-flight index failed (the index is stale): W: Failed to fetch https://packagecloud.io/x") == true)
        // A stale-index warning fails only the refresh.
        #expect(Preflight.reason(step, StepOutcome(exitStatus: 0, stderrTail: "W: Failed to fetch x")) == nil)

        let databases = PlanStep(name: "pre-flight databases", command: "x", kind: .preflight)
        let down = StepOutcome(exitStatus: 1, stdoutTail: "RabbitMQ 127.0.0.5:5672 reachable\n", stderrTail: "MongoDB 127.0.0.5:27017 unreachable\n")
        #expect(Preflight.reason(databases, down) == "pre-flight databases failed (exit 1): MongoDB 127.0.0.5:27017 unreachable")
    }

    @Test func psOutputNamesTheLeftoverSt2Processes() {
        let ps = """
              1 /usr/sbin/sshd -D
            812 /opt/stackstorm/st2/bin/python /opt/stackstorm/st2/bin/st2sensorcontainer --config-file /etc/st2/st2.conf
            813 /opt/stackstorm/virtualenvs/core/bin/python /opt/stackstorm/st2/lib/python3.8/site-packages/python_runner/python_action_wrapper.py --pack=core
            814 /opt/stackstorm/st2/bin/python /opt/stackstorm/st2/bin/gunicorn st2api.wsgi:application -k eventlet -b 127.0.0.1:9101
            815 /opt/stackstorm/virtualenvs/linux/bin/python /opt/stackstorm/st2/lib/python3.8/site-packages/st2reactor/container/sensor_wrapper.py --pack=linux
            816 node /opt/stackstorm/chatops/node_modules/.bin/hubot --name stanley
            817 vim /opt/stackstorm/packs/mine/actions/a.py
            818 grep -E st2|stackstorm|mistral|hubot
            819 sudo -S -p  -u root -- sh -c exec </dev/null; ps -eo pid=,args= | grep -E 'st2|stackstorm|mistral|hubot' || true
            820 tail -f /var/log/st2/st2api.log
            821 /usr/bin/python3 /usr/bin/st2 key list
            822 st2actionrunner
            823 [python] <defunct>
            """
        #expect(St2Process.parse(ps: ps) == [
            St2Process(pid: 812, name: "st2sensorcontainer"),
            St2Process(pid: 813, name: "python_action_wrapper.py"),
            St2Process(pid: 814, name: "st2api"),
            St2Process(pid: 815, name: "sensor_wrapper.py"),
            St2Process(pid: 816, name: "hubot"),
            St2Process(pid: 822, name: "st2actionrunner"),
        ])
        #expect(St2Process.parse(ps: "") == [])
    }
}
