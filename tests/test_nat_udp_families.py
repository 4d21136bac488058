"""
Tests for what L{gvtwisted.services.nat_udp.UDPNAT} and
L{gvtwisted.services.nat66_udp.UDP66NAT} share, run once per address
family: opening a flow's host socket, its errors, sending and reading, and
the flow table's counters.

The host sockets are fakes (C{socket.socket} is patched), so that every error
a real socket can report is reachable, and what each family makes of it (the
counter, the complaint's text, the ICMP or ICMPv6 error and its quote) is
pinned to the letter.
"""

import errno
import os
import socket
import struct

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.services.nat66_udp import UDP66NAT
from gvtwisted.services.nat_udp import READ_BATCH, UDPNAT
from gvtwisted.stack.counters import Counters
from gvtwisted.wire import icmp, icmpv6, ipv4, ipv6, udp
from tests.test_nat_udp import GUEST, HOST, FakeNetwork, udpPacket

CONFIG = NetworkConfig()
GUEST6 = CONFIG.subnet6.network_address.packed[:8] + ipv6.interfaceIdentifier(CONFIG.deviceMAC)
HOST6 = CONFIG.hostIP6Bytes
WORLD = socket.inet_aton("198.51.100.7")
WORLD6 = socket.inet_pton(socket.AF_INET6, "2606:4700::1111")


def oserror(number):
    """
    The exception a socket call raises for C{number}.
    """
    return OSError(number, os.strerror(number))


class RecordingCounters(Counters):
    """
    Counters that also remember every complaint, with its detail text.
    """

    def __init__(self):
        Counters.__init__(self)
        self.complaints = []

    def complain(self, reason, detail=""):
        self.complaints.append((reason, detail))
        Counters.complain(self, reason, detail)


class FakeSocket:
    """
    A host socket that records what the NAT asks of it. C{incoming} holds
    what the next reads return (C{(data, address)}, or an exception to
    raise); C{sendErrors} the exceptions the next sends raise.
    """

    def __init__(self, sockets, family, kind, proto):
        self.sockets = sockets
        self.family, self.kind, self.proto = family, kind, proto
        self.blocking = True
        self.bound = None
        self.connected = None
        self.options = []
        self.sent = []
        self.sendErrors = []
        self.incoming = []
        self.closed = False
        self._fd = 1000 + len(sockets.made)

    def fileno(self):
        return -1 if self.closed else self._fd

    def setblocking(self, flag):
        self.blocking = flag

    def setsockopt(self, *args):
        self.options.append(args)

    def bind(self, address):
        self.bound = address

    def connect(self, address):
        if self.sockets.connectError is not None:
            raise oserror(self.sockets.connectError)
        self.connected = address

    def send(self, data):
        if self.sendErrors:
            raise self.sendErrors.pop(0)
        self.sent.append(bytes(data))
        return len(data)

    def sendto(self, data, address):
        if self.sendErrors:
            raise self.sendErrors.pop(0)
        self.sent.append((bytes(data), address))
        return len(data)

    def recvfrom(self, size):
        if not self.incoming:
            raise BlockingIOError()
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def recv(self, size):
        return self.recvfrom(size)[0]

    def close(self):
        self.closed = True


class FakeSockets:
    """
    Stands for C{socket.socket}: makes L{FakeSocket}s, or fails with
    C{openError}; their C{connect} fails with C{connectError}.
    """

    def __init__(self):
        self.made = []
        self.openError = None
        self.connectError = None

    def __call__(self, family, kind, proto=0):
        if self.openError is not None:
            raise oserror(self.openError)
        sock = FakeSocket(self, family, kind, proto)
        self.made.append(sock)
        return sock


