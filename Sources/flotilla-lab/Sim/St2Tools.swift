import FlotillaCore
import Foundation

/// st2ctl, the st2 client, mistral-db-manage and the migration scripts.
enum St2Tools {
    static func statusText(_ state: HostState) -> String {
        var lines = ["##### st2 components status #####"]
        for component in state.components {
            if let pid = state.services[component] {
                lines.append("\(component) PID: \(pid)")
            } else {
                lines.append("\(component) is not running.")
            }
        }
        return lines.joined(separator: "\n")
    }

    static let registerFlags: Set<String> = [
        "--register-all", "--register-actions", "--register-aliases", "--register-runners", "--register-policies",
        "--register-rules", "--register-sensors", "--register-triggers", "--register-configs",
        "--register-setup-virtualenvs", "--register-recreate-virtualenvs", "--register-fail-on-failure",
        "--register-no-fail-on-failure", "--verbose",
    ]

    static let usage = """
        Usage: st2ctl {start, stop, restart, status}

        Usage: st2ctl {reload, clean}
        optional arguments:
          --register-all                Register all.
        """

    static func st2ctl(_ sim: inout SimContext) throws -> Int32 {
        let current = try sim.store.read()
        guard current.packages["st2"] != nil else { return sim.notFound() }
        let args = sim.arguments
        switch args.first {
        case "status":
            sim.out(statusText(current))
        case "stop":
            try sim.store.update { $0.stopServices() }
        case "start":
            let state = try sim.store.update { state -> HostState in state.startServices(); return state }
            sim.out(statusText(state))
        case "restart":
            let state = try sim.store.update { state -> HostState in
                state.stopServices()
                state.startServices()
                return state
            }
            sim.out(statusText(state))
        case "reload":
            let flags = Array(args.dropFirst())
            if let bad = flags.first(where: { !registerFlags.contains($0) }) {
                sim.out("\u{1B}[31mError: Invalid flag provided: \(bad) \u{1B}[0m\n")
                sim.out(usage)
                return 1
            }
            let used = flags.isEmpty
                ? "--register-runners --register-actions --register-aliases --register-sensors --register-triggers --register-configs --register-rules"
                : flags.joined(separator: " ")
            sim.out("Registering content...[flags = --config-file /etc/st2/st2.conf \(used)]")
            if flags.contains("--register-all"), try !St2Content.register(&sim).ok {
                return 1
            }
            let state = try sim.store.update { state -> HostState in state.registrations += 1; return state }
            let stamp = logStamp()
            sim.err("\(stamp) INFO [-] Connecting to database \"st2\" @ \"127.0.0.1:27017\" as user \"None\".")
            for (kind, count) in [("runners", 13), ("actions", 41), ("rules", 2), ("sensors", 1), ("triggers", 0), ("aliases", 0), ("configs", 0)] {
                sim.err("\(stamp) INFO [-] Registered \(count) \(kind).")
            }
            sim.out(statusText(state))
        default:
            sim.out(usage)
            return 1
        }
        return 0
    }

    static func pythonVersion(_ os: LabOS) -> String {
        switch os.key {
        case "ubuntu16.04": return "3.6.13"
        case "ubuntu18.04": return "3.6.9"
        case "el7": return "3.6.8"
        case "ubuntu22.04": return "3.10.12"
        default: return "3.8.10"
        }
    }

    static func st2(_ sim: inout SimContext) throws -> Int32 {
        let state = try sim.store.read()
        guard let version = state.st2Version else { return sim.notFound() }
        let args = sim.arguments
        if args.contains("--version") {
            if version < StackStormVersion("3.0")! {
                sim.err("st2 \(version.releaseString)") // Python 2's argparse prints the version on stderr
            } else {
                sim.out("st2 \(version.releaseString), on Python \(pythonVersion(sim.os))")
            }
            return 0
        }
        guard ["key", "pack", "run"].contains(args.first), args.count >= 2 else {
            sim.err("usage: st2 [-h] [--version] [--url BASE_URL] ... {key,pack,run,...}\n(the lab simulates only: st2 --version, st2 key list/get/load, st2 pack list, st2 run packs.setup_virtualenv)")
            return 2
        }
        guard state.services["st2api"] != nil else {
            sim.err("ERROR: HTTPConnectionPool(host='127.0.0.1', port=9101): Max retries exceeded with url: /v1/keys (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object>: Failed to establish a new connection: [Errno 111] Connection refused'))")
            return 1
        }
        if args[0] == "pack" {
            switch args[1] {
            case "list": return St2Content.packList(&sim, state: state, json: args.contains("-j") || args.contains("--json"))
            case "install": return try St2Content.packInstall(&sim, sources: Array(args.dropFirst(2)))
            default: sim.err("st2 pack: the lab simulates only 'list' and 'install'"); return 2
            }
        }
        if args[0] == "run" { return St2Content.setupVirtualenvs(&sim, args: Array(args.dropFirst())) }
        switch args[1] {
        case "list": return keyList(&sim, state: state, args: Array(args.dropFirst(2)), version: version)
        case "get": return keyGet(&sim, state: state, args: Array(args.dropFirst(2)))
        case "load": return try keyLoad(&sim, args: Array(args.dropFirst(2)))
        default:
            sim.err("st2 key: the lab simulates only 'list', 'get' and 'load'")
            return 2
        }
    }

