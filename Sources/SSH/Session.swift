import CLibSSH2
import Foundation
import Glibc

/// One SSH connection to one host, on libssh2 in non-blocking mode, confined to an
/// ``EventLoop`` (the actor's executor), so its libssh2 handles are only ever touched by
/// the loop's thread. Each command is a new channel on the session.
public actor SSHSession {
    public enum HostKeyCheck: String, Sendable, CaseIterable {
        /// Refuse unknown and changed keys.
        case strict
        /// Record unknown keys in known_hosts; refuse changed ones.
        case acceptNew = "accept-new"
        /// Accept any key; the session reports what it accepted in ``hostKeyWarning``.
        case off
    }

    public struct Options: Sendable {
        /// The host's name, for messages.
        public var name: String
        public var address: String
        public var port: Int = 22
        public var user: String
        public var identityFiles: [String] = []
        public var passphrase: String?
        public var password: String?
        public var useAgent = true
        public var hostKeyCheck: HostKeyCheck = .strict
        public var knownHostsFile: String
        /// Covers TCP, the banner, key exchange and authentication.
        public var connectTimeout: Duration = .seconds(10)
        /// Keepalive interval while a command runs; nil for none.
        public var keepalive: Duration? = .seconds(15)

        public init(name: String, address: String, port: Int = 22, user: String, knownHostsFile: String) {
            self.name = name
            self.address = address
            self.port = port
            self.user = user
            self.knownHostsFile = knownHostsFile
        }
    }

    /// How long each phase of connecting took.
    public struct Timings: Sendable {
        public var tcp: Duration = .zero
        public var handshake: Duration = .zero
        public var authentication: Duration = .zero
    }

    public nonisolated let loop: EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    public nonisolated let options: Options

    // nonisolated(unsafe): used only by the actor's methods (on its loop) and by deinit,
    // which runs when nothing else can reach the session.
    nonisolated(unsafe) var raw: OpaquePointer?
    private var fd: Int32 = -1
    public private(set) var timings = Timings()
    /// The host key's SHA256 fingerprint, as OpenSSH prints it.
    public private(set) var fingerprint = ""
    /// Set when `--host-key-check off` let an unknown or changed key through.
    public private(set) var hostKeyWarning: String?
    /// The jump host this session runs through (kept alive with it, closed after it).
    private var jump: SSHSession?
    /// Tunnels this session carries for sessions opened through it.
    private var pumps: [Task<Void, Never>] = []
    /// Bytes libssh2 has read from the socket (counted by ``countingReceive``, through the
    /// session's abstract pointer). A call on one channel reads whatever the socket holds,
    /// packets of other channels too; a channel whose packet was read that way would wait
    /// on a socket with nothing left for it, so a call that read anything wakes the others
    /// (``wakeOthers(ifReadSince:)``).
    // nonisolated(unsafe): read and written only on the loop (by libssh2 calls and the
    // actor's methods); freed by deinit.
    private nonisolated(unsafe) let received = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Whether a channel is being opened and started. libssh2 1.10 waits for a channel's
    /// open confirmation or exec reply by packet type, then takes it by channel number, and
    /// fails when the packet of that type was another channel's (`_libssh2_packet_requirev`):
    /// two channels must not be set up at once. The others queue in `setupQueue`.
    private var settingUp = false
    private var setupQueue: [CheckedContinuation<Void, Never>] = []

    private init(options: Options, loop: EventLoop) {
        self.options = options
        self.loop = loop
        received.initialize(to: 0)
    }

    /// Connects, verifies the host key and authenticates, all within the connect timeout.
    /// Runs in the caller's isolation and the session's: it needs no thread of the shared
    /// pool, so a caller on an actor of its own connects even when the pool is all busy.
    ///
    /// - Throws: ``SSHError`` whose code says what failed (refused, timeout, host key,
    ///   key file, passphrase, auth denied...). Nothing is left open when it throws.
    public static func connect(_ options: Options, on loop: EventLoop = .next(),
                               isolation: isolated (any Actor)? = #isolation) async throws -> SSHSession {
        try LibSSH2.initialize()
        let session = SSHSession(options: options, loop: loop)
        do {
            try await session.open()
        } catch {
            await session.close()
            throw error
        }
        return session
    }

    /// Connects, runs `body` with the session, and closes it however `body` ends:
    /// returning, throwing, or cancelled.
    public static func withSession<T>(_ options: Options, through jumps: [Options] = [], on loop: EventLoop = .next(),
                                      isolation: isolated (any Actor)? = #isolation,
                                      _ body: (SSHSession) async throws -> T) async throws -> T {
        try await connect(options, through: jumps, on: loop).closing(body)
    }

    /// Runs `body` with this session, then closes it however `body` ends: returning,
    /// throwing, or cancelled. (``deinit`` frees a session dropped without closing, but
    /// only when its last reference goes, which may be long after.)
    public func closing<T>(isolation: isolated (any Actor)? = #isolation,
                           _ body: (SSHSession) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await close()
            return result
        } catch {
            await close()
            throw error
        }
    }

    private var host: String { options.name }

    func fail(_ code: SSHError.Code, _ operation: String, _ message: String, rc: Int32? = nil) -> SSHError {
        SSHError(code: code, libssh2Code: rc, message: message, host: host, operation: operation)
    }

    /// The names of `list` (comma-separated) that this libssh2 supports, in order. libssh2
    /// 1.10 strips unsupported names itself (rsa-sha2-512 and rsa-sha2-256 for host keys)
    /// with an overlapping memcpy, undefined behaviour that AddressSanitizer reports.
    static func supported(_ list: String, method: Int32, session: OpaquePointer) -> String {
        var algorithms: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        let count = libssh2_session_supported_algs(session, method, &algorithms)
        guard count > 0, let algorithms else { return list }
        defer { libssh2_free(session, algorithms) }
        let names = Set((0..<Int(count)).compactMap { algorithms[$0].map { String(cString: $0) } })
        let kept = list.split(separator: ",").filter { names.contains(String($0)) }
        return kept.isEmpty ? list : kept.joined(separator: ",")
    }

    /// libssh2's last error message for this session.
    func lastError() -> String {
        guard let raw else { return "no session" }
        var message: UnsafeMutablePointer<CChar>?
        var length: Int32 = 0
        libssh2_session_last_error(raw, &message, &length, 0)
        return message.map { String(cString: $0) } ?? "unknown error"
    }

    // MARK: Waiting on the socket

    private func waitForSocket(until deadline: ContinuousClock.Instant?, _ operation: String, ticket: EventLoop.Ticket) async throws {
        let directions = libssh2_session_block_directions(raw)
        var events: EventLoop.Events = []
        if directions & LIBSSH2_SESSION_BLOCK_INBOUND != 0 { events.insert(.readable) }
        if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 { events.insert(.writable) }
        if events.isEmpty { events = .readable }
        do {
            try await loop.wait(for: fd, events: events, until: deadline, ticket: ticket)
        } catch is EventLoop.TimedOut {
            throw fail(.timeout, operation, "\(operation) timed out")
        } catch is EventLoop.Closed {
            // close() ran meanwhile (the actor is reentrant): libssh2's session is freed.
            throw fail(.disconnected, operation, "the session was closed")
        }
    }

    /// After a libssh2 call: if it read from the socket, the tasks already waiting on it
    /// (other channels) try again, as their packets may be among what it read.
    func wakeOthers(ifReadSince before: UInt64) {
        if received.pointee != before { loop.wakeWaiters(on: fd) }
    }

    /// Runs `body` (opening and starting a channel) while no other channel of the session
    /// is being set up (see ``settingUp``).
    func settingUpChannel<T>(_ body: () async throws -> T) async rethrows -> T {
        while settingUp {
            // Checked again where the continuation is queued: entering the wait may hop
            // through the loop's queue, and the setup may have ended meanwhile.
            await withCheckedContinuation { continuation in
                if settingUp { setupQueue.append(continuation) } else { continuation.resume() }
            }
        }
        settingUp = true
        defer {
            settingUp = false
            if !setupQueue.isEmpty { setupQueue.removeFirst().resume() }
        }
        return try await body()
    }

    /// Calls `body` until it stops answering EAGAIN, waiting on the socket in between.
    func retry(_ operation: String, until deadline: ContinuousClock.Instant?, _ body: () -> Int32) async throws -> Int32 {
        while true {
            let ticket = EventLoop.Ticket(), before = received.pointee
            let rc = body()
            wakeOthers(ifReadSince: before)
            guard rc == LIBSSH2_ERROR_EAGAIN else { return rc }
            try await waitForSocket(until: deadline, operation, ticket: ticket)
        }
    }

    /// The same for calls that return a pointer, NULL with EAGAIN meaning "again".
    func retry<T>(_ operation: String, until deadline: ContinuousClock.Instant?, _ body: () -> T?) async throws -> T? {
        while true {
            let ticket = EventLoop.Ticket(), before = received.pointee
            let value = body()
            wakeOthers(ifReadSince: before)
            if let value { return value }
            guard libssh2_session_last_errno(raw) == LIBSSH2_ERROR_EAGAIN else { return nil }
            try await waitForSocket(until: deadline, operation, ticket: ticket)
        }
    }

    // MARK: Connecting

    /// Connects through jump hosts (ProxyJump), each hop reached by a `direct-tcpip`
    /// channel of the one before; the last session is returned and owns the others.
    ///
    /// - Throws: ``SSHError``; a failure at a jump host says which one.
    public static func connect(_ options: Options, through jumps: [Options], on loop: EventLoop = .next(),
                               isolation: isolated (any Actor)? = #isolation) async throws -> SSHSession {
        guard let first = jumps.first else { return try await connect(options, on: loop) }
        var previous: SSHSession
        do {
            previous = try await connect(first, on: loop)
        } catch var error as SSHError {
            error.message = "jump host \(first.name): \(error.message)"
            throw error
        }
        for hop in Array(jumps.dropFirst()) + [options] {
            let session = SSHSession(options: hop, loop: loop)
            await session.adopt(jump: previous)
            do {
                let socket = try await previous.tunnel(to: hop.address, port: hop.port, until: .now + hop.connectTimeout)
                try await session.open(socket: socket)
            } catch {
                await session.close()
                throw error
            }
            previous = session
        }
        return previous
    }

    private func adopt(jump: SSHSession) { self.jump = jump }

    /// Opens a `direct-tcpip` channel to `address:port` and returns one end of a socket
    /// pair whose other end this session pumps through the channel.
    func tunnel(to address: String, port: Int, until deadline: ContinuousClock.Instant) async throws -> Int32 {
        guard let raw else { throw fail(.disconnected, "jump", "the jump session is closed") }
        let channel: OpaquePointer? = try await settingUpChannel {
            try await retry("opening a channel to \(address):\(port)", until: deadline) {
                libssh2_channel_direct_tcpip_ex(raw, address, Int32(port), "127.0.0.1", 22)
            }
        }
        guard let channel else {
            throw fail(.connectFailed, "jump", "jump host \(host) could not connect to \(address):\(port): \(lastError())",
                       rc: libssh2_session_last_errno(raw))
        }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            _ = libssh2_channel_free(channel)
            throw fail(.connectFailed, "jump", "cannot create a socket pair: \(String(cString: strerror(errno)))")
        }
        let inner = pair[1]
        pumps.append(Task { await self.pump(channel, inner) })
        return pair[0]
    }

    /// Moves bytes both ways between a channel and a socket until either side closes or
    /// the task is cancelled, waiting on both sockets at once when neither can move.
    private func pump(_ channel: OpaquePointer, _ socket: Int32) async {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        var toSocket: [UInt8] = []
        var toChannel: [UInt8] = []
        var channelClosed = false
        defer {
            buffer.deallocate()
            loop.close(socket)
            _ = libssh2_channel_close(channel)
            _ = libssh2_channel_free(channel)
        }
        while !Task.isCancelled, raw != nil {
            var progressed = false
            let ticket = EventLoop.Ticket(), before = received.pointee
            var socketEvents: EventLoop.Events = []
            var wantChannel = false
            if toSocket.isEmpty && !channelClosed {
                let count = libssh2_channel_read_ex(channel, 0, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), size)
                if count > 0 {
                    toSocket = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    progressed = true
                } else if count == Int(LIBSSH2_ERROR_EAGAIN) || (count == 0 && libssh2_channel_eof(channel) == 0) {
                    wantChannel = true
                } else if count == 0 {
                    channelClosed = true
                    shutdown(socket, Int32(SHUT_WR))
                    progressed = true
                } else {
                    return
                }
            }
            if !toSocket.isEmpty {
                let written = toSocket.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if written > 0 {
                    toSocket.removeFirst(written)
                    progressed = true
                } else if errno == EAGAIN {
                    socketEvents.insert(.writable)
                } else {
                    return
                }
            }
            if toChannel.isEmpty {
                let count = Glibc.read(socket, buffer.baseAddress, size)
                if count > 0 {
                    toChannel = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    progressed = true
                } else if count < 0 && errno == EAGAIN {
                    socketEvents.insert(.readable)
                } else {
                    return  // the session inside closed its end
                }
            }
            if !toChannel.isEmpty {
                let written = toChannel.withUnsafeBytes {
                    libssh2_channel_write_ex(channel, 0, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count)
                }
                if written > 0 {
                    toChannel.removeFirst(written)
                    progressed = true
                } else if written == Int(LIBSSH2_ERROR_EAGAIN) {
                    wantChannel = true
                } else {
                    return
                }
            }
            wakeOthers(ifReadSince: before)
            if progressed { continue }
            var sessionEvents: EventLoop.Events = []
            let directions = libssh2_session_block_directions(raw)
            if directions & LIBSSH2_SESSION_BLOCK_INBOUND != 0 || wantChannel { sessionEvents.insert(.readable) }
            if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 { sessionEvents.insert(.writable) }
            do {
                try await loop.wait(forAnyOf: [(fd, sessionEvents), (socket, socketEvents)], until: nil, ticket: ticket)
            } catch {
                return
            }
        }
    }

    private func open(socket existing: Int32? = nil) async throws {
        assert(EventLoop.current === loop, "a session runs on its loop")
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + options.connectTimeout
        if let existing {
            fd = existing
        } else {
            let addresses = try await TCP.resolve(options.address, port: options.port)
            var connectError: Error?
            for address in addresses {
                do {
                    fd = try await TCP.connect(address, host: host, loop: loop, deadline: deadline)
                    assert(EventLoop.current === loop, "back on the loop after connecting")
                    break
                } catch {
                    connectError = error
                }
            }
            guard fd >= 0 else { throw connectError ?? fail(.connectFailed, "connect", "no address") }
        }
        let connected = clock.now
        timings.tcp = connected - start

        guard let session = libssh2_session_init_ex(nil, nil, nil, UnsafeMutableRawPointer(received)) else {
            throw fail(.protocolError, "session", "libssh2 could not create a session")
        }
        raw = session
        _ = libssh2_session_callback_set(session, LIBSSH2_CALLBACK_RECV, unsafeBitCast(countingReceive, to: UnsafeMutableRawPointer.self))
        libssh2_session_set_blocking(session, 0)
        let known = try KnownHosts(file: options.knownHostsFile, address: options.address, port: options.port, session: session)
        let preferred = known.preferredHostKeyAlgorithms(address: options.address, port: options.port)
        _ = libssh2_session_method_pref(session, LIBSSH2_METHOD_HOSTKEY, Self.supported(preferred, method: LIBSSH2_METHOD_HOSTKEY, session: session))

        let rc = try await retry("SSH handshake (banner and key exchange)", until: deadline) {
            libssh2_session_handshake(session, libssh2_socket_t(fd))
        }
        guard rc == 0 else {
            let code: SSHError.Code = rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_RECV ? .disconnected : .protocolError
            var message = "SSH handshake failed: \(lastError())"
            if rc == LIBSSH2_ERROR_KEX_FAILURE {
                message += " (no algorithm in common; an RSA-only server that refuses SHA-1 ssh-rsa signatures cannot be verified by libssh2 \(LibSSH2.version): give it an ed25519 or ECDSA host key, or allow HostKeyAlgorithms +ssh-rsa)"
            }
            throw fail(code, "handshake", message, rc: rc)
        }
        let handshaken = clock.now
        timings.handshake = handshaken - connected

        try verifyHostKey(known)
        try await authenticate(until: deadline)
        timings.authentication = clock.now - handshaken
        if let keepalive = options.keepalive {
            libssh2_keepalive_config(session, 1, UInt32(max(1, keepalive.components.seconds)))
        }
    }

    private func verifyHostKey(_ known: KnownHosts) throws {
        var length = 0
        var type: Int32 = 0
        guard let key = libssh2_session_hostkey(raw, &length, &type) else {
            throw fail(.protocolError, "host key", "the server sent no host key")
        }
        let keyType = HostKeyType(libssh2Type: type)
        fingerprint = Self.sha256Fingerprint(raw)
        let offered = "\(keyType.name) \(fingerprint)"
        let target = options.port == 22 ? options.address : "[\(options.address)]:\(options.port)"
        let file = options.knownHostsFile
        switch known.check(address: options.address, port: options.port, key: key, length: length, type: keyType) {
        case .match:
            return
        case .mismatch(let line):
            let message = """
                the host key of \(target) has CHANGED: the server offers \(offered), \
                but \(file)\(line.map { ":\($0)" } ?? "") holds a different key for it. \
                If the host was reinstalled, check the new key and remove the old entry with: \
                ssh-keygen -R '\(target)' -f \(file)
                """
            guard options.hostKeyCheck == .off else { throw fail(.hostKeyChanged, "host key", message) }
            hostKeyWarning = "host key check off: accepted a CHANGED key (\(offered))"
        case .notFound:
            switch options.hostKeyCheck {
            case .strict:
                throw fail(.hostKeyUnknown, "host key", """
                    the host key of \(target) is not in \(file) (strict checking): the server offers \(offered). \
                    Check it, then add it (ssh-keyscan -p \(options.port) \(options.address) >> \(file)) \
                    or connect once with --host-key-check accept-new
                    """)
            case .acceptNew:
                try KnownHosts.append(target: target, type: keyType, key: UnsafeRawBufferPointer(start: key, count: length), to: file)
            case .off:
                hostKeyWarning = "host key check off: accepted an unknown key (\(offered))"
            }
        }
    }

    /// OpenSSH's `SHA256:` fingerprint of the session's host key.
    private static func sha256Fingerprint(_ session: OpaquePointer?) -> String {
        guard let hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256) else { return "SHA256:?" }
        let bytes = Data(bytes: hash, count: 32)
        return "SHA256:" + bytes.base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    // MARK: Authentication

    /// Tries, in order, ssh-agent identities, key files and the password, as the server
    /// allows; a failure names every reason, led by the most telling kind.
    private func authenticate(until deadline: ContinuousClock.Instant) async throws {
        guard let methods = try await offeredMethods(until: deadline) else { return }
        var failures: [(SSHError.Code, String)] = []
        if methods.contains("publickey") {
            if try await publicKeyAuthentication(until: deadline, failures: &failures) { return }
        }
        if let password = options.password {
            if methods.contains("password") {
                if try await passwordAuthentication(password, until: deadline, failures: &failures) { return }
            } else {
                failures.append((.noAuthMethod, "a password was given but the server does not accept passwords"))
            }
        }
        throw authenticationFailure(failures, methods: methods)
    }

    /// The methods the server accepts for the user; nil when it let the user in with none.
    private func offeredMethods(until deadline: ContinuousClock.Instant) async throws -> Set<String>? {
        let user = options.user
        let list: UnsafeMutablePointer<CChar>? = try await retry("authentication", until: deadline) {
            libssh2_userauth_list(raw, user, UInt32(user.utf8.count))
        }
        guard let list else {
            if libssh2_userauth_authenticated(raw) != 0 { return nil }
            throw fail(.disconnected, "authentication", "the server closed the session: \(lastError())")
        }
        return Set(String(cString: list).split(separator: ",").map(String.init))
    }

    /// ssh-agent identities (when allowed and running), then the key files: the given
    /// ones, else the default ones that exist. Records why each one failed.
    private func publicKeyAuthentication(until deadline: ContinuousClock.Instant, failures: inout [(SSHError.Code, String)]) async throws -> Bool {
        if options.useAgent, let socket = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"], !socket.isEmpty {
            if try await agentAuthentication(user: options.user, until: deadline) { return true }
            failures.append((.authDenied, "no ssh-agent identity was accepted"))
        }
        let files = options.identityFiles.isEmpty ? Self.defaultIdentityFiles() : options.identityFiles
        for file in files {
            guard FileManager.default.isReadableFile(atPath: file) else {
                failures.append((.keyFile, "no such private key file: \(file)"))
                continue
            }
            if let failure = try await keyFileAuthentication(file, until: deadline) {
                failures.append(failure)
            } else {
                return true
            }
        }
        return false
    }

    /// Offers one key file; returns why it failed, or nil when it let us in.
    private func keyFileAuthentication(_ file: String, until deadline: ContinuousClock.Instant) async throws -> (SSHError.Code, String)? {
        let user = options.user
        let passphrase = options.passphrase
        let rc = try await retry("authentication", until: deadline) {
            libssh2_userauth_publickey_fromfile_ex(raw, user, UInt32(user.utf8.count), nil, file, passphrase)
        }
        switch rc {
        case 0:
            return nil
        case LIBSSH2_ERROR_FILE:
            if PrivateKeyFile.isEncrypted(file) {
                return passphrase == nil
                    ? (.passphrase, "\(file) is encrypted and no passphrase was given (--key-passphrase-file)")
                    : (.passphrase, "wrong passphrase for \(file)")
            }
            return (.keyFile, "cannot use private key \(file): \(Self.cannotOpen(file) ?? lastError())")
        case LIBSSH2_ERROR_AUTHENTICATION_FAILED, LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED:
            if let reason = Self.cannotOpen(file) {
                // libssh2 could not read the key and called it a refusal.
                return (.keyFile, "cannot use private key \(file): \(reason)")
            }
            var reason = "key \(file) denied by the server"
            if PrivateKeyFile.isRSA(file) {
                reason += " (libssh2 \(LibSSH2.version) signs RSA keys with SHA-1 ssh-rsa, which OpenSSH 8.8 and later refuse unless PubkeyAcceptedAlgorithms +ssh-rsa: prefer an ed25519 or ECDSA key)"
            }
            return (.authDenied, reason)
        default:
            throw fail(.disconnected, "authentication", "public key authentication failed: \(lastError())", rc: rc)
        }
    }

    private func passwordAuthentication(_ password: String, until deadline: ContinuousClock.Instant,
                                        failures: inout [(SSHError.Code, String)]) async throws -> Bool {
        let user = options.user
        let rc = try await retry("authentication", until: deadline) {
            libssh2_userauth_password_ex(raw, user, UInt32(user.utf8.count), password, UInt32(password.utf8.count), nil)
        }
        if rc == 0 { return true }
        guard rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED || rc == LIBSSH2_ERROR_PASSWORD_EXPIRED else {
            throw fail(.disconnected, "authentication", "password authentication failed: \(lastError())", rc: rc)
        }
        failures.append((.authDenied, rc == LIBSSH2_ERROR_PASSWORD_EXPIRED ? "the password has expired" : "password denied by the server"))
        return false
    }

    /// Every reason, coded by the most telling one: a passphrase or key file problem is
    /// ours to fix before a refusal is worth looking at.
    private func authenticationFailure(_ failures: [(SSHError.Code, String)], methods: Set<String>) -> SSHError {
        let user = options.user
        guard !failures.isEmpty else {
            return fail(.noAuthMethod, "authentication", """
                no credential to offer \(user)@\(options.address) (the server accepts \(methods.sorted().joined(separator: ","))): \
                give a key (-i, ansible_ssh_private_key_file), an ssh-agent, or a password (--ask-pass)
                """)
        }
        let code = [SSHError.Code.passphrase, .keyFile, .authDenied].first { code in failures.contains { $0.0 == code } } ?? .noAuthMethod
        return fail(code, "authentication", "authentication as \(user) failed: " + failures.map(\.1).joined(separator: "; "))
    }

    /// Why `file` cannot be opened now, if it cannot: libssh2 says only "Unable to open"
    /// (or calls it a refusal) when the reason is ours, such as too many open files.
    static func cannotOpen(_ file: String) -> String? {
        let fd = Glibc.open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        Glibc.close(fd)
        return nil
    }

    private func agentAuthentication(user: String, until deadline: ContinuousClock.Instant) async throws -> Bool {
        guard let agent = libssh2_agent_init(raw) else { return false }
        defer {
            libssh2_agent_disconnect(agent)
            libssh2_agent_free(agent)
        }
        guard libssh2_agent_connect(agent) == 0, libssh2_agent_list_identities(agent) == 0 else { return false }
        var previous: UnsafeMutablePointer<libssh2_agent_publickey>?
        var identity: UnsafeMutablePointer<libssh2_agent_publickey>?
        while libssh2_agent_get_identity(agent, &identity, previous) == 0 {
            let current = identity
            let rc = try await retry("authentication", until: deadline) { libssh2_agent_userauth(agent, user, current) }
            if rc == 0 { return true }
            previous = identity
        }
        return false
    }

    private static func defaultIdentityFiles() -> [String] {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return ["id_ed25519", "id_ecdsa", "id_rsa"].map { "\(home)/.ssh/\($0)" }
            .filter { FileManager.default.fileExists(atPath: $0) }
    }

    // MARK: Commands

    /// Runs `command` on a new channel. Output goes to `output` as it arrives (on the
    /// session's loop) and its last `tailLimit` bytes per stream are kept in the result.
    /// A command that passes `timeout` has its channel closed and `timedOut` set.
    ///
    /// - Throws: ``SSHError`` when the session fails (lost connection); a command that
    ///   fails is a result.
    ///
    /// With `answer`, stdin stays open while the output arrives: when the command has ended
    /// its output (the channel's end of file; it may still run, reading stdin), `answer`
    /// gets the result so far (no exit status yet) and returns what to write to stdin before
    /// closing it. The command's end then ends the run as usual.
    public func run(_ command: String, stdin: [UInt8]? = nil, timeout: Duration? = nil, tailLimit: Int = 64 * 1024,
                    output: (@Sendable (RemoteStream, UnsafeRawBufferPointer) -> Void)? = nil,
                    answer: (@Sendable (CommandResult) async -> [UInt8]?)? = nil) async throws -> CommandResult {
        guard let raw else { throw fail(.notStarted, "exec", "the session is closed") }
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = timeout.map { start + $0 }
        var result = CommandResult(stdout: TailBuffer(limit: tailLimit), stderr: TailBuffer(limit: tailLimit))
        let (channel, started) = try await settingUpChannel {
            let channel: OpaquePointer? = try await retry("opening a channel", until: deadline) {
                libssh2_channel_open_ex(raw, "session", 7, 2 * 1024 * 1024, UInt32(LIBSSH2_CHANNEL_PACKET_DEFAULT), nil, 0)
            }
            guard let channel else {
                // No channel, so no exec request was sent: the command did not run.
                throw fail(.notStarted, "exec", "cannot open a channel: \(lastError())", rc: libssh2_session_last_errno(raw))
            }
            do {
                return (channel, try await retry("starting the command", until: deadline) {
                    libssh2_channel_process_startup(channel, "exec", 4, command, UInt32(command.utf8.count))
                })
            } catch {
                free(channel)
                throw error
            }
        }
        do {
            guard started == 0 else { throw fail(.channel, "exec", "the server refused to run the command: \(lastError())", rc: started) }
            if let stdin { try await write(stdin, to: channel, until: deadline) }
            if let answer {
                try await read(channel, into: &result, until: deadline, output: output)
                if let reply = await answer(result), !reply.isEmpty { try await write(reply, to: channel, until: deadline) }
                _ = try await retry("closing stdin", until: deadline) { libssh2_channel_send_eof(channel) }
            } else {
                _ = try await retry("closing stdin", until: deadline) { libssh2_channel_send_eof(channel) }
                try await read(channel, into: &result, until: deadline, output: output)
            }
        } catch let error as SSHError where error.code == .timeout {
            result.timedOut = true
        } catch {
            free(channel)
            throw error
        }
        if result.timedOut {
            // Close without waiting for the remote side: it may never answer.
            _ = libssh2_channel_close(channel)
        } else {
            _ = try await retry("closing the channel", until: clock.now + .seconds(5)) { libssh2_channel_close(channel) }
            _ = try await retry("closing the channel", until: clock.now + .seconds(5)) { libssh2_channel_wait_closed(channel) }
            result.exitStatus = libssh2_channel_get_exit_status(channel)
            var signal: UnsafeMutablePointer<CChar>?
            var signalLength = 0
            if libssh2_channel_get_exit_signal(channel, &signal, &signalLength, nil, nil, nil, nil) == 0, let signal {
                result.exitSignal = String(cString: signal)
                Glibc.free(signal)
                result.exitStatus = nil
            }
        }
        free(channel)
        result.duration = clock.now - start
        return result
    }

    private func free(_ channel: OpaquePointer) {
        // Freeing may want to send a close; do not wait for it.
        _ = libssh2_channel_free(channel)
    }

    private func write(_ bytes: [UInt8], to channel: OpaquePointer, until deadline: ContinuousClock.Instant?) async throws {
        var offset = 0
        while offset < bytes.count {
            let written = try await retry("writing stdin", until: deadline) {
                bytes.withUnsafeBytes { buffer in
                    Int32(truncatingIfNeeded: libssh2_channel_write_ex(channel, 0, buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), bytes.count - offset))
                }
            }
            guard written >= 0 else { throw fail(.disconnected, "exec", "cannot write stdin: \(lastError())", rc: written) }
            offset += Int(written)
        }
    }

    private func read(_ channel: OpaquePointer, into result: inout CommandResult, until deadline: ContinuousClock.Instant?,
                      output: (@Sendable (RemoteStream, UnsafeRawBufferPointer) -> Void)?) async throws {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        let clock = ContinuousClock()
        while true {
            var progressed = false
            let ticket = EventLoop.Ticket(), before = received.pointee
            for (stream, id) in [(RemoteStream.stdout, Int32(0)), (.stderr, Int32(SSH_EXTENDED_DATA_STDERR))] {
                while true {
                    let count = libssh2_channel_read_ex(channel, id, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), size)
                    if count > 0 {
                        let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
                        if stream == .stdout { result.stdout.append(chunk) } else { result.stderr.append(chunk) }
                        output?(stream, chunk)
                        progressed = true
                        continue
                    }
                    if count == 0 || count == Int(LIBSSH2_ERROR_EAGAIN) { break }
                    throw fail(.disconnected, "exec", "the connection broke while reading output: \(lastError())", rc: Int32(count))
                }
            }
            // Before this channel waits: the others' packets may be among what it read.
            wakeOthers(ifReadSince: before)
            if libssh2_channel_eof(channel) != 0 { return }
            if progressed { continue }
            var wait = deadline
            if options.keepalive != nil {
                var next: Int32 = 0
                let rc = libssh2_keepalive_send(raw, &next)
                if rc != 0 && rc != LIBSSH2_ERROR_EAGAIN {
                    throw fail(.disconnected, "exec", "the connection broke: \(lastError())", rc: rc)
                }
                if next > 0 {
                    let keepaliveAt = clock.now + .seconds(Int(next))
                    wait = wait.map { min($0, keepaliveAt) } ?? keepaliveAt
                }
            }
            do {
                try await waitForSocket(until: wait, "the command", ticket: ticket)
            } catch let error as SSHError where error.code == .timeout {
                if let deadline, clock.now >= deadline { throw error }
            }
        }
    }

    /// Disconnects and frees the session (and the jump hosts it runs through); safe to
    /// call more than once.
    public func close() async {
        for pump in pumps {
            pump.cancel()
            await pump.value
        }
        pumps = []
        if let raw {
            let deadline = ContinuousClock.now + .seconds(2)
            // A courtesy to the server: the session is torn down below whether or not it is
            // delivered (a broken connection, a passed deadline, a cancelled task).
            _ = try? await retry("disconnect", until: deadline) { flotilla_libssh2_session_disconnect(raw, "flotilla done") }
            // Shut the socket first: freeing then cannot wait on the network (which, for a
            // tunnelled session, would wait on this very loop), and the descriptor stays
            // ours until closed below, so it is never another connection's by then.
            if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
            libssh2_session_set_blocking(raw, 1)
            libssh2_session_free(raw)
            self.raw = nil
        }
        if fd >= 0 {
            loop.close(fd)
            fd = -1
        }
        if let jump {
            self.jump = nil
            await jump.close()
        }
    }

    deinit {
        // A backstop for sessions dropped without close(): nothing else can use them now.
        // No task waits on the socket (a waiting task keeps its session alive), so the
        // loop holds no registration of it, and a plain close is enough off the loop.
        if let raw {
            if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
            libssh2_session_set_blocking(raw, 1)
            libssh2_session_free(raw)
        }
        if fd >= 0 { Glibc.close(fd) }
        received.deallocate()
    }
}

/// libssh2's receive (`recv`, errors as negative errno), counting the bytes into the
/// session's ``SSHSession/received`` (the session's abstract pointer).
private let countingReceive: @convention(c) (libssh2_socket_t, UnsafeMutableRawPointer?, Int, Int32,
                                             UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int = { socket, buffer, length, flags, abstract in
    let count = recv(socket, buffer, length, flags)
    guard count >= 0 else { return errno == EWOULDBLOCK ? -Int(EAGAIN) : -Int(errno) }
    if count > 0, let counter = abstract?.pointee?.assumingMemoryBound(to: UInt64.self) { counter.pointee &+= UInt64(count) }
    return count
}
