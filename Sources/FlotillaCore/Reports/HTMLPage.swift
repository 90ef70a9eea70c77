import Foundation

/// A report page kept as resources rather than Swift strings: `Reports/NAME.html`, its
/// style `NAME.css` and its script `NAME.js`, so they can be read and checked as what they
/// are. The page holds `{{name}}` placeholders: `{{style}}` and `{{script}}` take the two
/// files, the others the values the report passes to ``render(_:)``.
struct HTMLPage: Sendable {
    private enum Part: Sendable {
        case text(String)
        case value(String)
    }

    let name: String
    private let parts: [Part]

    /// `flotilla report --format html`.
    static let fleetReport = HTMLPage(resource: "fleet-report")
    /// `--html` and `flotilla show --format html`.
    static let runReport = HTMLPage(resource: "run-report")

    private init(resource name: String) {
        self.name = name
        let style = Self.read(name, "css"), script = Self.read(name, "js")
        var parts: [Part] = []
        var rest = Substring(Self.read(name, "html"))
        while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
            parts.append(.text(String(rest[..<open.lowerBound])))
            switch rest[open.upperBound..<close.lowerBound] {
            case "style": parts.append(.text(style))
            case "script": parts.append(.text(script))
            case let key: parts.append(.value(String(key)))
            }
            rest = rest[close.upperBound...]
        }
        parts.append(.text(String(rest)))
        self.parts = parts
    }

    /// The page with each placeholder replaced by its value. Values go in as they are
    /// (escaping is the caller's), and are not searched for placeholders themselves.
    func render(_ values: [String: String]) -> String {
        var page = ""
        for part in parts {
            switch part {
            case .text(let text): page += text
            case .value(let key):
                guard let value = values[key] else { preconditionFailure("page \(name) needs a value for {{\(key)}}") }
                page += value
            }
        }
        return page
    }

    /// The report's data for a `<script type="application/json">` element: every "<" as
    /// \u003c (JSON has "<" only inside strings), so neither "</script>" nor "<!--" (which
    /// would make the next "</script>" not end the element) can occur in it.
    static func scriptData(_ data: JSONValue) -> String {
        data.rendered().replacingOccurrences(of: "<", with: "\\u003c")
    }

    /// Text as HTML character data.
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// The resource's text. The pages are built into flotilla as the migration catalog
    /// is: one that is missing means a broken installation, as a missing bundle does (on
    /// which `Bundle.module` itself stops the program), not a problem of the run.
    private static func read(_ name: String, _ type: String) -> String {
        guard let url = Bundle.module.url(forResource: name, withExtension: type, subdirectory: "Reports") else {
            fatalError("Reports/\(name).\(type) is missing from flotilla's resources: reinstall flotilla")
        }
        do {
            return try String(contentsOf: url, encoding: .utf8)
        } catch {
            fatalError("cannot read \(url.path), one of flotilla's resources: \(error)")
        }
    }
}
