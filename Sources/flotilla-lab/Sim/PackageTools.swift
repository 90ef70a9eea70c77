import FlotillaCore
import Foundation

/// What both package-manager families share: resolving requests against the host's
/// repositories and applying an upgrade to the simulated state.
enum Packages {
    struct Change {
        var package: String
        var from: String?
        var to: String
    }

    static let conffiles = ["st2": "/etc/st2/st2.conf", "st2mistral": "/etc/mistral/mistral.conf"]

    /// Versions of `package` the repositories offer, oldest first.
    static func offered(_ state: HostState, _ package: String) -> [String] {
        (state.available[package] ?? []).sorted { StackStormVersion($0)! < StackStormVersion($1)! }
    }

    static func knows(_ state: HostState, _ package: String) -> Bool {
        state.packages[package] != nil || !(state.available[package] ?? []).isEmpty
    }

    static func isNewer(_ a: String, than b: String?) -> Bool {
        guard let b else { return true }
        return StackStormVersion(a)! > StackStormVersion(b)!
    }

    /// Applies package changes: versions, history, config files left beside the live ones
    /// (`leftoverSuffix`, written into the host's /etc), shipped scripts, and, for RPM, the
    /// %postun restart of services that were still running.
    static func apply(_ changes: [Change], tool: String, leftoverSuffix: String?, rpmRestart: Bool, sim: SimContext) throws {
        let catalog = try sim.catalog()
        try sim.store.update { state in
            for change in changes {
                state.packages[change.package] = change.to
                state.packageHistory.append(.init(at: Date(), tool: tool, package: change.package, from: change.from, to: change.to))
                if change.package == "st2mistral", change.from == nil {
                    state.mistral = .init(schema: change.to, populated: true, tablesAhead: false)
                }
                if let suffix = leftoverSuffix, let conf = conffiles[change.package], change.from != nil {
                    let leftover = conf + suffix
                    let live = (try? String(contentsOfFile: conf, encoding: .utf8)) ?? ""
                    let packaged = "# \(change.package) \(change.to) packaged configuration\n"
                    if suffix == ".dpkg-old" {
                        try? live.write(toFile: leftover, atomically: true, encoding: .utf8)
                        try? packaged.write(toFile: conf, atomically: true, encoding: .utf8)
                    } else {
                        try? packaged.write(toFile: leftover, atomically: true, encoding: .utf8)
                    }
                    if !state.leftoverConfigs.contains(leftover) { state.leftoverConfigs.append(leftover) }
                }
            }
            if rpmRestart, !state.services.isEmpty {
                state.stopServices()
                state.startServices()
            }
            try syncShippedScripts(state: state, catalog: catalog, optRoot: URL(fileURLWithPath: "/opt"), executable: sim.config.executable)
        }
    }

    /// The changes whose new version needs what the repositories lack (`unmet_dependency`).
    static func unmet(_ changes: [Change], _ sim: SimContext) -> [(change: Change, dependency: String)] {
        changes.compactMap { change in sim.config.spec.faults.unmetDependency[change.package].map { (change, $0) } }
    }

    /// Reads the answer to an interactive prompt from stdin; nil at end of input.
    static func prompt(_ question: String) -> String? {
        FileHandle.standardOutput.write(Data(question.utf8))
        return readLine()
    }
}

/// apt-get / apt, apt-cache, dpkg-query and dpkg.
enum AptTools {
    static func repo(_ os: LabOS) -> String { "https://packagecloud.io/StackStorm/stable/ubuntu \(os.codename)/main amd64 Packages" }