    static func keyList(_ sim: inout SimContext, state: HostState, args: [String], version: StackStormVersion) -> Int32 {
        var json = false, decrypt = false
        // From 2.4 the client asks for 50 keys unless told otherwise (-n/--last); up to 2.8
        // only the system scope.
        let paged = version >= StackStormVersion("2.4")!
        var limit = paged ? 50 : Int.max
        var scope = version < StackStormVersion("2.9")! ? "system" : "all"
        var index = 0
        while index < args.count {
            switch args[index] {
            case "-j", "--json": json = true
            case "--decrypt": decrypt = true
            case "-n" where paged, "--last" where paged:
                guard index + 1 < args.count, let n = Int(args[index + 1]) else {
                    sim.err("usage: st2 key list [-h] [-n LAST] ...\nst2 key list: error: argument -n/--last: expected one argument")
                    return 2
                }
                switch apiLimit(n, version: version, scope: scope) {
                case .success(let granted): limit = granted
                case .failure(let error):
                    sim.err(error.message)
                    return 1
                }
                index += 1
            case "-s", "--scope":
                guard index + 1 < args.count else { sim.err("st2 key list: error: argument -s/--scope: expected one argument"); return 2 }
                scope = args[index + 1]
                index += 1
            default:
                sim.err("st2: error: unrecognized arguments: \(args[index])")
                return 2
            }
            index += 1
        }
        let selected = state.kv.filter { pair in
            scope == "all" || pair.scope == scope || pair.scope == "st2kv.\(scope)"
        }.prefix(limit)
        var items: [[String: Any]] = []
        for pair in selected {
            switch apiItem(pair, state: state, decrypt: decrypt) {
            case .success(let item): items.append(item)
            case .failure(let error):
                sim.err(error.message)
                return 1
            }
        }
        if json {
            sim.out(jsonText(items))
        } else {
            for item in items { sim.out("| \(item["name"]!) | \(item["value"]!) | \(item["scope"] ?? "") |") }
        }
        return 0
    }

    struct APIError: Error { var message: String }

