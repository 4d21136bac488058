"""
The shortcut for a guest's TCP segment on a connection that already exists.

At MTU 1500 a bulk upload is ~75,000 frames a second from one link, nearly all of
them in-order data of one established connection, and the daemon's CPU is the
limit (C{bench/iperf3.sh}, plain frames, MTU 1500 up). Each such frame walked the
switch (C{receiveFrame}), the gateway port, the network's Ethernet and IPv4
layers (an L{IPv4Packet} object, the neighbour check) and the demultiplexer
before its connection saw it: about half of the daemon's time per frame
(C{bench/ingress.py}, py-spy).

L{TCPFastPath} does the same checks, in one function, for exactly that case and
no other: a unicast frame to the gateway's MAC, from a MAC the switch learnt on
this very link, carrying an unfragmented IPv4 packet with a 20-byte header and a
correct header checksum, whose source address the network's neighbour table
already holds for that MAC, to a unicast address, with a TCP segment that parses
and whose connection exists and knows its link. Anything else (and everything
while a pcap tap records, or while TCP checksums are verified) returns L{False}
before any state changed, and takes the ordinary path, which then counts and
answers it as always. When it takes a frame, it makes the same changes the
ordinary path would (the switch's and the neighbour table's last-seen times, the
C{ipv4.received} counter) and hands the segment to the connection.

C{tests/test_fastpath.py} runs the same frames through a network with and without
it and requires the same frames out, bytes delivered and counters.

Within the frames of one link read it also coalesces, as a NIC's GRO does: a run
of in-order data segments of one established connection, with the same ACK
field and window, timestamps that do not go back, and flags ACK (PSH allowed), whose bytes all fit the
receive window, reaches the connection as one segment carrying all their data,
when the read ends or before any other frame is handled. A bulk upload at MTU
1500 then costs the TCP machine one segment per read instead of 43. What the
connection does with the run is what it would do with its segments one by one:
it takes the same bytes and answers with the same ACK at the end of the turn
(C{stretchAcks}; without it nothing is held). A run starts only with a segment
of more than half the MSS; out-of-order segments and segments past the receive
window are never held.
"""

from gvtwisted.wire import ipv4
from gvtwisted.wire.ipv4 import headerChecksumOK
from gvtwisted.wire.tcp import ACK, PSH, parseSegment

_IPV4_TCP_MIN = 14 + 20 + 20
_ACK = ACK
_ACK_PSH = ACK | PSH
_MASK = 0xFFFFFFFF
_HALF = 0x80000000


