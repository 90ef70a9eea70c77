import Foundation

/// Gathers a host's facts in one round trip: one POSIX shell script whose output is split
/// into marked sections, each ending with its exit status. Every command in it only reads.
public enum FactsProbe {
    static let marker = "@@flotilla-facts"

    /// The script for the catalog's st2 packages.
    public static func script(packages: [String]) -> String {
        let list = packages.filter { $0.allSatisfy { $0.isLetter || $0.isNumber || "-_.+".contains($0) } }.joined(separator: " ")
        return """
            P='\(list)'; M='\(marker)'; exec 2>&1
            s() { echo "$M section $1"; }; e() { echo "$M status $1"; }
            echo "$M 1"
            s os-release; cat /etc/os-release; r=$?; echo; e $r
            s package-manager; if command -v apt-get >/dev/null; then echo apt; elif command -v dnf >/dev/null; then echo dnf; elif command -v yum >/dev/null; then echo yum; fi; e 0
            s installed; if command -v dpkg-query >/dev/null; then dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' $P; e $?; elif command -v rpm >/dev/null; then rpm -q --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\tii\\n' $P; e $?; else echo 'neither dpkg-query nor rpm is installed'; e 127; fi
            s offered; if command -v apt-cache >/dev/null; then apt-cache madison $P; e $?; elif command -v dnf >/dev/null; then dnf list --showduplicates $P; e $?; elif command -v yum >/dev/null; then yum list --showduplicates $P; e $?; else echo 'no apt-cache, dnf or yum'; e 127; fi
            s st2ctl; if command -v st2ctl >/dev/null; then st2ctl status; e $?; else echo 'st2ctl: not installed'; e 127; fi
            s disk; df -Pk / /opt; e $?
            s leftovers; r=0; for d in /etc/st2 /etc/mistral; do if [ -d "$d" ]; then find "$d" \\( -name '*.dpkg-dist' -o -name '*.dpkg-old' -o -name '*.rpmnew' \\) -print || r=$?; fi; done; e $r
            echo "$M end"
            """
    }

    /// Facts from the probe's output (stdout and stderr are one stream: the script sends
    /// stderr to stdout). A probe that did not run at all makes every fact unreadable with
    /// the reason; a section that failed makes its own fact unreadable. `error` says why
    /// the command ended early (a timeout), if it did.
    public static func parse(output: String, exitStatus: Int32?, error: String? = nil) -> HostFacts {
        let ending = error ?? "exit \(exitStatus.map(String.init) ?? "?")"
        guard let sections = Sections(output, ending: ending) else {
            let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
            let tail = text.split(separator: "\n").suffix(3).joined(separator: " / ")
            return HostFacts(unreadable: "the facts probe did not run (\(ending))" + (tail.isEmpty ? "" : ": \(tail)"))
        }
        let installed = sections.fact("installed") { text, status in
            parseInstalled(text, status: status).mapError { failure(text, status) + " (\($0))" }
        }
        return HostFacts(
            os: sections.fact("os-release", os),
            packageManager: sections.fact("package-manager") { text, _ in packageManager(text) },
            installed: installed,
            offered: sections.fact("offered") { text, status in parseOffered(text, status: status, failure: failure(text, status)) },
            components: sections.fact("st2ctl") { text, status in components(text, status: status, installed: installed) },
            disk: sections.fact("disk", disk),
            leftoverConfigs: sections.fact("leftovers", leftovers))
    }

    /// The probe's output cut into its marked sections, each with its text and exit status.
    struct Sections {
        private var sections: [String: (text: String, status: Int32?)] = [:]
        /// How the probe ended, for the facts whose section it did not finish.
        private let ending: String

        /// Nil when the output has no start marker: the probe did not run.
        init?(_ output: String, ending: String) {
            self.ending = ending
            var current: String?
            var lines: [Substring] = []
            var started = false
            for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
                if line == "\(marker) 1" { started = true; continue }
                guard started else { continue }
                if line.hasPrefix("\(marker) section ") {
                    current = String(line.dropFirst("\(marker) section ".count))
                    lines = []
                } else if line.hasPrefix("\(marker) status "), let name = current {
                    sections[name] = (lines.joined(separator: "\n"), Int32(line.dropFirst("\(marker) status ".count)))
                    current = nil
                } else if current != nil {
                    lines.append(line)
                }
            }
            guard started else { return nil }
        }

