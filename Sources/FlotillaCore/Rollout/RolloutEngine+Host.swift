import Foundation

// One host's run: its steps in order, each claimed for its cluster when it runs once per
// cluster, run over a session opened (or reopened) for it, and recorded before the next.
extension RolloutEngine {
    /// A host's run as it goes: its session, and how it ends.
    struct HostRun {
        let index: Int
        let host: RunHost
        let log: HostLog
        var connection: (any HostConnection)?
        /// Whether a step ran (or was done before a resume): a host that cannot be reached
        /// then failed, rather than being unreachable.
        var ranAStep: Bool
        var status = HostRunStatus.succeeded
        var error: String?
        /// The become modes of the detached steps it ran: where their records are.
        var detachedAs: Set<Bool> = []
        /// Whether a detached step may still run on the host, lost by the controller.
        var leftInFlight = false
        /// The removal of the run's records by the last detached step's line, answered
        /// once the journal holds that step's end.
        var removal: RecordsRemoval?

        mutating func end(_ status: HostRunStatus, _ error: String) {
            self.status = status
            self.error = error
        }
    }

    /// Where a host stands with a step that runs once per cluster.
    enum ClusterClaim {
        /// The step is not a once-per-cluster step.
        case unclaimed
        /// This host runs it, holding the cluster's lock until it is recorded (and, in a
        /// shared run, the claim across controllers on step `runWide`).
        case held(AsyncSemaphore, group: String, value: String, runWide: Int?)
        /// Another host of the cluster ran it; recorded as skipped here.
        case doneElsewhere
        /// The journal could not say whether another host ran it: the host stops.
        case unreadable(String)

    }

    /// Lets go of the cluster's lock `claim` holds, across controllers too.
    func release(_ claim: ClusterClaim) async {
        guard case .held(let lock, let group, let value, let runWide) = claim else { return }
        if let runWide {
            // The claim is the session's: should this fail, it lapses with the connection,
            // and the step's marker, recorded already, tells the others it is done.
            recordNow("the release of '\(group)=\(value)'") { [journal] in try journal.releaseClusterStep(group: group, value: value, step: runWide) }
        }
        await lock.release()
    }

    func runHost(_ index: Int) async {
        let host = record.hosts[index]
        let started = clock.now
        if journal.sharedRun != nil {
            // The run's rules let it start in the transaction that recorded it running.
            if let why = await startRunWide(index) {
                leaveBarriers(index, status: .notStarted, error: why)
                events?.yield(.hostWithdrawn(index))
                return
            }
        } else {
            _ = await durably("the start of \(host.name)") { [journal] in try journal.hostStatus(host: host.name, status: .running, error: nil, at: started) }
        }
        progress(.hostStarted(host.name))
        let log = HostLog(settings.runDirectory.appendingPathComponent("logs/\(FileName.host(host.name)).log"), clock: clock)
        if let problem = log.problem {
            settings.logger.warning("no host log", metadata: ["run.id": "\(record.id)", "host.name": "\(host.name)", "error": "\(problem)"])
        }
        let finished = done[index] ?? []
        var run = HostRun(index: index, host: host, log: log, ranAStep: !finished.isEmpty)
        for (number, step) in host.steps.enumerated() where !finished.contains(number) {
            if stopAfterCurrentStep {
                run.end(.cancelled, "stopped before '\(step.name)' (--on-halt stop)")
                break
            }
            if let why = await meet(before: step, of: run) {
                run.end(.failed, why)
                break
            }
            let claim = await claimClusterStep(step, number: number, of: run)
            if case .doneElsewhere = claim { continue }
            if case .unreadable(let why) = claim {
                run.end(.failed, why)
                break
            }
            var goOn = await connectIfNeeded(&run, before: step)
            if goOn { goOn = await executeAndRecord(step, number: number, &run, claim: claim) }
            await release(claim)
            if !goOn { break }
        }
        if let connection = run.connection, !run.leftInFlight { await removeStepRecords(on: connection, run) }
        await run.connection?.close()
        log.close()
        leaveBarriers(index, status: run.status, error: run.error)
        await hostDone(index, status: run.status, error: run.error, seconds: clock.now.timeIntervalSince(started))
    }

    /// Once per cluster: the first host of the cluster to get there runs the step, under the
    /// cluster's lock; the others wait for it and skip the step once it is recorded done.
    func claimClusterStep(_ step: RunStep, number: Int, of run: HostRun) async -> ClusterClaim {
        guard let group = step.oncePer else { return .unclaimed }
        let value = run.host.groups[group] ?? run.host.name
        let lock = clusterLock("\(group)=\(value)")
        await lock.acquire()
        // Shared: the claim across controllers reads the cluster's marker itself.
        if journal.sharedRun != nil { return await claimAcrossControllers(step, number: number, of: run, lock: lock, group: group, value: value) }
        let doneBy: String?
        do {
            doneBy = try journal.clusterStepDoneBy(group: group, value: value, step: step.clusterKey)
        } catch {
            // Not knowing is not "not done": running it here could run it twice in the cluster.
            await lock.release()
            return .unreadable("cannot read whether '\(step.name)' ran elsewhere in \(group)=\(value): \(error)")
        }
        guard let doneBy else { return .held(lock, group: group, value: value, runWide: nil) }
        await recordNotRun(run.host.name, number, .skipped, "done on \(doneBy) (once per \(group))", log: run.log)
        await lock.release()
        return .doneElsewhere
    }

