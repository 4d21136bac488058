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

    # -- what the address family decides (the segment path is TCPDemux's) ------

    counterPrefix = "tcp6"
    natFailure = "nat66.tcp"
    anyAddress = ANY6

    def _text(self, ip):
        return _text(ip)

    def _undeliverable(self, dst):
        # No broadcast in IPv6; a multicast destination gets no answer.
        return "drop.tcp6.multicast" if ipv6.isMulticast(dst) else None

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
