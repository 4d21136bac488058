"""
The RFC 9293 connection machine of L{gvtwisted.stack.tcp}: states, the send and
receive sequence spaces, segment processing per state, retransmission and the
connection's one timer. It does no I/O: segments come in already parsed
(L{gvtwisted.wire.tcp.parseSegment}) through L{TCPMachine.receiveSyn} and
L{TCPMachine.segmentReceived}, and go out as complete TCP segments through the
C{send} callable (or the optional C{frameSender}) it was given. Time comes from
an injected C{IReactorTime}.

What stands alone lives beside it: the RTT estimator (L{rtt}), congestion
control (L{congestion}) and the out-of-order assembler (L{assembler}). What a
Twisted protocol sees (C{ITCPTransport}, producers and consumers, delivery of
data, the link's flow control) is the adapter in L{transport}, a subclass: this
machine calls these hooks of it:

 - C{_connectProtocol()}: the handshake completed;
 - C{_accept(data)}: in-order data, already counted in C{_rcvNxt};
 - C{_drainReceiveQueue()}: deliver what was accepted;
 - C{_writeSideDone()}: our FIN is acknowledged;
 - C{_feedProducer()}: acknowledged data left room in the send buffer;
 - C{_notifyLost(reason)}: C{connectionLost}, once;
 - C{_linkPaused}: whether the guest's link is full (segments wait).

What it buffers (send buffer, out-of-order blocks, in-order data the protocol
has not taken) is reported to the optional shared L{BufferBudget}
(C{budget}); while that is spent the receive window's right edge stops
moving (L{_windowField}), so the window the guest sees closes.

Standards followed: RFC 9293 (the machine), 6298 (RTO), 5681 and 6582 (congestion
control, NewReno), 7323 (window scale, timestamps, PAWS), 2018 (SACK, receiver
side), 5961 (RST and SYN checks), 6528 (initial sequence numbers), 1122 and 9293
3.8.6 (delayed ACK, silly window avoidance, zero window probes).
"""

import socket
import struct
from collections import deque

from twisted.internet import error
from twisted.logger import Logger
from twisted.python.failure import Failure

from gvtwisted.reactor import turnEndScheduler
from gvtwisted.stack import tcp as _package
from gvtwisted.stack.tcp.assembler import Assembler
from gvtwisted.stack.tcp.congestion import DUP_FAST_RETRANSMIT, DUP_SEND, NewReno
from gvtwisted.stack.tcp.rtt import RttEstimator
from gvtwisted.stack.tcp.sequence import HALF as _HALF
from gvtwisted.stack.tcp.sequence import MASK as _MASK
from gvtwisted.stack.tcp.sequence import initialSequenceNumber
from gvtwisted.stack.tcp.sequence import wantedShift as _wantedShift
from gvtwisted.stack.tcp.states import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_PENDING,
    SYN_RCVD,
    SYN_SENT,
    TIME_WAIT,
)
from gvtwisted.stack.tcp.states import RECEIVING as _RECEIVING
from gvtwisted.stack.tcp.states import SENDING as _SENDING
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

# Timer kinds; one lazy timer per connection serves them all because at most one
# is needed at a time.
_ACK_PSH = ACK | PSH
_T_RTO = "rto"
_T_PERSIST = "persist"
_T_TIME_WAIT = "timeWait"
_T_FIN_WAIT_2 = "finWait2"

_TS_OPTION = struct.Struct("!BBBBII")

# Bursts of full segments whose payload checksums are summed in one call: up to
# this segment size (above it numpy's per-call cost hardly matters) and this many
# segments (about what a link takes before it pushes back at MTU 1500). The sum
# is looked up on the package (C{gvtwisted.stack.tcp.foldEach}) so that a test
# can watch it.
_BURST_MSS = 16384
_BURST_SEGMENTS = 32


def _packed(ip: str) -> bytes:
    """
    The 4 or 16 bytes of a text address: the machine is the same for IPv6
    (its pseudo header sums the same way, whatever the address length).
    """
    return socket.inet_pton(socket.AF_INET6, ip) if ":" in ip else socket.inet_aton(ip)