    func clusterLock(_ key: String) -> AsyncSemaphore {
        if let lock = clusterLocks[key] { return lock }
        let lock = AsyncSemaphore(permits: 1)
        clusterLocks[key] = lock
        return lock
    }

    /// Opens the host's session unless it has one; false, with the host's end set, when
    /// it cannot.
    func connectIfNeeded(_ run: inout HostRun, before step: RunStep) async -> Bool {
        if run.connection == nil {
            switch await connect(run.index, log: run.log) {
            case .success(let opened):
                run.connection = opened
            case .failure(let failure):
                if run.ranAStep {
                    run.end(.failed, "lost the connection before '\(step.name)': \(failure.message)")
                } else {
                    run.end(.unreachable, failure.message)
                }
                return false
            }
        }
        run.ranAStep = true
        return true
    }

    /// Connects, retrying with backoff while the failure is one that retrying may cure.
    nonisolated func connect(_ index: Int, log: HostLog) async -> Result<any HostConnection, TransportError> {
        var delay = settings.reconnectBackoff
        var attempt = 0
        while true {
            do {
                return .success(try await transport.connect(index))
            } catch let error as TransportError {
                attempt += 1
                guard error.retryable, attempt <= settings.reconnectAttempts else { return .failure(error) }
                log.note("connect failed (\(error.message)); retry \(attempt) of \(settings.reconnectAttempts) in \(delay) s")
                settings.logger.info("reconnecting", metadata: ["host.index": "\(index)", "attempt": "\(attempt)", "error": "\(error.message)"])
                // `try?`: only cancellation ends the wait early, and host tasks are never
                // cancelled; the next attempt then comes sooner, which is harmless.
                try? await clock.sleep(for: delay)
                delay *= 2
            } catch {
                return .failure(TransportError(.other, "\(error)"))
            }
        }
    }

    /// Runs one step over the host's open session and records it; false when the host
    /// stops here (the step failed, or the journal cannot be written), with its end set.
    func executeAndRecord(_ step: RunStep, number: Int, _ run: inout HostRun, claim: ClusterClaim) async -> Bool {
        let host = run.host
        let stepStart = clock.now
        // A detached step's token is on disk before its command starts; a resumed step in
        // flight keeps the attempt it has.
        var token = reattach[run.index]?[number]
        if token == nil {
            var attempt = 0
            let detached = step.kind.runsDetached
            guard await durably("the start of '\(step.name)' on \(host.name)", { [journal] in
                attempt = try journal.stepStarted(host: host.name, step: number, at: stepStart, detached: detached)
            }) else {
                run.end(.cancelled, "not started '\(step.name)': the journal cannot be written")
                return false
            }
            if detached { token = DetachedStep.Token(run: record.id, host: host.name, step: number, attempt: attempt) }
        }
        progress(.stepStarted(host: host.name, step: step.name))
        settings.logger.debug("step started", metadata: [
            "run.id": "\(record.id)", "host.name": "\(host.name)", "step.index": "\(number)", "step.name": "\(step.name)",
            "step.command": "\(step.command)", "batch.index": "\(batchOf[run.index].map(String.init) ?? "-")",
        ])
        run.log.begin(step, number: number)
        let result = await perform(step, number: number, token: token, &run)
        let removal = run.removal
        run.removal = nil
        let finishedAt = clock.now
        let seconds = finishedAt.timeIntervalSince(stepStart)
        run.log.end(result.status, outcome: result.outcome, message: result.message, seconds: seconds)
        if result.status == .running {
            // The step may still run on the host: it stays in flight, with its token, for a resume to re-attach to.
            _ = await removal?.answer(false)
            progress(.stepFinished(host: host.name, step: step.name, status: result.status, seconds: seconds))
            run.leftInFlight = true
            run.end(.failed, "lost '\(step.name)' on the host: \(result.message ?? "no session"); it may still run there: "
                    + "`flotilla resume --retry-failed` re-attaches to it")
            return false
        }
        // A once-per-cluster step's result and its cluster's done-marker: one transaction.
        var mark: Journal.ClusterMark?
        if result.status == .succeeded, case .held(_, let group, let value, _) = claim {
            mark = Journal.ClusterMark(group: group, value: value, step: step.clusterKey)
        }
        let recorded = await durably("the end of '\(step.name)' on \(host.name)") { [journal] in
            for artifact in result.artifacts {
                try journal.artifact(host: host.name, name: artifact.name, path: artifact.path, size: artifact.size, sha256: artifact.sha256)
            }
            try journal.stepFinished(host: host.name, step: number, status: result.status, exitStatus: result.outcome?.exitStatus,
                                     stdoutTail: result.outcome?.stdoutTail ?? "", stderrTail: result.outcome?.stderrTail ?? "",
                                     error: result.message, at: finishedAt, durationMS: Int(seconds * 1000), cluster: mark)
        }
        // The journal holds the step's end: its line may remove the run's records (or keep them, if not).
        if let removal, await removal.answer(recorded) { run.detachedAs.remove(step.become) }
        progress(.stepFinished(host: host.name, step: step.name, status: result.status, seconds: seconds))
        settings.logger.debug("step finished", metadata: [
            "run.id": "\(record.id)", "host.name": "\(host.name)", "step.index": "\(number)", "step.name": "\(step.name)",
            "step.status": "\(result.status.rawValue)", "step.exit_status": "\(result.outcome?.exitStatus.map(String.init) ?? "-")",
            "step.duration_ms": "\(Int(seconds * 1000))",
        ])
        if !recorded {
            // The journal still says running: the host's record of the step is what
            // resume re-attaches to, so it stays.
            run.leftInFlight = true
            run.end(.cancelled, "stopped after '\(step.name)': the journal cannot be written")
            return false
        }
        if result.status == .unknown {
            run.end(.failed, "step '\(step.name)' is unknown: \(result.message ?? "")); "
                    + "run `flotilla resume --rerun-unknown` after checking the host")
            return false
        }
        guard result.status == .succeeded else {
            run.end(.failed, "step '\(step.name)' failed: \(result.message ?? "exit \(result.outcome?.exitStatus.map(String.init) ?? "?")")")
            if result.outcome == nil {
                // The session broke mid-step: the step is never retried blindly, and the
                // broken session is closed, not left open.
                await run.connection?.close()
                run.connection = nil
            }
            return false
        }
        return true
    }

