"""
Tests for L{gvtwisted.services.splice}: two connections joined byte for byte
with flow control and half-close.

Each side runs on a L{HalfCloseTransport}, a L{StringTransport} that also
records half-closes and aborts and never refuses a pause or resume; C{first}
always connects first (the early side, as the host socket of the NAT is).
"""

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.services.splice import SpliceSide, splice
from gvtwisted.stack.counters import Counters


class HalfCloseTransport(StringTransport):
    """
    A transport that records the calls a splice makes on it.

    @ivar calls: names of the close calls, in order.
    @ivar sendLimit: when set, a write that leaves more than this many bytes
        buffered pauses the registered streaming producer, as real
        transports do.
    """

    sendLimit = None

    def __init__(self):
        StringTransport.__init__(self)
        self.calls = []
        self.producerCalls = []

    def loseWriteConnection(self):
        self.calls.append("loseWriteConnection")

    def loseConnection(self):
        self.calls.append("loseConnection")
        self.disconnecting = True

    def abortConnection(self):
        self.calls.append("abortConnection")
        self.disconnecting = True

    def pauseProducing(self):
        self.producerCalls.append("pause")
        self.producerState = "paused"

    def resumeProducing(self):
        self.producerCalls.append("resume")
        self.producerState = "producing"

    def stopProducing(self):
        self.producerCalls.append("stop")
        self.producerState = "stopped"

    def registerProducer(self, producer, streaming):
        StringTransport.registerProducer(self, producer, streaming)
        self._maybePause()

    def write(self, data):
        StringTransport.write(self, data)
        self._maybePause()

    def _maybePause(self):
        if (self.sendLimit is not None and self.producer is not None
                and len(self.value()) > self.sendLimit):
            self.producer.pauseProducing()


class NoHalfCloseTransport(HalfCloseTransport):
    """
    A transport that cannot half-close (TLS, for example).
    """

    def loseWriteConnection(self):
        raise NotImplementedError("no half-close here")


class NoAbortTransport(HalfCloseTransport):
    """
    A transport without C{abortConnection}.
    """

    # Reading a property without a getter raises AttributeError.
    abortConnection = property()


class SpliceTestCase(SynchronousTestCase):

    def setUp(self):
        self.counters = Counters()
        self.first = SpliceSide(self.counters, "fromFirst")
        self.second = SpliceSide(self.counters, "fromSecond")
        splice(self.first, self.second)
        self.firstTransport = HalfCloseTransport()
        self.secondTransport = HalfCloseTransport()

    def connectFirst(self):
        self.first.makeConnection(self.firstTransport)

    def connectSecond(self):
        self.second.makeConnection(self.secondTransport)

    def connectBoth(self):
        self.connectFirst()
        self.connectSecond()


class ConnectTests(SpliceTestCase):
    """
    Connecting the two sides.
    """

    def test_halfCloseable(self):
        """
        A splice side is a half-closeable protocol, so that transports report
        end of stream with C{readConnectionLost} rather than closing.
        """
        self.assertTrue(IHalfCloseableProtocol.providedBy(self.first))

    def test_splicePeers(self):
        """
        C{splice} makes each side the other's peer.
        """
        self.assertIs(self.first.peer, self.second)
        self.assertIs(self.second.peer, self.first)

    def test_earlySideReadsOn(self):
        """
        The side that connects while its peer has no transport yet keeps
        reading (no pause and resume on every connection) and registers no
        producer.
        """
        self.connectFirst()
        self.assertEqual(self.firstTransport.producerState, "producing")
        self.assertIsNone(self.firstTransport.producer)

    def test_earlyDataHeldAndBounded(self):
        """
        What the early side reads is held for the peer, delivered in order
        when it connects; past C{pendingLimit} the early side stops reading,
        and reads again once the peer has it.
        """
        self.connectFirst()
        self.first.pendingLimit = 10
        self.first.dataReceived(b"hello")
        self.assertEqual(self.firstTransport.producerState, "producing")
        self.first.dataReceived(b" world")
        self.assertEqual(self.firstTransport.producerState, "paused")
        self.connectSecond()
        self.assertEqual(self.secondTransport.value(), b"hello world")
        self.assertEqual(self.firstTransport.producerState, "producing")

    def test_producersBothWays(self):
        """
        When the second side connects, each transport becomes the streaming
        producer of the other, and the early side reads again.
        """
        self.connectBoth()
        self.assertIs(self.secondTransport.producer, self.firstTransport)
        self.assertTrue(self.secondTransport.streaming)
        self.assertIs(self.firstTransport.producer, self.secondTransport)
        self.assertTrue(self.firstTransport.streaming)
        self.assertEqual(self.firstTransport.producerState, "producing")
        self.assertEqual(self.secondTransport.producerCalls, [])

    def test_readSize(self):
        """
        A transport with a C{bufferSize} (Twisted's TCP transport) is read
        C{readSize} bytes at a time.
        """
        self.firstTransport.bufferSize = 65536
        self.connectFirst()
        self.assertEqual(self.firstTransport.bufferSize, SpliceSide.readSize)


