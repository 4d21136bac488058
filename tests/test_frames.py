"""
Tests for the data path's frames: the prebuilt headers of a connection's data
segments (L{gvtwisted.stack.frames}) are byte for byte what the general builders
make, a data segment reaches the guest link's transport as a header and a
payload, never joined, and the frames of one link read are one batch
(L{gvtwisted.stack.switch.FrameBatch}) whose in-order data reaches a protocol in
one C{dataReceived}.
"""

import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.link.framing import LE16, FramedLinkProtocol
from gvtwisted.link.port import SwitchPort
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.frames import HEADER_LENGTH, TCPFrameSender, TCPFrameTemplate
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.wire import arp, ipv4
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.ethernet import HEADER as ETH_HEADER, TYPE_IPV4
from gvtwisted.wire.tcp import ACK, PSH, SYN
from tests.checksumpolicy import verifyingVariants

FUZZ = settings(max_examples=300, deadline=None)

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
MOVED_MAC = bytes.fromhex("5a94efe40c01")
GW_IP = socket.inet_aton("192.168.127.1")
GUEST_IP = socket.inet_aton("192.168.127.2")
MASK = 0xFFFFFFFF


def referenceFrame(srcMAC, dstMAC, srcIP, dstIP, srcPort, dstPort, seq, ack, flags,
                   window, tsVal, tsEcr, payload):
    """
    The frame the general builders make: Ethernet header, then
    L{ipv4.buildHeader}, then L{wiretcp.buildSegment} with the timestamp option.
    """
    segment = wiretcp.buildSegment(srcIP, dstIP, srcPort, dstPort, seq, ack, flags, window,
                                   wiretcp.timestampOption(tsVal, tsEcr), bytes(payload))
    return (ETH_HEADER.pack(dstMAC, srcMAC, TYPE_IPV4)
            + ipv4.buildHeader(srcIP, dstIP, ipv4.PROTO_TCP, len(segment)) + segment)


class TemplateTests(SynchronousTestCase):
    """
    L{TCPFrameTemplate.fill} makes the same bytes as the general builders.
    """

    checksumPolicyIndependent = True

    @FUZZ
    @given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
           st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
           st.integers(0, 2**33), st.integers(0, 2**33),
           st.sampled_from([ACK, ACK | PSH, ACK | wiretcp.FIN, ACK | PSH | wiretcp.FIN]),
           st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
           st.one_of(st.binary(min_size=1, max_size=3000),
                     st.integers(1, 65468).map(lambda n: bytes(range(256)) * (n // 256)
                                               + bytes(n % 256 or 1))),
           st.integers(0, 3))
    def test_goldenAgainstBuilders(self, srcIP, dstIP, srcPort, dstPort, seq, ack, flags,
                                   window, tsVal, tsEcr, payload, offset):
        """
        For any addresses, ports, numbers, flags, window, timestamps and
        payload (up to a full 64 KiB segment, at any alignment), header plus
        payload equals the reference frame exactly.
        """
        template = TCPFrameTemplate(GW_MAC, GUEST_MAC, srcIP, dstIP, srcPort, dstPort)
        view = memoryview(b"\x00" * offset + payload)[offset:]
        header = template.fill(seq, ack, flags, window, tsVal, tsEcr, view)
        self.assertIsInstance(header, bytes)
        self.assertEqual(len(header), HEADER_LENGTH)
        self.assertEqual(header + payload, referenceFrame(
            GW_MAC, GUEST_MAC, srcIP, dstIP, srcPort, dstPort, seq & MASK, ack & MASK, flags,
            window, tsVal, tsEcr, payload))

    def test_reuse(self):
        """
        Filling the same template again leaves nothing of the previous segment.
        """
        template = TCPFrameTemplate(GW_MAC, GUEST_MAC, GW_IP, GUEST_IP, 80, 40000)
        template.fill(MASK, MASK, ACK | PSH, 0xFFFF, MASK, MASK, b"\xff" * 1461)
        header = template.fill(1, 2, ACK, 3, 4, 5, b"ab")
        self.assertEqual(header + b"ab", referenceFrame(
            GW_MAC, GUEST_MAC, GW_IP, GUEST_IP, 80, 40000, 1, 2, ACK, 3, 4, 5, b"ab"))


