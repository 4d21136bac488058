"""
Two L{TCPConnection}s, one opening actively and one passively, joined by a
simulated link that loses, delays, reorders and duplicates segments; hypothesis
picks the pattern. Whatever it picks, every byte must arrive exactly once and in
order in both directions, and both sides must close cleanly.

The simulation keeps its own queue of frames in flight instead of one
C{callLater} per frame, because L{Clock} sorts its whole call list on every
C{callLater}; time jumps straight to the next event, so a run that spends
minutes of simulated time on retransmission backoff costs milliseconds.
"""

import hashlib
import heapq
import itertools
import random
import socket

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from zope.interface import implementer

from twisted.internet import error, interfaces
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.counters import Counters
from gvtwisted.stack.tcp import CLOSED, LISTEN, TCPConnection
from gvtwisted.stack.tcp.budget import BufferBudget
from gvtwisted.wire.tcp import parseSegment, verifyChecksum

GATEWAY = ("192.168.127.1", 8080)
GUEST = ("192.168.127.2", 40000)

# The default TIME_WAIT (2 s) suits a virtual link that loses nothing. On this
# link a peer's RTO can grow to tens of seconds (lost ACKs make the echoed
# timestamps old, RFC 7323 4.3), and a TIME_WAIT shorter than the peer's RTO
# strands it when the last ACK is lost; so wait as long as a peer could retry.
TIME_WAIT = TCPConnection.maxRetransmitTime + 2 * TCPConnection.maxRto


class LossyLink:
    """
    Frames between two endpoints, each one possibly dropped, duplicated and
    delayed by a random amount (which reorders them).

    @ivar endpoints: name to callable taking the frame's bytes.
    """

    def __init__(self, clock, rng, loss, duplicate, delay, jitter):
        self.clock = clock
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.jitter = jitter
        self.queue = []
        self.counter = itertools.count()
        self.endpoints = {}
        self.sent = 0
        self.dropped = 0

    def sender(self, source, peer, destination):
        """
        A C{send} callable for a connection at address C{source} talking to
        address C{peer}, whose segments go to the endpoint named C{destination};
        it checks every checksum on the way.
        """
        srcIP = socket.inet_aton(source[0])
        dstIP = socket.inet_aton(peer[0])

        def send(segment):
            assert verifyChecksum(srcIP, dstIP, segment), "bad checksum"
            self.sent += 1
            rng = self.rng
            copies = 2 if rng.random() < self.duplicate else 1
            for _ in range(copies):
                if rng.random() < self.loss:
                    self.dropped += 1
                    continue
                when = self.clock.seconds() + self.delay + rng.random() * self.jitter
                heapq.heappush(
                    self.queue, (when, next(self.counter), destination, segment)
                )

        return send

    def run(self, until):
        """
        Deliver frames and fire timers in time order until nothing is left or
        C{until} seconds of simulated time have passed.
        """
        clock = self.clock
        queue = self.queue
        while True:
            nextFrame = queue[0][0] if queue else None
            calls = clock.getDelayedCalls()
            nextCall = min((c.getTime() for c in calls), default=None)
            if nextFrame is None and nextCall is None:
                return
            when = min(t for t in (nextFrame, nextCall) if t is not None)
            if when > until:
                return
            clock.advance(max(0.0, when - clock.seconds()))
            while queue and queue[0][0] <= clock.seconds():
                _, _, destination, segment = heapq.heappop(queue)
                self.endpoints[destination](segment)


@implementer(interfaces.IHalfCloseableProtocol)
class Collector(Protocol):
    """
    Sends C{payload} (through a producer or in one write), collects what arrives,
    sometimes pauses its transport for a while to close the window, and closes
    its write side when all is sent. It is half-closeable: the peer's FIN must
    not stop its own sending.
    """

    def __init__(self, clock, rng, payload, useProducer, pauseChance):
        self.clock = clock
        self.rng = rng
        self.payload = payload
        self.useProducer = useProducer
        self.pauseChance = pauseChance
        self.received = bytearray()
        self.reasons = []
        self.readEof = False

    def connectionMade(self):
        if self.useProducer:
            self.producer = ChunkProducer(self)
            self.transport.registerProducer(self.producer, True)
        else:
            self.transport.write(self.payload)
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        assert not self.reasons, "data after connectionLost"
        self.received += data
        if self.rng.random() < self.pauseChance:
            self.transport.pauseProducing()
            self.clock.callLater(
                self.rng.random() * 0.5, self.transport.resumeProducing
            )

    def readConnectionLost(self):
        assert not self.readEof, "readConnectionLost twice"
        self.readEof = True

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.reasons.append(reason)


