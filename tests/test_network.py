"""
Tests for L{gvtwisted.stack.network} (the gateway host: ARP, IPv4 validation,
ICMP, UDP demux, ARP resolution, anti-spoofing, fragmentation) and
L{gvtwisted.stack.udp} (virtual UDP ports).

Every test builds a network on a L{Clock}, attaches a fake guest link to the
switch, feeds it golden frames (hand-built or built with dpkt) and checks the
exact frames the guest gets back.
"""

import socket

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gvtwisted.config import NetworkConfig
from gvtwisted.stack import network as networkModule
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.wire import checksum
from gvtwisted.wire import udp as wireUDP
from tests.checksumpolicy import verifyingVariants

# The same tests also run in twins with checksum verification on
# (tests.checksumpolicy): one test method called from two classes is meant here.
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.differing_executors])

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
OTHER_MAC = bytes.fromhex("5a94efe40caa")
BCAST_MAC = b"\xff" * 6
GW_IP = socket.inet_aton("192.168.127.1")
GUEST_IP = socket.inet_aton("192.168.127.2")
OTHER_IP = socket.inet_aton("192.168.127.3")
HOST_IP = socket.inet_aton("192.168.127.254")
UNUSED_IP = socket.inet_aton("192.168.127.77")
ZERO_IP = b"\x00" * 4
LIMITED_BCAST = b"\xff" * 4


class FakePort:
    """
    A guest link: records the frames the switch sends it.
    """

    name = "guest"

    def __init__(self):
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


class Recorder(DatagramProtocol):
    """
    Records datagrams delivered to a virtual UDP port.
    """

    def __init__(self):
        self.datagrams = []
        self.stopped = False

    def datagramReceived(self, data, addr):
        self.datagrams.append((data, addr))

    def stopProtocol(self):
        self.stopped = True


def arpFrame(op, sha, spa, tha, tpa, dst=BCAST_MAC, src=None, padTo=0):
    """
    An ARP frame built with dpkt, padded with zeros to C{padTo} bytes.
    """
    message = dpkt.arp.ARP(op=op, sha=sha, spa=spa, tha=tha, tpa=tpa)
    frame = bytes(dpkt.ethernet.Ethernet(dst=dst, src=src or sha, type=0x0806,
                                         data=bytes(message)))
    return frame + b"\x00" * max(0, padTo - len(frame))


def ipFrame(proto, transport, src=GUEST_IP, dst=GW_IP, srcMAC=GUEST_MAC, dstMAC=GW_MAC,
            padTo=0, ident=1):
    """
    An IPv4 frame built with dpkt; C{transport} is a dpkt ICMP/UDP object
    (whose checksum dpkt computes) or bytes.
    """
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, id=ident, data=transport)
    ip.len = 20 + len(bytes(transport))
    frame = bytes(dpkt.ethernet.Ethernet(dst=dstMAC, src=srcMAC, type=0x0800, data=bytes(ip)))
    return frame + b"\x00" * max(0, padTo - len(frame))


def echoRequest(ident=0x4242, seq=7, payload=b"abcdefgh", **kwargs):
    icmpMessage = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(
        id=ident, seq=seq, data=payload))
    return ipFrame(1, icmpMessage, **kwargs)


def udpFrame(sport, dport, data, **kwargs):
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    u.ulen = 8 + len(data)
    return ipFrame(17, u, **kwargs)


def recomputed(frame):
    """
    C{frame} re-serialised by dpkt with every checksum recomputed: equal to
    C{frame} exactly when all its checksums are right.
    """
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    ip.sum = 0
    if isinstance(ip.data, (dpkt.udp.UDP, dpkt.icmp.ICMP)):
        ip.data.sum = 0
    return bytes(eth)


