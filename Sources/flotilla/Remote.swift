import ArgumentParser
import FlotillaCore
import Foundation
import SSH

/// SSH connection flags shared by every command that connects (SPEC §3).
struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("strict (default): refuse unknown and changed host keys; accept-new: record unknown keys, refuse changed ones; off: accept any key (reported in every summary).", valueName: "mode"))
    var hostKeyCheck: SSHSession.HostKeyCheck = .strict

    @Option(help: ArgumentHelp("known_hosts file (default: the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts).", valueName: "path"))
    var knownHosts: String?

    @Option(help: ArgumentHelp("File holding the passphrase of encrypted private keys (else you are asked when a key needs one).", valueName: "path"))
    var keyPassphraseFile: String?

    @Flag(help: "Ask once for the SSH password (used where the inventory sets none).")
    var askPass = false

    @Option(help: ArgumentHelp("Seconds allowed for TCP, banner, key exchange and authentication.", valueName: "seconds"))
    var connectTimeout: Double = 10

    func validate() throws {
        guard connectTimeout > 0, connectTimeout <= 1e9 else { throw ValidationError("--connect-timeout must be more than 0 seconds (and at most 1e9)") }
    }

    /// Secrets gathered once, before any connection.
    struct Secrets {
        var passphrase: String?
        var password: String?
    }

    func secrets(for settings: [ConnectionSettings]) throws -> Secrets {
        var secrets = Secrets()
        if let file = keyPassphraseFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read --key-passphrase-file \(file)")
            }
            secrets.passphrase = text.trimmingCharacters(in: .newlines)
        } else if settings.contains(where: { $0.identityFiles.contains(where: PrivateKeyFile.isEncrypted) }) {
            secrets.passphrase = try Console.prompt("Passphrase for the private key: ")
        }
        if askPass { secrets.password = try Console.prompt("SSH password: ") }
        return secrets
    }

    /// The hops of a host's ProxyJump: the host's keys and known_hosts, the hop's own user
    /// (else the local user, as OpenSSH does), never the host's password.
    func jumpOptions(_ settings: ConnectionSettings, _ secrets: Secrets) -> [SSHSession.Options] {
        settings.proxyJump.map { hop in
            var options = SSHSession.Options(name: hop.description, address: hop.host, port: hop.port ?? 22,
                                             user: hop.user ?? Console.localUser, knownHostsFile: knownHostsFile(settings))
            options.identityFiles = settings.identityFiles
            options.passphrase = secrets.passphrase
            options.hostKeyCheck = hostKeyCheck
            options.connectTimeout = .milliseconds(Int(connectTimeout * 1000))
            return options
        }
    }

    /// --known-hosts, else the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts.
    func knownHostsFile(_ settings: ConnectionSettings) -> String {
        knownHosts ?? settings.knownHostsFile ?? "\(Console.home)/.ssh/known_hosts"
    }

    func sessionOptions(_ host: Inventory.Host, _ settings: ConnectionSettings, _ secrets: Secrets) -> SSHSession.Options {
        var options = SSHSession.Options(name: host.name, address: settings.address, port: settings.port,
                                         user: settings.user, knownHostsFile: knownHostsFile(settings))
        options.identityFiles = settings.identityFiles
        options.passphrase = secrets.passphrase
        options.password = settings.password?.value ?? secrets.password
        options.hostKeyCheck = hostKeyCheck
        options.connectTimeout = .milliseconds(Int(connectTimeout * 1000))
        return options
    }
}

extension SSHSession.HostKeyCheck: ExpressibleByArgument {}

/// The selected hosts with everything needed to reach them.
struct Targets: Sendable {
    var hosts: [Inventory.Host]
    var settings: [ConnectionSettings]
    var options: [SSHSession.Options]
    var jumps: [[SSHSession.Options]]

