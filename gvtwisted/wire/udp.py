"""
UDP headers (RFC 768).
"""

import struct

from gvtwisted.wire.checksum import internetChecksum, onesSum, pseudoHeaderSum

HEADER = struct.Struct("!HHHH")
HEADER_LEN = 8


def parse(payload):
    """
    View a UDP datagram: C{(srcPort, dstPort, checksum, data)}.

    The length field must fit the IP payload; bytes beyond it are ignored.

    @raise ValueError: if short or the length field is wrong.
    """
    if len(payload) < HEADER_LEN:
        raise ValueError("udp.short")
    srcPort, dstPort, length, csum = HEADER.unpack_from(payload, 0)
    if length < HEADER_LEN or length > len(payload):
        raise ValueError("udp.length")
    return srcPort, dstPort, csum, payload[HEADER_LEN:length]


def checksumOK(src: bytes, dst: bytes, datagram) -> bool:
    """
    Whether a whole UDP datagram (header included) sums correctly; a zero
    checksum field means the sender did not compute one (allowed over IPv4).
    """
    if datagram[6] == 0 and datagram[7] == 0:
        return True
    return onesSum(datagram, pseudoHeaderSum(src, dst, 17, len(datagram))) == 0xFFFF


def build(src: bytes, dst: bytes, srcPort: int, dstPort: int, data: bytes) -> bytes:
    """
    A UDP datagram with its checksum over the pseudo header.
    """
    length = HEADER_LEN + len(data)
    header = HEADER.pack(srcPort, dstPort, length, 0)
    csum = internetChecksum(header + data if len(data) < 2048 else b"".join((header, data)),
                            pseudoHeaderSum(src, dst, 17, length))
    if csum == 0:
        csum = 0xFFFF
    return HEADER.pack(srcPort, dstPort, length, csum) + data
