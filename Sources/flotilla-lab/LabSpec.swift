import FlotillaCore
import Foundation
import Yams

/// A lab failure with the exit status the command should end with.
struct LabError: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32

    static func usage(_ message: String) -> LabError { LabError(message: message, exitCode: 64) }
    static func badInput(_ file: String, _ line: Int?, _ message: String) -> LabError {
        LabError(message: "\(file)\(line.map { ":\($0)" } ?? ""): \(message)", exitCode: 65)
    }
    static func failed(_ message: String) -> LabError { LabError(message: message, exitCode: 70) }

    var description: String { message }
}

/// An operating system a lab host can simulate: what /etc/os-release says and which
/// package manager it has.
struct LabOS: Codable, Sendable, Equatable {
    enum Family: String, Codable, Sendable { case debian, redhat, other }

    var key: String
    var id: String
    var versionID: String
    var prettyName: String
    var codename: String
    var family: Family
    /// `apt`, `yum`, `dnf` or nil.
    var packageManager: String?

    static let known: [LabOS] = [
        LabOS(key: "ubuntu16.04", id: "ubuntu", versionID: "16.04", prettyName: "Ubuntu 16.04.7 LTS", codename: "xenial", family: .debian, packageManager: "apt"),
        LabOS(key: "ubuntu18.04", id: "ubuntu", versionID: "18.04", prettyName: "Ubuntu 18.04.6 LTS", codename: "bionic", family: .debian, packageManager: "apt"),
        LabOS(key: "ubuntu20.04", id: "ubuntu", versionID: "20.04", prettyName: "Ubuntu 20.04.6 LTS", codename: "focal", family: .debian, packageManager: "apt"),
        LabOS(key: "ubuntu22.04", id: "ubuntu", versionID: "22.04", prettyName: "Ubuntu 22.04.4 LTS", codename: "jammy", family: .debian, packageManager: "apt"),
        LabOS(key: "el7", id: "centos", versionID: "7", prettyName: "CentOS Linux 7 (Core)", codename: "Core", family: .redhat, packageManager: "yum"),
        LabOS(key: "el8", id: "rocky", versionID: "8.9", prettyName: "Rocky Linux 8.9 (Green Obsidian)", codename: "Green Obsidian", family: .redhat, packageManager: "dnf"),
        LabOS(key: "el9", id: "rocky", versionID: "9.3", prettyName: "Rocky Linux 9.3 (Blue Onyx)", codename: "Blue Onyx", family: .redhat, packageManager: "dnf"),
        LabOS(key: "alpine3.19", id: "alpine", versionID: "3.19.1", prettyName: "Alpine Linux v3.19", codename: "", family: .other, packageManager: nil),
    ]

    static func named(_ key: String) -> LabOS? { known.first { $0.key == key } }

