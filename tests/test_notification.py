"""
Tests for L{gvtwisted.services.notification}: gvproxy's JSON messages, one
connection each, a bounded queue, and the switch events behind them.
"""

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.services.notification import (
    LinkNotifications, NotificationSender, encode, notificationPath)
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.switch import Switch
from tests.test_switch import BCAST, FakePort, MAC_A, MAC_B, frame


class FormatTests(SynchronousTestCase):
    """
    The bytes and the address as gvproxy has them.
    """

    def test_encode(self):
        """
        Compact JSON and a newline, as Go's C{json.Encoder}; no MAC key when
        there is no MAC.
        """
        self.assertEqual(encode("ready"), b'{"notification_type":"ready"}\n')
        self.assertEqual(encode("connection_established", "5a:94:ef:e4:0c:ee"),
                         b'{"notification_type":"connection_established",'
                         b'"mac_address":"5a:94:ef:e4:0c:ee"}\n')

    def test_path(self):
        """
        C{unix:///PATH}, C{unix:PATH} and a plain path name the socket;
        another scheme is an error naming the option.
        """
        self.assertEqual(notificationPath("unix:///tmp/n.sock"), "/tmp/n.sock")
        self.assertEqual(notificationPath("unix:/tmp/n.sock"), "/tmp/n.sock")
        self.assertEqual(notificationPath("/tmp/n.sock"), "/tmp/n.sock")
        e = self.assertRaises(ValueError, notificationPath, "tcp://127.0.0.1:9")
        self.assertIn("must be a unix:// address", str(e))
        self.assertRaises(ValueError, notificationPath, "unix://")


class SenderTests(SynchronousTestCase):
    """
    L{NotificationSender} sends in order, one connection per message, and
    never blocks the caller.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.counters = Counters(self.reactor)
        self.sender = NotificationSender(self.reactor, "/tmp/n.sock", self.counters)

    def deliver(self):
        """
        Let the pending connection succeed; return what it wrote.
        """
        path, factory, timeout, _ = self.reactor.unixClients.pop(0)
        self.assertEqual(path, "/tmp/n.sock")
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(0)
        return transport.value()

    def test_inOrderOneConnectionEach(self):
        """
        Messages go in order, each on its own connection, the next one only
        after the previous is done.
        """
        self.sender.send("ready")
        self.sender.send("connection_established", "5a:94:ef:e4:0c:ee")
        self.assertEqual(len(self.reactor.unixClients), 1)
        self.assertEqual(self.deliver(), b'{"notification_type":"ready"}\n')
        self.assertEqual(self.deliver(), encode("connection_established", "5a:94:ef:e4:0c:ee"))
        self.assertEqual(self.reactor.unixClients, [])
        self.assertEqual(self.counters.get("notification.sent"), 2)

    def test_boundedQueue(self):
        """
        Past 100 queued messages (one more in flight, as gvproxy's channel of
        100), more are dropped and counted.
        """
        for _ in range(150):
            self.sender.send("ready")
        self.assertEqual(len(self.sender.queue), 100)
        self.assertEqual(self.counters.get("drop.notification.queueFull"), 49)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_refusedGoesOn(self):
        """
        A refused connection costs its message only (counted, logged).
        """
        self.sender.send("ready")
        self.sender.send("hypervisor_error")
        _, factory, _, _ = self.reactor.unixClients.pop(0)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.reactor.advance(0)
        self.assertEqual(self.deliver(), b'{"notification_type":"hypervisor_error"}\n')
        self.assertEqual(self.counters.get("drop.notification.failed"), 1)
        self.flushLoggedErrors()

    def test_timeout(self):
        """
        A listener that never lets the connection finish is cut off after
        the time limit and the next message goes.
        """
        self.sender.send("ready")
        self.sender.send("ready")
        _, factory, _, _ = self.reactor.unixClients.pop(0)
        protocol = factory.buildProtocol(None)

        class Stuck(StringTransport):
            aborted = False

            def abortConnection(self):
                self.aborted = True
                protocol.connectionLost(Failure(ConnectionDone()))

        transport = Stuck()
        protocol.makeConnection(transport)
        self.reactor.advance(5)
        self.assertTrue(transport.aborted)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.unixClients), 1)


class LinkNotificationTests(SynchronousTestCase):
    """
    The switch's learn and detach events become connection notifications.
    """

    def setUp(self):
        self.clock = Clock()
        self.switch = Switch(self.clock, Counters(self.clock))
        self.sent = []

        class Sender:
            def send(_, kind, mac=""):
                self.sent.append((kind, mac))

        LinkNotifications(Sender()).watch(self.switch)
        self.a, self.b = FakePort("a"), FakePort("b")
        self.switch.attach(self.a)
        self.switch.attach(self.b)

    def test_establishedOncePerMAC(self):
        """
        A MAC's first frame on a link is one C{connection_established}; later
        frames, and the entry ageing out and coming back, are not new.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing + 1)
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.receiveFrame(self.b, frame(BCAST, MAC_B))
        self.assertEqual(self.sent, [("connection_established", "5a:94:ef:e4:0c:0a"),
                                     ("connection_established", "5a:94:ef:e4:0c:0b")])

    def test_closedForEachMAC(self):
        """
        A link that goes is one C{connection_closed} per MAC seen on it; a
        link that never sent a frame is none.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_B))
        del self.sent[:]
        self.switch.detach(self.a)
        self.switch.detach(self.b)
        self.switch.detach(self.a)
        self.assertEqual(self.sent, [("connection_closed", "5a:94:ef:e4:0c:0a"),
                                     ("connection_closed", "5a:94:ef:e4:0c:0b")])

    def test_spoofedNotAnnounced(self):
        """
        A frame refused as a stolen MAC announces nothing.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.receiveFrame(self.b, frame(BCAST, MAC_A))
        self.assertEqual(len(self.sent), 1)
