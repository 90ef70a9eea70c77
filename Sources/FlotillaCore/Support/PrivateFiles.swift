import Foundation

/// Owner-only directories and files: everything the journal, the locks, the logs and the
/// reports create is 0700/0600 whatever the umask, and a directory another user can write
/// to (or that another user owns) is refused rather than trusted where flotilla keeps its
/// state, since whoever can write there can replace a journal or a lock file.
public enum PrivateFiles {
    static func errorText(_ number: Int32) -> String { String(cString: strerror(number)) }

    /// The path as the operator gave it (relative stays relative), for messages.
    static func display(_ url: URL) -> String { url.relativePath }

    /// Creates `url` (and its missing parents) as 0700 directories, then checks it.
    /// An existing directory is kept as it is, if it passes ``check(_:what:directory:)``.
    /// - Throws: `JournalError` (`.io`, `.unsafePath`) naming the directory.
    public static func makeDirectory(_ url: URL, what: String) throws {
        try createMissingDirectories(url)
        try check(url, what: what, directory: true)
    }

    /// Creates what is missing of `url` and its parents, each 0700 from its creation
    /// whatever the umask; what exists is kept as it is, unchecked.
    /// - Throws: `JournalError` (`.io`) naming the directory that could not be created.
    public static func createMissingDirectories(_ url: URL) throws {
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
                continue // created meanwhile by someone else: kept as it is
            }
            // mkdir applies the umask; a new directory is 0700 exactly.
            chmod(directory.path, 0o700)
        }
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
                fix it with: chmod go-w \(ShellQuote.quote(display(url)))
                """)
        }
    }

    static func userName(_ uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return "\(String(cString: name)) (uid \(uid))"
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

    // MARK: Owner-only files at a path the operator names

    /// A file that could not be written; `message` names it and says why.
    public struct WriteError: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { message }

        init(_ path: String, _ reason: String) {
            self.init(path: path, message: "cannot write \(path): \(reason)")
        }

        init(path: String, message: String) {
            self.path = path
            self.message = message
        }
    }

    /// Writes a file readable only by its owner. A regular file (or none) at `path` is
    /// replaced, never rewritten in place: the text goes to a new 0600 file beside it that
    /// is then renamed over it, so whoever could read an older file there (or holds it
    /// open) never sees the new text, and a symbolic link planted there is not followed.
    /// A terminal, a pipe or `/dev/stdout` is written through, unless it is a symbolic
    /// link that another user owns.
    public static func writeOwnerOnly(_ text: String, to path: String) throws(WriteError) {
        var info = stat()
        if lstat(path, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
            if info.st_mode & S_IFMT == S_IFLNK, info.st_uid != geteuid(), info.st_uid != 0 {
                throw WriteError(path: path, message: "will not write \(path): it is a symbolic link owned by uid \(info.st_uid), not by you, and could point anywhere")
            }
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw WriteError(path, errorText(errno)) }
            defer { close(fd) }
            do {
                try FileHandle(fileDescriptor: fd, closeOnDealloc: false).write(contentsOf: Data(text.utf8))
            } catch {
                throw WriteError(path, "\(error)")
            }
            return
        }
        let (fd, temporary) = try privateFile(beside: path)
        do {
            defer { close(fd) }
            try FileHandle(fileDescriptor: fd, closeOnDealloc: false).write(contentsOf: Data(text.utf8))
        } catch {
            unlink(temporary)
            throw WriteError(path, "\(error)")
        }
        try replace(path, with: temporary)
    }

    /// Creates `path` afresh as an empty owner-only file (as ``writeOwnerOnly(_:to:)``
    /// does: a new 0600 file renamed over whatever was there) and returns it open for writing.
    public static func createOwnerOnly(_ path: String) throws(WriteError) -> Int32 {
        let (fd, temporary) = try privateFile(beside: path)
        do {
            try replace(path, with: temporary)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A new, empty file, 0600 from its creation (mkstemp: O_EXCL, so never an existing
    /// file or link), in the directory of `path` so that a rename replaces `path`.
    private static func privateFile(beside path: String) throws(WriteError) -> (fd: Int32, path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var template = Array(((directory.isEmpty ? "." : directory) + "/.\(name).XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw WriteError(path, errorText(errno)) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        fchmod(fd, 0o600)
        return (fd, template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }

    private static func replace(_ path: String, with temporary: String) throws(WriteError) {
        guard rename(temporary, path) == 0 else {
            let message = errorText(errno)
            unlink(temporary)
            throw WriteError(path, message)
        }
    }
}
