import Foundation

/// One host's gathered facts, or why the host could not be reached.
public struct HostFactsResult: Sendable {
    public var name: String
    public var address: String
    /// Why the host could not be reached (no session); nil when it was.
    public var unreachable: String?
    public var facts: HostFacts

    public init(name: String, address: String, unreachable: String?, facts: HostFacts) {
        self.name = name
        self.address = address
        self.unreachable = unreachable
        self.facts = facts
    }
}

/// `flotilla facts` output: a table or JSON.
public enum FactsView {
    /// SPEC §1 for `facts`: no host reached (or none selected) 69; some host unreachable
    /// or some fact unreadable 1; else 0.
    public static func exitStatus(_ results: [HostFactsResult]) -> ExitStatus {
        if results.allSatisfy({ $0.unreachable != nil }) { return .unavailable }
        if results.contains(where: { $0.unreachable != nil || !$0.facts.problems.isEmpty }) { return .someHostsFailed }
        return .success
    }

    public static func json(_ results: [HostFactsResult]) -> JSONValue {
        let hosts: [JSONValue] = results.map { result in
            var fields: [(String, JSONValue)] = [
                ("name", .string(result.name)), ("address", .string(result.address)),
                ("reachable", .bool(result.unreachable == nil)), ("error", .string(result.unreachable)),
            ]
            guard result.unreachable == nil else { return .object(fields) }
            let facts = result.facts
            fields.append(("os", facts.os.value.map { os in
                .object([("id", .string(os.id)), ("version_id", .string(os.versionID)), ("name", .string(os.name)),
                         ("family", .string(os.family.rawValue)), ("key", .string(os.key))])
            } ?? .null))
            fields.append(("package_manager", .string(facts.packageManager.value)))
            fields.append(("packages", facts.installed.value.map { packages in
                .object(packages.keys.sorted().map { ($0, .string(packages[$0]!)) })
            } ?? .null))
            fields.append(("offered", facts.offered.value.map { offered in
                .object(offered.keys.sorted().map { ($0, .strings(offered[$0]!)) })
            } ?? .null))
            fields.append(("components", facts.components.value.map { list in
                .array(list.map { .object([("name", .string($0.name)), ("running", .bool($0.running)), ("pid", .int($0.pid))]) })
            } ?? .null))
            fields.append(("disk", facts.disk.value.map { list in
                .array(list.map { .object([("path", .string($0.path)), ("mount_point", .string($0.mountPoint)), ("available_kib", .int($0.availableKiB))]) })
            } ?? .null))
            fields.append(("leftover_configs", facts.leftoverConfigs.value.map(JSONValue.strings) ?? .null))
            fields.append(("unreadable", .object(facts.problems.map { ($0.fact, .string($0.reason)) })))
            return .object(fields)
        }
        let reachable = results.filter { $0.unreachable == nil }
        return .object([
            ("hosts", .array(hosts)),
            ("summary", .object([
                ("hosts", .int(results.count)), ("reachable", .int(reachable.count)),
                ("unreachable", .int(results.count - reachable.count)),
                ("with_unreadable_facts", .int(reachable.filter { !$0.facts.problems.isEmpty }.count)),
            ])),
        ])
    }

    /// A table (one row per host), then the facts that could not be read and the summary.
    public static func table(_ results: [HostFactsResult]) -> String {
        var rows = [["HOST", "OS", "PKG", "ST2", "PACKAGES", "SERVICES", "FREE /", "FREE /opt", "LEFTOVERS"]]
        var problems: [String] = []
        for result in results {
            if let error = result.unreachable {
                rows.append([result.name, "unreachable", "", "", "", "", "", "", ""])
                problems.append("\(result.name): unreachable: \(error)")
                continue
            }
            let f = result.facts
            let packages = f.installed.value.map { $0.keys.sorted().filter { $0 != "st2" }.joined(separator: ",") } ?? "?"
            let services = f.expectedComponents.map { list in list.isEmpty ? "-" : "\(list.filter(\.running).count)/\(list.count) up" } ?? "?"
            let disk = f.disk.value ?? []
            func free(_ path: String) -> String {
                guard let space = disk.first(where: { $0.path == path }) else { return "?" }
                return formatSize(kib: space.availableKiB)
            }
            rows.append([
                result.name, f.os.value?.name ?? "?", f.packageManager.value ?? "?", f.installed.value.map { $0["st2"] ?? "-" } ?? "?",
                packages.isEmpty ? "-" : packages, services, free("/"), free("/opt"),
                f.leftoverConfigs.value.map { $0.isEmpty ? "-" : String($0.count) } ?? "?",
            ])
            for problem in f.problems { problems.append("\(result.name): \(problem.fact) unreadable: \(problem.reason)") }
        }
        var out = TextTable.render(rows)
        if !problems.isEmpty { out += "\n" + problems.map { $0 + "\n" }.joined() }
        let unreachable = results.filter { $0.unreachable != nil }.count
        let partial = results.filter { $0.unreachable == nil && !$0.facts.problems.isEmpty }.count
        out += "\n\(results.count) host\(results.count == 1 ? "" : "s"): \(results.count - unreachable - partial) complete, \(partial) with unreadable facts, \(unreachable) unreachable\n"
        return out
    }

    /// `12.3 GiB`, `850 MiB`.
    public static func formatSize(kib: Int64) -> String {
        let mib = Double(kib) / 1024
        return mib >= 1024 ? String(format: "%.1f GiB", mib / 1024) : String(format: "%.0f MiB", mib)
    }
}
