"""
Tests for L{gvtwisted.link.seqpacket}: the C{--listen-bess} link (unix
C{SOCK_SEQPACKET}, one frame per message, each connection a switch port).

Real sockets in a temporary directory on the real reactor; the network runs
on a L{Clock}.
"""

import os
import socket
import stat

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gvtwisted.link.datagram import MAX_PACKET_FRAME, QUEUE_FRAMES
from gvtwisted.link.seqpacket import SeqpacketListener
from tests.test_link_datagram import NetworkMixin, receiveAll, waitUntil
from tests.test_links import GUEST2_IP, GUEST2_MAC, arpReply, arpRequest


def closed(sock):
    """
    Whether the peer closed C{sock} (a read says end of file).
    """
    try:
        return sock.recv(70000) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class BessTests(NetworkMixin, TestCase):
    """
    Accepting, frames both ways, bad messages, bounded queue.
    """

    def setUp(self):
        NetworkMixin.setUp(self)
        self.hostPath = self.path("bess.sock")
        self.listener = SeqpacketListener(self.hostPath, self.factory.makePort, self.counters,
                                          reactor)
        self.listener.startListening()
        self.addCleanup(self.listener.stopListening)

    def client(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(self.hostPath)
        sock.setblocking(False)
        self.addCleanup(sock.close)
        return sock

    @inlineCallbacks
    def connected(self, count=1):
        """
        C{count} clients, once the listener has accepted them all.
        """
        clients = [self.client() for _ in range(count)]
        yield waitUntil(lambda: len(self.listener.links) == count)
        return clients

    def test_socketMode(self):
        """
        The listening socket's file has mode 0600.
        """
        st = os.stat(self.hostPath)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    @inlineCallbacks
    def test_framesBothWays(self):
        """
        An accepted connection is a switch port: an ARP request (one
        message) gets the gateway's exact reply (one message).
        """
        [guest] = yield self.connected()
        self.assertEqual(self.counters.get("link.bessAccepts"), 1)
        guest.send(arpRequest())
        replies = yield waitUntil(lambda: receiveAll(guest))
        self.assertEqual(replies, [arpReply()])
        self.assertEqual(self.counters.get("link.framesReceived"), 1)
        self.assertEqual(self.counters.get("link.framesSent"), 1)

    @inlineCallbacks
    def test_twoLinks(self):
        """
        Two connections are two ports of one switch: a broadcast from one is
        flooded to the other, and each gets only its own unicast reply.
        """
        a, b = yield self.connected(2)
        a.send(arpRequest())
        repliesA = yield waitUntil(lambda: receiveAll(a))
        self.assertEqual(repliesA, [arpReply()])
        b.send(arpRequest(GUEST2_MAC, GUEST2_IP))
        repliesB = yield waitUntil(lambda: receiveAll(b))
        # b also saw a's broadcast request, flooded before b sent anything.
        self.assertEqual(repliesB, [arpRequest(), arpReply(GUEST2_MAC, GUEST2_IP)])
        flooded = yield waitUntil(lambda: receiveAll(a))
        self.assertEqual(flooded, [arpRequest(GUEST2_MAC, GUEST2_IP)])

    @inlineCallbacks
    def test_zeroLengthClosesThatLinkOnly(self):
        """
        A zero-length message closes its connection (and its port leaves
        the switch); another connection goes on working.
        """
        bad, good = yield self.connected(2)
        bad.send(b"")
        yield waitUntil(lambda: closed(bad))
        yield waitUntil(lambda: len(self.listener.links) == 1)
        good.send(arpRequest())
        replies = yield waitUntil(lambda: receiveAll(good))
        self.assertEqual(replies, [arpReply()])

    @inlineCallbacks
    def test_oversizeClosesThatLinkOnly(self):
        """
        A message longer than the largest frame closes its connection and is
        counted; another connection goes on working.
        """
        bad, good = yield self.connected(2)
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        bad.send(b"\x00" * (MAX_PACKET_FRAME + 1))
        yield waitUntil(lambda: closed(bad))
        self.assertEqual(self.counters.get("drop.link.oversizeFrame"), 1)
        self.assertEqual(len(self.listener.links), 1)
        good.send(arpRequest())
        replies = yield waitUntil(lambda: receiveAll(good))
        self.assertEqual(replies, [arpReply()])

    @inlineCallbacks
    def test_runtDropped(self):
        """
        A message shorter than an Ethernet header is dropped and counted;
        the link stays.
        """
        [guest] = yield self.connected()
        guest.send(b"abc")
        guest.send(arpRequest())
        replies = yield waitUntil(lambda: receiveAll(guest))
        self.assertEqual(replies, [arpReply()])
        self.assertEqual(self.counters.get("drop.link.runtFrame"), 1)

    @inlineCallbacks
    def test_boundedQueue(self):
        """
        A client that does not read: the kernel's refusals fill a bounded
        queue, the port pauses, the rest is dropped and counted, and the
        link stays; reading drains the queue and resumes the port.
        """
        [guest] = yield self.connected()
        [link] = self.listener.links
        link.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        port = link.port
        frame = b"\x5a" * 1500
        total = QUEUE_FRAMES * 4
        for _ in range(total):
            link.sendFrame(frame)
        self.assertGreater(link.queued(), 0)
        self.assertLessEqual(link.queued(), QUEUE_FRAMES)
        self.assertGreater(self.counters.get("drop.link.queueFull"), 0)
        self.assertTrue(port.paused)
        self.assertFalse(link.disconnected)
        received = []

        def drained():
            received.extend(receiveAll(guest))
            return link.queued() == 0 and not port.paused

        yield waitUntil(drained)
        received.extend(receiveAll(guest))
        self.assertEqual(len(received) + self.counters.get("drop.link.queueFull"), total)
        self.assertTrue(all(m == frame for m in received))

    @inlineCallbacks
    def test_clientCloses(self):
        """
        A client that closes takes its port off the switch.
        """
        [guest] = yield self.connected()
        [link] = self.listener.links
        port = link.port
        guest.close()
        yield waitUntil(lambda: not self.listener.links)
        self.assertIsNone(port.protocol)
        self.assertTrue(link.disconnected)

    @inlineCallbacks
    def test_stopClosesLinks(self):
        """
        Stopping the listener closes every link and removes the socket file.
        """
        [guest] = yield self.connected()
        self.listener.stopListening()
        self.assertFalse(os.path.exists(self.hostPath))
        yield waitUntil(lambda: closed(guest))
