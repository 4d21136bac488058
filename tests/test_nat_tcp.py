"""
Tests for L{gvtwisted.services.nat_tcp.TCPNAT}: a guest's SYN to an address
outside the network is held while the real destination is dialled; the dial's
outcome becomes a SYN-ACK (and a splice), a RST, or an ICMP unreachable.

Most tests run a whole L{Gvtap} on a L{MemoryReactorClock}, so every dial is
an entry of C{tcpClients} that the test then connects (with a
L{StringTransport}) or fails; a few run on the real reactor against a
listener on 127.0.0.1.
"""

import errno
import os
import socket
import struct

from twisted.internet import defer, error, reactor as globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.wire import icmp, ipv4
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.tcp import ACK, FIN, PSH, RST, SYN
from tests.checksumpolicy import verifyingVariants

MASK = 0xFFFFFFFF

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GUEST_IP = socket.inet_aton("192.168.127.2")
HOST_IP = socket.inet_aton("192.168.127.254")
REMOTE = "10.1.2.3"
REMOTE_IP = socket.inet_aton(REMOTE)

GUEST_PORT = 40000
ISN = 0x20000000


class FakePort:
    """
    A guest link: records the frames the switch sends it, and fires
    L{waitFor} Deferreds (in the next turn of the real reactor) when a
    matching frame comes.
    """

    name = "guest"

    def __init__(self):
        self.frames = []
        self._waiters = []

    def sendFrame(self, frame):
        self.frames.append(frame)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(frame):
                self._waiters.remove(waiter)
                # Not from inside sendFrame: the test would then send its
                # next segment while the connection is still emitting.
                globalReactor.callLater(0, d.callback, frame)

    def waitFor(self, predicate):
        for frame in self.frames:
            if predicate(frame):
                return defer.succeed(frame)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d


class HostTransport(StringTransport):
    """
    A host socket's transport: records half-closes and aborts, and never
    refuses a pause or resume.
    """

    def __init__(self, peer=IPv4Address("TCP", REMOTE, 80)):
        StringTransport.__init__(self, peerAddress=peer)
        self.aborted = False
        self.writeClosed = False

    def abortConnection(self):
        self.aborted = True
        self.disconnecting = True

    def loseWriteConnection(self):
        self.writeClosed = True

    def pauseProducing(self):
        self.producerState = "paused"

    def resumeProducing(self):
        self.producerState = "producing"


def segment(flags, seq=ISN, ack=0, srcPort=GUEST_PORT, dstPort=80, dst=REMOTE_IP,
            options=b"", payload=b"", window=65535):
    return wiretcp.buildSegment(GUEST_IP, dst, srcPort, dstPort, seq & MASK, ack & MASK,
                                flags, window, options, payload)


def frame(seg, dst=REMOTE_IP):
    """
    A guest's TCP segment in a frame to the gateway's MAC (its router).
    """
    return GW_MAC + GUEST_MAC + b"\x08\x00" + ipv4.buildHeader(
        GUEST_IP, dst, ipv4.PROTO_TCP, len(seg)) + seg


def parseFrame(raw):
    """
    C{(packet, segment or icmp body)} of a frame sent to the guest.
    """
    packet = ipv4.parse(raw)
    payload = bytes(packet.payload)
    if packet.proto == ipv4.PROTO_TCP:
        assert wiretcp.verifyChecksum(packet.src, packet.dst, payload), "bad TCP checksum"
        return packet, wiretcp.parseSegment(payload)
    return packet, payload


class NATTestCase(SynchronousTestCase):
    """
    A whole network on a memory reactor, one guest link.
    """

    gvtapArgs = {}

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.gvtap = Gvtap(self.reactor, NetworkConfig(), resolvConf=os.devnull,
                           **self.gvtapArgs)
        self.nat = self.gvtap.nat.tcp
        self.counters = self.gvtap.counters
        self.guest = FakePort()
        self.gvtap.switch.attach(self.guest)

    def send(self, flags, dst=REMOTE_IP, **kw):
        self.gvtap.switch.receiveFrame(self.guest, frame(segment(flags, dst=dst, **kw), dst=dst))

    def syn(self, dst=REMOTE_IP, dstPort=80, srcPort=GUEST_PORT, seq=ISN):
        self.send(SYN, dst=dst, dstPort=dstPort, srcPort=srcPort, seq=seq,
                  options=wiretcp.mssOption(1460))

    def taken(self):
        frames, self.guest.frames[:] = list(self.guest.frames), []
        return [parseFrame(f) for f in frames]

    def dialSucceeds(self, index=0):
        """
        Connect the dial number C{index} as the reactor would: build its
        protocol and give it a transport. Return the transport and protocol.
        """
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HostTransport(IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport, protocol

    def dialFails(self, exception, index=0):
        """
        Fail the dial number C{index} with C{exception}.
        """
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(exception))

    def connectedPair(self):
        """
        A guest connection to REMOTE:80 whose dial succeeded and whose
        handshake the guest completed. Return the host transport, the host
        protocol and the gateway's ISN.
        """
        self.syn()
        transport, protocol = self.dialSucceeds()
        [(_, synAck)] = self.taken()
        self.send(ACK, seq=ISN + 1, ack=synAck.seq + 1)
        return transport, protocol, synAck.seq


