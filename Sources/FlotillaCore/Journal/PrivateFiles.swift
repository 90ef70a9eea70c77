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

/// Owner-only directories and files: everything the journal and the locks create is
/// 0700/0600 whatever the umask, and a directory another user can write to (or that
/// another user owns) is refused rather than trusted, since whoever can write there can
/// replace a journal or a lock file.
enum PrivateFiles {
    static func errorText(_ number: Int32) -> String { String(cString: strerror(number)) }

    /// The path as the operator gave it (relative stays relative), for messages.
    static func display(_ url: URL) -> String { url.relativePath }

    /// Creates `url` (and its missing parents) as 0700 directories, then checks it.
    /// An existing directory is kept as it is, if it passes ``check(_:what:)``.
    static func makeDirectory(_ url: URL, what: String) throws {
        var missing: [URL] = []
        var current = url.standardizedFileURL
        var info = stat()
        while stat(current.path, &info) != 0 {
            guard errno == ENOENT else {
                throw JournalError(.io, path: current.path, "cannot inspect \(display(current)): \(errorText(errno))")
            }
            missing.append(current)
            let parent = current.deletingLastPathComponent()
            if parent.path == current.path { break }
            current = parent
        }
        for directory in missing.reversed() {
            if mkdir(directory.path, 0o700) != 0 {
                guard errno == EEXIST else {
                    throw JournalError(.io, path: directory.path, "cannot create \(display(directory)): \(errorText(errno))")
                }
                continue // created meanwhile by someone else: check() judges it below
            }
            // mkdir applies the umask; a new directory is 0700 exactly.
            chmod(directory.path, 0o700)
        }
        try check(url, what: what, directory: true)
    }

    /// Throws unless `url` exists, is a directory (or a regular file), is owned by the
    /// effective user and is not writable by group or others. Readable by others is
    /// not refused: an existing 0755 state dir leaks nothing the journal files (0600)
    /// do not protect themselves.
    static func check(_ url: URL, what: String, directory: Bool) throws {
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            throw JournalError(.io, path: url.path, "cannot inspect \(what) \(display(url)): \(errorText(errno))")
        }
        let type = info.st_mode & S_IFMT
        if directory ? type != S_IFDIR : type != S_IFREG {
            throw JournalError(.unsafePath, path: url.path, "\(what) \(display(url)) is not a \(directory ? "directory" : "regular file")")
        }
        let me = geteuid()
        if info.st_uid != me {
            throw JournalError(.unsafePath, path: url.path, """
                \(what) \(display(url)) is owned by \(userName(info.st_uid)), not by you (\(userName(me))): \
                flotilla keeps journals and locks only where no one else can change them; \
                use a state dir of your own (--state-dir) or have this one chowned to you
                """)
        }
        let mode = info.st_mode & 0o7777
        if mode & 0o022 != 0 {
            let who = mode & 0o002 != 0 ? "every user" : "its group"
            throw JournalError(.unsafePath, path: url.path, """
                \(what) \(display(url)) is writable by \(who) (mode \(String(mode, radix: 8))): \
                anyone who can write there can replace journals and locks; \
                fix it with: chmod go-w \(shellQuoted(display(url)))
                """)
        }
    }

    static func userName(_ uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return "\(String(cString: name)) (uid \(uid))"
    }

    static func shellQuoted(_ text: String) -> String {
        let safe = text.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "/._-+:@,".unicodeScalars.contains($0) }
        return safe && !text.isEmpty ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Creates a new, empty 0600 file; fails if it exists.
    static func createFile(_ url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw JournalError(.io, path: url.path, "cannot create \(display(url)): \(errorText(errno))")
        }
        defer { close(fd) }
        fchmod(fd, 0o600)
    }

    /// Flushes a directory's entries (a rename or a new file in it) to disk.
    static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw JournalError(.io, path: url.path, "cannot open \(display(url)): \(errorText(errno))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else {
            throw JournalError(.io, path: url.path, "cannot sync \(display(url)): \(errorText(errno))")
        }
    }

    static func exists(_ url: URL) -> Bool {
        var info = stat()
        return lstat(url.path, &info) == 0
    }
}
