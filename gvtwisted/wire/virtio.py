"""
The virtio-net header (C{struct virtio_net_hdr}, 10 bytes) that a TAP device
opened with C{IFF_VNET_HDR} puts before every frame, and that gvtap's own
guest link carries once offload is negotiated.

It lets a frame be larger than the MTU (a TCP super-segment that the far end
cuts into C{gsoSize} pieces) and leave its transport checksum partial (the
pseudo-header sum only, completed by whoever holds the frame last). Fields,
in the TAP's native byte order (little-endian on every platform gvtap runs
on; the legacy virtio header is guest-endian):

    flags (u8) gsoType (u8) hdrLen (u16) gsoSize (u16) csumStart (u16) csumOffset (u16)

The offsets count from the start of the Ethernet frame that follows.
"""

import struct
from collections import namedtuple

from gvtwisted.wire.checksum import fold

HEADER = struct.Struct("<BBHHHH")
SIZE = HEADER.size
# csum_start and csum_offset alone, read from the start of a header.
CHECKSUM_FIELDS = struct.Struct("<6xHH")

F_NEEDS_CSUM = 1
F_DATA_VALID = 2

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80

# A frame whose checksums are all complete: nothing for the far end to do.
PLAIN = bytes(SIZE)


class VirtioHeaderError(ValueError):
    """
    A virtio-net header that no valid frame can carry.
    """


VirtioNetHeader = namedtuple(
    "VirtioNetHeader", "flags gsoType hdrLen gsoSize csumStart csumOffset")


def pack(flags=0, gsoType=GSO_NONE, hdrLen=0, gsoSize=0, csumStart=0, csumOffset=0) -> bytes:
    """
    The 10 bytes of a header.
    """
    return HEADER.pack(flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset)


def parse(data, frameLength=None) -> VirtioNetHeader:
    """
    Read the header at the start of C{data}.

    @param frameLength: the length of the frame after the header, when known:
        a checksum range that does not fit it, or a GSO type without a
        segment size, is refused.
    @raise VirtioHeaderError: for a short or inconsistent header.
    """
    if len(data) < SIZE:
        raise VirtioHeaderError(f"virtio-net header needs {SIZE} bytes, got {len(data)}")
    header = VirtioNetHeader(*HEADER.unpack_from(data))
    gso = header.gsoType & ~GSO_ECN
    if gso not in (GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6):
        raise VirtioHeaderError(f"unknown gso_type {header.gsoType}")
    if gso != GSO_NONE and not header.gsoSize:
        raise VirtioHeaderError("gso_type without gso_size")
    if header.flags & F_NEEDS_CSUM and frameLength is not None:
        if header.csumStart + header.csumOffset + 2 > frameLength:
            raise VirtioHeaderError(
                f"checksum at {header.csumStart}+{header.csumOffset} "
                f"outside a {frameLength}-byte frame")
    return header


def completeChecksum(frame, csumStart: int, csumOffset: int) -> bytearray:
    """
    Finish a partial checksum as a NIC would: the one's complement sum of
    everything from C{csumStart} to the end (the checksum field holding the
    pseudo-header's sum), complemented, stored at C{csumStart + csumOffset}.

    @return: a copy of C{frame} with the checksum complete.
    """
    out = bytearray(frame)
    at = csumStart + csumOffset
    total = fold(memoryview(out)[csumStart:])
    value = 0xFFFF - total
    # UDP sends 0 as 0xFFFF (RFC 768); for TCP both mean the same sum.
    out[at:at + 2] = (value or 0xFFFF).to_bytes(2, "big")
    return out


def segmentTCPv4(frame, header: VirtioNetHeader):
    """
    Cut a TCP/IPv4 super-segment into the frames a NIC doing TSO would send:
    C{gsoSize} bytes of payload each, the sequence number advanced, the IPv4
    length and checksum redone, FIN and PSH on the last piece only, CWR on
    the first only, every TCP checksum complete. The IPv4 identification is
    kept (the frames gvtap sends carry 0 with DF set).

    This is the software fallback (and the tests' reference) for what the
    guest kernel does with frames gvtap sends with C{GSO_TCPV4}.

    @param frame: an Ethernet frame (14 bytes, IPv4 without options or with).
    @return: a list of complete Ethernet frames.
    """
    frame = bytes(frame)
    ihl = (frame[14] & 0x0F) * 4
    tcpAt = 14 + ihl
    dataAt = tcpAt + (frame[tcpAt + 12] >> 4) * 4
    payload = frame[dataAt:]
    size = header.gsoSize or len(payload)
    if header.gsoType & ~GSO_ECN == GSO_NONE or len(payload) <= size:
        pieces = [payload]
    else:
        pieces = [payload[i:i + size] for i in range(0, len(payload), size)]
    seq = int.from_bytes(frame[tcpAt + 4:tcpAt + 8], "big")
    flags = frame[tcpAt + 13]
    out = []
    for i, piece in enumerate(pieces):
        head = bytearray(frame[:dataAt])
        last = i == len(pieces) - 1
        pieceFlags = flags
        if not last:
            pieceFlags &= ~0x09  # FIN, PSH
        if i:
            pieceFlags &= ~0x80  # CWR
        head[tcpAt + 13] = pieceFlags
        head[tcpAt + 4:tcpAt + 8] = ((seq + i * size) & 0xFFFFFFFF).to_bytes(4, "big")
        head[16:18] = (ihl + len(head) - tcpAt + len(piece)).to_bytes(2, "big")
        head[24:26] = b"\0\0"
        head[24:26] = (0xFFFF - fold(memoryview(head)[14:tcpAt])).to_bytes(2, "big")
        tcpLength = len(head) - tcpAt + len(piece)
        pseudo = (int.from_bytes(frame[26:34], "big") + 6 + tcpLength) % 0xFFFF
        head[tcpAt + 16:tcpAt + 18] = b"\0\0"
        total = (pseudo + fold(memoryview(head)[tcpAt:]) + fold(piece)) % 0xFFFF
        head[tcpAt + 16:tcpAt + 18] = ((0xFFFF - total) if total else 0).to_bytes(2, "big")
        out.append(bytes(head) + piece)
    return out
