"""
NAT66: the guest's IPv6 traffic for destinations off the link becomes host
sockets, as its IPv4 traffic does (L{gvtwisted.services.nat}).

This module is the policy (where a destination may go on the host) and the
dispatcher that the IPv6 gateway calls for every packet that is not its own;
UDP and ICMPv6 echo have a module each, whose tables are the IPv4 NAT's with
the family's pieces of L{NAT66Flows} in place of IPv4's.

The policy, the IPv6 twin of L{gvtwisted.services.nat_policy}:

  - the host address (C{::fe} of the prefix) is the host's C{::1}, unless host
    loopback is off (administratively prohibited);
  - link-local and multicast destinations are refused: the first is never
    routed, the second has nobody to answer;
  - other addresses of the prefix are guests, reached through the switch and
    never the host; loopback, unspecified, IPv4-mapped, and the
    documentation and discard prefixes are martians;
  - everything else is a host socket to the same address.

A packet whose hop limit would reach 0 at the gateway gets a time exceeded,
as from any router, which is what C{traceroute -6} counts on.
"""

import ipaddress
import socket

from gvtwisted.services.nat_policy import Refused
from gvtwisted.wire import icmpv6, ipv6, udp

LOOPBACK6 = "::1"

HOST_LOOPBACK_DISABLED = Refused("hostLoopbackDisabled", icmpv6.ADMIN_PROHIBITED)
LINK_LOCAL = Refused("linkLocal", icmpv6.BEYOND_SCOPE)
MULTICAST = Refused("multicast")
MARTIAN = Refused("martian", icmpv6.NO_ROUTE)
IN_SUBNET = Refused("inSubnet", icmpv6.ADDRESS_UNREACHABLE)

_MARTIANS = [ipaddress.IPv6Network(n) for n in (
    "::/128", "::1/128", "::ffff:0:0/96", "100::/64", "2001:db8::/32")]


def hostDestination6(config, dst: bytes, hostLoopback: bool):
    """
    Where on the host a guest's packet to C{dst} (16 bytes) should go: the
    text address for a host socket, or a L{Refused}.
    """
    if dst == config.hostIP6Bytes:
        return LOOPBACK6 if hostLoopback else HOST_LOOPBACK_DISABLED
    if ipv6.isMulticast(dst):
        return MULTICAST
    if ipv6.isLinkLocal(dst):
        return LINK_LOCAL
    if config.inSubnet6(dst):
        return IN_SUBNET
    address = ipaddress.IPv6Address(dst)
    if any(address in n for n in _MARTIANS):
        return MARTIAN
    return str(address)


def unreachableCode6(err: int):
    """
    The ICMPv6 destination-unreachable code for a host socket error, or
    L{None} if the error is ours, not the network's.
    """
    import errno

    if err == errno.ECONNREFUSED:
        return icmpv6.PORT_UNREACHABLE
    if err in (errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL):
        return icmpv6.NO_ROUTE
    if err in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return icmpv6.ADDRESS_UNREACHABLE
    if err in (errno.EPERM, errno.EACCES):
        return icmpv6.ADMIN_PROHIBITED
    return None


class QuotedPacket6:
    """
    Stands for a guest packet we no longer hold, for
    C{IPv6Gateway.sendICMPv6Error}: an IPv6 header and the upper-layer header
    an error quotes, rebuilt from what a flow remembers.
    """

    __slots__ = ("src", "dst", "packet")

    def __init__(self, src, dst, proto, upperHeader):
        self.src = src
        self.dst = dst
        self.packet = ipv6.buildHeader(src, dst, proto, len(upperHeader)) + upperHeader


class NAT66Flows:
    """
    What the address family decides in a NAT flow table
    (L{gvtwisted.services.nat_udp.FlowTable}), for IPv6: mixed in before
    the IPv4 table by L{gvtwisted.services.nat66_udp.UDP66NAT} and
    L{gvtwisted.services.nat66_icmp.ICMP66NAT}, so that everything else is
    the IPv4 NAT's own code.
    """

    family = socket.AF_INET6
    loopback = LOOPBACK6
    quotedPacket = QuotedPacket6
    _unreachableCode = staticmethod(unreachableCode6)

    def _destination(self, dst):
        return hostDestination6(self.network.config, dst, self.hostLoopback)

    def _destUnreachable(self, packet, code):
        """
        An ICMPv6 destination unreachable, from the gateway's choice of
        source (L{gvtwisted.stack.ipv6gateway.IPv6Gateway.sendICMPv6Error}).
        """
        self.network.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, code)


class NAT66:
    """
    What the IPv6 gateway hands off-link packets to (its C{nat}).

    @ivar udp: a L{gvtwisted.services.nat66_udp.UDP66NAT} or L{None}.
    @ivar icmp: a L{gvtwisted.services.nat66_icmp.ICMP66NAT} or L{None}.
    @ivar tcp: the L{gvtwisted.stack.tcpdemux6.TCP6Demux} (whose C{nat} is a
        L{gvtwisted.services.nat66_tcp.TCP66NAT}), or L{None}: TCP refused.
    """

    def __init__(self, gateway, udp=None, icmp=None, tcp=None):
        self.gateway = gateway
        self.counters = gateway.counters
        self.udp = udp
        self.icmp = icmp
        self.tcp = tcp

    def ipv6Received(self, packet, srcMAC):
        """
        A packet from a guest to an address that is not the gateway's.
        """
        if packet.hopLimit <= 1:
            self.counters.increment("nat66.hopLimitExceeded")
            self.gateway.sendICMPv6Error(packet, icmpv6.TIME_EXCEEDED, icmpv6.HOP_LIMIT_EXCEEDED,
                                         src=self.gateway.sourceFor(packet.src))
            return
        proto = packet.proto
        if proto == ipv6.PROTO_UDP and self.udp is not None:
            try:
                srcPort, dstPort, _, data = udp.parse(packet.payload)
            except ValueError as e:
                self.counters.complain("nat66." + str(e))
                return
            datagram = packet.payload[:8 + len(data)]
            if self.gateway.verifyChecksums and not ipv6.upperChecksumOK(
                    packet.src, packet.dst, ipv6.PROTO_UDP, datagram):
                self.counters.complain("nat66.udp.checksum")
                return
            self.udp.udpReceived(packet, srcPort, dstPort, data)
        elif proto == ipv6.PROTO_ICMPV6 and self.icmp is not None:
            try:
                icmpType, code, body = icmpv6.parse(packet.src, packet.dst, packet.payload)
            except icmpv6.ICMPv6Error as e:
                self.counters.complain("nat66." + e.reason)
                return
            self.icmp.icmpReceived(packet, icmpType, code, body)
        elif proto == ipv6.PROTO_TCP:
            if self.tcp is not None:
                self.tcp.segmentReceived(packet, False)
            else:
                # No TCP over NAT66: refused at once, so that the guest's
                # client falls back to IPv4 without waiting.
                self.gateway.refuseTCP(packet)
        else:
            self.counters.increment("drop.nat66.unsupportedProtocol")
            self.gateway.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, icmpv6.ADMIN_PROHIBITED)

    def stop(self):
        for part in (self.udp, self.icmp):
            if part is not None:
                part.stop()
