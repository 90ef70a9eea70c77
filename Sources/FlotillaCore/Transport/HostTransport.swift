import Foundation

/// How the engine reaches hosts. The CLI implements it over libssh2 sessions; tests use
/// fakes. FlotillaCore never talks to libssh2 itself.
public protocol HostTransport: Sendable {
    /// Opens a session to the host with this index of the run's host list.
    /// - Throws: `TransportError` (`unreachable` when no session could be set up).
    func connect(_ host: Int) async throws -> any HostConnection
}

/// One host's session: steps run as channels on it.
public protocol HostConnection: Sendable {
    /// Runs `command` (through sudo when `become` and the host's settings allow), streaming
    /// its output to `output` as it arrives. A command that exits non-zero is a result.
    /// - Throws: `TransportError` when the session broke (`connectionLost`).
    func run(_ command: String, become: Bool, timeout: Duration?,
             output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async throws -> StepOutcome
    func close() async
    /// Runs `command` as ``run(_:become:timeout:output:)`` does, but with its stdin open
    /// until its output has ended: `answer` then gets what it printed (no exit status yet)
    /// and returns what to write to its stdin before closing it. nil, with nothing run,
    /// when this connection cannot (the default) or would run it through sudo, whose line
    /// gives the command no stdin.
    func run(_ command: String, become: Bool, timeout: Duration?, output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void,
             answer: @escaping @Sendable (StepOutcome) async -> String?) async throws -> StepOutcome?

    // Detached execution (SPEC §8.1): a mutating step runs on the host in its own session,
    // immune to the connection's end, under a token the journal recorded before it
    // started. ``DetachedShell`` implements these over ``run(_:become:timeout:output:)``
    // with ``DetachedStep``'s command lines (the default); fakes implement them natively.

    /// Starts `command` under `token` (once: a token started before is refused with
    /// ``DetachedOutcome/exists``) and streams its output until it ends, the session
    /// breaks or `timeout` passes; the step goes on on the host in the last two cases.
    func startDetached(_ token: DetachedStep.Token, command: String, become: Bool, timeout: Duration?,
                       output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome
    /// Asks the host about `token`: a step still running is streamed from these byte
    /// offsets of its stdout and stderr until it ends (or the session breaks, or `timeout`
    /// passes); a step that ended is reported with its status, without running again.
    func attach(_ token: DetachedStep.Token, stdoutOffset: Int, stderrOffset: Int, become: Bool, timeout: Duration?,
                output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void) async -> DetachedOutcome
    /// Kills the step's process group on the host (`--step-timeout`) and reports how it
    /// ended (`timedOut` set when the kill ended it).
    func killDetached(_ token: DetachedStep.Token, become: Bool) async -> DetachedOutcome
    /// Removes the host-side records of run `run` (steps still running are kept), and
    /// those of any run older than `olderThanDays` days.
    /// - Throws: `TransportError` when the host could not be asked.
    func cleanupDetached(run: String, olderThanDays: Int, become: Bool) async throws
    /// Whether this session's shell runs a step itself, once a start has told, and what
    /// its first short start line told of it (see ``DetachedStep/startInShell(_:command:facts:)``);
    /// nil (the default): not kept, every start sends the whole line.
    var shellRunner: ShellRunner? { get }
}

extension HostConnection {
    public var shellRunner: ShellRunner? { nil }

    public func run(_ command: String, become: Bool, timeout: Duration?, output: @escaping @Sendable (OutputKind, UnsafeRawBufferPointer) -> Void,
                    answer: @escaping @Sendable (StepOutcome) async -> String?) async throws -> StepOutcome? {
        nil
    }
}

/// What became of a detached step, as far as the controller could follow it.
public enum DetachedOutcome: Sendable {
    /// It ended on the host (followed to its end, or found ended): its status and output.
    case ended(StepOutcome)
    /// The session broke while following: the step may still run on the host; attach
    /// again over a new session.
    case connectionLost(String)
    /// The session was gone before the line reached the host: nothing ran (a start's step
    /// was not started); send it again over a new session.
    case notStarted(String)
    /// The wait's timeout passed while the step still ran: it goes on until killed.
    case timedOut
    /// The host never saw the token: nothing ran.
    case never
    /// The host cannot account for the token (its record lost, a reboot mid-step).
    case lost
    /// A start refused: the token was started before; attach to it.
    case exists
    /// The host side failed (no home directory, a record that cannot be made, an answer
    /// that is not the protocol's).
    case failed(String)
}

public enum OutputKind: Sendable { case stdout, stderr }

/// What a remote command did.
public struct StepOutcome: Sendable {
    public var exitStatus: Int32?
    public var exitSignal: String?
    public var stdoutTail: String
    public var stderrTail: String
    public var timedOut: Bool

    public init(exitStatus: Int32?, exitSignal: String? = nil, stdoutTail: String = "", stderrTail: String = "", timedOut: Bool = false) {
        self.exitStatus = exitStatus
        self.exitSignal = exitSignal
        self.stdoutTail = stdoutTail
        self.stderrTail = stderrTail
        self.timedOut = timedOut
    }
}

/// A transport failure, classified for the engine's reconnect policy.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// No session could be set up: refused, timeout, host key, authentication.
        case unreachable
        /// The session broke while in use.
        case connectionLost
        /// The session was gone before the command started: it did not run, and may be
        /// run over a new session.
        case notStarted
        /// Anything else (SFTP errors, a missing file).
        case other
    }

    public var kind: Kind
    public var message: String
    /// Whether retrying the connection may help (network trouble, not a host key or
    /// authentication refusal).
    public var retryable: Bool

    public init(_ kind: Kind, _ message: String, retryable: Bool = false) {
        self.kind = kind
        self.message = message
        self.retryable = retryable
    }

    public var description: String { message }
}
