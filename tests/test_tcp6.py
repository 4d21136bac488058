"""
Tests for L{gvtwisted.stack.tcpdemux6} (TCP to the gateway over IPv6) and
L{gvtwisted.services.nat66_tcp} (TCP through NAT66), on the network that
C{twistd gvtap} builds; segments are built with dpkt, answers parsed with it.
"""

import socket

import dpkt
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.stack.tcp import TCPConnection
from gvtwisted.wire import ipv6
from tests.checksumpolicy import verifyingVariants

CONFIG = NetworkConfig()
GW_MAC = CONFIG.gatewayMAC
GUEST_MAC = CONFIG.deviceMAC
GUEST6 = CONFIG.prefix6Bytes[:8] + ipv6.interfaceIdentifier(GUEST_MAC)
GW6 = CONFIG.gatewayIP6Bytes
HOST6 = CONFIG.hostIP6Bytes


class FakePort:
    name = "guest"

    def __init__(self):
        self.frames = []
        self.waiting = []

    def sendFrame(self, frame):
        self.frames.append(frame)
        # Never re-enter the sender: wake the test up in a later turn.
        reactor.callLater(0, self._wake)

    def _wake(self):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def segment(dst, dport, flags, seq=1000, ack=0, data=b"", sport=40000):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535,
                       data=data)
    if flags & dpkt.tcp.TH_SYN:
        tcp.opts = b"\x02\x04\x05\xa0"
        tcp.off = 6
    packet = dpkt.ip6.IP6(src=GUEST6, dst=dst, nxt=6, hlim=64, data=tcp)
    packet.plen = len(bytes(tcp))
    return bytes(dpkt.ethernet.Ethernet(dst=GW_MAC, src=GUEST_MAC, type=0x86DD,
                                        data=bytes(packet)))


class TCPCase:
    def build(self, clock):
        self.gvtap = Gvtap(clock, NetworkConfig(), resolvConf="/dev/null")
        self.addCleanup(self.gvtap.stop)
        self.guest = FakePort()
        self.gvtap.switch.attach(self.guest)

    def send(self, frame):
        self.gvtap.switch.receiveFrame(self.guest, frame)

    def segments(self):
        out = []
        for frame in self.guest.frames:
            packet = ipv6.parse(frame)
            if packet.proto != 6:
                continue
            self.assertTrue(ipv6.upperChecksumOK(packet.src, packet.dst, 6, packet.payload))
            out.append((packet, dpkt.tcp.TCP(bytes(packet.payload))))
        del self.guest.frames[:]
        return out


