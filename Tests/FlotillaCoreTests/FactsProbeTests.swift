import Foundation
import Testing
@testable import FlotillaCore

/// The probe's output as the script prints it: the start marker, then each section's text
/// followed by its exit status, then the end marker.
fileprivate func probeOutput(_ sections: [(name: String, text: String, status: Int32)], preamble: String = "", end: Bool = true) -> String {
    var out = preamble + "@@flotilla-facts 1\n"
    for section in sections {
        out += "@@flotilla-facts section \(section.name)\n"
        if !section.text.isEmpty { out += section.text + "\n" }
        out += "@@flotilla-facts status \(section.status)\n"
    }
    return out + (end ? "@@flotilla-facts end\n" : "")
}

fileprivate enum ProbeSamples {
    static let ubuntuOSRelease = """
        NAME="Ubuntu"
        VERSION="18.04.6 LTS (Bionic Beaver)"
        ID=ubuntu
        ID_LIKE=debian
        PRETTY_NAME="Ubuntu 18.04.6 LTS"
        VERSION_ID="18.04"
        HOME_URL="https://www.ubuntu.com/"
        VERSION_CODENAME=bionic
        UBUNTU_CODENAME=bionic
        """

    static let centos7OSRelease = """
        NAME="CentOS Linux"
        VERSION="7 (Core)"
        ID="centos"
        ID_LIKE="rhel fedora"
        VERSION_ID="7"
        PRETTY_NAME="CentOS Linux 7 (Core)"
        ANSI_COLOR="0;31"
        CPE_NAME="cpe:/o:centos:centos:7"
        """

    static let rocky8OSRelease = """
        NAME="Rocky Linux"
        VERSION="8.9 (Green Obsidian)"
        ID="rocky"
        ID_LIKE="rhel centos fedora"
        VERSION_ID="8.9"
        PLATFORM_ID="platform:el8"
        PRETTY_NAME="Rocky Linux 8.9 (Green Obsidian)"
        """

    /// dpkg-query -W -f='${Package}\t${Version}\t${db:Status-Abbrev}\n' (the abbreviation has
    /// a trailing space); unknown packages on stderr, exit 1.
    static let dpkgInstalled = """
        dpkg-query: no packages found matching st2mistral
        dpkg-query: no packages found matching bwc-enterprise
        st2\t3.7.1-1\tii\u{20}
        st2web\t3.7.1-1\tii\u{20}
        st2chatops\t3.7.0-1\trc\u{20}
        """

    static let madison = """
               st2 |    3.8.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
               st2 |    3.8.0-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
               st2 |   3.7.10-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
               st2 |    3.7.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
            st2web |    3.8.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
            st2web |    3.7.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
            st2web |    3.7.1-1 | https://mirror.example.com/StackStorm/stable/ubuntu bionic/main amd64 Packages
        st2chatops |    3.8.0-1 | https://packagecloud.io/StackStorm/stable/ubuntu bionic/main amd64 Packages
        """

    static let st2ctlStatus = """
        ##### st2 components status #####
        st2actionrunner PID: 1234
        st2actionrunner PID: 1235
        st2api PID: 1301
        st2stream PID: 1302
        st2auth PID: 1303
        st2garbagecollector PID: 1304
        st2notifier PID: 1305
        st2rulesengine PID: 1306
        st2sensorcontainer PID: 1307
        st2chatops is not running.
        st2timersengine PID: 1308
        st2workflowengine PID: 1309
        st2scheduler PID: 1310
        """

    static let df = """
        Filesystem     1024-blocks     Used Available Capacity Mounted on
        /dev/sda1         41152736 12345678  26693568      32% /
        /dev/sdb1        103081248  5242880  92585632       6% /opt
        """

    static let ubuntuLeftovers = """
        /etc/st2/st2.conf.dpkg-old
        /etc/st2/st2.conf.dpkg-dist
        """

    static var ubuntu: String {
        probeOutput([
            ("os-release", ubuntuOSRelease, 0),
            ("package-manager", "apt", 0),
            ("installed", dpkgInstalled, 1),
            ("offered", madison + "\nN: Unable to locate package st2mistral", 0),
            ("st2ctl", st2ctlStatus, 0),
            ("disk", df, 0),
            ("leftovers", ubuntuLeftovers, 0),
        ], preamble: "Warning: Permanently added '10.0.0.5' (ED25519) to the list of known hosts.\n")
    }

    static let ubuntuComponents: [ComponentState] = [
        .init(name: "st2actionrunner", pid: 1234), .init(name: "st2actionrunner", pid: 1235), .init(name: "st2api", pid: 1301),
        .init(name: "st2stream", pid: 1302), .init(name: "st2auth", pid: 1303), .init(name: "st2garbagecollector", pid: 1304),
        .init(name: "st2notifier", pid: 1305), .init(name: "st2rulesengine", pid: 1306), .init(name: "st2sensorcontainer", pid: 1307),
        .init(name: "st2chatops", pid: nil), .init(name: "st2timersengine", pid: 1308), .init(name: "st2workflowengine", pid: 1309),
        .init(name: "st2scheduler", pid: 1310),
    ]

    static let ubuntuDisk = [
        DiskSpace(path: "/", mountPoint: "/", availableKiB: 26_693_568),
        DiskSpace(path: "/opt", mountPoint: "/opt", availableKiB: 92_585_632),
    ]

    /// The Ubuntu probe's facts.
    static var ubuntuFacts: HostFacts {
        HostFacts(
            os: .known(OSInfo(id: "ubuntu", versionID: "18.04", name: "Ubuntu 18.04.6 LTS", family: .debian)),
            packageManager: .known("apt"),
            installed: .known(["st2": "3.7.1-1", "st2web": "3.7.1-1"]),
            offered: .known(["st2": ["3.7.1-1", "3.7.10-1", "3.8.0-1", "3.8.1-1"], "st2web": ["3.7.1-1", "3.8.1-1"], "st2chatops": ["3.8.0-1"]]),
            components: .known(ubuntuComponents),
            disk: .known(ubuntuDisk),
            leftoverConfigs: .known(["/etc/st2/st2.conf.dpkg-dist", "/etc/st2/st2.conf.dpkg-old"]))
    }
}

