"""
L{gvtwisted.services.hostdial}: the NAT's dial, against real sockets on a real
(fresh) L{GvtapReactor}, with what the factory sees compared to what
C{connectTCP} gives it.
"""

import socket

from twisted.internet import error
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.reactor import GvtapReactor
from gvtwisted.services.hostdial import HostConnection, dialTCP


class Recorder(Protocol):
    def __init__(self, factory):
        self.factory = factory
        self.data = b""

    def connectionMade(self):
        self.factory.events.append(("made", self.transport))
        self.factory.ends.append((self.transport.getHost(), self.transport.getPeer(),
                                  self.transport.socket.get_inheritable()))
        self.transport.write(b"ping")

    def dataReceived(self, data):
        self.data += data
        self.factory.events.append(("data", data))
        self.factory.reactor.stop()

    def connectionLost(self, reason):
        self.factory.events.append(("lost", reason))


class RecordingFactory(ClientFactory):
    def __init__(self, reactor):
        self.reactor = reactor
        self.events = []
        self.addresses = []
        self.ends = []

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        return Recorder(self)

    def clientConnectionFailed(self, connector, reason):
        self.events.append(("failed", reason))
        if self.reactor.running:
            self.reactor.stop()


class DialTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = GvtapReactor()
        self.addCleanup(self.reactor.disconnectAll)
        self.factory = RecordingFactory(self.reactor)

    def run_(self, limit=5):
        guard = self.reactor.callLater(limit, self.reactor.stop)
        self.reactor.run(installSignalHandlers=False)
        self.assertTrue(guard.active(), "the dial never finished")
        guard.cancel()

    def listener(self, family=socket.AF_INET, host="127.0.0.1"):
        server = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind((host, 0))
        server.listen(1)
        return server

    def test_connects(self):
        """
        A dial to a listening socket builds the protocol for the peer's
        address, connects it on a L{HostConnection} (a Twisted TCP transport)
        and carries bytes both ways; nothing happens within the call.
        """
        server = self.listener()
        port = server.getsockname()[1]
        dialTCP(self.reactor, "127.0.0.1", port, self.factory)
        self.assertEqual(self.factory.events, [])

        def accepted():
            conn, _ = server.accept()
            self.addCleanup(conn.close)
            conn.setblocking(True)
            self.assertEqual(conn.recv(4), b"ping")
            conn.sendall(b"pong")

        self.reactor.callLater(0.05, accepted)
        self.run_()
        kind, transport = self.factory.events[0]
        self.assertEqual(kind, "made")
        self.assertIsInstance(transport, HostConnection)
        self.assertEqual(self.factory.events[1], ("data", b"pong"))
        self.assertEqual((self.factory.addresses[0].host, self.factory.addresses[0].port),
                         ("127.0.0.1", port))
        [(host, peer, inheritable)] = self.factory.ends
        self.assertEqual((peer.host, peer.port), ("127.0.0.1", port))
        self.assertEqual(host.host, "127.0.0.1")
        self.assertFalse(inheritable)

    def test_ipv6(self):
        """
        An IPv6 literal is dialled over IPv6.
        """
        try:
            server = self.listener(socket.AF_INET6, "::1")
        except OSError:
            raise self.skipTest("no IPv6 loopback here")
        dialTCP(self.reactor, "::1", server.getsockname()[1], self.factory)
        self.reactor.callLater(0.05, lambda: self.addCleanup(server.accept()[0].close))
        self.reactor.callLater(0.2, self.reactor.stop)
        self.run_()
        self.assertEqual(self.factory.events[0][0], "made")
        self.assertEqual(self.factory.ends[0][1].host, "::1")

    def test_refused(self):
        """
        A refused dial fails with L{error.ConnectionRefusedError}, as from
        C{connectTCP}.
        """
        server = self.listener()
        port = server.getsockname()[1]
        server.close()
        dialTCP(self.reactor, "127.0.0.1", port, self.factory)
        self.run_()
        [(kind, reason)] = self.factory.events
        self.assertEqual(kind, "failed")
        self.assertTrue(reason.check(error.ConnectionRefusedError), reason)

    def test_unreachableAtOnce(self):
        """
        An error from C{connect} itself (here: an address family mismatch's
        kin, a destination no route leads to) fails after the call returns,
        with the errno as C{osError}.
        """
        dialTCP(self.reactor, "0.0.0.0", 0, self.factory)
        self.assertEqual(self.factory.events, [])
        self.run_()
        [(kind, reason)] = self.factory.events
        self.assertEqual(kind, "failed")
        self.assertIsInstance(reason.value, error.ConnectError)

    def test_timeout(self):
        """
        A dial that does not finish within C{timeout} fails with
        L{error.TimeoutError} (a listener whose backlog is full never
        answers).
        """
        server = self.listener()
        port = server.getsockname()[1]
        fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
            self.addCleanup(s.close)
        dialTCP(self.reactor, "127.0.0.1", port, self.factory, timeout=0.3)
        self.run_()
        [(kind, reason)] = self.factory.events
        self.assertEqual(kind, "failed")
        self.assertTrue(reason.check(error.TimeoutError, error.ConnectionRefusedError), reason)

    def watchWriters(self):
        """
        Record the dials the reactor is asked to watch for writability.
        """
        watched = []
        original = self.reactor.addWriter

        def addWriter(selectable):
            if not isinstance(selectable, HostConnection):
                watched.append(selectable)
            original(selectable)

        self.patch(self.reactor, "addWriter", addWriter)
        return watched

    def test_loopbackDoneAtTurnEnd(self):
        """
        A dial to the loopback, whose handshake the kernel completes within
        C{connect}, is finished at the end of the turn it was made in, without
        a poll for writability; the factory does not see it within the call.
        """
        watched = self.watchWriters()
        server = self.listener()
        dialTCP(self.reactor, "127.0.0.1", server.getsockname()[1], self.factory)
        self.assertEqual(self.factory.events, [])
        self.reactor.callLater(0.05, lambda: self.addCleanup(server.accept()[0].close))
        self.reactor.callLater(0.2, self.reactor.stop)
        self.run_()
        self.assertEqual(self.factory.events[0][0], "made")
        self.assertEqual(watched, [])

    def test_inProgressWatched(self):
        """
        A dial still in progress at the end of its turn (a listener whose
        backlog is full drops the SYN) is watched for writability.
        """
        watched = self.watchWriters()
        server = self.listener()
        port = server.getsockname()[1]
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.addCleanup(s.close)
        dial = dialTCP(self.reactor, "127.0.0.1", port, self.factory, timeout=5)
        self.reactor.callLater(0.1, self.reactor.stop)
        self.run_()
        self.assertEqual(watched, [dial])
        dial.stopConnecting()

    def test_stopConnecting(self):
        """
        C{stopConnecting()} closes the socket and fails the dial with
        L{error.UserError}; a later writable event cannot connect it.
        """
        server = self.listener()
        dial = dialTCP(self.reactor, "127.0.0.1", server.getsockname()[1], self.factory)
        dial.stopConnecting()
        [(kind, reason)] = self.factory.events
        self.assertEqual(kind, "failed")
        self.assertTrue(reason.check(error.UserError))
        dial.stopConnecting()  # a second time: nothing more
        self.assertEqual(len(self.factory.events), 1)
