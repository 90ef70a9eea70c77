import Foundation

/// The account flotilla runs as: what `~` stands for, and the user a jump host without
/// one logs in as (as OpenSSH does).
public enum LocalAccount {
    /// `$HOME`, else the home directory the system records.
    public static let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()

    /// The effective user's name, else `$USER`, else root.
    public static let user: String = {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return ProcessInfo.processInfo.environment["USER"] ?? "root"
    }()
}
