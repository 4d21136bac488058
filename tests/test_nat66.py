"""
Tests for L{gvtwisted.services.nat66}, L{gvtwisted.services.nat66_udp} and
L{gvtwisted.services.nat66_icmp}: the guest's IPv6 through host sockets.

Real host sockets are used, but only toward the host's ::1 (the network
rule): the guest's destination is the host address ::fe, which the NAT maps
to ::1. The gateway is the real L{IPv6Gateway} on a switch with a fake guest
port, so what the guest gets back is checked as frames.
"""

import socket
import struct

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.services import nat66
from gvtwisted.services.nat66 import NAT66, hostDestination6
from gvtwisted.services.nat66_icmp import ICMP66NAT, MODE_NONE, availableMode
from gvtwisted.services.nat66_udp import UDP66NAT
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.ipv6gateway import IPv6Gateway
from gvtwisted.stack.switch import Switch
from gvtwisted.wire import icmpv6, ipv6

CONFIG = NetworkConfig()
GW_MAC = CONFIG.gatewayMAC
GUEST_MAC = CONFIG.deviceMAC
GUEST6 = CONFIG.subnet6.network_address.packed[:8] + ipv6.interfaceIdentifier(GUEST_MAC)
HOST6 = CONFIG.hostIP6Bytes
GW6 = CONFIG.gatewayIP6Bytes


def v6(text):
    return socket.inet_pton(socket.AF_INET6, text)


class PolicyTests(SynchronousTestCase):
    """
    L{hostDestination6} decides where a guest's IPv6 packet may go.
    """

    def test_host(self):
        """
        ::fe is the host's ::1, or refused without host loopback.
        """
        self.assertEqual(hostDestination6(CONFIG, HOST6, True), "::1")
        self.assertIs(hostDestination6(CONFIG, HOST6, False), nat66.HOST_LOOPBACK_DISABLED)

    def test_refused(self):
        """
        Link-local, multicast, other guests and martians are refused.
        """
        cases = [
            ("fe80::1", nat66.LINK_LOCAL),
            ("ff02::1", nat66.MULTICAST),
            ("ff0e::1", nat66.MULTICAST),
            ("fd00:192:168:127::33", nat66.IN_SUBNET),
            ("::1", nat66.MARTIAN),
            ("::", nat66.MARTIAN),
            ("::ffff:10.0.0.1", nat66.MARTIAN),
            ("2001:db8::1", nat66.MARTIAN),
        ]
        for text, refused in cases:
            self.assertIs(hostDestination6(CONFIG, v6(text), True), refused, text)

    def test_world(self):
        """
        Any other address is a host socket to the same address.
        """
        self.assertEqual(hostDestination6(CONFIG, v6("2606:4700::1111"), True), "2606:4700::1111")
        self.assertEqual(hostDestination6(CONFIG, v6("fd12::1"), True), "fd12::1")


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


class Echo(DatagramProtocol):
    def __init__(self):
        self.seen = []

    def datagramReceived(self, data, addr):
        self.seen.append((data, addr))
        self.transport.write(data, addr)


class NAT66Case(TestCase):
    """
    A real gateway with NAT66 on the real reactor.
    """

    hostLoopback = True

    def setUp(self):
        self.counters = Counters(reactor)
        self.switch = Switch(reactor, self.counters)
        self.gatewayPort = FakePort()
        self.gatewayPort.sendFrame = lambda frame: self.gateway.frameReceived(frame)
        self.switch.attach(self.gatewayPort, macs=[GW_MAC])
        self.gateway = IPv6Gateway(reactor, CONFIG, self.switch, self.gatewayPort, self.counters)
        self.udp = UDP66NAT(reactor, self.gateway, hostLoopback=self.hostLoopback)
        self.icmp = ICMP66NAT(reactor, self.gateway, hostLoopback=self.hostLoopback)
        self.nat = NAT66(self.gateway, udp=self.udp, icmp=self.icmp)
        self.gateway.nat = self.nat
        self.addCleanup(self.nat.stop)
        self.guest = FakePort()
        self.switch.attach(self.guest)

    def send(self, dst, proto, payload, hopLimit=64):
        frame = (GW_MAC + GUEST_MAC + b"\x86\xdd"
                 + ipv6.buildHeader(GUEST6, dst, proto, len(payload), hopLimit) + payload)
        self.switch.receiveFrame(self.guest, frame)

    def sendUDP(self, dst, srcPort, dstPort, data, hopLimit=64):
        datagram = bytearray(struct.pack("!HHHH", srcPort, dstPort, 8 + len(data), 0) + data)
        datagram[6:8] = struct.pack("!H", ipv6.upperChecksum(GUEST6, dst, 17, datagram))
        self.send(dst, 17, bytes(datagram), hopLimit)

    @defer.inlineCallbacks
    def nextPacket(self, timeout=5.0):
        """
        The next IPv6 packet the guest gets, parsed.
        """
        if not self.guest.frames:
            d = defer.Deferred()
            self.guest.waiting.append(d)
            timer = reactor.callLater(timeout, lambda: d.called or d.errback(
                AssertionError("nothing reached the guest")))
            yield d
            if timer.active():
                timer.cancel()
        frame = self.guest.frames.pop(0)
        self.assertEqual(frame[0:6], GUEST_MAC)
        return ipv6.parse(frame)


