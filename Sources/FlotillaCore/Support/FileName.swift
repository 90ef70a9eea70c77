/// File names made from names that come from an inventory.
public enum FileName {
    /// A host name as a file name: anything but letters, digits and `._-` becomes `_`
    /// (`logs/HOST.log`, `artifacts/HOST/`).
    public static func host(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "_" })
    }
}