    /// Reads the inventory (bad input: exit 65), gathers the secrets once, and prepares
    /// each host's session options.
    init(_ selection: InventoryOptions, _ connection: ConnectionOptions) throws {
        var hosts: [Inventory.Host] = []
        var settings: [ConnectionSettings] = []
        try Console.run {
            let (_, selected, sshConfig) = try selection.load()
            hosts = selected
            settings = try selected.map { try selection.connectionSettings(for: $0, sshConfig: sshConfig) }
        }
        let secrets = try connection.secrets(for: settings)
        self.hosts = hosts
        self.settings = settings
        options = zip(hosts, settings).map { connection.sessionOptions($0, $1, secrets) }
        jumps = settings.map { connection.jumpOptions($0, secrets) }
        // A tunnel or a host may close its end while we write: an error, not a signal.
        signal(SIGPIPE, SIG_IGN)
        if connection.hostKeyCheck == .off { Console.warn("--host-key-check off: host keys are NOT verified") }
        Self.raiseOpenFileLimit(for: hosts.count + settings.reduce(0) { $0 + $1.proxyJump.count * 2 })
    }

    /// Each session holds a socket (a jump hop two more: its channel's socket pair), plus
    /// log files: raises the soft open-file limit towards the hard one when the run needs
    /// more than it allows, and says so plainly when even the hard limit is too low.
    static func raiseOpenFileLimit(for sessions: Int) {
        let needed = rlim_t(sessions * 2 + 128)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < needed else { return }
        let wanted = min(needed, limit.rlim_max)
        var raised = limit
        raised.rlim_cur = wanted
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) != 0 || wanted < needed {
            Console.warn("\(sessions) sessions need about \(needed) open files, and the limit is \(limit.rlim_cur) (hard \(limit.rlim_max)): "
                         + "hosts beyond it will fail to connect; raise it (ulimit -n \(needed), or LimitNOFILE= in a systemd unit) or lower --forks/--max-parallel")
        }
    }

    /// Runs `command` on every host, `forks` at once; outcomes in host order.
    func run(_ command: String, forks: Int, timeout: Duration?, tailLimit: Int = 64 * 1024,
             log: (@Sendable (String) -> URL?)? = nil) async -> [HostOutcome] {
        await Fleet.each(hosts.count, forks: forks) { [self] index in
            await Fleet.run(command, host: hosts[index], settings: settings[index], options: options[index],
                            jumps: jumps[index], timeout: timeout, tailLimit: tailLimit, log: log?(hosts[index].name))
        }
    }
}

/// One host's outcome of a remote command, as `ping` and `exec` report it.
struct HostOutcome: Sendable {
    var name: String
    var address: String
    var exitStatus: Int32?
    var exitSignal: String?
    var stdout = ""
    var stderr = ""
    var truncated = false
    var error: String?
    var errorKind: String?
    var duration: Duration = .zero
    var timings: SSHSession.Timings?
    var hostKeyWarning: String?
    var log: String?

    /// The session was set up (connected, host key accepted, logged in).
    var connected = false

    var succeeded: Bool { error == nil && exitStatus == 0 }
    /// The connection never got as far as running anything.
    var unreachable: Bool { !connected }
}

enum Fleet {
    /// Connections being set up at once (TCP, key exchange, authentication); sessions
    /// already up are not counted. A thousand handshakes started together share the CPU
    /// (the controller's and, on small machines, the hosts') so evenly that none finishes
    /// within its connect timeout; queued, each gets its timeout from when it starts.
    static let connecting = AsyncSemaphore(permits: 32)

    static func connect(_ options: SSHSession.Options, through jumps: [SSHSession.Options]) async throws -> SSHSession {
        await connecting.acquire()
        do {
            try checkDescriptorsLeft(for: options.name)
            let session = try await SSHSession.connect(options, through: jumps)
            await connecting.release()
            return session
        } catch {
            await connecting.release()
            throw error
        }
    }