@Suite struct FactsProbeTests {
    fileprivate typealias S = ProbeSamples

    // MARK: The script

    @Test func scriptOnlyReads() {
        let script = FactsProbe.script(packages: ["st2", "st2web", "st2chatops", "st2mistral", "bwc-enterprise"])
        #expect(script.hasPrefix("P='st2 st2web st2chatops st2mistral bwc-enterprise'; M='@@flotilla-facts'; exec 2>&1\n"))
        // What it runs to read each fact.
        for command in ["cat /etc/os-release", "dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' $P",
                        "rpm -q --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\tii\\n' $P", "apt-cache madison $P",
                        "dnf list --showduplicates $P", "yum list --showduplicates $P", "st2ctl status", "df -Pk / /opt",
                        "find \"$d\" \\( -name '*.dpkg-dist' -o -name '*.dpkg-old' -o -name '*.rpmnew' \\) -print"] {
            #expect(script.contains(command), "missing: \(command)")
        }
        // Nothing that changes the host.
        let lowered = script.lowercased()
        for forbidden in ["st2ctl stop", "st2ctl start", "st2ctl restart", "st2ctl reload", "apt-get install", "apt-get update",
                          "apt-get upgrade", "apt-get remove", "apt install", "apt update", "yum install", "yum update", "yum remove",
                          "dnf install", "dnf update", "dnf remove", "rpm -i", "rpm -u", "rpm -e", "dpkg -i", "dpkg --", "update ",
                          "upgrade", "makecache", "mistral-db-manage", "st2-migrate", "st2 key", "rm ", "rm -", "mv ", "cp ", "chmod",
                          "chown", "mkdir", "touch ", "tee ", "sed -i", "kill", "systemctl", "service ", "-delete", "-exec", "reboot",
                          "shutdown", ">>", "sudo"] {
            #expect(!lowered.contains(forbidden), "the probe contains '\(forbidden)'")
        }
        // The only redirections: to /dev/null and stderr to stdout.
        let redirections = script.replacingOccurrences(of: ">/dev/null", with: "").replacingOccurrences(of: "2>&1", with: "")
        #expect(!redirections.contains(">"))
        #expect(script.hasSuffix("echo \"$M end\""))
    }