class FakeGateway:
    """
    The part of L{gvtwisted.stack.ipv6gateway.IPv6Gateway} the NAT66
    tables use, recording what they ask it to send.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.config = CONFIG
        self.counters = Counters()
        self.udpSent = []
        self.ipv6Sent = []
        self.icmpErrors = []

    def sendUDP(self, src, srcPort, dst, dstPort, data):
        self.udpSent.append((src, srcPort, dst, dstPort, bytes(data)))

    def sendIPv6(self, src, dst, proto, payload):
        self.ipv6Sent.append((src, dst, proto, bytes(payload)))

    def sendICMPv6Error(self, packet, icmpType, code, word=0, src=None):
        self.icmpErrors.append((packet.src, packet.dst, bytes(packet.packet), icmpType, code,
                                src))

    def linkFor(self, ip):
        return None


def udp6Packet(src, dst, srcPort, dstPort, data):
    """
    The arguments C{UDP66NAT.udpReceived} gets for a guest datagram.
    """
    datagram = bytearray(struct.pack("!HHHH", srcPort, dstPort, 8 + len(data), 0) + data)
    datagram[6:8] = struct.pack("!H", ipv6.upperChecksum(src, dst, 17, datagram))
    frame = (b"\0" * 12 + b"\x86\xdd"
             + ipv6.buildHeader(src, dst, ipv6.PROTO_UDP, len(datagram)) + bytes(datagram))
    packet = ipv6.parse(frame)
    sport, dport, _, view = udp.parse(packet.payload)
    return packet, sport, dport, view


class FakeLink:
    """
    A guest link that keeps the flows registered with it, as
    L{gvtwisted.stack.iface} does.
    """

    def __init__(self):
        self.flows = {}

    def addFlow(self, flow, table):
        flow.link = self
        self.flows[flow] = table

    def removeFlow(self, flow):
        self.flows.pop(flow, None)


class SocketCase(SynchronousTestCase):
    """
    A NAT on a memory reactor whose host sockets are L{FakeSocket}s.
    Subclasses say which family and what it is expected to make of things.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sockets = FakeSockets()
        self.patch(socket, "socket", self.sockets)
        self.network = self.makeNetwork()
        self.network.counters = self.counters = RecordingCounters()

    def complaints(self):
        return self.counters.complaints


