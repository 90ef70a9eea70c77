import FlotillaCore
import Foundation

extension Targets {
    /// Runs the facts probe on every host (read-only, one round trip each) and parses
    /// what it printed. A host that cannot be reached is a result with the reason, not
    /// an error.
    /// - Parameters:
    ///   - packages: the st2 packages whose installed and offered versions are asked for.
    ///   - timeout: how long the probe may run on a host.
    ///   - note: progress for the operator: the start, and how many hosts answered.
    public func gatherFacts(packages: [String], forks: Int, timeout: Duration,
                            note: (String) -> Void) async -> [HostFactsResult] {
        let clock = ContinuousClock()
        let start = clock.now
        note("gathering facts from \(hosts.count) host\(hosts.count == 1 ? "" : "s") (\(forks) at once)")
        let outcomes = await run(FactsProbe.script(packages: packages), forks: forks, timeout: timeout, tailLimit: 8 * 1024 * 1024)
        let results = outcomes.map { outcome -> HostFactsResult in
            guard outcome.connected else {
                return HostFactsResult(name: outcome.name, address: outcome.address, unreachable: outcome.error ?? "unreachable",
                                       facts: HostFacts(unreadable: outcome.error ?? "unreachable"))
            }
            let facts = FactsProbe.parse(output: outcome.stdout + outcome.stderr, exitStatus: outcome.exitStatus, error: outcome.error)
            return HostFactsResult(name: outcome.name, address: outcome.address, unreachable: nil, facts: facts)
        }
        let unreachable = results.filter { $0.unreachable != nil }.count
        note(String(format: "facts from %d of %d hosts in %.1f s", results.count - unreachable, results.count,
                    OutcomeView.ms(clock.now - start) / 1000))
        return results
    }
}
