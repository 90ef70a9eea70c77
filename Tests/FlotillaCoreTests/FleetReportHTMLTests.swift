import Foundation
import Testing
@testable import FlotillaCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The HTML report rendered by a real browser: headless Chromium runs the page's script,
/// and the tests read the DOM it dumps. CI installs `chromium-headless-shell`; without it
/// these tests fail (they never skip).
@Suite struct FleetReportHTMLTests {
    static let target = StackStormVersion("3.8.1")!

    @Test func chromiumRendersTheFleetReport() async throws {
        let report = try Self.sampleReport()
        // The fixture is what the assertions below assume.
        #expect(report.versionSpread.map(\.label) == ["3.6.0", "3.7.1", "3.8.1", "unknown"])
        #expect(report.versionSpread.map(\.count) == [3, 2, 1, 1])
        #expect(report.behind.count == 5)

        let html = report.html
        let dom = try await HeadlessChromium.render(html, copy: ProcessInfo.processInfo.environment["FLOTILLA_REPORT_HTML_COPY"])
        Self.expectNoExternalResources(dom)

        // One bar per version, in the report's order, with its count.
        let bars = Self.bars(dom)
        #expect(bars.map(\.version) == report.versionSpread.map(\.label))
        #expect(bars.map(\.count) == report.versionSpread.map(\.count))
        #expect(Set(bars.map(\.version)).count == bars.count)

        let cards = Self.cards(dom)
        #expect(cards["hosts"] == 8)
        #expect(cards["reachable"] == 7)
        #expect(cards["unreachable"] == 1)
        #expect(cards["behind target"] == 5)
        #expect(cards["behind target"] == report.behind.count)
        #expect(cards["at target"] == 1)
        #expect(cards["refused"] == 1)
        #expect(cards["config drift"] == 1)
        #expect(cards["unreadable facts"] == 1)

        let reachability = Self.section(dom, "Reachability")
        #expect(reachability.contains("<li>db-01: connect to 10.20.0.17 port 22: Connection refused</li>"), "\(reachability)")
        let drift = Self.section(dom, "Config drift")
        #expect(drift.contains("web-02: /etc/st2/st2.conf.dpkg-dist"), "\(drift)")
        let components = Self.section(dom, "Components")
        #expect(components.contains("worker-01: not running: st2sensorcontainer"), "\(components)")
        // edge-01 too: its packages are unreadable, so st2chatops is not expected there.
        #expect(report.allRunning == 6)
        #expect(components.contains("every component running on 6 hosts"), "\(components)")
        let unreadable = Self.section(dom, "Unreadable facts")
        #expect(unreadable.contains("edge-01: packages: dpkg-query exited with status 2"), "\(unreadable)")
        let behind = Self.section(dom, "Behind 3.8.1")
        for host in ["web-01", "web-02", "worker-01", "worker-02", "worker-03"] {
            #expect(behind.contains("<td>\(host)</td>"), "\(host) missing from:\n\(behind)")
        }
        #expect(!behind.contains("ctl-01"))
        // 3.6 hosts cross 3.7: its manual steps are operator notes.
        #expect(Self.section(dom, "Operator notes").contains("3.7: A pack named _global must be renamed before upgrading."))
        #expect(Self.section(dom, "Refused").contains("edge-01: installed packages unknown: dpkg-query exited with status 2"))
        #expect(Self.section(dom, "Hosts").contains("<td>ctl-01</td><td>10.20.0.10</td><td>yes</td><td>Rocky Linux 8.9 (Green Obsidian)</td><td>3.8.1-1</td><td>skip</td>"))
    }

