"""
Ethernet II headers: 6-byte destination, 6-byte source, 2-byte type.

Frames arrive without FCS. A frame shorter than the 14-byte header is malformed.
"""

import string
import struct

HEADER = struct.Struct("!6s6sH")
HEADER_LEN = 14

TYPE_IPV4 = 0x0800
TYPE_ARP = 0x0806
TYPE_IPV6 = 0x86DD
TYPE_VLAN = 0x8100

BROADCAST = b"\xff" * 6


def parseMAC(text: str) -> bytes:
    """
    C{"5a:94:ef:e4:0c:ee"} (or with dashes) to 6 bytes.

    @raise ValueError: if C{text} is not six hex octets.
    """
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(
        1 <= len(p) <= 2 and all(c in string.hexdigits for c in p) for p in parts
    ):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def formatMAC(mac: bytes) -> str:
    """
    6 bytes to the lower-case colon form.
    """
    return ":".join(f"{b:02x}" for b in mac)


def isMulticast(mac: bytes) -> bool:
    """
    Group addresses (broadcast included) have the low bit of the first octet set.
    """
    return bool(mac[0] & 1)


def build(dst: bytes, src: bytes, etherType: int, payload: bytes) -> bytes:
    """
    An Ethernet frame, no padding (the guest's kernel does not need it).
    """
    return HEADER.pack(dst, src, etherType) + payload