class TCPFastPath:
    """
    Called by the switch as C{fastPath(iface, frame)} for each frame a guest
    link delivers; returns whether it handled the frame.
    """

    def __init__(self, switch, network, demux, coalesce=True):
        """
        @param coalesce: coalesce runs of segments within a link read (see the
            module's docstring).
        """
        self._switch = switch
        self._network = network
        self._demux = demux
        config = network.config
        self._gatewayMAC = config.gatewayMAC
        self._gatewayIP = config.gatewayIPBytes
        self._broadcasts = frozenset((b"\xff\xff\xff\xff", config.broadcastIPBytes))
        self.coalesce = coalesce
        # The run being coalesced: its connection, first segment, payloads,
        # the sequence number that continues it, and the bytes it may reach.
        self._conn = None
        self._first = None
        self._parts = None
        self._next = 0
        self._room = 0
        self._flushAtEnd = False

    def __call__(self, iface, frame) -> bool:
        if self._conn is not None:
            taken = self._handle(iface, frame)
            if not taken:
                # Any other frame comes after the run.
                self.flush()
            return taken
        return self._handle(iface, frame)

    def flush(self):
        """
        Hand the run being coalesced, if any, to its connection as one segment.
        """
        conn = self._conn
        if conn is None:
            return
        seg = self._first
        parts = self._parts
        self._conn = self._first = self._parts = None
        if len(parts) > 1:
            seg.payload = b"".join(parts)
        conn.segmentReceived(seg)

    def _batchEnded(self):
        self._flushAtEnd = False
        self.flush()

    @staticmethod
    def _tsContinues(first, tsVal) -> bool:
        """
        Whether a segment's timestamp lets it join a run that began with
        C{first}: both absent, or not older than it. Then the run's outcome is
        that of its segments one by one: only the first can update the
        connection's recent timestamp (the others start right of the last ACK
        sent, RFC 7323 4.3), and none would fail PAWS after it; the echoed
        timestamp is read only where an ACK advances, which only the first
        can do (they share the ACK field).
        """
        if first is None or tsVal is None:
            return first is tsVal
        return (tsVal - first) & _MASK < _HALF

    def _hold(self, conn, seg) -> bool:
        """
        Start or continue a run with C{seg} if it may be coalesced; otherwise
        hand on the run held so far (C{seg} is then the caller's).
        """
        held = self._conn
        payload = seg.payload
        plen = len(payload)
        if held is not None:
            first = self._first
            if (
                held is conn
                and plen
                and seg.seq == self._next
                and seg.ack == first.ack
                and seg.window == first.window
                and self._tsContinues(first.tsVal, seg.tsVal)
                and (seg.flags == _ACK or seg.flags == _ACK_PSH)
                and plen <= self._room
            ):
                self._parts.append(payload)
                self._next = (self._next + plen) & _MASK
                self._room -= plen
                first.flags |= seg.flags
                return True
            self.flush()
        if not self.coalesce or not (seg.flags == _ACK or seg.flags == _ACK_PSH):
            return False
        batch = self._switch.batch
        if not batch.depth:
            return False
        room = conn.runRoom(seg)
        if room < 0:
            return False
        self._conn = conn
        self._first = seg
        self._parts = [payload]
        self._next = (seg.seq + plen) & _MASK
        self._room = room
        if not self._flushAtEnd:
            self._flushAtEnd = True
            batch.atEnd(self._batchEnded, first=True)
        return True

    def _handle(self, iface, frame) -> bool:
        if (
            len(frame) < _IPV4_TCP_MIN
            or frame[12] != 0x08
            or frame[13] != 0x00
            or frame[14] != 0x45
            or frame[23] != ipv4.PROTO_TCP
            or frame[20] & 0x3F
            or frame[21]
        ):
            # Not IPv4 with a 20-byte header carrying TCP, or a fragment.
            return False
        network = self._network
        if frame[0:6] != self._gatewayMAC or network.verifyChecksums:
            return False
        src = frame[6:12]
        switch = self._switch
        if switch._table.get(src) is not iface:
            return False
        total = (frame[16] << 8) | frame[17]
        if total < 40 or total > len(frame) - 14:
            return False
        if not headerChecksumOK(frame[14:34]):
            return False
        ipSrc = frame[26:30]
        neighbour = network._arpCache.get(ipSrc)
        if neighbour is None or neighbour[0] != src:
            return False
        ipDst = frame[30:34]
        if ipDst in self._broadcasts or (ipDst != self._gatewayIP and network.nat is None):
            return False
        try:
            seg = parseSegment(memoryview(frame)[34:14 + total])
        except ValueError:
            return False
        demux = self._demux
        key = (ipSrc, seg.srcPort, ipDst, seg.dstPort)
        conn = demux._conns.get(key)
        if conn is None or conn.link is None:
            return False
        # Taken: what the ordinary path would have changed on the way.
        now = switch._clock.seconds()
        macs = iface.macs
        if macs[src] is not None:
            macs[src] = now
        neighbour[1] = now
        network.counters.increment("ipv4.received")
        if self._hold(conn, seg):
            return True
        if conn.segmentReceived(seg):
            # A SYN that reopened a 4-tuple in TIME_WAIT: on as the
            # demultiplexer goes on.
            demux.segmentWithoutConnection(ipv4.parse(frame), seg, ipDst == self._gatewayIP, key)
        return True
