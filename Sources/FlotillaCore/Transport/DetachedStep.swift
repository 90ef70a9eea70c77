import Foundation

/// The host side of "every step runs exactly once" (SPEC §8.1): the POSIX `sh` command
/// lines that start a step detached from the SSH connection, re-attach to it, kill it on
/// timeout and clean its records. Pure text: the caller sends each line as one command
/// (through `sudo … sh -c` under become; the lines use the effective user's home, so they
/// work the same as the login user and as the become user).
///
/// On the host, each attempt has a directory `~/.flotilla/steps/RUN/HOST.STEP.ATTEMPT/`
/// (directories 0700, files 0600):
///
/// | file | written by | holds |
/// | --- | --- | --- |
/// | `cmd` | start | the command text (never stdin, so never the become password) |
/// | `boot`, `started` | start | `/proc/sys/kernel/random/boot_id` and the start time (epoch seconds) |
/// | `out`, `err` | the command | its stdout and stderr, byte for byte |
/// | `runner` | the runner | its pid (the runner waits for the command and writes `exit`) |
/// | `pgid` | the command's shell | the command's process group, before the command runs |
/// | `exited` | the command's shell | present when it ended by `exit` rather than a signal |
/// | `timedout` | kill | present when `--step-timeout` killed it |
/// | `exit` | the runner | `rc=N signal=N timedout=0/1 ended=EPOCH`, written by rename |
///
/// The `mkdir` of the attempt's directory is the once-guard: a start re-sent after a lost
/// answer finds the directory and refuses (``protocolExit``) instead of running again.
public enum DetachedStep {
    /// The exit status of a start, attach or kill whose output is not the step's own: a
    /// refused start, a step lost while streaming, no home directory. The step itself may
    /// exit 254 too, so on this status the caller asks ``query(_:)`` what happened.
    public static let protocolExit: Int32 = 254
    /// The most of each stream an attach to an ended step prints.
    public static let tailBytes = 65_536
    /// The first word of every line the protocol prints.
    public static let marker = "flotilla-step"

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
            let keep = byte < 0x80 && (CharacterSet.alphanumerics.contains(scalar) || "_-.".unicodeScalars.contains(scalar))
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

    /// Starts the step and streams it: refuses (prints `flotilla-step state=exists`, exits
    /// ``protocolExit``) when the token was started before; otherwise records the boot id
    /// and start time, starts `command` in its own session and process group (stdin
    /// /dev/null, SIGHUP ignored, output to files), then follows stdout on stdout and stderr
    /// on stderr, and exits with the command's status (128+N when a signal ended it).
    /// - Parameter shell: the shell that runs (sources) the command, e.g. `sh` or `bash`;
    ///   nil: the effective user's login shell (`$SHELL`, else `sh`), as sshd runs a command.
    public static func start(_ token: Token, command: String, shell: String? = "sh") -> String {
        // The command is sourced by the shell the runner waits for, so the command's own
        // `exit N` runs the EXIT trap (the `exited` marker) and its own death by a signal
        // does not: that is how 128+N from a signal is told from `exit 128+N`. The TERM
        // trap keeps bash from running the EXIT trap when killed.
        let commandShell = """
            flotilla_step=$1
            shift
            trap 'printf x >"$flotilla_step/exited"' EXIT
            trap 'trap - EXIT TERM; kill -TERM $$' TERM
            printf '%s\\n' "$$" >"$flotilla_step/pgid.tmp" && mv "$flotilla_step/pgid.tmp" "$flotilla_step/pgid"
            . "$flotilla_step/cmd"
            """
        // The runner stays outside the command's process group, so a kill of the group
        // leaves it to write the exit record; it alone writes `exit`. Both pids are on
        // record before the command runs, so whoever sees its output can find them.
        let runner = """
            d=$1
            trap '' HUP
            printf '%s\\n' "$$" >"$d/runner.tmp" && mv "$d/runner.tmp" "$d/runner"
            setsid \(shell.map(ShellQuote.quote) ?? "\"${SHELL:-sh}\"") -c \(ShellQuote.quote(commandShell)) sh "$d" </dev/null >>"$d/out" 2>>"$d/err" &
            c=$!
            wait "$c"
            rc=$?
            sig=0
            if [ ! -e "$d/exited" ] && [ "$rc" -gt 128 ]; then sig=$((rc - 128)); fi
            to=0
            if [ -e "$d/timedout" ]; then to=1; fi
            printf 'rc=%s signal=%s timedout=%s ended=%s\\n' "$rc" "$sig" "$to" "$(date +%s)" >"$d/exit.tmp" && mv "$d/exit.tmp" "$d/exit"
            """
        return prelude(token) + """
            mkdir -p "$root/\(token.runDirectory)" && chmod 700 "$root" "$root/\(token.runDirectory)" || { echo 'flotilla-step error=mkdir' >&2; exit \(protocolExit); }
            if ! mkdir "$d" 2>/dev/null; then
              if [ -d "$d" ]; then echo 'flotilla-step state=exists'; else echo 'flotilla-step error=mkdir' >&2; fi
              exit \(protocolExit)
            fi
            printf '%s' \(ShellQuote.quote(command)) >"$d/cmd"
            cat /proc/sys/kernel/random/boot_id >"$d/boot" 2>/dev/null
            date +%s >"$d/started"
            : >"$d/out"
            : >"$d/err"
            setsid sh -c \(ShellQuote.quote(runner)) flotilla-step "$d" </dev/null >/dev/null 2>&1 &
            follow 0 0 $!
            finish

            """
    }

