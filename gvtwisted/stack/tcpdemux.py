"""
The table of virtual TCP connections, and the reactor-like C{listenTCP} and
C{connectTCP} on virtual addresses.

Segments from the guest are checked (header; the checksum too when the network's
C{verifyChecksums} is on) and handed to the
connection of their 4-tuple. A SYN for a new 4-tuple becomes a new
L{TCPConnection}: to a port the gateway listens on, it is accepted at once; to
any other address it goes to the NAT, which dials the real destination first and
then accepts or refuses. Anything else that matches no connection is answered
with RST, as RFC 9293 says for a closed port.

Caps: C{maxConnections} connections in all, the guests' and those C{connectTCP}
opens into them alike; past it a SYN is refused (counted) and C{connectTCP}
fails. C{maxBufferedBytes}: one L{BufferBudget} shared by every connection
bounds the bytes they buffer in all; past it their windows close.
"""

import os
import socket
from functools import partial

from zope.interface import implementer

from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    CannotListenError, ConnectError, ConnectionLost, ConnectionRefusedError, TimeoutError,
    UserError,
)
from twisted.internet.interfaces import IConnector, IListeningPort
from twisted.python.failure import Failure

from gvtwisted.stack.frames import TCPFrameSender
from gvtwisted.stack.tcp import SYN_PENDING, SYN_RCVD, SYN_SENT, TCPConnection
from gvtwisted.stack.tcp.budget import BufferBudget
from gvtwisted.wire import ipv4
from gvtwisted.wire import tcp as wiretcp

ANY = b"\x00\x00\x00\x00"
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
EPHEMERAL = (32768, 60999)
_HANDSHAKE = (SYN_PENDING, SYN_SENT, SYN_RCVD)


@implementer(IListeningPort)
class VirtualTCPPort:
    """
    A virtual TCP port listening on the gateway side.
    """

    def __init__(self, demux, key, factory):
        self._demux = demux
        self._key = key
        self.factory = factory

    def startListening(self):
        self.factory.doStart()

    def stopListening(self):
        if self._demux._listeners.get(self._key) is self:
            del self._demux._listeners[self._key]
            self.factory.doStop()

    def getHost(self):
        ip, port = self._key
        return IPv4Address("TCP", socket.inet_ntoa(ip), port)


@implementer(IConnector)
class VirtualConnector:
    """
    An active open into the guest, as C{connectTCP} returns it.
    """

    def __init__(self, demux, conn, factory, destination):
        self._demux = demux
        self.conn = conn
        self.factory = factory
        self._destination = destination

    def stopConnecting(self):
        """
        Give up a connection attempt still in progress; the factory hears
        C{clientConnectionFailed(UserError)}, as with Twisted's connectors.
        """
        conn = self.conn
        if conn is not None and conn.state == "SYN_SENT":
            failed, conn.onConnectFailed = conn.onConnectFailed, None
            conn.abortConnection()
            if failed is not None:
                failed(UserError())

    def disconnect(self):
        if self.conn is not None:
            self.conn.abortConnection()

    def connect(self):
        raise NotImplementedError("virtual connectors do not reconnect")

    def getDestination(self):
        return self._destination


