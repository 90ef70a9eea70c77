import FlotillaCore
import Foundation

/// Brings up a lab: files first (keys, configs, state, inventories), then one namespace
/// and sshd per host, then waits until every host answers as its spec says.
struct LabUp: Sendable {
    let dir: URL
    let specs: [HostSpec]
    let firstAddress: String
    let port: Int
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
                                passwd: passwd, shadow: shadow, passwordHash: passwordHash)
            } catch {
                failures.append("\(specs[index].name): \(error)")
            }
        }
        if let first = failures.items.first { throw LabError.failed("preparing hosts failed: \(first)") }
        try writeClientFiles(record)
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

    /// Polls each host until it answers as intended (sshd banner, or a silent accept),
    /// also recording the pid of each namespace's init (the parent of its sshd).
    private func waitUntilReady(_ record: inout LabRecord) throws {
        let deadline = Date().addingTimeInterval(30)
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
                throw LabError.failed("hosts did not answer within 30 s: \(pending.sorted().prefix(5).map { record.hosts[$0].name }.joined(separator: ", "))")
            }
            usleep(delay)
            delay = min(delay * 2, 50_000)
        }
    }

    private func prepareHost(_ spec: HostSpec, _ host: LabRecord.Host, executable: String, catalog: MigrationCatalog,
                             passwd: String, shadow: String, passwordHash: String) throws {
        let fm = FileManager.default
        let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
        for layer in HostPaths.overlays.map(\.layer) {
            try fm.createDirectory(at: paths.upper(layer), withIntermediateDirectories: true)
            try fm.createDirectory(at: paths.work(layer), withIntermediateDirectories: true)
        }
        try fm.createDirectory(at: paths.home, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let config = HostConfig(spec: spec, address: host.address, port: host.port, labDir: dir.path, hostDir: host.dir, executable: executable)
        try writeAtomically(try labJSONEncoder.encode(config), to: paths.config)
        let state = HostState(spec: spec)
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
            try "# st2.conf of \(spec.name), edited by the operator\n[api]\nhost = 127.0.0.1\n[database]\nhost = 127.0.0.1\n"
                .write(to: etc.appendingPathComponent("st2/st2.conf"), atomically: true, encoding: .utf8)
        }
        if spec.packages["st2mistral"] != nil {
            try fm.createDirectory(at: etc.appendingPathComponent("mistral"), withIntermediateDirectories: true)
            try "# mistral.conf of \(spec.name)\n[database]\nconnection = postgresql://mistral@127.0.0.1/mistral\n"
                .write(to: etc.appendingPathComponent("mistral/mistral.conf"), atomically: true, encoding: .utf8)
        }
        let passwdLines = passwd.split(separator: "\n").map { line -> String in
            var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if fields.first == "root", fields.count >= 7 { fields[5] = paths.home.path; fields[6] = "/bin/bash" }
            return fields.joined(separator: ":")
        }
        try (passwdLines.joined(separator: "\n") + "\n").write(to: etc.appendingPathComponent("passwd"), atomically: true, encoding: .utf8)
        var shadowLines = shadow.split(separator: "\n").map { line -> String in
            var fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            if fields.first == "root", fields.count >= 2 { fields[1] = passwordHash }
            return fields.joined(separator: ":")
        }
        if !shadowLines.contains(where: { $0.hasPrefix("root:") }) { shadowLines.insert("root:\(passwordHash):20000:0:99999:7:::", at: 0) }
        try writeAtomically(Data((shadowLines.joined(separator: "\n") + "\n").utf8), to: etc.appendingPathComponent("shadow"), mode: 0o640)

        // /run/sshd, which sshd needs for privilege separation.
        try fm.createDirectory(at: paths.upper("run").appendingPathComponent("sshd"), withIntermediateDirectories: true,
                               attributes: [.posixPermissions: 0o755])

        // /opt/stackstorm and /var/log/st2.
        let opt = paths.upper("opt")
        if spec.packages["st2"] != nil {
            try fm.createDirectory(at: opt.appendingPathComponent("stackstorm/st2/bin"), withIntermediateDirectories: true)
            try fm.createDirectory(at: opt.appendingPathComponent("stackstorm/packs"), withIntermediateDirectories: true)
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
        }

        let q = { (path: String) in "\"\(path)\"" }
        let sshdConfig = """
            # flotilla-lab host \(spec.name)
            ListenAddress \(host.address):\(host.port)
            HostKey \(q(paths.hostKey.path))
            PidFile none
            AuthorizedKeysFile \(q(dir.appendingPathComponent("authorized_keys").path))
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
    private func writeClientFiles(_ record: LabRecord) throws {
        var knownHosts: [String] = []
        for (spec, host) in zip(specs, record.hosts) where spec.faults.hostKey != .unknown && spec.faults.unreachable == nil {
            let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
            let keyFile = spec.faults.hostKey == .changed ? paths.previousHostKey : paths.hostKey
            let publicKey = try String(contentsOf: keyFile.appendingPathExtension("pub"), encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
            knownHosts.append("\(host.port == 22 ? host.address : "[\(host.address)]:\(host.port)") \(publicKey)")
        }
        try writeAtomically(Data((knownHosts.joined(separator: "\n") + "\n").utf8), to: dir.appendingPathComponent("known_hosts"))
        let inventories = LabInventory(dir: dir, specs: specs, hosts: record.hosts, clientKey: clientKey)
        try writeAtomically(Data(inventories.ini().utf8), to: dir.appendingPathComponent("inventory.ini"))
        try writeAtomically(Data(inventories.yaml().utf8), to: dir.appendingPathComponent("inventory.yaml"))
        try writeAtomically(Data(inventories.sshConfig().utf8), to: dir.appendingPathComponent("ssh_config"))
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
