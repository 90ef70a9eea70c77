import CLibSSH2
import Foundation
import Testing
@testable import FlotillaCore
@testable import SSH

/// A seeded, property-based fuzzer (no external tools) for every parser of untrusted
/// input: inventories (INI and YAML), host patterns, runbooks, the rolling flags, the
/// migration catalog, SSH client configs, known_hosts files, and what the facts probe
/// reads back from hosts.
///
/// Each parser starts from valid seeds and is fed mutations of them (bit flips, cuts,
/// repeated lines, special characters, invalid UTF-8, extreme numbers) and now and then
/// a monster (10,000-deep nesting, a 1 MB line, 20,000 lines, huge ranges, alias bombs).
/// The property: every input parses or is refused with the parser's own error type and
/// a message naming where — never a crash, never a hang.
///
/// Budget: `FLOTILLA_FUZZ_SECONDS` of wall time per parser (default 1; the parsers run
/// one after the other), at most `FLOTILLA_FUZZ_MAX_INPUTS` inputs (default 20,000 a
/// second of budget). The seed is random unless `FLOTILLA_FUZZ_SEED` (hex) is given;
/// every parser prints it with the number of inputs tried (`fuzz-summary:` lines).
///
/// An input that takes more than 2 s of CPU time (CPU, not wall time, so a busy CI
/// machine does not fail it) fails the test and is saved; so is one refused with the
/// wrong error or without saying where. A crash kills the test process: the input being
/// run is always in `$TMPDIR/flotilla-fuzz/<parser>.current`; a real hang (one input
/// running `FLOTILLA_FUZZ_HANG_SECONDS`, default 60, of wall time) is reported from a
/// watchdog thread, which then ends the process. `FLOTILLA_FUZZ_REPLAY=<parser>:<file>`
/// runs one saved input again; the slowest input of the last run is kept in
/// `$TMPDIR/flotilla-fuzz/<parser>.slowest`.
@Suite(.serialized) struct FuzzTests {
    // MARK: Inventories

    @Test func iniInventory() async throws { try await Fuzz.offPool(Self.iniInventoryInputs) }

    static func iniInventoryInputs() throws {
        let seeds = Fuzz.repoFiles { $0.hasSuffix(".ini") || $0.hasSuffix("/hosts") } + [
            "[web]\nweb-[01:03] ansible_host=10.0.0.1 ansible_port=2222\n[db]\ndb1 x='a b' y=[1, {'k': (2,)}]\n[prod:children]\nweb\ndb\n[prod:vars]\nansible_user=deploy\n",
            "# comment\n; other\nloose1\n[a:children]\nb\n[b]\nh[a:c]-[1:2]\n[b:vars]\nansible_group_priority=3\nansible_ssh_common_args='-o ProxyJump=u@j:22'\n",
            "[v6]\n[::1]:2222\n10.0.0.[1:3]\nhost:22 ansible_become=True ansible_password=x\n",
        ]
        try Fuzz.inventory("ini-inventory", seeds: seeds, fileName: "hosts.ini")
    }

    @Test func yamlInventory() async throws { try await Fuzz.offPool(Self.yamlInventoryInputs) }

    static func yamlInventoryInputs() throws {
        let seeds = Fuzz.repoFiles { ($0.hasSuffix(".yml") || $0.hasSuffix(".yaml")) && $0.contains("inventory-corpus") } + [
            "all:\n  vars:\n    ansible_user: root\n  children:\n    web:\n      hosts:\n        web-[01:03]:\n          ansible_port: 2222\n    db:\n      hosts:\n        db1: {x: 1, y: [a, b]}\n",
            "all:\n  hosts:\n    h1:\n      base: &base {a: 1, b: !!str 2}\n      other:\n        <<: *base\n        c: 0777\n  children:\n    g: ~\n",
            "{\"all\": {\"hosts\": {\"h1\": {\"v\": 1e3}}, \"children\": {\"x\": {\"hosts\": [\"bad\"]}}}}\n",
        ]
        try Fuzz.inventory("yaml-inventory", seeds: seeds, fileName: "hosts.yml")
    }

    @Test func hostPattern() async throws { try await Fuzz.offPool(Self.hostPatternInputs) }

