import Foundation

/// The options a run was started with: the rolling flags of SPEC §5, the health check,
/// the step limit, and what `resume` needs to reach the same hosts the same way again
/// (selection and connection arguments, never secrets; the state dir). Checked once, when
/// the run is created (``init(flags:)``), and stored typed in the run's record.
public struct RunOptions: Sendable, Equatable {
    /// `--max-per VAR=N`.
    public struct MaxPer: Sendable, Equatable {
        public var variable: String
        public var limit: Int

        public init(variable: String, limit: Int) {
            self.variable = variable
            self.limit = limit
        }
    }

    public var batch: BatchSpec?
    public var canary: Int?
    public var maxParallel: Int?
    public var maxPer: [MaxPer] = []
    public var maxFail: RolloutPolicy.Threshold = .count(0)
    /// Percent of a batch.
    public var maxFailBatch: Double?
    public var unreachableCounts = true
    public var onHalt: RolloutPolicy.OnHalt = .drain
    /// Seconds between batches.
    public var pause: TimeInterval?
    public var confirm = false
    /// `--window` as given: `01:00-05:00` means the window open at each (re)start, or the
    /// next one, so it is resolved against the clock then (``RolloutFlags/window(_:now:timeZone:)``).
    public var window: String?
    public var health: String?
    public var healthyFor: TimeInterval?
    public var healthDeadline: TimeInterval?
    public var stepTimeout: TimeInterval?
    public var forceStop = false
    /// `--cluster-strategy` of an upgrade (nil: not given, `auto`).
    public var clusterStrategy: ClusterStrategy?
    /// Arguments that select the same hosts again (`-i`, `--limit`, `--ssh-config`).
    public var selection: [String] = []
    /// Non-secret arguments that connect the same way again.
    public var connection: [String] = []
    /// `--state-dir` as given, for the `flotilla resume` line the summary prints.
    public var stateDir: String?

    public init() {}

    /// The options from flags as text, keyed by flag name without dashes (`max-fail`:
    /// `10%`), as typed on the command line and as journals of schema 1 stored them
    /// (`selection` and `connection` then hold JSON arrays of strings, `confirm` and
    /// `force-stop` `yes`). Absent flags keep their defaults.
    ///
    /// - Throws: ``RolloutFlags/FlagError`` naming the flag and what is wrong with it.
    public init(flags: [String: String]) throws {
        typealias FlagError = RolloutFlags.FlagError
        if let text = flags["batch"] {
            do {
                batch = try BatchSpec(parsing: text)
            } catch let error as BatchSpec.ParseError {
                throw FlagError("--batch: \(error.message)")
            }
        }
        if let text = flags["canary"] {
            guard let value = Int(text), value >= 1 else { throw FlagError("--canary must be at least 1") }
            canary = value
        }
        if let text = flags["max-parallel"] {
            guard let value = Int(text), value >= 1 else { throw FlagError("--max-parallel '\(text)' must be a number of hosts, at least 1") }
            maxParallel = value
        }
        maxPer = try (flags["max-per"] ?? "").split(separator: ",").map { item in
            let (variable, limit) = try RolloutFlags.maxPer(String(item))
            return MaxPer(variable: variable, limit: limit)
        }
        if let text = flags["max-fail"] { maxFail = try RolloutFlags.threshold(text, flag: "--max-fail") }
        if let text = flags["max-fail-batch"] { maxFailBatch = try RolloutFlags.percent(text, flag: "--max-fail-batch") }
        if let text = flags["unreachable-counts"] {
            guard ["yes", "no"].contains(text) else { throw FlagError("--unreachable-counts must be yes or no") }
            unreachableCounts = text == "yes"
        }
        if let text = flags["on-halt"] {
            guard let mode = RolloutPolicy.OnHalt(rawValue: text) else { throw FlagError("--on-halt must be drain or stop") }
            onHalt = mode
        }
        pause = try flags["pause"].map { try RolloutFlags.duration($0, flag: "--pause") }
        confirm = flags["confirm"] == "yes"
        if let text = flags["window"] {
            _ = try RolloutFlags.window(text, now: Date())
            window = text
        }
        health = flags["health"]
        healthyFor = try flags["healthy-for"].map { try RolloutFlags.duration($0, flag: "--healthy-for") }
        healthDeadline = try flags["health-deadline"].map { try RolloutFlags.duration($0, flag: "--health-deadline") }
        stepTimeout = try flags["step-timeout"].map { try RolloutFlags.duration($0, flag: "--step-timeout") }
        forceStop = flags["force-stop"] == "yes"
        clusterStrategy = try flags["cluster-strategy"].map(Self.clusterStrategy)
        selection = try Self.arguments(flags["selection"], flag: "selection")
        connection = try Self.arguments(flags["connection"], flag: "connection")
        stateDir = flags["state-dir"]
    }