class DialTests(NATTestCase):
    """
    The dial comes first, the answer to the guest after it.
    """

    def test_synDials(self):
        """
        A SYN to REMOTE:80 makes one dial to that address and port, with the
        NAT's dial timeout, and the guest gets no answer yet.
        """
        self.syn()
        self.assertEqual([(h, p, t, b) for h, p, _, t, b in self.reactor.tcpClients],
                         [(REMOTE, 80, 30.0, None)])
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.nat.dialing, 1)
        self.assertEqual(self.counters.get("nat.tcp.dials"), 1)

    def test_blackHolesDelayNobody(self):
        """
        Twenty dials to a destination that never answers (a black hole) do not
        hold up a connection to another destination: it is dialled at once
        and the guest gets its SYN-ACK as soon as that dial connects (unlike
        gvproxy's ten-dial limit, gvisor-tap-vsock #676).
        """
        for srcPort in range(41000, 41020):
            self.syn(srcPort=srcPort)
        other = bytes([10, 9, 8, 7])
        self.syn(dst=other, srcPort=42000, dstPort=443)
        self.assertEqual(len(self.reactor.tcpClients), 21)
        self.assertEqual(self.reactor.tcpClients[20][:2], ("10.9.8.7", 443))
        self.dialSucceeds(20)
        [(packet, seg)] = self.taken()
        self.assertEqual(packet.src, other)
        self.assertEqual((seg.flags, seg.srcPort, seg.dstPort), (SYN | ACK, 443, 42000))
        self.assertEqual(self.nat.dialing, 20)

    def test_retransmittedSyn(self):
        """
        The guest's retransmission of the same SYN does not dial again.
        """
        self.syn()
        self.syn()
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.nat.dialing, 1)

    def test_dialSucceeds(self):
        """
        When the dial connects, the guest gets a SYN-ACK from the destination
        acknowledging its SYN.
        """
        self.syn()
        self.dialSucceeds()
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, packet.dst), (REMOTE_IP, GUEST_IP))
        self.assertEqual((seg.srcPort, seg.dstPort), (80, GUEST_PORT))
        self.assertEqual((seg.flags, seg.ack), (SYN | ACK, ISN + 1))
        self.assertEqual(self.nat.dialing, 0)
        self.assertEqual(self.counters.get("nat.tcp.connected"), 1)

    def test_hostDataBeforeGuestConnects(self):
        """
        The host socket is read on while the guest completes the handshake
        (no pause and resume per connection); what the host sends first (a
        server's banner) reaches the guest once the guest side is connected.
        """
        self.syn()
        transport, protocol = self.dialSucceeds()
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"SSH-2.0-banner\r\n")
        [(_, synAck)] = self.taken()
        self.send(ACK, seq=ISN + 1, ack=synAck.seq + 1)
        self.reactor.advance(0)
        data = [seg for _, seg in self.taken() if seg.payload]
        self.assertEqual(b"".join(bytes(seg.payload) for seg in data), b"SSH-2.0-banner\r\n")

    def test_spliced(self):
        """
        Once the guest completes the handshake, bytes flow both ways between
        the guest connection and the host socket, each the other's producer.
        """
        transport, protocol, iss = self.connectedPair()
        self.assertEqual(transport.producerState, "producing")
        self.assertIsNotNone(transport.producer)
        self.send(ACK | PSH, seq=ISN + 1, ack=iss + 1, payload=b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(transport.value(), b"GET / HTTP/1.0\r\n\r\n")
        protocol.dataReceived(b"HTTP/1.0 200 OK\r\n")
        self.reactor.advance(0)
        data = [seg for _, seg in self.taken() if seg.payload]
        self.assertEqual(len(data), 1)
        self.assertEqual((bytes(data[0].payload), data[0].seq),
                         (b"HTTP/1.0 200 OK\r\n", (iss + 1) & MASK))
        self.assertEqual(self.counters.get("nat.tcp.bytesFromGuest"), 18)
        self.assertEqual(self.counters.get("nat.tcp.bytesToGuest"), 17)

    def test_guestFinHalfClosesHost(self):
        """
        The guest's FIN becomes a half-close of the host socket.
        """
        transport, protocol, iss = self.connectedPair()
        self.send(FIN | ACK, seq=ISN + 1, ack=iss + 1)
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.aborted)

    def test_refused(self):
        """
        A refused dial becomes RST|ACK to the guest acknowledging its SYN, and
        the connection leaves the table.
        """
        self.syn()
        self.dialFails(error.ConnectionRefusedError())
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, packet.dst), (REMOTE_IP, GUEST_IP))
        self.assertEqual((seg.srcPort, seg.dstPort), (80, GUEST_PORT))
        self.assertEqual((seg.flags, seg.seq, seg.ack), (RST | ACK, 0, ISN + 1))
        self.assertEqual(self.nat.dialing, 0)
        self.assertEqual(self.counters.get("nat.tcp.refused"), 1)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    def assertUnreachable(self, code):
        """
        The guest got exactly one ICMP destination unreachable with C{code},
        quoting its SYN (addresses, protocol, ports, sequence number), and no
        TCP segment; the connection is gone.
        """
        [(packet, body)] = self.taken()
        self.assertEqual(packet.proto, ipv4.PROTO_ICMP)
        self.assertEqual(packet.dst, GUEST_IP)
        icmpType, icmpCode, rest = icmp.parse(body)
        self.assertEqual((icmpType, icmpCode), (icmp.DEST_UNREACHABLE, code))
        quoted = bytes(rest[4:])
        (verIhl, _, _, _, _, _, proto, _, src, dst) = ipv4.HEADER.unpack_from(quoted)
        self.assertEqual((verIhl, proto, src, dst),
                         (0x45, ipv4.PROTO_TCP, GUEST_IP, REMOTE_IP))
        self.assertEqual(struct.unpack("!HHI", quoted[20:28]), (GUEST_PORT, 80, ISN))
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)
        self.assertEqual(self.nat.dialing, 0)
        self.assertEqual(self.counters.get("nat.tcp.unreachable"), 1)

    def test_hostUnreachable(self):
        """
        A dial that fails with no route to the host becomes ICMP host
        unreachable quoting the guest's SYN, and no RST.
        """
        self.syn()
        self.dialFails(error.ConnectError(errno.EHOSTUNREACH, "No route to host"))
        self.assertUnreachable(icmp.HOST_UNREACHABLE)

    def test_netUnreachable(self):
        """
        A dial that fails with no route to the network (Twisted's
        L{NoRouteError}, ENETUNREACH) becomes ICMP network unreachable.
        """
        self.syn()
        self.dialFails(error.NoRouteError(errno.ENETUNREACH, "Network is unreachable"))
        self.assertUnreachable(icmp.NET_UNREACHABLE)

    def test_outOfDescriptorsResets(self):
        """
        A dial that fails for want of descriptors (EMFILE, ENFILE) answers
        the guest with RST, not host unreachable, and is counted.
        """
        for i, err in enumerate((errno.EMFILE, errno.ENFILE)):
            self.syn(srcPort=GUEST_PORT + i)
            self.dialFails(error.ConnectError(osError=err, string=os.strerror(err)), i)
            [(_, seg)] = self.taken()
            self.assertEqual(seg.flags, RST | ACK)
        self.assertEqual(self.counters.get("drop.nat.tcp.noDescriptors"), 2)
        self.assertEqual(self.counters.get("nat.tcp.unreachable"), 0)

    def test_descriptorReserveResets(self):
        """
        With no room left above the reserve of descriptors, a SYN is answered
        with RST at once and not dialled: the last descriptors are the API's
        and new links'.
        """

        class Full:
            def room(self):
                return 0

        self.nat.descriptors = Full()
        self.syn()
        [(_, seg)] = self.taken()
        self.assertEqual(seg.flags, RST | ACK)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.counters.get("drop.nat.tcp.noDescriptors"), 1)

    def test_dialTimeout(self):
        """
        A dial that times out becomes ICMP host unreachable.
        """
        self.syn()
        self.dialFails(error.TimeoutError())
        self.assertUnreachable(icmp.HOST_UNREACHABLE)

    def test_newSynAfterUnreachable(self):
        """
        After an unreachable answer the guest's next SYN dials again.
        """
        self.syn()
        self.dialFails(error.TimeoutError())
        self.taken()
        self.syn()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_dialTimeoutSetting(self):
        """
        The dial timeout given to the NAT goes to the reactor.
        """
        self.nat.dialTimeout = 7.5
        self.syn()
        self.assertEqual(self.reactor.tcpClients[0][3], 7.5)


