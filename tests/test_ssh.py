"""
Tests for L{gvtwisted.services.ssh}: the streamlocal channel and its flow
control, the session's lazy open, backoff, time limits and keepalive, and the
option checks. The end-to-end tests against OpenSSH are in
L{tests.e2e.test_ssh_forward}.
"""

import os
import struct
import subprocess
import tempfile

from twisted.conch.ssh import common, connection
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.services.ssh.channel import HostSide, streamLocalRequest
from gvtwisted.services.ssh.client import (
    IdentityError, SSHSession, SessionUnavailable, _Connection, _UserAuth, loadIdentity)
from gvtwisted.services.ssh.forward import parseSSHTunnel, socketForwards, socketPath
from gvtwisted.stack.counters import Counters

MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97


class HalfCloseTransport(StringTransport):
    writeLost = False

    def loseWriteConnection(self):
        self.writeLost = True


class FakeSSHTransport:
    """
    Where an SSH connection service sends its packets.
    """

    failure = None

    def __init__(self):
        self.packets = []
        self.transport = StringTransport()

    def sendPacket(self, kind, payload):
        self.packets.append((kind, payload))

    def of(self, kind):
        return [p for k, p in self.packets if k == kind]


def keyFile(testCase, kind="ed25519"):
    d = tempfile.mkdtemp()
    testCase.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
    path = os.path.join(d, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path], check=True)
    return path


class Dialler:
    """
    A C{dial(factory, timeout)} that records what it was asked.
    """

    def __init__(self):
        self.factories = []

    def __call__(self, factory, timeout):
        self.factories.append(factory)

    def refuse(self):
        self.factories[-1].clientConnectionFailed(None, Failure(ConnectionRefusedError()))