    static func hostPatternInputs() throws {
        let inventory = try Inventory.load(sources: [Fuzz.root.appendingPathComponent("inventories/multi-dc.ini").path])
        let seeds = ["st2", "dc1:&st2", "st2-*:!st2-03", "~dc[12]_.*", "st2[0:2]", "st2[-1]", "dc1,dc2", "all:!dc3", "st2web[1:]",
                     "[::1]:22", "&st2", "!dc1", "*", "?", "dc1_st2_a[0]"]
        try Fuzz.run("host-pattern", seeds: seeds, dictionary: ["&", "!", "~", "*", "?", "[0:99999999999999999999]", "[-9223372036854775808]", ",", ":"]) { bytes in
            // `@file` reads a file: keep those to names that cannot exist.
            let pattern = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "@", with: "@/nonexistent/")
            do {
                let hosts = try inventory.select(pattern)
                return hosts.isEmpty ? "selected no host without an error" : nil
            } catch let error as InventoryError where error.location?.file.hasPrefix("/nonexistent/") == true {
                return nil  // `@file` naming a file that is not there
            } catch {
                return Fuzz.located(error, file: "--limit")
            }
        }
    }

    // MARK: Runbooks, flags, catalog

    @Test func runbook() async throws { try await Fuzz.offPool(Self.runbookInputs) }

    static func runbookInputs() throws {
        let host = Inventory.Host(name: "st2-01", groups: ["st2"], variables: [
            "st2_cluster": InventoryVariable(.string("c1"), at: SourceLocation(file: "x")),
            "port": InventoryVariable(.int(22), at: SourceLocation(file: "x")),
        ], location: SourceLocation(file: "x"))
        let seeds = [
            "name: rotate\nsteps:\n  - name: rotate logs\n    run: logrotate -f /etc/logrotate.conf\n    timeout: 120s\n    become: true\n  - run: echo {{ st2_cluster }} {{port}}\n    once_per: st2_cluster\n",
            "description: x\nsteps:\n  - run: 'true'\n    timeout: 500ms\n  - {name: b, run: \"sleep 1\", become: false, timeout: 2m}\n",
            "steps: [{run: a}, {run: b, timeout: 1h}]\n",
        ]
        try Fuzz.run("runbook", seeds: seeds, dictionary: Fuzz.yamlTokens + ["{{", "}}", "{{ x }}", "{%", "timeout: ", "1e308h", "once_per: ", "become: "]) { bytes in
            do {
                let book = try Runbook.parse(String(decoding: bytes, as: UTF8.self), file: "runbook.yaml")
                _ = try book.steps(for: host, become: false)
                return book.steps.isEmpty ? "a runbook without steps was accepted" : nil
            } catch {
                return Fuzz.located(error, file: "runbook.yaml")
            }
        }
    }

    @Test func batchSpec() async throws { try await Fuzz.offPool(Self.batchSpecInputs) }

    static func batchSpecInputs() throws {
        let seeds = ["5", "25%", "1,5,25%", "1, 2 ,3", "100%", "0.5%", "9223372036854775807", "1,1,1,1,1,1,1,1"]
        try Fuzz.run("batch-spec", seeds: seeds, dictionary: [",", "%", "-", ".", "e", "nan", "inf", "0x10", "+"]) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            let spec: BatchSpec
            do {
                spec = try BatchSpec(parsing: text)
            } catch let error as BatchSpec.ParseError {
                return error.message.isEmpty ? "an empty message" : nil
            } catch {
                return "threw \(type(of: error)), not BatchSpec.ParseError: \(error)"
            }
            for count in [0, 1, 7, 40] {
                for canary in [nil, 1, 3, Int.max] {
                    let batches = BatchSpec.batches(count: count, spec: spec, canary: canary, targeted: count)
                    guard batches.flatMap({ $0 }) == Array(0..<count), !batches.contains(where: \.isEmpty) else {
                        return "batches of \(count) hosts (canary \(canary.map(String.init) ?? "none")) do not cover the hosts once, in order"
                    }
                }
            }
            return nil
        }
    }

    @Test func rolloutFlags() async throws { try await Fuzz.offPool(Self.rolloutFlagsInputs) }

    static func rolloutFlagsInputs() throws {
        let seeds = ["3", "10%", "zone=1", "90", "30s", "500ms", "5m", "1h", "01:00-05:00", "23:30-01:15",
                     "2026-11-22T01:00:00Z/2026-11-22T05:00:00Z", "2026-11-22T01:00:00Z-2026-11-22T05:00:00Z", "drain", "yes"]
        let now = Date(timeIntervalSince1970: 1_790_000_000)
        try Fuzz.run("rollout-flags", seeds: seeds, dictionary: [":", "-", "/", "%", "=", "T", "Z", "+01:00", "1e308", "nan", "inf", "99999999999999999999", "25:00", "-1"]) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            let checks: [() throws -> Void] = [
                { _ = try RolloutFlags.threshold(text, flag: "--max-fail") },
                { _ = try RolloutFlags.percent(text, flag: "--max-fail-batch") },
                { _ = try RolloutFlags.maxPer(text) },
                { _ = try RolloutFlags.duration(text, flag: "--pause") },
                { _ = try RolloutFlags.window(text, now: now, timeZone: TimeZone(identifier: "UTC")!) },
                { _ = try RolloutFlags.window(text, now: now, timeZone: TimeZone(identifier: "Europe/Berlin")!) },
                { _ = try RunOptions(flags: ["max-fail": text, "max-parallel": text, "unreachable-counts": text, "on-halt": text]) },
                { _ = try RunOptions(flags: ["pause": text, "healthy-for": text, "step-timeout": text, "max-per": text]) },
            ]
            for check in checks {
                do {
                    try check()
                } catch let error as RolloutFlags.FlagError {
                    if error.message.isEmpty { return "an empty message" }
                } catch {
                    return "threw \(type(of: error)), not RolloutFlags.FlagError: \(error)"
                }
            }
            if let seconds = parseDuration(text), !(seconds.isFinite && seconds >= 0 && seconds * 1000 < Double(Int.max)) {
                return "parseDuration gave \(seconds) s, which no timeout can hold"
            }
            return nil
        }
    }

    @Test func migrationCatalog() async throws { try await Fuzz.offPool(Self.migrationCatalogInputs) }

    static func migrationCatalogInputs() throws {
        let bundled = try String(contentsOf: Fuzz.root.appendingPathComponent("Sources/FlotillaCore/Resources/stackstorm-migrations.yaml"), encoding: .utf8)
        let seeds = [
            bundled,
            "versions:\n  \"3.5\":\n    scripts: [/opt/a.py --yes]\n    scope: database\n    shipped_until: \"3.7\"\n  \"3.6\": {optional: true, flag: x, removes: [st2mistral], manual: [m]}\n"
                + "packages: [st2, st2web]\nos_ceilings: {el7: \"3.4\", ubuntu18.04: 3.8}\nmistral:\n  commands: [a]\n  known_failure: {match: m, cause: c, recovery: [r]}\nfacts: {a: b}\n",
        ]
        try Fuzz.run("catalog", seeds: seeds, dictionary: Fuzz.yamlTokens + ["versions:", "scope: ", "3.x", "\"1.\"", "shipped_until: ", "99999999999999999999"]) { bytes in
            do {
                let catalog = try MigrationCatalog(yaml: String(decoding: bytes, as: UTF8.self), file: "catalog.yaml")
                let low = StackStormVersion("0")!, high = StackStormVersion("99")!
                _ = catalog.entries(crossingFrom: low, to: high)
                _ = catalog.scriptsShipped(by: StackStormVersion("3.5.0")!)
                return nil
            } catch let error as MigrationCatalog.LoadError {
                return error.message.isEmpty || error.file != "catalog.yaml" ? "an unclear error: \(error)" : nil
            } catch {
                return "threw \(type(of: error)), not MigrationCatalog.LoadError: \(error)"
            }
        }
    }

    // MARK: SSH files

    @Test func sshConfig() async throws { try await Fuzz.offPool(Self.sshConfigInputs) }

    static func sshConfigInputs() throws {
        let directory = try Fuzz.scratch("ssh-config")
        defer { try? FileManager.default.removeItem(at: directory) }
        // Files the fuzzed config may Include: one includes itself, one is binary.
        try Data("Include loop\nHost loop\n  Port 2\n".utf8).write(to: directory.appendingPathComponent("loop"))
        try Data([0x48, 0x6f, 0x73, 0x74, 0x00, 0xff, 0x0a]).write(to: directory.appendingPathComponent("binary"))
        try Data("Host *\n  User inc\n".utf8).write(to: directory.appendingPathComponent("ok"))
        let seeds = [
            "Host st2-*\n  HostName %h.example.com\n  User deploy\n  Port 2222\n  IdentityFile ~/.ssh/id_ed25519\n  ProxyJump ops@bastion:2200\nHost *\n  User root\n",
            "Include ok\nMatch host db*,web\n  Port 2200\nMatch exec true\n  User never\nHost=x\n  Port = 22\n  ProxyJump none\n",
            "# comment\nHost \"quoted name\" !neg\n\tUser \"a b\"\n",
        ]
        let path = directory.appendingPathComponent("config").path
        try Fuzz.run("ssh-config", seeds: seeds, dictionary: ["Include loop\n", "Include *\n", "Include binary\n", "Include ~/x\n", "Host ", "Match ",
                                                             "Port 99999\n", "Port 0\n", "HostName %h%%\n", "ProxyJump a,b:x\n", "=", "\"", "!"]) { bytes in
            try? Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let config = try SSHConfig.load(path: path, home: directory.path)
                for host in ["st2-01", "x", "db1", ""] { _ = config.options(for: host) }
                return nil
            } catch {
                return Fuzz.located(error, file: directory.path)
            }
        }
    }

    @Test func knownHosts() async throws { try await Fuzz.offPool(Self.knownHostsInputs) }

    static func knownHostsInputs() throws {
        try LibSSH2.initialize()
        guard let session = flotilla_libssh2_session_init() else { throw FuzzError("libssh2 could not create a session") }
        defer { libssh2_session_free(session) }
        let directory = try Fuzz.scratch("known-hosts")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("known_hosts").path
        let ed25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        let seeds = [
            "st2-01 ssh-ed25519 \(ed25519)\n[st2-02]:2222 ssh-ed25519 \(ed25519) comment\n",
            "|1|JfKTdBh7rNbXkVAQCRp4OQoPfmI=|USECr3SWf1JUPsms5AqfD5QfxkM= ssh-ed25519 \(ed25519)\n# comment\n@cert-authority *.example.com ssh-ed25519 \(ed25519)\n",
            "st2-01,10.0.0.1 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=\n",
            "st2-01 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC\n",
        ]
        try Fuzz.run("known-hosts", seeds: seeds, dictionary: ["|1|", "|", "[", "]:", "@revoked ", "@cert-authority ", "ssh-ed25519 ", "ssh-rsa ", "=", ",", "!", "*"]) { bytes in
            try? Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let known = try KnownHosts(file: path, address: "st2-01", port: 22, session: session)
                let key = [CChar](repeating: 66, count: 51)
                for type in HostKeyType.all { _ = known.check(address: "st2-01", port: 22, key: key, length: key.count, type: type) }
                _ = try KnownHosts(file: path, address: "st2-02", port: 2222, session: session).preferredHostKeyAlgorithms(address: "st2-02", port: 2222)
                return nil
            } catch let error as SSHError {
                return error.message.isEmpty ? "an empty message" : nil
            } catch {
                return "threw \(type(of: error)), not SSHError: \(error)"
            }
        }
    }

    // MARK: What hosts answer

    @Test func factsProbe() async throws { try await Fuzz.offPool(Self.factsProbeInputs) }

    static func factsProbeInputs() throws {
        let planner = UpgradePlanner(catalog: try MigrationCatalog.bundled(), options: .init(target: StackStormVersion("3.8.1")!))
        let seeds = [Fuzz.probeOutput, "motd\n" + Fuzz.probeOutput.replacingOccurrences(of: "@@flotilla-facts end\n", with: ""),
                     Fuzz.probeOutput.replacingOccurrences(of: "apt", with: "yum").replacingOccurrences(of: "st2 | 3.8.1-1", with: "st2.x86_64  3.8.1-1.el8  st2")]
        try Fuzz.run("facts-probe", seeds: seeds, dictionary: ["@@flotilla-facts section ", "@@flotilla-facts status ", "\t", "|", " PID: ", "ii ", "-1", "99999999999999999999"]) { bytes in
            let facts = FactsProbe.parse(output: String(decoding: bytes, as: UTF8.self), exitStatus: 0)
            _ = (facts.st2Version, facts.expectedComponents, facts.problems)
            _ = planner.plan(facts)
            return nil
        }
    }

    @Test func osRelease() async throws { try await Fuzz.offPool(Self.osReleaseInputs) }

    static func osReleaseInputs() throws {
        let seeds = ["NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"20.04\"\nPRETTY_NAME=\"Ubuntu 20.04.6 LTS\"\n",
                     "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID='8.9'\n# x\n"]
        try Fuzz.run("os-release", seeds: seeds, dictionary: ["=", "\"", "'", "\\\"", "ID=", "ID_LIKE=", "VERSION_ID="]) { bytes in
            if let info = OSInfo.parse(osRelease: String(decoding: bytes, as: UTF8.self)) {
                _ = info.key
                if info.id.isEmpty { return "an OS without an ID" }
            }
            return nil
        }
    }

    @Test func st2ctlStatus() async throws { try await Fuzz.offPool(Self.st2ctlStatusInputs) }

    static func st2ctlStatusInputs() throws {
        let seeds = ["##### st2 components status #####\nst2actionrunner PID: 1234\nst2api PID: 99\nst2sensorcontainer is not running.\nmistral-server PID: 7\n"]
        try Fuzz.run("st2ctl-status", seeds: seeds, dictionary: [" PID: ", " is not running.", "#####", "status", "-1", "99999999999999999999"]) { bytes in
            if let components = ComponentState.parse(st2ctlStatus: String(decoding: bytes, as: UTF8.self)) {
                _ = ComponentState.expected(components, installed: ["st2": "3.8.1-1"])
            }
            return nil
        }
    }

    @Test func st2Version() async throws { try await Fuzz.offPool(Self.st2VersionInputs) }

    static func st2VersionInputs() throws {
        let seeds = ["3.8.1-1", "1:3.8.1-1.el8", "3.8", "3.8.1dev", "10.0.0-2ubuntu1", "3.8.1-10", "0"]
        let others = ["3.8.1", "3.8.1-2", "3.10", "1:3.8.1-1.el8"].compactMap(StackStormVersion.init)
        try Fuzz.run("st2-version", seeds: seeds, dictionary: [".", "-", ":", "99999999999999999999", "٣", "½", "~"]) { bytes in
            guard let version = StackStormVersion(String(decoding: bytes, as: UTF8.self)) else { return nil }
            _ = (version.releaseString, version.series, version.description, version.hashValue)
            let sorted = (others + [version]).sorted()
            // Only antisymmetry: `3.8.1-1.el08` and `3.8.1-1.el8` are neither equal nor
            // ordered (revisions compare numerically, equality is textual); sorting copes.
            for other in others where version < other && other < version {
                return "\(version) and \(other) are each below the other"
            }
            return sorted.count == others.count + 1 ? nil : "sorting lost a version"
        }
    }

    /// INI values go through Python's literal syntax: `[[[[…` must stay a string, not
    /// recurse off the stack.
    @Test func iniValue() async throws { try await Fuzz.offPool(Self.iniValueInputs) }

    static func iniValueInputs() throws {
        let seeds = ["2222", "True", "[1, 'a', {'k': (2,)}]", "'x y'", "u'\\u00e9'", "b'x'", "1_000", "0x1F", "-1.5e3", "{1, 2}", "set()", "None", "'''a\nb'''"]
        try Fuzz.run("ini-value", seeds: seeds, dictionary: ["[", "]", "(", ")", "{", "}", ",", ":", "'", "\"", "\\", "r'", "b'", "\\x", "\\N{", "#"]) { bytes in
            let value = PythonLiteral.value(of: String(decoding: bytes, as: UTF8.self))
            _ = value.json()
            return nil
        }
    }
}

