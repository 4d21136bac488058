"""
Tests for L{gvtwisted.stack.ipv6gateway} (NDP, router advertisements, echo,
the neighbour cache, UDP and TCP to the gateway), L{gvtwisted.stack.udp6} and
L{gvtwisted.services.dhcpv6}, on the network that C{twistd gvtap} builds
(L{Gvtap}) with a clock.

A fake guest link on the switch is fed frames (captured from a Linux guest
and dhclient, built by dpkt, or built by the wire builders whose golden tests
are in test_wire_ipv6) and the exact frames it gets back are checked.
"""

import ipaddress
import os
import struct
import tempfile

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.services import dhcpv6 as dhcpv6Server
from gvtwisted.stack import ipv6gateway
from gvtwisted.wire import dhcpv6, icmpv6, ipv6
from tests.checksumpolicy import verifyingVariants
from tests.test_wire_ipv6 import (
    CAPTURED_DAD, CAPTURED_INFO_REQUEST, CAPTURED_MLD, CAPTURED_RS, CAPTURED_SOLICIT,
    GUEST_LL, GUEST_MAC, GW_LL, GW_MAC, referenceChecksum,
)

# The checksum-policy twins run the same fuzz tests from a subclass.
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.differing_executors])

OTHER_MAC = bytes.fromhex("5a94efe40caa")
OTHER_LL = ipv6.linkLocalFromMAC(OTHER_MAC)
PREFIX = bytes.fromhex("fd000192016801270000000000000000")
GW6 = PREFIX[:15] + b"\x01"
DEVICE6 = PREFIX[:15] + b"\x02"
HOST6 = PREFIX[:15] + b"\xfe"
GUEST_SLAAC = PREFIX[:8] + ipv6.interfaceIdentifier(GUEST_MAC)
POOL_FIRST = PREFIX[:14] + b"\x10\x00"


class FakePort:
    name = "guest"

    def __init__(self):
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


def frame(src, dst, nextHeader, payload, hopLimit=255, srcMAC=GUEST_MAC, dstMAC=None):
    """
    An Ethernet + IPv6 frame built with dpkt around C{payload} (bytes).
    """
    if dstMAC is None:
        dstMAC = ipv6.multicastMAC(dst) if dst[0] == 0xFF else GW_MAC
    packet = dpkt.ip6.IP6(src=src, dst=dst, nxt=nextHeader, hlim=hopLimit, data=payload)
    packet.plen = len(payload)
    return bytes(dpkt.ethernet.Ethernet(dst=dstMAC, src=srcMAC, type=0x86DD, data=bytes(packet)))


def udpPayload(src, dst, srcPort, dstPort, data):
    header = struct.pack("!HHHH", srcPort, dstPort, 8 + len(data), 0)
    csum = referenceChecksum(src, dst, 17, header + data)
    return struct.pack("!HHHH", srcPort, dstPort, 8 + len(data), csum) + data


class Received:
    """
    One frame the guest got, parsed.
    """

    def __init__(self, data):
        self.frame = data
        self.dstMAC = data[0:6]
        self.srcMAC = data[6:12]
        self.packet = ipv6.parse(data)
        self.icmp = None
        if self.packet.proto == 58 and not self.packet.isFragment:
            self.icmp = icmpv6.parse(self.packet.src, self.packet.dst, self.packet.payload)


class GatewayTestCase(SynchronousTestCase):
    def setUp(self):
        fd, self.resolvConf = tempfile.mkstemp()
        os.write(fd, b"nameserver 127.0.0.53\nsearch example.org corp.test\n")
        os.close(fd)
        self.addCleanup(os.unlink, self.resolvConf)
        self.clock = MemoryReactorClock()
        self.gvtap = self.build()
        self.gateway = self.gvtap.ipv6
        self.guest = FakePort()
        self.other = FakePort()
        self.gvtap.switch.attach(self.guest)
        self.gvtap.switch.attach(self.other)

    def build(self, **kwargs):
        config = kwargs.pop("config", None) or NetworkConfig()
        gvtap = Gvtap(self.clock, config, resolvConf=self.resolvConf, **kwargs)
        self.addCleanup(gvtap.stop)
        return gvtap

    def send(self, data, port=None):
        self.gvtap.switch.receiveFrame(port or self.guest, data)

    def received(self, port=None):
        port = port or self.guest
        frames = [Received(f) for f in port.frames if f[12:14] == b"\x86\xdd"]
        del port.frames[:]
        return frames

    def count(self, name):
        return self.gvtap.counters.get(name)


