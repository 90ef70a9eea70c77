import CLibSSH2
import Foundation
import Glibc

extension SSHSession {
    /// Copies a remote file to `localPath`, keeping its permission bits. The bytes go to
    /// a temporary file beside the target, renamed into place only when complete, so a
    /// partial copy is never left under the final name.
    ///
    /// - Returns: the number of bytes copied.
    /// - Throws: ``SSHError`` (code `.sftp`) naming the path and the server's reason.
    public func download(_ remotePath: String, to localPath: String, timeout: Duration? = nil) async throws -> Int {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let sftp = try await openSFTP(until: deadline)
        defer { _ = libssh2_sftp_shutdown(sftp) }
        let handle = try await openRemote(sftp, remotePath, flags: UInt(LIBSSH2_FXF_READ), mode: 0, until: deadline)
        var attributes = LIBSSH2_SFTP_ATTRIBUTES()
        let statted = try await retry("sftp stat", until: deadline) { libssh2_sftp_fstat_ex(handle, &attributes, 0) }
        let mode = statted == 0 && attributes.flags & UInt(LIBSSH2_SFTP_ATTR_PERMISSIONS) != 0 ? mode_t(attributes.permissions & 0o7777) : 0o600
        var partial: PartialFile
        do {
            partial = try PartialFile(beside: localPath)
        } catch {
            _ = libssh2_sftp_close_handle(handle)
            throw fail(.sftp, "download", error.message)
        }
        var total = 0
        do {
            let size = 64 * 1024
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            while true {
                let count = try await retry("sftp read", until: deadline) {
                    Int32(truncatingIfNeeded: libssh2_sftp_read(handle, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), size))
                }
                if count == 0 { break }
                guard count > 0 else { throw sftpFailure(sftp, "reading \(remotePath)", count) }
                try partial.write(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(count)]))
                total += Int(count)
            }
            _ = try await retry("sftp close", until: deadline) { libssh2_sftp_close_handle(handle) }
            try partial.commit(mode: mode)
        } catch {
            partial.discard()
            throw (error as? PartialFile.Failure).map { fail(.sftp, "download", $0.message) } ?? error
        }
        return total
    }

    /// Copies `localPath` to the host, keeping its permission bits (or `mode`), through
    /// a temporary remote file renamed into place once complete.
    ///
    /// - Returns: the number of bytes copied.
    public func upload(_ localPath: String, to remotePath: String, mode: Int32? = nil, timeout: Duration? = nil) async throws -> Int {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let fd = Glibc.open(localPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail(.sftp, "upload", "cannot read \(localPath): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var info = stat()
        fstat(fd, &info)
        let permissions = Int(mode ?? Int32(info.st_mode & 0o7777))
        let sftp = try await openSFTP(until: deadline)
        defer { _ = libssh2_sftp_shutdown(sftp) }
        let temporary = Self.partialName(for: remotePath)
        let handle = try await openRemote(sftp, temporary, flags: UInt(LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL),
                                          mode: 0o600, until: deadline)
        var total = 0
        do {
            let size = 64 * 1024
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            while true {
                let count = Glibc.read(fd, buffer.baseAddress, size)
                guard count >= 0 else { throw fail(.sftp, "upload", "cannot read \(localPath): \(String(cString: strerror(errno)))") }
                if count == 0 { break }
                var offset = 0
                while offset < count {
                    let written = try await retry("sftp write", until: deadline) {
                        Int32(truncatingIfNeeded: libssh2_sftp_write(handle, buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), count - offset))
                    }
                    guard written > 0 else { throw sftpFailure(sftp, "writing \(temporary)", written) }
                    offset += Int(written)
                }
                total += count
            }
            var attributes = LIBSSH2_SFTP_ATTRIBUTES()
            attributes.flags = UInt(LIBSSH2_SFTP_ATTR_PERMISSIONS)
            attributes.permissions = UInt(permissions)
            let set = try await retry("sftp chmod", until: deadline) { libssh2_sftp_fstat_ex(handle, &attributes, 1) }
            guard set == 0 else { throw sftpFailure(sftp, "setting the mode of \(temporary)", set) }
            _ = try await retry("sftp close", until: deadline) { libssh2_sftp_close_handle(handle) }
            try await rename(sftp, temporary, to: remotePath, until: deadline)
        } catch {
            _ = libssh2_sftp_close_handle(handle)
            // Best effort: the transfer's own error is the one to report, and a leftover
            // hidden partial file is harmless (never under the final name).
            _ = try? await retry("sftp unlink", until: deadline) {
                libssh2_sftp_unlink_ex(sftp, temporary, UInt32(temporary.utf8.count))
            }
            throw error
        }
        return total
    }

    /// A hidden name beside `path` for the bytes in transit (`dir/.name.partial-1a2b3c4d`).
    static func partialName(for path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).partial-\(UUID().uuidString.prefix(8))"
    }

    private func openSFTP(until deadline: ContinuousClock.Instant?) async throws -> OpaquePointer {
        guard let raw else { throw fail(.disconnected, "sftp", "the session is closed") }
        let sftp: OpaquePointer? = try await settingUpChannel { try await retry("starting sftp", until: deadline) { libssh2_sftp_init(raw) } }
        guard let sftp else { throw fail(.sftp, "sftp", "the server refused the sftp subsystem: \(lastError())") }
        return sftp
    }

    private func openRemote(_ sftp: OpaquePointer, _ path: String, flags: UInt, mode: Int, until deadline: ContinuousClock.Instant?) async throws -> OpaquePointer {
        let handle: OpaquePointer? = try await retry("sftp open", until: deadline) {
            libssh2_sftp_open_ex(sftp, path, UInt32(path.utf8.count), flags, mode, LIBSSH2_SFTP_OPENFILE)
        }
        guard let handle else { throw sftpFailure(sftp, "opening \(path)", libssh2_session_last_errno(raw)) }
        return handle
    }

    /// Renames over an existing file: SFTP's plain rename refuses to, so the old file
    /// is removed first when needed. The final name never holds a partial file.
    private func rename(_ sftp: OpaquePointer, _ source: String, to target: String, until deadline: ContinuousClock.Instant?) async throws {
        func attempt() async throws -> Int32 {
            try await retry("sftp rename", until: deadline) {
                libssh2_sftp_rename_ex(sftp, source, UInt32(source.utf8.count), target, UInt32(target.utf8.count),
                                       Int(LIBSSH2_SFTP_RENAME_OVERWRITE | LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE))
            }
        }
        if try await attempt() == 0 { return }
        _ = try await retry("sftp unlink", until: deadline) { libssh2_sftp_unlink_ex(sftp, target, UInt32(target.utf8.count)) }
        let rc = try await attempt()
        guard rc == 0 else { throw sftpFailure(sftp, "renaming \(source) to \(target)", rc) }
    }

    private func sftpFailure(_ sftp: OpaquePointer, _ what: String, _ rc: Int32) -> SSHError {
        guard rc == LIBSSH2_ERROR_SFTP_PROTOCOL else { return fail(.disconnected, "sftp", "\(what): \(lastError())", rc: rc) }
        let reason = switch libssh2_sftp_last_error(sftp) {
        case UInt(LIBSSH2_FX_NO_SUCH_FILE): "no such file"
        case UInt(LIBSSH2_FX_PERMISSION_DENIED): "permission denied"
        case let code: "the server answered SFTP status \(code)"
        }
        return fail(.sftp, "sftp", "\(what): \(reason)", rc: rc)
    }
}

