"""
The guest's end of a C{/connect} link: carry frames between the TAP device and a
gvtap or gvproxy host, and reconnect every second when the link fails or drops.

The handshake is gvforwarder's: an HTTP request C{POST /connect} (the path comes
from the URL), after which the host answers nothing and both sides switch to
frames with a 2-byte little-endian length each.

Flow control: the TAP device is registered with the link's transport as a
streaming producer (through a per-connection L{TapProducer}), so a host that
reads slowly stops our reads of the TAP; the guest kernel then queues or drops
in its own qdisc, which is what a slow NIC looks like to it.
"""

from urllib.parse import unquote, urlsplit

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from gvtwisted.guest.tuntap import OFFLOADS, TapProducer
from gvtwisted.link.framereader import FrameReader
from gvtwisted.link.framing import BE32, LE16, FramedLinkProtocol
from gvtwisted.link.offload import (
    OFFLOAD_HEADER,
    OFFLOAD_PROBE,
    OFFLOAD_READ_SIZE,
    OffloadProbeError,
    parseProbeResponse,
)
from gvtwisted.link.streamunix import linkClientFromString
from gvtwisted.wire import virtio

DEFAULT_PATH = "/connect"
RETRY_DELAY = 1.0
CONNECT_TIMEOUT = 10.0


PROBE_TIMEOUT = 5.0


def connectRequest(path: str = DEFAULT_PATH, host: str = "gvtap", offload: bool = False) -> bytes:
    """
    The bytes that open a link: an HTTP/1.1 C{POST} to C{path} without a body;
    with C{offload}, the header that asks for virtio-net framing (sent only to
    a host that answered the probe, see L{gvtwisted.link.offload}).
    """
    extra = OFFLOAD_HEADER.decode("ascii") + ": virtio-net-hdr\r\n" if offload else ""
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode("ascii")


def _escape(value: str) -> str:
    # Twisted's endpoint strings split on ':' and '=', with '\' as the escape.
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def urlToEndpointString(url: str):
    """
    Turn a gvforwarder URL, or a Twisted client endpoint string, into an
    endpoint string and the HTTP path to post to.

        - C{vsock://2:1024/connect} -> via
          L{gvtwisted.link.vsock.vsockURLToEndpointString}, path C{/connect}
        - C{unix:///run/gv.sock} -> C{unix:/run/gv.sock}, path C{/connect}
        - C{tcp://127.0.0.1:7777/connect} -> C{tcp:host=127.0.0.1:port=7777}
        - anything without C{://} (C{unix:/run/gv.sock}, C{vsock:cid=2:port=1024},
          C{tcp:host=...:port=...}) is already an endpoint string; path C{/connect}

    A unix URL names a socket file, so its path is the file and the request
    always goes to C{/connect}, as in gvforwarder.

    @return: C{(endpointString, path)}
    @raise ValueError: for an unknown scheme or a URL without the parts it needs.
    """
    if "://" not in url:
        if not url:
            raise ValueError("empty connect address")
        return url, DEFAULT_PATH
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"no socket path in {url!r}")
        return "unix:" + _escape(path), DEFAULT_PATH
    httpPath = parts.path or DEFAULT_PATH
    if scheme == "vsock":
        from gvtwisted.link.vsock import vsockURLToEndpointString

        endpointString, vsockPath = vsockURLToEndpointString(url)
        return endpointString, vsockPath or DEFAULT_PATH
    if scheme in ("tcp", "tcp4", "tcp6"):
        try:
            host, port = parts.hostname, parts.port
        except ValueError as e:
            raise ValueError(f"bad port in {url!r}: {e}") from None
        if not host or port is None:
            raise ValueError(f"{url!r} needs a host and a port")
        # reactor.connectTCP takes IPv6 literals too; there is no tcp6 client.
        return f"tcp:host={_escape(host)}:port={port}", httpPath
    raise ValueError(
        f"unsupported scheme {parts.scheme!r} in {url!r} (use vsock, unix or tcp)"
    )