    /// The text of /etc/os-release.
    var osRelease: String {
        var lines = [
            "NAME=\"\(prettyName.split(separator: " ").prefix(id == "centos" ? 2 : (id == "rocky" ? 2 : 1)).joined(separator: " "))\"",
            "VERSION_ID=\"\(versionID)\"",
            "ID=\(id)",
            "PRETTY_NAME=\"\(prettyName)\"",
        ]
        switch family {
        case .debian: lines += ["ID_LIKE=debian", "VERSION_CODENAME=\(codename)"]
        case .redhat: lines += ["ID_LIKE=\"rhel centos fedora\"", "PLATFORM_ID=\"platform:el\(versionID.prefix(1))\""]
        case .other: break
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A command-matching fault: when a command run on the host matches `pattern`, it misbehaves.
struct CommandFault: Codable, Sendable, Equatable {
    var pattern: String
    /// How many times it fires (nil = every time).
    var times: Int?
    var exitCode: Int32 = 1
    var stderr: String = ""
    var stdout: String = ""
    /// Extra seconds before the command runs (slow faults).
    var delay: Double = 0

    /// The fault firing once unless its spec said how often.
    var once: CommandFault {
        var fault = self
        fault.times = times ?? 1
        return fault
    }
}

/// A host's fault injection, read by the host's session wrapper and simulated commands.
struct HostFaults: Codable, Sendable, Equatable {
    enum Unreachable: String, Codable, Sendable { case refused, silent }
    enum HostKey: String, Codable, Sendable { case changed, unknown }

    var unreachable: Unreachable?
    var hostKey: HostKey?
    var slow: [CommandFault] = []
    var fail: [CommandFault] = []
    /// Like `fail`, matched against a simulated tool's own command line (`st2ctl status`)
    /// wherever it runs: inside a script, under sudo.
    var toolFail: [CommandFault] = []
    /// A simulated tool whose own command line matches logs a `started` record, then works
    /// `delay` longer before it does anything: a test sees it start and acts while it runs.
    var toolSlow: [CommandFault] = []
    var hang: [CommandFault] = []
    var drop: [CommandFault] = []
    /// Every SSH connection to the host dropped `delay` after a matching command starts
    /// (or when it ends, if sooner), the command itself going on; once unless `times`.
    var cut: [CommandFault] = []
    /// The host reboots `delay` after a matching command starts (or when it ends, if
    /// sooner): every process of the host is killed, its boot id changes and its sshd
    /// comes back; once unless `times`.
    var reboot: [CommandFault] = []
    /// A matching command's stdout reaches the client with one byte changed (a faulty
    /// link or memory between the host and the controller): what the host computed of
    /// its output no longer matches what arrives.
    var corrupt: [CommandFault] = []
    var mistralEventTriggers = false
    /// Packages whose new versions depend on something the repositories do not have
    /// (package -> the unmet dependency, `nodejs (>= 14.0.0)`): every transaction that
    /// upgrades them, real or simulated, fails as apt or yum/dnf would.
    var unmetDependency: [String: String] = [:]
    /// Refreshing the repository index fails: `signing-key` (the repository's key changed:
    /// apt exits 100, yum/dnf 1) or `unreachable` (apt warns and exits 0, leaving the old
    /// index; yum/dnf exit 1).
    var index: IndexFault?
    /// Databases nothing answers for (`mongodb`, `rabbitmq`, `postgresql`): the host's
    /// listener for them is not started, so a connection to the address st2.conf names is refused.
    var databasesDown: [String] = []
    /// Components whose process `st2ctl stop` leaves running and `st2ctl status` does not
    /// list: a real process the host starts at boot, `ps` showing it as st2's.
    var surviveStop: [String] = []

    enum IndexFault: String, Codable, Sendable { case signingKey = "signing-key", unreachable }

    /// Short words for `status`.
    var summary: String {
        var words: [String] = []
        if let unreachable { words.append("unreachable:\(unreachable.rawValue)") }
        if let hostKey { words.append("host-key:\(hostKey.rawValue)") }
        if !slow.isEmpty { words.append("slow") }
        if !fail.isEmpty { words.append("fail") }
        if !toolFail.isEmpty { words.append("tool-fail") }
        if !toolSlow.isEmpty { words.append("tool-slow") }
        if !hang.isEmpty { words.append("hang") }
        if !drop.isEmpty { words.append("drop") }
        if !cut.isEmpty { words.append("cut") }
        if !reboot.isEmpty { words.append("reboot") }
        if !corrupt.isEmpty { words.append("corrupt") }
        if mistralEventTriggers { words.append("mistral-event-triggers") }
        if !unmetDependency.isEmpty { words.append("unmet-dependency") }
        if let index { words.append("index:\(index.rawValue)") }
        if !databasesDown.isEmpty { words.append("databases-down") }
        if !surviveStop.isEmpty { words.append("survive-stop") }
        return words.joined(separator: ",")
    }
}

struct KVPair: Codable, Sendable, Equatable {
    var name: String
    var value: String
    var scope: String = "st2kv.system"
    var secret = false
    var user: String?
    /// Written before st2 1.5: the API returns it without `scope` and `secret`.
    var legacy = false
    /// Loaded already encrypted with another host's key: only kept, never decryptable here.
    var foreign = false
}

/// A custom pack on a host, under /opt/stackstorm/packs and registered.
struct PackSpec: Codable, Sendable, Equatable {
    var name: String
    var version = "1.0.0"
    /// Its pack.yaml no longer passes registration (`st2ctl reload --register-all` fails
    /// naming it), though the host it is on registered it long ago.
    var broken = false
}

/// Everything the lab needs to know to create one simulated host.
struct HostSpec: Codable, Sendable, Equatable {
    var name: String
    var os: LabOS
    /// Installed packages and their versions (`st2` -> `3.7.0-1`).
    var packages: [String: String]
    /// Versions the host's repository offers, per package.
    var available: [String: [String]]
    var cluster: String?
    var zone: String?
    var vars: [String: String] = [:]
    var servicesRunning = true
    var kv: [KVPair] = []
    var packs: [PackSpec] = []
    var auditLogs: [String] = []
    var hostKeyType = "ed25519"
    var faults = HostFaults()
}

/// Reads a lab spec file (YAML) and generates varied fleets.
enum LabSpec {
    static let st2Packages = ["st2", "st2web", "st2chatops", "st2mistral", "bwc-enterprise"]
    private static let hostKeys: Set<String> = [
        "name", "os", "packages", "available", "st2_cluster", "zone", "vars", "services", "kv", "packs", "audit_logs", "host_key", "faults",
    ]

    /// Parses a spec file.
    /// - Throws: `LabError` (exit 65) naming the file, the line and what is wrong.
    static func load(path: String) throws -> [HostSpec] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LabError.badInput(path, nil, "cannot read the spec file: \(error.localizedDescription)")
        }
        return try parse(text, file: path)
    }

    static func parse(_ text: String, file: String) throws -> [HostSpec] {
        let reader = Reader(file: file)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else { throw LabError.badInput(file, nil, "the spec is empty") }
            root = node
        } catch let error as YamlError {
            throw LabError.badInput(file, nil, "not valid YAML: \(error)")
        }
        let top = try reader.mapping(root, allowed: ["defaults", "hosts"], what: "the spec")
        let defaults = try top["defaults"].map { try reader.mapping($0, allowed: hostKeys.subtracting(["name"]), what: "defaults") } ?? [:]
        guard let hostsNode = top["hosts"] else { throw LabError.badInput(file, reader.line(root), "the spec has no 'hosts' list") }
        guard case .sequence(let sequence) = hostsNode, !sequence.isEmpty else {
            throw LabError.badInput(file, reader.line(hostsNode), "'hosts' must be a non-empty list of hosts")
        }
        var specs: [HostSpec] = []
        var names: Set<String> = []
        for item in sequence {
            let own = try reader.mapping(item, allowed: hostKeys, what: "a host")
            let fields = defaults.merging(own) { _, host in host }
            let spec = try reader.host(fields, at: item)
            guard names.insert(spec.name).inserted else {
                throw LabError.badInput(file, reader.line(item), "host '\(spec.name)' is listed twice")
            }
            specs.append(spec)
        }
        return specs
    }

