"""
C{--listen-bess}: guest links over a unix C{SOCK_SEQPACKET} socket, as
gvproxy and BESS/UML-style back ends use it. Every accepted connection is a
switch port; one message is one Ethernet frame, written with one C{send}.

A zero-length message (indistinguishable from the end of the connection on a
seqpacket socket) or one longer than L{MAX_PACKET_FRAME} closes that
connection only; a frame shorter than an Ethernet header is dropped and
counted. Sending has the bounded queue of L{gvtwisted.link.datagram.PacketLink}.
"""

import errno
import os
import socket

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from gvtwisted.link.datagram import (
    MAX_PACKET_FRAME, MIN_FRAME, READ_AGAIN_ERRNOS, READS_PER_CALL, PacketLink, bindUnix,
)

ACCEPTS_PER_CALL = 16
BACKLOG = 50


class SeqpacketLink(PacketLink):
    """
    One accepted C{SOCK_SEQPACKET} connection, joined to the switch as a port.
    """

    def __init__(self, sock, makePort, counters, peerName, reactor=None):
        sock.setblocking(False)
        PacketLink.__init__(self, sock, counters, reactor)
        self.peerName = peerName
        self.connected = 1
        self._onLost = None
        self.port = makePort(peerName)
        self.port.attach(self)
        self.startReading()

    def doRead(self):
        recv_into = self.socket.recv_into
        buf = self._buffer
        for _ in range(READS_PER_CALL):
            try:
                n = recv_into(buf)
            except OSError as e:
                if e.errno in READ_AGAIN_ERRNOS:
                    return None
                if e.errno == errno.EINTR:
                    continue
                return ConnectionLost(os.strerror(e.errno))
            if n == 0:
                # End of the connection, or a zero-length message: either
                # way this link is over.
                return ConnectionDone()
            if n > MAX_PACKET_FRAME:
                self.counters.complain("link.oversizeFrame", self.peerName)
                self.log.warn("closing link {peer}: message longer than {max} bytes",
                              peer=self.peerName, max=MAX_PACKET_FRAME)
                return ConnectionLost("oversize message")
            if n < MIN_FRAME:
                self.counters.complain("link.runtFrame", f"{n} bytes from {self.peerName}")
                continue
            self.frameReceived(bytes(self._view[:n]))
            if self.disconnected:
                return None
        return None

    def _sendOne(self, frame):
        self.socket.send(frame)

    def _sendFailed(self, error):
        reason = ConnectionLost(os.strerror(error.errno))
        if error.errno == errno.EMSGSIZE:
            self.counters.complain("link.sendTooLong", self.peerName)
            return None
        # Broken connection: close it, but not from inside the caller's loop
        # (the switch may be flooding over its ports).
        self.stopReading()
        self.stopWriting()
        self.disconnecting = True
        self.reactor.callLater(0, self._lose, reason)
        return None

    def _lose(self, reason):
        if not self.disconnected:
            self.connectionLost(Failure(reason))

    def connectionLost(self, reason):
        port = self.port
        self.port = None
        self.producer = None
        PacketLink.connectionLost(self, reason)
        if port is not None:
            port.detach()
        onLost, self._onLost = self._onLost, None
        if onLost is not None:
            onLost(self)


class SeqpacketListener(FileDescriptor):
    """
    The listening C{SOCK_SEQPACKET} socket of C{--listen-bess}.

    @param makePort: called with a peer name, returns an unattached
        L{SwitchPort}.
    @ivar links: the open L{SeqpacketLink}s.
    """

    log = Logger()

    def __init__(self, path, makePort, counters, reactor=None):
        FileDescriptor.__init__(self, reactor)
        self.path = path
        self.socket = bindUnix(path, socket.SOCK_SEQPACKET)
        self.socket.listen(BACKLOG)
        self.fileno = self.socket.fileno
        self._makePort = makePort
        self.counters = counters
        self.links = set()
        self._count = 0

    def startListening(self):
        self.startReading()

    def doRead(self):
        for _ in range(ACCEPTS_PER_CALL):
            try:
                conn, _ = self.socket.accept()
            except OSError as e:
                if e.errno in READ_AGAIN_ERRNOS or e.errno in (errno.ECONNABORTED, errno.EINTR):
                    return None
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.counters.complain("link.acceptFailed", os.strerror(e.errno))
                    return None
                raise
            self._count += 1
            self.counters.increment("link.bessAccepts")
            link = SeqpacketLink(conn, self._makePort, self.counters,
                                 f"bess:{self.path}#{self._count}", self.reactor)
            self.links.add(link)
            link._onLost = self.links.discard
        return None

    def stopListening(self):
        """
        Close the listening socket and every link; remove the socket file.
        """
        for link in list(self.links):
            link.abortConnection()
        self.links.clear()
        if not self.disconnected:
            self.stopReading()
            self.connectionLost(Failure(ConnectionDone()))
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def connectionLost(self, reason):
        FileDescriptor.connectionLost(self, reason)
        self.fileno = lambda: -1
        self.socket.close()

    def logPrefix(self):
        return "SeqpacketListener"
