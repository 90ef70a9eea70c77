import Foundation

/// The non-root login user of the lab hosts: one id, used as its user and its group.
struct LoginUser: Sendable {
    let id: uid_t
}

/// The accounts of a lab host, written into its own /etc: this machine's, with root's
/// home and password set, plus the login user, who may run anything as root through sudo
/// with its password.
struct Accounts: Sendable {
    let passwd: String
    let shadow: String
    let group: String
    /// The lab password's hash, for root and the login user alike.
    let passwordHash: String
    let user: LoginUser

    func write(etc: URL, rootHome: URL, userHome: URL) throws {
        let name = LabLogin.userName
        var passwdLines = lines(passwd, without: name).map { line -> String in
            var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if fields.first == "root", fields.count >= 7 { fields[5] = rootHome.path; fields[6] = "/bin/bash" }
            return fields.joined(separator: ":")
        }
        passwdLines.append("\(name):x:\(user.id):\(user.id):StackStorm operator:\(userHome.path):/bin/bash")
        try writeAtomically(Data((passwdLines.joined(separator: "\n") + "\n").utf8), to: etc.appendingPathComponent("passwd"), mode: 0o644)

        var shadowLines = lines(shadow, without: name).map { line -> String in
            var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if fields.first == "root", fields.count >= 2 { fields[1] = passwordHash }
            return fields.joined(separator: ":")
        }
        if !shadowLines.contains(where: { $0.hasPrefix("root:") }) { shadowLines.insert("root:\(passwordHash):20000:0:99999:7:::", at: 0) }
        shadowLines.append("\(name):\(passwordHash):20000:0:99999:7:::")
        try writeAtomically(Data((shadowLines.joined(separator: "\n") + "\n").utf8), to: etc.appendingPathComponent("shadow"), mode: 0o640)

        let groupLines = lines(group, without: name) + ["\(name):x:\(user.id):"]
        try writeAtomically(Data((groupLines.joined(separator: "\n") + "\n").utf8), to: etc.appendingPathComponent("group"), mode: 0o644)

        // Debian's defaults, without the machine's sudoers.d; no lecture, which would go
        // to the caller's stderr on every host's first sudo.
        let sudoers = """
            # /etc/sudoers of a flotilla-lab host: the login user needs its password.
            Defaults\tenv_reset
            Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            Defaults\tuse_pty
            Defaults\tlecture=never
            root\tALL=(ALL:ALL) ALL
            \(name)\tALL=(ALL:ALL) ALL

            """
        try writeAtomically(Data(sudoers.utf8), to: etc.appendingPathComponent("sudoers"), mode: 0o440)
    }

    private func lines(_ text: String, without name: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix(name + ":") }
    }
}
