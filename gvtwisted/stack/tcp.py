"""
The gateway side of one guest TCP connection: an RFC 9293 state machine that does
no I/O of its own and is, to the protocol above it, an ordinary Twisted transport.

Segments come in already parsed (L{gvtwisted.wire.tcp.parseSegment}) through
L{TCPConnection.receiveSyn} and L{TCPConnection.segmentReceived}; segments go out
as complete TCP segments (header, options, payload, checksum) through the C{send}
callable the network gave us. Time comes from an injected C{IReactorTime}, so the
same code runs on the reactor and on L{twisted.internet.task.Clock} in tests.

What the protocol sees is what it would see on a real socket: C{ITCPTransport},
C{IPushProducer} (pausing us closes the guest's window instead of growing a
buffer) and C{IConsumer} (a full send buffer pauses the producer writing into us).

Sequence numbers are unwrapped on entry into unbounded Python integers (relative
to the variable they are compared with), so every comparison inside is a plain
integer comparison and wrap-around only exists at the wire.

Standards followed: RFC 9293 (the machine), 6298 (RTO), 5681 and 6582 (congestion
control, NewReno), 7323 (window scale, timestamps, PAWS), 2018 (SACK, receiver
side), 5961 (RST and SYN checks), 6528 (initial sequence numbers), 1122 and 9293
3.8.6 (delayed ACK, silly window avoidance, zero window probes).
"""

import hashlib
import os
import socket
import struct
from collections import deque

from zope.interface import implementer

from twisted.internet import error, interfaces
from twisted.internet.address import IPv4Address
from twisted.logger import Logger
from twisted.python.failure import Failure

from gvtwisted.wire.checksum import foldEach
from gvtwisted.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    buildSegment,
    buildSegmentFolded,
    connectionFold,
    mssOption,
    sackOption,
    sackPermittedOption,
    timestampOption,
    windowScaleOption,
)

LISTEN = "LISTEN"
SYN_PENDING = "SYN_PENDING"
SYN_SENT = "SYN_SENT"
SYN_RCVD = "SYN_RCVD"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"
CLOSED = "CLOSED"

_MASK = 0xFFFFFFFF
_HALF = 0x80000000

# Timer kinds; one lazy timer per connection serves them all because at most one
# is needed at a time.
_T_RTO = "rto"
_T_PERSIST = "persist"
_T_TIME_WAIT = "timeWait"
_T_FIN_WAIT_2 = "finWait2"

_TS_OPTION = struct.Struct("!BBBBII")
_PORTS = struct.Struct("!HH")

# Bursts of full segments whose payload checksums are summed in one call: up to
# this segment size (above it numpy's per-call cost hardly matters) and this many
# segments (about what a link takes before it pushes back at MTU 1500).
_BURST_MSS = 16384
_BURST_SEGMENTS = 32

# States in which data and FIN may be (re)transmitted.
_SENDING = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
# States in which incoming data is accepted.
_RECEIVING = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))

_SECRET = os.urandom(16)


def initialSequenceNumber(
    localIP: bytes, localPort: int, remoteIP: bytes, remotePort: int, now: float
) -> int:
    """
    RFC 6528: ISN = M + F(4-tuple, secret), M a 4 microsecond clock and F a keyed
    hash, so that an off-path attacker cannot guess it and a new incarnation of a
    4-tuple starts above the old one.
    """
    digest = hashlib.blake2s(
        localIP + remoteIP + _PORTS.pack(localPort, remotePort),
        key=_SECRET,
        digest_size=4,
    ).digest()
    return (int.from_bytes(digest, "big") + int(now * 250000)) & _MASK


def resetForSegment(localIP: bytes, remoteIP: bytes, seg):
    """
    The RST that answers C{seg}, which arrived from C{remoteIP} for C{localIP} and
    matched no connection (RFC 9293 3.10.7.1), or C{None} if C{seg} is itself a RST
    (a RST is never answered).

    @return: a complete TCP segment from local to remote, or C{None}.
    """
    flags = seg.flags
    if flags & RST:
        return None
    if flags & ACK:
        return buildSegment(
            localIP, remoteIP, seg.dstPort, seg.srcPort, seg.ack, 0, RST, 0
        )
    length = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return buildSegment(
        localIP,
        remoteIP,
        seg.dstPort,
        seg.srcPort,
        0,
        seg.seq + length,
        RST | ACK,
        0,
    )


def _wantedShift(bufferSize: int) -> int:
    """
    The smallest window scale shift that lets a window of C{bufferSize} bytes be
    advertised in the 16-bit field (RFC 7323 caps it at 14).
    """
    shift = 0
    while shift < 14 and (bufferSize >> shift) > 0xFFFF:
        shift += 1
    return shift