    /// A varied fleet of `count` hosts: several OS families and versions, st2 versions
    /// behind 3.8.1, optional packages, clusters of three and three zones. Deterministic.
    static func generate(count: Int) -> [HostSpec] {
        let width = max(2, String(count).count)
        let layouts: [(os: String, installed: String, offered: [String])] = [
            ("ubuntu20.04", "3.7.1-1", ["3.6.0-1", "3.7.0-1", "3.7.1-1", "3.8.0-1", "3.8.1-1"]),
            ("el8", "3.7.0-1", ["3.6.0-1", "3.7.0-1", "3.8.0-1", "3.8.1-1"]),
            ("ubuntu18.04", "3.6.0-1", ["3.5.0-1", "3.6.0-1", "3.7.0-1", "3.7.1-1", "3.8.0-1", "3.8.1-1"]),
            ("el7", "3.6.0-1", ["3.5.0-1", "3.6.0-1", "3.7.0-1", "3.8.0-1", "3.8.1-1"]),
            ("ubuntu20.04", "3.8.0-1", ["3.7.1-1", "3.8.0-1", "3.8.1-1"]),
        ]
        return (1...max(count, 1)).map { index in
            let layout = layouts[(index - 1) % layouts.count]
            var installed = layout.installed
            if index % 10 == 0 { installed = "3.8.1-1" } // a few hosts already at the demo target
            var packages = ["st2": installed]
            if index % 2 == 1 { packages["st2web"] = installed }
            if index % 4 == 1 { packages["st2chatops"] = installed }
            let name = "st2-" + String(repeating: "0", count: max(0, width - String(index).count)) + String(index)
            let kv = (1...(3 + index % 5)).map { n in
                KVPair(name: "key\(n)", value: n == 1 ? "s3cr3t-\(index)" : "value-\(index)-\(n)", secret: n == 1)
            }
            return HostSpec(
                name: name,
                os: LabOS.named(layout.os)!,
                packages: packages,
                available: Dictionary(uniqueKeysWithValues: ["st2", "st2web", "st2chatops"].map { ($0, layout.offered) }),
                cluster: "c\((index - 1) / 3 + 1)",
                zone: ["a", "b", "c"][(index - 1) % 3],
                kv: kv,
                auditLogs: ["st2api.audit.log", "st2actionrunner.audit.log"]
            )
        }
    }

