import Foundation

/// A run rendered from its journal for people and CI: JUnit XML (`--junit`, one testcase
/// per host), a self-contained HTML page with a timeline of batches and hosts (`--html`),
/// and Markdown (a summary and a table of hosts, for tickets and pull requests).
///
/// Batches are numbered from 1 in what people read ("batch 1"), as `flotilla show` and
/// the progress lines do; the run result JSON (and the HTML's `data-batch`) keep the
/// 0-based index.
public enum RunReports {
    // MARK: What every renderer needs about a host

    /// One host as planned and as it stands.
    struct Entry {
        var planned: RunHost
        var run: JournalState.Host

        var failedStep: JournalState.Step? { run.steps.first { $0.status == .failed } }

        /// The planned step of a recorded one.
        func command(_ step: JournalState.Step) -> String? {
            planned.steps.indices.contains(step.index) ? planned.steps[step.index].command : nil
        }
    }

    static func entries(_ state: JournalState) -> [Entry] {
        zip(state.record.hosts, state.hosts).map { Entry(planned: $0, run: $1) }
    }

    /// Why a host is where it is, in one line (nil for a host that succeeded or has not
    /// started): what JUnit puts in `message`, Markdown in its last column and the HTML
    /// next to the host.
    static func note(_ entry: Entry, _ state: JournalState) -> String? {
        let host = entry.run
        switch host.status {
        case .succeeded:
            return nil
        case .failed:
            if let step = entry.failedStep {
                return "step '\(step.name)' failed: \(step.error ?? "exit \(step.exitStatus.map(String.init) ?? "?")")"
            }
            return host.error ?? "failed"
        case .unreachable:
            let reason = host.error ?? entry.planned.skipReason ?? ""
            return reason.hasPrefix("unreachable") ? reason : "unreachable: \(reason)"
        case .skipped:
            return entry.planned.skipReason ?? host.error ?? "skipped"
        case .cancelled:
            return "cancelled" + (host.error.map { ": \($0)" } ?? "")
        case .notStarted:
            guard state.startedAt != nil || state.state != .created else { return nil }
            return [.halted, .stopped].contains(state.state)
                ? "not started: the run \(state.state.rawValue)" + (state.haltReason.map { ": \($0)" } ?? "")
                : nil
        case .running:
            let step = host.steps.first { $0.status == .running }
            if state.state == .running { return step.map { "running step '\($0.name)'" } ?? "running" }
            return "interrupted" + (step.map { ": step '\($0.name)' was in flight; flotilla resume runs it again" } ?? "")
        }
    }

    // MARK: Times

    static func stamp(_ date: Date?) -> String? { date.map { ISO8601DateFormatter().string(from: $0) } }

    static func milliseconds(_ from: Date, _ to: Date) -> Int { Int((to.timeIntervalSince(from) * 1000).rounded()) }

    /// Where a step ends: its finish, else its start plus its duration.
    static func end(_ step: JournalState.Step) -> Date? {
        step.finishedAt ?? step.startedAt.map { start in step.durationMS.map { start.addingTimeInterval(Double($0) / 1000) } ?? start }
    }

    /// The host's start and end as far as the journal knows them (a host interrupted
    /// mid-step ends at its last recorded time).
    static func span(_ host: JournalState.Host) -> (start: Date, end: Date)? {
        guard let start = host.startedAt ?? host.steps.compactMap(\.startedAt).min() else { return nil }
        let end = host.finishedAt ?? host.steps.compactMap(end).max() ?? start
        return (start, max(start, end))
    }

    /// The host's duration in milliseconds: start to finish, else the sum of its steps.
    static func duration(_ host: JournalState.Host) -> Int? {
        if let span = span(host) { return milliseconds(span.start, span.end) }
        let steps = host.steps.compactMap(\.durationMS)
        return steps.isEmpty ? nil : steps.reduce(0, +)
    }

    /// When the run started and ended (or was last heard of).
    static func runSpan(_ state: JournalState) -> (start: Date, end: Date) {
        let starts = state.hosts.compactMap { span($0)?.start } + state.batches.compactMap(\.startedAt)
        let start = state.startedAt ?? starts.min() ?? state.record.createdAt
        let ends = state.hosts.compactMap { span($0)?.end } + state.batches.compactMap(\.finishedAt)
        let end = state.finishedAt ?? ends.max() ?? start
        return (start, max(start, end))
    }

    /// `12.3 s`, `4 min 05 s`, `1 h 02 min`.
    public static func durationText(milliseconds ms: Int?) -> String {
        guard let ms else { return "-" }
        if ms < 60_000 { return String(format: "%.1f s", Double(max(ms, 0)) / 1000) }
        let seconds = ms / 1000
        if seconds < 3600 { return String(format: "%d min %02d s", seconds / 60, seconds % 60) }
        return String(format: "%d h %02d min", seconds / 3600, seconds % 3600 / 60)
    }

