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
        #expect(crossed == ["2.2", "2.3", "2.4", "2.8", "2.9", "2.10", "3.3"])
    }

    @Test func scriptsShipOnlyBetweenTheirReleaseAndShippedUntil() throws {
        let catalog = try MigrationCatalog.bundled()
        let scopes = "/opt/stackstorm/st2/bin/st2-migrate-datastore-scopes.py"
        #expect(!catalog.scriptsShipped(by: StackStormVersion("2.0.1")!).contains(scopes))
        #expect(catalog.scriptsShipped(by: StackStormVersion("3.0.2")!).contains(scopes))
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
}
