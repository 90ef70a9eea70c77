import FlotillaCore
import Foundation
import SSH

extension Targets {
    /// `plan --preflight`: each upgrade host's pre-flight checks but the index refresh
    /// (``PreflightReport/steps(of:)``), read-only, over one session per host (through
    /// sudo when the host's settings say become), `forks` hosts at once, in host order;
    /// the first failing check ends the host's checks, as it would end its upgrade. nil
    /// for hosts not upgraded; a host that cannot be reached is a report saying why.
    public func preflight(_ plans: [HostPlan], forks: Int, timeout: Duration) async -> [PreflightReport?] {
        await Fleet.each(hosts.count, forks: forks) { [self] index in
            let steps = PreflightReport.steps(of: plans[index])
            guard plans[index].action == .upgrade, !steps.isEmpty else { return nil }
            let settings = self.settings[index]
            if let problem = settings.problems.first { return PreflightReport(checks: [], problem: problem) }
            var checks: [PreflightReport.Check] = []
            do {
                try await Fleet.withSession(options[index], through: jumps[index]) { session in
                    for step in steps {
                        let (remote, stdin) = Become.wrap(step.command, become: settings.become, user: settings.becomeUser,
                                                          password: settings.becomePassword?.value)
                        let result = try await session.run(remote, stdin: stdin, timeout: timeout)
                        let outcome = StepOutcome(exitStatus: result.timedOut ? nil : result.exitStatus, exitSignal: result.exitSignal,
                                                  stdoutTail: result.stdout.text, stderrTail: result.stderr.text, timedOut: result.timedOut)
                        let failure = result.timedOut ? "\(step.name) timed out after \(timeout.components.seconds) s"
                            : Preflight.reason(step, outcome)
                        checks.append(PreflightReport.Check(name: step.name, failure: failure))
                        if failure != nil { break }
                    }
                }
            } catch let error as SSHError {
                return PreflightReport(checks: checks, problem: error.message)
            } catch {
                return PreflightReport(checks: checks, problem: "\(error)")
            }
            return PreflightReport(checks: checks)
        }
    }
}
