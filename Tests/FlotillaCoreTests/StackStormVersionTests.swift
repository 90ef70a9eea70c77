import Foundation
import Testing
@testable import FlotillaCore

@Suite struct StackStormVersionTests {
    @Test func parsesReleasesAndPackageVersions() throws {
        let version = try #require(StackStormVersion("1:3.8.1-1.el8"))
        #expect(version.release == [3, 8, 1])
        #expect(version.revision == "1.el8")
        #expect(version.releaseString == "3.8.1")
        #expect(version.series == "3.8")
        #expect(StackStormVersion("3.8")?.releaseString == "3.8.0")
    }

    @Test(arguments: ["", "abc", "3..1", "3.x", "-1", "3.8.-1"])
    func rejectsWhatIsNotAVersion(_ text: String) {
        #expect(StackStormVersion(text) == nil)
    }

    @Test func comparesNumericallyNotAsText() throws {
        let ordered = ["2.9", "2.10", "3.0.1", "3.1", "3.8.0-1", "3.8.1-1", "3.8.1-2", "3.8.1-10", "3.10.0"].map { StackStormVersion($0)! }
        #expect(ordered == ordered.shuffled().sorted())
        #expect(StackStormVersion("3.8")! == StackStormVersion("3.8.0")!)
        #expect(Set([StackStormVersion("3.8")!, StackStormVersion("3.8.0")!]).count == 1)
        #expect(StackStormVersion("3.8.1-1")!.compareRelease(StackStormVersion("3.8.1-7")!) == 0)
        // Revisions equal as numbers but spelled apart are still ordered one way: never
        // unequal and unordered at once.
        let (zero, plain) = (StackStormVersion("3.8.1-1.el08")!, StackStormVersion("3.8.1-1.el8")!)
        #expect(zero != plain && (zero < plain) != (plain < zero))
    }
}

@Suite struct MigrationCatalogTests {
    @Test func bundledCatalogLoadsInVersionOrder() throws {
        let catalog = try MigrationCatalog.bundled()
        #expect(catalog.entries.map(\.version) == catalog.entries.map(\.version).sorted())
        #expect(catalog.packages.contains("st2mistral"))
        #expect(catalog.osCeilings["el7"] == StackStormVersion("3.8"))
        let optional = try #require(catalog.entries.first { $0.version == StackStormVersion("3.5")! })
        #expect(optional.optional && optional.scope == .database && optional.flag == "--with-optional-migrations")
    }

    @Test func crossingIncludesSkippedVersionsButNotTheStart() throws {
        let catalog = try MigrationCatalog.bundled()
        let crossed = catalog.entries(crossingFrom: StackStormVersion("2.1")!, to: StackStormVersion("3.3.0")!).map(\.version.series)
        #expect(crossed == ["2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.0", "3.2", "3.3"])
    }

    @Test func scriptsShipOnlyBetweenTheirReleaseAndShippedUntil() throws {
        let catalog = try MigrationCatalog.bundled()
        let scopes = "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py"
        #expect(!catalog.scriptsShipped(by: StackStormVersion("2.0.1")!).contains(scopes))
        #expect(catalog.scriptsShipped(by: StackStormVersion("3.0.1")!).contains(scopes))
        // There is no 3.0.2: 3.0.1 is the last release that ships the 1.5 and 2.1 scripts.
        #expect(!catalog.scriptsShipped(by: StackStormVersion("3.0.2")!).contains(scopes))
        #expect(!catalog.scriptsShipped(by: StackStormVersion("3.1.0")!).contains(scopes))
        #expect(catalog.scriptsShipped(by: StackStormVersion("3.8.1")!) == ["/opt/stackstorm/st2/bin/st2-migrate-db-dict-field-values"])
    }

    @Test func badCatalogNamesFileAndField() {
        let yaml = """
            versions:
              "3.5":
                shipped_until: "soon"
            packages: [st2]
            os_ceilings: {}
            mistral: {commands: []}
            """
        #expect {
            try MigrationCatalog(yaml: yaml, file: "bad.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("bad.yaml:") && text.contains("shipped_until")
        }
    }

    /// The error text of loading `yaml` as `bad.yaml`.
    func loadError(_ yaml: String) -> String {
        do {
            _ = try MigrationCatalog(yaml: yaml, file: "bad.yaml")
            return "loaded"
        } catch {
            return "\(error)"
        }
    }

    @Test func newCatalogFieldsAreValidatedWithFileAndLine() {
        let tail = "packages: [st2]\nos_ceilings: {}\nmistral: {commands: []}\n"
        #expect(loadError("""
            versions:
              "3.3":
                removes: [st2mistral]
                blocks_if:
                  bwc-enterprise: "remove it"
            """ + "\n" + tail) == "bad.yaml: line 5: versions.3.3.blocks_if: 'bwc-enterprise' is not listed in removes")
        #expect(loadError("""
            versions:
              "3.4":
                steps:
                  - name: recreate
                    command: " "
            """ + "\n" + tail) == "bad.yaml: line 5: versions.3.4.steps.0.command: must not be empty")
        #expect(loadError("""
            versions:
              "3.4":
                steps:
                  - name: recreate
            """ + "\n" + tail).hasPrefix("bad.yaml: line 4: versions.3.4.steps.0.command: missing"))
        #expect(loadError("versions: {}\n" + tail + """
            script_arguments:
              - below: "two"
                append: "--config-file /etc/st2/st2.conf"
            """) == "bad.yaml: line 6: script_arguments.0.below: not a version: two")
        #expect(loadError("versions: {}\n" + tail + """
            script_arguments:
              - below: "2.8"
            """).hasPrefix("bad.yaml: line 6: script_arguments.0.append: missing"))
    }

    @Test func scriptArgumentsApplyBelowTheirRelease() throws {
        let catalog = try MigrationCatalog.bundled()
        let script = "/opt/stackstorm/st2/bin/st2-migrate-runners.sh"
        #expect(catalog.scriptCommand(script, target: StackStormVersion("2.7.2")!) == script + " --config-file /etc/st2/st2.conf")
        #expect(catalog.scriptCommand(script, target: StackStormVersion("2.8.0")!) == script)
        #expect(catalog.osCeilings["ubuntu14.04"] == StackStormVersion("3.0"))
    }
}

