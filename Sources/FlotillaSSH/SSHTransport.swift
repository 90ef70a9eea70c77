import FlotillaCore
import Foundation
import SSH

/// The engine's transport over libssh2: one session per host for the whole run.
public struct SSHTransport: HostTransport {
    public let targets: Targets

    public init(targets: Targets) { self.targets = targets }

    public func connect(_ host: Int) async throws -> any HostConnection {
        if let problem = targets.settings[host].problems.first { throw TransportError(.unreachable, problem) }
        do {
            let session = try await Fleet.connect(targets.options[host], through: targets.jumps[host])
            return SSHConnection(session: session, settings: targets.settings[host])
        } catch let error as SSHError {
            throw Self.connectFailure(error)
        }
    }

    /// A failed connection as the engine sees it: network trouble may pass, so it is
    /// worth retrying; a refused host key, key file or credential will not.
    public static func connectFailure(_ error: SSHError) -> TransportError {
        let retryable = [SSHError.Code.connectFailed, .timeout, .protocolError, .disconnected].contains(error.code)
        return TransportError(.unreachable, error.message, retryable: retryable)
    }

    /// A failed command as the engine sees it: one that never started may run over a
    /// new session; otherwise the session broke under it. Both are worth a reconnect.
    public static func commandFailure(_ error: SSHError) -> TransportError {
        TransportError(error.code == .notStarted ? .notStarted : .connectionLost, error.message, retryable: true)
    }
}

/// One host's session for the engine.
public struct SSHConnection: HostConnection {
    let session: SSHSession
    let settings: ConnectionSettings
    public let shellRunner: ShellRunner? = ShellRunner()

    public func run(_ command: String, become: Bool, timeout: Duration?,
                    output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome {
        let (remote, stdin) = Become.wrap(command, become: become && settings.become, user: settings.becomeUser,
                                          password: settings.becomePassword?.value)
        do {
            let result = try await session.run(remote, stdin: stdin, timeout: timeout) { stream, bytes in
                output(stream == .stdout ? .stdout : .stderr, bytes)
            }
            return Self.outcome(result)
        } catch let error as SSHError {
            throw SSHTransport.commandFailure(error)
        }
    }

    public func run(_ command: String, become: Bool, timeout: Duration?, output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void,
                    answer: @escaping @Sendable (StepOutcome) async -> String?) async throws -> StepOutcome? {
        guard !(become && settings.become) else { return nil }
        do {
            let result = try await session.run(command, timeout: timeout) { stream, bytes in
                output(stream == .stdout ? .stdout : .stderr, bytes)
            } answer: { sofar in
                await answer(Self.outcome(sofar)).map { Array($0.utf8) }
            }
            return Self.outcome(result)
        } catch let error as SSHError {
            throw SSHTransport.commandFailure(error)
        }
    }

    private static func outcome(_ result: CommandResult) -> StepOutcome {
        StepOutcome(exitStatus: result.exitStatus, exitSignal: result.exitSignal, stdoutTail: result.stdout.text,
                    stderrTail: result.stderr.text, timedOut: result.timedOut)
    }

    public func close() async { await session.close() }
}
