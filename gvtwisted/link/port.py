"""
A guest link as a port of the switch, with bounded output.

Twisted transports buffer without limit, and a paused VM or a hung hypervisor
stops reading its socket. So each link registers itself as a push producer with
its transport: when the transport's buffer fills, the link is paused; the
network then stops TCP connections from sending toward it (backpressure, nothing
lost), and frames with no flow control of their own (UDP, ICMP, broadcast) are
written only up to a small bounded amount and then dropped and counted, as a
NIC's queue would.
"""

from zope.interface import implementer

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from gvtwisted.wire import virtio

PAUSED_BUDGET = 256 * 1024


@implementer(IPushProducer)
class SwitchPort:
    """
    Joins one framed link protocol to the switch.

    @ivar name: a label for logs and the API (the peer's address).
    @ivar paused: whether the transport asked us to stop writing.
    """

    log = Logger()

    def __init__(self, switch, counters, name, onPause=None, onResume=None):
        self.switch = switch
        self.counters = counters
        # The counters' dict itself: two increments per frame each way are
        # cheaper as dict updates than as method calls.
        self._values = counters.values
        self.name = name
        self.paused = False
        self._pausedBytes = 0
        self._onPause = onPause
        self._onResume = onResume
        self.protocol = None

    def attach(self, protocol):
        """
        Join C{protocol} (a L{gvtwisted.link.framing.FramedLinkProtocol} whose
        transport is connected) to the switch.
        """
        self.protocol = protocol
        protocol.frameReceived = self.frameReceived
        protocol.framesReceived = self.framesReceived
        protocol.transport.registerProducer(self, True)
        self.switch.attach(self)
        self.log.info("guest link up: {name}{offload}", name=self.name,
                      offload=" (offload)" if getattr(protocol, "offload", False) else "")

    def detach(self):
        """
        The link is gone: resume it if it was paused, and leave the switch
        (which keeps what the link held for its grace period).
        """
        if self.protocol is None:
            return
        self.protocol = None
        if self.paused:
            # Resume before leaving the switch, while the network can still
            # tell which connections were blocked on this link.
            self.paused = False
            if self._onResume is not None:
                self._onResume(self)
        self.switch.detach(self)
        self.log.info("guest link down: {name}", name=self.name)

    def frameReceived(self, frame):
        values = self._values
        values["link.framesReceived"] += 1
        values["link.bytesReceived"] += len(frame)
        try:
            self.switch.receiveFrame(self, frame)
        except Exception:
            # Whatever a service behind the switch raised costs this frame
            # only: it must not escape into the link's dataReceived, where
            # Twisted would drop the link and every connection on it.
            self.counters.failure("link.frame", self.name)

    def framesReceived(self, frames):
        """
        The frames of one read of the link, switched as one batch.
        """
        values = self._values
        values["link.framesReceived"] += len(frames)
        length = 0
        for frame in frames:
            length += len(frame)
        values["link.bytesReceived"] += length
        try:
            self.switch.receiveFrames(self, frames)
        except Exception:
            # As in frameReceived: the switch guards each frame of the
            # batch; this catches what is left (the batch's end).
            self.counters.failure("link.frame", self.name)

    def sendFrame(self, frame):
        """
        Write one frame to the guest, or drop it when a paused link has
        already taken its budget.
        """
        protocol = self.protocol
        if protocol is None:
            return
        if self.paused:
            if self._pausedBytes + len(frame) > PAUSED_BUDGET:
                self.counters.increment("drop.link.paused")
                return
            self._pausedBytes += len(frame)
        values = self._values
        values["link.framesSent"] += 1
        values["link.bytesSent"] += len(frame)
        protocol.sendFrame(frame)

    @property
    def offload(self) -> bool:
        """
        Whether the link negotiated offload: it takes TCP super-segments with
        partial checksums (L{sendFrameParts} with C{vnet}).
        """
        protocol = self.protocol
        return protocol is not None and getattr(protocol, "offload", False)

    def sendFrameParts(self, parts, vnet=None):
        """
        L{sendFrame} for a frame in pieces (headers, payload), handed to a
        protocol that writes pieces (C{sendFrameParts}) as they are.

        @param vnet: the frame's virtio-net header when it was built for an
            offload link (a super-segment, a partial checksum); a link that
            has no offload (any more) gets the frames a NIC would make of it.
        """
        protocol = self.protocol
        if protocol is None:
            return
        if vnet is not None and not getattr(protocol, "offload", False):
            header = virtio.parse(vnet)
            frame = b"".join(parts)
            if header.gsoType != virtio.GSO_NONE:
                for piece in virtio.segmentTCPv4(frame, header):
                    self.sendFrame(piece)
                return
            if header.flags & virtio.F_NEEDS_CSUM:
                frame = bytes(virtio.completeChecksum(frame, header.csumStart, header.csumOffset))
            self.sendFrame(frame)
            return
        length = 0
        for part in parts:
            length += len(part)
        if self.paused:
            if self._pausedBytes + length > PAUSED_BUDGET:
                self.counters.increment("drop.link.paused")
                return
            self._pausedBytes += length
        values = self._values
        values["link.framesSent"] += 1
        values["link.bytesSent"] += length
        sendParts = getattr(protocol, "sendFrameParts", None)
        if vnet is not None:
            sendParts(parts, length, vnet)
        elif sendParts is not None:
            sendParts(parts, length)
        else:
            protocol.sendFrame(b"".join(parts))

    # IPushProducer: the transport tells us when its buffer is full.

    def pauseProducing(self):
        if not self.paused:
            self.paused = True
            self._pausedBytes = 0
            self.counters.increment("link.pauses")
            if self._onPause is not None:
                self._onPause(self)

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            if self._onResume is not None:
                self._onResume(self)

    def stopProducing(self):
        self.detach()