    static func batchLabel(_ index: Int?) -> String { index.map { "batch \($0 + 1)" } ?? "not batched" }

    /// Control characters other than tab, newline and carriage return as the visible
    /// Unicode control pictures (ESC as ␛, NUL as ␀, DEL as ␡): XML 1.0 cannot carry them,
    /// and in a page or a table they would be invisible or garble the terminal. U+FFFE and
    /// U+FFFF (not characters either) become U+FFFD.
    public static func visible(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x9, 0xA, 0xD: out.append(scalar)
            case 0..<0x20: out.append(Unicode.Scalar(0x2400 + scalar.value)!)
            case 0x7F: out.append("\u{2421}")
            case 0xFFFE, 0xFFFF: out.append("\u{FFFD}")
            default: out.append(scalar)
            }
        }
        return String(out)
    }

    // MARK: JUnit

    /// JUnit XML as Jenkins, GitLab and Surefire read it: one `<testsuite>` per batch
    /// ("batch 1", ...) and one "not batched" for hosts that never joined one (refused, at
    /// target, unreachable at plan time); one `<testcase>` per host. A failed host has a
    /// `<failure>` naming the failing step, with its stderr and stdout tails; an
    /// unreachable one an `<error>`; a skipped, cancelled, interrupted or not started one
    /// `<skipped>`. `<system-out>` lists the host's steps.
    public static func junit(_ state: JournalState) -> String {
        let entries = entries(state)
        let run = runSpan(state)
        let kind = state.record.kind.rawValue
        var totals = (tests: 0, failures: 0, errors: 0, skipped: 0)
        var suites = ""

        func testcase(_ entry: Entry) -> (xml: String, failure: Bool, error: Bool, skipped: Bool) {
            let host = entry.run
            let seconds = Double(duration(host) ?? 0) / 1000
            var xml = "    <testcase classname=\"\(attribute("flotilla." + kind))\" name=\"\(attribute(host.name))\" time=\"\(String(format: "%.3f", seconds))\">\n"
            let message = note(entry, state) ?? ""
            var outcome = (failure: false, error: false, skipped: false)
            switch host.status {
            case .succeeded:
                break
            case .failed:
                outcome.failure = true
                var body = ""
                if let step = entry.failedStep {
                    body += "step \(step.index + 1) '\(step.name)'" + (entry.command(step).map { ": \($0)" } ?? "") + "\n"
                    body += "exit status \(step.exitStatus.map(String.init) ?? "none") after \(durationText(milliseconds: step.durationMS))"
                        + (step.attempts > 1 ? " (attempt \(step.attempts))" : "") + "\n"
                    body += "--- stderr (tail) ---\n" + step.stderrTail + (step.stderrTail.hasSuffix("\n") || step.stderrTail.isEmpty ? "" : "\n")
                    body += "--- stdout (tail) ---\n" + step.stdoutTail + (step.stdoutTail.hasSuffix("\n") || step.stdoutTail.isEmpty ? "" : "\n")
                } else {
                    body += (host.error ?? "failed") + "\n"
                }
                xml += "      <failure message=\"\(attribute(message))\" type=\"\(entry.failedStep == nil ? "host-failed" : "step-failed")\">"
                    + text(body) + "</failure>\n"
            case .unreachable:
                outcome.error = true
                xml += "      <error message=\"\(attribute(message))\" type=\"unreachable\">"
                    + text("\(entry.planned.address): \(host.error ?? entry.planned.skipReason ?? "unreachable")\n") + "</error>\n"
            case .skipped, .notStarted, .cancelled, .running:
                outcome.skipped = true
                xml += "      <skipped message=\"\(attribute(message.isEmpty ? host.status.rawValue : message))\"/>\n"
            }
            var out = "\(host.name) (\(entry.planned.address)), \(batchLabel(entry.planned.batch)), \(host.status.rawValue)"
            if entry.planned.fromVersion != nil || entry.planned.toVersion != nil {
                out += ", st2 \(entry.planned.fromVersion ?? "?") -> \(entry.planned.toVersion ?? "?")"
            }
            out += "\n"
            if entry.planned.batch == nil, let reason = entry.planned.skipReason { out += "not run: \(reason)\n" }
            for step in host.steps {
                var line = "\(step.index + 1). \(step.name): \(step.status.rawValue)"
                var details: [String] = []
                if let exit = step.exitStatus { details.append("exit \(exit)") }
                if let ms = step.durationMS, step.status != .pending { details.append(durationText(milliseconds: ms)) }
                if step.attempts > 1 { details.append("\(step.attempts) attempts") }
                if !details.isEmpty { line += " (" + details.joined(separator: ", ") + ")" }
                if let error = step.error, step.status != .succeeded { line += ": \(error)" }
                out += line + "\n"
            }
            xml += "      <system-out>" + text(out) + "</system-out>\n"
            xml += "    </testcase>\n"
            return (xml, outcome.failure, outcome.error, outcome.skipped)
        }

        func suite(_ name: String, _ members: [Entry], start: Date?, end: Date?) {
            var cases = ""
            var counts = (failures: 0, errors: 0, skipped: 0)
            var sum = 0
            for entry in members {
                let result = testcase(entry)
                cases += result.xml
                counts.failures += result.failure ? 1 : 0
                counts.errors += result.error ? 1 : 0
                counts.skipped += result.skipped ? 1 : 0
                sum += duration(entry.run) ?? 0
            }
            let ms = start.map { start in end.map { milliseconds(start, $0) } ?? sum } ?? sum
            totals.tests += members.count
            totals.failures += counts.failures
            totals.errors += counts.errors
            totals.skipped += counts.skipped
            suites += "  <testsuite name=\"\(attribute(name))\" tests=\"\(members.count)\" failures=\"\(counts.failures)\" errors=\"\(counts.errors)\""
                + " skipped=\"\(counts.skipped)\" time=\"\(String(format: "%.3f", Double(ms) / 1000))\""
                + (stamp(start).map { " timestamp=\"\($0)\"" } ?? "") + ">\n"
            suites += "    <properties>\n"
            var properties = [("run_id", state.record.id), ("kind", state.record.kind.rawValue)]
            if let name = state.record.name { properties.append(("name", name)) }
            if let target = state.record.targetVersion { properties.append(("target_version", target)) }
            properties.append(("outcome", RunResult.outcome(state.state)))
            if let reason = state.haltReason { properties.append(("halt_reason", reason)) }
            for (key, value) in properties {
                suites += "      <property name=\"\(attribute(key))\" value=\"\(attribute(value))\"/>\n"
            }
            suites += "    </properties>\n" + cases + "  </testsuite>\n"
        }

        for (index, names) in state.record.batches.enumerated() {
            let times = state.batches.first { $0.index == index }
            let members = names.compactMap { name in entries.first { $0.planned.name == name } }
            suite(batchLabel(index), members, start: times?.startedAt, end: times?.finishedAt)
        }
        let batched = Set(state.record.batches.joined())
        let others = entries.filter { !batched.contains($0.planned.name) }
        if !others.isEmpty { suite(batchLabel(nil), others, start: nil, end: nil) }

        let runMS = state.startedAt == nil && entries.allSatisfy({ span($0.run) == nil }) ? 0 : milliseconds(run.start, run.end)
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            + "<testsuites name=\"\(attribute("flotilla run \(state.record.id)"))\" tests=\"\(totals.tests)\" failures=\"\(totals.failures)\""
            + " errors=\"\(totals.errors)\" skipped=\"\(totals.skipped)\" time=\"\(String(format: "%.3f", Double(runMS) / 1000))\""
            + (stamp(state.startedAt).map { " timestamp=\"\($0)\"" } ?? "") + ">\n"
            + suites + "</testsuites>\n"
    }

    /// XML character data: `&`, `<`, `>` as entities, carriage returns as `&#13;` (a parser
    /// would turn a literal one into a newline), characters XML 1.0 cannot hold made visible.
    static func text(_ value: String) -> String { escapeXML(value, inAttribute: false) }

    /// An XML attribute value in double quotes: as `text`, plus quotes, and tab, newline
    /// and carriage return as references (a parser turns literal ones into spaces).
    static func attribute(_ value: String) -> String { escapeXML(value, inAttribute: true) }

    private static func escapeXML(_ value: String, inAttribute: Bool) -> String {
        var out = ""
        for character in visible(value).unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\r": out += "&#13;"
            case "\"" where inAttribute: out += "&quot;"
            case "'" where inAttribute: out += "&apos;"
            case "\t" where inAttribute: out += "&#9;"
            case "\n" where inAttribute: out += "&#10;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    // MARK: Markdown

    /// A summary and a table of hosts (host, batch, status, duration, failing step or
    /// error), then each failed host's failing step with its stderr tail.
    public static func markdown(_ state: JournalState) -> String {
        let entries = entries(state)
        let run = runSpan(state)
        let counts = state.hostCounts
        var out = "# flotilla run \(cell(state.record.id))\n\n"
        var what = state.record.name.map { "\(cell($0)) (\(cell(state.record.kind.rawValue)))" } ?? cell(state.record.kind.rawValue)
        if let target = state.record.targetVersion { what += ", target \(cell(target))" }
        out += "- **Run:** \(what)\n"
        out += "- **Outcome:** \(RunResult.outcome(state.state))" + (state.haltReason.map { ": \(cell($0))" } ?? "") + "\n"
        let order: [HostRunStatus] = [.succeeded, .failed, .unreachable, .skipped, .cancelled, .running, .notStarted]
        let parts = order.compactMap { status in counts[status].map { "\($0) \(status.rawValue)" } }
        out += "- **Hosts:** \(entries.count) targeted" + (parts.isEmpty ? "" : ": " + parts.joined(separator: ", ")) + "\n"
        out += "- **Batches:** \(state.record.batches.count)\n"
        if state.startedAt != nil || state.finishedAt != nil {
            out += "- **Started:** \(stamp(state.startedAt ?? run.start) ?? "-"); **finished:** \(stamp(state.finishedAt) ?? "-")"
                + (state.finishedAt != nil ? " (\(durationText(milliseconds: milliseconds(run.start, run.end))))" : "") + "\n"
        }
        out += "\n## Hosts\n\n| Host | Batch | Status | Duration | Failing step / error |\n| --- | --- | --- | --- | --- |\n"
        for entry in entries {
            let batch = entry.planned.batch.map { String($0 + 1) } ?? "-"
            let note = note(entry, state).map { cell(oneLine($0)) } ?? "-"
            out += "| \(cell(entry.run.name)) | \(batch) | \(entry.run.status.rawValue) | \(durationText(milliseconds: duration(entry.run))) | \(note) |\n"
        }
        let failed = entries.filter { $0.run.status == .failed }
        if !failed.isEmpty {
            out += "\n## Failures\n"
            for entry in failed {
                out += "\n### \(cell(entry.run.name)): \(cell(oneLine(note(entry, state) ?? "failed")))\n"
                guard let step = entry.failedStep else { continue }
                let tail = visible(step.stderrTail.isEmpty ? step.stdoutTail : step.stderrTail)
                guard !tail.isEmpty else { continue }
                let lines = tail.split(separator: "\n", omittingEmptySubsequences: false)
                let shown = lines.suffix(20).joined(separator: "\n")
                // A fence longer than any run of backticks in the text.
                var longest = 0, current = 0
                for character in shown { current = character == "`" ? current + 1 : 0; longest = max(longest, current) }
                let fence = String(repeating: "`", count: max(3, longest + 1))
                out += "\n\(step.stderrTail.isEmpty ? "stdout" : "stderr") (tail):\n\n\(fence)\n\(shown)" + (shown.hasSuffix("\n") ? "" : "\n") + "\(fence)\n"
            }
        }
        return out
    }

    static func oneLine(_ text: String) -> String {
        let flat = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\t" }).joined(separator: " ")
        return flat.count > 300 ? String(flat.prefix(299)) + "…" : flat
    }

    /// Text in a Markdown table cell or line: control characters visible, and the
    /// characters that would end a cell, open HTML or start emphasis, code or a link
    /// backslash-escaped (an underscore only where it could start or end emphasis).
    static func cell(_ text: String) -> String {
        let characters = Array(visible(oneLine(text)))
        var out = ""
        for (index, character) in characters.enumerated() {
            switch character {
            case "\\", "|", "<", ">", "`", "*", "[", "]":
                out += "\\\(character)"
            case "_":
                let before = index > 0 && (characters[index - 1].isLetter || characters[index - 1].isNumber)
                let after = index + 1 < characters.count && (characters[index + 1].isLetter || characters[index + 1].isNumber)
                out += before && after ? "_" : "\\_"
            default:
                out.append(character)
            }
        }
        return out
    }

    // MARK: HTML

    /// What the page's script draws from, besides the run result JSON: times in
    /// milliseconds from the run's start, durations as text, each host's failing step.
    static func view(_ state: JournalState) -> JSONValue {
        let run = runSpan(state)
        func at(_ date: Date?) -> JSONValue { .int(date.map { milliseconds(run.start, $0) }) }
        let batches: [JSONValue] = state.record.batches.enumerated().map { index, names in
            let times = state.batches.first { $0.index == index }
            let ms = times?.startedAt.flatMap { start in times?.finishedAt.map { milliseconds(start, $0) } }
            return .object([("index", .int(index)), ("label", .string(batchLabel(index))), ("hosts", .strings(names)),
                            ("start", at(times?.startedAt)), ("end", at(times?.finishedAt)),
                            ("duration", .string(ms.map { durationText(milliseconds: $0) }))])
        }
        let hosts: [JSONValue] = entries(state).map { entry in
            let host = entry.run
            let span = span(host)
            let failed = host.status == .failed ? entry.failedStep : nil
            let recorded = host.steps.filter { $0.status != .pending } // as the run result lists them
            return .object([
                ("name", .string(host.name)), ("batch", .int(entry.planned.batch)), ("status", .string(host.status.rawValue)),
                ("start", at(span?.start)), ("end", at(span?.end)),
                ("duration", .string(duration(host).map { durationText(milliseconds: $0) })),
                ("note", .string(note(entry, state))),
                ("failed_step", .string(failed?.name)),
                ("failed_step_start", at(failed?.startedAt)), ("failed_step_end", at(failed.flatMap(end))),
                ("steps", .array(recorded.map { step in
                    .object([("start", at(step.startedAt)), ("end", at(end(step))),
                             ("duration", .string(step.durationMS.map { durationText(milliseconds: $0) }))])
                })),
                ("pending", .strings(host.steps.filter { $0.status == .pending }.map(\.name))),
            ])
        }
        return .object([
            ("start", .string(stamp(run.start))), ("span", .int(milliseconds(run.start, run.end))),
            ("duration", .string(state.startedAt == nil ? nil : durationText(milliseconds: milliseconds(run.start, run.end)))),
            ("batches", .array(batches)), ("hosts", .array(hosts)),
            ("events", .array(state.events.map {
                .object([("at", .string(stamp($0.at))), ("kind", .string($0.kind)), ("message", .string($0.message))])
            })),
        ])
    }

    /// One self-contained page (inline CSS and script, no external resources): a summary,
    /// a timeline drawn by the page's script from the embedded data (one row per host,
    /// grouped by batch; a bar per started host from its start to its end, coloured by
    /// status; the failing step marked and named; a time axis) and each host's steps in
    /// a `<details>`. When the script has drawn, `<body data-rendered="ok">`.
    ///
    /// Stable hooks: each bar is `<rect data-host data-status data-batch>` (the 0-based
    /// batch index, "none" outside a batch); a failing step's label has
    /// `data-failed-step`; batch labels `data-batch-label`; each host's section
    /// `<details data-host data-status>`; the count cards `data-count`.
    public static func html(_ state: JournalState) -> String {
        let data: JSONValue = .object([("run", RunResult.json(state)), ("view", view(state))])
        // Every "<" as \u003c (JSON has "<" only inside strings): neither "</script>" nor
        // "<!--" can occur in the data element.
        let embedded = data.rendered().replacingOccurrences(of: "<", with: "\\u003c")
        let title = FleetReport.escape(visible("flotilla run \(state.record.id)"))
        let fallback = FleetReport.escape(visible(markdown(state)))
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>\(title)</title>
            <style>
            body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1160px;color:#1d2430;padding:0 1em}
            h1{font-size:22px;margin-bottom:.2em}h2{font-size:17px;margin-top:1.8em;border-bottom:1px solid #d6dbe3;padding-bottom:.2em}
            table{border-collapse:collapse;margin:.4em 0}td,th{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:left;vertical-align:top}
            th{background:#f3f5f8;font-weight:600}.muted{color:#667085}.num{text-align:right}
            #summary th{background:none;color:#667085;font-weight:normal;padding-left:0}
            .cards{display:flex;gap:10px;flex-wrap:wrap;margin:1em 0}.card{border:1px solid #d6dbe3;border-radius:6px;padding:6px 14px;min-width:90px}
            .card b{display:block;font-size:22px}
            .badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;background:#667085}
            .st-succeeded{background:#12b76a}.st-failed,.st-halted{background:#d92d20}.st-unreachable,.st-completed_with_failures{background:#f79009}
            .st-skipped{background:#98a2b3}.st-not_started,.st-pending{background:#d0d5dd;color:#344054}.st-cancelled,.st-stopped{background:#667085}.st-running{background:#2e90fa}
            .legend{display:flex;gap:14px;font-size:12px;color:#475467;margin:.3em 0}.legend span:before{content:"";display:inline-block;width:12px;height:10px;border-radius:2px;margin-right:5px;background:var(--c)}
            #timeline{display:block;max-width:100%;height:auto}svg text{font:12px system-ui,sans-serif;fill:#1d2430}
            svg .axis{fill:#667085;font-size:11px}svg .group{font-weight:600}svg .fail{fill:#b42318;font-weight:600}svg .dim{fill:#667085}
            details{border:1px solid #e1e5eb;border-radius:6px;margin:.4em 0;padding:.3em .8em}details[open]{padding-bottom:.8em}
            summary{cursor:pointer}summary .host{font-weight:600;margin:0 .4em}
            pre{background:#f6f8fa;border:1px solid #e6e9ee;border-radius:4px;padding:6px 8px;white-space:pre-wrap;word-break:break-word;margin:.3em 0;max-height:320px;overflow:auto;font-size:12px}
            .note{color:#b42318}.ctl{display:inline-block;font:600 9px/1.3 system-ui,sans-serif;color:#475467;background:#eaecf0;border:1px solid #98a2b3;border-radius:2px;padding:0 2px;margin:0 1px;vertical-align:1px}h4{margin:.8em 0 .2em;font-size:13px}
            </style></head>
            <body>
            <h1 id="title">\(title)</h1>
            <div id="what" class="muted"></div>
            <table id="summary"></table>
            <div class="cards" id="cards"></div>
            <h2>Timeline</h2>
            <div class="legend" id="legend"></div>
            <svg id="timeline" role="img" aria-label="timeline of batches and hosts"></svg>
            <h2>Hosts</h2>
            <div id="hosts"></div>
            <div id="events"></div>
            <noscript><pre>\(fallback)</pre></noscript>
            <script type="application/json" id="run-data">\(embedded)</script>
            <script>
            (function(){
            var d=JSON.parse(document.getElementById('run-data').textContent),r=d.run,v=d.view;
            var colors={succeeded:'#12b76a',failed:'#d92d20',unreachable:'#f79009',skipped:'#98a2b3',not_started:'#d0d5dd',cancelled:'#667085',running:'#2e90fa'};
            function vis(s){return String(s).replace(/[\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]/g,function(c){var n=c.charCodeAt(0);return String.fromCharCode(n===127?0x2421:0x2400+n);});}
            var ctl=['NUL','SOH','STX','ETX','EOT','ENQ','ACK','BEL','BS','HT','LF','VT','FF','CR','SO','SI','DLE','DC1','DC2','DC3','DC4','NAK','SYN','ETB','CAN','EM','SUB','ESC','FS','GS','RS','US'];
            // Text into an HTML element: control characters (but tab, newline, return) as small labelled boxes, readable in any font.
            function fill(e,txt){String(txt).split(/([\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f])/).forEach(function(part,i){
              if(i%2===0){if(part)e.appendChild(document.createTextNode(part));return;}
              var n=part.charCodeAt(0),c=document.createElement('span');c.className='ctl';c.title='U+00'+(n<16?'0':'')+n.toString(16).toUpperCase();c.textContent=n===127?'DEL':ctl[n];e.appendChild(c);});}
            function el(t,a,txt){var e=document.createElement(t);for(var k in a||{})if(a[k]!=null)e.setAttribute(k,vis(a[k]));if(txt!=null)fill(e,txt);return e;}
            function add(p,c){p.appendChild(c);return c;}
            function badge(s){return el('span',{'class':'badge st-'+s},s);}
            function batchName(i){return i==null?'not batched':'batch '+(i+1);}
            // Summary
            document.getElementById('what').textContent=vis((r.name?r.name+' \\u2014 ':'')+r.kind+(r.target_version?' to '+r.target_version:''));
            var sum=document.getElementById('summary');
            function row(k,val,node){var tr=add(sum,el('tr',{'data-field':k}));add(tr,el('th',{},k));var td=add(tr,el('td'));if(node)td.appendChild(node);if(val!=null)fill(td,val);}
            row('run',r.run_id);row('kind',r.kind+(r.name?' ('+r.name+')':''));row('target',r.target_version||'-');
            row('outcome',null,badge(r.outcome));if(r.halt_reason)row('halt reason',r.halt_reason);
            row('started',r.started_at||'-');row('finished',r.finished_at||'-');row('duration',v.duration||'-');
            row('batches',String(v.batches.length));
            var cards=document.getElementById('cards');
            ['targeted','succeeded','failed','unreachable','skipped','not_started','cancelled'].forEach(function(k){
              var c=add(cards,el('div',{'class':'card','data-count':k}));add(c,el('b',{},String(r.summary[k])));c.appendChild(document.createTextNode(k.replace('_',' ')));});
            // Legend: the statuses present
            var seen={};r.hosts.forEach(function(h){seen[h.status]=1;});
            var legend=document.getElementById('legend');
            Object.keys(colors).forEach(function(s){if(seen[s])add(legend,el('span',{'style':'--c:'+colors[s]},s.replace('_',' ')));});
            if(seen.failed)add(legend,el('span',{'style':'--c:#912018'},'failing step'));
            if(v.batches.some(function(b){return b.start!=null;}))add(legend,el('span',{'style':'--c:rgba(46,144,250,.25)'},'batch start to finish'));
            // Timeline
            var svg=document.getElementById('timeline'),ns='http://www.w3.org/2000/svg';
            var W=1120,L=150,P=W-L-190,RH=22,GH=26,top=48,span=Math.max(v.span,1000);
            function x(ms){return L+Math.max(0,Math.min(ms,span))/span*P;}
            function s(t,a,txt,parent){var e=document.createElementNS(ns,t);for(var k in a)if(a[k]!=null)e.setAttribute(k,vis(a[k]));if(txt!=null)e.textContent=vis(txt);(parent||svg).appendChild(e);return e;}
            function tip(e,txt){s('title',{},txt,e);}
            function clock(ms){var t=Math.round(ms/1000),h=Math.floor(t/3600),m=Math.floor(t%3600/60),sec=t%60;return (h?h+':'+(m<10?'0':''):'')+m+':'+(sec<10?'0':'')+sec;}
            var groups=[];v.batches.forEach(function(b){groups.push({index:b.index,label:b.label,batch:b,hosts:[]});});
            var loose={index:null,label:'not batched',batch:null,hosts:[]};
            v.hosts.forEach(function(h,i){var g=h.batch!=null&&groups[h.batch]?groups[h.batch]:loose;g.hosts.push(i);});
            if(loose.hosts.length)groups.push(loose);
            var height=top;groups.forEach(function(g){height+=GH+g.hosts.length*RH+6;});height+=8;
            svg.setAttribute('width',W);svg.setAttribute('height',height);svg.setAttribute('viewBox','0 0 '+W+' '+height);
            // Time axis and grid
            var steps=[1,2,5,10,15,30,60,120,300,600,900,1800,3600,7200,10800,21600],tick=steps[steps.length-1]*1000;
            for(var i=0;i<steps.length;i++){if(span/(steps[i]*1000)<=10){tick=steps[i]*1000;break;}}
            var axis=s('g',{'id':'time-axis'});
            s('text',{x:L,y:12,'class':'axis'},'minutes:seconds since the start, '+(v.start||'').replace('T',' ').replace('Z',' UTC'),axis);
            for(var t=0;t<=span+1;t+=tick){s('line',{x1:x(t),y1:36,x2:x(t),y2:height-6,stroke:'#e4e7ec'},null,axis);
              s('text',{x:x(t),y:30,'text-anchor':'middle','class':'axis','data-tick':t},clock(t),axis);}
            s('line',{x1:L,y1:36,x2:L+P,y2:36,stroke:'#98a2b3'},null,axis);
            var y=top;
            groups.forEach(function(g,gi){
              var gh=GH+g.hosts.length*RH;
              s('rect',{x:0,y:y,width:W,height:gh,fill:gi%2?'#ffffff':'#f5f7fa','data-batch-band':g.index==null?'none':g.index});
              var b=g.batch,label=g.label+' \\u00b7 '+g.hosts.length+' host'+(g.hosts.length===1?'':'s')+(b&&b.duration?' \\u00b7 '+b.duration:'')+(b&&b.start==null?' \\u00b7 not started':'');
              if(b&&b.start!=null){var be=b.end!=null?b.end:v.span;
                var br=s('rect',{x:x(b.start),y:y+2,width:Math.max(2,x(be)-x(b.start)),height:gh-4,fill:'#2e90fa','fill-opacity':.09,'class':'batch-span','data-batch-span':b.index});
                tip(br,b.label+': '+clock(b.start)+' \\u2192 '+(b.end!=null?clock(be):'not finished')+(b.duration?' ('+b.duration+')':''));
                [b.start,be].forEach(function(t){s('line',{x1:x(t),y1:y+2,x2:x(t),y2:y+gh-2,stroke:'#84adff','stroke-dasharray':'3 3'});});}
              s('text',{x:8,y:y+17,'class':'group','data-batch-label':g.index==null?'none':g.index},label);
              var ry=y+GH;
              g.hosts.forEach(function(i){var h=v.hosts[i];
                s('text',{x:L-8,y:ry+15,'text-anchor':'end','data-row':h.name},h.name);
                if(h.start!=null){
                  var x1=x(h.start),x2=Math.max(x(h.end!=null?h.end:h.start),x1+3);
                  var bar=s('rect',{x:x1,y:ry+4,width:x2-x1,height:14,rx:3,fill:colors[h.status]||'#98a2b3','data-host':h.name,'data-status':h.status,'data-batch':h.batch==null?'none':h.batch});
                  tip(bar,h.name+' \\u2014 '+h.status+(h.note?'\\n'+h.note:'')+'\\n'+clock(h.start)+' \\u2192 '+clock(h.end!=null?h.end:h.start)+(h.duration?' ('+h.duration+')':''));
                  h.steps.forEach(function(st,j){if(j>0&&st.start!=null&&x(st.start)>x1+1&&x(st.start)<x2-1)s('line',{x1:x(st.start),y1:ry+5,x2:x(st.start),y2:ry+17,stroke:'#ffffff','stroke-opacity':.8});});
                  var lx=x2+6,text,cls='dim',attrs={};
                  if(h.failed_step!=null){
                    if(h.failed_step_start!=null){var fx=x(h.failed_step_start),fw=Math.max(3,x(h.failed_step_end!=null?h.failed_step_end:h.end)-fx);
                      var fr=s('rect',{x:fx,y:ry+2,width:fw,height:18,rx:2,fill:'#912018','data-failed-step-bar':h.name});tip(fr,h.name+': '+h.note);}
                    text='\\u2716 '+h.failed_step;cls='fail';attrs['data-failed-step']=h.failed_step;
                  }else if(h.status==='unreachable'){text='unreachable';}
                  else{text=(h.duration||'')+(h.status==='running'?' \\u00b7 '+(h.note&&h.note.indexOf('interrupted')===0?'interrupted':'running'):'');}
                  attrs.x=lx;attrs.y=ry+15;attrs['class']=cls;attrs['data-label-for']=h.name;
                  var lt=s('text',attrs,text);if(h.note)tip(lt,h.note);
                }else{
                  var why=h.status==='not_started'?'not started':!h.note?h.status:h.note.indexOf(h.status)===0?h.note:h.status+': '+h.note;
                  s('text',{x:L+6,y:ry+15,'class':'dim','data-row-note':h.name},why.length>120?why.slice(0,119)+'\\u2026':why);
                }
                ry+=RH;});
              y+=gh+6;});
            // Hosts
            var hosts=document.getElementById('hosts');
            r.hosts.forEach(function(h,i){var w=v.hosts[i];
              var det=add(hosts,el('details',{'data-host':h.name,'data-status':h.status,'data-batch':h.batch==null?'none':h.batch}));
              if(h.status==='failed'||h.status==='unreachable')det.open=true;
              var su=add(det,el('summary'));su.appendChild(badge(h.status));add(su,el('span',{'class':'host'},h.name));
              fill(su,(' '+h.address+' \\u00b7 '+batchName(h.batch)+(w.duration?' \\u00b7 '+w.duration:'')));
              if(h.from_version||h.to_version)add(det,el('div',{'class':'muted'},'st2 '+(h.from_version||'?')+' \\u2192 '+(h.to_version||'?')));
              if(w.note)add(det,el('div',{'class':'note','data-note':h.name},w.note));
              if(!h.steps.length){if(w.pending.length)add(det,el('div',{'class':'muted','data-planned':h.name},'no step ran; planned: '+w.pending.join(', ')));return;}
              var tb=add(det,el('table',{'class':'steps'})),hr=add(tb,el('tr'));
              ['#','step','status','exit','attempts','started','duration'].forEach(function(c){add(hr,el('th',{},c));});
              h.steps.forEach(function(st,j){var tr=add(tb,el('tr',{'data-step':st.name,'data-status':st.status}));
                add(tr,el('td',{'class':'num'},String(j+1)));add(tr,el('td',{},st.name));add(add(tr,el('td')),badge(st.status));
                add(tr,el('td',{'class':'num'},st.exit_status==null?'-':String(st.exit_status)));add(tr,el('td',{'class':'num'},String(st.attempts)));
                add(tr,el('td',{},st.started_at||'-'));add(tr,el('td',{'class':'num'},w.steps[j].duration||'-'));});
              w.pending.forEach(function(name,j){var tr=add(tb,el('tr',{'data-step':name,'data-status':'pending'}));
                add(tr,el('td',{'class':'num'},String(h.steps.length+j+1)));add(tr,el('td',{},name));add(add(tr,el('td')),badge('pending'));
                for(var k=0;k<4;k++)add(tr,el('td',{},'-'));});
              h.steps.forEach(function(st){
                if(!st.stderr_tail&&!st.stdout_tail&&!(st.error&&st.status!=='succeeded'))return;
                add(det,el('h4',{},st.name+' \\u2014 '+st.status));
                if(st.error&&st.status!=='succeeded')add(det,el('div',{'class':'note'},st.error));
                if(st.stderr_tail)add(det,el('pre',{'data-stream':'stderr','data-step':st.name},st.stderr_tail));
                if(st.stdout_tail)add(det,el('pre',{'data-stream':'stdout','data-step':st.name},st.stdout_tail));});
            });
            // Events
            if(v.events.length){var ev=document.getElementById('events');add(ev,el('h2',{},'Events'));var et=add(ev,el('table',{'id':'event-list'}));
              v.events.forEach(function(e){var tr=add(et,el('tr'));add(tr,el('td',{},e.at||'-'));add(tr,el('td',{},e.kind));add(tr,el('td',{},e.message));});}
            document.body.setAttribute('data-rendered','ok');
            })();
            </script>
            </body></html>

            """
    }
}
