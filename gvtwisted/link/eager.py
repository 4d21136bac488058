"""
Write to a stream socket's transport at once rather than on the next reactor turn.

Twisted's L{FileDescriptor.write} only appends to a buffer and asks the reactor
to watch the socket for writability; the bytes leave in C{doWrite}, one reactor
iteration later, after an C{epoll_ctl} to start watching, an C{epoll_wait} that
reports the socket writable and an C{epoll_ctl} to stop. On a request/response
path (a 1-byte ping-pong through the guest link and the NAT) that is one extra
iteration and three system calls per hop, in each process on the way.

L{writeNow} and L{writeSequenceNow} send straight to the socket when nothing is
buffered ahead (so the order of bytes is kept) and hand only what the kernel did
not take to the transport's ordinary buffer, which then drains as before, with
the same flow control (a producer is paused when I{that} buffer grows). Any other
transport (TLS, a virtual TCP connection, a test's StringTransport) gets its
ordinary C{write}.
"""

import errno

from twisted.internet import tcp

from gvtwisted.reactor import turnEndScheduler

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR)


def _idle(transport) -> bool:
    """
    Whether C{transport} is a plain connected socket transport with nothing
    buffered, so that bytes sent now cannot overtake bytes written before.
    """
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def writeNow(transport, data) -> None:
    """
    Write C{data} (bytes) to C{transport}, sending at once what the socket takes.
    """
    if not data or not _idle(transport):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError as e:
        if e.errno not in _RETRY:
            # Let the transport find the error in its own doWrite and close.
            transport.write(data)
            return
        sent = 0
    if sent < len(data):
        transport.write(bytes(memoryview(data)[sent:]))


def writeSequenceNow(transport, parts) -> None:
    """
    Write the pieces C{parts} (bytes-like) to C{transport} in one C{sendmsg}
    (no joined copy), buffering what the socket did not take.
    """
    if not _idle(transport):
        transport.writeSequence(parts)
        return
    try:
        sent = transport.socket.sendmsg(parts)
    except OSError as e:
        if e.errno not in _RETRY:
            transport.writeSequence(parts)
            return
        sent = 0
    if sent == 0:
        transport.writeSequence(parts)
        return
    rest = []
    for part in parts:
        size = len(part)
        if sent >= size:
            sent -= size
            continue
        rest.append(bytes(memoryview(part)[sent:]) if sent else part)
        sent = 0
    if rest:
        transport.writeSequence(rest)


def loseWriteConnectionNow(transport) -> None:
    """
    Half-close C{transport} (C{shutdown(SHUT_WR)}) in the call when nothing is
    buffered, instead of Twisted's C{loseWriteConnection}, which asks for
    writability and shuts down in the C{doWrite} of a later turn (two
    C{epoll_ctl} calls and a reactor iteration on every NAT'd connection's
    close).

    It does what that C{doWrite} would do, in its order: a producer waiting to
    be resumed is resumed first (so the half-close waits for what it writes),
    else the write side is closed and the protocol's C{writeConnectionLost} is
    called. Anything else (bytes still buffered, another transport) gets
    Twisted's own C{loseWriteConnection}.
    """
    producer = getattr(transport, "producer", None)
    if not _idle(transport) or (
        producer is not None and (not transport.streamingProducer or transport.producerPaused)
    ):
        transport.loseWriteConnection()
        return
    transport._writeDisconnecting = True
    transport._writeDisconnected = True
    transport._closeWriteConnection()


class TurnWriter:
    """
    Frames for one socket transport: the first write of a reactor turn leaves
    at once (L{writeSequenceNow}: the latency of a request/response exchange),
    later writes of the same turn are gathered and leave together in one
    C{sendmsg} when the turn ends (the throughput of a burst: one system call
    for dozens of frames instead of one each).

    A transport without a reactor to call later (a test's StringTransport) is
    written to directly.

    @ivar maxParts: pieces gathered before they are sent without waiting for
        the end of the turn (C{sendmsg} takes at most C{IOV_MAX}, 1024).
    @ivar maxBytes: bytes gathered before they are sent without waiting: what
        the socket does not take then lands in the transport's buffer, whose
        producer pause is the link's flow control (gathered bytes are
        invisible to it).
    """

    maxParts = 512
    maxBytes = 64 * 1024

    def __init__(self, transport):
        self.transport = transport
        reactor = getattr(transport, "reactor", None)
        self._callLater = (
            None if getattr(reactor, "callLater", None) is None else turnEndScheduler(reactor)
        )
        self._parts = []
        self._bytes = 0
        self._call = None

    def writeSequence(self, parts, length=None) -> None:
        """
        Write the pieces C{parts}; C{length}, their total size, if the caller
        knows it.
        """
        if self._callLater is None:
            self.transport.writeSequence(parts)
            return
        if self._call is None:
            writeSequenceNow(self.transport, parts)
            # Marks the turn: until it runs, writes are gathered.
            self._call = self._callLater(self._endOfTurn)
            return
        gathered = self._parts
        if not _idle(self.transport):
            # The socket is full and Twisted's buffer holds the rest: write
            # through it, so that its producer pause sees every frame.
            if gathered:
                self._parts = []
                self._bytes = 0
                self.transport.writeSequence(gathered)
            self.transport.writeSequence(parts)
            return
        gathered.extend(parts)
        self._bytes += sum(map(len, parts)) if length is None else length
        if len(gathered) >= self.maxParts or self._bytes >= self.maxBytes:
            self._parts = []
            self._bytes = 0
            writeSequenceNow(self.transport, gathered)

    def writeBatch(self, parts) -> None:
        """
        Write the pieces C{parts} now, behind anything gathered this turn, in
        one C{sendmsg}: for a caller that already gathered a batch (the frames
        of one TAP read), which then needs no end-of-turn call.
        """
        if self._callLater is None:
            self.transport.writeSequence(parts)
            return
        gathered = self._parts
        if gathered:
            self._parts = []
            self._bytes = 0
            gathered.extend(parts)
            parts = gathered
        writeSequenceNow(self.transport, parts)

    def _endOfTurn(self):
        self._call = None
        gathered = self._parts
        if gathered:
            self._parts = []
            self._bytes = 0
            writeSequenceNow(self.transport, gathered)

    def cancel(self) -> None:
        """
        The connection is gone: drop what was gathered.
        """
        self._parts = []
        self._bytes = 0
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
