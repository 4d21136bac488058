"""
The Twisted side of a guest TCP connection: L{TCPConnection} is the
L{TCPMachine} as an ordinary Twisted transport.

What the protocol sees is what it would see on a real socket: C{ITCPTransport},
C{IPushProducer} (pausing us closes the guest's window instead of growing a
buffer) and C{IConsumer} (a full send buffer pauses the producer writing into
us). Data goes to the protocol one C{dataReceived} per link read batch. The
guest's link pauses and resumes us one connection at a time (the link's
blocked set, L{gvtwisted.stack.iface.LinkInterface}); the prebuilt frame
headers that send our data segments are L{gvtwisted.stack.frames}, plugged in
as the machine's C{frameSender}.
"""

from zope.interface import implementer

from twisted.internet import error, interfaces
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.failure import Failure

from gvtwisted.stack.tcp.machine import _T_FIN_WAIT_2, TCPMachine
from gvtwisted.stack.tcp.states import CLOSED, FIN_WAIT_2, LISTEN, SYN_PENDING


def _address(addr):
    """
    The Twisted address object of a text (host, port), of either family.
    """
    return (IPv6Address if ":" in addr[0] else IPv4Address)("TCP", addr[0], addr[1])


@implementer(interfaces.ITCPTransport, interfaces.IPushProducer, interfaces.IConsumer)
class TCPConnection(TCPMachine):
    """
    One TCP connection between a gateway address (local) and a guest (remote).

    A new connection is in C{LISTEN}: it either takes a guest's SYN in two steps
    (L{receiveSyn}, then L{acceptSyn} or L{refuse}) or opens actively
    (L{connect}). When the handshake completes the protocol given to
    L{setProtocol} gets C{makeConnection(self)}; C{onConnectFailed(reason)} is
    called instead if it never completes. C{onClose(self)} is called once, when
    the connection reaches C{CLOSED}, whatever the path. The machine's own
    state (C{state}, C{iss}, C{irs}, C{onConnectFailed}) is described on
    L{TCPMachine}.
    """

    # What the Twisted side adds to the machine's slots (see there).
    __slots__ = (
        "disconnecting",
        "_draining",
        "_feeding",
        "_keepAlive",
        "link",
        "_noDelay",
        "_producerPaused",
        "protocol",
        "_readEofDelivered",
        "_readPaused",
        "_streamingProducer",
    )

    def __init__(self, *args, **kwargs):
        """
        As L{TCPMachine.__init__}.
        """
        TCPMachine.__init__(self, *args, **kwargs)
        self.protocol = None

        # Twisted transport attributes that protocols look at.
        self.connected = 0
        self.disconnecting = 0
        self.disconnected = 0
        self._noDelay = True
        self._keepAlive = False

        # Delivery to the protocol.
        self._readEofDelivered = False
        self._draining = False

        # Twisted-facing close and flow control state.
        self._readPaused = False
        self._readClosed = False
        self._lostNotified = False
        self._producer = None
        self._streamingProducer = False
        self._producerPaused = False
        self._feeding = False
        # The LinkInterface the guest is behind, or None (not known yet).
        self.link = None
        self._rtoDeferred = False

    def __repr__(self):
        return (
            f"<TCPConnection {self.localAddr[0]}:{self.localAddr[1]}"
            f" <-> {self.remoteAddr[0]}:{self.remoteAddr[1]} {self.state}>"
        )


    # ------------------------------------------------------------------
    # Opening.

    def setProtocol(self, protocol):
        """
        The protocol that gets C{makeConnection(self)} when the handshake
        completes.
        """
        self.protocol = protocol

    def _connectProtocol(self):
        """
        The handshake is complete: connect the protocol (or abort, if none was
        set).
        """
        protocol = self.protocol
        if protocol is None:
            self.log.warn("{conn} established without a protocol; aborting", conn=self)
            self.abortConnection()
            return
        self.connected = 1
        try:
            protocol.makeConnection(self)
        except BaseException:
            self._protocolFailed("connectionMade")
            self._abortWith(Failure())

    # ------------------------------------------------------------------
    # Delivering to the protocol.

    def _accept(self, data):
        """
        In-order data, already counted in C{rcvNxt}: queue it for the protocol, or
        drop it if the protocol closed its read side.
        """
        if self._readClosed or self._lostNotified:
            return
        batch = self.batch
        if batch is None or not batch.depth:
            data = bytes(data)
        # Else a view into the link's read buffer until the batch ends, when it
        # is joined with the rest of the batch in one copy.
        self._rcvQueue.append(data)
        self._rcvBuffered += len(data)

    def _batchEnded(self):
        """
        The link read whose segments brought data is done: deliver it all in
        one C{dataReceived}, as one read of a socket returns all that arrived.
        Joining it is also the one copy out of the link's read buffer.
        """
        self._batched = False
        queue = self._rcvQueue
        if len(queue) > 1:
            joined = b"".join(queue)
            queue.clear()
            queue.append(joined)
        elif queue and type(queue[0]) is not bytes:
            queue[0] = bytes(queue[0])
        if self.state is not CLOSED:
            self._drainReceiveQueue()

    def _drainReceiveQueue(self):
        """
        Hand queued data, then the end of the stream, to the protocol while it is
        not paused.
        """
        if self._draining:
            return
        self._draining = True
        try:
            queue = self._rcvQueue
            while queue and not self._readPaused:
                data = queue.popleft()
                if type(data) is not bytes:
                    # Still a view into a link buffer: a delivery inside a batch.
                    data = bytes(data)
                self._rcvBuffered -= len(data)
                protocol = self.protocol
                try:
                    protocol.dataReceived(data)
                except BaseException:
                    self._protocolFailed("dataReceived")
                    self._abortWith(Failure())
                    return
                if self.state is CLOSED:
                    return
            if self._readEofPending and not queue and not self._readPaused:
                self._readEofPending = False
                self._deliverReadEof()
        finally:
            self._draining = False
            if self.budget is not None:
                self._budgetSync()

    def _deliverReadEof(self):
        """
        The peer's FIN reached the protocol: C{readConnectionLost} for a
        half-closeable protocol, else the connection closes as Twisted does on
        end of file (here, gracefully: our pending data still goes out).
        """
        if self._readClosed or self._lostNotified:
            self._maybeFinish()
            return
        self._readEofDelivered = True
        protocol = self.protocol
        halfCloseable = interfaces.IHalfCloseableProtocol(protocol, None)
        if halfCloseable is None:
            self.loseConnection()
            return
        try:
            halfCloseable.readConnectionLost()
        except BaseException:
            self._protocolFailed("readConnectionLost")
            self._abortWith(Failure())
            return
        self._maybeFinish()

    # ------------------------------------------------------------------
    # Closing.

    def _writeSideDone(self):
        """
        Our FIN is acknowledged: every byte written arrived.
        """
        if self._lostNotified or not self.connected:
            return
        if not self._readClosed:
            halfCloseable = interfaces.IHalfCloseableProtocol(self.protocol, None)
            if halfCloseable is not None:
                try:
                    halfCloseable.writeConnectionLost()
                except BaseException:
                    self._protocolFailed("writeConnectionLost")
                    self._abortWith(Failure())
                    return
        self._maybeFinish()

    def _maybeFinish(self):
        """
        Tell the protocol the connection is done once our FIN is acknowledged and
        the read side is finished too (end of stream delivered, or the protocol
        asked for a full close and no longer reads).
        """
        if self._lostNotified or not self.connected:
            return
        if self._finAcked and (self._readClosed or self._readEofDelivered):
            self._notifyLost(Failure(error.ConnectionDone()))

    def _notifyLost(self, reason):
        """
        C{connectionLost}, once; a registered producer is stopped first, as
        Twisted's own transports do.
        """
        if self._lostNotified:
            return
        self._lostNotified = True
        self.connected = 0
        self.disconnected = 1
        self._readClosed = True
        self._rcvQueue.clear()
        self._rcvBuffered = 0
        if self.budget is not None:
            self._budgetSync()
        producer = self._producer
        if producer is not None:
            self._producer = None
            try:
                producer.stopProducing()
            except BaseException:
                self.log.failure("stopProducing of {producer} failed", producer=producer)
        protocol = self.protocol
        try:
            protocol.connectionLost(reason)
        except BaseException:
            self._protocolFailed("connectionLost")

    def _notifyLostLater(self, reason):
        self._lostNotified = False
        self._notifyLost(reason)

    # ------------------------------------------------------------------
    # ITransport / ITCPTransport.

    def write(self, data):
        """
        Buffer C{data} for sending; always accepted (Twisted semantics), but a
        registered streaming producer is paused once the buffer is full.
        """
        if isinstance(data, str):
            raise TypeError("Data must be bytes, not str")
        if not self.connected or self._writeClosed or not data:
            return
        self._sndBuf += data
        self._needOutput = True
        if self._flushCall is None:
            self._flushCall = self._atTurnEnd(self._flush)
        budget = self.budget
        spent = False
        if budget is not None:
            self._budgetSync()
            spent = budget.used >= budget.limit
        if (
            self._producer is not None
            and self._streamingProducer
            and not self._producerPaused
            and (spent or len(self._sndBuf) >= self._sndBufSize)
        ):
            if spent:
                budget.block(self)
            self._producerPaused = True
            self._producer.pauseProducing()

    def writeSequence(self, data):
        """
        Write each element of C{data}.
        """
        for chunk in data:
            if isinstance(chunk, str):
                raise TypeError("Data must be bytes, not str")
        for chunk in data:
            self.write(chunk)

    def loseConnection(self):
        """
        Close after the buffered data is delivered: stop reading, send FIN after
        the data; C{connectionLost(ConnectionDone)} when the peer has
        acknowledged everything.
        """
        if not self.connected or self._readClosed:
            return
        self._readClosed = True
        self.disconnecting = 1
        self._rcvQueue.clear()
        self._rcvBuffered = 0
        if self.budget is not None:
            self._budgetSync()
        self._readEofPending = False
        if self._writeClosed:
            if self._finAcked and self.state is FIN_WAIT_2:
                self._setTimer(_T_FIN_WAIT_2, self.finWait2Timeout)
            self._maybeFinish()
        else:
            self._queueFin()

    def loseWriteConnection(self):
        """
        Half-close: send FIN after the buffered data and keep reading.
        """
        if not self.connected or self._writeClosed:
            return
        self._queueFin()

    def abortConnection(self):
        """
        Reset now: RST to the peer, buffered data discarded,
        C{connectionLost(ConnectionAborted)} in the next reactor turn (as
        Twisted's TCP transport does, so a protocol can abort from inside a
        callback).
        """
        state = self.state
        if state is CLOSED:
            return
        if state is LISTEN or state is SYN_PENDING:
            self._enterClosed(None)
            return
        self._abortWith(Failure(error.ConnectionAborted()), notifyLater=True)

    def getHost(self):
        return _address(self.localAddr)

    def getPeer(self):
        return _address(self.remoteAddr)

    def getTcpNoDelay(self):
        """
        Segments go out at the end of each reactor turn whatever this says; the
        flag is only remembered.
        """
        return self._noDelay

    def setTcpNoDelay(self, enabled):
        self._noDelay = bool(enabled)

    def getTcpKeepAlive(self):
        """
        Keep-alives are not sent; the flag is only remembered.
        """
        return self._keepAlive

    def setTcpKeepAlive(self, enabled):
        self._keepAlive = bool(enabled)

    def logPrefix(self):
        return "TCPConnection"

    # ------------------------------------------------------------------
    # IPushProducer: the protocol controls how fast we deliver to it.

    def pauseProducing(self):
        """
        Stop delivering: data keeps being accepted into the bounded receive
        buffer, so the window the guest sees shrinks to zero.
        """
        self._readPaused = True

    def resumeProducing(self):
        """
        Deliver what was buffered and reopen the window with a window update.
        """
        if not self._readPaused:
            return
        self._readPaused = False
        if self.state is CLOSED or self._lostNotified:
            return
        self._drainReceiveQueue()
        if self.state is CLOSED:
            return
        self._windowUpdate()

    def stopProducing(self):
        self.loseConnection()

    # ------------------------------------------------------------------
    # IConsumer: a producer writes into us.

    def registerProducer(self, producer, streaming):
        """
        As Twisted's transports: a second producer is an error, a closed
        connection stops the producer at once, a pull producer is asked for data.
        """
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer "
                f"{self._producer!r} was never unregistered."
            )
        if self.disconnected or self.state is CLOSED:
            producer.stopProducing()
            return
        self._producer = producer
        self._streamingProducer = bool(streaming)
        self._producerPaused = False
        if streaming:
            if len(self._sndBuf) >= self._sndBufSize:
                self._producerPaused = True
                producer.pauseProducing()
        else:
            self._feedProducer()

    def unregisterProducer(self):
        self._producer = None
        self._producerPaused = False

    def _producerInert(self) -> bool:
        """
        Whether L{_feedProducer} would leave the producer alone: none, or a
        streaming one that is not paused.
        """
        return self._producer is None or (self._streamingProducer and not self._producerPaused)

    def _feedProducer(self):
        """
        The send buffer is below half full: resume a paused streaming producer, or
        pull from a pull producer until the buffer is half full again.
        """
        producer = self._producer
        half = self._sndBufSize // 2
        if len(self._sndBuf) >= half:
            return
        budget = self.budget
        if budget is not None and budget.used >= budget.limit:
            # Room here but none in the global budget: wait for it.
            budget.block(self)
            return
        if self._streamingProducer:
            if self._producerPaused:
                self._producerPaused = False
                producer.resumeProducing()
            return
        if self._feeding:
            return
        self._feeding = True
        try:
            while (
                self._producer is producer
                and not self._writeClosed
                and self.connected
                and len(self._sndBuf) < half
                and (budget is None or budget.used < budget.limit)
            ):
                before = len(self._sndBuf)
                producer.resumeProducing()
                if len(self._sndBuf) == before:
                    break
        finally:
            self._feeding = False

    def budgetResumed(self):
        """
        The global buffer budget has room again: reopen the receive window and
        resume (or pull from) the producer this connection paused for it.
        """
        if self.state is CLOSED:
            return
        self._windowUpdate()
        if self.state is not CLOSED and self._producer is not None:
            self._feedProducer()

    # ------------------------------------------------------------------
    # The link toward the guest.

    @property
    def _linkPaused(self):
        """
        Whether the guest's link cannot take frames now; if so this connection
        joins the link's blocked set, and L{linkResumed} is called when the
        link resumes. While paused no data segment goes out (pure ACKs still
        do) and no retransmission try is spent.
        """
        link = self.link
        if link is None or not link.paused:
            return False
        link.block(self)
        return True

    def linkResumed(self):
        """
        The link takes frames again: retransmit what timed out meanwhile, then
        send what the windows allow (each segment re-checks the link, which
        may pause again on the way).
        """
        if self.state is CLOSED:
            return
        if self._rtoDeferred:
            if self._linkPaused:
                return
            self._rtoDeferred = False
            self._rtoExpired()
            if self.state is CLOSED:
                return
        self._output()
        self._maybeIdleTimer()

    # ------------------------------------------------------------------

    def _protocolFailed(self, callback):
        """
        The protocol's C{callback} raised: log it with its traceback (rate
        limited through the counters, as C{error.tcp.protocol}); the caller
        then costs this connection only.
        """
        counters = self.counters
        if counters is not None:
            counters.failure("tcp.protocol", f"{callback} of {self.protocol!r}")
        else:
            self.log.failure("{callback} of {protocol} failed", callback=callback,
                             protocol=self.protocol)
