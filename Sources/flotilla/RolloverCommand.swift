import ArgumentParser
import FlotillaCore
import FlotillaSSH
import Foundation

struct Rollover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Content roll-over: move an st2 instance's packs and key-value pairs to a new instance (SPEC §8.5).",
        discussion: """
        OLD and NEW are host names of the inventory. NEW must already run st2, at OLD's \
        release or newer; otherwise the roll-over is refused (exit 1) before anything runs. \
        OLD is only read: it is backed up as 'upgrade' backs up a host (key-value store, \
        datastore crypto key, /etc/st2, /etc/mistral, audit logs) into \
        STATE/runs/RUN/backups/OLD/, with an archive of the packs to copy. Then on NEW: \
        the packs OLD has and NEW lacks (not those st2 ships) are unpacked under \
        /opt/stackstorm/packs, registered (st2ctl reload --register-all) and their \
        virtualenvs set up (with --packs-from: installed from that repository with 'st2 \
        pack install' instead); OLD's keys are exported decrypted, sent to NEW in an \
        owner-only file and loaded with 'st2 key load', which encrypts the secrets with \
        NEW's own datastore key (keys written before st2 1.5 get scope system and secret \
        false); the file is removed on both sides at once. Last, NEW must hold every key \
        (name, scope, secret flag, decrypted value) and list every copied pack. Execution \
        history does not carry over: OLD's audit logs, kept with the backup, are the record.

        Every change to NEW runs detached and journaled like an upgrade step: after a \
        crash or a kill, 'flotilla resume' re-attaches to the step in flight and never \
        runs a finished one again. --dry-run prints the plan and changes nothing.

        Examples:
          flotilla rollover -i lab/inventory.ini --from st2-old --to st2-new --dry-run
          flotilla rollover -i prod/ --from st2-old.example.com --to st2-new.example.com --report rollover.json
          flotilla rollover -i prod/ --from st2-old --to st2-new --packs-from 'https://git.example.com/st2/{pack}.git'
          flotilla resume --state-dir .flotilla

        \(Flotilla.exitCodes) 75 another controller holds the state dir or one of the hosts.
        """
    )

    @OptionGroup(title: "Host selection") var selection: InventoryOptions
    @OptionGroup(title: "Connection") var connection: ConnectionOptions
    @OptionGroup(title: "Output") var output: RunOutputOptions

    @Option(help: ArgumentHelp("The instance to move the content from (only read).", valueName: "host"))
    var from: String

    @Option(help: ArgumentHelp("The instance to move the content to, already running st2 (same release or newer).", valueName: "host"))
    var to: String

    @Option(help: ArgumentHelp("Install the packs on NEW from this repository (st2 pack install) instead of copying them from OLD: {pack} in the URL is replaced by each pack's name, else the name is appended.", valueName: "git-url"))
    var packsFrom: String?

    @Option(help: ArgumentHelp("Time limit of each step on NEW (default: none).", valueName: "duration"))
    var stepTimeout: String?

    @Flag(help: "Print the plan (versions, packs to copy, keys per scope, what does not carry over) and change nothing.")
    var dryRun = false

    func validate() throws {
        if from == to { throw ValidationError("--from and --to name the same host (\(from))") }
        if selection.limit != nil { throw ValidationError("--limit does not go with rollover: --from and --to name its two hosts") }
        if let url = packsFrom, url.isEmpty || url.contains(where: { $0.isWhitespace }) {
            throw ValidationError("--packs-from must be a repository URL without spaces, e.g. https://git.example.com/packs/{pack}.git")
        }
    }

    func run() async throws {
        var selection = selection
        selection.limit = [from, to].joined(separator: ",")
        let catalog = try MigrationCatalog.bundled()
        let targets = try RolloverRun.targets(try Targets(selection, connection), from: from, to: to)
        let plan = try await RolloverRun.probe(targets, catalog: catalog, packsFrom: packsFrom)
        if dryRun {
            print(plan.rendered)
            if plan.refusal != nil { throw ExitCode(ExitStatus.someHostsFailed.rawValue) }
            return
        }
        Console.note(plan.rendered)
        if let refusal = plan.refusal { throw FlotillaError(.someHostsFailed, "roll-over refused: \(refusal)") }

        let journal = try output.state.journalLocation()
        let locks = try RunLocks(stateDir: output.stateURL)
        try locks.lockHosts(targets)
        var options = try RolloverRun.options(stepTimeout: stepTimeout)
        try options.reach(selection, connection, output)
        let record = RolloverRun.record(plan, targets: targets, catalog: catalog, options: options, now: Date())
        try await RolloutRunner(targets: targets, locks: locks, output: output, journal: journal)
            .start(record, knownFailures: [], handlers: RolloverRun.handlers(targets))
    }
}
