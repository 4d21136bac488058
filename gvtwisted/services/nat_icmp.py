"""
ICMP echo NAT: the guest's pings to addresses outside the virtual network go
out as real pings from the host, and only real answers come back.

gvisor-tap-vsock answered every echo request itself for a long time (its issue
#428): the guest saw every address as alive with a sub-millisecond round trip.
Here a reply reaches the guest only if the destination answered the host's
ping; nothing is ever made up.

Two kinds of host socket can send a ping:

 - datagram ICMP sockets (C{socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)}), which
   any user in C{net.ipv4.ping_group_range} may open. The kernel owns the echo
   identifier (it is the socket's "port") and hands each socket only the
   replies that carry it, so each flow gets a socket of its own, connected to
   the destination, and the guest's identifier is put back on the replies;
 - raw ICMP sockets, with C{CAP_NET_RAW}. One socket serves every flow; it
   sees every echo reply the host receives (an C{ICMP_FILTER} keeps out all
   other types), so each flow sends with an identifier of its own choosing,
   unique among the flows, and a reply is taken only if it carries a flow's
   identifier and comes from that flow's destination.

Datagram sockets are preferred: they need no privilege and the kernel does the
demultiplexing. Without either, echo requests are counted and dropped, with a
log line saying what to change.

A flow is (guest address, guest identifier, destination); sequence numbers
and data go through untouched. Flows are bounded and expire like UDP flows
(L{gvtwisted.services.nat_udp.FlowTable}).
"""

import errno
import socket

from gvtwisted.services.nat_udp import (
    ANY, LOOPBACK, READ_BATCH, FlowTable, QuotedPacket, Refused, SocketReader,
    hostDestination, unreachableCode,
)
from gvtwisted.wire import icmp, ipv4
from gvtwisted.wire.checksum import verifies

MODE_DATAGRAM = "dgram"
MODE_RAW = "raw"
MODE_NONE = "none"

# setsockopt(SOL_RAW, ICMP_FILTER, mask): a set bit blocks that ICMP type.
SOL_RAW = 255
ICMP_FILTER = 1
ONLY_ECHO_REPLIES = (0xFFFFFFFF & ~(1 << icmp.ECHO_REPLY)).to_bytes(4, "little")

#: Room for the largest ICMP message and its IP header.
RECV_SIZE = 65535


def availableMode() -> str:
    """
    Which kind of ICMP socket this process may open: L{MODE_DATAGRAM},
    L{MODE_RAW} or L{MODE_NONE}.
    """
    for kind, mode in ((socket.SOCK_DGRAM, MODE_DATAGRAM), (socket.SOCK_RAW, MODE_RAW)):
        try:
            s = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
        except OSError:
            continue
        s.close()
        return mode
    return MODE_NONE


class ICMPFlow:
    """
    One guest's pings to one destination with one identifier.

    @ivar key: C{(guestIP, guestIdent, dstIP)}: 4-byte addresses and the
        guest's 2-byte identifier.
    @ivar realHost: the dotted address the host pings.
    @ivar natIdent: the 2-byte identifier on the host side (raw mode only;
        in datagram mode the kernel picks it).
    @ivar socket: the flow's own socket in datagram mode, else L{None}.
    """

    __slots__ = ("key", "guestIP", "guestIdent", "dstIP", "realHost", "realHostBytes",
                 "natIdent", "socket", "reader", "lastActive", "closed", "link")

    def __init__(self, key, realHost, now):
        self.key = key
        self.guestIP, self.guestIdent, self.dstIP = key
        self.realHost = realHost
        self.realHostBytes = socket.inet_aton(realHost)
        self.natIdent = None
        self.socket = None
        self.reader = None
        self.lastActive = now
        self.closed = False
        self.link = None


