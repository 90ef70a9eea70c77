import FlotillaCore
import Foundation
import Glibc
import SSH

/// How every session of a run connects, as the connection flags set it (SPEC §3).
public struct ConnectionPolicy: Sendable {
    public var hostKeyCheck: SSHSession.HostKeyCheck
    /// --known-hosts, if given.
    public var knownHosts: String?
    /// Covers TCP, the banner, key exchange and authentication.
    public var connectTimeout: Duration
    /// The user a jump hop without one logs in as (as OpenSSH does).
    public var localUser: String
    public var home: String

    public init(hostKeyCheck: SSHSession.HostKeyCheck, knownHosts: String?, connectTimeout: Duration, localUser: String, home: String) {
        self.hostKeyCheck = hostKeyCheck
        self.knownHosts = knownHosts
        self.connectTimeout = connectTimeout
        self.localUser = localUser
        self.home = home
    }

    /// --known-hosts, else the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts.
    public func knownHostsFile(_ settings: ConnectionSettings) -> String {
        knownHosts ?? settings.knownHostsFile ?? "\(home)/.ssh/known_hosts"
    }

    public func sessionOptions(_ host: Inventory.Host, _ settings: ConnectionSettings, _ secrets: Secrets) -> SSHSession.Options {
        var options = SSHSession.Options(name: host.name, address: settings.address, port: settings.port,
                                         user: settings.user, knownHostsFile: knownHostsFile(settings))
        options.identityFiles = settings.identityFiles
        options.passphrase = secrets.passphrase
        options.password = settings.password?.value ?? secrets.password
        options.hostKeyCheck = hostKeyCheck
        options.connectTimeout = connectTimeout
        return options
    }

    /// The hops of a host's ProxyJump: the host's keys and known_hosts, the hop's own user
    /// (else the local user, as OpenSSH does), never the host's password.
    public func jumpOptions(_ settings: ConnectionSettings, _ secrets: Secrets) -> [SSHSession.Options] {
        settings.proxyJump.map { hop in
            var options = SSHSession.Options(name: hop.description, address: hop.host, port: hop.port ?? 22,
                                             user: hop.user ?? localUser, knownHostsFile: knownHostsFile(settings))
            options.identityFiles = settings.identityFiles
            options.passphrase = secrets.passphrase
            options.hostKeyCheck = hostKeyCheck
            options.connectTimeout = connectTimeout
            return options
        }
    }
}

/// Secrets gathered once, before any connection.
public struct Secrets: Sendable {
    public var passphrase: String?
    public var password: String?

    /// A secret that could not be read.
    public struct Unreadable: Error, CustomStringConvertible {
        public var description: String
    }

    public init(passphrase: String? = nil, password: String? = nil) {
        self.passphrase = passphrase
        self.password = password
    }

    /// The key passphrase from `passphraseFile`, else asked for (through `prompt`) when
    /// some host's key is encrypted; the SSH password asked for when `askPassword`.
    /// - Throws: ``Unreadable`` for a passphrase file that cannot be read; whatever
    ///   `prompt` throws.
    public static func gather(for settings: [ConnectionSettings], passphraseFile: String?, askPassword: Bool,
                              prompt: (String) throws -> String) throws -> Secrets {
        var secrets = Secrets()
        if let file = passphraseFile {
            do {
                secrets.passphrase = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .newlines)
            } catch {
                throw Unreadable(description: "cannot read --key-passphrase-file \(file)")
            }
        } else if settings.contains(where: { $0.identityFiles.contains(where: PrivateKeyFile.isEncrypted) }) {
            secrets.passphrase = try prompt("Passphrase for the private key: ")
        }
        if askPassword { secrets.password = try prompt("SSH password: ") }
        return secrets
    }
}

/// The selected hosts with everything needed to reach them.
public struct Targets: Sendable {
    public var hosts: [Inventory.Host]
    public var settings: [ConnectionSettings]
    public var options: [SSHSession.Options]
    public var jumps: [[SSHSession.Options]]
    /// Creates a host's log file owner-only and returns it open for writing.
    let openLog: @Sendable (String) throws -> Int32

