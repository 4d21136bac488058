"""
TCP over IPv6: the IPv4 demultiplexer (L{gvtwisted.stack.tcpdemux}) with the
address family changed, over the IPv6 gateway.

The connection machine is the same L{TCPConnection}: its checksum folds the
pseudo header of either family the same way, and its addresses are text of
either family. What differs is here: 16-byte addresses in the table, IPv6
text for listeners and peers, a maximum segment size 20 bytes smaller (the
IPv6 header is 40 bytes), segments sent with C{sendIPv6}, and no broadcast.
"""

import ipaddress
from functools import partial

from twisted.internet.address import IPv6Address
from twisted.internet.error import CannotListenError

from gvtwisted.stack.tcp import TCPConnection
from gvtwisted.stack.tcpdemux import TCPDemux, VirtualTCPPort
from gvtwisted.wire import ipv6
from gvtwisted.wire import tcp as wiretcp

ANY6 = b"\x00" * 16


def _text(address: bytes) -> str:
    return str(ipaddress.IPv6Address(address))


class VirtualTCP6Port(VirtualTCPPort):
    def getHost(self):
        ip, port = self._key
        return IPv6Address("TCP", _text(ip), port)


class TCP6Demux(TCPDemux):
    """
    @ivar network: the L{gvtwisted.stack.ipv6gateway.IPv6Gateway}.
    @ivar nat: an object with C{tcpSyn(conn)}, or L{None}.
    """

    def __init__(self, reactor, gateway, counters, maxConnections=16384):
        TCPDemux.__init__(self, reactor, gateway, counters, maxConnections)
        self.mss = gateway.config.mtu - 60

    def listenTCP(self, port, factory, backlog=50, interface=""):
        key = (ipaddress.IPv6Address(interface).packed if interface else ANY6, port)
        if key in self._listeners:
            raise CannotListenError(interface, port, "address already in use")
        listener = VirtualTCP6Port(self, key, factory)
        self._listeners[key] = listener
        listener.startListening()
        return listener

    def _pack(self, host):
        return ipaddress.IPv6Address(host).packed

    def _defaultSource(self):
        return self.network.config.hostIP6Bytes

    def _address(self, host, port):
        return IPv6Address("TCP", host, port)

    def segmentReceived(self, packet, local):
        """
        A TCP segment from a guest: to the gateway (C{local}) or through the
        NAT.
        """
        payload = packet.payload
        if self.network.verifyChecksums and not wiretcp.verifyChecksum(
                packet.src, packet.dst, payload):
            self.counters.complain("tcp6.checksum")
            return
        try:
            seg = wiretcp.parseSegment(payload)
        except ValueError as e:
            self.counters.complain("tcp6.malformed", str(e))
            return
        key = (packet.src, seg.srcPort, packet.dst, seg.dstPort)
        conn = self._conns.get(key)
        if conn is not None:
            if conn.link is None:
                # An active open whose guest was unknown when it started.
                self._attachLink(conn, packet.src)
                self._resolved(conn, packet.src)
            if not conn.segmentReceived(seg):
                return
        flags = seg.flags
        if flags & wiretcp.RST:
            return
        if ipv6.isMulticast(packet.dst):
            self.counters.increment("drop.tcp6.multicast")
            return
        if not flags & wiretcp.SYN or flags & wiretcp.ACK:
            self._reset(packet, seg)
            return
        if len(self._conns) >= self.maxConnections:
            self.counters.complain("tcp.tooManyConnections")
            self._reset(packet, seg)
            return
        if not local:
            admits = getattr(self.nat, "admits", None)
            if admits is not None and not admits(self.network.linkFor(packet.src)):
                # Past the link's dial cap: dropped, the guest retransmits.
                return
        conn = self._makeConnection(key)
        conn.receiveSyn(seg)
        if local:
            listener = self._listeners.get((packet.dst, seg.dstPort)) or \
                self._listeners.get((ANY6, seg.dstPort))
            protocol = None
            if listener is not None:
                try:
                    protocol = listener.factory.buildProtocol(
                        IPv6Address("TCP", _text(packet.src), seg.srcPort))
                except Exception:
                    # A factory that raises costs this connection only.
                    self.counters.failure("tcp6.buildProtocol", f"port {seg.dstPort}")
                    protocol = None
            if protocol is None:
                self.counters.increment("tcp6.refusedLocal")
                conn.refuse()
                return
            conn.setProtocol(protocol)
            conn.acceptSyn()
        elif self.nat is not None:
            try:
                self.nat.tcpSyn(conn)
            except Exception:
                self.counters.failure("nat66.tcp", conn.localAddr[0])
                conn.abortConnection()
        else:
            conn.refuse()

    def _makeConnection(self, key):
        remote, remotePort, local, localPort = key
        conn = TCPConnection(
            self.reactor,
            localAddr=(_text(local), localPort),
            remoteAddr=(_text(remote), remotePort),
            send=partial(self.network.sendIPv6, local, remote, ipv6.PROTO_TCP),
            mss=self.mss,
            onClose=partial(self._closed, key),
            counters=self.counters,
        )
        # Deliveries batched per link read, as over IPv4 (the IPv4 frame
        # templates are not for this family: sendIPv6 frames each segment).
        conn.batch = self._batch
        self._conns[key] = conn
        self.counters.increment("tcp6.connectionsOpened")
        # The guest's link interface owns the connection: its pause state
        # and its end (a link gone past its grace period) reach it there.
        self._attachLink(conn, remote)
        return conn

    def _reset(self, packet, seg):
        self.counters.increment("tcp6.resetsSent")
        self.network.refuseTCP(packet)
