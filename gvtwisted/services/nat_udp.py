"""
UDP NAT: the guest's UDP datagrams to addresses outside the virtual network
leave through ordinary host UDP sockets, and the answers come back to the guest
as if the destination had sent them itself.

A flow is one (guest address, guest port, destination address, destination
port) quadruple, and owns one host socket, bound to an ephemeral port and
connected to the real destination. Connecting does three things for us: the
kernel only hands the socket datagrams from that destination (so nobody else
can inject into the flow), a port-unreachable answer surfaces as
C{ECONNREFUSED} (which becomes an ICMP port unreachable to the guest, so its
C{recv} fails as it would on a real network), and replies need no lookup: the
socket is the flow.

The host sockets are read through a small L{IReadDescriptor} of our own rather
than C{reactor.listenUDP}: Twisted's UDP port logs a line for every port opened
and closed (one per flow) and treats an unexpected socket error such as
C{EHOSTUNREACH} as fatal, with a traceback; here both are counted instead.

The destination 192.168.127.254 (the configured host address) stands for the
host itself: its flows connect to 127.0.0.1, from a socket bound on 127.0.0.1,
unless C{hostLoopback} is off. Link-local 169.254.0.0/16 (cloud metadata
services) is refused unless C{ec2MetadataAccess}; broadcast, multicast and
addresses that are not routable from a host socket are dropped.

Flows are bounded: at most C{maxFlows} (the least recently used is closed to
make room) and each is closed after C{idleTimeout} seconds without a datagram
either way. Timing is not per packet: a flow records when it was last active
and a sweep every C{idleTimeout / 4} seconds closes the idle ones, so the hot
path is a dict lookup, a timestamp and a C{send}.
"""

import errno
import socket
from collections import OrderedDict

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableDescriptor, IReadDescriptor

from gvtwisted.services.nat_policy import (  # noqa: F401 (re-exported)
    BROADCAST, HOST_LOOPBACK_DISABLED, IN_SUBNET, LIMITED_BROADCAST, LINK_LOCAL, LOOPBACK,
    MARTIAN, MULTICAST, Refused, hostDestination,
)
from gvtwisted.wire import icmp, ipv4, udp

#: The largest UDP payload IPv4 can carry: 65535 - 20 (IP) - 8 (UDP).
MAX_DATAGRAM = 65507
#: Datagrams read from one host socket per reactor wake-up, so that one busy
#: flow cannot starve the others.
READ_BATCH = 64

ANY = b"\x00\x00\x00\x00"


@implementer(IReadDescriptor, IHalfCloseableDescriptor)
class SocketReader:
    """
    Lets the reactor tell us when a non-blocking host socket is readable.

    The reading itself is C{onReadable}'s job, so that each user reads the
    way it needs (batches, error mapping) without Twisted's port machinery.
    """

    def __init__(self, reactor, sock, onReadable, name="gvtap-nat"):
        self.reactor = reactor
        self.socket = sock
        self._fd = sock.fileno()
        self._onReadable = onReadable
        self._name = name

    def fileno(self):
        return self._fd if self.socket.fileno() != -1 else -1

    def doRead(self):
        self._onReadable()
        return None

    def readConnectionLost(self, reason):
        """
        The epoll and poll reactors report a socket with a pending error and
        nothing to read (C{EPOLLERR} without C{EPOLLIN}: the C{ECONNREFUSED}
        an ICMP port unreachable leaves on a connected UDP socket) as the
        end of reading, and unregister us. It is no end for a datagram
        socket: read the error, which clears it, and register again.
        """
        if self.socket.fileno() == -1:
            return
        self._onReadable()
        if self.socket.fileno() != -1:
            self.reactor.addReader(self)

    def writeConnectionLost(self, reason):
        pass

    def connectionLost(self, reason):
        # The reactor gives up on us only at shutdown (the NAT's stop closes
        # the sockets) or after a doRead failure, which onReadable does not
        # let happen; nothing to undo.
        pass

    def logPrefix(self):
        return self._name


def unreachableCode(err: int):
    """
    The ICMP destination-unreachable code that tells the guest what a host
    socket error means, or L{None} if the error is ours, not the network's.
    """
    if err == errno.ECONNREFUSED:
        return icmp.PORT_UNREACHABLE
    if err in (errno.ENETUNREACH, errno.ENETDOWN):
        return icmp.NET_UNREACHABLE
    if err in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return icmp.HOST_UNREACHABLE
    if err in (errno.EPERM, errno.EACCES):
        return icmp.ADMIN_PROHIBITED
    return None


