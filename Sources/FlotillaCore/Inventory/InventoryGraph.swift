/// A variable value and where it was set.
public struct InventoryVariable: Sendable, Hashable {
    public var value: InventoryValue
    public var location: SourceLocation

    public init(_ value: InventoryValue, at location: SourceLocation) {
        self.value = value
        self.location = location
    }
}

public typealias InventoryVariables = [String: InventoryVariable]

/// The groups and hosts being read from inventory sources, with Ansible's rules:
/// groups and hosts keep the order of their first appearance, a child edge that would
/// make a cycle is refused, `all` and `ungrouped` are implicit. Parsers feed it; once
/// every source is read, ``reconcile()`` applies Ansible's `reconcile_inventory`.
struct InventoryGraph {
    struct Group {
        var name: String
        var vars: InventoryVariables = [:]
        var children: [Int] = []
        var parents: [Int] = []
        var hosts: [Int] = []
        var hostSet: Set<Int> = []
        var priority = 1
        /// The longest chain of parents above the group so far (Ansible's `Group.depth`).
        var depth = 0
    }

    /// How deep groups may nest: a deeper chain of children is refused (checking for
    /// cycles along it would take quadratic time).
    static let maxDepth = 1000

    struct Host {
        var name: String
        var vars: InventoryVariables = [:]
        /// Groups the host was put in directly, in order.
        var groups: [Int] = []
        var location: SourceLocation
    }

    private(set) var groups: [Group] = []
    private(set) var hosts: [Host] = []
    private var groupIndex: [String: Int] = [:]
    private var hostIndex: [String: Int] = [:]

    static let all = 0
    static let ungrouped = 1

    init() {
        groups = [Group(name: "all"), Group(name: "ungrouped")]
        groupIndex = ["all": 0, "ungrouped": 1]
        groups[0].children = [1]
        groups[1].parents = [0]
    }

    func group(named name: String) -> Int? { groupIndex[name] }
    func host(named name: String) -> Int? { hostIndex[name] }

    @discardableResult
    mutating func addGroup(_ name: String) -> Int {
        if let index = groupIndex[name] { return index }
        groups.append(Group(name: name))
        groupIndex[name] = groups.count - 1
        return groups.count - 1
    }

    /// Adds a host (its port, if any, only counts the first time the host is seen, as in
    /// Ansible) and puts it in `group`.
    mutating func addHost(_ name: String, group: Int?, port: Int?, at location: SourceLocation) {
        let index: Int
        if let existing = hostIndex[name] {
            index = existing
        } else {
            index = hosts.count
            hosts.append(Host(name: name, location: location))
            hostIndex[name] = index
            if let port, port != 0 { hosts[index].vars["ansible_port"] = InventoryVariable(.int(port), at: location) }
        }
        if let group, !groups[group].hostSet.contains(index) {
            groups[group].hosts.append(index)
            groups[group].hostSet.insert(index)
            hosts[index].groups.append(group)
        }
    }

    mutating func setVariable(group: Int, _ key: String, _ variable: InventoryVariable) throws(InventoryError) {
        if key == "ansible_group_priority" {
            guard let priority = variable.value.scalarText.flatMap({ Int($0) }) else {
                throw InventoryError(variable.location, "ansible_group_priority must be an integer, got \(variable.value.json())")
            }
            groups[group].priority = priority
        } else {
            groups[group].vars[key] = variable
        }
    }

    mutating func setVariable(host: Int, _ key: String, _ variable: InventoryVariable) {
        hosts[host].vars[key] = variable
    }

    /// Makes `child` a child group of `parent`; refuses an edge that closes a cycle.
    mutating func addChild(parent: Int, child: Int, at location: SourceLocation) throws(InventoryError) {
        guard parent != child else {
            throw InventoryError(location, "group '\(groups[parent].name)' cannot be a child of itself")
        }
        if groups[parent].children.contains(child) { return }
        guard child != Self.all else {
            throw InventoryError(location, "group 'all' cannot be a child of '\(groups[parent].name)': every group is already inside 'all'")
        }
        if ancestors(of: parent).contains(child) {
            throw InventoryError(location, "adding group '\(groups[child].name)' as a child of '\(groups[parent].name)' creates a cycle: '\(groups[parent].name)' is already a descendant of '\(groups[child].name)'")
        }
        groups[parent].children.append(child)
        if !groups[child].parents.contains(parent) { groups[child].parents.append(parent) }
        // Ansible's `_check_children_depth`: the child and its descendants sit below the parent.
        var level = [child]
        var depth = groups[parent].depth + 1
        while !level.isEmpty {
            var next: [Int] = []
            for group in level where groups[group].depth < depth {
                guard depth <= Self.maxDepth else {
                    throw InventoryError(location, "groups nest more than \(Self.maxDepth) levels deep below '\(groups[parent].name)'; flotilla refuses deeper nesting")
                }
                groups[group].depth = depth
                next += groups[group].children
            }
            level = next
            depth += 1
        }
    }

    func ancestors(of group: Int) -> Set<Int> {
        var seen: Set<Int> = []
        var stack = groups[group].parents
        while let next = stack.popLast() {
            if seen.insert(next).inserted { stack += groups[next].parents }
        }
        return seen
    }

    /// Ansible's `reconcile_inventory`: parentless groups become children of `all`;
    /// hosts with no group but `all` go to `ungrouped`, hosts with other groups leave it.
    mutating func reconcile() {
        for index in groups.indices where index != Self.all && groups[index].parents.isEmpty {
            groups[Self.all].children.append(index)
            groups[index].parents.append(Self.all)
        }
        for index in hosts.indices {
            let direct = hosts[index].groups
            if direct.contains(Self.ungrouped) {
                if direct.contains(where: { $0 != Self.all && $0 != Self.ungrouped }) {
                    groups[Self.ungrouped].hosts.removeAll { $0 == index }
                    groups[Self.ungrouped].hostSet.remove(index)
                    hosts[index].groups.removeAll { $0 == Self.ungrouped }
                }
            } else if direct.allSatisfy({ $0 == Self.all }) {
                addHost(hosts[index].name, group: Self.ungrouped, port: nil, at: hosts[index].location)
            }
        }
    }

    /// Each group's depth: the longest path from `all` (Ansible's `Group.depth`).
    func depths() -> [Int] {
        var depth = [Int](repeating: -1, count: groups.count)
        func visit(_ index: Int) -> Int {
            if depth[index] >= 0 { return depth[index] }
            let value = groups[index].parents.map { visit($0) + 1 }.max() ?? 0
            depth[index] = value
            return value
        }
        for index in groups.indices { _ = visit(index) }
        return depth
    }

    /// The hosts of a group and its descendants, in Ansible's order: the group's own
    /// hosts, then its children's, level by level.
    func hostsOf(group: Int) -> [Int] {
        var ordered = [group]
        var seen: Set<Int> = [group]
        var level = [group]
        while !level.isEmpty {
            var next: [Int] = []
            for parent in level {
                for child in groups[parent].children where seen.insert(child).inserted {
                    ordered.append(child)
                    next.append(child)
                }
            }
            level = next
        }
        var result: [Int] = []
        var seenHosts: Set<Int> = []
        for index in ordered {
            for host in groups[index].hosts where seenHosts.insert(host).inserted { result.append(host) }
        }
        return result
    }
}
