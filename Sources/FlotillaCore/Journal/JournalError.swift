import Foundation

/// A problem with the state dir or with a journal in it: an unsafe directory, a run that
/// does not exist, a file that is not a journal, or a transition the journal refuses.
///
/// `message` is the whole text for the operator, naming the path and, where there is
/// one, the fix.
public struct JournalError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, open for additions.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A directory or file is writable by other users, owned by someone else, or not
        /// of the expected type.
        public static let unsafePath = Code(rawValue: "unsafe-path")
        /// The state dir holds no run.
        public static let noRuns = Code(rawValue: "no-runs")
        /// No run has the given id.
        public static let unknownRun = Code(rawValue: "unknown-run")
        /// A run with this id already exists.
        public static let runExists = Code(rawValue: "run-exists")
        /// The file is not a flotilla journal, or it is damaged.
        public static let notAJournal = Code(rawValue: "not-a-journal")
        /// The journal was written by a newer flotilla.
        public static let unsupportedSchema = Code(rawValue: "unsupported-schema")
        /// A transition names an unknown host, step or batch, or contradicts the journal
        /// (starting a step recorded as finished, a second host for a once-per step).
        public static let invalidTransition = Code(rawValue: "invalid-transition")
        /// A system call failed.
        public static let io = Code(rawValue: "io")
    }

    public var code: Code
    /// The file or directory concerned, when there is one.
    public var path: String?
    public var message: String

    public init(_ code: Code, path: String? = nil, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { message }
}
