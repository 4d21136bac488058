"""
The out-of-order receive assembler: data that arrived beyond a hole waits here,
in a bounded number of blocks, until the hole is filled, and gives the SACK
blocks (RFC 2018) that tell the sender what is already in.
"""


class Assembler:
    """
    Out-of-order data as blocks C{[start, end, chunks]}, sorted, disjoint, and
    merged when adjacent (C{chunks} are the pieces of bytes, in order, that
    cover C{[start, end)}).

    Past C{maxBlocks} the highest blocks are dropped: RFC 2018 allows
    reneging, since the sender keeps everything until it is acknowledged
    cumulatively. A block is never longer than the data inserted into it, so
    the receive window bounds the bytes held.

    @ivar blocks: the list of blocks. It stays the same list object for the
        assembler's life (a connection reads it on every segment to know
        whether anything is held, without a call).
    @ivar last: the start of the latest segment inserted, or C{None}; its
        block is the first SACK block (RFC 2018 4).
    """

    __slots__ = ("blocks", "last", "maxBlocks")

    def __init__(self, maxBlocks=32):
        self.blocks = []
        self.last = None
        self.maxBlocks = maxBlocks

    def insert(self, seq, data):
        """
        Keep the parts of C{data} (at sequence number C{seq}) not already held.

        @return: how many blocks were dropped to stay within C{maxBlocks}.
        """
        end = seq + len(data)
        blocks = self.blocks
        pieces = []
        pos = seq
        for block in blocks:
            if block[1] <= pos:
                continue
            if block[0] >= end:
                break
            if block[0] > pos:
                pieces.append((pos, block[0]))
            if block[1] > pos:
                pos = block[1]
            if pos >= end:
                break
        if pos < end:
            pieces.append((pos, end))
        if not pieces:
            self.last = seq
            return 0
        for start, stop in pieces:
            chunk = bytes(data[start - seq : stop - seq])
            i = 0
            n = len(blocks)
            while i < n and blocks[i][0] < start:
                i += 1
            blocks.insert(i, [start, stop, [chunk]])
        # Merge adjacent blocks.
        merged = [blocks[0]]
        for block in blocks[1:]:
            last = merged[-1]
            if last[1] == block[0]:
                last[1] = block[1]
                last[2].extend(block[2])
            else:
                merged.append(block)
        dropped = 0
        if len(merged) > self.maxBlocks:
            dropped = len(merged) - self.maxBlocks
            del merged[self.maxBlocks :]
        blocks[:] = merged
        self.last = seq
        return dropped

    def pull(self, nxt, accept):
        """
        Hand the data that now continues the in-order stream at C{nxt} to
        C{accept}, chunk by chunk, and forget blocks wholly below C{nxt}.

        @return: the new next in-order sequence number (C{nxt} itself if no
            block continued it).
        """
        blocks = self.blocks
        while blocks and blocks[0][0] <= nxt:
            start, end, chunks = blocks.pop(0)
            if end <= nxt:
                continue
            skip = nxt - start
            for chunk in chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                if skip:
                    chunk = chunk[skip:]
                    skip = 0
                accept(chunk)
            nxt = end
        return nxt

    def sackBlocks(self, limit):
        """
        Up to C{limit} C{(start, end)} pairs for the SACK option: the block
        with the latest segment first (RFC 2018 4), then the others in
        sequence order.
        """
        blocks = self.blocks
        last = self.last
        first = None
        if last is not None:
            for block in blocks:
                if block[0] <= last < block[1]:
                    first = block
                    break
        chosen = [] if first is None else [(first[0], first[1])]
        for block in blocks:
            if len(chosen) >= limit:
                break
            if block is not first:
                chosen.append((block[0], block[1]))
        return chosen

    def clear(self):
        """
        Forget everything held (the connection closed).
        """
        self.blocks.clear()