    static func aptGet(_ sim: inout SimContext) throws -> Int32 {
        guard sim.os.packageManager == "apt" else { return sim.notFound() }
        var yes = false, onlyUpgrade = false, allowDowngrades = false, simulate = false
        var dpkgOptions: [String] = []
        var words: [String] = []
        var args = sim.arguments[...]
        while let arg = args.popFirst() {
            switch arg {
            case "-y", "--yes", "--assume-yes", "-qy", "-yq": yes = true
            case "--only-upgrade": onlyUpgrade = true
            case "--allow-downgrades": allowDowngrades = true
            case "-s", "--simulate", "--just-print", "--dry-run", "--recon", "--no-act": simulate = true
            case "-o", "--option": dpkgOptions.append(args.popFirst() ?? "")
            case _ where arg.hasPrefix("-o"): dpkgOptions.append(String(arg.dropFirst(2)))
            case _ where arg.hasPrefix("-"): continue
            default: words.append(arg)
            }
        }
        guard let command = words.first else {
            sim.out("apt 2.0.9 (amd64)\nUsage: apt-get [options] command")
            return 1
        }
        switch command {
        case "update":
            return update(sim)
        case "install", "upgrade":
            break
        default:
            sim.err("E: Invalid operation \(command)")
            return 100
        }
        let state = try sim.store.read()
        sim.out("Reading package lists...\nBuilding dependency tree...\nReading state information...")
        var requests = Array(words.dropFirst())
        if command == "upgrade" { requests = state.packages.keys.sorted() }
        var changes: [Packages.Change] = []
        for request in requests {
            let parts = request.split(separator: "=", maxSplits: 1).map(String.init)
            let package = parts[0]
            guard Packages.knows(state, package) else {
                sim.err("E: Unable to locate package \(package)")
                return 100
            }
            let offered = Packages.offered(state, package)
            let target: String
            if parts.count == 2 {
                guard offered.contains(parts[1]) || state.packages[package] == parts[1] else {
                    sim.err("E: Version '\(parts[1])' for '\(package)' was not found")
                    return 100
                }
                target = parts[1]
            } else {
                guard let newest = offered.last else { sim.err("E: Package '\(package)' has no installation candidate"); return 100 }
                target = newest
            }
            let installed = state.packages[package]
            if installed == nil, onlyUpgrade || command == "upgrade" {
                sim.out("Skipping \(package), it is not installed and only upgrades are requested.")
                continue
            }
            if installed == target || (installed != nil && command == "upgrade" && !Packages.isNewer(target, than: installed)) {
                sim.out("\(package) is already the newest version (\(installed!)).")
                continue
            }
            if let installed, !Packages.isNewer(target, than: installed), !allowDowngrades {
                sim.err("E: Packages were downgraded and -y was used without --allow-downgrades.")
                return 100
            }
            changes.append(.init(package: package, from: installed, to: target))
        }
        let unmet = Packages.unmet(changes, sim)
        if !unmet.isEmpty {
            sim.out("""
                Some packages could not be installed. This may mean that you have
                requested an impossible situation or if you are using the unstable
                distribution that some required packages have not yet been created
                or been moved out of Incoming.
                The following information may help to resolve the situation:

                The following packages have unmet dependencies:
                """)
            for (change, dependency) in unmet { sim.out(" \(change.package) : Depends: \(dependency) but it is not installable") }
            sim.err("E: Unable to correct problems, you have held broken packages.")
            return 100
        }
        if simulate, geteuid() != 0 {
            sim.out("NOTE: This is only a simulation!\n      apt-get needs root privileges for real execution.\n      Keep also in mind that locking is deactivated,\n      so don't depend on the relevance to the real current situation!")
        }
        let upgraded = changes.filter { $0.from != nil }, fresh = changes.filter { $0.from == nil }
        if !fresh.isEmpty { sim.out("The following NEW packages will be installed:\n  " + fresh.map(\.package).joined(separator: " ")) }
        if !upgraded.isEmpty { sim.out("The following packages will be upgraded:\n  " + upgraded.map(\.package).joined(separator: " ")) }
        sim.out("\(upgraded.count) upgraded, \(fresh.count) newly installed, 0 to remove and 0 not upgraded.")
        guard !changes.isEmpty else { return 0 }
        if simulate {
            let origin = "packagecloud.io/StackStorm/stable/ubuntu \(sim.os.codename) [amd64]"
            for change in changes { sim.out("Inst \(change.package)\(change.from.map { " [\($0)]" } ?? "") (\(change.to) \(origin))") }
            for change in changes { sim.out("Conf \(change.package) (\(change.to) \(origin))") }
            return 0
        }
        sim.out("Need to get \(changes.count * 61) MB of archives.\nAfter this operation, 1,024 kB of additional disk space will be used.")
        if !yes {
            let answer = Packages.prompt("Do you want to continue? [Y/n] ")
            guard let answer, answer.isEmpty || answer.lowercased().hasPrefix("y") else {
                sim.out("Abort.")
                return 1
            }
        }
        for (number, change) in changes.enumerated() {
            sim.out("Get:\(number + 1) https://packagecloud.io/StackStorm/stable/ubuntu \(sim.os.codename)/main amd64 \(change.package) amd64 \(change.to) [61.0 MB]")
        }
        for change in changes {
            if let from = change.from {
                sim.out("Preparing to unpack .../\(change.package)_\(change.to)_amd64.deb ...\nUnpacking \(change.package) (\(change.to)) over (\(from)) ...")
            } else {
                sim.out("Selecting previously unselected package \(change.package).\nUnpacking \(change.package) (\(change.to)) ...")
            }
        }
        // A modified conffile makes dpkg ask unless told to keep the old or take the new one.
        let forceOld = dpkgOptions.contains { $0.contains("--force-confold") || $0.contains("--force-confdef") }
        let forceNew = dpkgOptions.contains { $0.contains("--force-confnew") }
        var takeNew = forceNew && !forceOld
        for change in upgraded where Packages.conffiles[change.package] != nil && !forceOld && !forceNew {
            let conf = Packages.conffiles[change.package]!
            sim.out("Setting up \(change.package) (\(change.to)) ...\n\nConfiguration file '\(conf)'\n ==> Modified (by you or by a script) since installation.\n ==> Package distributor has shipped an updated version.\n   What would you like to do about it ?  Your options are:\n    Y or I  : install the package maintainer's version\n    N or O  : keep your currently-installed version\n      D     : show the differences between the versions\n      Z     : start a shell to examine the situation\n The default action is to keep your current version.")
            guard let answer = Packages.prompt("*** \(URL(fileURLWithPath: conf).lastPathComponent) (Y/I/N/O/D/Z) [default=N] ? ") else {
                sim.err("dpkg: error processing package \(change.package) (--configure):\n end of file on stdin at conffile prompt\nErrors were encountered while processing:\n \(change.package)\nE: Sub-process /usr/bin/dpkg returned an error code (1)")
                return 100
            }
            takeNew = ["y", "i"].contains(answer.lowercased())
        }
        try Packages.apply(changes, tool: "apt-get", leftoverSuffix: takeNew ? ".dpkg-old" : ".dpkg-dist", rpmRestart: false, sim: sim)
        for change in changes { sim.out("Setting up \(change.package) (\(change.to)) ...") }
        return 0
    }

