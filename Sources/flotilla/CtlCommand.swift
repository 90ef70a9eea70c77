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
        let (answer, refused) = try ControlRequest.send(words, stateDir: state.url, location: try state.journalLocation())
        print(answer)
        if refused { throw ExitCode(1) }
    }
}
