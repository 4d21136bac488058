"""
Tests for L{gvtwisted.link.eager}: bytes leave in the call when the socket is
idle, keep their order behind buffered bytes, and what the kernel refuses is
buffered by the transport as usual.
"""

import socket

from zope.interface import implementer

from twisted.internet import tcp
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.link.eager import TurnWriter, loseWriteConnectionNow, writeNow, writeSequenceNow


class SocketTransportMixin:
    """
    A real Twisted socket transport over one end of a UNIX socketpair; the
    other end is read directly. The reactor is a MemoryReactor, so nothing is
    sent unless the call itself sends it.
    """

    def makeTransport(self, sndbuf=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if sndbuf is not None:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        ours.setblocking(False)
        theirs.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reactor = MemoryReactor()
        # MemoryReactor has no addWriter: count the requests to watch the socket.
        self.writersAdded = []
        reactor.addWriter = self.writersAdded.append
        reactor.removeWriter = lambda w: None
        transport = tcp.Connection(ours, Protocol(), reactor)
        transport.connected = 1
        return transport, theirs

    def received(self, sock):
        chunks = []
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


class WriteNowTests(SocketTransportMixin, SynchronousTestCase):
    def test_sentInTheCall(self):
        """
        With nothing buffered, the bytes are in the peer's socket when
        C{writeNow} returns, and the reactor was not asked to watch the socket.
        """
        transport, peer = self.makeTransport()
        writeNow(transport, b"ping")
        self.assertEqual(self.received(peer), b"ping")
        self.assertEqual(self.writersAdded, [])
        self.assertEqual(transport.dataBuffer, b"")

    def test_orderBehindBuffered(self):
        """
        Bytes written before (still in the transport's buffer) go first: the
        new bytes are buffered behind them, not sent ahead.
        """
        transport, peer = self.makeTransport()
        transport.write(b"first ")
        writeNow(transport, b"second")
        self.assertEqual(self.received(peer), b"")
        transport.doWrite()
        self.assertEqual(self.received(peer), b"first second")

    def test_partialSendBuffered(self):
        """
        What the kernel does not take is handed to the transport's buffer, in
        order, and the reactor is asked to watch for writability.
        """
        transport, peer = self.makeTransport(sndbuf=4096)
        data = bytes(range(256)) * 4096  # 1 MiB, far above the socket buffers
        writeNow(transport, data)
        self.assertEqual(len(self.writersAdded), 1)
        got = [self.received(peer)]
        self.assertTrue(0 < len(got[0]) < len(data))
        while len(b"".join(got)) < len(data):
            transport.doWrite()
            got.append(self.received(peer))
        self.assertEqual(b"".join(got), data)

    def test_otherTransport(self):
        """
        A transport that is not a plain socket (here a StringTransport) gets
        its ordinary C{write}.
        """
        transport = StringTransport()
        writeNow(transport, b"abc")
        writeSequenceNow(transport, [b"d", b"ef"])
        self.assertEqual(transport.value(), b"abcdef")

    def test_disconnectingLikeWrite(self):
        """
        After C{loseConnection} the call does what Twisted's C{write} does
        (buffers behind what is pending), never sending ahead of it.
        """
        transport, peer = self.makeTransport()
        transport.write(b"x")
        transport.loseConnection()
        writeNow(transport, b"late")
        self.assertEqual(self.received(peer), b"")
        transport.doWrite()
        self.assertEqual(self.received(peer), b"xlate")


@implementer(IHalfCloseableProtocol)
class _HalfCloseRecorder(Protocol):
    def __init__(self):
        self.writeLost = 0

    def readConnectionLost(self):
        pass

    def writeConnectionLost(self):
        self.writeLost += 1


class _Producer:
    def __init__(self):
        self.resumed = 0

    def resumeProducing(self):
        self.resumed += 1

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


class LoseWriteConnectionNowTests(SocketTransportMixin, SynchronousTestCase):
    """
    L{loseWriteConnectionNow}: the half-close in the call when nothing waits,
    Twisted's own otherwise.
    """

    def halfCloseTransport(self):
        transport, peer = self.makeTransport()
        transport.protocol = _HalfCloseRecorder()
        return transport, peer

    def test_shutdownInTheCall(self):
        """
        With nothing buffered, the peer reads end of stream when the call
        returns, the protocol heard C{writeConnectionLost} once, and the
        reactor was not asked to watch the socket.
        """
        transport, peer = self.halfCloseTransport()
        loseWriteConnectionNow(transport)
        self.assertEqual(peer.recv(10), b"")
        self.assertEqual(transport.protocol.writeLost, 1)
        self.assertEqual(self.writersAdded, [])
        self.assertTrue(transport._writeDisconnected)
        # The read side is still open.
        peer.send(b"reply")
        self.assertEqual(transport.socket.recv(10), b"reply")

    def test_afterBufferedBytes(self):
        """
        Bytes still buffered go first: the half-close is Twisted's, after
        them.
        """
        transport, peer = self.halfCloseTransport()
        transport.write(b"last words")
        loseWriteConnectionNow(transport)
        self.assertEqual(self.received(peer), b"")
        self.assertEqual(transport.protocol.writeLost, 0)
        transport.doWrite()
        self.assertEqual(self.received(peer), b"last words")
        self.assertEqual(transport.protocol.writeLost, 1)

    def test_pausedProducerResumedFirst(self):
        """
        A paused streaming producer is resumed before the write side closes,
        as Twisted's C{doWrite} does, so the half-close waits for it.
        """
        transport, peer = self.halfCloseTransport()
        producer = _Producer()
        transport.registerProducer(producer, True)
        transport.producerPaused = True
        loseWriteConnectionNow(transport)
        self.assertEqual(transport.protocol.writeLost, 0)
        self.assertEqual(len(self.writersAdded), 1)
        transport.doWrite()
        self.assertEqual(producer.resumed, 1)

    def test_otherTransport(self):
        """
        A transport that is not a plain socket gets its own
        C{loseWriteConnection}.
        """
        class HalfClosing(StringTransport):
            halfClosed = 0

            def loseWriteConnection(self):
                self.halfClosed += 1

        transport = HalfClosing()
        loseWriteConnectionNow(transport)
        self.assertEqual(transport.halfClosed, 1)


class WriteSequenceNowTests(SocketTransportMixin, SynchronousTestCase):
    def test_piecesInOneCall(self):
        """
        The pieces (bytes and memoryviews) arrive joined, in order, sent in the
        call.
        """
        transport, peer = self.makeTransport()
        writeSequenceNow(transport, (b"\x00\x05", memoryview(b"hello"), b"!"))
        self.assertEqual(self.received(peer), b"\x00\x05hello!")
        self.assertEqual(self.writersAdded, [])

    def test_partialSequenceBuffered(self):
        """
        A sequence the kernel takes only part of: the rest of the piece it
        stopped in and the pieces after it are buffered, and arrive in order.
        """
        transport, peer = self.makeTransport(sndbuf=4096)
        parts = [b"head", bytes(range(256)) * 2048, b"middle", bytes(200) * 2048, b"tail"]
        writeSequenceNow(transport, parts)
        self.assertEqual(len(self.writersAdded), 1)
        got = [self.received(peer)]
        expected = b"".join(parts)
        while len(b"".join(got)) < len(expected):
            transport.doWrite()
            got.append(self.received(peer))
        self.assertEqual(b"".join(got), expected)


class TurnWriterTests(SocketTransportMixin, SynchronousTestCase):
    def makeWriter(self):
        from twisted.internet.task import Clock

        transport, peer = self.makeTransport()
        clock = Clock()
        transport.reactor.callLater = clock.callLater
        sends = []
        real = transport.socket

        class CountingSocket:
            def sendmsg(self, parts):
                sends.append(len(parts))
                return real.sendmsg(parts)

            def __getattr__(self, name):
                return getattr(real, name)

        transport.socket = CountingSocket()
        return TurnWriter(transport), peer, clock, sends

    def test_firstWriteOfTurnAtOnce(self):
        """
        The first write of a turn is in the peer's socket when the call returns.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.writeSequence((b"\x00\x01", b"a"))
        self.assertEqual(self.received(peer), b"\x00\x01a")
        self.assertEqual(sends, [2])

    def test_restOfTurnGathered(self):
        """
        Later writes of the same turn wait for its end and leave in one
        C{sendmsg}, in order; the next turn's first write is at once again.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.writeSequence((b"1",))
        writer.writeSequence((b"2", b"3"))
        writer.writeSequence((b"4",))
        self.assertEqual(self.received(peer), b"1")
        clock.advance(0)
        self.assertEqual(self.received(peer), b"234")
        self.assertEqual(sends, [1, 3])
        writer.writeSequence((b"5",))
        self.assertEqual(self.received(peer), b"5")

    def test_maxPartsSentEarly(self):
        """
        Past C{maxParts} gathered pieces, they leave without waiting.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.maxParts = 4
        writer.writeSequence((b"a",))
        writer.writeSequence((b"b", b"c"))
        writer.writeSequence((b"d", b"e"))
        self.assertEqual(self.received(peer), b"abcde")
        self.assertEqual(sends, [1, 4])

    def test_writeBatchAtOnce(self):
        """
        writeBatch sends its pieces in one C{sendmsg} at once and schedules no
        end-of-turn call.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.writeBatch([b"\x00\x01", b"a", b"\x00\x01", b"b"])
        self.assertEqual(self.received(peer), b"\x00\x01a\x00\x01b")
        self.assertEqual(sends, [4])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_writeBatchBehindGathered(self):
        """
        A batch written while pieces are gathered for the end of the turn goes
        behind them, in the same C{sendmsg}, and the turn's end sends nothing
        twice.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.writeSequence((b"1",))
        writer.writeSequence((b"2",))
        writer.writeBatch([b"3", b"4"])
        self.assertEqual(self.received(peer), b"1234")
        clock.advance(0)
        self.assertEqual(self.received(peer), b"")
        self.assertEqual(sends, [1, 3])

    def test_cancelDropsGathered(self):
        """
        After C{cancel} (the link is gone) nothing gathered is sent.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.writeSequence((b"a",))
        writer.writeSequence((b"b",))
        writer.cancel()
        clock.advance(0)
        self.assertEqual(self.received(peer), b"a")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noReactorDirect(self):
        """
        A transport with no reactor (StringTransport) gets every write at once.
        """
        transport = StringTransport()
        writer = TurnWriter(transport)
        writer.writeSequence((b"a",))
        writer.writeSequence((b"b",))
        self.assertEqual(transport.value(), b"ab")

    def test_maxBytesSentEarly(self):
        """
        Past C{maxBytes} gathered bytes, they leave without waiting, so that
        the transport's own buffer (and its producer pause) sees them.
        """
        writer, peer, clock, sends = self.makeWriter()
        writer.maxBytes = 10
        writer.writeSequence((b"a",))
        writer.writeSequence((b"bcdef",), 5)
        self.assertEqual(self.received(peer), b"a")
        writer.writeSequence((b"ghijk",))
        self.assertEqual(self.received(peer), b"bcdefghijk")
        self.assertEqual(sends, [1, 2])

    def test_fullSocketWritesThrough(self):
        """
        Once the socket is full (the transport holds bytes), later writes of
        the turn go through the transport's buffer at once, where its producer
        pause sees them, instead of being gathered.
        """
        writer, peer, clock, sends = self.makeWriter()
        transport = writer.transport
        writer.writeSequence((b"x" * (4 << 20),))
        self.assertTrue(transport._tempDataBuffer or transport.dataBuffer)
        held = len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer))
        writer.writeSequence((b"tail",))
        self.assertEqual(
            len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer)), held + 4
        )
        self.assertEqual(writer._parts, [])