struct FuzzError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The fuzzing engine: budget, seed, mutations, monsters, deadlines and reports.
enum Fuzz {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let environment = ProcessInfo.processInfo.environment
    static let seconds = environment["FLOTILLA_FUZZ_SECONDS"].flatMap(Double.init) ?? 1

    /// Runs a fuzzing loop on a thread of its own: seconds of CPU-bound work must not hold
    /// one of the few threads of the shared task pool, which the test process's SSH and
    /// event-loop tests need to make progress.
    static func offPool(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                do {
                    try body()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.stackSize = 64 << 20 // deeply nested inputs recurse
            thread.start()
        }
    }
    static let maxInputs = environment["FLOTILLA_FUZZ_MAX_INPUTS"].flatMap(Int.init) ?? Int(max(1, seconds) * 20_000)
    static let seed: UInt64 = environment["FLOTILLA_FUZZ_SEED"].flatMap { UInt64($0.hasPrefix("0x") ? String($0.dropFirst(2)) : $0, radix: 16) }
        ?? UInt64.random(in: 0...UInt64.max)
    /// One input may take this much CPU time before the fuzzer calls it a hang.
    static let deadline = 2.0
    static let hangSeconds = environment["FLOTILLA_FUZZ_HANG_SECONDS"].flatMap(Double.init) ?? 60

