import Foundation

/// The locks one controller holds while it drives a run: its state dir's, then the
/// hosts' (so two controllers never work on the same host, whatever their state dirs).
/// Released when the process ends.
public final class RunLocks {
    public let stateDir: URL
    public let stateLock: StateDirLock
    /// Nil until ``lockHosts(_:runID:)``.
    public private(set) var hostLocks: HostLocks?

    /// Locks the state dir.
    /// - Throws: `LockError` when another controller holds it; `JournalError` for a state
    ///   dir that cannot be made or is unsafe.
    public init(stateDir: URL) throws {
        self.stateDir = stateDir
        stateLock = try StateDirLock.acquire(stateDir: stateDir)
    }

    /// Locks every host of the run (all or none).
    /// - Throws: `LockError` naming the hosts another controller holds.
    public func lockHosts(_ targets: [HostLocks.Target], runID: String? = nil) throws {
        hostLocks = try HostLocks.acquire(targets, stateDir: stateDir, runID: runID)
    }
}