class GuestLinkProtocol(FramedLinkProtocol):
    """
    One connection to the host: frames from the TAP go out length-prefixed,
    frames from the host are written into the TAP.

    @ivar device: the L{gvtwisted.guest.tuntap.TapDevice} (or anything with
        C{frameReceived}, C{setReceiver}, C{writeFrame}, C{pauseProducing} and
        C{resumeProducing}).
    """

    header = LE16
    producer = None
    offload = False
    reader = None

    def __init__(self, device, request: bytes, probe: bool = False, clock=None):
        FramedLinkProtocol.__init__(self)
        self.device = device
        self.request = request
        # Ask the host for offload first (GET /offload): only with a TAP
        # opened with IFF_VNET_HDR and an HTTP handshake.
        self.probe = probe and bool(request) and getattr(device, "vnetHeader", False)
        self._probeBuffer = None
        self._probeTimeout = None
        self._clock = clock
        self.tapFrameReceived = self._tapPlain
        self.tapFramesReceived = self.sendFrames
        self.frameReceived = self._hostPlain
        self._hostFrames(getattr(device, "writeFrames", None))
        if getattr(device, "vnetHeader", False):
            self.tapFrameReceived = self._tapStrip
            self.tapFramesReceived = self._tapStripFrames
            self.frameReceived = self._hostAddHeader
            self._hostFrames(None)

    def connectionMade(self):
        if self.probe:
            self._probeBuffer = b""
            self.transport.write(OFFLOAD_PROBE)
            clock = self._clock
            if clock is None:
                from twisted.internet import reactor as clock
            self._probeTimeout = clock.callLater(PROBE_TIMEOUT, self._probeTimedOut)
            return
        self._start(self.request)
        self._readFrames()

    def _start(self, request):
        self.transport.write(request)
        self.producer = TapProducer(self.device)
        self.transport.registerProducer(self.producer, True)
        self.device.setReceiver(self.tapFrameReceived, self.tapFramesReceived)
        owner = getattr(self.factory, "owner", None)
        if owner is not None:
            owner.linkUp(self)

    def dataReceived(self, data: bytes):
        if self._probeBuffer is None:
            FramedLinkProtocol.dataReceived(self, data)
            return
        self._probeBuffer += data
        try:
            answer = parseProbeResponse(self._probeBuffer)
        except OffloadProbeError as e:
            self._probeFailed(str(e))
            return
        if answer is None:
            return
        accepted, rest = answer
        self._probeBuffer = None
        if self._probeTimeout is not None and self._probeTimeout.active():
            self._probeTimeout.cancel()
        self._probeTimeout = None
        if accepted:
            self.offload = True
            self.setHeader(BE32)
            if getattr(self.transport, "bufferSize", None) is not None:
                self.transport.bufferSize = OFFLOAD_READ_SIZE
            self.tapFrameReceived = self.sendFrame
            self.tapFramesReceived = self.sendFrames
            self.frameReceived = self.device.writeFrame
            self._hostFrames(getattr(self.device, "writeFrames", None))
            self.device.setOffloads(OFFLOADS)
            self._start(connectRequest(self._path(), offload=True))
        else:
            self._start(self.request)
        if rest:
            FramedLinkProtocol.dataReceived(self, rest)
        self._readFrames()

    def _readFrames(self):
        """
        Once the handshake is over, read the host's frames with a
        L{FrameReader} when the transport and the device allow it: each read
        goes straight from a reused buffer into the TAP.
        """
        writeFrames = getattr(self.device, "writeFrames", None)
        if (writeFrames is None or self.maxBatch is not None
                or not FrameReader.canRead(self.transport)):
            return
        if getattr(self.device, "vnetHeader", False) and not self.offload:
            framesReceived = self._hostAddHeaders
        else:
            framesReceived = writeFrames
        # A socket transport's own read size (raised for offload links).
        self.reader = FrameReader(self.header, framesReceived, self._readerFramingError,
                                  readSize=self.transport.bufferSize,
                                  maxFrame=self._decoder.maxFrame)
        self.reader.attach(self.transport, self._decoder.takeBuffered())

    def _readerFramingError(self, reason):
        self.framingError(reason)
        self.transport.abortConnection()

    def _path(self):
        return self.request.split(b" ", 2)[1].decode("ascii")

    def _probeTimedOut(self):
        self._probeTimeout = None
        self._probeFailed(f"no answer to the offload probe in {PROBE_TIMEOUT:g} s")

    def _probeFailed(self, why):
        # A host that neither answers nor refuses the probe: the next
        # connection goes without it.
        self._probeBuffer = None
        owner = getattr(self.factory, "owner", None)
        if owner is not None:
            owner.probeFailed(why)
        self.transport.abortConnection()

    def _hostFrames(self, writeFrames):
        """
        Hand the frames of one link read to the device in one call
        (C{writeFrames}), or one by one to L{frameReceived} when C{None}.
        """
        if writeFrames is None:
            self.__dict__.pop("framesReceived", None)
        else:
            self.framesReceived = writeFrames

    def sendFrames(self, frames):
        """
        Write the frames of one TAP read to the host in one system call.
        """
        pack = self._pack
        parts = []
        for frame in frames:
            parts.append(pack(len(frame)))
            parts.append(frame)
        self._turnWriter().writeBatch(parts)

    def _tapPlain(self, frame: bytes):
        self.sendFrame(frame)

    def _hostPlain(self, frame: bytes):
        self.device.writeFrame(frame)

    def _tapStrip(self, frame: bytes):
        """
        A frame from a TAP with virtio-net headers, to a host without
        offload: complete what the kernel left partial.
        """
        self._tapStripFrames((frame,))

    def _tapStripFrames(self, frames):
        out = []
        for frame in frames:
            if not (frame[0] or frame[1]):
                out.append(frame[virtio.SIZE:])
                continue
            header = virtio.parse(frame, len(frame) - virtio.SIZE)
            body = frame[virtio.SIZE:]
            if header.gsoType != virtio.GSO_NONE:
                if header.gsoType & ~virtio.GSO_ECN != virtio.GSO_TCPV4:
                    self.device.counters.increment("drop.tap.gso")
                    continue
                out.extend(virtio.segmentTCPv4(body, header))
                continue
            if header.flags & virtio.F_NEEDS_CSUM:
                body = bytes(virtio.completeChecksum(body, header.csumStart, header.csumOffset))
            out.append(body)
        if out:
            self.sendFrames(out)

    def _hostAddHeader(self, frame: bytes):
        self.device.writeFrame(virtio.PLAIN + frame)

    def _hostAddHeaders(self, frames):
        self.device.writeFrames(frames, virtio.PLAIN)

    def connectionLost(self, reason):
        FramedLinkProtocol.connectionLost(self, reason)
        if self.reader is not None:
            self.reader.detach()
        if self._probeTimeout is not None and self._probeTimeout.active():
            self._probeTimeout.cancel()
        self._probeTimeout = None
        if self.device.frameReceived == self.tapFrameReceived:
            self.device.setReceiver(None)
        if self.offload:
            self.device.setOffloads(0)
        if self.producer is not None:
            self.producer.detach()
        owner = getattr(self.factory, "owner", None)
        if owner is not None:
            owner.linkDown(self, reason)


