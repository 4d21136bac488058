"""
Tests for what L{gvtwisted.services.nat_icmp.ICMPNAT} and
L{gvtwisted.services.nat66_icmp.ICMP66NAT} share, run once per address
family: the datagram and raw host sockets, the echo requests written to them
and the replies read back, their errors, and the flow table.

The host sockets are fakes (C{socket.socket} is patched, see
L{tests.test_nat_udp_families}), so that every path is reachable without
privileges, and what each family makes of it is pinned to the letter.
"""

import errno
import socket


from gvtwisted.services import nat_icmp, nat66_icmp
from gvtwisted.services.nat66_icmp import ICMP66NAT
from gvtwisted.services.nat_icmp import MODE_DATAGRAM, MODE_NONE, MODE_RAW, ICMPNAT
from gvtwisted.services.nat_udp import READ_BATCH
from gvtwisted.wire import icmp, icmpv6, ipv4, ipv6
from tests.test_nat_icmp import echoArgs
from tests.test_nat_udp import GUEST, HOST, FakeNetwork
from tests.test_nat_udp_families import (
    GUEST6, HOST6, WORLD, WORLD6, FakeGateway, SocketCase, oserror,
)

IDENT = (0x1234).to_bytes(2, "big")
SEQ = (7).to_bytes(2, "big")
DATA = b"abcdefgh"


def echo6Args(src, dst, ident, seq, data=DATA, icmpType=icmpv6.ECHO_REQUEST):
    """
    The arguments C{ICMP66NAT.icmpReceived} gets for a guest's echo request.
    """
    message = icmpv6.build(src, dst, icmpType, 0,
                           ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + data)
    frame = (b"\0" * 12 + b"\x86\xdd"
             + ipv6.buildHeader(src, dst, ipv6.PROTO_ICMPV6, len(message)) + message)
    packet = ipv6.parse(frame)
    icmpType, code, body = icmpv6.parse(packet.src, packet.dst, packet.payload)
    return packet, icmpType, code, body