class QuotedPacket:
    """
    Stands for a guest packet we no longer hold, for
    C{network.sendICMPError}: the IPv4 header and the first payload bytes that
    an ICMP error quotes, rebuilt from what a flow remembers.
    """

    __slots__ = ("src", "dst", "header", "payload")

    def __init__(self, src, dst, proto, transportHeader):
        self.src = src
        self.dst = dst
        self.header = ipv4.buildHeader(src, dst, proto, len(transportHeader))
        self.payload = transportHeader


class FlowTable:
    """
    What the UDP and ICMP NATs of both families share: a bounded table of
    flows in least recently used order, a periodic sweep that closes idle
    ones, and the steps of opening a flow's host socket.

    What the address family decides is a class attribute or a small method,
    here and in the subclasses, written for IPv4; the NAT66 tables override
    those and nothing else (what both of them override is in
    L{gvtwisted.services.nat66.NAT66Flows}). Subclasses define C{prefix}
    (the counter prefix). A flow is any object with C{key}, C{lastActive},
    C{closed}, C{link}, C{reader} and C{socket} attributes (the last two may
    be L{None}).

    @ivar hostLoopback: whether the host address reaches the host's
        loopback.
    @ivar ec2MetadataAccess: whether 169.254.0.0/16 may be reached (IPv4).
    """

    prefix = "nat"

    #: The family of the host sockets.
    family = socket.AF_INET
    #: The host's loopback address, that the host address stands for.
    loopback = LOOPBACK
    #: Rebuilds a packet of a flow for an error to quote.
    quotedPacket = QuotedPacket
    #: The destination-unreachable code of a host socket error, or L{None}.
    _unreachableCode = staticmethod(unreachableCode)

    def __init__(self, reactor, network, maxFlows, idleTimeout, hostLoopback=True,
                 ec2MetadataAccess=False):
        self.reactor = reactor
        self.network = network
        self.counters = network.counters
        self.maxFlows = maxFlows
        self.idleTimeout = idleTimeout
        self.sweepInterval = idleTimeout / 4.0
        self.hostLoopback = hostLoopback
        self.ec2MetadataAccess = ec2MetadataAccess
        self._flows = OrderedDict()
        self._sweeper = None
        # A gvtwisted.limits.DescriptorBudget, or None for no reserve.
        self.descriptors = None

    # -- what the address family decides --------------------------------------

    def _destination(self, dst):
        """
        Where on the host a guest's packet to C{dst} goes: the text address
        for a host socket, or a L{Refused}.
        """
        return hostDestination(self.network.config, dst, self.hostLoopback,
                               self.ec2MetadataAccess)

    def _destUnreachable(self, packet, code):
        """
        Tell the guest that C{packet} (one of its own, or a L{quotedPacket})
        could not be delivered, with destination-unreachable C{code}.
        """
        self.network.sendICMPError(packet, icmp.DEST_UNREACHABLE, code)

    # -- opening a flow ---------------------------------------------------------

    def _route(self, packet, dst):
        """
        Where the guest's first C{packet} of a flow to C{dst} goes on the
        host (the text address), or L{None} if the policy refuses it: then
        counted, and answered with an unreachable where the policy says so.
        """
        where = self._destination(dst)
        if where.__class__ is Refused:
            self.counters.increment("drop." + self.prefix + "." + where.reason)
            if where.icmpCode is not None:
                self._destUnreachable(packet, where.icmpCode)
            return None
        return where

    def _hostSocketFailed(self, packet, error, where):
        """
        The host socket for the flow that C{packet} opens could not be made
        or connected: complain (C{where} says toward what), and tell the
        guest if C{error} is the network's answer.
        """
        self.counters.complain(self.prefix + ".hostSocket", f"{where}: {error}")
        code = self._unreachableCode(error.errno)
        if code is not None:
            self._destUnreachable(packet, code)

    # -- the table --------------------------------------------------------------

    def flowCount(self) -> int:
        """
        How many flows are open.
        """
        return len(self._flows)

    def _addFlow(self, flow):
        """
        Put a new flow in the table, closing the least recently used ones if
        the table is full, and make sure the sweep runs.
        """
        flows = self._flows
        while flows and len(flows) >= self.maxFlows:
            _, oldest = flows.popitem(last=False)
            self.counters.increment(self.prefix + ".flowsEvicted")
            self._closeFlow(oldest)
        flows[flow.key] = flow
        link = self.network.linkFor(flow.key[0])
        if link is not None:
            # The guest's link frees the flow if it drops for good.
            link.addFlow(flow, self)
        self.counters.increment(self.prefix + ".flowsOpened")
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.sweepInterval, self._sweep)

    def _flowFor(self, packet, key):
        """
        The flow for C{key}, renewed as the most recently used; a new one
        (C{self._open(packet, key)}) if there is none, or L{None} when it
        cannot be opened.
        """
        flow = self._flows.get(key)
        if flow is None:
            return self._open(packet, key)
        flow.lastActive = self.reactor.seconds()
        self._flows.move_to_end(key)
        return flow

    def _removeFlow(self, flow):
        if self._flows.get(flow.key) is flow:
            del self._flows[flow.key]
        self._closeFlow(flow)

    def _descriptorRoom(self) -> bool:
        """
        Whether a flow may open a host socket without eating into the
        descriptors kept for the API and new guest links.
        """
        descriptors = self.descriptors
        if descriptors is None:
            return True
        if descriptors.room() <= 0:
            self.counters.complain(self.prefix + ".noDescriptors")
            return False
        descriptors.took()
        return True

    def releaseFlow(self, flow):
        """
        The guest's link is gone for good: close C{flow} and its host socket.
        """
        self.counters.increment(self.prefix + ".flowsLinkGone")
        self._removeFlow(flow)

    def _unlink(self, flow):
        link = flow.link
        if link is not None:
            flow.link = None
            link.removeFlow(flow)

    def _sweep(self):
        """
        Close the flows idle for longer than the timeout. The table is in
        least recently used order, so the sweep stops at the first live one.
        """
        self._sweeper = None
        flows = self._flows
        deadline = self.reactor.seconds() - self.idleTimeout
        while flows:
            key = next(iter(flows))
            flow = flows[key]
            if flow.lastActive > deadline:
                break
            del flows[key]
            self.counters.increment(self.prefix + ".flowsExpired")
            self._closeFlow(flow)
        if flows:
            self._sweeper = self.reactor.callLater(self.sweepInterval, self._sweep)
        else:
            self._tableEmpty()

    def _closeFlow(self, flow):
        """
        Close C{flow}'s host socket and stop reading it, once.
        """
        if flow.closed:
            return
        flow.closed = True
        self._unlink(flow)
        if flow.reader is not None:
            self.reactor.removeReader(flow.reader)
            flow.reader = None
        if flow.socket is not None:
            flow.socket.close()

    def _tableEmpty(self):
        """
        The last flow is gone; subclasses may release shared resources.
        """

    def stop(self):
        """
        Close every flow and its host socket, and stop the sweep.
        """
        if self._sweeper is not None:
            if self._sweeper.active():
                self._sweeper.cancel()
            self._sweeper = None
        flows = list(self._flows.values())
        self._flows.clear()
        for flow in flows:
            self._closeFlow(flow)
        self._tableEmpty()


