"""
Tests for offload on gvtap's own guest link: the virtio-net header codec
(L{gvtwisted.wire.virtio}), the negotiation both ways (L{gvtwisted.link.offload},
L{gvtwisted.link.listeners.ConnectOrHTTP}, L{gvtwisted.guest.forwarder}), and
super-segments that are byte for byte what the plain path sends once cut as a
NIC would cut them.
"""

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.guest import forwarder as guestforwarder
from gvtwisted.guest.tuntap import OFFLOADS
from gvtwisted.link import offload
from gvtwisted.link.framing import BE32, LE16, FramedLinkProtocol
from gvtwisted.link.listeners import ConnectOrHTTP, GuestLinkProtocol, OffloadGuestLink
from gvtwisted.link.port import SwitchPort
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.wire import ipv4, virtio
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.checksum import internetChecksum
from gvtwisted.wire.tcp import ACK, FIN, PSH, SYN
from tests.checksumpolicy import verifyingVariants
from tests.test_frames import GUEST_IP, GUEST_MAC, GW_IP, GW_MAC, NetworkTestCase, PartsPort

FUZZ = settings(max_examples=200, deadline=None)

GVPROXY_404 = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"X-Content-Type-Options: nosniff\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
               b"Content-Length: 19\r\n\r\n404 page not found\n")


def tcpFrame(payload, flags=ACK | PSH, seq=1000, srcIP=GUEST_IP, dstIP=GW_IP):
    """
    A complete Ethernet + IPv4 + TCP (with timestamps) frame.
    """
    segment = wiretcp.buildSegment(srcIP, dstIP, 40000, 80, seq, 5, flags, 0xFFFF,
                                   wiretcp.timestampOption(7, 8), payload)
    return (GW_MAC + GUEST_MAC + b"\x08\x00"
            + ipv4.buildHeader(srcIP, dstIP, ipv4.PROTO_TCP, len(segment)) + segment)


def partial(frame):
    """
    C{frame} with its TCP checksum replaced by the pseudo-header's sum only,
    as a kernel with checksum offload leaves it.
    """
    out = bytearray(frame)
    tcpLength = len(frame) - 34
    pseudo = (int.from_bytes(frame[26:34], "big") + 6 + tcpLength) % 0xFFFF
    out[50:52] = pseudo.to_bytes(2, "big")
    return bytes(out)


class HeaderCodecTests(SynchronousTestCase):
    """
    The 10-byte C{struct virtio_net_hdr}.
    """

    checksumPolicyIndependent = True

    def test_golden(self):
        """
        A TCPv4 super-segment's header, byte for byte as the kernel lays it out
        (little-endian u16 fields after two bytes).
        """
        data = virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16)
        self.assertEqual(data, bytes.fromhex("01 01 4200 a805 2200 1000"))
        self.assertEqual(virtio.parse(data), (1, 1, 66, 1448, 34, 16))
        self.assertEqual(virtio.PLAIN, b"\0" * 10)
        self.assertEqual(virtio.parse(virtio.PLAIN), (0, 0, 0, 0, 0, 0))

    @FUZZ
    @given(st.integers(0, 3), st.sampled_from([0, 1, 3, 4, 0x81]),
           st.integers(0, 0xFFFF), st.integers(1, 0xFFFF),
           st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
    def test_roundTrip(self, flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset):
        """
        Whatever valid header is packed parses back to the same fields.
        """
        data = virtio.pack(flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset)
        self.assertEqual(len(data), virtio.SIZE)
        self.assertEqual(tuple(virtio.parse(data)),
                         (flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset))

    def test_refused(self):
        """
        A short header, an unknown GSO type, GSO without a size and a
        checksum range past the frame are refused with a clear error.
        """
        for data, frameLength, why in [
                (b"\0" * 9, None, "needs 10"),
                (virtio.pack(gsoType=2, gsoSize=1), None, "unknown gso_type"),
                (virtio.pack(gsoType=virtio.GSO_TCPV4), None, "without gso_size"),
                (virtio.pack(virtio.F_NEEDS_CSUM, csumStart=34, csumOffset=16), 51, "outside")]:
            e = self.assertRaises(virtio.VirtioHeaderError, virtio.parse, data, frameLength)
            self.assertIn(why, str(e))

    @FUZZ
    @given(st.binary(min_size=0, max_size=3000), st.sampled_from([0, ACK, ACK | PSH | FIN]))
    def test_completeChecksum(self, payload, flags):
        """
        Completing a partial TCP checksum gives exactly the full checksum the
        builders compute.
        """
        frame = tcpFrame(payload, flags or ACK)
        self.assertEqual(bytes(virtio.completeChecksum(partial(frame), 34, 16)), frame)

    @FUZZ
    @given(st.integers(1, 20000), st.integers(64, 2000), st.integers(0, 2**32 - 1),
           st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN]))
    def test_segmentMatchesBuilders(self, length, size, seq, flags):
        """
        Software segmentation gives the frames the builders make for each
        piece: sequence numbers advanced, PSH and FIN on the last piece only,
        every checksum complete; from a partial checksum as well.
        """
        payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
        frame = tcpFrame(payload, flags, seq)
        header = virtio.VirtioNetHeader(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, size, 34, 16)
        expected = []
        for i in range(0, length, size):
            last = i + size >= length
            expected.append(tcpFrame(payload[i:i + size], flags if last else flags & ~(PSH | FIN),
                                     (seq + i) & 0xFFFFFFFF))
        self.assertEqual(virtio.segmentTCPv4(frame, header), expected)
        self.assertEqual(virtio.segmentTCPv4(partial(frame), header), expected)


