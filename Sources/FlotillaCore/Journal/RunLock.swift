import Foundation

/// Who holds a lock: written into the lock file by the holder, read by whoever finds the
/// lock taken, to name it.
public struct LockHolder: Codable, Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    public var user: String
    public var hostName: String
    /// The holder's state dir, absolute.
    public var stateDir: String
    public var runID: String?
    public var since: Date

    public init(pid: Int32, user: String, hostName: String, stateDir: String, runID: String?, since: Date) {
        self.pid = pid
        self.user = user
        self.hostName = hostName
        self.stateDir = stateDir
        self.runID = runID
        self.since = since
    }

    enum CodingKeys: String, CodingKey {
        case pid, user, hostName = "host", stateDir = "state_dir", runID = "run_id", since
    }

    /// This process, now.
    static func current(stateDir: URL, runID: String?, since: Date) -> LockHolder {
        var name = [CChar](repeating: 0, count: 256)
        let hostName = gethostname(&name, name.count - 1) == 0
            ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown host"
        let user = getpwuid(geteuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } } ?? "uid \(geteuid())"
        return LockHolder(pid: getpid(), user: user, hostName: hostName, stateDir: stateDir.standardizedFileURL.path, runID: runID,
                          since: since)
    }

    /// `pid 1234 (run 20261121-153000-ab12) since 2026-11-21T15:30:00Z, user alice on ctl-1`
    public var description: String {
        "pid \(pid) (\(runID.map { "run \($0)" } ?? "no run yet")) since \(Self.timestamp(since)), user \(user) on \(hostName)"
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        // Encoding strings, numbers and a date into JSON cannot fail.
        return Array((try? encoder.encode(self)) ?? Data()) + [UInt8(ascii: "\n")]
    }

    static func decode(_ bytes: [UInt8]) -> LockHolder? {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        // nil is the answer for a lock file left half-written or by another program: its
        // holder is unknown, and the lock itself (flock) still decides.
        return try? decoder.decode(LockHolder.self, from: Data(bytes))
    }
}

/// A lock that is taken: who holds it, as far as its file says.
public struct LockError: Error, Sendable, CustomStringConvertible {
    /// The lock file (for host locks, the first conflicting one).
    public var path: String
    /// The holders found, one per distinct holder; nil entries are holders that had not
    /// written their name yet (or wrote something unreadable).
    public var holders: [LockHolder?]
    /// For host locks, the conflicting hosts (`name (address:port)`); empty for the state
    /// dir lock.
    public var hosts: [String]
    public var message: String

    public var description: String { message }
}

/// One open lock file and its `flock`.
///
/// Why flock: the kernel drops it when the holding process dies, however it dies
/// (`kill -9` included), so a lock is never left behind by a dead controller and there is
/// no stale-pid guessing. The file itself is never deleted: deleting a lock file lets a
/// newcomer lock a fresh file while an old holder still holds the unlinked one. The
/// descriptor is close-on-exec so that programs the controller starts never inherit (and
/// outlive it with) the lock.
final class LockFile {
    let url: URL
    private var fd: Int32

    private init(url: URL, fd: Int32) {
        self.url = url
        self.fd = fd
    }

    deinit { unlock() }

    /// Takes the lock without waiting; nil when another open file holds it (another
    /// process, or another lock object in this one).
    static func tryLock(_ url: URL) throws -> LockFile? {
        let fd = open(url.path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw JournalError(.io, path: url.path, "cannot open lock file \(PrivateFiles.display(url)): \(PrivateFiles.errorText(errno))")
        }
        var result: Int32
        repeat { result = flock(fd, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let number = errno
            close(fd)
            if number == EWOULDBLOCK { return nil }
            throw JournalError(.io, path: url.path, "cannot lock \(PrivateFiles.display(url)): \(PrivateFiles.errorText(number))")
        }
        fchmod(fd, 0o600)
        return LockFile(url: url, fd: fd)
    }

    /// Replaces the file's contents with the holder's description.
    func write(_ holder: LockHolder) throws {
        let bytes = holder.encoded()
        let written = bytes.withUnsafeBytes { buffer in ftruncate(fd, 0) == 0 ? pwrite(fd, buffer.baseAddress, buffer.count, 0) : -1 }
        guard written == bytes.count else {
            throw JournalError(.io, path: url.path, "cannot write lock file \(PrivateFiles.display(url)): \(PrivateFiles.errorText(errno))")
        }
    }

    /// The holder named in a lock file, if it is readable.
    static func holder(at url: URL) -> LockHolder? {
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        return LockHolder.decode(Array(data.prefix(64 * 1024)))
    }

    /// Empties the file (its holder is gone) and releases the lock. Idempotent.
    func unlock() {
        guard fd >= 0 else { return }
        ftruncate(fd, 0)
        close(fd) // releases the flock
        fd = -1
    }
}

/// The lock on a state dir: an exclusive `flock` on `<stateDir>/lock`, held for the whole
/// life of a controller process, so two controllers never work on the same state dir.
///
/// The holder (pid, user, host name, run id, start time) is written into the file, and a
/// second controller is told who it is. A lock left by a process that died is not a
/// problem: the kernel releases a flock with the process that holds it, so the next
/// controller simply takes it (and overwrites the stale holder text).
///
/// Released by ``release()`` or when the object goes away. Not Sendable: keep it where
/// the controller's main task keeps its state.
public final class StateDirLock {
    public let stateDir: URL
    /// What the lock file says about this holder.
    public private(set) var holder: LockHolder
    private let file: LockFile

