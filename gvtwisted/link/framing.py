"""
Length-prefixed Ethernet framing over a stream, as gvisor-tap-vsock, QEMU and
vpnkit put frames on a socket.

Each frame on the wire is a length header followed by the frame itself (no FCS).
The header is 2 bytes little-endian on gvproxy's C{/connect} links and on stdio,
and 4 bytes big-endian on QEMU's C{-netdev stream}/C{-netdev socket} links.

A stream can split a frame across reads or deliver many frames in one read, so
the decoder keeps at most one partial frame and walks complete ones in place.
A zero length or one over L{MAX_FRAME} is a protocol error: the link is closed,
because once the framing is lost nothing later on the stream can be trusted.

A protocol with C{maxBatch} set handles at most that many frames of one link,
and at most C{maxBatchTime} seconds' worth, per reactor turn: the rest of a read
waits in a backlog (the transport stops reading meanwhile, so the kernel's
buffer holds what follows) and is taken a batch at a time in later turns. One guest's flood of small frames (a port
scan fits a thousand SYNs in one read) then costs the other links one batch of
latency, not the whole read.
"""

import struct
from collections import deque
from time import perf_counter

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from gvtwisted.link.eager import TurnWriter

MAX_FRAME = 128 * 1024


class FramingError(Exception):
    """
    The peer sent a length that no valid frame can have.
    """


class FrameDecoder:
    """
    Turn stream chunks into whole frames.

    @ivar headerSize: bytes of the length header.
    @ivar maxFrame: the largest frame accepted.
    """

    def __init__(self, header: struct.Struct, maxFrame: int = MAX_FRAME):
        self._header = header
        self.headerSize = header.size
        self.maxFrame = maxFrame
        self._buffer = b""
        self.pending = []

    def feed(self, data: bytes):
        """
        Add C{data} and return the list of complete frames it finishes.

        @raise FramingError: on a zero or oversize length; frames completed
            before the bad header are returned by the next call to L{pending}.
        """
        buf = self._buffer + data if self._buffer else data
        frames = []
        offset = 0
        end = len(buf)
        hsize = self.headerSize
        unpack = self._header.unpack_from
        while end - offset >= hsize:
            (length,) = unpack(buf, offset)
            if length == 0 or length > self.maxFrame:
                self._buffer = b""
                self.pending = frames
                raise FramingError(
                    f"frame length {length} is outside 1..{self.maxFrame}"
                )
            stop = offset + hsize + length
            if stop > end:
                break
            frames.append(buf[offset + hsize : stop])
            offset = stop
        self._buffer = buf[offset:] if offset < end else b""
        return frames

    def buffered(self) -> int:
        """
        How many bytes of an incomplete frame are held.
        """
        return len(self._buffer)

    def takeBuffered(self) -> bytes:
        """
        Give up the bytes of an incomplete frame, to whatever reads the
        stream next.
        """
        held, self._buffer = self._buffer, b""
        return held


LE16 = struct.Struct("<H")
BE32 = struct.Struct(">I")


def encodeFrame(header: struct.Struct, frame: bytes) -> bytes:
    """
    Prefix C{frame} with its length in C{header}'s format.
    """
    return header.pack(len(frame)) + frame