class OffloadPort(PartsPort):
    """
    A guest link with offload: records each frame's virtio-net header too.
    """

    offload = True

    def __init__(self):
        PartsPort.__init__(self)
        self.vnets = []

    def sendFrameParts(self, parts, vnet=None):
        self.parts.append(tuple(parts))
        self.vnets.append(vnet)


class Sink(Protocol):
    data = b""

    def connectionMade(self):
        self.transport.write(self.data)


DATA = bytes(range(256)) * 1200 + b"tail"


class SuperSegmentTests(NetworkTestCase):
    """
    The gateway's TCP sender toward a link with offload: super-segments with
    partial checksums, which, cut by the guest's kernel, are the plain path's
    frames byte for byte.
    """

    def transfer(self, offload):
        self.setUp()
        if offload:
            self.switch.detach(self.guest)
            self.guest = OffloadPort()
            self.switch.attach(self.guest)
        demux = TCPDemux(self.clock, self.network, self.counters)
        self.network.tcp = demux
        Sink.data = DATA
        self.addCleanup(setattr, Sink, "data", b"")
        demux.listenTCP(7777, Factory.forProtocol(Sink))
        self.learn()

        def send(flags, seq, ack, tsVal, options=b""):
            segment = wiretcp.buildSegment(
                GUEST_IP, GW_IP, 40000, 7777, seq, ack, flags, 0xFFFF,
                options + wiretcp.timestampOption(tsVal, 0))
            self.switch.receiveFrame(self.guest, GW_MAC + GUEST_MAC + b"\x08\x00"
                                     + ipv4.buildHeader(GUEST_IP, GW_IP, ipv4.PROTO_TCP,
                                                        len(segment)) + segment)

        sent = []

        def taken():
            frames = list(self.guest.frames)
            for i, parts in enumerate(self.guest.parts):
                vnet = self.guest.vnets[i] if offload else None
                frames.append(b"".join(parts))
                sent.append((vnet, b"".join(parts)))
            del self.guest.parts[:], self.guest.frames[:]
            if offload:
                del self.guest.vnets[:]
            return frames

        send(SYN, 1000, 0, 50, wiretcp.mssOption(1460) + wiretcp.windowScaleOption(7))
        [synAck] = taken()
        iss = wiretcp.parseSegment(ipv4.parse(synAck).payload).seq
        send(ACK, 1001, iss + 1, 51)
        self.clock.advance(0)
        for _ in range(50):
            out = taken()
            if not out:
                break
            last = wiretcp.parseSegment(ipv4.parse(out[-1]).payload)
            send(ACK, 1001, last.seq + len(last.payload), 52)
            self.clock.advance(0)
        self.clock.advance(0.1)
        return sent

    def test_byteExact(self):
        """
        Each data segment toward an offload link carries a virtio-net header
        (NEEDS_CSUM at 34+16, GSO_TCPV4 with the link MSS when longer than
        it), its checksum field the pseudo-header's sum; completing it gives
        a valid checksum, and cutting the super-segments into MSS pieces gives
        exactly the frames the plain path sent.
        """
        plain = [frame for _, frame in self.transfer(False)]
        sent = self.transfer(True)
        self.assertGreater(len(plain), 30)
        supers = 0
        cut = []
        for vnet, frame in sent:
            header = virtio.parse(vnet, len(frame))
            self.assertEqual((header.flags, header.hdrLen, header.csumStart, header.csumOffset),
                             (virtio.F_NEEDS_CSUM, 66, 34, 16))
            packet = ipv4.parse(frame)
            self.assertTrue(wiretcp.verifyChecksum(
                packet.src, packet.dst,
                bytes(virtio.completeChecksum(frame, 34, 16))[34:]))
            payloadLength = len(frame) - 66
            if payloadLength > 1448:
                supers += 1
                self.assertEqual((header.gsoType, header.gsoSize), (virtio.GSO_TCPV4, 1448))
                self.assertLessEqual(len(frame) - 14, 0xFFFF)
            else:
                self.assertEqual(header.gsoType, virtio.GSO_NONE)
            cut.extend(virtio.segmentTCPv4(frame, header))
        self.assertGreater(supers, 0)
        self.assertLess(len(sent), len(plain) / 4)
        self.assertEqual(cut, plain)
        payload = b"".join(bytes(wiretcp.parseSegment(ipv4.parse(f).payload).payload)
                           for f in cut)
        self.assertEqual(payload, DATA)

    def test_linkLosesOffload(self):
        """
        A super-segment that reaches a port whose link has no offload (any
        more) is cut into complete frames there, not sent as it is.
        """
        clock = Clock()
        counters = Counters(clock)
        protocol = FramedLinkProtocol(LE16)
        protocol.makeConnection(StringTransport())
        port = SwitchPort(self.switch, counters, "plain")
        port.attach(protocol)
        payload = bytes(range(256)) * 20
        frame = partial(tcpFrame(payload))
        vnet = virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16)
        port.sendFrameParts((frame[:66], frame[66:]), vnet)
        out = protocol.transport.value()
        frames = []
        while out:
            (n,) = LE16.unpack_from(out)
            frames.append(out[2:2 + n])
            out = out[2 + n:]
        self.assertEqual(frames, virtio.segmentTCPv4(frame, virtio.parse(vnet)))
        self.assertEqual(len(frames), 4)


