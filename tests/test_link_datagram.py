"""
Tests for L{gvtwisted.link.datagram}: the C{--listen-vfkit} link (a unix
datagram socket bound by the host, one frame per datagram).

Real unix sockets in a temporary directory, on the real reactor; the network
runs on a L{Clock} (its timers are not needed: the gateway answers ARP at
once). A client socket of the test's own plays the guest.
"""

import errno
import os
import socket
import stat
import tempfile
import shutil

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.link.datagram import (
    MAX_PACKET_FRAME, QUEUE_BYTES, QUEUE_FRAMES, VfkitLink, bindUnix,
)
from gvtwisted.link.listeners import LinkFactory
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from tests.test_links import FakePort, GUEST2_IP, GUEST2_MAC, arpReply, arpRequest
from tests.checksumpolicy import verifyingVariants


def waitUntil(predicate, timeout=5.0, interval=0.005):
    """
    A L{Deferred} that fires with C{predicate()}'s first true value, polled
    on the real reactor; it fails after C{timeout} seconds.
    """
    d = Deferred()
    deadline = reactor.seconds() + timeout

    def check():
        try:
            value = predicate()
        except Exception as e:
            d.errback(e)
            return
        if value:
            d.callback(value)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError(f"timed out waiting for {predicate}"))
        else:
            reactor.callLater(interval, check)

    reactor.callLater(0, check)
    return d


def receiveAll(sock, size=70000):
    """
    Every message waiting on the non-blocking C{sock}.
    """
    messages = []
    while True:
        try:
            messages.append(sock.recv(size))
        except BlockingIOError:
            return messages


