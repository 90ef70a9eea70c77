import Foundation
import Testing
@testable import flotilla_lab

/// The claims of SECURITY.md that no other suite proves, each against real sshd hosts of
/// the lab: secrets never leave the controller's memory except to the server that needs
/// them; hostile inventory values stay inert words even through sudo; the control socket
/// answers only its owner; every file flotilla writes is owner-only from its first
/// instant, whatever the umask, and nothing is left in temporary directories.
@Suite struct SecurityTests {
    static let flotilla = productsDir.appendingPathComponent("flotilla").path

    /// One test's secrets: unique, so that nothing of another test (running at the same
    /// time, on the same machine) can match them.
    struct Secrets {
        let tag = UUID().uuidString.prefix(8)
        var become: String { "S3cr3t-become-\(tag)" }
        var login: String { "S3cr3t-login-\(tag)" }
        var passphrase: String { "P4ss-phrase-\(tag)" }
        var all: [String] { [become, login, passphrase] }

        func found(in text: String) -> Bool { all.contains { text.contains($0) } }
        func found(in data: Data) -> [String] { all.filter { data.range(of: Data($0.utf8)) != nil } }
    }

    static let setpriv = "/usr/bin/setpriv"
    static let python = "/usr/bin/python3"
    static let strace = "/usr/bin/strace"
    static var canSwitchUsers: Bool {
        geteuid() == 0 && FileManager.default.isExecutableFile(atPath: setpriv) && FileManager.default.isExecutableFile(atPath: python)
    }

    /// A test's private corner of its lab dir: its own HOME (where host locks go) and
    /// TMPDIR, so that what flotilla leaves behind can be listed, and inputs (inventories
    /// holding secrets, keys) kept apart from everything that must never hold them.
    struct Sandbox {
        let lab: TestLab
        var root: URL { lab.dir }
        var home: URL { root.appendingPathComponent("home") }
        var tmp: URL { root.appendingPathComponent("tmp") }
        var inputs: URL { root.appendingPathComponent("inputs") }
        var work: URL { root.appendingPathComponent("work") }

        init(_ lab: TestLab) throws {
            self.lab = lab
            for dir in [home, tmp, inputs, work] {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                chmod(dir.path, 0o700)
            }
        }

        /// `flotilla ARGS` with umask 000 (so any mode flotilla does not set itself shows),
        /// HOME and TMPDIR in the sandbox, in `cwd` (default: work/), optionally under strace.
        func argv(_ arguments: [String], cwd: URL? = nil, trace: URL? = nil) -> [String] {
            let traced = trace.map { [SecurityTests.strace, "-f", "-ff", "-qq", "-o", $0.path, "-e", "trace=openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,bind"] } ?? []
            // (LeakSanitizer cannot work under ptrace: in sanitizer builds, traced runs skip it.)
            let leaks = trace == nil ? "" : " ASAN_OPTIONS=detect_leaks=0"
            return ["/bin/sh", "-c", "umask 000; cd \"$1\" || exit 99; export HOME=\"$2\" TMPDIR=\"$3\"\(leaks); shift 3; exec \"$@\"", "sh",
                    (cwd ?? work).path, home.path, tmp.path] + traced + [SecurityTests.flotilla] + arguments
        }

        func flotilla(_ arguments: [String], cwd: URL? = nil, trace: URL? = nil) throws -> Run {
            try run(argv(arguments, cwd: cwd, trace: trace))
        }

        /// What flotilla left in TMPDIR and HOME (paths relative to them).
        func leftovers() -> (tmp: [String], home: [String]) {
            func list(_ dir: URL) -> [String] { (FileManager.default.subpaths(atPath: dir.path) ?? []).sorted() }
            return (list(tmp), list(home))
        }

        /// The lab's `[all:vars]` and hosts, with `replace` applied to each line.
        func labInventory(_ transform: (String) -> String) throws -> String {
            try String(contentsOfFile: lab.path("inventory.ini"), encoding: .utf8)
                .split(separator: "\n", omittingEmptySubsequences: false).map { transform(String($0)) }.joined(separator: "\n")
        }

