"""
A learning Ethernet switch: one port per guest link, plus the gateway.

It learns which port a source MAC lives behind, delivers unicast to that port,
and floods broadcast, multicast and unknown unicast to every other port.

A MAC address belongs to the live port that first used it: a frame from another
port with that source address is dropped and counted, so one guest cannot steal
another's traffic. The table is capped; entries that have not been seen for
C{ageing} seconds are forgotten (on demand, when the table is full or the entry
is looked up), and all of a port's entries go when the port detaches.
"""

from gvtwisted.wire.ethernet import formatMAC


class FrameBatch:
    """
    The frames of one read of a guest link, while the switch handles them one
    after the other (L{Switch.receiveFrames}).

    What can be done once for all of them is registered with L{atEnd} while
    C{depth} is non-zero: a TCP connection delivers the in-order data of all
    its segments in the batch to its protocol in one C{dataReceived} (so the
    host socket gets one write), as a kernel hands a reader everything that
    arrived since its last read.
    """

    __slots__ = ("depth", "_later")

    def __init__(self):
        self.depth = 0
        self._later = []

    def atEnd(self, call):
        """
        Call C{call} (no arguments) when the batch ends; only while one is open.
        """
        self._later.append(call)

    def end(self):
        later = self._later
        while later:
            self._later = []
            for call in later:
                call()
            later = self._later