    @Test func scriptLeavesOutPackageNamesThatAreNotPlainNames() {
        let script = FactsProbe.script(packages: ["st2", "st2;rm -rf /", "bad'quote", "$(reboot)", "python3.8-dev", "g++"])
        #expect(script.hasPrefix("P='st2 python3.8-dev g++'; "))
    }

    @Test func scriptIsValidPOSIXShell() throws {
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-n"]  // syntax check only: runs nothing
        let input = Pipe(), errors = Pipe()
        shell.standardInput = input
        shell.standardError = errors
        try shell.run()
        input.fileHandleForWriting.write(Data(FactsProbe.script(packages: ["st2", "st2web"]).utf8))
        try input.fileHandleForWriting.close()
        shell.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(shell.terminationStatus == 0, "sh -n: \(message)")
    }

    // MARK: Whole outputs

    @Test func parsesAnUbuntuHost() {
        let facts = FactsProbe.parse(output: S.ubuntu, exitStatus: 0)
        #expect(facts == S.ubuntuFacts)
        #expect(facts.problems.isEmpty)
        #expect(facts.st2Package == "3.7.1-1")
        #expect(facts.st2Version == StackStormVersion("3.7.1-1"))
        // st2chatops is listed by st2ctl but not installed: not expected to run.
        #expect(facts.expectedComponents?.map(\.name).contains("st2chatops") == false)
        #expect(facts.expectedComponents?.count == 12)
    }

