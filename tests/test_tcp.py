"""
Tests for L{gvtwisted.stack.tcp.TCPConnection}, in the style of smoltcp's socket
tests: build a connection already in a given state, feed it one segment (or one
call, or one timer), assert the exact segments it emits and its new state.

Both initial sequence numbers sit just below 2**32, so nearly every test also
crosses the wrap-around of the sequence space.

The guest in most tests offers only an MSS option (1460), so windows are not
scaled and segments carry no options; the tests of option negotiation offer the
rest.
"""

import socket

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.internet import error, interfaces
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack import tcp as stack
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.iface import LinkInterface
from gvtwisted.stack.tcp import TCPConnection, resetForSegment
from gvtwisted.wire import tcp as wire
from gvtwisted.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    buildSegment,
    parseSegment,
    verifyChecksum,
)

LOCAL = ("192.168.127.1", 80)
REMOTE = ("192.168.127.2", 40000)
LOCAL_IP = socket.inet_aton(LOCAL[0])
REMOTE_IP = socket.inet_aton(REMOTE[0])
MASK = 0xFFFFFFFF
ISS = 0xFFFFFF00
IRS = 0xFFFFFFF0
BUFFER = 32768
SEND_BUFFER = 16384
MSS = 1460


def L(n=0):
    """
    Our sequence number after the SYN and C{n} bytes, on the wire.
    """
    return (ISS + 1 + n) & MASK


def P(n=0):
    """
    The peer's sequence number after its SYN and C{n} bytes, on the wire.
    """
    return (IRS + 1 + n) & MASK


def S(flags, seq, ack=0, window=0, payload=b""):
    """
    An expected segment: the fields the tests compare.
    """
    return (flags, seq & MASK, ack & MASK, window, payload)


class Recorder(Protocol):
    """
    Records everything the transport tells it. Not half-closeable.
    """

    def __init__(self):
        self.made = 0
        self.data = []
        self.reasons = []
        self.readLost = 0
        self.writeLost = 0

    def connectionMade(self):
        self.made += 1

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.reasons.append(reason)

    def received(self):
        return b"".join(self.data)


@implementer(interfaces.IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """
    A half-closeable L{Recorder}.
    """

    def readConnectionLost(self):
        self.readLost += 1

    def writeConnectionLost(self):
        self.writeLost += 1


@implementer(interfaces.IPushProducer)
class StreamingProducer:
    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


@implementer(interfaces.IPullProducer)
class PullProducer:
    """
    Writes C{chunk} to the consumer on each C{resumeProducing}, C{count} times.
    """

    def __init__(self, consumer, chunk, count):
        self.consumer = consumer
        self.chunk = chunk
        self.count = count
        self.calls = 0
        self.stopped = False

    def resumeProducing(self):
        self.calls += 1
        if self.count:
            self.count -= 1
            self.consumer.write(self.chunk)

    def stopProducing(self):
        self.stopped = True


class TCPTestCase(SynchronousTestCase):
    """
    Helpers: a connection on a L{Clock} whose segments are recorded, and
    builders that bring it to each state.
    """

    halfCloseable = True

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters()
        self.raw = []
        self.closed = []
        self.failed = []
        self.protocol = HalfCloseRecorder() if self.halfCloseable else Recorder()
        self.conn = self.makeConnection()

    def makeConnection(self, **kwargs):
        conn = TCPConnection(
            self.clock,
            LOCAL,
            REMOTE,
            self.raw.append,
            mss=MSS,
            onClose=self.closed.append,
            counters=self.counters,
            receiveBufferSize=kwargs.pop("receiveBufferSize", BUFFER),
            sendBufferSize=kwargs.pop("sendBufferSize", SEND_BUFFER),
            iss=ISS,
            **kwargs,
        )
        conn.setProtocol(self.protocol)
        conn.onConnectFailed = self.failed.append
        return conn

    def feed(self, flags, seq, ack=0, window=BUFFER, payload=b"", options=b""):
        """
        Build a segment from the peer, parse it as the network would and give it
        to the connection.
        """
        segment = buildSegment(
            REMOTE_IP,
            LOCAL_IP,
            REMOTE[1],
            LOCAL[1],
            seq,
            ack,
            flags,
            window,
            options,
            payload,
        )
        self.conn.segmentReceived(parseSegment(memoryview(segment)))

    def sentSegments(self):
        """
        The segments emitted since the last call, parsed, after checking each
        checksum.
        """
        out = []
        for raw in self.raw:
            self.assertTrue(verifyChecksum(LOCAL_IP, REMOTE_IP, raw))
            out.append(parseSegment(raw))
        del self.raw[:]
        return out

    def sent(self):
        """
        The emitted segments as L{S} tuples.
        """
        return [
            (s.flags, s.seq, s.ack, s.window, bytes(s.payload))
            for s in self.sentSegments()
        ]

    def assertSent(self, *expected):
        self.assertEqual(self.sent(), list(expected))

    def assertState(self, state):
        self.assertEqual(self.conn.state, state)

    # Builders, each from the previous.

    def toSynPending(self, options=None):
        if options is None:
            options = wire.mssOption(1460)
        segment = buildSegment(
            REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS, 0, SYN, 65535, options
        )
        self.conn.receiveSyn(parseSegment(segment))
        self.assertState("SYN_PENDING")

    def toSynReceived(self, options=None):
        self.toSynPending(options)
        self.conn.acceptSyn()
        self.sent()
        self.assertState("SYN_RCVD")

    def toEstablished(self, options=None):
        self.toSynReceived(options)
        self.feed(ACK, P(), L())
        self.assertState("ESTABLISHED")
        self.assertEqual(self.sent(), [])

    def toFinWait1(self):
        """
        Established, then the protocol closed fully; our FIN is out, unacked.
        """
        self.toEstablished()
        self.conn.loseConnection()
        self.clock.advance(0)
        self.assertSent(S(FIN | ACK, L(), P(), BUFFER))
        self.assertState("FIN_WAIT_1")

    def toFinWait2(self):
        self.toFinWait1()
        self.feed(ACK, P(), L(1))
        self.assertState("FIN_WAIT_2")
        self.assertEqual(self.sent(), [])

    def toCloseWait(self):
        self.toEstablished()
        self.feed(FIN | ACK, P(), L())
        self.assertState("CLOSE_WAIT")
        # Its ACK waits for a FIN of ours to ride on, then goes alone. The FIN
        # took one sequence number of the window, whose right edge does not
        # move by less than an MSS.
        self.assertSent()
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertSent(S(ACK, L(), P(1), BUFFER - 1))

    def toLastAck(self):
        self.toCloseWait()
        self.conn.loseConnection()
        self.clock.advance(0)
        self.assertSent(S(FIN | ACK, L(), P(1), BUFFER - 1))
        self.assertState("LAST_ACK")

    def toClosing(self):
        self.toFinWait1()
        self.feed(FIN | ACK, P(), L())
        self.assertSent(S(ACK, L(1), P(1), BUFFER - 1))
        self.assertState("CLOSING")

    def toTimeWait(self):
        self.toFinWait2()
        self.feed(FIN | ACK, P(), L(1))
        self.assertSent(S(ACK, L(1), P(1), BUFFER - 1))
        self.assertState("TIME_WAIT")

    def toSynSent(self):
        self.conn.connect()
        self.sent()
        self.assertState("SYN_SENT")

    def assertLost(self, exceptionType):
        self.assertEqual(len(self.protocol.reasons), 1)
        self.assertTrue(
            self.protocol.reasons[0].check(exceptionType),
            self.protocol.reasons[0],
        )

    def assertClosedOnce(self):
        self.assertState("CLOSED")
        self.assertEqual(self.closed, [self.conn])


class ListenTests(TCPTestCase):
    def test_listenSyn(self):
        """
        A guest's SYN is recorded and not answered: the NAT dials first.
        """
        self.toSynPending()
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.conn.irs, IRS)

    def test_listenSynViaSegmentReceived(self):
        """
        A SYN given to C{segmentReceived} in LISTEN is taken as L{receiveSyn}.
        """
        self.feed(SYN, IRS, options=wire.mssOption(1460))
        self.assertState("SYN_PENDING")
        self.assertEqual(self.sent(), [])

    def test_listenAck(self):
        """
        A segment without SYN in LISTEN is ignored (the network answers those with
        a RST).
        """
        self.feed(ACK, P(), L())
        self.assertState("LISTEN")
        self.assertEqual(self.sent(), [])

    def test_listenSynAck(self):
        """
        L{receiveSyn} ignores a SYN that also carries ACK.
        """
        segment = buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS, 5, SYN | ACK, 0)
        self.conn.receiveSyn(parseSegment(segment))
        self.assertState("LISTEN")


