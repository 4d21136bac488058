"""
Tests for L{gvtwisted.stack.tcp.assembler.Assembler}.
"""

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.tcp import Assembler


class AssemblerTests(SynchronousTestCase):
    def pulled(self, assembler, nxt):
        chunks = []
        end = assembler.pull(nxt, chunks.append)
        return end, b"".join(chunks)

    def test_adjacentMerge(self):
        """
        Adjacent segments become one block; a gap keeps two.
        """
        a = Assembler()
        a.insert(10, b"abc")
        a.insert(13, b"de")
        a.insert(20, b"xy")
        self.assertEqual([(b[0], b[1]) for b in a.blocks], [(10, 15), (20, 22)])

    def test_overlapKeepsOldBytes(self):
        """
        An overlapping segment adds only what is not held yet.
        """
        a = Assembler()
        a.insert(10, b"abc")
        a.insert(8, b"XXYYYZZ")
        self.assertEqual([(b[0], b[1]) for b in a.blocks], [(8, 15)])
        self.assertEqual(self.pulled(a, 8), (15, b"XXabcZZ"))

    def test_pull(self):
        """
        Pulling at the hole hands the continuing data, skipping what is below
        C{nxt}; a block beyond a hole stays.
        """
        a = Assembler()
        a.insert(10, b"abcdef")
        a.insert(30, b"zz")
        self.assertEqual(self.pulled(a, 12), (16, b"cdef"))
        self.assertEqual([(b[0], b[1]) for b in a.blocks], [(30, 32)])
        self.assertEqual(self.pulled(a, 20), (20, b""))

    def test_staleBlockDropped(self):
        """
        A block wholly below C{nxt} is forgotten without delivery.
        """
        a = Assembler()
        a.insert(10, b"ab")
        self.assertEqual(self.pulled(a, 50), (50, b""))
        self.assertEqual(a.blocks, [])

    def test_bounded(self):
        """
        Past C{maxBlocks} the highest blocks are dropped and counted.
        """
        a = Assembler(maxBlocks=3)
        dropped = [a.insert(100 * i, b"x") for i in range(1, 6)]
        self.assertEqual(dropped, [0, 0, 0, 1, 1])
        self.assertEqual([b[0] for b in a.blocks], [100, 200, 300])

    def test_sackLatestFirst(self):
        """
        The SACK blocks start with the block of the latest segment, then the
        others in order, at most C{limit}.
        """
        a = Assembler()
        a.insert(10, b"a")
        a.insert(20, b"b")
        a.insert(30, b"c")
        a.insert(21, b"b")
        self.assertEqual(a.sackBlocks(4), [(20, 22), (10, 11), (30, 31)])
        self.assertEqual(a.sackBlocks(2), [(20, 22), (10, 11)])

    def test_sameList(self):
        """
        The blocks list stays the same object through inserts and L{clear}
        (the connection keeps a reference to it).
        """
        a = Assembler()
        blocks = a.blocks
        a.insert(10, b"a")
        a.insert(11, b"b")
        a.clear()
        self.assertIs(a.blocks, blocks)
        self.assertEqual(blocks, [])
