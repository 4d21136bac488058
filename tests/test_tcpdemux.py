"""
Tests for L{gvtwisted.stack.tcpdemux}: the table of virtual TCP connections,
C{listenTCP} and C{connectTCP} on virtual addresses, RST for segments that
belong to no connection, the connection cap, link backpressure and the reuse
of a 4-tuple in TIME_WAIT.

Every test builds a network on a L{Clock} with no NAT, attaches fake guest
links to the switch, injects whole frames and checks the exact segments the
guests get back.
"""

import socket
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    CannotListenError, ConnectError, ConnectionDone, ConnectionRefusedError, TimeoutError, UserError,
)
from twisted.internet.interfaces import IConnector, IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gvtwisted.config import NetworkConfig
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.tcpdemux import EPHEMERAL, TCPDemux
from gvtwisted.wire import arp, checksum, ipv4
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.tcp import ACK, FIN, PSH, RST, SYN
from tests.checksumpolicy import verifyingVariants

MASK = 0xFFFFFFFF

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
OTHER_MAC = bytes.fromhex("5a94efe40caa")
GW_IP = socket.inet_aton("192.168.127.1")
GUEST_IP = socket.inet_aton("192.168.127.2")
OTHER_IP = socket.inet_aton("192.168.127.3")
HOST_IP = socket.inet_aton("192.168.127.254")

GUEST_PORT = 40000
SERVICE_PORT = 7777
ISN = 0x10000000


class FakePort:
    """
    A guest link: records the frames the switch sends it.
    """

    def __init__(self, name="guest"):
        self.name = name
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


class Recorder(Protocol):
    """
    Records what its transport tells it.
    """

    def __init__(self):
        self.made = 0
        self.data = b""
        self.reasons = []

    def connectionMade(self):
        self.made += 1

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.reasons.append(reason)


class RecordingFactory(Factory):
    """
    Builds a L{Recorder} per connection and remembers the addresses asked for;
    builds nothing (refuses) when C{refuse} is set.
    """

    noisy = False

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.addresses = []
        self.protocols = []

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        if self.refuse:
            return None
        p = Recorder()
        p.factory = self
        self.protocols.append(p)
        return p


class RecordingClientFactory(ClientFactory):
    """
    A client factory that records its life: started, failed, stopped.
    """

    noisy = False

    def __init__(self):
        self.started = []
        self.failures = []
        self.lost = []
        self.addresses = []
        self.protocols = []
        self.starts = 0
        self.stops = 0

    def doStart(self):
        self.starts += 1

    def doStop(self):
        self.stops += 1

    def startedConnecting(self, connector):
        self.started.append(connector)

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        p = Recorder()
        self.protocols.append(p)
        return p

    def clientConnectionFailed(self, connector, reason):
        self.failures.append((connector, reason))

    def clientConnectionLost(self, connector, reason):
        self.lost.append((connector, reason))


def segment(flags, seq=ISN, ack=0, srcPort=GUEST_PORT, dstPort=SERVICE_PORT,
            src=GUEST_IP, dst=GW_IP, window=65535, options=b"", payload=b""):
    """
    A guest's TCP segment, with its checksum.
    """
    return wiretcp.buildSegment(src, dst, srcPort, dstPort, seq & MASK, ack & MASK,
                                flags, window, options, payload)


def frame(seg, src=GUEST_IP, dst=GW_IP, srcMAC=GUEST_MAC, dstMAC=GW_MAC):
    """
    C{seg} in an IPv4 packet in an Ethernet frame from the guest to the gateway.
    """
    return dstMAC + srcMAC + b"\x08\x00" + ipv4.buildHeader(src, dst, ipv4.PROTO_TCP,
                                                            len(seg)) + seg


def withChecksum(src, dst, seg):
    """
    C{seg} (bytes) with its TCP checksum recomputed, whatever its header says.
    """
    seg = bytearray(seg)
    seg[16:18] = b"\x00\x00"
    pseudo = src + dst + struct.pack("!BBH", 0, ipv4.PROTO_TCP, len(seg))
    csum = checksum.internetChecksum(pseudo + bytes(seg))
    seg[16:18] = csum.to_bytes(2, "big")
    return bytes(seg)


def parseOut(raw):
    """
    The IPv4 packet and the TCP segment of a frame the gateway sent, after
    checking the segment's checksum.
    """
    packet = ipv4.parse(raw)
    assert packet.proto == ipv4.PROTO_TCP, packet.proto
    payload = bytes(packet.payload)
    assert wiretcp.verifyChecksum(packet.src, packet.dst, payload), "bad TCP checksum"
    return packet, wiretcp.parseSegment(payload)