    /// Runs the step by its kind's handler. A session found gone before the command
    /// started (the host was idle between steps) is replaced and the step run over the
    /// new one: the command never ran.
    func perform(_ step: RunStep, number: Int, token: DetachedStep.Token?, _ run: inout HostRun) async -> StepResult {
        let handler = handlers[step.kind]
        var context = StepContext(host: run.host, log: run.log, settings: settings, clock: clock)
        guard let connection = run.connection else { return StepResult(.failed, nil, "no session") }
        if let token {
            let index = run.index, log = run.log, name = run.host.name
            let attachFirst = reattach[index]?[number] == token
            // The host's last detached step removes the run's records itself, so no cleanup
            // command follows it (where the connection can: not through sudo).
            let last = run.host.steps.lastIndex { $0.kind.runsDetached } == number && !attachFirst
            let removal = last ? RecordsRemoval(olderThanDays: Self.stepRecordDays) : nil
            run.removal = removal
            let attempt = DetachedRun(token: token, attachFirst: attachFirst, connection: connection,
                                      reconnectAttempts: settings.reconnectAttempts, removal: removal,
                                      reconnect: { [self] in await connect(index, log: log) },
                                      reattached: { [self] in await recordReattached(name, number) })
            context.detached = attempt
            run.detachedAs.insert(step.become)
            let result = await handler.perform(step, on: connection, context: context)
            run.connection = attempt.connection
            return result
        }
        var result = await handler.perform(step, on: connection, context: context)
        guard result.didNotStart else { return result }
        run.log.note("the session was lost before '\(step.name)' started (\(result.message ?? "")); reconnecting")
        await connection.close()
        run.connection = nil
        switch await connect(run.index, log: run.log) {
        case .success(let opened):
            run.connection = opened
            result = await handler.perform(step, on: opened, context: context)
        case .failure(let failure):
            result.message = "lost the connection before '\(step.name)' and could not reconnect: \(failure.message)"
        }
        if result.didNotStart { result.status = .failed }
        return result
    }
}

extension RolloutEngine {
    /// Records a re-attachment; a journal that cannot take it stops the run as any
    /// transition would (the step itself is recorded when it ends).
    func recordReattached(_ host: String, _ step: Int) async {
        _ = await durably("the re-attachment to step \(step + 1) of \(host)") { [journal] in try journal.stepReattached(host: host, step: step) }
    }

    /// Removes the host-side records of the run's detached steps once the host is done
    /// with them, and any older than a week (left by a controller that died), through the
    /// host's session: best effort, said in the host log when it fails. Usually the last
    /// detached step's own line has removed them (``RecordsRemoval``); this command is for
    /// the rest: records under sudo, a last step re-attached, a host that stopped early.
    func removeStepRecords(on connection: any HostConnection, _ run: HostRun) async {
        for become in run.detachedAs.sorted(by: { !$0 && $1 }) {
            do {
                try await connection.cleanupDetached(run: record.id, olderThanDays: Self.stepRecordDays, become: become)
            } catch {
                run.log.note("cannot remove the step records on the host\(become ? " (become)" : ""): \(error)")
            }
        }
    }

    /// How old another run's step records on a host are before a run removes them.
    static let stepRecordDays = 7
}