    static let specials = ["[", "]", ":", "=", "{", "}", "\"", "'", "\\", "#", ";", "\t", "\0", "\u{FFFD}", "\n", "\r\n", "\r", " ", ",", "-", "%", "~", "&", "*", "!", "|", ">", "?", "@", "$", "`"]
    static let yamlTokens = ["- ", ": ", "&a ", "*a", "<<: *a\n", "!!str ", "!!int ", "!!binary ", "!vault |\n", "%YAML 1.1\n", "---\n", "...\n", "? ", "{", "[", "|\n", ">-\n", "  "]
    static let numbers = ["0", "-1", "99999999999999999999", "9223372036854775807", "-9223372036854775808", "1e308", "1e400", "nan", "inf", "-0", "0x7fffffff", "00", "1.5"]
    static let invalidUTF8: [[UInt8]] = [[0xFF], [0xFE, 0xFF], [0xC0, 0x80], [0x80], [0xE2, 0x82], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xEF, 0xBB, 0xBF]]
    static let scalarRanges: [ClosedRange<UInt32>] = [0x20...0x7E, 0x00...0x1F, 0xA0...0x24F, 0x300...0x36F, 0x590...0x6FF, 0x200B...0x200F, 0x2028...0x2029,
                                                      0x3000...0x30FF, 0xFE00...0xFEFF, 0x1F300...0x1F6FF, 0xF0000...0xF00FF]

    /// Files of the repository's sample inventories and inventory corpus.
    static func repoFiles(_ include: (String) -> Bool) -> [String] {
        var found: [String] = []
        for folder in ["inventories", "Tests/Fixtures/inventory-corpus"] {
            let base = root.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { continue }
            for case let url as URL in walker where include(url.path) {
                if let text = try? String(contentsOf: url, encoding: .utf8) { found.append(text) }
            }
        }
        return found.sorted()
    }

    static func scratch(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-fuzz/\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// nil when `error` is an `InventoryError` with a message that names `file`.
    static func located(_ error: any Error, file: String) -> String? {
        guard let error = error as? InventoryError else { return "threw \(type(of: error)), not InventoryError: \(error)" }
        guard !error.message.isEmpty, let location = error.location, location.file.contains(file) || file.contains(location.file) else {
            return "the error does not say where: \(error)"
        }
        return nil
    }

    /// Inventory files through `Inventory.load`, then everything that reads the result.
    static func inventory(_ name: String, seeds: [String], fileName: String) throws {
        let directory = try scratch(name)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(fileName).path
        let dictionary = yamlTokens + ["[a:children]\n", "[a:vars]\n", "[all:vars]\n", "h[0:99999999]", "h[0:9999][0:9999]", "h[a:Z]", "h[01:1]",
                                       "[1:3:0]", "ansible_port=ssh", "ansible_group_priority=x", "ansible_host=", "ansible_ssh_common_args='-o ProxyJump=", "=[[[", "='", "children:", "hosts:", "vars:"]
        try run(name, seeds: seeds, dictionary: dictionary) { bytes in
            try? Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let inventory = try Inventory.load(sources: [path])
                for host in inventory.hosts.prefix(50) {
                    for variable in host.variables.values { _ = variable.value.json() }
                    _ = try? ConnectionSettings.resolve(host, sshConfig: nil, localUser: "fuzz", home: directory.path)
                }
                _ = try? inventory.select("all:!ungrouped")
                return nil
            } catch {
                return located(error, file: path)
            }
        }
    }

    /// Runs `body` on seeds and their mutations until the budget is spent; `body` returns
    /// nil when the input was handled properly, else what went wrong.
    static func run(_ name: String, seeds rawSeeds: [String], dictionary: [String] = [], _ body: ([UInt8]) -> String?) throws {
        let seeds = rawSeeds.map { Array($0.utf8) }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-fuzz")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let current = folder.appendingPathComponent("\(name).current")
        if let replay = environment["FLOTILLA_FUZZ_REPLAY"] {
            let parts = replay.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, parts[0] == name else { return }
            let input = try [UInt8](Data(contentsOf: URL(fileURLWithPath: parts[1])))
            let began = cpuTime()
            let problem = body(input)
            print("fuzz-replay: \(name) \(parts[1]) (\(input.count) bytes): \(problem ?? "handled") in \(String(format: "%.3f", cpuTime() - began)) s of CPU time")
            if let problem { throw FuzzFailure(message: "fuzz \(name): replayed \(parts[1]): \(problem)") }
            return
        }
        var rng = FuzzRandom(seed: seed ^ fnv1a(name))
        let tokens = (specials + dictionary + numbers).map { Array($0.utf8) }
        let clock = ContinuousClock()
        let start = clock.now
        var tried = 0, monsters = 0
        var monsterTime = 0.0
        var slowest: (seconds: Double, index: Int, bytes: Int) = (0, 0, 0)
        var slowestInput: [UInt8] = []
        var failure: String?
        print("fuzz-start: \(name) seed=\(String(seed, radix: 16)) budget=\(seconds)s max=\(maxInputs) current-input=\(current.path)")
        fflush(nil)
        while tried < maxInputs && (tried < seeds.count || (clock.now - start) < .seconds(seconds)) {
            var input: [UInt8]
            if tried < seeds.count {
                input = seeds[tried]
            } else if rng.next(20) == 0, monsterTime < 0.3 * seconds(clock.now - start) {
                // Monsters (1 MB, 10,000 deep...) get at most 30% of the time.
                input = monster(&rng, seeds: seeds, tokens: tokens)
                monsters += 1
            } else {
                input = seeds[rng.next(seeds.count)]
                for _ in 0...rng.next(6) { mutate(&input, &rng, seeds: seeds, tokens: tokens) }
            }
            try? Data(input).write(to: current)
            let began = clock.now, cpuBegan = cpuTime()
            Watchdog.shared.started(name, current.path)
            let problem = body(input)
            Watchdog.shared.finished(name)
            let took = cpuTime() - cpuBegan
            if input.count > 100_000 { monsterTime += seconds(clock.now - began) }
            if took > slowest.seconds {
                slowest = (took, tried, input.count)
                slowestInput = input
            }
            if let problem = problem ?? (took > deadline ? "took \(String(format: "%.2f", took)) s of CPU time (over the \(deadline) s limit)" : nil) {
                let saved = folder.appendingPathComponent("\(name)-\(String(seed, radix: 16))-\(tried).bin")
                try? Data(input).write(to: saved)
                failure = ("fuzz \(name): input #\(tried) (\(input.count) bytes, seed \(String(seed, radix: 16))): \(problem.prefix(2000)). Saved to \(saved.path); rerun with FLOTILLA_FUZZ_REPLAY=\(name):\(saved.path)")
                break
            }
            tried += 1
        }
        let total = seconds(clock.now - start)
        print("fuzz-summary: \(name) inputs=\(tried) monsters=\(monsters) seconds=\(String(format: "%.1f", total)) slowest=\(String(format: "%.3f", slowest.seconds))s-cpu(#\(slowest.index),\(slowest.bytes)B) seed=\(String(seed, radix: 16))")
        fflush(nil)
        try? FileManager.default.removeItem(at: current)
        // Thrown, not recorded: the loop runs on a thread of its own, outside the test's task.
        if let failure { throw FuzzFailure(message: failure) }
        try? Data(slowestInput).write(to: folder.appendingPathComponent("\(name).slowest"))
    }

    /// CPU time of the calling thread (the test body never suspends, so it stays on it).
    static func cpuTime() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func fnv1a(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    // MARK: Mutations

    static func mutate(_ input: inout [UInt8], _ rng: inout FuzzRandom, seeds: [[UInt8]], tokens: [[UInt8]]) {
        let at = rng.next(input.count + 1)
        switch rng.next(14) {
        case 0 where !input.isEmpty:  // flip a bit
            let i = rng.next(input.count)
            input[i] ^= UInt8(1) << UInt8(rng.next(8))
        case 1 where !input.isEmpty:  // any byte
            input[rng.next(input.count)] = UInt8(rng.next(256))
        case 2:  // truncate
            input.removeSubrange(at...)
        case 3 where !input.isEmpty:  // delete a range
            let end = min(input.count, at + 1 + rng.next(32))
            if at < end { input.removeSubrange(at..<end) }
        case 4:  // repeat a line, up to 50 times
            let lines = input.split(separator: 10, omittingEmptySubsequences: false)
            guard let line = lines.randomElement(using: &rng) else { break }
            let copies = Array(repeating: Array(line) + [10], count: 1 + rng.next(50)).flatMap { $0 }
            input.insert(contentsOf: copies, at: lineStart(input, at))
        case 5:  // copy a chunk elsewhere
            guard !input.isEmpty else { break }
            let from = rng.next(input.count)
            let chunk = input[from..<min(input.count, from + 1 + rng.next(64))]
            input.insert(contentsOf: chunk, at: at)
        case 6, 7:  // a special character or token
            input.insert(contentsOf: tokens[rng.next(tokens.count)], at: at)
        case 8:  // random Unicode
            var text = ""
            for _ in 0...rng.next(8) {
                let range = scalarRanges[rng.next(scalarRanges.count)]
                if let scalar = Unicode.Scalar(range.lowerBound + UInt32(rng.next(Int(range.upperBound - range.lowerBound) + 1))) {
                    text.unicodeScalars.append(scalar)
                }
            }
            input.insert(contentsOf: Array(text.utf8), at: at)
        case 9:  // invalid UTF-8
            input.insert(contentsOf: invalidUTF8[rng.next(invalidUTF8.count)], at: at)
        case 10:  // a piece of another seed
            let other = seeds[rng.next(seeds.count)]
            guard !other.isEmpty else { break }
            let from = rng.next(other.count)
            input.insert(contentsOf: other[from..<min(other.count, from + 1 + rng.next(200))], at: at)
        case 11:  // an extreme number in place of a run of digits
            guard let digit = input.indices.filter({ (48...57).contains(input[$0]) }).randomElement(using: &rng) else { break }
            var end = digit
            while end < input.count, (48...57).contains(input[end]) { end += 1 }
            input.replaceSubrange(digit..<end, with: Array(numbers[rng.next(numbers.count)].utf8))
        case 12:  // swap two lines
            var lines = input.split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
            guard lines.count > 1 else { break }
            lines.swapAt(rng.next(lines.count), rng.next(lines.count))
            input = Array(lines.joined(separator: [10]))
        default:  // indentation changes
            input.insert(contentsOf: Array(repeating: UInt8(rng.next(2) == 0 ? 32 : 9), count: 1 + rng.next(8)), at: lineStart(input, at))
        }
    }

    static func lineStart(_ input: [UInt8], _ at: Int) -> Int {
        var i = min(at, input.count)
        while i > 0, input[i - 1] != 10 { i -= 1 }
        return i
    }

    /// Huge or deep inputs: 10,000-deep nesting, a 1 MB line, 10,000 to 20,000 lines,
    /// huge ranges, alias bombs, 3,000-deep group chains, each inside a seed.
    static func monster(_ rng: inout FuzzRandom, seeds: [[UInt8]], tokens: [[UInt8]]) -> [UInt8] {
        var input = seeds[rng.next(seeds.count)]
        let at = lineStart(input, rng.next(input.count + 1))
        let piece: [UInt8]
        switch rng.next(5) {
        case 0:
            let line = input.split(separator: 10).randomElement(using: &rng).map(Array.init) ?? [97]
            piece = Array(Array(repeating: line + [10], count: 10_000).joined())
        case 1:
            piece = Array(repeating: tokens[rng.next(tokens.count)], count: 10_000).flatMap { $0 }
        default:
            piece = monsters[rng.next(monsters.count)]
        }
        input.insert(contentsOf: piece, at: at)
        return input
    }

    /// Built once: the same monsters serve every parser.
    static let monsters: [[UInt8]] = {
        var pieces: [String] = []
        for open in ["[", "{", "(", "- ", "[[", "{a: ", "? ", "  "] { pieces.append(String(repeating: open, count: 10_000) + "x\n") }
        pieces.append("x:\n" + (1..<1_400).map { String(repeating: " ", count: $0) + "k:\n" }.joined())
        pieces.append((0..<20_000).map { String(repeating: " ", count: $0 % 100) + "k\($0):" }.joined(separator: "\n") + "\n")
        for unit in ["a", "x", "[", "-", "=", " ", "#", "\"", "*", "{{", ":", "\\", "\u{FFFD}", "a=b "] {
            pieces.append(String(repeating: unit, count: 1_000_000 / unit.utf8.count) + "\n")
        }
        pieces += ["h[0:99999999]\n", "h[0:9999][0:9999]\n", "h[00:99999]\n", "h[0:9223372036854775807]\n",
                   "h[-9223372036854775808:9223372036854775807]\n", "h[9223372036854775800:9223372036854775807:5]\n",
                   "  h[a:z][a:z][a:z][a:z]:\n", "  h[0:99999999]:\n"]
        var bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for i in 1..<12 { bomb.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]") }
        pieces.append("\n" + bomb.joined(separator: "\n") + "\nk: {? *a11 : 1}\n")
        pieces.append("    " + bomb.joined(separator: "\n    ") + "\n    k: *a11\n")
        pieces.append((0..<3_000).map { "[g\($0):children]\ng\($0 + 1)\n" }.joined())
        pieces.append((0..<3_000).reversed().map { "[g\($0):children]\ng\($0 + 1)\n" }.joined())
        return pieces.map { Array($0.utf8) }
    }()

    // MARK: Facts probe sample

    static let probeOutput = """
        @@flotilla-facts 1
        @@flotilla-facts section os-release
        NAME="Ubuntu"
        ID=ubuntu
        ID_LIKE=debian
        VERSION_ID="20.04"

        @@flotilla-facts status 0
        @@flotilla-facts section package-manager
        apt
        @@flotilla-facts status 0
        @@flotilla-facts section installed
        st2\t3.7.1-1\tii 
        st2web\t3.7.1-1\tii 
        st2mistral\t3.7.1-1\trc 
        @@flotilla-facts status 0
        @@flotilla-facts section offered
               st2 | 3.8.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu focal/main amd64 Packages
               st2 | 3.7.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu focal/main amd64 Packages
            st2web | 3.8.1-1 | https://packagecloud.io/StackStorm/stable/ubuntu focal/main amd64 Packages
        @@flotilla-facts status 0
        @@flotilla-facts section st2ctl
        ##### st2 components status #####
        st2actionrunner PID: 1234
        st2api PID: 1240
        st2sensorcontainer is not running.
        @@flotilla-facts status 0
        @@flotilla-facts section disk
        Filesystem     1024-blocks    Used Available Capacity Mounted on
        /dev/sda1         41152736 9876543  29164729      26% /
        /dev/sda1         41152736 9876543  29164729      26% /
        @@flotilla-facts status 0
        @@flotilla-facts section leftovers
        /etc/st2/st2.conf.dpkg-dist
        @@flotilla-facts status 0
        @@flotilla-facts end

        """
}