class UDPFamilyTests:
    """
    What a UDP NAT of either family does with its host sockets; the
    subclasses give the family's NAT, addresses and expectations.
    """

    def makeNAT(self, **kwargs):
        nat = self.natClass(self.reactor, self.network, **kwargs)
        self.addCleanup(nat.stop)
        return nat

    def test_socketOpened(self):
        """
        A flow's host socket is a non-blocking datagram socket of the
        family, bound to the loopback address for the host address and to
        the any address otherwise, connected to the real destination, and
        read by a reader named after the table.
        """
        nat = self.makeNAT()
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        nat.udpReceived(*self.packet(self.guest, self.world, 4000, 53, b"y"))
        toHost, toWorld = self.sockets.made
        self.assertEqual((toHost.family, toHost.kind), (self.family, socket.SOCK_DGRAM))
        self.assertFalse(toHost.blocking)
        self.assertEqual(toHost.bound, (self.loopback, 0))
        self.assertEqual(toHost.connected, (self.loopback, 53))
        self.assertEqual(toHost.sent, [b"x"])
        self.assertEqual(toWorld.bound, (self.anyAddress, 0))
        self.assertEqual(toWorld.connected, (self.worldText, 53))
        self.assertEqual(toWorld.sent, [b"y"])
        readers = {flow.reader.logPrefix() for flow in nat._flows.values()}
        self.assertEqual(readers, {self.readerName})
        self.assertEqual(len(self.reactor.readers), 2)
        self.assertEqual(self.counters.get(self.prefix + ".datagramsOut"), 2)
        self.assertEqual(self.counters.get(self.prefix + ".flowsOpened"), 2)

    def test_zeroPort(self):
        """
        Port 0 on either side opens no flow, with the family's complaint.
        """
        nat = self.makeNAT()
        nat.udpReceived(*self.packet(self.guest, self.host, 0, 53, b"x"))
        nat.udpReceived(*self.packet(self.guest, self.host, 53, 0, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.sockets.made, [])
        self.assertEqual(self.complaints(), self.zeroPortComplaints)

    def test_openFails(self):
        """
        A host socket that cannot be made is a complaint; a network error
        is also an unreachable to the guest, about its own datagram.
        """
        nat = self.makeNAT()
        self.sockets.openError = errno.EMFILE
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        self.sockets.openError = errno.ENETUNREACH
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.complaints(), [
            (self.prefix + ".hostSocket", f"{self.hostPort}: {oserror(errno.EMFILE)}"),
            (self.prefix + ".hostSocket", f"{self.hostPort}: {oserror(errno.ENETUNREACH)}"),
        ])
        self.assertEqual(self.network.icmpErrors, [self.guestError(self.netUnreachable)])

    def test_connectRefused(self):
        """
        A connect refused closes the socket it made and tells the guest the
        port is unreachable.
        """
        nat = self.makeNAT()
        self.sockets.connectError = errno.ECONNREFUSED
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        [sock] = self.sockets.made
        self.assertTrue(sock.closed)
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.complaints(), [
            (self.prefix + ".hostSocket", f"{self.hostPort}: {oserror(errno.ECONNREFUSED)}")])
        self.assertEqual(self.network.icmpErrors, [self.guestError(self.portUnreachable)])

    def test_noDescriptors(self):
        """
        With no descriptor above the reserve, no socket is opened.
        """

        class Full:
            def room(self):
                return 0

        nat = self.makeNAT()
        nat.descriptors = Full()
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        self.assertEqual(self.sockets.made, [])
        self.assertEqual(self.complaints(), [(self.prefix + ".noDescriptors", "")])

    def test_sendErrors(self):
        """
        A full socket buffer is counted; each other send error is what the
        family makes of it; a refused send quotes a datagram of the flow in
        a port unreachable.
        """
        nat = self.makeNAT()
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        [sock] = self.sockets.made
        sock.sendErrors = [BlockingIOError(), oserror(errno.EMSGSIZE), oserror(errno.EINVAL),
                           oserror(errno.ECONNREFUSED)]
        for _ in range(4):
            nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        self.assertEqual(self.counters.get("drop." + self.prefix + ".hostSocketFull"), 1)
        self.assertEqual(self.counters.get("drop." + self.prefix + ".tooBig"), self.tooBigCount)
        self.assertEqual(self.complaints(), self.sendComplaints)
        self.assertEqual(self.counters.get(self.prefix + ".unreachable"), 1)
        self.assertEqual(self.network.icmpErrors, [self.flowError(self.portUnreachable)])
        self.assertEqual(nat.flowCount(), 1)

    def test_read(self):
        """
        What the host socket reads goes to the guest from the destination,
        at most a batch per wake-up; a network error is an unreachable
        quoting a datagram of the flow, any other a complaint, and neither
        ends the reading.
        """
        nat = self.makeNAT()
        nat.udpReceived(*self.packet(self.guest, self.host, 4000, 53, b"x"))
        [sock] = self.sockets.made
        [flow] = nat._flows.values()
        sock.incoming = [(b"one", None), oserror(errno.ENETUNREACH), oserror(errno.EINVAL),
                         (b"two", None)] + [(b"more", None)] * READ_BATCH
        flow.reader.doRead()
        sent = self.network.udpSent
        self.assertEqual(sent[:2], [(self.host, 53, self.guest, 4000, b"one"),
                                    (self.host, 53, self.guest, 4000, b"two")])
        self.assertEqual(len(sent), READ_BATCH - 2)
        self.assertEqual(self.counters.get(self.prefix + ".datagramsIn"), READ_BATCH - 2)
        self.assertEqual(self.network.icmpErrors, [self.flowError(self.netUnreachable)])
        self.assertEqual(self.counters.get(self.prefix + ".unreachable"), 1)
        self.assertEqual(self.complaints(), self.recvComplaints)
        flow.reader.doRead()
        self.assertEqual(len(sent), READ_BATCH + 2)

    def test_table(self):
        """
        The table's counters carry the family's prefix: a flow evicted at
        the cap, one expired, one freed with its guest's link.
        """
        link = FakeLink()
        self.network.linkFor = lambda ip: link
        nat = self.makeNAT(maxFlows=2, idleTimeout=60.0)
        for port in (4001, 4002, 4003):
            nat.udpReceived(*self.packet(self.guest, self.host, port, 53, b"x"))
        first, second, third = self.sockets.made
        self.assertTrue(first.closed)
        self.assertEqual(len(link.flows), 2)
        [gone] = [flow for flow in link.flows if flow.guestPort == 4002]
        nat.releaseFlow(gone)
        self.assertTrue(second.closed)
        self.reactor.advance(60)
        self.assertTrue(third.closed)
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(link.flows, {})
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual([self.counters.get(self.prefix + "." + name) for name in (
            "flowsOpened", "flowsEvicted", "flowsLinkGone", "flowsExpired")], [3, 1, 1, 1])


