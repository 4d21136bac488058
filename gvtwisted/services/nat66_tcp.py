"""
TCP over NAT66: the guest's IPv6 connections become host connections, with
the IPv4 NAT's machinery (dial first, then splice; caps and timeouts) and
the IPv6 policy of L{gvtwisted.services.nat66}: C{::fe} is the host's C{::1}.

A refused dial is a RST to the guest; a destination the host cannot reach
(no IPv6 route, unreachable host, dial timeout) is an ICMPv6 destination
unreachable, so that the guest's client gives up at once or tries IPv4.
"""

import socket

from gvtwisted.services.nat66 import MULTICAST, QuotedPacket6, hostDestination6, unreachableCode6
from gvtwisted.services.nat_tcp import TCPNAT
from gvtwisted.wire import icmpv6, ipv6


class TCP66NAT(TCPNAT):
    """
    @ivar network: the L{gvtwisted.stack.ipv6gateway.IPv6Gateway}.
    """

    prefix = "nat66.tcp"

    def __init__(self, reactor, gateway, counters, hostLoopback=True, dialTimeout=30.0,
                 maxDials=512):
        TCPNAT.__init__(self, reactor, gateway, counters, hostLoopback=hostLoopback,
                        dialTimeout=dialTimeout, maxDials=maxDials)

    def _destination(self, localIP):
        return hostDestination6(self.network.config, socket.inet_pton(socket.AF_INET6, localIP),
                                self.hostLoopback)

    def _silent(self, refused):
        return refused is MULTICAST

    def _unreachableCode(self, err):
        code = unreachableCode6(err) if err is not None else None
        return code if code is not None and code != icmpv6.PORT_UNREACHABLE \
            else icmpv6.ADDRESS_UNREACHABLE

    def _unreachable(self, conn, code):
        """
        An ICMPv6 destination unreachable for the guest's SYN, and the
        pending connection dropped without a RST.
        """
        localIP, localPort = conn.localAddr
        remoteIP, remotePort = conn.remoteAddr
        src = socket.inet_pton(socket.AF_INET6, remoteIP)
        dst = socket.inet_pton(socket.AF_INET6, localIP)
        header = (remotePort.to_bytes(2, "big") + localPort.to_bytes(2, "big")
                  + (conn.irs or 0).to_bytes(4, "big"))
        self.network.sendICMPv6Error(QuotedPacket6(src, dst, ipv6.PROTO_TCP, header),
                                     icmpv6.DEST_UNREACHABLE, code)
        conn.abortConnection()

    def stop(self):
        pass