class ICMPFamilyTests:
    """
    What an ICMP echo NAT of either family does with its host sockets; the
    subclasses give the family's NAT, addresses and expectations.
    """

    def makeNAT(self, **kwargs):
        nat = self.natClass(self.reactor, self.network, **kwargs)
        self.addCleanup(nat.stop)
        return nat

    def ping(self, nat, dst=None, ident=0x1234, seq=7, **kwargs):
        nat.icmpReceived(*self.echo(self.guest, dst or self.host, ident, seq, DATA, **kwargs))

    def test_datagramSockets(self):
        """
        In datagram mode each flow has a non-blocking ICMP datagram socket
        of the family, bound only to reach the host's loopback, connected
        to the real destination, read by a reader named after the table;
        the guest's echo request goes to it whole.
        """
        nat = self.makeNAT(mode=MODE_DATAGRAM)
        self.ping(nat)
        self.ping(nat, self.world)
        toHost, toWorld = self.sockets.made
        self.assertEqual((toHost.family, toHost.kind, toHost.proto),
                         (self.family, socket.SOCK_DGRAM, self.protocol))
        self.assertFalse(toHost.blocking)
        self.assertEqual(toHost.bound, (self.loopback, 0))
        self.assertEqual(toHost.connected, (self.loopback, 0))
        self.assertIsNone(toWorld.bound)
        self.assertEqual(toWorld.connected, (self.worldText, 0))
        request = self.request(IDENT + SEQ + DATA)
        self.assertEqual((toHost.sent, toWorld.sent), ([request], [request]))
        readers = {flow.reader.logPrefix() for flow in nat._flows.values()}
        self.assertEqual(readers, {self.readerName})
        self.assertEqual(len(self.reactor.readers), 2)
        self.assertEqual(self.counters.get(self.prefix + ".echoRequestsOut"), 2)

    def test_rawSocket(self):
        """
        In raw mode one filtered raw socket, read by its own reader, carries
        every flow's requests, each with an identifier of the NAT's own.
        """
        nat = self.makeNAT(mode=MODE_RAW)
        self.ping(nat)
        self.ping(nat, ident=0x4321)
        [raw] = self.sockets.made
        self.assertEqual((raw.family, raw.kind, raw.proto),
                         (self.family, socket.SOCK_RAW, self.protocol))
        self.assertFalse(raw.blocking)
        self.assertEqual(raw.options, [self.rawOption])
        self.assertEqual(nat._rawReader.logPrefix(), self.readerName + "-raw")
        self.assertEqual(raw.sent, [(self.request(b"\0\1" + SEQ + DATA), (self.loopback, 0)),
                                    (self.request(b"\0\2" + SEQ + DATA), (self.loopback, 0))])
        self.assertEqual(sorted(nat._byIdent), [b"\0\1", b"\0\2"])

    def test_datagramReplies(self):
        """
        A datagram socket's echo reply reaches the guest from the pinged
        address with the guest's identifier back; anything else it reads
        is counted and dropped.
        """
        nat = self.makeNAT(mode=MODE_DATAGRAM)
        self.ping(nat)
        [sock] = self.sockets.made
        [flow] = nat._flows.values()
        self.reactor.advance(5)
        kernelIdent = b"\x99\x99"
        sock.incoming = [(self.reply(kernelIdent + SEQ + DATA), None),
                         (self.request(kernelIdent + SEQ + DATA), None),
                         (self.reply(kernelIdent)[:6], None)]
        flow.reader.doRead()
        self.assertEqual(self.repliesSent(), [self.replyToGuest(IDENT + SEQ + DATA)])
        self.assertEqual(flow.lastActive, 5)
        self.assertEqual(self.counters.get(self.prefix + ".echoRepliesIn"), 1)
        self.assertEqual(self.counters.get("drop." + self.prefix + ".unexpectedReply"), 2)

    def test_datagramBatch(self):
        """
        A datagram socket is read at most a batch of messages at a time.
        """
        nat = self.makeNAT(mode=MODE_DATAGRAM)
        self.ping(nat)
        [sock] = self.sockets.made
        [flow] = nat._flows.values()
        sock.incoming = [(self.reply(IDENT + SEQ + DATA), None)] * (READ_BATCH + 1)
        flow.reader.doRead()
        self.assertEqual(len(self.repliesSent()), READ_BATCH)
        flow.reader.doRead()
        self.assertEqual(len(self.repliesSent()), READ_BATCH + 1)

    def test_sendErrors(self):
        """
        A full socket buffer is counted; an error that is not the network's
        is a complaint naming the destination; a network error is an
        unreachable to the guest.
        """
        nat = self.makeNAT(mode=MODE_DATAGRAM)
        self.ping(nat)
        [sock] = self.sockets.made
        sock.sendErrors = [BlockingIOError(), oserror(errno.EINVAL), oserror(errno.EHOSTUNREACH)]
        for _ in range(3):
            self.ping(nat)
        self.assertEqual(self.counters.get("drop." + self.prefix + ".hostSocketFull"), 1)
        self.assertEqual(self.complaints(), [
            (self.prefix + ".socketError", f"{self.loopback}: {oserror(errno.EINVAL)}")])
        self.assertEqual(self.counters.get(self.prefix + ".unreachable"), 1)
        self.assertEqual(self.network.icmpErrors, [self.sendError(self.hostUnreachable)])

    def test_readErrors(self):
        """
        An error read from a datagram socket is an unreachable quoting an
        echo request of the flow, or a complaint; the reading goes on.
        """
        nat = self.makeNAT(mode=MODE_DATAGRAM)
        self.ping(nat)
        [sock] = self.sockets.made
        [flow] = nat._flows.values()
        sock.incoming = [oserror(errno.EHOSTUNREACH), oserror(errno.EINVAL),
                         (self.reply(IDENT + SEQ + DATA), None)]
        flow.reader.doRead()
        self.assertEqual(self.network.icmpErrors, [self.flowError(self.hostUnreachable)])
        self.assertEqual(self.complaints(), [
            (self.prefix + ".socketError", f"{self.loopback}: {oserror(errno.EINVAL)}")])
        self.assertEqual(len(self.repliesSent()), 1)

    def test_rawReadError(self):
        """
        An error read from the raw socket is a complaint, and the reading
        goes on.
        """
        nat = self.makeNAT(mode=MODE_RAW)
        self.ping(nat)
        [raw] = self.sockets.made
        raw.incoming = [oserror(errno.ENOBUFS), (self.rawReply(b"\0\1" + SEQ + DATA), self.source)]
        nat._rawReader.doRead()
        self.assertEqual(self.complaints(),
                         [(self.prefix + ".socketError", str(oserror(errno.ENOBUFS)))])
        self.assertEqual(self.repliesSent(), [self.replyToGuest(IDENT + SEQ + DATA)])

    def test_openFails(self):
        """
        A host socket that cannot be opened, in either mode, is a complaint
        and an unreachable about the guest's own request.
        """
        for mode in (MODE_DATAGRAM, MODE_RAW):
            nat = self.makeNAT(mode=mode)
            self.sockets.openError = errno.EACCES
            self.ping(nat)
            self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.complaints(), [
            (self.prefix + ".hostSocket", f"{self.loopback}: {oserror(errno.EACCES)}")] * 2)
        self.assertEqual(self.network.icmpErrors, [self.guestError(self.adminProhibited)] * 2)

    def test_descriptors(self):
        """
        Only a datagram socket needs a descriptor of the reserve: without
        room, datagram mode opens nothing, raw mode its one socket.
        """

        class Full:
            def room(self):
                return 0

        datagram = self.makeNAT(mode=MODE_DATAGRAM)
        datagram.descriptors = Full()
        self.ping(datagram)
        self.assertEqual(self.sockets.made, [])
        self.assertEqual(self.complaints(), [(self.prefix + ".noDescriptors", "")])
        raw = self.makeNAT(mode=MODE_RAW)
        raw.descriptors = Full()
        self.ping(raw)
        self.assertEqual(raw.flowCount(), 1)

    def test_noSocket(self):
        """
        Without any kind of socket, each ping is a complaint saying what to
        change, and nothing is opened.
        """
        nat = self.makeNAT(mode=MODE_NONE)
        self.ping(nat)
        self.ping(nat, seq=8)
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.sockets.made, [])
        self.assertEqual(self.complaints(), [(self.prefix + ".noSocket", self.noSocketText)] * 2)

    def test_modeFound(self):
        """
        Without a mode given, the first ping finds out which socket the
        process may open (a probe of the family, closed at once).
        """
        nat = self.makeNAT()
        self.ping(nat)
        probe, sock = self.sockets.made
        self.assertEqual((probe.family, probe.kind, probe.proto),
                         (self.family, socket.SOCK_DGRAM, self.protocol))
        self.assertTrue(probe.closed)
        self.assertEqual(nat.mode, MODE_DATAGRAM)
        self.assertEqual(sock.sent, [self.request(IDENT + SEQ + DATA)])

    def test_notCarried(self):
        """
        Other messages than echo requests, and requests too short for an
        identifier and a sequence number, are dropped and counted.
        """
        nat = self.makeNAT(mode=MODE_RAW)
        self.ping(nat, icmpType=self.replyType)
        packet, icmpType, code, _ = self.echo(self.guest, self.host, 1, 1)
        nat.icmpReceived(packet, icmpType, code, memoryview(b"\0\1"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.counters.get("drop." + self.prefix + ".unsupportedType"), 1)
        self.assertEqual(self.complaints(), [(self.prefix + ".short", "")])

    def test_table(self):
        """
        At the cap the least recently used flow gives way and frees its
        identifier; the last flow to expire closes the raw socket; the
        counters carry the family's prefix.
        """
        nat = self.makeNAT(mode=MODE_RAW, maxFlows=2, idleTimeout=60.0)
        for ident in (1, 2, 3):
            self.ping(nat, ident=ident)
        [raw] = self.sockets.made
        self.assertEqual(sorted(nat._byIdent), [b"\0\2", b"\0\3"])
        self.reactor.advance(60)
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(nat._byIdent, {})
        self.assertTrue(raw.closed)
        self.assertIsNone(nat._raw)
        self.assertEqual(self.reactor.readers, set())
        self.assertEqual([self.counters.get(self.prefix + "." + name) for name in (
            "flowsOpened", "flowsEvicted", "flowsExpired")], [3, 1, 2])


class ICMPTests(ICMPFamilyTests, SocketCase):
    """
    L{ICMPNAT}: IPv4. The NAT writes each request's checksum itself, and
    an error about a failed send quotes the guest's request as it came.
    """

    natClass = ICMPNAT
    family = socket.AF_INET
    protocol = socket.IPPROTO_ICMP
    prefix = "nat.icmp"
    readerName = "gvtap-nat-icmp"
    guest, host, world = GUEST, HOST, WORLD
    loopback, worldText = "127.0.0.1", "198.51.100.7"
    source = ("127.0.0.1", 0)
    rawOption = (nat_icmp.SOL_RAW, nat_icmp.ICMP_FILTER, nat_icmp.ONLY_ECHO_REPLIES)
    replyType = icmp.ECHO_REPLY
    hostUnreachable = icmp.HOST_UNREACHABLE
    adminProhibited = icmp.ADMIN_PROHIBITED
    noSocketText = ("cannot open an ICMP socket: allow this group in "
                    "net.ipv4.ping_group_range, or give the process CAP_NET_RAW")

    echo = staticmethod(echoArgs)

    def makeNetwork(self):
        return FakeNetwork(self.reactor)

    def request(self, rest):
        return icmp.build(icmp.ECHO_REQUEST, 0, rest)

    def reply(self, rest):
        return icmp.build(icmp.ECHO_REPLY, 0, rest)

    def rawReply(self, rest):
        """
        What the raw socket reads: the IP header comes with the message.
        """
        message = self.reply(rest)
        return ipv4.buildHeader(socket.inet_aton("127.0.0.1"), GUEST, ipv4.PROTO_ICMP,
                                len(message)) + message

    def repliesSent(self):
        return self.network.ipv4Sent

    def replyToGuest(self, rest):
        return (HOST, GUEST, ipv4.PROTO_ICMP, icmp.build(icmp.ECHO_REPLY, 0, rest))

    def guestError(self, code):
        packet = echoArgs(GUEST, HOST, 0x1234, 7, DATA)[0]
        return (GUEST, HOST, bytes(packet.header), bytes(packet.payload[:8]),
                icmp.DEST_UNREACHABLE, code)

    sendError = guestError

    def flowError(self, code):
        quoted = bytes((icmp.ECHO_REQUEST, 0, 0, 0)) + IDENT + b"\0\0"
        return (GUEST, HOST, ipv4.buildHeader(GUEST, HOST, ipv4.PROTO_ICMP, len(quoted)), quoted,
                icmp.DEST_UNREACHABLE, code)

    def test_unspecifiedGuest(self):
        """
        A ping from 0.0.0.0 opens no flow.
        """
        nat = self.makeNAT(mode=MODE_RAW)
        nat.icmpReceived(*echoArgs(b"\0\0\0\0", HOST, 1, 1))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.complaints(), [("nat.icmp.badAddress", "192.168.127.254")])