class RecordingNAT:
    """
    Stands for the NAT: records the connections whose SYN it is handed.
    """

    def __init__(self):
        self.syns = []

    def tcpSyn(self, conn):
        self.syns.append(conn)


class DemuxTestCase(SynchronousTestCase):
    """
    A network with a TCP demux on a clock, one guest link. The network has a
    NAT (so that it hands the demux segments for addresses other than the
    gateway's, such as the host address that C{connectTCP} uses) but the demux
    has none unless a test installs one.
    """

    maxConnections = 16384

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.network = VirtualNetwork(self.clock, NetworkConfig(), self.switch, self.counters)
        self.demux = TCPDemux(self.clock, self.network, self.counters, self.maxConnections)
        self.network.tcp = self.demux
        self.network.nat = RecordingNAT()
        self.guest = FakePort()
        self.switch.attach(self.guest)

    def send(self, raw, port=None):
        self.switch.receiveFrame(port or self.guest, raw)

    def sendSegment(self, flags, port=None, srcMAC=GUEST_MAC, dstMAC=GW_MAC, **kw):
        src = kw.get("src", GUEST_IP)
        dst = kw.get("dst", GW_IP)
        self.send(frame(segment(flags, **kw), src=src, dst=dst, srcMAC=srcMAC,
                        dstMAC=dstMAC), port)

    def learn(self, port=None, mac=GUEST_MAC, ip=GUEST_IP):
        """
        A gratuitous ARP, so that the network knows where the guest is.
        """
        message = arp.build(arp.REQUEST, mac, ip, b"\x00" * 6, ip)
        self.send(b"\xff" * 6 + mac + b"\x08\x06" + message, port)
        self.assertEqual(self.network.macFor(ip), mac)
        del (port or self.guest).frames[:]

    def taken(self, port=None):
        """
        The segments sent to C{port} since the last call, as (packet, segment).
        """
        port = port or self.guest
        frames, port.frames[:] = list(port.frames), []
        return [parseOut(f) for f in frames]

    def establish(self, factory, srcPort=GUEST_PORT, dstPort=SERVICE_PORT, isn=ISN,
                  port=None, mac=GUEST_MAC, ip=GUEST_IP):
        """
        Open a connection from the guest to the gateway's C{dstPort}; return
        the gateway's ISN.
        """
        self.sendSegment(SYN, port=port, srcMAC=mac, src=ip, seq=isn, srcPort=srcPort,
                         dstPort=dstPort, options=wiretcp.mssOption(1460))
        [(_, synAck)] = self.taken(port)
        self.assertEqual(synAck.flags, SYN | ACK)
        self.sendSegment(ACK, port=port, srcMAC=mac, src=ip, seq=isn + 1,
                         ack=synAck.seq + 1, srcPort=srcPort, dstPort=dstPort)
        return synAck.seq


class StraySegmentTests(DemuxTestCase):
    """
    Segments that match no connection are answered as a closed port does.
    """

    def test_ackToNoConnection(self):
        """
        An ACK for no connection gets a bare RST whose sequence number is the
        segment's acknowledgement number (RFC 9293 3.10.7.1).
        """
        self.sendSegment(ACK | PSH, seq=1000, ack=0xDEADBEEF, payload=b"hello")
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, packet.dst), (GW_IP, GUEST_IP))
        self.assertEqual((seg.srcPort, seg.dstPort), (SERVICE_PORT, GUEST_PORT))
        self.assertEqual((seg.flags, seg.seq, seg.window, len(seg.payload)),
                         (RST, 0xDEADBEEF, 0, 0))
        self.assertEqual(self.counters.get("tcp.resetsSent"), 1)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_finWithoutAckToNoConnection(self):
        """
        A segment without ACK gets RST|ACK acknowledging its data and FIN, with
        sequence number 0.
        """
        self.sendSegment(FIN, seq=MASK - 1, payload=b"abc")
        [(_, seg)] = self.taken()
        self.assertEqual((seg.flags, seg.seq, seg.ack), (RST | ACK, 0, (MASK - 1 + 4) & MASK))

    def test_rstToNoConnection(self):
        """
        A RST for no connection is never answered.
        """
        self.sendSegment(RST | ACK, seq=5, ack=6)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("tcp.resetsSent"), 0)

    def test_badChecksum(self):
        """
        With C{verifyChecksums} on, a segment whose checksum is wrong is dropped
        without an answer and counted as C{drop.tcp.checksum}.
        """
        self.network.verifyChecksums = True
        seg = bytearray(segment(SYN, options=wiretcp.mssOption(1460)))
        seg[16] ^= 0x55
        self.send(frame(bytes(seg)))
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("drop.tcp.checksum"), 1)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_badChecksumNotVerified(self):
        """
        By default the TCP checksum of a guest's segment is not verified (as
        gvproxy's netstack does not): a SYN with a wrong one to a closed port
        is answered with RST like any other, and nothing is counted.
        """
        self.network.verifyChecksums = False
        seg = bytearray(segment(SYN, options=wiretcp.mssOption(1460)))
        seg[16] ^= 0x55
        self.send(frame(bytes(seg)))
        [(_, rst)] = self.taken()
        self.assertEqual(rst.flags, RST | ACK)
        self.assertEqual(self.counters.get("drop.tcp.checksum"), 0)

    def test_malformedDataOffset(self):
        """
        A segment whose data offset is below 5 words, though its checksum is
        right, is dropped and counted as C{drop.tcp.malformed}.
        """
        seg = bytearray(segment(SYN))
        seg[12] = 4 << 4
        self.send(frame(withChecksum(GUEST_IP, GW_IP, seg)))
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("drop.tcp.malformed"), 1)
        self.assertEqual(self.counters.get("drop.tcp.checksum"), 0)

    def test_malformedOption(self):
        """
        A SYN with an MSS option of the wrong length is dropped, not answered.
        """
        self.send(frame(segment(SYN, options=b"\x02\x03\x05\x01")))
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("drop.tcp.malformed"), 1)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_shortSegment(self):
        """
        A segment shorter than a TCP header is counted as malformed.
        """
        self.send(frame(withChecksum(GUEST_IP, GW_IP, segment(SYN)[:18])))
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("drop.tcp.malformed"), 1)


