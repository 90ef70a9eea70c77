// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "flotilla",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "flotilla", targets: ["flotilla"]),
        .executable(name: "flotilla-lab", targets: ["flotilla-lab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "SSH", dependencies: ["CLibSSH2"]),
        .target(
            name: "FlotillaCore",
            dependencies: ["CSQLite", "CLibPQ", .product(name: "Yams", package: "Yams"), .product(name: "Logging", package: "swift-log")],
            resources: [.copy("Resources/stackstorm-migrations.yaml"), .copy("Resources/Reports")]
        ),
        .target(name: "FlotillaSSH", dependencies: ["SSH", "FlotillaCore", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "flotilla",
            dependencies: [
                "SSH", "FlotillaCore", "FlotillaSSH",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "flotilla-lab",
            dependencies: [
                "FlotillaCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The PostgreSQL server the journal tests start, shared by the suites that need one.
        .target(name: "PostgresTestSupport", dependencies: ["CLibPQ"], path: "Tests/PostgresTestSupport", linkerSettings: [.linkedLibrary("pq")]),
        .testTarget(name: "FlotillaCoreTests", dependencies: ["FlotillaCore", "SSH", "FlotillaSSH", "PostgresTestSupport"]),
        .testTarget(name: "LabTests", dependencies: ["flotilla-lab", "flotilla", "FlotillaCore", "SSH", "FlotillaSSH", "PostgresTestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["flotilla", "flotilla-lab"]),
    ],
    swiftLanguageModes: [.v6]
)