class NetworkMixin:
    """
    A network with a fake port on its switch, and a temporary directory.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.network = VirtualNetwork(self.clock, NetworkConfig(), self.switch, self.counters)
        self.fake = FakePort()
        self.switch.attach(self.fake)
        self.factory = LinkFactory(self.network, self.counters, "qemu")
        self.tempDir = tempfile.mkdtemp(prefix="gvtlink-")
        self.addCleanup(shutil.rmtree, self.tempDir, True)

    def path(self, name):
        return os.path.join(self.tempDir, name)


class VfkitTests(NetworkMixin, TestCase):
    """
    The vfkit link: greeting, learned peer, frames both ways, bounded queue.
    """

    def setUp(self):
        NetworkMixin.setUp(self)
        self.hostPath = self.path("vfkit.sock")
        self.link = VfkitLink(self.hostPath, self.factory.makePort, self.counters, reactor)
        self.link.startListening()
        self.addCleanup(self.link.stopListening)

    def client(self, name="guest.sock", rcvbuf=None):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(self.path(name))
        sock.setblocking(False)
        self.addCleanup(sock.close)
        return sock

    def test_socketMode(self):
        """
        The host's socket file is a socket with mode 0600, and its buffers
        are at least the 1 MiB / 4 MiB asked for (or the system's cap).
        """
        st = os.stat(self.hostPath)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        sndbuf = self.link.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.assertGreater(sndbuf, 200 * 1024)

    @inlineCallbacks
    def test_greetingThenFrames(self):
        """
        C{VFKT} is consumed as a greeting (no frame reaches the switch), the
        peer is learned and the link joins the switch; an ARP request then
        gets the gateway's exact reply, sent to the client's address.
        """
        guest = self.client()
        guest.sendto(b"VFKT", self.hostPath)
        yield waitUntil(lambda: self.link.peer is not None)
        self.assertEqual(self.link.peer, self.path("guest.sock"))
        self.assertEqual(self.counters.get("link.vfkit.greetings"), 1)
        self.assertEqual(self.fake.frames, [])
        self.assertIsNotNone(self.link.port)
        self.assertEqual(self.counters.get("link.framesReceived"), 0)
        guest.sendto(arpRequest(), self.hostPath)
        replies = yield waitUntil(lambda: receiveAll(guest))
        self.assertEqual(replies, [arpReply()])
        self.assertEqual(self.counters.get("link.framesReceived"), 1)

    @inlineCallbacks
    def test_frameWithoutGreeting(self):
        """
        A first datagram that is not C{VFKT} still teaches the peer and is a
        frame.
        """
        guest = self.client()
        guest.sendto(arpRequest(), self.hostPath)
        replies = yield waitUntil(lambda: receiveAll(guest))
        self.assertEqual(replies, [arpReply()])
        self.assertEqual(self.counters.get("link.vfkit.greetings"), 0)

    @inlineCallbacks
    def test_badSizes(self):
        """
        Runts and oversize datagrams are dropped and counted; the link stays
        up and answers the next frame.
        """
        guest = self.client()
        guest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        guest.sendto(b"VFKT", self.hostPath)
        guest.sendto(b"short", self.hostPath)
        guest.sendto(b"\x00" * (MAX_PACKET_FRAME + 100), self.hostPath)
        guest.sendto(arpRequest(), self.hostPath)
        replies = yield waitUntil(lambda: receiveAll(guest))
        self.assertEqual(replies, [arpReply()])
        self.assertEqual(self.counters.get("drop.link.runtFrame"), 1)
        self.assertEqual(self.counters.get("drop.link.oversizeFrame"), 1)
        self.assertEqual(self.counters.get("link.framesReceived"), 1)

    @inlineCallbacks
    def test_foreignPeer(self):
        """
        Frames from another address than the learned peer are dropped and
        counted; a greeting from it moves the link there.
        """
        first = self.client("a.sock")
        second = self.client("b.sock")
        first.sendto(b"VFKT", self.hostPath)
        yield waitUntil(lambda: self.link.peer is not None)
        second.sendto(arpRequest(GUEST2_MAC, GUEST2_IP), self.hostPath)
        yield waitUntil(lambda: self.counters.get("drop.link.vfkit.foreignPeer"))
        self.assertEqual(receiveAll(second), [])
        second.sendto(b"VFKT", self.hostPath)
        yield waitUntil(lambda: self.link.peer == self.path("b.sock"))
        second.sendto(arpRequest(GUEST2_MAC, GUEST2_IP), self.hostPath)
        replies = yield waitUntil(lambda: receiveAll(second))
        self.assertEqual(replies, [arpReply(GUEST2_MAC, GUEST2_IP)])
        self.assertEqual(receiveAll(first), [])

    @inlineCallbacks
    def test_boundedQueue(self):
        """
        A peer that does not read: sends that the kernel refuses wait in a
        bounded queue, the switch port is paused, frames beyond the queue
        are dropped and counted, and the link stays up. When the peer reads,
        the queue drains and the port resumes.
        """
        guest = self.client(rcvbuf=1024)
        guest.sendto(b"VFKT", self.hostPath)
        yield waitUntil(lambda: self.link.port is not None)
        port = self.link.port
        frame = b"\x5a" * 1500
        total = QUEUE_FRAMES * 4
        for _ in range(total):
            self.link.sendFrame(frame)
        self.assertGreater(self.link.queued(), 0)
        self.assertLessEqual(self.link.queued(), QUEUE_FRAMES)
        self.assertLessEqual(self.link.queued() * len(frame), QUEUE_BYTES)
        self.assertGreater(self.counters.get("drop.link.queueFull"), 0)
        self.assertTrue(port.paused)
        self.assertFalse(self.link.disconnected)
        queuedAtFull = self.link.queued()
        received = []

        def drained():
            received.extend(receiveAll(guest))
            return self.link.queued() == 0 and not port.paused

        yield waitUntil(drained)
        received.extend(receiveAll(guest))
        self.assertIs(self.link.port, port)
        self.assertEqual(len(received) + self.counters.get("drop.link.queueFull"), total)
        self.assertGreaterEqual(len(received), queuedAtFull)

    @inlineCallbacks
    def test_peerGone(self):
        """
        When the peer's socket is gone the link leaves the switch; a new
        greeting brings it back.
        """
        guest = self.client()
        guest.sendto(b"VFKT", self.hostPath)
        yield waitUntil(lambda: self.link.port is not None)
        guest.close()
        os.unlink(self.path("guest.sock"))
        self.link.sendFrame(arpReply())
        yield waitUntil(lambda: self.link.port is None)
        self.assertIsNone(self.link.peer)
        again = self.client("again.sock")
        again.sendto(b"VFKT", self.hostPath)
        again.sendto(arpRequest(), self.hostPath)
        replies = yield waitUntil(lambda: receiveAll(again))
        self.assertEqual(replies, [arpReply()])

    def test_stopRemovesSocket(self):
        """
        Stopping closes the socket and removes its file.
        """
        self.link.stopListening()
        self.assertFalse(os.path.exists(self.hostPath))
        self.assertTrue(self.link.disconnected)


class BindTests(NetworkMixin, TestCase):
    """
    L{bindUnix}: stale sockets are replaced, live ones and other files are
    not.
    """

    def test_staleReplaced(self):
        """
        A socket file nobody serves is removed and bound again.
        """
        path = self.path("stale.sock")
        old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old.bind(path)
        old.close()
        sock = bindUnix(path, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        self.assertEqual(sock.getsockname(), path)

    def test_liveRefused(self):
        """
        A socket another process still serves is left alone: EADDRINUSE.
        """
        path = self.path("live.sock")
        live = bindUnix(path, socket.SOCK_DGRAM)
        self.addCleanup(live.close)
        e = self.assertRaises(OSError, bindUnix, path, socket.SOCK_DGRAM)
        self.assertEqual(e.errno, errno.EADDRINUSE)

    def test_regularFileRefused(self):
        """
        A regular file at the path is never removed.
        """
        path = self.path("file")
        with open(path, "w") as f:
            f.write("keep")
        self.assertRaises(OSError, bindUnix, path, socket.SOCK_DGRAM)
        with open(path) as f:
            self.assertEqual(f.read(), "keep")


verifyingVariants(globals())
