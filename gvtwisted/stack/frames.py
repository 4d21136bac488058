"""
Prebuilt Ethernet + IPv4 + TCP headers for the data segments of one connection.

Every data segment the gateway sends toward a guest differs from the previous one
of its connection in a handful of fields only: the IPv4 total length and header
checksum, the TCP sequence and acknowledgement numbers, flags, window and
checksum, and the two timestamp values. So a connection keeps the 66 bytes of
its headers (14 Ethernet, 20 IPv4, 20 TCP, 12 for NOP NOP TIMESTAMP) in a
bytearray built once, fills those fields in place with C{pack_into}, and hands
the header and the payload to the link separately: the payload is never
concatenated to anything on its way to the link's transport.

Both checksums are folded from precomputed sums of the constant fields: the IPv4
header checksum adds only the total length (the identification is always 0, as
for every unfragmented packet the gateway sends), the TCP checksum the varying
header words and the payload's fold (L{gvtwisted.wire.checksum.fold}). The bytes
are exactly what L{gvtwisted.wire.ipv4.buildHeader} and
L{gvtwisted.wire.tcp.buildSegment} produce (the tests compare them).
"""

import struct

from gvtwisted.wire import ethernet, ipv4, virtio
from gvtwisted.wire.checksum import fold
from gvtwisted.wire.tcp import OPT_NOP, OPT_TIMESTAMP, PROTOCOL_NUMBER

HEADER_LENGTH = 66
_TCP_HEADER_LENGTH = 32

_TEMPLATE = struct.Struct("!6s6sH" "BBHHHBBH4s4s" "HHIIBBHHH" "BBBBII")
_IP_LENGTH = struct.Struct("!H")
_IP_CHECKSUM = struct.Struct("!H")
_TCP_FIELDS = struct.Struct("!IIBBHH")
_TIMESTAMPS = struct.Struct("!II")

_IP_LENGTH_AT = 16
_IP_CHECKSUM_AT = 24
_TCP_FIELDS_AT = 38
_TIMESTAMPS_AT = 58
_TCP_AT = 34
_CHECKSUM_OFFSET = 16

# The largest TCP payload of a super-segment: an IPv4 packet of 64 KiB less
# the 20-byte IPv4 and 32-byte TCP headers.
MAX_SUPER_PAYLOAD = 0xFFFF - 20 - _TCP_HEADER_LENGTH


class TCPFrameTemplate:
    """
    The headers of one connection's data segments with timestamps.

    @ivar dstMAC: the guest's MAC the template was built for; the sender
        rebuilds the template when the guest's address moves.
    """

    __slots__ = ("dstMAC", "_buffer", "_ipBase", "_tcpBase", "_pseudoBase")

    def __init__(self, srcMAC, dstMAC, srcIP, dstIP, srcPort, dstPort):
        self.dstMAC = dstMAC
        self._buffer = bytearray(_TEMPLATE.pack(
            dstMAC, srcMAC, ethernet.TYPE_IPV4,
            0x45, 0, 0, 0, ipv4.FLAG_DF, 64, PROTOCOL_NUMBER, 0, srcIP, dstIP,
            srcPort, dstPort, 0, 0, _TCP_HEADER_LENGTH << 2, 0, 0, 0, 0,
            OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, 0, 0))
        # The IPv4 header's words with the length and checksum fields at 0.
        self._ipBase = fold(self._buffer[14:34])
        # The pseudo-header (addresses, protocol), the ports, the data offset
        # word's constant half and the timestamp option's kind and length:
        # everything in the TCP sum that no segment changes.
        self._tcpBase = (int.from_bytes(srcIP + dstIP, "big") + PROTOCOL_NUMBER
                         + srcPort + dstPort + (_TCP_HEADER_LENGTH << 10)
                         + ((OPT_NOP << 8) | OPT_NOP)
                         + ((OPT_TIMESTAMP << 8) | 10)) % 0xFFFF
        # The pseudo-header's addresses and protocol: what a partial checksum
        # holds, with the TCP length (offload).
        self._pseudoBase = (int.from_bytes(srcIP + dstIP, "big") + PROTOCOL_NUMBER) % 0xFFFF

    def fill(self, seq, ack, flags, window, tsVal, tsEcr, payload, payloadFold=None) -> bytes:
        """
        The 66 header bytes of a segment that carries C{payload}.

        @param seq: sequence number; reduced modulo 2**32, as are C{ack},
            C{tsVal} and C{tsEcr}.
        @param window: the window field, already scaled down.
        @param payload: bytes-like, so long that the packet fits the MTU.
        @param payloadFold: L{fold} of C{payload} if the caller has it already
            (L{gvtwisted.wire.checksum.foldEach} over a burst).
        """
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF
        tsVal &= 0xFFFFFFFF
        tsEcr &= 0xFFFFFFFF
        tcpLength = _TCP_HEADER_LENGTH + len(payload)
        buffer = self._buffer
        total = self._ipBase + 20 + tcpLength
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        _IP_LENGTH.pack_into(buffer, _IP_LENGTH_AT, 20 + tcpLength)
        _IP_CHECKSUM.pack_into(buffer, _IP_CHECKSUM_AT, 0xFFFF - total)
        total = (self._tcpBase + tcpLength + (seq >> 16) + (seq & 0xFFFF)
                 + (ack >> 16) + (ack & 0xFFFF) + flags + window
                 + (tsVal >> 16) + (tsVal & 0xFFFF) + (tsEcr >> 16) + (tsEcr & 0xFFFF)
                 + (fold(payload) if payloadFold is None else payloadFold)) % 0xFFFF
        _TCP_FIELDS.pack_into(buffer, _TCP_FIELDS_AT, seq, ack, _TCP_HEADER_LENGTH << 2,
                              flags, window, 0xFFFF - total if total else 0)
        _TIMESTAMPS.pack_into(buffer, _TIMESTAMPS_AT, tsVal, tsEcr)
        return bytes(buffer)

    def fillPartial(self, seq, ack, flags, window, tsVal, tsEcr, payloadLength) -> bytes:
        """
        L{fill} for a link with offload: the TCP checksum field holds only the
        pseudo-header's sum (not complemented), which the guest's kernel
        completes over the segment (C{VIRTIO_NET_HDR_F_NEEDS_CSUM}); nothing
        of the payload is summed here, and it may be up to
        L{MAX_SUPER_PAYLOAD} bytes long.
        """
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF
        tcpLength = _TCP_HEADER_LENGTH + payloadLength
        buffer = self._buffer
        total = self._ipBase + 20 + tcpLength
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        _IP_LENGTH.pack_into(buffer, _IP_LENGTH_AT, 20 + tcpLength)
        _IP_CHECKSUM.pack_into(buffer, _IP_CHECKSUM_AT, 0xFFFF - total)
        pseudo = (self._pseudoBase + tcpLength) % 0xFFFF
        _TCP_FIELDS.pack_into(buffer, _TCP_FIELDS_AT, seq, ack, _TCP_HEADER_LENGTH << 2,
                              flags, window, pseudo)
        _TIMESTAMPS.pack_into(buffer, _TIMESTAMPS_AT, tsVal & 0xFFFFFFFF, tsEcr & 0xFFFFFFFF)
        return bytes(buffer)