        /// The fact read from a finished section; unreadable when the output ended first.
        func fact<Value>(_ name: String, _ read: (String, Int32?) -> Fact<Value>) -> Fact<Value> {
            guard let (text, status) = sections[name] else {
                return .unreadable("output ended before the \(name) section finished (\(ending))")
            }
            return read(text, status)
        }
    }

    /// A failed section's exit status and its last lines.
    static func failure(_ text: String, _ status: Int32?) -> String {
        let tail = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").suffix(2).joined(separator: " / ")
        return "exit \(status.map(String.init) ?? "?")" + (tail.isEmpty ? "" : ": \(tail)")
    }

    static func os(_ text: String, _ status: Int32?) -> Fact<OSInfo> {
        if status == 0, let info = OSInfo.parse(osRelease: text) { return .known(info) }
        return .unreadable("/etc/os-release: " + (status == 0 ? "no ID in it" : failure(text, status)))
    }

    static func packageManager(_ text: String) -> Fact<String> {
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty ? .unreadable("no apt-get, dnf or yum on the host") : .known(name)
    }

    static func components(_ text: String, status: Int32?, installed: Fact<[String: String]>) -> Fact<[ComponentState]> {
        if status == 127, installed.value?["st2"] == nil, installed.value != nil {
            return .known([]) // st2 is not installed: no components, nothing unknown
        }
        if status == 0, let parsed = ComponentState.parse(st2ctlStatus: text) { return .known(parsed) }
        return .unreadable("st2ctl status: " + (status == 0 ? "not the usual component list" : failure(text, status)))
    }

    static func disk(_ text: String, _ status: Int32?) -> Fact<[DiskSpace]> {
        let parsed = parseDF(text, paths: ["/", "/opt"])
        // df's own complaint, not its table, says what went wrong.
        let complaint = text.split(separator: "\n").filter { $0.hasPrefix("df:") }.joined(separator: "\n")
        return status == 0 && parsed.count == 2 ? .known(parsed) : .unreadable("df -Pk / /opt: " + failure(complaint.isEmpty ? text : complaint, status))
    }

    static func leftovers(_ text: String, _ status: Int32?) -> Fact<[String]> {
        status == 0
            ? .known(text.split(separator: "\n").map(String.init).filter { $0.hasPrefix("/") }.sorted())
            : .unreadable("find /etc/st2 /etc/mistral: " + failure(text, status))
    }

    /// `dpkg-query -W` (name, version, status abbreviation) or `rpm -q --qf` lines; lines
    /// saying a package is not installed are expected, anything else is an error.
    static func parseInstalled(_ text: String, status: Int32?) -> Fact<[String: String]> {
        // dpkg-query exits 1 and rpm with the number of packages it did not find: the
        // lines say what happened.
        guard let status, status < 126 else { return .unreadable("package query failed") }
        var installed: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            if fields.count >= 3 {
                // dpkg keeps removed packages whose config files remain ("rc"): not installed.
                if fields[2].hasPrefix("ii") || fields[2].hasPrefix("hi") { installed[String(fields[0])] = String(fields[1]) }
            } else if line.contains("no packages found matching") || line.hasSuffix("is not installed") {
                continue
            } else {
                return .unreadable("unexpected line: \(line)")
            }
        }
        return .known(installed)
    }

    /// `apt-cache madison` (`pkg | version | source`) or `yum/dnf list --showduplicates`
    /// (`name.arch  version  repo`, only the "Available Packages" part).
    static func parseOffered(_ text: String, status: Int32?, failure: String) -> Fact<[String: [String]]> {
        var offered: [String: Set<String>] = [:]
        var madison = false, inAvailable = false
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            let bars = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if bars.count == 3 {
                madison = true
                offered[bars[0], default: []].insert(bars[1])
                continue
            }
            if line.hasPrefix("Available Packages") { inAvailable = true; continue }
            if line.hasPrefix("Installed Packages") { inAvailable = false; continue }
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            if inAvailable, words.count >= 3, let dot = words[0].lastIndex(of: ".") {
                offered[String(words[0][..<dot]), default: []].insert(String(words[1]))
            }
        }
        // yum exits 1 when none of the packages is known; apt-cache madison exits 0.
        if !(status == 0 || (status == 1 && !madison && text.contains("No matching Packages"))) {
            return .unreadable("repository query: " + failure)
        }
        return .known(offered.mapValues { versions in
            versions.sorted { (StackStormVersion($0) ?? StackStormVersion("0")!) < (StackStormVersion($1) ?? StackStormVersion("0")!) }
        })
    }

    /// `df -Pk` lines, in the order of `paths`.
    static func parseDF(_ text: String, paths: [String]) -> [DiskSpace] {
        let rows = text.split(separator: "\n").filter { !$0.hasPrefix("Filesystem") }.map { $0.split(separator: " ") }
            .filter { $0.count >= 6 && Int64($0[3]) != nil }
        return zip(paths, rows).map { path, row in
            DiskSpace(path: path, mountPoint: row[5...].joined(separator: " "), availableKiB: Int64(row[3])!)
        }
    }
}

extension Fact {
    func mapError(_ transform: (String) -> String) -> Fact {
        if case .unreadable(let reason) = self { return .unreadable(transform(reason)) }
        return self
    }
}
