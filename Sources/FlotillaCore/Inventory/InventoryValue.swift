import Foundation

/// A typed inventory variable value, as Ansible would hold it after reading YAML or an
/// INI value through Python's `ast.literal_eval`.
public indirect enum InventoryValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([InventoryValue])
    case map([String: InventoryValue])
    /// An Ansible Vault ciphertext (`!vault`). flotilla cannot decrypt it; it is never
    /// printed and cannot be used as a connection setting.
    case encrypted

    /// The string form a connection setting takes from this value (`2222` and `"2222"`
    /// both give "2222"); nil for lists, maps, null and encrypted values.
    public var scalarText: String? {
        switch self {
        case .string(let text): text
        case .int(let number): String(number)
        case .double(let number): String(number)
        case .bool(let flag): flag ? "True" : "False"
        case .null, .list, .map, .encrypted: nil
        }
    }

    /// Ansible's boolean reading of a value (`true`, `yes`, `on`, `1`, ...); nil when it
    /// is not a boolean in any spelling Ansible accepts.
    public var truthValue: Bool? {
        switch self {
        case .bool(let flag): return flag
        case .int(let number) where number == 0 || number == 1: return number == 1
        case .double(let number) where number == 0 || number == 1: return number == 1
        case .string(let text):
            switch text.lowercased() {
            case "y", "yes", "on", "1", "true", "t", "1.0": return true
            case "n", "no", "off", "0", "false", "f", "0.0": return false
            default: return nil
            }
        default: return nil
        }
    }
}

/// Where a piece of inventory input came from, for error messages: `file:line:column`.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var column: Int?

    public init(file: String, line: Int? = nil, column: Int? = nil) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        if line != nil, let column { text += ":\(column)" }
        return text
    }
}

/// Bad inventory input (or a host pattern that cannot be used). Maps to exit status 65.
public struct InventoryError: Error, Sendable, CustomStringConvertible {
    public var location: SourceLocation?
    public var message: String

    public init(_ location: SourceLocation?, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String {
        guard let location else { return message }
        return "\(location): \(message)"
    }
}

// MARK: - JSON

/// A small JSON writer with sorted keys, so output is byte-for-byte stable.
public enum JSONText {
    public static func string(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    public static func number(_ number: Double) -> String {
        guard number.isFinite else { return string(number.isNaN ? "NaN" : (number < 0 ? "-Infinity" : "Infinity")) }
        if number == number.rounded(), abs(number) < 1e16 { return String(format: "%.1f", number) }
        return "\(number)"
    }
}

extension InventoryValue {
    /// This value as compact JSON; map keys sorted. Encrypted values and, when
    /// `redacted` is set, every value are written as "<redacted>".
    public func json(redacted: Bool = false) -> String {
        if redacted { return JSONText.string(InventoryValue.redactedText) }
        switch self {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let number): return String(number)
        case .double(let number): return JSONText.number(number)
        case .string(let text): return JSONText.string(text)
        case .encrypted: return JSONText.string(InventoryValue.redactedText)
        case .list(let items): return "[" + items.map { $0.json() }.joined(separator: ", ") + "]"
        case .map(let entries):
            return "{" + entries.keys.sorted().map { JSONText.string($0) + ": " + entries[$0]!.json() }
                .joined(separator: ", ") + "}"
        }
    }

    public static let redactedText = "<redacted>"

    /// Whether a variable of this name holds a secret that must never be printed:
    /// Ansible's password variables, and any name ending like a password, passphrase,
    /// secret or token.
    public static func isSecret(name: String) -> Bool {
        let lower = name.lowercased()
        if ["ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password",
            "ansible_become_pass", "ansible_sudo_pass", "ansible_sudo_password",
            "ansible_ssh_private_key_passphrase"].contains(lower) { return true }
        return ["password", "passwd", "_pass", "passphrase", "secret", "token"].contains { lower.hasSuffix($0) }
    }
}