    /// Markup in inventory names, errors and remote file names is text: it neither ends the
    /// embedded data nor adds elements.
    @Test(arguments: [
        "evil</script><script>alert(1)</script>",
        "<b>bold</b>",
        "<!--<script>",
        "</noscript><b>x</b>&amp;",
    ])
    func markupInHostDataStaysText(_ hostile: String) async throws {
        let os = OSInfo(id: "ubuntu", versionID: "20.04", name: "Ubuntu 20.04.6 LTS", family: .debian)
        let results = [
            Self.host(hostile, "10.0.0.1", os: os, manager: "apt", st2: "3.7.1-1", leftovers: ["/etc/st2/\(hostile).dpkg-old"]),
            HostFactsResult(name: "down-\(hostile)", address: "10.0.0.2", unreachable: "ssh: \(hostile)",
                            facts: HostFacts(unreadable: "not probed")),
        ]
        let report = try Self.report(results)
        let dom = try await HeadlessChromium.dumpDOM(html: report.html)

        #expect(dom.contains(try Regex(#"<body[^>]*\bdata-rendered="ok""#)), "the page broke:\n\(dom)")
        #expect(dom.matches(of: try Regex(#"(?s)<script\b[^>]*>.*?</script>"#)).count == 2, "an extra script element:\n\(dom)")
        #expect(Self.bars(dom).map(\.version) == ["3.7.1"])
        // Outside the scripts and the noscript fallback, the only <b> elements are the cards' numbers.
        let visible = Self.withoutRawText(dom)
        #expect(visible.ranges(of: "<b>").count == Self.cards(dom).count, "\(visible)")
        let escaped = Self.escapeText(hostile)
        #expect(Self.section(dom, "Hosts").contains("<td>\(escaped)</td>"))
        #expect(Self.section(dom, "Reachability").contains("<li>down-\(escaped): ssh: \(escaped)</li>"))
        #expect(Self.section(dom, "Config drift").contains("/etc/st2/\(escaped).dpkg-old"))
    }

    // MARK: The fleet

    static func report(_ results: [HostFactsResult]) throws -> FleetReport {
        let planner = UpgradePlanner(catalog: try MigrationCatalog.bundled(), options: .init(target: target))
        var plans: [String: HostPlan] = [:]
        for result in results where result.unreachable == nil { plans[result.name] = planner.plan(result.facts) }
        return FleetReport(generatedAt: "2025-11-21T10:00:00Z", target: target, results: results, plans: plans)
    }

    /// Eight hosts: four OSes; st2 3.6.0 ×3, 3.7.1 ×2, 3.8.1 ×1; one unreachable; one whose
    /// packages cannot be read; one with a leftover config file; one with a stopped component.
    static func sampleReport() throws -> FleetReport {
        let focal = OSInfo(id: "ubuntu", versionID: "20.04", name: "Ubuntu 20.04.6 LTS", family: .debian)
        let bionic = OSInfo(id: "ubuntu", versionID: "18.04", name: "Ubuntu 18.04.6 LTS", family: .debian)
        let bullseye = OSInfo(id: "debian", versionID: "11", name: "Debian GNU/Linux 11 (bullseye)", family: .debian)
        let rocky = OSInfo(id: "rocky", versionID: "8.9", name: "Rocky Linux 8.9 (Green Obsidian)", family: .redhat)
        var edge = host("edge-01", "10.20.0.30", os: focal, manager: "apt", st2: "3.6.0-1")
        edge.facts.installed = .unreadable("dpkg-query exited with status 2")
        return try report([
            host("web-01", "10.20.0.11", os: focal, manager: "apt", st2: "3.6.0-1"),
            host("web-02", "10.20.0.12", os: focal, manager: "apt", st2: "3.6.0-1", leftovers: ["/etc/st2/st2.conf.dpkg-dist"]),
            host("worker-01", "10.20.0.21", os: rocky, manager: "dnf", st2: "3.6.0-1", stopped: ["st2sensorcontainer"]),
            host("worker-02", "10.20.0.22", os: bullseye, manager: "apt", st2: "3.7.1-1"),
            host("worker-03", "10.20.0.23", os: bionic, manager: "apt", st2: "3.7.1-1"),
            host("ctl-01", "10.20.0.10", os: rocky, manager: "dnf", st2: "3.8.1-1"),
            HostFactsResult(name: "db-01", address: "10.20.0.17", unreachable: "connect to 10.20.0.17 port 22: Connection refused",
                            facts: HostFacts(unreadable: "host unreachable")),
            edge,
        ])
    }

