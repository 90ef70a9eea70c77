import Foundation

/// Where one lab host keeps its files. The same paths are used by the lab commands (outside
/// the host) and by the simulated commands (inside the host's mount namespace, where the
/// lab directory stays visible).
struct HostPaths: Sendable {
    /// Inside a host, this file (in the host's own /etc) names the host's directory.
    static let marker = "/etc/flotilla-lab-host"

    let dir: URL

    var config: URL { dir.appendingPathComponent("host.json") }
    var state: URL { dir.appendingPathComponent("state.json") }
    var lock: URL { dir.appendingPathComponent("state.lock") }
    var commandLog: URL { dir.appendingPathComponent("commands.log") }
    var sshdConfig: URL { dir.appendingPathComponent("sshd_config") }
    var sshdLog: URL { dir.appendingPathComponent("sshd.log") }
    var bootLog: URL { dir.appendingPathComponent("boot.log") }
    /// The host's boot id, bound over /proc/sys/kernel/random/boot_id inside the host.
    var bootID: URL { dir.appendingPathComponent("boot_id") }
    /// A fifo the host's init reads: a byte written there asks it to reboot the host (the
    /// login user's commands cannot signal the init, which is root's).
    var rebootRequest: URL { dir.appendingPathComponent("reboot.fifo") }
    var hostKey: URL { dir.appendingPathComponent("ssh_host_key") }
    /// The key recorded in known_hosts when the host's key is "changed".
    var previousHostKey: URL { dir.appendingPathComponent("ssh_host_key.previous") }
    var home: URL { dir.appendingPathComponent("home") }
    /// The login user's home (root's is `home`).
    var loginHome: URL { dir.appendingPathComponent("home-\(LabLogin.userName)") }
    /// The writable layer of an overlaid system directory (`etc`, `opt`, `var-log`, `run`).
    func upper(_ layer: String) -> URL { dir.appendingPathComponent("upper/\(layer)") }
    func work(_ layer: String) -> URL { dir.appendingPathComponent("work/\(layer)") }

    /// The system directories each host gets its own copy of, and their overlay layer names.
    static let overlays: [(mountPoint: String, layer: String)] = [
        ("/etc", "etc"), ("/opt", "opt"), ("/var/log", "var-log"), ("/run", "run"),
    ]

    /// The paths of the host this process runs in, or nil outside a lab host.
    static func current() -> HostPaths? {
        guard let text = try? String(contentsOfFile: marker, encoding: .utf8) else { return nil }
        let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return path.isEmpty ? nil : HostPaths(dir: URL(fileURLWithPath: path))
    }
}

/// The static description of a host, written by `up` and read inside the host.
struct HostConfig: Codable, Sendable {
    var spec: HostSpec
    var address: String
    var port: Int
    var labDir: String
    var hostDir: String
    /// The flotilla-lab executable every simulated command runs.
    var executable: String

    static func load(_ paths: HostPaths) throws -> HostConfig {
        try JSONDecoder().decode(HostConfig.self, from: Data(contentsOf: paths.config))
    }
}

let labJSONEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return encoder
}()

let labJSONDecoder: JSONDecoder = {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    return decoder
}()

/// Writes `data` to `url` through a temporary file and a rename, so readers never see a
/// partial file; the file is owner-only unless `mode` says otherwise, and of `group` when
/// given.
func writeAtomically(_ data: Data, to url: URL, mode: mode_t = 0o600, group: gid_t? = nil) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
    let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw LabError.failed("cannot write \(temporary.path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    try data.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw LabError.failed("cannot write \(temporary.path): \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }
    fchmod(fd, mode)
    if let group, fchown(fd, uid_t.max, group) != 0 {
        throw LabError.failed("cannot give \(temporary.path) to group \(group): \(String(cString: strerror(errno)))")
    }
    guard rename(temporary.path, url.path) == 0 else {
        throw LabError.failed("cannot rename \(temporary.path): \(String(cString: strerror(errno)))")
    }
}

/// Runs `body` while holding an exclusive `flock` on `lockFile` (created if missing).
func withFileLock<T>(_ lockFile: URL, _ body: () throws -> T) throws -> T {
    let fd = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw LabError.failed("cannot open \(lockFile.path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    while flock(fd, LOCK_EX) != 0 {
        guard errno == EINTR else { throw LabError.failed("cannot lock \(lockFile.path): \(String(cString: strerror(errno)))") }
    }
    return try body()
}

/// Appends one line to a file shared by concurrent writers (O_APPEND plus an exclusive lock,
/// so records never interleave).
func appendLine(_ line: String, to url: URL) {
    let fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return }
    defer { close(fd) }
    flock(fd, LOCK_EX)
    var bytes = Array((line + "\n").utf8)
    bytes.withUnsafeMutableBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 { if errno == EINTR { continue } else { return } }
            offset += written
        }
    }
    flock(fd, LOCK_UN)
}
