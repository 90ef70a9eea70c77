import Foundation

/// The databases a lab host's st2.conf and mistral.conf point at: listeners of the host's
/// own init on the host's loopback address, which accept and close each connection (enough
/// for a TCP reachability probe), unless the `databases_down` fault leaves one out.
enum LabDatabases {
    static let ports: [(name: String, port: Int)] = [("mongodb", 27017), ("rabbitmq", 5672), ("postgresql", 5432)]
    static var names: [String] { ports.map(\.name) }

    static func port(_ name: String) -> Int { ports.first { $0.name == name }!.port }

    /// The st2.conf of a host at `address`: MongoDB and RabbitMQ there, credentials in the
    /// URL as real sites have them (a probe must never print them).
    static func st2Conf(host: String, address: String) -> String {
        """
        # st2.conf of \(host), edited by the operator
        [api]
        host = 127.0.0.1
        [database]
        host = \(address)
        port = \(port("mongodb"))
        [messaging]
        url = amqp://st2:Rabbit-\(host)-secret@\(address):\(port("rabbitmq"))/
        [keyvalue]
        encryption_key_path = /etc/st2/keys/datastore_key.json

        """
    }

    static func mistralConf(host: String, address: String) -> String {
        "# mistral.conf of \(host)\n[database]\nconnection = postgresql://mistral:Pg-\(host)-secret@\(address):\(port("postgresql"))/mistral\n"
    }

    /// Starts a listener thread per database that is not down. A port this machine already
    /// uses on that address is said in the boot log, and left as it is.
    static func listen(_ config: HostConfig, log: (String) -> Void) {
        for (name, port) in ports where !config.spec.faults.databasesDown.contains(name) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var yes: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            let bound = withSocketAddress(config.address, port) { bind(fd, $0, $1) }
            guard fd >= 0, bound == 0, Glibc.listen(fd, 128) == 0 else {
                log("cannot listen for \(name) on \(config.address):\(port): \(String(cString: strerror(errno)))")
                if fd >= 0 { close(fd) }
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            Thread.detachNewThread {
                while true {
                    let client = accept(fd, nil, nil)
                    if client >= 0 { close(client) } else if errno != EINTR && errno != ECONNABORTED { return }
                }
            }
        }
    }
}

/// Processes of the `survive_stop` fault: what a real host shows when `st2ctl stop` left a
/// component behind (`st2ctl status` does not list it, `ps` does).
enum LabLeftovers {
    /// Set in a leftover's environment: the lab executable then only waits for its end.
    static let environmentKey = "FLOTILLA_LAB_LEFTOVER"

    /// The command line `ps` shows for a component, as StackStorm's interpreter runs it.
    static func argv(_ component: String) -> [String] {
        ["/opt/stackstorm/st2/bin/python", "/opt/stackstorm/st2/bin/\(component)", "--config-file", "/etc/st2/st2.conf"]
    }

    /// Starts one process per component the fault names (when the host's services run).
    static func start(_ config: HostConfig, executable: String, log: URL) {
        guard config.spec.servicesRunning else { return }
        for component in config.spec.faults.surviveStop {
            do {
                _ = try ProcessTable.spawnDetached(argv(component), log: log, program: executable,
                                                   environment: ["\(environmentKey)=\(component)", "PATH=/usr/bin:/bin"])
            } catch {
                appendLine("cannot start the leftover \(component): \(error)", to: log)
            }
        }
    }

    /// A leftover's life: waiting until a signal ends it.
    static func linger() -> Never {
        while true { pause() }
    }
}
