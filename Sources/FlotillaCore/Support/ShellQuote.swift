import Foundation

/// POSIX shell quoting.
public enum ShellQuote {
    /// `value` as one shell word: unchanged when made only of safe characters, otherwise
    /// in single quotes (a quote inside becomes `'\''`). Newlines, `$`, backticks and `;`
    /// stay inert.
    public static func quote(_ value: String) -> String {
        let safe = !value.isEmpty && value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            default: "_@%+=:,./-".utf8.contains(byte)
            }
        }
        // Split and joined in Swift: Foundation's replacingOccurrences (through NSString)
        // was a visible share of the controller's CPU for the long lines of detached steps.
        return safe ? value : "'" + value.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}
