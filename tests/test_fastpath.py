"""
L{gvtwisted.stack.fastpath}: the shortcut for established TCP connections must
be invisible. Each test runs the same frames through two whole networks on
memory reactors, one with the shortcut and one without, and requires the same
frames to the guest, the same bytes to the host and the same counters after
every frame; hypothesis mutates the frames (any byte of the headers, with the
IPv4 checksum fixed up or not) so that every check the shortcut makes is
crossed both ways.
"""

import os
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.stack.fastpath import TCPFastPath
from gvtwisted.wire import checksum, ipv4
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.tcp import ACK, FIN, PSH, RST, SYN
from tests.test_nat_tcp import GUEST_MAC, GW_MAC, HostTransport

GUEST_IP = socket.inet_aton("192.168.127.2")
OTHER_MAC = bytes.fromhex("5a94efe40cef")
GATEWAY_IP = socket.inet_aton("192.168.127.1")
REMOTE_IP = socket.inet_aton("10.1.2.3")
ISN = 0x10000000
MASK = 0xFFFFFFFF
TS = b"\x01\x01" + wiretcp.timestampOption(7, 0)


class RecordingPort:
    name = "guest"

    def __init__(self):
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(bytes(frame))


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


def tcpFrame(flags, seq, ack=0, payload=b"", dst=REMOTE_IP, dstPort=80, srcPort=40000,
             options=TS, src=GUEST_IP, srcMAC=GUEST_MAC):
    seg = wiretcp.buildSegment(src, dst, srcPort, dstPort, seq & MASK, ack & MASK, flags,
                               65535, options, payload)
    return GW_MAC + srcMAC + b"\x08\x00" + ipv4.buildHeader(src, dst, ipv4.PROTO_TCP, len(seg)) + seg


class Network:
    """
    One whole network with one guest link, a NAT'd connection to
    10.1.2.3:80 and a local one to the gateway's port 7 (an echo).
    """

    def __init__(self, fast):
        self.reactor = MemoryReactorClock()
        self.gvtap = Gvtap(self.reactor, NetworkConfig(), resolvConf=os.devnull)
        if not fast:
            self.gvtap.switch.fastPath = None
        else:
            assert isinstance(self.gvtap.switch.fastPath, TCPFastPath)
        self.gvtap.network.listenTCP(7, Factory.forProtocol(Echo))
        self.port = RecordingPort()
        self.gvtap.switch.attach(self.port)
        self.other = RecordingPort()
        self.gvtap.switch.attach(self.other)
        self.host = HostTransport()
        self.receive(self.port, tcpFrame(SYN, ISN, options=wiretcp.mssOption(1460) + TS))
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        self.hostSide = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.hostSide.makeConnection(self.host)
        self.reactor.advance(0)
        self.natISS = self.lastSegment().seq
        self.receive(self.port, tcpFrame(ACK, ISN + 1, self.natISS + 1))
        self.receive(self.port, tcpFrame(SYN, ISN, dst=GATEWAY_IP, dstPort=7,
                                         options=wiretcp.mssOption(1460) + TS))
        self.localISS = self.lastSegment().seq
        self.receive(self.port, tcpFrame(ACK, ISN + 1, self.localISS + 1, dst=GATEWAY_IP, dstPort=7))

    def receive(self, port, frame):
        self.gvtap.switch.receiveFrames(port, [frame])
        self.reactor.advance(0)

    def lastSegment(self):
        packet = ipv4.parse(self.port.frames[-1])
        return wiretcp.parseSegment(bytes(packet.payload))

    def state(self):
        return (list(self.port.frames), list(self.other.frames), self.host.value(),
                self.gvtap.counters.snapshot())


