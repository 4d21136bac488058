"""
C{GET /tunnel?ip=IP&port=N}: a raw TCP connection into the network over the
API's own connection.

gvproxy dials IP:N inside the network first; when that succeeds it takes the
HTTP connection over (Go's C{Hijack}), writes the two bytes C{OK} (no status
line, no headers) and from then on carries raw bytes both ways. When the dial
fails the client gets an ordinary HTTP 500 with the reason.

twisted.web has no hijack, so this one takes the connection from the HTTP
channel by hand: the bytes the channel buffered after the request are handed
on, the channel stops being the transport's producer, and the transport's
protocol (or, under TLS, the TLS layer's wrapped protocol) becomes our side of
a splice. The request is never finished: no HTTP response is ever written.
"""

import ipaddress

from twisted.internet.protocol import ClientFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gvtwisted.services.api_http import checkRoute, writeError
from gvtwisted.services.splice import SpliceSide, splice


def hijack(request, protocol, greeting=b""):
    """
    Take the connection of C{request} away from twisted.web: write
    C{greeting} raw, then C{protocol} gets every byte the client sends,
    including any the HTTP channel read ahead.
    """
    channel = request.channel
    transport = channel.transport
    leftover = b"".join(getattr(channel, "_dataBuffer", None) or ())
    leftover += getattr(channel, "_buffer", b"") or b""
    channel._dataBuffer = []
    channel._buffer = b""
    channel.setTimeout(None)
    transport.unregisterProducer()
    if hasattr(transport, "wrappedProtocol"):
        transport.wrappedProtocol = protocol
        transport = _TLSTransport(transport)
    else:
        transport.protocol = protocol
    if greeting:
        transport.write(greeting)
    protocol.makeConnection(transport)
    if leftover:
        protocol.dataReceived(leftover)
    transport.resumeProducing()


class _TLSTransport:
    """
    The transport of a hijacked TLS connection as a splice needs it: the TLS
    layer writes and closes, and its underlying connection is the producer
    (pausing it stops reading, which is all a TLS connection can do).
    A half-close is not possible under TLS; the splice then closes.
    """

    def __init__(self, tls):
        self._tls = tls

    def __getattr__(self, name):
        return getattr(self._tls, name)

    def pauseProducing(self):
        self._tls.transport.pauseProducing()

    def resumeProducing(self):
        self._tls.transport.resumeProducing()

    def stopProducing(self):
        self._tls.transport.stopProducing()


class _TunnelGuestSide(SpliceSide):
    """
    The virtual connection of a tunnel: when it is established, the HTTP
    connection is taken over and becomes its peer.
    """

    def __init__(self, request, hostSide, counters):
        SpliceSide.__init__(self, counters, "api.tunnel.bytesFromGuest")
        self.request = request
        self.hostSide = hostSide

    def connectionMade(self):
        request = self.request
        self.request = None
        if request is None or request._disconnected:
            self.transport.abortConnection()
            return
        hijack(request, self.hostSide, b"OK")


class _TunnelFactory(ClientFactory):
    noisy = False

    def __init__(self, guestSide, counters):
        self.guestSide = guestSide
        self.counters = counters

    def buildProtocol(self, addr):
        return self.guestSide

    def clientConnectionFailed(self, connector, reason):
        self.counters.increment("api.tunnel.failed")
        request = self.guestSide.request
        self.guestSide.request = None
        if request is None or request._disconnected:
            return
        message = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(reason)
        request.write(writeError(request, 500, f"dial {request.args[b'ip'][0].decode()}:"
                                               f"{request.args[b'port'][0].decode()}: {message}"))
        request.finish()


class TunnelResource(Resource):
    """
    C{GET /tunnel?ip=IP&port=N} (host API only).
    """

    isLeaf = True

    def __init__(self, gvtap):
        Resource.__init__(self)
        self.gvtap = gvtap

    def render(self, request):
        refusal = checkRoute(request, (b"GET",))
        if refusal is not None:
            return refusal
        ip = (request.args.get(b"ip") or [b""])[0].decode("utf-8", "replace")
        port = (request.args.get(b"port") or [b""])[0].decode("utf-8", "replace")
        # gvproxy's codes and words: every bad parameter is a 500, a port is
        # read with Go's strconv.ParseUint(port, 10, 16).
        if not ip:
            return writeError(request, 500, "ip is mandatory")
        if not port.isascii() or not port.isdigit():
            return writeError(request, 500, f'strconv.ParseUint: parsing "{port}": invalid syntax')
        if int(port) > 65535:
            return writeError(request, 500, f'strconv.ParseUint: parsing "{port}": value out of range')
        if int(port) == 0:
            return writeError(request, 500, "port: 0 is not in 1..65535")
        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            return writeError(request, 500, f"ip: {ip!r} is not an IPv4 address")
        counters = self.gvtap.counters
        hostSide = SpliceSide(counters, "api.tunnel.bytesToGuest")
        guestSide = _TunnelGuestSide(request, hostSide, counters)
        splice(hostSide, guestSide)
        try:
            connector = self.gvtap.network.connectTCP(ip, int(port),
                                                      _TunnelFactory(guestSide, counters))
        except Exception as e:
            return writeError(request, 500, f"dial {ip}:{port}: {e}")
        counters.increment("api.tunnel.opened")

        def gone(_):
            # The client left before the guest answered: stop dialling.
            if guestSide.request is not None:
                guestSide.request = None
                connector.stopConnecting()

        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET
