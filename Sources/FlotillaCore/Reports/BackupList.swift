/// `flotilla show RUN --backups`: each host's backup artifacts as the journal recorded
/// them when they were written and verified (SPEC §8.4).
public enum BackupList {
    /// One row per artifact (host, name, size in bytes, SHA-256, path), hosts in run
    /// order; a host that kept none is listed as such.
    public static func text(_ state: JournalState) -> String {
        var rows = [["HOST", "ARTIFACT", "BYTES", "SHA-256", "PATH"]]
        for host in state.hosts {
            let kept = state.artifacts.filter { $0.host == host.name }
            if kept.isEmpty { rows.append([host.name, "(none)", "", "", ""]) }
            for artifact in kept {
                rows.append([host.name, artifact.name, artifact.size.map(String.init) ?? "?", artifact.sha256 ?? "?", artifact.path])
            }
        }
        return TextTable.render(rows)
    }
}
