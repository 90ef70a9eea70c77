import FlotillaCore
import Foundation

/// The simulated state of one StackStorm node. It lives in the host's `state.json`, which
/// tests read; every change happens under the host's lock, so concurrent commands on one
/// host never lose each other's updates.
struct HostState: Codable, Sendable {
    struct Migration: Codable, Sendable {
        var script: String
        var arguments: [String]
        var at: Date
        /// The st2 version installed when the script ran.
        var st2Version: String
    }

    struct PackageChange: Codable, Sendable {
        var at: Date
        var tool: String
        var package: String
        var from: String?
        var to: String
    }

    struct Mistral: Codable, Sendable {
        /// The st2mistral version the database schema matches.
        var schema: String
        var populated: Bool
        /// Set when the mistral services ran against a schema older than the package,
        /// creating the new tables: `upgrade head` then fails with event_triggers_v2.
        var tablesAhead: Bool
    }

    var name: String
    var os: LabOS
    /// Installed packages and versions.
    var packages: [String: String]
    /// Versions the host's repositories offer, per package.
    var available: [String: [String]]
    /// Running st2 components and their pids.
    var services: [String: Int]
    var nextPid: Int
    var migrations: [Migration] = []
    var packageHistory: [PackageChange] = []
    var mistral: Mistral?
    var kv: [KVPair]
    /// Times content was registered (`st2ctl reload`).
    var registrations = 0
    /// Registered packs and their versions (`st2 pack list`).
    var packs: [String: String] = [:]
    /// The datastore crypto key (as in /etc/st2/keys/datastore_key.json), with which the
    /// simulated API encrypts and decrypts secrets.
    var cryptoKey = ""
    /// Config files a package manager left beside the live ones.
    var leftoverConfigs: [String] = []
    /// How often each command fault has fired (key: kind and index), for `times`.
    var faultHits: [String: Int] = [:]

    var st2Version: StackStormVersion? { packages["st2"].flatMap(StackStormVersion.init) }

    /// The components `st2ctl status` lists for the installed st2 release, in its order.
    var components: [String] {
        guard let st2 = st2Version else { return [] }
        var names = ["st2actionrunner", "st2api", "st2stream", "st2auth", "st2garbagecollector", "st2notifier"]
        if st2 < StackStormVersion("3.3")! { names.append("st2resultstracker") }
        names += ["st2rulesengine", "st2sensorcontainer", "st2chatops"]
        if st2 >= StackStormVersion("2.9")! { names.append("st2timersengine") }
        if st2 >= StackStormVersion("2.8")! { names.append("st2workflowengine") }
        if st2 >= StackStormVersion("2.10")! { names.append("st2scheduler") }
        if st2 < StackStormVersion("3.3")! { names += ["mistral-server", "mistral.api"] }
        return names
    }

    /// Components that actually run: those whose package is installed.
    var runnableComponents: [String] {
        components.filter { component in
            switch component {
            case "st2chatops": return packages["st2chatops"] != nil
            case "mistral-server", "mistral.api": return packages["st2mistral"] != nil
            default: return true
            }
        }
    }

    /// Starts every runnable component that is not running.
    mutating func startServices() {
        for component in runnableComponents where services[component] == nil {
            services[component] = nextPid
            nextPid += Int.random(in: 3...40)
        }
        if var mistral, let installed = packages["st2mistral"], services["mistral-server"] != nil,
           StackStormVersion(mistral.schema)! < StackStormVersion(installed)! {
            // Mistral creates its new tables on start when the schema is behind.
            mistral.tablesAhead = true
            self.mistral = mistral
        }
    }

    mutating func stopServices() { services = [:] }

    init(spec: HostSpec) {
        name = spec.name
        os = spec.os
        packages = spec.packages
        available = spec.available
        services = [:]
        nextPid = 1000 + Int.random(in: 0...20000)
        kv = spec.kv
        if spec.packages["st2"] != nil {
            for pack in St2Content.shippedPacks { packs[pack] = spec.packages["st2"].map { String($0.prefix { $0 != "-" }) } ?? "" }
            for pack in spec.packs { packs[pack.name] = pack.version }
        }
        if let mistral = spec.packages["st2mistral"] {
            self.mistral = Mistral(schema: mistral, populated: true, tablesAhead: false)
        }
        if spec.servicesRunning { startServices() }
    }
}

/// Reads and changes a host's state under its lock.
struct StateStore {
    let paths: HostPaths

    func read() throws -> HostState {
        do {
            return try labJSONDecoder.decode(HostState.self, from: Data(contentsOf: paths.state))
        } catch {
            throw LabError.failed("cannot read the host state \(paths.state.path): \(error)")
        }
    }

    /// Writes the state for root and the host's login user alike: the host directory's
    /// group is the login user's.
    func write(_ state: HostState) throws {
        var directory = stat()
        let group = stat(paths.dir.path, &directory) == 0 ? directory.st_gid : nil
        try writeAtomically(try labJSONEncoder.encode(state), to: paths.state, mode: 0o660, group: group)
    }

    /// Applies `change` to the state atomically with respect to other commands on the host.
    @discardableResult
    func update<T>(_ change: (inout HostState) throws -> T) throws -> T {
        try withFileLock(paths.lock) {
            var state = try read()
            let result = try change(&state)
            try write(state)
            return result
        }
    }
}

/// One line of a host's `commands.log`.
struct CommandRecord: Codable {
    /// `ssh` for a command a client ran over SSH, `sim` for a simulated tool, `started`
    /// for a simulated tool that a `tool_slow` fault holds (written as it starts).
    var kind: String
    var argv: [String]
    var start: Date
    var end: Date
    var exitStatus: Int32
    var fault: String?

    enum CodingKeys: String, CodingKey { case kind, argv, start, end, fault, exitStatus = "exit_status" }

    func append(to paths: HostPaths) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(preciseTimestamp(date))
        }
        guard let data = try? encoder.encode(self), let line = String(data: data, encoding: .utf8) else { return }
        appendLine(line, to: paths.commandLog)
    }
}

/// An ISO 8601 UTC timestamp with microseconds, so records of fast commands stay ordered.
func preciseTimestamp(_ date: Date) -> String {
    let seconds = date.timeIntervalSince1970
    var whole = time_t(seconds.rounded(.down))
    var parts = tm()
    gmtime_r(&whole, &parts)
    let micros = Int(((seconds - Double(whole)) * 1_000_000).rounded(.down))
    return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                  Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), micros)
}