class Switch:
    """
    @ivar ports: the attached ports; each provides C{sendFrame(frame)}.
    @ivar onLearn: L{None}, or called as C{onLearn(port, mac)} when a new
        MAC table entry is made (not on the per-frame path).
    @ivar onDetach: L{None}, or called as C{onDetach(port)} when a port
        leaves.
    """

    onLearn = None
    onDetach = None

    def __init__(self, clock, counters, maxEntries: int = 4096,
                 ageing: float = 300.0, tap=None):
        self._clock = clock
        self._counters = counters
        self.maxEntries = maxEntries
        self.ageing = ageing
        self.ports = []
        # mac -> [port, lastSeen]; permanent entries have lastSeen None.
        self._table = {}
        self._tap = tap
        # Guest ports' numbers for /cam, in attach order from 0 (gvproxy's
        # connection ids); the gateway (permanent MACs) has none.
        self._numbers = {}
        self._nextNumber = 0
        self.batch = FrameBatch()

    def attach(self, port, macs=()):
        """
        Add C{port}; C{macs} are addresses that belong to it for good (the
        gateway's own).
        """
        self.ports.append(port)
        for mac in macs:
            self._table[mac] = [port, None]
        if not macs:
            self._numbers[port] = self._nextNumber
            self._nextNumber += 1

    def detach(self, port):
        """
        Remove C{port} and every address learnt on it.
        """
        attached = port in self.ports
        if attached:
            self.ports.remove(port)
        self._numbers.pop(port, None)
        for mac in [m for m, e in self._table.items() if e[0] is port]:
            del self._table[mac]
        if attached and self.onDetach is not None:
            self.onDetach(port)

    def portFor(self, mac: bytes):
        """
        The port C{mac} was learnt on, or L{None}.
        """
        entry = self._table.get(mac)
        if entry is None:
            return None
        if entry[1] is not None and self._clock.seconds() - entry[1] > self.ageing:
            del self._table[mac]
            return None
        return entry[0]

    def table(self) -> dict:
        """
        The MAC table as C{{"5a:94:...": portName}}, for the API's C{/cam}.
        """
        now = self._clock.seconds()
        return {
            formatMAC(mac): getattr(entry[0], "name", repr(entry[0]))
            for mac, entry in sorted(self._table.items())
            if entry[1] is None or now - entry[1] <= self.ageing
        }

    def cam(self) -> dict:
        """
        gvproxy's C{/cam}: every guest MAC address learnt, to the number of
        its port (the gateway's own address is not listed).
        """
        return {
            formatMAC(mac): self._numbers[entry[0]]
            for mac, entry in sorted(self._table.items())
            if entry[1] is not None and entry[0] in self._numbers
        }

    def _learn(self, port, src: bytes, now: float) -> bool:
        entry = self._table.get(src)
        if entry is not None:
            if entry[0] is port:
                if entry[1] is not None:
                    entry[1] = now
                return True
            if entry[1] is None or now - entry[1] <= self.ageing:
                return False
        if len(self._table) >= self.maxEntries:
            self._evict(now)
            if len(self._table) >= self.maxEntries:
                self._counters.increment("switch.tableFull")
                return True
        self._table[src] = [port, now]
        if self.onLearn is not None:
            self.onLearn(port, src)
        return True

    def _evict(self, now: float):
        """
        Forget aged entries; if none has aged, the least recently seen one.
        """
        stale = [m for m, e in self._table.items()
                 if e[1] is not None and now - e[1] > self.ageing]
        for mac in stale:
            del self._table[mac]
        if not stale:
            learnt = [(e[1], m) for m, e in self._table.items() if e[1] is not None]
            if learnt:
                del self._table[min(learnt)[1]]

    def receiveFrame(self, port, frame: bytes):
        """
        Switch one frame that arrived on C{port}.
        """
        if len(frame) < 14:
            self._counters.complain("ethernet.short", f"{len(frame)} bytes")
            return
        if self._tap is not None:
            self._tap(frame)
        src = frame[6:12]
        if src[0] & 1:
            self._counters.complain("ethernet.multicastSource")
            return
        if not self._learn(port, src, self._clock.seconds()):
            self._counters.complain("switch.macSpoofed", formatMAC(src))
            return
        dst = frame[0:6]
        if not dst[0] & 1:
            out = self.portFor(dst)
            if out is not None:
                if out is not port:
                    out.sendFrame(frame)
                return
        for out in self.ports:
            if out is not port:
                out.sendFrame(frame)

    def receiveFrames(self, port, frames):
        """
        L{receiveFrame} for each of C{frames}, the frames of one read of
        C{port}'s link, as one L{FrameBatch}.
        """
        if len(frames) == 1:
            self.receiveFrame(port, frames[0])
            return
        batch = self.batch
        batch.depth += 1
        try:
            for frame in frames:
                self.receiveFrame(port, frame)
        finally:
            batch.depth -= 1
            if not batch.depth:
                batch.end()

    def forwardParts(self, port, parts):
        """
        L{forward} for a frame the gateway built in pieces (its headers, then
        the payload): a port that takes pieces (C{sendFrameParts}) gets them as
        they are, so the payload is not copied on the way; any other port, the
        pcap tap and a flood get the joined frame.
        """
        if self._tap is not None:
            self._tap(b"".join(parts))
        dst = parts[0][0:6]
        if not dst[0] & 1:
            entry = self._table.get(dst)
            if entry is not None and (entry[1] is None
                                      or self._clock.seconds() - entry[1] <= self.ageing):
                out = entry[0]
                sendParts = getattr(out, "sendFrameParts", None)
                if sendParts is not None:
                    sendParts(parts)
                else:
                    out.sendFrame(b"".join(parts))
                return
        frame = b"".join(parts)
        for out in self.ports:
            if out is not port:
                out.sendFrame(frame)

    def forward(self, port, frame: bytes):
        """
        Deliver a frame that the gateway itself built: its source MAC is the
        gateway's permanent entry, so nothing is learnt or checked, only the
        destination looked up (the per-frame cost of everything the gateway
        sends, replies and NAT traffic alike).
        """
        if self._tap is not None:
            self._tap(frame)
        dst = frame[0:6]
        if not dst[0] & 1:
            entry = self._table.get(dst)
            if entry is not None and (entry[1] is None
                                      or self._clock.seconds() - entry[1] <= self.ageing):
                entry[0].sendFrame(frame)
                return
        for out in self.ports:
            if out is not port:
                out.sendFrame(frame)