class UDPTests(UDPFamilyTests, SocketCase):
    """
    L{UDPNAT}: IPv4.
    """

    natClass = UDPNAT
    family = socket.AF_INET
    prefix = "nat.udp"
    readerName = "gvtap-nat-udp"
    guest, host, world = GUEST, HOST, WORLD
    loopback, anyAddress, worldText = "127.0.0.1", "0.0.0.0", "198.51.100.7"
    hostPort = "127.0.0.1:53"
    netUnreachable = icmp.NET_UNREACHABLE
    portUnreachable = icmp.PORT_UNREACHABLE
    zeroPortComplaints = [("nat.udp.badAddress", "192.168.127.2:0 -> 192.168.127.254:53"),
                          ("nat.udp.badAddress", "192.168.127.2:53 -> 192.168.127.254:0")]
    tooBigCount = 1
    sendComplaints = [("nat.udp.sendError", "127.0.0.1:53: EINVAL")]
    recvComplaints = [("nat.udp.recvError", f"127.0.0.1:53: {oserror(errno.EINVAL)}")]

    packet = staticmethod(udpPacket)

    def makeNetwork(self):
        return FakeNetwork(self.reactor)

    def guestError(self, code):
        """
        The error the guest gets about its own datagram.
        """
        packet = udpPacket(GUEST, HOST, 4000, 53, b"x")[0]
        return (GUEST, HOST, bytes(packet.header), bytes(packet.payload[:8]),
                icmp.DEST_UNREACHABLE, code)

    def flowError(self, code):
        """
        The error the guest gets about a datagram of the flow, rebuilt.
        """
        header = udp.HEADER.pack(4000, 53, udp.HEADER_LEN, 0)
        return (GUEST, HOST, ipv4.buildHeader(GUEST, HOST, ipv4.PROTO_UDP, len(header)), header,
                icmp.DEST_UNREACHABLE, code)

    def test_unspecifiedGuest(self):
        """
        A datagram from 0.0.0.0 opens no flow.
        """
        nat = self.makeNAT()
        nat.udpReceived(*udpPacket(b"\0\0\0\0", HOST, 4000, 53, b"x"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.complaints(),
                         [("nat.udp.badAddress", "0.0.0.0:4000 -> 192.168.127.254:53")])


class UDP66Tests(UDPFamilyTests, SocketCase):
    """
    L{UDP66NAT}: IPv6. A port unreachable is sent from the destination
    itself, the other errors from the gateway (C{src} L{None}).
    """

    natClass = UDP66NAT
    family = socket.AF_INET6
    prefix = "nat66.udp"
    readerName = "gvtap-nat66-udp"
    guest, host, world = GUEST6, HOST6, WORLD6
    loopback, anyAddress, worldText = "::1", "::", "2606:4700::1111"
    hostPort = "[::1]:53"
    netUnreachable = icmpv6.NO_ROUTE
    portUnreachable = icmpv6.PORT_UNREACHABLE
    zeroPortComplaints = [("nat66.udp.badPort", "")] * 2
    tooBigCount = 0
    sendComplaints = [("nat66.udp.socketError", f"[::1]:53: {oserror(errno.EMSGSIZE)}"),
                      ("nat66.udp.socketError", f"[::1]:53: {oserror(errno.EINVAL)}")]
    recvComplaints = [("nat66.udp.socketError", f"[::1]:53: {oserror(errno.EINVAL)}")]

    packet = staticmethod(udp6Packet)

    def makeNetwork(self):
        return FakeGateway(self.reactor)

    def _source(self, code):
        return HOST6 if code == icmpv6.PORT_UNREACHABLE else None

    def guestError(self, code):
        packet = udp6Packet(GUEST6, HOST6, 4000, 53, b"x")[0]
        return (GUEST6, HOST6, bytes(packet.packet), icmpv6.DEST_UNREACHABLE, code,
                self._source(code))

    def flowError(self, code):
        header = udp.HEADER.pack(4000, 53, udp.HEADER_LEN, 0)
        return (GUEST6, HOST6, ipv6.buildHeader(GUEST6, HOST6, ipv6.PROTO_UDP, len(header))
                + header, icmpv6.DEST_UNREACHABLE, code, self._source(code))