class SameOutcomeTests(SynchronousTestCase):
    """
    With and without the shortcut, the same outcome.
    """

    def assertSameOutcome(self, steps):
        """
        Run C{steps} (a list of C{(which link, frame)}; a frame may be a
        function of the network, for its sequence numbers) on both networks
        and compare after each.
        """
        fast, slow = Network(True), Network(False)
        self.assertEqual(fast.state(), slow.state())
        self.assertEqual(fast.natISS, slow.natISS)
        for which, frame in steps:
            if callable(frame):
                frame = frame(fast)
            for net in (fast, slow):
                net.receive(net.port if which == "guest" else net.other, frame)
            self.assertEqual(fast.state(), slow.state(), f"after {which} frame {frame.hex()}")
            fast.reactor.advance(1)
            slow.reactor.advance(1)
            self.assertEqual(fast.state(), slow.state())
        return fast

    def test_dataBothConnections(self):
        """
        In-order data on the NAT'd and the local connection, then FINs.
        """
        steps = []
        for i in range(3):
            steps.append(("guest", lambda net, i=i: tcpFrame(
                ACK | PSH, ISN + 1 + 5 * i, net.natISS + 1, b"hello")))
            steps.append(("guest", lambda net, i=i: tcpFrame(
                ACK | PSH, ISN + 1 + 4 * i, net.localISS + 1 + 4 * i, b"echo", dst=GATEWAY_IP,
                dstPort=7)))
        steps.append(("guest", lambda net: tcpFrame(ACK | FIN, ISN + 16, net.natISS + 1)))
        fast = self.assertSameOutcome(steps)
        self.assertEqual(fast.host.value(), b"hello" * 3)

    def test_taken(self):
        """
        The shortcut does take the established connections' frames (so the
        comparisons above compare something): the network's own IPv4 entry
        point is not reached for them.
        """
        net = Network(True)
        reached = []
        original = net.gvtap.network._ipv4Received
        net.gvtap.network._ipv4Received = lambda frame: (reached.append(frame), original(frame))
        net.receive(net.port, tcpFrame(ACK | PSH, ISN + 1, net.natISS + 1, b"fast"))
        self.assertEqual(reached, [])
        self.assertEqual(net.host.value(), b"fast")
        net.receive(net.port, tcpFrame(SYN, ISN, dstPort=81, options=wiretcp.mssOption(1460)))
        self.assertEqual(len(reached), 1)

    def test_notTaken(self):
        """
        Frames the shortcut must leave alone: another link's MAC, a spoofed
        source address, a fragment, a broadcast destination, a bad header
        checksum, a malformed TCP header, a RST, a new connection's SYN and a
        segment for no connection.
        """
        good = tcpFrame(ACK | PSH, ISN + 1, 1, b"x")
        fragment = bytearray(good)
        fragment[20] |= 0x20
        fragment[24:26] = b"\x00\x00"
        fragment[24:26] = checksum.internetChecksum(bytes(fragment[14:34])).to_bytes(2, "big")
        badsum = bytearray(good)
        badsum[25] ^= 1
        badOffset = bytearray(good)
        badOffset[46] = 0x40  # data offset 4
        steps = [
            ("other", tcpFrame(ACK | PSH, ISN + 1, 0, b"x", srcMAC=OTHER_MAC)),
            ("guest", tcpFrame(ACK | PSH, ISN + 1, 0, b"x", src=socket.inet_aton("192.168.127.9"))),
            ("guest", bytes(fragment)),
            ("guest", tcpFrame(ACK, ISN + 1, 0, dst=b"\xff\xff\xff\xff")),
            ("guest", bytes(badsum)),
            ("guest", bytes(badOffset)),
            ("guest", tcpFrame(SYN, ISN + 99, dstPort=8080, options=wiretcp.mssOption(1460))),
            ("guest", tcpFrame(ACK, ISN, 5, dstPort=9999)),
            ("guest", tcpFrame(RST, ISN + 1, 0)),
        ]
        self.assertSameOutcome(steps)

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 59), st.integers(1, 255),
                              st.booleans()), min_size=1, max_size=6))
    def test_mutatedFrames(self, mutations):
        """
        Frames of the established connections with any header byte changed,
        the IPv4 checksum fixed up or not: the same outcome either way.
        """
        templates = [
            lambda net: tcpFrame(ACK | PSH, ISN + 1, net.natISS + 1, b"data!"),
            lambda net: tcpFrame(ACK, ISN + 1, net.natISS + 1),
            lambda net: tcpFrame(ACK | PSH, ISN + 1, net.localISS + 1, b"local", dst=GATEWAY_IP,
                                 dstPort=7),
            lambda net: tcpFrame(ACK | FIN, ISN + 1, net.natISS + 1),
        ]
        steps = []
        for template, offset, xor, fixChecksum in mutations:
            steps.append(("guest", lambda net, t=template, o=offset, x=xor, f=fixChecksum:
                          mutated(templates[t](net), o, x, f)))
        self.assertSameOutcome(steps)


