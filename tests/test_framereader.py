"""
Tests for L{gvtwisted.link.framereader}: a link's frames read into one reused
buffer, on a real UNIX stream socket pair; and gvtap-guest's link protocol
reading through it on a real connection.
"""

import os
import socket
import struct

from twisted.internet import defer, error, main, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.guest import forwarder, tuntap
from gvtwisted.link.framereader import FrameReader
from gvtwisted.link.framing import BE32, LE16, encodeFrame
from gvtwisted.wire import virtio


class SocketHolder:
    """
    What L{FrameReader.attach} needs of a transport: its socket.
    """

    def __init__(self, sock):
        self.socket = sock


class FrameReaderTests(SynchronousTestCase):
    """
    L{FrameReader.doRead} on one end of a stream socket pair.
    """

    def setUp(self):
        self.ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ours.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.peer.close)
        self.batches = []
        self.errors = []
        self.holder = SocketHolder(self.ours)
        self.reader = self.makeReader(LE16)

    def makeReader(self, header, readSize=1024, maxFrame=2000):
        def received(frames):
            # Copied now: the views are only good during the call.
            self.batches.append([bytes(f) for f in frames])

        reader = FrameReader(header, received, self.errors.append,
                             readSize=readSize, maxFrame=maxFrame)
        reader.attach(self.holder)
        return reader

    def frames(self):
        return [f for batch in self.batches for f in batch]

    def test_attachTakesDoRead(self):
        """
        After attach the transport's doRead is the reader's; detach gives it
        back.
        """
        self.assertEqual(self.holder.doRead, self.reader.doRead)
        self.reader.detach()
        self.assertNotIn("doRead", self.holder.__dict__)

    def test_framesOfOneRead(self):
        """
        The whole frames of one read are handed on in one call, in order.
        """
        sent = [b"\x01" * 60, b"\x02" * 61, b"\x03"]
        self.peer.sendall(b"".join(encodeFrame(LE16, f) for f in sent))
        self.assertIsNone(self.reader.doRead())
        self.assertEqual(self.batches, [sent])
        self.assertEqual(self.reader.frames, 3)

    def test_splitAnywhere(self):
        """
        A frame split anywhere, inside its length header too, is handed on
        once it is whole, and only then.
        """
        sent = [b"\x04" * 100, b"\x05" * 7]
        wire = b"".join(encodeFrame(LE16, f) for f in sent)
        for cut in range(1, len(wire)):
            self.batches.clear()
            self.peer.sendall(wire[:cut])
            self.reader.doRead()
            self.peer.sendall(wire[cut:])
            self.reader.doRead()
            self.assertEqual(self.frames(), sent, cut)
            self.assertEqual(self.reader.buffered(), 0)

    def test_partialFrameMovedToFront(self):
        """
        Reads that leave partial frames near the end of the buffer move them
        to its front; every frame still arrives whole and in order, over many
        times the buffer's size.
        """
        sent = [bytes([i % 251]) * (1 + (i * 397) % 1999) for i in range(300)]
        wire = b"".join(encodeFrame(LE16, f) for f in sent)
        offset = 0
        while offset < len(wire):
            chunk = wire[offset : offset + 700]
            self.peer.sendall(chunk)
            offset += len(chunk)
            self.reader.doRead()
        self.assertEqual(self.frames(), sent)
        self.assertEqual(self.reader.buffered(), 0)

    def test_bigEndianHeader(self):
        """
        A 4-byte big-endian header (offload links) frames the same way.
        """
        reader = self.makeReader(BE32)
        sent = [b"\x06" * 1500, b"\x07" * 3]
        self.peer.sendall(b"".join(encodeFrame(BE32, f) for f in sent))
        reader.doRead()
        self.assertEqual(self.batches, [sent])

    def test_pending(self):
        """
        Bytes given to attach come before what the socket holds.
        """
        wire = encodeFrame(LE16, b"\x08" * 50)
        reader = self.makeReader(LE16)
        reader.attach(self.holder, wire[:10])
        self.peer.sendall(wire[10:])
        reader.doRead()
        self.assertEqual(self.batches, [[b"\x08" * 50]])

    def test_pendingTooLong(self):
        """
        More pending bytes than a partial frame can have are refused.
        """
        self.assertRaises(ValueError, self.reader.attach, self.holder, b"\0" * 5000)

    def test_endOfStream(self):
        """
        The peer's close is the end of the connection, as the transport's own
        doRead says it.
        """
        self.peer.close()
        self.assertIs(self.reader.doRead(), main.CONNECTION_DONE)

    def test_nothingToRead(self):
        """
        A read with nothing waiting is not an error.
        """
        self.assertIsNone(self.reader.doRead())
        self.assertEqual(self.batches, [])

    def test_socketError(self):
        """
        A failing socket is a lost connection.
        """
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ours.sendall(b"unread")
        self.peer.close()
        self.holder.socket = self.ours
        result = self.reader.doRead()
        self.assertIn(result, (main.CONNECTION_DONE, main.CONNECTION_LOST))
        closed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        closed.close()
        reader = FrameReader(LE16, self.batches.append, self.errors.append)
        reader.attach(SocketHolder(closed))
        self.assertIs(reader.doRead(), main.CONNECTION_LOST)

    def test_badLength(self):
        """
        A zero length or one over the largest frame stops the framing: the
        frames before it are handed on, then the framing error is reported
        once.
        """
        for bad in (0, 2001):
            self.batches.clear()
            self.errors.clear()
            self.peer.sendall(encodeFrame(LE16, b"\x09" * 10) + struct.pack("<H", bad) + b"junk")
            self.assertIsNone(self.reader.doRead())
            self.assertEqual(self.batches, [[b"\x09" * 10]])
            self.assertEqual(len(self.errors), 1)
            self.assertIn(str(bad), self.errors[0])

    def test_canRead(self):
        """
        Only a plain socket transport that is connected and not closing can be
        read by the reader.
        """
        from twisted.internet.testing import StringTransport

        self.assertFalse(FrameReader.canRead(StringTransport()))


