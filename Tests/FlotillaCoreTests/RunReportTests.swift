import Foundation
import Testing
@testable import FlotillaCore

/// The run reports (`--junit`, `--html`, Markdown) of runs built in memory. JUnit is read
/// back by a real JUnit parser (Python's junitparser, and xml.etree for well-formedness);
/// the HTML by headless Chromium. Neither is optional: without python3 + junitparser or
/// chromium-headless-shell these tests fail with how to install them.
@Suite struct RunReportTests {
    // MARK: The run

    static let base = ISO8601DateFormatter().date(from: "2026-11-21T15:30:00Z")!
    static func at(_ seconds: Double) -> Date { base.addingTimeInterval(seconds) }

    static let plan: [RunStep] = [
        RunStep(name: "stop services", command: "st2ctl stop", kind: "stop"),
        RunStep(name: "upgrade packages", command: "apt-get install -y st2=3.8.1-1", kind: "packages", become: true),
        RunStep(name: "migrate database", command: "/opt/stackstorm/st2/bin/st2-run-migrations", kind: "migration"),
        RunStep(name: "start services", command: "st2ctl start", kind: "start"),
        RunStep(name: "verify version", command: "st2 --version", kind: "verify", expect: "3.8.1"),
    ]

    /// The failing step's stderr: markup, an ANSI colour, a NUL and a CDATA end.
    static let hostileStderr = "Reading package lists...\nE: Sub-process /usr/bin/dpkg returned an error code (1) ]]>\n"
        + "</pre></script><b>x</b><!--\n"
        + "\u{1B}[31mdpkg: error processing package st2 (--configure): <post-install> failed & \"exit\" 1\u{0}\u{1B}[0m\n"
    static let hostileLastLine = "\u{1B}[31mdpkg: error processing package st2 (--configure): <post-install> failed & \"exit\" 1\u{0}\u{1B}[0m"
    /// The same line as every report shows it: control characters as control pictures.
    static let shownLastLine = "\u{241B}[31mdpkg: error processing package st2 (--configure): <post-install> failed & \"exit\" 1\u{2400}\u{241B}[0m"
    static let refusal = "refused: st2 version unknown: dpkg-query printed '<none>|*'"
    static let haltReason = "max-fail 1 exceeded: 2 hosts failed"

    /// Steps run back to back from `start`; the step at `failAt` fails (exit 100) and the
    /// rest stay pending.
    static func steps(from start: Double, _ durations: [Double], failAt: Int? = nil) -> (steps: [JournalState.Step], end: Double) {
        var time = start
        var steps: [JournalState.Step] = []
        for (index, step) in plan.enumerated() {
            if let failAt, index > failAt {
                steps.append(JournalState.Step(index: index, name: step.name, status: .pending, exitStatus: nil, stdoutTail: "",
                                               stderrTail: "", error: nil, startedAt: nil, finishedAt: nil, durationMS: nil, attempts: 0))
                continue
            }
            let seconds = durations[index]
            let failed = index == failAt
            steps.append(JournalState.Step(
                index: index, name: step.name, status: failed ? .failed : .succeeded, exitStatus: failed ? 100 : 0,
                stdoutTail: failed ? "Setting up st2 (3.8.1-1) ...\n" : (index == 4 ? "st2 3.8.1, on Python 3.8.10\n" : ""),
                stderrTail: failed ? hostileStderr : "", error: failed ? "exit 100: \(hostileLastLine)" : nil,
                startedAt: at(time), finishedAt: at(time + seconds), durationMS: Int((seconds * 1000).rounded()), attempts: 1))
            time += seconds
        }
        return (steps, time)
    }

    static func notRun(_ name: String, _ status: HostRunStatus, error: String? = nil) -> JournalState.Host {
        JournalState.Host(name: name, status: status, error: error, startedAt: nil, finishedAt: nil, steps: plan.enumerated().map { index, step in
            JournalState.Step(index: index, name: step.name, status: .pending, exitStatus: nil, stdoutTail: "", stderrTail: "",
                              error: nil, startedAt: nil, finishedAt: nil, durationMS: nil, attempts: 0)
        })
    }

    static func ran(_ name: String, from start: Double, _ durations: [Double], failAt: Int? = nil) -> JournalState.Host {
        let (steps, end) = steps(from: start, durations, failAt: failAt)
        let error = failAt.map { "step '\(plan[$0].name)' failed: exit 100: \(hostileLastLine)" }
        return JournalState.Host(name: name, status: failAt == nil ? .succeeded : .failed, error: error,
                                 startedAt: at(start), finishedAt: at(end), steps: steps)
    }

