"""
IPv6 headers (RFC 8200): validation of what the guest sends, the walk over its
extension headers, the fragment header, the pseudo header that upper-layer
checksums cover, and the addresses derived from a MAC (EUI-64, solicited-node
multicast).

Validation is strict for the same reason as IPv4's: everything after it
trusts the result. Version 6, a payload length that fits in the frame (bytes
beyond it are Ethernet padding) and a chain of extension headers that ends
inside the packet. The walk is bounded (L{MAX_EXTENSIONS}) so that a chain of
tiny headers costs a guest no more than a few lookups.

The pseudo header (RFC 8200 section 8.1) is summed by the IPv4 helper of
L{gvtwisted.wire.checksum}: it reads each address as one big integer modulo
0xFFFF, which is the ones' complement sum of its 16-bit words whatever its
length, and a 32-bit upper-layer length is congruent to the sum of its two
halves the same way.
"""

import struct

from gvtwisted.wire.checksum import internetChecksum, onesSum, pseudoHeaderSum as _sum

HEADER = struct.Struct("!IHBB16s16s")
HEADER_LEN = 40
FRAGMENT = struct.Struct("!BBHI")
FRAGMENT_LEN = 8
#: The MTU every IPv6 link must carry (RFC 8200 section 5).
MIN_MTU = 1280

HOP_BY_HOP = 0
PROTO_TCP = 6
PROTO_UDP = 17
ROUTING = 43
FRAGMENT_HEADER = 44
ESP = 50
AUTH = 51
PROTO_ICMPV6 = 58
NO_NEXT_HEADER = 59
DEST_OPTIONS = 60

#: Extension headers walked over (their length byte counts 8-octet units
#: beyond the first 8). AH counts 4-octet units and is not walked: a guest
#: has no security association with us, so it is the upper layer as far as
#: the gateway can tell.
_WALKED = frozenset((HOP_BY_HOP, ROUTING, DEST_OPTIONS))
#: A longer chain from a guest is refused rather than walked.
MAX_EXTENSIONS = 8

UNSPECIFIED = b"\x00" * 16
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
ALL_DHCP_AGENTS = bytes.fromhex("ff020000000000000000000000010002")
_LINK_LOCAL_PREFIX = bytes.fromhex("fe800000000000000000")
_SOLICITED_PREFIX = bytes.fromhex("ff0200000000000000000001ff")


class IPv6Error(ValueError):
    """
    A header that fails validation; C{reason} is a short counter name.
    """

    def __init__(self, reason: str):
        ValueError.__init__(self, reason)
        self.reason = reason


class FragmentInfo:
    """
    The fields of a fragment header.

    @ivar offset: the offset of this fragment's data, in bytes.
    @ivar more: the M flag.
    @ivar ident: the 32-bit identification.
    @ivar nextHeader: the header type of the reassembled fragmentable part.
    """

    __slots__ = ("offset", "more", "ident", "nextHeader")

    def __init__(self, offset, more, ident, nextHeader):
        self.offset = offset
        self.more = more
        self.ident = ident
        self.nextHeader = nextHeader


class IPv6Packet:
    """
    A validated view of one IPv6 packet inside a frame.

    @ivar src: 16-byte source address.
    @ivar dst: 16-byte destination address.
    @ivar proto: the upper-layer protocol after the extension headers (for a
        fragment: the fragment header's next header).
    @ivar hopLimit: the hop limit.
    @ivar trafficClass: the traffic class.
    @ivar flowLabel: the flow label.
    @ivar extensions: the types of the extension headers walked, in order.
    @ivar fragment: a L{FragmentInfo}, or L{None} if the packet is whole.
    @ivar packet: a memoryview of the whole packet, header to the end of the
        payload (padding excluded), for ICMPv6 errors that quote it.
    @ivar payload: a memoryview of the upper-layer data (for a fragment, the
        fragment's data).
    """

    __slots__ = (
        "src", "dst", "proto", "hopLimit", "trafficClass", "flowLabel",
        "extensions", "fragment", "packet", "payload",
    )

    @property
    def isFragment(self) -> bool:
        return self.fragment is not None


def walkExtensions(nextHeader: int, data, offset: int, end: int):
    """
    Walk the extension headers of C{data[offset:end]} starting with type
    C{nextHeader}.

    @return: C{(proto, offset, extensions, fragment)}: the first header type
        that is not a walked extension, where it starts, the types walked,
        and the fragment header's L{FragmentInfo} if the walk stopped at one
        (C{offset} is then just past it).
    @raise IPv6Error: if a header runs past C{end}, the chain is longer
        than L{MAX_EXTENSIONS}, or a hop-by-hop header is not first.
    """
    extensions = []
    fragment = None
    while nextHeader in _WALKED or nextHeader == FRAGMENT_HEADER:
        if len(extensions) >= MAX_EXTENSIONS:
            raise IPv6Error("ipv6.tooManyExtensions")
        if nextHeader == HOP_BY_HOP and extensions:
            raise IPv6Error("ipv6.hopByHopNotFirst")
        if end - offset < 8:
            raise IPv6Error("ipv6.extensionShort")
        extensions.append(nextHeader)
        if nextHeader == FRAGMENT_HEADER:
            following, _, offsetFlags, ident = FRAGMENT.unpack_from(data, offset)
            fragment = FragmentInfo(offsetFlags & 0xFFF8, bool(offsetFlags & 1), ident,
                                    following)
            return following, offset + FRAGMENT_LEN, extensions, fragment
        length = (data[offset + 1] + 1) * 8
        if offset + length > end:
            raise IPv6Error("ipv6.extensionLength")
        nextHeader = data[offset]
        offset += length
    return nextHeader, offset, extensions, fragment