    /// `apt-get update`, with the `index` fault: a changed signing key fails (exit 100), an
    /// unreachable repository only warns, as apt does, and keeps the old index.
    static func update(_ sim: SimContext) -> Int32 {
        let release = "https://packagecloud.io/StackStorm/stable/ubuntu \(sim.os.codename) InRelease"
        sim.out("Hit:1 http://archive.ubuntu.com/ubuntu \(sim.os.codename) InRelease")
        switch sim.config.spec.faults.index {
        case .signingKey?:
            let complaint = "The following signatures couldn't be verified because the public key is not available: NO_PUBKEY C2E73424D59097AB"
            sim.out("Get:2 \(release) [24.4 kB]\nErr:2 \(release)\n  \(complaint)\nReading package lists...")
            sim.err("W: GPG error: \(release): \(complaint)\nE: The repository '\(release)' is not signed.\nN: Updating from such a repository can't be done securely, and is therefore disabled by default.\nN: See apt-secure(8) manpage for repository creation and user configuration details.")
            return 100
        case .unreachable?:
            sim.out("Err:2 \(release)\n  Could not resolve 'packagecloud.io'\nReading package lists...")
            sim.err("W: Failed to fetch \(release)  Could not resolve 'packagecloud.io'\nW: Some index files failed to download. They have been ignored, or old ones used instead.")
            return 0
        case nil:
            sim.out("Get:2 \(release) [24.4 kB]\nFetched 24.4 kB in 1s (28.1 kB/s)\nReading package lists...")
            return 0
        }
    }