    /// The client's `-j` output: pretty-printed JSON, keys sorted.
    static func jsonText(_ object: Any) -> String {
        // Built of strings, numbers and booleans: serializing cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A pair as the API returns it: secrets encrypted with the host's datastore crypto
    /// key unless decrypted; a pair written before 1.5 without `scope` and `secret`; a
    /// secret loaded encrypted with another host's key cannot be decrypted (the API fails).
    static func apiItem(_ pair: KVPair, state: HostState, decrypt: Bool) -> Result<[String: Any], APIError> {
        var item: [String: Any] = ["name": pair.name]
        if !pair.legacy {
            item["scope"] = pair.scope
            item["secret"] = pair.secret
            item["encrypted"] = pair.secret && !decrypt
        }
        if pair.foreign {
            guard !decrypt else {
                return .failure(APIError(message: "ERROR: 500 Server Error: Internal Server Error\nMESSAGE: Failed to decrypt the value of \"\(pair.name)\": InvalidSignatureError: HMAC signature does not match (was it encrypted with another datastore key?)"))
            }
            item["value"] = pair.value
        } else {
            item["value"] = pair.secret && !decrypt ? St2Content.encrypt(pair.value, key: state.cryptoKey) : pair.value
        }
        if let user = pair.user { item["user"] = user }
        return .success(item)
    }

    /// `st2 key get NAME [-s SCOPE] [--decrypt] [-j]`.
    static func keyGet(_ sim: inout SimContext, state: HostState, args: [String]) -> Int32 {
        var name: String?, scope = "system", decrypt = false, json = false
        var index = 0
        while index < args.count {
            switch args[index] {
            case "-j", "--json": json = true
            case "--decrypt": decrypt = true
            case "-s", "--scope":
                guard index + 1 < args.count else { sim.err("st2 key get: error: argument -s/--scope: expected one argument"); return 2 }
                scope = args[index + 1]
                index += 1
            case let word where !word.hasPrefix("-") && name == nil: name = word
            default:
                sim.err("st2: error: unrecognized arguments: \(args[index])")
                return 2
            }
            index += 1
        }
        guard let name else { sim.err("st2 key get: error: the following arguments are required: name"); return 2 }
        guard let pair = state.kv.first(where: { $0.name == name && ($0.scope == scope || $0.scope == "st2kv.\(scope)") }) else {
            sim.err("Key-value pair \"\(name)\" is not found.")
            return 2
        }
        switch apiItem(pair, state: state, decrypt: decrypt) {
        case .success(let item):
            if json {
                sim.out(jsonText(item))
            } else {
                sim.out("| name | \(item["name"]!) |\n| value | \(item["value"]!) |")
            }
            return 0
        case .failure(let error):
            sim.err(error.message)
            return 1
        }
    }

    /// What the API of `version` makes of `?limit=N` (st2api controllers/resource.py):
    /// 2.4 and 2.5 take 0 as no limit, fail on a negative one (an IndexError: 500) and
    /// refuse more than `api.max_page_size` (100); from 2.6, -1 is the full set (for an
    /// admin, as root's CLI is), 0 and below -1 are refused.
    static func apiLimit(_ n: Int, version: StackStormVersion, scope: String) -> Result<Int, APIError> {
        let url = "http://127.0.0.1:9101/v1/keys/?scope=\(scope)&decrypt=false&limit=\(n)"
        func error(_ status: String, _ message: String) -> Result<Int, APIError> {
            .failure(APIError(message: "ERROR: \(status)\nMESSAGE: \(message) for url: \(url)"))
        }
        if version < StackStormVersion("2.6")! {
            if n < 0 { return error("500 Server Error: Internal Server Error", "Internal Server Error") }
            if n > 100 { return error("400 Client Error: Bad Request", "Limit \"\(n)\" specified, maximum value is \"100\"") }
            return .success(n == 0 ? Int.max : n)
        }
        if n == -1 { return .success(Int.max) }
        if n == 0 { return error("400 Client Error: Bad Request", "Limit, \"0\" specified, must be a positive number or -1 for full result set.") }
        if n < -1 { return error("400 Client Error: Bad Request", "Limit, \"\(n)\" specified, must be a positive number.") }
        return .success(n)
    }

    /// `st2 key load FILE`: an item without `scope` is a system one, without `secret` not
    /// secret (so a secret from a file that lost the flag lands in clear); a clear secret is
    /// encrypted with this host's key; an item marked `encrypted` is kept as it is, which
    /// only this host's key can decrypt later.
    static func keyLoad(_ sim: inout SimContext, args: [String]) throws -> Int32 {
        guard let file = args.first(where: { !$0.hasPrefix("-") }) else {
            sim.err("st2 key load: error: the following arguments are required: file")
            return 2
        }
        guard let data = FileManager.default.contents(atPath: file),
              let object = try? JSONSerialization.jsonObject(with: data) else {
            sim.err("ERROR: Cannot parse \(file) as JSON")
            return 1
        }
        let entries = (object as? [[String: Any]]) ?? ((object as? [String: Any]).map { $0.map { ["name": $0.key, "value": $0.value] } } ?? [])
        var loaded: [KVPair] = []
        for entry in entries {
            guard let name = entry["name"] as? String else { sim.err("ERROR: every item needs a name"); return 1 }
            var pair = KVPair(name: name, value: "\(entry["value"] ?? "")")
            if entry["encrypted"] as? Bool == true {
                let state = try sim.store.read()
                if let clear = St2Content.decrypt(pair.value, key: state.cryptoKey) { pair.value = clear } else { pair.foreign = true }
            }
            if let scope = entry["scope"] as? String { pair.scope = scope.hasPrefix("st2kv.") ? scope : "st2kv.\(scope)" }
            pair.secret = entry["secret"] as? Bool ?? false
            pair.user = entry["user"] as? String
            loaded.append(pair)
        }
        try sim.store.update { state in
            for pair in loaded {
                state.kv.removeAll { $0.name == pair.name && $0.scope == pair.scope && $0.user == pair.user }
                state.kv.append(pair)
            }
        }
        let key = try sim.store.read().cryptoKey
        for pair in loaded { sim.out("| \(pair.name) | \(pair.secret && !pair.foreign ? St2Content.encrypt(pair.value, key: key) : pair.value) |") }
        return 0
    }

    static func mistralDBManage(_ sim: inout SimContext) throws -> Int32 {
        let args = sim.arguments
        var rest = args
        if let index = rest.firstIndex(of: "--config-file") {
            guard index + 1 < rest.count else { sim.err("mistral-db-manage: error: argument --config-file: expected one argument"); return 2 }
            let file = rest[index + 1]
            guard FileManager.default.fileExists(atPath: file) else {
                sim.err("oslo_config.cfg.ConfigFilesNotFoundError: Failed to find some config files: \(file)")
                return 1
            }
            rest.removeSubrange(index...index + 1)
        }
        let faults = sim.config.spec.faults
        switch rest {
        case ["upgrade", "head"]:
            let outcome = try sim.store.update { state -> (ok: Bool, text: String) in
                guard let installed = state.packages["st2mistral"], var mistral = state.mistral else {
                    return (false, "mistral is not installed")
                }
                let forced = faults.mistralEventTriggers && state.faultHits["mistral_event_triggers", default: 0] == 0
                if mistral.tablesAhead || forced {
                    state.faultHits["mistral_event_triggers", default: 0] += 1
                    return (false, """
                        Traceback (most recent call last):
                          File "/opt/stackstorm/mistral/lib/python2.7/site-packages/sqlalchemy/engine/base.py", line 1182, in _execute_context
                            context)
                        sqlalchemy.exc.ProgrammingError: (psycopg2.ProgrammingError) relation "event_triggers_v2" already exists
                         [SQL: '\\nCREATE TABLE event_triggers_v2 (...)']
                        """)
                }
                let from = mistral.schema
                mistral.schema = installed
                mistral.populated = false
                state.mistral = mistral
                return (true, "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\nINFO  [alembic.runtime.migration] Will assume transactional DDL.\nINFO  [alembic.runtime.migration] Running upgrade \(from) -> \(installed)")
            }
            sim.err(outcome.text)
            return outcome.ok ? 0 : 1
        case ["populate"]:
            let ok = try sim.store.update { state -> Bool in
                guard var mistral = state.mistral, mistral.schema == state.packages["st2mistral"] else { return false }
                mistral.populated = true
                state.mistral = mistral
                return true
            }
            guard ok else {
                sim.err("sqlalchemy.exc.ProgrammingError: (psycopg2.ProgrammingError) the database schema is not at head: run 'upgrade head' first")
                return 1
            }
            // Harmless noise the real command prints (StackStorm/st2#3844).
            sim.err("\(logStamp()) ERROR mistral.actions.openstack.action_generator.base [-] Failed to create action: nova.servers_find: No module named novaclient")
            sim.err("\(logStamp()) INFO mistral.services.action_manager [-] Finished populating the database")
            return 0
        default:
            sim.err("usage: mistral-db-manage [-h] [--config-file PATH] {upgrade,populate,...}\nmistral-db-manage: error: expected 'upgrade head' or 'populate'")
            return 2
        }
    }

    /// Any catalog migration script: recorded in the host's state, in the order they ran.
    static func migrationScript(_ sim: inout SimContext) throws -> Int32 {
        let script = sim.argv.first ?? ""
        let args = sim.arguments
        if sim.program == "st2-migrate-db-dict-field-values", !args.contains("--yes") {
            sim.out("This will migrate the DictField values of every execution and workflow record in the database.")
            sim.out("Are you sure you want to proceed? [y/N] ")
            let answer = readLine() ?? ""
            guard answer.lowercased().hasPrefix("y") else { sim.err("Aborting."); return 1 }
        }
        let path = script.hasPrefix("/") ? script : "/opt/stackstorm/st2/bin/\(sim.program)"
        try sim.store.update { state in
            state.migrations.append(.init(script: path, arguments: args, at: Date(), st2Version: state.packages["st2"] ?? ""))
        }
        sim.out("\(logStamp()) INFO [-] Running \(sim.program)...")
        sim.out("\(logStamp()) INFO [-] Migration complete.")
        return 0
    }

    static func logStamp() -> String {
        let stamp = preciseTimestamp(Date())
        return stamp.prefix(10) + " " + stamp.dropFirst(11).prefix(12).replacingOccurrences(of: ".", with: ",")
    }
}
