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
}
