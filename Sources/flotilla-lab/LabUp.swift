import FlotillaCore
import Foundation

/// Who the lab's inventories and ssh_config log in as: the host's non-root login user,
/// which reaches root through the host's real sudo with its password (as most sites do),
/// or root itself. Every host has both accounts either way.
enum LabLogin: String, CaseIterable, Sendable {
    case root, user

    /// The non-root login user of every lab host.
    static let userName = "st2ops"
}

/// Brings up a lab: files first (keys, configs, state, inventories), then one namespace
/// and sshd per host, then waits until every host answers as its spec says.
struct LabUp: Sendable {
    let dir: URL
    let specs: [HostSpec]
    let firstAddress: String
    let port: Int
    var login: LabLogin = .user
    let log: @Sendable (String) -> Void

    var labFile: URL { dir.appendingPathComponent("lab.json") }
    var binDir: URL { dir.appendingPathComponent("bin") }
    var clientKey: URL { dir.appendingPathComponent("id_ed25519") }

    func run() throws -> LabRecord {
        let began = Date()
        let executable = try Self.executablePath()
        let addresses = try loopbackAddresses(from: firstAddress, count: specs.count)
        if let busy = zip(specs, addresses).first(where: { $0.0.faults.unreachable != .refused && !Probe.isFree(address: $0.1, port: port) }) {
            throw LabError.usage("\(busy.1):\(port) (for \(busy.0.name)) is already in use; is another lab running there? Pick other addresses with --first-address")
        }
        let catalog = try MigrationCatalog.bundled()
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(dir.path, 0o700)
        try? fm.removeItem(at: dir.appendingPathComponent("hosts"))
        try? fm.removeItem(at: binDir)
        try fm.createDirectory(at: binDir, withIntermediateDirectories: true)
        for os in Set(specs.map(\.os.key)).sorted().compactMap(LabOS.named) {
            let osBin = binDir.appendingPathComponent(os.key)
            try fm.createDirectory(at: osBin, withIntermediateDirectories: true)
            let tools = Simulator.tools(for: os)
            for name in Simulator.binLinks {
                let path = osBin.appendingPathComponent(name).path
                if tools.contains(name) {
                    try fm.createSymbolicLink(atPath: path, withDestinationPath: executable)
                } else if mknod(path, S_IFCHR | 0o000, 0) != 0 { // an overlay whiteout: hides /usr/bin/NAME
                    throw LabError.failed("cannot create the whiteout \(path): \(String(cString: strerror(errno)))")
                }
            }
        }
        try? fm.removeItem(at: clientKey)
        try? fm.removeItem(at: clientKey.appendingPathExtension("pub"))
        try runTool(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "flotilla-lab", "-f", clientKey.path])
        try writeAtomically(try Data(contentsOf: clientKey.appendingPathExtension("pub")), to: dir.appendingPathComponent("authorized_keys"))
        let password = Self.randomPassword()
        try writeAtomically(Data((password + "\n").utf8), to: dir.appendingPathComponent("password"))
        let passwordHash = try runTool(["/usr/bin/openssl", "passwd", "-6", "-stdin"], input: password + "\n")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let passwd = try String(contentsOfFile: "/etc/passwd", encoding: .utf8)
        let shadow = (try? String(contentsOfFile: "/etc/shadow", encoding: .utf8)) ?? ""
        let group = try String(contentsOfFile: "/etc/group", encoding: .utf8)
        let user = LoginUser(id: Self.freeID(passwd: passwd, group: group))
        // The login user's group may pass through the lab directory (not list it) to its
        // host's shared files: the session wrapper and the simulated tools run as that user.
        try shareWithLoginGroup(dir, user, mode: 0o710)
        try fm.createDirectory(at: dir.appendingPathComponent("hosts"), withIntermediateDirectories: true)
        try shareWithLoginGroup(dir.appendingPathComponent("hosts"), user, mode: 0o710)

        var record = LabRecord(dir: dir.path, createdAt: began, state: "starting", hosts: [])
        for (spec, address) in zip(specs, addresses) {
            record.hosts.append(.init(name: spec.name, address: address, port: port,
                                      dir: dir.appendingPathComponent("hosts/\(spec.name)").path, unreachable: spec.faults.unreachable))
        }
        try save(record)

        // Host files are independent: prepare them on every core.
        let failures = LockedList()
        let hosts = record.hosts
        DispatchQueue.concurrentPerform(iterations: specs.count) { index in
            do {
                try prepareHost(specs[index], hosts[index], executable: executable, catalog: catalog,
                                accounts: .init(passwd: passwd, shadow: shadow, group: group, passwordHash: passwordHash, user: user))
            } catch {
                failures.append("\(specs[index].name): \(error)")
            }
        }
        if let first = failures.items.first { throw LabError.failed("preparing hosts failed: \(first)") }
        try writeClientFiles(record, password: password)
        log("prepared \(specs.count) hosts in \(String(format: "%.1f", Date().timeIntervalSince(began))) s; starting sshd")