def parse(frame, offset: int = 14) -> IPv6Packet:
    """
    Validate and view the IPv6 packet at C{offset} of C{frame}.

    @raise IPv6Error: with a reason suitable as a counter name.
    """
    available = len(frame) - offset
    if available < HEADER_LEN:
        raise IPv6Error("ipv6.short")
    word, payloadLength, nextHeader, hopLimit, src, dst = HEADER.unpack_from(frame, offset)
    if word >> 28 != 6:
        raise IPv6Error("ipv6.version")
    if payloadLength == 0 and nextHeader == HOP_BY_HOP:
        raise IPv6Error("ipv6.jumbogram")
    end = offset + HEADER_LEN + payloadLength
    if end > len(frame):
        raise IPv6Error("ipv6.payloadLength")
    view = memoryview(frame)
    proto, start, extensions, fragment = walkExtensions(
        nextHeader, view, offset + HEADER_LEN, end)
    p = IPv6Packet()
    p.src = src
    p.dst = dst
    p.proto = proto
    p.hopLimit = hopLimit
    p.trafficClass = (word >> 20) & 0xFF
    p.flowLabel = word & 0xFFFFF
    p.extensions = extensions
    p.fragment = fragment
    p.packet = view[offset:end]
    p.payload = view[start:end]
    return p


def buildHeader(src: bytes, dst: bytes, nextHeader: int, payloadLength: int,
                hopLimit: int = 64, trafficClass: int = 0, flowLabel: int = 0) -> bytes:
    """
    The 40-byte fixed header.
    """
    word = (6 << 28) | ((trafficClass & 0xFF) << 20) | (flowLabel & 0xFFFFF)
    return HEADER.pack(word, payloadLength, nextHeader, hopLimit, src, dst)


def buildFragmentHeader(nextHeader: int, offset: int, more: bool, ident: int) -> bytes:
    """
    An 8-byte fragment header; C{offset} is in bytes and a multiple of 8.
    """
    if offset & 7:
        raise ValueError("fragment offset must be a multiple of 8")
    return FRAGMENT.pack(nextHeader, 0, offset | int(more), ident & 0xFFFFFFFF)


def fragment(src: bytes, dst: bytes, nextHeader: int, payload: bytes, mtu: int,
             ident: int, hopLimit: int = 64) -> list:
    """
    Split C{payload} (the fragmentable part: upper-layer header and data) into
    IPv6 packets of at most C{mtu} bytes, each with a fragment header.
    """
    room = (mtu - HEADER_LEN - FRAGMENT_LEN) & ~7
    if room <= 0:
        raise ValueError(f"MTU {mtu} is too small to fragment into")
    packets = []
    offset = 0
    total = len(payload)
    while offset < total:
        chunk = bytes(payload[offset:offset + room])
        more = offset + len(chunk) < total
        packets.append(
            buildHeader(src, dst, FRAGMENT_HEADER, FRAGMENT_LEN + len(chunk), hopLimit)
            + buildFragmentHeader(nextHeader, offset, more, ident) + chunk)
        offset += len(chunk)
    return packets


def pseudoHeaderSum(src: bytes, dst: bytes, nextHeader: int, length: int) -> int:
    """
    The ones' sum of the IPv6 pseudo header (RFC 8200 section 8.1): both
    addresses, the 32-bit upper-layer length and the next header value.
    """
    return _sum(src, dst, nextHeader, length)


def upperChecksum(src: bytes, dst: bytes, nextHeader: int, data) -> int:
    """
    The checksum field value of an upper-layer message C{data} (its own
    checksum field zero) sent from C{src} to C{dst}.
    """
    csum = internetChecksum(data, pseudoHeaderSum(src, dst, nextHeader, len(data)))
    # UDP over IPv6 must not send 0 (RFC 8200 8.1); 0xFFFF is the same sum.
    return csum or 0xFFFF


def upperChecksumOK(src: bytes, dst: bytes, nextHeader: int, data) -> bool:
    """
    Whether an upper-layer message C{data}, its checksum field included,
    sums correctly. A zero UDP checksum is wrong over IPv6.
    """
    return onesSum(data, pseudoHeaderSum(src, dst, nextHeader, len(data))) == 0xFFFF


# -- addresses --------------------------------------------------------------

def interfaceIdentifier(mac: bytes) -> bytes:
    """
    The modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291
    appendix A): FF:FE in the middle and the universal/local bit flipped.
    """
    return bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def linkLocalFromMAC(mac: bytes) -> bytes:
    """
    The fe80::/64 address that SLAAC derives from C{mac}.
    """
    return _LINK_LOCAL_PREFIX[:8] + interfaceIdentifier(mac)


def solicitedNode(address: bytes) -> bytes:
    """
    The solicited-node multicast address of C{address} (RFC 4291 2.7.1).
    """
    return _SOLICITED_PREFIX + address[13:16]


def multicastMAC(address: bytes) -> bytes:
    """
    The Ethernet address a multicast C{address} is sent to (RFC 2464 7).
    """
    return b"\x33\x33" + address[12:16]


def isMulticast(address: bytes) -> bool:
    return address[0] == 0xFF


def isLinkLocal(address: bytes) -> bool:
    """
    Whether C{address} is in fe80::/10.
    """
    return address[0] == 0xFE and address[1] & 0xC0 == 0x80
