"""
IPv4 reassembly (RFC 791 section 3.2, RFC 815): the guest may fragment what it
sends — a UDP datagram larger than the MTU, a big ping — and everything above
the IPv4 layer (the UDP checksum, the NAT's host sockets) needs the whole
datagram.

Fragments come from a guest we do not trust, so the table is bounded like every
other: at most C{maxDatagrams} datagrams in progress (the oldest is evicted when
a new one starts), none larger than C{maxSize} bytes, none kept longer than
C{timeout} seconds, and all of them together holding at most C{maxMemory}
bytes, counting a fixed overhead per fragment so that a flood of 8-byte
fragments costs what it really costs. Overlapping fragments drop the whole datagram, as Linux
does and as RFC 5722 asks for IPv6: an overlap is either a bug or an attempt to
slip different bytes past a filter, and there is no right way to merge it. An
exact duplicate (same offset, same length) is ignored instead, because
retransmitting link layers and test tools produce those innocently.
"""

from bisect import bisect_left

from gvtwisted.wire import ipv4

#: Counter names; the C{drop.} ones are what a guest loses.
COMPLETED = "ipv4.reassembled"
DUPLICATE = "ipv4.fragmentDuplicate"
TIMEOUT = "drop.ipv4.reassemblyTimeout"
OVERLAP = "drop.ipv4.fragmentOverlap"
TOO_BIG = "drop.ipv4.reassemblyTooBig"
EVICTED = "drop.ipv4.reassemblyEvicted"
OVER_MEMORY = "drop.ipv4.reassemblyMemory"
MISALIGNED = "drop.ipv4.fragmentMisaligned"
INCONSISTENT = "drop.ipv4.fragmentInconsistent"

#: What holding one fragment costs beyond its bytes (objects, list slots),
#: charged against C{maxMemory}.
FRAGMENT_OVERHEAD = 128


class _Datagram:
    """
    The fragments of one datagram received so far.

    @ivar starts: the sorted payload offsets of the fragments held.
    @ivar pieces: C{(start, end, data)} in the order of C{starts}.
    @ivar end: the payload length, once the last fragment (MF clear) came.
    @ivar received: the number of payload bytes held (no overlaps, so the
        datagram is complete when this equals C{end}).
    @ivar ttl: the TTL of the fragment at offset 0 (the datagram's).
    @ivar tos: the TOS of the fragment at offset 0.
    """

    __slots__ = ("createdAt", "starts", "pieces", "end", "received", "ttl", "tos", "charge")

    def __init__(self, createdAt):
        self.createdAt = createdAt
        self.starts = []
        self.pieces = []
        self.end = None
        self.received = 0
        self.ttl = 64
        self.tos = 0
        self.charge = 0


