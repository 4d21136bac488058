"""
ICMP for IPv4 (RFC 792): echo, and the errors we send to the guest.
"""

import struct

from gvtwisted.wire.checksum import internetChecksum, verifies

HEADER = struct.Struct("!BBHHH")

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11

# Codes of DEST_UNREACHABLE
NET_UNREACHABLE = 0
HOST_UNREACHABLE = 1
PROTOCOL_UNREACHABLE = 2
PORT_UNREACHABLE = 3
FRAG_NEEDED = 4
ADMIN_PROHIBITED = 13


def parse(payload):
    """
    C{(type, code, rest)} of an ICMP message whose checksum is right; for echo,
    C{rest} starts with identifier and sequence.

    @raise ValueError: if short or its checksum is wrong.
    """
    if len(payload) < 8:
        raise ValueError("icmp.short")
    if not verifies(payload):
        raise ValueError("icmp.checksum")
    return payload[0], payload[1], payload[4:]


def build(icmpType: int, code: int, rest: bytes) -> bytes:
    """
    An ICMP message: type, code, checksum, then C{rest} (4 bytes of header
    fields followed by data).
    """
    body = bytes((icmpType, code, 0, 0)) + bytes(rest)
    csum = internetChecksum(body)
    return body[:2] + csum.to_bytes(2, "big") + body[4:]


def unreachable(code: int, originalHeader: bytes, originalPayload: bytes, nextMTU: int = 0) -> bytes:
    """
    A destination-unreachable message quoting the offending packet's header and
    the first 8 bytes of its payload, as RFC 792 asks.
    """
    return build(DEST_UNREACHABLE, code,
                 nextMTU.to_bytes(4, "big") + bytes(originalHeader) + bytes(originalPayload[:8]))