    @Test func parsesACentOS7HostWithYum() {
        let output = probeOutput([
            ("os-release", S.centos7OSRelease, 0),
            ("package-manager", "yum", 0),
            ("installed", """
                st2\t3.7.0-1.el7\tii
                st2chatops\t3.7.0-1.el7\tii
                package st2web is not installed
                package st2mistral is not installed
                package bwc-enterprise is not installed
                """, 3),
            ("offered", """
                Loaded plugins: fastestmirror, ovl
                Loading mirror speeds from cached hostfile
                 * base: mirror.centos.org
                 * epel: mirror.example.net
                Installed Packages
                st2.x86_64                        3.7.0-1.el7                   @StackStorm_stable
                st2chatops.x86_64                 3.7.0-1.el7                   @StackStorm_stable
                Available Packages
                st2.x86_64                        3.6.0-1.el7                   StackStorm_stable
                st2.x86_64                        3.7.0-1.el7                   StackStorm_stable
                st2.x86_64                        3.8.1-1.el7                   StackStorm_stable
                st2.x86_64                        3.8.0-1.el7                   StackStorm_stable
                st2chatops.x86_64                 3.8.0-1.el7                   StackStorm_stable
                """, 0),
            ("st2ctl", """
                ##### st2 components status #####
                st2actionrunner PID: 911
                st2api is not running.
                st2chatops PID: 950
                """, 0),
            ("disk", """
                Filesystem              1024-blocks    Used Available Capacity Mounted on
                /dev/mapper/centos-root    52403200 9437184  42965916      19% /
                /dev/mapper/centos-root    52403200 9437184  42965916      19% /
                """, 0),
            ("leftovers", "/etc/st2/st2.conf.rpmnew", 0),
        ])
        let facts = FactsProbe.parse(output: output, exitStatus: 0)
        #expect(facts == HostFacts(
            os: .known(OSInfo(id: "centos", versionID: "7", name: "CentOS Linux 7 (Core)", family: .redhat)),
            packageManager: .known("yum"),
            installed: .known(["st2": "3.7.0-1.el7", "st2chatops": "3.7.0-1.el7"]),
            offered: .known(["st2": ["3.6.0-1.el7", "3.7.0-1.el7", "3.8.0-1.el7", "3.8.1-1.el7"], "st2chatops": ["3.8.0-1.el7"]]),
            components: .known([.init(name: "st2actionrunner", pid: 911), .init(name: "st2api", pid: nil), .init(name: "st2chatops", pid: 950)]),
            disk: .known([DiskSpace(path: "/", mountPoint: "/", availableKiB: 42_965_916),
                          DiskSpace(path: "/opt", mountPoint: "/", availableKiB: 42_965_916)]),
            leftoverConfigs: .known(["/etc/st2/st2.conf.rpmnew"])))
        #expect(facts.os.value?.key == "el7")
    }

    @Test func parsesARocky8HostWithDnf() {
        let output = probeOutput([
            ("os-release", S.rocky8OSRelease, 0),
            ("package-manager", "dnf", 0),
            ("installed", """
                st2\t3.7.0-1.el8\tii
                st2web\t3.7.0-1.el8\tii
                package st2chatops is not installed
                package st2mistral is not installed
                package bwc-enterprise is not installed
                """, 3),
            ("offered", """
                Last metadata expiration check: 0:12:01 ago on Thu 21 Nov 2024 10:00:00 AM UTC.
                Installed Packages
                st2.x86_64                       3.7.0-1.el8                     @StackStorm_stable
                st2web.x86_64                    3.7.0-1.el8                     @StackStorm_stable
                Available Packages
                st2.x86_64                       3.7.0-1.el8                     StackStorm_stable
                st2.x86_64                       3.8.1-2.el8                     StackStorm_stable
                st2.x86_64                       3.8.1-10.el8                    StackStorm_stable
                st2.x86_64                       3.8.1-1.el8                     StackStorm_stable
                st2web.x86_64                    3.8.1-1.el8                     StackStorm_stable
                """, 0),
            ("st2ctl", "##### st2 components status #####\nst2api PID: 1234\nst2chatops is not running.", 0),
            ("disk", S.df, 0),
            ("leftovers", "", 0),
        ])
        let facts = FactsProbe.parse(output: output, exitStatus: 0)
        #expect(facts.os == .known(OSInfo(id: "rocky", versionID: "8.9", name: "Rocky Linux 8.9 (Green Obsidian)", family: .redhat)))
        #expect(facts.os.value?.key == "el8")
        #expect(facts.packageManager == .known("dnf"))
        #expect(facts.installed == .known(["st2": "3.7.0-1.el8", "st2web": "3.7.0-1.el8"]))
        // Installed versions are not offers; revisions compare numerically.
        #expect(facts.offered == .known(["st2": ["3.7.0-1.el8", "3.8.1-1.el8", "3.8.1-2.el8", "3.8.1-10.el8"], "st2web": ["3.8.1-1.el8"]]))
        #expect(facts.components == .known([.init(name: "st2api", pid: 1234), .init(name: "st2chatops", pid: nil)]))
        #expect(facts.disk == .known(S.ubuntuDisk))
        #expect(facts.leftoverConfigs == .known([]))
        #expect(facts.problems.isEmpty)
    }

    // MARK: Failures

    @Test func aFailedSectionMakesOnlyItsFactUnreadable() {
        let output = probeOutput([
            ("os-release", S.ubuntuOSRelease, 0),
            ("package-manager", "apt", 0),
            ("installed", S.dpkgInstalled, 1),
            ("offered", S.madison, 0),
            ("st2ctl", S.st2ctlStatus, 0),
            ("disk", "df: /opt: No such file or directory\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/sda1         41152736 12345678  26693568      32% /", 1),
            ("leftovers", S.ubuntuLeftovers, 0),
        ])
        let facts = FactsProbe.parse(output: output, exitStatus: 0)
        var expected = S.ubuntuFacts
        expected.disk = facts.disk
        #expect(facts == expected)
        #expect(facts.disk.problem?.hasPrefix("df -Pk / /opt: exit 1: ") == true)
        #expect(facts.problems.map(\.fact) == ["disk"])
    }

    @Test func dfWithOneLineOnlyIsUnreadableEvenWithExitZero() {
        let output = probeOutput([("disk", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100 50 50 50% /", 0)])
        #expect(FactsProbe.parse(output: output, exitStatus: 0).disk
                == .unreadable("df -Pk / /opt: exit 0: Filesystem 1024-blocks Used Available Capacity Mounted on / /dev/sda1 100 50 50 50% /"))
    }

    @Test func failingSectionsSayWhy() {
        let output = probeOutput([
            ("os-release", "cat: /etc/os-release: No such file or directory", 1),
            ("package-manager", "", 0),
            ("installed", "neither dpkg-query nor rpm is installed", 127),
            ("offered", "Loaded plugins: fastestmirror\nOne of the configured repositories failed (StackStorm)\nCannot retrieve repository metadata (repomd.xml)", 1),
            ("st2ctl", "st2ctl: not installed", 127),
            ("disk", S.df, 0),
            ("leftovers", "find: '/etc/st2/keys': Permission denied", 1),
        ])
        let facts = FactsProbe.parse(output: output, exitStatus: 0)
        #expect(facts.os == .unreadable("/etc/os-release: exit 1: cat: /etc/os-release: No such file or directory"))
        #expect(facts.packageManager == .unreadable("no apt-get, dnf or yum on the host"))
        #expect(facts.installed == .unreadable("exit 127: neither dpkg-query nor rpm is installed (package query failed)"))
        #expect(facts.offered == .unreadable("repository query: exit 1: One of the configured repositories failed (StackStorm) / Cannot retrieve repository metadata (repomd.xml)"))
        // st2ctl missing while the installed packages are unknown: not "no components".
        #expect(facts.components == .unreadable("st2ctl status: exit 127: st2ctl: not installed"))
        #expect(facts.disk == .known(S.ubuntuDisk))
        #expect(facts.leftoverConfigs == .unreadable("find /etc/st2 /etc/mistral: exit 1: find: '/etc/st2/keys': Permission denied"))
        #expect(facts.problems.map(\.fact) == ["os", "package_manager", "packages", "offered", "components", "leftover_configs"])
    }

    @Test func osReleaseWithoutIDIsUnreadable() {
        let output = probeOutput([("os-release", "NAME=\"Something\"\nVERSION_ID=1", 0)])
        #expect(FactsProbe.parse(output: output, exitStatus: 0).os == .unreadable("/etc/os-release: no ID in it"))
    }

    @Test func anUnexpectedPackageLineMakesInstalledUnreadable() {
        let output = probeOutput([("installed", "st2\t3.8.1-1\tii\nSegmentation fault", 139)])
        #expect(FactsProbe.parse(output: output, exitStatus: 0).installed
                == .unreadable("exit 139: st2\t3.8.1-1\tii / Segmentation fault (package query failed)"))
        let odd = probeOutput([("installed", "st2\t3.8.1-1\tii\nsomething odd", 1)])
        #expect(FactsProbe.parse(output: odd, exitStatus: 0).installed
                == .unreadable("exit 1: st2\t3.8.1-1\tii / something odd (unexpected line: something odd)"))
    }

    @Test func st2ctlThatIsNotTheComponentListIsUnreadable() {
        let output = probeOutput([("installed", "st2\t3.8.1-1\tii ", 0), ("st2ctl", "Please run st2ctl as root", 0)])
        #expect(FactsProbe.parse(output: output, exitStatus: 0).components == .unreadable("st2ctl status: not the usual component list"))
    }

    @Test func noSt2MeansNoComponentsNotAnUnknown() {
        let output = probeOutput([
            ("installed", "dpkg-query: no packages found matching st2\ndpkg-query: no packages found matching st2web", 1),
            ("st2ctl", "st2ctl: not installed", 127),
        ])
        let facts = FactsProbe.parse(output: output, exitStatus: 0)
        #expect(facts.installed == .known([:]))
        #expect(facts.components == .known([]))
        #expect(facts.st2Package == nil)
        // st2 installed but st2ctl missing: unreadable.
        let broken = probeOutput([("installed", "st2\t3.8.1-1\tii ", 0), ("st2ctl", "st2ctl: not installed", 127)])
        #expect(FactsProbe.parse(output: broken, exitStatus: 0).components == .unreadable("st2ctl status: exit 127: st2ctl: not installed"))
    }

    @Test func outputCutOffMidwayLeavesTheRestUnreadable() {
        // The connection dropped while st2ctl status ran.
        let full = S.ubuntu
        let cut = String(full[..<full.range(of: "st2api PID: 1301")!.lowerBound])
        let facts = FactsProbe.parse(output: cut, exitStatus: nil, error: "timed out after 60s")
        var expected = S.ubuntuFacts
        expected.components = .unreadable("output ended before the st2ctl section finished (timed out after 60s)")
        expected.disk = .unreadable("output ended before the disk section finished (timed out after 60s)")
        expected.leftoverConfigs = .unreadable("output ended before the leftovers section finished (timed out after 60s)")
        #expect(facts == expected)
        #expect(facts.problems.map(\.fact) == ["components", "disk", "leftover_configs"])

        let early = String(full[..<full.range(of: "@@flotilla-facts section installed")!.lowerBound])
        let killed = FactsProbe.parse(output: early, exitStatus: 137)
        #expect(killed.os == S.ubuntuFacts.os)
        #expect(killed.packageManager == .known("apt"))
        #expect(killed.installed == .unreadable("output ended before the installed section finished (exit 137)"))
        #expect(killed.offered == .unreadable("output ended before the offered section finished (exit 137)"))
        #expect(killed.problems.count == 5)
    }

    @Test func aProbeThatNeverStartedMakesEveryFactUnreadable() {
        let facts = FactsProbe.parse(output: "sudo: a password is required\n", exitStatus: 1)
        let reason = "the facts probe did not run (exit 1): sudo: a password is required"
        #expect(facts == HostFacts(unreadable: reason))
        #expect(facts.problems.map(\.fact) == ["os", "package_manager", "packages", "offered", "components", "disk", "leftover_configs"])
        #expect(facts.problems.allSatisfy { $0.reason == reason })

        let terminal = FactsProbe.parse(output: """
            We trust you have received the usual lecture from the local System Administrator.
            sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper
            sudo: a password is required

            """, exitStatus: 1)
        #expect(terminal.os.problem == "the facts probe did not run (exit 1): We trust you have received the usual lecture from the local System Administrator. / sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper / sudo: a password is required")

        #expect(FactsProbe.parse(output: "", exitStatus: nil, error: "connection lost").disk == .unreadable("the facts probe did not run (connection lost)"))
        #expect(FactsProbe.parse(output: "", exitStatus: nil).installed == .unreadable("the facts probe did not run (exit ?)"))
    }

    // MARK: The parts

    @Test func osReleaseFamiliesAndKeys() throws {
        let ubuntu = try #require(OSInfo.parse(osRelease: S.ubuntuOSRelease))
        #expect(ubuntu == OSInfo(id: "ubuntu", versionID: "18.04", name: "Ubuntu 18.04.6 LTS", family: .debian))
        #expect(ubuntu.key == "ubuntu18.04")
        let debian = try #require(OSInfo.parse(osRelease: "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian"))
        #expect(debian.family == .debian && debian.key == "debian12" && debian.name == "Debian GNU/Linux 12 (bookworm)")
        #expect(OSInfo.parse(osRelease: S.centos7OSRelease)?.key == "el7")
        #expect(OSInfo.parse(osRelease: S.rocky8OSRelease)?.key == "el8")
        #expect(OSInfo.parse(osRelease: "ID=\"centos\"\nVERSION_ID=\"6.10\"")?.key == "el6")
        let rhel = try #require(OSInfo.parse(osRelease: "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID='8.6'"))
        #expect(rhel.family == .redhat && rhel.key == "el8" && rhel.name == "Red Hat Enterprise Linux")
        let alpine = try #require(OSInfo.parse(osRelease: "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\""))
        #expect(alpine == OSInfo(id: "alpine", versionID: "3.19.1", name: "Alpine Linux v3.19", family: .other))
        #expect(OSInfo.parse(osRelease: "# ID=ubuntu\nNAME=x") == nil)
        #expect(OSInfo.parse(osRelease: "ID=") == nil)
        #expect(OSInfo.parse(osRelease: "") == nil)
    }

    @Test func st2ctlStatusText() throws {
        let parsed = try #require(ComponentState.parse(st2ctlStatus: S.st2ctlStatus))
        #expect(parsed == S.ubuntuComponents)
        #expect(parsed.filter { !$0.running }.map(\.name) == ["st2chatops"])
        // After st2ctl stop.
        let stopped = try #require(ComponentState.parse(st2ctlStatus: "##### st2 components status #####\nst2api is not running.\nmistral-server is not running.\n"))
        #expect(stopped == [.init(name: "st2api", pid: nil), .init(name: "mistral-server", pid: nil)])
        #expect(ComponentState.parse(st2ctlStatus: "##### st2 components status #####\n") == [])
        #expect(ComponentState.parse(st2ctlStatus: "st2api PID: 1234") == nil)
        #expect(ComponentState.parse(st2ctlStatus: "") == nil)
    }

    @Test func expectedComponentsLeaveOutPackagesThatAreNotInstalled() {
        let list: [ComponentState] = [.init(name: "st2api", pid: 1), .init(name: "st2chatops", pid: nil),
                                      .init(name: "mistral-server", pid: nil), .init(name: "mistral-api", pid: 3)]
        #expect(ComponentState.expected(list, installed: ["st2": "3.2.0-1"]).map(\.name) == ["st2api"])
        #expect(ComponentState.expected(list, installed: ["st2": "3.2.0-1", "st2chatops": "3.2.0-1"]).map(\.name) == ["st2api", "st2chatops"])
        #expect(ComponentState.expected(list, installed: ["st2": "3.2.0-1", "st2mistral": "3.2.0-1"]).map(\.name)
                == ["st2api", "mistral-server", "mistral-api"])
    }

    @Test func installedPackageLines() {
        #expect(FactsProbe.parseInstalled(S.dpkgInstalled, status: 1) == .known(["st2": "3.7.1-1", "st2web": "3.7.1-1"]))
        // A held package is installed; a known but absent one ("un", empty version) is not.
        #expect(FactsProbe.parseInstalled("st2\t3.7.1-1\thi \nst2web\t\tun ", status: 1) == .known(["st2": "3.7.1-1"]))
        #expect(FactsProbe.parseInstalled("st2\t3.8.1-1.el8\tii\npackage st2web is not installed", status: 1) == .known(["st2": "3.8.1-1.el8"]))
        #expect(FactsProbe.parseInstalled("", status: 0) == .known([:]))
        #expect(FactsProbe.parseInstalled("bash: dpkg-query: command not found", status: 127) == .unreadable("package query failed"))
        #expect(FactsProbe.parseInstalled("st2\t3.8.1-1\tii ", status: nil) == .unreadable("package query failed"))
        #expect(FactsProbe.parseInstalled("dpkg-query: error: failed to open package info file", status: 2)
                == .unreadable("unexpected line: dpkg-query: error: failed to open package info file"))
    }

    @Test func offeredVersionLines() {
        #expect(FactsProbe.parseOffered(S.madison, status: 0, failure: "x")
                == .known(["st2": ["3.7.1-1", "3.7.10-1", "3.8.0-1", "3.8.1-1"], "st2web": ["3.7.1-1", "3.8.1-1"], "st2chatops": ["3.8.0-1"]]))
        // apt-cache madison with nothing found prints nothing and exits 0.
        #expect(FactsProbe.parseOffered("", status: 0, failure: "x") == .known([:]))
        // yum/dnf exit 1 when no package matches at all.
        #expect(FactsProbe.parseOffered("Loaded plugins: fastestmirror\nError: No matching Packages to list", status: 1, failure: "x") == .known([:]))
        #expect(FactsProbe.parseOffered("Error: Failed to download metadata for repo 'StackStorm_stable'", status: 1, failure: "exit 1: nope")
                == .unreadable("repository query: exit 1: nope"))
        // "No matching Packages" does not excuse a failing apt-cache.
        #expect(FactsProbe.parseOffered("st2 | 3.8.1-1 | repo\nNo matching Packages", status: 1, failure: "f") == .unreadable("repository query: f"))
        #expect(FactsProbe.parseOffered("E: broken", status: 100, failure: "f") == .unreadable("repository query: f"))
        // Only the "Available Packages" part of yum's list.
        let yum = """
            Installed Packages
            st2.x86_64        3.7.0-1.el7        @StackStorm_stable
            Available Packages
            st2.x86_64        3.8.1-1.el7        StackStorm_stable
            st2web.noarch     3.8.1-1.el7        StackStorm_stable
            """
        #expect(FactsProbe.parseOffered(yum, status: 0, failure: "f") == .known(["st2": ["3.8.1-1.el7"], "st2web": ["3.8.1-1.el7"]]))
    }

    @Test func dfLines() {
        #expect(FactsProbe.parseDF(S.df, paths: ["/", "/opt"]) == S.ubuntuDisk)
        let spaced = """
            Filesystem     1024-blocks  Used Available Capacity Mounted on
            /dev/sda1           1000   400       600      40% /
            /dev/sdc1           2000   100      1900       5% /mnt/my disk
            """
        #expect(FactsProbe.parseDF(spaced, paths: ["/", "/opt"])
                == [DiskSpace(path: "/", mountPoint: "/", availableKiB: 600), DiskSpace(path: "/opt", mountPoint: "/mnt/my disk", availableKiB: 1900)])
        #expect(FactsProbe.parseDF("df: /opt: No such file or directory", paths: ["/", "/opt"]) == [])
    }
}
