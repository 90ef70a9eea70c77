import Foundation

extension RunReports {
    /// Writes the run's result JSON (SPEC §6), JUnit XML and HTML page, owner-only, to
    /// each path given (nil: not asked for). A file that cannot be written does not stop
    /// the others.
    /// - Returns: the formats not written (named as `flotilla show --format` names
    ///   them), each with why.
    public static func write(_ state: JournalState, json: String?, junit: String?, html: String?)
        -> [(format: String, error: PrivateFiles.WriteError)] {
        var failures: [(format: String, error: PrivateFiles.WriteError)] = []
        for (path, format, render) in [(json, "json", { RunResult.json(state).rendered() + "\n" }), (junit, "junit", { Self.junit(state) }),
                                       (html, "html", { Self.html(state) })] {
            guard let path else { continue }
            do {
                try PrivateFiles.writeOwnerOnly(render(), to: path)
            } catch {
                failures.append((format, error))
            }
        }
        return failures
    }
}