class GuestLinkFactory(Factory):
    """
    Builds L{GuestLinkProtocol}s for the current TAP device of C{owner}.
    """

    protocol = GuestLinkProtocol
    noisy = False

    def __init__(self, owner):
        self.owner = owner

    def buildProtocol(self, addr):
        p = self.protocol(self.owner.device, self.owner.request,
                          probe=self.owner.offload, clock=self.owner.clock)
        p.factory = self
        return p


class GuestForwarder(Service):
    """
    Keep one link to the host alive: connect, and after a failure or a
    disconnection wait L{retryDelay} seconds and connect again, forever.

    Logs one line when the link comes up, one each time it goes down, and one
    when connecting starts to fail (not one per retry).

    @ivar device: the TAP device frames come from and go to; set it before
        starting the service.
    @ivar linkUpHooks: callables run with the protocol each time the link is up.
    @ivar connection: the connected L{GuestLinkProtocol}, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        endpoint,
        clock,
        device=None,
        path: str = DEFAULT_PATH,
        retryDelay: float = RETRY_DELAY,
        connectTimeout: float = CONNECT_TIMEOUT,
        description: str = None,
        debug: bool = False,
        offload: bool = True,
    ):
        self.endpoint = endpoint
        # Probe the host for offload before each POST (the TAP must have
        # been opened with IFF_VNET_HDR); off after a host failed the probe.
        self.offload = offload
        self.clock = clock
        self.device = device
        # No path: a link with no handshake (gvforwarder's stdio: URLs).
        self.request = connectRequest(path) if path else b""
        self.retryDelay = retryDelay
        self.connectTimeout = connectTimeout
        self.description = description or str(endpoint)
        self.debug = debug
        self.factory = GuestLinkFactory(self)
        self.linkUpHooks = []
        self.connection = None
        self.connects = 0
        self.failures = 0
        self._attempt = None
        self._retry = None
        self._lostWaiters = []
        self._failing = False

    @classmethod
    def fromString(cls, reactor, connect: str, **kw):
        """
        Build a forwarder from a URL or endpoint string (see
        L{urlToEndpointString}), with C{reactor} as the clock.
        """
        endpointString, path = urlToEndpointString(connect)
        endpoint = linkClientFromString(reactor, endpointString)
        kw.setdefault("description", connect)
        return cls(endpoint, reactor, path=path, **kw)

    def startService(self):
        Service.startService(self)
        self._connect()

    def stopService(self):
        Service.stopService(self)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
            self._attempt = None
        if self.connection is not None:
            d = defer.Deferred()
            self._lostWaiters.append(d)
            self.connection.transport.loseConnection()
            return d
        return None

    def _connect(self):
        self._retry = None
        if not self.running:
            return
        d = self.endpoint.connect(self.factory)
        if self.connectTimeout:
            d.addTimeout(self.connectTimeout, self.clock)
        self._attempt = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self._attempt = None

    def _failed(self, reason):
        self._attempt = None
        if not self.running:
            return None
        self.failures += 1
        if not self._failing:
            self._failing = True
            self.log.warn(
                "cannot connect to {where}: {why}; retrying every {delay:g} s",
                where=self.description,
                why=reason.getErrorMessage(),
                delay=self.retryDelay,
            )
        elif self.debug:
            self.log.debug(
                "connect attempt {n} to {where} failed: {why}",
                n=self.failures,
                where=self.description,
                why=reason.getErrorMessage(),
            )
        self._scheduleRetry()
        return None

    def _scheduleRetry(self):
        if self.running and self._retry is None:
            self._retry = self.clock.callLater(self.retryDelay, self._connect)

    def linkUp(self, protocol):
        """
        Called by the protocol once connected and the request is sent.
        """
        self.connection = protocol
        self.connects += 1
        self._failing = False
        self.log.info(
            "link up: connected to {where} ({path}{offload})",
            where=self.description,
            path=(self.request.split(b" ", 2)[1].decode("ascii")
                  if self.request else "no handshake"),
            offload=", offload" if protocol.offload else "",
        )
        for hook in list(self.linkUpHooks):
            try:
                hook(protocol)
            except Exception:
                self.log.failure("link-up hook {hook} failed", hook=hook)

    def probeFailed(self, why: str):
        """
        The host neither took nor refused the offload probe: connect without
        it from now on.
        """
        self.offload = False
        self.log.warn("offload probe to {where} failed ({why}); plain frames from now on",
                      where=self.description, why=why)

    def linkDown(self, protocol, reason):
        """
        Called by the protocol when its connection is gone: reconnect later.
        """
        if self.connection is protocol:
            self.connection = None
        if self.running:
            why = (
                "closed by the host"
                if reason.check(error.ConnectionDone)
                else reason.getErrorMessage()
            )
            self.log.info(
                "link down: {why}; reconnecting every {delay:g} s",
                why=why,
                delay=self.retryDelay,
            )
        else:
            self.log.info("link closed")
        waiters, self._lostWaiters = self._lostWaiters, []
        for d in waiters:
            d.callback(None)
        self._scheduleRetry()
