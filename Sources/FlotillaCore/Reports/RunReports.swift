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

    static func stamp(_ date: Date?) -> String? { date.map { $0.ISO8601Format() } }

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

        func suite(_ name: String, _ members: [Entry], start: Date?, end: Date?) {
            var cases = ""
            var counts = (failures: 0, errors: 0, skipped: 0)
            var sum = 0
            for entry in members {
                let result = junitTestcase(entry, state, kind: kind)
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

    /// One host as a `<testcase>`, and which of failure, error and skipped it counts as.
    static func junitTestcase(_ entry: Entry, _ state: JournalState, kind: String) -> (xml: String, failure: Bool, error: Bool, skipped: Bool) {
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
        xml += "      <system-out>" + text(junitSystemOut(entry)) + "</system-out>\n"
        xml += "    </testcase>\n"
        return (xml, outcome.failure, outcome.error, outcome.skipped)
    }

    /// A host's `<system-out>`: where it ran, its versions and each step's outcome.
    static func junitSystemOut(_ entry: Entry) -> String {
        let host = entry.run
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
        return out
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

    /// One self-contained page (inline CSS and script, no external resources, made from
    /// the `Reports/run-report` resources): a summary,
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
        return HTMLPage.runReport.render([
            "title": HTMLPage.escape(visible("flotilla run \(state.record.id)")),
            "fallback": HTMLPage.escape(visible(markdown(state))),
            "data": HTMLPage.scriptData(data),
        ])
    }
}
