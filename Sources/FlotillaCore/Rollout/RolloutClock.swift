import Foundation

/// Where the engine gets the time and waits: the wall clock in a run, a clock the test
/// moves in tests (so pauses, backoffs and health checks take no real time).
public protocol RolloutClock: Sendable {
    /// The current wall time.
    var now: Date { get }
    /// Returns at (or after) `deadline`; at once when it has passed.
    /// - Throws: `CancellationError` when the waiting task is cancelled.
    func sleep(until deadline: Date) async throws
}

extension RolloutClock {
    /// Waits `seconds` from now.
    /// - Throws: `CancellationError` when the waiting task is cancelled.
    public func sleep(for seconds: TimeInterval) async throws {
        try await sleep(until: now.addingTimeInterval(seconds))
    }
}

/// The wall clock (`Date()`, `Task.sleep`).
public struct SystemClock: RolloutClock {
    public init() {}

    public var now: Date { Date() }

    public func sleep(until deadline: Date) async throws {
        let delay = deadline.timeIntervalSinceNow
        // +1 ms: the sleep may end a hair early, and a tick must come at or after the instant.
        if delay > 0 { try await Task.sleep(for: .milliseconds(Int(delay * 1000) + 1)) }
    }
}