class RouterAdvertisementTests(GatewayTestCase):
    """
    The gateway advertises the prefix, the MTU and its DNS, periodically and
    when solicited.
    """

    def test_periodic(self):
        """
        Every RA_INTERVAL seconds a router advertisement goes to all nodes,
        from the gateway's link-local address with hop limit 255.
        """
        self.clock.advance(ipv6gateway.RA_INTERVAL - 1)
        self.assertEqual(self.received(), [])
        self.clock.advance(1)
        [ra] = self.received()
        self.assertEqual((ra.dstMAC, ra.srcMAC), (bytes.fromhex("333300000001"), GW_MAC))
        self.assertEqual((ra.packet.src, ra.packet.dst, ra.packet.hopLimit),
                         (GW_LL, ipv6.ALL_NODES, 255))
        self.assertEqual(ra.icmp[0], icmpv6.ROUTER_ADVERTISEMENT)
        self.clock.advance(ipv6gateway.RA_INTERVAL)
        self.assertEqual(len(self.received()), 1)

    def test_golden(self):
        """
        The advertisement is exactly the one laid out from RFC 4861 and RFC
        8106: O flag (DHCPv6 for other configuration), router lifetime 1800
        (NAT66 routes off the link), the prefix on-link and autonomous, MTU,
        RDNSS with the gateway and DNSSL with the host's search domains.
        """
        self.clock.advance(ipv6gateway.RA_INTERVAL)
        [ra] = self.received()
        golden = bytes.fromhex(
            "8600" "0000" "40" "40" "0708" "00000000" "00000000"
            "0101" "5a94efe40cdd"
            "0304" "40" "c0" "00015180" "00003840" "00000000" "fd000192016801270000000000000000"
            "0501" "0000" "000005dc"
            "1903" "0000" "00000708" "fd000192016801270000000000000001"
            "1f04" "0000" "00000708" "076578616d706c65" "036f7267" "00" "04636f7270" "0474657374" "00")
        csum = referenceChecksum(GW_LL, ipv6.ALL_NODES, 58, golden)
        self.assertEqual(bytes(ra.packet.payload), golden[:2] + struct.pack("!H", csum) + golden[4:])

    def test_routerLifetimeWithoutNAT(self):
        """
        Without a NAT to route off the link, the gateway is a router for the
        prefix only (router lifetime 0: no default route through it).
        """
        self.gateway.nat = None
        self.gateway.advertise()
        [ra] = self.received()
        self.assertEqual(icmpv6.parseRouterAdvertisement(ra.icmp[2]).routerLifetime, 0)

    def test_noDNS(self):
        """
        Without DNS there is no RDNSS nor DNSSL.
        """
        gvtap = self.build(dns=False)
        self.assertFalse(gvtap.ipv6.dnsAvailable)
        options = icmpv6.parseRouterAdvertisement(
            icmpv6.parse(GW_LL, ipv6.ALL_NODES, gvtap.ipv6.routerAdvertisement())[2]).options
        self.assertIsNone(options.rdnss)
        self.assertIsNone(options.dnssl)
        self.assertEqual(len(options.prefixes), 1)

    def test_stop(self):
        """
        After the network stops, no more advertisements.
        """
        self.gvtap.stop()
        self.clock.advance(ipv6gateway.RA_INTERVAL * 3)
        self.assertEqual(self.received(), [])

    def test_solicited(self):
        """
        A captured router solicitation gets a unicast advertisement to the
        soliciting address and MAC, and the guest is learnt.
        """
        self.send(CAPTURED_RS)
        [ra] = self.received()
        self.assertEqual((ra.dstMAC, ra.packet.dst, ra.packet.src), (GUEST_MAC, GUEST_LL, GW_LL))
        self.assertEqual(ra.icmp[0], icmpv6.ROUTER_ADVERTISEMENT)
        options = icmpv6.parseRouterAdvertisement(ra.icmp[2]).options
        self.assertEqual(options.prefixes[0].prefix, PREFIX)
        self.assertEqual(options.mtu, 1500)
        self.assertEqual(self.gateway.macFor(GUEST_LL), GUEST_MAC)

    def test_solicitedFromUnspecified(self):
        """
        A solicitation from :: is answered to all nodes.
        """
        rs = icmpv6.buildRouterSolicitation(ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS)
        self.send(frame(ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS, 58, rs))
        [ra] = self.received()
        self.assertEqual(ra.packet.dst, ipv6.ALL_NODES)

    def test_rateLimited(self):
        """
        Past RS_REPLIES_PER_SECOND solicitations in a second, no answer.
        """
        for _ in range(ipv6gateway.RS_REPLIES_PER_SECOND + 5):
            self.send(CAPTURED_RS)
        self.assertEqual(len(self.received()), ipv6gateway.RS_REPLIES_PER_SECOND)
        self.assertEqual(self.count("drop.ndp.rsRateLimited"), 5)
        self.clock.advance(1)
        self.send(CAPTURED_RS)
        self.assertEqual(len(self.received()), 1)

    def test_notOnLink(self):
        """
        A solicitation with a hop limit below 255 was routed: dropped.
        """
        rs = icmpv6.buildRouterSolicitation(GUEST_LL, ipv6.ALL_ROUTERS, GUEST_MAC)
        self.send(frame(GUEST_LL, ipv6.ALL_ROUTERS, 58, rs, hopLimit=64))
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ndp.notOnLink"), 1)

    def test_guestRouterAdvertisementIgnored(self):
        """
        A guest's own router advertisement is ignored.
        """
        ra = icmpv6.buildRouterAdvertisement(GUEST_LL, ipv6.ALL_NODES, icmpv6.RouterAdvertisement())
        self.send(frame(GUEST_LL, ipv6.ALL_NODES, 58, ra))
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("ndp.ignored"), 1)