class ListenTests(DemuxTestCase):
    """
    C{listenTCP} on the gateway: a SYN to a listening port is accepted at once.
    """

    def test_listeningPort(self):
        """
        C{listenTCP} returns an L{IListeningPort} whose host is the address
        listened on, and starts the factory.
        """
        factory = RecordingFactory()
        port = self.demux.listenTCP(SERVICE_PORT, factory, interface="192.168.127.1")
        self.assertTrue(verifyObject(IListeningPort, port))
        self.assertEqual(port.getHost(), IPv4Address("TCP", "192.168.127.1", SERVICE_PORT))
        self.assertEqual(factory.numPorts, 1)

    def test_synToListener(self):
        """
        A SYN to a listening port is answered with SYN-ACK acknowledging the
        guest's ISN, from the gateway's port to the guest's.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        self.sendSegment(SYN, seq=MASK, options=wiretcp.mssOption(1460))
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, packet.dst), (GW_IP, GUEST_IP))
        self.assertEqual((seg.srcPort, seg.dstPort), (SERVICE_PORT, GUEST_PORT))
        self.assertEqual(seg.flags, SYN | ACK)
        self.assertEqual(seg.ack, 0)
        self.assertEqual(seg.mss, self.network.config.mtu - 40)
        self.assertEqual(factory.addresses,
                         [IPv4Address("TCP", "192.168.127.2", GUEST_PORT)])
        self.assertEqual(factory.protocols[0].made, 0)
        self.assertEqual(self.demux.connectionCount(), 1)

    def test_handshakeCompletes(self):
        """
        The guest's ACK of the SYN-ACK completes the handshake: the protocol
        gets C{connectionMade}, with the guest as its peer and the gateway port
        as its host, and reads what the guest sends.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        iss = self.establish(factory)
        [protocol] = factory.protocols
        self.assertEqual(protocol.made, 1)
        self.assertEqual(protocol.transport.getPeer(),
                         IPv4Address("TCP", "192.168.127.2", GUEST_PORT))
        self.assertEqual(protocol.transport.getHost(),
                         IPv4Address("TCP", "192.168.127.1", SERVICE_PORT))
        self.sendSegment(ACK | PSH, seq=ISN + 1, ack=iss + 1, payload=b"ping")
        self.assertEqual(protocol.data, b"ping")

    def test_interfaceListener(self):
        """
        A listener bound to the gateway's address takes SYNs sent to it.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory, interface="192.168.127.1")
        self.sendSegment(SYN)
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, SYN | ACK)
        self.assertEqual(len(factory.protocols), 1)

    def test_synNoListener(self):
        """
        A SYN to a gateway port nobody listens on gets RST|ACK acknowledging
        the SYN, and leaves no connection behind.
        """
        self.sendSegment(SYN, seq=ISN, options=wiretcp.mssOption(1460))
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, packet.dst), (GW_IP, GUEST_IP))
        self.assertEqual((seg.srcPort, seg.dstPort), (SERVICE_PORT, GUEST_PORT))
        self.assertEqual((seg.flags, seg.seq, seg.ack), (RST | ACK, 0, ISN + 1))
        self.assertEqual(self.counters.get("tcp.refusedLocal"), 1)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_synFactoryRefuses(self):
        """
        A factory whose C{buildProtocol} returns L{None} refuses: RST|ACK.
        """
        factory = RecordingFactory(refuse=True)
        self.demux.listenTCP(SERVICE_PORT, factory)
        self.sendSegment(SYN, seq=ISN)
        [(_, seg)] = self.taken()
        self.assertEqual((seg.flags, seg.ack), (RST | ACK, ISN + 1))
        self.assertEqual(len(factory.addresses), 1)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_addressInUse(self):
        """
        A second listener on the same port and interface is refused.
        """
        self.demux.listenTCP(SERVICE_PORT, RecordingFactory())
        self.assertRaises(CannotListenError, self.demux.listenTCP, SERVICE_PORT,
                          RecordingFactory())

    def test_stopListening(self):
        """
        After C{stopListening} a SYN to the port gets RST|ACK, the factory is
        stopped and the port can be listened on again.
        """
        factory = RecordingFactory()
        port = self.demux.listenTCP(SERVICE_PORT, factory)
        port.stopListening()
        self.assertEqual(factory.numPorts, 0)
        self.sendSegment(SYN, seq=ISN)
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, RST | ACK)
        self.assertEqual(factory.addresses, [])
        again = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, again)
        self.sendSegment(SYN, seq=ISN, srcPort=GUEST_PORT + 1)
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, SYN | ACK)

    def test_stopListeningKeepsConnections(self):
        """
        Stopping a listener does not touch the connections it accepted.
        """
        factory = RecordingFactory()
        port = self.demux.listenTCP(SERVICE_PORT, factory)
        iss = self.establish(factory)
        port.stopListening()
        self.sendSegment(ACK | PSH, seq=ISN + 1, ack=iss + 1, payload=b"still")
        self.assertEqual(factory.protocols[0].data, b"still")
        self.assertEqual(factory.protocols[0].reasons, [])

    def test_synRetransmissionSameConnection(self):
        """
        A retransmitted SYN goes to the connection it opened: the factory
        builds one protocol, the SYN-ACK is sent again.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        self.sendSegment(SYN, seq=ISN)
        [(_, first)] = self.taken()
        self.sendSegment(SYN, seq=ISN)
        [(_, second)] = self.taken()
        self.assertEqual((second.flags, second.seq, second.ack),
                         (SYN | ACK, first.seq, ISN + 1))
        self.assertEqual(len(factory.addresses), 1)
        self.assertEqual(self.demux.connectionCount(), 1)

    def test_closedConnectionForgotten(self):
        """
        A connection the guest resets leaves the table; a later ACK on its
        4-tuple gets a RST.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        iss = self.establish(factory)
        self.sendSegment(RST, seq=ISN + 1)
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(len(factory.protocols[0].reasons), 1)
        self.sendSegment(ACK, seq=ISN + 1, ack=iss + 1)
        [(_, seg)] = self.taken()
        self.assertEqual((seg.flags, seg.seq), (RST, (iss + 1) & MASK))


class BroadcastTests(DemuxTestCase):
    """
    RFC 1122 4.2.3.10: a SYN addressed to a broadcast or multicast address is
    silently discarded (and an answer would carry a broadcast source address,
    which RFC 1122 3.2.1.3 forbids).
    """

    def test_subnetBroadcastNotAccepted(self):
        """
        A listener on every address does not accept a SYN sent to the subnet
        broadcast address: no SYN-ACK, no protocol, no connection.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        self.sendSegment(SYN, dst=socket.inet_aton("192.168.127.255"), dstMAC=b"\xff" * 6)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(factory.addresses, [])
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_limitedBroadcastNotAnswered(self):
        """
        A SYN to 255.255.255.255 with no listener gets no RST.
        """
        self.sendSegment(SYN, dst=b"\xff" * 4, dstMAC=b"\xff" * 6)
        self.assertEqual(self.guest.frames, [])


