"""
Tests for L{gvtwisted.link.eager}: bytes leave in the call when the socket is
idle, keep their order behind buffered bytes, and what the kernel refuses is
buffered by the transport as usual.
"""

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.link.eager import writeNow, writeSequenceNow


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
