"""
UDP over NAT66: the IPv6 twin of L{gvtwisted.services.nat_udp}, on the same
flow table and socket reader.

A flow is (guest address, guest port, destination, destination port) and owns
one C{AF_INET6} host socket connected to the destination, so that only the
destination's datagrams come back, a port unreachable surfaces as
C{ECONNREFUSED}, and a host with no IPv6 route fails the C{connect} at once:
each of those becomes an ICMPv6 destination unreachable to the guest, at once,
instead of a guest waiting for a timeout. The host address C{::fe} stands for
the host's C{::1} (the socket is then bound on C{::1}).
"""

import socket

from gvtwisted.services.nat66 import (
    LOOPBACK6, QuotedPacket6, hostDestination6, unreachableCode6,
)
from gvtwisted.services.nat_policy import Refused
from gvtwisted.services.nat_udp import READ_BATCH, FlowTable, SocketReader, UDPFlow
from gvtwisted.wire import icmpv6, ipv6, udp


class UDP66NAT(FlowTable):
    """
    The guest's UDP over IPv6 to the world, through host sockets.

    @ivar network: the L{gvtwisted.stack.ipv6gateway.IPv6Gateway}.
    """

    prefix = "nat66.udp"

    def __init__(self, reactor, gateway, hostLoopback=True, maxFlows=4096, idleTimeout=90.0):
        FlowTable.__init__(self, reactor, gateway, maxFlows, idleTimeout)
        self.hostLoopback = hostLoopback

    def udpReceived(self, packet, srcPort, dstPort, data):
        """
        A datagram (checksum verified) for a destination off the link.
        """
        key = (packet.src, srcPort, packet.dst, dstPort)
        flow = self._flowFor(packet, key)
        if flow is None:
            return
        self.counters.increment("nat66.udp.datagramsOut")
        try:
            flow.socket.send(data)
        except BlockingIOError:
            self.counters.increment("drop.nat66.udp.hostSocketFull")
        except OSError as e:
            self._failed(flow, e)

    def _open(self, packet, key):
        guestIP, srcPort, dst, dstPort = key
        if srcPort == 0 or dstPort == 0:
            self.counters.complain("nat66.udp.badPort")
            return None
        where = hostDestination6(self.network.config, dst, self.hostLoopback)
        if where.__class__ is Refused:
            self.counters.increment("drop.nat66.udp." + where.reason)
            if where.icmpCode is not None:
                self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, where.icmpCode)
            return None
        if not self._descriptorRoom():
            return None
        sock = None
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((LOOPBACK6 if where == LOOPBACK6 else "::", 0))
            sock.connect((where, dstPort))
        except OSError as e:
            if sock is not None:
                sock.close()
            self.counters.complain("nat66.udp.hostSocket", f"[{where}]:{dstPort}: {e}")
            code = unreachableCode6(e.errno)
            if code is not None:
                self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, code,
                                             src=self._errorSource(code, dst))
            return None
        flow = UDPFlow(key, where, sock, self.reactor.seconds())
        flow.reader = SocketReader(self.reactor, sock, lambda: self._readable(flow),
                                   "gvtap-nat66-udp")
        self._addFlow(flow)
        self.reactor.addReader(flow.reader)
        return flow

    def _errorSource(self, code, dst):
        """
        A port unreachable comes from the destination itself (as its host
        would send it); the others from the gateway, the router that could
        not deliver.
        """
        return dst if code == icmpv6.PORT_UNREACHABLE else None

    def _readable(self, flow):
        recv = flow.socket.recv
        for _ in range(READ_BATCH):
            if flow.closed:
                return
            try:
                data = recv(65535)
            except BlockingIOError:
                return
            except OSError as e:
                self._failed(flow, e)
                continue
            flow.lastActive = self.reactor.seconds()
            self._flows.move_to_end(flow.key)
            self.counters.increment("nat66.udp.datagramsIn")
            self.network.sendUDP(flow.dstIP, flow.dstPort, flow.guestIP, flow.guestPort, data)

    def _failed(self, flow, error):
        code = unreachableCode6(error.errno)
        if code is None:
            self.counters.complain("nat66.udp.socketError", f"[{flow.realHost}]:{flow.dstPort}: {error}")
            return
        self.counters.increment("nat66.udp.unreachable")
        quoted = QuotedPacket6(flow.guestIP, flow.dstIP, ipv6.PROTO_UDP,
                               udp.HEADER.pack(flow.guestPort, flow.dstPort, udp.HEADER_LEN, 0))
        self.network.sendICMPv6Error(quoted, icmpv6.DEST_UNREACHABLE, code,
                                     src=self._errorSource(code, flow.dstIP))

    def _closeFlow(self, flow):
        if flow.closed:
            return
        flow.closed = True
        self._unlink(flow)
        if flow.reader is not None:
            self.reactor.removeReader(flow.reader)
            flow.reader = None
        flow.socket.close()
