import ArgumentParser
import Foundation

struct FlotillaLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flotilla-lab",
        abstract: "A simulated StackStorm fleet on this machine, for demos and tests.",
        discussion: """
        Every host is a real OpenSSH sshd on its own loopback address, in its own mount and \
        pid namespaces, simulating a StackStorm node: st2ctl, st2, apt/dpkg or yum/dnf/rpm, \
        mistral-db-manage and the catalog's migration scripts change only the host's \
        simulated state (hosts/NAME/state.json); every command is logged to \
        hosts/NAME/commands.log. Needs root (namespaces).

        Exit codes: 0 success; 1 a host is not as its spec says (status); 64 usage error; \
        65 bad spec file; 70 internal error; 77 not root.
        """,
        subcommands: [Up.self, Status.self, Down.self]
    )
}

struct LabDirOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The lab directory (inventories, keys, host state and logs).", valueName: "dir"))
    var dir: String

    var url: URL {
        URL(fileURLWithPath: dir, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL
    }
}

/// Runs a lab command body, turning `LabError` into its message and exit code.
func labMain(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as LabError {
        FileHandle.standardError.write(Data("flotilla-lab: \(error.message)\n".utf8))
        throw ExitCode(error.exitCode)
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("flotilla-lab: internal error: \(error)\n".utf8))
        throw ExitCode(70)
    }
}

func readRecord(_ dir: URL) throws -> LabRecord? {
    let file = dir.appendingPathComponent("lab.json")
    guard FileManager.default.fileExists(atPath: file.path) else { return nil }
    do {
        return try labJSONDecoder.decode(LabRecord.self, from: Data(contentsOf: file))
    } catch {
        throw LabError.failed("\(file.path) is not a lab record: \(error)")
    }
}

extension LabLogin: ExpressibleByArgument {}

