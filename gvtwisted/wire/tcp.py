"""
TCP segments (RFC 9293 section 3.1): parse a header and its options from bytes or a
memoryview, build a segment with its checksum, verify a checksum.

This is the data path: every segment of every guest connection goes through
L{parseSegment} and L{buildSegment}, so both use precompiled L{struct.Struct}
objects, never copy the payload on parsing (a memoryview in gives a memoryview
payload out) and fold checksums with L{gvtwisted.wire.checksum.fold} (numpy for
a long payload, C{int.from_bytes(...) % 0xFFFF} for a short one: 65536 is 1
modulo 0xFFFF, so a big-endian number is congruent to the sum of its 16-bit
words, which is the ones' complement sum up to the 0 / 0xFFFF ambiguity).

Sequence and acknowledgement numbers are returned as the raw 32-bit values of the
wire; the connection unwraps them.
"""

import struct

from gvtwisted.wire.checksum import fold as _fold

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

PROTOCOL_NUMBER = 6
HEADER_LENGTH = 20
MAX_OPTIONS_LENGTH = 40

_HEADER = struct.Struct("!HHIIBBHHH")
_CHECKSUM = struct.Struct("!H")
_MSS = struct.Struct("!H")
_TWO_WORDS = struct.Struct("!II")
_MSS_OPTION = struct.Struct("!BBH")
_TS_OPTION = struct.Struct("!BBBBII")


class TCPSegment:
    """
    The fields of one parsed TCP segment.

    Options that were absent are C{None} (C{sackPermitted} is a bool).

    @ivar srcPort: source port.
    @ivar dstPort: destination port.
    @ivar seq: sequence number, raw 32 bits.
    @ivar ack: acknowledgement number, raw 32 bits (meaningful only with L{ACK}).
    @ivar flags: the flag byte (L{FIN} ... L{CWR}).
    @ivar window: the window field as sent, not scaled.
    @ivar urgent: the urgent pointer.
    @ivar headerLength: header length in bytes, options included.
    @ivar payload: the segment's data; a memoryview when parsed from one.
    @ivar mss: maximum segment size option.
    @ivar wscale: window scale shift option (as sent, not clamped).
    @ivar sackPermitted: whether the SACK-permitted option was present.
    @ivar sackBlocks: tuple of C{(left, right)} raw 32-bit edges, or C{None}.
    @ivar tsVal: timestamp value option.
    @ivar tsEcr: timestamp echo reply option.
    """

    __slots__ = (
        "srcPort",
        "dstPort",
        "seq",
        "ack",
        "flags",
        "window",
        "urgent",
        "headerLength",
        "payload",
        "mss",
        "wscale",
        "sackPermitted",
        "sackBlocks",
        "tsVal",
        "tsEcr",
    )

    def __init__(
        self,
        srcPort,
        dstPort,
        seq,
        ack,
        flags,
        window,
        urgent=0,
        payload=b"",
        headerLength=HEADER_LENGTH,
    ):
        self.srcPort = srcPort
        self.dstPort = dstPort
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.headerLength = headerLength
        self.payload = payload
        self.mss = None
        self.wscale = None
        self.sackPermitted = False
        self.sackBlocks = None
        self.tsVal = None
        self.tsEcr = None

    def __repr__(self):
        # Only for debugging and test failure messages, never on the data path.
        names = [
            name
            for bit, name in (
                (SYN, "SYN"),
                (FIN, "FIN"),
                (RST, "RST"),
                (PSH, "PSH"),
                (ACK, "ACK"),
                (URG, "URG"),
                (ECE, "ECE"),
                (CWR, "CWR"),
            )
            if self.flags & bit
        ]
        extra = ""
        for name in ("mss", "wscale", "sackBlocks", "tsVal", "tsEcr"):
            value = getattr(self, name)
            if value is not None:
                extra += f" {name}={value}"
        if self.sackPermitted:
            extra += " sackPermitted"
        return (
            f"<TCPSegment {self.srcPort}->{self.dstPort} {'|'.join(names)}"
            f" seq={self.seq} ack={self.ack} win={self.window}"
            f" len={len(self.payload)}{extra}>"
        )