class HostNegotiationTests(SynchronousTestCase):
    """
    The host end of C{--listen}: the probe, and which link a POST makes.
    """

    checksumPolicyIndependent = True

    def connect(self, offloadOn=True, verify=False):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.ports = []

        class Port:
            counters = self.counters

            def __init__(port, name):
                port.name = name
                port.frames = []
                self.ports.append(port)

            def attach(port, protocol):
                port.protocol = protocol
                protocol.frameReceived = port.frames.append
                protocol.framesReceived = port.frames.extend

            def detach(port):
                pass

        self.protocol = ConnectOrHTTP(Port, None, "peer", self.counters, self.clock,
                                      offload=lambda: offloadOn,
                                      completeChecksums=lambda: verify, gatewayMAC=GW_MAC)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_probeAccepted(self):
        """
        C{GET /offload} gets C{200 virtio-net-hdr}, and the POST with the
        offload header on the same connection makes an offload link: BE32
        lengths, a virtio-net header on each frame both ways.
        """
        self.connect()
        self.protocol.dataReceived(offload.OFFLOAD_PROBE)
        self.assertEqual(self.transport.value(), offload.PROBE_ACCEPTED)
        self.assertEqual(offload.parseProbeResponse(self.transport.value()), (True, b""))
        self.transport.clear()
        frame = tcpFrame(b"x" * 100)
        self.protocol.dataReceived(
            guestforwarder.connectRequest(offload=True)
            + BE32.pack(len(frame) + 10) + virtio.PLAIN + frame)
        link = self.ports[0].protocol
        self.assertIsInstance(link, OffloadGuestLink)
        self.assertTrue(link.offload)
        self.assertEqual(self.ports[0].frames, [frame])
        link.sendFrame(b"f" * 60)
        self.assertEqual(self.transport.value(), BE32.pack(70) + virtio.PLAIN + b"f" * 60)
        self.assertEqual(self.counters.get("link.offloadConnects"), 1)

    def test_partialChecksumCompletedWhenVerifying(self):
        """
        A frame with NEEDS_CSUM reaches the stack as it came (the stack does
        not verify) or, with C{--verify-checksums}, with its checksum complete;
        a bad header costs that frame only, counted.
        """
        payload = b"y" * 3000
        for verify, expected in [(False, partial(tcpFrame(payload))), (True, tcpFrame(payload))]:
            self.connect(verify=verify)
            self.protocol.dataReceived(offload.OFFLOAD_PROBE
                                       + guestforwarder.connectRequest(offload=True))
            frame = partial(tcpFrame(payload))
            vnet = virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16)
            bad = virtio.pack(virtio.F_NEEDS_CSUM, 0, 0, 0, 4000, 16)
            self.protocol.dataReceived(BE32.pack(len(frame) + 10) + vnet + frame
                                       + BE32.pack(len(frame) + 10) + bad + frame)
            self.assertEqual(self.ports[0].frames, [expected])
            self.assertEqual(self.counters.get("drop.link.virtioHeader"), 1)

    def test_shortFramesCounted(self):
        """
        Frames too short for a virtio-net header (one byte, nine) are dropped
        and counted; the frames after them on the link still arrive.
        """
        self.connect()
        self.protocol.dataReceived(offload.OFFLOAD_PROBE
                                   + guestforwarder.connectRequest(offload=True))
        frame = tcpFrame(b"z" * 10)
        self.protocol.dataReceived(BE32.pack(1) + b"\0" + BE32.pack(9) + bytes(9)
                                   + BE32.pack(len(frame) + 10) + virtio.PLAIN + frame)
        self.assertEqual(self.ports[0].frames, [frame])
        self.assertEqual(self.counters.get("drop.link.virtioHeader"), 2)

    def test_otherGuestGetsCompleteFrames(self):
        """
        A super-segment with a partial checksum for another guest's MAC (not
        the gateway's) is cut and completed at the link: what the switch
        forwards is what a NIC would have sent.
        """
        self.connect()
        self.protocol.dataReceived(offload.OFFLOAD_PROBE + guestforwarder.connectRequest(offload=True))
        other = bytes.fromhex("5a94efe40c99")
        frame = other + tcpFrame(bytes(range(256)) * 12)[6:]
        vnet = virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1000, 34, 16)
        self.protocol.dataReceived(BE32.pack(len(frame) + 10) + vnet + partial(frame))
        self.assertEqual(self.ports[0].frames, virtio.segmentTCPv4(frame, virtio.parse(vnet)))
        self.assertEqual(len(self.ports[0].frames), 4)

    def test_probeRefusedWhenOff(self):
        """
        With offload off the host answers the probe as gvproxy does (404), and
        a POST with the offload header still makes a plain LE16 link.
        """
        self.connect(offloadOn=False)
        self.protocol.dataReceived(offload.OFFLOAD_PROBE)
        self.assertEqual(offload.parseProbeResponse(self.transport.value()), (False, b""))
        self.protocol.dataReceived(guestforwarder.connectRequest(offload=True))
        link = self.ports[0].protocol
        self.assertIs(type(link), GuestLinkProtocol)
        self.assertIs(link.header, LE16)

    def test_gvforwarderWithoutProbe(self):
        """
        A gvforwarder sends no probe and no header: a plain LE16 link, frames
        as they are.
        """
        self.connect()
        frame = tcpFrame(b"z" * 10)
        self.protocol.dataReceived(b"POST /connect HTTP/1.1\r\nHost: unix\r\n\r\n"
                                   + LE16.pack(len(frame)) + frame)
        link = self.ports[0].protocol
        self.assertFalse(link.offload)
        self.assertEqual(self.ports[0].frames, [frame])
        self.assertEqual(self.transport.value(), b"")


