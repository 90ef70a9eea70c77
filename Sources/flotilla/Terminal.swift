import ArgumentParser
import FlotillaCore
import Foundation
import Logging

/// What the operator reads on stderr, and what they are asked on the terminal.
enum Console {
    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: warning: \(message)\n".utf8))
    }

    static func error(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: error: \(message)\n".utf8))
    }

    /// A logger writing to stderr: debug and up with `--verbose`, else warnings and up.
    /// The logging system is set up once, on first use.
    static func logger(label: String, verbose: Bool) -> Logger {
        _ = bootstrapLogging
        var logger = Logger(label: label)
        logger.logLevel = verbose ? .debug : .warning
        return logger
    }

    private static let bootstrapLogging: Void = LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }

    /// Progress and notes for the operator, on stderr.
    static func note(_ message: String) {
        FileHandle.standardError.write(Data("flotilla: \(message)\n".utf8))
    }

    /// Asks for a secret on the terminal without echoing it.
    static func prompt(_ text: String) throws -> String {
        guard isatty(STDIN_FILENO) != 0, let answer = getpass(text) else {
            throw ValidationError("\(text.trimmingCharacters(in: .whitespaces)) needed but there is no terminal to ask on")
        }
        return String(cString: answer)
    }

    /// Asks before a batch (`--confirm`); no terminal means no.
    static func confirmBatch(_ batch: Int, of count: Int) async -> Bool {
        guard isatty(STDIN_FILENO) != 0 else {
            warn("--confirm: no terminal to ask on; not starting batch \(batch + 1)")
            return false
        }
        FileHandle.standardError.write(Data("flotilla: start batch \(batch + 1) of \(count)? [y/N] ".utf8))
        let answer = readLine() ?? ""
        return answer.lowercased().hasPrefix("y")
    }
}

extension RunDisplay.Mode {
    /// stderr's mode (``RunDisplay/Mode/forStream(isTerminal:environment:size:)``).
    static func standardError(environment: [String: String] = ProcessInfo.processInfo.environment) -> RunDisplay.Mode {
        forStream(isTerminal: isatty(STDERR_FILENO) != 0, environment: environment, size: windowSize)
    }

    /// TIOCGWINSZ on stderr; 80 columns when it cannot tell.
    @Sendable static func windowSize() -> (width: Int, height: Int?) {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return (80, nil) }
        return (Int(size.ws_col), size.ws_row > 0 ? Int(size.ws_row) : nil)
    }
}
