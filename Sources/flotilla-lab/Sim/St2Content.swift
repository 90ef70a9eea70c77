import FlotillaCore
import Foundation

/// A host's st2 content as a roll-over meets it: packs under /opt/stackstorm/packs, their
/// registration and virtualenvs, and the datastore crypto key secrets are encrypted with.
enum St2Content {
    /// The packs every st2 install ships (what a roll-over never copies).
    static let shippedPacks = ["chatops", "core", "default", "linux", "packs"]

    static let packsDirectory = "/opt/stackstorm/packs"
    static let virtualenvsDirectory = "/opt/stackstorm/virtualenvs"
    /// The line a broken pack's pack.yaml holds, which registration refuses.
    static let brokenMarker = "flotilla-lab: broken"

    /// Writes the shipped packs and the spec's custom ones under `packsRoot` (the host's
    /// /opt/stackstorm/packs, seen from outside the host), each with a pack.yaml and an action.
    static func writePacks(_ spec: HostSpec, packsRoot: URL) throws {
        let version = spec.packages["st2"].map { String($0.prefix { $0 != "-" }) } ?? "1.0.0"
        let packs = shippedPacks.map { PackSpec(name: $0, version: version) } + spec.packs
        for pack in packs {
            let dir = packsRoot.appendingPathComponent(pack.name)
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("actions"), withIntermediateDirectories: true)
            var yaml = "ref: \(pack.name)\nname: \(pack.name)\ndescription: the \(pack.name) pack\nversion: \(pack.version)\nauthor: flotilla-lab\n"
            if pack.broken { yaml += "# \(brokenMarker)\npython_versions: [\"2\"]\n" }
            try yaml.write(to: dir.appendingPathComponent("pack.yaml"), atomically: true, encoding: .utf8)
            try "name: hello\nrunner_type: local-shell-cmd\nentry_point: ''\n"
                .write(to: dir.appendingPathComponent("actions/hello.yaml"), atomically: true, encoding: .utf8)
            if !shippedPacks.contains(pack.name) {
                try "requests>=2.20\n".write(to: dir.appendingPathComponent("requirements.txt"), atomically: true, encoding: .utf8)
            }
        }
    }

    /// The packs on disk, by name, with their pack.yaml text (nil when it cannot be read).
    static func packsOnDisk() -> [(name: String, yaml: String?)] {
        // No packs directory holds no packs; an unreadable pack.yaml is nil, which fails
        // registration naming the pack.
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: packsDirectory)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        return names.map { ($0, try? String(contentsOfFile: "\(packsDirectory)/\($0)/pack.yaml", encoding: .utf8)) }
    }

    /// `st2ctl reload --register-all`'s packs: every pack on disk is registered, unless one
    /// fails, which fails the whole registration as `--register-fail-on-failure` (the
    /// default since st2 2.x) does, naming the pack.
    static func register(_ sim: inout SimContext) throws -> (ok: Bool, count: Int) {
        let onDisk = packsOnDisk()
        let stamp = St2Tools.logStamp()
        for pack in onDisk {
            guard let yaml = pack.yaml else {
                sim.err("\(stamp) ERROR [-] Failed to register pack \"\(pack.name)\": No pack.yaml found in \(packsDirectory)/\(pack.name)")
                return (false, 0)
            }
            if yaml.contains(brokenMarker) {
                sim.err("""
                    \(stamp) ERROR [-] Failed to register pack "\(pack.name)": Failed to register pack "\(pack.name)": Pack "\(pack.name)" requires Python 2.x, but current Python version is "3.8.10".
                    st2common.exceptions.content.ResourceRegistrationError: Failed to register pack "\(pack.name)"
                    """)
                return (false, 0)
            }
        }
        try sim.store.update { state in
            for pack in onDisk {
                let version = pack.yaml?.split(separator: "\n").first { $0.hasPrefix("version:") }
                    .map { $0.dropFirst("version:".count).trimmingCharacters(in: .whitespaces) } ?? "0.0.0"
                state.packs[pack.name] = version
            }
        }
        sim.err("\(stamp) INFO [-] Registered \(onDisk.count) packs.")
        return (true, onDisk.count)
    }

    /// `st2 pack list [-j]`: the registered packs.
    static func packList(_ sim: inout SimContext, state: HostState, json: Bool) -> Int32 {
        let items: [[String: Any]] = state.packs.keys.sorted().map { name in
            ["ref": name, "name": name, "version": state.packs[name] ?? "", "description": "the \(name) pack"]
        }
        if json {
            sim.out(St2Tools.jsonText(items))
        } else {
            for item in items { sim.out("| \(item["ref"]!) | \(item["version"]!) | \(item["description"]!) |") }
        }
        return 0
    }

    /// `st2 run packs.setup_virtualenv packs=a,b`: a virtualenv per pack under
    /// /opt/stackstorm/virtualenvs (needs root, as the action runner's user has); a pack
    /// not on disk fails the execution, as the real action does.
    static func setupVirtualenvs(_ sim: inout SimContext, args: [String]) -> Int32 {
        guard args.first == "packs.setup_virtualenv",
              let packs = args.dropFirst().first(where: { $0.hasPrefix("packs=") })?.dropFirst("packs=".count) else {
            sim.err("st2 run: the lab simulates only 'st2 run packs.setup_virtualenv packs=NAME[,NAME...]'")
            return 2
        }
        let id = (0..<12).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        sim.out("id: \(id)\naction.ref: packs.setup_virtualenv\nparameters:\n  packs:")
        var failure: String?
        for pack in packs.split(separator: ",").map(String.init) {
            sim.out("  - \(pack)")
            guard FileManager.default.fileExists(atPath: "\(packsDirectory)/\(pack)/pack.yaml") else {
                failure = "Pack \"\(pack)\" is not installed. Looked in: ['\(packsDirectory)']"
                break
            }
            do {
                try FileManager.default.createDirectory(atPath: "\(virtualenvsDirectory)/\(pack)/bin", withIntermediateDirectories: true)
                try "#!/bin/sh\n".write(toFile: "\(virtualenvsDirectory)/\(pack)/bin/python", atomically: true, encoding: .utf8)
            } catch {
                failure = "[Errno 13] Permission denied: '\(virtualenvsDirectory)/\(pack)'"
                break
            }
        }
        if let failure {
            sim.out("status: failed\nresult:\n  error: \(failure)")
            return 1
        }
        sim.out("status: succeeded\nresult:\n  result: Successfully set up virtualenv for the following packs: \(packs)")
        return 0
    }

    /// `st2 pack install URL…`: each pack (named by the URL's last component, without
    /// `.git` and a `stackstorm-` prefix) is "cloned" (written as a fresh pack), registered,
    /// and its virtualenv set up. A URL whose host is `unreachable.invalid` fails as git
    /// does when it cannot reach the repository.
    static func packInstall(_ sim: inout SimContext, sources: [String]) throws -> Int32 {
        guard !sources.isEmpty else { sim.err("st2 pack install: error: the following arguments are required: packs"); return 2 }
        for source in sources {
            guard !source.contains("unreachable.invalid") else {
                sim.err("ERROR: Failed to install pack \"\(source)\": fatal: unable to access '\(source)/': Could not resolve host: unreachable.invalid")
                return 1
            }
            var name = URL(fileURLWithPath: source).lastPathComponent
            if name.hasSuffix(".git") { name = String(name.dropLast(4)) }
            if name.hasPrefix("stackstorm-") { name = String(name.dropFirst("stackstorm-".count)) }
            let dir = URL(fileURLWithPath: "\(packsDirectory)/\(name)")
            do {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                try "ref: \(name)\nname: \(name)\nversion: 1.0.0\nrepo_url: \(source)\n".write(to: dir.appendingPathComponent("pack.yaml"), atomically: true, encoding: .utf8)
                try FileManager.default.createDirectory(atPath: "\(virtualenvsDirectory)/\(name)/bin", withIntermediateDirectories: true)
            } catch {
                sim.err("ERROR: [Errno 13] Permission denied: '\(dir.path)'")
                return 1
            }
            try sim.store.update { $0.packs[name] = "1.0.0" }
            sim.out("\t[ succeeded ] download pack\n\t[ succeeded ] make a prerun\n\t[ succeeded ] install pack dependencies\n\t[ succeeded ] register pack")
            sim.out("| ref | \(name) |\n| version | 1.0.0 |")
        }
        return 0
    }

    // MARK: - The datastore crypto key

    /// `value` encrypted with `key` as the API returns secrets: a tag, then the bytes; only
    /// the same key takes it apart again (a stand-in for st2's AES-256-CBC with HMAC).
    static func encrypt(_ value: String, key: String) -> String {
        let plain = Array(value.utf8)
        let tag = fnv(key + "\u{0}tag\u{0}" + value)
        let stream = keystream(key: key, count: plain.count)
        return String(format: "%016llX", tag) + zip(plain, stream).map { String(format: "%02X", $0 ^ $1) }.joined()
    }

    /// The clear value of `cipher` under `key`; nil when it was encrypted with another key
    /// (st2's InvalidSignatureError) or is not ciphertext at all.
    static func decrypt(_ cipher: String, key: String) -> String? {
        let hex = Array(cipher.utf8)
        guard hex.count >= 16, hex.count % 2 == 0, let tag = UInt64(String(cipher.prefix(16)), radix: 16) else { return nil }
        var bytes: [UInt8] = []
        var index = 16
        while index < hex.count {
            guard let byte = UInt8(String(decoding: hex[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
            index += 2
        }
        let plain = zip(bytes, keystream(key: key, count: bytes.count)).map { $0 ^ $1 }
        let value = String(decoding: plain, as: UTF8.self)
        return fnv(key + "\u{0}tag\u{0}" + value) == tag ? value : nil
    }

    private static func keystream(key: String, count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        var block: UInt64 = 0
        while bytes.count < count {
            let word = fnv(key + "\u{0}\(block)")
            bytes += (0..<8).map { UInt8(truncatingIfNeeded: word >> ($0 * 8)) }
            block += 1
        }
        return Array(bytes.prefix(count))
    }

    private static func fnv(_ text: String) -> UInt64 {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        return hash
    }
}
