"""
ICMPv6 echo over NAT66: the guest's pings to IPv6 destinations go out as real
pings from the host, and only real answers come back (the IPv6 twin of
L{gvtwisted.services.nat_icmp}).

Two kinds of host socket, as for IPv4:

 - datagram ICMPv6 sockets (C{socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)},
   open to the groups of C{net.ipv4.ping_group_range}, which covers IPv6
   too): each flow (guest address, guest identifier, destination) has one;
   the kernel picks the identifier on the wire, computes the checksum and
   hands the socket only its own replies;
 - a raw ICMPv6 socket (C{CAP_NET_RAW}), shared by every flow, with an
   C{ICMP6_FILTER} that lets only echo replies in; each flow sends with an
   identifier of its own, and a reply counts only with a flow's identifier
   and from that flow's destination. The kernel computes ICMPv6 checksums on
   raw sockets itself (RFC 3542 3.1).

Either way the guest's identifier is put back on the replies. Without either
socket the echo is counted and dropped with a log line saying what to change.
"""

import errno
import socket
import struct

from gvtwisted.services.nat66 import (
    LOOPBACK6, QuotedPacket6, hostDestination6, unreachableCode6,
)
from gvtwisted.services.nat_icmp import RECV_SIZE
from gvtwisted.services.nat_policy import Refused
from gvtwisted.services.nat_udp import READ_BATCH, FlowTable, SocketReader
from gvtwisted.wire import icmpv6, ipv6


MODE_DATAGRAM = "dgram"
MODE_RAW = "raw"
MODE_NONE = "none"

#: setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, struct icmp6_filter): eight
#: 32-bit words, a set bit blocks that type (Linux's sense of the bits).
ICMP6_FILTER = 1
ONLY_ECHO_REPLIES = b"".join(
    struct.pack("=I", 0xFFFFFFFF & ~(1 << (icmpv6.ECHO_REPLY & 31)) if word == icmpv6.ECHO_REPLY >> 5
                else 0xFFFFFFFF)
    for word in range(8))


def availableMode() -> str:
    """
    Which kind of ICMPv6 socket this process may open.
    """
    for kind, mode in ((socket.SOCK_DGRAM, MODE_DATAGRAM), (socket.SOCK_RAW, MODE_RAW)):
        try:
            s = socket.socket(socket.AF_INET6, kind, socket.IPPROTO_ICMPV6)
        except OSError:
            continue
        s.close()
        return mode
    return MODE_NONE


class ICMP66Flow:
    """
    @ivar key: C{(guestIP, guestIdent, dstIP)}: 16-byte addresses and the
        guest's 2-byte identifier.
    """

    __slots__ = ("key", "guestIP", "guestIdent", "dstIP", "realHost", "realHostBytes",
                 "natIdent", "socket", "reader", "lastActive", "closed", "link")

    def __init__(self, key, realHost, sock, now):
        self.key = key
        self.guestIP, self.guestIdent, self.dstIP = key
        self.realHost = realHost
        self.realHostBytes = socket.inet_pton(socket.AF_INET6, realHost)
        self.natIdent = None
        self.socket = sock
        self.reader = None
        self.lastActive = now
        self.closed = False
        self.link = None