    /// Seven hosts, three batches, halted after the second: st2-01 (the canary, batch 1)
    /// succeeded; in batch 2 st2-02 and st2-05 succeeded, st2-03 failed at "upgrade
    /// packages", st2-04 was unreachable; st2-06 (batch 3) never started; edge-01 was
    /// refused at plan time.
    static func haltedRun() -> JournalState {
        let names = ["st2-01", "st2-02", "st2-03", "st2-04", "st2-05", "st2-06", "edge-01"]
        let batchOf: [String: Int] = ["st2-01": 0, "st2-02": 1, "st2-03": 1, "st2-04": 1, "st2-05": 1, "st2-06": 2]
        let hosts = names.enumerated().map { index, name in
            RunHost(name: name, address: "10.0.0.\(11 + index)", batch: batchOf[name], groups: ["st2_cluster": "main"],
                    fromVersion: name == "edge-01" ? nil : "3.6.0", toVersion: name == "edge-01" ? nil : "3.8.1", steps: plan,
                    skip: name == "edge-01" ? SkipCause(text: refusal) : nil)
        }
        let record = RunRecord(id: "20261121-153000-ab12", kind: .stackstormUpgrade, targetVersion: "3.8.1", createdAt: at(-5),
                               hosts: hosts, batches: [["st2-01"], ["st2-02", "st2-03", "st2-04", "st2-05"], ["st2-06"]],
                               options: { var options = RunOptions(); options.maxFail = .count(1); return options }())
        var unreachable = notRun("st2-04", .unreachable, error: "connect to 10.0.0.14 port 22: Connection timed out")
        unreachable.startedAt = at(70)
        unreachable.finishedAt = at(80)
        let states = [
            ran("st2-01", from: 2, [5, 40, 10, 8, 2]),
            ran("st2-02", from: 70, [4, 35, 9, 7, 2]),
            ran("st2-03", from: 70, [5, 30], failAt: 1),
            unreachable,
            ran("st2-05", from: 70.5, [5, 38.2, 9, 6, 1.5]),
            notRun("st2-06", .notStarted),
            notRun("edge-01", .skipped),
        ]
        return JournalState(
            record: record, state: .halted, haltReason: haltReason, startedAt: at(0), finishedAt: at(135), hosts: states,
            batches: [JournalState.Batch(index: 0, hosts: ["st2-01"], startedAt: at(1), finishedAt: at(68)),
                      JournalState.Batch(index: 1, hosts: record.batches[1], startedAt: at(70), finishedAt: at(131)),
                      JournalState.Batch(index: 2, hosts: ["st2-06"], startedAt: nil, finishedAt: nil)],
            clusterSteps: [],
            events: [JournalState.Event(sequence: 1, at: at(131), kind: "halt", message: haltReason)],
            artifacts: [])
    }

    /// A runbook stopped by the operator mid-run: one host interrupted mid-step (its
    /// controller gone), one cancelled before its next step, one already at target and one
    /// unreachable at plan time (both outside any batch).
    static func stoppedRun() -> JournalState {
        let book = [RunStep(name: "rotate", command: "logrotate -f /etc/logrotate.d/st2"), RunStep(name: "restart", command: "st2ctl restart")]
        let hosts = [
            RunHost(name: "a-1", address: "10.1.0.1", batch: 0, steps: book),
            RunHost(name: "a-2", address: "10.1.0.2", batch: 0, steps: book),
            RunHost(name: "old-1", address: "10.1.0.3", batch: nil, steps: [], skip: SkipCause(.atTarget, "already at 3.8.1")),
            RunHost(name: "gone-1", address: "10.1.0.4", batch: nil, steps: [], skip: SkipCause(.unreachable, "ssh: no route\n\tto host\r")),
        ]
        let record = RunRecord(id: "20261122-080000-0001", kind: .runbook, name: "rotate \"logs\"", targetVersion: nil,
                               createdAt: at(0), hosts: hosts, batches: [["a-1", "a-2"]], options: RunOptions())
        func step(_ index: Int, _ status: StepRunStatus, start: Double?, ms: Int?, stdout: String = "") -> JournalState.Step {
            JournalState.Step(index: index, name: book[index].name, status: status, exitStatus: status == .succeeded ? 0 : nil,
                              stdoutTail: stdout, stderrTail: "", error: nil, startedAt: start.map(at),
                              finishedAt: ms.flatMap { ms in start.map { at($0 + Double(ms) / 1000) } }, durationMS: ms,
                              attempts: status == .pending ? 0 : (status == .running ? 2 : 1))
        }
        let states = [
            JournalState.Host(name: "a-1", status: .running, error: nil, startedAt: at(1), finishedAt: nil,
                              steps: [step(0, .succeeded, start: 1, ms: 2000, stdout: "rotated\r\ndone\n"), step(1, .running, start: 3, ms: nil)]),
            JournalState.Host(name: "a-2", status: .cancelled, error: "stopped before 'restart' (--on-halt stop)", startedAt: at(1),
                              finishedAt: at(4), steps: [step(0, .succeeded, start: 1, ms: 3000), step(1, .pending, start: nil, ms: nil)]),
            JournalState.Host(name: "old-1", status: .skipped, error: nil, startedAt: nil, finishedAt: nil, steps: []),
            JournalState.Host(name: "gone-1", status: .unreachable, error: nil, startedAt: nil, finishedAt: nil, steps: []),
        ]
        return JournalState(record: record, state: .stopped, haltReason: "stopped by the operator (flotilla ctl stop)",
                            startedAt: at(0.5), finishedAt: nil, hosts: states,
                            batches: [JournalState.Batch(index: 0, hosts: ["a-1", "a-2"], startedAt: at(1), finishedAt: nil)],
                            clusterSteps: [], events: [], artifacts: [])
    }