class UDPTests(NAT66Case):
    """
    UDP from the guest to ::fe reaches a server on the host's ::1.
    """

    @defer.inlineCallbacks
    def test_echo(self):
        """
        A datagram to [::fe]:PORT reaches the server bound on [::1]:PORT
        from ::1, and its answer comes back to the guest from [::fe]:PORT
        with a right checksum.
        """
        echo = Echo()
        port = reactor.listenUDP(0, echo, interface="::1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        self.sendUDP(HOST6, 40000, number, b"over nat66")
        packet = yield self.nextPacket()
        self.assertEqual((packet.src, packet.dst, packet.proto), (HOST6, GUEST6, 17))
        self.assertTrue(ipv6.upperChecksumOK(packet.src, packet.dst, 17, packet.payload))
        self.assertEqual(struct.unpack("!HH", packet.payload[:4]), (number, 40000))
        self.assertEqual(bytes(packet.payload[8:]), b"over nat66")
        self.assertEqual(echo.seen[0][0], b"over nat66")
        self.assertEqual(echo.seen[0][1][0], "::1")
        self.assertEqual(self.udp.flowCount(), 1)
        self.sendUDP(HOST6, 40000, number, b"again")
        packet = yield self.nextPacket()
        self.assertEqual(bytes(packet.payload[8:]), b"again")
        self.assertEqual(self.udp.flowCount(), 1)
        self.assertEqual(self.counters.get("nat66.udp.datagramsIn"), 2)

    @defer.inlineCallbacks
    def test_portUnreachable(self):
        """
        A datagram to a closed port of the host gets an ICMPv6 port
        unreachable from ::fe, quoting the datagram's headers.
        """
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        closed = s.getsockname()[1]
        s.close()
        self.sendUDP(HOST6, 40001, closed, b"anyone?")
        packet = yield self.nextPacket()
        icmpType, code, body = icmpv6.parse(packet.src, packet.dst, packet.payload)
        self.assertEqual((icmpType, code, packet.src), (icmpv6.DEST_UNREACHABLE,
                                                        icmpv6.PORT_UNREACHABLE, HOST6))
        quoted = ipv6.parse(b"\x00" * 14 + bytes(body[4:]))
        self.assertEqual((quoted.src, quoted.dst), (GUEST6, HOST6))
        self.assertEqual(struct.unpack("!HH", quoted.payload[:4]), (40001, closed))

    def test_refusedGetsUnreachable(self):
        """
        A datagram to another guest's address or a martian is refused with
        an unreachable from the gateway, and no socket is opened.
        """
        self.sendUDP(v6("fd00:192:168:127::33"), 4000, 53, b"x")
        self.sendUDP(v6("2001:db8::1"), 4000, 53, b"x")
        codes = []
        for frame in self.guest.frames:
            packet = ipv6.parse(frame)
            icmpType, code, _ = icmpv6.parse(packet.src, packet.dst, packet.payload)
            self.assertEqual((icmpType, packet.src), (icmpv6.DEST_UNREACHABLE, GW6))
            codes.append(code)
        self.assertEqual(codes, [icmpv6.ADDRESS_UNREACHABLE, icmpv6.NO_ROUTE])
        self.assertEqual(self.udp.flowCount(), 0)
        self.assertEqual(self.counters.get("drop.nat66.udp.inSubnet"), 1)
        self.assertEqual(self.counters.get("drop.nat66.udp.martian"), 1)

    def test_badChecksum(self):
        """
        A datagram with a wrong checksum opens nothing.
        """
        datagram = struct.pack("!HHHH", 4000, 53, 9, 0x1234) + b"x"
        self.send(HOST6, 17, datagram)
        self.assertEqual(self.udp.flowCount(), 0)
        self.assertEqual(self.counters.get("drop.nat66.udp.checksum"), 1)

    def test_checksumPolicy(self):
        """
        With the network's policy off (the default: a local link cannot
        corrupt a frame), a datagram's checksum is not looked at.
        """
        self.gateway._network = type("Network", (), {"verifyChecksums": False})()
        datagram = struct.pack("!HHHH", 4000, 53, 9, 0x1234) + b"x"
        self.send(HOST6, 17, datagram)
        self.assertEqual(self.udp.flowCount(), 1)
        self.assertEqual(self.counters.get("drop.nat66.udp.checksum"), 0)

    def test_hopLimit(self):
        """
        A packet with hop limit 1 gets time exceeded from the gateway.
        """
        self.sendUDP(HOST6, 4000, 53, b"x", hopLimit=1)
        [frame] = self.guest.frames
        packet = ipv6.parse(frame)
        icmpType, code, _ = icmpv6.parse(packet.src, packet.dst, packet.payload)
        self.assertEqual((icmpType, code, packet.src), (icmpv6.TIME_EXCEEDED, 0, GW6))
        self.assertEqual(self.udp.flowCount(), 0)

    def test_stopClosesFlows(self):
        """
        Stopping closes every flow's socket.
        """
        echo = Echo()
        port = reactor.listenUDP(0, echo, interface="::1")
        self.addCleanup(port.stopListening)
        self.sendUDP(HOST6, 40000, port.getHost().port, b"x")
        [flow] = self.udp._flows.values()
        self.nat.stop()
        self.assertEqual(flow.socket.fileno(), -1)
        self.assertEqual(self.udp.flowCount(), 0)


class NoHostLoopbackTests(NAT66Case):
    """
    With host loopback off, ::fe is refused.
    """

    hostLoopback = False

    def test_refused(self):
        """
        UDP and echo to ::fe get an administratively prohibited unreachable.
        """
        self.sendUDP(HOST6, 4000, 53, b"x")
        self.send(HOST6, 58, icmpv6.echo(GUEST6, HOST6, 1, 1))
        codes = []
        for frame in self.guest.frames:
            packet = ipv6.parse(frame)
            codes.append(icmpv6.parse(packet.src, packet.dst, packet.payload)[:2])
        self.assertEqual(codes, [(icmpv6.DEST_UNREACHABLE, icmpv6.ADMIN_PROHIBITED)] * 2)


class EchoTests(NAT66Case):
    """
    ICMPv6 echo from the guest to ::fe is a real ping of ::1.
    """

    if availableMode() == MODE_NONE:
        skip = "no ICMPv6 socket: neither ping_group_range nor CAP_NET_RAW allows one"

    @defer.inlineCallbacks
    def test_ping(self):
        """
        An echo request to ::fe is answered by the host's ::1, with the
        guest's identifier, sequence and data back.
        """
        self.send(HOST6, 58, icmpv6.echo(GUEST6, HOST6, 0x4242, 9, b"ping over nat66"))
        packet = yield self.nextPacket()
        icmpType, code, body = icmpv6.parse(packet.src, packet.dst, packet.payload)
        self.assertEqual((icmpType, packet.src, packet.dst), (icmpv6.ECHO_REPLY, HOST6, GUEST6))
        ident, seq, data = icmpv6.parseEcho(body)
        self.assertEqual((ident, seq, bytes(data)), (0x4242, 9, b"ping over nat66"))
        self.assertEqual(self.counters.get("nat66.icmp.echoRepliesIn"), 1)

    @defer.inlineCallbacks
    def test_twoFlows(self):
        """
        Two identifiers are two flows; each gets its own replies.
        """
        self.send(HOST6, 58, icmpv6.echo(GUEST6, HOST6, 1, 1, b"a"))
        self.send(HOST6, 58, icmpv6.echo(GUEST6, HOST6, 2, 1, b"b"))
        first = yield self.nextPacket()
        second = yield self.nextPacket()
        got = sorted(icmpv6.parseEcho(icmpv6.parse(p.src, p.dst, p.payload)[2])[0::2]
                     for p in (first, second))
        self.assertEqual([(i, bytes(d)) for i, d in got], [(1, b"a"), (2, b"b")])
        self.assertEqual(self.icmp.flowCount(), 2)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.guest.frames, [])