class ICMP66NAT(FlowTable):
    """
    The guest's IPv6 pings to the world.
    """

    prefix = "nat66.icmp"

    def __init__(self, reactor, gateway, hostLoopback=True, maxFlows=1024, idleTimeout=60.0,
                 mode=None):
        FlowTable.__init__(self, reactor, gateway, maxFlows, idleTimeout)
        self.hostLoopback = hostLoopback
        self.mode = mode
        self._raw = None
        self._rawReader = None
        self._byIdent = {}
        self._nextIdent = 0

    def icmpReceived(self, packet, icmpType, code, body):
        """
        An ICMPv6 message (checksum verified) for a destination off the
        link; only echo requests are carried.

        @param body: the message after its checksum: identifier, sequence,
            data.
        """
        if icmpType != icmpv6.ECHO_REQUEST:
            self.counters.increment("drop.nat66.icmp.unsupportedType")
            return
        if len(body) < 4:
            self.counters.complain("nat66.icmp.short")
            return
        key = (packet.src, bytes(body[0:2]), packet.dst)
        flow = self._flowFor(packet, key)
        if flow is None:
            return
        self.counters.increment("nat66.icmp.echoRequestsOut")
        try:
            if flow.socket is not None:
                # Identifier and checksum are the kernel's to write.
                flow.socket.send(bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + bytes(body))
            else:
                self._raw.sendto(bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + flow.natIdent
                                 + bytes(body[2:]), (flow.realHost, 0))
        except BlockingIOError:
            self.counters.increment("drop.nat66.icmp.hostSocketFull")
        except OSError as e:
            self._failed(flow, e)

    def _open(self, packet, key):
        _, _, dst = key
        where = hostDestination6(self.network.config, dst, self.hostLoopback)
        if where.__class__ is Refused:
            self.counters.increment("drop.nat66.icmp." + where.reason)
            if where.icmpCode is not None:
                self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, where.icmpCode)
            return None
        if self.mode is None:
            self.mode = availableMode()
        if self.mode == MODE_NONE:
            self.counters.complain(
                "nat66.icmp.noSocket",
                "cannot open an ICMPv6 socket: allow this group in "
                "net.ipv4.ping_group_range, or give the process CAP_NET_RAW")
            return None
        if self.mode == MODE_DATAGRAM and not self._descriptorRoom():
            return None
        flow = ICMP66Flow(key, where, None, self.reactor.seconds())
        try:
            if self.mode == MODE_DATAGRAM:
                self._openDatagram(flow)
            else:
                self._openRaw(flow)
        except OSError as e:
            self.counters.complain("nat66.icmp.hostSocket", f"{where}: {e}")
            code = unreachableCode6(e.errno)
            if code is not None:
                self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, code)
            return None
        self._addFlow(flow)
        if flow.reader is not None:
            self.reactor.addReader(flow.reader)
        return flow

    def _openDatagram(self, flow):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        try:
            sock.setblocking(False)
            if flow.realHost == LOOPBACK6:
                sock.bind((LOOPBACK6, 0))
            sock.connect((flow.realHost, 0))
        except OSError:
            sock.close()
            raise
        flow.socket = sock
        flow.reader = SocketReader(self.reactor, sock, lambda: self._readable(flow),
                                   "gvtap-nat66-icmp")

    def _openRaw(self, flow):
        if self._raw is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, ONLY_ECHO_REPLIES)
            except OSError:
                sock.close()
                raise
            self._raw = sock
            self._rawReader = SocketReader(self.reactor, sock, self._readRaw,
                                           "gvtap-nat66-icmp-raw")
            self.reactor.addReader(self._rawReader)
        if len(self._byIdent) >= 0xFFFF:
            raise OSError(errno.EAGAIN, "no free ICMPv6 identifier")
        ident = self._nextIdent
        while True:
            ident = (ident % 0xFFFF) + 1
            natIdent = ident.to_bytes(2, "big")
            if natIdent not in self._byIdent:
                break
        self._nextIdent = ident
        flow.natIdent = natIdent
        self._byIdent[natIdent] = flow

    def _readRaw(self):
        """
        Pass on the echo replies that answer one of our flows, from that
        flow's destination.
        """
        sock = self._raw
        for _ in range(READ_BATCH):
            if self._raw is not sock:
                return
            try:
                message, address = sock.recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                self.counters.complain("nat66.icmp.socketError", str(e))
                continue
            if len(message) < 8 or message[0] != icmpv6.ECHO_REPLY:
                continue
            flow = self._byIdent.get(message[4:6])
            source = address[0].split("%")[0]
            if flow is None or socket.inet_pton(socket.AF_INET6, source) != flow.realHostBytes:
                # Another program's ping, or an answer from the wrong host.
                continue
            self._reply(flow, message)

    def _readable(self, flow):
        recv = flow.socket.recv
        for _ in range(READ_BATCH):
            if flow.closed:
                return
            try:
                message = recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                self._failed(flow, e)
                continue
            if len(message) < 8 or message[0] != icmpv6.ECHO_REPLY:
                self.counters.increment("drop.nat66.icmp.unexpectedReply")
                continue
            self._reply(flow, message)

    def _reply(self, flow, message):
        """
        Give the guest the echo reply its destination sent, with the guest's
        own identifier back in place.
        """
        flow.lastActive = self.reactor.seconds()
        self._flows.move_to_end(flow.key)
        self.counters.increment("nat66.icmp.echoRepliesIn")
        reply = icmpv6.build(flow.dstIP, flow.guestIP, icmpv6.ECHO_REPLY, 0,
                             flow.guestIdent + bytes(message[6:]))
        self.network.sendIPv6(flow.dstIP, flow.guestIP, ipv6.PROTO_ICMPV6, reply)

    def _failed(self, flow, error):
        code = unreachableCode6(error.errno)
        if code is None:
            self.counters.complain("nat66.icmp.socketError", f"{flow.realHost}: {error}")
            return
        self.counters.increment("nat66.icmp.unreachable")
        quoted = QuotedPacket6(flow.guestIP, flow.dstIP, ipv6.PROTO_ICMPV6,
                               bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + flow.guestIdent + b"\0\0")
        self.network.sendICMPv6Error(quoted, icmpv6.DEST_UNREACHABLE, code)

    def _closeFlow(self, flow):
        if flow.closed:
            return
        flow.closed = True
        self._unlink(flow)
        if flow.reader is not None:
            self.reactor.removeReader(flow.reader)
            flow.reader = None
        if flow.socket is not None:
            flow.socket.close()
        if flow.natIdent is not None and self._byIdent.get(flow.natIdent) is flow:
            del self._byIdent[flow.natIdent]

    def _tableEmpty(self):
        if self._raw is not None:
            self.reactor.removeReader(self._rawReader)
            self._raw.close()
            self._raw = None
            self._rawReader = None