        for index in record.hosts.indices {
            let host = record.hosts[index]
            switch host.unreachable {
            case .refused:
                continue
            case .silent:
                let pid = try ProcessTable.spawnDetached([executable, "_silent", host.address, String(port)], log: HostPaths(dir: URL(fileURLWithPath: host.dir)).bootLog)
                record.hosts[index].processes.append(.init(pid: pid, startTime: ProcessTable.startTime(of: pid) ?? 0, role: "silent-listener"))
            case nil:
                let argv = ["/usr/bin/unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child", "--propagation", "private",
                            executable, "_boot", host.dir]
                let pid = try ProcessTable.spawnDetached(argv, log: HostPaths(dir: URL(fileURLWithPath: host.dir)).bootLog)
                record.hosts[index].processes.append(.init(pid: pid, startTime: ProcessTable.startTime(of: pid) ?? 0, role: "namespace"))
            }
            try save(record)
        }
        try waitUntilReady(&record)
        record.state = "up"
        try save(record)
        return record
    }

    func save(_ record: LabRecord) throws {
        try writeAtomically(try labJSONEncoder.encode(record), to: labFile)
    }

    /// How long hosts get to answer after they are started. Generous: on a loaded machine
    /// (a 300-host test beside this one on two cores) sshd in a new namespace has been
    /// seen to take more than 30 s.
    static let readyTimeout: TimeInterval = 180

    /// Polls each host until it answers as intended (sshd banner, or a silent accept),
    /// also recording the pid of each namespace's init (the parent of its sshd).
    private func waitUntilReady(_ record: inout LabRecord) throws {
        let deadline = Date().addingTimeInterval(Self.readyTimeout)
        var pending = Set(record.hosts.indices.filter { record.hosts[$0].unreachable != .refused })
        var delay: useconds_t = 2_000
        while !pending.isEmpty {
            for index in pending.sorted() {
                let host = record.hosts[index]
                if let namespace = host.processes.first, namespace.role == "namespace", !ProcessTable.isAlive(namespace) {
                    let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
                    let bootLog = (try? String(contentsOf: paths.bootLog, encoding: .utf8)) ?? ""
                    let sshdLog = (try? String(contentsOf: paths.sshdLog, encoding: .utf8)) ?? ""
                    throw LabError.failed("\(host.name): its sshd exited at start\n\(bootLog)\(sshdLog)")
                }
                let answer = Probe.check(address: host.address, port: host.port, timeout: 0.05)
                let ready = host.unreachable == .silent ? answer == .silent : answer == .banner
                if ready {
                    pending.remove(index)
                    if let namespace = host.processes.first, namespace.role == "namespace",
                       let hostInit = ProcessTable.children(of: namespace.pid).first {
                        record.hosts[index].processes.append(.init(pid: hostInit, startTime: ProcessTable.startTime(of: hostInit) ?? 0, role: "init"))
                    }
                }
            }
            guard !pending.isEmpty else { break }
            guard Date() < deadline else {
                throw LabError.failed("hosts did not answer within \(Int(Self.readyTimeout)) s: \(pending.sorted().prefix(5).map { record.hosts[$0].name }.joined(separator: ", "))")
            }
            usleep(delay)
            delay = min(delay * 2, 50_000)
        }
    }

    private func prepareHost(_ spec: HostSpec, _ host: LabRecord.Host, executable: String, catalog: MigrationCatalog,
                             accounts: Accounts) throws {
        let fm = FileManager.default
        let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
        // The files the login user's commands share with root's (state, lock, command log)
        // are the host directory's group's; the rest stays owner-only.
        try fm.createDirectory(at: paths.dir, withIntermediateDirectories: true)
        try shareWithLoginGroup(paths.dir, accounts.user, mode: 0o770)
        for shared in [paths.lock, paths.commandLog] {
            try writeAtomically(Data(), to: shared, mode: 0o660, group: accounts.user.id)
        }
        guard mkfifo(paths.rebootRequest.path, 0o600) == 0 else {
            throw LabError.failed("cannot make \(paths.rebootRequest.path): \(String(cString: strerror(errno)))")
        }
        try shareWithLoginGroup(paths.rebootRequest, accounts.user, mode: 0o660)
        for layer in HostPaths.overlays.map(\.layer) {
            try fm.createDirectory(at: paths.upper(layer), withIntermediateDirectories: true)
            try fm.createDirectory(at: paths.work(layer), withIntermediateDirectories: true)
        }
        try fm.createDirectory(at: paths.home, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let config = HostConfig(spec: spec, address: host.address, port: host.port, labDir: dir.path, hostDir: host.dir, executable: executable)
        try writeAtomically(try labJSONEncoder.encode(config), to: paths.config, mode: 0o640, group: accounts.user.id)
        // The datastore crypto key: in /etc/st2/keys as st2 keeps it, and in the state,
        // where the simulated API (which runs as the caller, not as st2) encrypts with it.
        let cryptoSecret = (0..<32).map { _ in String(format: "%02X", UInt8.random(in: 0...255)) }.joined()
        var state = HostState(spec: spec)
        state.cryptoKey = cryptoSecret
        try StateStore(paths: paths).write(state)

        let keyType = spec.hostKeyType
        let keyArgs = keyType == "rsa" ? ["-t", "rsa", "-b", "2048"] : ["-t", keyType]
        try runTool(["/usr/bin/ssh-keygen", "-q"] + keyArgs + ["-N", "", "-C", spec.name, "-f", paths.hostKey.path])
        if spec.faults.hostKey == .changed {
            try runTool(["/usr/bin/ssh-keygen", "-q"] + keyArgs + ["-N", "", "-C", spec.name, "-f", paths.previousHostKey.path])
        }

        // The host's own /etc: identity, the st2 and mistral configuration, root's clean home and password.
        let etc = paths.upper("etc")
        try fm.createDirectory(at: etc.appendingPathComponent("st2"), withIntermediateDirectories: true)
        try spec.os.osRelease.write(to: etc.appendingPathComponent("os-release"), atomically: true, encoding: .utf8)
        if spec.os.family == .redhat {
            try "\(spec.os.prettyName)\n".write(to: etc.appendingPathComponent("redhat-release"), atomically: true, encoding: .utf8)
        }
        try (host.dir + "\n").write(to: etc.appendingPathComponent(URL(fileURLWithPath: HostPaths.marker).lastPathComponent), atomically: true, encoding: .utf8)
        if spec.packages["st2"] != nil {
            try LabDatabases.st2Conf(host: spec.name, address: host.address)
                .write(to: etc.appendingPathComponent("st2/st2.conf"), atomically: true, encoding: .utf8)
            // The datastore crypto key, as st2-generate-symmetric-crypto-key writes it: readable by root only here.
            let keys = etc.appendingPathComponent("st2/keys")
            try fm.createDirectory(at: keys, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let secret = cryptoSecret
            let key = keys.appendingPathComponent("datastore_key.json")
            try "{\"hmacKey\": {\"hmacKeyString\": \"\(secret.prefix(32))\", \"size\": 256}, \"aesKeyString\": \"\(secret)\", \"mode\": \"CBC\", \"size\": 256}\n"
                .write(to: key, atomically: true, encoding: .utf8)
            try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key.path)
        }
        if spec.packages["st2mistral"] != nil {
            try fm.createDirectory(at: etc.appendingPathComponent("mistral"), withIntermediateDirectories: true)
            try LabDatabases.mistralConf(host: spec.name, address: host.address)
                .write(to: etc.appendingPathComponent("mistral/mistral.conf"), atomically: true, encoding: .utf8)
        }
        try accounts.write(etc: etc, rootHome: paths.home, userHome: paths.loginHome)
        try fm.createDirectory(at: paths.loginHome.appendingPathComponent(".ssh"), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try writeAtomically(try Data(contentsOf: dir.appendingPathComponent("authorized_keys")), to: paths.loginHome.appendingPathComponent(".ssh/authorized_keys"))
        for path in [paths.loginHome, paths.loginHome.appendingPathComponent(".ssh"), paths.loginHome.appendingPathComponent(".ssh/authorized_keys")] {
            guard chown(path.path, accounts.user.id, accounts.user.id) == 0 else {
                throw LabError.failed("cannot give \(path.path) to \(LabLogin.userName): \(String(cString: strerror(errno)))")
            }
        }

        // /run/sshd, which sshd needs for privilege separation.
        try fm.createDirectory(at: paths.upper("run").appendingPathComponent("sshd"), withIntermediateDirectories: true,
                               attributes: [.posixPermissions: 0o755])

        // /opt/stackstorm and /var/log/st2.
        let opt = paths.upper("opt")
        if spec.packages["st2"] != nil {
            try fm.createDirectory(at: opt.appendingPathComponent("stackstorm/st2/bin"), withIntermediateDirectories: true)
            try fm.createDirectory(at: opt.appendingPathComponent("stackstorm/packs"), withIntermediateDirectories: true)
            try St2Content.writePacks(spec, packsRoot: opt.appendingPathComponent("stackstorm/packs"))
        }
        try syncShippedScripts(state: state, catalog: catalog, optRoot: opt, executable: executable)
        let logs = paths.upper("var-log").appendingPathComponent("st2")
        try fm.createDirectory(at: logs, withIntermediateDirectories: true)
        for (number, file) in spec.auditLogs.enumerated() {
            let component = file.replacingOccurrences(of: ".audit.log", with: "")
            let lines = (1...20).map { n in
                "{\"timestamp\": \"2026-11-\(10 + number)T0\(n % 10):00:00Z\", \"component\": \"\(component)\", \"host\": \"\(spec.name)\", \"event\": \"execution \(n) completed\"}"
            }
            try (lines.joined(separator: "\n") + "\n").write(to: logs.appendingPathComponent(file), atomically: true, encoding: .utf8)
            // st2's audit logs are root's alone on real hosts: the login user cannot read them.
            try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: logs.appendingPathComponent(file).path)
        }

        let q = { (path: String) in "\"\(path)\"" }
        let sshdConfig = """
            # flotilla-lab host \(spec.name)
            ListenAddress \(host.address):\(host.port)
            HostKey \(q(paths.hostKey.path))
            PidFile none
            AuthorizedKeysFile \(q(dir.appendingPathComponent("authorized_keys").path)) .ssh/authorized_keys
            PermitRootLogin yes
            PubkeyAuthentication yes
            PasswordAuthentication yes
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            UseDNS no
            PrintMotd no
            PrintLastLog no
            MaxSessions 256
            MaxStartups 1000
            ClientAliveInterval 0
            AcceptEnv LANG LC_*
            LogLevel INFO
            Subsystem sftp /usr/lib/openssh/sftp-server
            ForceCommand \(q(executable)) _session
            \(keyType == "rsa" ? "# An RSA-only host as older OpenSSH releases (7.x) served it: SHA-1 signatures allowed.\nHostKeyAlgorithms +ssh-rsa\n" : "")
            """
        try sshdConfig.write(to: paths.sshdConfig, atomically: true, encoding: .utf8)
    }

    /// known_hosts, both inventories, an ssh_config, all for the client side.
    private func writeClientFiles(_ record: LabRecord, password: String) throws {
        var knownHosts: [String] = []
        for (spec, host) in zip(specs, record.hosts) where spec.faults.hostKey != .unknown && spec.faults.unreachable == nil {
            let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
            let keyFile = spec.faults.hostKey == .changed ? paths.previousHostKey : paths.hostKey
            let publicKey = try String(contentsOf: keyFile.appendingPathExtension("pub"), encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
            knownHosts.append("\(host.port == 22 ? host.address : "[\(host.address)]:\(host.port)") \(publicKey)")
        }
        try writeAtomically(Data((knownHosts.joined(separator: "\n") + "\n").utf8), to: dir.appendingPathComponent("known_hosts"))
        let inventories = LabInventory(dir: dir, specs: specs, hosts: record.hosts, clientKey: clientKey,
                                       login: login, becomePassword: password)
        try writeAtomically(Data(inventories.ini().utf8), to: dir.appendingPathComponent("inventory.ini"))
        try writeAtomically(Data(inventories.yaml().utf8), to: dir.appendingPathComponent("inventory.yaml"))
        try writeAtomically(Data(inventories.sshConfig().utf8), to: dir.appendingPathComponent("ssh_config"))
    }

    /// Gives `url` to root and the login user's group, with `mode`.
    private func shareWithLoginGroup(_ url: URL, _ user: LoginUser, mode: mode_t) throws {
        guard chown(url.path, 0, user.id) == 0, chmod(url.path, mode) == 0 else {
            throw LabError.failed("cannot share \(url.path) with the login user's group: \(String(cString: strerror(errno)))")
        }
    }

    /// A user and group id this machine does not use, so no account of it owns the lab
    /// user's files.
    static func freeID(passwd: String, group: String) -> uid_t {
        func ids(_ text: String) -> Set<uid_t> {
            Set(text.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                return fields.count > 2 ? uid_t(fields[2]) : nil
            })
        }
        let used = ids(passwd).union(ids(group))
        return (2200...).lazy.map { uid_t($0) }.first { !used.contains($0) }!
    }

    static func randomPassword() -> String {
        let alphabet = Array("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }

    /// The real path of this executable, which every simulated command links to.
    static func executablePath() throws -> String {
        guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            throw LabError.failed("cannot find the flotilla-lab executable through /proc/self/exe")
        }
        return path
    }
}

/// A list several threads append to.
final class LockedList: @unchecked Sendable {
    // @unchecked: every access to `storage` holds `lock`.
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ item: String) { lock.withLock { storage.append(item) } }
    var items: [String] { lock.withLock { storage } }
}