    /// Turns YAML nodes into spec values, with the line of every error.
    private struct Reader {
        let file: String

        func line(_ node: Node) -> Int? { node.mark?.line }

        func fail(_ node: Node, _ message: String) -> LabError { .badInput(file, line(node), message) }

        func mapping(_ node: Node, allowed: Set<String>, what: String) throws -> [String: Node] {
            guard case .mapping(let mapping) = node else { throw fail(node, "\(what) must be a mapping") }
            var result: [String: Node] = [:]
            for (key, value) in mapping {
                guard let name = key.string else { throw fail(key, "keys of \(what) must be strings") }
                guard allowed.contains(name) else {
                    throw fail(key, "unknown key '\(name)' in \(what) (known: \(allowed.sorted().joined(separator: ", ")))")
                }
                guard result[name] == nil else { throw fail(key, "duplicate key '\(name)' in \(what)") }
                result[name] = value
            }
            return result
        }

        func string(_ node: Node, _ what: String) throws -> String {
            guard case .scalar(let scalar) = node else { throw fail(node, "\(what) must be a single value") }
            return scalar.string
        }

        func strings(_ node: Node, _ what: String) throws -> [String] {
            guard case .sequence(let sequence) = node else { throw fail(node, "\(what) must be a list") }
            return try sequence.map { try string($0, "an item of \(what)") }
        }