class PartsPort:
    """
    A guest link that takes frames in pieces, and records both kinds.
    """

    name = "parts"

    def __init__(self):
        self.frames = []
        self.parts = []

    def sendFrame(self, frame):
        self.frames.append(frame)

    def sendFrameParts(self, parts):
        self.parts.append(tuple(parts))


class NetworkTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.pcap = []
        self.switch = Switch(self.clock, self.counters, tap=self.pcap.append)
        self.network = VirtualNetwork(self.clock, NetworkConfig(mtu=1500), self.switch,
                                      self.counters)
        self.guest = PartsPort()
        self.switch.attach(self.guest)

    def learn(self, mac=GUEST_MAC):
        message = arp.build(arp.REQUEST, mac, GUEST_IP, b"\x00" * 6, GUEST_IP)
        self.switch.receiveFrame(self.guest, b"\xff" * 6 + mac + b"\x08\x06" + message)
        del self.guest.frames[:]
        del self.pcap[:]


class SenderTests(NetworkTestCase):
    """
    L{TCPFrameSender} sends through the switch in pieces when it can, and
    says so when it cannot.
    """

    def test_sendsParts(self):
        """
        With the guest's MAC known, the segment goes to the link as the
        header and the very payload object; the pcap tap sees the joined frame.
        """
        self.learn()
        sender = TCPFrameSender(self.network, GW_IP, GUEST_IP, 80, 40000)
        payload = b"x" * 1000
        self.assertTrue(sender(7, 8, ACK | PSH, 100, 9, 10, payload))
        [(header, sent)] = self.guest.parts
        self.assertIs(sent, payload)
        expected = referenceFrame(GW_MAC, GUEST_MAC, GW_IP, GUEST_IP, 80, 40000, 7, 8,
                                  ACK | PSH, 100, 9, 10, payload)
        self.assertEqual(header + sent, expected)
        self.assertEqual(self.pcap, [expected])
        self.assertEqual(self.guest.frames, [])

    def test_unknownMAC(self):
        """
        Without the guest's MAC the sender sends nothing and returns False, so
        the connection takes the general path (which asks ARP).
        """
        sender = TCPFrameSender(self.network, GW_IP, GUEST_IP, 80, 40000)
        self.assertFalse(sender(7, 8, ACK, 100, 9, 10, b"data"))
        self.assertEqual((self.guest.parts, self.guest.frames), ([], []))

    def test_tooBig(self):
        """
        A payload that would not fit the MTU is left to the general path
        (which fragments).
        """
        self.learn()
        sender = TCPFrameSender(self.network, GW_IP, GUEST_IP, 80, 40000)
        self.assertTrue(sender(7, 8, ACK, 100, 9, 10, b"y" * (1500 - 52)))
        self.assertFalse(sender(7, 8, ACK, 100, 9, 10, b"y" * (1500 - 51)))
        self.assertEqual(len(self.guest.parts), 1)

    def test_macMoves(self):
        """
        When the guest's address is learnt at another MAC, the next segment
        goes there.
        """
        self.learn()
        sender = TCPFrameSender(self.network, GW_IP, GUEST_IP, 80, 40000)
        sender(1, 2, ACK, 3, 4, 5, b"one")
        self.network._arpCache.clear()
        self.learn(MOVED_MAC)
        sender(1, 2, ACK, 3, 4, 5, b"two")
        self.assertEqual([parts[0][:6] for parts in self.guest.parts], [GUEST_MAC, MOVED_MAC])

    def test_unknownDropped(self):
        """
        A frame in pieces to a MAC no live link holds is dropped and counted,
        not flooded (issue 9: no guest sees another's traffic).
        """
        other = PartsPort()
        self.switch.attach(other)
        self.network.sendFrameParts((b"\x5a\x94\xef\xe4\x0c\x77" + GW_MAC + b"\x08\x00", b"data"))
        self.assertEqual(self.guest.frames + other.frames, [])
        self.assertEqual(self.counters.get("drop.switch.unknownDestination"), 1)

    def test_broadcastFloods(self):
        """
        A broadcast frame in pieces is flooded joined to every other port.
        """
        other = PartsPort()
        self.switch.attach(other)
        self.network.sendFrameParts((b"\xff" * 6 + GW_MAC + b"\x08\x00", b"data"))
        self.assertEqual(self.guest.frames, [b"\xff" * 6 + GW_MAC + b"\x08\x00data"])
        self.assertEqual(other.frames, self.guest.frames)
        self.assertEqual(self.guest.parts + other.parts, [])


