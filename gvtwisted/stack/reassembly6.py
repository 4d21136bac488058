"""
IPv6 reassembly (RFC 8200 section 4.5): the IPv4 reassembler
(L{gvtwisted.stack.reassembly}) with IPv6's fragment header.

The table, its bounds (datagrams, size, memory, timeout) and its refusal of
overlaps (which RFC 5722 requires for IPv6) are the IPv4 ones; what differs
is read from the fragment header (32-bit identification, offset, M flag) and
the whole packet is rebuilt as an L{ipv6.IPv6Packet} whose extension headers
after the fragment header (destination options, say) are walked again.

The IPv4 module counts under C{ipv4.} names; a small proxy renames them, so
that IPv6 drops are told apart.
"""

from gvtwisted.stack.reassembly import Reassembler
from gvtwisted.wire import ipv6


class _Renamed:
    """
    The counters, with C{ipv4.} in a counter name read as C{ipv6.}.
    """

    def __init__(self, counters):
        self._counters = counters

    def increment(self, name, amount=1):
        self._counters.increment(name.replace("ipv4.", "ipv6.", 1), amount)


class _Fragment:
    """
    What the IPv4 reassembler reads of a fragment, from an IPv6 one.
    """

    __slots__ = ("src", "dst", "proto", "ident", "fragmentOffset", "moreFragments",
                 "payload", "ttl", "tos", "original")

    def __init__(self, packet):
        fragment = packet.fragment
        self.src = packet.src
        self.dst = packet.dst
        self.proto = fragment.nextHeader
        self.ident = fragment.ident
        self.fragmentOffset = fragment.offset
        self.moreFragments = fragment.more
        self.payload = packet.payload
        self.ttl = packet.hopLimit
        self.tos = packet.trafficClass
        self.original = packet


class Reassembler6(Reassembler):
    """
    Collects IPv6 fragments into whole packets.
    """

    def __init__(self, clock, counters, **kwargs):
        Reassembler.__init__(self, clock, _Renamed(counters), **kwargs)
        self._realCounters = counters

    def add(self, packet):
        """
        Take one fragment (an L{ipv6.IPv6Packet} with C{fragment} set).

        @return: the whole packet once complete, else L{None}.
        @raise ipv6.IPv6Error: if the reassembled headers are malformed.
        """
        return Reassembler.add(self, _Fragment(packet))

    def _whole(self, fragment, datagram):
        data = b"".join(piece[2] for piece in datagram.pieces)
        proto, start, extensions, inner = ipv6.walkExtensions(
            fragment.proto, data, 0, len(data))
        if inner is not None:
            # A fragment inside a fragment: nothing legitimate sends that.
            raise ipv6.IPv6Error("ipv6.nestedFragment")
        first = fragment.original
        whole = ipv6.IPv6Packet()
        whole.src = first.src
        whole.dst = first.dst
        whole.proto = proto
        whole.hopLimit = datagram.ttl
        whole.trafficClass = datagram.tos
        whole.flowLabel = first.flowLabel
        whole.extensions = list(first.extensions) + extensions
        whole.fragment = None
        header = ipv6.buildHeader(first.src, first.dst, fragment.proto, len(data),
                                  datagram.ttl, datagram.tos, first.flowLabel)
        whole.packet = memoryview(header + data)
        whole.payload = memoryview(data)[start:]
        return whole
