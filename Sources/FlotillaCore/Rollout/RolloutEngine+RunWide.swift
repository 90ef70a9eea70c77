import Foundation

// A shared run (SPEC §8.6): this controller's policy orders and limits its own hosts; what
// the other controllers' hosts say comes from the journal, in its transactions
// (``Journal/runWideStart(host:batch:own:limits:at:halt:)``,
// ``Journal/claimClusterStep(group:value:step:name:host:)``). Where the run must wait for
// another controller, the journal is asked again every half second.
extension RolloutEngine {
    /// How often a wait for other controllers asks the journal again.
    static let runWidePoll: TimeInterval = 0.5

    /// Why the whole run halts now, over every controller's hosts (see
    /// ``Journal/runWideHalt(since:maxFail:maxFailBatch:unreachableCounts:own:)``).
    func runWideHalt(since: Int) throws -> String? {
        try journal.runWideHalt(since: since, maxFail: policy.config.maxFail, maxFailBatch: policy.config.maxFailBatch,
                                unreachableCounts: policy.config.unreachableCounts, own: ownHosts)
    }

    /// Whether the shared run is paused (`flotilla ctl pause` sent to it and no `continue`
    /// since): a controller joining it, or resuming hosts of it, starts paused too.
    func runWidePaused() -> Bool {
        guard journal.sharedRun != nil else { return false }
        do {
            return try journal.lastControl(among: ["pause", "continue"]) == "pause"
        } catch {
            journalFailed("the run-wide pause", error)
            return false
        }
    }

    /// Waits until the whole run lets host `index` start (its earlier batches finished on
    /// every controller, `--max-per` room across them), which records it running; returns
    /// why it must not start at all instead: the run halted (here or on another
    /// controller), stops, or its journal failed.
    func startRunWide(_ index: Int) async -> String? {
        let host = record.hosts[index]
        while true {
            if let reason = policy.haltReason { return reason }
            if stopAfterCurrentStep || policy.isStopping || Task.isCancelled { return "the run stops" }
            if let journalProblem { return journalProblem }
            let limits = policy.config.maxPer.compactMap { rule -> Journal.RunWideLimit? in
                guard let value = rule.value(of: index) else { return nil }
                return Journal.RunWideLimit(group: rule.variable, limit: rule.limit, value: value,
                                            ownInFlight: runWideInFlight.filter { rule.value(of: $0) == value }.count)
            }
            let decision: Journal.RunWideStart
            do {
                decision = try journal.runWideStart(host: host.name, batch: batchOf[index], own: ownHosts, limits: limits, at: clock.now) {
                    try runWideSince.flatMap { try runWideHalt(since: $0) }
                }
            } catch {
                journalFailed("the start of \(host.name)", error)
                return "cannot record the start of \(host.name): \(error)"
            }
            switch decision {
            case .go:
                runWideInFlight.insert(index)
                return nil
            case .halt(let reason):
                events?.yield(.haltRun(reason))
                return reason
            case .wait(let why):
                if runWideWaitsShown.insert(why).inserted { progress(.note("waiting: \(why)")) }
            }
            // `try?`: cancelled, the sleep ends early and the next turn stops the wait.
            try? await clock.sleep(until: clock.now.addingTimeInterval(Self.runWidePoll))
        }
    }

    /// A barrier of a shared run, open among this controller's hosts: waits for the other
    /// controllers' hosts of the same group value to get there too; returns why it never
    /// opens instead (one of them ended before it, waits in a later batch, or will not
    /// start: the run halted).
    func meetAcrossControllers(_ key: BarrierKey, before step: RunStep, of run: HostRun) async -> String? {
        guard journal.sharedRun != nil else { return nil }
        var shown: String?
        while true {
            let state: Journal.RunWideBarrier
            do {
                state = try journal.meetRunWide(group: key.group, value: key.value, name: key.name, host: run.host.name,
                                                batch: batchOf[run.index], own: ownHosts)
            } catch {
                return "cannot record reaching it in the journal: \(error)"
            }
            switch state {
            case .open:
                return nil
            case .broken(let why):
                return why
            case .waiting(let why, let unstarted):
                // Halted, the run starts no host: one not started yet never gets there. The
                // halt may be another controller's, not yet told to this one's policy.
                // `try?`: a journal that cannot say now is asked again on the next turn.
                if unstarted, let halt = policy.haltReason ?? (try? runWideSince.flatMap({ try runWideHalt(since: $0) })) {
                    return "the run halted (\(halt)) with \(why)"
                }
                if shown != why {
                    run.log.note("waiting before '\(step.name)' for every host of \(key) (\(key.name)): \(why)")
                    progress(.note("\(run.host.name) waits before '\(step.name)' for every host of \(key): \(why)"))
                    shown = why
                }
            }
            if Task.isCancelled { return "the run stopped at once" }
            // `try?`: cancelled, the sleep ends early and the next turn stops the wait.
            try? await clock.sleep(until: clock.now.addingTimeInterval(Self.runWidePoll))
        }
    }

    /// A once-per-cluster step in a shared run, its cluster's lock in this controller held
    /// (`lock`): claims it across controllers, waiting while another has it in flight;
    /// skips it here once a host of the cluster, on any controller, ran it.
    func claimAcrossControllers(_ step: RunStep, number: Int, of run: HostRun, lock: AsyncSemaphore, group: String, value: String) async -> ClusterClaim {
        var shown: String?
        while true {
            let claim: Journal.RunWideClusterClaim
            do {
                claim = try journal.claimClusterStep(group: group, value: value, step: step.clusterKey, name: step.name, host: run.host.name)
            } catch {
                await lock.release()
                return .unreadable("cannot claim '\(step.name)' for \(group)=\(value) across the run's controllers: \(error)")
            }
            switch claim {
            case .held:
                return .held(lock, group: group, value: value, runWide: step.clusterKey)
            case .done(let by):
                await recordNotRun(run.host.name, number, .skipped, "done on \(by) (once per \(group))", log: run.log)
                await lock.release()
                return .doneElsewhere
            case .busy(let why):
                if shown != why {
                    run.log.note("waiting before '\(step.name)': \(why)")
                    progress(.note("\(run.host.name) waits before '\(step.name)': \(why)"))
                    shown = why
                }
            }
            if Task.isCancelled || stopAfterCurrentStep || policy.isStopping {
                await lock.release()
                return .unreadable("not started '\(step.name)': the run stopped while \(group)=\(value)'s claim was taken elsewhere")
            }
            // `try?`: cancelled, the sleep ends early and the next turn stops the wait.
            try? await clock.sleep(until: clock.now.addingTimeInterval(Self.runWidePoll))
        }
    }
}