@implementer(interfaces.IPushProducer)
class ChunkProducer:
    """
    A streaming producer that writes its protocol's payload in random chunks, one
    chunk per clock tick, as fast as the transport lets it.
    """

    def __init__(self, protocol):
        self.protocol = protocol
        self.offset = 0
        self.paused = False
        self.stopped = False
        self.pauses = 0
        protocol.clock.callLater(0, self.produce)

    def produce(self):
        if self.paused or self.stopped:
            return
        proto = self.protocol
        transport = proto.transport
        while not self.paused and self.offset < len(proto.payload):
            size = proto.rng.randint(1, 40000)
            chunk = proto.payload[self.offset : self.offset + size]
            self.offset += len(chunk)
            transport.write(chunk)
        if self.offset >= len(proto.payload):
            transport.unregisterProducer()
            transport.loseWriteConnection()
            self.stopped = True

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            self.protocol.clock.callLater(0, self.produce)

    def stopProducing(self):
        self.stopped = True


def transfer(
    seed, loss, duplicate, jitter, sizeA, sizeB, pauseChance, producerA, producerB,
    budgetLimit=None,
):
    """
    Run one transfer; return the two protocols, the two connections, the link and
    the list of closed connections. C{budgetLimit}, if given, is the size of a
    L{BufferBudget} given to the gateway side only (the guest is another
    machine, with memory of its own).
    """
    clock = Clock()
    rng = random.Random(seed)
    link = LossyLink(clock, rng, loss, duplicate, 0.001, jitter)
    payloadA = rng.randbytes(sizeA)
    payloadB = rng.randbytes(sizeB)
    closed = []
    counters = Counters()

    guest = TCPConnection(
        clock,
        GUEST,
        GATEWAY,
        link.sender(GUEST, GATEWAY, "gateway"),
        onClose=closed.append,
        counters=counters,
        receiveBufferSize=64 * 1024,
        sendBufferSize=64 * 1024,
        timeWait=TIME_WAIT,
    )
    gateway = TCPConnection(
        clock,
        GATEWAY,
        GUEST,
        link.sender(GATEWAY, GUEST, "guest"),
        onClose=closed.append,
        counters=counters,
        receiveBufferSize=64 * 1024,
        sendBufferSize=64 * 1024,
        timeWait=TIME_WAIT,
    )
    if budgetLimit is not None:
        gateway.budget = BufferBudget(clock, budgetLimit, counters)
    protoA = Collector(clock, rng, payloadA, producerA, pauseChance)
    protoB = Collector(clock, rng, payloadB, producerB, pauseChance)
    guest.setProtocol(protoA)
    gateway.setProtocol(protoB)

    def toGuest(frame):
        guest.segmentReceived(parseSegment(frame))

    def toGateway(frame):
        seg = parseSegment(memoryview(frame))
        if gateway.state is LISTEN:
            gateway.receiveSyn(seg)
            # The NAT dials the real host before answering.
            clock.callLater(0.003, gateway.acceptSyn)
        else:
            gateway.segmentReceived(seg)

    link.endpoints["guest"] = toGuest
    link.endpoints["gateway"] = toGateway
    guest.connect()
    link.run(until=3600)
    return protoA, protoB, guest, gateway, link, closed, payloadA, payloadB


