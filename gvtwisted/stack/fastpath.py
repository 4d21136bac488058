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
"""

from gvtwisted.wire import ipv4
from gvtwisted.wire.ipv4 import headerChecksumOK
from gvtwisted.wire.tcp import parseSegment

_IPV4_TCP_MIN = 14 + 20 + 20


class TCPFastPath:
    """
    Called by the switch as C{fastPath(iface, frame)} for each frame a guest
    link delivers; returns whether it handled the frame.
    """

    def __init__(self, switch, network, demux):
        self._switch = switch
        self._network = network
        self._demux = demux
        config = network.config
        self._gatewayMAC = config.gatewayMAC
        self._gatewayIP = config.gatewayIPBytes
        self._broadcasts = frozenset((b"\xff\xff\xff\xff", config.broadcastIPBytes))

    def __call__(self, iface, frame) -> bool:
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
        if conn.segmentReceived(seg):
            # A SYN that reopened a 4-tuple in TIME_WAIT: on as the
            # demultiplexer goes on.
            demux.segmentWithoutConnection(ipv4.parse(frame), seg, ipDst == self._gatewayIP, key)
        return True
