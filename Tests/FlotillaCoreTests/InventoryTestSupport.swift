import Foundation
import Testing
@testable import FlotillaCore

/// A temporary directory holding the given files (paths relative to it); removed when
/// the value is released.
final class TemporaryFiles {
    let root: URL

    init(_ files: [String: String]) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-inv-\(UUID().uuidString)")
        for (path, text) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
    }

    func path(_ relative: String = "") -> String { relative.isEmpty ? root.path : root.appendingPathComponent(relative).path }

    deinit { try? FileManager.default.removeItem(at: root) }
}

/// Loads inventory text given as files; `sources` default to the first file name.
func inventory(_ files: [String: String], sources: [String]? = nil) throws -> Inventory {
    let temporary = try TemporaryFiles(files)
    return try Inventory.load(sources: (sources ?? [files.keys.sorted()[0]]).map { temporary.path($0) })
}

func inventory(ini text: String) throws -> Inventory { try inventory(["hosts": text]) }

/// The error loading the files throws, with the file path reduced to its name.
func inventoryError(_ files: [String: String], sources: [String]? = nil) -> InventoryError? {
    do {
        _ = try inventory(files, sources: sources)
        return nil
    } catch let error as InventoryError {
        var copy = error
        let file = copy.location?.file ?? ""
        copy.location?.file = URL(fileURLWithPath: file).lastPathComponent
        return copy
    } catch {
        return nil
    }
}

extension Inventory {
    func vars(_ host: String) -> [String: InventoryValue] {
        (self.host(named: host)?.variables ?? [:]).mapValues(\.value)
    }

    func names(_ pattern: String? = nil) throws -> [String] { try select(pattern).map(\.name) }
}