class ICMPNAT(FlowTable):
    """
    The guest's pings to the world, through host ICMP sockets.

    @ivar mode: L{MODE_DATAGRAM}, L{MODE_RAW} or L{MODE_NONE}; found out at
        the first ping unless given.
    """

    prefix = "nat.icmp"

    def __init__(self, reactor, network, hostLoopback=True, ec2MetadataAccess=False,
                 maxFlows=1024, idleTimeout=60.0, mode=None):
        FlowTable.__init__(self, reactor, network, maxFlows, idleTimeout)
        self.hostLoopback = hostLoopback
        self.ec2MetadataAccess = ec2MetadataAccess
        self.mode = mode
        self._raw = None
        self._rawReader = None
        # natIdent -> flow, raw mode
        self._byIdent = {}
        self._nextIdent = 0

    # -- guest to host ------------------------------------------------------

    def icmpReceived(self, packet, icmpType, code, rest):
        """
        An ICMP message from the guest to a destination outside the
        network; only echo requests are carried.

        @param rest: the message from its fifth byte: identifier, sequence
            number, data.
        """
        if icmpType != icmp.ECHO_REQUEST:
            self.counters.increment("drop.nat.icmp.unsupportedType")
            return
        if len(rest) < 4:
            self.counters.complain("nat.icmp.short")
            return
        key = (packet.src, bytes(rest[0:2]), packet.dst)
        flow = self._flowFor(packet, key)
        if flow is None:
            return
        self.counters.increment("nat.icmp.echoRequestsOut")
        try:
            if flow.socket is not None:
                # The kernel writes its own identifier and the checksum.
                flow.socket.send(icmp.build(icmp.ECHO_REQUEST, 0, rest))
            else:
                self._raw.sendto(icmp.build(icmp.ECHO_REQUEST, 0, flow.natIdent + rest[2:]),
                                 (flow.realHost, 0))
        except BlockingIOError:
            self.counters.increment("drop.nat.icmp.hostSocketFull")
        except OSError as e:
            self._failed(flow, e, packet)

    def _open(self, packet, key):
        guestIP, _, dst = key
        if guestIP == ANY:
            self.counters.complain("nat.icmp.badAddress", socket.inet_ntoa(dst))
            return None
        where = hostDestination(self.network.config, dst, self.hostLoopback,
                                self.ec2MetadataAccess)
        if where.__class__ is Refused:
            self.counters.increment("drop.nat.icmp." + where.reason)
            if where.icmpCode is not None:
                self.network.sendICMPError(packet, icmp.DEST_UNREACHABLE, where.icmpCode)
            return None
        if self.mode is None:
            self.mode = availableMode()
        if self.mode == MODE_DATAGRAM and not self._descriptorRoom():
            return None
        flow = ICMPFlow(key, where, self.reactor.seconds())
        try:
            if self.mode == MODE_DATAGRAM:
                self._openDatagram(flow)
            elif self.mode == MODE_RAW:
                self._openRaw(flow)
            else:
                self.counters.complain(
                    "nat.icmp.noSocket",
                    "cannot open an ICMP socket: allow this group in "
                    "net.ipv4.ping_group_range, or give the process CAP_NET_RAW")
                return None
        except OSError as e:
            self.counters.complain("nat.icmp.hostSocket", f"{where}: {e}")
            code = unreachableCode(e.errno)
            if code is not None:
                self.network.sendICMPError(packet, icmp.DEST_UNREACHABLE, code)
            return None
        self._addFlow(flow)
        if flow.reader is not None:
            self.reactor.addReader(flow.reader)
        return flow

    def _openDatagram(self, flow):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        try:
            sock.setblocking(False)
            if flow.realHost == LOOPBACK:
                sock.bind((LOOPBACK, 0))
            sock.connect((flow.realHost, 0))
        except OSError:
            sock.close()
            raise
        flow.socket = sock
        flow.reader = SocketReader(self.reactor, sock, lambda: self._readDatagram(flow), "gvtap-nat-icmp")

    def _openRaw(self, flow):
        if self._raw is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            try:
                sock.setblocking(False)
                sock.setsockopt(SOL_RAW, ICMP_FILTER, ONLY_ECHO_REPLIES)
            except OSError:
                sock.close()
                raise
            self._raw = sock
            self._rawReader = SocketReader(self.reactor, sock, self._readRaw, "gvtap-nat-icmp-raw")
            self.reactor.addReader(self._rawReader)
        byIdent = self._byIdent
        if len(byIdent) >= 0xFFFF:
            # Cannot happen with a sane maxFlows; never loop forever.
            raise OSError(errno.EAGAIN, "no free ICMP identifier")
        ident = self._nextIdent
        while True:
            ident = (ident % 0xFFFF) + 1
            natIdent = ident.to_bytes(2, "big")
            if natIdent not in byIdent:
                break
        self._nextIdent = ident
        flow.natIdent = natIdent
        byIdent[natIdent] = flow

    def _failed(self, flow, error, packet=None):
        """
        A host socket reported C{error} for C{flow}: tell the guest if it is
        the network's answer, count it either way.
        """
        code = unreachableCode(error.errno)
        if code is None:
            self.counters.complain("nat.icmp.socketError", f"{flow.realHost}: {error}")
            return
        self.counters.increment("nat.icmp.unreachable")
        if packet is None:
            packet = QuotedPacket(flow.guestIP, flow.dstIP, ipv4.PROTO_ICMP,
                                  bytes((icmp.ECHO_REQUEST, 0, 0, 0)) + flow.guestIdent + b"\0\0")
        self.network.sendICMPError(packet, icmp.DEST_UNREACHABLE, code)

    # -- host to guest ------------------------------------------------------

    def _readDatagram(self, flow):
        """
        Read the echo replies on a flow's own datagram socket: the kernel
        only gives it replies from its destination with its identifier.
        """
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
            if len(message) < 8 or message[0] != icmp.ECHO_REPLY:
                self.counters.increment("drop.nat.icmp.unexpectedReply")
                continue
            self._reply(flow, memoryview(message)[6:])

    def _readRaw(self):
        """
        Read the echo replies that reached the host and pass on those that
        answer one of our flows, from that flow's destination.
        """
        sock = self._raw
        byIdent = self._byIdent
        for _ in range(READ_BATCH):
            if self._raw is not sock:
                return
            try:
                packet = sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                self.counters.complain("nat.icmp.socketError", str(e))
                continue
            if len(packet) < ipv4.MIN_HEADER:
                continue
            headerLength = (packet[0] & 0x0F) * 4
            if len(packet) < headerLength + 8 or packet[headerLength] != icmp.ECHO_REPLY:
                continue
            flow = byIdent.get(packet[headerLength + 4:headerLength + 6])
            if flow is None or packet[12:16] != flow.realHostBytes:
                # Another program's ping, or an answer from the wrong host.
                continue
            message = memoryview(packet)[headerLength:]
            if not verifies(message):
                self.counters.increment("drop.nat.icmp.replyChecksum")
                continue
            self._reply(flow, message[6:])

    def _reply(self, flow, seqAndData):
        """
        Give the guest the echo reply its destination sent, with the guest's
        own identifier back in place.
        """
        flow.lastActive = self.reactor.seconds()
        self._flows.move_to_end(flow.key)
        self.counters.increment("nat.icmp.echoRepliesIn")
        self.network.sendIPv4(flow.dstIP, flow.guestIP, ipv4.PROTO_ICMP,
                              icmp.build(icmp.ECHO_REPLY, 0, flow.guestIdent + bytes(seqAndData)))

    # -- flow table -----------------------------------------------------------

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
        """
        No flow needs the raw socket any more: close it, so that the host's
        echo replies stop waking us up.
        """
        if self._raw is not None:
            self.reactor.removeReader(self._rawReader)
            self._raw.close()
            self._raw = None
            self._rawReader = None
