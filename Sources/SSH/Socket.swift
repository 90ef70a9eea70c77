import CLibSSH2
import Foundation
import Glibc

/// Non-blocking TCP connections for sessions.
enum TCP {
    /// The addresses of `host`: numeric addresses at once, names through getaddrinfo on
    /// a thread of its own (so a slow resolver never blocks an event loop or the pool).
    static func resolve(_ host: String, port: Int, isolation: isolated (any Actor)? = #isolation) async throws -> [sockaddr_storage] {
        // Failing means only "not a numeric address": the resolver below decides.
        if let numeric = try? lookup(host, port: port, numericOnly: true) { return numeric }
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try lookup(host, port: port, numericOnly: false) })
            }
        }
    }

    private static func lookup(_ host: String, port: Int, numericOnly: Bool) throws -> [sockaddr_storage] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (numericOnly ? AI_NUMERICHOST : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw SSHError(code: .connectFailed, message: "cannot resolve \(host): \(String(cString: gai_strerror(status)))",
                           host: host, operation: "resolve")
        }
        defer { freeaddrinfo(first) }
        var result: [sockaddr_storage] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let entry = node {
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(start: entry.pointee.ai_addr, count: Int(entry.pointee.ai_addrlen)))
            }
            result.append(storage)
            node = entry.pointee.ai_next
        }
        return result
    }

    /// A connected non-blocking socket with TCP_NODELAY (SSH's small request/reply
    /// packets must not wait for Nagle's algorithm).
    /// Runs in the caller's isolation (the session, on its loop), so waking from the wait
    /// never needs a thread of the shared pool, however busy that pool is.
    static func connect(_ address: sockaddr_storage, host: String, loop: EventLoop, deadline: ContinuousClock.Instant,
                        isolation: isolated (any Actor)? = #isolation) async throws -> Int32 {
        let family = Int32(address.ss_family)
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure(errno, host) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let length = socklen_t(family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        var copy = address
        let status = withUnsafePointer(to: &copy) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
        }
        if status != 0 && errno != EINPROGRESS {
            let code = errno
            loop.close(fd)
            throw failure(code, host)
        }
        if status != 0 {
            do {
                try await loop.wait(for: fd, events: .writable, until: deadline)
                assert(EventLoop.current === loop, "woken on the session's loop")
            } catch {
                loop.close(fd)
                if error is EventLoop.TimedOut {
                    throw SSHError(code: .timeout, message: "TCP connection timed out", host: host, operation: "connect")
                }
                throw error
            }
            var code: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &size)
            if code != 0 {
                loop.close(fd)
                throw failure(code, host)
            }
        }
        return fd
    }

    static func failure(_ code: Int32, _ host: String) -> SSHError {
        let reason = switch code {
        case ECONNREFUSED: "connection refused"
        case ETIMEDOUT: "TCP connection timed out"
        case EHOSTUNREACH, ENETUNREACH: "host unreachable"
        case ECONNRESET: "connection reset"
        default: String(cString: strerror(code))
        }
        return SSHError(code: code == ETIMEDOUT ? .timeout : .connectFailed, message: reason, host: host, operation: "connect")
    }
}
