"""
Tests for the packet views and builders in L{gvtwisted.wire}: checksum,
ethernet, arp, ipv4, icmp and udp (tcp has its own module).

Golden values come from RFC 1071 and from hand-built frames; dpkt, an
independent implementation, checks what we build, and hypothesis checks that
the parsers raise nothing but their documented L{ValueError}.
"""

import struct

import dpkt
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.wire import arp, checksum, ethernet, icmp, ipv4, udp

FUZZ = settings(max_examples=200, deadline=None)


def referenceFold(data) -> int:
    """
    RFC 1071 the slow, obvious way: add the 16-bit big-endian words one by one
    (a last odd byte padded with zero), modulo 0xFFFF.
    """
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    return sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)) % 0xFFFF

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GW_IP = bytes([192, 168, 127, 1])
GUEST_IP = bytes([192, 168, 127, 2])

# A textbook IPv4 header (192.168.0.1 -> 192.168.0.199, UDP, DF, TTL 64,
# total length 0x73), as Wikipedia's "IPv4 header checksum" works it through:
# its checksum field is 0xb861.
GOLDEN_IP_HEADER = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")


def referenceSum(data: bytes) -> int:
    """
    The ones' complement sum of 16-bit words the slow, obvious way (RFC 1071).
    """
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4Frame(payload=b"", proto=17, src=GUEST_IP, dst=GW_IP, padding=b""):
    """
    An Ethernet + IPv4 frame built with dpkt.
    """
    packet = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, id=7, data=payload)
    packet.len = 20 + len(payload)
    return bytes(dpkt.ethernet.Ethernet(dst=GW_MAC, src=GUEST_MAC,
                                        type=0x0800, data=bytes(packet))) + padding