class NonLocalTests(DemuxTestCase):
    """
    SYNs to addresses other than the gateway's go to the NAT.
    """

    def test_synToNAT(self):
        """
        A SYN to an outside address is handed to the NAT as a connection
        holding the SYN, unanswered.
        """
        nat = RecordingNAT()
        self.demux.nat = nat
        self.sendSegment(SYN, seq=ISN, dst=socket.inet_aton("10.1.2.3"), dstPort=80)
        [conn] = nat.syns
        self.assertEqual((conn.state, conn.irs), ("SYN_PENDING", ISN))
        self.assertEqual(conn.localAddr, ("10.1.2.3", 80))
        self.assertEqual(conn.remoteAddr, ("192.168.127.2", GUEST_PORT))
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.demux.connectionCount(), 1)

    def test_synWithoutNAT(self):
        """
        Without a NAT, a SYN to an outside address is refused with RST|ACK
        from that address.
        """
        self.sendSegment(SYN, seq=ISN, dst=socket.inet_aton("10.1.2.3"), dstPort=80)
        [(packet, seg)] = self.taken()
        self.assertEqual(packet.src, socket.inet_aton("10.1.2.3"))
        self.assertEqual((seg.flags, seg.ack), (RST | ACK, ISN + 1))
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_gatewayListenerNotUsedForOutside(self):
        """
        A listener on every address of the gateway does not take SYNs for
        outside addresses: those go to the NAT.
        """
        nat = RecordingNAT()
        self.demux.nat = nat
        factory = RecordingFactory()
        self.demux.listenTCP(80, factory)
        self.sendSegment(SYN, dst=socket.inet_aton("10.1.2.3"), dstPort=80)
        self.assertEqual(factory.addresses, [])
        self.assertEqual(len(nat.syns), 1)


