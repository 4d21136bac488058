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

from gvtwisted.services.nat_udp import ANY, READ_BATCH, FlowTable, SocketReader
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


def availableMode(family=socket.AF_INET, protocol=socket.IPPROTO_ICMP) -> str:
    """
    Which kind of ICMP socket this process may open: L{MODE_DATAGRAM},
    L{MODE_RAW} or L{MODE_NONE} (of another family and its ICMP, if given).
    """
    for kind, mode in ((socket.SOCK_DGRAM, MODE_DATAGRAM), (socket.SOCK_RAW, MODE_RAW)):
        try:
            s = socket.socket(family, kind, protocol)
        except OSError:
            continue
        s.close()
        return mode
    return MODE_NONE


class ICMPFlow:
    """
    One guest's pings to one destination with one identifier.

    @ivar key: C{(guestIP, guestIdent, dstIP)}: the family's addresses
        (4 or 16 bytes) and the guest's 2-byte identifier.
    @ivar realHost: the text address the host pings.
    @ivar realHostBytes: the same, packed, to compare replies' sources with.
    @ivar natIdent: the 2-byte identifier on the host side (raw mode only;
        in datagram mode the kernel picks it).
    @ivar socket: the flow's own socket in datagram mode, else L{None}.
    """

    __slots__ = ("key", "guestIP", "guestIdent", "dstIP", "realHost", "realHostBytes",
                 "natIdent", "socket", "reader", "lastActive", "closed", "link")

    def __init__(self, key, realHost, realHostBytes, now):
        self.key = key
        self.guestIP, self.guestIdent, self.dstIP = key
        self.realHost = realHost
        self.realHostBytes = realHostBytes
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
    #: The name the reactor logs a datagram socket's reader under (and,
    #: with "-raw", the raw socket's).
    readerName = "gvtap-nat-icmp"
    #: The family's ICMP: its name in log lines, its protocol number (the
    #: sockets' and the IP header's) and its echo types.
    protocolName = "ICMP"
    protocol = socket.IPPROTO_ICMP
    echoRequestType = icmp.ECHO_REQUEST
    echoReplyType = icmp.ECHO_REPLY
    #: The C{setsockopt} arguments that let only echo replies into the raw
    #: socket.
    rawFilter = (SOL_RAW, ICMP_FILTER, ONLY_ECHO_REPLIES)

    def __init__(self, reactor, network, hostLoopback=True, ec2MetadataAccess=False,
                 maxFlows=1024, idleTimeout=60.0, mode=None):
        FlowTable.__init__(self, reactor, network, maxFlows, idleTimeout, hostLoopback,
                           ec2MetadataAccess)
        self.mode = mode
        self._raw = None
        self._rawReader = None
        # natIdent -> flow, raw mode
        self._byIdent = {}
        self._nextIdent = 0
        # Counted for every echo: the names are made once.
        self._requestsOut = self.prefix + ".echoRequestsOut"
        self._repliesIn = self.prefix + ".echoRepliesIn"

    # -- guest to host ------------------------------------------------------

    def icmpReceived(self, packet, icmpType, code, rest):
        """
        An ICMP message from the guest to a destination outside the
        network; only echo requests are carried.

        @param rest: the message from its fifth byte: identifier, sequence
            number, data.
        """
        if icmpType != self.echoRequestType:
            self.counters.increment("drop." + self.prefix + ".unsupportedType")
            return
        if len(rest) < 4:
            self.counters.complain(self.prefix + ".short")
            return
        key = (packet.src, bytes(rest[0:2]), packet.dst)
        flow = self._flowFor(packet, key)
        if flow is None:
            return
        self.counters.increment(self._requestsOut)
        try:
            if flow.socket is not None:
                # The kernel writes its own identifier and the checksum.
                flow.socket.send(self._echoRequest(rest))
            else:
                self._raw.sendto(self._echoRequest(flow.natIdent + rest[2:]),
                                 (flow.realHost, 0))
        except BlockingIOError:
            self.counters.increment("drop." + self.prefix + ".hostSocketFull")
        except OSError as e:
            self._sendFailed(flow, e, packet)

    def _echoRequest(self, rest):
        """
        The echo request to send with C{rest} (identifier, sequence, data);
        an ICMP checksum is ours to write.
        """
        return icmp.build(icmp.ECHO_REQUEST, 0, rest)

    def _badKey(self, key) -> bool:
        """
        Whether C{key} cannot be a flow (then complained about): a guest
        without an address.
        """
        if key[0] == ANY:
            self.counters.complain(self.prefix + ".badAddress", socket.inet_ntoa(key[2]))
            return True
        return False

    def _open(self, packet, key):
        if self._badKey(key):
            return None
        where = self._route(packet, key[2])
        if where is None:
            return None
        if self.mode is None:
            self.mode = availableMode(self.family, self.protocol)
        if self.mode == MODE_DATAGRAM and not self._descriptorRoom():
            return None
        flow = ICMPFlow(key, where, socket.inet_pton(self.family, where), self.reactor.seconds())
        try:
            if self.mode == MODE_DATAGRAM:
                self._openDatagram(flow)
            elif self.mode == MODE_RAW:
                self._openRaw(flow)
            else:
                self.counters.complain(
                    self.prefix + ".noSocket",
                    f"cannot open an {self.protocolName} socket: allow this group in "
                    "net.ipv4.ping_group_range, or give the process CAP_NET_RAW")
                return None
        except OSError as e:
            self._hostSocketFailed(packet, e, where)
            return None
        self._addFlow(flow)
        if flow.reader is not None:
            self.reactor.addReader(flow.reader)
        return flow

    def _openDatagram(self, flow):
        sock = socket.socket(self.family, socket.SOCK_DGRAM, self.protocol)
        try:
            sock.setblocking(False)
            if flow.realHost == self.loopback:
                sock.bind((self.loopback, 0))
            sock.connect((flow.realHost, 0))
        except OSError:
            sock.close()
            raise
        flow.socket = sock
        flow.reader = SocketReader(self.reactor, sock, lambda: self._readDatagram(flow),
                                   self.readerName)

    def _openRaw(self, flow):
        if self._raw is None:
            sock = socket.socket(self.family, socket.SOCK_RAW, self.protocol)
            try:
                sock.setblocking(False)
                sock.setsockopt(*self.rawFilter)
            except OSError:
                sock.close()
                raise
            self._raw = sock
            self._rawReader = SocketReader(self.reactor, sock, self._readRaw,
                                           self.readerName + "-raw")
            self.reactor.addReader(self._rawReader)
        byIdent = self._byIdent
        if len(byIdent) >= 0xFFFF:
            # Cannot happen with a sane maxFlows; never loop forever.
            raise OSError(errno.EAGAIN, f"no free {self.protocolName} identifier")
        ident = self._nextIdent
        while True:
            ident = (ident % 0xFFFF) + 1
            natIdent = ident.to_bytes(2, "big")
            if natIdent not in byIdent:
                break
        self._nextIdent = ident
        flow.natIdent = natIdent
        byIdent[natIdent] = flow

    def _sendFailed(self, flow, error, packet):
        """
        Sending the guest's echo request C{packet} failed: the error, if
        any, quotes it.
        """
        self._failed(flow, error, packet)

    def _failed(self, flow, error, packet=None):
        """
        A host socket reported C{error} for C{flow}: tell the guest if it is
        the network's answer, count it either way.
        """
        code = self._unreachableCode(error.errno)
        if code is None:
            self.counters.complain(self.prefix + ".socketError", f"{flow.realHost}: {error}")
            return
        self.counters.increment(self.prefix + ".unreachable")
        if packet is None:
            packet = self.quotedPacket(
                flow.guestIP, flow.dstIP, self.protocol,
                bytes((self.echoRequestType, 0, 0, 0)) + flow.guestIdent + b"\0\0")
        self._destUnreachable(packet, code)

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
            if len(message) < 8 or message[0] != self.echoReplyType:
                self.counters.increment("drop." + self.prefix + ".unexpectedReply")
                continue
            self._reply(flow, memoryview(message)[6:])

    def _readRaw(self):
        """
        Read the echo replies that reached the host and pass on those that
        answer one of our flows, from that flow's destination.
        """
        sock = self._raw
        for _ in range(READ_BATCH):
            if self._raw is not sock:
                return
            try:
                echo = self._rawEcho(sock)
            except BlockingIOError:
                return
            except OSError as e:
                self.counters.complain(self.prefix + ".socketError", str(e))
                continue
            if echo is not None:
                self._reply(*echo)

    def _rawEcho(self, sock):
        """
        Read one packet of the raw socket (with its IPv4 header): the flow
        it answers and its sequence and data, or L{None} if it is no echo
        reply to a flow from that flow's destination (another program's
        ping, or an answer from the wrong host) or is damaged.
        """
        packet = sock.recv(RECV_SIZE)
        if len(packet) < ipv4.MIN_HEADER:
            return None
        headerLength = (packet[0] & 0x0F) * 4
        if len(packet) < headerLength + 8 or packet[headerLength] != icmp.ECHO_REPLY:
            return None
        flow = self._byIdent.get(packet[headerLength + 4:headerLength + 6])
        if flow is None or packet[12:16] != flow.realHostBytes:
            return None
        message = memoryview(packet)[headerLength:]
        if not verifies(message):
            self.counters.increment("drop." + self.prefix + ".replyChecksum")
            return None
        return flow, message[6:]

    def _reply(self, flow, seqAndData):
        """
        Give the guest the echo reply its destination sent, with the guest's
        own identifier back in place.
        """
        flow.lastActive = self.reactor.seconds()
        self._flows.move_to_end(flow.key)
        self.counters.increment(self._repliesIn)
        self._echoReply(flow, flow.guestIdent + bytes(seqAndData))

    def _echoReply(self, flow, rest):
        """
        Send the guest the echo reply with C{rest} (identifier, sequence,
        data), from the destination it pinged.
        """
        self.network.sendIPv4(flow.dstIP, flow.guestIP, ipv4.PROTO_ICMP,
                              icmp.build(icmp.ECHO_REPLY, 0, rest))

    # -- flow table -----------------------------------------------------------

    def _closeFlow(self, flow):
        FlowTable._closeFlow(self, flow)
        natIdent = flow.natIdent
        if natIdent is not None and self._byIdent.get(natIdent) is flow:
            del self._byIdent[natIdent]

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