/// A small, fast, seedable generator (SplitMix64), so a seed replays the same inputs (the
/// fuzzers and the policy's random runs).
struct FuzzRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<bound (bound > 0).
    mutating func next(_ bound: Int) -> Int { Int(next() % UInt64(max(1, bound))) }
}

/// Reports an input that runs far too long (a real hang cannot be interrupted) and ends
/// the process, so CI fails with the culprit's path instead of timing out.
final class Watchdog: @unchecked Sendable {
    static let shared = Watchdog()
    private let lock = NSLock()
    private var running: [String: (since: Date, path: String)] = [:]

    private init() {
        let thread = Thread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 1)
                lock.lock()
                let stuck = running.first { Date().timeIntervalSince($0.value.since) > Fuzz.hangSeconds }
                lock.unlock()
                if let (name, entry) = stuck {
                    print("fuzz-hang: \(name): one input has run for \(Int(Fuzz.hangSeconds)) s; it is in \(entry.path) (seed \(String(Fuzz.seed, radix: 16)))")
                    fflush(nil)
                    exit(70)
                }
            }
        }
        thread.start()
    }

    func started(_ name: String, _ path: String) {
        lock.lock()
        running[name] = (Date(), path)
        lock.unlock()
    }

    func finished(_ name: String) {
        lock.lock()
        running[name] = nil
        lock.unlock()
    }
}

/// A fuzzing failure, with the seed and the saved input in its message.
struct FuzzFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
