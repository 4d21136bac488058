"""
Sequence space helpers that need no connection: RFC 6528 initial sequence
numbers, the RST answering a segment that matched no connection, and the window
scale a receive buffer needs.

Sequence numbers inside a connection are unwrapped into unbounded integers
relative to the variable they are compared with (C{base + ((wire - base +
HALF) & MASK) - HALF}), so wrap-around only exists at the wire.
"""

import hashlib
import os
import struct

from gvtwisted.wire.tcp import ACK, FIN, RST, SYN, buildSegment

MASK = 0xFFFFFFFF
HALF = 0x80000000

_PORTS = struct.Struct("!HH")
_SECRET = os.urandom(16)


def initialSequenceNumber(
    localIP: bytes, localPort: int, remoteIP: bytes, remotePort: int, now: float
) -> int:
    """
    RFC 6528: ISN = M + F(4-tuple, secret), M a 4 microsecond clock and F a keyed
    hash, so that an off-path attacker cannot guess it and a new incarnation of a
    4-tuple starts above the old one.
    """
    digest = hashlib.blake2s(
        localIP + remoteIP + _PORTS.pack(localPort, remotePort),
        key=_SECRET,
        digest_size=4,
    ).digest()
    return (int.from_bytes(digest, "big") + int(now * 250000)) & MASK


def resetForSegment(localIP: bytes, remoteIP: bytes, seg):
    """
    The RST that answers C{seg}, which arrived from C{remoteIP} for C{localIP} and
    matched no connection (RFC 9293 3.10.7.1), or C{None} if C{seg} is itself a RST
    (a RST is never answered).

    @return: a complete TCP segment from local to remote, or C{None}.
    """
    flags = seg.flags
    if flags & RST:
        return None
    if flags & ACK:
        return buildSegment(
            localIP, remoteIP, seg.dstPort, seg.srcPort, seg.ack, 0, RST, 0
        )
    length = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return buildSegment(
        localIP,
        remoteIP,
        seg.dstPort,
        seg.srcPort,
        0,
        seg.seq + length,
        RST | ACK,
        0,
    )


def wantedShift(bufferSize: int) -> int:
    """
    The smallest window scale shift that lets a window of C{bufferSize} bytes be
    advertised in the 16-bit field (RFC 7323 caps it at 14).
    """
    shift = 0
    while shift < 14 and (bufferSize >> shift) > 0xFFFF:
        shift += 1
    return shift
