"""
Tests for L{gvtwisted.wire.tcp}: golden segments checked against dpkt, option
parsing, malformed input, and hypothesis runs showing that no input makes the
parser raise anything but L{ValueError}.
"""

import socket
import struct

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.wire import tcp
from gvtwisted.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    buildSegment,
    parseSegment,
    verifyChecksum,
)

SRC = socket.inet_aton("192.168.127.1")
DST = socket.inet_aton("192.168.127.2")


def dpktSegment(src, dst, **fields):
    """
    The TCP segment dpkt builds (checksum included) for the given fields, taken
    out of an IPv4 packet so that dpkt fills in the pseudo-header checksum.
    """
    opts = fields.get("opts", b"")
    segment = dpkt.tcp.TCP(**fields)
    segment.off = (20 + len(opts)) // 4
    packet = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=segment)
    return bytes(dpkt.ip.IP(bytes(packet)).data)


def dpktChecksumOk(src, dst, segment):
    """
    dpkt's own verdict on a segment's checksum: the ones' complement sum over
    pseudo-header and segment must be all ones.
    """
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(segment))
    return dpkt.dpkt.in_cksum(pseudo + bytes(segment)) == 0


def header(
    srcPort=1, dstPort=2, seq=0, ack=0, offset=5, flags=ACK, window=0, urgent=0
):
    """
    A raw 20-byte header with a zero checksum and any data offset, for malformed
    input.
    """
    return struct.pack(
        "!HHIIBBHHH", srcPort, dstPort, seq, ack, offset << 4, flags, window, 0, urgent
    )