class PolicyTests(NATTestCase):
    """
    Where a guest may dial (L{gvtwisted.services.nat_policy.hostDestination}).
    """

    def assertRefused(self, dst, dstPort, counter):
        self.syn(dst=dst, dstPort=dstPort)
        self.assertEqual(self.reactor.tcpClients, [])
        [(packet, seg)] = self.taken()
        self.assertEqual(packet.src, dst)
        self.assertEqual((seg.flags, seg.ack), (RST | ACK, ISN + 1))
        self.assertEqual(self.counters.get(counter), 1)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    def test_hostAddressIsLoopback(self):
        """
        The host address (.254) dials the host's 127.0.0.1.
        """
        self.syn(dst=HOST_IP, dstPort=8080)
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("127.0.0.1", 8080)])

    def test_hostAddressReplies(self):
        """
        The SYN-ACK for a connection to the host address comes from the host
        address, not from 127.0.0.1.
        """
        self.syn(dst=HOST_IP, dstPort=8080)
        self.dialSucceeds()
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, seg.srcPort, seg.flags), (HOST_IP, 8080, SYN | ACK))

    def test_linkLocalRefused(self):
        """
        The cloud metadata address is refused with RST without a dial.
        """
        self.assertRefused(socket.inet_aton("169.254.169.254"), 80,
                           "drop.nat.tcp.linkLocal")

    def test_martianRefused(self):
        """
        The host's own loopback addresses, reached directly, are refused.
        """
        self.assertRefused(socket.inet_aton("127.0.0.1"), 22, "drop.nat.tcp.martian")

    def test_inSubnetRefused(self):
        """
        Another address of the subnet is never dialled on the host.
        """
        self.assertRefused(socket.inet_aton("192.168.127.50"), 22, "drop.nat.tcp.inSubnet")

    def test_multicastDroppedSilently(self):
        """
        A SYN to a multicast address is dropped without an answer (the policy
        says nobody expects one, and a RST would come from a multicast source
        address, which RFC 1122 3.2.1.3 forbids).
        """
        self.syn(dst=socket.inet_aton("224.0.0.9"), dstPort=80)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("drop.nat.tcp.multicast"), 1)