class UDPFlow:
    """
    One guest UDP flow and its connected host socket.

    @ivar key: C{(guestIP, guestPort, dstIP, dstPort)}, 4-byte addresses.
    @ivar realHost: the dotted address the host socket is connected to.
    @ivar lastActive: when a datagram last went either way.
    """

    __slots__ = ("key", "guestIP", "guestPort", "dstIP", "dstPort", "realHost",
                 "socket", "reader", "lastActive", "closed", "link")

    def __init__(self, key, realHost, sock, now):
        self.key = key
        self.guestIP, self.guestPort, self.dstIP, self.dstPort = key
        self.realHost = realHost
        self.socket = sock
        self.reader = None
        self.lastActive = now
        self.closed = False
        self.link = None


class UDPNAT(FlowTable):
    """
    The guest's UDP to the world, through host sockets.
    """

    prefix = "nat.udp"
    #: What a flow's host socket is bound to, unless it goes to the loopback.
    anyAddress = "0.0.0.0"
    #: The name the reactor logs a flow's socket reader under.
    readerName = "gvtap-nat-udp"
    #: The complaint, after the prefix, for a receive error that is not the
    #: network's answer.
    recvError = ".recvError"

    def __init__(self, reactor, network, hostLoopback=True, ec2MetadataAccess=False,
                 maxFlows=4096, idleTimeout=90.0):
        FlowTable.__init__(self, reactor, network, maxFlows, idleTimeout, hostLoopback,
                           ec2MetadataAccess)
        # Counted for every datagram: the names are made once.
        self._datagramsOut = self.prefix + ".datagramsOut"
        self._datagramsIn = self.prefix + ".datagramsIn"

    # -- guest to host ------------------------------------------------------

    def udpReceived(self, packet, srcPort, dstPort, data):
        """
        A datagram from the guest for a destination outside the network.

        @param packet: the L{ipv4.IPv4Packet} that carried it.
        @param data: a memoryview of the UDP payload.
        """
        key = (packet.src, srcPort, packet.dst, dstPort)
        flow = self._flowFor(packet, key)
        if flow is None:
            return
        self.counters.increment(self._datagramsOut)
        try:
            flow.socket.send(data)
        except BlockingIOError:
            self.counters.increment("drop." + self.prefix + ".hostSocketFull")
        except OSError as e:
            self._sendFailed(flow, e)

    def _badKey(self, key) -> bool:
        """
        Whether C{key} cannot be a flow (then complained about): a port 0
        on either side, or a guest without an address.
        """
        guestIP, srcPort, dst, dstPort = key
        if guestIP == ANY or srcPort == 0 or dstPort == 0:
            self.counters.complain(self.prefix + ".badAddress",
                                   f"{socket.inet_ntoa(guestIP)}:{srcPort} -> "
                                   f"{socket.inet_ntoa(dst)}:{dstPort}")
            return True
        return False

    def _hostPort(self, host, port) -> str:
        """
        A host socket's address and port, as complaints write them.
        """
        return f"{host}:{port}"

    def _open(self, packet, key):
        """
        Make the flow for a guest's first datagram to a destination, or
        answer why not; L{None} when the datagram is not to be sent.
        """
        if self._badKey(key):
            return None
        dstPort = key[3]
        where = self._route(packet, key[2])
        if where is None or not self._descriptorRoom():
            return None
        sock = None
        try:
            # Out of file descriptors (EMFILE) fails here: counted, not fatal.
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((self.loopback if where == self.loopback else self.anyAddress, 0))
            sock.connect((where, dstPort))
        except OSError as e:
            if sock is not None:
                sock.close()
            self._hostSocketFailed(packet, e, self._hostPort(where, dstPort))
            return None
        flow = UDPFlow(key, where, sock, self.reactor.seconds())
        flow.reader = SocketReader(self.reactor, sock, lambda: self._readable(flow),
                                   self.readerName)
        self._addFlow(flow)
        self.reactor.addReader(flow.reader)
        return flow

    def _sendFailed(self, flow, error):
        """
        A send on C{flow}'s socket failed: a datagram too big is counted,
        the network's answer told to the guest, anything else complained
        about.
        """
        err = error.errno
        if err == errno.EMSGSIZE:
            self.counters.increment("drop." + self.prefix + ".tooBig")
            return
        code = self._unreachableCode(err)
        if code is None:
            self.counters.complain(self.prefix + ".sendError",
                                   f"{self._hostPort(flow.realHost, flow.dstPort)}: "
                                   f"{errno.errorcode.get(err, err)}")
        else:
            self._unreachable(flow, code)

    # -- host to guest ------------------------------------------------------

    def _readable(self, flow):
        """
        Read what the host socket of C{flow} holds and hand it to the guest,
        at most L{READ_BATCH} datagrams at a time.
        """
        recv = flow.socket.recv
        for _ in range(READ_BATCH):
            if flow.closed:
                return
            try:
                data = recv(65535)
            except BlockingIOError:
                return
            except OSError as e:
                self._recvFailed(flow, e)
                continue
            flow.lastActive = self.reactor.seconds()
            self._flows.move_to_end(flow.key)
            self.counters.increment(self._datagramsIn)
            self.network.sendUDP(flow.dstIP, flow.dstPort, flow.guestIP, flow.guestPort, data)

    def _recvFailed(self, flow, error):
        """
        A read of C{flow}'s socket failed: a pending ICMP error from the
        network, reported on the connected socket, is told to the guest;
        anything else is complained about. The socket stays usable.
        """
        code = self._unreachableCode(error.errno)
        if code is None:
            self.counters.complain(self.prefix + self.recvError,
                                   f"{self._hostPort(flow.realHost, flow.dstPort)}: {error}")
        else:
            self._unreachable(flow, code)

    def _unreachable(self, flow, code):
        """
        Tell the guest that its flow's destination is unreachable, quoting
        a datagram of the flow as the error's subject.
        """
        self.counters.increment(self.prefix + ".unreachable")
        # UDP is protocol 17 in IPv4 and IPv6 alike.
        quoted = self.quotedPacket(flow.guestIP, flow.dstIP, ipv4.PROTO_UDP,
                                   udp.HEADER.pack(flow.guestPort, flow.dstPort, udp.HEADER_LEN, 0))
        self._destUnreachable(quoted, code)
