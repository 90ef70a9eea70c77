import Foundation

/// A secret string (a password): its description never shows the value.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { InventoryValue.redactedText }
    public var debugDescription: String { InventoryValue.redactedText }
}

/// How to reach and log in to one host, from its inventory variables (Ansible's
/// connection variables and their older aliases) with `~/.ssh/config` filling what the
/// inventory leaves unset.
public struct ConnectionSettings: Sendable, Hashable {
    /// One ProxyJump hop.
    public struct Jump: Sendable, Hashable, CustomStringConvertible {
        public var user: String?
        public var host: String
        public var port: Int?

        public var description: String {
            let name = host.contains(":") ? "[\(host)]" : host
            return (user.map { "\($0)@" } ?? "") + name + (port.map { ":\($0)" } ?? "")
        }
    }

    public var address: String
    public var port: Int
    public var user: String
    public var identityFiles: [String]
    public var password: Secret?
    public var become: Bool
    public var becomeMethod: String
    public var becomeUser: String
    public var becomePassword: Secret?
    /// Hops in order, each already completed from the SSH configuration.
    public var proxyJump: [Jump]
    /// From `-o UserKnownHostsFile=` in the SSH arguments.
    public var knownHostsFile: String?
    /// Settings flotilla cannot honour for this host (such as a ProxyCommand it cannot
    /// turn into a jump host); connecting to the host is refused with these reasons.
    public var problems: [String]

    /// Derives a host's settings.
    ///
    /// - Throws: ``InventoryError`` at the variable's definition for a port that is not
    ///   a number, a malformed jump host, or a Jinja2 expression flotilla cannot evaluate.
    public static func resolve(_ host: Inventory.Host, sshConfig: SSHConfig?, localUser: String, home: String) throws(InventoryError) -> ConnectionSettings {
        let vars = VariableReader(host: host)
        var problems: [String] = []
        let inventoryAddress = try vars.text(["ansible_host", "ansible_ssh_host"])
        let lookupName = inventoryAddress ?? host.name
        let config = sshConfig?.options(for: lookupName) ?? SSHConfig.Options()

        var arguments = SSHArguments()
        for name in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            guard let text = try vars.text([name]), let location = vars.location(name) else { continue }
            try arguments.read(text, at: location)
        }
        problems += arguments.problems

        var port = config.port ?? 22
        if let (text, location) = try vars.textAndLocation(["ansible_port", "ansible_ssh_port"]) ?? arguments.port {
            guard let number = Int(text), (1...65535).contains(number) else {
                throw InventoryError(location, "port '\(text)' of host '\(host.name)' is not a number from 1 to 65535")
            }
            port = number
        }
        let user = try vars.text(["ansible_user", "ansible_ssh_user"]) ?? arguments.user ?? config.user ?? localUser
        var keys = try vars.text(["ansible_private_key_file", "ansible_ssh_private_key_file"]).map { [$0] } ?? []
        if keys.isEmpty { keys = arguments.identityFiles.isEmpty ? config.identityFiles : arguments.identityFiles }
        keys = keys.map { expandPath($0, home: home, host: lookupName, user: user, localUser: localUser) }

        var jumps: [Jump] = []
        if let (text, location) = arguments.proxyJump ?? config.proxyJump.map({ ($0, config.proxyJumpLocation ?? SourceLocation(file: "ssh config")) }) {
            for hop in text.split(separator: ",") {
                guard var jump = parseJump(String(hop)) else {
                    throw InventoryError(location, "jump host '\(hop)' of host '\(host.name)' is not [user@]host[:port]")
                }
                let hopConfig = sshConfig?.options(for: jump.host) ?? SSHConfig.Options()
                jump.user = jump.user ?? hopConfig.user
                jump.port = jump.port ?? hopConfig.port
                jump.host = hopConfig.hostName ?? jump.host
                jumps.append(jump)
            }
        }

