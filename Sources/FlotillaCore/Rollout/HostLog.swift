import Foundation

/// A host's log for the run: every step's command, times, and full output as it arrives
/// (owner-only).
///
/// The log is for reading what happened; the journal is the record. A log that cannot be
/// opened or written never stops a host: the engine logs the `problem` and goes on.
public final class HostLog: @unchecked Sendable {
    // @unchecked: the handle is written by one host task at a time (steps run in order).
    private let handle: FileHandle?
    private let clock: any RolloutClock
    /// Why the log could not be opened, if it could not.
    public let problem: String?

    init(_ url: URL, clock: any RolloutClock = SystemClock()) {
        self.clock = clock
        var problem: String?
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            if !FileManager.default.fileExists(atPath: url.path),
               !FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) {
                problem = "cannot create \(url.path)"
            }
        } catch {
            problem = "cannot create \(url.deletingLastPathComponent().path): \(error)"
        }
        var handle: FileHandle?
        if problem == nil {
            do {
                handle = try FileHandle(forWritingTo: url)
                try handle?.seekToEnd()
            } catch {
                problem = "cannot open \(url.path): \(error)"
            }
        }
        self.handle = handle
        self.problem = problem
    }

    func note(_ text: String) { line("--- \(stamp()) \(text)") }

    func begin(_ step: RunStep, number: Int) {
        line("=== \(stamp()) step \(number + 1): \(step.name)\n$ \(step.command)")
    }

    // `try?`: FileHandle.write(_: Data) traps on a full disk; the journal reports that instead.
    func write(_ bytes: UnsafeRawBufferPointer) { try? handle?.write(contentsOf: Data(bytes)) }

    func end(_ status: StepRunStatus, outcome: StepOutcome?, message: String?, seconds: Double) {
        line("\n=== \(stamp()) \(status.rawValue)" + (outcome?.exitStatus.map { ", exit \($0)" } ?? "")
             + String(format: ", %.2f s", seconds) + (message.map { ": \($0)" } ?? ""))
    }

    // `try?`: closing a log whose last write failed fails the same way; nothing is left to save.
    func close() { try? handle?.close() }

    // `try?`: as for `write`, a full disk shows in the journal, not as a lost host.
    private func line(_ text: String) { try? handle?.write(contentsOf: Data((text + "\n").utf8)) }

    // `ISO8601Format()`, not a new `ISO8601DateFormatter` a line: building one (ICU) was a
    // fifth of the controller's CPU in `bench-engine`.
    private func stamp() -> String { clock.now.ISO8601Format() }

    /// The part of a host log about one step (0-based): from its `=== ... step N:` line to
    /// the next step's, every attempt of it (a resumed run appends to the log).
    public static func section(of log: String, step: Int) -> String {
        var out = ""
        var inside = false
        for line in log.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("=== "), let range = line.range(of: " step "), let colon = line[range.upperBound...].firstIndex(of: ":"),
               let number = Int(line[range.upperBound..<colon]) {
                inside = number == step + 1
            }
            if inside { out += line + "\n" }
        }
        return out
    }
}
