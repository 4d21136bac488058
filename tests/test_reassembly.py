"""
Tests for L{gvtwisted.stack.reassembly}: IPv4 fragments from an untrusted
guest become whole datagrams, within bounds.
"""

import random
import socket

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.counters import Counters
from gvtwisted.stack.reassembly import Reassembler
from gvtwisted.wire import ipv4
from gvtwisted.wire.checksum import verifies

SRC = socket.inet_aton("192.168.127.2")
DST = socket.inet_aton("192.168.127.254")
ETH = b"\x00" * 14


def fragments(payload, mtu=1500, ident=7, proto=ipv4.PROTO_UDP, src=SRC):
    """
    C{payload} cut by L{ipv4.fragment} and parsed back, as the network
    would hand them to the reassembler.
    """
    return [ipv4.parse(ETH + p) for p in ipv4.fragment(src, DST, proto, payload, mtu, ident)]


def fragment(offset, data, more, ident=7, ttl=64):
    """
    One hand-made fragment: C{offset} in bytes (a multiple of 8).
    """
    flags = (offset // 8) | (ipv4.FLAG_MF if more else 0)
    return ipv4.parse(ETH + ipv4.buildHeader(SRC, DST, ipv4.PROTO_UDP, len(data), ident,
                                             ttl, flags) + data)


class ReassemblyTests(SynchronousTestCase):
    """
    L{Reassembler.add} in order, out of order, with duplicates and
    overlaps, with time and size limits.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.reassembler = Reassembler(self.clock, self.counters)
        self.payload = bytes(random.Random(1).getrandbits(8) for _ in range(8000))

    def addAll(self, packets):
        """
        Add every fragment; return the results that were not L{None}.
        """
        return [r for r in (self.reassembler.add(p) for p in packets) if r is not None]

    def assertWhole(self, whole, payload):
        self.assertEqual(bytes(whole.payload), payload)
        self.assertEqual((whole.src, whole.dst, whole.proto, whole.ident), (SRC, DST, 17, 7))
        self.assertEqual(whole.flagsOffset, 0)
        self.assertFalse(whole.isFragment)
        self.assertEqual(whole.totalLength, 20 + len(payload))
        self.assertEqual(whole.headerLength, 20)
        header = bytes(whole.header)
        self.assertEqual(len(header), 20)
        self.assertTrue(verifies(header))
        self.assertEqual(int.from_bytes(header[2:4], "big"), 20 + len(payload))

    def test_inOrder(self):
        """
        Fragments in order give the datagram at the last one, and nothing
        stays in progress.
        """
        packets = fragments(self.payload)
        self.assertEqual(len(packets), 6)
        results = [self.reassembler.add(p) for p in packets]
        self.assertEqual(results[:-1], [None] * 5)
        self.assertWhole(results[-1], self.payload)
        self.assertEqual(len(self.reassembler), 0)
        self.assertEqual(self.counters.get("ipv4.reassembled"), 1)

    def test_outOfOrder(self):
        """
        Any order gives the same datagram, when its last missing piece
        comes.
        """
        packets = fragments(self.payload)
        shuffled = packets[3:] + packets[:3][::-1]
        (whole,) = self.addAll(shuffled)
        self.assertWhole(whole, self.payload)
        self.assertIsNone(self.reassembler.add(packets[0]), "a late duplicate starts anew")

    def test_duplicatesIgnored(self):
        """
        A fragment received twice is ignored the second time and counted.
        """
        packets = fragments(self.payload)
        (whole,) = self.addAll([packets[0], packets[0], packets[2], packets[1], packets[2]]
                               + packets[3:])
        self.assertWhole(whole, self.payload)
        self.assertEqual(self.counters.get("ipv4.fragmentDuplicate"), 2)

    def test_overlapDropsDatagram(self):
        """
        A fragment overlapping another (not an exact duplicate) drops the
        whole datagram, as RFC 5722 asks: its remaining fragments give
        nothing.
        """
        self.assertIsNone(self.reassembler.add(fragment(0, b"A" * 16, True)))
        self.assertIsNone(self.reassembler.add(fragment(8, b"B" * 16, True)))
        self.assertEqual(len(self.reassembler), 0)
        self.assertEqual(self.counters.get("drop.ipv4.fragmentOverlap"), 1)
        self.assertIsNone(self.reassembler.add(fragment(16, b"C" * 4, False)))

    def test_ttlFromFirst(self):
        """
        The whole datagram has the TTL of its first fragment.
        """
        results = self.addAll([fragment(8, b"b" * 3, False, ttl=10),
                               fragment(0, b"a" * 8, True, ttl=33)])
        self.assertEqual(bytes(results[0].payload), b"a" * 8 + b"bbb")
        self.assertEqual(results[0].ttl, 33)

    def test_separateDatagrams(self):
        """
        Fragments of different datagrams (ident, source) are not mixed.
        """
        a = fragments(self.payload[:3000], ident=1)
        b = fragments(self.payload[3000:6000], ident=2)
        c = fragments(self.payload[:3000], ident=1, src=socket.inet_aton("192.168.127.3"))
        interleaved = [p for trio in zip(a, b, c) for p in trio]
        results = self.addAll(interleaved)
        self.assertEqual([bytes(r.payload) for r in results],
                         [self.payload[:3000], self.payload[3000:6000], self.payload[:3000]])
        self.assertEqual([r.src for r in results], [SRC, SRC, socket.inet_aton("192.168.127.3")])

    def test_timeout(self):
        """
        An incomplete datagram is dropped after the timeout, counted by the
        timer even if nothing else arrives, and its late fragments give
        nothing.
        """
        packets = fragments(self.payload)
        self.addAll(packets[:-1])
        self.clock.advance(29)
        self.assertEqual(len(self.reassembler), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.reassembler), 0)
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyTimeout"), 1)
        self.assertIsNone(self.reassembler.add(packets[-1]))
        # That late fragment started a datagram of its own, timed from now.
        (timer,) = self.clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 60)

    def test_timerFollowsOldest(self):
        """
        With two datagrams in progress, each expires at its own time.
        """
        self.reassembler.add(fragment(0, b"a" * 8, True, ident=1))
        self.clock.advance(10)
        self.reassembler.add(fragment(0, b"a" * 8, True, ident=2))
        self.clock.advance(20)
        self.assertEqual(len(self.reassembler), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.reassembler), 0)
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyTimeout"), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tooBig(self):
        """
        A fragment reaching past 65535 bytes of datagram drops it (the
        ping of death), while exactly 65535 is fine.
        """
        self.assertIsNone(self.reassembler.add(fragment(0, b"a" * 8, True)))
        self.assertIsNone(self.reassembler.add(fragment(65512, b"z" * 8, False)))
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyTooBig"), 1)
        self.assertEqual(len(self.reassembler), 0)
        (whole,) = self.addAll(fragments(bytes(65515), mtu=9000))
        self.assertEqual(len(whole.payload), 65515)
        self.assertEqual(whole.totalLength, 65535)

    def test_cap(self):
        """
        Past C{maxDatagrams} in progress, the oldest is evicted and counted.
        """
        reassembler = Reassembler(self.clock, self.counters, maxDatagrams=2)
        for ident in (1, 2, 3):
            reassembler.add(fragment(0, b"a" * 8, True, ident=ident))
        self.assertEqual(len(reassembler), 2)
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyEvicted"), 1)
        self.assertIsNone(reassembler.add(fragment(8, b"b", False, ident=1)))
        whole = reassembler.add(fragment(8, b"b", False, ident=3))
        self.assertEqual(bytes(whole.payload), b"a" * 8 + b"b")

    def test_memoryBudget(self):
        """
        Tiny fragments are charged their overhead: past C{maxMemory} the
        oldest datagrams are dropped and counted, and the charge comes back
        down when datagrams complete, expire or are dropped.
        """
        reassembler = Reassembler(self.clock, self.counters, maxMemory=4096)
        for offset in range(0, 8 * 20, 16):
            reassembler.add(fragment(offset, b"a" * 8, True, ident=1))
        self.assertEqual(reassembler.memory(), 10 * (8 + 128))
        for offset in range(0, 8 * 60, 16):
            reassembler.add(fragment(offset, b"b" * 8, True, ident=2))
        self.assertLessEqual(reassembler.memory(), 4096)
        self.assertEqual(len(reassembler), 1)
        self.assertEqual(self.counters.get("drop.ipv4.reassemblyMemory"), 1)
        self.clock.advance(30)
        self.assertEqual((len(reassembler), reassembler.memory()), (0, 0))
        whole = reassembler.add(fragment(0, b"c" * 8, True, ident=3))
        whole = reassembler.add(fragment(8, b"c", False, ident=3))
        self.assertEqual(bytes(whole.payload), b"c" * 9)
        self.assertEqual(reassembler.memory(), 0)

    def test_misaligned(self):
        """
        A fragment with more to come must carry a multiple of 8 bytes.
        """
        self.assertIsNone(self.reassembler.add(fragment(0, b"a" * 7, True)))
        self.assertEqual(self.counters.get("drop.ipv4.fragmentMisaligned"), 1)
        self.assertEqual(len(self.reassembler), 0)

    def test_inconsistentEnd(self):
        """
        Two different ends, or data beyond the end, drop the datagram.
        """
        self.reassembler.add(fragment(0, b"a" * 8, True))
        self.reassembler.add(fragment(16, b"c" * 4, False))
        self.assertIsNone(self.reassembler.add(fragment(24, b"d" * 4, False)))
        self.assertEqual(len(self.reassembler), 0)
        self.reassembler.add(fragment(16, b"c" * 4, False))
        self.assertIsNone(self.reassembler.add(fragment(24, b"d" * 8, True)))
        self.assertEqual(self.counters.get("drop.ipv4.fragmentInconsistent"), 2)
        self.assertEqual(len(self.reassembler), 0)

    def test_stop(self):
        """
        C{stop} forgets the datagrams and leaves no timer.
        """
        self.reassembler.add(fragment(0, b"a" * 8, True))
        self.reassembler.stop()
        self.assertEqual(len(self.reassembler), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RandomFragmentTests(SynchronousTestCase):
    """
    Arbitrary fragment sets never raise, never grow the table past its cap,
    and whatever comes out is consistent with what went in.
    """

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8191),
                              st.binary(min_size=0, max_size=64), st.booleans(),
                              st.floats(0, 20)), max_size=60))
    def test_neverRaises(self, events):
        """
        Random idents, offsets, sizes, flags and delays: L{Reassembler.add}
        returns L{None} or a whole, unfragmented datagram no larger than
        the cap, and the table stays within its bounds.
        """
        clock = Clock()
        reassembler = Reassembler(clock, Counters(clock), maxDatagrams=3,
                                  maxMemory=64 * 1024)
        for ident, offsetUnits, data, more, delay in events:
            clock.advance(delay)
            result = reassembler.add(fragment(offsetUnits * 8, data, more, ident=ident))
            self.assertLessEqual(len(reassembler), 3)
            self.assertLessEqual(reassembler.memory(), 64 * 1024)
            if len(reassembler) == 0:
                self.assertEqual(reassembler.memory(), 0)
            if result is not None:
                self.assertFalse(result.isFragment)
                self.assertLessEqual(result.totalLength, 65535)
                self.assertEqual(result.totalLength, 20 + len(result.payload))
                self.assertEqual(result.ident, ident)

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=1, max_size=20000), st.integers(576, 4000), st.randoms())
    def test_anyOrderReassembles(self, payload, mtu, rng):
        """
        Any datagram cut at any MTU and delivered in any order, with some
        duplicates, comes back byte for byte.
        """
        clock = Clock()
        reassembler = Reassembler(clock, Counters(clock))
        packets = fragments(payload, mtu=mtu)
        packets += rng.sample(packets, rng.randint(0, len(packets) - 1))
        rng.shuffle(packets)
        wholes = []
        for p in packets:
            whole = reassembler.add(p) if p.isFragment else p
            if whole is not None:
                wholes.append(whole)
        self.assertGreaterEqual(len(wholes), 1)
        self.assertEqual(bytes(wholes[0].payload), payload)