class CapTests(DemuxTestCase):
    """
    At most C{maxConnections} connections.
    """

    maxConnections = 2

    def test_thirdSynRefused(self):
        """
        With two connections open, a third SYN gets RST|ACK and is counted
        as C{drop.tcp.tooManyConnections}; no protocol is built for it.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        for srcPort in (40000, 40001):
            self.sendSegment(SYN, srcPort=srcPort)
            [(_, seg)] = self.taken()
            self.assertEqual(seg.flags, SYN | ACK)
        self.sendSegment(SYN, srcPort=40002, seq=ISN)
        [(_, seg)] = self.taken()
        self.assertEqual((seg.flags, seg.ack, seg.dstPort), (RST | ACK, ISN + 1, 40002))
        self.assertEqual(self.counters.get("drop.tcp.tooManyConnections"), 1)
        self.assertEqual(self.demux.connectionCount(), 2)
        self.assertEqual(len(factory.addresses), 2)

    def test_roomAgainAfterClose(self):
        """
        When a connection closes, its slot takes a new SYN.
        """
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        for srcPort in (40000, 40001):
            self.sendSegment(SYN, srcPort=srcPort, seq=ISN)
        self.taken()
        self.sendSegment(RST, srcPort=40000, seq=ISN + 1)
        self.assertEqual(self.demux.connectionCount(), 1)
        self.sendSegment(SYN, srcPort=40002)
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, SYN | ACK)

    def test_connectTCPCounts(self):
        """
        Connections opened into the guest count against the cap too.
        """
        self.learn()
        self.demux.connectTCP("192.168.127.2", 22, RecordingClientFactory())
        self.demux.connectTCP("192.168.127.2", 23, RecordingClientFactory())
        self.taken()
        self.demux.listenTCP(SERVICE_PORT, RecordingFactory())
        self.sendSegment(SYN)
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, RST | ACK)

    def test_connectTCPPastCapFails(self):
        """
        Past the cap C{connectTCP} itself fails: the factory hears
        C{clientConnectionFailed(ConnectError)} in the next turn, nothing is
        sent to the guest, and the count stays at the cap.
        """
        self.learn()
        self.demux.connectTCP("192.168.127.2", 22, RecordingClientFactory())
        self.demux.connectTCP("192.168.127.2", 23, RecordingClientFactory())
        self.taken()
        factory = RecordingClientFactory()
        connector = self.demux.connectTCP("192.168.127.2", 24, factory)
        self.assertEqual(factory.failures, [])
        self.clock.advance(0)
        [(failedConnector, reason)] = factory.failures
        self.assertIs(failedConnector, connector)
        self.assertTrue(reason.check(ConnectError))
        self.assertEqual((factory.starts, factory.stops), (1, 1))
        self.assertEqual(self.taken(), [])
        self.assertEqual(self.demux.connectionCount(), 2)
        self.assertEqual(self.counters.get("drop.tcp.tooManyConnections"), 1)
        connector.stopConnecting()
        connector.disconnect()


class ConnectTests(DemuxTestCase):
    """
    C{connectTCP}: active opens into the guest.
    """

    def setUp(self):
        DemuxTestCase.setUp(self)
        self.learn()

    def answer(self, syn, flags=SYN | ACK, seq=ISN):
        """
        The guest answers the gateway's C{syn}.
        """
        self.sendSegment(flags, seq=seq, ack=syn.seq + 1, srcPort=syn.dstPort,
                         dstPort=syn.srcPort, src=GUEST_IP, dst=self.lastPacket.src,
                         options=wiretcp.mssOption(1460) if flags & SYN else b"")

    def connect(self, **kw):
        factory = RecordingClientFactory()
        connector = self.demux.connectTCP("192.168.127.2", 22, factory, **kw)
        [(packet, syn)] = self.taken()
        self.lastPacket = packet
        return factory, connector, packet, syn

    def test_syn(self):
        """
        C{connectTCP} sends a SYN from the host address and an ephemeral port
        to the guest's port, offering MSS, window scale, SACK and timestamps;
        the factory is started and told a connection is under way.
        """
        factory, connector, packet, syn = self.connect()
        self.assertEqual((packet.src, packet.dst), (HOST_IP, GUEST_IP))
        self.assertEqual(syn.flags, SYN)
        self.assertEqual(syn.dstPort, 22)
        self.assertTrue(EPHEMERAL[0] <= syn.srcPort <= EPHEMERAL[1], syn.srcPort)
        self.assertEqual(syn.mss, self.network.config.mtu - 40)
        self.assertIsNotNone(syn.wscale)
        self.assertTrue(syn.sackPermitted)
        self.assertIsNotNone(syn.tsVal)
        self.assertEqual((factory.starts, factory.started), (1, [connector]))
        self.assertTrue(verifyObject(IConnector, connector))
        self.assertEqual(connector.getDestination(), IPv4Address("TCP", "192.168.127.2", 22))
        self.assertEqual(factory.addresses, [IPv4Address("TCP", "192.168.127.2", 22)])

    def test_ephemeralPortsDiffer(self):
        """
        Two connections to the same guest port get different source ports.
        """
        _, _, _, first = self.connect()
        _, _, _, second = self.connect()
        self.assertNotEqual(first.srcPort, second.srcPort)
        self.assertEqual(self.demux.connectionCount(), 2)

    def test_synAckCompletes(self):
        """
        The guest's SYN-ACK completes the connection: the gateway ACKs it, the
        protocol gets C{connectionMade} with the guest as peer and the host
        address as its own, and the timeout no longer fires.
        """
        factory, connector, packet, syn = self.connect(timeout=5)
        self.answer(syn)
        [(_, ack)] = self.taken()
        self.assertEqual((ack.flags, ack.seq, ack.ack),
                         (ACK, (syn.seq + 1) & MASK, ISN + 1))
        [protocol] = factory.protocols
        self.assertEqual(protocol.made, 1)
        self.assertEqual(protocol.transport.getPeer(), IPv4Address("TCP", "192.168.127.2", 22))
        self.assertEqual(protocol.transport.getHost(),
                         IPv4Address("TCP", "192.168.127.254", syn.srcPort))
        self.clock.advance(10)
        self.assertEqual(factory.failures, [])
        self.assertEqual(protocol.reasons, [])
        self.sendSegment(ACK | PSH, seq=ISN + 1, ack=syn.seq + 1, srcPort=22,
                         dstPort=syn.srcPort, dst=HOST_IP, payload=b"SSH-2.0")
        self.assertEqual(protocol.data, b"SSH-2.0")

    def test_bindAddress(self):
        """
        With C{bindAddress} the SYN comes from that address and port.
        """
        _, _, packet, syn = self.connect(bindAddress=("192.168.127.9", 5555))
        self.assertEqual(packet.src, socket.inet_aton("192.168.127.9"))
        self.assertEqual(syn.srcPort, 5555)

    def test_bindAddressNoPort(self):
        """
        With C{bindAddress} port 0, the source is that address and an
        ephemeral port.
        """
        _, _, packet, syn = self.connect(bindAddress=("10.0.0.5", 0))
        self.assertEqual(packet.src, socket.inet_aton("10.0.0.5"))
        self.assertTrue(EPHEMERAL[0] <= syn.srcPort <= EPHEMERAL[1], syn.srcPort)

    def test_bindAddressCompletes(self):
        """
        The guest's SYN-ACK to a bound source address reaches the connection.
        """
        factory, _, packet, syn = self.connect(bindAddress=("10.0.0.5", 6000))
        self.answer(syn)
        self.assertEqual(factory.protocols[0].made, 1)
        self.assertEqual(factory.protocols[0].transport.getHost(),
                         IPv4Address("TCP", "10.0.0.5", 6000))

    def test_timeout(self):
        """
        A guest that never answers: after C{timeout} seconds, and not before,
        the factory gets C{clientConnectionFailed} with L{TimeoutError} and is
        stopped; the connection leaves the table and sends nothing more.
        """
        factory, connector, _, syn = self.connect(timeout=5)
        self.clock.advance(4.9)
        self.assertEqual(factory.failures, [])
        self.taken()
        self.clock.advance(0.1)
        [(failedConnector, reason)] = factory.failures
        self.assertIs(failedConnector, connector)
        self.assertTrue(reason.check(TimeoutError))
        self.assertEqual(factory.stops, 1)
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(factory.protocols[0].made, 0)
        self.clock.advance(100)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(len(factory.failures), 1)

    def test_refused(self):
        """
        A guest that answers the SYN with RST|ACK refuses: the factory gets
        C{clientConnectionFailed} with L{ConnectionRefusedError}, once, and the
        timeout is cancelled.
        """
        factory, connector, _, syn = self.connect(timeout=5)
        self.answer(syn, flags=RST | ACK, seq=0)
        [(failedConnector, reason)] = factory.failures
        self.assertIs(failedConnector, connector)
        self.assertTrue(reason.check(ConnectionRefusedError))
        self.assertEqual(factory.stops, 1)
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(len(factory.failures), 1)

    def test_stopConnecting(self):
        """
        C{stopConnecting} while the SYN is unanswered drops the connection:
        no RST (the guest never answered), no SYN retransmission.
        """
        factory, connector, _, syn = self.connect()
        connector.stopConnecting()
        self.assertEqual(self.demux.connectionCount(), 0)
        self.clock.advance(10)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(factory.protocols[0].made, 0)

    def test_stopConnectingTellsFactory(self):
        """
        As with Twisted's own connectors, C{stopConnecting} fails the attempt
        with L{UserError}: the factory gets C{clientConnectionFailed} and is
        stopped, and the connect timeout is cancelled.
        """
        factory, connector, _, syn = self.connect(timeout=5)
        connector.stopConnecting()
        self.assertEqual(len(factory.failures), 1)
        self.assertIs(factory.failures[0][0], connector)
        self.assertTrue(factory.failures[0][1].check(UserError))
        self.assertEqual(factory.stops, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLostTellsFactory(self):
        """
        As with Twisted's own connectors, when a connection that was made
        ends, the factory gets C{clientConnectionLost} and is stopped.
        """
        factory, connector, _, syn = self.connect()
        self.answer(syn)
        self.taken()
        self.sendSegment(RST, seq=ISN + 1, srcPort=22, dstPort=syn.srcPort, dst=HOST_IP)
        self.assertEqual(len(factory.protocols[0].reasons), 1)
        self.assertEqual(len(factory.lost), 1)
        self.assertIs(factory.lost[0][0], connector)
        self.assertEqual(factory.stops, 1)

    def test_protocolNone(self):
        """
        A factory that builds no protocol: nothing is sent and nothing stays
        in the table.
        """

        class Nothing(RecordingClientFactory):
            def buildProtocol(self, addr):
                return None

        self.demux.connectTCP("192.168.127.2", 22, Nothing())
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.demux.connectionCount(), 0)


class LinkBackpressureTests(DemuxTestCase):
    """
    The network's C{linkPaused}/C{linkResumed} reach the connections toward
    the paused guest link only.
    """

    def setUp(self):
        DemuxTestCase.setUp(self)
        self.other = FakePort("other")
        self.switch.attach(self.other)
        self.factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, self.factory)
        self.establish(self.factory)
        self.establish(self.factory, port=self.other, mac=OTHER_MAC, ip=OTHER_IP)
        self.taken()
        self.taken(self.other)
        self.mine, self.theirs = self.factory.protocols

    def writeBoth(self, data):
        self.mine.transport.write(data)
        self.theirs.transport.write(data)
        self.clock.advance(0)

    def payloads(self, port):
        return [bytes(seg.payload) for _, seg in self.taken(port) if seg.payload]

    def test_pausedLinkOnly(self):
        """
        With the guest's link paused, its connection sends no data while the
        other guest's connection still does.
        """
        self.network.linkPaused(self.guest)
        self.writeBoth(b"data")
        self.assertEqual(self.payloads(self.guest), [])
        self.assertEqual(self.payloads(self.other), [b"data"])

    def test_resumed(self):
        """
        When the link resumes, what was held is sent.
        """
        self.network.linkPaused(self.guest)
        self.writeBoth(b"data")
        self.taken(self.other)
        self.network.linkResumed(self.guest)
        self.clock.advance(0)
        self.assertEqual(self.payloads(self.guest), [b"data"])
        self.assertEqual(self.payloads(self.other), [])

    def test_newConnectionOnPausedLink(self):
        """
        A connection opened toward a guest whose link is paused starts paused.
        """
        self.network.linkPaused(self.guest)
        self.establish(self.factory, srcPort=GUEST_PORT + 1)
        third = self.factory.protocols[-1]
        third.transport.write(b"late")
        self.clock.advance(0)
        self.assertEqual(self.payloads(self.guest), [])
        self.network.linkResumed(self.guest)
        self.clock.advance(0)
        self.assertEqual(self.payloads(self.guest), [b"late"])

    def test_otherLinkUnaffected(self):
        """
        Pausing and resuming another link leaves this guest's data flowing.
        """
        self.network.linkPaused(self.other)
        self.writeBoth(b"x")
        self.assertEqual(self.payloads(self.guest), [b"x"])
        self.assertEqual(self.payloads(self.other), [])


class TimeWaitTests(DemuxTestCase):
    """
    A SYN that reopens a 4-tuple whose connection is in TIME_WAIT.
    """

    def closeToTimeWait(self):
        """
        Open a connection, close it from the gateway first so that it ends in
        TIME_WAIT; return the gateway's ISN.
        """
        self.factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, self.factory)
        iss = self.establish(self.factory)
        self.taken()
        protocol = self.factory.protocols[0]
        protocol.transport.loseConnection()
        self.clock.advance(0)
        [(_, fin)] = self.taken()
        self.assertEqual((fin.flags & FIN, fin.seq), (FIN, (iss + 1) & MASK))
        self.sendSegment(FIN | ACK, seq=ISN + 1, ack=iss + 2)
        self.clock.advance(0)
        [(_, last)] = self.taken()
        self.assertEqual((last.flags, last.ack), (ACK, ISN + 2))
        self.assertEqual(self.demux.connectionCount(), 1)
        self.assertTrue(protocol.reasons[0].check(ConnectionDone))
        return iss

    def test_newSynOpensNewConnection(self):
        """
        A SYN above the old connection's sequence space closes the TIME_WAIT
        connection and opens a new one: a SYN-ACK for the new ISN, a new
        protocol, C{tcp.timeWaitReused} counted.
        """
        self.closeToTimeWait()
        newIsn = ISN + 100000
        self.sendSegment(SYN, seq=newIsn, options=wiretcp.mssOption(1460))
        [(_, synAck)] = self.taken()
        self.assertEqual((synAck.flags, synAck.ack), (SYN | ACK, newIsn + 1))
        self.assertEqual(len(self.factory.protocols), 2)
        self.assertEqual(self.counters.get("tcp.timeWaitReused"), 1)
        self.assertEqual(self.demux.connectionCount(), 1)
        self.sendSegment(ACK, seq=newIsn + 1, ack=synAck.seq + 1)
        self.assertEqual(self.factory.protocols[1].made, 1)

    def test_oldSynDoesNotReopen(self):
        """
        A SYN below the old connection's sequence space does not reopen it:
        no SYN-ACK, no new protocol.
        """
        self.closeToTimeWait()
        self.sendSegment(SYN, seq=ISN - 1000)
        self.assertEqual([seg for _, seg in self.taken() if seg.flags & SYN], [])
        self.assertEqual(len(self.factory.protocols), 1)
        self.assertEqual(self.counters.get("tcp.timeWaitReused"), 0)

    def test_timeWaitEnds(self):
        """
        Without a new SYN, the TIME_WAIT connection leaves the table when its
        timer runs out.
        """
        self.closeToTimeWait()
        self.clock.advance(60)
        self.assertEqual(self.demux.connectionCount(), 0)


class UnresolvedGuestTests(DemuxTestCase):
    """
    C{connectTCP} into an address no guest answers ARP for fails when ARP
    gives up (3 s), not after the connect timeout.
    """

    def test_failsWhenARPGivesUp(self):
        """
        The factory hears C{clientConnectionFailed(ConnectError)} once the
        third ARP request went unanswered, and the connection is gone.
        """
        factory = RecordingClientFactory()
        self.demux.connectTCP("192.168.127.50", 22, factory, timeout=30)
        self.clock.pump([1.0, 1.0, 0.9])
        self.assertEqual(factory.failures, [])
        self.clock.advance(0.1)
        [(_, reason)] = factory.failures
        self.assertTrue(reason.check(ConnectError))
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(self.counters.get("tcp.unresolvedGuest"), 1)
        self.assertEqual(self.demux._unresolved, {})

    def test_answeredInTimeConnects(self):
        """
        A guest that answers ARP (and the SYN) in time is not failed later,
        and nothing waits on its address any more.
        """
        factory = RecordingClientFactory()
        self.demux.connectTCP("192.168.127.2", 22, factory, timeout=30)
        self.learn()
        self.clock.advance(1)
        syn = [seg for _, seg in self.taken() if seg.flags & SYN][-1]
        self.sendSegment(SYN | ACK, seq=ISN, ack=syn.seq + 1, srcPort=22, dstPort=syn.srcPort,
                         dst=HOST_IP, options=wiretcp.mssOption(1460))
        self.clock.advance(5)
        self.assertEqual(factory.failures, [])
        self.assertEqual(factory.protocols[0].made, 1)
        self.assertEqual(self.demux._unresolved, {})


verifyingVariants(globals())
