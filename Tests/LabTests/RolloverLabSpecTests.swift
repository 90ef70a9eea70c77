import Foundation
import Testing
@testable import flotilla_lab

/// What the lab needs for roll-overs, without a fleet: packs and keys from before 1.5 in
/// spec files, and the per-host datastore crypto key.
@Suite struct RolloverLabSpecTests {
    @Test func specsTakePacksAndKeysWrittenBefore15() throws {
        let specs = try LabSpec.parse("""
            hosts:
              - name: a
                packs: [acme, {name: netbox, version: 2.1.0}, {name: old_py2, broken: true}]
                kv: [{name: k, value: v, legacy: true}, {name: s, value: w, secret: true}]
            """, file: "spec.yaml")
        #expect(specs[0].packs == [PackSpec(name: "acme"), PackSpec(name: "netbox", version: "2.1.0"), PackSpec(name: "old_py2", broken: true)])
        #expect(specs[0].kv.map(\.legacy) == [true, false] && specs[0].kv.map(\.secret) == [false, true])
        #expect(throws: LabError.self) { try LabSpec.parse("hosts:\n  - {name: a, packs: [\"Bad Name\"]}\n", file: "spec.yaml") }
        #expect(throws: LabError.self) { try LabSpec.parse("hosts:\n  - {name: a, packs: [{name: p, broken: maybe}]}\n", file: "spec.yaml") }
        #expect(throws: LabError.self) { try LabSpec.parse("hosts:\n  - {name: a, packs: [{version: 1.0.0}]}\n", file: "spec.yaml") }
    }

    @Test func onlyTheKeyThatEncryptedASecretDecryptsIt() {
        let cipher = St2Content.encrypt("hunter2", key: "AAAA")
        #expect(cipher != "hunter2" && !cipher.contains("hunter2"))
        #expect(St2Content.decrypt(cipher, key: "AAAA") == "hunter2")
        #expect(St2Content.decrypt(cipher, key: "BBBB") == nil, "another host's key fails, as st2's HMAC check does")
        #expect(St2Content.encrypt("hunter2", key: "BBBB") != cipher)
        #expect(St2Content.decrypt("not hex at all", key: "AAAA") == nil)
    }
}