class ChecksumTests(SynchronousTestCase):
    """
    L{checksum} computes the RFC 1071 Internet checksum.
    """

    def test_rfc1071Example(self):
        """
        The worked example of RFC 1071 section 3 sums to 0xddf2 and so has
        the checksum 0x220d.
        """
        data = bytes.fromhex("0001f203f4f5f6f7")
        self.assertEqual(checksum.onesSum(data), 0xDDF2)
        self.assertEqual(checksum.internetChecksum(data), 0x220D)

    def test_goldenIPv4Header(self):
        """
        A real IPv4 header verifies, and zeroing its checksum field and
        recomputing gives the original 0xb861.
        """
        self.assertTrue(checksum.verifies(GOLDEN_IP_HEADER))
        zeroed = GOLDEN_IP_HEADER[:10] + b"\x00\x00" + GOLDEN_IP_HEADER[12:]
        self.assertEqual(checksum.internetChecksum(zeroed), 0xB861)

    def test_oddLength(self):
        """
        An odd-length buffer is summed as if padded with one zero byte.
        """
        self.assertEqual(checksum.onesSum(b"\x12\x34\x56"), 0x1234 + 0x5600)
        self.assertEqual(checksum.onesSum(memoryview(b"\x12\x34\x56")), 0x6834)

    def test_allZero(self):
        """
        An all-zero buffer sums to 0 and its checksum is 0xFFFF.
        """
        self.assertEqual(checksum.onesSum(b"\x00" * 8), 0)
        self.assertEqual(checksum.internetChecksum(b"\x00" * 8), 0xFFFF)
        self.assertEqual(checksum.onesSum(b""), 0)

    def test_negativeZero(self):
        """
        A non-zero buffer whose sum is congruent to 0 mod 0xFFFF sums to
        0xFFFF (negative zero), never to 0, and its checksum is 0.
        """
        self.assertEqual(checksum.onesSum(b"\xff\xff"), 0xFFFF)
        self.assertEqual(checksum.onesSum(b"\x80\x00\x7f\xff"), 0xFFFF)
        self.assertEqual(checksum.internetChecksum(b"\xff\xff\x00\x00"), 0)

    def test_initial(self):
        """
        C{initial} is added into the sum, as a pseudo header would be.
        """
        self.assertEqual(checksum.onesSum(b"\x00\x01", 0x0002), 3)
        self.assertEqual(checksum.onesSum(b"\xff\xfe", 1), 0xFFFF)
        self.assertEqual(checksum.onesSum(b"\x00\x00", 0xFFFF), 0xFFFF)

    def test_foldEveryLengthAndAlignment(self):
        """
        L{checksum.fold} agrees with the word-by-word reference sum for every
        length from 0 to past twice L{checksum.NUMPY_THRESHOLD} (both code
        paths, every tail of 0 to 3 bytes) at every alignment in memory, on
        bytes, bytearrays and memoryviews.
        """
        import random

        rng = random.Random(1071)
        raw = bytes(rng.getrandbits(8) for _ in range(2 * checksum.NUMPY_THRESHOLD + 24))
        for length in range(0, 2 * checksum.NUMPY_THRESHOLD + 9):
            for offset in range(4):
                view = memoryview(raw)[offset:offset + length]
                expected = referenceFold(view)
                self.assertEqual(checksum.fold(view), expected, (length, offset))
        data = raw[:3001]
        self.assertEqual(checksum.fold(bytearray(data)), referenceFold(data))
        self.assertEqual(checksum.fold(data), referenceFold(data))

    @FUZZ
    @given(st.binary(max_size=70000), st.integers(0, 7))
    def test_foldMatchesReference(self, data, offset):
        """
        For any data at any offset in a buffer, the fast fold equals the
        reference one, up to a 64 KiB segment and beyond.
        """
        view = memoryview(b"\xa5" * offset + data)[offset:]
        self.assertEqual(checksum.fold(view), referenceFold(data))

    def test_foldLarge(self):
        """
        All-ones data of a full 64 KiB segment folds to 0 (0xFFFF, negative
        zero, is congruent to 0), and the internet checksum of a big buffer
        that carries its own checksum verifies.
        """
        self.assertEqual(checksum.fold(b"\xff" * 65520), 0)
        body = bytes(range(256)) * 256 + b"\x01\x02"
        packet = body + checksum.internetChecksum(body).to_bytes(2, "big")
        self.assertTrue(checksum.verifies(packet))
        self.assertTrue(checksum.verifies(memoryview(b"\x00" + packet)[1:]))
        self.assertFalse(checksum.verifies(b"\x00" + packet[:-1]))

    @FUZZ
    @given(st.integers(1, 400).map(lambda n: 4 * n), st.integers(1, 12), st.integers(0, 3),
           st.randoms())
    def test_foldEach(self, size, count, offset, rng):
        """
        L{checksum.foldEach} gives L{checksum.fold} of each piece of a burst,
        at any alignment, a partial last piece left out.
        """
        data = bytes(rng.getrandbits(8) for _ in range(size * count + size // 2 + offset))
        view = memoryview(data)[offset:]
        self.assertEqual(checksum.foldEach(view, size),
                         [referenceFold(view[i * size:(i + 1) * size]) for i in range(count)])

    @FUZZ
    @given(st.binary(min_size=2, max_size=3000).filter(lambda b: len(b) % 2 == 0),
           st.data())
    def test_incrementalUpdate(self, data, draw):
        """
        RFC 1624: changing one 16-bit word and updating the checksum
        incrementally gives a checksum that verifies the new data, equal to the
        one computed from scratch (0 and 0xFFFF, the two zeros, aside). Data
        that becomes all zeros is left out: ones' complement arithmetic then
        yields negative zero, which no IP, TCP or UDP header, whose sums
        always include a non-zero word, can produce.
        """
        words = len(data) // 2
        i = draw.draw(st.integers(0, words - 1))
        new = draw.draw(st.integers(0, 0xFFFF))
        old = int.from_bytes(data[2 * i:2 * i + 2], "big")
        before = checksum.internetChecksum(data)
        changed = data[:2 * i] + new.to_bytes(2, "big") + data[2 * i + 2:]
        assume(any(changed))
        after = checksum.incrementalUpdate(before, old, new)
        self.assertTrue(checksum.verifies(changed + after.to_bytes(2, "big")))
        fresh = checksum.internetChecksum(changed)
        if {after, fresh} != {0, 0xFFFF}:
            self.assertEqual(after, fresh)

    def test_pseudoHeaderSum(self):
        """
        The pseudo-header sum equals the ones' sum of the 12-byte pseudo
        header (src, dst, zero, proto, length).
        """
        src, dst = bytes([10, 0, 0, 1]), bytes([172, 16, 255, 254])
        pseudo = src + dst + bytes([0, 17]) + (1234).to_bytes(2, "big")
        self.assertEqual(checksum.pseudoHeaderSum(src, dst, 17, 1234) % 0xFFFF,
                         referenceSum(pseudo) % 0xFFFF)

    @FUZZ
    @given(st.binary(max_size=300), st.integers(0, 0xFFFF))
    def test_matchesReference(self, data, initial):
        """
        For any buffer and initial value, the sum equals the obvious
        word-by-word ones' complement sum (up to the representation of zero).
        """
        expected = referenceSum(data) + initial
        expected = (expected & 0xFFFF) + (expected >> 16)
        got = checksum.onesSum(data, initial)
        self.assertIn(got, range(0x10000))
        self.assertEqual(got % 0xFFFF, expected % 0xFFFF)
        if any(data) or initial:
            self.assertNotEqual(got, 0)

    @FUZZ
    @given(st.binary(min_size=2, max_size=300).map(lambda b: b if len(b) % 2 == 0 else b + b"\x01"))
    def test_insertedChecksumVerifies(self, data):
        """
        Writing the computed checksum into a zeroed field makes the buffer
        verify; flipping one bit of it afterwards makes it fail.
        """
        zeroed = b"\x00\x00" + data
        csum = checksum.internetChecksum(zeroed)
        whole = csum.to_bytes(2, "big") + data
        self.assertTrue(checksum.verifies(whole))
        flipped = bytes([whole[0] ^ 0x01]) + whole[1:]
        self.assertFalse(checksum.verifies(flipped))


class EthernetTests(SynchronousTestCase):
    """
    L{ethernet} parses and formats MACs and builds frames.
    """

    def test_parseMAC(self):
        """
        Colon and dash forms, upper or lower case, parse to six bytes.
        """
        self.assertEqual(ethernet.parseMAC("5a:94:ef:e4:0c:ee"), GUEST_MAC)
        self.assertEqual(ethernet.parseMAC("5A-94-EF-E4-0C-EE"), GUEST_MAC)
        self.assertEqual(ethernet.parseMAC("0:1:2:3:4:5"), bytes(range(6)))

    def test_parseMACBad(self):
        """
        Anything that is not six hex octets raises L{ValueError}.
        """
        for text in ["", "5a:94:ef:e4:0c", "5a:94:ef:e4:0c:ee:ff", "5a:94:ef:e4:0c:eg",
                     "5a:94:ef:e4:0c:1ee", "5a:94:ef:e4::ee", "5a94efe40cee",
                     "+a:94:ef:e4:0c:ee", " a:94:ef:e4:0c:ee", "0x:94:ef:e4:0c:ee"]:
            self.assertRaises(ValueError, ethernet.parseMAC, text)

    @FUZZ
    @given(st.text(max_size=30))
    def test_parseMACFuzz(self, text):
        """
        Any text either parses to six bytes that format back to a canonical
        equivalent, or raises L{ValueError}.
        """
        try:
            mac = ethernet.parseMAC(text)
        except ValueError:
            return
        self.assertEqual(len(mac), 6)
        self.assertEqual(ethernet.parseMAC(ethernet.formatMAC(mac)), mac)

    def test_formatMAC(self):
        """
        Six bytes format as lower-case, zero-padded, colon-separated octets.
        """
        self.assertEqual(ethernet.formatMAC(bytes([0x5A, 0x94, 0xEF, 0xE4, 0x0C, 0x0E])),
                         "5a:94:ef:e4:0c:0e")

    def test_isMulticast(self):
        """
        The group bit of the first octet makes an address multicast.
        """
        self.assertTrue(ethernet.isMulticast(ethernet.BROADCAST))
        self.assertTrue(ethernet.isMulticast(bytes.fromhex("01005e000001")))
        self.assertFalse(ethernet.isMulticast(GUEST_MAC))

    def test_build(self):
        """
        A built frame is destination, source, big-endian type and payload,
        and dpkt reads it back the same.
        """
        frame = ethernet.build(GW_MAC, GUEST_MAC, ethernet.TYPE_ARP, b"xyz")
        self.assertEqual(frame, GW_MAC + GUEST_MAC + b"\x08\x06xyz")
        parsed = dpkt.ethernet.Ethernet(frame)
        self.assertEqual((parsed.dst, parsed.src, parsed.type), (GW_MAC, GUEST_MAC, 0x0806))


class ARPTests(SynchronousTestCase):
    """
    L{arp} parses and builds IPv4-over-Ethernet ARP messages.
    """

    def requestFrame(self, **fields):
        message = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=GUEST_MAC, spa=GUEST_IP,
                               tha=b"\x00" * 6, tpa=GW_IP)
        for k, v in fields.items():
            setattr(message, k, v)
        return bytes(dpkt.ethernet.Ethernet(dst=ethernet.BROADCAST, src=GUEST_MAC,
                                            type=0x0806, data=bytes(message)))

    def test_parseRequest(self):
        """
        A dpkt-built request parses to its fields.
        """
        m = arp.parse(self.requestFrame())
        self.assertEqual((m.op, m.senderMAC, m.senderIP, m.targetMAC, m.targetIP),
                         (arp.REQUEST, GUEST_MAC, GUEST_IP, b"\x00" * 6, GW_IP))

    def test_parsePadded(self):
        """
        Ethernet padding after the 28-byte message is ignored.
        """
        frame = self.requestFrame(op=dpkt.arp.ARP_OP_REPLY) + b"\x00" * 18
        self.assertEqual(len(frame), 60)
        self.assertEqual(arp.parse(frame).op, arp.REPLY)

    def test_parseShort(self):
        """
        A message shorter than 28 bytes raises L{ValueError}.
        """
        self.assertRaises(ValueError, arp.parse, self.requestFrame()[:41])

    def test_parseWrongTypes(self):
        """
        Anything but Ethernet/IPv4 with 6/4-byte addresses raises.
        """
        for fields in [dict(hrd=6), dict(pro=0x86DD), dict(hln=8), dict(pln=16), dict(op=3)]:
            self.assertRaises(ValueError, arp.parse, self.requestFrame(**fields))

    def test_build(self):
        """
        A built reply is the 28-byte message dpkt reads as the same reply.
        """
        message = arp.build(arp.REPLY, GW_MAC, GW_IP, GUEST_MAC, GUEST_IP)
        self.assertEqual(len(message), arp.LENGTH)
        self.assertEqual(message, bytes.fromhex(
            "0001 0800 06 04 0002 5a94efe40cdd c0a87f01 5a94efe40cee c0a87f02".replace(" ", "")))
        parsed = dpkt.arp.ARP(message)
        self.assertEqual((parsed.op, parsed.sha, parsed.spa, parsed.tha, parsed.tpa),
                         (2, GW_MAC, GW_IP, GUEST_MAC, GUEST_IP))

    @FUZZ
    @given(st.binary(max_size=64), st.integers(0, 20))
    def test_parseFuzz(self, data, offset):
        """
        Random bytes at any offset parse or raise L{ValueError}, nothing else.
        """
        try:
            arp.parse(data, offset)
        except ValueError:
            pass


class IPv4Tests(SynchronousTestCase):
    """
    L{ipv4} validates headers strictly and builds and fragments packets.
    """

    def assertReason(self, frame, reason):
        with self.assertRaises(ipv4.IPv4Error) as ctx:
            ipv4.parse(frame)
        self.assertEqual(ctx.exception.reason, reason)
        self.assertIsInstance(ctx.exception, ValueError)

    def test_parseGolden(self):
        """
        A dpkt-built UDP packet parses to its fields, with the payload
        excluding the header.
        """
        frame = ipv4Frame(b"hello", proto=17)
        p = ipv4.parse(frame)
        self.assertEqual((p.src, p.dst, p.proto, p.ttl, p.ident, p.headerLength, p.totalLength),
                         (GUEST_IP, GW_IP, 17, 64, 7, 20, 25))
        self.assertEqual(bytes(p.payload), b"hello")
        self.assertEqual(bytes(p.header), frame[14:34])
        self.assertFalse(p.isFragment)

    def test_parsePaddingExcluded(self):
        """
        Bytes past the total length (Ethernet padding) are not payload.
        """
        frame = ipv4Frame(b"ab", padding=b"\x00" * 24)
        self.assertEqual(len(frame), 60)
        self.assertEqual(bytes(ipv4.parse(frame).payload), b"ab")

    def test_parseOptions(self):
        """
        A header with options (IHL 6) is accepted and its payload starts
        after the options.
        """
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x46, 0, 28, 1, 0, 64, 17, 0,
                                       GUEST_IP, GW_IP) + b"\x01\x01\x01\x00")
        header[10:12] = checksum.internetChecksum(header).to_bytes(2, "big")
        frame = b"\x00" * 14 + bytes(header) + b"DATA"
        p = ipv4.parse(frame)
        self.assertEqual(p.headerLength, 24)
        self.assertEqual(bytes(p.payload), b"DATA")

    def test_parseShort(self):
        """
        Fewer than 20 bytes after the Ethernet header is C{ipv4.short}.
        """
        self.assertReason(ipv4Frame()[:33], "ipv4.short")

    def test_parseVersion(self):
        """
        A version other than 4 is C{ipv4.version}.
        """
        frame = bytearray(ipv4Frame(b"x"))
        frame[14] = 0x65
        self.assertReason(bytes(frame), "ipv4.version")

    def test_parseHeaderLength(self):
        """
        An IHL below 5 is C{ipv4.headerLength}.
        """
        frame = bytearray(ipv4Frame(b"x"))
        frame[14] = 0x44
        self.assertReason(bytes(frame), "ipv4.headerLength")

    def test_parseTotalLength(self):
        """
        A total length beyond the frame, or below the header length, is
        C{ipv4.totalLength}; so is a header length beyond the frame.
        """
        frame = bytearray(ipv4Frame(b"xyz"))
        frame[16:18] = (24).to_bytes(2, "big")
        self.assertReason(bytes(frame), "ipv4.totalLength")
        frame[16:18] = (19).to_bytes(2, "big")
        self.assertReason(bytes(frame), "ipv4.totalLength")
        frame = bytearray(ipv4Frame(b""))
        frame[14] = 0x4F
        self.assertReason(bytes(frame), "ipv4.totalLength")

    def test_parseChecksum(self):
        """
        A wrong header checksum is C{ipv4.checksum}.
        """
        frame = bytearray(ipv4Frame(b"x"))
        frame[24] ^= 0xFF
        self.assertReason(bytes(frame), "ipv4.checksum")

    @given(st.binary(min_size=17, max_size=17), st.one_of(st.none(), st.integers(0, 0xFFFF)),
           st.integers(0, 10))
    def test_parseChecksumAgreesWithReference(self, rest, field, optionWords):
        """
        The header check in C{parse} (the header as one number, modulo
        0xFFFF) accepts exactly the headers whose ones' sum the reference
        L{checksum.verifies} accepts, for the right checksum field (C{None})
        or any other, with and without options; a header it rejects is
        C{ipv4.checksum}.
        """
        header = bytearray(bytes([0x40 | (5 + optionWords)]) + rest[:9] + bytes(2) + rest[9:]
                           + bytes(4 * optionWords))
        header[2:4] = len(header).to_bytes(2, "big")  # total length: the header alone
        if field is None:
            field = checksum.internetChecksum(bytes(header))
        header[10:12] = field.to_bytes(2, "big")
        frame = bytes(14) + bytes(header)
        if checksum.verifies(bytes(header)):
            self.assertEqual(ipv4.parse(frame).headerLength, len(header))
        else:
            self.assertReason(frame, "ipv4.checksum")

    def test_fragmentFlags(self):
        """
        The MF flag and offset (in bytes) are read from the header.
        """
        frame = bytearray(ipv4Frame(b"12345678"))
        frame[20:22] = (0x2000 | 3).to_bytes(2, "big")
        frame[24:26] = b"\x00\x00"
        frame[24:26] = checksum.internetChecksum(bytes(frame[14:34])).to_bytes(2, "big")
        p = ipv4.parse(bytes(frame))
        self.assertTrue(p.moreFragments)
        self.assertTrue(p.isFragment)
        self.assertEqual(p.fragmentOffset, 24)

    def test_buildHeader(self):
        """
        A built header is 20 bytes, has DF by default, a valid checksum, and
        dpkt reads its fields back.
        """
        header = ipv4.buildHeader(GW_IP, GUEST_IP, 17, 100, ident=0x1234, ttl=33)
        self.assertEqual(len(header), 20)
        self.assertTrue(checksum.verifies(header))
        parsed = dpkt.ip.IP(header + b"\x00" * 100)
        self.assertEqual((parsed.src, parsed.dst, parsed.p, parsed.len, parsed.id, parsed.ttl,
                          parsed.df, parsed.mf, parsed.offset),
                         (GW_IP, GUEST_IP, 17, 120, 0x1234, 33, 1, 0, 0))

    def test_buildGolden(self):
        """
        Building the textbook header's fields gives exactly its bytes.
        """
        header = ipv4.buildHeader(bytes([192, 168, 0, 1]), bytes([192, 168, 0, 199]),
                                  17, 0x73 - 20, ident=0, ttl=64)
        self.assertEqual(header, GOLDEN_IP_HEADER)

    def test_fragment(self):
        """
        Fragments fit the MTU, carry multiples of 8 bytes but the last, have
        consistent offsets and MF flags, and reassemble to the payload.
        """
        payload = bytes(range(256)) * 12
        packets = ipv4.fragment(GW_IP, GUEST_IP, 17, payload, 1500, ident=99)
        self.assertEqual([len(p) for p in packets], [1500, 1500, 20 + 3072 - 2 * 1480])
        data = b""
        for i, p in enumerate(packets):
            parsed = dpkt.ip.IP(p)
            self.assertTrue(checksum.verifies(p[:20]))
            self.assertEqual(parsed.id, 99)
            self.assertEqual(parsed.df, 0)
            self.assertEqual(parsed.mf, int(i < len(packets) - 1))
            self.assertEqual(parsed.offset * 8, len(data))
            data += p[20:]
        self.assertEqual(data, payload)

    def test_fragmentTinyMTU(self):
        """
        An MTU with no room for 8 payload bytes raises L{ValueError}.
        """
        self.assertRaises(ValueError, ipv4.fragment, GW_IP, GUEST_IP, 17, b"x" * 100, 27, 1)

    @FUZZ
    @given(st.binary(min_size=1, max_size=4000), st.integers(68, 1500))
    def test_fragmentReassembles(self, payload, mtu):
        """
        For any payload and MTU, fragments fit and reassemble exactly.
        """
        packets = ipv4.fragment(GW_IP, GUEST_IP, 6, payload, mtu, ident=5)
        data = b""
        for p in packets:
            self.assertLessEqual(len(p), mtu)
            parsed = ipv4.parse(b"\x00" * 14 + p)
            self.assertEqual(parsed.fragmentOffset, len(data))
            data += bytes(parsed.payload)
            if parsed.moreFragments:
                self.assertEqual(len(parsed.payload) % 8, 0)
        self.assertFalse(ipv4.parse(b"\x00" * 14 + packets[-1]).moreFragments)
        self.assertEqual(data, payload)

    @FUZZ
    @given(st.binary(max_size=100))
    def test_parseFuzz(self, data):
        """
        Random bytes parse or raise L{ipv4.IPv4Error}, nothing else.
        """
        try:
            ipv4.parse(b"\x00" * 14 + data)
        except ipv4.IPv4Error:
            pass

    @FUZZ
    @given(st.integers(0, 39), st.integers(0, 255), st.integers(0, 30))
    def test_parseMutated(self, index, value, cut):
        """
        A valid frame with one byte changed and some tail cut off parses
        (then with a payload inside the frame) or raises L{ipv4.IPv4Error}.
        """
        frame = bytearray(ipv4Frame(b"0123456789abcdefghij"))
        frame[14 + index] = value
        frame = bytes(frame[:len(frame) - cut])
        try:
            p = ipv4.parse(frame)
        except ipv4.IPv4Error:
            return
        self.assertLessEqual(14 + p.headerLength + len(p.payload), len(frame))