    /// Created and never started.
    static func createdRun() -> JournalState {
        let record = RunRecord(id: "20261123-000000-ffff", kind: .runbook, name: "noop", targetVersion: nil, createdAt: at(0),
                               hosts: [RunHost(name: "n-1", address: "10.2.0.1", batch: 0, steps: [RunStep(name: "true", command: "true")])],
                               batches: [["n-1"]], options: RunOptions())
        return JournalState(record: record, state: .created, haltReason: nil, startedAt: nil, finishedAt: nil,
                            hosts: [JournalState.Host(name: "n-1", status: .notStarted, error: nil, startedAt: nil, finishedAt: nil,
                                                      steps: [JournalState.Step(index: 0, name: "true", status: .pending, exitStatus: nil,
                                                                                stdoutTail: "", stderrTail: "", error: nil, startedAt: nil,
                                                                                finishedAt: nil, durationMS: nil, attempts: 0)])],
                            batches: [JournalState.Batch(index: 0, hosts: ["n-1"], startedAt: nil, finishedAt: nil)],
                            clusterSteps: [], events: [], artifacts: [])
    }

    // MARK: JUnit

    @Test func junitReadByJunitparser() async throws {
        let xml = RunReports.junit(Self.haltedRun())
        Self.expectOnlyXMLCharacters(xml)
        let parsed = try await JUnitReader.read(xml)

        #expect(parsed["name"] as? String == "flotilla run 20261121-153000-ab12")
        #expect(parsed["tests"] as? Int == 7)
        #expect(parsed["failures"] as? Int == 1)
        #expect(parsed["errors"] as? Int == 1)
        #expect(parsed["skipped"] as? Int == 2)
        #expect(parsed["time"] as? Double == 135)
        // The counts written are the counts junitparser finds in the cases.
        #expect(parsed["recounted"] as? [Int] == [7, 1, 1, 2])

        let suites = try #require(parsed["suites"] as? [[String: Any]])
        #expect(suites.map { $0["name"] as? String } == ["batch 1", "batch 2", "batch 3", "not batched"])
        #expect(suites.map { $0["tests"] as? Int } == [1, 4, 1, 1])
        #expect(suites.map { $0["failures"] as? Int } == [0, 1, 0, 0])
        #expect(suites.map { $0["errors"] as? Int } == [0, 1, 0, 0])
        #expect(suites.map { $0["skipped"] as? Int } == [0, 0, 1, 1])
        #expect(suites.map { $0["time"] as? Double } == [67, 61, 0, 0])
        #expect(suites.map { $0["timestamp"] as? String } == ["2026-11-21T15:30:01Z", "2026-11-21T15:31:10Z", nil, nil])
        #expect(suites.map { $0["recounted"] as? [Int] } == [[1, 0, 0, 0], [4, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1]])
        let properties = try #require(suites[1]["properties"] as? [String: String])
        #expect(properties == ["run_id": "20261121-153000-ab12", "kind": "stackstorm-upgrade", "target_version": "3.8.1",
                               "outcome": "halted", "halt_reason": Self.haltReason])

        let cases = suites.flatMap { $0["cases"] as? [[String: Any]] ?? [] }
        #expect(cases.map { $0["name"] as? String } == ["st2-01", "st2-02", "st2-03", "st2-04", "st2-05", "st2-06", "edge-01"])
        #expect(Set(cases.map { $0["classname"] as? String }) == ["flotilla.stackstorm-upgrade"])
        #expect(cases.map { $0["time"] as? Double } == [65, 57, 35, 10, 59.7, 0, 0])
        #expect(cases.map { ($0["results"] as? [[String: Any]])?.map { $0["kind"] as? String } } == [
            [], [], ["Failure"], ["Error"], [], ["Skipped"], ["Skipped"],
        ])
        func result(_ host: String) -> [String: Any] {
            (cases.first { $0["name"] as? String == host }?["results"] as? [[String: Any]])?.first ?? [:]
        }
        let failure = result("st2-03")
        #expect(failure["message"] as? String == "step 'upgrade packages' failed: exit 100: \(Self.shownLastLine)")
        #expect(failure["type"] as? String == "step-failed")
        let text = try #require(failure["text"] as? String)
        #expect(text.hasPrefix("step 2 'upgrade packages': apt-get install -y st2=3.8.1-1\nexit status 100 after 30.0 s\n--- stderr (tail) ---\n"), "\(text)")
        #expect(text.contains("returned an error code (1) ]]>\n</pre></script><b>x</b><!--\n\(Self.shownLastLine)\n--- stdout (tail) ---\nSetting up st2 (3.8.1-1) ...\n"), "\(text)")
        #expect(result("st2-04")["message"] as? String == "unreachable: connect to 10.0.0.14 port 22: Connection timed out")
        #expect(result("st2-04")["type"] as? String == "unreachable")
        #expect(result("st2-06")["message"] as? String == "not started: the run halted: \(Self.haltReason)")
        #expect(result("edge-01")["message"] as? String == Self.refusal)

        let out = try #require(cases[2]["system_out"] as? String)
        #expect(out == """
            st2-03 (10.0.0.13), batch 2, failed, st2 3.6.0 -> 3.8.1
            1. stop services: succeeded (exit 0, 5.0 s)
            2. upgrade packages: failed (exit 100, 30.0 s): exit 100: \(Self.shownLastLine)
            3. migrate database: pending
            4. start services: pending
            5. verify version: pending

            """)
        #expect((cases[6]["system_out"] as? String)?.hasPrefix("edge-01 (10.0.0.17), not batched, skipped\nnot run: \(Self.refusal)\n1. stop services: pending\n") == true)
    }

    /// Runs that stopped half way, hosts outside batches, and text XML attributes would
    /// otherwise normalise (newlines, tabs, carriage returns).
    @Test func junitOfAStoppedRun() async throws {
        let xml = RunReports.junit(Self.stoppedRun())
        Self.expectOnlyXMLCharacters(xml)
        let parsed = try await JUnitReader.read(xml)
        #expect(parsed["tests"] as? Int == 4)
        #expect(parsed["failures"] as? Int == 0)
        #expect(parsed["errors"] as? Int == 1)
        #expect(parsed["skipped"] as? Int == 3)
        let suites = try #require(parsed["suites"] as? [[String: Any]])
        #expect(suites.map { $0["name"] as? String } == ["batch 1", "not batched"])
        #expect(suites[0]["timestamp"] as? String == "2026-11-21T15:30:01Z")
        let cases = suites.flatMap { $0["cases"] as? [[String: Any]] ?? [] }
        #expect(Set(cases.map { $0["classname"] as? String }) == ["flotilla.runbook"])
        let results = cases.map { ($0["results"] as? [[String: Any]])?.first ?? [:] }
        #expect(results.map { $0["kind"] as? String } == ["Skipped", "Skipped", "Skipped", "Error"])
        #expect(results[0]["message"] as? String == "interrupted: step 'restart' was in flight; flotilla resume runs it again")
        #expect(results[1]["message"] as? String == "cancelled: stopped before 'restart' (--on-halt stop)")
        #expect(results[2]["message"] as? String == "already at 3.8.1")
        // A newline, a tab and a carriage return in an attribute survive as themselves.
        #expect(results[3]["message"] as? String == "unreachable: ssh: no route\n\tto host\r")
        #expect(cases.map { $0["time"] as? Double } == [2, 3, 0, 0])
        #expect((cases[0]["system_out"] as? String)?.contains("1. rotate: succeeded (exit 0, 2.0 s)\n2. restart: running (2 attempts)\n") == true)

        let empty = try await JUnitReader.read(RunReports.junit(Self.createdRun()))
        #expect(empty["tests"] as? Int == 1)
        #expect(empty["skipped"] as? Int == 1)
        #expect(empty["time"] as? Double == 0)
    }

    @Test func xmlEscapingByHand() {
        #expect(RunReports.attribute("a<b>&\"c\"'\n\t\r\u{0}\u{1B}\u{7F}\u{FFFE}") == "a&lt;b&gt;&amp;&quot;c&quot;&apos;&#10;&#9;&#13;\u{2400}\u{241B}\u{2421}\u{FFFD}")
        #expect(RunReports.text("]]> <x> & \"q\"\r\n\u{8}\u{B}\u{C}\u{1F}") == "]]&gt; &lt;x&gt; &amp; \"q\"&#13;\n\u{2408}\u{240B}\u{240C}\u{241F}")
    }

    /// No character XML 1.0 forbids (C0 controls but tab, newline, return; U+FFFE, U+FFFF).
    static func expectOnlyXMLCharacters(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let bad = text.unicodeScalars.filter { scalar in
            (scalar.value < 0x20 && ![0x9, 0xA, 0xD].contains(scalar.value)) || scalar.value == 0xFFFE || scalar.value == 0xFFFF
        }
        #expect(bad.isEmpty, "characters XML cannot hold: \(bad.map { String($0.value, radix: 16) })", sourceLocation: sourceLocation)
    }

    // MARK: HTML

    @Test func chromiumDrawsTheRun() async throws {
        let html = RunReports.html(Self.haltedRun())
        let dom = try await HeadlessChromium.render(html, copy: ProcessInfo.processInfo.environment["FLOTILLA_RUN_REPORT_HTML_COPY"])
        FleetReportHTMLTests.expectNoExternalResources(dom)

        // One bar per host that started, in batch order, coloured by status.
        let bars = Self.tags(dom, "rect").filter { $0["data-host"] != nil }
        #expect(bars.map { $0["data-host"] } == ["st2-01", "st2-02", "st2-03", "st2-04", "st2-05"])
        #expect(bars.map { $0["data-status"] } == ["succeeded", "succeeded", "failed", "unreachable", "succeeded"])
        #expect(bars.map { $0["data-batch"] } == ["0", "1", "1", "1", "1"])
        #expect(bars.map { $0["fill"] } == ["#12b76a", "#12b76a", "#d92d20", "#f79009", "#12b76a"])
        // Bars run from the host's start to its end on one time scale: st2-01 (2 s to 67 s)
        // is longer than st2-04 (70 s to 80 s) and starts before it.
        let geometry = bars.map { (x: Double($0["x"] ?? "") ?? -1, width: Double($0["width"] ?? "") ?? -1) }
        #expect(geometry[0].width > 5 * geometry[3].width)
        #expect(geometry[0].x < geometry[3].x)
        #expect(abs(geometry[1].x - geometry[2].x) < 0.01) // both started at 70 s

        // The failure is marked and names its step.
        let failedStep = Self.tags(dom, "rect").filter { $0["data-failed-step-bar"] != nil }
        #expect(failedStep.map { $0["data-failed-step-bar"] } == ["st2-03"])
        #expect(dom.contains(try Regex(#"<text [^>]*data-failed-step="upgrade packages"[^>]*data-label-for="st2-03"[^>]*>✖ upgrade packages<title>"#)), "\(dom)")
        #expect(Self.tags(dom, "text").filter { $0["data-failed-step"] != nil }.count == 1)
        // The bar's tooltip carries the failure.
        #expect(dom.contains("<title>st2-03 — failed\nstep 'upgrade packages' failed: exit 100: \(Self.escapeText(Self.shownLastLine))\n1:10 → 1:45 (35.0 s)</title>"), "\(dom)")

        // Batches labelled and shaded; hosts without a bar still have their row.
        #expect(Self.texts(dom, "data-batch-label") == [
            "0": "batch 1 · 1 host · 1 min 07 s", "1": "batch 2 · 4 hosts · 1 min 01 s", "2": "batch 3 · 1 host · not started",
            "none": "not batched · 1 host",
        ])
        #expect(Self.tags(dom, "rect").compactMap { $0["data-batch-band"] } == ["0", "1", "2", "none"])
        #expect(Self.tags(dom, "rect").compactMap { $0["data-batch-span"] } == ["0", "1"])
        #expect(Self.texts(dom, "data-row-note") == ["st2-06": "not started", "edge-01": "skipped: \(Self.escapeText(Self.refusal))"])
        // A time axis: 0:00 to 2:15 in 15 s ticks.
        #expect(Self.tags(dom, "text").compactMap { $0["data-tick"] } == (0...9).map { String($0 * 15_000) })

        // The summary.
        #expect(Self.cards(dom) == ["targeted": 7, "succeeded": 3, "failed": 1, "unreachable": 1, "skipped": 1, "not_started": 1, "cancelled": 0])
        #expect(dom.contains(#"<tr data-field="outcome"><th>outcome</th><td><span class="badge st-halted">halted</span></td></tr>"#))
        #expect(dom.contains("<tr data-field=\"halt reason\"><th>halt reason</th><td>\(Self.haltReason)</td></tr>"))
        #expect(dom.contains(#"<tr data-field="duration"><th>duration</th><td>2 min 15 s</td></tr>"#))
        #expect(dom.contains(#"<tr data-field="started"><th>started</th><td>2026-11-21T15:30:00Z</td></tr>"#))

        // Per host: a <details>, open for failures, with its steps and tails.
        let details = Self.tags(dom, "details")
        #expect(details.map { $0["data-host"] } == ["st2-01", "st2-02", "st2-03", "st2-04", "st2-05", "st2-06", "edge-01"])
        #expect(details.map { $0["data-status"] } == ["succeeded", "succeeded", "failed", "unreachable", "succeeded", "not_started", "skipped"])
        #expect(details.map { $0["open"] != nil } == [false, false, true, true, false, false, false])
        let failed = Self.details(dom, "st2-03")
        #expect(failed.contains(#"<tr data-step="upgrade packages" data-status="failed"><td class="num">2</td><td>upgrade packages</td><td><span class="badge st-failed">failed</span></td><td class="num">100</td><td class="num">1</td><td>2026-11-21T15:31:15Z</td><td class="num">30.0 s</td></tr>"#), "\(failed)")
        #expect(failed.contains(#"<tr data-step="migrate database" data-status="pending"><td class="num">3</td>"#), "\(failed)")
        // Hostile remote output is text: escaped markup, control characters as pictures.
        #expect(failed.contains("<pre data-stream=\"stderr\" data-step=\"upgrade packages\">\(Self.shownHTML(Self.hostileStderr))</pre>"), "\(failed)")
        #expect(failed.contains("<pre data-stream=\"stdout\" data-step=\"upgrade packages\">Setting up st2 (3.8.1-1) ...\n</pre>"))
        #expect(failed.contains("<div class=\"note\" data-note=\"st2-03\">step 'upgrade packages' failed: exit 100: \(Self.shownHTML(Self.hostileLastLine))</div>"), "\(failed)")
        #expect(Self.details(dom, "st2-04").contains("unreachable: connect to 10.0.0.14 port 22: Connection timed out"))
        // No table of steps that never ran: just what was planned.
        #expect(!Self.details(dom, "st2-06").contains("<table"))
        #expect(Self.details(dom, "st2-06").contains(">no step ran; planned: stop services, upgrade packages, migrate database, start services, verify version</div>"))
        #expect(Self.details(dom, "st2-01").contains(#"<pre data-stream="stdout" data-step="verify version">st2 3.8.1, on Python 3.8.10"#))
        #expect(dom.matches(of: try Regex(#"(?s)<script\b[^>]*>.*?</script>"#)).count == 2, "an extra script element")
        #expect(!FleetReportHTMLTests.withoutRawText(dom).contains("<b>x</b>"))
        #expect(!dom.unicodeScalars.contains { $0.value < 0x20 && ![0x9, 0xA, 0xD].contains($0.value) }, "a raw control character in the DOM")
        #expect(dom.contains("<td>halt</td><td>\(Self.haltReason)</td>"), "the events")
    }

    /// Runs with hosts in flight, hosts outside batches, or nothing started draw without
    /// failing.
    @Test(arguments: ["stopped", "created"])
    func chromiumDrawsUnfinishedRuns(_ which: String) async throws {
        let state = which == "stopped" ? Self.stoppedRun() : Self.createdRun()
        let copy = ProcessInfo.processInfo.environment["FLOTILLA_RUN_REPORT_HTML_COPY"].flatMap { $0.isEmpty ? nil : $0.replacingOccurrences(of: ".html", with: "") + "-\(which).html" }
        let dom = try await HeadlessChromium.render(RunReports.html(state), copy: copy)
        let bars = Self.tags(dom, "rect").filter { $0["data-host"] != nil }
        let details = Self.tags(dom, "details")
        if which == "stopped" {
            #expect(bars.map { $0["data-host"] } == ["a-1", "a-2"])
            #expect(bars.map { $0["data-status"] } == ["running", "cancelled"])
            #expect(details.map { $0["data-host"] } == ["a-1", "a-2", "old-1", "gone-1"])
            #expect(Self.texts(dom, "data-batch-label") == ["0": "batch 1 · 2 hosts", "none": "not batched · 2 hosts"])
            #expect(dom.contains(#"<tr data-field="finished"><th>finished</th><td>-</td></tr>"#))
            #expect(Self.texts(dom, "data-row-note") == ["old-1": "skipped: already at 3.8.1", "gone-1": "unreachable: ssh: no route\n\tto host\r"])
            #expect(Self.texts(dom, "data-label-for") == ["a-1": "2.0 s · interrupted", "a-2": "3.0 s"])
            #expect(dom.contains("<div id=\"what\" class=\"muted\">rotate \"logs\" — runbook</div>"), "\(dom)")
        } else {
            #expect(bars.isEmpty)
            #expect(details.map { $0["data-host"] } == ["n-1"])
            #expect(Self.texts(dom, "data-batch-label") == ["0": "batch 1 · 1 host · not started"])
            #expect(dom.contains(#"<tr data-field="duration"><th>duration</th><td>-</td></tr>"#))
        }
    }

    // MARK: Markdown

    @Test func markdownSummaryAndTable() {
        let markdown = RunReports.markdown(Self.haltedRun())
        let shown = "step 'upgrade packages' failed: exit 100: ␛\\[31mdpkg: error processing package st2 (--configure): \\<post-install\\> failed & \"exit\" 1␀␛\\[0m"
        #expect(markdown.hasPrefix("""
            # flotilla run 20261121-153000-ab12

            - **Run:** stackstorm-upgrade, target 3.8.1
            - **Outcome:** halted: max-fail 1 exceeded: 2 hosts failed
            - **Hosts:** 7 targeted: 3 succeeded, 1 failed, 1 unreachable, 1 skipped, 1 not_started
            - **Batches:** 3
            - **Started:** 2026-11-21T15:30:00Z; **finished:** 2026-11-21T15:32:15Z (2 min 15 s)

            ## Hosts

            | Host | Batch | Status | Duration | Failing step / error |
            | --- | --- | --- | --- | --- |
            | st2-01 | 1 | succeeded | 1 min 05 s | - |
            | st2-02 | 2 | succeeded | 57.0 s | - |
            | st2-03 | 2 | failed | 35.0 s | \(shown) |
            | st2-04 | 2 | unreachable | 10.0 s | unreachable: connect to 10.0.0.14 port 22: Connection timed out |
            | st2-05 | 2 | succeeded | 59.7 s | - |
            | st2-06 | 3 | not_started | - | not started: the run halted: max-fail 1 exceeded: 2 hosts failed |
            | edge-01 | - | skipped | - | refused: st2 version unknown: dpkg-query printed '\\<none\\>\\|\\*' |

            ## Failures

            ### st2-03: \(shown)

            stderr (tail):

            ```
            Reading package lists...
            """), "\(markdown)")
        #expect(markdown.hasSuffix("\(Self.shownLastLine)\n```\n"), "\(markdown)")
        #expect(!markdown.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })

        let stopped = RunReports.markdown(Self.stoppedRun())
        #expect(stopped.contains("""
            | a-1 | 1 | running | 2.0 s | interrupted: step 'restart' was in flight; flotilla resume runs it again |
            | a-2 | 1 | cancelled | 3.0 s | cancelled: stopped before 'restart' (--on-halt stop) |
            | old-1 | - | skipped | - | already at 3.8.1 |
            | gone-1 | - | unreachable | - | unreachable: ssh: no route to host |

            """), "\(stopped)")
        #expect(stopped.contains("- **Run:** rotate \"logs\" (runbook)\n- **Outcome:** stopped: stopped by the operator (flotilla ctl stop)\n"))
        #expect(stopped.contains("- **Started:** 2026-11-21T15:30:00Z; **finished:** -\n"), "\(stopped)")
        #expect(!RunReports.markdown(Self.createdRun()).contains("**Started:**"))
    }

    @Test func markdownCellEscaping() {
        #expect(RunReports.cell("a|b <i>*x* [l](u) `c` \\ snake_case _em_\nnext") == "a\\|b \\<i\\>\\*x\\* \\[l\\](u) \\`c\\` \\\\ snake_case \\_em\\_ next")
    }

    // MARK: Reading the DOM

    /// Every `<name ...>` start tag's attributes, in document order.
    static func tags(_ dom: String, _ name: String) -> [[String: String]] {
        dom.matches(of: try! Regex("<\(name)\\b[^>]*>")).map { match in
            var attributes: [String: String] = [:]
            for attribute in String(dom[match.range]).matches(of: try! Regex(#"([A-Za-z_:][-A-Za-z0-9_:.]*)(?:="([^"]*)")?"#)).dropFirst() {
                if let key = attribute.output[1].substring {
                    attributes[String(key)] = attribute.output[2].substring.map(String.init) ?? ""
                }
            }
            return attributes
        }
    }

    /// The text of each element carrying `attribute`, by the attribute's value.
    static func texts(_ dom: String, _ attribute: String) -> [String: String] {
        var texts: [String: String] = [:]
        for match in dom.matches(of: try! Regex("<[a-z]+ [^>]*\\b\(attribute)=\"([^\"]*)\"[^>]*>([^<]*)<")) {
            if let key = match.output[1].substring, let text = match.output[2].substring { texts[String(key)] = String(text) }
        }
        return texts
    }

    /// `data-count` name → the number its card shows.
    static func cards(_ dom: String) -> [String: Int] {
        var cards: [String: Int] = [:]
        for match in dom.matches(of: try! Regex(#"data-count="([^"]*)"[^>]*><b>([0-9]+)</b>"#)) {
            if let name = match.output[1].substring, let count = match.output[2].substring.flatMap({ Int($0) }) { cards[String(name)] = count }
        }
        return cards
    }

    /// The markup of one host's `<details>`.
    static func details(_ dom: String, _ host: String) -> String {
        guard let start = dom.range(of: "<details data-host=\"\(host)\"") else { return "" }
        let rest = dom[start.lowerBound...]
        return String(rest[..<(rest.range(of: "</details>")?.upperBound ?? rest.endIndex)])
    }

    static func escapeText(_ text: String) -> String { FleetReportHTMLTests.escapeText(text) }

    /// How the page shows remote output: markup escaped, each control character (but tab,
    /// newline, return) as a labelled box.
    static func shownHTML(_ text: String) -> String {
        let names = ["NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI", "DLE", "DC1",
                     "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"]
        return text.unicodeScalars.map { scalar -> String in
            let value = Int(scalar.value)
            guard value < 0x20 && ![0x9, 0xA, 0xD].contains(value) || value == 0x7F else { return escapeText(String(scalar)) }
            return "<span class=\"ctl\" title=\"U+\(String(format: "%04X", value))\">\(value == 0x7F ? "DEL" : names[value])</span>"
        }.joined()
    }
}

/// JUnit XML read back by Python: xml.etree.ElementTree (well-formedness) and junitparser
/// (the JUnit model CI tools share), summarised as JSON.
enum JUnitReader {
    static let script = #"""