class TCPMachine:
    """
    The protocol machine of one TCP connection between a gateway address
    (local) and a guest (remote); see L{gvtwisted.stack.tcp.TCPConnection},
    which adds what a Twisted protocol needs, for the whole story.

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
    # The ACK of a lone segment of at most half the MSS (a request, a keystroke)
    # waits this long for data of ours to ride on instead of going out alone at
    # the end of the turn: a request's answer usually comes back within it, and
    # the guest is spared a frame (a full extra hop through the link). Linux
    # delays such ACKs 40 ms; kept short so that a guest whose Nagle waits for
    # this ACK loses little. 0 turns the delay off.
    delayedAckTimeout = 0.002

    # A machine alone has no link (the transport adapter makes this a property).
    _linkPaused = False

    # Every instance attribute, so that an idle connection costs no instance
    # dict (docs/architecture.md gives the figure). A new attribute must be
    # named here (or in TCPConnection's __slots__); a class-level tunable that
    # an instance overrides needs a slot of another name (C{timeWaitDuration}
    # is the default of the C{_timeWait} slot).
    __slots__ = (
        "_ackNow",
        "_ackOwed",
        "_folds",
        "_foldsAt",
        "_assembler",
        "batch",
        "_batched",
        "budget",
        "_budgetHeld",
        "_cc",
        "clock",
        "_atTurnEnd",
        "connected",
        "counters",
        "disconnected",
        "_effMss",
        "_finAcked",
        "_finRcvSeq",
        "_finSeq",
        "_firstRetransmitTime",
        "_flushCall",
        "_delayedAckCall",
        "_ackDelayedTo",
        "_fold",
        "frameSender",
        "irs",
        "iss",
        "_issOverride",
        "_lastAckSent",
        "_lastOutOfWindowAck",
        "localAddr",
        "_localIP",
        "_localPort",
        "_lostNotified",
        "_maxSndWnd",
        "mss",
        "_needOutput",
        "onClose",
        "onConnectFailed",
        "_ooo",
        "_peerMss",
        "_peerSyn",
        "_persistCount",
        "_producer",
        "_rcvAdvEdge",
        "_rcvBuffered",
        "_rcvBufSize",
        "_rcvNxt",
        "_rcvQueue",
        "_rcvShift",
        "_readClosed",
        "_readEofPending",
        "remoteAddr",
        "_remoteIP",
        "_remotePort",
        "_retries",
        "_rto",
        "_rtoDeferred",
        "_rtt",
        "_rttSeq",
        "_rttTime",
        "_sackOk",
        "_send",
        "_sndBuf",
        "_sndBufSize",
        "_sndMax",
        "_sndNxt",
        "_sndShift",
        "_sndUna",
        "_sndWl1",
        "_sndWl2",
        "_sndWnd",
        "state",
        "_swsThreshold",
        "_timerCall",
        "_timerDeadline",
        "_timerKind",
        "_timeWait",
        "_tsOffset",
        "_tsOk",
        "_tsRecent",
        "_wantShift",
        "_writeClosed",
    )

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
        self._atTurnEnd = turnEndScheduler(clock)
        self.localAddr = (localAddr[0], localAddr[1])
        self.remoteAddr = (remoteAddr[0], remoteAddr[1])
        self._localIP = _packed(localAddr[0])
        self._remoteIP = _packed(remoteAddr[0])
        self._localPort = localAddr[1]
        self._remotePort = remoteAddr[1]
        self._delayedAckCall = None
        self._ackDelayedTo = 0
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
        self._timeWait = self.timeWaitDuration if timeWait is None else timeWait
        # What the transport adapter keeps; these are a machine with no
        # protocol.
        self.connected = 0
        self.disconnected = 0
        self._readClosed = False
        self._lostNotified = False
        self._producer = None
        self._rtoDeferred = False

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
        self._writeClosed = False
        self._cc = NewReno()
        self._rtt = RttEstimator(
            self.initialRto, self.minRto, self.maxRto, self.clockGranularity
        )
        # The estimator's RTO, read on every ACK, so kept here as well.
        self._rto = self._rtt.rto
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
        self._assembler = Assembler(self.maxOutOfOrderBlocks)
        # The assembler's blocks (the same list): "is anything held out of
        # order" is asked of every segment.
        self._ooo = self._assembler.blocks
        self._finRcvSeq = None
        self._tsRecent = 0
        self._lastAckSent = 0
        self._ackOwed = 0
        # Checksum folds of full segments from sequence number _foldsAt on
        # (see _output), or None.
        self._folds = None
        self._foldsAt = 0
        self._ackNow = False
        self._needOutput = False
        self._lastOutOfWindowAck = float("-inf")
        self._readEofPending = False

        self._timerKind = None
        self._timerDeadline = 0.0
        self._timerCall = None
        self._flushCall = None

        # The shared L{gvtwisted.stack.tcp.budget.BufferBudget}, or None; and
        # the bytes this connection last reported to it.
        self.budget = None
        self._budgetHeld = 0

    # ------------------------------------------------------------------
    # Opening.

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
        self._cc.recoverEnd = iss

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
        self._cc.start(self._effMss, self.initialWindowSegments)
        self._connectProtocol()

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

        In a synchronized state the checks run in RFC 9293 3.10.7.4's order,
        each in a method of its own: the sequence number
        (L{_sequenceAcceptable}), then RST and SYN (L{_resetOrSynReceived}),
        the ACK field (L{_synRcvdAcked} then L{_processAck}), the segment text
        and the FIN (L{_receiveText}, L{_textAfterFin}); last, what the segment made us owe
        goes out.

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

        if (
            seq == rcvNxt
            and state is ESTABLISHED
            and (flags == ACK or flags == _ACK_PSH)
            and plen
            and self.headerPrediction
        ):
            ack = self._predictedAck(seg, seq, plen)
            if ack is not None:
                self._predictedReceived(seg, seq, ack, payload)
                return

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

        segLen = plen
        if flags & SYN:
            segLen += 1
        if flags & FIN:
            segLen += 1
        # First, the sequence number.
        if not self._sequenceAcceptable(seg, seq, segLen, flags, state):
            return
        # Second and fourth, RST and SYN (the third, security, has no use here).
        if flags & (RST | SYN):
            self._resetOrSynReceived(seq, segLen, flags)
            return
        # Fifth, the ACK field.
        if not flags & ACK:
            return
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and seq <= self._lastAckSent:
            self._tsRecent = tsVal
        if state is SYN_RCVD and not self._synRcvdAcked(seg, seq):
            return
        if not self._processAck(seg, seq, flags, plen):
            self._count("tcp.ackUnsent")
            self._sendOutOfWindowAck(segLen, flags)
            return
        state = self.state
        if state is CLOSED:
            return
        # Seventh and eighth (the sixth, URG, is not supported), the text and
        # the FIN.
        if plen or flags & FIN:
            if state in _RECEIVING:
                self._receiveText(seq, payload, flags & FIN)
                if self.state is CLOSED:
                    return
            else:
                self._textAfterFin(state)

        self._segmentDone()

    def _segmentDone(self):
        """
        The last step of a segment: send what it made us owe.
        """
        if self._needOutput:
            self._needOutput = False
            self._output()
        if self._ackOwed:
            if self._ackNow or (self._ackOwed >= 2 and not self.stretchAcks):
                self._sendAck()
            elif self._flushCall is None and self._ackCanWait():
                # A request's ACK, with nothing of ours to send this turn (the
                # output ran above): it waits for the answer to ride on, as the
                # end-of-turn flush would have decided, without that flush.
                self._delayAck()
            else:
                self._scheduleFlush()

    # Header prediction (Van Jacobson's, as in BSD and Linux): the commonest
    # segment of an established connection, in-order data whose ACK field moves
    # at most forward and whose window did not change, skips the general
    # checks, and its data reaches the protocol (for a NAT'd connection, the
    # host socket) before its acknowledgement is processed, so that a request
    # leaves for the host first and the bookkeeping of our acknowledged answer
    # (RTT sample, timers, send buffer) comes after it. tests/test_tcp_prediction.py
    # holds the outcome to that of the general path, segment by segment.
    headerPrediction = True

    def _predictedAck(self, seg, seq, plen):
        """
        Whether C{seg} (in-order data, ACK or ACK|PSH, established) may take the
        predicted path, checking what the general path would check, and where
        handling its data before its ACK could change anything; changes nothing.

        @return: the segment's ACK field unwrapped, or C{None}.
        """
        if self._ooo or self._finRcvSeq is not None:
            return None
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and self._pawsRejects(tsVal):
            return None
        sndUna = self._sndUna
        ack = sndUna + ((seg.ack - sndUna + _HALF) & _MASK) - _HALF
        if ack < sndUna or ack > self._sndMax or seg.window << self._sndShift != self._sndWnd:
            return None
        if ack > sndUna:
            # What the acknowledgement does must not depend on the data having
            # been taken first: no fast recovery (its retransmission carries our
            # ACK field), a producer it would not resume or pull from (a pull
            # producer's bytes would follow the protocol's answer instead of
            # preceding it), and a buffer budget that the data cannot bring to
            # its limit (what the acknowledgement decides on the total, whether
            # the producer waits and whether waiting connections resume, is
            # then the same with the data counted or not).
            if self._cc.inRecovery or not self._producerInert():
                return None
            budget = self.budget
            if budget is not None and budget.used + plen >= budget.limit:
                return None
        return ack

    def runRoom(self, seg) -> int:
        """
        For the fast path's coalescing (L{gvtwisted.stack.fastpath}): whether
        C{seg}, in-order data with flags ACK or ACK|PSH, may start a run that
        reaches this connection as one segment with the same outcome as its
        segments one by one, and how many more bytes such a run may add.

        It may if the connection is established with stretched ACKs and
        nothing out of order, C{seg} is the next in sequence, its ACK field is
        within what was sent (else it is dropped with its data), it passes
        PAWS (else it is dropped and what follows is out of order), and it is
        more than half the MSS: its ACK cannot be delayed, so it goes out at
        the end of the turn as the ACK of several segments does, and the
        delayed-ACK timer is left as the segments one by one would leave it.

        @return: the bytes of the receive window past C{seg}, or -1 if it may
            not start a run.
        """
        plen = len(seg.payload)
        if (
            plen <= self.mss >> 1
            or self.state is not ESTABLISHED
            or not self.stretchAcks
            or self._ooo
            or seg.seq != self._rcvNxt & _MASK
        ):
            return -1
        una = self._sndUna
        if (seg.ack - una) & _MASK > self._sndMax - una:
            return -1
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and self._pawsRejects(tsVal):
            return -1
        room = self._rcvAdvEdge - self._rcvNxt - plen
        return room if room >= 0 else -1

    def _pawsRejects(self, tsVal) -> bool:
        """
        Whether timestamp C{tsVal} is older than the last one seen (PAWS,
        RFC 7323 5).
        """
        return (tsVal - self._tsRecent) & _MASK >= _HALF

    def _producerInert(self) -> bool:
        """
        Whether freeing send buffer space would leave the producer alone (a
        machine alone has none; the transport adapter says more).
        """
        return self._producer is None

    def _predictedReceived(self, seg, seq, ack, payload):
        """
        The predicted segment: its data, then its acknowledgement.
        """
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and seq <= self._lastAckSent:
            self._tsRecent = tsVal
        self._receiveText(seq, payload, 0)
        if self.state is CLOSED:
            return
        wl1 = self._sndWl1
        if wl1 < seq or (wl1 == seq and self._sndWl2 <= ack):
            self._sndWl1 = seq
            self._sndWl2 = ack
        if ack > self._sndUna:
            self._ackAdvanced(ack, seg.tsEcr)
            if self.state is CLOSED:
                return
        self._segmentDone()

    def _sequenceAcceptable(self, seg, seq, segLen, flags, state):
        """
        RFC 9293 3.10.7.4's first check, after PAWS (RFC 7323 5): whether the
        segment is in the window. A segment that is not is answered (at most
        an ACK, never for a RST) and dropped.
        """
        # PAWS: a timestamp older than the last one seen is an old duplicate
        # from a previous wrap of the sequence space.
        tsVal = seg.tsVal
        if self._tsOk and tsVal is not None and not flags & RST:
            if self._pawsRejects(tsVal):
                self._count("tcp.pawsDrop")
                self._sendOutOfWindowAck(segLen, flags)
                return False
        rcvNxt = self._rcvNxt
        wnd = self._rcvAdvEdge - rcvNxt
        if wnd < 0:
            wnd = 0
        # The acceptability test, relaxed like Linux at the right edge so that
        # a FIN or an ACK at a zero window still gets in.
        if segLen == 0:
            acceptable = rcvNxt <= seq <= rcvNxt + wnd
        else:
            acceptable = seq + segLen > rcvNxt and seq <= rcvNxt + wnd
        if acceptable:
            return True
        if not flags & RST:
            self._count("tcp.unacceptable")
            if state is TIME_WAIT and flags & FIN:
                # The peer's FIN again: our last ACK was lost. RFC 9293
                # restarts the wait, though its own sequence check (the FIN
                # is old) would stop the segment before that step.
                self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())
            self._sendOutOfWindowAck(segLen, flags)
        return False

    def _resetOrSynReceived(self, seq, segLen, flags):
        """
        RFC 9293 3.10.7.4's second and fourth checks: an acceptable RST or SYN
        in a synchronized state.
        """
        if flags & RST:
            # RFC 5961 3.2: only an exact match resets; a RST elsewhere in the
            # window gets a challenge ACK, which a real peer answers with an exact
            # RST.
            if seq == self._rcvNxt:
                self._resetReceived()
            else:
                self._count("tcp.challengeAck")
                self._sendOutOfWindowAck(0, flags)
            return
        # RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK.
        self._count("tcp.challengeAck")
        self._sendOutOfWindowAck(segLen, flags)

    def _synRcvdAcked(self, seg, seq):
        """
        The fifth check in C{SYN_RCVD}: an ACK of our SYN-ACK completes the
        handshake; any other ACK gets a RST.

        @return: whether processing goes on (the connection is established).
        """
        sndUna = self._sndUna
        ack = sndUna + ((seg.ack - sndUna + _HALF) & _MASK) - _HALF
        if not sndUna < ack <= self._sndMax:
            self._count("tcp.resetSent")
            self._sendRaw(seg.ack, 0, RST)
            return False
        self._sndWnd = seg.window << self._sndShift
        self._maxSndWnd = self._sndWnd
        self._sndWl1 = seq
        self._sndWl2 = ack
        self._handshakeAcked(ack)
        self._establish()
        return self.state is not CLOSED

    def _textAfterFin(self, state):
        """
        RFC 9293 3.10.7.4's seventh and eighth checks in a state that no longer
        reads (the peer's FIN is in): data or a FIN again (in a state that
        reads, L{_receiveText}).
        """
        if state is TIME_WAIT:
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
            self._rto = self._rtt.sample(self.clock.seconds() - self._rttTime)
        self._rttSeq = None
        self._retries = 0
        self._timerKind = None
        self._cc.recoverEnd = self.iss

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
            if self.budget is not None:
                self._budgetSync()
        self._sndUna = ack
        if self._sndNxt < ack:
            self._sndNxt = ack
        if self._tsOk and tsEcr is not None:
            elapsed = (self._tsNow() - tsEcr) & _MASK
            if elapsed < 0x7FFFFFFF:
                self._rto = self._rtt.sample(elapsed / 1000.0)
            self._rttSeq = None
        elif self._rttSeq is not None and ack >= self._rttSeq:
            self._rto = self._rtt.sample(self.clock.seconds() - self._rttTime)
            self._rttSeq = None

        if self._cc.ackAdvanced(acked, ack, self._sndMax, self._effMss):
            # A partial acknowledgement in fast recovery: the next hole is lost too.
            self._retransmitFirst()
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
        what = self._cc.duplicateAck(self._sndUna, self._sndMax, self._effMss)
        if what == DUP_FAST_RETRANSMIT:
            self._count("tcp.fastRetransmit")
            self._rttSeq = None
            self._retransmitFirst()
            self._needOutput = True
        elif what == DUP_SEND:
            self._needOutput = True

    @property
    def _srtt(self):
        """
        The smoothed round-trip time (L{RttEstimator.srtt}).
        """
        return self._rtt.srtt

    @_srtt.setter
    def _srtt(self, value):
        self._rtt.srtt = value

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
                dropped = self._assembler.insert(seq, payload)
                if dropped:
                    self._count("tcp.outOfOrderDrop", dropped)
                if self.budget is not None:
                    self._budgetSync()
            # Out of order: a duplicate ACK now tells the sender about the hole.
            self._ackNow = True
            return
        if plen:
            self._rcvNxt = nxt + plen
            self._accept(payload)
        if self._ooo:
            pulled = self._assembler.pull(self._rcvNxt, self._accept)
            if pulled != self._rcvNxt:
                self._rcvNxt = pulled
                # A hole was filled: tell the sender at once (RFC 5681 4.2).
                self._ackNow = True
        if self._finRcvSeq is not None and self._finRcvSeq == self._rcvNxt:
            if not fin:
                # The FIN came ahead of data that came now: a hole filled.
                self._ackNow = True
            self._finReceived()
        if self.budget is not None:
            self._budgetSync()
        batch = self.batch
        if batch is not None and batch.depth:
            if not self._batched:
                self._batched = True
                batch.atEnd(self._batchEnded)
            return
        self._drainReceiveQueue()

    def _finReceived(self):
        """
        The peer's FIN is next in sequence: consume it and move on.
        """
        self._rcvNxt += 1
        self._finRcvSeq = None
        state = self.state
        if state is ESTABLISHED:
            # Its ACK may wait, as Linux's does (it enters ping-pong mode):
            # the protocol hears of the end now, and a NAT'd host that closes
            # in turn gives our FIN, which carries the ACK, within the delay
            # (one frame each way per connection less). The segment that
            # brought the FIN is already owed an ACK.
            self.state = CLOSE_WAIT
        else:
            self._ackNow = True
            self._ackOwed += 1
            if state is FIN_WAIT_1:
                self.state = CLOSING
            elif state is FIN_WAIT_2:
                self._enterTimeWait()
        self._readEofPending = True

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
        The SACK option for what we hold out of order, at most C{limit} blocks.
        """
        return sackOption(self._assembler.sackBlocks(limit))

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
        budget = self.budget
        if budget is not None and edge > adv and budget.used >= budget.limit:
            # The global budget is spent: promise nothing more (what was
            # promised stays acceptable), and wait for room to reopen.
            budget.block(self)
            edge = adv if adv > nxt else nxt
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
        cwnd = self._cc.cwnd
        edge = una + (wnd if wnd < cwnd else cwnd)
        sent = False
        # The checksums of full segments of unsent data, summed ahead in one
        # numpy call for up to _BURST_SEGMENTS of them (numpy's per-call cost
        # is most of a 1448-byte fold) and kept by sequence number: the bytes
        # at a sequence number never change, and an ACK that opens the window
        # by a segment or two then costs no numpy call of its own.
        foldable = (seg == mss and mss <= _BURST_MSS and not mss & 3 and self._tsOk
                    and self.frameSender is not None)
        folds = self._folds
        foldsAt = self._foldsAt
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
            payloadFold = None
            if n == mss and foldable:
                index = nxt - foldsAt
                if folds is None or index < 0 or index % mss or index // mss >= len(folds):
                    count = (dataEnd - nxt) // mss
                    if count > _BURST_SEGMENTS:
                        count = _BURST_SEGMENTS
                    if count > 1:
                        off = nxt - una
                        folds = _package.foldEach(
                            memoryview(self._sndBuf)[off : off + count * mss], mss)
                        foldsAt = nxt
                        index = 0
                    else:
                        folds = None
                if folds is not None:
                    payloadFold = folds[index // mss]
            self._sendData(nxt, n, fin, payloadFold)
            nxt += n
            if fin:
                nxt += 1
            sent = True
        if finSeq is not None and nxt == finSeq and not self._linkPaused:
            # The FIN needs no window: receivers accept it at a zero window.
            self._sendData(nxt, 0, True)
            nxt += 1
            sent = True
        if folds is not None and nxt - foldsAt >= len(folds) * mss:
            folds = None
        self._folds = folds
        self._foldsAt = foldsAt
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
            self._flushCall = self._atTurnEnd(self._flush)

    def _flush(self):
        self._flushCall = None
        if self.state is CLOSED:
            return
        self._output()
        if self._ackOwed:
            if self._ackCanWait():
                self._delayAck()
            else:
                self._sendAck()

    def _ackCanWait(self) -> bool:
        """
        Whether the ACK owed is for one short segment (at most half the MSS, a
        request or a keystroke) of an established connection, or for the one
        that brought the peer's FIN, which may wait L{delayedAckTimeout} for
        data or a FIN of ours to ride on.
        """
        state = self.state
        return (
            self._ackOwed == 1
            and self.delayedAckTimeout
            and (state is ESTABLISHED or state is CLOSE_WAIT)
            and self._rcvNxt - self._lastAckSent <= self.mss // 2
        )

    def _delayAck(self):
        # One timer at a time, never cancelled: an ACK that rides on our data
        # leaves it armed (cancelling and arming again for every request of a
        # ping-pong would cost more than the timer's rare wasted wake).
        if self._delayedAckCall is None:
            self._ackDelayedTo = self._rcvNxt
            self._delayedAckCall = self.clock.callLater(
                self.delayedAckTimeout, self._delayedAckFired
            )

    def _delayedAckFired(self):
        self._delayedAckCall = None
        if not self._ackOwed or self.state is CLOSED:
            return
        if self._lastAckSent >= self._ackDelayedTo:
            # What the timer was armed for was acknowledged on the way; the
            # ACK owed now is for later data, which gets a delay of its own
            # (without this, a ping-pong sent a pure ACK every two
            # milliseconds, ahead of the answer: 6 % more frames to the guest).
            self._delayAck()
            return
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
            self._rto = self._rtt.backoff(self._rto)
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
        self._cc.timedOut(self._sndUna, self._sndMax, self._effMss)
        self._rttSeq = None
        self._rto = self._rtt.backoff(self._rto)
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

    def _timeWaitInterval(self):
        """
        L{timeWaitDuration}, or longer after a lossy life: if our last ACK is
        lost, the peer's FIN comes again after its RTO, which is about ours, and
        must still find us here (else it meets a RST and its side ends unclean).
        """
        interval = 2 * self._rto
        timeWait = self._timeWait
        return interval if interval > timeWait else timeWait

    def _enterTimeWait(self):
        self.state = TIME_WAIT
        self._setTimer(_T_TIME_WAIT, self._timeWaitInterval())

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
        if self._delayedAckCall is not None:
            self._delayedAckCall.cancel()
            self._delayedAckCall = None
        self._sndBuf = bytearray()
        self._assembler.clear()
        self._rcvQueue.clear()
        self._rcvBuffered = 0
        budget = self.budget
        if budget is not None:
            self._budgetSync()
            budget.forget(self)
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

    def _budgetSync(self):
        """
        Report to the budget what this connection buffers now (O(1): the
        difference from what it reported last).
        """
        held = len(self._sndBuf) + self._rcvBuffered + self._assembler.held
        delta = held - self._budgetHeld
        if delta:
            self._budgetHeld = held
            self.budget.charge(delta)

    def budgetResumed(self):
        """
        The budget has room again (this connection was blocked on it): reopen
        the receive window with a window update; the transport adapter also
        resumes its producer.
        """
        if self.state is CLOSED:
            return
        self._windowUpdate()

    def _count(self, name, amount=1):
        counters = self.counters
        if counters is not None:
            counters.increment(name, amount)