class DataTests(SpliceTestCase):
    """
    Bytes cross the splice.
    """

    def test_firstToSecond(self):
        """
        What the first side reads is written to the second side's transport,
        and counted.
        """
        self.connectBoth()
        self.first.dataReceived(b"abc")
        self.first.dataReceived(b"de")
        self.assertEqual(self.secondTransport.value(), b"abcde")
        self.assertEqual(self.firstTransport.value(), b"")
        self.assertEqual(self.counters.get("fromFirst"), 5)

    def test_secondToFirst(self):
        """
        What the second side reads is written to the first side's transport.
        """
        self.connectBoth()
        self.second.dataReceived(b"xyz")
        self.assertEqual(self.firstTransport.value(), b"xyz")
        self.assertEqual(self.secondTransport.value(), b"")
        self.assertEqual(self.counters.get("fromSecond"), 3)

    def test_earlyDataBuffered(self):
        """
        Data the early side reads before its peer connects is kept, in order,
        and written to the peer when it connects.
        """
        self.connectFirst()
        self.first.dataReceived(b"early ")
        self.first.dataReceived(b"bird")
        self.assertEqual(self.firstTransport.value(), b"")
        self.connectSecond()
        self.assertEqual(self.secondTransport.value(), b"early bird")
        self.first.dataReceived(b"!")
        self.assertEqual(self.secondTransport.value(), b"early bird!")

    def test_earlyDataNotRepeated(self):
        """
        The buffered data is written once.
        """
        self.connectFirst()
        self.first.dataReceived(b"once")
        self.connectSecond()
        self.second.dataReceived(b"reply")
        self.first.dataReceived(b"-more")
        self.assertEqual(self.secondTransport.value(), b"once-more")

    def test_noCounters(self):
        """
        A side made without counters splices all the same.
        """
        first, second = SpliceSide(), SpliceSide()
        splice(first, second)
        ta, tb = HalfCloseTransport(), HalfCloseTransport()
        first.makeConnection(ta)
        second.makeConnection(tb)
        first.dataReceived(b"q")
        self.assertEqual(tb.value(), b"q")

    def test_dataAfterPeerLostDropped(self):
        """
        Data read after the peer is gone is dropped, not buffered.
        """
        self.connectBoth()
        self.second.connectionLost(Failure(ConnectionLost()))
        self.first.dataReceived(b"late")
        self.assertEqual(self.secondTransport.value(), b"")
        self.assertFalse(self.first._pending)

    def test_pauseAtRegistrationKept(self):
        """
        When the late side's transport is already full once the early data is
        written to it, it pauses the early side; connecting must not then
        resume the early side behind its back.
        """
        self.secondTransport.sendLimit = 4
        self.connectFirst()
        self.first.dataReceived(b"more than four bytes")
        self.connectSecond()
        self.assertEqual(self.secondTransport.value(), b"more than four bytes")
        self.assertEqual(self.firstTransport.producerState, "paused")


