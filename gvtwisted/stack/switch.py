"""
A learning Ethernet switch: one port per guest link, plus the gateway.

Each port has a L{gvtwisted.stack.iface.LinkInterface} that owns the MAC
addresses learnt on it. The switch learns which link a source MAC lives behind,
delivers unicast to that link, and floods broadcast and multicast (and a guest's
unicast to an unknown MAC) to every other port. A frame the gateway built for a
MAC that no live link holds is dropped and counted, never flooded: it belongs to
one guest, and no other guest may see it.

A MAC address belongs to the live link that first used it: a frame from another
port with that source address is dropped and counted, so one guest cannot steal
another's traffic, until the entry has not been seen for C{ageing} seconds.
Each link holds at most C{maxMACsPerLink} addresses; past that its own least
recently seen one is evicted, so a link that floods source addresses can never
evict or claim another link's.

When a port detaches, its interface goes down but keeps its addresses for
C{linkGrace} seconds: frames for them are dropped, and a new port that shows one
of them takes the whole interface's state over. When the grace period ends the
listeners hear C{linkExpired(iface)} and the addresses go. Whenever a learnt
address leaves a link (evicted, claimed after ageing, expired) the listeners
hear C{macForgotten(iface, mac)}, so that ARP entries go with it.
"""

from gvtwisted.stack.iface import LinkInterface
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

    def atEnd(self, call, first=False):
        """
        Call C{call} (no arguments) when the batch ends; only while one is open.

        @param first: before the calls registered so far (the fast path's
            coalesced run: its segments came in the batch before those calls
            ran, and would have scheduled what they schedule then).
        """
        if first:
            self._later.insert(0, call)
        else:
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
    @ivar listeners: objects with C{linkExpired(iface)} and
        C{macForgotten(iface, mac)}.
    @ivar onLearn: L{None}, or called as C{onLearn(port, mac)} when a new
        MAC table entry is made (not on the per-frame path).
    @ivar onDetach: L{None}, or called as C{onDetach(port)} when a port
        leaves.
    """

    onLearn = None
    onDetach = None

    def __init__(self, clock, counters, maxMACsPerLink: int = 64,
                 ageing: float = 300.0, tap=None, linkGrace: float = 60.0):
        self._clock = clock
        self._counters = counters
        self.maxMACsPerLink = maxMACsPerLink
        self.ageing = ageing
        self.linkGrace = linkGrace
        self.ports = []
        self.listeners = []
        # port -> its interface, while attached.
        self._ifaces = {}
        # mac -> the interface that holds it (live or within its grace period).
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
        gateway's own). Return its L{LinkInterface}.
        """
        iface = LinkInterface(port)
        self.ports.append(port)
        self._ifaces[port] = iface
        for mac in macs:
            iface.macs[mac] = None
            self._table[mac] = iface
        if not macs:
            self._numbers[port] = self._nextNumber
            self._nextNumber += 1
        return iface

    def interfaceFor(self, port):
        """
        The interface of the attached C{port}, or L{None}.
        """
        return self._ifaces.get(port)

    def interfaceOf(self, mac: bytes):
        """
        The interface that holds C{mac} (up or within its grace), or L{None}.
        """
        return self._table.get(mac)

    def detach(self, port):
        """
        Remove C{port}: its interface goes down (resumed first if it was
        paused, so that nothing stays blocked on it), and its state is kept
        for the grace period.
        """
        iface = self._ifaces.pop(port, None)
        attached = port in self.ports
        if attached:
            self.ports.remove(port)
        self._numbers.pop(port, None)
        if iface is not None:
            iface.up = False
            iface.port = None
            if iface.paused:
                iface.resume()
            if self.linkGrace > 0:
                iface.graceCall = self._clock.callLater(self.linkGrace, self._expire, iface)
            else:
                self._expire(iface)
        if attached and self.onDetach is not None:
            self.onDetach(port)

    def _expire(self, iface):
        """
        The grace period of a down interface ended: tell the listeners, then
        forget its addresses.
        """
        iface.graceCall = None
        if iface.up:
            return
        self._counters.increment("link.graceExpired")
        for listener in self.listeners:
            listener.linkExpired(iface)
        for mac in list(iface.macs):
            self._forget(iface, mac)

    def _forget(self, iface, mac):
        """
        C{mac} leaves C{iface}.
        """
        iface.macs.pop(mac, None)
        if self._table.get(mac) is iface:
            del self._table[mac]
        for listener in self.listeners:
            listener.macForgotten(iface, mac)

    def portFor(self, mac: bytes):
        """
        The live port C{mac} was learnt on and seen within C{ageing}, or
        L{None}.
        """
        iface = self._table.get(mac)
        if iface is None or not iface.up:
            return None
        seen = iface.macs.get(mac)
        if seen is not None and self._clock.seconds() - seen > self.ageing:
            return None
        return iface.port

    def table(self) -> dict:
        """
        The MAC table as C{{"5a:94:...": portName}}, for the API's C{/cam}:
        live entries not aged out.
        """
        now = self._clock.seconds()
        result = {}
        for mac, iface in sorted(self._table.items()):
            seen = iface.macs.get(mac)
            if iface.up and (seen is None or now - seen <= self.ageing):
                result[formatMAC(mac)] = iface.name
        return result

    def cam(self) -> dict:
        """
        gvproxy's C{/cam}: every guest MAC address learnt on a live link, to
        the number of its port (the gateway's own address is not listed).
        """
        numbers = self._numbers
        return {
            formatMAC(mac): numbers[iface.port]
            for mac, iface in sorted(self._table.items())
            if iface.up and iface.macs.get(mac) is not None and iface.port in numbers
        }

    def _learn(self, iface, src: bytes, now: float) -> bool:
        owner = self._table.get(src)
        if owner is iface:
            macs = iface.macs
            if macs[src] is not None:
                macs[src] = now
            return True
        if owner is not None:
            if not owner.up:
                # The link this MAC was on dropped and a new one shows it
                # within the grace period: the guest is back.
                self._takeOver(owner, iface)
                iface.macs[src] = now
                if self.onLearn is not None:
                    self.onLearn(iface.port, src)
                return True
            seen = owner.macs.get(src)
            if seen is None or now - seen <= self.ageing:
                return False
            self._forget(owner, src)
        if len(iface.macs) >= self.maxMACsPerLink:
            oldest = iface.oldestMAC()
            if oldest is None:
                self._counters.increment("switch.tableFull")
                return True
            self._counters.increment("switch.linkTableFull")
            self._forget(iface, oldest)
        iface.macs[src] = now
        self._table[src] = iface
        if self.onLearn is not None:
            self.onLearn(iface.port, src)
        return True

    def _takeOver(self, old, new):
        if old.graceCall is not None:
            if old.graceCall.active():
                old.graceCall.cancel()
            old.graceCall = None
        self._counters.increment("link.takenOver")
        for mac in old.macs:
            self._table[mac] = new
        new.takeOver(old)

    # A shortcut for frames of established TCP connections (see
    # gvtwisted.stack.fastpath), set by the assembly; None: every frame takes
    # the ordinary path.
    fastPath = None

    def receiveFrame(self, port, frame: bytes):
        """
        Switch one frame that arrived on C{port}.
        """
        if len(frame) < 14:
            self._counters.complain("ethernet.short", f"{len(frame)} bytes")
            return
        iface = self._ifaces.get(port)
        if iface is None:
            self._counters.increment("drop.switch.detachedPort")
            return
        if self._tap is not None:
            self._tap(frame)
        elif self.fastPath is not None and self.fastPath(iface, frame):
            return
        src = frame[6:12]
        if src[0] & 1:
            self._counters.complain("ethernet.multicastSource")
            return
        if not self._learn(iface, src, self._clock.seconds()):
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
                try:
                    self.receiveFrame(port, frame)
                except Exception:
                    # One frame's failure costs that frame, not the rest of
                    # the read.
                    self._counters.failure("link.frame", getattr(port, "name", ""))
        finally:
            batch.depth -= 1
            if not batch.depth:
                batch.end()

    def linkOffloads(self, mac: bytes) -> bool:
        """
        Whether the live link that holds C{mac} negotiated offload.
        """
        iface = self._table.get(mac)
        return iface is not None and iface.up and getattr(iface.port, "offload", False)

    def forwardParts(self, port, parts, vnet=None):
        """
        L{forward} for a frame the gateway built in pieces (its headers, then
        the payload): a port that takes pieces (C{sendFrameParts}) gets them as
        they are, so the payload is not copied on the way; any other port, the
        pcap tap and a flood get the joined frame. Unicast to an address no
        live link holds is dropped and counted, as in L{forward}.
        """
        if self._tap is not None:
            self._tap(b"".join(parts))
        dst = parts[0][0:6]
        if not dst[0] & 1:
            iface = self._table.get(dst)
            if iface is not None and iface.up:
                out = iface.port
                sendParts = getattr(out, "sendFrameParts", None)
                if vnet is not None:
                    # Only to an offload link (see linkOffloads), whose
                    # port takes the header; it segments if that changed.
                    sendParts(parts, vnet)
                elif sendParts is not None:
                    sendParts(parts)
                else:
                    out.sendFrame(b"".join(parts))
            elif iface is None:
                self._counters.values["drop.switch.unknownDestination"] += 1
            else:
                self._counters.values["drop.switch.linkDown"] += 1
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

        Unicast goes to the link that holds the address, even one not seen for
        a while (no other link can have claimed it meanwhile); to an address no
        live link holds, it is dropped and counted.
        """
        if self._tap is not None:
            self._tap(frame)
        dst = frame[0:6]
        if not dst[0] & 1:
            iface = self._table.get(dst)
            if iface is not None and iface.up:
                iface.port.sendFrame(frame)
            elif iface is None:
                self._counters.values["drop.switch.unknownDestination"] += 1
            else:
                self._counters.values["drop.switch.linkDown"] += 1
            return
        for out in self.ports:
            if out is not port:
                out.sendFrame(frame)
