import Foundation

/// The host side of "every step runs exactly once" (SPEC §8.1): the POSIX `sh` command
/// lines that start a step detached from the SSH connection, re-attach to it, kill it on
/// timeout and clean its records. Pure text: the caller sends each line as one command
/// (through `sudo … sh -c` under become; the lines use the effective user's home, so they
/// work the same as the login user and as the become user).
///
/// On the host, each attempt has files `~/.flotilla/steps/RUN/HOST.STEP.ATTEMPT.*` (the
/// directories 0700, the files 0600):
///
/// | file | written by | holds |
/// | --- | --- | --- |
/// | `.cmd` | start | a header line (``header``: `/proc/sys/kernel/random/boot_id` when it started and, when the channel's shell is the runner, its pid and start time), then the command text (never stdin, so never the become password) |
/// | `.out`, `.err` | the command | its stdout and stderr, byte for byte |
/// | `.runner` | a runner of its own | its pid and start time (`/proc/PID/stat` field 22): the runner leads the command's process group |
/// | `.following` | attach | present once a controller follows the output live |
/// | `.timedout` | kill | present when `--step-timeout` killed it |
/// | `.exit` | the runner (else whoever saw it die) | `rc=N signal=N timedout=0/1`, created once (noclobber) |
///
/// The noclobber creation of `.cmd` is the once-guard: a start re-sent after a lost answer
/// finds it and refuses (``protocolExit``) instead of running again.
///
/// What a step costs the host is kept to what a plain command costs where it can be: the
/// records are written by shell builtins, and where the channel's shell is bash leading its
/// own session (as sshd starts it) and the step is not under become, that shell is the
/// runner itself, so a short quiet step starts no process besides its own. Otherwise under
/// bash the runner is a subshell in a process group of its own (`set -m`), and elsewhere
/// (dash, or sudo's `sh -c`) a new `sh` in a session of its own (`setsid`), which the start
/// line waits for. The runner sources the command, as the shell that runs it over plain
/// SSH would; in a forked runner a command that uses `$$` gets a shell process of its own,
/// so `$$` is its own pid.
public enum DetachedStep {
    /// The exit status of a start, attach or kill whose output is not the step's own: a
    /// refused start, a step lost while streaming, no home directory. The step itself may
    /// exit 254 too, so on this status the caller asks ``query(_:)`` what happened.
    public static let protocolExit: Int32 = 254
    /// The most of each stream an attach to an ended step prints.
    public static let tailBytes = 65_536
    /// The first word of every line the protocol prints.
    public static let marker = "flotilla-step"
    /// The exit status of a start line that removed its run's records at the controller's
    /// answer (see ``start(_:command:become:thenRemovingOlderThan:)``).
    public static let removedExit: Int32 = 253

    /// One attempt of one step on one host.
    public struct Token: Hashable, Sendable {
        public var run: String
        public var host: String
        public var step: Int
        public var attempt: Int

        public init(run: String, host: String, step: Int, attempt: Int) {
            self.run = run
            self.host = host
            self.step = step
            self.attempt = attempt
        }

        /// The run's directory name under `~/.flotilla/steps`.
        public var runDirectory: String { DetachedStep.fileName(run) }
        /// The attempt's directory name inside the run's: `HOST.STEP.ATTEMPT` (numbers last,
        /// so a host name with dots stays unambiguous).
        public var name: String { "\(DetachedStep.fileName(host)).\(step).\(attempt)" }
        /// `RUN/HOST.STEP.ATTEMPT`, what the journal records before the step starts.
        public var path: String { "\(runDirectory)/\(name)" }
    }