    /// Asks the host about the token and prints one state line first (see ``State``). A
    /// running step is then followed from the given byte offsets of its stdout and stderr
    /// until it ends, and the line exits with its status; an ended step's last
    /// ``tailBytes`` of each stream are printed and the line exits with its status (nothing
    /// runs again). `never` and `lost` exit ``protocolExit``.
    public static func attach(_ token: Token, stdoutOffset: Int = 0, stderrOffset: Int = 0) -> String {
        prelude(token) + """
            state
            report
            case $st in
              running) follow \(max(0, stdoutOffset)) \(max(0, stderrOffset)) "$r"; finish ;;
              ended) tail -c \(tailBytes) "$d/out"; tail -c \(tailBytes) "$d/err" >&2; finish ;;
              *) exit \(protocolExit) ;;
            esac

            """
    }

    /// Prints the token's state line only, and exits 0.
    public static func query(_ token: Token) -> String {
        prelude(token) + "state\nreport\nexit 0\n"
    }

    /// Ends a step the host still runs (for `--step-timeout`): marks it timed out, sends
    /// SIGTERM to its process group, SIGKILL after `grace` seconds, waits for the runner's
    /// exit record, and prints the state line (`timedout=1` when it was killed). A step not
    /// running is only reported. Exits 0 when the line reports `ended`.
    public static func kill(_ token: Token, grace: Int = 10) -> String {
        prelude(token) + """
            state
            if [ "$st" = running ]; then
              : >"$d/timedout"
              pg=$(cat "$d/pgid" 2>/dev/null)
              n=0
              while [ -z "$pg" ] && alive "$r" "$d" && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); pg=$(cat "$d/pgid" 2>/dev/null); done
              if [ -n "$pg" ]; then
                kill -TERM -"$pg" 2>/dev/null
                n=0
                while kill -0 -"$pg" 2>/dev/null && [ $n -lt \(max(0, grace) * 10) ]; do sleep 0.1; n=$((n + 1)); done
                kill -KILL -"$pg" 2>/dev/null
              fi
              n=0
              while [ ! -f "$d/exit" ] && alive "$r" "$d" && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
              state
            fi
            report
            [ "$st" = ended ] && exit 0
            exit \(protocolExit)

            """
    }

    /// Removes the records of run `run`, except those of steps still running (each printed
    /// as `flotilla-step kept=NAME`). Exits 0.
    public static func cleanup(run: String) -> String {
        prelude(nil) + """
            for t in "$root/\(fileName(run))"/*; do
              keep_or_remove "$t"
            done
            rmdir "$root/\(fileName(run))" 2>/dev/null
            exit 0

            """
    }

