"""
Where the guest's traffic for an address outside the network may go on the
host: one policy for the TCP, UDP and ICMP NATs.

The host address (.254) is the host's 127.0.0.1 unless host loopback is off
(more such virtual addresses come from the NAT table, C{NetworkConfig.nat});
169.254.0.0/16 (cloud metadata) only with C{ec2MetadataAccess}; broadcast,
multicast, martians and other guests' addresses never.
"""

import socket

from gvtwisted.wire import icmp

LOOPBACK = "127.0.0.1"
LIMITED_BROADCAST = b"\xff\xff\xff\xff"


class Refused:
    """
    Why a destination may not be reached: C{reason} is a counter suffix,
    C{icmpCode} the destination-unreachable code to answer with, or L{None} to
    drop silently (broadcast and multicast: nobody expects an answer).
    """

    __slots__ = ("reason", "icmpCode")

    def __init__(self, reason, icmpCode=None):
        self.reason = reason
        self.icmpCode = icmpCode


HOST_LOOPBACK_DISABLED = Refused("hostLoopbackDisabled", icmp.ADMIN_PROHIBITED)
LINK_LOCAL = Refused("linkLocal", icmp.ADMIN_PROHIBITED)
BROADCAST = Refused("broadcast")
MULTICAST = Refused("multicast")
MARTIAN = Refused("martian")
IN_SUBNET = Refused("inSubnet")


def hostDestination(config, dst: bytes, hostLoopback: bool, ec2MetadataAccess: bool):
    """
    Where on the host a guest's packet to C{dst} should go.

    @param config: the network's L{gvtwisted.config.NetworkConfig}.
    @param dst: the 4-byte destination the guest used.
    @return: the dotted address a host socket should send to, or a
        L{Refused} saying why not.
    """
    target = config.nat.get(dst)
    if target is not None:
        # gvproxy's NAT table (its YAML's stack.nat): by default only the host
        # address, to the host's 127.0.0.1; --no-host-loopback refuses that one.
        if dst == config.hostIPBytes and not hostLoopback:
            return HOST_LOOPBACK_DISABLED
        return target
    first = dst[0]
    if dst == LIMITED_BROADCAST or dst == config.broadcastIPBytes:
        return BROADCAST
    if 224 <= first <= 239:
        return MULTICAST
    if first == 0 or first == 127 or first >= 240:
        # "This network", the host's own loopback (which the guest must only
        # reach through the host address) and reserved space.
        return MARTIAN
    if first == 169 and dst[1] == 254:
        return socket.inet_ntoa(dst) if ec2MetadataAccess else LINK_LOCAL
    if config.inSubnet(dst):
        # Other guests are reached through the switch, never the host.
        return IN_SUBNET
    return socket.inet_ntoa(dst)
