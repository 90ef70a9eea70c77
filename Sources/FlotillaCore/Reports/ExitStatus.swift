/// The exit statuses of SPEC §1, the same for every command (``RunResult/exitCode(_:)``
/// gives a run's).
public enum ExitStatus: Int32, Sendable {
    /// Every targeted host ended at the goal.
    case success = 0
    /// The run finished; some hosts failed or were refused, below the threshold.
    case someHostsFailed = 1
    /// Halted by the failure threshold.
    case halted = 2
    /// Stopped by the operator or the maintenance window; resumable.
    case stopped = 3
    /// A bad flag or value, an unknown run or host.
    case usage = 64
    /// Bad input data: inventory, pattern, runbook, catalog.
    case dataError = 65
    /// Nothing could be reached.
    case unavailable = 69
    /// flotilla itself failed: a file it must write or read, a journal it cannot open.
    case software = 70
    /// Another controller holds the state dir or some of the hosts.
    case locked = 75
}
