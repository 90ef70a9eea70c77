/// Privilege escalation as the engine and `exec` send it: the command wrapped in `sudo`.
public enum Become {
    /// The command as sent, and what goes to its stdin. Without become the command goes
    /// as it is. With a become password, sudo reads it on stdin (`-S`, no prompt); the
    /// password never appears in the command line. Without one, sudo must not ask (`-n`).
    public static func wrap(_ command: String, become: Bool, user: String, password: String?) -> (command: String, stdin: [UInt8]?) {
        guard become else { return (command, nil) }
        if let password {
            // sudo reads the password only when it asks for one: with NOPASSWD (or a cached
            // credential) the line stays on stdin, so the command gets /dev/null instead
            // and can never read, print or log it.
            let quoted = ShellQuote.quote("exec </dev/null; " + command)
            return ("sudo -S -p '' -u \(ShellQuote.quote(user)) -- sh -c \(quoted)", Array((password + "\n").utf8))
        }
        return ("sudo -n -u \(ShellQuote.quote(user)) -- sh -c \(ShellQuote.quote(command))", nil)
    }
}