extension FlotillaLab {
    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a simulated fleet.",
            discussion: """
            Writes into DIR: inventory.ini and inventory.yaml (Ansible), known_hosts, \
            id_ed25519 (the client key), ssh_config, password (the password of root and of \
            the login user st2ops on every host, owner-only) and hosts/NAME/ for each host.

            Every host has two accounts that accept the client key: root, and st2ops, who \
            may run anything as root through the host's real sudo, with its password. \
            --login picks the one the inventories and ssh_config use; with user, they set \
            ansible_become and ansible_become_password, so flotilla runs its changes \
            through sudo. As a user without sudo, the simulated tools refuse changes as \
            the real ones do (apt-get: exit 100, lock file permission denied); queries work.

            A spec's faults (the README has each key): unreachable (refused, silent), \
            host_key (changed, unknown), slow, fail, tool_fail, tool_slow (a simulated tool \
            logs its start, then works longer), hang, drop (the connection and the command \
            killed), cut (every connection dropped, the command going on), reboot (every \
            process of the host killed, a new boot id, sshd back), mistral_event_triggers.

            Examples:
              flotilla-lab up --dir lab --hosts 20
              flotilla-lab up --dir lab --spec inventories/lab-faults.yaml --first-address 127.78.0.1
              flotilla-lab up --dir lab --hosts 5 --login root
              ssh -F lab/ssh_config st2-01 st2ctl status
            """
        )

        @OptionGroup var lab: LabDirOption

        @Option(help: "Generate a varied fleet of N hosts (OS families, st2 versions, clusters, zones).")
        var hosts: Int?

        @Option(help: ArgumentHelp("A YAML spec of the hosts, their state and faults (see README).", valueName: "file"))
        var spec: String?

        @Option(help: "The first host's loopback address; the others follow it.")
        var firstAddress = "127.77.0.1"

        @Option(help: "The SSH port every host listens on.")
        var port = 2222

        @Option(help: ArgumentHelp("Who the inventories and ssh_config log in as: root, or the hosts' login user \(LabLogin.userName), who becomes root with sudo and its password (ansible_become).", valueName: "root|user"))
        var login: LabLogin = .user

        func validate() throws {
            guard (hosts == nil) != (spec == nil) else { throw ValidationError("give exactly one of --hosts N or --spec FILE") }
            if let hosts, !(1...5000).contains(hosts) { throw ValidationError("--hosts must be from 1 to 5000") }
            guard (1...65535).contains(port) else { throw ValidationError("--port must be from 1 to 65535") }
        }

        func run() throws {
            try labMain {
                let dir = lab.url
                try Self.checkEnvironment(dir)
                if let record = try readRecord(dir), record.state != "down" {
                    let alive = record.hosts.flatMap(\.processes).filter(ProcessTable.isAlive)
                    if !alive.isEmpty {
                        throw LabError.usage("a lab is already running in \(dir.path) (\(record.hosts.count) hosts, \(alive.count) processes); run 'flotilla-lab down --dir \(lab.dir)' first")
                    }
                    FileHandle.standardError.write(Data("flotilla-lab: the lab recorded in \(dir.path) is no longer running; replacing it\n".utf8))
                }
                let specs = try spec.map { try LabSpec.load(path: $0) } ?? LabSpec.generate(count: hosts!)
                let started = Date()
                let builder = LabUp(dir: dir, specs: specs, firstAddress: firstAddress, port: port, login: login) { message in
                    FileHandle.standardError.write(Data("flotilla-lab: \(message)\n".utf8))
                }
                let record: LabRecord
                do {
                    record = try builder.run()
                } catch {
                    if let partial = try? readRecord(dir) { _ = LabDown.stop(partial, dir: dir) }
                    throw error
                }
                let seconds = Date().timeIntervalSince(started)
                let refused = record.hosts.filter { $0.unreachable == .refused }.count
                let silent = record.hosts.filter { $0.unreachable == .silent }.count
                var line = "flotilla-lab: \(record.hosts.count) hosts up in \(String(format: "%.1f", seconds)) s"
                if refused + silent > 0 { line += " (\(refused) refusing connections, \(silent) silent, as specified)" }
                print(line)
                print("  inventory:   \(dir.path)/inventory.ini (also inventory.yaml)")
                print("  known_hosts: \(dir.path)/known_hosts")
                print("  key:         \(dir.path)/id_ed25519")
                print("  try:         ssh -F \(dir.path)/ssh_config \(record.hosts[0].name) st2ctl status")
            }
        }

        static func checkEnvironment(_ dir: URL) throws {
            guard geteuid() == 0 else {
                throw LabError(message: "up needs root: each simulated host runs sshd in its own mount namespace (try: sudo flotilla-lab up ...)", exitCode: 77)
            }
            let tools = [("/usr/sbin/sshd", "openssh-server"), ("/usr/bin/ssh-keygen", "openssh-client"), ("/usr/bin/unshare", "util-linux"), ("/usr/bin/openssl", "openssl")]
            for (tool, package) in tools where !FileManager.default.isExecutableFile(atPath: tool) {
                throw LabError.usage("\(tool) is missing: install it with 'apt-get install -y \(package)'")
            }
            let path = dir.path
            for reserved in ["/etc", "/opt", "/var/log", "/run", "/usr/bin"] where path == reserved || path.hasPrefix(reserved + "/") {
                throw LabError.usage("the lab directory cannot be under \(reserved): each host gets its own copy of \(reserved)")
            }
            if let bad = path.first(where: { $0.isWhitespace || "\"'%\\".contains($0) }) {
                throw LabError.usage("the lab directory path may not contain '\(bad)' (it goes into sshd configuration): \(path)")
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each host of a lab: address, answer, OS, st2 version, services, faults.",
            discussion: "Example:\n  flotilla-lab status --dir lab"
        )

        @OptionGroup var lab: LabDirOption

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() throws {
            try labMain {
                let dir = lab.url
                guard let record = try readRecord(dir) else {
                    throw LabError(message: "no lab in \(dir.path) (run 'flotilla-lab up --dir \(lab.dir) --hosts N')", exitCode: 1)
                }
                var rows: [[String: String]] = []
                var wrong = 0
                for host in record.hosts {
                    let paths = HostPaths(dir: URL(fileURLWithPath: host.dir))
                    let state = try? StateStore(paths: paths).read()
                    let faults = (try? HostConfig.load(paths))?.spec.faults ?? HostFaults()
                    let answer = Probe.check(address: host.address, port: host.port, timeout: 1)
                    let expected: Probe.Answer = record.state == "down" ? .refused : (host.unreachable.map { $0 == .refused ? .refused : .silent } ?? .banner)
                    if answer != expected { wrong += 1 }
                    let running = state.map { s in "\(s.services.count)/\(s.runnableComponents.count)" } ?? "?"
                    rows.append([
                        "name": host.name, "address": "\(host.address):\(host.port)", "answer": answer.rawValue,
                        "expected": expected.rawValue, "os": state?.os.key ?? "?", "st2": state?.packages["st2"] ?? "-",
                        "services": running, "faults": faults.summary,
                    ])
                }
                if json {
                    let data = try JSONSerialization.data(withJSONObject: ["dir": dir.path, "state": record.state, "hosts": rows], options: [.prettyPrinted, .sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print("lab \(dir.path): \(record.state), \(record.hosts.count) hosts\(wrong > 0 ? ", \(wrong) not as specified" : "")")
                    let columns = ["name", "address", "answer", "os", "st2", "services", "faults"]
                    let widths = columns.map { column in max(column.count, rows.map { $0[column]!.count }.max() ?? 0) }
                    let format = { (values: [String]) in zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ") }
                    print(format(columns.map { $0.uppercased() }))
                    for row in rows {
                        var line = format(columns.map { row[$0]! })
                        if row["answer"] != row["expected"] { line += "  <- expected \(row["expected"]!)" }
                        print(line)
                    }
                }
                if wrong > 0 { throw ExitCode(1) }
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop every process a lab started; keep its files (logs, state) unless --purge.",
            discussion: "Example:\n  flotilla-lab down --dir lab"
        )

        @OptionGroup var lab: LabDirOption

        @Flag(help: "Also delete the lab directory.")
        var purge = false

        func run() throws {
            try labMain {
                let dir = lab.url
                guard let record = try readRecord(dir) else {
                    throw LabError(message: "no lab in \(dir.path)", exitCode: 1)
                }
                let started = Date()
                let stopped = LabDown.stop(record, dir: dir)
                if purge {
                    try FileManager.default.removeItem(at: dir)
                }
                print("flotilla-lab: stopped \(stopped) processes of \(record.hosts.count) hosts in \(String(format: "%.1f", Date().timeIntervalSince(started))) s\(purge ? "; removed \(dir.path)" : "")")
            }
        }
    }
}

enum LabDown {
    /// Stops every recorded process that is still the one the lab started, waits until
    /// they are gone, and marks the lab down. Returns how many were running.
    static func stop(_ record: LabRecord, dir: URL) -> Int {
        let processes = record.hosts.flatMap(\.processes).filter(ProcessTable.isAlive)
        for host in record.hosts {
            let live = host.processes.filter(ProcessTable.isAlive)
            if let hostInit = live.first(where: { $0.role == "init" }) {
                // The init of the host's pid namespace: when it exits, the kernel ends
                // every process of the host, and the unshare holding it exits too.
                kill(hostInit.pid, SIGTERM)
            } else {
                // No recorded init (a failed start, or a silent listener): unshare ignores
                // SIGTERM, and SIGKILL takes its child with it (--kill-child).
                for process in live { kill(process.pid, process.role == "silent-listener" ? SIGTERM : SIGKILL) }
            }
        }
        let deadline = Date().addingTimeInterval(5)
        while processes.contains(where: ProcessTable.isAlive) {
            if Date() > deadline {
                for process in processes where ProcessTable.isAlive(process) { kill(process.pid, SIGKILL) }
            }
            usleep(2_000)
        }
        var down = record
        down.state = "down"
        try? writeAtomically(try labJSONEncoder.encode(down), to: dir.appendingPathComponent("lab.json"))
        return processes.count
    }
}