class SynPendingTests(TCPTestCase):
    def test_synPendingSyn(self):
        """
        The guest retransmits its SYN while the NAT dials: absorbed, nothing sent.
        """
        self.toSynPending()
        self.toSynPending()
        self.feed(SYN, IRS, options=wire.mssOption(1460))
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.counters.get("tcp.synRetransmitAbsorbed"), 2)

    def test_synPendingAccept(self):
        """
        L{acceptSyn} sends SYN-ACK with our ISN, the peer's ISN + 1, an unscaled
        window and our MSS; nothing the peer did not offer.
        """
        self.toSynPending()
        self.conn.acceptSyn()
        [synAck] = self.sentSegments()
        self.assertEqual(
            (synAck.flags, synAck.seq, synAck.ack, synAck.window),
            (SYN | ACK, ISS, P(), BUFFER),
        )
        self.assertEqual(synAck.mss, MSS)
        self.assertIsNone(synAck.wscale)
        self.assertFalse(synAck.sackPermitted)
        self.assertIsNone(synAck.tsVal)
        self.assertState("SYN_RCVD")

    def test_synPendingRefuse(self):
        """
        L{refuse} answers RST|ACK acknowledging the SYN, as a closed port does, and
        closes.
        """
        self.toSynPending()
        self.conn.refuse()
        self.assertSent(S(RST | ACK, 0, P(), 0))
        self.assertClosedOnce()
        self.assertEqual(self.failed, [])
        self.conn.acceptSyn()
        self.assertEqual(self.sent(), [])

    def test_synPendingRst(self):
        """
        The guest resets while the NAT dials: closed, the owner told through
        C{onConnectFailed}, and a late L{acceptSyn} sends nothing.
        """
        self.toSynPending()
        self.feed(RST, P())
        self.assertClosedOnce()
        self.assertEqual(len(self.failed), 1)
        self.failed[0].trap(error.ConnectionLost)
        self.conn.acceptSyn()
        self.assertEqual(self.sent(), [])

    def test_synPendingRstWrongSeq(self):
        """
        A RST whose sequence number is not the expected one is ignored.
        """
        self.toSynPending()
        self.feed(RST, P(100))
        self.assertState("SYN_PENDING")

    def test_synPendingNewIsn(self):
        """
        A SYN with another ISN (the guest restarted) replaces the recorded one.
        """
        self.toSynPending()
        segment = buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], 7, 0, SYN, 100)
        self.conn.receiveSyn(parseSegment(segment))
        self.conn.acceptSyn()
        [synAck] = self.sentSegments()
        self.assertEqual(synAck.ack, 8)

    def test_synPendingAcceptWithOptions(self):
        """
        A guest offering window scaling, SACK and timestamps gets them all back:
        our shift for the receive buffer, SACK-permitted, and its timestamp
        echoed; the SYN-ACK's window is never scaled.
        """
        options = (
            wire.mssOption(1400)
            + wire.sackPermittedOption()
            + wire.timestampOption(5000, 0)
            + wire.windowScaleOption(7)
        )
        self.conn = self.makeConnection(receiveBufferSize=1 << 20)
        self.toSynPending(options)
        self.conn.acceptSyn()
        [synAck] = self.sentSegments()
        self.assertEqual(synAck.window, 65535)
        self.assertEqual(synAck.wscale, 5)
        self.assertTrue(synAck.sackPermitted)
        self.assertEqual(synAck.tsEcr, 5000)
        self.assertEqual(synAck.mss, MSS)


class SynReceivedTests(TCPTestCase):
    def test_synReceivedAck(self):
        """
        The ACK of our SYN-ACK establishes the connection and connects the
        protocol, which sees a transport with the right addresses.
        """
        self.toSynReceived()
        self.assertEqual(self.protocol.made, 0)
        self.feed(ACK, P(), L())
        self.assertState("ESTABLISHED")
        self.assertEqual(self.protocol.made, 1)
        self.assertIs(self.protocol.transport, self.conn)
        self.assertEqual(self.sent(), [])

    def test_synReceivedAckWithData(self):
        """
        Data on the ACK that completes the handshake is delivered after
        C{connectionMade}, and acknowledged after the delayed-ACK wait (it is
        short).
        """
        self.toSynReceived()
        self.feed(ACK | PSH, P(), L(), payload=b"hello")
        self.assertEqual(self.protocol.made, 1)
        self.assertEqual(self.protocol.received(), b"hello")
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        self.clock.advance(self.conn.delayedAckTimeout)
        # The window's right edge stays put until it can move by an MSS.
        self.assertSent(S(ACK, L(), P(5), BUFFER - 5))

    def test_synReceivedAckProtocolCloses(self):
        """
        A protocol that writes and closes in C{connectionMade} gets its data and
        FIN out in one segment at the end of the turn.
        """
        self.toSynReceived()
        self.protocol.connectionMade = lambda: (
            self.conn.write(b"banner"),
            self.conn.loseConnection(),
        )
        self.feed(ACK, P(), L())
        self.assertState("FIN_WAIT_1")
        self.clock.advance(0)
        self.assertSent(S(FIN | PSH | ACK, L(), P(), BUFFER, b"banner"))

    def test_synReceivedBadAck(self):
        """
        An ACK of something other than our SYN gets a RST carrying that ACK
        number as its sequence number, and changes nothing.
        """
        self.toSynReceived()
        self.feed(ACK, P(), L(5))
        self.assertSent(S(RST, L(5)))
        self.assertState("SYN_RCVD")

    def test_synReceivedSyn(self):
        """
        The guest's SYN again: our SYN-ACK was lost, send it again.
        """
        self.toSynReceived()
        self.conn.receiveSyn(
            parseSegment(
                buildSegment(
                    REMOTE_IP,
                    LOCAL_IP,
                    REMOTE[1],
                    LOCAL[1],
                    IRS,
                    0,
                    SYN,
                    65535,
                    wire.mssOption(1460),
                )
            )
        )
        [synAck] = self.sentSegments()
        self.assertEqual((synAck.flags, synAck.seq, synAck.ack), (SYN | ACK, ISS, P()))

    def test_synReceivedRst(self):
        """
        A RST before the handshake completes: closed, the owner told the guest
        refused, the protocol never connected.
        """
        self.toSynReceived()
        self.feed(RST, P())
        self.assertClosedOnce()
        self.assertEqual(len(self.failed), 1)
        self.failed[0].trap(error.ConnectionRefusedError)
        self.assertEqual(self.protocol.made, 0)

    def test_synReceivedTimeout(self):
        """
        Unanswered SYN-ACKs are sent again after 1, 2, 4, 8 and 16 seconds; 32
        seconds after the fifth the handshake fails with a timeout.
        """
        self.toSynReceived()
        times = []
        for _ in range(5):
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            [synAck] = self.sentSegments()
            self.assertEqual(synAck.flags, SYN | ACK)
            times.append(self.clock.seconds())
        self.assertEqual(times, [1.0, 3.0, 7.0, 15.0, 31.0])
        self.clock.advance(31.9)
        self.assertState("SYN_RCVD")
        self.clock.advance(0.1)
        self.assertEqual(self.sent(), [])
        self.assertClosedOnce()
        self.failed[0].trap(error.TCPTimedOutError)


