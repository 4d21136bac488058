"""
Tests for L{gvtwisted.services.nat_udp}: the guest's UDP through host sockets.

Real host sockets are used throughout, but only toward 127.0.0.1 (the
network rule): the guest's destination is the host address, which the NAT
maps to the host's loopback.
"""

import select
import socket
import struct

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.services.nat_udp import (
    BROADCAST, HOST_LOOPBACK_DISABLED, IN_SUBNET, LINK_LOCAL, MARTIAN, MULTICAST,
    UDPNAT, hostDestination,
)
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.wire import icmp, ipv4, udp
from tests.checksumpolicy import verifyingVariants

GUEST = socket.inet_aton("192.168.127.2")
GATEWAY = socket.inet_aton("192.168.127.1")
HOST = socket.inet_aton("192.168.127.254")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GATEWAY_MAC = bytes.fromhex("5a94efe40cdd")


class FakeNetwork:
    """
    The part of L{VirtualNetwork} the NAT uses, recording what it is asked
    to send to the guest.

    @ivar waiting: Deferreds fired (with the call) at the next send.
    """

    def __init__(self, reactor, config=None):
        self.reactor = reactor
        self.config = config or NetworkConfig()
        self.counters = Counters()
        self.udpSent = []
        self.ipv4Sent = []
        self.icmpErrors = []
        self.waiting = []

    def _fire(self, call):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(call)

    def nextSend(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def sendUDP(self, src, srcPort, dst, dstPort, data):
        call = (src, srcPort, dst, dstPort, bytes(data))
        self.udpSent.append(call)
        self._fire(call)

    def sendIPv4(self, src, dst, proto, payload):
        call = (src, dst, proto, bytes(payload))
        self.ipv4Sent.append(call)
        self._fire(call)

    def sendICMPError(self, packet, icmpType, code):
        call = (packet.src, packet.dst, bytes(packet.header), bytes(packet.payload[:8]),
                icmpType, code)
        self.icmpErrors.append(call)
        self._fire(call)

    def linkFor(self, ip):
        """
        No guest link is known: flows belong to none.
        """
        return None


def udpPacket(src, dst, srcPort, dstPort, data):
    """
    The arguments C{udpReceived} gets for a guest datagram: a parsed packet
    from a real frame, the ports and a memoryview of the data.
    """
    datagram = udp.build(src, dst, srcPort, dstPort, data)
    frame = (GATEWAY_MAC + GUEST_MAC + b"\x08\x00"
             + ipv4.buildHeader(src, dst, ipv4.PROTO_UDP, len(datagram)) + datagram)
    packet = ipv4.parse(frame)
    sport, dport, _, view = udp.parse(packet.payload)
    return packet, sport, dport, view



class Echo(DatagramProtocol):
    """
    A UDP echo server that remembers who sent what.
    """

    def __init__(self):
        self.seen = []

    def datagramReceived(self, data, addr):
        self.seen.append((data, addr))
        self.transport.write(data, addr)


def closedLoopbackPort():
    """
    A UDP port on 127.0.0.1 that nobody listens on (just closed).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PolicyTests(SynchronousTestCase):
    """
    L{hostDestination} decides where a guest's packet may go on the host.
    """

    def setUp(self):
        self.config = NetworkConfig()

    def where(self, dotted, hostLoopback=True, ec2=False):
        return hostDestination(self.config, socket.inet_aton(dotted), hostLoopback, ec2)

    def test_hostAddressIsLoopback(self):
        """
        The host address stands for the host's 127.0.0.1, unless host
        loopback is off, which refuses it with an admin-prohibited code.
        """
        self.assertEqual(self.where("192.168.127.254"), "127.0.0.1")
        refused = self.where("192.168.127.254", hostLoopback=False)
        self.assertIs(refused, HOST_LOOPBACK_DISABLED)
        self.assertEqual(refused.icmpCode, icmp.ADMIN_PROHIBITED)

    def test_linkLocal(self):
        """
        169.254.0.0/16 (cloud metadata) is refused unless allowed.
        """
        self.assertIs(self.where("169.254.169.254"), LINK_LOCAL)
        self.assertEqual(self.where("169.254.169.254", ec2=True), "169.254.169.254")

    def test_broadcastAndMulticast(self):
        """
        Broadcast and multicast destinations are refused without an answer.
        """
        self.assertIs(self.where("255.255.255.255"), BROADCAST)
        self.assertIs(self.where("192.168.127.255"), BROADCAST)
        self.assertIs(self.where("224.0.0.251"), MULTICAST)
        self.assertIs(self.where("239.255.255.250"), MULTICAST)
        self.assertIsNone(BROADCAST.icmpCode)

    def test_martians(self):
        """
        The host's own loopback, 0/8 and 240/4 are not reachable by their
        own names, and other subnet addresses are not on the host.
        """
        for dotted in ("127.0.0.1", "127.1.2.3", "0.1.2.3", "240.0.0.1"):
            self.assertIs(self.where(dotted), MARTIAN, dotted)
        self.assertIs(self.where("192.168.127.5"), IN_SUBNET)

    def test_public(self):
        """
        Any other address is itself on the host side.
        """
        self.assertEqual(self.where("198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.where("10.1.2.3"), "10.1.2.3")


class RealSocketTests(TestCase):
    """
    Flows through real host sockets to a real echo server on 127.0.0.1.
    """

    timeout = 10

    def setUp(self):
        self.network = FakeNetwork(reactor)
        self.nat = UDPNAT(reactor, self.network)
        self.addCleanup(self.nat.stop)
        self.echo = Echo()
        self.server = reactor.listenUDP(0, self.echo, interface="127.0.0.1",
                                        maxPacketSize=65535)
        self.addCleanup(self.server.stopListening)
        self.port = self.server.getHost().port

    @defer.inlineCallbacks
    def test_echoThroughHostAddress(self):
        """
        A datagram to the host address reaches 127.0.0.1 from a loopback
        socket, and the reply comes back to the guest from the address and
        port the guest used.
        """
        d = self.network.nextSend()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, self.port, b"hello"))
        call = yield d
        self.assertEqual(call, (HOST, self.port, GUEST, 40000, b"hello"))
        self.assertEqual(len(self.echo.seen), 1)
        self.assertEqual(self.echo.seen[0][1][0], "127.0.0.1")
        self.assertEqual(self.nat.flowCount(), 1)
        counters = self.network.counters
        self.assertEqual(counters.get("nat.udp.flowsOpened"), 1)
        self.assertEqual(counters.get("nat.udp.datagramsOut"), 1)
        self.assertEqual(counters.get("nat.udp.datagramsIn"), 1)

    def test_descriptorReserve(self):
        """
        With no descriptor left above the reserve, a new flow opens no host
        socket: the datagram is dropped and counted.
        """

        class Full:
            def room(self):
                return 0

        self.nat.descriptors = Full()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, self.port, b"hello"))
        self.assertEqual(self.nat.flowCount(), 0)
        self.assertEqual(self.network.counters.get("drop.nat.udp.noDescriptors"), 1)

    @defer.inlineCallbacks
    def test_flowPerQuadruple(self):
        """
        Datagrams of one guest port to one destination share a flow (and a
        host source port); another guest port gets another flow.
        """
        for data in (b"one", b"two"):
            d = self.network.nextSend()
            self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, self.port, data))
            yield d
        d = self.network.nextSend()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40001, self.port, b"three"))
        call = yield d
        self.assertEqual(call[3], 40001)
        self.assertEqual(self.nat.flowCount(), 2)
        sources = [addr for _, addr in self.echo.seen]
        self.assertEqual(sources[0], sources[1])
        self.assertNotEqual(sources[0], sources[2])

    @defer.inlineCallbacks
    def test_largestDatagram(self):
        """
        A 65507-byte datagram, the largest IPv4 carries, goes out and comes
        back whole.
        """
        data = bytes(range(256)) * 255 + b"x" * 227
        self.assertEqual(len(data), 65507)
        d = self.network.nextSend()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, self.port, data))
        call = yield d
        self.assertEqual(call[4], data)
        self.assertEqual(self.echo.seen[0][0], data)

    @defer.inlineCallbacks
    def test_refusedIsPortUnreachable(self):
        """
        A closed host port answers the host socket with ECONNREFUSED, which
        reaches the guest as an ICMP port unreachable quoting a datagram of
        the flow: guest to destination, with both ports.
        """
        closed = closedLoopbackPort()
        d = self.network.nextSend()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, closed, b"anyone?"))
        src, dst, header, quoted, icmpType, code = yield d
        self.assertEqual((icmpType, code), (icmp.DEST_UNREACHABLE, icmp.PORT_UNREACHABLE))
        self.assertEqual((src, dst), (GUEST, HOST))
        quotedIP = ipv4.parse(header + quoted, 0)
        self.assertEqual((quotedIP.src, quotedIP.dst, quotedIP.proto),
                         (GUEST, HOST, ipv4.PROTO_UDP))
        self.assertEqual(struct.unpack("!HH", quoted[:4]), (40000, closed))
        self.assertEqual(self.network.counters.get("nat.udp.unreachable"), 1)
        # The error did not end the flow: once something listens on that
        # port, the same flow carries the next datagram and its answer.
        echo = Echo()
        server = reactor.listenUDP(closed, echo, interface="127.0.0.1")
        self.addCleanup(server.stopListening)
        d = self.network.nextSend()
        self.nat.udpReceived(*udpPacket(GUEST, HOST, 40000, closed, b"now?"))
        call = yield d
        self.assertEqual(call, (HOST, closed, GUEST, 40000, b"now?"))
        self.assertEqual(self.nat.flowCount(), 1)


class IntegratedTests(TestCase):
    """
    The NAT behind a real L{VirtualNetwork}: frames from a guest port in,
    frames back out.
    """

    timeout = 10

    def setUp(self):
        self.counters = Counters()
        self.switch = Switch(reactor, self.counters)
        self.network = VirtualNetwork(reactor, NetworkConfig(), self.switch, self.counters)
        self.nat = UDPNAT(reactor, self.network)
        self.addCleanup(self.nat.stop)
        self.network.nat = self.nat
        self.frames = []
        self.waiting = []
        test = self

        class GuestPort:
            name = "guest"

            def sendFrame(self, frame):
                test.frames.append(bytes(frame))
                waiting, test.waiting[:] = list(test.waiting), []
                for d in waiting:
                    d.callback(None)

        self.guest = GuestPort()
        self.switch.attach(self.guest)

    def send(self, packet):
        frame = GATEWAY_MAC + GUEST_MAC + b"\x08\x00" + packet
        self.switch.receiveFrame(self.guest, frame)

    def framesArrived(self, count):
        """
        A Deferred that fires once C{count} frames reached the guest.
        """
        d = defer.Deferred()

        def check(_=None):
            if len(self.frames) >= count:
                d.callback(self.frames)
            else:
                w = defer.Deferred()
                w.addCallback(check)
                self.waiting.append(w)
        check()
        return d

    @defer.inlineCallbacks
    def test_closedPortThroughNetwork(self):
        """
        A guest datagram to a closed host port comes back as an ICMP port
        unreachable frame from the host address, which quotes the guest's
        ports and verifies.
        """
        closed = closedLoopbackPort()
        datagram = udp.build(GUEST, HOST, 40000, closed, b"ping")
        self.send(ipv4.buildHeader(GUEST, HOST, ipv4.PROTO_UDP, len(datagram)) + datagram)
        frames = yield self.framesArrived(1)
        reply = ipv4.parse(frames[0])
        self.assertEqual((reply.src, reply.dst, reply.proto), (HOST, GUEST, ipv4.PROTO_ICMP))
        icmpType, code, rest = icmp.parse(reply.payload)
        self.assertEqual((icmpType, code), (icmp.DEST_UNREACHABLE, icmp.PORT_UNREACHABLE))
        inner = bytes(rest[4:])
        self.assertEqual(inner[12:16], GUEST)
        self.assertEqual(inner[16:20], HOST)
        self.assertEqual(struct.unpack("!HH", inner[20:24]), (40000, closed))

    @defer.inlineCallbacks
    def test_bigReplyFragmented(self):
        """
        A 4000-byte reply from the host reaches the guest as IPv4 fragments
        of at most the MTU whose payloads add up to the UDP datagram.
        """
        echo = Echo()
        server = reactor.listenUDP(0, echo, interface="127.0.0.1", maxPacketSize=65535)
        self.addCleanup(server.stopListening)
        data = b"0123456789abcdef" * 250
        # The guest's datagram itself is sent whole (no reassembly here):
        # big packets are allowed on the virtual wire in this unit test.
        datagram = udp.build(GUEST, HOST, 40000, server.getHost().port, b"small")
        self.send(ipv4.buildHeader(GUEST, HOST, ipv4.PROTO_UDP, len(datagram)) + datagram)
        yield self.framesArrived(1)
        self.frames.clear()
        # Now make the echo answer with a big datagram.
        echo.datagramReceived = lambda d, addr: echo.transport.write(data, addr)
        self.send(ipv4.buildHeader(GUEST, HOST, ipv4.PROTO_UDP, len(datagram)) + datagram)
        frames = yield self.framesArrived(3)
        packets = [ipv4.parse(f) for f in frames]
        self.assertTrue(all(p.totalLength <= 1500 for p in packets))
        self.assertTrue(all(p.isFragment for p in packets))
        payload = b"".join(bytes(p.payload) for p in sorted(packets, key=lambda p: p.fragmentOffset))
        self.assertEqual(payload[8:], data)
        self.assertEqual(struct.unpack("!H", payload[0:2])[0], server.getHost().port)


class FakeClockTests(SynchronousTestCase):
    """
    The flow table's policy, caps and timers, with a memory reactor and a
    clock (host sockets are real, toward 127.0.0.1, but never polled).
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.network = FakeNetwork(self.reactor)
        self.counters = self.network.counters

    def makeNAT(self, **kw):
        nat = UDPNAT(self.reactor, self.network, **kw)
        self.addCleanup(nat.stop)
        return nat

    def test_hostLoopbackDisabled(self):
        """
        With host loopback off, a datagram to the host address opens no
        flow and gets an admin-prohibited unreachable.
        """
        nat = self.makeNAT(hostLoopback=False)
        nat.udpReceived(*udpPacket(GUEST, HOST, 40000, 53, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual([e[4:] for e in self.network.icmpErrors],
                         [(icmp.DEST_UNREACHABLE, icmp.ADMIN_PROHIBITED)])
        self.assertEqual(self.counters.get("drop.nat.udp.hostLoopbackDisabled"), 1)

    def test_ec2MetadataRefused(self):
        """
        169.254.169.254 is refused with an unreachable (and no socket)
        unless C{ec2MetadataAccess}.
        """
        nat = self.makeNAT()
        nat.udpReceived(*udpPacket(GUEST, socket.inet_aton("169.254.169.254"), 40000, 80, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(len(self.network.icmpErrors), 1)
        self.assertEqual(self.network.icmpErrors[0][5], icmp.ADMIN_PROHIBITED)
        self.assertEqual(self.counters.get("drop.nat.udp.linkLocal"), 1)

    def test_broadcastDropped(self):
        """
        Broadcast and multicast datagrams are dropped and counted, with no
        answer and no flow.
        """
        nat = self.makeNAT()
        for dotted in ("255.255.255.255", "192.168.127.255", "224.0.0.251"):
            nat.udpReceived(*udpPacket(GUEST, socket.inet_aton(dotted), 5353, 5353, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.network.icmpErrors, [])
        self.assertEqual(self.counters.get("drop.nat.udp.broadcast"), 2)
        self.assertEqual(self.counters.get("drop.nat.udp.multicast"), 1)
        self.assertEqual(self.reactor.readers, set())

    def test_zeroPortDropped(self):
        """
        Port 0 on either side cannot be a flow: dropped and counted.
        """
        nat = self.makeNAT()
        nat.udpReceived(*udpPacket(GUEST, HOST, 0, 53, b"x"))
        nat.udpReceived(*udpPacket(GUEST, HOST, 53, 0, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.counters.get("drop.nat.udp.badAddress"), 2)

    def test_outOfDescriptors(self):
        """
        When the host socket cannot be made (out of file descriptors), the
        datagram is counted and dropped: no flow, no answer, no exception.
        """
        import errno

        from gvtwisted.services import nat_udp

        def noSocket(*args):
            raise OSError(errno.EMFILE, "Too many open files")
        self.patch(nat_udp.socket, "socket", noSocket)
        nat = self.makeNAT()
        nat.udpReceived(*udpPacket(GUEST, HOST, 1001, 9, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.network.icmpErrors, [])
        self.assertEqual(self.counters.get("drop.nat.udp.hostSocket"), 1)
        self.flushLoggedErrors()

    def test_capEvictsLeastRecentlyUsed(self):
        """
        At the cap, a new flow closes the least recently used one (not the
        oldest created, if that one is still busy) and counts it.
        """
        nat = self.makeNAT(maxFlows=3)
        for port in (1001, 1002, 1003):
            nat.udpReceived(*udpPacket(GUEST, HOST, port, 9, b"x"))
        flows = dict(nat._flows)
        nat.udpReceived(*udpPacket(GUEST, HOST, 1001, 9, b"again"))
        nat.udpReceived(*udpPacket(GUEST, HOST, 1004, 9, b"x"))
        self.assertEqual(nat.flowCount(), 3)
        self.assertEqual(sorted(key[1] for key in nat._flows), [1001, 1003, 1004])
        evicted = flows[(GUEST, 1002, HOST, 9)]
        self.assertTrue(evicted.closed)
        self.assertEqual(evicted.socket.fileno(), -1)
        self.assertNotIn(evicted.reader, self.reactor.readers)
        self.assertEqual(len(self.reactor.readers), 3)
        self.assertEqual(self.counters.get("nat.udp.flowsEvicted"), 1)
        self.assertEqual(self.counters.get("nat.udp.flowsOpened"), 4)

    def test_idleExpiry(self):
        """
        A flow without traffic for the idle timeout is closed by the sweep;
        traffic from the guest renews it; once the table is empty no timer
        is left behind.
        """
        nat = self.makeNAT(idleTimeout=90.0)
        nat.udpReceived(*udpPacket(GUEST, HOST, 1001, 9, b"x"))
        self.reactor.advance(60)
        nat.udpReceived(*udpPacket(GUEST, HOST, 1001, 9, b"x"))
        self.reactor.advance(60)
        self.assertEqual(nat.flowCount(), 1)
        (flow,) = nat._flows.values()
        self.reactor.advance(60)
        self.assertEqual(nat.flowCount(), 0)
        self.assertTrue(flow.closed)
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.counters.get("nat.udp.flowsExpired"), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_replyRenewsAndReturns(self):
        """
        A reply read from the host socket goes to the guest from the
        original destination, and renews the flow.
        """
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        port = server.getsockname()[1]
        nat = self.makeNAT(idleTimeout=90.0)
        nat.udpReceived(*udpPacket(GUEST, HOST, 1001, port, b"question"))
        data, addr = server.recvfrom(100)
        self.assertEqual(data, b"question")
        self.reactor.advance(80)
        server.sendto(b"answer", addr)
        (flow,) = nat._flows.values()
        # A memory reactor polls nothing: wait for the socket, then do what
        # the real reactor would do with the registered reader.
        self.assertIn(flow.reader, self.reactor.readers)
        readable, _, _ = select.select([flow.socket], [], [], 5)
        self.assertEqual(readable, [flow.socket])
        flow.reader.doRead()
        self.assertEqual(self.network.udpSent, [(HOST, port, GUEST, 1001, b"answer")])
        self.assertEqual(flow.lastActive, 80)
        self.reactor.advance(80)
        self.assertEqual(nat.flowCount(), 1)
        self.assertEqual(self.counters.get("nat.udp.datagramsIn"), 1)

    def test_stopClosesEverything(self):
        """
        C{stop} closes every host socket, unregisters every reader and
        cancels the sweep.
        """
        nat = UDPNAT(self.reactor, self.network)
        for port in (1001, 1002):
            nat.udpReceived(*udpPacket(GUEST, HOST, port, 9, b"x"))
        flows = list(nat._flows.values())
        nat.stop()
        self.assertEqual(nat.flowCount(), 0)
        self.assertTrue(all(f.closed and f.socket.fileno() == -1 for f in flows))
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])


verifyingVariants(globals())
