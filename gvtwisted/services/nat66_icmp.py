"""
ICMPv6 echo over NAT66: the guest's pings to IPv6 destinations go out as real
pings from the host, and only real answers come back (the IPv6 twin of
L{gvtwisted.services.nat_icmp}, whose code it runs with the IPv6 family's
pieces).

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

import socket
import struct

from gvtwisted.services import nat_icmp
from gvtwisted.services.nat66 import NAT66Flows
from gvtwisted.services.nat_icmp import (  # noqa: F401 (MODE_* re-exported)
    MODE_DATAGRAM, MODE_NONE, MODE_RAW, RECV_SIZE, ICMPNAT,
)
from gvtwisted.wire import icmpv6, ipv6

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
    return nat_icmp.availableMode(socket.AF_INET6, socket.IPPROTO_ICMPV6)


class ICMP66NAT(NAT66Flows, ICMPNAT):
    """
    The guest's IPv6 pings to the world.
    """

    prefix = "nat66.icmp"
    readerName = "gvtap-nat66-icmp"
    protocolName = "ICMPv6"
    protocol = socket.IPPROTO_ICMPV6
    echoRequestType = icmpv6.ECHO_REQUEST
    echoReplyType = icmpv6.ECHO_REPLY
    rawFilter = (socket.IPPROTO_ICMPV6, ICMP6_FILTER, ONLY_ECHO_REPLIES)

    def __init__(self, reactor, gateway, hostLoopback=True, maxFlows=1024, idleTimeout=60.0,
                 mode=None):
        ICMPNAT.__init__(self, reactor, gateway, hostLoopback=hostLoopback, maxFlows=maxFlows,
                         idleTimeout=idleTimeout, mode=mode)

    def _echoRequest(self, rest):
        """
        The kernel writes ICMPv6 checksums, on raw sockets too: the request
        goes with a zero one.
        """
        return bytes((icmpv6.ECHO_REQUEST, 0, 0, 0)) + bytes(rest)

    def _badKey(self, key) -> bool:
        """
        Every key makes a flow: NAT66 has no address check of its own here.
        """
        return False

    def _sendFailed(self, flow, error, packet):
        """
        The error about a failed send quotes the echo request rebuilt from
        the flow (sequence 0), as for a failed read, not the guest's own:
        as NAT66 always has.
        """
        self._failed(flow, error)

    def _rawEcho(self, sock):
        """
        Read one message of the raw socket, which comes without an IP
        header (its source from C{recvfrom}, perhaps with a scope): the flow
        it answers and its sequence and data, or L{None}.
        """
        message, address = sock.recvfrom(RECV_SIZE)
        if len(message) < 8 or message[0] != icmpv6.ECHO_REPLY:
            return None
        flow = self._byIdent.get(message[4:6])
        source = address[0].split("%")[0]
        if flow is None or socket.inet_pton(socket.AF_INET6, source) != flow.realHostBytes:
            # Another program's ping, or an answer from the wrong host.
            return None
        return flow, memoryview(message)[6:]

    def _echoReply(self, flow, rest):
        self.network.sendIPv6(flow.dstIP, flow.guestIP, ipv6.PROTO_ICMPV6,
                              icmpv6.build(flow.dstIP, flow.guestIP, icmpv6.ECHO_REPLY, 0, rest))