class SynSentTests(TCPTestCase):
    def test_synSentConnect(self):
        """
        L{connect} sends a SYN offering MSS, window scaling, SACK and timestamps.
        """
        self.conn.connect()
        [syn] = self.sentSegments()
        self.assertEqual((syn.flags, syn.seq, syn.window), (SYN, ISS, BUFFER))
        self.assertEqual(syn.mss, MSS)
        self.assertEqual(syn.wscale, 0)
        self.assertTrue(syn.sackPermitted)
        self.assertIsNotNone(syn.tsVal)
        self.assertState("SYN_SENT")
        self.assertRaises(RuntimeError, self.conn.connect)

    def test_synSentSynAck(self):
        """
        The SYN-ACK is acknowledged and the protocol connected; without the
        peer's options, none is used.
        """
        self.toSynSent()
        self.feed(SYN | ACK, IRS, L(), window=1000, options=wire.mssOption(1000))
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.assertState("ESTABLISHED")
        self.assertEqual(self.protocol.made, 1)
        self.conn.write(b"x" * 2500)
        self.clock.advance(0)
        # The peer's MSS and unscaled window limit what we send.
        self.assertSent(S(ACK, L(), P(), BUFFER, b"x" * 1000))

    def test_synSentSynAckWithOptions(self):
        """
        A SYN-ACK with window scale and timestamps switches both on: our ACK
        echoes its timestamp and scales our window, its window is taken
        unscaled, and later windows scaled.
        """
        self.conn = self.makeConnection(receiveBufferSize=1 << 20)
        self.toSynSent()
        options = (
            wire.mssOption(1460)
            + wire.windowScaleOption(2)
            + wire.timestampOption(777, 0)
        )
        self.feed(SYN | ACK, IRS, L(), window=3000, options=options)
        [ack] = self.sentSegments()
        self.assertEqual(ack.window, (1 << 20) >> 5)
        self.assertEqual(ack.tsEcr, 777)
        self.assertEqual(self.conn._sndWnd, 3000)
        self.feed(ACK, P(), L(), window=3000, options=wire.timestampOption(778, 0))
        self.assertEqual(self.conn._sndWnd, 12000)

    def test_synSentRst(self):
        """
        RST|ACK acknowledging our SYN: refused; the owner is told, the connection
        closed.
        """
        self.toSynSent()
        self.feed(RST | ACK, 0, L())
        self.assertClosedOnce()
        self.assertEqual(len(self.failed), 1)
        self.failed[0].trap(error.ConnectionRefusedError)
        self.assertEqual(self.sent(), [])

    def test_synSentRstBadAck(self):
        """
        A RST whose ACK does not cover our SYN is not for us: ignored.
        """
        self.toSynSent()
        self.feed(RST | ACK, 0, L(7))
        self.assertState("SYN_SENT")
        self.feed(RST, 0)
        self.assertState("SYN_SENT")
        self.assertEqual(self.failed, [])

    def test_synSentBadAck(self):
        """
        A SYN-ACK acknowledging something else gets a RST with that number.
        """
        self.toSynSent()
        self.feed(SYN | ACK, IRS, L(9))
        self.assertSent(S(RST, L(9)))
        self.assertState("SYN_SENT")

    def test_synSentSyn(self):
        """
        A bare SYN crossing ours (simultaneous open): SYN-ACK, state SYN_RCVD.
        """
        self.toSynSent()
        self.feed(SYN, IRS, options=wire.mssOption(1460))
        [synAck] = self.sentSegments()
        self.assertEqual((synAck.flags, synAck.seq, synAck.ack), (SYN | ACK, ISS, P()))
        self.assertState("SYN_RCVD")
        self.feed(ACK, P(), L())
        self.assertState("ESTABLISHED")

    def test_synSentTimeout(self):
        """
        The SYN is sent again after 1, 2, 4, 8 and 16 seconds, then the attempt
        fails with a timeout.
        """
        self.toSynSent()
        times = []
        while self.conn.state == "SYN_SENT":
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            for syn in self.sentSegments():
                self.assertEqual((syn.flags, syn.seq), (SYN, ISS))
                times.append(self.clock.seconds())
        self.assertEqual(times, [1.0, 3.0, 7.0, 15.0, 31.0])
        self.assertEqual(self.clock.seconds(), 63.0)
        self.assertClosedOnce()
        self.failed[0].trap(error.TCPTimedOutError)


