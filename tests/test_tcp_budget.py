"""
Tests for L{gvtwisted.stack.tcp.budget.BufferBudget}, the global budget of
bytes buffered by virtual TCP connections, alone and as connections on a
L{Clock} use it: past the budget the receive window closes and producers
pause; room reopens and resumes exactly the connections that waited.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.tcp.budget import BufferBudget
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.wire.tcp import ACK, PSH
from tests.test_tcp import (
    BUFFER,
    LOCAL,
    REMOTE,
    SEND_BUFFER,
    L,
    P,
    Recorder,
    S,
    StreamingProducer,
    TCPTestCase,
)


class Waiter:
    """
    A stand-in connection that records C{budgetResumed} and may spend budget
    when resumed.
    """

    def __init__(self, name, log, budget=None, spend=0):
        self.name = name
        self.log = log
        self.budget = budget
        self.spend = spend

    def budgetResumed(self):
        self.log.append(self.name)
        if self.spend:
            self.budget.charge(self.spend)


class BufferBudgetTests(SynchronousTestCase):
    """
    The budget's own bookkeeping.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters()
        self.budget = BufferBudget(self.clock, 100, self.counters)
        self.log = []

    def test_badLimit(self):
        """
        A budget of zero or less is an error, at construction.
        """
        self.assertRaises(ValueError, BufferBudget, self.clock, 0)
        self.assertRaises(ValueError, BufferBudget, self.clock, -5)

    def test_chargeAndRelease(self):
        """
        Charges add up, releases subtract; the budget is exhausted at its limit.
        """
        self.budget.charge(60)
        self.assertFalse(self.budget.exhausted)
        self.budget.charge(40)
        self.assertTrue(self.budget.exhausted)
        self.assertEqual(self.budget.used, 100)
        self.budget.charge(-1)
        self.assertFalse(self.budget.exhausted)
        self.assertEqual(self.budget.used, 99)

    def test_resumeInOrderAfterRelease(self):
        """
        Blocked connections are resumed in the order they blocked, in a later
        reactor turn after a release brings the total below the limit, and
        each is counted once however often it blocks.
        """
        self.budget.charge(150)
        a, b = Waiter("a", self.log), Waiter("b", self.log)
        self.budget.block(a)
        self.budget.block(b)
        self.budget.block(a)
        self.assertEqual(self.counters.get("tcp.bufferBudgetBlocked"), 2)
        self.budget.charge(-40)
        self.clock.advance(0)
        self.assertEqual(self.log, [])
        self.budget.charge(-20)
        self.assertEqual(self.log, [])
        self.clock.advance(0)
        self.assertEqual(self.log, ["a", "b"])
        self.assertEqual(self.budget.blocked, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resumeStopsWhenSpentAgain(self):
        """
        A resumed connection that fills the budget again leaves the others
        blocked until the next release.
        """
        self.budget.charge(100)
        a = Waiter("a", self.log, self.budget, spend=50)
        b = Waiter("b", self.log)
        self.budget.block(a)
        self.budget.block(b)
        self.budget.charge(-50)
        self.clock.advance(0)
        self.assertEqual(self.log, ["a"])
        self.assertEqual(list(self.budget.blocked), [b])
        self.budget.charge(-1)
        self.clock.advance(0)
        self.assertEqual(self.log, ["a", "b"])

    def test_blockWithRoom(self):
        """
        A connection that blocks while there is room (the total fell in the
        same turn) is resumed at once, in the next turn, not left waiting.
        """
        a = Waiter("a", self.log)
        self.budget.block(a)
        self.clock.advance(0)
        self.assertEqual(self.log, ["a"])

    def test_forget(self):
        """
        A forgotten (closed) connection is not resumed.
        """
        self.budget.charge(100)
        a = Waiter("a", self.log)
        self.budget.block(a)
        self.budget.forget(a)
        self.budget.forget(a)
        self.budget.charge(-100)
        self.clock.advance(0)
        self.assertEqual(self.log, [])

    def test_resumeFailureContained(self):
        """
        A connection whose resume raises is logged, and the others are still
        resumed.
        """

        class Broken:
            def budgetResumed(self):
                raise RuntimeError("boom")

        self.budget.charge(100)
        self.budget.block(Broken())
        self.budget.block(Waiter("b", self.log))
        self.budget.charge(-100)
        self.clock.advance(0)
        self.assertEqual(self.log, ["b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ConnectionBudgetTests(TCPTestCase):
    """
    A L{TCPConnection} with a budget: its buffers are charged to it, its
    receive window closes and its producer pauses while it is spent.
    """

    limit = 4000

    def setUp(self):
        super().setUp()
        self.budget = BufferBudget(self.clock, self.limit, self.counters)
        self.conn.budget = self.budget
        self.toEstablished()

    def other(self):
        """
        A second connection on the same budget, established, whose guest
        acknowledges nothing yet: what it is given to write stays buffered.
        """
        conn = self.makeConnection()
        conn.budget = self.budget
        conn.setProtocol(Recorder())
        saved = self.conn
        self.conn = conn
        try:
            self.toEstablished()
        finally:
            self.conn = saved
        return conn

    def test_chargedAndReleased(self):
        """
        Written data is charged until the guest acknowledges it; data held for
        a paused protocol until the protocol takes it; closing releases
        everything.
        """
        self.conn.write(b"w" * 1000)
        self.assertEqual(self.budget.used, 1000)
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(600))
        self.assertEqual(self.budget.used, 400)
        self.conn.pauseProducing()
        self.feed(ACK | PSH, P(), L(600), payload=b"r" * 500)
        self.assertEqual(self.budget.used, 900)
        self.conn.resumeProducing()
        self.assertEqual(self.protocol.received(), b"r" * 500)
        self.assertEqual(self.budget.used, 400)
        self.conn.abortConnection()
        self.assertEqual(self.budget.used, 0)

    def test_outOfOrderCharged(self):
        """
        Out-of-order data is charged while it waits for the hole, and moves
        to the protocol (and off the budget) when the hole is filled.
        """
        self.feed(ACK, P(1000), L(), payload=b"b" * 700)
        self.assertEqual(self.budget.used, 700)
        self.feed(ACK, P(), L(), payload=b"a" * 1000)
        self.assertEqual(self.protocol.received(), b"a" * 1000 + b"b" * 700)
        self.assertEqual(self.budget.used, 0)

    def test_windowClosesAndReopens(self):
        """
        While another connection holds the budget, this one still accepts
        (and delivers) what its window already promised, but promises no
        more: the window it advertises shrinks to zero. When the other's data
        is acknowledged, this one is resumed with a window update.
        """
        other = self.other()
        other.write(b"o" * self.limit)
        self.assertTrue(self.budget.exhausted)
        del self.raw[:]
        for i in range(0, BUFFER, MSS_STEP):
            self.feed(ACK, P(i), L(), payload=b"d" * MSS_STEP)
        self.clock.advance(0)
        acks = self.sent()
        self.assertEqual(acks[-1], S(ACK, L(), P(BUFFER), 0))
        self.assertEqual(len(self.protocol.received()), BUFFER)
        # Past the promised edge, data is not accepted (the guest retransmits).
        self.feed(ACK, P(BUFFER), L(), payload=b"x" * 100)
        self.assertEqual(self.sent(), [S(ACK, L(), P(BUFFER), 0)])
        self.assertIn(self.conn, self.budget.blocked)

        # The other connection's guest acknowledges its data: room again.
        other.segmentReceived(self.ackFor(other, self.limit))
        self.assertEqual(self.budget.used, 0)
        self.clock.advance(0)
        self.assertEqual(self.sent(), [S(ACK, L(), P(BUFFER), BUFFER)])
        self.assertEqual(self.budget.blocked, {})

    def ackFor(self, conn, n):
        """
        The guest's ACK of C{n} bytes that C{conn} sent.
        """
        from gvtwisted.wire.tcp import buildSegment, parseSegment
        from tests.test_tcp import LOCAL_IP, REMOTE_IP

        conn.clock.advance(0)
        return parseSegment(buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1],
                                         P(), L(n), ACK, BUFFER))

    def test_producerPausedByBudget(self):
        """
        A streaming producer is paused when the budget is spent, although its
        own send buffer has room, and resumed once the guest acknowledges
        enough to bring the total below the budget.
        """
        producer = StreamingProducer()
        self.conn.registerProducer(producer, True)
        self.conn.write(b"p" * self.limit)
        self.assertLess(self.limit, SEND_BUFFER)
        self.assertEqual(producer.calls, ["pause"])
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(1460))
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(self.budget.used, self.limit - 1460)

    def test_producerResumedByOthersRelease(self):
        """
        A producer paused because another connection holds the budget is
        resumed when that one's data is acknowledged, through the budget's
        blocked set; nothing else is resumed.
        """
        other = self.other()
        other.write(b"o" * self.limit)
        producer = StreamingProducer()
        self.conn.registerProducer(producer, True)
        self.conn.write(b"p")
        self.assertEqual(producer.calls, ["pause"])
        self.assertEqual(list(self.budget.blocked), [self.conn])
        # An ACK of this connection's own byte leaves the budget spent.
        self.clock.advance(0)
        self.sent()
        self.feed(ACK, P(), L(1))
        self.assertEqual(producer.calls, ["pause"])
        other.segmentReceived(self.ackFor(other, self.limit))
        self.clock.advance(0)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_pullProducerStopsAtBudget(self):
        """
        A pull producer is asked for data only while the budget has room.
        """
        from tests.test_tcp import PullProducer

        producer = PullProducer(self.conn, b"q" * 1000, 100)
        self.conn.registerProducer(producer, False)
        self.assertEqual(self.budget.used, self.limit)
        self.assertEqual(producer.calls, self.limit // 1000)

    def test_closedForgotten(self):
        """
        A connection that closes while blocked leaves the blocked set and
        the budget.
        """
        self.other().write(b"o" * self.limit)
        producer = StreamingProducer()
        self.conn.registerProducer(producer, True)
        self.conn.write(b"p" * 10)
        self.assertIn(self.conn, self.budget.blocked)
        self.conn.abortConnection()
        self.assertNotIn(self.conn, self.budget.blocked)
        self.assertEqual(self.budget.used, self.limit)


MSS_STEP = 1024


class DemuxBudgetTests(SynchronousTestCase):
    """
    The TCP demux owns one budget and gives it to every connection.
    """

    def test_sharedBudget(self):
        """
        C{maxBufferedBytes} sizes the demux's budget (512 MiB by default), and
        each connection it makes holds that same budget.
        """
        clock = Clock()
        counters = Counters(clock)
        network = VirtualNetwork(clock, NetworkConfig(), Switch(clock, counters), counters)
        self.assertEqual(TCPDemux(clock, network, counters).budget.limit, 512 * 1024 * 1024)
        demux = TCPDemux(clock, network, counters, maxBufferedBytes=1234)
        self.assertEqual(demux.budget.limit, 1234)
        a = demux._makeConnection((b"\xc0\xa8\x7f\x02", 1000, b"\xc0\xa8\x7f\x01", 80))
        b = demux._makeConnection((b"\xc0\xa8\x7f\x02", 1001, b"\xc0\xa8\x7f\x01", 80))
        self.assertIs(a.budget, demux.budget)
        self.assertIs(b.budget, demux.budget)