class NeighborDiscoveryTests(GatewayTestCase):
    """
    Neighbor solicitations for our addresses are answered, nothing else.
    """

    def solicit(self, target, src=GUEST_LL, lla=GUEST_MAC, dst=None, hopLimit=255):
        dst = dst or ipv6.solicitedNode(target)
        ns = icmpv6.buildNeighborSolicitation(src, dst, target, lla)
        self.send(frame(src, dst, 58, ns, hopLimit=hopLimit))

    def test_ourAddresses(self):
        """
        The gateway's global and link-local addresses and the host address
        are answered with a solicited, overriding router advertisement of the
        gateway's MAC, sent to the soliciting guest.
        """
        for target in (GW6, GW_LL, HOST6):
            self.solicit(target)
            [na] = self.received()
            self.assertEqual((na.dstMAC, na.packet.dst, na.packet.src), (GUEST_MAC, GUEST_LL, target))
            self.assertEqual(na.packet.hopLimit, 255)
            self.assertEqual(na.icmp[0], icmpv6.NEIGHBOR_ADVERTISEMENT)
            message = icmpv6.parseNeighborMessage(na.icmp[2])
            self.assertEqual((message.target, message.flags, message.options.targetLinkLayer),
                             (target, 0xE0, GW_MAC))
        self.assertEqual(self.count("ndp.neighborAdvertisements"), 3)

    def test_golden(self):
        """
        The advertisement for the gateway, byte for byte (RFC 4861 4.4).
        """
        self.solicit(GW6, src=GUEST_SLAAC)
        [na] = self.received()
        body = bytes.fromhex("8800" "0000" "e0000000") + GW6 + bytes.fromhex("0201") + GW_MAC
        csum = referenceChecksum(GW6, GUEST_SLAAC, 58, body)
        expected = (GUEST_MAC + GW_MAC + b"\x86\xdd"
                    + bytes.fromhex("60000000" "0020" "3a" "ff") + GW6 + GUEST_SLAAC
                    + body[:2] + struct.pack("!H", csum) + body[4:])
        self.assertEqual(na.frame, expected)

    def test_otherAddressIgnored(self):
        """
        A solicitation for another guest's address gets nothing.
        """
        self.solicit(PREFIX[:15] + b"\x33")
        self.solicit(PREFIX[:15] + b"\x33", dst=GW6)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("ipv6.multicastIgnored"), 1)
        self.assertEqual(self.count("ndp.solicitationsIgnored"), 1)

    def test_dadLeftUnanswered(self):
        """
        A guest's duplicate address detection for its own address (the
        captured one) gets no answer, so the guest keeps its address.
        """
        self.send(CAPTURED_DAD)
        self.assertEqual(self.received(), [])
        self.assertIsNone(self.gateway.macFor(GUEST_LL))

    def test_dadForOurAddressDefended(self):
        """
        Duplicate address detection for the gateway's address is answered to
        all nodes, not solicited, so that the guest gives the address up.
        """
        for target in (GW6, GW_LL, HOST6):
            self.solicit(target, src=ipv6.UNSPECIFIED, lla=None)
            [na] = self.received()
            self.assertEqual((na.dstMAC, na.packet.dst), (bytes.fromhex("333300000001"), ipv6.ALL_NODES))
            message = icmpv6.parseNeighborMessage(na.icmp[2])
            self.assertEqual((message.target, message.flags), (target, 0xA0))
        self.assertEqual(self.count("ndp.addressDefended"), 3)

    def test_dadWithLinkLayerDropped(self):
        """
        A solicitation from :: must not carry a source link-layer option.
        """
        self.solicit(GW6, src=ipv6.UNSPECIFIED, lla=GUEST_MAC)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ndp.dadWithLinkLayer"), 1)

    def test_linkLayerMismatch(self):
        """
        A source link-layer option that is not the frame's MAC is refused.
        """
        self.solicit(GW6, lla=OTHER_MAC)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ndp.linkLayerMismatch"), 1)

    def test_hopLimit(self):
        """
        A solicitation that was routed (hop limit 64) is dropped.
        """
        self.solicit(GW6, hopLimit=64)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ndp.notOnLink"), 1)

    def test_ourAddressAsSource(self):
        """
        A guest sending from the gateway's address is dropped.
        """
        self.solicit(GW6, src=HOST6)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ipv6.ourSource"), 1)

    def test_advertisementClaimingOurAddress(self):
        """
        A guest advertising the gateway's address is refused and not learnt.
        """
        na = icmpv6.buildNeighborAdvertisement(GUEST_LL, ipv6.ALL_NODES, GW6, 0x20, GUEST_MAC)
        self.send(frame(GUEST_LL, ipv6.ALL_NODES, 58, na))
        self.assertEqual(self.count("drop.ndp.claimsOurAddress"), 1)
        self.assertIsNone(self.gateway.macFor(GW6))

    def test_resolution(self):
        """
        A packet for an unknown guest waits for a neighbor solicitation (to
        its solicited-node group, retried NS_TRIES times) and goes out once
        the guest advertises itself.
        """
        self.gateway.sendUDP(GW6, 53, GUEST_SLAAC, 4000, b"answer")
        [ns] = self.received()
        self.assertEqual(ns.packet.dst, ipv6.solicitedNode(GUEST_SLAAC))
        self.assertEqual(ns.dstMAC, ipv6.multicastMAC(ipv6.solicitedNode(GUEST_SLAAC)))
        message = icmpv6.parseNeighborMessage(ns.icmp[2])
        self.assertEqual((message.target, message.options.sourceLinkLayer), (GUEST_SLAAC, GW_MAC))
        self.clock.advance(ipv6gateway.NS_RETRY)
        self.assertEqual(len(self.received()), 1)
        na = icmpv6.buildNeighborAdvertisement(GUEST_SLAAC, GW6, GUEST_SLAAC, 0x60, GUEST_MAC)
        self.send(frame(GUEST_SLAAC, GW6, 58, na))
        [udp] = self.received()
        self.assertEqual((udp.dstMAC, udp.packet.dst, udp.packet.proto), (GUEST_MAC, GUEST_SLAAC, 17))
        self.assertEqual(bytes(udp.packet.payload[8:]), b"answer")
        self.assertTrue(ipv6.upperChecksumOK(GW6, GUEST_SLAAC, 17, udp.packet.payload))
        self.clock.advance(10)
        self.assertEqual(self.received(), [])

    def test_resolutionGivesUp(self):
        """
        With no answer after NS_TRIES solicitations, the packets are dropped
        and counted.
        """
        self.gateway.sendUDP(GW6, 53, GUEST_SLAAC, 4000, b"a")
        self.gateway.sendUDP(GW6, 53, GUEST_SLAAC, 4000, b"b")
        for _ in range(ipv6gateway.NS_TRIES):
            self.clock.advance(ipv6gateway.NS_RETRY)
        self.assertEqual(len(self.received()), ipv6gateway.NS_TRIES)
        self.assertEqual(self.count("drop.ndp.unresolved"), 2)

    def test_cacheBounded(self):
        """
        The neighbour cache holds NEIGHBOR_CACHE_MAX entries; the oldest goes.
        """
        self.patch(ipv6gateway, "NEIGHBOR_CACHE_MAX", 3)
        for i in range(5):
            address = PREFIX[:15] + bytes((0x40 + i,))
            echo = icmpv6.echo(address, GW6, 1, i)
            self.send(frame(address, GW6, 58, echo))
            self.clock.advance(1)
        self.assertEqual(len(self.gateway.neighbours), 3)
        self.assertIsNone(self.gateway.macFor(PREFIX[:15] + b"\x40"))
        self.assertEqual(self.gateway.macFor(PREFIX[:15] + b"\x44"), GUEST_MAC)
        self.assertEqual(self.count("ndp.neighboursEvicted"), 2)

    def test_foreignSource(self):
        """
        A global source outside the prefix is dropped.
        """
        source = bytes.fromhex("20010db8000000000000000000000001")
        self.send(frame(source, GW6, 58, icmpv6.echo(source, GW6, 1, 1)))
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ipv6.foreignSource"), 1)

    def test_staticAddressSpoofed(self):
        """
        The device's static address ::2 from another MAC is dropped.
        """
        self.send(frame(DEVICE6, GW6, 58, icmpv6.echo(DEVICE6, GW6, 1, 1), srcMAC=OTHER_MAC),
                  port=self.other)
        self.assertEqual(self.received(self.other), [])
        self.assertEqual(self.count("drop.ipv6.spoofedSource"), 1)
        self.send(frame(DEVICE6, GW6, 58, icmpv6.echo(DEVICE6, GW6, 1, 1)))
        self.assertEqual(len(self.received()), 1)

    def test_multicastIgnored(self):
        """
        An MLD report (to ff02::16, behind a hop-by-hop header) is nobody's
        business here.
        """
        self.send(CAPTURED_MLD)
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("ipv6.multicastIgnored"), 1)

    def test_otherGuestsUnicastIgnored(self):
        """
        A unicast frame for another guest's MAC, flooded to the gateway, is
        not the gateway's to answer.
        """
        echo = icmpv6.echo(GUEST_SLAAC, GW6, 1, 1)
        self.send(frame(GUEST_SLAAC, GW6, 58, echo, dstMAC=bytes.fromhex("5a94efe40c01")))
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("icmpv6.echoReplies"), 0)


