import Foundation

/// What the real tools say to a caller who is not root: package managers, service control
/// and the migration scripts refuse to change anything, while queries work for anyone.
/// The lab's login user reaches root only through the host's real sudo.
enum Privilege {
    /// The refusal (message and exit status) of `name` run with `arguments` by a non-root
    /// caller, or nil when the real tool would go ahead.
    static func refusal(_ name: String, _ arguments: [String], os: LabOS) -> (message: String, status: Int32)? {
        let words = arguments.filter { !$0.hasPrefix("-") }
        switch name {
        case "apt-get", "apt":
            let changing = ["install", "upgrade", "dist-upgrade", "full-upgrade", "remove", "purge", "autoremove", "reinstall"]
            let simulated = arguments.contains { ["-s", "--simulate", "--just-print", "--dry-run", "--recon", "--no-act"].contains($0) }
            switch words.first {
            case "update":
                return ("E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)\nE: Unable to lock directory /var/lib/apt/lists/", 100)
            case let command? where changing.contains(command) && !simulated:
                return ("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?", 100)
            default:
                return nil
            }
        case "dpkg":
            let changing = ["-i", "--install", "--unpack", "--configure", "-r", "--remove", "-P", "--purge", "--set-selections", "--clear-selections"]
            return arguments.contains(where: changing.contains) ? ("dpkg: error: requested operation requires superuser privilege", 2) : nil
        case "yum", "dnf":
            let changing = ["install", "update", "upgrade", "remove", "erase", "downgrade", "reinstall", "distro-sync", "autoremove", "localinstall"]
            guard let command = words.first, changing.contains(command) else { return nil }
            return os.packageManager == "dnf"
                ? ("Error: This command has to be run with superuser privileges (under the root user on most systems).", 1)
                : ("You need to be root to perform this command.", 1)
        case "rpm":
            let changing = arguments.contains { arg in
                ["--install", "--upgrade", "--freshen", "--erase", "--reinstall"].contains(arg)
                    || (arg.hasPrefix("-") && !arg.hasPrefix("--") && arg.dropFirst().first.map { "iUFe".contains($0) } == true)
            }
            return changing ? ("error: can't create transaction lock on /var/lib/rpm/.rpm.lock (Permission denied)", 1) : nil
        case "st2ctl":
            guard let action = arguments.first, ["start", "stop", "restart", "reload", "restart-component"].contains(action) else { return nil }
            if action == "reload" { return (configDenied("/etc/st2/st2.conf"), 1) }
            // st2ctl drives systemctl, which asks polkit, which no agent answers over SSH.
            let verb = action == "restart-component" ? "restart" : action
            return ("Failed to \(verb) st2api.service: Interactive authentication required.\nSee system logs and 'systemctl status st2api.service' for details.", 1)
        case "mistral-db-manage":
            return (configDenied("/etc/mistral/mistral.conf"), 1)
        case _ where name.hasPrefix("st2-migrate-"):
            return (configDenied("/etc/st2/st2.conf"), 1)
        default:
            return nil
        }
    }

    /// How oslo.config fails on a configuration file the caller cannot read.
    static func configDenied(_ file: String) -> String {
        "oslo_config.cfg.ConfigFilesPermissionDeniedError: Failed to open some config files: \(file)"
    }
}