    /// The options from the rolling flags as given (nil or empty: not given), checked as
    /// ``init(flags:)`` checks them.
    /// - Throws: ``RolloutFlags/FlagError`` naming the flag and what is wrong with it.
    public init(batch: String?, canary: Int?, maxParallel: Int?, maxPer: [String], maxFail: String? = nil, maxFailBatch: String? = nil,
                unreachableCounts: String? = nil, onHalt: String? = nil, pause: String? = nil, confirm: Bool = false, window: String? = nil,
                health: String? = nil, healthyFor: String? = nil, healthDeadline: String? = nil, stepTimeout: String? = nil) throws {
        var flags: [String: String] = [:]
        flags["batch"] = batch
        flags["canary"] = canary.map(String.init)
        flags["max-parallel"] = maxParallel.map(String.init)
        if !maxPer.isEmpty { flags["max-per"] = maxPer.joined(separator: ",") }
        flags["max-fail"] = maxFail
        flags["unreachable-counts"] = unreachableCounts
        flags["on-halt"] = onHalt
        flags["max-fail-batch"] = maxFailBatch
        flags["pause"] = pause
        if confirm { flags["confirm"] = "yes" }
        flags["window"] = window
        flags["health"] = health
        flags["healthy-for"] = healthyFor
        flags["health-deadline"] = healthDeadline
        flags["step-timeout"] = stepTimeout
        try self.init(flags: flags)
    }

    /// `auto`, `whole` or `rolling`.
    private static func clusterStrategy(_ text: String) throws -> ClusterStrategy {
        guard let strategy = ClusterStrategy(rawValue: text) else { throw RolloutFlags.FlagError("--cluster-strategy must be auto, whole or rolling") }
        return strategy
    }

    /// A JSON array of strings (schema 1's `selection` and `connection`).
    private static func arguments(_ text: String?, flag: String) throws -> [String] {
        guard let text else { return [] }
        do {
            return try JSONDecoder().decode([String].self, from: Data(text.utf8))
        } catch {
            throw RolloutFlags.FlagError("the stored \(flag) arguments are not a list of strings: \(error)")
        }
    }

    /// The host variables a run groups its hosts by for `--max-per`.
    public var groupVariables: [String] { maxPer.map(\.variable) }

    /// The policy configuration for `record` (whose options these are), `--window`
    /// resolved against `now`.
    ///
    /// - Throws: ``RolloutFlags/FlagError`` when the window cannot be resolved.
    public func policyConfig(for record: RunRecord, now: Date) throws -> RolloutPolicy.Config {
        let index = Dictionary(uniqueKeysWithValues: record.hosts.enumerated().map { ($1.name, $0) })
        var config = RolloutPolicy.Config(batches: record.batches.map { $0.compactMap { index[$0] } }, targeted: record.hosts.count)
        config.canary = canary != nil
        config.maxParallel = maxParallel
        config.maxPer = maxPer.map { limit in
            RolloutPolicy.MaxPer(variable: limit.variable, limit: limit.limit, values: record.hosts.map { $0.groups[limit.variable] })
        }
        config.startTogether = RunBuilder.startTogether(record.hosts).map(\.hosts)
        config.maxFail = maxFail
        config.maxFailBatch = maxFailBatch
        config.unreachableCounts = unreachableCounts
        config.onHalt = onHalt
        config.pause = pause ?? 0
        config.confirm = confirm
        config.window = try window.map { try RolloutFlags.window($0, now: now) }
        return config
    }

    /// The engine's settings for a run whose folder is `runDirectory`.
    public func engineSettings(runDirectory: URL, knownFailures: [RolloutEngine.KnownFailure]) -> RolloutEngine.Settings {
        var settings = RolloutEngine.Settings(runDirectory: runDirectory)
        settings.stepTimeout = stepTimeout
        settings.healthyFor = healthyFor ?? 0
        settings.healthDeadline = healthDeadline ?? 300
        settings.forceStop = forceStop
        settings.knownFailures = knownFailures
        return settings
    }
}