    static func aptCache(_ sim: inout SimContext) throws -> Int32 {
        guard sim.os.packageManager == "apt" else { return sim.notFound() }
        let state = try sim.store.read()
        let words = sim.arguments.filter { !$0.hasPrefix("-") }
        guard let command = words.first else { sim.err("E: No operation specified"); return 100 }
        let packages = Array(words.dropFirst())
        switch command {
        case "policy":
            for package in packages {
                guard Packages.knows(state, package) else { sim.err("N: Unable to locate package \(package)"); continue }
                let offered = Packages.offered(state, package)
                let installed = state.packages[package]
                sim.out("\(package):\n  Installed: \(installed ?? "(none)")\n  Candidate: \(offered.last ?? installed ?? "(none)")\n  Version table:")
                var versions = offered
                if let installed, !versions.contains(installed) { versions.append(installed) }
                for version in versions.sorted(by: { StackStormVersion($0)! > StackStormVersion($1)! }) {
                    let mine = version == installed
                    let fromRepo = offered.contains(version)
                    sim.out(" \(mine ? "***" : "   ") \(version) \(fromRepo ? 500 : 100)")
                    if fromRepo { sim.out("        500 \(repo(sim.os))") }
                    if mine { sim.out("        100 /var/lib/dpkg/status") }
                }
            }
            return 0
        case "madison":
            for package in packages {
                guard Packages.knows(state, package) else { sim.err("N: Unable to locate package \(package)"); continue }
                for version in Packages.offered(state, package).reversed() {
                    sim.out(String(repeating: " ", count: max(0, 10 - package.count)) + "\(package) | \(String(repeating: " ", count: max(0, 10 - version.count)))\(version) | \(repo(sim.os))")
                }
            }
            return 0
        case "show":
            var shown = 0
            for request in packages {
                let parts = request.split(separator: "=", maxSplits: 1).map(String.init)
                for version in Packages.offered(state, parts[0]).reversed() where parts.count == 1 || parts[1] == version {
                    sim.out("""
                        Package: \(parts[0])
                        Architecture: amd64
                        Version: \(version)
                        Priority: optional
                        Section: python
                        Maintainer: StackStorm Engineering <opsadmin@stackstorm.com>
                        Installed-Size: 231456
                        Filename: pool/\(sim.os.codename)/main/s/\(parts[0])/\(parts[0])_\(version)_amd64.deb
                        Size: 63963136
                        Description: StackStorm Event-driven automation

                        """)
                    shown += 1
                }
            }
            if shown == 0 { sim.err("E: No packages found"); return 100 }
            return 0
        default:
            sim.err("E: Invalid operation \(command) (the lab simulates policy, madison and show)")
            return 100
        }
    }

