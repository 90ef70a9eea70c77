import FlotillaCore
import Foundation
import SSH

/// The roll-over stages files on NEW over SFTP, as the login user (SPEC §8.5).
extension SSHConnection: HostFileUpload {
    public func upload(_ localPath: String, to remotePath: String) async throws {
        do {
            _ = try await session.upload(localPath, to: remotePath, mode: 0o600, timeout: .seconds(600))
        } catch let error as SSHError {
            throw TransportError(.other, error.message)
        }
    }
}
