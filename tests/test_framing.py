"""
Tests for L{gvtwisted.link.framing}: length-prefixed frames over a stream.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.link.framing import (
    BE32, LE16, MAX_FRAME, FrameDecoder, FramedLinkProtocol, FramingError, encodeFrame,
)

FUZZ = settings(max_examples=200, deadline=None)

FRAME_A = bytes.fromhex("5a94efe40cdd5a94efe40cee0806") + b"A" * 28
FRAME_B = bytes.fromhex("ffffffffffff5a94efe40cee0800") + b"B" * 50


class Recorder(FramedLinkProtocol):
    """
    A framed link that records what it receives and its framing errors.
    """

    def __init__(self, *args, **kwargs):
        FramedLinkProtocol.__init__(self, *args, **kwargs)
        self.frames = []
        self.errors = []

    def frameReceived(self, frame):
        self.frames.append(frame)

    def framingError(self, reason):
        self.errors.append(reason)
        FramedLinkProtocol.framingError(self, reason)


def connected(header=None, maxFrame=MAX_FRAME):
    protocol = Recorder(header, maxFrame)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class EncodeTests(SynchronousTestCase):
    """
    L{encodeFrame} prefixes a frame with its length.
    """

    def test_le16(self):
        """
        The connect/stdio header is 2 bytes little-endian.
        """
        self.assertEqual(encodeFrame(LE16, b"x" * 0x0102), b"\x02\x01" + b"x" * 0x0102)

    def test_be32(self):
        """
        The QEMU header is 4 bytes big-endian.
        """
        self.assertEqual(encodeFrame(BE32, b"x" * 0x0102), b"\x00\x00\x01\x02" + b"x" * 0x0102)


class FrameDecoderTests(SynchronousTestCase):
    """
    L{FrameDecoder} turns stream chunks into frames.
    """

    def test_manyInOneChunk(self):
        """
        Several frames in one chunk all come out, in order.
        """
        d = FrameDecoder(LE16)
        self.assertEqual(d.feed(encodeFrame(LE16, FRAME_A) + encodeFrame(LE16, FRAME_B)),
                         [FRAME_A, FRAME_B])
        self.assertEqual(d.buffered(), 0)

    def test_byteByByte(self):
        """
        A frame fed one byte at a time comes out once, when complete.
        """
        d = FrameDecoder(BE32)
        wire = encodeFrame(BE32, FRAME_A)
        out = []
        for i in range(len(wire)):
            got = d.feed(wire[i:i + 1])
            if i < len(wire) - 1:
                self.assertEqual(got, [])
                self.assertEqual(d.buffered(), i + 1)
            out.extend(got)
        self.assertEqual(out, [FRAME_A])
        self.assertEqual(d.buffered(), 0)

    def test_splitHeader(self):
        """
        A length header split across chunks is reassembled.
        """
        d = FrameDecoder(LE16)
        wire = encodeFrame(LE16, FRAME_A) + encodeFrame(LE16, FRAME_B)
        cut = len(FRAME_A) + 3
        self.assertEqual(d.feed(wire[:cut]), [FRAME_A])
        self.assertEqual(d.feed(wire[cut:]), [FRAME_B])

    def test_zeroLength(self):
        """
        A zero length raises L{FramingError}; frames before it are in
        C{pending}.
        """
        d = FrameDecoder(LE16)
        self.assertRaises(FramingError, d.feed, encodeFrame(LE16, FRAME_A) + b"\x00\x00")
        self.assertEqual(d.pending, [FRAME_A])

    def test_oversize(self):
        """
        A length over C{maxFrame} raises L{FramingError}; exactly
        C{maxFrame} is fine.
        """
        d = FrameDecoder(BE32, maxFrame=100)
        self.assertEqual(d.feed(encodeFrame(BE32, b"z" * 100)), [b"z" * 100])
        self.assertRaises(FramingError, d.feed, (101).to_bytes(4, "big"))

    def test_defaultMax(self):
        """
        The default maximum is 128 KiB.
        """
        d = FrameDecoder(BE32)
        self.assertEqual(d.feed(encodeFrame(BE32, b"q" * MAX_FRAME)), [b"q" * MAX_FRAME])
        self.assertRaises(FramingError, d.feed, (MAX_FRAME + 1).to_bytes(4, "big"))

    @FUZZ
    @given(st.lists(st.binary(min_size=1, max_size=300), max_size=8),
           st.lists(st.integers(0, 3000), max_size=8),
           st.sampled_from([LE16, BE32]))
    def test_anySplit(self, frames, cuts, header):
        """
        However the encoded stream is cut into chunks, the same frames come
        out and nothing is left buffered.
        """
        wire = b"".join(encodeFrame(header, f) for f in frames)
        points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
        d = FrameDecoder(header)
        out = []
        for a, b in zip(points, points[1:]):
            out.extend(d.feed(wire[a:b]))
        self.assertEqual(out, frames)
        self.assertEqual(d.buffered(), 0)


class FramedLinkProtocolTests(SynchronousTestCase):
    """
    L{FramedLinkProtocol} delivers frames, writes frames and drops the
    connection on a framing error.
    """

    def test_receive(self):
        """
        Frames in one read and split across reads are delivered whole.
        """
        p, t = connected()
        wire = encodeFrame(LE16, FRAME_A) + encodeFrame(LE16, FRAME_B)
        p.dataReceived(wire[:20])
        self.assertEqual(p.frames, [])
        p.dataReceived(wire[20:])
        self.assertEqual(p.frames, [FRAME_A, FRAME_B])
        self.assertFalse(t.disconnecting)

    def test_sendFrameLE16(self):
        """
        L{FramedLinkProtocol.sendFrame} writes the LE16 header and the frame.
        """
        p, t = connected()
        p.sendFrame(FRAME_A)
        self.assertEqual(t.value(), len(FRAME_A).to_bytes(2, "little") + FRAME_A)

    def test_sendFrameBE32(self):
        """
        With the BE32 header, the 4-byte big-endian length is written.
        """
        p, t = connected(BE32)
        p.sendFrame(FRAME_B)
        self.assertEqual(t.value(), len(FRAME_B).to_bytes(4, "big") + FRAME_B)

    def test_zeroLengthAborts(self):
        """
        A zero-length frame delivers the frames before it, reports one
        framing error and aborts the connection.
        """
        p, t = connected()
        p.dataReceived(encodeFrame(LE16, FRAME_A) + b"\x00\x00" + encodeFrame(LE16, FRAME_B))
        self.assertEqual(p.frames, [FRAME_A])
        self.assertEqual(len(p.errors), 1)
        self.assertTrue(t.disconnecting)

    def test_oversizeAborts(self):
        """
        A length over 128 KiB aborts the connection (BE32 can express it).
        """
        p, t = connected(BE32)
        p.dataReceived((MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 10)
        self.assertEqual(p.frames, [])
        self.assertEqual(len(p.errors), 1)
        self.assertIn(str(MAX_FRAME + 1), p.errors[0])
        self.assertTrue(t.disconnecting)

    def test_loseConnectionWithoutAbort(self):
        """
        On a transport with no C{abortConnection}, C{loseConnection} is used.
        """
        class Minimal:
            lost = False

            def loseConnection(self):
                self.lost = True

            def getPeer(self):
                return "peer"

        p = Recorder()
        p.transport = Minimal()
        p.dataReceived(b"\x00\x00")
        self.assertTrue(p.transport.lost)

    def test_defaultFramingErrorLogs(self):
        """
        The default C{framingError} logs without raising, even when the
        transport cannot name its peer.
        """
        class NoPeer(StringTransport):
            def getPeer(self):
                raise RuntimeError("no peer")

        p = FramedLinkProtocol()
        t = NoPeer()
        p.makeConnection(t)
        p.dataReceived(b"\x00\x00")
        self.assertTrue(t.disconnecting)

    @FUZZ
    @given(st.lists(st.binary(max_size=200), max_size=10), st.sampled_from([LE16, BE32]))
    def test_randomStream(self, chunks, header):
        """
        Random chunks never raise out of C{dataReceived}; every delivered
        frame is non-empty and at most 128 KiB.
        """
        p = FramedLinkProtocol(header)
        frames = []
        p.frameReceived = frames.append
        t = StringTransport()
        p.makeConnection(t)
        for chunk in chunks:
            if t.disconnecting:
                break
            p.dataReceived(chunk)
        for f in frames:
            self.assertTrue(0 < len(f) <= MAX_FRAME)


class BatchTests(SynchronousTestCase):
    """
    With C{maxBatch} a link handles at most that many frames per reactor
    turn; the rest of a read waits, and the transport stops reading.
    """

    def setUp(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.protocol = Recorder(LE16, clock=self.clock)
        self.protocol.maxBatch = 10
        self.protocol.maxBatchTime = 60.0
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def oneTurn(self):
        """
        What one turn of a real reactor does with timed calls: run those
        that were due when it began (a call scheduled by one of them waits
        for the next turn, after the reactor polled for I/O), unlike
        C{Clock.advance}, which runs them all.
        """
        due = list(self.clock.getDelayedCalls())
        for call in due:
            self.clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)

    def test_batches(self):
        """
        25 frames in one read: 10 now, 10 next turn, 5 the turn after, and
        reading resumes only then; order is kept.
        """
        frames = [FRAME_A[:-1] + bytes([i]) for i in range(25)]
        self.protocol.dataReceived(b"".join(encodeFrame(LE16, f) for f in frames))
        self.assertEqual(len(self.protocol.frames), 10)
        self.assertEqual(self.transport.producerState, "paused")
        self.oneTurn()
        self.assertEqual(len(self.protocol.frames), 20)
        self.assertEqual(self.transport.producerState, "paused")
        self.oneTurn()
        self.assertEqual(self.protocol.frames, frames)
        self.assertEqual(self.transport.producerState, "producing")

    def test_readDuringBacklogQueues(self):
        """
        Data that arrives while a backlog waits joins its end.
        """
        self.protocol.dataReceived(encodeFrame(LE16, FRAME_A) * 15)
        self.protocol.dataReceived(encodeFrame(LE16, FRAME_B))
        self.assertEqual(len(self.protocol.frames), 10)
        self.clock.advance(0)
        self.assertEqual(self.protocol.frames, [FRAME_A] * 15 + [FRAME_B])

    def test_smallReadsUntouched(self):
        """
        A read that fits one batch is handled at once, and the transport
        never paused.
        """
        self.protocol.dataReceived(encodeFrame(LE16, FRAME_A) * 10)
        self.assertEqual(len(self.protocol.frames), 10)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeBudget(self):
        """
        Frames that take long stop the batch early: past C{maxBatchTime} the
        rest waits for the next turn.
        """
        import time

        self.protocol.maxBatchTime = 0.001
        self.protocol.cheapBatch = 1
        self.protocol.frameReceived = lambda frame: (self.protocol.frames.append(frame),
                                                     time.sleep(0.002))
        self.protocol.dataReceived(encodeFrame(LE16, FRAME_A) * 12)
        self.assertEqual(len(self.protocol.frames), 1)
        self.assertEqual(self.transport.producerState, "paused")
        for _ in range(11):
            self.oneTurn()
        self.assertEqual(len(self.protocol.frames), 12)
        self.assertEqual(self.transport.producerState, "producing")

    def test_lostDropsBacklog(self):
        """
        A link that goes away drops what still waited, and schedules nothing.
        """
        self.protocol.dataReceived(encodeFrame(LE16, FRAME_A) * 30)
        self.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(0)
        self.assertEqual(len(self.protocol.frames), 10)
