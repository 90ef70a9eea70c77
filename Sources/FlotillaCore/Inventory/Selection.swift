import Foundation

extension SSHConfig {
    /// The OpenSSH client config `--ssh-config` names: `none` reads none, a leading `~`
    /// is the home directory, and the default `~/.ssh/config` may be missing (nil).
    /// - Throws: `InventoryError` for another file that is missing or for a bad config.
    public static func load(option: String, home: String) throws -> SSHConfig? {
        guard option != "none" else { return nil }
        let path = option == "~" ? home : (option.hasPrefix("~/") ? home + option.dropFirst() : option)
        if FileManager.default.fileExists(atPath: path) { return try load(path: path, home: home) }
        guard option == "~/.ssh/config" else { throw InventoryError(SourceLocation(file: path), "no such SSH config file") }
        return nil
    }
}

extension Inventory {
    /// Shell completions of a host pattern being typed: the group and host names that
    /// start with its last part (after `:`, `,`, `&` or `!`), with what comes before kept.
    public func completions(of prefix: String) -> [String] {
        let cut = prefix.lastIndex { ":,&!".contains($0) }.map { prefix.index(after: $0) } ?? prefix.startIndex
        let head = String(prefix[..<cut]), tail = String(prefix[cut...])
        // Quiet: a completion never prints an error, so hosts that cannot be listed are left out.
        let names = groupNames + ((try? select(nil))?.map(\.name) ?? [])
        return names.filter { $0.hasPrefix(tail) && $0 != "all" }.map { head + $0 }
    }
}
