"""
Header prediction in L{gvtwisted.stack.tcp.machine.TCPMachine} must be invisible:
two established connections, one with it and one without, get the same
segments, the same writes of their protocol and the same clock, and after every
step they must have sent the same segments, delivered the same bytes, and hold
the same state, down to every sequence variable, timer and counter. Hypothesis
draws the steps: segments in order or not, with ACK fields behind, at, inside
and beyond what was sent, windows that change or not, timestamps old and new,
other flags; writes of the protocol, so that there is data to acknowledge;
pauses of its reading; a producer that is paused and resumed; the clock moving.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.counters import Counters
from gvtwisted.stack.tcp import TCPConnection
from gvtwisted.stack.tcp.budget import BufferBudget
from gvtwisted.wire import tcp as wire
from gvtwisted.wire.tcp import ACK, FIN, PSH, SYN, buildSegment, parseSegment
from tests.test_tcp import (
    IRS,
    ISS,
    LOCAL,
    LOCAL_IP,
    MASK,
    MSS,
    REMOTE,
    REMOTE_IP,
    HalfCloseRecorder,
    PullProducer,
    StreamingProducer,
)


class Echo(HalfCloseRecorder):
    """
    Records what it receives and writes it back at once, so that the order of
    its writes and a producer's shows in the segments sent.
    """

    def dataReceived(self, data):
        HalfCloseRecorder.dataReceived(self, data)
        if self.transport.connected and not self.transport.disconnecting:
            self.transport.write(bytes(data))

# Every simple value a connection holds (its slots), compared between the twins.
_SIMPLE = (int, float, bool, str, bytes, type(None))


def _slots(conn):
    names = []
    for cls in type(conn).__mro__:
        names.extend(getattr(cls, "__slots__", ()))
    values = {}
    for name in names:
        value = getattr(conn, name, "<unset>")
        if isinstance(value, _SIMPLE):
            values[name] = value
    values["rtt"] = (conn._rtt.srtt, conn._rtt.rttvar)
    values["cc"] = tuple(getattr(conn._cc, n) for n in type(conn._cc).__slots__)
    values["sndBuf"] = bytes(conn._sndBuf)
    return values


class Twin:
    """
    One established connection, with or without header prediction.
    """

    def __init__(self, prediction, timestamps, budget, echo=False):
        self.clock = Clock()
        self.clock.advance(1000)
        self.counters = Counters()
        self.raw = []
        self.protocol = Echo() if echo else HalfCloseRecorder()
        self.conn = TCPConnection(
            self.clock, LOCAL, REMOTE, self.raw.append, mss=MSS,
            counters=self.counters, receiveBufferSize=8192, sendBufferSize=4096, iss=ISS,
        )
        if budget:
            self.conn.budget = BufferBudget(self.clock, 6000, self.counters)
        # An instance attribute would need a slot: the class is patched per
        # call instead (see step).
        self.prediction = prediction
        self.conn.setProtocol(self.protocol)
        self.producer = StreamingProducer()
        self.pull = PullProducer(self.conn, b"p" * 700, 6)
        options = wire.mssOption(MSS) + (wire.timestampOption(5, 0) if timestamps else b"")
        self.conn.receiveSyn(parseSegment(buildSegment(
            REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS, 0, SYN, 8192, options)))
        self.run(self.conn.acceptSyn)
        self.tsVal = 6
        synAck = parseSegment(self.raw[-1])
        self.feed(ACK, IRS + 1, synAck.seq + 1, 8192)

    def run(self, call, *args):
        cls = type(self.conn)
        saved = cls.headerPrediction
        cls.headerPrediction = self.prediction
        try:
            call(*args)
            self.clock.advance(0)
        finally:
            cls.headerPrediction = saved

    def feed(self, flags, seq, ack, window, payload=b"", tsVal=None):
        options = b""
        if self.conn._tsOk:
            options = wire.timestampOption((self.tsVal if tsVal is None else tsVal) & MASK,
                                           self.conn._tsNow() & MASK)
        segment = buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], seq & MASK,
                               ack & MASK, flags, window, options, payload)
        self.run(self.conn.segmentReceived, parseSegment(memoryview(segment)))

    def state(self):
        return (
            [bytes(r) for r in self.raw],
            self.protocol.received(),
            len(self.protocol.reasons),
            self.producer.calls,
            self.pull.calls,
            self.counters.snapshot(),
            _slots(self.conn),
            self.conn.budget.used if self.conn.budget is not None else None,
            sorted(c.getTime() for c in self.clock.getDelayedCalls()),
        )


_step = st.one_of(
    st.tuples(
        st.just("segment"),
        st.sampled_from([0, 0, 0, 0, -1, 1, 100, -3000]),  # seq, from rcvNxt
        st.sampled_from([0, 1, 5, 100, 536, 1460, 3000]),  # payload length
        st.sampled_from(["una", "nxt", "half", "max", "behind", "beyond"]),  # ACK field
        st.sampled_from([8192, 8192, 8192, 4096, 0, 65535]),  # window
        st.sampled_from([ACK | PSH, ACK | PSH, ACK, ACK | FIN, PSH, ACK | PSH | 0x40]),
        st.sampled_from([1, 1, 1, 0, -5, 1000]),  # timestamp step
    ),
    st.tuples(st.just("write"), st.sampled_from([1, 100, 1460, 3000, 5000])),
    st.tuples(st.just("pauseReading"), st.booleans()),
    st.tuples(st.just("producer"), st.sampled_from(["register", "pull", "unregister"])),
    st.tuples(st.just("advance"), st.sampled_from([0.001, 0.003, 0.2, 1.5])),
    st.tuples(st.just("close"), st.booleans()),
)


class PredictionTests(SynchronousTestCase):
    """
    With and without header prediction, the same outcome.
    """

    def play(self, steps, timestamps, budget, echo=False):
        on, off = Twin(True, timestamps, budget, echo), Twin(False, timestamps, budget, echo)
        self.assertEqual(on.state(), off.state())
        for step in steps:
            for twin in (on, off):
                self.apply(twin, step)
            self.assertEqual(on.state(), off.state(), f"after {step}")
        return on

    def apply(self, twin, step):
        conn = twin.conn
        kind = step[0]
        if kind == "segment":
            _, seqOffset, length, ackKind, window, flags, tsStep = step
            una, nxt, top = conn._sndUna, conn._sndNxt, conn._sndMax
            ack = {"una": una, "nxt": nxt, "half": una + (top - una) // 2, "max": top,
                   "behind": una - 10, "beyond": top + 10}[ackKind]
            twin.tsVal += tsStep
            payload = bytes((conn._rcvNxt + i) & 0xFF for i in range(length))
            twin.feed(flags, conn._rcvNxt + seqOffset, ack, window, payload)
        elif kind == "write":
            if conn.connected and not conn.disconnecting:
                twin.run(conn.write, b"w" * step[1])
        elif kind == "pauseReading":
            twin.run(conn.pauseProducing if step[1] else conn.resumeProducing)
        elif kind == "producer":
            if step[1] == "register" and conn._producer is None and conn.connected:
                twin.run(conn.registerProducer, twin.producer, True)
            elif step[1] == "pull" and conn._producer is None and conn.connected:
                twin.run(conn.registerProducer, twin.pull, False)
            elif step[1] == "unregister" and conn._producer is not None:
                twin.run(conn.unregisterProducer)
        elif kind == "advance":
            twin.clock.advance(step[1])
        elif kind == "close":
            if conn.connected and not conn.disconnecting:
                twin.run(conn.loseConnection if step[1] else conn.abortConnection)

    @settings(max_examples=400, deadline=None)
    @given(st.lists(_step, min_size=1, max_size=25), st.booleans(), st.booleans(),
           st.booleans())
    def test_sameOutcome(self, steps, timestamps, budget, echo):
        """
        Any steps: the same segments, bytes and state with and without it.
        """
        self.play(steps, timestamps, budget, echo)

    def test_requestAndAnswer(self):
        """
        The ping-pong the prediction is for (a request that acknowledges the
        previous answer, then the answer) takes the predicted path and ends as
        the general path ends.
        """
        steps = []
        for _ in range(5):
            steps += [("segment", 0, 1, "max", 8192, ACK | PSH, 1), ("write", 1),
                      ("advance", 0.001)]
        on = self.play(steps, True, False)
        self.assertEqual(on.protocol.received(), bytes((IRS + 1 + i) & 0xFF for i in range(5)))

    def test_pullProducerAndEcho(self):
        """
        An acknowledgement that frees room pulls from a pull producer; a
        protocol that answers the data writes too: the producer's bytes and the
        answer go out in the order the general path gives them.
        """
        self.play([("producer", "pull"), ("segment", 0, 5, "max", 8192, ACK | PSH, 1),
                   ("segment", 0, 5, "max", 8192, ACK | PSH, 1)], True, False, echo=True)

    def test_fastRecovery(self):
        """
        A partial acknowledgement in fast recovery retransmits at once, with
        our ACK field as the general path has it then.
        """
        steps = [("write", 5000)] + [("segment", 0, 0, "una", 8192, ACK, 1)] * 3
        steps.append(("segment", 0, 5, "half", 8192, ACK | PSH, 1))
        on = self.play(steps, True, False)
        self.assertGreater(on.counters.get("tcp.fastRetransmit"), 0)

    def test_budgetAtTheEdge(self):
        """
        An acknowledgement that brings the buffer budget's total below its
        limit while its data brings it past again: whether the producer has to
        wait on the budget is decided on the total as the general path has it
        at the acknowledgement.
        """
        # 5840 bytes held unread and 1000 sent unacknowledged, against a
        # budget of 6000; the next segment acknowledges the 1000 and brings 200.
        steps = [("pauseReading", True)]
        steps += [("segment", 0, 1460, "una", 8192, ACK | PSH, 1)] * 4
        steps += [("write", 1000), ("producer", "register"),
                  ("segment", 0, 200, "max", 8192, ACK | PSH, 1), ("pauseReading", False),
                  ("segment", 0, 100, "max", 8192, ACK | PSH, 1)]
        self.play(steps, True, True)

    def test_predictedPathTaken(self):
        """
        The in-order segments do take the predicted path (so the comparisons
        compare something), and an out-of-order one does not.
        """
        twin = Twin(True, True, False)
        taken = []
        original = type(twin.conn)._predictedReceived

        def spy(self, *args):
            taken.append(args[1])
            return original(self, *args)

        self.patch(type(twin.conn), "_predictedReceived", spy)
        rcvNxt = twin.conn._rcvNxt
        twin.feed(ACK | PSH, rcvNxt, twin.conn._sndUna, 8192, b"abc")
        twin.feed(ACK | PSH, rcvNxt + 10, twin.conn._sndUna, 8192, b"late")
        self.assertEqual(taken, [rcvNxt])
        self.assertEqual(twin.protocol.received(), b"abc")