    /// Expands a dpkg-query format: `${Package}`, `${Version}`, `${Status}`, `\n`, `\t`.
    static func format(_ template: String, package: String, version: String) -> String {
        var text = template
        let fields = [
            "${binary:Package}": package, "${Package}": package, "${Version}": version, "${Architecture}": "amd64",
            "${Status}": "install ok installed", "${db:Status-Abbrev}": "ii ", "${db:Status-Status}": "installed",
        ]
        for (key, value) in fields { text = text.replacingOccurrences(of: key, with: value) }
        return text.replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "\\t", with: "\t")
    }

    static func dpkgQuery(_ sim: inout SimContext) throws -> Int32 {
        guard sim.os.packageManager == "apt" else { return sim.notFound() }
        let state = try sim.store.read()
        var template = "${binary:Package}\t${Version}\n"
        var show = false, statusAction = false, list = false
        var patterns: [String] = []
        var args = sim.arguments[...]
        while let arg = args.popFirst() {
            switch arg {
            case "-W", "--show": show = true
            case "-s", "--status": statusAction = true
            case "-l", "--list": list = true
            case "-f", "--showformat": template = args.popFirst() ?? template
            case _ where arg.hasPrefix("-f="): template = String(arg.dropFirst(3))
            case _ where arg.hasPrefix("--showformat="): template = String(arg.dropFirst(13))
            case _ where arg.hasPrefix("-"):
                sim.err("dpkg-query: error: unknown option \(arg)")
                return 2
            default: patterns.append(arg)
            }
        }
        if statusAction { return dpkgStatus(sim, state, patterns) }
        if list { return dpkgList(sim, state, patterns) }
        guard show else { sim.err("dpkg-query: error: need an action option"); return 2 }
        let names = state.packages.keys.sorted()
        if patterns.isEmpty {
            for name in names { FileHandle.standardOutput.write(Data(format(template, package: name, version: state.packages[name]!).utf8)) }
            return 0
        }
        var status = Int32(0)
        for pattern in patterns {
            let matching = names.filter { fnmatch(pattern, $0, 0) == 0 }
            if matching.isEmpty {
                sim.err("dpkg-query: no packages found matching \(pattern)")
                status = 1
            }
            for name in matching { FileHandle.standardOutput.write(Data(format(template, package: name, version: state.packages[name]!).utf8)) }
        }
        return status
    }

    static func dpkgStatus(_ sim: SimContext, _ state: HostState, _ packages: [String]) -> Int32 {
        var status = Int32(0)
        for package in packages {
            guard let version = state.packages[package] else {
                sim.err("dpkg-query: package '\(package)' is not installed and no information is available\nUse dpkg --info (= dpkg-deb --info) to examine archive files.")
                status = 1
                continue
            }
            sim.out("Package: \(package)\nStatus: install ok installed\nPriority: optional\nSection: python\nInstalled-Size: 231456\nMaintainer: StackStorm Engineering <opsadmin@stackstorm.com>\nArchitecture: amd64\nVersion: \(version)\nDescription: StackStorm Event-driven automation\n")
        }
        return status
    }

    static func dpkgList(_ sim: SimContext, _ state: HostState, _ patterns: [String]) -> Int32 {
        let names = state.packages.keys.sorted().filter { name in patterns.isEmpty || patterns.contains { fnmatch($0, name, 0) == 0 } }
        guard !names.isEmpty else {
            sim.err("dpkg-query: no packages found matching \(patterns.joined(separator: " "))")
            return 1
        }
        sim.out("Desired=Unknown/Install/Remove/Purge/Hold\n| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend\n|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)\n||/ Name           Version      Architecture Description\n+++-==============-============-============-=================================")
        for name in names {
            sim.out("ii  \(name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(state.packages[name]!.padding(toLength: 12, withPad: " ", startingAt: 0)) amd64        StackStorm Event-driven automation")
        }
        return 0
    }

    static func dpkg(_ sim: inout SimContext) throws -> Int32 {
        guard sim.os.packageManager == "apt" else { return sim.notFound() }
        guard let action = sim.arguments.first, ["-s", "--status", "-l", "--list"].contains(action) else {
            sim.err("dpkg: error: the lab simulates only queries: dpkg -s PKG, dpkg -l [PATTERN]")
            return 2
        }
        return try dpkgQuery(&sim)
    }
}

/// yum and dnf, and rpm.
enum YumTools {
    static let repoID = "StackStorm_stable"

