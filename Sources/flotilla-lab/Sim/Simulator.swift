import FlotillaCore
import Foundation

/// The simulated tools of a lab host. The lab puts links named after each tool in front of
/// the real binaries inside every host, so `apt-get`, `/usr/bin/apt-get` and the migration
/// scripts all land here; nothing real is ever installed.
enum Simulator {
    typealias Tool = @Sendable (inout SimContext) throws -> Int32

    static let tools: [String: Tool] = [
        "st2ctl": St2Tools.st2ctl,
        "st2": St2Tools.st2,
        "apt-get": AptTools.aptGet,
        "apt": AptTools.aptGet,
        "apt-cache": AptTools.aptCache,
        "dpkg-query": AptTools.dpkgQuery,
        "dpkg": AptTools.dpkg,
        "yum": YumTools.yum,
        "dnf": YumTools.yum,
        "rpm": YumTools.rpm,
        "mistral-db-manage": St2Tools.mistralDBManage,
    ]

    /// Names the lab may link into a host's /usr/bin.
    /// sudo is the real one (the host's own /etc/sudoers), found in /usr/bin by its
    /// secure_path like the simulated tools there.
    static let binLinks = ["st2ctl", "st2", "apt-get", "apt", "apt-cache", "dpkg-query", "dpkg", "yum", "dnf", "rpm"]

    /// The tools a host of `os` has: st2's and its own package manager's. The others are
    /// hidden from its /usr/bin (overlay whiteouts), so an EL host has no apt-get even
    /// though this machine does.
    static func tools(for os: LabOS) -> [String] {
        let managers = ["apt": ["apt-get", "apt", "apt-cache", "dpkg-query", "dpkg"], "yum": ["yum", "rpm"], "dnf": ["dnf", "yum", "rpm"]]
        return ["st2ctl", "st2"] + (os.packageManager.flatMap { managers[$0] } ?? [])
    }

    /// Whether a program name is simulated (a tool above, or a catalog migration script).
    static func handles(_ name: String) -> Bool {
        tools[name] != nil || name.hasPrefix("st2-migrate-")
    }

    /// Runs the simulated tool `name` and returns its exit status.
    static func run(name: String, argv: [String]) -> Int32 {
        guard let paths = HostPaths.current(), let config = try? HostConfig.load(paths) else {
            FileHandle.standardError.write(Data("flotilla-lab: '\(name)' is simulated only inside a lab host\n".utf8))
            return 127
        }
        var context = SimContext(paths: paths, config: config, argv: argv)
        let start = Date()
        let line = ([name] + argv.dropFirst()).joined(separator: " ")
        if let fault = SessionWrapper.firing(config.spec.faults.toolFail, kind: "tool-fail", line, context.store) {
            if !fault.stdout.isEmpty { context.out(fault.stdout) }
            if !fault.stderr.isEmpty { context.err(fault.stderr) }
            var record = CommandRecord(kind: "sim", argv: argv, start: start, end: Date(), exitStatus: fault.exitCode)
            record.fault = "tool-fail"
            record.append(to: paths)
            return fault.exitCode
        }
        if let fault = SessionWrapper.firing(config.spec.faults.toolSlow, kind: "tool-slow", line, context.store) {
            var started = CommandRecord(kind: "started", argv: argv, start: start, end: start, exitStatus: 0)
            started.fault = "tool-slow"
            started.append(to: paths)
            usleep(useconds_t(fault.delay * 1_000_000))
        }
        let status: Int32
        do {
            if geteuid() != 0, let refusal = Privilege.refusal(name, context.arguments, os: context.os) {
                context.err(refusal.message)
                status = refusal.status
            } else if let tool = tools[name] {
                status = try tool(&context)
            } else {
                status = try St2Tools.migrationScript(&context)
            }
        } catch {
            context.err("flotilla-lab simulation error: \(error)")
            status = 70
        }
        CommandRecord(kind: "sim", argv: argv, start: start, end: Date(), exitStatus: status).append(to: paths)
        return status
    }
}

/// What a simulated tool sees: its arguments, the host's files and state, and its output.
struct SimContext {
    let paths: HostPaths
    let config: HostConfig
    let argv: [String]
    var store: StateStore { StateStore(paths: paths) }
    var arguments: [String] { Array(argv.dropFirst()) }
    var program: String { URL(fileURLWithPath: argv.first ?? "").lastPathComponent }
    var os: LabOS { config.spec.os }

    func out(_ text: String) { FileHandle.standardOutput.write(Data((text.hasSuffix("\n") || text.isEmpty ? text : text + "\n").utf8)) }
    func err(_ text: String) { FileHandle.standardError.write(Data((text.hasSuffix("\n") || text.isEmpty ? text : text + "\n").utf8)) }

    /// What bash prints for a program this host does not have.
    func notFound() -> Int32 {
        err("bash: line 1: \(program): command not found")
        return 127
    }

    func catalog() throws -> MigrationCatalog { try MigrationCatalog.bundled() }
}

/// Keeps the catalog's migration scripts and mistral-db-manage present exactly when the
/// installed packages ship them, under `optRoot` (the host's /opt).
func syncShippedScripts(state: HostState, catalog: MigrationCatalog, optRoot: URL, executable: String) throws {
    let fm = FileManager.default
    let binDir = optRoot.appendingPathComponent("stackstorm/st2/bin")
    let shipped = Set(state.st2Version.map { catalog.scriptsShipped(by: $0) } ?? [])
    let all = Set(catalog.entries.flatMap { $0.scripts.map(MigrationCatalog.scriptPath) })
    for script in all {
        let link = binDir.appendingPathComponent(URL(fileURLWithPath: script).lastPathComponent)
        let present = (try? fm.destinationOfSymbolicLink(atPath: link.path)) != nil
        if shipped.contains(script), !present {
            try fm.createDirectory(at: binDir, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: link.path, withDestinationPath: executable)
        } else if !shipped.contains(script), present {
            try fm.removeItem(at: link)
        }
    }
    let mistralDir = optRoot.appendingPathComponent("stackstorm/mistral/bin")
    let manage = mistralDir.appendingPathComponent("mistral-db-manage")
    let hasManage = (try? fm.destinationOfSymbolicLink(atPath: manage.path)) != nil
    if state.packages["st2mistral"] != nil, !hasManage {
        try fm.createDirectory(at: mistralDir, withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: manage.path, withDestinationPath: executable)
    } else if state.packages["st2mistral"] == nil, hasManage {
        try fm.removeItem(at: manage)
    }
}