class EchoAndTransportTests(GatewayTestCase):
    """
    Echo to the gateway, and UDP and TCP to it.
    """

    def test_echo(self):
        """
        An echo request to either gateway address, built by dpkt, gets the
        reply dpkt would build.
        """
        for dst in (GW6, GW_LL):
            src = GUEST_SLAAC if dst == GW6 else GUEST_LL
            request = dpkt.icmp6.ICMP6(type=128, data=dpkt.icmp6.ICMP6.Echo(id=7, seq=3, data=b"abc" * 20))
            packet = dpkt.ip6.IP6(src=src, dst=dst, nxt=58, hlim=64, data=request)
            packet.plen = len(bytes(request))
            self.send(bytes(dpkt.ethernet.Ethernet(dst=GW_MAC, src=GUEST_MAC, type=0x86DD,
                                                   data=bytes(packet))))
            [reply] = self.received()
            expected = dpkt.icmp6.ICMP6(type=129, data=dpkt.icmp6.ICMP6.Echo(id=7, seq=3, data=b"abc" * 20))
            out = dpkt.ip6.IP6(src=dst, dst=src, nxt=58, hlim=64, data=expected)
            out.plen = len(bytes(expected))
            self.assertEqual(reply.frame, GUEST_MAC + GW_MAC + b"\x86\xdd" + bytes(out))
        self.assertEqual(self.count("icmpv6.echoReplies"), 2)

    def test_badChecksum(self):
        """
        An echo request with a wrong checksum is dropped and counted.
        """
        echo = bytearray(icmpv6.echo(GUEST_SLAAC, GW6, 1, 1))
        echo[2] ^= 0xFF
        self.send(frame(GUEST_SLAAC, GW6, 58, bytes(echo)))
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.icmpv6.checksum"), 1)

    def test_noRoute(self):
        """
        Without NAT66, traffic to another destination gets a destination
        unreachable (no route) quoting it.
        """
        self.gateway.nat = None
        far = bytes.fromhex("20010db8000000000000000000000001")
        data = frame(GUEST_SLAAC, far, 58, icmpv6.echo(GUEST_SLAAC, far, 1, 1), hopLimit=64)
        self.send(data)
        [error] = self.received()
        self.assertEqual(error.icmp[:2], (icmpv6.DEST_UNREACHABLE, icmpv6.NO_ROUTE))
        self.assertEqual(error.packet.src, GW6)
        self.assertEqual(bytes(error.icmp[2][4:]), data[14:])
        self.assertEqual(self.count("drop.ipv6.noRoute"), 1)

    def test_udpPortUnreachable(self):
        """
        UDP to a closed gateway port gets a port unreachable.
        """
        self.send(frame(GUEST_SLAAC, GW6, 17, udpPayload(GUEST_SLAAC, GW6, 5000, 9, b"x"), 64))
        [error] = self.received()
        self.assertEqual(error.icmp[:2], (icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE))
        self.assertEqual(self.count("drop.ipv6.udp.noListener"), 1)

    def test_udpBadChecksum(self):
        """
        With C{--verify-checksums}, a UDP datagram with a zero or wrong
        checksum is dropped; without it (the default: a guest with checksum
        offload sends partial checksums), it reaches the port.
        """
        def badDatagrams():
            for csum in (0, 1234):
                data = bytearray(udpPayload(GUEST_SLAAC, GW6, 5000, 5470, b"xxxx"))
                data[6:8] = struct.pack("!H", csum)
                # Not through dpkt, which would fill in a zero checksum.
                self.send(GW_MAC + GUEST_MAC + b"\x86\xdd"
                          + ipv6.buildHeader(GUEST_SLAAC, GW6, 17, len(data)) + bytes(data))

        self.gvtap = self.build(verifyChecksums=True)
        self.gateway = self.gvtap.ipv6
        self.gvtap.switch.attach(self.guest)
        badDatagrams()
        self.assertEqual(self.received(), [])
        self.assertEqual(self.count("drop.ipv6.udp.checksum"), 2)

        got = []

        class Sink(DatagramProtocol):
            def datagramReceived(self, data, addr):
                got.append(data)

        unverified = self.build(verifyChecksums=False)
        self.gvtap, self.gateway = unverified, unverified.ipv6
        self.guest = FakePort()
        self.gvtap.switch.attach(self.guest)
        self.gateway.listenUDP(5470, Sink())
        badDatagrams()
        self.assertEqual(got, [b"xxxx", b"xxxx"])
        self.assertEqual(self.count("drop.ipv6.udp.checksum"), 0)

    def test_udpListener(self):
        """
        A protocol bound with listenUDP gets the datagram with the sender's
        text address, and its replies go back from the bound address.
        """
        got = []

        class Echo(DatagramProtocol):
            def datagramReceived(self, data, addr):
                got.append((data, addr))
                self.transport.write(data.upper(), addr)

        port = self.gateway.listenUDP(7, Echo(), interface="fd00:192:168:127::1")
        self.assertEqual(port.getHost().host, "fd00:192:168:127::1")
        self.send(frame(GUEST_SLAAC, GW6, 17, udpPayload(GUEST_SLAAC, GW6, 5000, 7, b"hello"), 64))
        self.assertEqual(got, [(b"hello", ("fd00:192:168:127:5894:efff:fee4:cee", 5000))])
        [reply] = self.received()
        self.assertEqual((reply.packet.src, reply.packet.dst), (GW6, GUEST_SLAAC))
        self.assertEqual(bytes(reply.packet.payload),
                         udpPayload(GW6, GUEST_SLAAC, 7, 5000, b"HELLO"))
        port.stopListening()
        self.send(frame(GUEST_SLAAC, GW6, 17, udpPayload(GUEST_SLAAC, GW6, 5000, 7, b"hello"), 64))
        self.assertEqual(len(got), 1)

    def test_udpBoundOnOtherAddress(self):
        """
        A port bound on an address that is not the gateway's (a UDP
        forward's source: ::fe, or a client's address) gets what the guest
        sends there before the NAT, and answers from that address.
        """
        got = []

        class Echo(DatagramProtocol):
            def datagramReceived(self, data, addr):
                got.append((data, addr))
                self.transport.write(b"back", addr)

        client = bytes.fromhex("20010db8000000000000000000000005")
        for address in (HOST6, client):
            port = self.gateway.listenUDP(40000, Echo(), interface=str(ipaddress.IPv6Address(address)))
            self.send(frame(GUEST_SLAAC, address, 17, udpPayload(GUEST_SLAAC, address, 53, 40000, b"x"), 64))
            [reply] = self.received()
            self.assertEqual((reply.packet.src, reply.packet.dst), (address, GUEST_SLAAC))
            port.stopListening()
        self.assertEqual(len(got), 2)
        self.assertEqual(self.count("nat66.udp.datagramsOut"), 0)

    def test_tcpRefused(self):
        """
        A SYN to a closed gateway port over IPv6 gets RST|ACK with ack =
        seq + 1.
        """
        syn = dpkt.tcp.TCP(sport=40000, dport=81, seq=1000, flags=dpkt.tcp.TH_SYN, win=65535)
        packet = dpkt.ip6.IP6(src=GUEST_SLAAC, dst=GW6, nxt=6, hlim=64, data=syn)
        packet.plen = len(bytes(syn))
        self.send(bytes(dpkt.ethernet.Ethernet(dst=GW_MAC, src=GUEST_MAC, type=0x86DD,
                                               data=bytes(packet))))
        [rst] = self.received()
        self.assertTrue(ipv6.upperChecksumOK(GW6, GUEST_SLAAC, 6, rst.packet.payload))
        seg = dpkt.tcp.TCP(bytes(rst.packet.payload))
        self.assertEqual((seg.sport, seg.dport, seg.flags, seg.ack),
                         (81, 40000, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, 1001))

    def test_fragmentsReassembled(self):
        """
        A 3000-byte echo request sent in fragments (out of order) is
        reassembled and answered, in fragments within the MTU that put
        together give the reply.
        """
        echo = icmpv6.echo(GUEST_SLAAC, GW6, 1, 1, bytes(range(256)) * 12)
        packets = ipv6.fragment(GUEST_SLAAC, GW6, 58, echo, 1280, 5)
        self.assertEqual(len(packets), 3)
        for p in reversed(packets):
            self.send(GW_MAC + GUEST_MAC + b"\x86\xdd" + p)
        replies = self.received()
        self.assertEqual(self.count("ipv6.reassembled"), 1)
        self.assertEqual(self.count("icmpv6.echoReplies"), 1)
        data = b"".join(bytes(r.packet.payload) for r in replies)
        self.assertTrue(all(r.packet.isFragment for r in replies))
        self.assertEqual(data, icmpv6.build(GW6, GUEST_SLAAC, icmpv6.ECHO_REPLY, 0, echo[4:]))

    def test_fragmentsBounded(self):
        """
        An overlapping fragment drops the datagram (RFC 5722), counted under
        IPv6's name; an incomplete one times out.
        """
        echo = icmpv6.echo(GUEST_SLAAC, GW6, 1, 1, b"z" * 2000)
        first, second = ipv6.fragment(GUEST_SLAAC, GW6, 58, echo, 1280, 6)
        self.send(GW_MAC + GUEST_MAC + b"\x86\xdd" + first)
        overlapping = ipv6.buildFragmentHeader(58, 8, True, 6) + b"o" * 64
        self.send(GW_MAC + GUEST_MAC + b"\x86\xdd"
                  + ipv6.buildHeader(GUEST_SLAAC, GW6, 44, len(overlapping)) + overlapping)
        self.assertEqual(self.count("drop.ipv6.fragmentOverlap"), 1)
        self.send(GW_MAC + GUEST_MAC + b"\x86\xdd" + second)
        self.clock.advance(31)
        self.assertEqual(self.count("drop.ipv6.reassemblyTimeout"), 1)
        self.assertEqual(self.count("icmpv6.echoReplies"), 0)
        self.assertEqual(len(self.gateway.reassembler), 0)

    def test_bigReplyFragmented(self):
        """
        An echo bigger than the MTU is answered in fragments within it.
        """
        self.send(CAPTURED_RS)  # the switch learns the guest's MAC
        self.received()
        self.gateway.neighbours[GUEST_SLAAC] = [GUEST_MAC, 0]
        self.gateway.sendIPv6(GW6, GUEST_SLAAC, 58, icmpv6.echo(GW6, GUEST_SLAAC, 1, 1, b"y" * 3000, True))
        frames = self.received()
        self.assertEqual(len(frames), 3)
        for f in frames:
            self.assertLessEqual(len(f.frame) - 14, 1500)
            self.assertTrue(f.packet.isFragment)