    /// Splits `st2-3.8.1-1` / `st2-3.8.1` / `st2` into a package and the offered version it names.
    static func resolve(_ request: String, _ state: HostState) -> (package: String, version: String?)? {
        if Packages.knows(state, request) { return (request, nil) }
        for package in LabSpec.st2Packages where request.hasPrefix(package + "-") {
            let wanted = String(request.dropFirst(package.count + 1))
            let candidates = Packages.offered(state, package) + [state.packages[package]].compactMap { $0 }
            if let exact = candidates.first(where: { $0 == wanted || $0.hasPrefix(wanted + "-") }) {
                return (package, exact)
            }
        }
        return nil
    }

    static func yum(_ sim: inout SimContext) throws -> Int32 {
        let dnf = sim.os.packageManager == "dnf"
        guard sim.os.family == .redhat, sim.program == "yum" || dnf else { return sim.notFound() }
        var yes = false, duplicates = false, test = false
        var words: [String] = []
        for arg in sim.arguments {
            switch arg {
            case "-y", "--assumeyes": yes = true
            case "--showduplicates": duplicates = true
            case "--setopt=tsflags=test": test = true
            case _ where arg.hasPrefix("-"): continue
            default: words.append(arg)
            }
        }
        let state = try sim.store.read()
        if !dnf { sim.out("Loaded plugins: fastestmirror") }
        guard let command = words.first else {
            sim.err("usage: yum [options] COMMAND")
            return 1
        }
        switch command {
        case "makecache":
            return makecache(sim, dnf: dnf)
        case "clean", "check-update":
            sim.out("Metadata cache created.")
            return 0
        case "list":
            return list(sim, state, Array(words.dropFirst()), duplicates: duplicates)
        case "update", "upgrade", "install":
            break
        default:
            sim.err("No such command: \(command). Please use /usr/bin/\(sim.program) --help")
            return 1
        }
        var changes: [Packages.Change] = []
        var missing: [String] = []
        let requests = words.count > 1 ? Array(words.dropFirst()) : state.packages.keys.sorted()
        for request in requests {
            guard let (package, version) = resolve(request, state) else {
                missing.append(request)
                sim.out(dnf ? "No match for argument: \(request)" : "No package \(request) available.")
                continue
            }
            let installed = state.packages[package]
            if installed == nil, command != "install" {
                sim.out(dnf ? "Package \(package) available, but not installed." : "Package \(package) not installed, cannot update it.")
                continue
            }
            guard let target = version ?? Packages.offered(state, package).last, Packages.isNewer(target, than: installed) else {
                sim.out("Package \(package)-\(installed ?? "") is already installed.")
                continue
            }
            changes.append(.init(package: package, from: installed, to: target))
        }
        if dnf, !missing.isEmpty {
            sim.err("Error: Unable to find a match: \(missing.joined(separator: " "))")
            return 1
        }
        guard !changes.isEmpty else {
            if missing.isEmpty {
                sim.out(dnf ? "Dependencies resolved.\nNothing to do.\nComplete!" : "No packages marked for update")
                return 0
            }
            sim.err("Error: Nothing to do")
            return 1
        }
        let unmet = Packages.unmet(changes, sim)
        if !unmet.isEmpty {
            // rpm writes dependencies without apt's parentheses: `nodejs >= 14.0.0`.
            func rpmForm(_ dependency: String) -> String { dependency.filter { $0 != "(" && $0 != ")" } }
            if dnf {
                sim.out("Last metadata expiration check: 0:01:12 ago.")
                sim.err("Error: \n" + unmet.map { change, dependency in
                    " Problem: cannot install the best update candidate for package \(change.package)-\(change.from ?? change.to).x86_64\n"
                        + "  - nothing provides \(rpmForm(dependency)) needed by \(change.package)-\(change.to).x86_64"
                }.joined(separator: "\n") + "\n(try to add '--skip-broken' to skip uninstallable packages or '--nobest' to use not only best candidate packages)")
            } else {
                sim.out("Resolving Dependencies\n--> Running transaction check")
                for (change, dependency) in unmet {
                    sim.out("---> Package \(change.package).x86_64 0:\(change.to) will be an update\n--> Processing Dependency: \(rpmForm(dependency)) for package: \(change.package)-\(change.to).x86_64")
                }
                sim.out("--> Finished Dependency Resolution")
                sim.err(unmet.map { change, dependency in
                    "Error: Package: \(change.package)-\(change.to).x86_64 (\(repoID))\n           Requires: \(rpmForm(dependency))"
                }.joined(separator: "\n") + "\n You could try using --skip-broken to work around the problem\n You could try running: rpm -Va --nofiles --nodigest")
            }
            return 1
        }
        if dnf {
            sim.out("Dependencies resolved.\n" + changes.map { " \($0.package)  x86_64  \($0.to)  \(repoID)  61 M" }.joined(separator: "\n"))
        } else {
            sim.out("Resolving Dependencies\n--> Running transaction check")
            for change in changes {
                if let from = change.from { sim.out("---> Package \(change.package).x86_64 0:\(from) will be updated") }
                sim.out("---> Package \(change.package).x86_64 0:\(change.to) will be \(change.from == nil ? "installed" : "an update")")
            }
            sim.out("--> Finished Dependency Resolution")
        }
        if !yes {
            let answer = Packages.prompt(dnf ? "Is this ok [y/N]: " : "Is this ok [y/d/N]: ")
            guard let answer, answer.lowercased().hasPrefix("y") else {
                sim.out(dnf ? "Operation aborted." : "Exiting on user command\nYour transaction was saved, rerun it with:\n yum load-transaction /tmp/yum_save_tx.2026-11-21.00-00.st2.yumtx")
                return 1
            }
        }
        if test {
            // RPMTRANS_FLAG_TEST: the transaction is checked, nothing is installed.
            sim.out("Downloading Packages:\nRunning transaction check\nTransaction check succeeded.\nRunning transaction test\nTransaction test succeeded.")
            sim.out(dnf ? "Complete!" : "\nComplete!")
            return 0
        }
        sim.out("Running transaction")
        for change in changes where change.from != nil && Packages.conffiles[change.package] != nil {
            let conf = Packages.conffiles[change.package]!
            sim.err("warning: \(conf) created as \(conf).rpmnew")
        }
        try Packages.apply(changes, tool: sim.program, leftoverSuffix: ".rpmnew", rpmRestart: true, sim: sim)
        sim.out(dnf ? "Upgraded:" : "\nUpdated:")
        for change in changes { sim.out(dnf ? "  \(change.package)-\(change.to).x86_64" : "  \(change.package).x86_64 0:\(change.to)") }
        sim.out("\nComplete!")
        return 0
    }