/// The local side of a download: a new owner-only file beside the target that holds the
/// bytes until they are complete, then is renamed into place. It owns its descriptor and
/// closes it exactly once: a second close would close whatever took that number
/// meanwhile, such as another session's socket, which then silently leaves epoll.
struct PartialFile {
    struct Failure: Error { var message: String }

    let path: String
    let target: String
    private(set) var fd: Int32
    /// How the descriptor is closed; tests count the calls.
    var closeDescriptor: (Int32) -> Int32 = { Glibc.close($0) }

    init(beside target: String) throws(Failure) {
        self.target = target
        path = SSHSession.partialName(for: target)
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(message: "cannot create \(path): \(String(cString: strerror(errno)))") }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, bytes.baseAddress!.advanced(by: offset), bytes.count - offset)
            guard written > 0 else { throw Failure(message: "cannot write \(path): \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    /// Sets the mode, syncs, closes and renames the file over the target.
    mutating func commit(mode: mode_t) throws(Failure) {
        let finished = fchmod(fd, mode) == 0 && fsync(fd) == 0
        let reason = String(cString: strerror(errno))
        let closed = closeOnce() == 0
        guard finished, closed else { throw Failure(message: "cannot finish \(path): \(finished ? String(cString: strerror(errno)) : reason)") }
        guard Glibc.rename(path, target) == 0 else {
            throw Failure(message: "cannot rename \(path) to \(target): \(String(cString: strerror(errno)))")
        }
    }

    /// Closes the file if still open and removes it.
    mutating func discard() {
        _ = closeOnce()  // cleaning up after an error already reported: its own failure adds nothing
        unlink(path)
    }

    private mutating func closeOnce() -> Int32 {
        guard fd >= 0 else { return 0 }
        defer { fd = -1 }
        return closeDescriptor(fd)
    }
}