class HostLoopbackOffTests(NATTestCase):
    """
    C{hostLoopback=False}.
    """

    gvtapArgs = {"hostLoopback": False}

    def test_refused(self):
        """
        The host address is refused with RST, and not dialled.
        """
        self.syn(dst=HOST_IP, dstPort=8080)
        self.assertEqual(self.reactor.tcpClients, [])
        [(packet, seg)] = self.taken()
        self.assertEqual((packet.src, seg.flags, seg.ack), (HOST_IP, RST | ACK, ISN + 1))
        self.assertEqual(self.counters.get("drop.nat.tcp.hostLoopbackDisabled"), 1)

    def test_otherAddressesStillDialled(self):
        """
        Other destinations are unaffected.
        """
        self.syn()
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [(REMOTE, 80)])


class MetadataAccessTests(NATTestCase):
    """
    C{ec2MetadataAccess=True}.
    """

    gvtapArgs = {"ec2MetadataAccess": True}

    def test_metadataDialled(self):
        """
        The cloud metadata address is dialled as itself.
        """
        self.syn(dst=socket.inet_aton("169.254.169.254"))
        self.assertEqual([c[:2] for c in self.reactor.tcpClients],
                         [("169.254.169.254", 80)])
        self.assertEqual(self.guest.frames, [])


