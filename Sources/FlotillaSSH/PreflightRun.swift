import FlotillaCore
import Foundation

extension Targets {
    /// `plan --preflight`: each upgrade host's pre-flight checks but the index refresh
    /// (``PreflightReport/steps(of:)``), read-only, over one session per host (through
    /// sudo when the host's settings say become), `forks` hosts at once, in host order;
    /// the first failing check ends the host's checks, as it would end its upgrade. nil
    /// for hosts not upgraded; a host that cannot be reached is a report saying why.
    public func preflight(_ plans: [HostPlan], forks: Int, timeout: Duration) async -> [PreflightReport?] {
        let transport = SSHTransport(targets: self)
        return await Fleet.each(hosts.count, forks: forks) { index in
            let steps = PreflightReport.steps(of: plans[index])
            guard plans[index].action == .upgrade, !steps.isEmpty else { return nil }
            // The engine's own connection: its become wrapping and its outcomes.
            let connection: any HostConnection
            do {
                connection = try await transport.connect(index)
            } catch {
                return PreflightReport(checks: [], problem: (error as? TransportError)?.message ?? "\(error)")
            }
            var checks: [PreflightReport.Check] = []
            var problem: String?
            for step in steps {
                do {
                    let outcome = try await connection.run(step.command, become: true, timeout: timeout) { _, _ in }
                    let failure = outcome.timedOut ? "\(step.name) timed out after \(timeout.components.seconds) s" : Preflight.reason(step, outcome)
                    checks.append(PreflightReport.Check(name: step.name, failure: failure))
                    if failure != nil { break }
                } catch {
                    problem = (error as? TransportError)?.message ?? "\(error)"
                    break
                }
            }
            await connection.close()
            return PreflightReport(checks: checks, problem: problem)
        }
    }

    /// `flotilla plan`: each target's plan from its facts (``plans(_:planner:strategy:)``,
    /// warnings to `warn`), batched as `options` say, with its `st2_cluster` and
    /// `--max-per` groups.
    public func planView(_ facts: [HostFactsResult], planner: UpgradePlanner, strategy: ClusterStrategy, options: RunOptions,
                         warn: (String) -> Void) -> PlanView {
        let decided = plans(facts, planner: planner, strategy: strategy)
        decided.warnings.forEach(warn)
        let entries = zip(facts, decided.plans).map { PlanView.Entry(name: $0.name, address: $0.address, plan: $1) }
        return PlanView(target: planner.options.target, entries: entries, options: options,
                        groups: groups(Set(["st2_cluster"] + options.groupVariables)), clusters: decided.clusters)
    }

    /// `plan --preflight`: runs the pre-flight checks of `view`'s upgrade hosts (these
    /// targets, in its order) and adds their reports; `timeout` is `--timeout`, raised to
    /// the 10 minutes a simulated RPM transaction may take to download the packages.
    public func preflight(_ view: inout PlanView, forks: Int, timeout: Double, note: (String) -> Void) async {
        note("running the pre-flight checks of \(view.entries.filter { $0.plan.action == .upgrade }.count) host(s)")
        let reports = await preflight(view.entries.map(\.plan), forks: forks, timeout: .milliseconds(Int(max(timeout, 600) * 1000)))
        view.preflight = Dictionary(uniqueKeysWithValues: zip(view.entries, reports).compactMap { entry, report in report.map { (entry.name, $0) } })
    }
}