def _parseOptions(seg, data, i, end):
    """
    Parse the options in C{data[i:end]} into C{seg}.

    Known options with the wrong length are malformed, like a length below 2 or
    one that runs past the header: RFC 9293 3.1 asks to handle illegal lengths
    safely, and dropping the segment is the safe answer.
    """
    # The common case for a Linux guest: NOP NOP TS, on every segment.
    if (
        end - i == 12
        and data[i] == OPT_NOP
        and data[i + 1] == OPT_NOP
        and data[i + 2] == OPT_TIMESTAMP
        and data[i + 3] == 10
    ):
        seg.tsVal, seg.tsEcr = _TWO_WORDS.unpack_from(data, i + 4)
        return
    while i < end:
        kind = data[i]
        if kind == OPT_EOL:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise ValueError("TCP option without a length")
        length = data[i + 1]
        if length < 2 or i + length > end:
            raise ValueError("bad TCP option length")
        if kind == OPT_MSS:
            if length != 4:
                raise ValueError("bad TCP MSS option length")
            seg.mss = _MSS.unpack_from(data, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length != 3:
                raise ValueError("bad TCP window scale option length")
            seg.wscale = data[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if length != 2:
                raise ValueError("bad TCP SACK-permitted option length")
            seg.sackPermitted = True
        elif kind == OPT_SACK:
            if length < 10 or (length - 2) % 8:
                raise ValueError("bad TCP SACK option length")
            seg.sackBlocks = tuple(
                _TWO_WORDS.unpack_from(data, j) for j in range(i + 2, i + length, 8)
            )
        elif kind == OPT_TIMESTAMP:
            if length != 10:
                raise ValueError("bad TCP timestamp option length")
            seg.tsVal, seg.tsEcr = _TWO_WORDS.unpack_from(data, i + 2)
        i += length


def parseSegment(data) -> TCPSegment:
    """
    Parse a TCP segment (header, options, payload) without checking its checksum.

    @param data: the IPv4 payload, exactly the segment: bytes or a memoryview.
    @return: a L{TCPSegment}; its payload is a slice of C{data} (no copy for a
        memoryview).
    @raise ValueError: if the segment is shorter than a header, its data offset
        is below 5 or beyond the data, or an option is malformed.
    """
    length = len(data)
    if length < HEADER_LENGTH:
        raise ValueError("TCP segment shorter than its header")
    (srcPort, dstPort, seq, ack, offset, flags, window, _, urgent) = (
        _HEADER.unpack_from(data)
    )
    headerLength = (offset >> 4) << 2
    if headerLength < HEADER_LENGTH:
        raise ValueError("TCP data offset below 5")
    if headerLength > length:
        raise ValueError("TCP data offset beyond the segment")
    seg = TCPSegment(
        srcPort,
        dstPort,
        seq,
        ack,
        flags,
        window,
        urgent,
        data[headerLength:],
        headerLength,
    )
    if headerLength > HEADER_LENGTH:
        _parseOptions(seg, data, HEADER_LENGTH, headerLength)
    return seg


def pseudoHeaderFold(srcIP: bytes, dstIP: bytes, length: int) -> int:
    """
    The IPv4 pseudo-header of a TCP segment of C{length} bytes, folded like
    L{_fold}.
    """
    return (int.from_bytes(srcIP + dstIP, "big") + PROTOCOL_NUMBER + length) % 0xFFFF


def connectionFold(srcIP: bytes, dstIP: bytes, srcPort: int, dstPort: int) -> int:
    """
    The part of a segment's checksum that is the same for every segment of a
    connection (addresses, protocol number, ports), folded like L{_fold}: a
    connection computes it once and passes it to L{buildSegmentFolded}.
    """
    return (
        int.from_bytes(srcIP + dstIP, "big") + PROTOCOL_NUMBER + srcPort + dstPort
    ) % 0xFFFF


def buildSegmentFolded(
    base, srcPort, dstPort, seq, ack, flags, window, options=b"", payload=b""
) -> bytes:
    """
    L{buildSegment} for a connection that keeps its L{connectionFold}: the
    header's words are summed from the field values, so the header is packed
    once, with its checksum.

    @param options: encoded options, a multiple of 4 bytes long, at most 40.
    """
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    headerLength = HEADER_LENGTH + len(options)
    length = headerLength + len(payload)
    total = (
        base
        + length
        + (seq >> 16)
        + (seq & 0xFFFF)
        + (ack >> 16)
        + (ack & 0xFFFF)
        + (headerLength << 10)
        + flags
        + window
    )
    if options:
        total += int.from_bytes(options, "big")
    if payload:
        total += _fold(payload)
    total %= 0xFFFF
    header = _HEADER.pack(
        srcPort,
        dstPort,
        seq,
        ack,
        headerLength << 2,
        flags,
        window,
        0xFFFF - total if total else 0,
        0,
    )
    if options:
        header += options
    if payload:
        return header + payload
    return header


def buildSegment(
    srcIP: bytes,
    dstIP: bytes,
    srcPort: int,
    dstPort: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload=b"",
) -> bytes:
    """
    Build a TCP segment with its checksum for the IPv4 addresses given.

    @param srcIP: 4-byte source address (for the pseudo-header).
    @param dstIP: 4-byte destination address.
    @param seq: sequence number; reduced modulo 2**32.
    @param ack: acknowledgement number; reduced modulo 2**32.
    @param window: the window field, already scaled down; at most 65535.
    @param options: encoded options; padded with zero bytes (EOL) to a multiple
        of 4; at most 40 bytes.
    @param payload: bytes-like data.
    """
    optionsLength = len(options)
    if optionsLength & 3:
        options = bytes(options) + b"\x00" * (4 - (optionsLength & 3))
        optionsLength = len(options)
    if optionsLength > MAX_OPTIONS_LENGTH:
        raise ValueError("TCP options longer than 40 bytes")
    return buildSegmentFolded(
        connectionFold(srcIP, dstIP, srcPort, dstPort),
        srcPort,
        dstPort,
        seq,
        ack,
        flags,
        window,
        options,
        payload,
    )


def verifyChecksum(srcIP: bytes, dstIP: bytes, segment) -> bool:
    """
    Whether C{segment} (bytes-like, the whole TCP segment) carries a correct
    checksum for the given IPv4 addresses.
    """
    # A correct segment sums to 0xFFFF (negative zero), which is 0 modulo 0xFFFF;
    # the pseudo-header's protocol number rules out an all-zero positive zero.
    return (pseudoHeaderFold(srcIP, dstIP, len(segment)) + _fold(segment)) % 0xFFFF == 0


def mssOption(mss: int) -> bytes:
    """
    The MSS option (kind 2), 4 bytes.
    """
    return _MSS_OPTION.pack(OPT_MSS, 4, mss)


def windowScaleOption(shift: int) -> bytes:
    """
    The window scale option (kind 3) preceded by a NOP, 4 bytes.
    """
    return bytes((OPT_NOP, OPT_WSCALE, 3, shift))


def sackPermittedOption() -> bytes:
    """
    The SACK-permitted option (kind 4) preceded by two NOPs, 4 bytes.
    """
    return bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))


def timestampOption(tsVal: int, tsEcr: int) -> bytes:
    """
    The timestamp option (kind 8) preceded by two NOPs, 12 bytes, the layout Linux
    uses and that L{parseSegment} recognises fastest.
    """
    return _TS_OPTION.pack(
        OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, tsVal & 0xFFFFFFFF, tsEcr & 0xFFFFFFFF
    )


def sackOption(blocks) -> bytes:
    """
    The SACK option (kind 5) preceded by two NOPs: 4 + 8 * len(blocks) bytes.

    @param blocks: sequence of C{(left, right)} edges; reduced modulo 2**32.
    """
    out = bytearray((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
    for left, right in blocks:
        out += _TWO_WORDS.pack(left & 0xFFFFFFFF, right & 0xFFFFFFFF)
    return bytes(out)