class LinkTests(SynchronousTestCase):
    """
    A switch port over a framed stream link writes the pieces as they are.
    """

    checksumPolicyIndependent = True

    def test_framedLinkWritesPieces(self):
        """
        L{SwitchPort.sendFrameParts} hands the pieces to the framed protocol,
        which writes its length header and then the pieces: the transport's
        bytes are those of the joined frame, and the counters count it.
        """
        clock = Clock()
        counters = Counters(clock)
        switch = Switch(clock, counters)
        protocol = FramedLinkProtocol(LE16)
        transport = StringTransport()
        writes = []
        original = transport.writeSequence
        transport.writeSequence = lambda seq: (writes.append(tuple(seq)), original(seq))
        protocol.makeConnection(transport)
        port = SwitchPort(switch, counters, "test")
        port.attach(protocol)
        header, payload = b"h" * 66, b"p" * 1000
        port.sendFrameParts((header, payload))
        self.assertEqual(writes, [(LE16.pack(1066), header, payload)])
        self.assertIs(writes[0][2], payload)
        self.assertEqual(transport.value(), LE16.pack(1066) + header + payload)
        self.assertEqual((counters.get("link.framesSent"), counters.get("link.bytesSent")),
                         (1, 1066))


class Sink(Protocol):
    """
    Writes C{data} as soon as it is connected.
    """

    data = b""

    def connectionMade(self):
        self.transport.write(self.data)


