import Foundation

extension RolloutEngine {
    /// Stops the run without waiting for the steps in flight (a second SIGINT): records
    /// the run as `stopped` with `reason`, seals the journal so the steps in flight stay
    /// `running` there with their tokens, whatever their channels report while they are
    /// torn down, then cancels every host task, which closes their channels and sessions,
    /// and waits for them. Detached steps go on on their hosts (nothing kills them); resume
    /// re-attaches to them and records how they ended. Read-only steps die with their
    /// channels and run again on resume.
    ///
    /// Returns once every host task ended; the caller exits then (or after a deadline of
    /// its own, should a transport not honour cancellation).
    ///
    /// - Throws: the journal's error when the stop cannot be recorded; the host tasks are
    ///   cancelled all the same.
    public func stopAtOnce(reason: String) async throws {
        var recordError: Error?
        do {
            try journal.seal(state: .stopped, reason: reason, at: Date())
        } catch {
            recordError = error
        }
        let tasks = Array(hostTasks.values)
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        if let recordError { throw recordError }
    }
}
