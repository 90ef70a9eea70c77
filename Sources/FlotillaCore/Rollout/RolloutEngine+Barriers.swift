import Foundation

// Barriers (``Barrier``): hosts of a group meeting before a step. Decided from the record
// and the journal when the run begins, so a resumed run knows which barriers were passed:
// a barrier one of its hosts went past had opened, and nobody waits at it again.
extension RolloutEngine {
    /// One barrier of one group value.
    struct BarrierKey: Hashable, CustomStringConvertible {
        var group: String
        var value: String
        var name: String

        var description: String { "\(group)=\(value)" }
    }

    /// Who meets at a barrier, who is there, and who waits.
    struct BarrierState {
        /// Host indices, and the step each meets before.
        var participants: [Int: Int]
        var arrived: Set<Int> = []
        /// Why it will never open: a participant ended before it got there.
        var broken: String?
        /// Per host index, the host waiting there.
        var waiters: [Int: CheckedContinuation<String?, Never>] = [:]

        var isOpen: Bool { broken == nil && arrived.isSuperset(of: participants.keys) }
    }

    /// The barriers of the run's hosts (those in a batch), each participant's place, and
    /// which barriers were passed or broken before this controller started: a barrier
    /// that a participant went past (a later step started, in any state) had opened; one
    /// that a participant will never reach now (it ended in an earlier controller, or
    /// `finished` says it will not run) is broken.
    ///
    /// - Parameters:
    ///   - started: per host index, the steps recorded in any state but pending.
    ///   - finished: hosts this controller never starts, and how they ended.
    static func barrierStates(_ record: RunRecord, started: [Int: Set<Int>], finished: [Int: HostRunStatus]) -> [BarrierKey: BarrierState] {
        var states: [BarrierKey: BarrierState] = [:]
        for (index, host) in record.hosts.enumerated() where host.batch != nil {
            for (number, step) in host.steps.enumerated() {
                for barrier in step.barriers ?? [] {
                    let key = BarrierKey(group: barrier.group, value: host.groups[barrier.group] ?? host.name, name: barrier.name)
                    if states[key]?.participants[index] == nil { states[key, default: BarrierState(participants: [:])].participants[index] = number }
                }
            }
        }
        for (key, var state) in states {
            let passed = state.participants.contains { host, step in (started[host] ?? []).contains { $0 >= step } }
            if passed {
                state.arrived = Set(state.participants.keys)
            } else if let (host, status) = state.participants.keys.sorted().lazy.compactMap({ host in finished[host].map { (host, $0) } }).first {
                state.broken = "\(record.hosts[host].name) did not get there (\(status.rawValue) earlier in this run)"
            }
            states[key] = state
        }
        return states
    }

    /// Waits at the barriers before `step` until every other participant got there
    /// too; returns why the host must stop instead, when one of them broke.
    func meet(before step: RunStep, of run: HostRun) async -> String? {
        for barrier in step.barriers ?? [] {
            let key = BarrierKey(group: barrier.group, value: run.host.groups[barrier.group] ?? run.host.name, name: barrier.name)
            guard var state = barrierStates[key] else { continue }
            if let broken = state.broken { return stopped(at: step, key, broken) }
            if state.arrived.insert(run.index).inserted {
                barrierStates[key] = state
            }
            if state.isOpen {
                let waiters = state.waiters.values
                barrierStates[key]?.waiters = [:]
                for waiter in waiters { waiter.resume(returning: nil) }
                if let broken = await meetAcrossControllers(key, before: step, of: run) { return stopped(at: step, key, broken) }
                continue
            }
            let missing = state.participants.keys.filter { !state.arrived.contains($0) }.map { record.hosts[$0].name }.sorted()
            run.log.note("waiting before '\(step.name)' for every host of \(key) (\(barrier.name)): \(missing.joined(separator: ", ")) not there yet")
            let index = run.index
            // Stopping at once cancels the host tasks. The hosts awaited are in flight (they
            // start together), and their ends break the barrier; this is the safety net should
            // one of them not end, so that the stop never hangs on a wait.
            let broken = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
                    if Task.isCancelled {
                        continuation.resume(returning: "the run stopped at once")
                    } else {
                        barrierStates[key]?.waiters[index] = continuation
                    }
                }
            } onCancel: {
                Task { await self.stopWaiting(key, index) }
            }
            if let broken { return stopped(at: step, key, broken) }
            if let broken = await meetAcrossControllers(key, before: step, of: run) { return stopped(at: step, key, broken) }
        }
        return nil
    }

    private func stopWaiting(_ key: BarrierKey, _ index: Int) {
        barrierStates[key]?.waiters.removeValue(forKey: index)?.resume(returning: "the run stopped at once")
    }

    private func stopped(at step: RunStep, _ key: BarrierKey, _ why: String) -> String {
        "not started '\(step.name)': the hosts of \(key) go on only all together, and \(why)"
    }

    /// The host ended: every barrier it had yet to reach breaks, and its waiters stop.
    func leaveBarriers(_ index: Int, status: HostRunStatus, error: String?) {
        for (key, state) in barrierStates where state.participants[index] != nil && !state.arrived.contains(index) && state.broken == nil {
            let why = "\(record.hosts[index].name) did not get there (\(status.rawValue)\(error.map { ": \($0)" } ?? ""))"
            barrierStates[key]?.broken = why
            barrierStates[key]?.waiters = [:]
            for waiter in state.waiters.values { waiter.resume(returning: why) }
        }
    }
}