        func int(_ node: Node, _ what: String, range: ClosedRange<Int>) throws -> Int {
            guard let value = Int(try string(node, what)), range.contains(value) else {
                throw fail(node, "\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }

        func version(_ node: Node, _ what: String) throws -> String {
            let text = try string(node, what)
            guard let version = StackStormVersion(text), version.release.count >= 2 else {
                throw fail(node, "\(what): '\(text)' is not a package version such as 3.8.1-1")
            }
            return version.revision == nil ? "\(version.releaseString)-1" : text
        }

        func duration(_ node: Node, _ what: String) throws -> Double {
            let text = try string(node, what)
            guard let seconds = parseDuration(text) else {
                throw fail(node, "\(what): '\(text)' is not a duration such as 2, 1.5s or 300ms")
            }
            return seconds
        }

        func host(_ fields: [String: Node], at node: Node) throws -> HostSpec {
            guard let nameNode = fields["name"] else { throw fail(node, "a host needs a 'name'") }
            let name = try string(nameNode, "name")
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                throw fail(nameNode, "host name '\(name)' may hold only letters, digits, '-', '_' and '.'")
            }
            var os = LabOS.named("ubuntu20.04")!
            if let osNode = fields["os"] {
                let key = try string(osNode, "os")
                guard let known = LabOS.named(key) else {
                    throw fail(osNode, "unknown os '\(key)' (known: \(LabOS.known.map(\.key).joined(separator: ", ")))")
                }
                os = known
            }
            var packages: [String: String] = [:]
            if let node = fields["packages"] {
                for (pkg, value) in try mapping(node, allowed: Set(LabSpec.st2Packages), what: "packages") {
                    packages[pkg] = try version(value, "packages.\(pkg)")
                }
            }
            var available: [String: [String]] = [:]
            if let node = fields["available"] {
                if case .sequence(let items) = node {
                    let versions = try items.map { try version($0, "available") }
                    for pkg in LabSpec.st2Packages {
                        // st2mistral and bwc-enterprise stopped shipping with 3.3.
                        let lastSeries = ["st2mistral", "bwc-enterprise"].contains(pkg) ? StackStormVersion("3.2.99") : nil
                        available[pkg] = versions.filter { v in lastSeries.map { StackStormVersion(v)! <= $0 } ?? true }
                    }
                } else {
                    for (pkg, list) in try mapping(node, allowed: Set(LabSpec.st2Packages), what: "available") {
                        guard case .sequence(let items) = list else { throw fail(list, "available.\(pkg) must be a list") }
                        available[pkg] = try items.map { try version($0, "available.\(pkg)") }
                    }
                }
            } else {
                for (pkg, installed) in packages { available[pkg] = [installed] }
            }
            var spec = HostSpec(name: name, os: os, packages: packages, available: available)
            spec.cluster = try fields["st2_cluster"].map { try string($0, "st2_cluster") }
            spec.zone = try fields["zone"].map { try string($0, "zone") }
            if let node = fields["vars"] {
                guard case .mapping(let mapping) = node else { throw fail(node, "vars must be a mapping") }
                for (key, value) in mapping {
                    let varName = try string(key, "a variable name")
                    guard !varName.isEmpty, varName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                        throw fail(key, "variable name '\(varName)' may hold only letters, digits and '_'")
                    }
                    spec.vars[varName] = try string(value, "vars.\(varName)")
                }
            }
            if let node = fields["services"] {
                switch try string(node, "services") {
                case "running": spec.servicesRunning = true
                case "stopped": spec.servicesRunning = false
                case let other: throw fail(node, "services must be 'running' or 'stopped', not '\(other)'")
                }
            }
            if let node = fields["kv"] {
                if case .scalar = node {
                    let count = try int(node, "kv", range: 0...100_000)
                    spec.kv = count == 0 ? [] : (1...count).map { KVPair(name: "key\($0)", value: "value\($0)") }
                } else {
                    guard case .sequence(let items) = node else { throw fail(node, "kv must be a count or a list of keys") }
                    spec.kv = try items.map { item in
                        let f = try mapping(item, allowed: ["name", "value", "scope", "secret", "user", "legacy"], what: "a kv entry")
                        guard let n = f["name"], let v = f["value"] else { throw fail(item, "a kv entry needs 'name' and 'value'") }
                        var pair = KVPair(name: try string(n, "kv name"), value: try string(v, "kv value"))
                        if let s = f["scope"] { pair.scope = try string(s, "kv scope") }
                        if let s = f["secret"] {
                            guard let flag = s.bool else { throw fail(s, "kv secret must be true or false") }
                            pair.secret = flag
                        }
                        pair.user = try f["user"].map { try string($0, "kv user") }
                        if let l = f["legacy"] {
                            guard let flag = l.bool else { throw fail(l, "kv legacy must be true or false") }
                            pair.legacy = flag
                        }
                        return pair
                    }
                }
            }
            if let node = fields["packs"] {
                guard case .sequence(let items) = node else { throw fail(node, "packs must be a list of packs") }
                spec.packs = try items.map { item in
                    if case .scalar = item { return PackSpec(name: try string(item, "pack name")) }
                    let f = try mapping(item, allowed: ["name", "version", "broken"], what: "a pack")
                    guard let n = f["name"] else { throw fail(item, "a pack needs a 'name'") }
                    var pack = PackSpec(name: try string(n, "pack name"))
                    if let v = f["version"] { pack.version = try string(v, "pack version") }
                    if let b = f["broken"] {
                        guard let flag = b.bool else { throw fail(b, "pack broken must be true or false") }
                        pack.broken = flag
                    }
                    return pack
                }
                for (item, pack) in zip(node.array(), spec.packs)
                where pack.name.isEmpty || !pack.name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") }) {
                    throw fail(item, "pack name '\(pack.name)' may hold only lowercase letters, digits and '_'")
                }
            }
            if let node = fields["audit_logs"] {
                if case .scalar = node {
                    let count = try int(node, "audit_logs", range: 0...100)
                    spec.auditLogs = count == 0 ? [] : (1...count).map { "st2component\($0).audit.log" }
                } else {
                    spec.auditLogs = try strings(node, "audit_logs")
                    for (item, file) in zip(node.array(), spec.auditLogs) where !file.hasSuffix(".audit.log") || file.contains("/") {
                        throw fail(item, "audit log '\(file)' must be a file name ending in .audit.log")
                    }
                }
            }
            if let node = fields["host_key"] {
                let type = try string(node, "host_key")
                guard ["ed25519", "ecdsa", "rsa"].contains(type) else { throw fail(node, "host_key must be ed25519, ecdsa or rsa") }
                spec.hostKeyType = type
            }
            if let node = fields["faults"] { spec.faults = try faults(node) }
            return spec
        }

