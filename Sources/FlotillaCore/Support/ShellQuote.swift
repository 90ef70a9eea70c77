import Foundation

/// POSIX shell quoting.
public enum ShellQuote {
    /// `value` as one shell word: unchanged when made only of safe characters, otherwise
    /// in single quotes (a quote inside becomes `'\''`). Newlines, `$`, backticks and `;`
    /// stay inert.
    public static func quote(_ value: String) -> String {
        let safe = !value.isEmpty && value.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "_@%+=:,./-".unicodeScalars.contains(scalar))
        }
        return safe ? value : "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