import json, sys
import xml.etree.ElementTree as ET
from junitparser import JUnitXml, TestSuite, Failure, Error, Skipped
path = sys.argv[1]
ET.parse(path)  # raises on anything not well-formed
xml = JUnitXml.fromfile(path)
assert isinstance(xml, JUnitXml), "the root is not <testsuites>"
def counts(node):
    return [node.tests, node.failures, node.errors, node.skipped]
out = {"name": xml.name, "tests": xml.tests, "failures": xml.failures, "errors": xml.errors,
       "skipped": xml.skipped, "time": xml.time, "suites": []}
for suite in xml:
    entry = {"name": suite.name, "tests": suite.tests, "failures": suite.failures, "errors": suite.errors,
             "skipped": suite.skipped, "time": suite.time, "timestamp": suite.timestamp,
             "properties": {p.name: p.value for p in suite.properties()}, "cases": []}
    for case in suite:
        entry["cases"].append({
            "name": case.name, "classname": case.classname, "time": case.time,
            "system_out": case.system_out, "system_err": case.system_err,
            "results": [{"kind": type(r).__name__, "message": r.message, "type": r.type, "text": r.text} for r in case.result]})
    suite.update_statistics()
    entry["recounted"] = counts(suite)
    out["suites"].append(entry)
xml.update_statistics()
out["recounted"] = counts(xml)
print(json.dumps(out))
"""#

    /// The parsed document; fails the test (does not skip it) when python3 or junitparser
    /// is missing.
    static func read(_ xml: String) async throws -> [String: Any] {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-junit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let check = try await python(["-c", "import junitparser"], in: directory)
        guard check.status == 0 else {
            throw HeadlessChromium.Failure(description: "the JUnit tests need Python 3 with junitparser: python3 -m pip install junitparser "
                                           + "(python3 -c 'import junitparser' exited with \(check.status): \(check.stderr.suffix(2000)))")
        }
        let file = directory.appendingPathComponent("junit.xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        let result = try await python(["-c", script, file.path], in: directory)
        guard result.status == 0, let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
            throw HeadlessChromium.Failure(description: "junitparser could not read the JUnit XML (exit \(result.status)):\n\(result.stderr.suffix(4000))\n\(xml)")
        }
        return object
    }

    /// `python3 ARGS` (found on PATH by env) with a time bound.
    static func python(_ arguments: [String], in directory: URL) async throws -> (status: Int32, stdout: String, stderr: String) {
        let stdout = directory.appendingPathComponent("python.out").path
        let stderr = directory.appendingPathComponent("python.err").path
        let exit = try await Spawn.run(["/usr/bin/env", "python3"] + arguments, environment: ProcessInfo.processInfo.environment,
                                       stdout: stdout, stderr: stderr, timeout: 60)
        let out = (try? String(contentsOfFile: stdout, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
        return (exit.timedOut ? -1 : exit.status, out, exit.timedOut ? "timed out after 60 s\n" + err : err)
    }
}