        func faults(_ node: Node) throws -> HostFaults {
            let f = try mapping(node, allowed: ["unreachable", "host_key", "slow", "fail", "tool_fail", "tool_slow", "hang", "drop", "cut", "reboot",
                                                    "corrupt", "mistral_event_triggers", "unmet_dependency", "index", "databases_down", "survive_stop"],
                                 what: "faults")
            var faults = HostFaults()
            if let n = f["unreachable"] {
                guard let kind = HostFaults.Unreachable(rawValue: try string(n, "faults.unreachable")) else {
                    throw fail(n, "faults.unreachable must be 'refused' (nothing listens) or 'silent' (accepts, never speaks)")
                }
                faults.unreachable = kind
            }
            if let n = f["host_key"] {
                guard let kind = HostFaults.HostKey(rawValue: try string(n, "faults.host_key")) else {
                    throw fail(n, "faults.host_key must be 'changed' or 'unknown'")
                }
                faults.hostKey = kind
            }
            if let n = f["slow"] {
                if case .scalar = n {
                    faults.slow = [CommandFault(pattern: "", delay: try duration(n, "faults.slow"))]
                } else {
                    faults.slow = try commandFaults(n, "faults.slow", extra: ["delay"])
                }
            }
            if let n = f["fail"] { faults.fail = try commandFaults(n, "faults.fail", extra: ["exit", "stderr", "stdout"]) }
            if let n = f["tool_fail"] { faults.toolFail = try commandFaults(n, "faults.tool_fail", extra: ["exit", "stderr", "stdout"]) }
            if let n = f["tool_slow"] { faults.toolSlow = try commandFaults(n, "faults.tool_slow", extra: ["delay"]) }
            if let n = f["hang"] { faults.hang = try commandFaults(n, "faults.hang", extra: []) }
            if let n = f["drop"] { faults.drop = try commandFaults(n, "faults.drop", extra: []) }
            // A network cut and a reboot are events, not properties of the host: once unless `times`.
            if let n = f["cut"] { faults.cut = try commandFaults(n, "faults.cut", extra: ["delay"], delayRequired: false).map(\.once) }
            if let n = f["corrupt"] { faults.corrupt = try commandFaults(n, "faults.corrupt", extra: []) }
            if let n = f["reboot"] { faults.reboot = try commandFaults(n, "faults.reboot", extra: ["delay"], delayRequired: false).map(\.once) }
            if let n = f["mistral_event_triggers"] {
                guard let flag = n.bool else { throw fail(n, "faults.mistral_event_triggers must be true or false") }
                faults.mistralEventTriggers = flag
            }
            if let n = f["unmet_dependency"] {
                for (package, dependency) in try mapping(n, allowed: Set(LabSpec.st2Packages), what: "faults.unmet_dependency") {
                    faults.unmetDependency[package] = try string(dependency, "faults.unmet_dependency.\(package)")
                }
            }
            if let n = f["index"] {
                guard let kind = HostFaults.IndexFault(rawValue: try string(n, "faults.index")) else {
                    throw fail(n, "faults.index must be 'signing-key' or 'unreachable'")
                }
                faults.index = kind
            }
            if let n = f["databases_down"] {
                faults.databasesDown = try strings(n, "faults.databases_down")
                for (item, name) in zip(n.array(), faults.databasesDown) where !LabDatabases.names.contains(name) {
                    throw fail(item, "faults.databases_down: '\(name)' is not one of \(LabDatabases.names.joined(separator: ", "))")
                }
            }
            if let n = f["survive_stop"] {
                faults.surviveStop = try strings(n, "faults.survive_stop")
                for (item, name) in zip(n.array(), faults.surviveStop) where !name.hasPrefix("st2") {
                    throw fail(item, "faults.survive_stop: '\(name)' is not an st2 component such as st2sensorcontainer")
                }
            }
            return faults
        }

        /// A list whose items are a regex, or a mapping with `match` and the fault's fields.
        func commandFaults(_ node: Node, _ what: String, extra: Set<String>, delayRequired: Bool = true) throws -> [CommandFault] {
            let items: [Node]
            if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
            return try items.map { item in
                var fault: CommandFault
                if case .scalar = item {
                    fault = CommandFault(pattern: try string(item, what))
                } else {
                    let f = try mapping(item, allowed: extra.union(["match", "times"]), what: "an item of \(what)")
                    guard let m = f["match"] else { throw fail(item, "an item of \(what) needs 'match' (a regular expression)") }
                    fault = CommandFault(pattern: try string(m, "match"))
                    fault.times = try f["times"].map { try int($0, "times", range: 1...1_000_000) }
                    if let e = f["exit"] { fault.exitCode = Int32(try int(e, "exit", range: 1...255)) }
                    fault.stderr = try f["stderr"].map { try string($0, "stderr") } ?? ""
                    fault.stdout = try f["stdout"].map { try string($0, "stdout") } ?? ""
                    if let d = f["delay"] { fault.delay = try duration(d, "delay") }
                    if extra.contains("delay"), delayRequired, f["delay"] == nil { throw fail(item, "an item of \(what) needs 'delay'") }
                }
                do {
                    _ = try NSRegularExpression(pattern: fault.pattern)
                } catch {
                    throw fail(item, "'\(fault.pattern)' is not a valid regular expression")
                }
                return fault
            }
        }
    }
}