class NetworkTestCase(SynchronousTestCase):
    """
    A network on a clock with one guest link attached to the switch.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.network = VirtualNetwork(self.clock, NetworkConfig(), self.switch, self.counters)
        self.guest = FakePort()
        self.switch.attach(self.guest)

    def send(self, frame):
        self.switch.receiveFrame(self.guest, frame)

    def learnGuest(self):
        """
        Let the network learn the guest's IP and MAC (gratuitous ARP).
        """
        self.send(arpFrame(dpkt.arp.ARP_OP_REQUEST, GUEST_MAC, GUEST_IP,
                           b"\x00" * 6, GUEST_IP))
        self.assertEqual(self.network.macFor(GUEST_IP), GUEST_MAC)
        del self.guest.frames[:]

    def assertNothingSent(self):
        self.assertEqual(self.guest.frames, [])


class ARPTests(NetworkTestCase):
    """
    The gateway answers ARP for the gateway and host addresses only.
    """

    def expectedReply(self, ip):
        return (GUEST_MAC + GW_MAC + b"\x08\x06"
                + bytes.fromhex("0001080006040002") + GW_MAC + ip + GUEST_MAC + GUEST_IP)

    def test_gateway(self):
        """
        A request for .1 gets a reply from the gateway MAC, byte for byte.
        """
        self.send(arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP))
        self.assertEqual(self.guest.frames, [self.expectedReply(GW_IP)])
        self.assertEqual(self.counters.get("arp.replies"), 1)

    def test_host(self):
        """
        A request for the host address .254 is answered with the gateway MAC.
        """
        self.send(arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, HOST_IP))
        self.assertEqual(self.guest.frames, [self.expectedReply(HOST_IP)])

    def test_otherAddressIgnored(self):
        """
        A request for any other address (.77) gets no reply and is counted.
        """
        self.send(arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, UNUSED_IP))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("arp.ignored"), 1)
        self.assertEqual(self.counters.get("arp.replies"), 0)

    def test_padded(self):
        """
        A 60-byte padded request (as real NICs send it) is answered the same.
        """
        frame = arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP, padTo=60)
        self.assertEqual(len(frame), 60)
        self.send(frame)
        self.assertEqual(self.guest.frames, [self.expectedReply(GW_IP)])

    def test_unicastRequest(self):
        """
        A request sent to the gateway's MAC (a refresh) is answered.
        """
        self.send(arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP, dst=GW_MAC))
        self.assertEqual(self.guest.frames, [self.expectedReply(GW_IP)])

    def test_probeFromZero(self):
        """
        A probe with sender 0.0.0.0 (RFC 5227) for the gateway is answered
        toward the prober's MAC, and nothing is learnt for 0.0.0.0.
        """
        self.send(arpFrame(1, GUEST_MAC, ZERO_IP, b"\x00" * 6, GW_IP))
        self.assertEqual(len(self.guest.frames), 1)
        self.assertEqual(self.guest.frames[0][:6], GUEST_MAC)
        self.assertIsNone(self.network.macFor(ZERO_IP))

    def test_replyLearnt(self):
        """
        An ARP reply is not answered but teaches the network the sender.
        """
        self.send(arpFrame(2, OTHER_MAC, OTHER_IP, GW_MAC, GW_IP, dst=GW_MAC))
        self.assertNothingSent()
        self.assertEqual(self.network.macFor(OTHER_IP), OTHER_MAC)

    def test_malformed(self):
        """
        A truncated ARP message is dropped and counted.
        """
        self.send(arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP)[:30])
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.arp.malformed"), 1)

    def test_foreignSender(self):
        """
        An ARP message whose sender claims the gateway's address, or one
        outside the subnet, is dropped and counted, and not answered.
        """
        self.send(arpFrame(1, GUEST_MAC, GW_IP, b"\x00" * 6, HOST_IP))
        self.send(arpFrame(1, GUEST_MAC, socket.inet_aton("10.1.2.3"), b"\x00" * 6, GW_IP))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.foreignSource"), 2)

    def test_spoofedSender(self):
        """
        An ARP message claiming an address leased to another MAC is dropped
        and counted, and the cache keeps the owner.
        """
        self.network.leaseOwner = {"192.168.127.2": "5a:94:ef:e4:0c:ee"}.get
        self.learnGuest()
        other = FakePort()
        self.switch.attach(other)
        self.switch.receiveFrame(other, arpFrame(1, OTHER_MAC, GUEST_IP, b"\x00" * 6, GW_IP))
        self.assertEqual(other.frames, [])
        self.assertEqual(self.counters.get("drop.ipv4.spoofedSource"), 1)
        self.assertEqual(self.network.macFor(GUEST_IP), GUEST_MAC)


class ICMPTests(NetworkTestCase):
    """
    The gateway answers ICMP echo sent to it.
    """

    def test_echo(self):
        """
        An echo request to the gateway gets a reply with the same
        identifier, sequence and payload, from .1 to .2, with right
        checksums.
        """
        self.send(echoRequest(ident=0x1234, seq=99, payload=b"0123456789" * 5))
        self.assertEqual(len(self.guest.frames), 1)
        reply = self.guest.frames[0]
        eth = dpkt.ethernet.Ethernet(reply)
        self.assertEqual((eth.dst, eth.src, eth.type), (GUEST_MAC, GW_MAC, 0x0800))
        ip = eth.data
        self.assertEqual((ip.src, ip.dst, ip.p), (GW_IP, GUEST_IP, 1))
        self.assertEqual((ip.data.type, ip.data.code), (0, 0))
        self.assertEqual((ip.data.data.id, ip.data.data.seq, ip.data.data.data),
                         (0x1234, 99, b"0123456789" * 5))
        self.assertEqual(recomputed(reply), reply)
        self.assertEqual(len(reply), 14 + 20 + 8 + 50)
        self.assertEqual(self.counters.get("icmp.echoReplies"), 1)

    def test_echoPadded(self):
        """
        An echo request padded to 60 bytes gets a reply whose payload does
        not include the Ethernet padding.
        """
        frame = echoRequest(payload=b"ab", padTo=60)
        self.assertEqual(len(frame), 60)
        self.send(frame)
        reply = dpkt.ethernet.Ethernet(self.guest.frames[0])
        self.assertEqual(reply.data.data.data.data, b"ab")
        self.assertEqual(len(self.guest.frames[0]), 14 + 20 + 8 + 2)

    def test_badChecksum(self):
        """
        An echo request with a wrong ICMP checksum is dropped and counted.
        """
        frame = bytearray(echoRequest())
        frame[-1] ^= 0x55
        self.send(bytes(frame))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.icmp.checksum"), 1)

    def test_echoToHostWithoutNAT(self):
        """
        Echo to the host address goes to the NAT; with none it is dropped
        and counted.
        """
        self.send(echoRequest(dst=HOST_IP))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.icmp.noRoute"), 1)

    def test_echoToNAT(self):
        """
        Echo to a non-local address is handed to the NAT with its fields.
        """
        calls = []

        class NAT:
            def icmpReceived(self, packet, icmpType, code, rest):
                calls.append((packet.dst, icmpType, code, bytes(rest)))

        self.network.nat = NAT()
        self.send(echoRequest(ident=1, seq=2, payload=b"x", dst=socket.inet_aton("8.8.8.8")))
        self.assertEqual(calls, [(socket.inet_aton("8.8.8.8"), 8, 0, b"\x00\x01\x00\x02x")])

    def test_nonEchoIgnored(self):
        """
        Other ICMP types to the gateway are counted and not answered.
        """
        message = dpkt.icmp.ICMP(type=13, code=0, data=b"\x00" * 16)
        self.send(ipFrame(1, message))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("icmp.ignored"), 1)


class IPv4ValidationTests(NetworkTestCase):
    """
    Bad IPv4 headers are dropped and counted under their reason.
    """

    def mutate(self, offset, value):
        frame = bytearray(echoRequest())
        frame[offset] = value
        return bytes(frame)

    def assertDropped(self, frame, reason):
        self.send(frame)
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop." + reason), 1)
        self.assertEqual(self.counters.get("ipv4.received"), 0)
        self.assertIsNone(self.network.macFor(GUEST_IP))

    def test_version(self):
        """
        Version 6 in an IPv4 frame is C{ipv4.version}.
        """
        self.assertDropped(self.mutate(14, 0x65), "ipv4.version")

    def test_headerLength(self):
        """
        An IHL of 4 (16 bytes) is C{ipv4.headerLength}.
        """
        self.assertDropped(self.mutate(14, 0x44), "ipv4.headerLength")

    def test_totalLengthBeyondFrame(self):
        """
        A total length beyond the frame is C{ipv4.totalLength}.
        """
        frame = echoRequest()
        self.assertDropped(frame[:-1], "ipv4.totalLength")

    def test_totalLengthBelowHeader(self):
        """
        A total length below the header length is C{ipv4.totalLength}.
        """
        frame = bytearray(echoRequest())
        frame[16:18] = (19).to_bytes(2, "big")
        self.assertDropped(bytes(frame), "ipv4.totalLength")

    def test_checksum(self):
        """
        A wrong header checksum is C{ipv4.checksum}.
        """
        frame = bytearray(echoRequest())
        frame[24] ^= 0x01
        self.assertDropped(bytes(frame), "ipv4.checksum")

    def test_short(self):
        """
        An IPv4 frame with under 20 bytes of header is C{ipv4.short}.
        """
        self.assertDropped(echoRequest()[:30], "ipv4.short")

    def test_fragmentHeldThenTimedOut(self):
        """
        A lone first fragment from the guest is held for reassembly, nothing
        is sent, and after the reassembly timeout it is dropped and counted.
        """
        frame = bytearray(echoRequest())
        frame[20:22] = (0x2000).to_bytes(2, "big")
        frame[24:26] = b"\x00\x00"
        frame[24:26] = checksum.internetChecksum(bytes(frame[14:34])).to_bytes(2, "big")
        self.send(bytes(frame))
        self.assertNothingSent()
        self.assertEqual(len(self.network.reassembler), 1)
        self.clock.advance(31)
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyTimeout"), 1)

    def test_unsupportedProtocol(self):
        """
        An IP protocol other than ICMP, UDP and TCP is dropped and counted.
        """
        self.send(ipFrame(47, b"gre-ish payload"))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.unsupportedProtocol"), 1)

    def test_unsupportedEtherType(self):
        """
        An IPv6 frame to the gateway is dropped and counted.
        """
        self.send(GW_MAC + GUEST_MAC + b"\x86\xdd" + b"\x60" + b"\x00" * 39)
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ethernet.unsupportedType"), 1)

    def test_otherDestinationMAC(self):
        """
        A unicast frame for another MAC that floods to the gateway's port is
        ignored by the gateway.
        """
        self.send(echoRequest(dstMAC=OTHER_MAC))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("ipv4.received"), 0)

    def test_tcpWithoutStack(self):
        """
        TCP with no TCP stack installed is dropped and counted.
        """
        self.send(ipFrame(6, b"\x00" * 20))
        self.assertEqual(self.counters.get("drop.tcp.noStack"), 1)


class SpoofingTests(NetworkTestCase):
    """
    Source addresses that belong to someone else are refused.
    """

    def test_leasedToAnotherMAC(self):
        """
        A frame whose source IP is leased to another MAC is dropped and
        counted: no echo reply.
        """
        self.network.leaseOwner = {"192.168.127.2": "5a:94:ef:e4:0c:ee"}.get
        self.send(echoRequest(srcMAC=OTHER_MAC))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.spoofedSource"), 1)
        self.assertIsNone(self.network.macFor(GUEST_IP))

    def test_leasedToSameMAC(self):
        """
        The lease holder itself is answered.
        """
        self.network.leaseOwner = {"192.168.127.2": "5a:94:ef:e4:0c:ee"}.get
        self.send(echoRequest())
        self.assertEqual(len(self.guest.frames), 1)
        self.assertEqual(self.counters.get("drop.ipv4.spoofedSource"), 0)

    def test_gatewaySource(self):
        """
        A frame claiming the gateway's IP as its source is dropped and
        counted.
        """
        self.send(echoRequest(src=GW_IP))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.foreignSource"), 1)

    def test_hostSource(self):
        """
        A frame claiming the host address as its source is dropped.
        """
        self.send(echoRequest(src=HOST_IP))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.foreignSource"), 1)

    def test_offSubnetSource(self):
        """
        A source outside the subnet is dropped.
        """
        self.send(echoRequest(src=socket.inet_aton("10.0.0.2")))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.ipv4.foreignSource"), 1)


class UDPTests(NetworkTestCase):
    """
    Virtual UDP ports: delivery, sending, port unreachable.
    """

    def test_portUnreachable(self):
        """
        UDP to a gateway port with no listener gets ICMP port unreachable
        from the gateway quoting the IP header and the first 8 bytes.
        """
        frame = udpFrame(40000, 9999, b"nobody listens here")
        self.send(frame)
        self.assertEqual(len(self.guest.frames), 1)
        reply = self.guest.frames[0]
        eth = dpkt.ethernet.Ethernet(reply)
        self.assertEqual((eth.dst, eth.src), (GUEST_MAC, GW_MAC))
        ip = eth.data
        self.assertEqual((ip.src, ip.dst, ip.p), (GW_IP, GUEST_IP, 1))
        message = bytes(ip.data)
        self.assertEqual(message[:2], b"\x03\x03")
        self.assertTrue(checksum.verifies(message))
        self.assertEqual(message[4:8], b"\x00\x00\x00\x00")
        self.assertEqual(message[8:], frame[14:34 + 8])
        self.assertEqual(recomputed(reply), reply)
        self.assertEqual(self.counters.get("drop.udp.noListener"), 1)

    def test_broadcastNoListenerNoICMP(self):
        """
        A broadcast to a port with no listener is dropped without an ICMP
        error.
        """
        self.send(udpFrame(68, 9999, b"x", dst=LIMITED_BCAST, dstMAC=BCAST_MAC))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.udp.noListener"), 1)

    def test_badChecksum(self):
        """
        With C{verifyChecksums} on, a datagram with a wrong UDP checksum is
        dropped and counted.
        """
        self.network.verifyChecksums = True
        frame = bytearray(udpFrame(1000, 53, b"query"))
        frame[-1] ^= 0x10
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        self.send(bytes(frame))
        self.assertNothingSent()
        self.assertEqual(protocol.datagrams, [])
        self.assertEqual(self.counters.get("drop.udp.checksum"), 1)

    def test_badChecksumNotVerified(self):
        """
        By default a guest's UDP checksum is not verified: the datagram is
        delivered and nothing is counted. The IPv4 header checksum still is
        (L{IPv4ValidationTests.test_checksum}).
        """
        self.network.verifyChecksums = False
        frame = bytearray(udpFrame(1000, 53, b"query"))
        frame[-1] ^= 0x10
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        self.send(bytes(frame))
        self.assertEqual(protocol.datagrams,
                         [(b"quer" + bytes([ord("y") ^ 0x10]), ("192.168.127.2", 1000))])
        self.assertEqual(self.counters.get("drop.udp.checksum"), 0)

    def test_badLength(self):
        """
        A UDP length beyond the IP payload is dropped and counted.
        """
        self.send(ipFrame(17, b"\x00\x01\x00\x35\x00\x20\x00\x00" + b"x" * 4))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.udp.length"), 1)

    def test_deliver(self):
        """
        A datagram to a listening port reaches its protocol with the
        sender's address, the padding excluded.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        self.send(udpFrame(5353, 53, b"hi", padTo=60))
        self.assertEqual(protocol.datagrams, [(b"hi", ("192.168.127.2", 5353))])
        self.assertIsInstance(protocol.datagrams[0][0], bytes)
        self.assertNothingSent()

    def test_deliverZeroChecksum(self):
        """
        A datagram without a checksum (0) is accepted.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        frame = bytearray(udpFrame(5353, 53, b"hi"))
        frame[40:42] = b"\x00\x00"
        self.send(bytes(frame))
        self.assertEqual(protocol.datagrams, [(b"hi", ("192.168.127.2", 5353))])

    def test_deliverBroadcast(self):
        """
        A broadcast from 0.0.0.0 reaches a port bound on all addresses, and
        so does one to the subnet's broadcast address.
        """
        protocol = Recorder()
        self.network.listenUDP(9999, protocol)
        self.send(udpFrame(68, 9999, b"anyone", src=ZERO_IP, dst=LIMITED_BCAST,
                           dstMAC=BCAST_MAC))
        self.send(udpFrame(5, 9999, b"subnet", dst=socket.inet_aton("192.168.127.255"),
                           dstMAC=BCAST_MAC))
        self.assertEqual(protocol.datagrams, [(b"anyone", ("0.0.0.0", 68)),
                                              (b"subnet", ("192.168.127.2", 5))])

    def dhcpFrame(self, chaddr, srcMAC=GUEST_MAC):
        message = dpkt.dhcp.DHCP(chaddr=chaddr, xid=1, opts=(
            (dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPDISCOVER])),))
        return udpFrame(68, 67, bytes(message), src=ZERO_IP, dst=LIMITED_BCAST,
                        dstMAC=BCAST_MAC, srcMAC=srcMAC)

    def test_dhcpOwnChaddr(self):
        """
        A DHCP message whose client hardware address is the sender's MAC
        reaches the server port.
        """
        protocol = Recorder()
        self.network.listenUDP(67, protocol)
        self.send(self.dhcpFrame(GUEST_MAC))
        self.assertEqual(len(protocol.datagrams), 1)
        self.assertEqual(dpkt.dhcp.DHCP(protocol.datagrams[0][0]).chaddr, GUEST_MAC)

    def test_dhcpSpoofedChaddr(self):
        """
        A DHCP message naming another client's hardware address is dropped
        and counted.
        """
        protocol = Recorder()
        self.network.listenUDP(67, protocol)
        self.send(self.dhcpFrame(OTHER_MAC))
        self.assertEqual(protocol.datagrams, [])
        self.assertEqual(self.counters.get("drop.dhcp.chaddrSpoofed"), 1)

    def test_interfaceBinding(self):
        """
        A port bound to the gateway address takes datagrams to it; the same
        port number may also be bound on another address.
        """
        gw, host = Recorder(), Recorder()
        self.network.listenUDP(53, gw, interface="192.168.127.1")
        self.network.listenUDP(53, host, interface="192.168.127.254")
        self.send(udpFrame(1000, 53, b"q"))
        self.assertEqual(gw.datagrams, [(b"q", ("192.168.127.2", 1000))])
        self.assertEqual(host.datagrams, [])

    def test_addressInUse(self):
        """
        Binding the same address and port twice raises L{CannotListenError}.
        """
        self.network.listenUDP(53, Recorder())
        self.assertRaises(CannotListenError, self.network.listenUDP, 53, Recorder())

    def test_stopListening(self):
        """
        After C{stopListening} the protocol is stopped, the port is free
        again, and datagrams to it get port unreachable.
        """
        protocol = Recorder()
        port = self.network.listenUDP(53, protocol)
        port.stopListening()
        self.assertTrue(protocol.stopped)
        self.send(udpFrame(1000, 53, b"q"))
        self.assertEqual(protocol.datagrams, [])
        self.assertEqual(dpkt.ethernet.Ethernet(self.guest.frames[0]).data.data.type, 3)
        self.network.listenUDP(53, Recorder())

    def test_interfaces(self):
        """
        The port provides C{IUDPTransport} and C{IListeningPort}, and
        C{getHost} names its address and port.
        """
        port = self.network.listenUDP(5000, Recorder(), interface="192.168.127.1")
        self.assertTrue(verifyObject(IUDPTransport, port))
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertEqual((port.getHost().host, port.getHost().port), ("192.168.127.1", 5000))

    def test_write(self):
        """
        C{transport.write} sends one UDP/IPv4/Ethernet frame from the
        gateway's port to the guest, with correct checksums.
        """
        self.learnGuest()
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.write(b"answer", ("192.168.127.2", 5353))
        self.assertEqual(len(self.guest.frames), 1)
        frame = self.guest.frames[0]
        eth = dpkt.ethernet.Ethernet(frame)
        self.assertEqual((eth.dst, eth.src, eth.type), (GUEST_MAC, GW_MAC, 0x0800))
        ip = eth.data
        self.assertEqual((ip.src, ip.dst, ip.p, ip.len, ip.ttl, ip.mf, ip.offset),
                         (GW_IP, GUEST_IP, 17, 20 + 8 + 6, 64, 0, 0))
        self.assertEqual((ip.data.sport, ip.data.dport, ip.data.ulen, ip.data.data),
                         (53, 5353, 14, b"answer"))
        self.assertEqual(recomputed(frame), frame)

    def test_writeSequence(self):
        """
        C{writeSequence} sends the joined parts as one datagram.
        """
        self.learnGuest()
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.writeSequence([b"ab", b"cd"], ("192.168.127.2", 9))
        self.assertEqual(dpkt.ethernet.Ethernet(self.guest.frames[0]).data.data.data, b"abcd")

    def test_writeTooLong(self):
        """
        A datagram over 65507 bytes raises L{ValueError}.
        """
        port = self.network.listenUDP(53, Recorder())
        self.assertRaises(ValueError, port.write, b"x" * 65508, ("192.168.127.2", 1))

    def test_writeFragmented(self):
        """
        A datagram bigger than the MTU goes out as IPv4 fragments that fit
        the MTU and reassemble to the right UDP datagram.
        """
        self.learnGuest()
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        data = bytes(range(256)) * 14
        protocol.transport.write(data, ("192.168.127.2", 5353))
        self.assertEqual(len(self.guest.frames), 3)
        reassembled = b""
        idents = set()
        for i, frame in enumerate(self.guest.frames):
            self.assertLessEqual(len(frame) - 14, 1500)
            eth = dpkt.ethernet.Ethernet(frame)
            self.assertEqual(eth.dst, GUEST_MAC)
            ip = dpkt.ip.IP(frame[14:])
            self.assertTrue(checksum.verifies(frame[14:34]))
            self.assertEqual(ip.offset * 8, len(reassembled))
            self.assertEqual(ip.mf, int(i < 2))
            self.assertEqual(ip.df, 0)
            idents.add(ip.id)
            reassembled += frame[34:]
        self.assertEqual(len(idents), 1)
        self.assertEqual(len(reassembled), 8 + len(data))
        udpPart = dpkt.udp.UDP(reassembled)
        self.assertEqual((udpPart.sport, udpPart.dport, udpPart.ulen, udpPart.data),
                         (53, 5353, 8 + len(data), data))
        self.assertTrue(wireUDP.checksumOK(GW_IP, GUEST_IP, reassembled))

    def test_writeBroadcast(self):
        """
        A datagram to the subnet broadcast address goes to the broadcast MAC
        without ARP.
        """
        protocol = Recorder()
        self.network.listenUDP(67, protocol)
        protocol.transport.write(b"offer", ("192.168.127.255", 68))
        self.assertEqual(len(self.guest.frames), 1)
        self.assertEqual(self.guest.frames[0][:6], BCAST_MAC)
        self.assertEqual(dpkt.ethernet.Ethernet(self.guest.frames[0]).data.data.data, b"offer")


class ARPResolutionTests(NetworkTestCase):
    """
    Packets to a guest whose MAC is unknown wait for ARP.
    """

    def expectedRequest(self, ip):
        return (BCAST_MAC + GW_MAC + b"\x08\x06" + bytes.fromhex("0001080006040001")
                + GW_MAC + GW_IP + b"\x00" * 6 + ip)

    def test_queuedUntilReply(self):
        """
        Sending to an unknown guest IP emits an ARP request and queues; when
        the guest's reply arrives the queued packet goes out to its MAC.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.write(b"first", ("192.168.127.3", 1000))
        protocol.transport.write(b"second", ("192.168.127.3", 1000))
        self.assertEqual(self.guest.frames, [self.expectedRequest(OTHER_IP)])
        del self.guest.frames[:]
        self.send(arpFrame(2, OTHER_MAC, OTHER_IP, GW_MAC, GW_IP, dst=GW_MAC))
        self.assertEqual(len(self.guest.frames), 2)
        for frame, data in zip(self.guest.frames, [b"first", b"second"]):
            eth = dpkt.ethernet.Ethernet(frame)
            self.assertEqual((eth.dst, eth.src), (OTHER_MAC, GW_MAC))
            self.assertEqual((eth.data.dst, eth.data.data.data), (OTHER_IP, data))
            self.assertEqual(recomputed(frame), frame)
        self.assertEqual(self.network.macFor(OTHER_IP), OTHER_MAC)
        # No retry after resolution.
        del self.guest.frames[:]
        self.clock.advance(10)
        self.assertNothingSent()

    def test_synchronousReply(self):
        """
        A port that answers the ARP request at once, inside C{sendFrame},
        still gets the packet that triggered the request.
        """
        switch = self.switch

        class Responder(FakePort):
            def sendFrame(self, frame):
                FakePort.sendFrame(self, frame)
                if frame[12:14] == b"\x08\x06" and frame[38:42] == OTHER_IP:
                    switch.receiveFrame(self, arpFrame(2, OTHER_MAC, OTHER_IP, GW_MAC, GW_IP,
                                                       dst=GW_MAC))

        responder = Responder()
        self.switch.attach(responder)
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.write(b"now", ("192.168.127.3", 1000))
        udpFrames = [f for f in responder.frames if f[12:14] == b"\x08\x00"]
        self.assertEqual(len(udpFrames), 1)
        self.assertEqual(dpkt.ethernet.Ethernet(udpFrames[0]).data.data.data, b"now")

    def test_retriesThenDrops(self):
        """
        Without a reply the request is retried up to three times a second
        apart, then the queued packets are dropped and counted.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.write(b"lost", ("192.168.127.3", 1000))
        self.assertEqual(len(self.guest.frames), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.guest.frames), 2)
        self.clock.advance(1)
        self.assertEqual(self.guest.frames, [self.expectedRequest(OTHER_IP)] * 3)
        self.clock.advance(1)
        self.assertEqual(len(self.guest.frames), 3)
        self.assertEqual(self.counters.get("drop.arp.unresolved"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_queueCap(self):
        """
        At most 16 packets wait per address; the rest are dropped and counted.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        for i in range(20):
            protocol.transport.write(b"%d" % i, ("192.168.127.3", 1000))
        self.assertEqual(self.counters.get("drop.arp.pendingFull"), 4)
        self.send(arpFrame(2, OTHER_MAC, OTHER_IP, GW_MAC, GW_IP, dst=GW_MAC))
        self.assertEqual(len(self.guest.frames), 1 + 16)

    def test_offSubnet(self):
        """
        A packet to an address outside the subnet is dropped, with no ARP.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        protocol.transport.write(b"x", ("10.0.0.1", 1000))
        self.assertNothingSent()
        self.assertEqual(self.counters.get("drop.arp.offSubnet"), 1)

    def test_learntFromIPv4(self):
        """
        An IPv4 frame from the guest teaches the network its MAC, so a reply
        needs no ARP.
        """
        protocol = Recorder()
        self.network.listenUDP(53, protocol)
        self.send(udpFrame(5353, 53, b"q"))
        protocol.transport.write(b"r", ("192.168.127.2", 5353))
        self.assertEqual(len(self.guest.frames), 1)
        self.assertEqual(self.guest.frames[0][:6], GUEST_MAC)

    def test_arpCacheCap(self):
        """
        The ARP cache holds at most C{ARP_CACHE_MAX} entries; the oldest goes.
        """
        self.patch(networkModule, "ARP_CACHE_MAX", 2)
        for last in (2, 3, 4):
            self.clock.advance(1)
            mac = bytes.fromhex("5a94efe40c0%d" % last)
            ip = bytes([192, 168, 127, last])
            self.send(arpFrame(2, mac, ip, GW_MAC, GW_IP, dst=GW_MAC))
        self.assertIsNone(self.network.macFor(GUEST_IP))
        self.assertIsNotNone(self.network.macFor(OTHER_IP))
        self.assertIsNotNone(self.network.macFor(bytes([192, 168, 127, 4])))


class FuzzTests(NetworkTestCase):
    """
    Random and mutated frames never raise out of the network.
    """

    def fresh(self):
        clock = Clock()
        counters = Counters(clock)
        switch = Switch(clock, counters)
        network = VirtualNetwork(clock, NetworkConfig(), switch, counters)
        guest = FakePort()
        switch.attach(guest)
        network.listenUDP(53, Recorder())
        return switch, network, guest

    def test_shortFrameDirect(self):
        """
        A frame under 14 bytes handed straight to C{frameReceived} (not via
        the switch) with the broadcast or gateway destination does not raise.
        """
        network = self.fresh()[1]
        for frame in (BCAST_MAC, BCAST_MAC + b"\x08", GW_MAC + GUEST_MAC, b"", b"\xff"):
            network.frameReceived(frame)
        self.assertEqual(self.counters.get("ipv4.received"), 0)

    @FUZZ
    @given(st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=120).map(lambda b: GW_MAC + b),
        st.binary(max_size=120).map(lambda b: BCAST_MAC + GUEST_MAC + b"\x08\x00" + b),
        st.binary(max_size=120).map(lambda b: BCAST_MAC + GUEST_MAC + b"\x08\x06" + b),
    ))
    def test_randomFrames(self, frame):
        """
        Random frames never raise out of C{Switch.receiveFrame} or
        C{VirtualNetwork.frameReceived}.
        """
        switch, network, guest = self.fresh()
        switch.receiveFrame(guest, frame)
        network.frameReceived(frame)
        for out in guest.frames:
            self.assertGreaterEqual(len(out), 14)

    @FUZZ
    @given(st.sampled_from(["echo", "udp", "unreach", "arp"]),
           st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
           st.integers(0, 40))
    def test_mutatedFrames(self, kind, changes, cut):
        """
        Valid frames with bytes changed and the tail cut never raise, and
        every frame sent back is well formed (dpkt checksums agree).
        """
        frame = {
            "echo": lambda: echoRequest(payload=b"p" * 30),
            "udp": lambda: udpFrame(1000, 53, b"d" * 30),
            "unreach": lambda: udpFrame(1000, 9, b"d" * 30),
            "arp": lambda: arpFrame(1, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP, padTo=60),
        }[kind]()
        frame = bytearray(frame)
        for index, value in changes:
            if index < len(frame):
                frame[index] = value
        frame = bytes(frame[:max(0, len(frame) - cut)])
        switch, network, guest = self.fresh()
        switch.receiveFrame(guest, frame)
        network.frameReceived(frame)
        for out in guest.frames:
            if out[12:14] == b"\x08\x00":
                self.assertEqual(recomputed(out), out)


verifyingVariants(globals())
