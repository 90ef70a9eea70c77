import Foundation

/// A fact about a host: its value, or why it could not be read. A fact that cannot be read
/// is reported as such, never guessed.
public enum Fact<Value: Sendable & Equatable>: Sendable, Equatable {
    case known(Value)
    case unreadable(String)

    public var value: Value? {
        if case .known(let value) = self { return value }
        return nil
    }

    public var problem: String? {
        if case .unreadable(let reason) = self { return reason }
        return nil
    }
}

/// The operating system, from /etc/os-release.
public struct OSInfo: Sendable, Equatable, Hashable {
    public enum Family: String, Sendable { case debian, redhat, other }

    /// `ID` (`ubuntu`, `centos`, `rocky`).
    public var id: String
    /// `VERSION_ID` (`18.04`, `7`, `8.9`).
    public var versionID: String
    /// `PRETTY_NAME` (`Ubuntu 18.04.6 LTS`).
    public var name: String
    public var family: Family

    public init(id: String, versionID: String, name: String, family: Family) {
        self.id = id
        self.versionID = versionID
        self.name = name
        self.family = family
    }

    /// The key the catalog's `os_ceilings` use: `ubuntu18.04`, `el7`, `debian12`.
    public var key: String {
        switch family {
        case .redhat: return "el" + (versionID.split(separator: ".").first.map(String.init) ?? versionID)
        case .debian, .other: return id + versionID
        }
    }

    /// Parses the text of /etc/os-release (shell-style `KEY=value`, values optionally quoted).
    public static func parse(osRelease text: String) -> OSInfo? {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            fields[String(line[..<equals]).trimmingCharacters(in: .whitespaces)] = value.replacingOccurrences(of: "\\\"", with: "\"")
        }
        guard let id = fields["ID"], !id.isEmpty else { return nil }
        let like = Set((fields["ID_LIKE"] ?? "").split(separator: " ").map(String.init) + [id])
        let family: Family
        if !like.isDisjoint(with: ["debian", "ubuntu"]) {
            family = .debian
        } else if !like.isDisjoint(with: ["rhel", "centos", "fedora", "rocky", "almalinux", "ol"]) {
            family = .redhat
        } else {
            family = .other
        }
        return OSInfo(id: id, versionID: fields["VERSION_ID"] ?? "", name: fields["PRETTY_NAME"] ?? fields["NAME"] ?? id, family: family)
    }
}

/// One st2 component as `st2ctl status` lists it.
public struct ComponentState: Sendable, Equatable {
    public var name: String
    /// The pid when running, nil when `st2ctl status` says it is not running.
    public var pid: Int?
    public var running: Bool { pid != nil }

    public init(name: String, pid: Int?) {
        self.name = name
        self.pid = pid
    }

    /// Parses `st2ctl status` text: `##### st2 components status #####`, then per component
    /// `NAME PID: N` or `NAME is not running.`; nil when the text is not that (st2ctl always
    /// exits 0, so the text is all there is).
    public static func parse(st2ctlStatus text: String) -> [ComponentState]? {
        var components: [ComponentState] = []
        var sawHeader = false
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if line.hasPrefix("#####"), line.contains("status") {
                sawHeader = true
                continue
            }
            if let range = line.range(of: " PID: "), let pid = Int(line[range.upperBound...].trimmingCharacters(in: .whitespaces)) {
                components.append(ComponentState(name: String(line[..<range.lowerBound]), pid: pid))
            } else if line.hasSuffix(" is not running.") {
                components.append(ComponentState(name: String(line.dropLast(" is not running.".count)), pid: nil))
            }
        }
        return sawHeader ? components : nil
    }
}

extension ComponentState {
    /// `list` without the components whose package is not installed.
    public static func expected(_ list: [ComponentState], installed: [String: String]) -> [ComponentState] {
        list.filter { component in
            if component.name == "st2chatops" { return installed["st2chatops"] != nil }
            if component.name.hasPrefix("mistral") { return installed["st2mistral"] != nil }
            return true
        }
    }
}

/// Free space of the file system holding a path.
public struct DiskSpace: Sendable, Equatable {
    public var path: String
    public var mountPoint: String
    public var availableKiB: Int64

    public init(path: String, mountPoint: String, availableKiB: Int64) {
        self.path = path
        self.mountPoint = mountPoint
        self.availableKiB = availableKiB
    }
}

/// Everything flotilla knows about a host before it plans anything.
public struct HostFacts: Sendable, Equatable {
    public var os: Fact<OSInfo>
    /// `apt`, `yum` or `dnf`.
    public var packageManager: Fact<String>
    /// Installed st2 packages (of the catalog's list) and their exact package versions.
    public var installed: Fact<[String: String]>
    /// Versions the host's repositories offer, per st2 package, oldest first.
    public var offered: Fact<[String: [String]]>
    /// st2 components from `st2ctl status` (empty when st2 is not installed).
    public var components: Fact<[ComponentState]>
    /// Free disk on / and /opt.
    public var disk: Fact<[DiskSpace]>
    /// `*.dpkg-dist`, `*.dpkg-old`, `*.rpmnew` under /etc/st2 and /etc/mistral.
    public var leftoverConfigs: Fact<[String]>

    public init(os: Fact<OSInfo>, packageManager: Fact<String>, installed: Fact<[String: String]>, offered: Fact<[String: [String]]>,
                components: Fact<[ComponentState]>, disk: Fact<[DiskSpace]>, leftoverConfigs: Fact<[String]>) {
        self.os = os
        self.packageManager = packageManager
        self.installed = installed
        self.offered = offered
        self.components = components
        self.disk = disk
        self.leftoverConfigs = leftoverConfigs
    }

    /// Every fact unreadable for one reason (the probe did not run).
    public init(unreadable reason: String) {
        self.init(os: .unreadable(reason), packageManager: .unreadable(reason), installed: .unreadable(reason),
                  offered: .unreadable(reason), components: .unreadable(reason), disk: .unreadable(reason),
                  leftoverConfigs: .unreadable(reason))
    }

    /// The installed st2 package version (`3.7.1-1`), if st2 is installed and readable.
    public var st2Package: String? { installed.value?["st2"] }
    public var st2Version: StackStormVersion? { st2Package.flatMap(StackStormVersion.init) }

    /// The components that should be running: `st2ctl status` lists st2chatops and the
    /// Mistral components whether or not their packages are installed.
    public var expectedComponents: [ComponentState]? {
        guard let list = components.value else { return nil }
        return ComponentState.expected(list, installed: installed.value ?? [:])
    }

    /// Names and reasons of the facts that could not be read, in a fixed order.
    public var problems: [(fact: String, reason: String)] {
        let all: [(String, String?)] = [
            ("os", os.problem), ("package_manager", packageManager.problem), ("packages", installed.problem),
            ("offered", offered.problem), ("components", components.problem), ("disk", disk.problem),
            ("leftover_configs", leftoverConfigs.problem),
        ]
        return all.compactMap { name, reason in reason.map { (name, $0) } }
    }
}