class GoldenTransferTests(NetworkTestCase):
    """
    A whole transfer from the gateway to a guest gives byte-identical frames
    with the prebuilt headers and without them.
    """

    def transfer(self, templates, ackEach=False, data=bytes(range(256)) * 40 + b"tail"):
        """
        The whole transfer; with C{ackEach} the guest acknowledges one
        segment at a time, so that each ACK opens the window by a segment or
        two.
        """
        self.setUp()
        self.patch(TCPDemux, "frameTemplates", templates)
        demux = TCPDemux(self.clock, self.network, self.counters)
        self.network.tcp = demux
        factory = Factory.forProtocol(Sink)
        Sink.data = data
        self.addCleanup(setattr, Sink, "data", b"")
        demux.listenTCP(7777, factory)
        self.learn()

        def send(flags, seq, ack, tsVal, tsEcr=0, options=b""):
            segment = wiretcp.buildSegment(
                GUEST_IP, GW_IP, 40000, 7777, seq, ack, flags, 0xFFFF,
                options + wiretcp.timestampOption(tsVal, tsEcr))
            self.switch.receiveFrame(self.guest, GW_MAC + GUEST_MAC + b"\x08\x00"
                                     + ipv4.buildHeader(GUEST_IP, GW_IP, ipv4.PROTO_TCP,
                                                        len(segment)) + segment)

        pieces = []

        def taken():
            # Whole frames (ACKs, the SYN-ACK) and frames in pieces, in order:
            # each kind keeps its own order, and a data segment never follows
            # a bare segment of the same turn here.
            frames = self.guest.frames + [b"".join(parts) for parts in self.guest.parts]
            pieces.extend(self.guest.parts)
            del self.guest.parts[:], self.guest.frames[:]
            return frames

        send(SYN, 1000, 0, 50, options=wiretcp.mssOption(1460) + wiretcp.windowScaleOption(7))
        [synAck] = taken()
        packet = ipv4.parse(synAck)
        iss = wiretcp.parseSegment(packet.payload).seq
        send(ACK, 1001, iss + 1, 51)
        self.clock.advance(0)
        frames = []
        # Acknowledge everything that came, until the data and the PSH are in.
        out = taken()
        for _ in range(400):
            if not out:
                break
            frames.extend(out)
            if ackEach:
                new = []
                for frame in out:
                    one = wiretcp.parseSegment(ipv4.parse(frame).payload)
                    send(ACK, 1001, one.seq + len(one.payload), 52)
                    self.clock.advance(0)
                    new.extend(taken())
                out = new
                continue
            last = wiretcp.parseSegment(ipv4.parse(out[-1]).payload)
            send(ACK, 1001, last.seq + len(last.payload), 52)
            self.clock.advance(0)
            out = taken()
        self.clock.advance(0.1)
        return synAck, frames, pieces

    def test_byteExact(self):
        """
        The data segments' frames, their timestamps included (the clock is
        the same), are identical either way, and with templates on they reach
        the link in pieces, their checksums summed a burst at a time.
        """
        from gvtwisted.stack import tcp

        bursts = []
        foldEach = tcp.foldEach
        self.patch(tcp, "foldEach", lambda data, size: (bursts.append(len(data) // size),
                                                        foldEach(data, size))[1])
        plainSyn, plain, plainPieces = self.transfer(False)
        self.assertEqual(plainPieces, [])
        self.assertEqual(bursts, [])
        fastSyn, fast, fastPieces = self.transfer(True)
        # The payloads' checksums were summed a burst at a time.
        self.assertTrue(bursts and max(bursts) > 1, bursts)
        self.assertEqual(len(fastPieces), len(fast))
        self.assertEqual(fastSyn, plainSyn)
        self.assertEqual(len(fast), len(plain))
        self.assertGreater(len(plain), 7)
        self.assertEqual(fast, plain)
        payload = b"".join(bytes(wiretcp.parseSegment(ipv4.parse(f).payload).payload)
                           for f in plain)
        self.assertEqual(payload, bytes(range(256)) * 40 + b"tail")


    def test_checksumsSummedAhead(self):
        """
        When each ACK opens the window by a segment or two, the payloads'
        checksums still come from sums made a burst at a time over the unsent
        data (kept by sequence number), not one numpy call per segment, and
        the frames are byte-identical to those built without templates.
        """
        from gvtwisted.stack import frames as framesModule
        from gvtwisted.stack import tcp

        data = bytes(range(256)) * 400
        plainSyn, plain, _ = self.transfer(False, ackEach=True, data=data)
        single = []
        bursts = []
        fold = framesModule.fold
        foldEach = tcp.foldEach
        self.patch(framesModule, "fold", lambda data: (single.append(len(data)), fold(data))[1])
        self.patch(tcp, "foldEach", lambda data, size: (bursts.append(len(data) // size),
                                                        foldEach(data, size))[1])
        fastSyn, fast, _ = self.transfer(True, ackEach=True, data=data)
        self.assertEqual(fast, plain)
        dataSegments = [f for f in fast if len(f) > 1000]
        self.assertGreater(len(dataSegments), 60)
        # No full segment summed alone, and a numpy call for many segments
        # at a time, not one for each ACK's segment or two.
        self.assertEqual([n for n in single if n == 1460], [])
        self.assertLessEqual(len(bursts), len(dataSegments) // 16, bursts)


class Chunks(Protocol):
    """
    Records each C{dataReceived} separately.
    """

    def connectionMade(self):
        self.chunks = []
        self.factory.protocols.append(self)

    def dataReceived(self, data):
        self.chunks.append(data)


class BatchTests(NetworkTestCase):
    """
    The frames of one read of a link are one batch: a connection's in-order
    data of the batch goes to its protocol in one C{dataReceived}.
    """

    def setUp(self):
        NetworkTestCase.setUp(self)
        self.demux = TCPDemux(self.clock, self.network, self.counters)
        self.network.tcp = self.demux
        self.factory = Factory.forProtocol(Chunks)
        self.factory.protocols = []
        self.demux.listenTCP(7777, self.factory)
        self.learn()
        self.switch.receiveFrame(self.guest, self.segmentFrame(SYN, 1000, 0,
                                                               wiretcp.mssOption(1460)))
        [synAck] = self.guest.frames
        del self.guest.frames[:]
        self.iss = wiretcp.parseSegment(ipv4.parse(synAck).payload).seq
        self.switch.receiveFrame(self.guest, self.segmentFrame(ACK, 1001, self.iss + 1))
        [self.protocol] = self.factory.protocols

    def segmentFrame(self, flags, seq, ack, options=b"", payload=b""):
        segment = wiretcp.buildSegment(GUEST_IP, GW_IP, 40000, 7777, seq, ack, flags, 0xFFFF,
                                       options, payload)
        return (GW_MAC + GUEST_MAC + b"\x08\x00"
                + ipv4.buildHeader(GUEST_IP, GW_IP, ipv4.PROTO_TCP, len(segment)) + segment)

    def dataFrames(self, *payloads):
        frames, seq = [], 1001
        for payload in payloads:
            frames.append(self.segmentFrame(ACK | PSH, seq, self.iss + 1, payload=payload))
            seq += len(payload)
        return frames

    def test_oneDataReceivedPerBatch(self):
        """
        Three data segments in one read reach the protocol as one chunk of
        bytes; the ACK that follows acknowledges all of them.
        """
        self.switch.receiveFrames(self.guest, self.dataFrames(b"one", b"two", b"three"))
        self.assertEqual(self.protocol.chunks, [b"onetwothree"])
        self.assertIs(type(self.protocol.chunks[0]), bytes)
        self.clock.advance(0)
        [ack] = [wiretcp.parseSegment(ipv4.parse(f).payload) for f in self.guest.frames]
        self.assertEqual(ack.ack, 1001 + 11)

    def test_withoutBatch(self):
        """
        Segments switched one by one (no batch) are delivered one by one.
        """
        for frame in self.dataFrames(b"one", b"two"):
            self.switch.receiveFrame(self.guest, frame)
        self.assertEqual(self.protocol.chunks, [b"one", b"two"])

    def test_pausedDuringBatch(self):
        """
        Data for a paused protocol stays queued as bytes of its own (not views
        into the link's buffer) and comes, whole, when it resumes.
        """
        conn = self.protocol.transport
        conn.pauseProducing()
        self.switch.receiveFrames(self.guest, self.dataFrames(b"one", b"two"))
        self.assertEqual(self.protocol.chunks, [])
        self.assertEqual([type(data) for data in conn._rcvQueue], [bytes])
        conn.resumeProducing()
        self.assertEqual(self.protocol.chunks, [b"onetwo"])

    def test_atEndOnce(self):
        """
        A call registered during a batch runs once, after the last frame,
        also when batches nest.
        """
        calls = []
        batch = self.switch.batch

        def frame(f):
            calls.append(("frame", batch.depth))
            if len(calls) == 1:
                batch.atEnd(lambda: calls.append(("end", batch.depth)))
                self.switch.receiveFrames(self.guest, [b"", b""])

        self.switch.receiveFrame = lambda port, f: frame(f)
        self.switch.receiveFrames(self.guest, [b"a", b"b"])
        self.assertEqual(calls, [("frame", 1), ("frame", 2), ("frame", 2), ("frame", 1),
                                 ("end", 0)])

    def test_linkReadIsBatch(self):
        """
        A framed link's read of several frames is one batch: its switch port
        counts them and the protocol above gets one C{dataReceived}.
        """
        from twisted.internet.testing import StringTransport

        link = FramedLinkProtocol(LE16)
        link.makeConnection(StringTransport())
        self.switch.detach(self.guest)
        port = SwitchPort(self.switch, self.counters, "link")
        port.attach(link)
        # The guest's MAC moves to the new port with the next frames it sends.
        self.switch._table.pop(GUEST_MAC, None)
        stream = b"".join(LE16.pack(len(f)) + f for f in self.dataFrames(b"ab", b"cd", b"ef"))
        before = self.counters.get("link.framesReceived")
        link.dataReceived(stream)
        self.assertEqual(self.protocol.chunks, [b"abcdef"])
        self.assertEqual(self.counters.get("link.framesReceived") - before, 3)


verifyingVariants(globals())