class ICMPTests(SynchronousTestCase):
    """
    L{icmp} parses messages and builds echo replies and errors.
    """

    def test_parseEcho(self):
        """
        A dpkt-built echo request parses to type, code and the rest after
        the checksum (identifier, sequence, data).
        """
        message = bytes(dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(
            id=0x1234, seq=7, data=b"ping")))
        icmpType, code, rest = icmp.parse(message)
        self.assertEqual((icmpType, code, bytes(rest)), (8, 0, b"\x12\x34\x00\x07ping"))

    def test_parseBad(self):
        """
        A message under 8 bytes or with a wrong checksum raises
        L{ValueError} naming the reason.
        """
        self.assertRaises(ValueError, icmp.parse, b"\x08\x00\xf7\xff\x00\x00\x00")
        message = bytearray(icmp.build(8, 0, b"\x00\x01\x00\x01data"))
        message[-1] ^= 1
        with self.assertRaises(ValueError) as ctx:
            icmp.parse(bytes(message))
        self.assertEqual(str(ctx.exception), "icmp.checksum")

    def test_build(self):
        """
        A built echo reply has a correct checksum (dpkt agrees) and fields.
        """
        message = icmp.build(icmp.ECHO_REPLY, 0, b"\x12\x34\x00\x07ping")
        self.assertTrue(checksum.verifies(message))
        parsed = dpkt.icmp.ICMP(message)
        self.assertEqual((parsed.type, parsed.code, parsed.data.id, parsed.data.seq,
                          parsed.data.data), (0, 0, 0x1234, 7, b"ping"))
        expected = bytes(dpkt.icmp.ICMP(type=0, code=0, data=dpkt.icmp.ICMP.Echo(
            id=0x1234, seq=7, data=b"ping")))
        self.assertEqual(message, expected)

    def test_buildGolden(self):
        """
        An all-zero echo reply (type 0) has checksum 0xFFFF.
        """
        self.assertEqual(icmp.build(0, 0, b"\x00\x00\x00\x00"), b"\x00\x00\xff\xff\x00\x00\x00\x00")

    def test_unreachable(self):
        """
        A destination-unreachable quotes the header and the first 8 payload
        bytes, carries the next-hop MTU and verifies.
        """
        header = ipv4.buildHeader(GUEST_IP, GW_IP, 17, 20)
        message = icmp.unreachable(icmp.FRAG_NEEDED, header, b"0123456789abcdefghij", 1400)
        self.assertTrue(checksum.verifies(message))
        self.assertEqual(message[:2], b"\x03\x04")
        self.assertEqual(message[4:8], (1400).to_bytes(4, "big"))
        self.assertEqual(message[8:], header + b"01234567")

    @FUZZ
    @given(st.binary(max_size=60))
    def test_parseFuzz(self, data):
        """
        Random bytes parse or raise L{ValueError}, nothing else.
        """
        try:
            icmp.parse(data)
        except ValueError:
            pass

    @FUZZ
    @given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=60))
    def test_buildParses(self, icmpType, code, rest):
        """
        Whatever is built parses back to the same type, code and rest.
        """
        t, c, r = icmp.parse(icmp.build(icmpType, code, rest))
        self.assertEqual((t, c, bytes(r)), (icmpType, code, rest))