        /// `name -> (address, port)` from the lab's inventory.
        func addresses() throws -> [String: (String, String)] {
            var result: [String: (String, String)] = [:]
            for line in try String(contentsOfFile: lab.path("inventory.ini"), encoding: .utf8).split(separator: "\n") where line.contains(" ansible_host=") {
                let words = line.split(separator: " ")
                func value(_ key: String) -> String { words.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) } ?? "" }
                result[String(words[0])] = (value("ansible_host"), value("ansible_port"))
            }
            return result
        }
    }

    static func mode(_ path: String) -> Int {
        var info = stat()
        guard lstat(path, &info) == 0 else { return -1 }
        return Int(info.st_mode & 0o7777)
    }

    static func json(_ result: Run) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout)\nstderr: \(result.stderr)")
    }

    /// Every regular file under `root` (symbolic links not followed), except under `skipping`.
    static func regularFiles(under root: URL, skipping: [URL] = []) -> [String] {
        var files: [String] = []
        func walk(_ path: String) {
            guard !skipping.contains(where: { $0.path == path }) else { return }
            var info = stat()
            guard lstat(path, &info) == 0 else { return }
            switch info.st_mode & S_IFMT {
            case S_IFREG: files.append(path)
            case S_IFDIR:
                for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] { walk(path + "/" + name) }
            default: break
            }
        }
        walk(root.standardizedFileURL.path)
        return files
    }

    /// `file: secret` for every file that holds one of the secrets.
    static func leaks(of secrets: Secrets, in files: [String]) -> [String] {
        files.flatMap { file -> [String] in
            guard let data = FileManager.default.contents(atPath: file) else { return [] }
            return secrets.found(in: data).map { "\(file): \($0)" }
        }
    }

    /// Every other process's command line and environment, as /proc shows them.
    static func processListing() -> [(pid: String, text: Data)] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { Int32($0) != nil && Int32($0) != getpid() }.map { pid in
            var text = Data()
            for name in ["cmdline", "environ"] {
                text.append(FileManager.default.contents(atPath: "/proc/\(pid)/\(name)") ?? Data())
                text.append(0x0a)
            }
            return (pid, text)
        }
    }

    // MARK: - Secrets

    /// Login password, become password and key passphrase: in none of the remote command
    /// lines, the process listings of the controller and the hosts while a run is in
    /// flight, the journal, logs, artifacts, reports, the output of any command, or the
    /// hosts' command and sshd logs; and a command that reads stdin under become (sudo
    /// with NOPASSWD or a cached credential leaves the password line unread) gets nothing.
    @Test func secretsAppearNowhere() throws {
        let lab = try TestLab(spec: """
            defaults:
              packages: {st2: 3.7.1-1, st2web: 3.7.1-1}
              available: [3.7.1-1, 3.8.1-1]
              kv: 3
              audit_logs: 1
              faults:
                slow: [{match: "st2ctl|apt-get install|dnf update", delay: 150ms}]
            hosts:
              - {name: deb, os: ubuntu20.04}
              - {name: rpm, os: el8}
            """)
        let box = try Sandbox(lab)
        let secrets = Secrets()
        // The login user's sudo takes the test's become password (given to chpasswd on
        // stdin, after the lab's password for sudo itself).
        let labPassword = try String(contentsOfFile: lab.path("password"), encoding: .utf8)
        for host in ["deb", "rpm"] {
            let changed = try lab.ssh(host, "sudo -S -p '' chpasswd", input: labPassword + "st2ops:\(secrets.become)\n")
            #expect(changed.status == 0, "\(changed.stderr)")
        }
        // An encrypted copy of the lab's key, its passphrase in a file, and an inventory
        // with a login and a become password (the lab logs in by key: the login password is
        // never needed, the become password goes to sudo -S).
        let key = box.inputs.appendingPathComponent("key")
        try FileManager.default.copyItem(atPath: lab.path("id_ed25519"), toPath: key.path)
        try runTool(["/usr/bin/ssh-keygen", "-q", "-p", "-P", "", "-N", secrets.passphrase, "-f", key.path])
        let passphraseFile = box.inputs.appendingPathComponent("passphrase")
        try (secrets.passphrase + "\n").write(to: passphraseFile, atomically: true, encoding: .utf8)
        let inventory = box.inputs.appendingPathComponent("inventory.ini")
        try box.labInventory { line in
            if line.hasPrefix("ansible_ssh_private_key_file=") { return "ansible_ssh_private_key_file=\(key.path)" }
            guard line.contains(" ansible_host=") else { return line }
            return line + " ansible_become=true ansible_become_password=\(secrets.become) ansible_password=\(secrets.login)"
        }.write(to: inventory, atomically: true, encoding: .utf8)
        let state = lab.dir.appendingPathComponent("state")
        // A generous --connect-timeout: it bounds authentication too, and beside the 300-host
        // crash test on two cores an encrypted key's login has taken 12 s (this test is about
        // secrets, not speed).
        let connection = ["-i", inventory.path, "--key-passphrase-file", passphraseFile.path, "--connect-timeout", "60"]
        var outputs: [(String, Run)] = []

        // The key really is locked: without the passphrase nothing connects.
        let locked = try box.flotilla(["ping", "-i", inventory.path])
        #expect(locked.status != 0 && locked.stderr.contains("no terminal"), "\(locked.stdout)\(locked.stderr)")

        // The upgrade, with every report, while /proc is read over and over.
        let report = lab.dir.appendingPathComponent("report.json"), junit = lab.dir.appendingPathComponent("report.xml")
        let html = lab.dir.appendingPathComponent("report.html"), upgradeLog = lab.dir.appendingPathComponent("upgrade.log")
        let upgrade = try Background(box.argv(["upgrade"] + connection + ["--to", "3.8.1", "--json", "--report", report.path, "--junit", junit.path,
                                                                        "--html", html.path, "--state-dir", state.path, "-v"]), log: upgradeLog)
        var samples = 0, sawSudo = false
        var listed: [String] = []
        while !upgrade.exited {
            for (pid, text) in Self.processListing() {
                if text.range(of: Data("sudo -S -p ''".utf8)) != nil { sawSudo = true }
                listed += secrets.found(in: text).map { "pid \(pid): \($0)" }
            }
            samples += 1
            usleep(10_000)
        }
        let upgradeOutput = upgrade.output
        #expect(upgrade.exitCode == 0, "\(upgradeOutput.suffix(3000))")
        #expect(listed.isEmpty, "\(listed)")
        // The listings did catch remote steps under sudo in flight.
        #expect(samples >= 10 && sawSudo, "\(samples) samples")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        #expect(result["outcome"] as? String == "succeeded")
        for host in ["deb", "rpm"] { #expect(try lab.packages(host)["st2"] == "3.8.1-1", "\(host)") }

        // Every other command that connects, or shows the inventory or the run.
        let execLogs = lab.dir.appendingPathComponent("exec-logs")
        let exec = try box.flotilla(["exec"] + connection + ["--log-dir", execLogs.appendingPathComponent("stdin").path, "--json", "--", "id -u; cat; echo end"])
        outputs.append(("exec", exec))
        #expect(exec.status == 0, "\(exec.stdout)\(exec.stderr)")
        for host in try Self.json(exec)["hosts"] as? [[String: Any]] ?? [] {
            // Under sudo -S, cat reads nothing: the password line is not the command's.
            #expect(host["stdout"] as? String == "0\nend\n", "\(host)")
        }
        for arguments in [["exec"] + connection + ["--log-dir", execLogs.appendingPathComponent("id").path, "--", "id"], ["ping"] + connection, ["facts"] + connection,
                          ["facts", "--json"] + connection, ["plan", "--to", "3.8.1", "--json"] + connection, ["plan", "--to", "3.8.1"] + connection,
                          ["report", "--to", "3.8.1", "--format", "json"] + connection, ["hosts", "-i", inventory.path, "--json", "--vars"],
                          ["hosts", "-i", inventory.path, "--vars"], ["show", "--state-dir", state.path, "--json"],
                          ["show", "--state-dir", state.path, "--format", "html"], ["show", "--state-dir", state.path, "--host", "deb", "--step", "upgrade packages"],
                          ["runs", "--state-dir", state.path, "--json"]] {
            let result = try box.flotilla(arguments)
            #expect(result.status == 0, "\(arguments): \(result.stdout.suffix(2000))\(result.stderr.suffix(2000))")
            outputs.append((arguments.joined(separator: " "), result))
        }
        #expect(outputs.contains { $0.1.stdout.contains("\"ansible_become_password\": \"<redacted>\"") })

        // A host that takes the login password for real (its key is not authorized): the
        // password goes to the server, and comes back in no message or log.
        let stranger = box.inputs.appendingPathComponent("stranger")
        try runTool(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger.path])
        let (address, port) = try #require(try box.addresses()["deb"])
        let passwordInventory = box.inputs.appendingPathComponent("password.ini")
        try """
            pw ansible_host=\(address) ansible_port=\(port) ansible_user=root ansible_ssh_private_key_file=\(stranger.path) ansible_password=\(secrets.login)
            [all:vars]
            ansible_ssh_common_args='-o UserKnownHostsFile=\(lab.path("known_hosts"))'
            """.write(to: passwordInventory, atomically: true, encoding: .utf8)
        for arguments in [["ping", "-i", passwordInventory.path, "--json"], ["exec", "-i", passwordInventory.path, "--log-dir", execLogs.appendingPathComponent("password").path, "--", "true"]] {
            let denied = try box.flotilla(arguments)
            #expect(denied.status == 69 && (denied.stdout + denied.stderr).contains("password denied"), "\(denied.stdout)\(denied.stderr)")
            outputs.append((arguments.joined(separator: " "), denied))
        }

        // Become went through sudo -S (the password on stdin) for every step and command.
        for host in ["deb", "rpm"] {
            let commands = try lab.commandLog(host).filter { $0["kind"] as? String == "ssh" }.compactMap { ($0["argv"] as? [String])?.first }
            #expect(commands.filter { $0.hasPrefix("sudo -S -p '' -u root -- sh -c ") }.count >= 10, "\(host): \(commands)")
        }
        // No output, and no file anywhere in the test's directory (the state dir: journal,
        // -wal, logs, artifacts; the reports; exec logs; the hosts' command, sshd and state
        // logs; TMPDIR and HOME), holds a secret; only the inputs do.
        for (command, result) in outputs {
            #expect(!secrets.found(in: result.stdout + result.stderr), "\(command)")
        }
        let files = Self.regularFiles(under: lab.dir, skipping: [box.inputs])
        for expected in [report.path, junit.path, html.path, upgradeLog.path, lab.path("hosts/deb/commands.log"), lab.path("hosts/deb/sshd.log"),
                         execLogs.appendingPathComponent("stdin/rpm.log").path, execLogs.appendingPathComponent("id/rpm.log").path] {
            #expect(files.contains(expected), "\(expected) was not scanned")
        }
        #expect(files.contains { $0.hasSuffix("/journal.sqlite") } && files.contains { $0.hasSuffix("/logs/deb.log") }
                && files.contains { $0.hasSuffix("/backups/deb/st2-key-list.json") }, "\(files)")
        #expect(Self.leaks(of: secrets, in: files).isEmpty, "\(Self.leaks(of: secrets, in: files))")
        #expect(Self.leaks(of: secrets, in: Self.regularFiles(under: box.inputs)).count == 4, "the scan finds what is there") // inventory x2 (both passwords), passphrase
        let (tmp, home) = box.leftovers()
        #expect(tmp.isEmpty, "left in TMPDIR: \(tmp)")
        #expect(home.allSatisfy { ".local/state/flotilla/hosts".hasPrefix($0) || $0.hasPrefix(".local/state/flotilla/hosts/") }, "left in HOME: \(home)")
    }

    /// A runbook that names a secret variable is refused before anything runs: the value
    /// would be in the host's process list, the journal, the logs and the reports.
    @Test func runbooksCannotPutSecretsIntoCommands() throws {
        let lab = try TestLab(spec: "hosts: [{name: h1, os: ubuntu20.04, packages: {st2: 3.8.1-1}}]\n")
        let box = try Sandbox(lab)
        let secrets = Secrets()
        let inventory = box.inputs.appendingPathComponent("inventory.ini")
        try box.labInventory { $0.contains(" ansible_host=") ? $0 + " ansible_become_password=\(secrets.become) st2_api_token=\(secrets.login)" : $0 }
            .write(to: inventory, atomically: true, encoding: .utf8)
        func commands() throws -> Int {
            FileManager.default.fileExists(atPath: lab.path("hosts/h1/commands.log")) ? try lab.commandLog("h1").count : 0
        }
        let before = try commands()
        for variable in ["ansible_become_password", "st2_api_token"] {
            let book = box.inputs.appendingPathComponent("book.yaml")
            try "name: leak\nsteps:\n  - run: st2 login -p {{ \(variable) }}\n    name: login\n".write(to: book, atomically: true, encoding: .utf8)
            let refused = try box.flotilla(["run", "-i", inventory.path, book.path, "--state-dir", lab.dir.appendingPathComponent("state").path])
            #expect(refused.status == 65 && refused.stderr.contains("book.yaml:3") && refused.stderr.contains("{{ \(variable) }}, a secret"), "\(refused.stderr)")
            #expect(!secrets.found(in: refused.stdout + refused.stderr))
        }
        #expect(try commands() == before)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: lab.dir.appendingPathComponent("state/runs").path))?.isEmpty ?? true)
    }

    // MARK: - Hostile inventory values

    /// Values with `;`, `$(...)`, backticks, both quotes, a backslash and newlines reach the
    /// host as one inert word through two levels of quoting (the step's `{{ var }}`, then
    /// `sudo ... sh -c '...'`), and so does a hostile `ansible_become_user`.
    /// (RolloutTests.runbookQuotesVariablesAndRunsClusterStepsOnce covers one level, without sudo.)
    @Test func hostileValuesStayOneWordThroughSudo() throws {
        // Root login: the inventory below logs in as root, and the checks read root's files.
        let lab = try TestLab(spec: "defaults: {os: ubuntu20.04, packages: {st2: 3.8.1-1}}\nhosts: [{name: h1}, {name: h2}]\n", login: "root")
        let box = try Sandbox(lab)
        let hostile = "x; touch /run/pwned1 $(touch /run/pwned2) `touch /run/pwned3` 'q' \"dq\" \\ \ntouch /run/pwned4\n'; touch /run/pwned5 #\n"
        func yaml(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        var hosts = ""
        for (name, (address, port)) in try box.addresses().sorted(by: { $0.key < $1.key }) {
            hosts += "    \(name): {ansible_host: \(address), ansible_port: \(port), note: \(yaml(hostile))}\n"
        }
        let inventory = box.inputs.appendingPathComponent("inventory.yaml")
        try """
            all:
              vars:
                ansible_user: root
                ansible_ssh_private_key_file: \(lab.path("id_ed25519"))
                ansible_ssh_common_args: \(yaml("-o UserKnownHostsFile=\(lab.path("known_hosts"))"))
                ansible_become: true
                ansible_become_password: \(Secrets().become)
                ansible_become_user: \(yaml("root; touch /run/pwned-user"))
              hosts:
            \(hosts)
            """.write(to: inventory, atomically: true, encoding: .utf8)
        let book = box.inputs.appendingPathComponent("book.yaml")
        try """
            name: hostile
            steps:
              - name: write the note
                run: printf '%s' {{ note }} > /run/note
              - name: write the name
                run: printf '%s' {{ inventory_hostname }} > /run/name && printf '%s' {{ note }} > /run/note-plain
                become: false
            """.write(to: book, atomically: true, encoding: .utf8)
        // The hosts' real sudo runs only as users that exist: the hostile name is one, as
        // root with root's home in the host (a passwd line takes any name), so the steps run
        // when it arrives as one word.
        for host in ["h1", "h2"] {
            let account = try lab.ssh(host, "printf '%s\\n' \"root; touch /run/pwned-user:x:0:0::$HOME:/bin/sh\" >> /etc/passwd")
            #expect(account.status == 0, "\(account.stderr)")
        }
        let result = try box.flotilla(["run", "-i", inventory.path, book.path, "--json", "--state-dir", lab.dir.appendingPathComponent("state").path])
        #expect(result.status == 0, "\(result.stderr)")
        for host in ["h1", "h2"] {
            #expect(try lab.ssh(host, "cat /run/note").stdout == hostile, "\(host)")
            #expect(try lab.ssh(host, "cat /run/note-plain").stdout == hostile, "\(host)")
            #expect(try lab.ssh(host, "cat /run/name").stdout == host)
            let pwned = try lab.ssh(host, "ls /run | grep pwned; true").stdout
            #expect(pwned.isEmpty, "\(host): \(pwned)")
            // The first step did go through sudo, with the hostile user quoted.
            let commands = try lab.commandLog(host).compactMap { ($0["argv"] as? [String])?.first }
            #expect(commands.contains { $0.hasPrefix("sudo -S -p '' -u 'root; touch /run/pwned-user' -- sh -c ") }, "\(commands)")
        }
    }

    // MARK: - Control socket

    /// Another user can neither reach the socket (mode 0600) nor, if the socket is opened up
    /// to everyone, control the run: the peer's uid is checked on every connection.
    @Test(.enabled(if: canSwitchUsers, "needs root, \(setpriv) and \(python) to act as another user"))
    func controlSocketAnswersOnlyItsOwner() throws {
        let lab = try TestLab(spec: TestLab.slowStopSpec(["c1", "c2", "c3", "c4"], delay: "1500ms"))
        let box = try Sandbox(lab)
        chmod(lab.dir.path, 0o755) // others may pass through to the state dir (and no further)
        let state = lab.dir.appendingPathComponent("state")
        let socket = state.appendingPathComponent("ctl.sock")
        let controller = try Background(box.argv(["upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--max-parallel", "1",
                                                  "--state-dir", state.path]), log: lab.dir.appendingPathComponent("controller.log"))
        // One line to the socket, one line back (or why it could not connect), as `uid`.
        func ask(_ command: String, as uid: uid_t?) throws -> Run {
            let client = """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(sys.argv[1])
                except OSError as e:
                    print("connect: " + e.strerror); sys.exit(3)
                try:
                    s.sendall(sys.argv[2].encode() + b"\\n")
                except OSError:
                    pass  # a refusal may come (and the socket close) before we speak
                print(s.recv(4096).decode().strip())
                """
            let python = [Self.python, "-I", "-S", "-c", client, socket.path, command]
            return try run(uid.map { [Self.setpriv, "--reuid=\($0)", "--regid=\($0)", "--clear-groups", "--"] + python } ?? python)
        }
        #expect(try lab.waitFor(seconds: 30) { FileManager.default.fileExists(atPath: socket.path) })
        #expect(Self.mode(socket.path) == 0o600 && Self.mode(state.path) == 0o700)
        // The client works: the owner is answered.
        let owner = try ask("continue", as: nil)
        #expect(owner.stdout == "ok\n", "\(owner.stdout)\(owner.stderr)")
        // With the state dir searchable by all (so only the socket's own mode stands in the
        // way), nobody cannot connect...
        chmod(state.path, 0o711)
        defer { chmod(state.path, 0o700) }
        let refused = try ask("abort", as: 65534)
        #expect(refused.status == 3 && refused.stdout == "connect: Permission denied\n", "\(refused.stdout)\(refused.stderr)")
        let ctl = try run([Self.setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", Self.flotilla, "ctl", "abort", "--state-dir", state.path])
        #expect(ctl.status == 64 && ctl.stderr.contains("ctl.sock: Permission denied (only the controller's owner may control it)"), "\(ctl.stderr)")
        // ...and with the socket opened to everyone, the controller refuses the peer's uid.
        chmod(socket.path, 0o666)
        let stranger = try ask("abort", as: 65534)
        chmod(socket.path, 0o600)
        #expect(stranger.stdout == "error: only the controller's owner may control this run\n", "\(stranger.stdout)\(stranger.stderr)")
        // Not aborted: the run went on to succeed, and only the owner's command was taken.
        let exitCode = controller.exitCode
        let output = controller.output
        #expect(exitCode == 0, "exit \(exitCode): \(output.suffix(2000))")
        #expect(output.contains("control: continue") && !output.contains("control: abort"), "\(output.suffix(2000))")
    }

    // MARK: - Files

    /// Reports, exec logs and everything in the state dir and HOME are owner-only even
    /// under umask 000; an existing world-readable report is replaced, not rewritten (a
    /// reader holding it open never sees the new run); a symbolic link another user planted
    /// at a report path in a shared directory is not followed; nothing lands in TMPDIR or
    /// outside the paths given; and (under strace, where present) every file outside the
    /// run's own 0700 directory is created 0600 and every directory 0700 at once.
    @Test func filesAreOwnerOnlyFromTheFirstInstant() throws {
        let lab = try TestLab(spec: """
            defaults: {os: ubuntu20.04, packages: {st2: 3.7.1-1}, available: [3.7.1-1, 3.8.1-1], kv: 2, audit_logs: 1}
            hosts: [{name: f1}, {name: f2}]
            """)
        let box = try Sandbox(lab)
        let fm = FileManager.default
        let state = lab.dir.appendingPathComponent("state")
        let out = lab.dir.appendingPathComponent("out")
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        chmod(out.path, 0o755)
        let report = out.appendingPathComponent("run.json"), junit = out.appendingPathComponent("run.xml")
        try "old report\n".write(to: report, atomically: false, encoding: .utf8)
        chmod(report.path, 0o644)
        let oldReader = try #require(FileHandle(forReadingAtPath: report.path))
        defer { try? oldReader.close() }
        // A shared, sticky directory like /tmp, where another user planted a link at the
        // HTML report's path, pointing at a file of ours.
        let shared = lab.dir.appendingPathComponent("shared")
        try fm.createDirectory(at: shared, withIntermediateDirectories: true)
        chmod(shared.path, 0o1777)
        let victim = lab.dir.appendingPathComponent("victim")
        try "precious\n".write(to: victim, atomically: false, encoding: .utf8)
        chmod(victim.path, 0o600)
        let planted = shared.appendingPathComponent("run.html")
        #expect(symlink(victim.path, planted.path) == 0)
        #expect(lchown(planted.path, 65534, 65534) == 0) // the lab runs as root

        // strace, where it works here, records every file and directory creation.
        let traces = lab.dir.appendingPathComponent("traces")
        try fm.createDirectory(at: traces, withIntermediateDirectories: true)
        let traced = fm.isExecutableFile(atPath: Self.strace) && ((try? run([Self.strace, "-f", "-o", "/dev/null", "/bin/true"]))?.status == 0)
        var cwds: [String] = [] // per command, traced into traces/INDEX.TID
        func flotilla(_ arguments: [String], cwd: URL? = nil) throws -> Run {
            cwds.append((cwd ?? box.work).path)
            return try box.flotilla(arguments, cwd: cwd, trace: traced ? traces.appendingPathComponent("\(cwds.count - 1)") : nil)
        }

        let upgrade = try flotilla(["upgrade", "-i", lab.path("inventory.ini"), "--to", "3.8.1", "--state-dir", state.path, "--report", report.path,
                                    "--junit", junit.path, "--html", planted.path])
        // That report is refused, saying why and how to render it again; the victim is
        // untouched; the exit code is still the run's (it succeeded).
        #expect(upgrade.status == 0 && upgrade.stderr.contains("symbolic link owned by uid 65534"), "\(upgrade.stderr)")
        #expect(upgrade.stderr.contains("--format html --state-dir \(state.path) > FILE"), "\(upgrade.stderr)")
        #expect(try String(contentsOf: victim, encoding: .utf8) == "precious\n" && Self.mode(victim.path) == 0o600)
        #expect(try fm.destinationOfSymbolicLink(atPath: planted.path) == victim.path)
        for host in ["f1", "f2"] { #expect(try lab.packages(host)["st2"] == "3.8.1-1") }
        // The report replaced the old file: owner-only, and whoever had the old one open
        // still reads the old text.
        let written = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        #expect(written["outcome"] as? String == "succeeded")
        #expect(String(decoding: oldReader.readDataToEndOfFile(), as: UTF8.self) == "old report\n")
        for file in [report, junit] {
            #expect(Self.mode(file.path) == 0o600, "\(file.lastPathComponent): \(String(Self.mode(file.path), radix: 8))")
            var info = stat()
            #expect(lstat(file.path, &info) == 0 && info.st_uid == geteuid() && info.st_mode & S_IFMT == S_IFREG)
        }
        // A fleet report, and exec logs in a new nested directory and in the default place.
        let fleet = try flotilla(["report", "-i", lab.path("inventory.ini"), "--format", "html", "--output", out.appendingPathComponent("fleet.html").path])
        #expect(fleet.status == 0, "\(fleet.stderr)")
        let logs = out.appendingPathComponent("deep/er/logs")
        let exec = try flotilla(["exec", "-i", lab.path("inventory.ini"), "--log-dir", logs.path, "--", "echo hi"])
        #expect(exec.status == 0, "\(exec.stderr)")
        let defaultLogs = try flotilla(["exec", "-i", lab.path("inventory.ini"), "--", "echo hi"], cwd: box.work)
        #expect(defaultLogs.status == 0, "\(defaultLogs.stderr)")

        #expect(Self.mode(out.appendingPathComponent("fleet.html").path) == 0o600)
        for dir in [out.appendingPathComponent("deep"), out.appendingPathComponent("deep/er"), logs] {
            #expect(Self.mode(dir.path) == 0o700, "\(dir.path)")
        }
        // Everything flotilla made in the state dir, the log dirs and HOME: 0700 and 0600.
        let made = [state, out.appendingPathComponent("deep"), box.work.appendingPathComponent(".flotilla"), box.home.appendingPathComponent(".local")]
        var checked = 0
        for root in made {
            #expect(Self.mode(root.path) == 0o700, "\(root.path)")
            for path in (fm.subpaths(atPath: root.path) ?? []).map({ root.path + "/" + $0 }) {
                var info = stat()
                guard lstat(path, &info) == 0 else { continue }
                let expected = info.st_mode & S_IFMT == S_IFDIR ? 0o700 : 0o600
                #expect(Self.mode(path) == expected, "\(path): \(String(Self.mode(path), radix: 8))")
                checked += 1
            }
        }
        #expect(checked >= 20)
        #expect(fm.subpaths(atPath: box.work.appendingPathComponent(".flotilla/exec").path)?.contains { $0.hasSuffix("/f1.log") } == true)
        let (tmp, _) = box.leftovers()
        #expect(tmp.isEmpty, "left in TMPDIR: \(tmp)")

        guard traced else { return } // strace unavailable: the final modes above are what can be shown
        // Every creation: inside the test's directory; outside the run directories (which the
        // journal creates 0700 at once), files created 0600 and directories 0700.
        let runs = state.appendingPathComponent("runs").path + "/"
        var creations = 0
        var problems: [String] = []
        for trace in try fm.contentsOfDirectory(atPath: traces.path) {
            let cwd = try #require(Int(trace.prefix { $0 != "." }).map { cwds[$0] })
            for line in try String(contentsOf: traces.appendingPathComponent(trace), encoding: .utf8).split(separator: "\n") {
                guard let created = Self.creation(String(line)) else { continue }
                creations += 1
                let path = created.path.hasPrefix("/") ? created.path : cwd + "/" + created.path
                guard URL(fileURLWithPath: path).standardizedFileURL.path.hasPrefix(lab.dir.path + "/") else {
                    problems.append("outside the test's directory: \(line)")
                    continue
                }
                if path.hasPrefix(runs) { continue }
                if created.path.hasPrefix("<") { problems.append("created relative to a descriptor: \(line)") }
                if created.mode == nil { continue }
                if created.mode != (created.directory ? 0o700 : 0o600) { problems.append("created open to others: \(line)") }
            }
        }
        #expect(creations >= 20, "\(creations) creations traced")
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    /// A successful creation in one strace line: the path, its mode where the call gives
    /// one, and whether it is a directory.
    static func creation(_ line: String) -> (path: String, mode: Int?, directory: Bool)? {
        guard let open = line.firstIndex(of: "("), let equals = line.range(of: ") = ", options: .backwards),
              let result = Int(line[equals.upperBound...].prefix { $0 == "-" || $0.isNumber }), result >= 0 else { return nil }
        let call = String(line[..<open])
        let arguments = String(line[line.index(after: open)..<equals.lowerBound])
        var strings: [String] = []
        var rest = Substring(arguments)
        while let quote = rest.firstIndex(of: "\"") {
            var end = rest.index(after: quote)
            while end < rest.endIndex && rest[end] != "\"" { end = rest[end] == "\\" ? rest.index(end, offsetBy: 2) : rest.index(after: end) }
            guard end < rest.endIndex else { break }
            strings.append(String(rest[rest.index(after: quote)..<end]))
            rest = rest[rest.index(after: end)...]
        }
        let mode = arguments.split(separator: ",").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces), radix: 8) }
        switch call {
        case "openat", "open":
            guard arguments.contains("O_CREAT"), let path = strings.first else { return nil }
            if !arguments.hasPrefix("AT_FDCWD") && call == "openat" { return ("<relative to a descriptor> " + path, nil, false) }
            return (path, mode, false)
        case "creat": return strings.first.map { ($0, mode, false) }
        case "mkdir", "mkdirat": return strings.first.map { ($0, mode, true) }
        case "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat": return strings.last.map { ($0, nil, false) }
        case "bind": return arguments.range(of: "sun_path=\"").map { _ in (strings.last ?? "", nil, false) }
        default: return nil
        }
    }
}