    private init(stateDir: URL, holder: LockHolder, file: LockFile) {
        self.stateDir = stateDir
        self.holder = holder
        self.file = file
    }

    /// Takes the lock on `stateDir`, creating the directory (0700) if it is missing.
    ///
    /// - Throws: ``LockError`` naming the holder when another process (or another lock
    ///   object) holds it; ``JournalError`` `.unsafePath` for a state dir another user owns
    ///   or can write to, `.io` if the lock file cannot be opened.
    public static func acquire(stateDir: URL, runID: String? = nil, now: Date = Date()) throws -> StateDirLock {
        try PrivateFiles.makeDirectory(stateDir, what: "state dir")
        let url = stateDir.appendingPathComponent("lock")
        guard let file = try LockFile.tryLock(url) else {
            let holder = LockFile.holder(at: url)
            let who = holder.map { "\($0)" } ?? "another flotilla process (it has not written its name yet)"
            throw LockError(path: url.path, holders: [holder], hosts: [], message: """
                state dir \(PrivateFiles.display(stateDir)) is in use by \(who); \
                wait for that controller to finish or stop it (the lock goes away with its process), \
                or use another --state-dir
                """)
        }
        let holder = LockHolder.current(stateDir: stateDir, runID: runID, since: now)
        try file.write(holder)
        return StateDirLock(stateDir: stateDir, holder: holder, file: file)
    }

    /// Records the run id once it is known (the lock is usually taken before the run is
    /// created or chosen).
    public func record(runID: String) throws {
        holder.runID = runID
        try file.write(holder)
    }

    /// Releases the lock (idempotent; also done on deinit).
    public func release() { file.unlock() }
}

@available(*, unavailable, message: "a lock belongs to the task that took it")
extension StateDirLock: Sendable {}

/// Per-host locks shared by every controller of this user, whatever its state dir: one
/// `flock`ed file per `address:port` in one directory (by default
/// `$HOME/.local/state/flotilla/hosts`, 0700), so two controllers never touch the same
/// host at once even when they run from different working directories.
///
/// Acquired all-or-nothing for a set of hosts; on conflict nothing stays locked and the
/// error names every conflicting host and its holder. A host reached under two different
/// addresses (a name and an IP) is not recognised as the same; names that sanitise to
/// the same file only make locking stricter. Like ``StateDirLock``, a lock dies with its
/// process.
public final class HostLocks {
    /// A host as the locks identify it.
    public struct Target: Sendable, Hashable {
        /// The inventory name, for messages.
        public var name: String
        public var address: String
        public var port: Int

        public init(name: String, address: String, port: Int) {
            self.name = name
            self.address = address
            self.port = port
        }

        var label: String { "\(name) (\(address.contains(":") ? "[\(address)]" : address):\(port))" }
    }

    public let directory: URL
    public let targets: [Target]
    /// What the lock files say about this holder.
    public let holder: LockHolder
    private var files: [LockFile]

    private init(directory: URL, targets: [Target], holder: LockHolder, files: [LockFile]) {
        self.directory = directory
        self.targets = targets
        self.holder = holder
        self.files = files
    }