class LinkLifecycleTests(GatewayTestCase):
    """
    A guest link gone past its grace period takes its IPv6 state with it.
    """

    def test_linkExpired(self):
        """
        Its IPv6 neighbours are forgotten and its IPv6 TCP connections
        (here one to the gateway's DNS) are aborted, as its IPv4 ones are.
        """
        self.send(CAPTURED_RS)
        syn = dpkt.tcp.TCP(sport=40000, dport=53, seq=1, flags=dpkt.tcp.TH_SYN, win=65535)
        packet = dpkt.ip6.IP6(src=GUEST_SLAAC, dst=GW6, nxt=6, hlim=64, data=syn)
        packet.plen = len(bytes(syn))
        self.send(bytes(dpkt.ethernet.Ethernet(dst=GW_MAC, src=GUEST_MAC, type=0x86DD,
                                               data=bytes(packet))))
        self.assertEqual(self.gvtap.tcp6.connectionCount(), 1)
        self.assertEqual(self.gateway.macFor(GUEST_SLAAC), GUEST_MAC)
        self.assertIsNotNone(self.gateway.linkFor(GUEST_SLAAC))
        self.gvtap.switch.detach(self.guest)
        self.clock.advance(self.gvtap.switch.linkGrace + 1)
        self.assertEqual(self.gvtap.tcp6.connectionCount(), 0)
        self.assertIsNone(self.gateway.macFor(GUEST_SLAAC))
        self.assertIsNone(self.gateway.macFor(GUEST_LL))