        let becomeFlag = vars.value(["ansible_become"])
        let become = becomeFlag?.truthValue ?? false
        if let becomeFlag, becomeFlag.truthValue == nil {
            throw InventoryError(vars.location("ansible_become"), "ansible_become of host '\(host.name)' must be a boolean, got \(becomeFlag.json())")
        }
        let method = try vars.text(["ansible_become_method"]) ?? "sudo"
        if become && method != "sudo" {
            problems.append("ansible_become_method '\(method)' is not supported; flotilla becomes root with sudo")
        }
        return ConnectionSettings(
            address: inventoryAddress ?? config.hostName ?? host.name,
            port: port,
            user: user,
            identityFiles: keys,
            password: try vars.secret(["ansible_password", "ansible_ssh_pass", "ansible_ssh_password"], &problems),
            become: become,
            becomeMethod: method,
            becomeUser: try vars.text(["ansible_become_user", "ansible_sudo_user"]) ?? "root",
            becomePassword: try vars.secret(["ansible_become_password", "ansible_become_pass", "ansible_sudo_pass"], &problems),
            proxyJump: jumps,
            knownHostsFile: arguments.knownHostsFile.map { expandPath($0, home: home, host: lookupName, user: user, localUser: localUser) },
            problems: problems
        )
    }

    /// `[user@]host[:port]`, `[user@][v6]:port` or `ssh://[user@]host[:port]`.
    static func parseJump(_ text: String) -> Jump? {
        var rest = text.trimmingPythonWhitespace()
        if rest.hasPrefix("ssh://") { rest = String(rest.dropFirst(6)) }
        var user: String?
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = String(rest[rest.index(after: at)...])
            if user!.isEmpty { return nil }
        }
        var port: Int?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":", let number = Int(after.dropFirst()), (1...65535).contains(number) else { return nil }
                port = number
            }
            rest = String(rest[rest.index(after: rest.startIndex)..<close])
        } else if let colon = rest.lastIndex(of: ":"), rest.firstIndex(of: ":") == colon {
            guard let number = Int(rest[rest.index(after: colon)...]), (1...65535).contains(number) else { return nil }
            port = number
            rest = String(rest[..<colon])
        }
        guard !rest.isEmpty, !rest.contains(where: { $0.isWhitespace || $0 == "/" }) else { return nil }
        return Jump(user: user, host: rest, port: port)
    }

    /// `~`, `%d` (home), `%u` (local user), `%r` (remote user), `%h` (host), `%%`.
    static func expandPath(_ path: String, home: String, host: String, user: String, localUser: String) -> String {
        var text = path
        if text == "~" { text = home } else if text.hasPrefix("~/") { text = home + text.dropFirst() }
        guard text.contains("%") else { return text }
        var out = ""
        var iterator = text.makeIterator()
        while let c = iterator.next() {
            guard c == "%", let token = iterator.next() else { out.append(c); continue }
            switch token {
            case "d": out += home
            case "u": out += localUser
            case "r": out += user
            case "h": out += host
            case "%": out += "%"
            default: out += "%" + String(token)
            }
        }
        return out
    }
}

/// Reads connection variables: the last defined alias wins (Ansible's rule for option
/// `vars` lists), null counts as unset, and `{{ variable }}` references are evaluated.
private struct VariableReader {
    let host: Inventory.Host

    func location(_ name: String) -> SourceLocation? { host.variables[name]?.location }

    func value(_ names: [String]) -> InventoryValue? {
        guard let name = names.last(where: { host.variables[$0].map { $0.value != .null } ?? false }) else { return nil }
        return host.variables[name]!.value
    }

    func textAndLocation(_ names: [String]) throws(InventoryError) -> (String, SourceLocation)? {
        guard let name = names.last(where: { host.variables[$0].map { $0.value != .null } ?? false }) else { return nil }
        let variable = host.variables[name]!
        if variable.value == .encrypted {
            throw InventoryError(variable.location, "\(name) of host '\(host.name)' is vault-encrypted; flotilla cannot decrypt Ansible Vault values")
        }
        guard let text = variable.value.scalarText else {
            throw InventoryError(variable.location, "\(name) of host '\(host.name)' must be a single value, got \(variable.value.json())")
        }
        return (try render(text, variable: name, at: variable.location, depth: 0), variable.location)
    }

    func text(_ names: [String]) throws(InventoryError) -> String? { try textAndLocation(names)?.0 }

    func secret(_ names: [String], _ problems: inout [String]) throws(InventoryError) -> Secret? {
        guard let name = names.last(where: { host.variables[$0].map { $0.value != .null } ?? false }) else { return nil }
        if host.variables[name]!.value == .encrypted {
            let instead = name.contains("become")
                ? "give it unencrypted in an owner-only vars file, or let sudo run without a password"
                : "use --ask-pass"
            problems.append("\(name) is vault-encrypted; flotilla cannot decrypt it (\(instead))")
            return nil
        }
        return try text([name]).map(Secret.init)
    }

    /// Evaluates `{{ name }}` references to other variables and to `inventory_hostname`
    /// and `inventory_hostname_short`; any other Jinja2 is refused.
    func render(_ text: String, variable: String, at location: SourceLocation, depth: Int) throws(InventoryError) -> String {
        guard text.contains("{{") || text.contains("{%") else { return text }
        guard depth < 10 else { throw InventoryError(location, "\(variable) of host '\(host.name)' refers to itself") }
        if text.contains("{%") {
            throw InventoryError(location, "\(variable) of host '\(host.name)' uses a Jinja2 statement; flotilla only evaluates {{ variable }} references")
        }
        var out = ""
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                throw InventoryError(location, "\(variable) of host '\(host.name)' has an unterminated '{{'")
            }
            let name = rest[open.upperBound..<close.lowerBound].trimmingPythonWhitespace()
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw InventoryError(location, "\(variable) of host '\(host.name)' uses the expression '{{ \(name) }}'; flotilla only evaluates {{ variable }} references")
            }
            switch name {
            case "inventory_hostname": out += host.name
            case "inventory_hostname_short":
                out += HostExpression.isIPAddress(host.name) ? host.name : String(host.name.split(separator: ".", omittingEmptySubsequences: false)[0])
            default:
                guard let referenced = host.variables[name], let value = referenced.value.scalarText else {
                    throw InventoryError(location, "\(variable) of host '\(host.name)' refers to '\(name)', which is not a defined single-valued variable")
                }
                out += try render(value, variable: name, at: referenced.location, depth: depth + 1)
            }
            rest = rest[close.upperBound...]
        }
        return out + rest
    }
}

