import Foundation

extension HostLog {
    /// Why a host's log of a run cannot be shown.
    public struct ReadError: Error, CustomStringConvertible {
        /// A host or step the run does not have (a usage error), rather than a log that
        /// cannot be read.
        public var isUnknownName: Bool
        public var message: String
        public var description: String { message }
    }

    /// The log of `host` in the run `state` of `stateDir` (a note when the host never
    /// started), or only the part about `step` (its number, from 1, or its name).
    /// - Throws: ``ReadError``.
    public static func read(stateDir: URL, state: JournalState, host: String, step: String?) throws(ReadError) -> String {
        guard state.host(host) != nil else { throw ReadError(isUnknownName: true, message: "run \(state.record.id) has no host '\(host)'") }
        let log = stateDir.appendingPathComponent("runs/\(state.record.id)/logs/\(FileName.host(host)).log")
        let text: String
        if FileManager.default.fileExists(atPath: log.path) {
            do {
                text = try String(contentsOf: log, encoding: .utf8)
            } catch {
                throw ReadError(isUnknownName: false, message: "cannot read \(log.path): \(error.localizedDescription)")
            }
        } else {
            text = "(no log: the host never started)\n"
        }
        guard let step else { return text }
        let steps = state.record.hosts.first { $0.name == host }?.steps ?? []
        guard let number = Int(step).map({ $0 - 1 }) ?? steps.firstIndex(where: { $0.name == step }), steps.indices.contains(number) else {
            throw ReadError(isUnknownName: true, message: "host '\(host)' has no step '\(step)' (steps: \(steps.enumerated().map { "\($0 + 1) \($1.name)" }.joined(separator: ", ")))")
        }
        return section(of: text, step: number)
    }
}
