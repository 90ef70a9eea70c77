import FlotillaCore
import Foundation
import SSH

/// The engine's transport over libssh2: one session per host for the whole run.
struct SSHTransport: HostTransport {
    let targets: Targets

    func connect(_ host: Int) async throws -> any HostConnection {
        if let problem = targets.settings[host].problems.first { throw TransportError(.unreachable, problem) }
        do {
            let session = try await Fleet.connect(targets.options[host], through: targets.jumps[host])
            return SSHConnection(session: session, settings: targets.settings[host])
        } catch let error as SSHError {
            // Network trouble may pass; a refused key or credential will not.
            let retryable = [SSHError.Code.connectFailed, .timeout, .protocolError, .disconnected].contains(error.code)
            throw TransportError(.unreachable, error.message, retryable: retryable)
        }
    }
}

struct SSHConnection: HostConnection {
    let session: SSHSession
    let settings: ConnectionSettings

    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        let (remote, stdin) = Self.wrap(command, become: become && settings.become, settings: settings)
        do {
            let result = try await session.run(remote, stdin: stdin, timeout: timeout) { stream, bytes in
                output(stream == .stdout ? .stdout : .stderr, bytes)
            }
            return StepOutcome(exitStatus: result.exitStatus, exitSignal: result.exitSignal, stdoutTail: result.stdout.text,
                               stderrTail: result.stderr.text, timedOut: result.timedOut)
        } catch let error as SSHError {
            throw TransportError(error.code == .notStarted ? .notStarted : .connectionLost, error.message, retryable: true)
        }
    }

    /// The command as sent: through `sudo` when become is on; the become password, if
    /// any, goes to sudo on stdin, never into the command line.
    static func wrap(_ command: String, become: Bool, settings: ConnectionSettings) -> (String, [UInt8]?) {
        guard become else { return (command, nil) }
        if let password = settings.becomePassword {
            // sudo reads the password only when it asks for one: with NOPASSWD (or a cached
            // credential) the line stays on stdin, so the command gets /dev/null instead
            // and can never read, print or log it.
            let quoted = ShellQuote.quote("exec </dev/null; " + command)
            return ("sudo -S -p '' -u \(ShellQuote.quote(settings.becomeUser)) -- sh -c \(quoted)", Array((password.value + "\n").utf8))
        }
        return ("sudo -n -u \(ShellQuote.quote(settings.becomeUser)) -- sh -c \(ShellQuote.quote(command))", nil)
    }

    func fetch(glob: String, into directory: URL) async throws -> [String] {
        // The shell expands the glob; only regular files are listed, one per line.
        let list = try await session.run("for f in \(glob); do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done; true")
        var fetched: [String] = []
        for path in list.stdout.text.split(separator: "\n").map(String.init) where !path.isEmpty {
            let local = directory.appendingPathComponent(URL(fileURLWithPath: path).lastPathComponent)
            do {
                _ = try await session.download(path, to: local.path)
            } catch let error as SSHError {
                throw TransportError(.other, error.message)
            }
            chmod(local.path, 0o600)
            fetched.append(path)
        }
        return fetched
    }

    func close() async { await session.close() }
}