class EstablishedTests(TCPTestCase):
    def setUp(self):
        super().setUp()
        self.toEstablished()

    def test_establishedData(self):
        """
        Data in order is delivered at once; the ACK of a lone short segment
        waits C{delayedAckTimeout} for data to ride on, and goes alone then.
        """
        self.feed(ACK | PSH, P(), L(), payload=b"abc")
        self.assertEqual(self.protocol.received(), b"abc")
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        self.assertEqual(self.sent(), [])
        self.clock.advance(self.conn.delayedAckTimeout * 0.9)
        self.assertEqual(self.sent(), [])
        self.clock.advance(self.conn.delayedAckTimeout * 0.1)
        self.assertSent(S(ACK, L(), P(3), BUFFER - 3))

    def test_establishedDelayedAckRidesOnReply(self):
        """
        A reply written within the delay carries the ACK: one segment, no pure
        ACK before or after it.
        """
        self.feed(ACK | PSH, P(), L(), payload=b"ping")
        self.clock.advance(0)
        self.assertEqual(self.sent(), [])
        self.clock.advance(self.conn.delayedAckTimeout / 2)
        self.conn.write(b"pong")
        self.clock.advance(0)
        self.assertSent(S(ACK | PSH, L(), P(4), BUFFER - 4, b"pong"))
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertEqual(self.sent(), [])

    def test_establishedPingPongNoPureAck(self):
        """
        In a ping-pong whose replies come within the delay, the timer armed
        for one request does not fire a pure ACK for a later one ahead of its
        reply: each request gets a delay of its own, and an unanswered one is
        acknowledged alone within about two delays.
        """
        delay = self.conn.delayedAckTimeout
        for i in range(6):
            self.feed(ACK | PSH, P(i), L(i), payload=b"q")
            self.clock.advance(delay * 0.3)
            self.assertEqual(self.sent(), [], i)
            self.conn.write(b"r")
            self.clock.advance(0)
            self.assertSent(S(ACK | PSH, L(i), P(i + 1), BUFFER - i - 1, b"r"))
            self.clock.advance(delay * 0.05)
        self.feed(ACK | PSH, P(6), L(6), payload=b"q")
        self.clock.advance(delay * 0.9)
        self.assertSent()
        # In small steps, as a reactor runs its timers on time.
        for _ in range(12):
            self.clock.advance(delay * 0.1)
        self.assertSent(S(ACK, L(6), P(7), BUFFER - 7))

    def test_establishedReplyInTurnNoDelay(self):
        """
        A reply written in the same turn as the request leaves at the end of
        the turn with the ACK on it, as before the delay existed.
        """
        self.protocol.dataReceived = lambda data: self.conn.write(data.upper())
        self.feed(ACK | PSH, P(), L(), payload=b"abc")
        self.clock.advance(0)
        self.assertSent(S(ACK | PSH, L(), P(3), BUFFER - 3, b"ABC"))

    def test_establishedSecondSmallSegmentAckedAtTurnEnd(self):
        """
        A second segment while an ACK is held: two are owed, the ACK goes at
        the end of that turn.
        """
        self.feed(ACK | PSH, P(), L(), payload=b"a")
        self.clock.advance(0)
        self.feed(ACK | PSH, P(1), L(), payload=b"b")
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(2), BUFFER - 2))
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertEqual(self.sent(), [])

    def test_establishedHalfMssSegmentAckedAtTurnEnd(self):
        """
        A lone segment above half the MSS (a bulk sender's segment that lost
        its timestamps' worth, or a sender's last one) is acknowledged at the
        end of the turn: a sender limited by its window must not wait.
        """
        self.feed(ACK, P(), L(), payload=b"a" * (self.conn.mss // 2 + 1))
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(self.conn.mss // 2 + 1), BUFFER - (self.conn.mss // 2 + 1)))

    def test_establishedFullSegmentAckedAtTurnEnd(self):
        """
        A full-sized segment is acknowledged at the end of the turn, not
        delayed: only short segments wait.
        """
        self.feed(ACK, P(), L(), payload=b"a" * 1460)
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(1460), BUFFER))

    def test_establishedDelayedAckOff(self):
        """
        With C{delayedAckTimeout} 0, a short segment is acknowledged at the
        end of the turn.
        """
        self.patch(type(self.conn), "delayedAckTimeout", 0)
        self.feed(ACK | PSH, P(), L(), payload=b"abc")
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(3), BUFFER - 3))

    def test_establishedDelayedAckCancelledOnAbort(self):
        """
        A connection aborted while an ACK is held leaves no call behind and
        sends nothing more.
        """
        self.feed(ACK | PSH, P(), L(), payload=b"abc")
        self.clock.advance(0)
        self.conn.abortConnection()
        self.sent()
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if c.func == self.conn._delayedAckFired],
            [],
        )
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertEqual(self.sent(), [])

    def test_establishedSegmentsAckedOncePerTurn(self):
        """
        With stretch ACKs (the default), segments that arrive in one reactor
        turn are acknowledged once, at the end of the turn, with a window whose
        right edge moved.
        """
        for i in range(3):
            self.feed(ACK, P(1460 * i), L(), payload=b"a" * 1460)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(3 * 1460), BUFFER))

    def test_establishedSecondSegmentAckedNow(self):
        """
        Without stretch ACKs, the second segment in a row is acknowledged at
        once (RFC 5681's ACK for every second full-sized segment).
        """
        self.patch(TCPConnection, "stretchAcks", False)
        self.feed(ACK, P(), L(), payload=b"a" * 1460)
        self.assertEqual(self.sent(), [])
        self.feed(ACK, P(1460), L(), payload=b"b" * 1460)
        self.assertSent(S(ACK, L(), P(2920), BUFFER))

    def test_establishedAckRidesOnData(self):
        """
        A reply written during C{dataReceived} carries the ACK; no separate pure
        ACK is sent.
        """
        self.protocol.dataReceived = lambda data: self.conn.write(data.upper())
        self.feed(ACK | PSH, P(), L(), payload=b"ping")
        self.clock.advance(0)
        self.assertSent(S(ACK | PSH, L(), P(4), BUFFER - 4, b"PING"))

    def test_establishedWrite(self):
        """
        Writes are coalesced until the end of the turn and cut into MSS-sized
        segments; PSH marks the last.
        """
        self.conn.write(b"a" * 2000)
        self.conn.writeSequence([b"b" * 1000, b"c" * 1000])
        self.assertEqual(self.sent(), [])
        self.clock.advance(0)
        data = b"a" * 2000 + b"b" * 1000 + b"c" * 1000
        self.assertSent(
            S(ACK, L(), P(), BUFFER, data[:1460]),
            S(ACK, L(1460), P(), BUFFER, data[1460:2920]),
            S(ACK | PSH, L(2920), P(), BUFFER, data[2920:]),
        )

    def test_establishedWriteStr(self):
        """
        Text is refused, as by Twisted's transports.
        """
        self.assertRaises(TypeError, self.conn.write, "text")
        self.assertRaises(TypeError, self.conn.writeSequence, [b"ok", "text"])

    def test_establishedAck(self):
        """
        An ACK of our data frees it and stops the retransmission timer.
        """
        self.conn.write(b"x" * 100)
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(100))
        self.assertEqual(len(self.conn._sndBuf), 0)
        self.clock.advance(100)
        self.assertEqual(self.sent(), [])

    def test_establishedAckOfUnsent(self):
        """
        An ACK of data never sent gets an ACK back, and the segment (with its
        data) is dropped.
        """
        self.feed(ACK, P(), L(50), payload=b"zzz")
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.assertEqual(self.protocol.data, [])

    def test_establishedFin(self):
        """
        The peer's FIN: a half-closeable protocol gets C{readConnectionLost}
        at once and may still write; the FIN's acknowledgement waits up to
        C{delayedAckTimeout} for something of ours to ride on (here, data).
        """
        self.feed(FIN | ACK, P(), L())
        self.assertState("CLOSE_WAIT")
        self.assertEqual(self.protocol.readLost, 1)
        self.assertEqual(self.protocol.reasons, [])
        self.assertSent()
        self.clock.advance(self.conn.delayedAckTimeout / 2)
        self.assertSent()
        self.conn.write(b"reply")
        self.clock.advance(0)
        self.assertSent(S(ACK | PSH, L(), P(1), BUFFER - 1, b"reply"))
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertSent()

    def test_establishedFinAckAlone(self):
        """
        With nothing of ours to send within C{delayedAckTimeout}, the FIN is
        acknowledged alone then.
        """
        self.feed(FIN | ACK, P(), L())
        self.clock.advance(self.conn.delayedAckTimeout * 0.9)
        self.assertSent()
        self.clock.advance(self.conn.delayedAckTimeout * 0.1)
        self.assertSent(S(ACK, L(), P(1), BUFFER - 1))

    def test_establishedFinThenClose(self):
        """
        A close within C{delayedAckTimeout} of the peer's FIN (a NAT'd host
        closing in turn) sends one segment, our FIN, carrying the ACK.
        """
        self.feed(FIN | ACK, P(), L())
        self.clock.advance(self.conn.delayedAckTimeout / 2)
        self.conn.loseConnection()
        self.clock.advance(0)
        self.assertSent(S(FIN | ACK, L(), P(1), BUFFER - 1))
        self.assertState("LAST_ACK")
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertSent()

    def test_establishedFinAckNowWithoutDelay(self):
        """
        With C{delayedAckTimeout} 0 the FIN is acknowledged in the turn.
        """
        self.patch(type(self.conn), "delayedAckTimeout", 0)
        self.feed(FIN | ACK, P(), L())
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(1), BUFFER - 1))

    def test_establishedFinWithData(self):
        """
        Data and FIN in one segment: the data first, then the end; one ACK
        covers both.
        """
        self.feed(FIN | ACK | PSH, P(), L(), payload=b"last")
        self.assertEqual(self.protocol.received(), b"last")
        self.assertEqual(self.protocol.readLost, 1)
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertSent(S(ACK, L(), P(5), BUFFER - 5))

    def test_establishedFinOutOfOrder(self):
        """
        A FIN that arrives before the data in front of it waits for that data.
        """
        self.feed(FIN | ACK, P(3), L())
        self.assertState("ESTABLISHED")
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.feed(ACK, P(), L(), payload=b"abc")
        self.assertState("CLOSE_WAIT")
        self.assertEqual(self.protocol.received(), b"abc")
        self.assertSent(S(ACK, L(), P(4), BUFFER - 4))

    def test_establishedClose(self):
        """
        L{loseConnection} sends the buffered data, then the FIN on the last
        segment; state FIN_WAIT_1; later writes are ignored.
        """
        self.conn.write(b"bye")
        self.conn.loseConnection()
        self.conn.write(b"ignored")
        self.assertState("FIN_WAIT_1")
        self.clock.advance(0)
        self.assertSent(S(FIN | PSH | ACK, L(), P(), BUFFER, b"bye"))

    def test_establishedRst(self):
        """
        A RST at exactly the expected sequence number resets the connection:
        C{ConnectionLost}, closed once.
        """
        self.feed(RST, P())
        self.assertClosedOnce()
        self.assertLost(error.ConnectionLost)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_establishedRstInWindow(self):
        """
        A RST elsewhere in the window gets a challenge ACK (RFC 5961) and changes
        nothing.
        """
        self.feed(RST, P(10))
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.assertState("ESTABLISHED")
        self.assertEqual(self.counters.get("tcp.challengeAck"), 1)

    def test_establishedRstOutOfWindow(self):
        """
        A RST outside the window is dropped silently.
        """
        self.feed(RST, P(BUFFER + 10))
        self.feed(RST, P(-10))
        self.assertEqual(self.sent(), [])
        self.assertState("ESTABLISHED")

    def test_establishedSyn(self):
        """
        A SYN in a synchronized state gets a challenge ACK (RFC 5961 4.2).
        """
        self.feed(SYN, IRS)
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.assertState("ESTABLISHED")

    def test_establishedChallengeAckRateLimit(self):
        """
        ACKs answering stray segments without data go out at most once per
        half second; answers to stray data always go.
        """
        self.feed(RST, P(10))
        self.feed(RST, P(20))
        self.feed(ACK, P(BUFFER + 100), L())
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.feed(ACK, P(-10), L(), payload=b"old")
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.clock.advance(0.5)
        self.feed(RST, P(10))
        self.assertSent(S(ACK, L(), P(), BUFFER))

    def test_establishedOldData(self):
        """
        A retransmission of data already received is answered with an ACK at
        once and not delivered again.
        """
        self.feed(ACK, P(), L(), payload=b"abc")
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(), payload=b"abc")
        self.assertSent(S(ACK, L(), P(3), BUFFER - 3))
        self.assertEqual(self.protocol.received(), b"abc")

    def test_establishedOverlap(self):
        """
        A segment overlapping data already received delivers only its new part.
        """
        self.feed(ACK, P(), L(), payload=b"abc")
        self.feed(ACK, P(1), L(), payload=b"bcdef")
        self.assertEqual(self.protocol.received(), b"abcdef")

    def test_establishedOutOfOrder(self):
        """
        A segment after a hole is kept and answered with an immediate duplicate
        ACK; filling the hole delivers both in order and is acknowledged at once.
        """
        self.feed(ACK, P(3), L(), payload=b"def")
        self.assertEqual(self.protocol.data, [])
        self.assertSent(S(ACK, L(), P(), BUFFER))
        self.feed(ACK, P(), L(), payload=b"abc")
        self.assertEqual(self.protocol.received(), b"abcdef")
        self.assertSent(S(ACK, L(), P(6), BUFFER - 6))

    def test_establishedOutOfOrderOverlapping(self):
        """
        Overlapping out-of-order segments are kept once each byte.
        """
        self.feed(ACK, P(10), L(), payload=b"KLMNO")
        self.feed(ACK, P(8), L(), payload=b"IJKLMNOPQR")
        self.feed(ACK, P(4), L(), payload=b"EF")
        self.feed(ACK, P(), L(), payload=b"ABCDEFGH")
        self.assertEqual(self.protocol.received(), b"ABCDEFGHIJKLMNOPQR")

    def test_establishedOutOfOrderBound(self):
        """
        Past L{TCPConnection.maxOutOfOrderBlocks} separate blocks, the highest
        are dropped (and counted); the data they held comes again later.
        """
        limit = TCPConnection.maxOutOfOrderBlocks
        for i in range(limit + 3):
            self.feed(ACK, P(2 + 2 * i), L(), payload=bytes([65 + i % 26]))
        self.assertEqual(len(self.conn._ooo), limit)
        self.assertEqual(self.counters.get("tcp.outOfOrderDrop"), 3)
        self.assertEqual(self.conn._ooo[-1][0] - self.conn._rcvNxt, 2 * limit)

    def test_establishedBeyondWindow(self):
        """
        Data past the advertised window is cut off and the ACK says so at once.
        """
        self.conn.pauseProducing()
        self.feed(ACK, P(), L(), payload=b"x" * (BUFFER - 10))
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(BUFFER - 10), 10))
        self.feed(ACK, P(BUFFER - 10), L(), payload=b"y" * 30)
        self.assertSent(S(ACK, L(), P(BUFFER), 0))

    def test_establishedAbort(self):
        """
        L{abortConnection} sends RST|ACK at once, closes at once, and tells the
        protocol C{ConnectionAborted} in the next turn (as Twisted does).
        """
        self.conn.write(b"dropped")
        self.conn.abortConnection()
        self.assertSent(S(RST | ACK, L(), P(), BUFFER))
        self.assertClosedOnce()
        self.assertEqual(self.protocol.reasons, [])
        self.clock.advance(0)
        self.assertLost(error.ConnectionAborted)
        self.assertEqual(self.sent(), [])
        self.conn.abortConnection()
        self.assertEqual(self.closed, [self.conn])

    def test_establishedDataReceivedRaises(self):
        """
        A protocol whose C{dataReceived} raises is reset: RST to the peer,
        C{connectionLost} with the error. The network keeps going.
        """

        def explode(data):
            raise ZeroDivisionError()

        self.protocol.dataReceived = explode
        self.feed(ACK, P(), L(), payload=b"boom")
        self.assertSent(S(RST | ACK, L(), P(4), BUFFER - 4))
        self.assertClosedOnce()
        self.assertLost(ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_establishedAbortFromDataReceived(self):
        """
        Aborting from inside C{dataReceived} stops delivery at once.
        """
        self.conn.pauseProducing()
        self.feed(ACK, P(), L(), payload=b"one")
        self.feed(ACK, P(3), L(), payload=b"two")
        self.protocol.dataReceived = lambda data: (
            self.protocol.data.append(data),
            self.conn.abortConnection(),
        )
        self.conn.resumeProducing()
        self.assertEqual(self.protocol.data, [b"one"])
        self.assertClosedOnce()

    def test_establishedAddresses(self):
        """
        C{getHost} and C{getPeer} are TCP IPv4 addresses; the socket options are
        remembered and harmless.
        """
        self.assertEqual(self.conn.getHost(), IPv4Address("TCP", *LOCAL))
        self.assertEqual(self.conn.getPeer(), IPv4Address("TCP", *REMOTE))
        self.conn.setTcpNoDelay(False)
        self.assertFalse(self.conn.getTcpNoDelay())
        self.conn.setTcpKeepAlive(True)
        self.assertTrue(self.conn.getTcpKeepAlive())

    def test_establishedInterfaces(self):
        """
        The connection provides the transport, producer and consumer interfaces.
        """
        self.assertTrue(verifyObject(interfaces.ITCPTransport, self.conn))
        self.assertTrue(verifyObject(interfaces.IPushProducer, self.conn))
        self.assertTrue(verifyObject(interfaces.IConsumer, self.conn))


class NotHalfCloseableTests(TCPTestCase):
    halfCloseable = False

    def test_establishedFin(self):
        """
        Without C{IHalfCloseableProtocol} the peer's FIN means loseConnection:
        pending data and our FIN follow, and the protocol learns
        C{ConnectionDone} when they are acknowledged.
        """
        self.toEstablished()
        self.conn.write(b"tail")
        self.feed(FIN | ACK, P(), L())
        self.assertState("LAST_ACK")
        # The ACK of the peer's FIN rides on our data and FIN.
        self.assertSent(S(FIN | PSH | ACK, L(), P(1), BUFFER - 1, b"tail"))
        self.assertEqual(self.protocol.reasons, [])
        self.feed(ACK, P(1), L(5))
        self.assertClosedOnce()
        self.assertLost(error.ConnectionDone)


class FinWait1Tests(TCPTestCase):
    def test_finWait1Ack(self):
        """
        The ACK of our FIN: FIN_WAIT_2; a full close is done for the protocol
        (everything it wrote arrived) and it is told C{ConnectionDone}.
        """
        self.toFinWait1()
        self.feed(ACK, P(), L(1))
        self.assertState("FIN_WAIT_2")
        self.assertLost(error.ConnectionDone)
        self.assertEqual(self.closed, [])

    def test_finWait1FinAck(self):
        """
        The peer's FIN acknowledging ours: TIME_WAIT at once, FIN acknowledged.
        """
        self.toFinWait1()
        self.feed(FIN | ACK, P(), L(1))
        self.assertSent(S(ACK, L(1), P(1), BUFFER - 1))
        self.assertState("TIME_WAIT")
        self.assertLost(error.ConnectionDone)

    def test_finWait1Fin(self):
        """
        Simultaneous close: the peer's FIN without the ACK of ours leads to
        CLOSING, then its ACK to TIME_WAIT.
        """
        self.toClosing()
        self.feed(ACK, P(1), L(1))
        self.assertState("TIME_WAIT")

    def test_finWait1Data(self):
        """
        After a full close, data from the peer is acknowledged but no longer
        delivered (the protocol stopped reading).
        """
        self.toFinWait1()
        self.feed(ACK, P(), L(), payload=b"late")
        self.assertEqual(self.protocol.data, [])
        self.clock.advance(0)
        self.assertSent(S(ACK, L(1), P(4), BUFFER - 4))

    def test_finWait1FinRetransmitted(self):
        """
        Our FIN, unacknowledged, is retransmitted on the RTO.
        """
        self.toFinWait1()
        self.clock.advance(0.2)
        self.assertSent(S(FIN | ACK, L(), P(), BUFFER))

    def test_finWait1Rst(self):
        """
        A RST in FIN_WAIT_1: reset, the protocol told C{ConnectionLost}.
        """
        self.toFinWait1()
        self.feed(RST, P())
        self.assertClosedOnce()
        self.assertLost(error.ConnectionLost)


class ClosingTests(TCPTestCase):
    def test_closingAck(self):
        """
        The ACK of our FIN in CLOSING: TIME_WAIT, protocol done.
        """
        self.toClosing()
        self.feed(ACK, P(1), L(1))
        self.assertState("TIME_WAIT")
        self.assertLost(error.ConnectionDone)

    def test_closingRst(self):
        """
        A RST in CLOSING with every byte acknowledged but the FIN carries no
        error (RFC 9293 signals none there).
        """
        self.toClosing()
        self.feed(RST, P(1))
        self.assertClosedOnce()
        self.assertLost(error.ConnectionDone)


class FinWait2Tests(TCPTestCase):
    def test_finWait2Fin(self):
        """
        The peer's FIN in FIN_WAIT_2: acknowledged, TIME_WAIT.
        """
        self.toTimeWait()
        self.assertLost(error.ConnectionDone)

    def test_finWait2Timeout(self):
        """
        A fully closed connection waits L{TCPConnection.finWait2Timeout} for the
        peer's FIN, then resets and closes.
        """
        self.toFinWait2()
        self.clock.advance(TCPConnection.finWait2Timeout - 1)
        self.assertState("FIN_WAIT_2")
        self.clock.advance(1)
        self.assertSent(S(RST | ACK, L(1), P(), BUFFER))
        self.assertClosedOnce()

    def test_finWait2HalfClose(self):
        """
        After L{loseWriteConnection} reading goes on: data is delivered, the ACK
        of our FIN brings C{writeConnectionLost}, the peer's FIN
        C{readConnectionLost} and then C{connectionLost}.
        """
        self.toEstablished()
        self.conn.loseWriteConnection()
        self.clock.advance(0)
        self.assertSent(S(FIN | ACK, L(), P(), BUFFER))
        self.feed(ACK, P(), L(1))
        self.assertState("FIN_WAIT_2")
        self.assertEqual(self.protocol.writeLost, 1)
        self.assertEqual(self.protocol.reasons, [])
        self.feed(ACK, P(), L(1), payload=b"more")
        self.assertEqual(self.protocol.received(), b"more")
        self.feed(FIN | ACK, P(4), L(1))
        self.assertEqual(self.protocol.readLost, 1)
        self.assertState("TIME_WAIT")
        self.assertLost(error.ConnectionDone)
        self.clock.advance(TCPConnection.finWait2Timeout)
        self.assertClosedOnce()


class CloseWaitTests(TCPTestCase):
    def test_closeWaitClose(self):
        """
        The protocol closes after the peer's FIN: our FIN goes, LAST_ACK.
        """
        self.toLastAck()

    def test_closeWaitFinAgain(self):
        """
        The peer's FIN retransmitted (our ACK was lost) is acknowledged again,
        at once.
        """
        self.toCloseWait()
        self.feed(FIN | ACK, P(), L())
        self.assertSent(S(ACK, L(), P(1), BUFFER - 1))
        self.assertState("CLOSE_WAIT")


class LastAckTests(TCPTestCase):
    def test_lastAckAck(self):
        """
        The ACK of our last FIN: CLOSED, C{ConnectionDone}, C{onClose} once, no
        timer left behind.
        """
        self.toLastAck()
        self.feed(ACK, P(1), L(1))
        self.assertClosedOnce()
        self.assertLost(error.ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lastAckRst(self):
        """
        A RST while only our FIN is unacknowledged is a clean end.
        """
        self.toLastAck()
        self.feed(RST, P(1))
        self.assertClosedOnce()
        self.assertLost(error.ConnectionDone)

    def test_lastAckRstDataUnacked(self):
        """
        A RST while our data is unacknowledged is a reset: the protocol must not
        believe its data arrived.
        """
        self.toCloseWait()
        self.conn.write(b"unconfirmed")
        self.conn.loseConnection()
        self.clock.advance(0)
        self.sent()
        self.feed(RST, P(1))
        self.assertLost(error.ConnectionLost)


class TimeWaitTests(TCPTestCase):
    def test_timeWaitTimeout(self):
        """
        TIME_WAIT lasts L{TCPConnection.timeWaitDuration}, then CLOSED and
        C{onClose}, once.
        """
        self.toTimeWait()
        self.clock.advance(TCPConnection.timeWaitDuration - 0.01)
        self.assertState("TIME_WAIT")
        self.assertEqual(self.closed, [])
        self.clock.advance(0.01)
        self.assertClosedOnce()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeWaitConfigurable(self):
        """
        The C{timeWait} argument sets the duration.
        """
        self.conn = self.makeConnection(timeWait=0.5)
        self.toTimeWait()
        self.clock.advance(0.5)
        self.assertClosedOnce()

    def test_timeWaitFin(self):
        """
        The peer's FIN again (our ACK was lost): acknowledged again and the wait
        starts over.
        """
        self.toTimeWait()
        self.clock.advance(1.5)
        self.feed(FIN | ACK, P(), L(1))
        self.assertSent(S(ACK, L(1), P(1), BUFFER - 1))
        self.clock.advance(1.5)
        self.assertState("TIME_WAIT")
        self.clock.advance(0.5)
        self.assertClosedOnce()

    def test_timeWaitSyn(self):
        """
        A SYN above the old connection's sequence numbers opens a new
        incarnation (RFC 6191): the old one closes and tells the caller, by
        returning C{True}, to take the SYN as new.
        """
        self.toTimeWait()
        segment = buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], P(5000), 0, SYN, 100)
        self.assertTrue(self.conn.segmentReceived(parseSegment(segment)))
        self.assertClosedOnce()
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.counters.get("tcp.timeWaitReused"), 1)

    def test_timeWaitOldSyn(self):
        """
        A SYN below the old connection's sequence numbers is an old duplicate:
        TIME_WAIT stays, and the SYN gets a challenge ACK.
        """
        self.toTimeWait()
        segment = buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS, 0, SYN, 100)
        self.assertIsNone(self.conn.segmentReceived(parseSegment(segment)))
        self.assertState("TIME_WAIT")
        self.assertSent(S(ACK, L(1), P(1), BUFFER - 1))

    def test_timeWaitRst(self):
        """
        A RST in TIME_WAIT closes at once; the protocol was already told.
        """
        self.toTimeWait()
        self.feed(RST, P(1))
        self.assertClosedOnce()
        self.assertLost(error.ConnectionDone)