class TCPDemux:
    """
    @ivar nat: an object with C{tcpSyn(conn)}, or L{None}.
    @ivar frameTemplates: whether connections send their data segments as
        prebuilt headers plus payload (L{TCPFrameSender}); the same bytes as
        without, so only the tests that compare both turn it off.
    """

    frameTemplates = True

    def __init__(self, reactor, network, counters, maxConnections=16384,
                 maxBufferedBytes=512 * 1024 * 1024):
        self.reactor = reactor
        self.network = network
        self.counters = counters
        self.maxConnections = maxConnections
        # Owned here, shared by every connection (--max-buffered-bytes).
        self.budget = BufferBudget(reactor, maxBufferedBytes, counters)
        self.nat = None
        self.mss = network.config.mtu - 40
        self._conns = {}
        self._listeners = {}
        # guest ip -> connections opened into it before its link was known.
        self._unresolved = {}
        # The switch's batch of frames from one link read (absent on test doubles).
        self._batch = getattr(getattr(network, "switch", None), "batch", None)
        self._nextPort = EPHEMERAL[0] + int.from_bytes(os.urandom(2), "big") % (
            EPHEMERAL[1] - EPHEMERAL[0])

    # -- reactor-like API ----------------------------------------------------

    def listenTCP(self, port, factory, backlog=50, interface=""):
        key = (socket.inet_aton(interface) if interface else ANY, port)
        if key in self._listeners:
            raise CannotListenError(interface, port, "address already in use")
        listener = VirtualTCPPort(self, key, factory)
        self._listeners[key] = listener
        listener.startListening()
        return listener

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        """
        Open a connection into the guest at C{host}:C{port}. It appears there
        as coming from C{bindAddress} (C{(ip, port)}; the host address and an
        ephemeral port by default).
        """
        remote = self._pack(host)
        if bindAddress is not None and bindAddress[0]:
            local = self._pack(bindAddress[0])
        else:
            local = self._defaultSource()
        localPort = bindAddress[1] if bindAddress is not None and bindAddress[1] else \
            self._ephemeral(local, remote, port)
        key = (remote, port, local, localPort)
        destination = self._address(host, port)
        if len(self._conns) >= self.maxConnections:
            # Connections into the guest count against the same cap as the
            # guest's own: fail as Twisted's connectors do, asynchronously.
            self.counters.complain("tcp.tooManyConnections", f"connect to {host}:{port}")
            connector = VirtualConnector(self, None, factory, destination)
            factory.doStart()
            factory.startedConnecting(connector)
            reason = Failure(ConnectError(string=f"{self.maxConnections} connections open"))

            def refused():
                factory.clientConnectionFailed(connector, reason)
                factory.doStop()

            self.reactor.callLater(0, refused)
            return connector
        conn = self._makeConnection(key)
        connector = VirtualConnector(self, conn, factory, destination)
        factory.doStart()
        factory.startedConnecting(connector)
        protocol = factory.buildProtocol(destination)
        if protocol is None:
            self._forget(conn)
            return connector
        conn.setProtocol(protocol)

        def failed(reason):
            if timer.active():
                timer.cancel()
            if not isinstance(reason, Failure):
                reason = Failure(reason)
            factory.clientConnectionFailed(connector, reason)
            factory.doStop()

        def timedOut():
            # The guest never answered: give up sooner than SYN retries would.
            if conn.state == "SYN_SENT":
                conn.onConnectFailed = None
                conn.abortConnection()
                failed(TimeoutError(string=f"no answer from {host}:{port} in {timeout} s"))

        timer = self.reactor.callLater(timeout, timedOut)
        originalMade = protocol.makeConnection

        def made(transport):
            if timer.active():
                timer.cancel()
            return originalMade(transport)

        protocol.makeConnection = made
        originalLost = protocol.connectionLost

        def lost(reason):
            try:
                return originalLost(reason)
            finally:
                factory.clientConnectionLost(connector, reason)
                factory.doStop()

        protocol.connectionLost = lost
        conn.onConnectFailed = failed
        if conn.link is None:
            self._unresolved.setdefault(remote, set()).add(conn)
        conn.connect()
        return connector

    # The address family (TCP6Demux overrides these).

    def _pack(self, host):
        return socket.inet_aton(host)

    def _defaultSource(self):
        return self.network.config.hostIPBytes

    def _address(self, host, port):
        return IPv4Address("TCP", host, port)

    # -- what the address family decides (TCP6Demux overrides them) ----------

    # The prefix of the counters of this family's segments ("tcp6" for IPv6).
    counterPrefix = "tcp"
    # The counter of a NAT hand-off that raised.
    natFailure = "nat.tcp"
    # The wildcard address of a listener.
    anyAddress = ANY

    def _text(self, ip):
        return socket.inet_ntoa(ip)

    def _undeliverable(self, dst):
        """
        The drop counter for a segment to C{dst} that gets no answer at all,
        or L{None}: RFC 1122 4.2.3.10, a SYN (or anything) to a broadcast
        address is discarded without an answer.
        """
        if dst == LIMITED_BROADCAST or dst == self.network.config.broadcastIPBytes:
            return "drop.tcp.broadcast"
        return None

    def _ephemeral(self, local, remote, remotePort):
        low, high = EPHEMERAL
        for _ in range(high - low):
            port = self._nextPort
            self._nextPort = low + (port + 1 - low) % (high - low)
            if (remote, remotePort, local, port) not in self._conns:
                return port
        raise ConnectError(string="no ephemeral port is free")

    # -- segments in -----------------------------------------------------------

    def segmentReceived(self, packet, local):
        payload = packet.payload
        if self.network.verifyChecksums and not wiretcp.verifyChecksum(
                packet.src, packet.dst, payload):
            self.counters.complain(self.counterPrefix + ".checksum")
            return
        try:
            seg = wiretcp.parseSegment(payload)
        except ValueError as e:
            self.counters.complain(self.counterPrefix + ".malformed", str(e))
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
            # A SYN reopened a 4-tuple in TIME_WAIT: the old connection closed
            # itself, and the SYN starts a new one.
        self.segmentWithoutConnection(packet, seg, local, key)

    def segmentWithoutConnection(self, packet, seg, local, key):
        """
        A parsed segment that no connection took: a SYN that opens one, or
        an answer (a RST, or nothing) to anything else. (Also the way on for
        a segment L{gvtwisted.stack.fastpath} handed to a connection that
        closed itself for a SYN.)
        """
        flags = seg.flags
        if flags & wiretcp.RST:
            return
        dropped = self._undeliverable(packet.dst)
        if dropped is not None:
            self.counters.increment(dropped)
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
                # Dropped: the guest retransmits its SYN.
                return
        conn = self._makeConnection(key)
        conn.receiveSyn(seg)
        if local:
            listener = self._listeners.get((packet.dst, seg.dstPort)) or \
                self._listeners.get((self.anyAddress, seg.dstPort))
            protocol = None
            if listener is not None:
                try:
                    protocol = listener.factory.buildProtocol(
                        self._address(self._text(packet.src), seg.srcPort))
                except Exception:
                    # A factory that raises costs this connection only.
                    self.counters.failure(self.counterPrefix + ".buildProtocol",
                                          f"port {seg.dstPort}")
                    protocol = None
            if protocol is None:
                self.counters.increment(self.counterPrefix + ".refusedLocal")
                conn.refuse()
                return
            conn.setProtocol(protocol)
            conn.acceptSyn()
        elif self.nat is not None:
            try:
                self.nat.tcpSyn(conn)
            except Exception:
                self.counters.failure(self.natFailure, conn.localAddr[0])
                conn.abortConnection()
        else:
            conn.refuse()

    def _makeConnection(self, key):
        remote, remotePort, local, localPort = key
        conn = TCPConnection(
            self.reactor,
            localAddr=(socket.inet_ntoa(local), localPort),
            remoteAddr=(socket.inet_ntoa(remote), remotePort),
            send=partial(self.network.sendIPv4, local, remote, ipv4.PROTO_TCP),
            mss=self.mss,
            onClose=partial(self._closed, key),
            counters=self.counters,
        )
        if self.frameTemplates:
            conn.frameSender = TCPFrameSender(self.network, local, remote, localPort, remotePort)
        conn.batch = self._batch
        conn.budget = self.budget
        self._conns[key] = conn
        self.counters.increment("tcp.connectionsOpened")
        self._attachLink(conn, remote)
        return conn

    def _attachLink(self, conn, remote):
        link = self.network.linkFor(remote)
        if link is not None:
            link.addConnection(conn)

    def _resolved(self, conn, remote):
        waiting = self._unresolved.get(remote)
        if waiting is not None:
            waiting.discard(conn)
            if not waiting:
                del self._unresolved[remote]

    def unresolved(self, remote):
        """
        ARP for the guest address C{remote} went unanswered: the connections
        opened into it that are still waiting for their SYN-ACK fail now (a
        forwarder then resets its host client) instead of after their
        timeout.
        """
        for conn in list(self._unresolved.pop(remote, ())):
            if conn.state is SYN_SENT:
                self.counters.increment("tcp.unresolvedGuest")
                conn._failHandshake(ConnectError(
                    string=f"no guest answers for {socket.inet_ntoa(remote)}"))

    def _closed(self, key, conn):
        if self._conns.get(key) is conn:
            del self._conns[key]
        if conn.link is None:
            self._resolved(conn, key[0])
        link = conn.link
        if link is not None:
            link.removeConnection(conn)

    def _forget(self, conn):
        for key, c in list(self._conns.items()):
            if c is conn:
                self._closed(key, conn)

    def _reset(self, packet, seg):
        """
        Answer a segment that belongs to no connection with RST (RFC 9293 3.10.7.1).
        """
        self.counters.increment("tcp.resetsSent")
        if seg.flags & wiretcp.ACK:
            segment = wiretcp.buildSegment(packet.dst, packet.src, seg.dstPort, seg.srcPort,
                                           seg.ack, 0, wiretcp.RST, 0)
        else:
            length = len(seg.payload) + (1 if seg.flags & wiretcp.SYN else 0) + \
                (1 if seg.flags & wiretcp.FIN else 0)
            segment = wiretcp.buildSegment(packet.dst, packet.src, seg.dstPort, seg.srcPort,
                                           0, (seg.seq + length) & 0xFFFFFFFF,
                                           wiretcp.RST | wiretcp.ACK, 0)
        self.network.sendIPv4(packet.dst, packet.src, ipv4.PROTO_TCP, segment)

    def connectionCount(self):
        return len(self._conns)

    # -- the guest's link ------------------------------------------------------

    def linkExpired(self, iface):
        """
        The link C{iface} stayed down for its whole grace period: abort every
        connection whose guest was behind it. A connection still in its
        handshake fails as if unanswered (a NAT dial in flight is cancelled);
        an open one is aborted, so its protocol (and the host socket a NAT
        connection splices it to) is closed.
        """
        for conn in list(iface.conns):
            iface.removeConnection(conn)
            self.counters.increment("tcp.abortedLinkGone")
            if conn.state in _HANDSHAKE:
                conn._failHandshake(ConnectionLost("the guest's link is gone"))
            else:
                conn.abortConnection()


__all__ = ["TCPDemux", "VirtualTCPPort", "VirtualConnector",
           "ConnectionRefusedError", "TimeoutError"]
