import Foundation

// One executable plays three parts: the lab commands, the simulated tools inside each host
// (chosen by the name it is invoked under), and the hidden helpers each host runs.
if ProcessInfo.processInfo.environment[LabLeftovers.environmentKey] != nil {
    LabLeftovers.linger()
}
let invokedAs = URL(fileURLWithPath: CommandLine.arguments.first ?? "").lastPathComponent
if Simulator.handles(invokedAs) {
    exit(Simulator.run(name: invokedAs, argv: CommandLine.arguments))
}
let arguments = CommandLine.arguments
switch arguments.count > 1 ? arguments[1] : "" {
case "_boot" where arguments.count == 3:
    HostProcesses.boot(hostDir: arguments[2])
case "_silent" where arguments.count == 4:
    HostProcesses.silent(address: arguments[2], port: Int(arguments[3]) ?? 0)
case "_session":
    SessionWrapper.run()
default:
    FlotillaLab.main()
}