class RetransmissionTests(TCPTestCase):
    def setUp(self):
        super().setUp()
        self.toEstablished()

    def advanceToNextCall(self):
        self.clock.advance(
            min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds()
        )

    def test_establishedRtoDoubles(self):
        """
        Unacknowledged data is retransmitted after the RTO (200 ms, the minimum,
        after the handshake's RTT sample of 0), which doubles each time.
        """
        self.conn.write(b"data")
        self.clock.advance(0)
        self.sent()
        times = []
        for _ in range(4):
            self.advanceToNextCall()
            for segment in self.sent():
                self.assertEqual(segment, S(ACK | PSH, L(), P(), BUFFER, b"data"))
                times.append(round(self.clock.seconds(), 6))
        self.assertEqual(times, [0.2, 0.6, 1.4, 3.0])

    def test_establishedKarn(self):
        """
        An ACK after a retransmission gives no RTT sample (Karn): the backed-off
        RTO stays for the next data.
        """
        self.conn.write(b"a")
        self.clock.advance(0)
        self.clock.advance(0.2)
        self.assertEqual(len(self.sent()), 2)
        self.clock.advance(0.1)
        self.feed(ACK, P(), L(1))
        self.conn.write(b"b")
        self.clock.advance(0)
        self.sent()
        self.clock.advance(0.39)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.01)
        self.assertSent(S(ACK | PSH, L(1), P(), BUFFER, b"b"))

    def test_establishedRttSample(self):
        """
        An ACK of data that was not retransmitted updates the RTO (RFC 6298): a
        1 s round trip gives an RTO of 3 s (SRTT + 4 RTTVAR with a first sample).
        """
        self.conn._srtt = None
        self.conn.write(b"a")
        self.clock.advance(0)
        self.conn._rto = 5.0
        self.conn._setTimer("rto", 5.0)
        self.clock.advance(1)
        self.feed(ACK, P(), L(1))
        self.assertEqual(self.conn._rto, 3.0)

    def test_establishedRetransmitGiveUp(self):
        """
        After L{TCPConnection.maxRetries} retransmissions, or two minutes of them,
        the connection is reset and the protocol told C{ConnectionLost}.
        """
        self.conn.write(b"lost")
        self.clock.advance(0)
        self.sent()
        retransmissions = 0
        while self.conn.state == "ESTABLISHED":
            self.advanceToNextCall()
            segments = self.sent()
            retransmissions += sum(1 for s in segments if s[0] & PSH)
        self.assertTrue(0 < retransmissions <= TCPConnection.maxRetries)
        self.assertEqual(self.raw, [])
        self.assertClosedOnce()
        self.assertLost(error.ConnectionLost)
        self.assertLessEqual(self.clock.seconds(), 121 + TCPConnection.maxRto)

    def test_establishedFastRetransmit(self):
        """
        Three duplicate ACKs retransmit the first unacknowledged segment at once,
        before any timer.
        """
        self.conn.write(b"z" * (5 * 1460))
        self.clock.advance(0)
        self.assertEqual(len(self.sent()), 5)
        self.feed(ACK, P(), L(1460))
        self.assertEqual(self.sent(), [])
        for i in range(2):
            self.feed(ACK, P(), L(1460))
            self.assertEqual(self.sent(), [])
        self.feed(ACK, P(), L(1460))
        self.assertSent(S(ACK, L(1460), P(), BUFFER, b"z" * 1460))
        self.assertEqual(self.counters.get("tcp.fastRetransmit"), 1)

    def test_establishedPartialAck(self):
        """
        In fast recovery, an ACK that covers the retransmitted segment but not
        all that was outstanding retransmits the next hole (NewReno).
        """
        self.conn.write(b"z" * (5 * 1460))
        self.clock.advance(0)
        self.sent()
        for _ in range(3):
            self.feed(ACK, P(), L())
        self.assertSent(S(ACK, L(), P(), BUFFER, b"z" * 1460))
        self.feed(ACK, P(), L(2920))
        self.assertSent(S(ACK, L(2920), P(), BUFFER, b"z" * 1460))

    def test_establishedDupAckNeedsOutstandingData(self):
        """
        ACKs that repeat while nothing is outstanding, or that carry data or a new
        window, are not duplicate ACKs.
        """
        for _ in range(4):
            self.feed(ACK, P(), L())
        self.conn.write(b"z" * 3000)
        self.clock.advance(0)
        self.sent()
        for window in (100, 200, 300):
            self.feed(ACK, P(), L(), window=window)
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.counters.get("tcp.fastRetransmit"), 0)

    def test_establishedRtoGoesBackN(self):
        """
        After a timeout the first segment goes alone (the congestion window
        collapses to one segment), and each ACK releases more.
        """
        self.conn.write(b"q" * (3 * 1460))
        self.clock.advance(0)
        self.assertEqual(len(self.sent()), 3)
        self.clock.advance(0.2)
        self.assertSent(S(ACK, L(), P(), BUFFER, b"q" * 1460))
        self.feed(ACK, P(), L(1460))
        self.assertEqual([s[1] for s in self.sent()], [L(1460), L(2920)])