class DialCapTests(NATTestCase):
    """
    At most C{maxDials} dials in flight.
    """

    def setUp(self):
        NATTestCase.setUp(self)
        self.nat.maxDials = 2

    def test_capDrops(self):
        """
        With two dials in flight a third SYN is dropped (no RST: the guest
        retransmits it) and counted; it is not dialled, and leaves no
        connection behind.
        """
        self.syn(srcPort=40000)
        self.syn(srcPort=40001)
        self.syn(srcPort=40002)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.taken(), [])
        self.assertEqual(self.counters.get("drop.nat.tcp.tooManyDials"), 1)
        self.assertEqual(self.nat.dialing, 2)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 2)

    def test_retransmittedSynDialledOnceRoom(self):
        """
        The guest's retransmission of a dropped SYN is dialled once a slot
        is free.
        """
        self.syn(srcPort=40000)
        self.syn(srcPort=40001)
        self.syn(srcPort=40002)
        self.dialSucceeds(0)
        self.taken()
        self.syn(srcPort=40002)
        self.assertEqual(len(self.reactor.tcpClients), 3)

    def test_capPerLink(self):
        """
        One link's dials are capped on their own: past C{maxDialsPerLink} its
        SYNs are dropped while the global cap has room.
        """
        self.nat.maxDials = 10
        self.nat.maxDialsPerLink = 1
        self.syn(srcPort=40000)
        self.syn(srcPort=40001)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.counters.get("drop.nat.tcp.tooManyDials"), 1)
        link = self.gvtap.network.linkFor(GUEST_IP)
        self.assertEqual(link.dialing, 1)
        self.dialFails(error.ConnectionRefusedError(), 0)
        self.assertEqual(link.dialing, 0)

    def test_roomAfterDialEnds(self):
        """
        A dial that ends (either way) makes room for a new one.
        """
        self.syn(srcPort=40000)
        self.syn(srcPort=40001)
        self.dialSucceeds(0)
        self.dialFails(error.ConnectionRefusedError(), 1)
        self.assertEqual(self.nat.dialing, 0)
        self.taken()
        self.syn(srcPort=40002)
        self.syn(srcPort=40003)
        self.assertEqual(len(self.reactor.tcpClients), 4)
        self.assertEqual(self.guest.frames, [])

    def test_connectedDoNotCount(self):
        """
        Connections whose dial is done do not count against the dial cap.
        """
        for i, srcPort in enumerate((40000, 40001, 40002, 40003)):
            self.syn(srcPort=srcPort)
            self.dialSucceeds(i)
        self.assertEqual(len(self.reactor.tcpClients), 4)
        self.assertEqual(self.counters.get("drop.nat.tcp.tooManyDials"), 0)