def withOptions(options, payload=b""):
    """
    A segment whose options area is exactly C{options} (which must be a multiple
    of 4 bytes long).
    """
    return header(offset=5 + len(options) // 4) + options + payload


class FlagTests(SynchronousTestCase):
    """
    The flag constants are the bits of RFC 9293 3.1.
    """

    def test_values(self):
        """
        FIN is the lowest bit and CWR the highest, in the RFC's order.
        """
        self.assertEqual(
            [FIN, SYN, RST, PSH, ACK, URG, ECE, CWR],
            [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80],
        )


class BuildTests(SynchronousTestCase):
    """
    L{buildSegment} produces the bytes dpkt produces.
    """

    def test_synAckMatchesDpkt(self):
        """
        A SYN-ACK with MSS, window scale, SACK-permitted and timestamps is byte for
        byte what dpkt builds, checksum included.
        """
        options = (
            tcp.mssOption(1460)
            + tcp.windowScaleOption(7)
            + tcp.sackPermittedOption()
            + tcp.timestampOption(1, 2)
        )
        mine = buildSegment(SRC, DST, 80, 40000, 1000, 2000, SYN | ACK, 65535, options)
        theirs = dpktSegment(
            SRC,
            DST,
            sport=80,
            dport=40000,
            seq=1000,
            ack=2000,
            flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK,
            win=65535,
            opts=options,
        )
        self.assertEqual(mine, theirs)
        self.assertEqual(
            mine.hex(),
            "00509c40000003e8000007d0b012ffff0e4a0000"
            "020405b40103030701010402"
            "0101080a0000000100000002",
        )

    def test_oddPayloadMatchesDpkt(self):
        """
        An odd payload length is checksummed as if padded with a zero byte, as
        dpkt does.
        """
        payload = b"hello, world!"
        mine = buildSegment(
            SRC, DST, 53, 33000, 0xFFFFFFF0, 7, PSH | ACK, 512, b"", payload
        )
        theirs = dpktSegment(
            SRC,
            DST,
            sport=53,
            dport=33000,
            seq=0xFFFFFFF0,
            ack=7,
            flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
            win=512,
            data=payload,
        )
        self.assertEqual(mine, theirs)
        self.assertTrue(dpktChecksumOk(SRC, DST, mine))

    def test_checksumZero(self):
        """
        A segment whose ones' complement sum is all ones gets checksum 0x0000 (the
        fold of C{% 0xFFFF} gives 0 there and must not turn it into 0xFFFF), and
        both dpkt and L{verifyChecksum} accept it.
        """
        base = buildSegment(SRC, DST, 1, 2, 3, 4, ACK, 5, b"", b"\x00\x00")
        baseChecksum = struct.unpack_from("!H", base, 16)[0]
        # The payload word equal to the checksum of the zero payload brings the
        # sum to all ones.
        payload = struct.pack("!H", baseChecksum)
        segment = buildSegment(SRC, DST, 1, 2, 3, 4, ACK, 5, b"", payload)
        self.assertEqual(struct.unpack_from("!H", segment, 16)[0], 0)
        self.assertTrue(dpktChecksumOk(SRC, DST, segment))
        self.assertTrue(verifyChecksum(SRC, DST, segment))

    def test_sequenceNumbersWrap(self):
        """
        Sequence and acknowledgement numbers beyond 32 bits are reduced modulo
        2**32, so callers may keep unbounded counters.
        """
        segment = parseSegment(
            buildSegment(SRC, DST, 1, 2, (1 << 32) + 5, (3 << 32) + 9, ACK, 0)
        )
        self.assertEqual((segment.seq, segment.ack), (5, 9))

    def test_optionsPadded(self):
        """
        Options that are not a multiple of 4 bytes are padded with EOL bytes, and
        the data offset counts the padding.
        """
        segment = buildSegment(SRC, DST, 1, 2, 0, 0, SYN, 0, bytes((3, 3, 7)), b"x")
        self.assertEqual(segment[12] >> 4, 6)
        self.assertEqual(segment[20:24], bytes((3, 3, 7, 0)))
        self.assertEqual(parseSegment(segment).wscale, 7)
        self.assertEqual(bytes(parseSegment(segment).payload), b"x")

    def test_optionsTooLong(self):
        """
        More than 40 bytes of options cannot be expressed by the data offset.
        """
        self.assertRaises(
            ValueError, buildSegment, SRC, DST, 1, 2, 0, 0, SYN, 0, b"\x01" * 44
        )

    def test_bytesLikePayload(self):
        """
        The payload may be a bytearray or a memoryview; the result is bytes.
        """
        for payload in (bytearray(b"abc"), memoryview(b"xabcx")[1:4]):
            segment = buildSegment(SRC, DST, 1, 2, 0, 0, ACK, 0, b"", payload)
            self.assertIsInstance(segment, bytes)
            self.assertEqual(segment[20:], b"abc")
            self.assertTrue(dpktChecksumOk(SRC, DST, segment))


class ChecksumTests(SynchronousTestCase):
    """
    L{verifyChecksum}.
    """

    def test_dpktSegmentVerifies(self):
        """
        A segment built by dpkt verifies.
        """
        segment = dpktSegment(
            SRC, DST, sport=5, dport=6, seq=7, ack=8, flags=dpkt.tcp.TH_ACK, data=b"abc"
        )
        self.assertTrue(verifyChecksum(SRC, DST, segment))
        self.assertTrue(verifyChecksum(SRC, DST, memoryview(segment)))

    def test_corruptionDetected(self):
        """
        Flipping any single bit of the segment, or using other addresses, makes
        the checksum fail.
        """
        segment = bytearray(
            buildSegment(SRC, DST, 5, 6, 7, 8, ACK, 9, tcp.mssOption(1400), b"abcde")
        )
        for i in range(len(segment)):
            for bit in (0x01, 0x80):
                segment[i] ^= bit
                self.assertFalse(verifyChecksum(SRC, DST, segment), (i, bit))
                segment[i] ^= bit
        self.assertTrue(verifyChecksum(SRC, DST, segment))
        self.assertFalse(verifyChecksum(SRC, DST, segment[:-1]))
        self.assertFalse(verifyChecksum(SRC, socket.inet_aton("10.0.0.1"), segment))

    @given(
        payload=st.binary(max_size=300),
        seq=st.integers(0, 2**32 - 1),
        window=st.integers(0, 65535),
    )
    def test_buildAlwaysVerifies(self, payload, seq, window):
        """
        Whatever the payload and fields, the built segment verifies by our
        function and by dpkt's.
        """
        segment = buildSegment(SRC, DST, 1, 2, seq, 0, ACK, window, b"", payload)
        self.assertTrue(verifyChecksum(SRC, DST, segment))
        self.assertTrue(dpktChecksumOk(SRC, DST, segment))


class ParseTests(SynchronousTestCase):
    """
    L{parseSegment} on well-formed segments.
    """

    def test_fields(self):
        """
        Every header field comes back as built; absent options are C{None}.
        """
        raw = struct.pack(
            "!HHIIBBHHH", 40000, 80, 0xDEADBEEF, 0x01020304, 5 << 4, 0x1F, 1234, 0, 77
        )
        segment = parseSegment(raw + b"data")
        self.assertEqual(
            (
                segment.srcPort,
                segment.dstPort,
                segment.seq,
                segment.ack,
                segment.flags,
                segment.window,
                segment.urgent,
                segment.headerLength,
                bytes(segment.payload),
            ),
            (40000, 80, 0xDEADBEEF, 0x01020304, 0x1F, 1234, 77, 20, b"data"),
        )
        self.assertEqual(
            (
                segment.mss,
                segment.wscale,
                segment.sackPermitted,
                segment.sackBlocks,
                segment.tsVal,
                segment.tsEcr,
            ),
            (None, None, False, None, None, None),
        )

    def test_memoryviewPayloadIsAView(self):
        """
        From a memoryview, the payload is a memoryview over the same buffer: no
        copy on the data path.
        """
        buffer = bytearray(buildSegment(SRC, DST, 1, 2, 0, 0, ACK, 0, b"", b"xyz"))
        segment = parseSegment(memoryview(buffer))
        self.assertIsInstance(segment.payload, memoryview)
        buffer[20] = ord("X")
        self.assertEqual(bytes(segment.payload), b"Xyz")

    def test_synOptions(self):
        """
        The options of a Linux SYN (MSS, SACK-permitted, timestamps, NOP, window
        scale) are all parsed.
        """
        options = (
            bytes((2, 4, 0x05, 0xB4, 4, 2, 8, 10))
            + struct.pack("!II", 123456, 0)
            + bytes((1, 3, 3, 7))
        )
        segment = parseSegment(withOptions(options))
        self.assertEqual(segment.mss, 1460)
        self.assertTrue(segment.sackPermitted)
        self.assertEqual((segment.tsVal, segment.tsEcr), (123456, 0))
        self.assertEqual(segment.wscale, 7)

    def test_timestampFastPath(self):
        """
        NOP NOP TS, the options of nearly every segment, parse to the two values.
        """
        segment = parseSegment(withOptions(tcp.timestampOption(0xFFFFFFFF, 42)))
        self.assertEqual((segment.tsVal, segment.tsEcr), (0xFFFFFFFF, 42))

    def test_sackBlocks(self):
        """
        SACK blocks come back as (left, right) pairs in order.
        """
        options = tcp.sackOption([(10, 20), (0xFFFFFFF0, 5)])
        segment = parseSegment(withOptions(options))
        self.assertEqual(segment.sackBlocks, ((10, 20), (0xFFFFFFF0, 5)))

    def test_unknownOptionSkipped(self):
        """
        An option of unknown kind is skipped by its length and what follows is
        still parsed.
        """
        options = bytes((30, 6, 1, 2, 3, 4, 2, 4, 0x02, 0x18, 1, 1))
        segment = parseSegment(withOptions(options))
        self.assertEqual(segment.mss, 536)

    def test_endOfOptionList(self):
        """
        Parsing stops at EOL: the bytes after it are padding, even when they do
        not look like options.
        """
        options = bytes((2, 4, 0x05, 0xB4, 0, 0xFF, 0x00, 0x07))
        segment = parseSegment(withOptions(options))
        self.assertEqual(segment.mss, 1460)
        self.assertIsNone(segment.wscale)

    def test_onlyNops(self):
        """
        An options area of NOPs carries no option.
        """
        segment = parseSegment(withOptions(b"\x01" * 8, b"p"))
        self.assertIsNone(segment.mss)
        self.assertEqual(bytes(segment.payload), b"p")

    def test_reprNamesFlags(self):
        """
        The repr, for test failures and debugging, names the flags and options.
        """
        segment = parseSegment(buildSegment(SRC, DST, 1, 2, 3, 4, SYN | ACK, 5))
        self.assertIn("SYN|ACK", repr(segment))


class MalformedTests(SynchronousTestCase):
    """
    Malformed segments raise L{ValueError}, never anything else.
    """

    def assertMalformed(self, data):
        self.assertRaises(ValueError, parseSegment, data)
        self.assertRaises(ValueError, parseSegment, memoryview(data))

    def test_tooShort(self):
        """
        Fewer than 20 bytes cannot hold a header.
        """
        self.assertMalformed(b"")
        self.assertMalformed(header()[:19])

    def test_dataOffsetBelowFive(self):
        """
        A data offset below 5 words would put data inside the fixed header.
        """
        for offset in range(5):
            self.assertMalformed(header(offset=offset) + b"\x00" * 40)

    def test_dataOffsetBeyondData(self):
        """
        A data offset pointing past the end of the segment.
        """
        self.assertMalformed(header(offset=6))
        self.assertMalformed(header(offset=15) + b"\x01" * 39)

    def test_optionLengthZeroOrOne(self):
        """
        An option length below 2 cannot cover its own kind and length bytes (and
        would loop forever if believed).
        """
        self.assertMalformed(withOptions(bytes((30, 0, 0, 0))))
        self.assertMalformed(withOptions(bytes((30, 1, 0, 0))))

    def test_optionLengthOverruns(self):
        """
        An option whose length runs past the header.
        """
        self.assertMalformed(withOptions(bytes((1, 1, 30, 3))))
        self.assertMalformed(withOptions(bytes((30, 9, 0, 0)), b"payload!"))

    def test_optionWithoutLength(self):
        """
        A non-NOP, non-EOL kind as the last byte of the header has no length.
        """
        self.assertMalformed(withOptions(bytes((1, 1, 1, 2))))

    def test_knownOptionsWrongLength(self):
        """
        MSS, window scale, SACK-permitted, SACK and timestamps with lengths other
        than the RFCs' are malformed.
        """
        self.assertMalformed(withOptions(bytes((2, 3, 5, 1))))
        self.assertMalformed(withOptions(bytes((3, 4, 7, 1))))
        self.assertMalformed(withOptions(bytes((4, 3, 0, 1))))
        self.assertMalformed(withOptions(bytes((1, 1, 5, 2))))
        self.assertMalformed(withOptions(bytes((5, 6, 0, 0, 0, 0, 1, 1))))
        self.assertMalformed(withOptions(bytes((8, 8, 0, 0, 0, 0, 0, 0))))


def validSegments():
    """
    Segments as a guest would send them, to be mutated.
    """
    return st.builds(
        lambda seq, flags, options, payload: buildSegment(
            SRC, DST, 40000, 80, seq, 0, flags, 100, options, payload
        ),
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.sampled_from(
            [
                b"",
                tcp.timestampOption(1, 2),
                tcp.mssOption(1460) + tcp.windowScaleOption(7),
                tcp.sackOption([(1, 2), (3, 4)]),
            ]
        ),
        st.binary(max_size=64),
    )


class FuzzTests(SynchronousTestCase):
    """
    No input makes L{parseSegment} or L{verifyChecksum} raise anything but
    L{ValueError}.
    """

    @settings(max_examples=500)
    @given(st.binary(max_size=120))
    def test_anyBytes(self, data):
        """
        Random bytes parse or raise L{ValueError}; a parsed header length is
        always within the data.
        """
        try:
            segment = parseSegment(memoryview(data))
        except ValueError:
            return
        self.assertTrue(20 <= segment.headerLength <= len(data))
        self.assertEqual(len(segment.payload), len(data) - segment.headerLength)
        verifyChecksum(SRC, DST, data)

    @settings(max_examples=300)
    @given(validSegments(), st.data())
    def test_mutatedSegments(self, segment, data):
        """
        Valid segments with random bytes overwritten parse or raise
        L{ValueError}.
        """
        mutated = bytearray(segment)
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] = data.draw(st.integers(0, 255))
        try:
            parseSegment(bytes(mutated))
        except ValueError:
            pass

    @given(validSegments())
    def test_roundTrip(self, segment):
        """
        What L{buildSegment} makes, L{parseSegment} reads back whole.
        """
        parsed = parseSegment(segment)
        self.assertEqual((parsed.srcPort, parsed.dstPort), (40000, 80))
        self.assertEqual(len(segment), parsed.headerLength + len(parsed.payload))
