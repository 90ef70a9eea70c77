import ArgumentParser
import FlotillaCore
import Foundation

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Control a running run: pause, continue, abort, skip HOST, set max-parallel N.",
        discussion: """
        Talks to the controller of the state dir through its owner-only control socket; \
        with --journal postgresql://... (or $FLOTILLA_JOURNAL), to every controller of the \
        shared run, wherever it runs, through the journal. \
        pause: start no new host; continue: resume starting; abort: halt (in-flight hosts \
        finish as --on-halt says); skip HOST: never start that host; set max-parallel N.

        Examples:
          flotilla ctl pause
          flotilla ctl skip st2-07
          flotilla ctl 20261121-153000-ab12 set max-parallel 2 --state-dir /var/lib/flotilla

        Exit codes: 0 done; 1 the controller refused the command; 64 usage error or no run in progress.
        """
    )

    @OptionGroup var state: StateDirOption

    @Argument(help: ArgumentHelp("[RUN] pause | continue | abort | skip HOST | set max-parallel N", valueName: "command"))
    var words: [String]

    func run() throws {
        let url = state.url
        if case .postgres(let journal) = try state.journalLocation() {
            // Through the shared journal: every controller of the run, wherever it runs.
            var words = words
            let hasRun = words.count > 1 && !["pause", "continue", "abort", "skip", "set"].contains(words[0])
            let runID = hasRun ? words.removeFirst() : nil
            do {
                let run = try SharedControl.send(words.joined(separator: " "), runID: runID, url: journal)
                print("ok (sent to every controller of run \(run))")
            } catch let error as ControlSocketError {
                print("error: \(error.message)")
                throw ExitCode(1)
            }
            return
        }
        let answer: String
        do {
            answer = try ControlServer.request(stateDir: url, words.joined(separator: " "))
        } catch let error as ControlSocketError {
            throw ValidationError(error.message)
        }
        print(answer)
        if answer.hasPrefix("error") { throw ExitCode(1) }
    }
}