class HalfCloseTests(SpliceTestCase):
    """
    End of stream on one side becomes a half-close of the other.
    """

    def test_readEndHalfClosesPeer(self):
        """
        The first side's end of stream half-closes the second side's
        transport; nothing is closed, and the other direction still flows.
        """
        self.connectBoth()
        self.first.readConnectionLost()
        self.assertEqual(self.secondTransport.calls, ["loseWriteConnection"])
        self.assertEqual(self.firstTransport.calls, [])
        self.second.dataReceived(b"still here")
        self.assertEqual(self.firstTransport.value(), b"still here")

    def test_otherDirection(self):
        """
        The second side's end of stream half-closes the first's transport.
        """
        self.connectBoth()
        self.second.readConnectionLost()
        self.assertEqual(self.firstTransport.calls, ["loseWriteConnection"])
        self.assertEqual(self.secondTransport.calls, [])

    def test_readEndBeforePeerConnects(self):
        """
        An end of stream on the early side, before the peer connects, is
        passed on (after the buffered data) when the peer connects.
        """
        self.connectFirst()
        self.first.dataReceived(b"bye")
        self.first.readConnectionLost()
        self.assertEqual(self.firstTransport.calls, [])
        self.connectSecond()
        self.assertEqual(self.secondTransport.value(), b"bye")
        self.assertEqual(self.secondTransport.calls, ["loseWriteConnection"])

    def test_noHalfCloseSupport(self):
        """
        A peer transport that cannot half-close is closed instead.
        """
        self.secondTransport = NoHalfCloseTransport()
        self.connectBoth()
        self.first.readConnectionLost()
        self.assertEqual(self.secondTransport.calls, ["loseConnection"])

    def test_bothDirectionsDone(self):
        """
        When both sides' streams ended, both transports are closed.
        """
        self.connectBoth()
        self.first.readConnectionLost()
        self.assertNotIn("loseConnection", self.firstTransport.calls)
        self.second.readConnectionLost()
        self.assertIn("loseConnection", self.firstTransport.calls)
        self.assertIn("loseConnection", self.secondTransport.calls)
        self.assertNotIn("abortConnection", self.firstTransport.calls)
        self.assertNotIn("abortConnection", self.secondTransport.calls)

    def test_writeConnectionLostAlone(self):
        """
        The peer acknowledging our half-close does not close anything while
        data still comes the other way.
        """
        self.connectBoth()
        self.first.readConnectionLost()
        self.second.writeConnectionLost()
        self.assertNotIn("loseConnection", self.firstTransport.calls)
        self.assertNotIn("loseConnection", self.secondTransport.calls)


class CloseTests(SpliceTestCase):
    """
    The end of one side's connection.
    """

    def test_abortPropagates(self):
        """
        A side whose connection is lost uncleanly aborts its peer's, and the
        peer's transport no longer has it as producer.
        """
        self.connectBoth()
        self.first.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.secondTransport.calls, ["abortConnection"])
        self.assertIsNone(self.secondTransport.producer)
        self.assertTrue(self.first.lost)

    def test_abortOtherDirection(self):
        """
        The same from the second side.
        """
        self.connectBoth()
        self.second.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.firstTransport.calls, ["abortConnection"])

    def test_abortWithoutAbortConnection(self):
        """
        A peer transport without C{abortConnection} is closed.
        """
        self.secondTransport = NoAbortTransport()
        self.connectBoth()
        self.first.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.secondTransport.calls, ["loseConnection"])

    def test_cleanCloseAfterEndOfStream(self):
        """
        A clean close after the side's end of stream lets the peer finish:
        it is half-closed and closed gracefully, never aborted.
        """
        self.connectBoth()
        self.first.readConnectionLost()
        self.first.connectionLost(Failure(ConnectionDone()))
        self.assertIn("loseConnection", self.secondTransport.calls)
        self.assertNotIn("abortConnection", self.secondTransport.calls)

    def test_closeOnceLost(self):
        """
        After both sides are lost, a late event on one of them touches
        nothing.
        """
        self.connectBoth()
        self.first.connectionLost(Failure(ConnectionLost()))
        self.second.connectionLost(Failure(ConnectionLost()))
        del self.firstTransport.calls[:]
        self.second.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.firstTransport.calls, [])

    def test_lostBeforePeerConnects(self):
        """
        An early side lost before its peer connects does not fail on the
        missing transport.
        """
        self.connectFirst()
        self.first.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(self.first.lost)
        self.assertEqual(self.secondTransport.calls, [])
