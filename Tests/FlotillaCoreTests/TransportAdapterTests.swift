import FlotillaCore
import FlotillaSSH
import SSH
import Testing

/// The become wrapper: what goes into the command line and what goes to stdin.
@Suite struct BecomeTests {
    @Test func withoutBecomeTheCommandGoesAsItIs() {
        let (command, stdin) = Become.wrap("st2 --version", become: false, user: "root", password: "hunter2")
        #expect(command == "st2 --version")
        #expect(stdin == nil)
    }

    @Test func withoutAPasswordSudoMustNotAsk() {
        let (command, stdin) = Become.wrap("st2ctl status", become: true, user: "root", password: nil)
        #expect(command == "sudo -n -u root -- sh -c 'st2ctl status'")
        #expect(stdin == nil)
    }

    @Test func thePasswordGoesOnStdinOnlyAndTheCommandGetsDevNull() {
        let secret = "s3cr'et $(reboot)"
        let (command, stdin) = Become.wrap("cat /etc/st2/st2.conf", become: true, user: "st2 admin", password: secret)
        #expect(command == "sudo -S -p '' -u 'st2 admin' -- sh -c 'exec </dev/null; cat /etc/st2/st2.conf'")
        #expect(!command.contains("s3cr"))
        #expect(stdin == Array((secret + "\n").utf8))
    }

    @Test func quotesAndShellSyntaxInTheCommandStayOneWord() {
        let (command, _) = Become.wrap("echo 'it''s'; echo $HOME `id` \"x\"", become: true, user: "root", password: nil)
        #expect(command == #"sudo -n -u root -- sh -c 'echo '\''it'\'''\''s'\''; echo $HOME `id` "x"'"#)
    }
}

/// Which SSH failures the engine may retry, and how a failed command is classified.
@Suite struct TransportErrorTests {
    static func error(_ code: SSHError.Code) -> SSHError {
        SSHError(code: code, message: "\(code.rawValue) happened", host: "st2-01", operation: "test")
    }

    @Test func networkTroubleIsRetryableRefusalsAreNot() {
        for code in [SSHError.Code.connectFailed, .timeout, .protocolError, .disconnected] {
            let failure = SSHTransport.connectFailure(Self.error(code))
            #expect(failure.kind == .unreachable && failure.retryable, "\(code.rawValue)")
            #expect(failure.message == "\(code.rawValue) happened")
        }
        for code in [SSHError.Code.hostKeyUnknown, .hostKeyChanged, .keyFile, .passphrase, .authDenied, .noAuthMethod, .initFailed] {
            let failure = SSHTransport.connectFailure(Self.error(code))
            #expect(failure.kind == .unreachable && !failure.retryable, "\(code.rawValue)")
        }
    }

    @Test func aCommandThatNeverStartedIsToldApartFromALostSession() {
        let notStarted = SSHTransport.commandFailure(Self.error(.notStarted))
        #expect(notStarted.kind == .notStarted && notStarted.retryable)
        for code in [SSHError.Code.disconnected, .timeout, .channel] {
            let lost = SSHTransport.commandFailure(Self.error(code))
            #expect(lost.kind == .connectionLost && lost.retryable, "\(code.rawValue)")
        }
    }
}