class NoIPv6Tests(GatewayTestCase):
    """
    With --no-ipv6 nothing of the above exists.
    """

    def test_disabled(self):
        """
        No IPv6 gateway: IPv6 frames are counted as an unsupported type, and
        nothing is advertised.
        """
        gvtap = self.build(config=NetworkConfig(ipv6=False))
        self.assertIsNone(gvtap.ipv6)
        self.assertIsNone(gvtap.network.ipv6)
        port = FakePort()
        gvtap.switch.attach(port)
        gvtap.switch.receiveFrame(port, CAPTURED_RS)
        self.clock.advance(ipv6gateway.RA_INTERVAL * 2)
        self.assertEqual([f for f in port.frames if f[6:12] == GW_MAC], [])
        self.assertEqual(gvtap.counters.get("drop.ethernet.unsupportedType"), 1)


class FuzzTests(GatewayTestCase):
    """
    Nothing a guest sends raises out of the gateway.
    """

    @FUZZ
    @given(st.binary(max_size=200))
    def test_random(self, payload):
        """
        Random bytes after an Ethernet header of type IPv6.
        """
        self.gateway.frameReceived(GW_MAC + GUEST_MAC + b"\x86\xdd" + payload)

    @FUZZ
    @given(st.sampled_from([CAPTURED_RS, CAPTURED_DAD, CAPTURED_INFO_REQUEST, CAPTURED_SOLICIT,
                            CAPTURED_MLD]),
           st.lists(st.tuples(st.integers(14, 117), st.integers(0, 255)), max_size=5),
           st.booleans())
    def test_mutated(self, data, changes, fixChecksum):
        """
        Captured frames with bytes changed (and, half the time, the upper
        checksum made right again so that the change reaches the parsers
        past it).
        """
        data = bytearray(data)
        for i, value in changes:
            if i < len(data):
                data[i] = value
        if fixChecksum and len(data) >= 62 and data[20] in (17, 58):
            at = 54 + (6 if data[20] == 17 else 2)
            data[at:at + 2] = b"\x00\x00"
            data[at:at + 2] = struct.pack("!H", referenceChecksum(data[22:38], data[38:54],
                                                                  data[20], bytes(data[54:])))
        self.gateway.frameReceived(bytes(data))


class ReassemblyFuzzTests(GatewayTestCase):
    """
    Random fragments never raise out of the gateway, and the table stays
    bounded.
    """

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, 300), st.booleans(), st.binary(max_size=64),
                              st.sampled_from([17, 58, 60, 44, 0])), max_size=12))
    def test_fragments(self, fragments):
        """
        Fragments with random offsets, flags, data and next headers.
        """
        for offset, more, data, nextHeader in fragments:
            body = ipv6.buildFragmentHeader(nextHeader, offset * 8, more, 7) + data
            self.gateway.frameReceived(GW_MAC + GUEST_MAC + b"\x86\xdd"
                                       + ipv6.buildHeader(GUEST_SLAAC, GW6, 44, len(body)) + body)
        self.assertLessEqual(len(self.gateway.reassembler), 64)