/// Stored in the run's record (journal schema 2) as a JSON object keyed by flag name,
/// thresholds and batch sizes as their flag text, durations in seconds.
extension RunOptions: Codable {
    private enum Key: String, CodingKey {
        case batch, canary, maxParallel = "max-parallel", maxPer = "max-per", maxFail = "max-fail", maxFailBatch = "max-fail-batch"
        case unreachableCounts = "unreachable-counts", onHalt = "on-halt", pause, confirm, window, health, healthyFor = "healthy-for"
        case healthDeadline = "health-deadline", stepTimeout = "step-timeout", forceStop = "force-stop", selection, connection
        case clusterStrategy = "cluster-strategy"
        case stateDir = "state-dir"
    }

    private struct StoredMaxPer: Codable {
        var variable: String
        var limit: Int
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encodeIfPresent(batch?.description, forKey: .batch)
        try container.encodeIfPresent(canary, forKey: .canary)
        try container.encodeIfPresent(maxParallel, forKey: .maxParallel)
        try container.encode(maxPer.map { StoredMaxPer(variable: $0.variable, limit: $0.limit) }, forKey: .maxPer)
        try container.encode(RolloutFlags.text(maxFail), forKey: .maxFail)
        try container.encodeIfPresent(maxFailBatch, forKey: .maxFailBatch)
        try container.encode(unreachableCounts, forKey: .unreachableCounts)
        try container.encode(onHalt.rawValue, forKey: .onHalt)
        try container.encodeIfPresent(pause, forKey: .pause)
        try container.encode(confirm, forKey: .confirm)
        try container.encodeIfPresent(window, forKey: .window)
        try container.encodeIfPresent(health, forKey: .health)
        try container.encodeIfPresent(healthyFor, forKey: .healthyFor)
        try container.encodeIfPresent(healthDeadline, forKey: .healthDeadline)
        try container.encodeIfPresent(stepTimeout, forKey: .stepTimeout)
        try container.encode(forceStop, forKey: .forceStop)
        try container.encodeIfPresent(clusterStrategy?.rawValue, forKey: .clusterStrategy)
        try container.encode(selection, forKey: .selection)
        try container.encode(connection, forKey: .connection)
        try container.encodeIfPresent(stateDir, forKey: .stateDir)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        func parsed<T>(_ key: Key, _ parse: (String) throws -> T) throws -> T? {
            guard let text = try container.decodeIfPresent(String.self, forKey: key) else { return nil }
            do {
                return try parse(text)
            } catch {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(error)")
            }
        }
        batch = try parsed(.batch) { try BatchSpec(parsing: $0) }
        canary = try container.decodeIfPresent(Int.self, forKey: .canary)
        maxParallel = try container.decodeIfPresent(Int.self, forKey: .maxParallel)
        maxPer = try container.decodeIfPresent([StoredMaxPer].self, forKey: .maxPer)?.map { MaxPer(variable: $0.variable, limit: $0.limit) } ?? []
        maxFail = try parsed(.maxFail) { try RolloutFlags.threshold($0, flag: "--max-fail") } ?? .count(0)
        maxFailBatch = try container.decodeIfPresent(Double.self, forKey: .maxFailBatch)
        unreachableCounts = try container.decodeIfPresent(Bool.self, forKey: .unreachableCounts) ?? true
        onHalt = try parsed(.onHalt) { text in
            guard let mode = RolloutPolicy.OnHalt(rawValue: text) else { throw RolloutFlags.FlagError("--on-halt must be drain or stop") }
            return mode
        } ?? .drain
        pause = try container.decodeIfPresent(Double.self, forKey: .pause)
        confirm = try container.decodeIfPresent(Bool.self, forKey: .confirm) ?? false
        window = try container.decodeIfPresent(String.self, forKey: .window)
        health = try container.decodeIfPresent(String.self, forKey: .health)
        healthyFor = try container.decodeIfPresent(Double.self, forKey: .healthyFor)
        healthDeadline = try container.decodeIfPresent(Double.self, forKey: .healthDeadline)
        stepTimeout = try container.decodeIfPresent(Double.self, forKey: .stepTimeout)
        forceStop = try container.decodeIfPresent(Bool.self, forKey: .forceStop) ?? false
        clusterStrategy = try parsed(.clusterStrategy, Self.clusterStrategy)
        selection = try container.decodeIfPresent([String].self, forKey: .selection) ?? []
        connection = try container.decodeIfPresent([String].self, forKey: .connection) ?? []
        stateDir = try container.decodeIfPresent(String.self, forKey: .stateDir)
    }
}
