import Foundation

extension RunOptions {
    /// The arguments that select the same hosts again, for `resume`: each inventory
    /// source as an absolute path (`resume` may run from another directory), the limit
    /// pattern, the SSH client config option as given.
    public static func selectionArguments(sources: [String], limit: String?, sshConfig: String) -> [String] {
        sources.flatMap { ["-i", absolute($0)] } + (limit.map { ["--limit", $0] } ?? []) + ["--ssh-config", sshConfig]
    }

    /// The arguments that connect the same way again, for `resume`: never a secret, only
    /// the file a passphrase is read from, and whether to ask for the password.
    /// - Parameter connectTimeout: seconds.
    public static func connectionArguments(hostKeyCheck: String, connectTimeout: Double, knownHosts: String?, keyPassphraseFile: String?,
                                           askPass: Bool) -> [String] {
        var arguments = ["--host-key-check", hostKeyCheck, "--connect-timeout", String(connectTimeout)]
        if let knownHosts { arguments += ["--known-hosts", absolute(knownHosts)] }
        if let keyPassphraseFile { arguments += ["--key-passphrase-file", absolute(keyPassphraseFile)] }
        if askPass { arguments.append("--ask-pass") }
        return arguments
    }

    private static func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
}