class WindowTests(TCPTestCase):
    def setUp(self):
        super().setUp()
        self.toEstablished()

    def test_establishedZeroWindow(self):
        """
        Nothing is sent into a zero window; probes (a bare ACK one below SND.UNA,
        which draws an ACK without sending data) go after the RTO, backing off;
        when the window opens, data flows.
        """
        self.feed(ACK, P(), L(), window=0)
        self.conn.write(b"wait")
        self.clock.advance(0)
        self.assertEqual(self.sent(), [])
        times = []
        for _ in range(3):
            self.clock.advance(
                min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds()
            )
            self.assertSent(S(ACK, L(-1), P(), BUFFER))
            times.append(round(self.clock.seconds(), 6))
        self.assertEqual(times, [0.2, 0.6, 1.4])
        self.assertEqual(self.counters.get("tcp.zeroWindowProbe"), 3)
        self.feed(ACK, P(), L(), window=100)
        self.assertSent(S(ACK | PSH, L(), P(), BUFFER, b"wait"))

    def test_establishedSmallWindow(self):
        """
        A window too small for a good share of the data waits (sender silly
        window avoidance) until the persist timer forces what fits.
        """
        self.feed(ACK, P(), L(), window=10)
        self.conn.write(b"x" * 1000)
        self.clock.advance(0)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.2)
        self.assertSent(S(ACK, L(), P(), BUFFER, b"x" * 10))

    def test_establishedWindowLimits(self):
        """
        Only as much as the peer's window allows is in flight, and not the 540
        bytes left of it: a peer that once offered 32 KiB will open it more
        (sender silly window avoidance). Its ACK opens room for a full segment.
        """
        self.feed(ACK, P(), L(), window=2000)
        self.conn.write(b"w" * 5000)
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(), BUFFER, b"w" * 1460))
        self.feed(ACK, P(), L(1460), window=2000)
        self.assertSent(S(ACK, L(1460), P(), BUFFER, b"w" * 1460))

    def test_establishedPauseProducing(self):
        """
        A paused protocol gets nothing, but data is still acknowledged into the
        receive buffer and the window shrinks; resuming delivers it all and
        reopens the window with an update.
        """
        self.conn.pauseProducing()
        self.feed(ACK, P(), L(), payload=b"a" * 1460)
        self.feed(ACK, P(1460), L(), payload=b"b" * 1460)
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(2920), BUFFER - 2920))
        self.assertEqual(self.protocol.data, [])
        self.conn.resumeProducing()
        self.assertEqual(self.protocol.received(), b"a" * 1460 + b"b" * 1460)
        self.assertEqual(self.sent(), [])

    def test_establishedPausedToZeroWindow(self):
        """
        Paused long enough, the window reaches zero; data beyond it is dropped
        with an ACK; resuming sends a window update.
        """
        self.conn.pauseProducing()
        self.feed(ACK, P(), L(), payload=b"f" * BUFFER)
        self.clock.advance(0)
        self.assertSent(S(ACK, L(), P(BUFFER), 0))
        self.feed(ACK, P(BUFFER), L(), payload=b"g")
        self.assertSent(S(ACK, L(), P(BUFFER), 0))
        self.feed(ACK, P(BUFFER - 1), L())
        self.assertSent(S(ACK, L(), P(BUFFER), 0))
        self.conn.resumeProducing()
        self.assertEqual(len(self.protocol.received()), BUFFER)
        self.assertSent(S(ACK, L(), P(BUFFER), BUFFER))

    def test_establishedPausedFin(self):
        """
        A FIN behind paused data is delivered after that data, on resume.
        """
        self.conn.pauseProducing()
        self.feed(FIN | ACK, P(), L(), payload=b"end")
        self.assertEqual(self.protocol.readLost, 0)
        self.conn.resumeProducing()
        self.assertEqual(self.protocol.received(), b"end")
        self.assertEqual(self.protocol.readLost, 1)

    def test_establishedStopProducing(self):
        """
        C{stopProducing} closes, as for Twisted's transports.
        """
        self.conn.stopProducing()
        self.assertState("FIN_WAIT_1")