class DHCPv6Tests(GatewayTestCase):
    """
    The DHCPv6 server at the gateway, through captured dhclient messages.
    """

    def replies(self):
        out = []
        for f in self.received():
            self.assertEqual((f.packet.proto, f.packet.src), (17, GW_LL))
            self.assertTrue(ipv6.upperChecksumOK(f.packet.src, f.packet.dst, 17, f.packet.payload))
            self.assertEqual(struct.unpack("!HH", f.packet.payload[:4]), (547, 546))
            out.append((f, dhcpv6.parse(f.packet.payload[8:])))
        return out

    def message(self, msgType, xid=0x123456, clientID=None, serverID=None, options=(),
                srcMAC=GUEST_MAC, port=None):
        m = dhcpv6.Message(msgType, xid)
        m.add(dhcpv6.OPT_CLIENTID, clientID or dhcpv6.duidLL(srcMAC))
        if serverID is not None:
            m.add(dhcpv6.OPT_SERVERID, serverID)
        for code, data in options:
            m.add(code, data)
        src = ipv6.linkLocalFromMAC(srcMAC)
        self.send(frame(src, ipv6.ALL_DHCP_AGENTS, 17,
                        udpPayload(src, ipv6.ALL_DHCP_AGENTS, 546, 547, m.toBytes()),
                        hopLimit=1, srcMAC=srcMAC), port=port)

    def ia(self, iaid=1, addresses=()):
        return (dhcpv6.OPT_IA_NA, dhcpv6.IdentityAssociation(
            iaid, 0, 0, [dhcpv6.IAAddress(a, 0, 0) for a in addresses]).toBytes())

    def test_informationRequest(self):
        """
        dhclient -6 -S's information-request gets a reply to its link-local
        address with our DUID, its client id, the gateway as DNS server and
        the host's search list.
        """
        self.send(CAPTURED_INFO_REQUEST)
        [(f, reply)] = self.replies()
        self.assertEqual((f.dstMAC, f.packet.dst), (GUEST_MAC, GUEST_LL))
        self.assertEqual((reply.msgType, reply.transactionId), (dhcpv6.REPLY, 0x7B23C6))
        self.assertEqual(reply.serverID, dhcpv6.duidLL(GW_MAC))
        self.assertEqual(reply.clientID, bytes.fromhex("000300015a94efe40cee"))
        self.assertEqual(dhcpv6.parseDNSServers(reply.get(dhcpv6.OPT_DNS_SERVERS)), [GW6])
        self.assertEqual(dhcpv6.parseDomainList(reply.get(dhcpv6.OPT_DOMAIN_LIST)),
                         ["example.org", "corp.test"])
        self.assertEqual(reply.identityAssociations(), [])

    def test_informationRequestGolden(self):
        """
        The reply to the captured information-request, byte for byte.
        """
        self.send(CAPTURED_INFO_REQUEST)
        [(f, _)] = self.replies()
        golden = bytes.fromhex(
            "07" "7b23c6"
            "0002" "000a" "00030001" "5a94efe40cdd"
            "0001" "000a" "00030001" "5a94efe40cee"
            "0017" "0010" "fd000192016801270000000000000001"
            "0018" "0018" "076578616d706c65036f726700" "04636f72700474657374" "00"
            "0020" "0004" "00000e10")
        self.assertEqual(bytes(f.packet.payload[8:]), golden)

    def test_informationRequestWithIA(self):
        """
        An information-request carrying an IA_NA is discarded (RFC 8415 16.12).
        """
        self.message(dhcpv6.INFORMATION_REQUEST, options=[self.ia()])
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.count("drop.dhcpv6.informationRequestWithIA"), 1)

    def test_solicitDevice(self):
        """
        dhclient's captured solicit from the device MAC is advertised ::2.
        """
        self.send(CAPTURED_SOLICIT)
        [(f, reply)] = self.replies()
        self.assertEqual(reply.msgType, dhcpv6.ADVERTISE)
        [ia] = reply.identityAssociations()
        self.assertEqual(ia.iaid, 0xEFE40CEE)
        self.assertEqual([a.address for a in ia.addresses], [DEVICE6])
        self.assertEqual((ia.t1, ia.t2), (dhcpv6Server.T1, dhcpv6Server.T2))

    def test_requestAndRenew(self):
        """
        Another guest gets the first pool address: advertised, then bound by
        REQUEST, extended by RENEW, freed by RELEASE.
        """
        server = dhcpv6.duidLL(GW_MAC)
        self.message(dhcpv6.SOLICIT, srcMAC=OTHER_MAC, port=self.other, options=[self.ia(9)])
        [(_, advertise)] = self.replies_of(self.other)
        self.assertEqual(advertise.msgType, dhcpv6.ADVERTISE)
        self.assertEqual(advertise.identityAssociations()[0].addresses[0].address, POOL_FIRST)
        self.message(dhcpv6.REQUEST, srcMAC=OTHER_MAC, port=self.other, serverID=server,
                     options=[self.ia(9, [POOL_FIRST])])
        [(_, reply)] = self.replies_of(self.other)
        self.assertEqual(reply.msgType, dhcpv6.REPLY)
        [ia] = reply.identityAssociations()
        self.assertEqual((ia.addresses[0].address, ia.addresses[0].validLifetime),
                         (POOL_FIRST, dhcpv6Server.VALID_LIFETIME))
        self.assertEqual(self.gvtap.dhcpv6.ownerOf(POOL_FIRST), OTHER_MAC)
        self.assertEqual(self.gvtap.dhcpv6.leases(),
                         {"fd00:192:168:127::1000": "5a:94:ef:e4:0c:aa"})
        self.clock.advance(3000)
        self.message(dhcpv6.RENEW, srcMAC=OTHER_MAC, port=self.other, serverID=server,
                     options=[self.ia(9, [POOL_FIRST])])
        [(_, reply)] = self.replies_of(self.other)
        self.assertEqual(reply.identityAssociations()[0].addresses[0].address, POOL_FIRST)
        self.clock.advance(dhcpv6Server.VALID_LIFETIME - 10)
        self.assertEqual(self.gvtap.dhcpv6.ownerOf(POOL_FIRST), OTHER_MAC)
        self.message(dhcpv6.RELEASE, srcMAC=OTHER_MAC, port=self.other, serverID=server,
                     options=[self.ia(9, [POOL_FIRST])])
        [(_, reply)] = self.replies_of(self.other)
        self.assertEqual(dhcpv6.parseStatusCode(reply.get(dhcpv6.OPT_STATUS_CODE))[0],
                         dhcpv6.STATUS_SUCCESS)
        self.assertIsNone(self.gvtap.dhcpv6.ownerOf(POOL_FIRST))

    def replies_of(self, port):
        # Router advertisements come and go as the clock runs.
        frames = [f for f in self.received(port) if f.packet.proto == 17]
        return [(f, dhcpv6.parse(f.packet.payload[8:])) for f in frames]

    def test_rapidCommit(self):
        """
        A solicit with rapid commit gets a REPLY with rapid commit at once.
        """
        self.message(dhcpv6.SOLICIT, options=[self.ia(), (dhcpv6.OPT_RAPID_COMMIT, b"")])
        [(_, reply)] = self.replies()
        self.assertEqual(reply.msgType, dhcpv6.REPLY)
        self.assertEqual(reply.get(dhcpv6.OPT_RAPID_COMMIT), b"")
        self.assertEqual(reply.identityAssociations()[0].addresses[0].address, DEVICE6)

    def test_deviceNotImpersonated(self):
        """
        A guest whose DUID names the device MAC still gets a pool address:
        the MAC is the frame's.
        """
        self.message(dhcpv6.SOLICIT, srcMAC=OTHER_MAC, port=self.other,
                     clientID=dhcpv6.duidLL(GUEST_MAC), options=[self.ia()])
        [(_, reply)] = self.replies_of(self.other)
        self.assertEqual(reply.identityAssociations()[0].addresses[0].address, POOL_FIRST)

    def test_requestForAnotherServer(self):
        """
        A REQUEST naming another server (or none) is not answered.
        """
        self.message(dhcpv6.REQUEST, serverID=b"\x00\x03\x00\x01" + OTHER_MAC, options=[self.ia()])
        self.message(dhcpv6.REQUEST, options=[self.ia()])
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.count("dhcpv6.notForUs"), 2)

    def test_renewWithoutBinding(self):
        """
        RENEW for an unknown binding gets status NoBinding in its IA.
        """
        self.message(dhcpv6.RENEW, serverID=dhcpv6.duidLL(GW_MAC), options=[self.ia(4)])
        [(_, reply)] = self.replies()
        self.assertEqual(reply.identityAssociations()[0].status()[0], dhcpv6.STATUS_NO_BINDING)

    def test_confirm(self):
        """
        CONFIRM says whether the addresses are on the link.
        """
        self.message(dhcpv6.CONFIRM, options=[self.ia(1, [POOL_FIRST])])
        far = bytes.fromhex("20010db8000000000000000000000001")
        self.message(dhcpv6.CONFIRM, options=[self.ia(1, [far])])
        codes = [dhcpv6.parseStatusCode(r.get(dhcpv6.OPT_STATUS_CODE))[0] for _, r in self.replies()]
        self.assertEqual(codes, [dhcpv6.STATUS_SUCCESS, dhcpv6.STATUS_NOT_ON_LINK])

    def test_poolFull(self):
        """
        When the pool is taken, a new client's IA says NoAddrsAvail; an
        expired binding is reused.
        """
        self.patch(dhcpv6Server, "POOL_SIZE", 1)
        self.message(dhcpv6.SOLICIT, srcMAC=OTHER_MAC, port=self.other,
                     options=[self.ia(1), (dhcpv6.OPT_RAPID_COMMIT, b"")])
        self.message(dhcpv6.SOLICIT, srcMAC=OTHER_MAC, port=self.other,
                     clientID=b"\x00\x02\x00\x00\x00\x09abc", options=[self.ia(1)])
        [_, (_, reply)] = self.replies_of(self.other)
        self.assertEqual(reply.identityAssociations()[0].status()[0], dhcpv6.STATUS_NO_ADDRS_AVAIL)
        self.clock.advance(dhcpv6Server.VALID_LIFETIME + 1)
        self.message(dhcpv6.SOLICIT, srcMAC=OTHER_MAC, port=self.other,
                     clientID=b"\x00\x02\x00\x00\x00\x09abc", options=[self.ia(1)])
        [(_, reply)] = self.replies_of(self.other)
        self.assertEqual(reply.identityAssociations()[0].addresses[0].address, POOL_FIRST)

    def test_malformed(self):
        """
        A malformed message is counted, not answered.
        """
        src = GUEST_LL
        self.send(frame(src, ipv6.ALL_DHCP_AGENTS, 17,
                        udpPayload(src, ipv6.ALL_DHCP_AGENTS, 546, 547, b"\x0b\x00\x00\x00\x00\x01\x00\x09"),
                        hopLimit=1))
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.count("drop.dhcpv6.optionLength"), 1)


class DNSOverIPv6Tests(GatewayTestCase):
    """
    The gateway's DNS answers on its IPv6 address over UDP.
    """

    def test_localName(self):
        """
        A query for gateway.containers.internal to [gateway]:53 is answered
        from the local zone, back to the asking address.
        """
        from twisted.names import dns

        query = dns.Message(id=77, recDes=1)
        query.queries = [dns.Query(b"gateway.containers.internal", dns.A)]
        self.send(frame(GUEST_SLAAC, GW6, 17, udpPayload(GUEST_SLAAC, GW6, 5353, 53, query.toStr()), 64))
        [reply] = self.received()
        self.assertEqual((reply.packet.src, reply.packet.dst), (GW6, GUEST_SLAAC))
        answer = dns.Message()
        answer.fromStr(bytes(reply.packet.payload[8:]))
        self.assertEqual(answer.id, 77)
        self.assertEqual([a.payload.dottedQuad() for a in answer.answers], ["192.168.127.1"])


verifyingVariants(globals())
