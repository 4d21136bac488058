"""
Tell, from the first bytes of an Ethernet frame, whether it is a bare TCP
segment: an acknowledgement, FIN or RST with no data and no SYN.

Nothing waits on such a segment at once. The guest helper uses this to choose
what leaves a TAP read first: a frame that carries a request (data, a SYN, a
ping, a DNS query) goes to the host before the read that finds the device
empty, so the round trip does not wait for that read; a bare segment waits and
goes in one write with what follows it in the same read (the guest's ACK of a
SYN-ACK and its first data, its FIN and its next SYN), so the host handles
them in one wake instead of two.

Only the fixed headers are read (IPv6 extension headers make a frame count as
not bare): a wrong answer costs a few microseconds, never a frame.
"""

_IPV4 = 0x0800
_IPV6 = 0x86DD
_TCP = 6
_SYN = 0x02
# Ethernet (14), an IPv4 header without options (20) and a TCP header (20).
_SHORTEST = 54


def isBareSegment(frame, offset: int = 0) -> bool:
    """
    Whether C{frame}, from byte C{offset} on (past a virtio-net header), is an
    Ethernet frame carrying an IPv4 or IPv6 TCP segment with no data and no SYN.

    @param frame: bytes-like.
    """
    if len(frame) < offset + _SHORTEST:
        return False
    kind = frame[offset + 12] << 8 | frame[offset + 13]
    ip = offset + 14
    if kind == _IPV4:
        if frame[ip + 9] != _TCP:
            return False
        headerLength = (frame[ip] & 0x0F) * 4
        ipLength = frame[ip + 2] << 8 | frame[ip + 3]
    elif kind == _IPV6:
        if frame[ip + 6] != _TCP:
            return False
        headerLength = 40
        ipLength = 40 + (frame[ip + 4] << 8 | frame[ip + 5])
    else:
        return False
    tcp = ip + headerLength
    if len(frame) < tcp + 20:
        return False
    tcpLength = (frame[tcp + 12] >> 4) * 4
    if ipLength != headerLength + tcpLength or len(frame) < tcp + tcpLength:
        return False
    return not frame[tcp + 13] & _SYN