    /// `$HOME/.local/state/flotilla/hosts` (HOME from the environment, else the password
    /// database). XDG_STATE_HOME is deliberately not consulted: every controller of the
    /// user must find the same directory, whatever its environment.
    public static func defaultDirectory() -> URL {
        var home = ProcessInfo.processInfo.environment["HOME"] ?? ""
        if !home.hasPrefix("/"), let entry = getpwuid(geteuid()), let directory = entry.pointee.pw_dir {
            home = String(cString: directory)
        }
        return URL(fileURLWithPath: home.isEmpty ? "/" : home).appendingPathComponent(".local/state/flotilla/hosts")
    }

    /// The lock file name of a host: the address lowercased, every character other than
    /// letters, digits, `.` and `-` replaced by `_`, then `_<port>.lock`.
    public static func fileName(address: String, port: Int) -> String {
        let sanitized = String(address.lowercased().unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "." || scalar == "-") ? Character(scalar) : "_"
        })
        let base = sanitized.hasPrefix(".") || sanitized.isEmpty ? "_" + sanitized : sanitized
        return "\(base)_\(port).lock"
    }

    /// Locks every host of `targets`, or none.
    ///
    /// - Parameters:
    ///   - directory: the shared lock directory (created 0700 if missing); nil for
    ///     ``defaultDirectory()``.
    ///   - stateDir, runID: written into the lock files, to name this holder.
    /// - Throws: ``LockError`` naming the conflicting hosts and their holders;
    ///   ``JournalError`` `.unsafePath` for a directory another user owns or can write to.
    public static func acquire(_ targets: [Target], directory: URL? = nil, stateDir: URL, runID: String?,
                               now: Date = Date()) throws -> HostLocks {
        let directory = directory ?? defaultDirectory()
        try PrivateFiles.makeDirectory(directory, what: "host lock dir")
        // One lock per file: two names for one address:port must not conflict with each other.
        var byFile: [String: [Target]] = [:]
        for target in targets { byFile[fileName(address: target.address, port: target.port), default: []].append(target) }

        var taken: [LockFile] = []
        var conflicts: [(file: URL, targets: [Target])] = []
        for name in byFile.keys.sorted() {
            let url = directory.appendingPathComponent(name)
            do {
                if let file = try LockFile.tryLock(url) { taken.append(file) } else { conflicts.append((url, byFile[name]!)) }
            } catch {
                taken.forEach { $0.unlock() }
                throw error
            }
        }
        guard conflicts.isEmpty else {
            taken.forEach { $0.unlock() }
            throw conflictError(conflicts, total: targets.count)
        }
        let holder = LockHolder.current(stateDir: stateDir, runID: runID, since: now)
        do {
            for file in taken { try file.write(holder) }
        } catch {
            taken.forEach { $0.unlock() }
            throw error
        }
        return HostLocks(directory: directory, targets: targets, holder: holder, files: taken)
    }

    private static func conflictError(_ conflicts: [(file: URL, targets: [Target])], total: Int) -> LockError {
        // Group the hosts by holder, in the order first met.
        var groups: [(holder: LockHolder?, hosts: [String])] = []
        for conflict in conflicts {
            let holder = LockFile.holder(at: conflict.file)
            let labels = conflict.targets.map(\.label)
            if let index = groups.firstIndex(where: { $0.holder == holder }) {
                groups[index].hosts += labels
            } else {
                groups.append((holder, labels))
            }
        }
        let hosts = groups.flatMap(\.hosts)
        let parts = groups.map { group -> String in
            let who = group.holder.map { "pid \($0.pid) (state dir \($0.stateDir), \($0.runID.map { "run \($0)" } ?? "no run yet")) since \(LockHolder.timestamp($0.since)), user \($0.user) on \($0.hostName)" }
                ?? "another flotilla process (it has not written its name yet)"
            return "\(group.hosts.joined(separator: ", ")) \(group.hosts.count == 1 ? "is" : "are") in use by \(who)"
        }
        return LockError(path: conflicts[0].file.path, holders: groups.map(\.holder), hosts: hosts, message: """
            \(hosts.count) of the \(total) hosts are in use by another flotilla controller: \(parts.joined(separator: "; ")); \
            no host was locked — wait for that run to finish, or leave these hosts out (--limit)
            """)
    }

    /// Releases every host lock (idempotent; also done on deinit).
    public func release() {
        files.forEach { $0.unlock() }
        files = []
    }

    deinit { release() }
}

@available(*, unavailable, message: "a lock belongs to the task that took it")
extension HostLocks: Sendable {}