@implementer(interfaces.ITCPTransport, interfaces.IPushProducer, interfaces.IConsumer)
class TCPConnection:
    """
    One TCP connection between a gateway address (local) and a guest (remote).

    A new connection is in C{LISTEN}: it either takes a guest's SYN in two steps
    (L{receiveSyn}, then L{acceptSyn} or L{refuse}) or opens actively
    (L{connect}). When the handshake completes the protocol given to
    L{setProtocol} gets C{makeConnection(self)}; C{onConnectFailed(reason)} is
    called instead if it never completes. C{onClose(self)} is called once, when
    the connection reaches C{CLOSED}, whatever the path.

    @ivar state: the RFC 9293 state name, such as C{"ESTABLISHED"}; C{"SYN_PENDING"}
        is the extra state between L{receiveSyn} and L{acceptSyn}.
    @ivar iss: our initial sequence number (unwrapped: sequence numbers inside are
        unbounded integers, masked to 32 bits on the wire).
    @ivar irs: the peer's initial sequence number, once known.
    @ivar onConnectFailed: C{None} or a callable taking a L{Failure}:
        C{ConnectionRefusedError} for a RST, C{TCPTimedOutError} when SYNs or
        SYN-ACKs went unanswered, C{ConnectionLost} for a RST while a received SYN
        was pending.
    """

    log = Logger()

    initialRto = 1.0
    minRto = 0.2
    maxRto = 60.0
    clockGranularity = 0.001
    # Data retransmissions give up after this many tries or this many seconds,
    # whichever comes first, and reset the connection.
    maxRetries = 12
    maxRetransmitTime = 120.0
    # SYN (active) and SYN-ACK (passive) retransmissions before giving up.
    synRetries = 5
    # A TIME_WAIT this short is enough on a virtual link where no segment lives
    # longer than a few milliseconds; RFC 9293's 2 MSL is for the Internet.
    timeWaitDuration = 2.0
    # How long a fully closed connection waits in FIN_WAIT_2 for the peer's FIN.
    finWait2Timeout = 60.0
    initialWindowSegments = 10
    maxOutOfOrderBlocks = 32
    defaultPeerMss = 536
    # Rate limit of ACKs that answer dropped segments without data.
    outOfWindowAckInterval = 0.5
    # Acknowledge in-order data once at the end of the reactor turn instead of
    # at every second segment. A link read delivers dozens of segments at once;
    # one ACK for the batch goes out microseconds later (as Linux does with
    # GRO), and saves building and sending an ACK per two segments.
    stretchAcks = True

    def __init__(
        self,
        clock,
        localAddr,
        remoteAddr,
        send,
        mss: int = 1460,
        onClose=None,
        counters=None,
        *,
        receiveBufferSize: int = 256 * 1024,
        sendBufferSize: int = 256 * 1024,
        timeWait: float | None = None,
        iss: int | None = None,
    ):
        """
        @param clock: an C{IReactorTime}.
        @param localAddr: C{(ip, port)} of the gateway side.
        @param remoteAddr: C{(ip, port)} of the guest side.
        @param send: called with each complete outgoing TCP segment (bytes).
        @param mss: our maximum segment size, advertised to the peer and the upper
            bound of what we send.
        @param onClose: C{None} or a callable taking this connection, called once
            when it reaches C{CLOSED}.
        @param counters: C{None} or a L{gvtwisted.stack.counters.Counters}.
        @param receiveBufferSize: bytes we accept but have not delivered (the
            receive window when nothing is buffered).
        @param sendBufferSize: bytes written but not acknowledged above which a
            registered producer is paused.
        @param timeWait: overrides L{timeWaitDuration}.
        @param iss: overrides the RFC 6528 initial sequence number (for tests).
        """
        self.clock = clock
        self.localAddr = (localAddr[0], localAddr[1])
        self.remoteAddr = (remoteAddr[0], remoteAddr[1])
        self._localIP = socket.inet_aton(localAddr[0])
        self._remoteIP = socket.inet_aton(remoteAddr[0])
        self._localPort = localAddr[1]
        self._remotePort = remoteAddr[1]
        self._fold = connectionFold(
            self._localIP, self._remoteIP, self._localPort, self._remotePort
        )
        self._send = send
        # Optional: a callable that sends a data segment with timestamps as a
        # prebuilt header plus the payload (L{gvtwisted.stack.frames}), or
        # returns False to have it built here.
        self.frameSender = None
        # Optional: the switch's L{gvtwisted.stack.switch.FrameBatch}; while one
        # is open, in-order data waits for its end and goes to the protocol in
        # one dataReceived.
        self.batch = None
        self._batched = False
        self.mss = mss
        self.onClose = onClose
        self.onConnectFailed = None
        self.counters = counters
        self.state = LISTEN
        self.protocol = None
        if timeWait is not None:
            self.timeWaitDuration = timeWait

        # Twisted transport attributes that protocols look at.
        self.connected = 0
        self.disconnecting = 0
        self.disconnected = 0
        self._noDelay = True
        self._keepAlive = False

        self._rcvBufSize = receiveBufferSize
        self._sndBufSize = sendBufferSize
        self._wantShift = _wantedShift(receiveBufferSize)
        self._swsThreshold = min(receiveBufferSize // 2, mss)

        self._issOverride = iss
        self.iss = None
        self.irs = None

        # Negotiated in the handshake.
        self._sndShift = 0
        self._rcvShift = 0
        self._tsOk = False
        self._sackOk = False
        self._peerMss = None
        self._effMss = mss
        self._peerSyn = None
        self._tsOffset = 0

        # Send side (absolute sequence numbers).
        self._sndUna = 0
        self._sndNxt = 0
        self._sndMax = 0
        self._sndWnd = 0
        self._sndWl1 = 0
        self._sndWl2 = 0
        self._maxSndWnd = 0
        self._sndBuf = bytearray()
        self._finSeq = None
        self._finAcked = False
        self._cwnd = 0
        self._ssthresh = 1 << 30
        self._caBytes = 0
        self._dupAcks = 0
        self._recoverEnd = 0
        self._inRecovery = False
        self._srtt = None
        self._rttvar = 0.0
        self._rto = self.initialRto
        self._rttSeq = None
        self._rttTime = 0.0
        self._retries = 0
        self._firstRetransmitTime = None
        self._persistCount = 0

        # Receive side.
        self._rcvNxt = 0
        self._rcvAdvEdge = 0
        self._rcvQueue = deque()
        self._rcvBuffered = 0
        self._ooo = []
        self._oooLast = None
        self._finRcvSeq = None
        self._tsRecent = 0
        self._lastAckSent = 0
        self._ackOwed = 0
        self._ackNow = False
        self._needOutput = False
        self._lastOutOfWindowAck = float("-inf")
        self._readEofPending = False
        self._readEofDelivered = False
        self._draining = False

        # Twisted-facing close and flow control state.
        self._readPaused = False
        self._readClosed = False
        self._writeClosed = False
        self._lostNotified = False
        self._producer = None
        self._streamingProducer = False
        self._producerPaused = False
        self._feeding = False
        # The LinkInterface the guest is behind, or None (not known yet).
        self.link = None
        self._rtoDeferred = False

        self._timerKind = None
        self._timerDeadline = 0.0
        self._timerCall = None
        self._flushCall = None

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

    def receiveSyn(self, seg):
        """
        Record a guest's SYN (its ISN and options) without answering yet: the NAT
        first dials the real destination, then calls L{acceptSyn} or L{refuse}.
        Retransmissions of the same SYN while we wait are absorbed.
        """
        state = self.state
        if state is SYN_RCVD:
            self.segmentReceived(seg)
            return
        if state is not LISTEN and state is not SYN_PENDING:
            return
        if not seg.flags & SYN or seg.flags & (RST | ACK | FIN):
            return
        if state is SYN_PENDING and seg.seq == (self.irs & _MASK):
            self._count("tcp.synRetransmitAbsorbed")
            return
        # A new SYN (first one, or a peer that restarted with another ISN).
        self._peerSyn = seg
        self.irs = seg.seq
        self._rcvNxt = seg.seq + 1
        self.state = SYN_PENDING

    def acceptSyn(self):
        """
        Answer the pending SYN with a SYN-ACK (state C{SYN_RCVD}). Does nothing if
        no SYN is pending (for example the guest reset it meanwhile).
        """
        if self.state is not SYN_PENDING:
            return
        syn = self._peerSyn
        self._peerSyn = None
        self._negotiate(syn)
        self._initSend()
        self.state = SYN_RCVD
        self._emitSyn(SYN | ACK)
        self._rttSeq = self._sndMax
        self._rttTime = self.clock.seconds()
        self._setTimer(_T_RTO, self._rto)

    def refuse(self):
        """
        Refuse the pending SYN with RST|ACK, as a closed port does, and close.
        """
        if self.state is not SYN_PENDING:
            return
        self._count("tcp.resetSent")
        self._send(
            buildSegment(
                self._localIP,
                self._remoteIP,
                self._localPort,
                self._remotePort,
                0,
                self._rcvNxt,
                RST | ACK,
                0,
            )
        )
        self._enterClosed(None)

    def connect(self):
        """
        Open actively: send a SYN offering MSS, window scale, SACK and timestamps.
        """
        if self.state is not LISTEN:
            raise RuntimeError(f"connect() in state {self.state}")
        self._initSend()
        self.state = SYN_SENT
        self._emitSyn(SYN)
        self._rttSeq = self._sndMax
        self._rttTime = self.clock.seconds()
        self._setTimer(_T_RTO, self._rto)

    def _initSend(self):
        """
        Choose our ISN and set up the send sequence space with the SYN in flight.
        """
        if self._issOverride is not None:
            iss = self._issOverride & _MASK
        else:
            iss = initialSequenceNumber(
                self._localIP,
                self._localPort,
                self._remoteIP,
                self._remotePort,
                self.clock.seconds(),
            )
        self.iss = iss
        self._tsOffset = (iss * 2654435761) & _MASK
        self._sndUna = iss
        self._sndNxt = iss + 1
        self._sndMax = iss + 1
        self._recoverEnd = iss

    def _negotiate(self, syn):
        """
        Settle the options from the peer's SYN (passive) or SYN-ACK (active): an
        option is used when both sides sent it.
        """
        self._peerMss = syn.mss
        if syn.wscale is not None:
            self._sndShift = min(syn.wscale, 14)
            self._rcvShift = self._wantShift
        else:
            self._sndShift = 0
            self._rcvShift = 0
        self._sackOk = syn.sackPermitted
        if syn.tsVal is not None:
            self._tsOk = True
            self._tsRecent = syn.tsVal
        else:
            self._tsOk = False
        peerMss = syn.mss if syn.mss else self.defaultPeerMss
        mss = min(peerMss, self.mss)
        if self._tsOk:
            # RFC 6691: the MSS counts data only, so options come out of it.
            mss -= 12
        self._effMss = max(mss, 64)

    def _emitSyn(self, flags):
        """
        Send our SYN or SYN-ACK. A passive side offers only what the peer's SYN
        offered; the window field of a SYN is never scaled (RFC 7323 2.2).
        """
        passive = flags & ACK
        options = mssOption(self.mss)
        if not passive or self._rcvShift:
            options += windowScaleOption(self._wantShift)
        if not passive or self._sackOk:
            options += sackPermittedOption()
        if not passive or self._tsOk:
            options += timestampOption(
                self._tsNow(), self._tsRecent if passive else 0
            )
        window = min(self._rcvBufSize, 0xFFFF)
        ack = 0
        if passive:
            ack = self._rcvNxt
            self._rcvAdvEdge = self._rcvNxt + window
            self._lastAckSent = ack
        self._send(
            buildSegment(
                self._localIP,
                self._remoteIP,
                self._localPort,
                self._remotePort,
                self.iss,
                ack,
                flags,
                window,
                options,
            )
        )

    def _establish(self):
        """
        The handshake is complete: start congestion control and connect the
        protocol.
        """
        self.state = ESTABLISHED
        self._cwnd = self.initialWindowSegments * self._effMss
        self._ssthresh = 1 << 30
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

    def _failHandshake(self, exc):
        """
        The handshake failed: tell the owner and close.
        """
        callback = self.onConnectFailed
        self.onConnectFailed = None
        self._enterClosed(None)
        if callback is not None:
            callback(Failure(exc))

    # ------------------------------------------------------------------
    # Incoming segments.

    def segmentReceived(self, seg):
        """
        Process one segment of this connection's 4-tuple (already parsed, its
        checksum already verified).

        @return: C{True} only when C{seg} is a SYN opening a new incarnation of
            the 4-tuple while this one is in TIME_WAIT: this connection closed
            itself (C{onClose} was called) and the caller should handle C{seg}
            as the first SYN of a new connection. Otherwise C{None}.
        """
        state = self.state
        if state is SYN_SENT:
            self._synSentReceived(seg)
            return
        if state is SYN_PENDING or state is LISTEN:
            self._pendingReceived(seg)
            return
        if state is CLOSED:
            return

        flags = seg.flags
        rcvNxt = self._rcvNxt
        seq = rcvNxt + ((seg.seq - rcvNxt + _HALF) & _MASK) - _HALF
        payload = seg.payload
        plen = len(payload)

        if flags & SYN and not flags & (ACK | RST):
            if state is SYN_RCVD:
                if seq == self.irs:
                    # Our SYN-ACK was lost or is late: say it again.
                    self._emitSyn(SYN | ACK)
                return
            if state is TIME_WAIT and self._newIncarnation(seg, seq):
                self._count("tcp.timeWaitReused")
                self._enterClosed(Failure(error.ConnectionDone()))
                return True

        # PAWS (RFC 7323 5): a timestamp older than the last one seen is an old
        # duplicate from a previous wrap of the sequence space.
        segLen = plen
        if flags & SYN:
            segLen += 1
        if flags & FIN:
            segLen += 1
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and not flags & RST:
            if (tsVal - self._tsRecent) & _MASK >= _HALF:
                self._count("tcp.pawsDrop")
                self._sendOutOfWindowAck(segLen, flags)
                return
        wnd = self._rcvAdvEdge - rcvNxt
        if wnd < 0:
            wnd = 0
        # RFC 9293 3.10.7.4's acceptability test, relaxed like Linux at the right
        # edge so that a FIN or an ACK at a zero window still gets in.
        if segLen == 0:
            acceptable = rcvNxt <= seq <= rcvNxt + wnd
        else:
            acceptable = seq + segLen > rcvNxt and seq <= rcvNxt + wnd
        if not acceptable:
            if not flags & RST:
                self._count("tcp.unacceptable")
                if state is TIME_WAIT and flags & FIN:
                    # The peer's FIN again: our last ACK was lost. RFC 9293
                    # restarts the wait, though its own sequence check (the FIN
                    # is old) would stop the segment before that step.
                    self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())
                self._sendOutOfWindowAck(segLen, flags)
            return

        if flags & RST:
            # RFC 5961 3.2: only an exact match resets; a RST elsewhere in the
            # window gets a challenge ACK, which a real peer answers with an exact
            # RST.
            if seq == rcvNxt:
                self._resetReceived()
            else:
                self._count("tcp.challengeAck")
                self._sendOutOfWindowAck(0, flags)
            return
        if flags & SYN:
            # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK.
            self._count("tcp.challengeAck")
            self._sendOutOfWindowAck(segLen, flags)
            return
        if not flags & ACK:
            return

        if self._tsOk and tsVal is not None and seq <= self._lastAckSent:
            self._tsRecent = tsVal

        if state is SYN_RCVD:
            sndUna = self._sndUna
            ack = sndUna + ((seg.ack - sndUna + _HALF) & _MASK) - _HALF
            if not sndUna < ack <= self._sndMax:
                self._count("tcp.resetSent")
                self._sendRaw(seg.ack, 0, RST)
                return
            self._sndWnd = seg.window << self._sndShift
            self._maxSndWnd = self._sndWnd
            self._sndWl1 = seq
            self._sndWl2 = ack
            self._handshakeAcked(ack)
            self._establish()
            if self.state is CLOSED:
                return

        if not self._processAck(seg, seq, flags, plen):
            self._count("tcp.ackUnsent")
            self._sendOutOfWindowAck(segLen, flags)
            return
        state = self.state
        if state is CLOSED:
            return

        if plen or flags & FIN:
            if state in _RECEIVING:
                self._receiveText(seq, payload, flags & FIN)
                if self.state is CLOSED:
                    return
            elif state is TIME_WAIT:
                # A retransmitted FIN: our ACK was lost. Acknowledge it again and
                # restart the wait (RFC 9293 3.10.7.4, eighth step).
                self._ackNow = True
                self._ackOwed += 1
                self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())
            else:
                # CLOSE_WAIT, CLOSING, LAST_ACK: the peer's FIN is already in; this
                # is a retransmission of something we have.
                self._ackNow = True
                self._ackOwed += 1

        if self._needOutput:
            self._needOutput = False
            self._output()
        if self._ackOwed:
            if self._ackNow or (self._ackOwed >= 2 and not self.stretchAcks):
                self._sendAck()
            else:
                self._scheduleFlush()

    def _newIncarnation(self, seg, seq):
        """
        Whether a SYN in TIME_WAIT may open a new connection (RFC 6191): its
        timestamp is newer than the last one seen, or, without timestamps, its
        sequence number is above the old connection's.
        """
        if self._tsOk and seg.tsVal is not None:
            return 0 < (seg.tsVal - self._tsRecent) & _MASK < _HALF
        return seq >= self._rcvNxt

    def _pendingReceived(self, seg):
        """
        A segment while we are in C{LISTEN} or C{SYN_PENDING} (no answer sent yet).
        """
        flags = seg.flags
        if flags & RST:
            if self.state is SYN_PENDING and seg.seq == self._rcvNxt & _MASK:
                self._count("tcp.resetReceived")
                self._failHandshake(
                    error.ConnectionLost("reset before the handshake completed")
                )
            return
        if flags & SYN:
            self.receiveSyn(seg)

    def _synSentReceived(self, seg):
        """
        RFC 9293 3.10.7.3: a segment in C{SYN_SENT}.
        """
        flags = seg.flags
        ack = None
        if flags & ACK:
            sndUna = self._sndUna
            ack = sndUna + ((seg.ack - sndUna + _HALF) & _MASK) - _HALF
            if ack <= self.iss or ack > self._sndMax:
                if not flags & RST:
                    self._count("tcp.resetSent")
                    self._sendRaw(seg.ack, 0, RST)
                return
        if flags & RST:
            if ack is not None:
                self._count("tcp.resetReceived")
                self._failHandshake(error.ConnectionRefusedError())
            return
        if not flags & SYN:
            return
        self.irs = seg.seq
        self._rcvNxt = seg.seq + 1
        self._negotiate(seg)
        if ack is None:
            # Simultaneous open: both sides sent a SYN.
            self.state = SYN_RCVD
            self._emitSyn(SYN | ACK)
            self._rttSeq = None
            self._setTimer(_T_RTO, self._rto)
            return
        # The SYN-ACK's window is not scaled (RFC 7323 2.2).
        self._sndWnd = seg.window
        self._maxSndWnd = seg.window
        self._sndWl1 = self._rcvNxt - 1
        self._sndWl2 = ack
        self._rcvAdvEdge = self._rcvNxt
        self._handshakeAcked(ack)
        self._sendAck()
        self._establish()

    def _handshakeAcked(self, ack):
        """
        Our SYN (or SYN-ACK) is acknowledged: take the RTT sample it gives unless
        it was retransmitted (Karn), stop its timer.
        """
        self._sndUna = ack
        if self._sndNxt < ack:
            self._sndNxt = ack
        if self._rttSeq is not None and ack >= self._rttSeq:
            self._rttSample(self.clock.seconds() - self._rttTime)
        self._rttSeq = None
        self._retries = 0
        self._timerKind = None
        self._recoverEnd = self.iss

    def _processAck(self, seg, seq, flags, plen):
        """
        The ACK field and window of an acceptable segment in a synchronized state.

        @return: C{False} if it acknowledges something we never sent (the caller
            answers with an ACK and drops the segment), else C{True}.
        """
        sndUna = self._sndUna
        ack = sndUna + ((seg.ack - sndUna + _HALF) & _MASK) - _HALF
        if ack > self._sndMax:
            return False
        window = seg.window << self._sndShift
        isDup = (
            ack == sndUna
            and plen == 0
            and not flags & (SYN | FIN)
            and window == self._sndWnd
            and self._sndMax > sndUna
        )
        # RFC 9293 3.10.7.4: take the window from the newest segment only.
        wl1 = self._sndWl1
        if wl1 < seq or (wl1 == seq and self._sndWl2 <= ack):
            if window != self._sndWnd:
                if window > self._sndWnd:
                    self._needOutput = True
                self._sndWnd = window
                if window > self._maxSndWnd:
                    self._maxSndWnd = window
                if window:
                    self._persistCount = 0
            self._sndWl1 = seq
            self._sndWl2 = ack
        if ack > sndUna:
            self._ackAdvanced(ack, seg.tsEcr)
        elif isDup:
            self._dupAck()
        return True

    def _ackAdvanced(self, ack, tsEcr=None):
        """
        New data (or our FIN) is acknowledged up to C{ack}.

        With timestamps the RTT comes from the echoed timestamp (RFC 7323 4.1),
        which stays valid across retransmissions; otherwise from the one timed
        segment (Karn). Without the former, heavy loss would keep the RTO backed
        off at its maximum long after the path recovered.
        """
        acked = ack - self._sndUna
        buf = self._sndBuf
        finSeq = self._finSeq
        finNowAcked = finSeq is not None and ack > finSeq and not self._finAcked
        dataAcked = acked
        if dataAcked > len(buf):
            dataAcked = len(buf)
        if dataAcked:
            del buf[:dataAcked]
        self._sndUna = ack
        if self._sndNxt < ack:
            self._sndNxt = ack
        if self._tsOk and tsEcr is not None:
            elapsed = (self._tsNow() - tsEcr) & _MASK
            if elapsed < 0x7FFFFFFF:
                self._rttSample(elapsed / 1000.0)
            self._rttSeq = None
        elif self._rttSeq is not None and ack >= self._rttSeq:
            self._rttSample(self.clock.seconds() - self._rttTime)
            self._rttSeq = None

        mss = self._effMss
        if self._inRecovery:
            if ack >= self._recoverEnd:
                # Full acknowledgement: leave fast recovery (RFC 6582 3.2 step 3).
                self._inRecovery = False
                flight = self._sndMax - ack
                self._cwnd = min(self._ssthresh, max(flight, mss) + mss)
            else:
                # Partial acknowledgement: the next hole is lost too.
                self._retransmitFirst()
                cwnd = self._cwnd - acked + mss
                self._cwnd = cwnd if cwnd > mss else mss
        elif self._cwnd < self._ssthresh:
            # Slow start, counting bytes: the guest link is local and ACKs may be
            # stretched by the guest's GRO, so no per-ACK cap.
            self._cwnd += acked
        else:
            self._caBytes += acked
            if self._caBytes >= self._cwnd:
                self._caBytes -= self._cwnd
                self._cwnd += mss
        if self._cwnd > 1 << 30:
            self._cwnd = 1 << 30
        self._dupAcks = 0
        self._retries = 0
        self._firstRetransmitTime = None

        if self._sndMax > ack:
            # RFC 6298 5.3: restart the timer when new data is acknowledged.
            self._setTimer(_T_RTO, self._rto)
        elif self._timerKind is _T_RTO:
            self._timerKind = None
        self._needOutput = True

        if self._producer is not None:
            self._feedProducer()

        if finNowAcked:
            self._finAcked = True
            state = self.state
            if state is FIN_WAIT_1:
                self.state = FIN_WAIT_2
                if self._readClosed:
                    self._setTimer(_T_FIN_WAIT_2, self.finWait2Timeout)
            elif state is CLOSING:
                self._enterTimeWait()
            elif state is LAST_ACK:
                self._writeSideDone()
                if (self._rcvQueue or self._readEofPending) and not self._lostNotified:
                    # The protocol (paused) has not read everything yet; linger
                    # in TIME_WAIT, whose timer waits for it.
                    self._enterTimeWait()
                    return
                self._enterClosed(Failure(error.ConnectionDone()))
                return
            self._writeSideDone()

    def _dupAck(self):
        """
        A duplicate ACK (RFC 5681 definition): three of them start fast
        retransmit and NewReno fast recovery (RFC 6582).
        """
        self._dupAcks += 1
        mss = self._effMss
        if self._inRecovery:
            self._cwnd += mss
            self._needOutput = True
        elif self._dupAcks == 3 and self._sndUna > self._recoverEnd:
            self._count("tcp.fastRetransmit")
            flight = self._sndMax - self._sndUna
            self._ssthresh = max(flight // 2, 2 * mss)
            self._recoverEnd = self._sndMax
            self._inRecovery = True
            self._rttSeq = None
            self._retransmitFirst()
            self._cwnd = self._ssthresh + 3 * mss
            self._needOutput = True

    def _rttSample(self, rtt):
        """
        RFC 6298 section 2.
        """
        if rtt < 0:
            rtt = 0.0
        srtt = self._srtt
        if srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            delta = srtt - rtt
            self._rttvar = 0.75 * self._rttvar + 0.25 * (delta if delta > 0 else -delta)
            self._srtt = 0.875 * srtt + 0.125 * rtt
        var = 4 * self._rttvar
        rto = self._srtt + (var if var > self.clockGranularity else self.clockGranularity)
        if rto < self.minRto:
            rto = self.minRto
        elif rto > self.maxRto:
            rto = self.maxRto
        self._rto = rto

    def _receiveText(self, seq, payload, fin):
        """
        The data and FIN of an acceptable segment in a state that reads.
        """
        nxt = self._rcvNxt
        plen = len(payload)
        if seq < nxt:
            # Partly old: the sender retransmitted more than we were missing.
            cut = nxt - seq
            payload = payload[cut:] if cut < plen else b""
            seq = nxt
            plen = len(payload)
            self._ackNow = True
        edge = self._rcvAdvEdge
        if seq + plen > edge:
            keep = edge - seq
            if keep < 0:
                keep = 0
            payload = payload[:keep]
            plen = keep
            fin = 0
            self._ackNow = True
        if fin:
            self._finRcvSeq = seq + plen
        self._ackOwed += 1
        if seq != nxt:
            if plen:
                self._oooInsert(seq, payload)
            # Out of order: a duplicate ACK now tells the sender about the hole.
            self._ackNow = True
            return
        if plen:
            self._rcvNxt = nxt + plen
            self._accept(payload)
        if self._ooo:
            self._oooPull()
        if self._finRcvSeq is not None and self._finRcvSeq == self._rcvNxt:
            self._finReceived()
        batch = self.batch
        if batch is not None and batch.depth:
            if not self._batched:
                self._batched = True
                batch.atEnd(self._batchEnded)
            return
        self._drainReceiveQueue()

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

    def _oooInsert(self, seq, data):
        """
        Keep an out-of-order segment: blocks C{[start, end, chunks]} stay sorted,
        disjoint and merged when adjacent. Past L{maxOutOfOrderBlocks} the
        highest blocks are dropped (RFC 2018 allows reneging; the sender keeps
        everything until it is acknowledged cumulatively).
        """
        end = seq + len(data)
        blocks = self._ooo
        pieces = []
        pos = seq
        for block in blocks:
            if block[1] <= pos:
                continue
            if block[0] >= end:
                break
            if block[0] > pos:
                pieces.append((pos, block[0]))
            if block[1] > pos:
                pos = block[1]
            if pos >= end:
                break
        if pos < end:
            pieces.append((pos, end))
        if not pieces:
            self._oooLast = seq
            return
        for start, stop in pieces:
            chunk = bytes(data[start - seq : stop - seq])
            i = 0
            n = len(blocks)
            while i < n and blocks[i][0] < start:
                i += 1
            blocks.insert(i, [start, stop, [chunk]])
        # Merge adjacent blocks.
        merged = [blocks[0]]
        for block in blocks[1:]:
            last = merged[-1]
            if last[1] == block[0]:
                last[1] = block[1]
                last[2].extend(block[2])
            else:
                merged.append(block)
        if len(merged) > self.maxOutOfOrderBlocks:
            dropped = len(merged) - self.maxOutOfOrderBlocks
            self._count("tcp.outOfOrderDrop", dropped)
            del merged[self.maxOutOfOrderBlocks :]
        self._ooo = merged
        self._oooLast = seq

    def _oooPull(self):
        """
        Move the out-of-order blocks that now continue the in-order data.
        """
        blocks = self._ooo
        while blocks and blocks[0][0] <= self._rcvNxt:
            start, end, chunks = blocks.pop(0)
            nxt = self._rcvNxt
            if end <= nxt:
                continue
            skip = nxt - start
            for chunk in chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                if skip:
                    chunk = chunk[skip:]
                    skip = 0
                self._accept(chunk)
            self._rcvNxt = end
            # A hole was filled: tell the sender at once (RFC 5681 4.2).
            self._ackNow = True

    def _finReceived(self):
        """
        The peer's FIN is next in sequence: consume it and move on.
        """
        self._rcvNxt += 1
        self._finRcvSeq = None
        self._ackNow = True
        self._ackOwed += 1
        state = self.state
        if state is ESTABLISHED:
            self.state = CLOSE_WAIT
        elif state is FIN_WAIT_1:
            self.state = CLOSING
        elif state is FIN_WAIT_2:
            self._enterTimeWait()
        self._readEofPending = True

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

    def _resetReceived(self):
        """
        An acceptable RST.
        """
        self._count("tcp.resetReceived")
        state = self.state
        if state is SYN_RCVD:
            self._failHandshake(error.ConnectionRefusedError())
            return
        if (state is LAST_ACK or state is CLOSING) and self._sndUna >= self._finSeq:
            # RFC 9293 3.10.7.4 signals no error here: both FINs were sent, and
            # the peer acknowledged every byte, only our FIN is unconfirmed (its
            # TIME_WAIT may simply have ended before our FIN came again).
            self._enterClosed(Failure(error.ConnectionDone()))
            return
        self._enterClosed(Failure(error.ConnectionLost("connection reset by peer")))

    # ------------------------------------------------------------------
    # Outgoing segments.

    def _tsNow(self):
        return (int(self.clock.seconds() * 1000) + self._tsOffset) & _MASK

    def _emit(self, flags, seq, payload=b"", payloadFold=None):
        """
        Send one non-SYN segment; an ACK carries the current window (and, on a
        pure ACK, SACK blocks for what we hold out of order).
        """
        if flags & ACK:
            ack = self._rcvNxt
            window = self._windowField(ack)
            self._ackOwed = 0
            self._ackNow = False
            self._lastAckSent = ack
        else:
            ack = 0
            window = 0
        if self._tsOk:
            if payload and self.frameSender is not None and self.frameSender(
                    seq, ack, flags, window, self._tsNow(), self._tsRecent, payload, payloadFold):
                return
            options = _TS_OPTION.pack(1, 1, 8, 10, self._tsNow(), self._tsRecent)
            if self._ooo and self._sackOk and not payload and flags & ACK:
                options += self._sackBlocks(3)
        elif self._ooo and self._sackOk and not payload and flags & ACK:
            options = self._sackBlocks(4)
        else:
            options = b""
        self._send(
            buildSegmentFolded(
                self._fold,
                self._localPort,
                self._remotePort,
                seq,
                ack,
                flags,
                window,
                options,
                payload,
            )
        )

    def _sendRaw(self, seq, ack, flags):
        """
        A bare segment with the given raw numbers (RSTs that answer a bad ACK).
        """
        self._send(
            buildSegment(
                self._localIP,
                self._remoteIP,
                self._localPort,
                self._remotePort,
                seq,
                ack,
                flags,
                0,
            )
        )

    def _sackBlocks(self, limit):
        """
        The SACK option: the block with the latest out-of-order segment first
        (RFC 2018 4), then the others in sequence order.
        """
        blocks = self._ooo
        last = self._oooLast
        first = None
        if last is not None:
            for block in blocks:
                if block[0] <= last < block[1]:
                    first = block
                    break
        chosen = [] if first is None else [(first[0], first[1])]
        for block in blocks:
            if len(chosen) >= limit:
                break
            if block is not first:
                chosen.append((block[0], block[1]))
        return sackOption(chosen)

    def _windowField(self, nxt):
        """
        The window to advertise with an ACK of C{nxt}, scaled down, and remember
        the right edge it promises.

        The right edge never moves left (RFC 9293 3.8.6.2.2, "shrinking the
        window") and moves right only by at least min(buffer / 2, MSS) at a
        time, the receiver's silly window avoidance. The field is rounded down,
        so the peer may see a few bytes less than we accept.
        """
        free = self._rcvBufSize - self._rcvBuffered
        if free < 0:
            free = 0
        edge = nxt + free
        adv = self._rcvAdvEdge
        if edge - adv >= self._swsThreshold or adv < nxt:
            adv = edge if edge > nxt else nxt
            self._rcvAdvEdge = adv
        field = (adv - nxt) >> self._rcvShift
        return field if field < 0xFFFF else 0xFFFF

    def _sendAck(self):
        """
        A pure ACK now. Its sequence number is the highest we sent, which stays
        acceptable to the peer even while we go back to retransmit.
        """
        self._emit(ACK, self._sndMax)

    def _sendOutOfWindowAck(self, segLen, flags):
        """
        Answer a segment we drop (outside the window, failing PAWS, a SYN or RST
        that gets a challenge, an ACK of unsent data) with an ACK. A segment that
        carries data is always answered, since its sender needs the news; a bare
        ACK, RST or SYN at most once per L{outOfWindowAckInterval}, as Linux
        does, because two stacks answering each other's stray ACKs can loop
        forever (duplicated and reordered ACKs failing PAWS start such loops).
        """
        if segLen == 0 or flags & SYN:
            now = self.clock.seconds()
            if now - self._lastOutOfWindowAck < self.outOfWindowAckInterval:
                self._count("tcp.outOfWindowAckLimited")
                return
            self._lastOutOfWindowAck = now
        self._sendAck()

    def _sendData(self, seq, n, fin, payloadFold=None):
        """
        A segment of C{n} bytes from the send buffer at C{seq}, with FIN if asked
        (and the payload's checksum fold, when L{_output} summed a burst).
        """
        off = seq - self._sndUna
        buf = self._sndBuf
        flags = ACK
        if n and off + n == len(buf):
            flags = ACK | PSH
        if fin:
            flags |= FIN
        if seq >= self._sndMax and self._rttSeq is None:
            # Time one segment per round trip, never a retransmitted one (Karn).
            self._rttSeq = seq + n + (1 if fin else 0)
            self._rttTime = self.clock.seconds()
        # One copy of the payload, straight out of the buffer (a bytearray
        # slice would be a copy, and concatenating it with the header another).
        self._emit(flags, seq, bytes(memoryview(buf)[off : off + n]) if n else b"", payloadFold)

    def _output(self):
        """
        Send what the windows allow: new data in MSS-sized segments, then the FIN;
        arm the retransmission or persist timer as needed.
        """
        if self.state not in _SENDING or self._linkPaused:
            return
        una = self._sndUna
        dataEnd = una + len(self._sndBuf)
        nxt = self._sndNxt
        finSeq = self._finSeq
        if nxt >= dataEnd and (finSeq is None or nxt > finSeq):
            return
        mss = self._effMss
        # Offload: the link may take super-segments of several MSS.
        seg = self.frameSender.segmentSize(mss) if self._tsOk and self.frameSender else mss
        wnd = self._sndWnd
        cwnd = self._cwnd
        edge = una + (wnd if wnd < cwnd else cwnd)
        sent = False
        folds = None
        burst = ((dataEnd if dataEnd < edge else edge) - nxt) // mss
        if (burst > 1 and seg == mss and mss <= _BURST_MSS and not mss & 3 and self._tsOk
                and self.frameSender is not None):
            # The checksums of a burst of small full segments in one numpy call
            # (numpy's per-call cost is most of a 1448-byte fold). Capped: a
            # link that fills up stops the burst, and the rest would be wasted.
            if burst > _BURST_SEGMENTS:
                burst = _BURST_SEGMENTS
            off = nxt - una
            folds = iter(foldEach(memoryview(self._sndBuf)[off : off + burst * mss], mss))
        while nxt < dataEnd and not self._linkPaused:
            n = dataEnd - nxt
            if n > seg:
                n = seg
            room = edge - nxt
            if mss <= room < n:
                # A super-segment the windows cut: whole MSS pieces.
                n = room - room % mss
            if room < n:
                # Sender silly window avoidance (RFC 9293 3.8.6.2.1): a short
                # segment that the window forces is sent only if it is a good
                # share of the largest window the peer ever offered.
                if room <= 0 or room < self._maxSndWnd // 2 or room < mss // 2:
                    break
                n = room
            fin = finSeq is not None and nxt + n == finSeq
            self._sendData(nxt, n, fin, next(folds, None) if folds is not None and n == mss else None)
            nxt += n
            if fin:
                nxt += 1
            sent = True
        if finSeq is not None and nxt == finSeq and not self._linkPaused:
            # The FIN needs no window: receivers accept it at a zero window.
            self._sendData(nxt, 0, True)
            nxt += 1
            sent = True
        self._sndNxt = nxt
        if nxt > self._sndMax:
            self._sndMax = nxt
        if sent:
            if self._timerKind is not _T_RTO:
                self._setTimer(_T_RTO, self._rto)
        elif self._sndMax == una and nxt < dataEnd and self._timerKind is None:
            # Nothing in flight and the window is closed: probe it.
            self._setTimer(_T_PERSIST, self._persistInterval())

    def _persistInterval(self):
        interval = self._rto * (1 << min(self._persistCount, 10))
        return interval if interval < self.maxRto else self.maxRto

    def _retransmitFirst(self):
        """
        Retransmit the first unacknowledged segment, ignoring the windows: it was
        inside them when first sent.
        """
        if self._linkPaused:
            return
        state = self.state
        if state is SYN_SENT:
            self._emitSyn(SYN)
            return
        if state is SYN_RCVD:
            self._emitSyn(SYN | ACK)
            return
        una = self._sndUna
        # Only what was sent before: a segment first cut short by the window is
        # not stretched past SND.MAX, where nothing would time it.
        n = self._sndMax - una
        if n > len(self._sndBuf):
            n = len(self._sndBuf)
        if n > self._effMss:
            n = self._effMss
        finSeq = self._finSeq
        fin = finSeq is not None and una + n == finSeq and self._sndMax > finSeq
        if not n and not fin:
            return
        self._count("tcp.retransmit")
        # Karn: an ACK after a retransmission says nothing about the RTT.
        self._rttSeq = None
        self._sendData(una, n, fin)
        end = una + n + (1 if fin else 0)
        if self._sndNxt < end:
            self._sndNxt = end

    def _scheduleFlush(self):
        """
        Send at the end of this reactor turn: writes made in the same turn share
        segments, and an owed ACK rides on the data (a delayed ACK that costs no
        latency).
        """
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self._flush)

    def _flush(self):
        self._flushCall = None
        if self.state is CLOSED:
            return
        self._output()
        if self._ackOwed:
            self._sendAck()

    # ------------------------------------------------------------------
    # Timers.

    def _setTimer(self, kind, delay):
        """
        (Re)arm the connection's timer. Moving a deadline later costs nothing: the
        pending call notices when it fires and sleeps again.
        """
        deadline = self.clock.seconds() + delay
        self._timerKind = kind
        self._timerDeadline = deadline
        call = self._timerCall
        if call is None:
            self._timerCall = self.clock.callLater(delay, self._timerFired)
        elif call.getTime() > deadline + 1e-9:
            call.cancel()
            self._timerCall = self.clock.callLater(delay, self._timerFired)

    def _timerFired(self):
        self._timerCall = None
        kind = self._timerKind
        if kind is None:
            return
        now = self.clock.seconds()
        if now + 1e-9 < self._timerDeadline:
            self._timerCall = self.clock.callLater(
                self._timerDeadline - now, self._timerFired
            )
            return
        self._timerKind = None
        if kind is _T_RTO:
            self._rtoExpired()
        elif kind is _T_PERSIST:
            self._persistExpired()
        elif kind is _T_TIME_WAIT:
            if self._rcvQueue and not self._lostNotified:
                # The protocol has not read everything yet; wait for it.
                self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())
                return
            self._enterClosed(Failure(error.ConnectionDone()))
        elif kind is _T_FIN_WAIT_2:
            self._count("tcp.finWait2Timeout")
            self._count("tcp.resetSent")
            self._emit(RST | ACK, self._sndMax)
            self._enterClosed(Failure(error.ConnectionDone()))
        if self.state is not CLOSED:
            self._maybeIdleTimer()

    def _maybeIdleTimer(self):
        """
        After a timer ran, make sure a connection with data in flight still has a
        retransmission timer.
        """
        if self._timerKind is None and self._sndMax > self._sndUna:
            if self.state in _SENDING or self.state is SYN_SENT or self.state is SYN_RCVD:
                self._setTimer(_T_RTO, self._rto)

    def _rtoExpired(self):
        """
        RFC 6298 5.4-5.7 and RFC 5681 3.1: retransmit the first segment, back off,
        collapse the congestion window and go back to retransmit the rest as
        ACKs come.
        """
        if self._linkPaused:
            # Frames cannot leave; retrying now would only spend the budget.
            self._rtoDeferred = True
            return
        state = self.state
        self._count("tcp.rtoExpired")
        if state is SYN_SENT or state is SYN_RCVD:
            self._retries += 1
            if self._retries > self.synRetries:
                self._count("tcp.timeout")
                self._failHandshake(error.TCPTimedOutError())
                return
            self._rto = min(self._rto * 2, self.maxRto)
            self._rttSeq = None
            self._retransmitFirst()
            self._setTimer(_T_RTO, self._rto)
            return
        if state not in _SENDING or self._sndMax <= self._sndUna:
            return
        now = self.clock.seconds()
        if self._firstRetransmitTime is None:
            self._firstRetransmitTime = now
        self._retries += 1
        if (
            self._retries > self.maxRetries
            or now - self._firstRetransmitTime > self.maxRetransmitTime
        ):
            self._count("tcp.timeout")
            self._count("tcp.resetSent")
            self._emit(RST | ACK, self._sndMax)
            self._enterClosed(
                Failure(error.ConnectionLost("retransmission timed out"))
            )
            return
        mss = self._effMss
        flight = self._sndMax - self._sndUna
        self._ssthresh = max(flight // 2, 2 * mss)
        self._cwnd = mss
        self._caBytes = 0
        self._inRecovery = False
        self._dupAcks = 0
        self._recoverEnd = self._sndMax
        self._rttSeq = None
        self._rto = min(self._rto * 2, self.maxRto)
        self._sndNxt = self._sndUna
        self._retransmitFirst()
        self._setTimer(_T_RTO, self._rto)

    def _persistExpired(self):
        """
        The peer's window stayed closed: probe it. With a small open window a
        short segment is forced out (RFC 9293 3.8.6.2.1's override); with a zero
        window a zero-length segment one below SND.UNA draws an ACK with the
        current window without sending data the peer must drop, as Linux does.
        """
        if self.state not in _SENDING:
            return
        una = self._sndUna
        nxt = self._sndNxt
        dataEnd = una + len(self._sndBuf)
        if nxt >= dataEnd or self._sndMax > una:
            return
        if not self._linkPaused:
            room = una + self._sndWnd - nxt
            if room > 0:
                n = min(room, self._effMss, dataEnd - nxt)
                fin = self._finSeq is not None and nxt + n == self._finSeq
                self._sendData(nxt, n, fin)
                self._sndNxt = self._sndMax = nxt + n + (1 if fin else 0)
                self._setTimer(_T_RTO, self._rto)
                return
            self._count("tcp.zeroWindowProbe")
            self._emit(ACK, una - 1)
        self._persistCount += 1
        self._setTimer(_T_PERSIST, self._persistInterval())

    # ------------------------------------------------------------------
    # Closing.

    def _queueFin(self):
        """
        No more writes: the FIN goes after the data already buffered.
        """
        self._writeClosed = True
        self._finSeq = self._sndUna + len(self._sndBuf)
        state = self.state
        if state is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif state is CLOSE_WAIT:
            self.state = LAST_ACK
        self._needOutput = True
        self._scheduleFlush()

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

    def _timeWaitInterval(self):
        """
        L{timeWaitDuration}, or longer after a lossy life: if our last ACK is
        lost, the peer's FIN comes again after its RTO, which is about ours, and
        must still find us here (else it meets a RST and its side ends unclean).
        """
        interval = 2 * self._rto
        return interval if interval > self.timeWaitDuration else self.timeWaitDuration

    def _enterTimeWait(self):
        self.state = TIME_WAIT
        self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())

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

    def _enterClosed(self, reason, notifyLater=False):
        """
        The end: cancel timers, free buffers, tell the protocol (if it was
        connected and not told yet) and the owner.
        """
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._timerKind = None
        if self._timerCall is not None:
            self._timerCall.cancel()
            self._timerCall = None
        if self._flushCall is not None:
            self._flushCall.cancel()
            self._flushCall = None
        self._sndBuf = bytearray()
        self._ooo = []
        if self.connected and not self._lostNotified and reason is not None:
            if notifyLater:
                self._lostNotified = True
                self.connected = 0
                self.disconnected = 1
                self.clock.callLater(0, self._notifyLostLater, reason)
            else:
                self._notifyLost(reason)
        onClose = self.onClose
        if onClose is not None:
            onClose(self)

    def _notifyLostLater(self, reason):
        self._lostNotified = False
        self._notifyLost(reason)

    def _abortWith(self, reason, notifyLater=False):
        """
        Reset the connection: RST to the peer, C{connectionLost(reason)}.
        """
        state = self.state
        if state is CLOSED:
            return
        # No RST from TIME_WAIT (nothing left to reset), nor before we sent a
        # SYN-ACK or got one (RFC 9293 3.10.5: SYN_SENT just forgets).
        if state not in (TIME_WAIT, LISTEN, SYN_PENDING, SYN_SENT):
            self._count("tcp.resetSent")
            self._emit(RST | ACK, self._sndMax)
        self._enterClosed(reason, notifyLater)

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
            self._flushCall = self.clock.callLater(0, self._flush)
        if (
            self._producer is not None
            and self._streamingProducer
            and not self._producerPaused
            and len(self._sndBuf) >= self._sndBufSize
        ):
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
        return IPv4Address("TCP", self.localAddr[0], self.localAddr[1])

    def getPeer(self):
        return IPv4Address("TCP", self.remoteAddr[0], self.remoteAddr[1])

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

    def _windowUpdate(self):
        """
        After the receive buffer drained, tell the peer if its view of our window
        was small and has grown by a useful amount.
        """
        if self.state not in _RECEIVING:
            return
        nxt = self._rcvNxt
        shown = self._rcvAdvEdge - nxt
        free = self._rcvBufSize - self._rcvBuffered
        if shown < self._rcvBufSize // 2 and nxt + free - self._rcvAdvEdge >= self._swsThreshold:
            self._sendAck()

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

    def _feedProducer(self):
        """
        The send buffer is below half full: resume a paused streaming producer, or
        pull from a pull producer until the buffer is half full again.
        """
        producer = self._producer
        half = self._sndBufSize // 2
        if len(self._sndBuf) >= half:
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
            ):
                before = len(self._sndBuf)
                producer.resumeProducing()
                if len(self._sndBuf) == before:
                    break
        finally:
            self._feeding = False

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

    def _count(self, name, amount=1):
        counters = self.counters
        if counters is not None:
            counters.increment(name, amount)
