"""
Read a link's length-prefixed frames into one reused buffer, and hand them on
as views of it, to a consumer that is done with each frame when its call
returns (a TAP device, which writes it or copies it into its queue).

A read through the transport and the protocol costs a new bytes object for the
chunk, a copy of each frame sliced out of it, and four calls on the way (the
transport's C{_dataReceived}, the endpoint's wrapping protocol, the link
protocol, the decoder). In gvtap-guest that path is taken once per round trip
of every request/response exchange; the reader takes it in one call, with
C{recv_into} and memoryviews (measured with C{bench/rr.sh}: about 3
microseconds of a 185 microsecond ping-pong, 3 % of the helper's CPU).

L{FrameReader.attach} takes over the C{doRead} of a socket transport (one of
Twisted's L{tcp.Connection}s: TCP, UNIX and vsock links are), as an attribute
of that one transport, as Twisted's own C{abortConnection} does. Everything
else stays the transport's: writing, closing, and flow control
(C{pauseProducing} stops the transport's reading, and so the reader's).
"""

import struct

from twisted.internet import main, tcp

from gvtwisted.link.framing import MAX_FRAME


class FrameReader:
    """
    The reading half of one link connection.

    @ivar frames: the number of frames handed on.
    """

    def __init__(self, header: struct.Struct, framesReceived, framingError,
                 readSize: int = 64 * 1024, maxFrame: int = MAX_FRAME):
        """
        @param header: the length header format.
        @param framesReceived: called with a list of memoryviews, the whole
            frames of one read in order; it must not keep them.
        @param framingError: called with a reason once a length no frame can
            have arrives (after the frames before it were handed on); it
            closes the link. Nothing more is read.
        @param readSize: the most bytes one read asks for.
        """
        self._headerSize = header.size
        self._unpack = header.unpack_from
        self._framesReceived = framesReceived
        self._framingError = framingError
        self._readSize = readSize
        self._maxFrame = maxFrame
        # Room for a read behind the largest partial frame.
        self._buffer = bytearray(readSize + maxFrame + header.size)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._transport = None
        self._recvInto = None
        self.frames = 0

    @staticmethod
    def canRead(transport) -> bool:
        """
        Whether L{attach} can take over C{transport}'s reading: a plain
        socket transport, connected and not closing.
        """
        return (
            isinstance(transport, tcp.Connection)
            and not transport.TLS
            and transport.connected
            and not transport.disconnecting
            and not transport._aborting
        )

    def attach(self, transport, pending=b""):
        """
        Read C{transport}'s socket from now on; C{pending}, bytes the
        protocol already received and did not handle, come first.
        """
        if len(pending) > len(self._buffer) - self._readSize:
            raise ValueError(f"{len(pending)} pending bytes do not fit")
        self._view[: len(pending)] = pending
        self._start = 0
        self._end = len(pending)
        self._transport = transport
        self._recvInto = transport.socket.recv_into
        transport.doRead = self.doRead

    def detach(self):
        """
        Give the transport its own reading back (bytes still held are
        dropped: call this only when the link is going away).
        """
        transport, self._transport = self._transport, None
        self._recvInto = None
        if transport is not None:
            transport.__dict__.pop("doRead", None)

    def buffered(self) -> int:
        """
        How many bytes of an incomplete frame are held.
        """
        return self._end - self._start

    def doRead(self):
        """
        Read once, as L{tcp.Connection.doRead} does, and hand on the whole
        frames the buffer then holds.
        """
        view = self._view
        start = self._start
        end = self._end
        try:
            received = self._recvInto(view[end:])
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not received:
            return main.CONNECTION_DONE
        end += received
        headerSize = self._headerSize
        unpack = self._unpack
        buffer = self._buffer
        frames = []
        while end - start >= headerSize:
            (length,) = unpack(buffer, start)
            if not 0 < length <= self._maxFrame:
                return self._badLength(frames, length)
            stop = start + headerSize + length
            if stop > end:
                break
            frames.append(view[start + headerSize : stop])
            start = stop
        if frames:
            self.frames += len(frames)
            self._framesReceived(frames)
        if start == end:
            start = end = 0
        elif len(buffer) - end < self._readSize:
            # Move the partial frame to the front, so the next read has room.
            view[: end - start] = view[start:end]
            end -= start
            start = 0
        self._start = start
        self._end = end
        return None

    def _badLength(self, frames, length):
        self._start = self._end = 0
        if frames:
            self.frames += len(frames)
            self._framesReceived(frames)
        self._framingError(f"frame length {length} is outside 1..{self._maxFrame}")
        return None
