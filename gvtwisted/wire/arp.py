"""
ARP for IPv4 over Ethernet (RFC 826): a fixed 28-byte message after the Ethernet
header.
"""

import struct

MESSAGE = struct.Struct("!HHBBH6s4s6s4s")
LENGTH = 28
REQUEST = 1
REPLY = 2


class ARPMessage:
    """
    A parsed ARP message for IPv4 over Ethernet.
    """

    __slots__ = ("op", "senderMAC", "senderIP", "targetMAC", "targetIP")

    def __init__(self, op, senderMAC, senderIP, targetMAC, targetIP):
        self.op = op
        self.senderMAC = senderMAC
        self.senderIP = senderIP
        self.targetMAC = targetMAC
        self.targetIP = targetIP


def parse(data, offset: int = 14) -> ARPMessage:
    """
    Parse the ARP message at C{offset} of a frame.

    @raise ValueError: if it is short or not IPv4-over-Ethernet.
    """
    if len(data) - offset < LENGTH:
        raise ValueError("short ARP message")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = MESSAGE.unpack_from(data, offset)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        raise ValueError("ARP message is not IPv4 over Ethernet")
    if op not in (REQUEST, REPLY):
        raise ValueError(f"unknown ARP operation {op}")
    return ARPMessage(op, sha, spa, tha, tpa)


def build(op: int, senderMAC: bytes, senderIP: bytes, targetMAC: bytes, targetIP: bytes) -> bytes:
    """
    The 28-byte ARP message (without the Ethernet header).
    """
    return MESSAGE.pack(1, 0x0800, 6, 4, op, senderMAC, senderIP, targetMAC, targetIP)