    /// Removes every record older than `days` days (by its directory's last change), except
    /// those of steps still running. Exits 0.
    public static func cleanup(olderThanDays days: Int) -> String {
        prelude(nil) + """
            for t in "$root"/*/*; do
              [ -n "$(find "$t" -maxdepth 0 -mmin +\(max(0, days) * 1440) 2>/dev/null)" ] && keep_or_remove "$t" old
            done
            for t in "$root"/*; do rmdir "$t" 2>/dev/null; done
            exit 0

            """
    }

    /// The shell functions every line shares. `$root` is `~/.flotilla/steps` of the
    /// effective user: `$HOME` when that user owns it (sudo may keep the caller's), else
    /// the home the user database gives.
    private static func prelude(_ token: Token?) -> String {
        """
        umask 077
        h=$HOME
        if [ -z "$h" ] || [ ! -O "$h" ]; then h=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6); fi
        [ -n "$h" ] || { echo 'flotilla-step error=no-home' >&2; exit \(protocolExit); }
        root="$h/.flotilla/steps"
        d="$root/\(token?.path ?? "")"
        alive() {
          [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\\0' '\\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$2"
        }
        state() {
          st=never boot=unknown r=
          [ -d "$d" ] || return 0
          now=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
          was=$(cat "$d/boot" 2>/dev/null)
          if [ -n "$now" ] && [ -n "$was" ]; then
            if [ "$now" = "$was" ]; then boot=same; else boot=other; fi
          fi
          if [ -f "$d/exit" ]; then st=ended; return 0; fi
          r=$(cat "$d/runner" 2>/dev/null)
          n=0
          while [ -z "$r" ] && [ "$boot" != other ] && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); r=$(cat "$d/runner" 2>/dev/null); done
          if [ "$boot" != other ] && alive "$r" "$d"; then st=running; return 0; fi
          if [ -f "$d/exit" ]; then st=ended; else st=lost; fi
        }
        report() {
          case $st in
            ended) printf 'flotilla-step state=ended %s boot=%s out=%s err=%s\\n' "$(cat "$d/exit")" "$boot" $(($(wc -c <"$d/out"))) $(($(wc -c <"$d/err"))) ;;
            running) printf 'flotilla-step state=running pgid=%s boot=%s\\n' "$(cat "$d/pgid" 2>/dev/null)" "$boot" ;;
            *) printf 'flotilla-step state=%s boot=%s\\n' "$st" "$boot" ;;
          esac
        }
        follow() {
          tail -c +$(($1 + 1)) -s 0.2 -f --pid="$3" "$d/out" &
          fo=$!
          tail -c +$(($2 + 1)) -s 0.2 -f --pid="$3" "$d/err" >&2 &
          fe=$!
          wait "$fo"
          wait "$fe"
        }
        finish() {
          if [ -f "$d/exit" ]; then
            rc=\(protocolExit)
            . "$d/exit"
            exit "$rc"
          fi
          echo 'flotilla-step state=lost' >&2
          exit \(protocolExit)
        }
        keep_or_remove() {
          [ -d "$1" ] || return 0
          if [ -f "$1/exit" ]; then rm -rf "$1"; return 0; fi
          if [ -f "$1/runner" ]; then
            alive "$(cat "$1/runner")" "$1" || { rm -rf "$1"; return 0; }
          elif [ "$2" = old ]; then
            rm -rf "$1"
            return 0
          fi
          printf 'flotilla-step kept=%s\\n' "${1##*/}"
        }

        """
    }

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

        public init(phase: Phase, exitStatus: Int32? = nil, signal: Int32? = nil, timedOut: Bool = false, sameBoot: Bool? = nil,
                    stdoutBytes: Int? = nil, stderrBytes: Int? = nil) {
            self.phase = phase
            self.exitStatus = exitStatus
            self.signal = signal
            self.timedOut = timedOut
            self.sameBoot = sameBoot
            self.stdoutBytes = stdoutBytes
            self.stderrBytes = stderrBytes
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
            return state
        }
    }
}