class GuestAbandonsTests(NATTestCase):
    """
    The guest gives up on its connection before the handshake completes.
    """

    def test_resetWhileDialing(self):
        """
        A guest RST while the dial is in flight cancels the dial (the
        connector is stopped), sends nothing to the guest and frees the dial
        slot.
        """
        self.syn()
        self.send(RST, seq=ISN + 1)
        [connector] = self.reactor.connectors
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(self.nat.dialing, 0)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    def test_resetWhileDialingCounted(self):
        """
        The guest abandoning its connection while the dial is in flight is
        counted as C{nat.tcp.abandonedByGuest}.
        """
        self.syn()
        self.send(RST, seq=ISN + 1)
        self.assertEqual(self.counters.get("nat.tcp.abandonedByGuest"), 1)

    def test_resetOutOfWindowIgnored(self):
        """
        A RST that does not match the SYN's sequence number does not cancel
        the dial.
        """
        self.syn()
        self.send(RST, seq=ISN + 5000)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.nat.dialing, 1)

    def test_resetWhileDialingNoAnswerLater(self):
        """
        After the guest's RST cancelled the dial, nothing is sent to it (no
        RST, no ICMP for the cancelled dial).
        """
        self.syn()
        self.send(RST, seq=ISN + 1)
        self.reactor.advance(60)
        self.assertEqual(self.guest.frames, [])
        self.assertEqual(self.counters.get("nat.tcp.unreachable"), 0)
        self.assertEqual(self.counters.get("nat.tcp.refused"), 0)

    def test_resetAfterHostConnected(self):
        """
        A guest that answers the SYN-ACK with RST (it gave up meanwhile):
        the host connection, already made, is aborted.
        """
        self.syn()
        transport, _ = self.dialSucceeds()
        [(_, synAck)] = self.taken()
        self.send(RST, seq=ISN + 1, ack=synAck.seq + 1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    def test_resetAfterHostConnectedCounted(self):
        """
        The guest abandoning its connection after the dial connected is
        counted as C{nat.tcp.abandonedByGuest}.
        """
        self.syn()
        self.dialSucceeds()
        [(_, synAck)] = self.taken()
        self.send(RST, seq=ISN + 1, ack=synAck.seq + 1)
        self.assertEqual(self.counters.get("nat.tcp.abandonedByGuest"), 1)

    def test_silentAfterHostConnected(self):
        """
        A guest that never answers the SYN-ACK: when its retransmissions give
        up, the host connection is aborted.
        """
        self.syn()
        transport, _ = self.dialSucceeds()
        for _ in range(200):
            self.reactor.advance(1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    def test_resetAfterSpliceAbortsHost(self):
        """
        A RST from the guest on an established NAT connection aborts the host
        socket.
        """
        transport, protocol, iss = self.connectedPair()
        self.send(RST, seq=ISN + 1)
        self.assertTrue(transport.aborted)

    def test_hostResetAbortsGuest(self):
        """
        The host socket's abnormal end resets the guest connection.
        """
        transport, protocol, iss = self.connectedPair()
        self.taken()
        protocol.connectionLost(Failure(error.ConnectionLost()))
        self.reactor.advance(0)
        flags = [seg.flags for _, seg in self.taken()]
        self.assertIn(RST | ACK, flags)
        self.reactor.advance(0)
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)


class Server(Protocol):
    """
    Records what it reads, answers C{b"world"} to C{b"hello"}.
    """

    def connectionMade(self):
        self.factory.connected.callback(self)
        self.lost = defer.Deferred()
        self.data = b""

    def dataReceived(self, data):
        self.data += data
        if self.data == b"hello":
            self.transport.write(b"world")

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


class RealSocketTests(TestCase):
    """
    The NAT on the real reactor, dialling a listener on 127.0.0.1 through the
    host address.
    """

    timeout = 15

    def setUp(self):
        self.gvtap = Gvtap(globalReactor, NetworkConfig(), resolvConf=os.devnull,
                           dns=False, guestAPI=False)
        self.addCleanup(self.gvtap.stop)
        self.guest = FakePort()
        self.gvtap.switch.attach(self.guest)
        factory = Factory.forProtocol(Server)
        factory.connected = defer.Deferred()
        self.factory = factory
        self.port = globalReactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.portNumber = self.port.getHost().port

    def send(self, flags, **kw):
        kw.setdefault("dstPort", self.portNumber)
        seg = segment(flags, dst=HOST_IP, **kw)
        self.gvtap.switch.receiveFrame(self.guest, frame(seg, dst=HOST_IP))

    def waitSegment(self, predicate):
        def match(raw):
            packet, seg = parseFrame(raw)
            return packet.proto == ipv4.PROTO_TCP and predicate(seg)

        return self.guest.waitFor(match).addCallback(lambda raw: parseFrame(raw)[1])

    @defer.inlineCallbacks
    def test_connectAndSplice(self):
        """
        The guest's SYN to the host address reaches the 127.0.0.1 listener;
        then bytes flow both ways, and the guest's RST closes the host socket.
        """
        self.send(SYN, options=wiretcp.mssOption(1460))
        synAck = yield self.waitSegment(lambda s: s.flags == SYN | ACK)
        self.assertEqual(synAck.ack, ISN + 1)
        server = yield self.factory.connected
        self.send(ACK | PSH, seq=ISN + 1, ack=synAck.seq + 1, payload=b"hello")
        reply = yield self.waitSegment(lambda s: bytes(s.payload) == b"world")
        self.assertEqual(reply.seq, (synAck.seq + 1) & MASK)
        self.assertEqual(server.data, b"hello")
        self.send(RST, seq=ISN + 6)
        yield server.lost
        self.assertTrue(server.reason.check(error.ConnectionLost, error.ConnectionDone))
        self.assertEqual(self.gvtap.tcp.connectionCount(), 0)

    @defer.inlineCallbacks
    def test_refusedPort(self):
        """
        A closed port on 127.0.0.1 refuses: the guest gets RST|ACK.
        """
        yield self.port.stopListening()
        self.send(SYN, options=wiretcp.mssOption(1460))
        rst = yield self.waitSegment(lambda s: s.flags & RST)
        self.assertEqual((rst.flags, rst.ack), (RST | ACK, ISN + 1))
        self.assertEqual(self.gvtap.counters.get("nat.tcp.refused"), 1)


verifyingVariants(globals())