    static func host(_ name: String, _ address: String, os: OSInfo, manager: String, st2: String,
                     stopped: [String] = [], leftovers: [String] = []) -> HostFactsResult {
        let offered = ["3.6.0-1", "3.7.1-1", "3.8.1-1"]
        let names = ["st2actionrunner", "st2api", "st2stream", "st2auth", "st2garbagecollector", "st2notifier", "st2rulesengine",
                     "st2sensorcontainer", "st2chatops", "st2timersengine", "st2workflowengine", "st2scheduler"]
        let components = names.enumerated().map { index, component in
            // st2ctl lists st2chatops even where it is not installed.
            ComponentState(name: component, pid: stopped.contains(component) || component == "st2chatops" ? nil : 1000 + index)
        }
        let facts = HostFacts(
            os: .known(os), packageManager: .known(manager), installed: .known(["st2": st2, "st2web": st2]),
            offered: .known(["st2": offered, "st2web": offered]), components: .known(components),
            disk: .known([DiskSpace(path: "/", mountPoint: "/", availableKiB: 20_000_000),
                          DiskSpace(path: "/opt", mountPoint: "/", availableKiB: 20_000_000)]),
            leftoverConfigs: .known(leftovers))
        return HostFactsResult(name: name, address: address, unreachable: nil, facts: facts)
    }

    // MARK: Reading the DOM

    /// The page is self-contained: nothing it loads comes from elsewhere. (The SVG namespace
    /// URI is an identifier, not a load.)
    static func expectNoExternalResources(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let withoutNamespace = text.replacingOccurrences(of: "'http://www.w3.org/2000/svg'", with: "")
            .replacingOccurrences(of: "\"http://www.w3.org/2000/svg\"", with: "")
        for needle in ["http://", "https://", "src=", "href=", "url(", "@import", "<link", "<img", "<iframe"] {
            #expect(!withoutNamespace.lowercased().contains(needle), "the page refers to \(needle)", sourceLocation: sourceLocation)
        }
    }

