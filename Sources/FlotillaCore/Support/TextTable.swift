import Foundation

/// Plain-text tables for the terminal: each column as wide as its widest cell, two
/// spaces between columns, no trailing spaces.
public enum TextTable {
    /// The table, one line per row, each ending in a newline.
    public static func render(_ rows: [[String]]) -> String {
        lines(rows).map { $0 + "\n" }.joined()
    }

    /// The table's lines, without newlines, for callers that put more lines between rows.
    public static func lines(_ rows: [[String]]) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
    }
}