class LossyTransferTests(SynchronousTestCase):
    """
    Byte-exact transfers both ways over a bad link.
    """

    def assertCleanTransfer(self, result):
        protoA, protoB, guest, gateway, link, closed, payloadA, payloadB = result
        self.assertEqual(len(protoB.received), len(payloadA))
        self.assertEqual(
            hashlib.sha256(protoB.received).hexdigest(),
            hashlib.sha256(payloadA).hexdigest(),
        )
        self.assertEqual(len(protoA.received), len(payloadB))
        self.assertEqual(
            hashlib.sha256(protoA.received).hexdigest(),
            hashlib.sha256(payloadB).hexdigest(),
        )
        self.assertEqual(guest.state, CLOSED)
        self.assertEqual(gateway.state, CLOSED)
        self.assertEqual(sorted(map(id, closed)), sorted([id(guest), id(gateway)]))
        for proto in (protoA, protoB):
            self.assertTrue(proto.readEof)
            self.assertEqual(len(proto.reasons), 1)
            proto.reasons[0].trap(error.ConnectionDone)

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        loss=st.sampled_from([0.0, 0.02, 0.08, 0.15]),
        duplicate=st.sampled_from([0.0, 0.05, 0.2]),
        jitter=st.sampled_from([0.0, 0.002, 0.02]),
        pauseChance=st.sampled_from([0.0, 0.05]),
        producerA=st.booleans(),
        producerB=st.booleans(),
    )
    @example(
        seed=1,
        loss=0.15,
        duplicate=0.2,
        jitter=0.02,
        pauseChance=0.05,
        producerA=True,
        producerB=False,
    )
    def test_lossyTransfer(
        self, seed, loss, duplicate, jitter, pauseChance, producerA, producerB
    ):
        """
        A few hundred kilobytes each way arrive intact, once and in order, and
        both sides see C{ConnectionDone} and reach C{CLOSED}, whatever the link
        does to the segments.
        """
        result = transfer(
            seed,
            loss,
            duplicate,
            jitter,
            300_000,
            200_000,
            pauseChance,
            producerA,
            producerB,
        )
        self.assertCleanTransfer(result)

    @settings(
        max_examples=10,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        loss=st.sampled_from([0.3, 0.4]),
        duplicate=st.sampled_from([0.0, 0.2]),
        jitter=st.sampled_from([0.002, 0.2]),
    )
    def test_hostileLinkSafety(self, seed, loss, duplicate, jitter):
        """
        On a link so bad that connections may give up (the retransmission bound
        resets them), nothing is ever corrupted: each side received a prefix of
        what the other sent, each protocol is told exactly once, and a side told
        C{ConnectionDone} had every byte it wrote delivered.
        """
        protoA, protoB, guest, gateway, link, closed, payloadA, payloadB = transfer(
            seed, loss, duplicate, jitter, 150_000, 150_000, 0.05, True, False
        )
        self.assertEqual(bytes(protoB.received), payloadA[: len(protoB.received)])
        self.assertEqual(bytes(protoA.received), payloadB[: len(protoA.received)])
        for proto, peer, payload in (
            (protoA, protoB, payloadA),
            (protoB, protoA, payloadB),
        ):
            self.assertLessEqual(len(proto.reasons), 1)
            if proto.reasons and proto.reasons[0].check(error.ConnectionDone):
                self.assertEqual(len(peer.received), len(payload))
            else:
                self.assertTrue(
                    not proto.reasons or proto.reasons[0].check(error.ConnectionLost)
                )
        self.assertEqual(len(closed), len(set(map(id, closed))))

    def test_perfectLinkFast(self):
        """
        Without loss the transfer needs no retransmission at all, and the sending
        producer was paused by the full send buffer at least once.
        """
        result = transfer(7, 0.0, 0.0, 0.0, 500_000, 500_000, 0.0, True, True)
        self.assertCleanTransfer(result)
        guest, gateway = result[2], result[3]
        self.assertEqual(guest.counters.get("tcp.retransmit"), 0)
        self.assertEqual(guest.counters.get("tcp.rtoExpired"), 0)
        self.assertGreater(result[0].producer.pauses, 0)
        self.assertGreater(result[1].producer.pauses, 0)

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        loss=st.sampled_from([0.0, 0.02, 0.08]),
        duplicate=st.sampled_from([0.0, 0.05]),
        jitter=st.sampled_from([0.0, 0.002, 0.02]),
        pauseChance=st.sampled_from([0.0, 0.05]),
        producerA=st.booleans(),
        producerB=st.booleans(),
        budgetLimit=st.sampled_from([1, 3000, 16 * 1024]),
    )
    @example(seed=3, loss=0.08, duplicate=0.05, jitter=0.02, pauseChance=0.05,
             producerA=True, producerB=True, budgetLimit=3000)
    def test_lossyTransferSmallBudget(
        self, seed, loss, duplicate, jitter, pauseChance, producerA, producerB, budgetLimit
    ):
        """
        With a global buffer budget far below the windows (down to one byte),
        the budget closes the gateway's windows and pauses its producer over
        and over, and still every byte arrives once and in order both ways:
        backpressure, nothing dropped. At the end the budget holds nothing.
        """
        result = transfer(seed, loss, duplicate, jitter, 200_000, 150_000, pauseChance,
                          producerA, producerB, budgetLimit=budgetLimit)
        self.assertCleanTransfer(result)
        gateway = result[3]
        self.assertEqual(gateway.budget.used, 0)
        self.assertEqual(gateway.budget.blocked, {})
        self.assertGreater(gateway.counters.get("tcp.bufferBudgetBlocked"), 0)