    /// Prepares each host's session options.
    /// - Parameter openLog: creates a host's log file; owner-only by default.
    public init(hosts: [Inventory.Host], settings: [ConnectionSettings], policy: ConnectionPolicy, secrets: Secrets,
                openLog: @escaping @Sendable (String) throws -> Int32 = { try PrivateFiles.createOwnerOnly($0) }) {
        self.hosts = hosts
        self.settings = settings
        options = zip(hosts, settings).map { policy.sessionOptions($0, $1, secrets) }
        jumps = settings.map { policy.jumpOptions($0, secrets) }
        self.openLog = openLog
    }

    /// Prepares the session options of the hosts `selection` holds.
    public init(_ selection: HostSelection, policy: ConnectionPolicy, secrets: Secrets) {
        self.init(hosts: selection.hosts, settings: selection.settings, policy: policy, secrets: secrets)
    }

    /// Descriptors the run needs: each session holds a socket, a jump hop two more (its
    /// channel's socket pair).
    public var sessionDescriptors: Int { hosts.count + settings.reduce(0) { $0 + $1.proxyJump.count * 2 } }

    /// Raises the soft open-file limit towards the hard one when `sessions` need more
    /// than it allows (plus log files); returns a warning when even the hard limit is too low.
    public static func raiseOpenFileLimit(for sessions: Int) -> String? {
        let needed = rlim_t(sessions * 2 + 128)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < needed else { return nil }
        let wanted = min(needed, limit.rlim_max)
        var raised = limit
        raised.rlim_cur = wanted
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) != 0 || wanted < needed else { return nil }
        return "\(sessions) sessions need about \(needed) open files, and the limit is \(limit.rlim_cur) (hard \(limit.rlim_max)): "
            + "hosts beyond it will fail to connect; raise it (ulimit -n \(needed), or LimitNOFILE= in a systemd unit) or lower --forks/--max-parallel"
    }

    /// Runs `command` on every host, `forks` at once; outcomes in host order. `log`
    /// names each host's log file, if any.
    public func run(_ command: String, forks: Int, timeout: Duration?, tailLimit: Int = 64 * 1024,
                    log: (@Sendable (String) -> URL?)? = nil) async -> [HostOutcome] {
        await Fleet.each(hosts.count, forks: forks) { [self] index in
            await Fleet.run(command, host: hosts[index], settings: settings[index], options: options[index],
                            jumps: jumps[index], timeout: timeout, tailLimit: tailLimit, log: log?(hosts[index].name),
                            openLog: openLog)
        }
    }
}

extension Targets {
    /// Hosts a run names that the inventory no longer selects.
    public struct MissingHosts: Error, CustomStringConvertible {
        public var names: [String]
        public var description: String {
            "the inventory no longer selects \(names.joined(separator: ", ")), which the run has; restore them or pass -i/--limit selecting them"
        }
    }

    /// The targets in the order of `names` (a run's hosts).
    /// - Throws: ``MissingHosts`` naming hosts the inventory no longer has.
    public func ordered(_ names: [String]) throws -> Targets {
        let position = Dictionary(uniqueKeysWithValues: hosts.enumerated().map { ($1.name, $0) })
        let missing = names.filter { position[$0] == nil }
        guard missing.isEmpty else { throw MissingHosts(names: missing) }
        var copy = self
        let order = names.map { position[$0]! }
        copy.hosts = order.map { hosts[$0] }
        copy.settings = order.map { settings[$0] }
        copy.options = order.map { options[$0] }
        copy.jumps = order.map { jumps[$0] }
        return copy
    }

    /// What the host locks key on: name, address and port of each host.
    public var lockTargets: [HostLocks.Target] {
        zip(hosts, settings).map { HostLocks.Target(name: $0.name, address: $1.address, port: $1.port) }
    }
}

extension RunLocks {
    /// Locks every host of `targets` (all or none).
    /// - Throws: `LockError` naming the hosts another controller holds.
    public func lockHosts(_ targets: Targets, runID: String? = nil) throws {
        try lockHosts(targets.lockTargets, runID: runID)
    }
}
