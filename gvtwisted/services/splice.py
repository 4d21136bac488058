"""
Join two Twisted connections byte for byte, in the style of
C{twisted.protocols.portforward}, with flow control and half-close.

Each side registers as the other's streaming producer: when one side's transport
has too much buffered, it pauses the other side's reading (for a virtual TCP
connection, that shrinks the window the guest sees; for a host socket, it stops
reading the socket). Nothing grows without bound.

An end of stream on one side becomes a half-close (FIN) on the other; the pair is
closed when both directions are done, or at once when either side is reset.
"""

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from gvtwisted.link.eager import loseWriteConnectionNow, writeNow


@implementer(IHalfCloseableProtocol)
class SpliceSide(Protocol):
    """
    One side of a splice; C{peer} is the other side, set by L{splice}.
    """

    peer = None
    readDone = False
    lost = False
    bytesIn = 0

    def __init__(self, counters=None, counterName=None):
        self._counters = counters
        self._counterName = counterName

    # Host sockets are read this much at a time: each read becomes one write to
    # the virtual connection, whose last segment is short, so bigger reads mean
    # fewer runt segments toward the guest (and fewer reactor turns).
    readSize = 256 * 1024

    # What one side holds for a peer not connected yet (a host server's banner,
    # sent before the guest acknowledged its SYN-ACK) before it stops reading.
    pendingLimit = 256 * 1024

    # Called once, at the end of connectionMade: how a dial learns it
    # connected without an endpoint's wrapping protocol and Deferred.
    onConnected = None

    def connectionMade(self):
        if getattr(self.transport, "bufferSize", None) is not None:
            self.transport.bufferSize = self.readSize
        peer = self.peer
        if peer is not None and peer.transport is not None:
            self._register()
        # Otherwise read on: what arrives before the other side exists waits
        # in _pending, up to pendingLimit (no pause and resume, two epoll_ctl
        # calls, on every NAT'd connection).
        hook = self.onConnected
        if hook is not None:
            self.onConnected = None
            hook()

    def _register(self):
        """
        Make each side the producer of the other once both are connected.
        """
        peer = self.peer
        if peer._pending:
            data, peer._pending = b"".join(peer._pending), []
            self.transport.write(data)
        if peer.readDone:
            self._halfClose()
        peer.transport.resumeProducing()
        # Last, so that a pause a full buffer asks for at registration sticks.
        self.transport.registerProducer(peer.transport, True)
        peer.transport.registerProducer(self.transport, True)

    _pending = ()
    _pendingBytes = 0

    def dataReceived(self, data):
        if self._counters is not None:
            self._counters.increment(self._counterName, len(data))
        peer = self.peer
        if peer is None or peer.transport is None or peer.lost:
            if peer is not None and not peer.lost:
                if not self._pending:
                    self._pending = []
                    self._pendingBytes = 0
                self._pending.append(data)
                self._pendingBytes += len(data)
                if self._pendingBytes >= self.pendingLimit:
                    # Resumed by _register when the other side connects.
                    self.transport.pauseProducing()
            return
        # At once, not on the next reactor turn: a request/response exchange
        # pays that turn on every hop (see gvtwisted.link.eager).
        writeNow(peer.transport, data)

    def readConnectionLost(self):
        self.readDone = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer._halfClose()
        self._maybeClose()

    def _halfClose(self):
        """
        The other side ended its stream: end ours toward this side's peer.
        """
        try:
            loseWriteConnectionNow(self.transport)
        except Exception:
            self.transport.loseConnection()
        self._maybeClose()

    def writeConnectionLost(self):
        self._maybeClose()

    def _maybeClose(self):
        peer = self.peer
        if self.readDone and peer is not None and peer.readDone:
            self.transport.loseConnection()
            if peer.transport is not None:
                peer.transport.loseConnection()

    def connectionLost(self, reason=Failure(ConnectionDone())):
        self.lost = True
        peer = self.peer
        if peer is None or peer.lost or peer.transport is None:
            return
        try:
            peer.transport.unregisterProducer()
        except Exception:
            pass
        if reason.check(ConnectionDone) and self.readDone:
            # A clean close: let the peer finish sending what it holds.
            peer._halfClose()
            peer.transport.loseConnection()
        else:
            abort = getattr(peer.transport, "abortConnection", None)
            (abort or peer.transport.loseConnection)()


def splice(first: SpliceSide, second: SpliceSide):
    """
    Make C{first} and C{second} each other's peer.
    """
    first.peer = second
    second.peer = first