class UDPTests(SynchronousTestCase):
    """
    L{udp} parses datagrams and builds them with the pseudo-header checksum.
    """

    def datagram(self, data=b"hello", sport=5353, dport=53):
        u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
        u.ulen = 8 + len(data)
        ip = dpkt.ip.IP(src=GUEST_IP, dst=GW_IP, p=17, data=u)
        ip.len = 20 + len(u)
        return bytes(dpkt.ip.IP(bytes(ip)).data)

    def test_parse(self):
        """
        A dpkt-built datagram parses to ports, checksum and data.
        """
        d = self.datagram()
        srcPort, dstPort, csum, data = udp.parse(d)
        self.assertEqual((srcPort, dstPort, csum, bytes(data)),
                         (5353, 53, int.from_bytes(d[6:8], "big"), b"hello"))

    def test_parseTrailing(self):
        """
        Bytes after the UDP length are ignored.
        """
        self.assertEqual(bytes(udp.parse(self.datagram(b"ab") + b"\x00\x00")[3]), b"ab")

    def test_parseBad(self):
        """
        A short datagram, or a length field under 8 or beyond the payload,
        raises L{ValueError}.
        """
        d = self.datagram(b"abc")
        self.assertRaises(ValueError, udp.parse, d[:7])
        self.assertRaises(ValueError, udp.parse, d[:4] + (7).to_bytes(2, "big") + d[6:])
        self.assertRaises(ValueError, udp.parse, d[:4] + (12).to_bytes(2, "big") + d[6:])

    def test_checksumOK(self):
        """
        dpkt's checksum verifies; a changed byte does not; zero means none.
        """
        d = self.datagram(b"odd")
        self.assertNotEqual(d[6:8], b"\x00\x00")
        self.assertTrue(udp.checksumOK(GUEST_IP, GW_IP, d))
        self.assertFalse(udp.checksumOK(GUEST_IP, GW_IP, d[:-1] + b"e"))
        self.assertFalse(udp.checksumOK(GUEST_IP, GUEST_IP, d))
        self.assertTrue(udp.checksumOK(GUEST_IP, GW_IP, d[:6] + b"\x00\x00" + b"garbage"))

    def test_build(self):
        """
        A built datagram is byte-for-byte what dpkt builds.
        """
        built = udp.build(GUEST_IP, GW_IP, 5353, 53, b"hello")
        self.assertEqual(built, self.datagram(b"hello"))

    def test_buildZeroChecksum(self):
        """
        A datagram whose checksum computes to 0 carries 0xFFFF instead.
        """
        # Find data whose checksum computes to zero: adjust two bytes.
        base = udp.build(GUEST_IP, GW_IP, 1, 2, b"\x00\x00")
        csum = int.from_bytes(base[6:8], "big")
        # Adding (csum) into the data word lowers the complement to 0.
        built = udp.build(GUEST_IP, GW_IP, 1, 2, csum.to_bytes(2, "big"))
        self.assertEqual(built[6:8], b"\xff\xff")
        self.assertTrue(udp.checksumOK(GUEST_IP, GW_IP, built))

    @FUZZ
    @given(st.binary(max_size=3000), st.integers(0, 65535), st.integers(0, 65535),
           st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
    def test_buildVerifies(self, data, sport, dport, src, dst):
        """
        Any built datagram verifies, parses back, and dpkt computes the same
        checksum.
        """
        built = udp.build(src, dst, sport, dport, data)
        self.assertTrue(udp.checksumOK(src, dst, built))
        self.assertNotEqual(built[6:8], b"\x00\x00")
        s, d, _, payload = udp.parse(built)
        self.assertEqual((s, d, bytes(payload)), (sport, dport, data))
        u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
        u.ulen = 8 + len(data)
        ip = dpkt.ip.IP(src=src, dst=dst, p=17, data=u)
        ip.len = 20 + len(u)
        self.assertEqual(bytes(dpkt.ip.IP(bytes(ip)).data), built)

    @FUZZ
    @given(st.binary(max_size=40))
    def test_parseFuzz(self, data):
        """
        Random bytes parse or raise L{ValueError}, nothing else.
        """
        try:
            udp.parse(data)
        except ValueError:
            return
        srcPort, dstPort, csum, payload = udp.parse(data)
        self.assertEqual(8 + len(payload), int.from_bytes(data[4:6], "big"))
