"""
The server side of guest links: factories for C{--listen} and C{--listen-qemu}.

On a C{--listen} endpoint a guest helper (gvforwarder, C{gvtap-guest}) sends an
ordinary HTTP request C{POST /connect}; the host sends no HTTP response and the
connection switches to frames with a 2-byte little-endian length at once. Any
other request on the same endpoint is HTTP for the control API: the bytes read so
far are handed to a twisted.web C{Site}'s channel, which takes the connection
over.

On a C{--listen-qemu} endpoint (QEMU's C{-netdev stream} or C{-netdev socket})
there is no handshake and each frame has a 4-byte big-endian length. Every
accepted connection becomes a port of the switch.

Before its C{POST /connect}, gvtap-guest may ask for offload with
C{GET /offload} (L{gvtwisted.link.offload}); the link is then an
L{OffloadGuestLink}.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.resource import NoResource
from twisted.web.server import Site

from gvtwisted.link.framing import BE32, LE16, FramedLinkProtocol
from gvtwisted.link.offload import (
    OFFLOAD_PATH,
    OFFLOAD_READ_SIZE,
    PROBE_ACCEPTED,
    PROBE_REFUSED,
    wantsOffload,
)
from gvtwisted.link.port import SwitchPort
from gvtwisted.wire import virtio

MAX_REQUEST_HEAD = 16 * 1024


def defaultSite():
    """
    The HTTP side of a C{--listen} endpoint until the control API is built:
    every route answers 404.
    """
    site = Site(NoResource())
    site.displayTracebacks = False
    return site


class GuestLinkProtocol(FramedLinkProtocol):
    """
    A framed link that joins the switch when connected and leaves it when
    the connection ends.
    """

    # A fair share per reactor turn (see gvtwisted.link.framing).
    maxBatch = 64

    def __init__(self, makePort, header, peerName, clock=None):
        FramedLinkProtocol.__init__(self, header, clock=clock)
        self._makePort = makePort
        self.peerName = peerName
        self.port = None

    def connectionMade(self):
        self.port = self._makePort(self.peerName)
        self.port.attach(self)

    def connectionLost(self, reason):
        self._dropBacklog()
        if self.port is not None:
            self.port.detach()


# A virtio-net header and an Ethernet header: anything shorter takes the
# general path of OffloadGuestLink._strip, which counts what is wrong with it.
_SHORTEST_OFFLOAD_FRAME = virtio.SIZE + 14


class OffloadGuestLink(GuestLinkProtocol):
    """
    A guest link that negotiated offload: every frame, both ways, is a
    virtio-net header and an Ethernet frame, behind a 4-byte length.

    From the guest: the header is checked and dropped (a super-segment is
    one frame for the stack); a partial checksum is completed only when
    C{completeChecksums()} says the stack verifies checksums. To the guest:
    frames the stack built complete get L{virtio.PLAIN}; TCP segments sent
    with offload (L{sendFrameParts} with C{vnet}) get theirs.
    """

    offload = True

    def __init__(self, makePort, peerName, clock=None, completeChecksums=lambda: False,
                 gatewayMAC=None):
        GuestLinkProtocol.__init__(self, makePort, BE32, peerName, clock)
        self._completeChecksums = completeChecksums
        self._gatewayMAC = gatewayMAC

    def connectionMade(self):
        # A super-segment is 64 KiB and a little more with its headers: with
        # Twisted's 64 KiB reads every one would straddle two reads.
        if getattr(self.transport, "bufferSize", None) is not None:
            self.transport.bufferSize = OFFLOAD_READ_SIZE
        GuestLinkProtocol.connectionMade(self)
        portFrames = self.framesReceived
        strip = self._strip

        def framesReceived(frames):
            out = []
            for frame in frames:
                strip(frame, out)
            if out:
                portFrames(out)

        def frameReceived(frame):
            framesReceived([frame])

        self.framesReceived = framesReceived
        self.frameReceived = frameReceived

    def _strip(self, frame, out):
        """
        Append to C{out} the Ethernet frame behind a virtio-net header, or
        nothing (counted) for a header no frame can have.

        A partial checksum stays partial for the gateway (whose stack does
        not check it unless C{completeChecksums()}); a frame for any other
        address (another guest, through the switch) is made what a NIC would
        send: its checksum completed, a super-segment cut into MSS pieces.
        """
        flags = frame[0]
        if len(frame) >= _SHORTEST_OFFLOAD_FRAME and not frame[1]:
            if not flags:
                out.append(frame[virtio.SIZE:])
                return
            if (flags == virtio.F_NEEDS_CSUM
                    and frame[virtio.SIZE : virtio.SIZE + 6] == self._gatewayMAC
                    and not self._completeChecksums()):
                # A partial checksum for the gateway, which leaves it so: the
                # commonest frame of an offload link needs only its checksum
                # range checked.
                start, offset = virtio.CHECKSUM_FIELDS.unpack_from(frame)
                if start + offset + 2 <= len(frame) - virtio.SIZE:
                    out.append(frame[virtio.SIZE:])
                    return
        try:
            header = virtio.parse(frame, len(frame) - virtio.SIZE)
        except virtio.VirtioHeaderError as e:
            self.port.counters.complain("link.virtioHeader", f"{self.peerName}: {e}")
            return
        body = frame[virtio.SIZE:]
        if self._gatewayMAC is not None and body[0:6] != self._gatewayMAC:
            if header.gsoType != virtio.GSO_NONE:
                if header.gsoType & ~virtio.GSO_ECN != virtio.GSO_TCPV4:
                    self.port.counters.complain("link.gsoType", f"{self.peerName}: {header.gsoType}")
                    return
                out.extend(virtio.segmentTCPv4(body, header))
                return
            if header.flags & virtio.F_NEEDS_CSUM:
                body = bytes(virtio.completeChecksum(body, header.csumStart, header.csumOffset))
            out.append(body)
            return
        if header.flags & virtio.F_NEEDS_CSUM and self._completeChecksums():
            body = bytes(virtio.completeChecksum(body, header.csumStart, header.csumOffset))
        out.append(body)

    # Through the link's TurnWriter, as plain frames are: the first frame of a
    # turn leaves in the call, the rest in one sendmsg at the end of the turn,
    # and a super-segment is never joined into one copy.

    def sendFrame(self, frame: bytes):
        length = len(frame) + virtio.SIZE
        self._turnWriter().writeSequence(
            (self._pack(length), virtio.PLAIN, frame), length + self.header.size)

    def sendFrameParts(self, parts, length: int, vnet: bytes = None):
        length += virtio.SIZE
        self._turnWriter().writeSequence(
            (self._pack(length), vnet or virtio.PLAIN, *parts), length + self.header.size)


class ConnectOrHTTP(Protocol):
    """
    Reads the request head of a C{--listen} connection and becomes either a
    guest link (C{POST /connect}) or an HTTP channel of C{site}.
    """

    log = Logger()

    def __init__(self, makePort, site, peerName, counters, clock=None,
                 offload=lambda: False, completeChecksums=lambda: False, gatewayMAC=None):
        self._offload = offload
        self._gatewayMAC = gatewayMAC
        self._completeChecksums = completeChecksums
        self._clock = clock
        self._makePort = makePort
        self._site = site
        self._peerName = peerName
        self._counters = counters
        self._buffer = b""
        self._delegate = None

    def dataReceived(self, data):
        if self._delegate is not None:
            self._delegate.dataReceived(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_REQUEST_HEAD:
            if len(self._buffer) > MAX_REQUEST_HEAD:
                self._counters.complain("link.requestHeadTooLong", self._peerName)
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"Connection: close\r\nContent-Length: 0\r\n\r\n")
                self.transport.loseConnection()
                self._delegate = _Discard()
            return
        requestLine = self._buffer.split(b"\r\n", 1)[0].split()
        rest = self._buffer[end + 4:]
        head = self._buffer[:end + 4]
        self._buffer = b""
        if (len(requestLine) == 3 and requestLine[0] == b"GET"
                and requestLine[1] == OFFLOAD_PATH):
            # gvtap-guest's offload probe: answered here whether offload is
            # on or not, and the connection stays ours for the POST.
            self._counters.increment("link.offloadProbes")
            self.transport.write(PROBE_ACCEPTED if self._offload() else PROBE_REFUSED)
            if rest:
                self.dataReceived(rest)
            return
        if (len(requestLine) == 3 and requestLine[0] == b"POST"
                and requestLine[1].split(b"?", 1)[0] == b"/connect"):
            self._counters.increment("link.connects")
            if self._offload() and wantsOffload(head):
                self._counters.increment("link.offloadConnects")
                link = OffloadGuestLink(self._makePort, self._peerName, self._clock,
                                        self._completeChecksums, self._gatewayMAC)
            else:
                link = GuestLinkProtocol(self._makePort, LE16, self._peerName, self._clock)
            self._delegate = link
            link.makeConnection(self.transport)
            if rest:
                link.dataReceived(rest)
        else:
            channel = self._site.buildProtocol(self.transport.getPeer())
            self._delegate = channel
            channel.makeConnection(self.transport)
            channel.dataReceived(head + rest)

    def connectionLost(self, reason):
        if self._delegate is not None:
            self._delegate.connectionLost(reason)


class _Discard(Protocol):
    def dataReceived(self, data):
        pass


class LinkFactory(Factory):
    """
    Accepts guest links for one endpoint.

    @param network: the L{gvtwisted.stack.network.VirtualNetwork}; its switch
        gets a port per link and it is told when a link pauses.
    @param framing: C{"connect"} (HTTP C{POST /connect}, then LE16) or
        C{"qemu"} (BE32, no handshake).
    @param site: the twisted.web C{Site} for other HTTP requests.
    """

    noisy = False

    def __init__(self, network, counters, framing="connect", site=None):
        self.network = network
        self.counters = counters
        self.framing = framing
        self.site = site if site is not None else defaultSite()
        self._links = 0

    def makePort(self, peerName):
        network = self.network
        self._links += 1
        return SwitchPort(network.switch, self.counters, f"{peerName}#{self._links}",
                          onPause=network.linkPaused, onResume=network.linkResumed)

    def buildProtocol(self, addr):
        peerName = _describe(addr)
        clock = getattr(self.network, "reactor", None)
        if self.framing == "qemu":
            return GuestLinkProtocol(self.makePort, BE32, peerName, clock)
        network = self.network
        return ConnectOrHTTP(
            self.makePort, self.site, peerName, self.counters, clock,
            offload=lambda: getattr(network, "offload", True),
            completeChecksums=lambda: getattr(network, "verifyChecksums", False),
            gatewayMAC=getattr(getattr(network, "config", None), "gatewayMAC", None))


def _describe(addr):
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if host is not None and port is not None:
        return f"{addr.type.lower()}:{host}:{port}"
    name = getattr(addr, "name", None)
    if name is not None:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return str(addr)
