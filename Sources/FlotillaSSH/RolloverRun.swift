import FlotillaCore
import Foundation

/// `flotilla rollover` up to the engine (SPEC §8.5): OLD and NEW among the targets, both
/// read and planned, the run's record, and the handlers its steps run through.
public enum RolloverRun {
    /// OLD and NEW of `all` (the inventory's selection), in that order.
    /// - Throws: `FlotillaError(.usage)` naming a host the inventory lacks.
    public static func targets(_ all: Targets, from: String, to: String) throws -> Targets {
        for name in [from, to] where !all.hosts.contains(where: { $0.name == name }) {
            throw FlotillaError(.usage, "\(name) is not a host of the inventory")
        }
        return try all.ordered([from, to])
    }

    /// Reads both sides of `targets` (OLD first; through become, changing nothing) and
    /// plans; with `packsFrom`, the packs are installed from that repository.
    /// - Throws: `FlotillaError` when a side cannot be read (69 when its host cannot be
    ///   reached, else 1), or OLD's keys cannot be listed (1).
    public static func probe(_ targets: Targets, catalog: MigrationCatalog, packsFrom: String?) async throws -> RolloverPlan {
        let (from, to) = (targets.hosts[0].name, targets.hosts[1].name)
        let outcomes = await targets.run(RolloverProbe.command, forks: 2, timeout: .seconds(120))
        for outcome in outcomes where outcome.error != nil || outcome.exitStatus != 0 {
            let status: ExitStatus = outcome.connected ? .someHostsFailed : .unavailable
            throw FlotillaError(status, "cannot read \(outcome.name): \(outcome.error ?? "exit \(outcome.exitStatus.map(String.init) ?? "?"): \(outcome.stderr)")")
        }
        let found = outcomes.map { RolloverProbe.parse($0.stdout) }
        var old = RolloverSide(host: from, version: found[0].version, packs: found[0].packs)
        let new = RolloverSide(host: to, version: found[1].version, packs: found[1].packs)
        if let version = old.version {
            let reach = try targets.ordered([from])
            // The encrypted export, for the counts only: kept in memory, never written.
            let export = await reach.run(catalog.keyExportCommand(installed: version), forks: 1, timeout: .seconds(600), tailLimit: 256 << 20)[0]
            guard export.exitStatus == 0, !export.truncated, let keys = RolloverKey.parse(export: Data(export.stdout.utf8)) else {
                throw FlotillaError(.someHostsFailed, "cannot list the keys of \(from): \(export.error ?? export.stderr.split(separator: "\n").last.map(String.init) ?? "not a JSON list")")
            }
            old.keys = keys
        }
        return RolloverPlan.plan(old: old, new: new, packsFrom: packsFrom)
    }

    /// A roll-over's own rollout flags: one host at a time, no failure allowed; each step
    /// on NEW limited to `stepTimeout` (`--step-timeout` text) when given.
    /// - Throws: `RolloutFlags.FlagError` for a bad `stepTimeout`.
    public static func options(stepTimeout: String?) throws -> RunOptions {
        try RunOptions(batch: "1", canary: nil, maxParallel: nil, maxPer: [], maxFail: "0", stepTimeout: stepTimeout)
    }

    /// The record of the roll-over `plan` over `targets` (OLD first), created `now`.
    public static func record(_ plan: RolloverPlan, targets: Targets, catalog: MigrationCatalog, options: RunOptions, now: Date) -> RunRecord {
        let id = RunRecord.newID(at: now)
        let steps = plan.steps(run: id, catalog: catalog)
        let (from, to) = (targets.hosts[0].name, targets.hosts[1].name)
        let hosts = [
            RunHost(name: from, address: targets.settings[0].address, batch: nil, fromVersion: plan.old.version?.releaseString, steps: steps.old),
            RunHost(name: to, address: targets.settings[1].address, batch: nil, toVersion: plan.new.version?.releaseString, steps: steps.new),
        ]
        return RunBuilder.record(id: id, kind: .rollover, name: "rollover \(from) -> \(to)", target: plan.new.version?.releaseString,
                                 createdAt: now, hosts: hosts, options: options)
    }

    /// The handlers of a roll-over run over `targets` (the run's hosts in order: OLD first).
    public static func handlers(_ targets: Targets) -> StepHandlers {
        RolloverHandlers(connectOld: { try await SSHTransport(targets: targets).connect(0) }).handlers
    }
}

extension Targets {
    /// The handlers the steps of a run of `kind` over these targets (in the run's order) run through.
    public func handlers(for kind: RunKind) -> StepHandlers {
        kind == .rollover ? RolloverRun.handlers(self) : .standard
    }
}