class ICMP66Tests(ICMPFamilyTests, SocketCase):
    """
    L{ICMP66NAT}: IPv6. The kernel writes every request's checksum, the raw
    socket reads no IP header (the source comes with C{recvfrom}), errors
    come from the gateway (C{src} L{None}), and an error about a failed
    send quotes an echo request rebuilt from the flow.
    """

    natClass = ICMP66NAT
    family = socket.AF_INET6
    protocol = socket.IPPROTO_ICMPV6
    prefix = "nat66.icmp"
    readerName = "gvtap-nat66-icmp"
    guest, host, world = GUEST6, HOST6, WORLD6
    loopback, worldText = "::1", "2606:4700::1111"
    source = ("::1", 0, 0, 0)
    rawOption = (socket.IPPROTO_ICMPV6, nat66_icmp.ICMP6_FILTER, nat66_icmp.ONLY_ECHO_REPLIES)
    replyType = icmpv6.ECHO_REPLY
    hostUnreachable = icmpv6.ADDRESS_UNREACHABLE
    adminProhibited = icmpv6.ADMIN_PROHIBITED
    noSocketText = ("cannot open an ICMPv6 socket: allow this group in "
                    "net.ipv4.ping_group_range, or give the process CAP_NET_RAW")

    echo = staticmethod(echo6Args)

    def makeNetwork(self):
        return FakeGateway(self.reactor)

    def request(self, rest):
        return bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + rest

    def reply(self, rest):
        return icmpv6.build(HOST6, GUEST6, icmpv6.ECHO_REPLY, 0, rest)

    rawReply = reply

    def repliesSent(self):
        return self.network.ipv6Sent

    def replyToGuest(self, rest):
        return (HOST6, GUEST6, ipv6.PROTO_ICMPV6,
                icmpv6.build(HOST6, GUEST6, icmpv6.ECHO_REPLY, 0, rest))

    def guestError(self, code):
        packet = echo6Args(GUEST6, HOST6, 0x1234, 7, DATA)[0]
        return (GUEST6, HOST6, bytes(packet.packet), icmpv6.DEST_UNREACHABLE, code, None)

    def flowError(self, code):
        quoted = bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + IDENT + b"\0\0"
        return (GUEST6, HOST6, ipv6.buildHeader(GUEST6, HOST6, ipv6.PROTO_ICMPV6, len(quoted))
                + quoted, icmpv6.DEST_UNREACHABLE, code, None)

    sendError = flowError

    def test_rawReplies(self):
        """
        The raw socket's echo replies reach the guest only with a flow's
        identifier and from that flow's destination (a scoped source
        address is compared without its scope); anything else is left.
        """
        nat = self.makeNAT(mode=MODE_RAW)
        self.ping(nat)
        [raw] = self.sockets.made
        raw.incoming = [
            (self.reply(b"\0\1" + SEQ + DATA), ("::2", 0, 0, 0)),
            (self.reply(b"\0\2" + SEQ + DATA), ("::1", 0, 0, 0)),
            (self.request(b"\0\1" + SEQ + DATA), ("::1", 0, 0, 0)),
            (self.reply(b"\0\1")[:6], ("::1", 0, 0, 0)),
            (self.reply(b"\0\1" + SEQ + DATA), ("::1%lo", 0, 0, 1)),
        ]
        nat._rawReader.doRead()
        self.assertEqual(self.repliesSent(), [self.replyToGuest(IDENT + SEQ + DATA)])
        self.assertEqual(self.counters.get("nat66.icmp.echoRepliesIn"), 1)