class TCPFrameSender:
    """
    Sends one connection's data segments as prebuilt headers plus the payload,
    straight to the switch, for as long as that is possible: the guest's MAC is
    known and the packet fits the MTU. Otherwise the caller builds the segment
    the general way (which queues for ARP, or fragments).

    The template is made at the first data segment, so an idle connection costs
    only this small object.
    """

    __slots__ = ("_network", "_srcIP", "_dstIP", "_srcPort", "_dstPort", "_template",
                 "_gsoSize")

    def __init__(self, network, srcIP, dstIP, srcPort, dstPort):
        self._network = network
        self._srcIP = srcIP
        self._dstIP = dstIP
        self._srcPort = srcPort
        self._dstPort = dstPort
        self._template = None
        # The link MSS while the guest's link has offload, else 0.
        self._gsoSize = 0

    def segmentSize(self, mss: int) -> int:
        """
        How much payload one segment may carry: C{mss}, or, while the
        guest's link negotiated offload, as many whole C{mss} as a 64 KiB
        super-segment holds (the guest's kernel cuts it into C{mss} pieces).
        """
        network = self._network
        mac = network.macFor(self._dstIP)
        if mac is not None and network.linkOffloads(mac):
            self._gsoSize = mss
            return MAX_SUPER_PAYLOAD // mss * mss
        self._gsoSize = 0
        return mss

    def __call__(self, seq, ack, flags, window, tsVal, tsEcr, payload, payloadFold=None) -> bool:
        """
        Send the segment if this path can; C{False} if the caller must.
        """
        network = self._network
        mac = network.macFor(self._dstIP)
        if mac is None:
            return False
        n = len(payload)
        gsoSize = self._gsoSize
        if gsoSize and n <= MAX_SUPER_PAYLOAD and network.linkOffloads(mac):
            template = self._template
            if template is None or template.dstMAC != mac:
                template = self._template = TCPFrameTemplate(
                    network.config.gatewayMAC, mac, self._srcIP, self._dstIP,
                    self._srcPort, self._dstPort)
            vnet = virtio.pack(
                virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4 if n > gsoSize else virtio.GSO_NONE,
                HEADER_LENGTH, gsoSize, _TCP_AT, _CHECKSUM_OFFSET)
            network.sendFrameParts(
                (template.fillPartial(seq, ack, flags, window, tsVal, tsEcr, n), payload), vnet)
            return True
        if HEADER_LENGTH - 14 + n > network.config.mtu:
            return False
        template = self._template
        if template is None or template.dstMAC != mac:
            template = self._template = TCPFrameTemplate(
                network.config.gatewayMAC, mac, self._srcIP, self._dstIP,
                self._srcPort, self._dstPort)
        network.sendFrameParts((template.fill(seq, ack, flags, window, tsVal, tsEcr, payload,
                                              payloadFold), payload))
        return True