class FramedLinkProtocol(Protocol):
    """
    A stream protocol that carries length-prefixed Ethernet frames.

    Incoming frames go to C{self.frameReceived}; L{sendFrame} writes one.
    Subclasses or owners set C{frameReceived}, C{linkUp} and C{linkDown}.

    @cvar header: the length header format (L{LE16} or L{BE32}).
    """

    header = LE16
    log = Logger()
    # Whether frames on this link carry virtio-net headers (negotiated
    # offload, L{gvtwisted.link.offload}).
    offload = False
    # Frames handled per reactor turn; None: every frame of a read at once.
    maxBatch = None
    # With maxBatch: a read of at most maxBatch frames is handled at once, as
    # one batch; a longer one in batches of cheapBatch frames, at most
    # maxBatchTime seconds' worth per turn.
    maxBatchTime = 0.001
    cheapBatch = 8

    def __init__(self, header=None, maxFrame=MAX_FRAME, clock=None):
        """
        @param clock: the C{IReactorTime} that schedules the next batch (the
            global reactor when L{None}); used only with C{maxBatch}.
        """
        if header is not None:
            self.header = header
        self._decoder = FrameDecoder(self.header, maxFrame)
        self._pack = self.header.pack
        self._clock = clock
        self._backlog = None
        self._batchCall = None
        self._readingPaused = False

    def setHeader(self, header: struct.Struct, maxFrame: int = MAX_FRAME):
        """
        Switch to another length header, before any frame (a link whose
        handshake picks its framing, as offload does).
        """
        self.header = header
        self._decoder = FrameDecoder(header, maxFrame)
        self._pack = header.pack

    def frameReceived(self, frame: bytes):
        """
        Called with each whole frame; override or assign.
        """

    def framesReceived(self, frames):
        """
        Called with the whole frames of one read (at least one), in order;
        override or assign to handle them as a batch.
        """
        for frame in frames:
            self.frameReceived(frame)

    def framingError(self, reason: str):
        """
        Called once when the stream breaks the framing, before the link closes.
        """
        self.log.warn("closing link {peer}: {reason}", peer=self._peerName(), reason=reason)

    def _peerName(self):
        try:
            return str(self.transport.getPeer())
        except Exception:
            return "?"

    def dataReceived(self, data: bytes):
        try:
            frames = self._decoder.feed(data)
        except FramingError as e:
            for frame in self._decoder.pending:
                self.frameReceived(frame)
            self._decoder.pending = []
            self.framingError(str(e))
            abort = getattr(self.transport, "abortConnection", None)
            (abort or self.transport.loseConnection)()
            return
        if not frames:
            return
        if self._backlog is not None:
            self._backlog.extend(frames)
            return
        if self.maxBatch is None or len(frames) <= self.maxBatch:
            self.framesReceived(frames)
            return
        self._backlog = deque(frames)
        self._nextBatch()

    def _scheduleBatch(self):
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        self._batchCall = clock.callLater(0, self._nextBatch)

    def _nextBatch(self):
        """
        Handle the next C{maxBatch} frames of the backlog; read again once it
        is empty.
        """
        self._batchCall = None
        backlog = self._backlog
        if backlog is None:
            return
        deadline = perf_counter() + self.maxBatchTime
        step = self.cheapBatch
        left = self.maxBatch
        while backlog and left > 0:
            # Handed on in small batches (framesReceived), the clock looked
            # at between them.
            chunk = [backlog.popleft() for _ in range(min(step, left, len(backlog)))]
            left -= len(chunk)
            self.framesReceived(chunk)
            if self._backlog is None:
                return
            if perf_counter() > deadline:
                break
        if backlog:
            if not self._readingPaused:
                self._readingPaused = True
                self.transport.pauseProducing()
            self._scheduleBatch()
        else:
            self._backlog = None
            if self._readingPaused:
                self._readingPaused = False
                self.transport.resumeProducing()

    def connectionLost(self, reason):
        self._dropBacklog()

    def _dropBacklog(self):
        """
        The link is gone: what was still waiting goes with it.
        """
        self._backlog = None
        if self._writer is not None:
            self._writer.cancel()
        if self._batchCall is not None:
            if self._batchCall.active():
                self._batchCall.cancel()
            self._batchCall = None

    def sendFrame(self, frame: bytes):
        """
        Write one frame with its length header.
        """
        self._turnWriter().writeSequence((self._pack(len(frame)), frame), len(frame) + self.header.size)

    def sendFrameParts(self, parts, length: int):
        """
        Write one frame given in pieces (bytes) of C{length} bytes in all, with
        its length header: the transport gets the pieces as they are.
        """
        self._turnWriter().writeSequence((self._pack(length), *parts), length + self.header.size)

    _writer = None

    def _turnWriter(self) -> TurnWriter:
        """
        The L{TurnWriter} of the current transport: the first frame of a
        reactor turn leaves at once, the rest of the turn's in one system call.
        """
        writer = self._writer
        if writer is None or writer.transport is not self.transport:
            writer = self._writer = TurnWriter(self.transport)
        return writer