class LocalTests(TCPCase, SynchronousTestCase):
    """
    TCP to the gateway's IPv6 address.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.build(self.clock)

    def test_synAckWithMSS(self):
        """
        A SYN to [gateway]:53 (the DNS over TCP) gets a SYN-ACK from the
        gateway advertising MSS = MTU - 60.
        """
        self.send(segment(GW6, 53, dpkt.tcp.TH_SYN))
        self.clock.advance(0)
        [(packet, seg)] = self.segments()
        self.assertEqual((packet.src, packet.dst), (GW6, GUEST6))
        self.assertEqual(seg.flags, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self.assertEqual(seg.ack, 1001)
        options = dict(dpkt.tcp.parse_opts(seg.opts))
        self.assertEqual(int.from_bytes(options[dpkt.tcp.TCP_OPT_MSS], "big"), 1440)
        self.assertEqual(self.gvtap.tcp6.connectionCount(), 1)

    def test_closedPort(self):
        """
        A SYN to a port nobody listens on gets RST|ACK.
        """
        self.send(segment(GW6, 9, dpkt.tcp.TH_SYN))
        self.clock.advance(0)
        [(_, seg)] = self.segments()
        self.assertEqual((seg.flags, seg.ack), (dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, 1001))

    def test_stray(self):
        """
        An ACK for no connection gets a RST with its acknowledgement as the
        sequence number.
        """
        self.send(segment(GW6, 53, dpkt.tcp.TH_ACK, ack=777))
        [(_, seg)] = self.segments()
        self.assertEqual((seg.flags, seg.seq), (dpkt.tcp.TH_RST, 777))

    def test_badChecksum(self):
        """
        With C{--verify-checksums}, a segment with a wrong checksum is
        dropped and counted.
        """
        self.gvtap.network.verifyChecksums = True
        frame = bytearray(segment(GW6, 53, dpkt.tcp.TH_SYN))
        frame[54 + 16] ^= 0xFF
        self.send(bytes(frame))
        self.assertEqual(self.segments(), [])
        self.assertEqual(self.gvtap.counters.get("drop.tcp6.checksum"), 1)

    def test_addresses(self):
        """
        A connection's transport names both ends as IPv6 addresses.
        """
        conn = TCPConnection(self.clock, ("fd00::1", 53), ("fd00::2", 4000), lambda s: None)
        self.assertEqual((conn.getHost().type, conn.getHost().host), ("TCP", "fd00::1"))
        self.assertEqual(type(conn.getPeer()).__name__, "IPv6Address")


class Recorder(Protocol):
    def __init__(self, received):
        self.received = received

    def dataReceived(self, data):
        self.received.append(data)
        self.transport.write(data.upper())


class NATTests(TCPCase, TestCase):
    """
    TCP through NAT66 to a server on the host's ::1, on the real reactor.
    """

    def setUp(self):
        self.build(reactor)

    @defer.inlineCallbacks
    def waitFor(self, count, timeout=5.0):
        deadline = reactor.seconds() + timeout
        got = []
        while len(got) < count:
            got.extend(self.segments())
            if len(got) >= count:
                break
            if reactor.seconds() > deadline:
                self.fail(f"only {len(got)} segments: {got}")
            d = defer.Deferred()
            self.guest.waiting.append(d)
            timer = reactor.callLater(0.1, lambda: d.called or d.callback(None))
            yield d
            if timer.active():
                timer.cancel()
        return got

    @defer.inlineCallbacks
    def test_spliced(self):
        """
        A SYN to [::fe]:PORT is accepted once the host's [::1]:PORT accepts;
        data goes both ways.
        """
        received = []
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: Recorder(received)),
                                 interface="::1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        self.send(segment(HOST6, number, dpkt.tcp.TH_SYN))
        [(packet, synack)] = yield self.waitFor(1)
        self.assertEqual(packet.src, HOST6)
        self.assertEqual(synack.flags, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self.send(segment(HOST6, number, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, seq=1001,
                          ack=synack.seq + 1, data=b"hello"))
        got = yield self.waitFor(1)
        data = b"".join(seg.data for _, seg in got)
        while data != b"HELLO":
            more = yield self.waitFor(1)
            data += b"".join(seg.data for _, seg in more)
        self.assertEqual(received, [b"hello"])
        self.assertEqual(self.gvtap.counters.get("nat.tcp.connected"), 1)
        # The guest resets; both sides close and no timer is left.
        self.send(segment(HOST6, number, dpkt.tcp.TH_RST, seq=1006))
        self.assertEqual(self.gvtap.tcp6.connectionCount(), 0)
        yield task.deferLater(reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def test_refused(self):
        """
        A SYN to a closed port of the host's ::1 gets RST|ACK.
        """
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        closed = s.getsockname()[1]
        s.close()
        self.send(segment(HOST6, closed, dpkt.tcp.TH_SYN))
        [(_, seg)] = yield self.waitFor(1)
        self.assertEqual(seg.flags & dpkt.tcp.TH_RST, dpkt.tcp.TH_RST)
        self.assertEqual(self.gvtap.counters.get("nat.tcp.refused"), 1)

    def test_policy(self):
        """
        A SYN to another guest's address is refused at once with RST.
        """
        other = CONFIG.prefix6Bytes[:15] + b"\x33"
        self.send(segment(other, 80, dpkt.tcp.TH_SYN))
        [(_, seg)] = self.segments()
        self.assertEqual(seg.flags & dpkt.tcp.TH_RST, dpkt.tcp.TH_RST)
        self.assertEqual(self.gvtap.counters.get("drop.nat66.tcp.inSubnet"), 1)


verifyingVariants(globals())