    /// A session needs a few descriptors at once (its socket, its key file, libssh2's and
    /// OpenSSL's own); without them libssh2 fails in ways that blame the host ("denied",
    /// "unable to exchange keys"). Says plainly when the process is out of them.
    static func checkDescriptorsLeft(for host: String) throws {
        var probes: [Int32] = []
        defer { probes.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                var limit = rlimit()
                getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
                throw SSHError(code: .connectFailed, message: "no file descriptor left for a new session: \(String(cString: strerror(errno))) (limit \(limit.rlim_cur)); raise ulimit -n or lower --forks/--max-parallel",
                               host: host, operation: "connect")
            }
            probes.append(fd)
        }
    }

    /// Runs `body` for every host with at most `forks` at once: fill up to the limit,
    /// then one in, one out. Results keep the hosts' order.
    static func each(_ count: Int, forks: Int, _ body: @escaping @Sendable (Int) async -> HostOutcome) async -> [HostOutcome] {
        await withTaskGroup(of: (Int, HostOutcome).self) { group in
            var results = [HostOutcome?](repeating: nil, count: count)
            var next = 0
            while next < min(forks, count) {
                let index = next
                group.addTask { (index, await body(index)) }
                next += 1
            }
            for await (index, outcome) in group {
                results[index] = outcome
                if next < count {
                    let index = next
                    group.addTask { (index, await body(index)) }
                    next += 1
                }
            }
            return results.map { $0! }
        }
    }

    /// Connects to one host, runs `command`, and closes. Every failure becomes the
    /// host's outcome, never an exception.
    static func run(_ command: String, host: Inventory.Host, settings: ConnectionSettings, options: SSHSession.Options,
                    jumps: [SSHSession.Options], timeout: Duration?, tailLimit: Int = 64 * 1024, log: URL?) async -> HostOutcome {
        var outcome = HostOutcome(name: host.name, address: settings.address)
        let clock = ContinuousClock()
        let start = clock.now
        if let problem = settings.problems.first {
            outcome.error = problem
            outcome.errorKind = "settings"
            return outcome
        }
        let writer = log.flatMap(LogWriter.init)
        do {
            let session = try await Fleet.connect(options, through: jumps)
            outcome.connected = true
            outcome.timings = await session.timings
            outcome.hostKeyWarning = await session.hostKeyWarning
            let (remote, stdin) = SSHConnection.wrap(command, become: settings.become, settings: settings)
            let result = try await session.run(remote, stdin: stdin, timeout: timeout, tailLimit: tailLimit) { stream, bytes in
                writer?.write(stream, bytes)
            }
            await session.close()
            outcome.exitStatus = result.exitStatus
            outcome.exitSignal = result.exitSignal
            outcome.stdout = result.stdout.text
            outcome.stderr = result.stderr.text
            outcome.truncated = result.stdout.truncated || result.stderr.truncated
            if result.timedOut {
                outcome.error = "timeout: the command ran longer than \(timeout.map { "\($0.components.seconds)" } ?? "?") s (channel closed)"
                outcome.errorKind = "timeout-command"
            } else if let signal = result.exitSignal {
                outcome.error = "killed by signal \(signal)"
                outcome.errorKind = "signal"
            }
        } catch let error as SSHError {
            outcome.error = error.message
            outcome.errorKind = error.code.rawValue
        } catch {
            outcome.error = "\(error)"
            outcome.errorKind = "internal"
        }
        writer?.close()
        outcome.log = log?.path
        outcome.duration = clock.now - start
        return outcome
    }
}

/// A host's full output, written as it arrives (owner-only).
final class LogWriter: @unchecked Sendable {
    // @unchecked: written only from the host's session loop, one callback at a time.
    private let handle: FileHandle

    init?(_ url: URL) {
        // 0600 from its creation, never following a link planted at the path.
        guard let fd = try? Console.createOwnerOnly(url.path) else { return nil }
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    func write(_ stream: RemoteStream, _ bytes: UnsafeRawBufferPointer) {
        // stdout and stderr interleave in one file; stderr lines are not marked, so the
        // bytes stay exactly as the host sent them.
        try? handle.write(contentsOf: Data(bytes)) // FileHandle.write(_: Data) would trap on a full disk
    }

    func close() { try? handle.close() }
}