    static func bars(_ dom: String) -> [(version: String, count: Int)] {
        dom.matches(of: try! Regex(#"<rect\b[^>]*>"#)).map { match in
            let tag = String(dom[match.range])
            let version = tag.firstMatch(of: try! Regex(#"data-version="([^"]*)""#))?.output[1].substring.map(String.init) ?? "?"
            let count = tag.firstMatch(of: try! Regex(#"data-count="([0-9]+)""#))?.output[1].substring.flatMap { Int($0) } ?? -1
            return (version, count)
        }
    }

    /// `data-card` name → the number the card shows.
    static func cards(_ dom: String) -> [String: Int] {
        var cards: [String: Int] = [:]
        for match in dom.matches(of: try! Regex(#"data-card="([^"]*)"[^>]*><b>([0-9]+)</b>"#)) {
            if let name = match.output[1].substring, let count = match.output[2].substring.flatMap({ Int($0) }) {
                cards[String(name)] = count
            }
        }
        return cards
    }

    /// The markup from `<h2>title</h2>` to the next heading.
    static func section(_ dom: String, _ title: String) -> String {
        guard let start = dom.range(of: "<h2>\(escapeText(title))</h2>") else { return "" }
        let rest = dom[start.upperBound...]
        return String(rest[..<(rest.range(of: "<h2>")?.lowerBound ?? rest.endIndex)])
    }

    /// The DOM without script and noscript contents (raw text, serialized unescaped).
    static func withoutRawText(_ dom: String) -> String {
        dom.replacing(try! Regex(#"(?s)<script\b[^>]*>.*?</script>"#), with: "")
            .replacing(try! Regex(#"(?s)<noscript>.*?</noscript>"#), with: "")
    }

    /// How a text node's characters come out of the DOM serializer.
    static func escapeText(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// Runs `chromium-headless-shell --dump-dom` on a page and returns the DOM after its scripts ran.
enum HeadlessChromium {
    static let timeoutSeconds = 60.0

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// `$FLOTILLA_CHROMIUM`, else `chromium-headless-shell` on PATH.
    static func binary() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["FLOTILLA_CHROMIUM"], !path.isEmpty { return path }
        let directories = (environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        for directory in directories where access(directory + "/chromium-headless-shell", X_OK) == 0 {
            return directory + "/chromium-headless-shell"
        }
        throw Failure(description: "chromium-headless-shell not found on PATH: the HTML report tests need it "
                      + "(apt-get install -y chromium-headless-shell, as .ci/run does), or set FLOTILLA_CHROMIUM to a headless Chromium")
    }

    /// A report page drawn: it loads nothing from outside, its script finished; a copy is
    /// left at `copy` (from an environment variable) to look at by hand.
    static func render(_ html: String, copy: String?, sourceLocation: Testing.SourceLocation = #_sourceLocation) async throws -> String {
        FleetReportHTMLTests.expectNoExternalResources(html, sourceLocation: sourceLocation)
        if let copy, !copy.isEmpty { try html.write(toFile: copy, atomically: true, encoding: .utf8) }
        let dom = try await dumpDOM(html: html)
        #expect(dom.contains(try Regex(#"<body[^>]*\bdata-rendered="ok""#)), "the page's script did not finish:\n\(dom)", sourceLocation: sourceLocation)
        return dom
    }

    static func dumpDOM(html: String) async throws -> String {
        let chromium = try binary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let page = directory.appendingPathComponent("report.html")
        try html.write(to: page, atomically: true, encoding: .utf8)
        let stdout = directory.appendingPathComponent("dom.html").path
        let stderr = directory.appendingPathComponent("chromium.log").path
        let argv = [chromium, "--no-sandbox", "--disable-gpu", "--user-data-dir=" + directory.appendingPathComponent("profile").path,
                    "--dump-dom", page.absoluteString]
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = directory.path
        let exit = try await Spawn.run(argv, environment: environment, stdout: stdout, stderr: stderr, timeout: timeoutSeconds)
        let dom = (try? String(contentsOfFile: stdout, encoding: .utf8)) ?? ""
        guard !exit.timedOut, exit.status == 0, !dom.isEmpty else {
            let log = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
            throw Failure(description: "\(argv.joined(separator: " ")) "
                          + (exit.timedOut ? "did not finish in \(Int(timeoutSeconds)) s" : "exited with status \(exit.status)")
                          + "; stdout \(dom.utf8.count) bytes; stderr:\n\(log.suffix(4000))")
        }
        return dom
    }
}

/// posix_spawn in a process group of its own, its exit awaited on a thread (no polling), the
/// group killed if it outlives `timeout`.
enum Spawn {
    struct Exit: Sendable {
        /// The exit status, or 128 + the signal.
        var status: Int32
        var timedOut: Bool
    }

    final class Watch: @unchecked Sendable {
        let lock = NSLock()
        var exited = false
        var timedOut = false
    }

    static func run(_ argv: [String], environment: [String: String], stdout: String, stderr: String, timeout: Double) async throws -> Exit {
        #if canImport(Darwin)
        var actions: posix_spawn_file_actions_t? = nil
        var attributes: posix_spawnattr_t? = nil
        #else
        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        #endif
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))

        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArguments + cEnvironment).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
        guard spawned == 0 else {
            throw HeadlessChromium.Failure(description: "posix_spawn \(argv[0]): \(String(cString: strerror(spawned)))")
        }

        let watch = Watch()
        let child = pid
        // Until the child is reaped its pid (and so its process group) cannot be reused, so
        // killing the group from the timer never hits anything else; after that the timer does nothing.
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
            watch.lock.withLock {
                guard !watch.exited else { return }
                watch.timedOut = true
                kill(-child, SIGKILL)
            }
        }
        return await withCheckedContinuation { continuation in
            Thread {
                var info = siginfo_t()
                while waitid(P_PID, id_t(child), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
                let timedOut = watch.lock.withLock { () -> Bool in
                    watch.exited = true
                    return watch.timedOut
                }
                kill(-child, SIGKILL) // helpers left in the group
                var status: Int32 = 0
                while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7f
                continuation.resume(returning: Exit(status: signal == 0 ? (status >> 8) & 0xff : 128 + signal, timedOut: timedOut))
            }.start()
        }
    }
}
