import Foundation

/// `flotilla ctl`: one command to the controllers of a run, through the state dir's
/// control socket or, with a shared journal, through the journal to every controller of
/// the run wherever it runs.
public enum ControlRequest {
    /// The commands `ctl` takes; anything else first is the run.
    static let commands: Set<String> = ["pause", "continue", "abort", "skip", "set"]

    /// Sends `words` (`[RUN] COMMAND ...`; the run only through a shared journal) and
    /// returns what to print and whether the command was refused (exit 1).
    /// - Throws: ``UsageError`` when no controller listens on the state dir's socket or
    ///   it refuses this user; journal errors for a shared run that is not there.
    public static func send(_ words: [String], stateDir: URL, location: JournalLocation) throws -> (answer: String, refused: Bool) {
        if case .postgres(let journal) = location {
            var words = words
            let hasRun = words.count > 1 && !commands.contains(words[0])
            let runID = hasRun ? words.removeFirst() : nil
            do {
                let run = try SharedControl.send(words.joined(separator: " "), runID: runID, url: journal)
                return ("ok (sent to every controller of run \(run))", false)
            } catch let error as ControlSocketError {
                return ("error: \(error.message)", true)
            }
        }
        let answer: String
        do {
            answer = try ControlServer.request(stateDir: stateDir, words.joined(separator: " "))
        } catch let error as ControlSocketError {
            throw UsageError(error.message)
        }
        return (answer, answer.hasPrefix("error"))
    }
}