class FakeHost(protocol.Protocol):
    """
    The host's end of a link: keeps what it receives.
    """

    def connectionMade(self):
        self.received = b""
        self.factory.connected.callback(self)

    def dataReceived(self, data):
        self.received += data


class GuestLinkReaderTests(TestCase):
    """
    gvtap-guest's link protocol, on a real UNIX connection, reads the host's
    frames with a L{FrameReader} into a TAP device (a datagram socket pair
    standing in for it).
    """

    def setUp(self):
        self.path = self.mktemp()
        factory = protocol.Factory.forProtocol(FakeHost)
        factory.connected = defer.Deferred()
        self.hostConnected = factory.connected
        port = reactor.listenUNIX(self.path, factory)
        self.addCleanup(port.stopListening)
        self.tapEnd, self.guestKernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.guestKernel.setblocking(False)
        self.addCleanup(self.guestKernel.close)

    def makeDevice(self, vnetHeader=False):
        device = tuntap.TapDevice(os.dup(self.tapEnd.fileno()), "fake0", reactor=reactor,
                                  vnetHeader=vnetHeader)
        self.tapEnd.close()
        self.addCleanup(device.close)
        return device

    @defer.inlineCallbacks
    def connect(self, device):
        factory = protocol.Factory()
        factory.protocol = lambda: forwarder.GuestLinkProtocol(device, forwarder.connectRequest())
        endpoint = forwarder.linkClientFromString(reactor, "unix:" + self.path)
        link = yield endpoint.connect(factory)
        self.addCleanup(link.transport.loseConnection)
        host = yield self.hostConnected
        # The request read: a UNIX socket closed with unread bytes resets.
        for _ in range(200):
            if host.received:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(host.received, forwarder.connectRequest())
        return link, host

    def watchLoss(self, link):
        """
        A Deferred that fires once C{link} lost its connection (after its own
        C{connectionLost} ran), and the list the reason goes into.
        """
        lost = defer.Deferred()
        reasons = []
        original = link.connectionLost

        def connectionLost(reason):
            original(reason)
            reasons.append(reason)
            lost.callback(None)

        link.connectionLost = connectionLost
        return lost, reasons

    @defer.inlineCallbacks
    def tapFrames(self, count):
        got = []
        for _ in range(200):
            try:
                got.append(self.guestKernel.recv(70000))
            except BlockingIOError:
                if len(got) >= count:
                    break
                yield deferLater(reactor, 0.01, lambda: None)
        return got

    @defer.inlineCallbacks
    def test_framesThroughReader(self):
        """
        The host's frames, sent in pieces, reach the TAP whole, through the
        reader, and are counted.
        """
        device = self.makeDevice()
        link, host = yield self.connect(device)
        self.assertIsNotNone(link.reader)
        sent = [b"\x01" * 60, b"\x02" * 1514, b"\x03" * 61]
        wire = b"".join(encodeFrame(LE16, f) for f in sent)
        host.transport.write(wire[:30])
        yield deferLater(reactor, 0.02, lambda: None)
        host.transport.write(wire[30:])
        got = yield self.tapFrames(3)
        self.assertEqual(got, sent)
        self.assertEqual(link.reader.frames, 3)
        self.assertEqual(device.counters.get("tap.tx.frames"), 3)

    @defer.inlineCallbacks
    def test_plainLinkVirtioDevice(self):
        """
        A device with virtio-net headers on a link without offload gets each
        frame behind a plain header.
        """
        device = self.makeDevice(vnetHeader=True)
        link, host = yield self.connect(device)
        host.transport.write(encodeFrame(LE16, b"\x04" * 60))
        got = yield self.tapFrames(1)
        self.assertEqual(got, [virtio.PLAIN + b"\x04" * 60])

    @defer.inlineCallbacks
    def test_badLengthClosesLink(self):
        """
        A length no frame can have closes the link, after the frames before
        it reached the TAP.
        """
        device = self.makeDevice()
        link, host = yield self.connect(device)
        lost, reasons = self.watchLoss(link)
        host.transport.write(encodeFrame(LE16, b"\x05" * 60) + b"\0\0junk")
        yield lost
        self.assertTrue(reasons[0].check(error.ConnectionAborted))
        got = yield self.tapFrames(1)
        self.assertEqual(got, [b"\x05" * 60])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_hostClose(self):
        """
        The host closing the link is a clean end of the connection.
        """
        device = self.makeDevice()
        link, host = yield self.connect(device)
        lost, reasons = self.watchLoss(link)
        host.transport.loseConnection()
        yield lost
        self.assertTrue(reasons[0].check(error.ConnectionDone))
        self.assertNotIn("doRead", link.transport.__dict__)