class FakeDevice:
    """
    A TAP opened with IFF_VNET_HDR, recording what the link does to it.
    """

    vnetHeader = True

    def __init__(self):
        self.written = []
        self.offloadCalls = []
        self.frameReceived = None
        self.counters = Counters(Clock())

    def setReceiver(self, receiver, batchReceiver=None):
        self.frameReceived = receiver
        self.framesReceived = batchReceiver

    def writeFrame(self, frame):
        self.written.append(frame)

    def setOffloads(self, offloads):
        self.offloadCalls.append(offloads)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


class GuestNegotiationTests(SynchronousTestCase):
    """
    gvtap-guest's end: probe, then POST, with or without offload.
    """

    checksumPolicyIndependent = True

    def connect(self):
        self.clock = Clock()
        self.device = FakeDevice()
        self.link = guestforwarder.GuestLinkProtocol(
            self.device, guestforwarder.connectRequest(), probe=True, clock=self.clock)
        self.transport = StringTransport()
        self.link.makeConnection(self.transport)
        self.assertEqual(self.transport.value(), offload.OFFLOAD_PROBE)
        self.transport.clear()

    def test_offloadOn(self):
        """
        After gvtap's 200 the guest posts with the offload header, turns the
        TAP's offloads on and carries frames with their virtio-net headers,
        BE32-framed, unchanged both ways.
        """
        self.connect()
        self.link.dataReceived(offload.PROBE_ACCEPTED)
        self.assertTrue(self.link.offload)
        self.assertEqual(self.device.offloadCalls, [OFFLOADS])
        request = guestforwarder.connectRequest(offload=True)
        self.assertIn(b"\r\nX-Gvtap-Offload: virtio-net-hdr\r\n", request)
        self.assertEqual(self.transport.value(), request)
        self.transport.clear()
        vnetFrame = virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16) + b"e" * 5000
        self.device.frameReceived(vnetFrame)
        self.assertEqual(self.transport.value(), BE32.pack(len(vnetFrame)) + vnetFrame)
        self.link.dataReceived(BE32.pack(len(vnetFrame)) + vnetFrame)
        self.assertEqual(self.device.written, [vnetFrame])
        self.link.connectionLost(None)
        self.assertEqual(self.device.offloadCalls, [OFFLOADS, 0])

    def test_gvproxy404(self):
        """
        After gvproxy's 404 (read to the end of its body, in pieces) the guest
        posts plainly on the same connection; frames lose their (empty)
        virtio-net header toward the host and get one toward the TAP, and a
        partial checksum or a super-segment from the kernel is completed or
        cut first.
        """
        self.connect()
        for i in range(0, len(GVPROXY_404), 7):
            self.assertEqual(self.transport.value(), b"")
            self.link.dataReceived(GVPROXY_404[i:i + 7])
        self.assertFalse(self.link.offload)
        self.assertEqual(self.device.offloadCalls, [])
        self.assertEqual(self.transport.value(), guestforwarder.connectRequest())
        self.transport.clear()
        frame = tcpFrame(b"a" * 100)
        self.device.frameReceived(virtio.PLAIN + frame)
        self.assertEqual(self.transport.value(), LE16.pack(len(frame)) + frame)
        self.transport.clear()
        self.device.frameReceived(virtio.pack(virtio.F_NEEDS_CSUM, 0, 66, 0, 34, 16)
                                  + partial(frame))
        self.assertEqual(self.transport.value(), LE16.pack(len(frame)) + frame)
        self.transport.clear()
        big = tcpFrame(b"b" * 3000)
        self.device.frameReceived(
            virtio.pack(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16) + partial(big))
        pieces = virtio.segmentTCPv4(big, virtio.parse(virtio.pack(gsoType=1, gsoSize=1448)))
        self.assertEqual(self.transport.value(),
                         b"".join(LE16.pack(len(p)) + p for p in pieces))
        self.link.dataReceived(LE16.pack(len(frame)) + frame)
        self.assertEqual(self.device.written, [virtio.PLAIN + frame])

    def test_probeTimeout(self):
        """
        A host that answers nothing: after the probe timeout the connection
        is aborted and the forwarder told to go without the probe.
        """
        failed = []

        class Owner:
            def probeFailed(self, why):
                failed.append(why)

            def linkDown(self, protocol, reason):
                pass

        self.connect()
        self.link.factory = type("F", (), {"owner": Owner()})()
        self.clock.advance(guestforwarder.PROBE_TIMEOUT)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)
        self.assertEqual(len(failed), 1)
        self.assertIn("no answer", failed[0])

    def test_garbageAnswer(self):
        """
        An answer that is not HTTP fails the probe at once.
        """
        failed = []
        self.connect()
        self.link.factory = type("F", (), {"owner": type("O", (), {
            "probeFailed": lambda s, why: failed.append(why),
            "linkDown": lambda s, p, r: None})()})()
        self.link.dataReceived(b"\x10\x00garbage")
        self.assertEqual(len(failed), 1)
        self.assertIn("not an HTTP response", failed[0])

    def test_responseParser(self):
        """
        The parser waits for the whole body, keeps what follows it, and
        refuses a response it cannot find the end of.
        """
        self.assertIsNone(offload.parseProbeResponse(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nvirtio"))
        self.assertEqual(offload.parseProbeResponse(offload.PROBE_ACCEPTED + b"more"), (True, b"more"))
        self.assertEqual(offload.parseProbeResponse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), (False, b""))
        for bad in [b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]:
            self.assertRaises(offload.OffloadProbeError, offload.parseProbeResponse, bad)


verifyingVariants(globals())