def mutated(frame, offset, xor, fixChecksum):
    """
    C{frame} with its byte at C{offset} XORed with C{xor}, and the IPv4
    header checksum recomputed if C{fixChecksum} and the byte is in the header.
    """
    frame = bytearray(frame)
    frame[offset] ^= xor
    if fixChecksum and 14 <= offset < 34:
        frame[24:26] = b"\x00\x00"
        frame[24:26] = checksum.internetChecksum(bytes(frame[14:34])).to_bytes(2, "big")
    return bytes(frame)


# One frame of a batch, for the coalescing tests: (kind, length, flags, tsStep).
_batchFrame = st.tuples(
    st.sampled_from(["next", "next", "next", "next", "gap", "old", "window", "ack",
                     "local", "other", "icmp", "fin"]),
    st.sampled_from([1, 100, 1448, 1448, 1448]),
    st.sampled_from([ACK, ACK, ACK | PSH, ACK | 0x40]),
    st.sampled_from([0, 0, 0, 1, 5, -1]),
)


class CoalescingTests(SynchronousTestCase):
    """
    Runs of segments coalesced within a link read: the same outcome as the
    network without the shortcut, batch after batch.
    """

    def playBatches(self, batches, answers=()):
        """
        Run C{batches} (lists of L{_batchFrame} tuples) as link reads on a
        network with the shortcut (and coalescing) and one without; after
        each, the host side writes C{answers[i]} if given (so that the guest's
        ACK fields have something to acknowledge), and both must agree.
        """
        fast, slow = Network(True), Network(False)
        self.assertTrue(fast.gvtap.switch.fastPath.coalesce)
        self.maxDiff = None
        sent = [0]
        acked = [0]
        ts = [100]
        answered = [0]

        def build(net, kind, length, flags, tsStep):
            ts[0] += tsStep
            options = wiretcp.timestampOption(ts[0] & MASK, 0)
            payload = bytes((sent[0] + i) & 0xFF for i in range(length))
            seq = ISN + 1 + sent[0]
            ack = net.natISS + 1 + acked[0]
            window = 65535
            if kind == "next":
                sent[0] += length
            elif kind == "gap":
                seq += 3000
            elif kind == "old":
                seq -= min(sent[0], 700)
            elif kind == "window":
                sent[0] += length
                window = 30000
            elif kind == "ack":
                acked[0] = answered[0]
                ack = net.natISS + 1 + acked[0]
                sent[0] += length
            elif kind == "local":
                return tcpFrame(ACK | PSH, ISN + 1, net.localISS + 1, b"echo", dst=GATEWAY_IP,
                                dstPort=7)
            elif kind == "other":
                return tcpFrame(ACK | PSH, ISN + 1, 0, b"x", srcMAC=OTHER_MAC)
            elif kind == "icmp":
                return GW_MAC + GUEST_MAC + b"\x08\x00" + ipv4.buildHeader(
                    GUEST_IP, GATEWAY_IP, ipv4.PROTO_ICMP, 12) + b"\x08\x00\xf7\xfc" + b"\x00" * 8
            elif kind == "fin":
                flags = ACK | FIN
                payload = b""
            return tcpFrame(flags, seq, ack, payload, options=options)

        for index, batch in enumerate(batches):
            frames = None
            for net in (fast, slow):
                if frames is None:
                    frames = [build(net, *spec) for spec in batch]
                net.gvtap.switch.receiveFrames(net.port, list(frames))
                net.reactor.advance(0)
            self.assertEqual(fast.state(), slow.state(),
                             f"after batch {index} of {batches}, answers {answers}")
            if index < len(answers) and answers[index]:
                for net in (fast, slow):
                    net.hostSide.dataReceived(b"a" * answers[index])
                    net.reactor.advance(0)
                answered[0] += answers[index]
                self.assertEqual(fast.state(), slow.state(), f"after answer {index}")
        return fast

    def segmentSizes(self):
        """
        A network with the shortcut, and the list of the payload sizes of the
        segments its connections are handed from now on.
        """
        fast = Network(True)
        conn = next(iter(fast.gvtap.tcp._conns.values()))
        sizes = []
        original = type(conn).segmentReceived

        def spy(self, seg):
            sizes.append(len(seg.payload))
            return original(self, seg)

        self.patch(type(conn), "segmentReceived", spy)
        return fast, sizes

    def test_runCoalesced(self):
        """
        A read of in-order segments reaches the connection as one segment with
        all their data, and the host gets the same bytes as without the
        shortcut.
        """
        fast, calls = self.segmentSizes()
        frames = [tcpFrame(ACK | PSH, ISN + 1 + 1000 * i, fast.natISS + 1, b"z" * 1000,
                           options=wiretcp.timestampOption(9, 0)) for i in range(5)]
        fast.gvtap.switch.receiveFrames(fast.port, frames)
        fast.reactor.advance(0)
        self.assertEqual(calls, [5000])
        self.assertEqual(fast.host.value(), b"z" * 5000)
        self.playBatches([[("next", 1448, ACK | PSH, 0)] * 5])

    def test_smallFirstNotHeld(self):
        """
        A run does not start with a segment of half the MSS or less (its ACK
        may be delayed): such segments reach the connection one by one.
        """
        fast, calls = self.segmentSizes()
        frames = [tcpFrame(ACK | PSH, ISN + 1 + 100 * i, fast.natISS + 1, b"z" * 100,
                           options=wiretcp.timestampOption(9, 0)) for i in range(3)]
        fast.gvtap.switch.receiveFrames(fast.port, frames)
        self.assertEqual(calls, [100, 100, 100])
        self.playBatches([[("next", 100, ACK, 0)] * 3, [("next", 1, ACK, 0)] * 2])

    def test_brokenRuns(self):
        """
        A gap, an old segment, a window change, another connection, another
        link's frame, an ICMP echo and a FIN each end a run where they stand.
        """
        run = [("next", 1448, ACK, 0)] * 3
        batches = [run + [(kind, 100, ACK, 0)] + run
                   for kind in ("gap", "old", "window", "local", "other", "icmp", "fin")]
        self.playBatches(batches)

    def test_runAfterOtherConnection(self):
        """
        A run held at the end of a read that began with another connection's
        data: the frames to the guest leave in the order they would without
        the shortcut (the run's ACK before that connection's answer).
        """
        self.playBatches([[("local", 1, ACK, 0), ("next", 1448, ACK, 0)],
                          [("local", 1, ACK, 0)] + [("next", 1448, ACK, 0)] * 3])

    def test_ackOfUnsentData(self):
        """
        A segment that acknowledges data never sent is dropped with its data:
        it starts no run, and what follows it is out of order.
        """
        self.playBatches([[("next", 1, ACK, 0)], [("ack", 1448, ACK, 0), ("next", 1, ACK, 0)]],
                         answers=[40000])

    def test_ackMoves(self):
        """
        Runs whose ACK field moves (the host answered meanwhile) and whose
        timestamps step forward, or back.
        """
        batches = [[("next", 1448, ACK, 1), ("ack", 1448, ACK, 0), ("next", 1448, ACK, -1),
                    ("next", 1448, ACK | PSH, 2)]] * 4
        self.playBatches(batches, answers=[3000, 0, 5000, 0])

    @settings(max_examples=int(os.environ.get("GVTAP_COALESCE_EXAMPLES", "200")), deadline=None)
    @given(st.lists(st.lists(_batchFrame, min_size=1, max_size=12), min_size=1, max_size=6),
           st.lists(st.sampled_from([0, 0, 1000, 40000]), max_size=6))
    def test_anyBatches(self, batches, answers):
        """
        Any batches of in-order, out-of-order and old segments, moving ACK
        fields and windows, timestamps forward and back, other connections'
        and other protocols' frames: the same outcome.
        """
        self.playBatches(batches, answers)