    /// `text` as one safe file-name component: letters, digits, `_`, `-` and `.` kept, every
    /// other byte (and a leading `.`) as `%XX`; a long name is cut and ends in a hash of the
    /// whole, so it stays well under the 255-byte limit and distinct.
    public static func fileName(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            let keep = ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || "_-.".unicodeScalars.contains(scalar)
            if keep && !(byte == UInt8(ascii: ".") && encoded.isEmpty) {
                encoded.unicodeScalars.append(scalar)
            } else {
                encoded += String(format: "%%%02X", byte)
            }
        }
        if encoded.isEmpty { return "%00" }
        guard encoded.utf8.count > 120 else { return encoded }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 // FNV-1a
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(encoded.prefix(100)) + "%~" + String(hash, radix: 16)
    }

    /// Starts the step: refuses (prints `flotilla-step state=exists`, exits ``protocolExit``)
    /// when the token was started before; otherwise records it, starts `command` detached
    /// (its own process group, stdin /dev/null, SIGHUP ignored, output to the record's
    /// files) and waits for it. At its end the line prints the state line, then the whole
    /// of its stdout on stdout and of its stderr on stderr, unless a controller followed it
    /// live meanwhile (``attach(_:stdoutOffset:stderrOffset:)`` made `.following`): then
    /// the follower has it all. It exits with the command's status (128+N after signal N).
    ///
    /// Where the channel's shell is bash leading a session of its own, as sshd starts it,
    /// and the line is not under become, that shell is the runner itself (see
    /// ``inShellRunner``): the step is then as cheap as a plain command plus its records.
    /// A command that sets traps or uses `exec` (which would take the shell's own end
    /// away from the record) gets a runner of its own, as do lines under become (sudo's
    /// pty may hang up on the step when the connection ends).
    ///
    /// With `thenRemovingOlderThan` (the host's last detached step, not through sudo: the
    /// answer comes on stdin, which sudo's line closes), the line then closes its stdout and
    /// stderr (the controller has the whole output) and waits for one line on stdin: on
    /// `clean` it removes the run's records as ``cleanup(run:olderThanDays:exitStatus:)``
    /// does and exits ``removedExit``; on anything else (the controller died first: the
    /// records stay for `resume`) it exits as without. The controller answers once the
    /// journal holds the step's end, so a run needs no cleanup command after it.
    public static func start(_ token: Token, command: String, become: Bool = false, thenRemovingOlderThan days: Int? = nil) -> String {
        // A command that reads `$$` gets its own shell process; otherwise the runner is a
        // subshell (no program started) where bash can give it a process group of its own.
        let ownShell = command.contains("$$") || command.contains("${$}")
        let bashRunner = ownShell
            ? "set -m; \"${SHELL:-sh}\" -c \"$fl_runner\" flotilla-step \"$d\" \"$fl_mask\" </dev/null >/dev/null 2>&1 & set +m"
            : "set -m; ( eval \"$fl_runner\" ) </dev/null >/dev/null 2>&1 & set +m"
        let inShell = runsInShell(command: command, become: become)
        let removal = days.map { "fl_clean=\(ShellQuote.quote(cleanup(run: token.run, olderThanDays: $0, exitStatus: removedExit)))\n" } ?? ""
        return setup(token) + removal + record(token, command: command, inShellCheck: inShell) + """
            \(inShell ? inShellRunner(answering: days != nil) : "")

            """ + functions + """
            fl_runner=\(quotedRunner)
            if [ -n "$BASH_VERSION" ]; then
              set -- "$d" "$fl_mask"
              \(bashRunner)
            else
              setsid sh -c "$fl_runner" flotilla-step "$d" "$fl_mask" </dev/null >/dev/null 2>&1 &
            fi
            r=$!
            wait "$r" 2>/dev/null
            fl_died "$?"
            fl_state
            fl_report
            if [ ! -e "$d.following" ]; then
              [ -s "$d.out" ] && cat "$d.out"
              [ -s "$d.err" ] && cat "$d.err" >&2
            fi
            \(days == nil ? "" : "[ -s \"$d.exit\" ] && { \(awaitAnswer); }")
            fl_finish

            """
    }

    /// Whether ``start(_:command:become:thenRemovingOlderThan:)`` lets the channel's shell
    /// run the step itself where it can (bash leading its own session): not under become
    /// (sudo's pty may hang up on the step when the connection ends), nor for a command
    /// that sets traps or uses `exec`, which would take the shell's own end away from the
    /// record.
    public static func runsInShell(command: String, become: Bool) -> Bool {
        !become && !command.contains("trap") && !command.contains("exec")
    }

    /// The start line of the in-shell path alone, for a step that ``runsInShell(command:become:)``
    /// over a session whose shell has not declined it before: about a third of the whole
    /// line's length (no functions, no runner). Where the channel's shell cannot be the
    /// runner it declines before recording anything: it prints `flotilla-step state=never`
    /// and exits ``protocolExit``, and the whole line is sent instead. Otherwise it runs
    /// the step as the whole line's in-shell path does.
    ///
    /// Without `facts` the line finds the records' directory, the boot id and the login's
    /// umask itself and adds them to its state line (``ShellFacts``); with the facts a
    /// line before it on the same session gave, it reads none of them again.
    public static func startInShell(_ token: Token, command: String, facts: ShellFacts? = nil) -> String {
        setup(token, root: facts?.root)
            + record(token, command: command, inShellCheck: true, declining: true, facts: facts)
            + inShellRunner(answering: false, telling: facts == nil) + "\n"
    }

    /// What a session's first short start line finds out about the session's shell and
    /// adds to its state line (`root=… bootid=… umask=…`), so that the session's later
    /// short lines need not read it again: the records' directory (`~/.flotilla/steps` of
    /// the login), the boot id (`-` when unknown) and the login's umask. None of them
    /// changes within one SSH session: a reboot ends the session, and every channel of it
    /// is set up alike.
    public struct ShellFacts: Equatable, Sendable {
        public let root: String
        public let bootID: String
        public let umask: String

        /// nil unless each is plain: an absolute path of letters, digits and `._/+@-`, a
        /// boot id of letters, digits and `-`, an octal umask.
        public init?(root: String, bootID: String, umask: String) {
            func only(_ text: String, _ allowed: String, most: Int) -> Bool {
                !text.isEmpty && text.utf8.count <= most
                    && text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || allowed.unicodeScalars.contains($0)) }
            }
            guard root.hasPrefix("/"), !root.split(separator: "/").contains(".."), only(root, "._/+@-", most: 4096), only(bootID, "-", most: 64),
                  (1...4).contains(umask.count), umask.allSatisfy({ ("0"..."7").contains($0) }) else { return nil }
            self.root = root
            self.bootID = bootID
            self.umask = umask
        }
    }

    /// The start line's first part: the login's umask and the boot id (both as `facts`
    /// give them, else read), the run's directory (made under umask 077, so every directory
    /// `mkdir -p` makes is owner-only without a `chmod`), whether the channel's shell can
    /// be the runner (`$fl_r`, with `inShellCheck`), and the attempt's record (`.cmd`
    /// created once, `.out`, `.err`); `declining`: the line ends there, recording nothing,
    /// when the channel's shell cannot be the runner.
    private static func record(_ token: Token, command: String, inShellCheck check: Bool, declining: Bool = false, facts: ShellFacts? = nil) -> String {
        let maskAndBoot = facts.map { "fl_mask=\($0.umask)\nfl_b=\(ShellQuote.quote($0.bootID))" } ?? """
            fl_mask=0022
            while read -r fl_k fl_v; do [ "$fl_k" = Umask: ] && { fl_mask=$fl_v; break; }; done </proc/$$/status
            fl_b=
            read -r fl_b 2>/dev/null </proc/sys/kernel/random/boot_id
            """
        return """
            \(maskAndBoot)
            umask 077
            fl_run="$root/\(token.runDirectory)"
            if [ ! -d "$fl_run" ]; then
              mkdir -p "$fl_run" || { echo 'flotilla-step error=mkdir' >&2; exit \(protocolExit); }
            fi
            fl_r=
            \(check ? inShellCheck : "")
            \(declining ? "[ -n \"$fl_r\" ] || { echo 'flotilla-step state=never'; exit \(protocolExit); }" : "")
            set -C
            if ! { printf '\(header) %s%s\\n%s' "${fl_b:--}" "${fl_r:+ $fl_r}" \(ShellQuote.quote(command)) >"$d.cmd"; } 2>/dev/null; then
              if [ -e "$d.cmd" ]; then echo 'flotilla-step state=exists'; else echo 'flotilla-step error=create' >&2; fi
              exit \(protocolExit)
            fi
            set +C
            : >"$d.out"
            : >"$d.err"

            """
    }

    /// Ends the output and removes the run's records if the controller answers `clean`
    /// (`$fl_clean`): bash gives up after 10 minutes, sh waits for the channel's end.
    private static let awaitAnswer = #"exec >&- 2>&-; fl_a=; if [ -n "$BASH_VERSION" ]; then read -r -t 600 fl_a; else read -r fl_a; fi; [ "$fl_a" = clean ] && eval "$fl_clean""#

    /// The start line's runner in the channel's own shell, when that is bash leading its
    /// own session (so its process group is the step's, which a kill on timeout ends, and
    /// no terminal's hang-up reaches it): no process is started for it. The command runs
    /// with its streams on the record's files, which bash opens for it alone (the channel's
    /// are kept aside close-on-exec, so nothing the command leaves running holds the
    /// channel open); a connection that ends meanwhile sends the shell nothing, as sshd
    /// signals no process of a session without a terminal. The EXIT trap records the end
    /// (by `exit` in the command too, or by SIGTERM), then prints the state line and the
    /// output. Functions are defined after this part: bash reads them only when it is not
    /// taken.
    ///
    /// `telling`: the state line also gives the ``ShellFacts`` (when they are plain, so
    /// they can stand in the trap's text, where a command cannot change them).
    private static func inShellRunner(answering: Bool, telling: Bool = false) -> String { """
        if [ -n "$fl_r" ]; then
            fl_d=$d
            fl_sig=0
            \(telling ? #"fl_l=" root=$root bootid=${fl_b:--} umask=$fl_mask"; case $fl_l in *[!A-Za-z0-9._/+@=\ -]*) fl_l= ;; esac"# : "fl_l=")
            trap '' HUP
            trap 'fl_sig=15; exit 143' TERM
            trap 'fl_rc=$?; set +eu; trap - EXIT TERM; fl_to=0; [ -e "$fl_d.timedout" ] && fl_to=1; umask 077; set -C; fl_e="rc=$fl_rc signal=$fl_sig timedout=$fl_to"; { printf "%s\\n" "$fl_e" >"$fl_d.exit"; } 2>/dev/null || { fl_x=; read -r fl_x 2>/dev/null <"$fl_d.exit"; [ -z "$fl_x" ] || fl_e=$fl_x; }; printf "flotilla-step state=ended %s boot=same'"$fl_l"'\\n" "$fl_e"; if [ ! -e "$fl_d.following" ]; then [ -s "$fl_d.out" ] && cat "$fl_d.out"; [ -s "$fl_d.err" ] && cat "$fl_d.err" >&2; fi; \(answering ? awaitAnswer + "; " : "")fl_e=${fl_e#rc=}; exit "${fl_e%% *}"' EXIT
            set --
            umask "$fl_mask"
            unset h root d fl_run fl_mask fl_k fl_v fl_b fl_r fl_l
            { . "$fl_d.cmd"; } </dev/null >>"$fl_d.out" 2>>"$fl_d.err"
            exit
        fi
        """
    }

    /// Whether the channel's shell can be the runner (bash leading its own session, its
    /// process group the session's): then `$fl_r` is its pid and start time, which go in
    /// the record's header.
    private static let inShellCheck = """
        if [ -n "$BASH_VERSION" ]; then
          read -r fl_s fl_s fl_s fl_s fl_g fl_i fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_s fl_t fl_s 2>/dev/null </proc/$$/stat
          [ "$fl_g $fl_i" = "$$ $$" ] && fl_r="$$ ${fl_t:-0}"
          unset fl_s fl_g fl_i fl_t
        fi
        """

    /// The first line of `.cmd`, before the command: `# flotilla-step BOOT_ID [PID START]`,
    /// the boot id when the step started (`-` when unknown) and, when the channel's shell
    /// runs the step, that shell's pid and start time (otherwise the runner writes them to
    /// `.runner`). A comment to the shell that sources the command.
    public static let header = "# flotilla-step"

    /// The runner, in its own process group, with the record's path and the login's umask
    /// as `$1` and `$2`: it puts its pid and start time on record before the command runs,
    /// sources the command and writes `.exit` when the command ends, by `exit` or by
    /// SIGTERM (the TERM trap tells a kill from `exit 143`). None of the protocol's names
    /// stay visible to the command.
    private static let quotedRunner = ShellQuote.quote(runner)

    private static let runner = """
        fl_d=$1
        fl_m=$2
        fl_me=${BASHPID:-$$}
        fl_s=
        read -r fl_s </proc/$fl_me/stat
        fl_s=${fl_s##*) }
        set -- $fl_s
        printf '%s %s\\n' "$fl_me" "${20:-0}" >"$fl_d.runner"
        set --
        umask "$fl_m"
        fl_sig=0
        trap '' HUP
        trap 'fl_sig=15; exit 143' TERM
        trap 'fl_rc=$?; fl_to=0; [ -e "$fl_d.timedout" ] && fl_to=1; umask 077; set -C; printf "rc=%s signal=%s timedout=%s\\n" "$fl_rc" "$fl_sig" "$fl_to" >"$fl_d.exit"' EXIT
        unset -f fl_alive fl_state fl_head fl_report fl_follow fl_finish fl_died fl_kept 2>/dev/null
        unset h root d r st boot fl_run fl_mask fl_k fl_v fl_b fl_r fl_runner fl_s fl_m fl_me 2>/dev/null
        exec </dev/null >>"$fl_d.out" 2>>"$fl_d.err"
        . "$fl_d.cmd"
        """

    /// Asks the host about the token and prints one state line first (see ``State``). A
    /// running step is then followed from the given byte offsets of its stdout and stderr
    /// until it ends (and marked as followed, so its start line does not print it again),
    /// and the line exits with its status; an ended step's last ``tailBytes`` of each
    /// stream are printed and the line exits with its status (nothing runs again). `never`
    /// and `lost` exit ``protocolExit``.
    public static func attach(_ token: Token, stdoutOffset: Int = 0, stderrOffset: Int = 0) -> String {
        prelude(token) + """
            umask 077
            fl_state
            fl_report sizes
            case $st in
              running) : >"$d.following"; fl_follow \(max(0, stdoutOffset)) \(max(0, stderrOffset)); fl_finish ;;
              ended) tail -c \(tailBytes) "$d.out"; tail -c \(tailBytes) "$d.err" >&2; fl_finish ;;
              *) exit \(protocolExit) ;;
            esac

            """
    }

    /// Prints the token's state line only, and exits 0.
    public static func query(_ token: Token) -> String {
        prelude(token) + "fl_state\nfl_report sizes\nexit 0\n"
    }

    /// Ends a step the host still runs (for `--step-timeout`): marks it timed out, sends
    /// SIGTERM to its process group, SIGKILL after `grace` seconds, records the kill when
    /// nothing else did, and prints the state line (`timedout=1` when it was killed). A
    /// step not running is only reported. Exits 0 when the line reports `ended`.
    public static func kill(_ token: Token, grace: Int = 10) -> String {
        prelude(token) + """
            umask 077
            fl_state
            if [ "$st" = running ]; then
              : >"$d.timedout"
              pg=${r%% *}
              kill -TERM -"$pg" 2>/dev/null
              n=0
              while kill -0 -"$pg" 2>/dev/null && [ $n -lt \(max(0, grace) * 10) ]; do sleep 0.1; n=$((n + 1)); done
              kill -KILL -"$pg" 2>/dev/null
              n=0
              while [ ! -s "$d.exit" ] && fl_alive "$r" && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
              fl_alive "$r" || fl_died 137
              fl_state
            fi
            fl_report sizes
            [ "$st" = ended ] && exit 0
            exit \(protocolExit)

            """
    }

    /// Removes the records of run `run`, except those of steps still running (each printed
    /// as `flotilla-step kept=NAME`), and the run's directory once empty; then, only when
    /// another run's directory is there, every record older than `days` days (by the last
    /// change of its `.cmd`) except those still running. One `rm` for the run. Exits `exitStatus`.
    public static func cleanup(run: String, olderThanDays days: Int, exitStatus: Int32 = 0) -> String {
        prelude(nil) + """
            fl_dir="$root/\(fileName(run))"
            set --
            for t in "$fl_dir"/*.cmd; do
              [ -e "$t" ] || continue
              t=${t%.cmd}
              fl_kept "$t" || set -- "$@" "$t.cmd" "$t.boot" "$t.out" "$t.err" "$t.runner" "$t.following" "$t.timedout" "$t.exit"
            done
            [ -d "$fl_dir" ] && rm -fd -- "$@" "$fl_dir" 2>/dev/null
            fl_other=
            for t in "$root"/*; do [ -d "$t" ] && [ "$t" != "$fl_dir" ] && { fl_other=1; break; }; done
            [ -n "$fl_other" ] || exit \(exitStatus)
            find "$root" -mindepth 2 -maxdepth 2 -name '*.cmd' -mmin +\(max(0, days) * 1440) 2>/dev/null | while IFS= read -r t; do
              t=${t%.cmd}
              fl_kept "$t" old || rm -f "$t.cmd" "$t.boot" "$t.out" "$t.err" "$t.runner" "$t.following" "$t.timedout" "$t.exit"
            done
            for t in "$root"/*; do [ -d "$t" ] && rmdir "$t" 2>/dev/null; done
            exit \(exitStatus)

            """
    }

    /// The shell functions every line shares. `$root` is `~/.flotilla/steps` of the
    /// effective user: `$HOME` when that user owns it (sudo may keep the caller's), else
    /// the home the user database gives. A step's state: `ended` when its `.exit` is there;
    /// `running` when its runner is alive (same pid and start time, same boot); else
    /// `lost`. The state line of an ended step gives the sizes of its streams only when the
    /// caller needs them (an attach's tails start `size - tailBytes` bytes in). A read that
    /// may find no file silences stderr before opening it (`2>/dev/null <FILE`): a shell
    /// reports a failed `<FILE` on the stderr it has at that point, which is the step's.
    private static func prelude(_ token: Token?) -> String { setup(token) + functions }

    /// `$root` (as `root` gives it, from ``ShellFacts``, else found from the home directory)
    /// and the record's path `$d`.
    private static func setup(_ token: Token?, root: String? = nil) -> String {
        let found = root.map { "root=\(ShellQuote.quote($0))" } ?? """
            h=$HOME
            if [ -z "$h" ] || [ ! -O "$h" ]; then h=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6); fi
            [ -n "$h" ] || { echo 'flotilla-step error=no-home' >&2; exit \(protocolExit); }
            root="$h/.flotilla/steps"
            """
        return found + "\nd=\"$root/\(token?.path ?? "")\"\n"
    }

    private static let functions = """
        fl_alive() {
          fl_p=${1%% *}
          fl_t=${1#* }
          [ -n "$fl_p" ] && [ "$fl_t" != 0 ] && read -r fl_s 2>/dev/null </proc/"$fl_p"/stat || return 1
          fl_s=${fl_s##*) }
          set -- $fl_s
          [ "$1" != Z ] && [ "${20}" = "$fl_t" ]
        }
        fl_state() {
          st=never boot=unknown r=
          [ -e "$d.cmd" ] || return 0
          fl_now=
          read -r fl_now 2>/dev/null </proc/sys/kernel/random/boot_id
          fl_head "$d"
          if [ -s "$d.exit" ]; then st=ended; return 0; fi
          n=0
          while [ -z "$r" ] && [ "$boot" != other ] && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); fl_head "$d"; done
          if [ "$boot" != other ] && fl_alive "$r"; then st=running; return 0; fi
          # The runner is gone: whoever saw it die writes `.exit` at once.
          n=0
          while [ ! -s "$d.exit" ] && [ "$boot" != other ] && [ $n -lt 10 ]; do sleep 0.1; n=$((n + 1)); done
          if [ -s "$d.exit" ]; then st=ended; else st=lost; fi
        }
        fl_head() {
          fl_hx= fl_hy= fl_was= fl_hp= fl_ht=
          read -r fl_hx fl_hy fl_was fl_hp fl_ht 2>/dev/null <"$1.cmd"
          if [ "$fl_hx $fl_hy" != "\(header)" ]; then
            fl_was= fl_hp= fl_ht=
            read -r fl_was 2>/dev/null <"$1.boot"
          fi
          [ "$fl_was" = - ] && fl_was=
          r=
          if [ -n "$fl_hp" ]; then r="$fl_hp $fl_ht"; else read -r r 2>/dev/null <"$1.runner"; fi
          boot=unknown
          if [ -n "$fl_now" ] && [ -n "$fl_was" ]; then
            if [ "$fl_now" = "$fl_was" ]; then boot=same; else boot=other; fi
          fi
        }
        fl_report() {
          case $st in
            ended)
              fl_e=
              read -r fl_e <"$d.exit"
              fl_z=
              if [ "$1" = sizes ]; then fl_z=" out=$(($(wc -c <"$d.out"))) err=$(($(wc -c <"$d.err")))"; fi
              printf 'flotilla-step state=ended %s boot=%s%s\\n' "$fl_e" "$boot" "$fl_z" ;;
            running) printf 'flotilla-step state=running pgid=%s boot=%s\\n' "${r%% *}" "$boot" ;;
            *) printf 'flotilla-step state=%s boot=%s\\n' "$st" "$boot" ;;
          esac
        }
        fl_follow() {
          tail -c +$(($1 + 1)) -s 0.2 -f --pid="${r%% *}" "$d.out" &
          fl_fo=$!
          tail -c +$(($2 + 1)) -s 0.2 -f --pid="${r%% *}" "$d.err" >&2 &
          fl_fe=$!
          wait "$fl_fo"
          wait "$fl_fe"
        }
        fl_died() {
          [ -s "$d.exit" ] && return 0
          fl_sig=0
          [ "$1" -gt 128 ] && fl_sig=$(($1 - 128))
          fl_to=0
          [ -e "$d.timedout" ] && fl_to=1
          set -C
          { printf 'rc=%s signal=%s timedout=%s\\n' "$1" "$fl_sig" "$fl_to" >"$d.exit"; } 2>/dev/null
          set +C
        }
        fl_finish() {
          fl_state
          if [ "$st" = ended ]; then
            rc=\(protocolExit)
            . "$d.exit"
            exit "$rc"
          fi
          echo 'flotilla-step state=lost' >&2
          exit \(protocolExit)
        }
        fl_kept() {
          [ -s "$1.exit" ] && return 1
          fl_head "$1"
          if [ -n "$r" ]; then
            fl_alive "$r" || return 1
          elif [ "$2" = old ]; then
            return 1
          fi
          printf 'flotilla-step kept=%s\\n' "${1##*/}"
        }

        """

    /// The state line a query, an attach, a kill or a refused start prints first:
    /// `flotilla-step state=running|ended|never|lost|exists [rc=N signal=N timedout=0|1]
    /// [boot=same|other|unknown] [out=BYTES err=BYTES]`; unknown fields are ignored, so
    /// later versions can add some.
    public struct State: Equatable, Sendable {
        public enum Phase: String, Sendable {
            /// The host still runs it: wait and stream.
            case running
            /// It ended: record its status and output, do not run it again.
            case ended
            /// The host never saw the token: run it.
            case never
            /// Started, but neither running nor recorded (a reboot, a killed runner): unknown.
            case lost
            /// A start refused because the token was started before: query it.
            case exists
        }

        public var phase: Phase
        /// The step's exit status (128+N after signal N), for `ended`.
        public var exitStatus: Int32?
        /// The signal that ended it, nil when it exited.
        public var signal: Int32?
        /// Whether `--step-timeout` killed it.
        public var timedOut = false
        /// Whether the host booted since the step started; nil when unknown.
        public var sameBoot: Bool?
        /// The full size of its stdout and stderr on the host, for `ended`.
        public var stdoutBytes: Int?
        public var stderrBytes: Int?
        /// What a session's first short start line tells of the session's shell.
        public var facts: ShellFacts?

        public init(phase: Phase, exitStatus: Int32? = nil, signal: Int32? = nil, timedOut: Bool = false, sameBoot: Bool? = nil,
                    stdoutBytes: Int? = nil, stderrBytes: Int? = nil, facts: ShellFacts? = nil) {
            self.phase = phase
            self.exitStatus = exitStatus
            self.signal = signal
            self.timedOut = timedOut
            self.sameBoot = sameBoot
            self.stdoutBytes = stdoutBytes
            self.stderrBytes = stderrBytes
            self.facts = facts
        }

        /// Reads a state line (a trailing newline is fine); nil when it is not one, or
        /// `ended` without a whole-number `rc`.
        public static func parse<S: StringProtocol>(_ line: S) -> State? {
            let words = String(line).split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\r" })
            guard words.first == Substring(DetachedStep.marker) else { return nil }
            var fields: [Substring: Substring] = [:]
            for word in words.dropFirst() {
                guard let equals = word.firstIndex(of: "=") else { return nil }
                fields[word[..<equals]] = word[word.index(after: equals)...]
            }
            guard let phaseText = fields["state"], let phase = Phase(rawValue: String(phaseText)) else { return nil }
            var state = State(phase: phase)
            state.exitStatus = fields["rc"].flatMap { Int32($0) }
            if phase == .ended && state.exitStatus == nil { return nil }
            state.signal = fields["signal"].flatMap { Int32($0) }.flatMap { $0 == 0 ? nil : $0 }
            state.timedOut = fields["timedout"] == "1"
            state.sameBoot = fields["boot"] == "same" ? true : (fields["boot"] == "other" ? false : nil)
            state.stdoutBytes = fields["out"].flatMap { Int($0) }
            state.stderrBytes = fields["err"].flatMap { Int($0) }
            if let root = fields["root"], let bootID = fields["bootid"], let umask = fields["umask"] {
                state.facts = ShellFacts(root: String(root), bootID: String(bootID), umask: String(umask))
            }
            return state
        }
    }
}