/// The `ssh` command-line arguments flotilla honours from `ansible_ssh_common_args`
/// and `ansible_ssh_extra_args`.
private struct SSHArguments {
    var proxyJump: (String, SourceLocation)?
    var port: (String, SourceLocation)?
    var user: String?
    var identityFiles: [String] = []
    var knownHostsFile: String?
    var problems: [String] = []

    mutating func read(_ text: String, at location: SourceLocation) throws(InventoryError) {
        let words: [String]
        do {
            words = try ShellWords.split(text, comments: false)
        } catch {
            throw InventoryError(location, "cannot split the SSH arguments '\(text)': unterminated quote")
        }
        var index = 0
        func next(_ flag: String) throws(InventoryError) -> String {
            index += 1
            guard index < words.count else { throw InventoryError(location, "the SSH argument \(flag) needs a value") }
            return words[index]
        }
        while index < words.count {
            let word = words[index]
            let flag = String(word.prefix(2))
            let attached = word.count > 2 ? String(word.dropFirst(2)) : nil
            // Other flags (-C, -v, -4 ...) do not change where or as whom flotilla connects.
            guard ["-J", "-p", "-l", "-i", "-o"].contains(flag) else {
                index += 1
                continue
            }
            let value: String
            if let attached { value = attached } else { value = try next(flag) }
            switch flag {
            case "-J": set(&proxyJump, (value, location))
            case "-p": set(&port, (value, location))
            case "-l": if user == nil { user = value }
            case "-i": identityFiles.append(value)
            default: try option(value, at: location)
            }
            index += 1
        }
    }

    private func set(_ slot: inout (String, SourceLocation)?, _ value: (String, SourceLocation)) {
        if slot == nil { slot = value }
    }

    private mutating func option(_ text: String, at location: SourceLocation) throws(InventoryError) {
        let separator = text.firstIndex { $0 == "=" || $0.isWhitespace } ?? text.endIndex
        let key = text[..<separator].lowercased()
        var value = text[separator...].drop { $0.isWhitespace }
        if value.first == "=" { value = value.dropFirst().drop { $0.isWhitespace } }
        let argument = String(value)
        switch key {
        case "proxyjump": if argument.lowercased() != "none" { set(&proxyJump, (argument, location)) }
        case "port": set(&port, (argument, location))
        case "user": if user == nil { user = argument }
        case "identityfile": identityFiles.append(argument)
        case "userknownhostsfile": if knownHostsFile == nil { knownHostsFile = argument.split(separator: " ").first.map(String.init) }
        case "proxycommand":
            if let jump = Self.jump(fromProxyCommand: argument) {
                set(&proxyJump, (jump, location))
            } else {
                problems.append("ProxyCommand '\(argument)' is not supported; use ProxyJump (-J)")
            }
        default: break // options flotilla has no counterpart for (StrictHostKeyChecking, ...)
        }
    }

    /// `ssh -W %h:%p [-q] [-p port] [-l user] [user@]bastion` as a ProxyJump hop.
    static func jump(fromProxyCommand command: String) -> String? {
        // A command that does not even split into words is no `ssh -W`: the caller reports
        // the ProxyCommand as unsupported, with its text.
        guard let words = try? ShellWords.split(command, comments: false), let program = words.first,
              (program as NSString).lastPathComponent == "ssh", words.contains("-W") else { return nil }
        var host: String?, port: String?, user: String?
        var index = 1
        while index < words.count {
            let word = words[index]
            switch word {
            case "-W": index += 1  // the %h:%p target
            case "-p": index += 1; port = index < words.count ? words[index] : nil
            case "-l": index += 1; user = index < words.count ? words[index] : nil
            case "-q", "-T", "-A", "-C", "-4", "-6": break
            default:
                if word.hasPrefix("-") || host != nil { return nil }
                host = word
            }
            index += 1
        }
        guard var hop = host else { return nil }
        if let user, !hop.contains("@") { hop = "\(user)@\(hop)" }
        if let port { hop += ":\(port)" }
        return hop
    }
}
