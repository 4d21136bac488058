"""
IPv4 headers (RFC 791): validation of what the guest sends, and building of what
we send back.

Validation is strict because everything after it trusts the header: version 4, a
header length of at least 20 bytes that fits, a total length that fits in the
frame (anything beyond it is Ethernet padding, not payload) and a correct header
checksum.
"""

import struct

from gvtwisted.wire.checksum import internetChecksum

HEADER = struct.Struct("!BBHHHBBH4s4s")
MIN_HEADER = 20

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF


class IPv4Error(ValueError):
    """
    A header that fails validation; C{reason} is a short counter name.
    """

    def __init__(self, reason: str):
        ValueError.__init__(self, reason)
        self.reason = reason


class IPv4Packet:
    """
    A validated view of one IPv4 packet inside a frame.

    @ivar header: the header bytes (options included), for ICMP errors.
    @ivar payload: a memoryview of the payload, padding excluded.
    """

    __slots__ = (
        "src", "dst", "proto", "ttl", "ident", "flagsOffset", "tos",
        "headerLength", "totalLength", "header", "payload",
    )

    @property
    def moreFragments(self) -> bool:
        return bool(self.flagsOffset & FLAG_MF)

    @property
    def fragmentOffset(self) -> int:
        """
        The offset of this fragment's payload, in bytes.
        """
        return (self.flagsOffset & OFFSET_MASK) * 8

    @property
    def isFragment(self) -> bool:
        return bool(self.flagsOffset & (FLAG_MF | OFFSET_MASK))


def headerChecksumOK(header) -> bool:
    """
    Whether an IPv4 header (bytes-like, version 4) carries a correct checksum.

    A correct header's 16-bit words sum to 0xFFFF in ones' complement, that is,
    its value as one big number is 0 modulo 0xFFFF (2**16 is 1 there); version 4
    means the header is not all zeros, the one other such value.
    """
    return not int.from_bytes(header, "big") % 0xFFFF


def parse(frame, offset: int = 14) -> IPv4Packet:
    """
    Validate and view the IPv4 packet at C{offset} of C{frame}.

    @raise IPv4Error: with a reason suitable as a counter name.
    """
    available = len(frame) - offset
    if available < MIN_HEADER:
        raise IPv4Error("ipv4.short")
    (verIhl, tos, totalLength, ident, flagsOffset, ttl, proto, _csum,
     src, dst) = HEADER.unpack_from(frame, offset)
    if verIhl >> 4 != 4:
        raise IPv4Error("ipv4.version")
    headerLength = (verIhl & 0x0F) * 4
    if headerLength < MIN_HEADER:
        raise IPv4Error("ipv4.headerLength")
    if totalLength < headerLength or totalLength > available:
        raise IPv4Error("ipv4.totalLength")
    view = memoryview(frame)
    header = view[offset:offset + headerLength]
    if not headerChecksumOK(header):
        raise IPv4Error("ipv4.checksum")
    p = IPv4Packet()
    p.src = src
    p.dst = dst
    p.proto = proto
    p.ttl = ttl
    p.ident = ident
    p.flagsOffset = flagsOffset
    p.tos = tos
    p.headerLength = headerLength
    p.totalLength = totalLength
    p.header = header
    p.payload = view[offset + headerLength:offset + totalLength]
    return p


def buildHeader(src: bytes, dst: bytes, proto: int, payloadLength: int,
                ident: int = 0, ttl: int = 64, flagsOffset: int = FLAG_DF,
                tos: int = 0) -> bytes:
    """
    A 20-byte header with its checksum.
    """
    header = bytearray(HEADER.pack(0x45, tos, MIN_HEADER + payloadLength, ident,
                                   flagsOffset, ttl, proto, 0, src, dst))
    csum = internetChecksum(header)
    header[10] = csum >> 8
    header[11] = csum & 0xFF
    return bytes(header)


def fragment(src: bytes, dst: bytes, proto: int, payload: bytes, mtu: int,
             ident: int, ttl: int = 64) -> list:
    """
    Split C{payload} into IPv4 packets of at most C{mtu} bytes each.

    Every fragment but the last carries a multiple of 8 payload bytes.
    """
    room = (mtu - MIN_HEADER) & ~7
    if room <= 0:
        raise ValueError(f"MTU {mtu} is too small to fragment into")
    packets = []
    offset = 0
    total = len(payload)
    while offset < total:
        chunk = payload[offset:offset + room]
        more = offset + len(chunk) < total
        flags = (offset // 8) | (FLAG_MF if more else 0)
        packets.append(buildHeader(src, dst, proto, len(chunk), ident, ttl, flags) + bytes(chunk))
        offset += len(chunk)
    return packets