    /// `yum makecache` / `dnf makecache`, with the `index` fault: a repository whose
    /// signature cannot be verified, or that cannot be reached, fails (exit 1).
    static func makecache(_ sim: SimContext, dnf: Bool) -> Int32 {
        let repomd = "https://packagecloud.io/StackStorm/stable/el/\(sim.os.versionID.prefix(1))/x86_64/repodata/repomd.xml"
        switch sim.config.spec.faults.index {
        case .signingKey?:
            if dnf {
                sim.err("Error: Failed to download metadata for repo '\(repoID)': repomd.xml GPG signature verification error: Bad GPG signature")
            } else {
                sim.err("\(repomd): [Errno -1] repomd.xml signature could not be verified for \(repoID)\nTrying other mirror.\n\n\n One of the configured repositories failed (\(repoID)),\n and yum doesn't have enough cached data to continue.")
            }
            return 1
        case .unreachable?:
            if dnf {
                sim.err("Errors during downloading metadata for repository '\(repoID)':\n  - Curl error (6): Couldn't resolve host name for \(repomd) [Could not resolve host: packagecloud.io]\nError: Failed to download metadata for repo '\(repoID)': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried")
            } else {
                sim.err("\(repomd): [Errno 14] curl#6 - \"Could not resolve host: packagecloud.io; Unknown error\"\nTrying other mirror.\n\n\n One of the configured repositories failed (\(repoID)),\n and yum doesn't have enough cached data to continue.")
            }
            return 1
        case nil:
            sim.out(dnf ? "\(repoID)  24 kB/s | 3.0 kB  00:00\nMetadata cache created." : "Metadata Cache Created")
            return 0
        }
    }

