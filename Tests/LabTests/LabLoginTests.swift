import Foundation
import Testing
@testable import flotilla_lab

/// The lab's non-root login: st2ops changes nothing without root, as on a real host, and
/// changes packages through the host's real sudo with its password.
@Suite struct LabLoginTests {
    static let spec = """
        hosts:
          - name: deb
            os: ubuntu20.04
            packages: {st2: 3.7.1-1}
            available: [3.7.1-1, 3.8.1-1]
          - name: rocky
            os: el8
            packages: {st2: 3.7.0-1}
            available: [3.7.0-1, 3.8.1-1]
        """

    @Test func theLoginUserChangesPackagesOnlyThroughSudoWithItsPassword() throws {
        let lab = try TestLab(spec: Self.spec, login: "user")
        let password = try String(contentsOfFile: lab.path("password"), encoding: .utf8)
        let ini = try String(contentsOfFile: lab.path("inventory.ini"), encoding: .utf8)
        #expect(ini.contains("ansible_user=st2ops\n") && ini.contains("ansible_become=true\n"), "\(ini)")
        #expect(ini.contains("ansible_become_password=\(password.trimmingCharacters(in: .newlines))\n"))

        let who = try lab.ssh("deb", "id -un; id -u")
        #expect(who.status == 0 && who.stdout.hasPrefix("st2ops\n") && !who.stdout.hasSuffix("\n0\n"), "\(who.stdout) \(who.stderr)")

        // Without sudo: queries work, changes are refused as the real tools refuse them.
        let query = try lab.ssh("deb", "dpkg-query -W -f '${Version}' st2 && st2ctl status")
        #expect(query.status == 0 && query.stdout.hasPrefix("3.7.1-1"), "\(query.stderr)")
        let apt = try lab.ssh("deb", "apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1")
        #expect(apt.status == 100)
        #expect(apt.stderr.contains("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)"), "\(apt.stderr)")
        let dnf = try lab.ssh("rocky", "dnf install -y st2-3.8.1")
        #expect(dnf.status == 1 && dnf.stderr.contains("has to be run with superuser privileges"), "\(dnf.stderr)")
        let stop = try lab.ssh("deb", "st2ctl stop")
        #expect(stop.status == 1 && stop.stderr.contains("Interactive authentication required"), "\(stop.stderr)")
        #expect(try lab.packages("deb") == ["st2": "3.7.1-1"] && lab.packages("rocky") == ["st2": "3.7.0-1"])

        // sudo wants the password: none, or a wrong one, changes nothing.
        let noPassword = try lab.ssh("deb", "sudo -n apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1")
        #expect(noPassword.status == 1 && noPassword.stderr.contains("a password is required"), "\(noPassword.stderr)")
        let wrong = try lab.ssh("deb", "sudo -S -p '' apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1", input: "not-the-password\n")
        #expect(wrong.status == 1, "\(wrong.stderr)")
        #expect(try lab.packages("deb") == ["st2": "3.7.1-1"])

        // With the password on stdin, sudo finds the simulated tools on its secure_path.
        let upgrade = try lab.ssh("deb", "sudo -S -p '' apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1", input: password)
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        let yum = try lab.ssh("rocky", "sudo -S -p '' sh -c 'id -u; dnf install -y st2-3.8.1'", input: password)
        #expect(yum.status == 0 && yum.stdout.hasPrefix("0\n"), "\(yum.stdout) \(yum.stderr)")
        #expect(try lab.packages("deb") == ["st2": "3.8.1-1"] && lab.packages("rocky") == ["st2": "3.8.1-1"])

        // The host logs the refusals and the changes alike, whoever ran them.
        let log = try lab.commandLog("deb").filter { $0["kind"] as? String == "sim" }
        #expect(log.contains { ($0["argv"] as? [String])?.contains("install") == true && $0["exit_status"] as? Int == 100 }, "\(log)")
        #expect(log.contains { ($0["argv"] as? [String])?.contains("install") == true && $0["exit_status"] as? Int == 0 }, "\(log)")
    }

    @Test func rootLoginStaysOneCase() throws {
        let lab = try TestLab(spec: Self.spec, login: "root")
        let ini = try String(contentsOfFile: lab.path("inventory.ini"), encoding: .utf8)
        #expect(ini.contains("ansible_user=root\n") && !ini.contains("ansible_become"))
        let who = try lab.ssh("deb", "id -u && apt-get install -y -o Dpkg::Options::=--force-confold st2=3.8.1-1")
        #expect(who.status == 0 && who.stdout.hasPrefix("0\n"), "\(who.stderr)")
        #expect(try lab.packages("deb") == ["st2": "3.8.1-1"])
    }
}