class ChannelTests(SynchronousTestCase):
    """
    A host connection joined to a C{direct-streamlocal@openssh.com} channel
    of a real conch connection service.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.session = SSHSession(self.clock, Dialler(), "core", None, "ssh test",
                                  counters=self.counters, keepaliveInterval=0)
        self.conn = _Connection(self.session)
        self.ssh = FakeSSHTransport()
        self.conn.transport = self.ssh
        self.conn.serviceStarted()
        self.host = HostSide(self.session.openChannel, "/run/podman/podman.sock", self.counters)
        self.hostTransport = HalfCloseTransport()
        self.host.makeConnection(self.hostTransport)

    def confirm(self, window=1 << 20, maxPacket=32768):
        self.conn.ssh_CHANNEL_OPEN_CONFIRMATION(struct.pack(">4L", 0, 7, window, maxPacket))

    def data(self, payload):
        self.conn.ssh_CHANNEL_DATA(struct.pack(">L", 0) + common.NS(payload))

    def test_openRequest(self):
        """
        The channel open names OpenSSH's channel type and carries the guest
        path, a reserved string and a reserved uint32; the host socket is not
        read until the channel is open.
        """
        [payload] = self.ssh.of(MSG_CHANNEL_OPEN)
        name, rest = common.getNS(payload)
        self.assertEqual(name, b"direct-streamlocal@openssh.com")
        localId, window, maxPacket = struct.unpack(">3L", rest[:12])
        self.assertEqual(rest[12:], common.NS(b"/run/podman/podman.sock") + common.NS(b"")
                         + b"\x00\x00\x00\x00")
        self.assertEqual(rest[12:], streamLocalRequest("/run/podman/podman.sock"))
        self.assertEqual(self.hostTransport.producerState, "paused")
        self.confirm()
        self.assertEqual(self.hostTransport.producerState, "producing")

    def test_bytesBothWays(self):
        """
        Host bytes go out as channel data; channel data is written to the host.
        """
        self.confirm()
        self.host.dataReceived(b"GET /_ping HTTP/1.1\r\n\r\n")
        [payload] = self.ssh.of(MSG_CHANNEL_DATA)
        self.assertEqual(payload, struct.pack(">L", 7) + common.NS(b"GET /_ping HTTP/1.1\r\n\r\n"))
        self.data(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(self.hostTransport.value(), b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(self.counters.get("ssh.forward.bytesToGuest"), 23)

    def test_windowHeldWhileHostFull(self):
        """
        While the host socket's buffer is full, the guest's sshd gets no more
        window; when it drains, one adjust grants back everything used.
        """
        self.confirm()
        self.hostTransport.producer.pauseProducing()
        for _ in range(4):
            self.data(b"x" * 30000)
        self.assertEqual(self.ssh.of(MSG_CHANNEL_WINDOW_ADJUST), [])
        self.hostTransport.producer.resumeProducing()
        [adjust] = self.ssh.of(MSG_CHANNEL_WINDOW_ADJUST)
        self.assertEqual(adjust, struct.pack(">2L", 7, 120000))
        self.assertEqual(len(self.hostTransport.value()), 120000)

    def test_windowTopsUp(self):
        """
        Without backpressure the window is topped up once half is used.
        """
        self.confirm()
        self.data(b"x" * 30000)
        self.data(b"x" * 30000)
        self.assertEqual(self.ssh.of(MSG_CHANNEL_WINDOW_ADJUST), [])
        self.data(b"x" * 30000)
        [adjust] = self.ssh.of(MSG_CHANNEL_WINDOW_ADJUST)
        self.assertEqual(adjust, struct.pack(">2L", 7, 90000))

    def test_hostWaitsForWindow(self):
        """
        When sshd's window is used up, the host socket is paused; the host's
        EOF is sent only after the bytes buffered ahead of it.
        """
        self.confirm(window=10)
        self.host.dataReceived(b"a" * 25)
        self.assertEqual(self.hostTransport.producerState, "paused")
        self.host.readConnectionLost()
        self.assertEqual(self.ssh.of(MSG_CHANNEL_EOF), [])
        self.conn.ssh_CHANNEL_WINDOW_ADJUST(struct.pack(">2L", 0, 100))
        data = self.ssh.of(MSG_CHANNEL_DATA)
        self.assertEqual(b"".join(common.getNS(p[4:])[0] for p in data), b"a" * 25)
        self.assertEqual(self.ssh.of(MSG_CHANNEL_EOF), [struct.pack(">L", 7)])
        kinds = [k for k, _ in self.ssh.packets]
        self.assertEqual(kinds[-1], MSG_CHANNEL_EOF)
        self.assertEqual(self.hostTransport.producerState, "producing")

    def test_eofFromGuest(self):
        """
        The guest's EOF half-closes the host connection, which may still send.
        """
        self.confirm()
        self.conn.ssh_CHANNEL_EOF(struct.pack(">L", 0))
        self.assertTrue(self.hostTransport.writeLost)
        self.assertFalse(self.hostTransport.disconnecting)
        self.host.dataReceived(b"late")
        self.assertEqual(common.getNS(self.ssh.of(MSG_CHANNEL_DATA)[-1][4:])[0], b"late")

    def test_eofBeforeOpen(self):
        """
        A host EOF that came before the channel opened is sent once it does.
        """
        self.host.readConnectionLost()
        self.confirm()
        self.assertEqual(self.ssh.of(MSG_CHANNEL_EOF), [struct.pack(">L", 7)])

    def test_closeFromGuest(self):
        """
        The guest's close closes the channel and the host connection.
        """
        self.confirm()
        self.conn.ssh_CHANNEL_CLOSE(struct.pack(">L", 0))
        self.assertEqual(self.ssh.of(MSG_CHANNEL_CLOSE), [struct.pack(">L", 7)])
        self.assertTrue(self.hostTransport.disconnecting)

    def test_hostLeaves(self):
        """
        The host connection going away closes the channel.
        """
        self.confirm()
        self.host.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.ssh.of(MSG_CHANNEL_CLOSE), [struct.pack(">L", 7)])

    def test_hostLeavesWhileOpening(self):
        """
        A channel that opens after its host connection left is closed at once.
        """
        self.host.connectionLost(Failure(ConnectionDone()))
        self.confirm()
        self.assertEqual(self.ssh.of(MSG_CHANNEL_CLOSE), [struct.pack(">L", 7)])

    def test_openFails(self):
        """
        sshd refusing the channel (no such socket in the guest) closes the
        host connection and is counted.
        """
        self.conn.ssh_CHANNEL_OPEN_FAILURE(
            struct.pack(">2L", 0, 2) + common.NS(b"open failed") + common.NS(b""))
        self.assertTrue(self.hostTransport.disconnecting)
        self.assertEqual(self.counters.get("ssh.forward.failed"), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_sessionDiesWhileOpening(self):
        """
        A session that dies before sshd answers the channel open (sshd killed,
        not yet noticed) costs no connection: the channel is asked for again
        on a new session.
        """
        # As _ClientTransport.connectionLost does it: the session, then the service.
        self.session._lost(self.ssh, Failure(ConnectionDone()))
        self.conn.serviceStopped()
        self.assertFalse(self.hostTransport.disconnecting)
        self.assertEqual(len(self.session.dial.factories), 1)
        conn = _Connection(self.session)
        ssh = conn.transport = FakeSSHTransport()
        conn.serviceStarted()
        [payload] = ssh.of(MSG_CHANNEL_OPEN)
        self.assertEqual(common.getNS(payload)[0], b"direct-streamlocal@openssh.com")
        conn.ssh_CHANNEL_OPEN_CONFIRMATION(struct.pack(">4L", 0, 9, 1 << 20, 32768))
        self.host.dataReceived(b"ping")
        self.assertEqual(ssh.of(MSG_CHANNEL_DATA), [struct.pack(">L", 9) + common.NS(b"ping")])
        self.assertEqual(self.counters.get("ssh.forward.retried"), 1)

    def test_sessionLost(self):
        """
        The session dropping closes the host connections on it.
        """
        self.confirm()
        self.conn.serviceStopped()
        self.assertTrue(self.hostTransport.disconnecting)


class FakeConnection:
    """
    What the session needs of a connection service.
    """

    def __init__(self):
        self.transport = FakeSSHTransport()
        self.requests = []

    def sendGlobalRequest(self, name, data, wantReply=False):
        d = defer.Deferred()
        self.requests.append((name, d))
        return d


class SessionTests(SynchronousTestCase):
    """
    The session is dialled on demand, again with backoff, within limits.
    """

    def setUp(self):
        self.clock = Clock()
        self.dial = Dialler()
        self.counters = Counters(self.clock)
        self.session = SSHSession(self.clock, self.dial, "core", None, "ssh test",
                                  counters=self.counters)

    def nextDelay(self):
        calls = sorted(c.getTime() for c in self.clock.getDelayedCalls())
        return round(calls[0] - self.clock.seconds(), 6)

    def test_lazy(self):
        """
        Nothing is dialled until a connection needs the session, and one dial
        serves many waiting connections.
        """
        self.assertEqual(self.dial.factories, [])
        first = self.session.connected()
        second = self.session.connected()
        self.assertEqual(len(self.dial.factories), 1)
        conn = FakeConnection()
        self.session._ready(conn)
        self.assertIs(self.successResultOf(first), conn)
        self.assertIs(self.successResultOf(second), conn)
        self.assertIs(self.successResultOf(self.session.connected()), conn)
        self.assertEqual(len(self.dial.factories), 1)

    def test_backoff(self):
        """
        A refused dial is retried after 0.1 s, then twice as long each time up
        to 1 s; a success resets the delay.
        """
        d = self.session.connected()
        delays = []
        for _ in range(7):
            self.dial.refuse()
            delay = min(c.getTime() for c in self.clock.getDelayedCalls()
                        if c.getTime() - self.clock.seconds() < 50) - self.clock.seconds()
            delays.append(round(delay, 6))
            self.clock.advance(delay)
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
        self.assertEqual(len(self.dial.factories), 8)
        self.session._ready(FakeConnection())
        self.successResultOf(d)
        self.assertEqual(self.session._backoff, 0.1)
        self.assertEqual(self.counters.get("ssh.session.failures"), 7)

    def test_waitTimesOut(self):
        """
        A connection waits at most C{maxWait} seconds; with nobody waiting,
        dialling stops.
        """
        d = self.session.connected()
        for _ in range(200):
            if d.called:
                break
            if self.dial.factories and len(self.dial.factories) > len(getattr(self, "_seen", [])):
                self._seen = list(self.dial.factories)
                self.dial.refuse()
            self.clock.advance(0.5)
        failure = self.failureResultOf(d, SessionUnavailable)
        self.assertIn("no SSH session after 60 s", str(failure.value))
        self.assertIn("Connection was refused", str(failure.value))
        dials = len(self.dial.factories)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.dial.factories), dials)

    def test_cancel(self):
        """
        A host connection that leaves stops waiting; with nobody left, no
        retry is pending.
        """
        d = self.session.connected()
        self.dial.refuse()
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tooManyWaiting(self):
        """
        Past C{maxWaiting} waiting connections, more are refused at once.
        """
        self.session.maxWaiting = 2
        self.session.connected()
        self.session.connected()
        self.failureResultOf(self.session.connected(), SessionUnavailable)
        self.assertEqual(self.counters.get("ssh.session.tooManyWaiting"), 1)

    def test_lostRedials(self):
        """
        After the session drops, the next connection dials a new one.
        """
        self.session.connected()
        conn = FakeConnection()
        self.session._ready(conn)
        self.session._lost(conn.transport, Failure(ConnectionDone()))
        self.assertIsNone(self.session.connection)
        self.assertEqual(len(self.dial.factories), 1)
        d = self.session.connected()
        self.assertNoResult(d)
        self.assertEqual(len(self.dial.factories), 2)

    def test_authFailureRetries(self):
        """
        A session that closes before it is ready (sshd refused the key) is a
        failed attempt, retried with backoff and logged with sshd's reason.
        """
        d = self.session.connected()
        transport = self.dial.factories[0].buildProtocol(None)
        transport.failure = "no more authentication methods available"
        self.session._lost(transport, Failure(ConnectionDone()))
        self.assertEqual(self.nextDelay(), 0.1)
        self.assertEqual(self.session._lastFailure, "no more authentication methods available")
        self.assertNoResult(d)

    def test_keepalive(self):
        """
        Every C{keepaliveInterval} seconds a keepalive is sent; an answer
        (success or failure) keeps the session, silence for
        C{keepaliveTimeout} seconds aborts its connection.
        """
        self.session.connected()
        conn = FakeConnection()
        self.session._ready(conn)
        self.clock.advance(30)
        [(name, d)] = conn.requests
        self.assertEqual(name, b"keepalive@openssh.com")
        d.errback(Failure(Exception("request failed")))
        self.clock.advance(30)
        self.assertEqual(len(conn.requests), 2)
        self.clock.advance(15)
        self.assertTrue(conn.transport.transport.disconnecting)
        self.assertEqual(self.counters.get("ssh.session.keepaliveTimeout"), 1)

    def test_stop(self):
        """
        Stopping fails the waiting connections and dials nothing more.
        """
        d = self.session.connected()
        self.dial.refuse()
        self.session.stop()
        self.failureResultOf(d, SessionUnavailable)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(self.session.connected(), SessionUnavailable)


class IdentityTests(SynchronousTestCase):
    """
    Identities are OpenSSH private keys; an RSA one signs with SHA-2 when
    sshd offers it.
    """

    def test_kinds(self):
        """
        ed25519, ecdsa and rsa keys in OpenSSH's format load as private keys.
        """
        for kind, sshType in (("ed25519", b"ssh-ed25519"), ("ecdsa", b"ecdsa-sha2-nistp256"),
                              ("rsa", b"ssh-rsa")):
            key = loadIdentity(keyFile(self, kind))
            self.assertFalse(key.isPublic())
            self.assertEqual(key.sshType(), sshType)

    def test_errors(self):
        """
        A missing file, a public key and garbage are one line naming the file.
        """
        path = keyFile(self)
        e = self.assertRaises(IdentityError, loadIdentity, path + ".nope")
        self.assertIn("cannot read identity", str(e))
        e = self.assertRaises(IdentityError, loadIdentity, path + ".pub")
        self.assertIn("public key", str(e))
        with open(path + ".bad", "w") as f:
            f.write("hello\n")
        e = self.assertRaises(IdentityError, loadIdentity, path + ".bad")
        self.assertIn("is not a private key", str(e))

    def test_rsaSignatureAlgorithm(self):
        """
        RSA signs with rsa-sha2-512 or -256 when C{server-sig-algs} lists it,
        ssh-rsa otherwise; other keys sign with their own type.
        """
        auth = _UserAuth(b"core", loadIdentity(keyFile(self, "rsa")), connection.SSHConnection())

        class T:
            peerExtensions = {b"server-sig-algs": b"ssh-ed25519,rsa-sha2-256,ssh-rsa"}

        auth.transport = T()
        self.assertEqual(auth.signatureAlgorithm(), b"rsa-sha2-256")
        T.peerExtensions = {b"server-sig-algs": b"rsa-sha2-512,rsa-sha2-256"}
        self.assertEqual(auth.signatureAlgorithm(), b"rsa-sha2-512")
        T.peerExtensions = {}
        self.assertEqual(auth.signatureAlgorithm(), b"ssh-rsa")
        auth = _UserAuth(b"core", loadIdentity(keyFile(self)), connection.SSHConnection())
        auth.transport = T()
        self.assertEqual(auth.signatureAlgorithm(), b"ssh-ed25519")


class OptionTests(SynchronousTestCase):
    """
    The four C{--forward-*} options and C{ssh-tunnel://} remotes.
    """

    def test_countsMustMatch(self):
        """
        The four options given a different number of times is one line
        with the counts.
        """
        e = self.assertRaises(ValueError, socketForwards, ["/a"], ["/b"], [], ["/k"])
        self.assertEqual(str(e), "--forward-sock, --forward-dest, --forward-user and "
                                 "--forward-identity must all be given together, the same "
                                 "number of times (got 1, 1, 0 and 1)")
        self.assertEqual(socketForwards([], [], [], []), [])

    def test_matchedByPosition(self):
        """
        The n-th of each option make the n-th forward; unix:/// URLs are paths.
        """
        key = keyFile(self)
        [a, b] = socketForwards(["/tmp/a.sock", "unix:///tmp/b.sock"], ["/run/a", "/run/b"],
                                ["core", "root"], [key, key])
        self.assertEqual((a.sock, a.dest, a.user), ("/tmp/a.sock", "/run/a", "core"))
        self.assertEqual((b.sock, b.dest, b.user), ("/tmp/b.sock", "/run/b", "root"))
        self.assertFalse(a.key.isPublic())

    def test_badValues(self):
        """
        A relative guest path, an empty user, a bad identity or a non-unix
        host socket is an error naming the option.
        """
        key = keyFile(self)
        for args, words in (((["/a"], ["run/x"], ["u"], [key]), "--forward-dest"),
                            ((["/a"], ["/x"], [""], [key]), "--forward-user"),
                            ((["/a"], ["/x"], ["u"], ["/nope"]), "--forward-identity"),
                            ((["tcp://1.2.3.4:5"], ["/x"], ["u"], [key]), "--forward-sock")):
            e = self.assertRaises(ValueError, socketForwards, *args)
            self.assertTrue(str(e).startswith(words), str(e))
        self.assertEqual(socketPath("unix:/x"), "/x")

    def test_sshTunnel(self):
        """
        An ssh-tunnel URL gives user, host, port (22 by default), the path,
        the key and the passphrase.
        """
        t = parseSSHTunnel("ssh-tunnel://core@192.168.127.2/run/p.sock?key=/k&passphrase=pw")
        self.assertEqual((t.user, t.host, t.port, t.path, t.keyPath, t.passphrase),
                         ("core", "192.168.127.2", 22, "/run/p.sock", "/k", "pw"))
        self.assertEqual(parseSSHTunnel("ssh-tunnel://u@10.0.0.1:2222/x?key=/k").port, 2222)

    def test_tapOptions(self):
        """
        C{twistd gvtap} takes the four options; a mismatch is one line.
        """
        from gvtwisted.tap import Options

        key = keyFile(self)
        o = Options()
        o.parseOptions(["--listen", "unix:/tmp/x.sock", "--forward-sock", "/tmp/p.sock",
                        "--forward-dest", "/run/podman/podman.sock", "--forward-user", "core",
                        "--forward-identity", key])
        [forward] = o["socket-forwards"]
        self.assertEqual(forward.dest, "/run/podman/podman.sock")
        e = self.assertRaises(SystemExit, Options().parseOptions,
                              ["--listen", "unix:/tmp/x.sock", "--forward-sock", "/tmp/p.sock"])
        self.assertIn("must all be given together", str(e))
        self.assertTrue(str(e).startswith("gvtap: "))
