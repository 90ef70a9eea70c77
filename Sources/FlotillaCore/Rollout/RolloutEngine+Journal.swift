import Foundation

// The engine's journal writes: a step's transitions wait for their commit; the run's own
// (its state, batches, events) are written on the spot. Either way a write that fails
// stops the run, resumable once the cause is fixed, and says why (`journalProblem`).
extension RolloutEngine {
    /// Records a transition and returns once it is on disk (false if it could not be
    /// written: the run then stops). Transitions of many hosts that arrive together share
    /// one commit, so a wide run does not wait for one fsync per step.
    func durably(_ what: String, _ write: @escaping () throws -> Void) async -> Bool {
        await withCheckedContinuation { continuation in
            pendingWrites.append((what, write, continuation))
            if !committing {
                committing = true
                Task { await self.commitPending() }
            }
        }
    }

    func commitPending() async {
        while !pendingWrites.isEmpty {
            await Task.yield() // transitions already on their way join this commit
            let batch = pendingWrites
            pendingWrites = []
            let errors: [Error?]
            do {
                errors = try journal.batch(batch.map(\.write))
            } catch {
                errors = Array(repeating: error, count: batch.count)
            }
            for (item, error) in zip(batch, errors) {
                if let error { journalFailed(item.what, error) }
                item.done.resume(returning: error == nil)
            }
        }
        committing = false
    }

    /// Writes a transition of the run itself at once, without suspending, so that the
    /// actions the policy returned together are performed together.
    func recordNow(_ what: String, _ write: () throws -> Void) {
        do {
            try write()
        } catch {
            journalFailed(what, error)
        }
    }

    /// The first failed write stops the run: no host starts any more, in-flight steps end.
    func journalFailed(_ what: String, _ error: Error) {
        guard journalProblem == nil else { return }
        let problem = "cannot record \(what) in the journal: \(error)"
        journalProblem = problem
        progress(.note("\(problem); starting no new host, stopping after the steps in flight"))
        settings.logger.error("journal write failed", metadata: ["run.id": "\(record.id)", "error": "\(problem)"])
        events?.yield(.interrupt)
    }

    /// A step that does not run here (done elsewhere in its cluster).
    func recordNotRun(_ host: String, _ step: Int, _ status: StepRunStatus, _ message: String, log: HostLog) async {
        let now = clock.now
        _ = await durably("step \(step + 1) of \(host)") { [journal] in
            try journal.stepStarted(host: host, step: step, at: now)
            try journal.stepFinished(host: host, step: step, status: status, exitStatus: nil, stdoutTail: "",
                                     stderrTail: "", error: message, at: now, durationMS: 0)
        }
        log.note("step \(step + 1) skipped: \(message)")
    }
}
