"""
UDP over NAT66: the IPv6 twin of L{gvtwisted.services.nat_udp}, whose code it
runs with the IPv6 family's pieces (L{gvtwisted.services.nat66.NAT66Flows}).

A flow is (guest address, guest port, destination, destination port) and owns
one C{AF_INET6} host socket connected to the destination, so that only the
destination's datagrams come back, a port unreachable surfaces as
C{ECONNREFUSED}, and a host with no IPv6 route fails the C{connect} at once:
each of those becomes an ICMPv6 destination unreachable to the guest, at once,
instead of a guest waiting for a timeout. The host address C{::fe} stands for
the host's C{::1} (the socket is then bound on C{::1}).
"""

from gvtwisted.services.nat66 import NAT66Flows
from gvtwisted.services.nat_udp import UDPNAT
from gvtwisted.wire import icmpv6


class UDP66NAT(NAT66Flows, UDPNAT):
    """
    The guest's UDP over IPv6 to the world, through host sockets.

    @ivar network: the L{gvtwisted.stack.ipv6gateway.IPv6Gateway}.
    """

    prefix = "nat66.udp"
    anyAddress = "::"
    readerName = "gvtap-nat66-udp"
    recvError = ".socketError"

    def __init__(self, reactor, gateway, hostLoopback=True, maxFlows=4096, idleTimeout=90.0):
        UDPNAT.__init__(self, reactor, gateway, hostLoopback=hostLoopback, maxFlows=maxFlows,
                        idleTimeout=idleTimeout)

    def _badKey(self, key) -> bool:
        """
        Whether C{key} cannot be a flow (then complained about): a port 0
        on either side.
        """
        if key[1] == 0 or key[3] == 0:
            self.counters.complain("nat66.udp.badPort")
            return True
        return False

    def _hostPort(self, host, port) -> str:
        return f"[{host}]:{port}"

    def _destUnreachable(self, packet, code):
        """
        A port unreachable comes from the destination itself (as its host
        would send it); the others from the gateway, the router that could
        not deliver.
        """
        self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, code,
                                     src=packet.dst if code == icmpv6.PORT_UNREACHABLE else None)

    # A failed send is one more socket error here (nat66.udp.socketError),
    # a datagram too big included: NAT66 has always counted it so.
    _sendFailed = UDPNAT._recvFailed