class Reassembler:
    """
    Collects IPv4 fragments into whole datagrams.

    @ivar maxDatagrams: how many datagrams may be in progress at once.
    @ivar maxSize: the largest whole datagram, header included (a synthetic
        20-byte header), in bytes.
    @ivar timeout: seconds after its first fragment that an incomplete
        datagram is dropped.
    @ivar maxMemory: how many bytes all datagrams in progress may hold
        together, fragment overhead included (Linux's C{ipfrag_high_thresh}
        is 4 MiB as well); past it the oldest datagrams are dropped.
    """

    def __init__(self, clock, counters, maxDatagrams=64, maxSize=65535, timeout=30.0,
                 maxMemory=4 * 1024 * 1024):
        self._clock = clock
        self._counters = counters
        self.maxDatagrams = maxDatagrams
        self.maxSize = maxSize
        self.timeout = timeout
        self.maxMemory = maxMemory
        self._memory = 0
        # (src, dst, proto, ident) -> _Datagram, oldest first (dicts keep
        # insertion order), so that expiry and eviction look at the front only.
        self._datagrams = {}
        self._timer = None

    def __len__(self):
        return len(self._datagrams)

    def memory(self) -> int:
        """
        The bytes charged for the datagrams in progress.
        """
        return self._memory

    def add(self, packet):
        """
        Take one fragment.

        @param packet: an L{ipv4.IPv4Packet} whose C{isFragment} is true.
        @return: the whole datagram as a new L{ipv4.IPv4Packet} once this
            fragment completes it, else L{None}.
        """
        now = self._clock.seconds()
        self._expire(now)
        start = packet.fragmentOffset
        payload = packet.payload
        length = len(payload)
        end = start + length
        more = packet.moreFragments
        key = (packet.src, packet.dst, packet.proto, packet.ident)
        datagram = self._datagrams.get(key)
        if end + ipv4.MIN_HEADER > self.maxSize:
            self._counters.increment(TOO_BIG)
            self._discard(key)
            return None
        if more and (length == 0 or length & 7):
            # Every fragment but the last carries a multiple of 8 bytes.
            self._counters.increment(MISALIGNED)
            self._discard(key)
            return None
        if datagram is None:
            if self._datagrams and len(self._datagrams) >= self.maxDatagrams:
                self._discard(next(iter(self._datagrams)))
                self._counters.increment(EVICTED)
            datagram = self._datagrams[key] = _Datagram(now)
            self._schedule()
        if not more:
            if (datagram.end is not None and datagram.end != end) or (
                    datagram.pieces and datagram.pieces[-1][1] > end):
                self._counters.increment(INCONSISTENT)
                self._discard(key)
                return None
            datagram.end = end
        elif datagram.end is not None and end > datagram.end:
            self._counters.increment(INCONSISTENT)
            self._discard(key)
            return None
        starts = datagram.starts
        pieces = datagram.pieces
        i = bisect_left(starts, start)
        if i < len(pieces) and pieces[i][0] == start and pieces[i][1] == end:
            self._counters.increment(DUPLICATE)
            return None
        if (i > 0 and pieces[i - 1][1] > start) or (i < len(pieces) and pieces[i][0] < end):
            self._counters.increment(OVERLAP)
            self._discard(key)
            return None
        if length or start == 0:
            # An empty last fragment adds nothing but the end, noted above.
            starts.insert(i, start)
            pieces.insert(i, (start, end, bytes(payload)))
            datagram.received += length
            charge = length + FRAGMENT_OVERHEAD
            datagram.charge += charge
            self._memory += charge
            while self._memory > self.maxMemory:
                oldest = next(iter(self._datagrams))
                self._discard(oldest)
                self._counters.increment(OVER_MEMORY)
                if oldest == key:
                    return None
        if start == 0:
            datagram.ttl = packet.ttl
            datagram.tos = packet.tos
        if datagram.end is None or datagram.received != datagram.end:
            return None
        self._discard(key)
        self._counters.increment(COMPLETED)
        return self._whole(packet, datagram)

    def _whole(self, packet, datagram):
        data = b"".join(piece[2] for piece in datagram.pieces)
        whole = ipv4.IPv4Packet()
        whole.src = packet.src
        whole.dst = packet.dst
        whole.proto = packet.proto
        whole.ttl = datagram.ttl
        whole.ident = packet.ident
        whole.flagsOffset = 0
        whole.tos = datagram.tos
        whole.headerLength = ipv4.MIN_HEADER
        whole.totalLength = ipv4.MIN_HEADER + len(data)
        whole.header = memoryview(ipv4.buildHeader(
            packet.src, packet.dst, packet.proto, len(data), packet.ident,
            datagram.ttl, 0, datagram.tos))
        whole.payload = memoryview(data)
        return whole

    def _discard(self, key):
        datagram = self._datagrams.pop(key, None)
        if datagram is not None:
            self._memory -= datagram.charge

    def _expire(self, now):
        """
        Drop the datagrams whose first fragment is older than the timeout;
        they are in creation order, so only the front needs looking at.
        """
        datagrams = self._datagrams
        deadline = now - self.timeout
        while datagrams:
            key = next(iter(datagrams))
            if datagrams[key].createdAt > deadline:
                break
            self._discard(key)
            self._counters.increment(TIMEOUT)

    def _schedule(self):
        """
        Make sure a timer will expire what is left, so that the timeout is
        counted (and memory freed) even when no more fragments come.
        """
        if self._timer is not None or not self._datagrams:
            return
        first = next(iter(self._datagrams.values()))
        delay = max(0.0, first.createdAt + self.timeout - self._clock.seconds())
        self._timer = self._clock.callLater(delay, self._timerFired)

    def _timerFired(self):
        self._timer = None
        self._expire(self._clock.seconds())
        self._schedule()

    def stop(self):
        """
        Forget every datagram in progress and cancel the timer.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self._datagrams.clear()
        self._memory = 0