class ProducerTests(TCPTestCase):
    def setUp(self):
        super().setUp()
        self.toEstablished()

    def test_establishedStreamingProducerPaused(self):
        """
        A streaming producer is paused when the send buffer fills (writes still
        accepted), and resumed when ACKs drain it below half.
        """
        producer = StreamingProducer()
        self.conn.registerProducer(producer, True)
        self.conn.write(b"p" * (SEND_BUFFER - 1))
        self.assertEqual(producer.calls, [])
        self.conn.write(b"pp")
        self.assertEqual(producer.calls, ["pause"])
        self.conn.write(b"more")
        self.assertEqual(len(self.conn._sndBuf), SEND_BUFFER + 5)
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(SEND_BUFFER // 2 - 100))
        self.assertEqual(producer.calls, ["pause"])
        self.feed(ACK, P(), L(SEND_BUFFER // 2 + 100))
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_establishedPullProducer(self):
        """
        A pull producer is asked for data until the send buffer is half full,
        and again as ACKs drain it.
        """
        producer = PullProducer(self.conn, b"c" * 1000, 100)
        self.conn.registerProducer(producer, False)
        self.assertEqual(producer.calls, SEND_BUFFER // 2 // 1000 + 1)
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(4000))
        self.assertEqual(producer.calls, SEND_BUFFER // 2 // 1000 + 5)

    def test_establishedPullProducerFinished(self):
        """
        A pull producer that writes nothing is not asked again in a loop.
        """
        producer = PullProducer(self.conn, b"", 0)
        self.conn.registerProducer(producer, False)
        self.assertEqual(producer.calls, 1)

    def test_establishedRegisterTwice(self):
        """
        A second producer is an error, as for Twisted's transports.
        """
        self.conn.registerProducer(StreamingProducer(), True)
        self.assertRaises(RuntimeError, self.conn.registerProducer, StreamingProducer(), True)
        self.conn.unregisterProducer()
        self.conn.registerProducer(StreamingProducer(), True)

    def test_establishedProducerStoppedOnClose(self):
        """
        The producer is stopped when the connection is lost; registering on a
        closed connection stops the producer at once.
        """
        producer = StreamingProducer()
        self.conn.registerProducer(producer, True)
        self.feed(RST, P())
        self.assertEqual(producer.calls, ["stop"])
        late = StreamingProducer()
        self.conn.registerProducer(late, True)
        self.assertEqual(late.calls, ["stop"])


class LinkTests(TCPTestCase):
    """
    The connection looks at its L{LinkInterface}'s pause state before it sends.
    """

    def setUp(self):
        super().setUp()
        self.toEstablished()
        self.link = LinkInterface(None, "guest")
        self.link.addConnection(self.conn)

    def test_establishedLinkPaused(self):
        """
        While the guest's link is paused no data segment goes out, but ACKs do;
        when it resumes, the data follows.
        """
        self.link.pause()
        self.conn.write(b"held")
        self.clock.advance(0)
        self.assertEqual(self.sent(), [])
        self.feed(ACK, P(), L(), payload=b"in")
        self.clock.advance(0)
        self.clock.advance(self.conn.delayedAckTimeout)
        self.assertSent(S(ACK, L(), P(2), BUFFER - 2))
        self.link.resume()
        self.assertSent(S(ACK | PSH, L(), P(2), BUFFER - 2, b"held"))

    def test_establishedLinkPausedRto(self):
        """
        An RTO while the link is paused neither retransmits nor spends a retry;
        the retransmission goes when the link resumes.
        """
        self.conn.write(b"r")
        self.clock.advance(0)
        self.sent()
        self.link.pause()
        self.clock.advance(100)
        self.assertEqual(self.sent(), [])
        self.assertState("ESTABLISHED")
        self.assertEqual(self.conn._retries, 0)
        self.assertIn(self.conn, self.link.blocked)
        self.link.resume()
        self.assertSent(S(ACK | PSH, L(), P(), BUFFER, b"r"))


class OptionTests(TCPTestCase):
    def test_establishedTimestamps(self):
        """
        With timestamps agreed every segment carries one, echoing the peer's
        latest; a segment with an older timestamp fails PAWS and is dropped with
        an ACK.
        """
        options = wire.mssOption(1460) + wire.timestampOption(100, 0)
        self.toSynReceived(options)
        self.feed(ACK, P(), L(), options=wire.timestampOption(101, 0))
        self.feed(ACK, P(), L(), payload=b"new", options=wire.timestampOption(105, 0))
        self.clock.advance(0)
        self.clock.advance(self.conn.delayedAckTimeout)
        [ack] = self.sentSegments()
        self.assertEqual(ack.tsEcr, 105)
        self.feed(ACK, P(3), L(), payload=b"old", options=wire.timestampOption(104, 0))
        [ack] = self.sentSegments()
        self.assertEqual(ack.ack, P(3))
        self.assertEqual(self.protocol.received(), b"new")
        self.assertEqual(self.counters.get("tcp.pawsDrop"), 1)

    def test_establishedTimestampMss(self):
        """
        With timestamps, each data segment holds 12 bytes less (RFC 6691).
        """
        options = wire.mssOption(1460) + wire.timestampOption(100, 0)
        self.toSynReceived(options)
        self.feed(ACK, P(), L(), options=wire.timestampOption(101, 0))
        self.conn.write(b"m" * 3000)
        self.clock.advance(0)
        self.assertEqual([len(s.payload) for s in self.sentSegments()], [1448, 1448, 104])

    def test_establishedSack(self):
        """
        With SACK agreed, the duplicate ACK for an out-of-order segment carries
        SACK blocks, the most recent first.
        """
        options = wire.mssOption(1460) + wire.sackPermittedOption()
        self.toEstablished(options)
        self.feed(ACK, P(10), L(), payload=b"x" * 5)
        self.sent()
        self.feed(ACK, P(30), L(), payload=b"y" * 5)
        [ack] = self.sentSegments()
        self.assertEqual(ack.ack, P())
        self.assertEqual(ack.sackBlocks, ((P(30), P(35)), (P(10), P(15))))

    def test_establishedWindowScaled(self):
        """
        With window scaling agreed, the window field is the free buffer shifted
        right, and the peer's field is shifted left.
        """
        self.conn = self.makeConnection(receiveBufferSize=1 << 20)
        options = wire.mssOption(1460) + wire.windowScaleOption(3)
        self.toEstablished(options)
        self.feed(ACK, P(), L(), window=1000)
        self.assertEqual(self.conn._sndWnd, 8000)
        self.feed(ACK, P(), L(), payload=b"a" * 2000)
        self.clock.advance(0)
        [ack] = self.sentSegments()
        self.assertEqual(ack.window, (1 << 20) >> 5)


class ConstructionTests(TCPTestCase):
    def test_noInstanceDict(self):
        """
        A connection keeps its state in slots, without an instance dict (about
        2.5 KB less per idle connection); the class-level tunables still hold
        their defaults, and C{timeWait} still overrides one per connection.
        """
        self.assertFalse(hasattr(self.conn, "__dict__"))
        self.assertEqual(self.conn.maxRetries, TCPConnection.maxRetries)
        self.assertEqual(self.conn._timeWaitInterval(), TCPConnection.timeWaitDuration)
        self.assertEqual(self.makeConnection(timeWait=7.5)._timeWaitInterval(), 7.5)
        self.assertEqual(self.conn.connected, 0)
        self.assertIsNone(self.conn.budget)

    def test_isnDiffersPerFourTuple(self):
        """
        Without an override, the ISN is a keyed hash of the 4-tuple plus a
        4 microsecond clock (RFC 6528): other ports give another ISN, and the
        same 4-tuple one second later gives 250000 more.
        """
        first = stack.initialSequenceNumber(LOCAL_IP, 80, REMOTE_IP, 40000, 0.0)
        other = stack.initialSequenceNumber(LOCAL_IP, 80, REMOTE_IP, 40001, 0.0)
        later = stack.initialSequenceNumber(LOCAL_IP, 80, REMOTE_IP, 40000, 1.0)
        self.assertNotEqual(first, other)
        self.assertEqual((later - first) & MASK, 250000)

    def test_connectionUsesIsn(self):
        """
        A connection without an ISN override uses L{initialSequenceNumber}.
        """
        conn = TCPConnection(self.clock, LOCAL, REMOTE, self.raw.append)
        conn.connect()
        [syn] = self.sentSegments()
        self.assertEqual(
            syn.seq, stack.initialSequenceNumber(LOCAL_IP, 80, REMOTE_IP, 40000, 0.0)
        )

    def test_resetForSegment(self):
        """
        A segment with ACK for no connection gets RST with that ACK as sequence
        number; one without gets RST|ACK acknowledging it; a RST gets nothing.
        """
        withAck = parseSegment(
            buildSegment(REMOTE_IP, LOCAL_IP, 40000, 80, 5, 77, ACK, 0, b"", b"abc")
        )
        reply = parseSegment(resetForSegment(LOCAL_IP, REMOTE_IP, withAck))
        self.assertEqual(
            (reply.flags, reply.seq, reply.srcPort, reply.dstPort), (RST, 77, 80, 40000)
        )
        syn = parseSegment(buildSegment(REMOTE_IP, LOCAL_IP, 40000, 80, 5, 0, SYN, 0))
        reply = parseSegment(resetForSegment(LOCAL_IP, REMOTE_IP, syn))
        self.assertEqual((reply.flags, reply.seq, reply.ack), (RST | ACK, 0, 6))
        self.assertTrue(
            verifyChecksum(LOCAL_IP, REMOTE_IP, resetForSegment(LOCAL_IP, REMOTE_IP, syn))
        )
        rst = parseSegment(buildSegment(REMOTE_IP, LOCAL_IP, 40000, 80, 5, 0, RST, 0))
        self.assertIsNone(resetForSegment(LOCAL_IP, REMOTE_IP, rst))

    def test_noProtocol(self):
        """
        A handshake that completes with no protocol set resets the connection.
        """
        self.conn.setProtocol(None)
        self.toSynReceived()
        self.feed(ACK, P(), L())
        self.assertSent(S(RST | ACK, L(), P(), BUFFER))
        self.assertClosedOnce()