    static func list(_ sim: SimContext, _ state: HostState, _ words: [String], duplicates: Bool) -> Int32 {
        var scope = "all"
        var patterns = words
        if let first = patterns.first, ["all", "available", "installed", "updates"].contains(first) {
            scope = first
            patterns.removeFirst()
        }
        let names = Set(state.packages.keys).union(state.available.filter { !$0.value.isEmpty }.keys).sorted()
            .filter { name in patterns.isEmpty || patterns.contains { fnmatch($0, name, 0) == 0 } }
        var installedLines: [String] = [], availableLines: [String] = []
        func line(_ name: String, _ version: String, _ repo: String) -> String {
            "\(name).x86_64".padding(toLength: 36, withPad: " ", startingAt: 0) + version.padding(toLength: 24, withPad: " ", startingAt: 0) + repo
        }
        for name in names {
            let installed = state.packages[name]
            if let installed { installedLines.append(line(name, installed, "@\(repoID)")) }
            var offered = Packages.offered(state, name)
            if !duplicates { offered = offered.suffix(1).filter { Packages.isNewer($0, than: installed) } }
            availableLines += offered.map { line(name, $0, repoID) }
        }
        var printed = false
        if scope != "available", !installedLines.isEmpty {
            sim.out("Installed Packages\n" + installedLines.joined(separator: "\n"))
            printed = true
        }
        if scope != "installed", !availableLines.isEmpty {
            sim.out("Available Packages\n" + availableLines.joined(separator: "\n"))
            printed = true
        }
        guard printed else { sim.err("Error: No matching Packages to list"); return 1 }
        return 0
    }

    static func rpm(_ sim: inout SimContext) throws -> Int32 {
        guard sim.os.family == .redhat else { return sim.notFound() }
        let state = try sim.store.read()
        var template: String?
        var query = false, all = false
        var names: [String] = []
        var args = sim.arguments[...]
        while let arg = args.popFirst() {
            switch arg {
            case "-q", "--query": query = true
            case "-qa": query = true; all = true
            case "-a", "--all": all = true
            case "--qf", "--queryformat": template = args.popFirst()
            case _ where arg.hasPrefix("--qf="): template = String(arg.dropFirst(5))
            case _ where arg.hasPrefix("--queryformat="): template = String(arg.dropFirst(14))
            case _ where arg.hasPrefix("-"):
                sim.err("rpm: the lab simulates only queries (-q, -qa, --qf)")
                return 1
            default: names.append(arg)
            }
        }
        guard query else { sim.err("rpm: the lab simulates only queries (-q, -qa, --qf)"); return 1 }
        func render(_ name: String, _ full: String) -> String {
            let dash = full.firstIndex(of: "-")
            let version = dash.map { String(full[..<$0]) } ?? full
            let release = dash.map { String(full[full.index(after: $0)...]) } ?? ""
            guard let template else { return "\(name)-\(full).x86_64\n" }
            return template.replacingOccurrences(of: "%{NAME}", with: name).replacingOccurrences(of: "%{VERSION}", with: version)
                .replacingOccurrences(of: "%{RELEASE}", with: release).replacingOccurrences(of: "%{ARCH}", with: "x86_64")
                .replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "\\t", with: "\t")
        }
        var status = Int32(0)
        let selected = all ? state.packages.keys.sorted().filter { name in names.isEmpty || names.contains { fnmatch($0, name, 0) == 0 } } : names
        for name in selected {
            if let version = state.packages[name] {
                FileHandle.standardOutput.write(Data(render(name, version).utf8))
            } else {
                sim.out("package \(name) is not installed")
                status = 1
            }
        }
        return status
    }
}
