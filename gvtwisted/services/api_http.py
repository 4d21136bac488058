"""
The HTTP plumbing of the control API: a C{Site} whose requests refuse bodies
over 1 MiB, and the small helpers every route uses to answer the way gvproxy's
Go handlers do (JSON with a final newline; errors as C{text/plain} with the
message and a newline, which the Go client trims and returns as the error).

twisted.web buffers a request's whole body before the resource sees it, so the
cap is applied while the body arrives: a C{Content-Length} over the cap, or a
chunked body that grows past it, gets C{413} at once and the connection is
closed, and nothing more of the body is kept.
"""

import io
import json

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

MAX_BODY = 1 << 20


class APIRequest(Request):
    """
    A request whose body may not exceed L{maxBody} bytes.

    @ivar bodyTooLarge: set once the body was refused.
    """

    maxBody = MAX_BODY
    bodyTooLarge = False
    _bodySize = 0
    # Every route sets its own type; an empty 200 has none, as in Go.
    defaultContentType = None

    def gotLength(self, length):
        if length is not None and length > self.maxBody:
            self.content = io.BytesIO()
            self._refuseBody()
            return
        Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if self.bodyTooLarge:
            return
        self._bodySize += len(data)
        if self._bodySize > self.maxBody:
            self._refuseBody()
            return
        Request.handleContentChunk(self, data)

    def _refuseBody(self):
        """
        Answer 413 straight away and close: the client need not send the rest.
        """
        self.bodyTooLarge = True
        self.content = io.BytesIO()
        # No "100 Continue" after our answer.
        self.requestHeaders.removeHeader(b"expect")
        body = f"request body too large (the limit is {self.maxBody} bytes)\n".encode()
        channel = self.channel
        if channel is None or channel.transport is None:
            return
        channel.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        channel.loseConnection()

    def process(self):
        if self.bodyTooLarge:
            # Already answered; the connection is closing.
            return
        Request.process(self)


class APISite(Site):
    """
    The C{Site} of the control API: L{APIRequest}s, no tracebacks to clients.
    """

    requestFactory = APIRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource, reactor=None):
        Site.__init__(self, resource, reactor=reactor)


def writeError(request, code: int, message: str) -> bytes:
    """
    Set an error status and return the body, as Go's C{http.Error} writes it.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return message.encode("utf-8") + b"\n"


def writeJSON(request, value) -> bytes:
    """
    Return C{value} as a JSON body (with Go's final newline).
    """
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode("utf-8") + b"\n"


def checkRoute(request, methods):
    """
    C{None} if C{request} may go on; else the body of a 404 (a path below a
    leaf route) or a 405 (a method not in C{methods}; HEAD goes with GET).
    """
    if request.postpath:
        return writeError(request, 404, "404 page not found")
    allowed = tuple(methods) + ((b"HEAD",) if b"GET" in methods else ())
    if request.method not in allowed:
        request.setHeader(b"allow", b", ".join(allowed))
        return writeError(request, 405, f"method {request.method.decode('latin-1')} not allowed;"
                                        f" use {' or '.join(m.decode() for m in methods)}")
    return None


class _Missing:
    def __repr__(self):
        return "<missing>"


MISSING = _Missing()


def readJSONObject(request):
    """
    The request's body as a JSON object: C{(dict, None)}, or C{(None, body of
    a 400)}.
    """
    request.content.seek(0)
    raw = request.content.read()
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, writeError(request, 400, f"invalid JSON body: {e}")
    if not isinstance(value, dict):
        return None, writeError(request, 400, "body: expected a JSON object")
    return value, None


def field(body: dict, name: str):
    """
    C{body[name]}, matched without regard to letter case when the exact key is
    absent (Go's encoding/json does that, so gvproxy's clients may rely on it);
    L{MISSING} if absent.
    """
    if name in body:
        return body[name]
    lower = name.lower()
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == lower:
            return value
    return MISSING


class NotFound(Resource):
    """
    Go's 404 for any path no route matches.
    """

    isLeaf = True

    def render(self, request):
        return writeError(request, 404, "404 page not found")


class Node(Resource):
    """
    An inner node of the route tree: its children are routes; anything else
    below it, and the node itself, is not found.
    """

    def getChild(self, name, request):
        return NotFound()

    def render(self, request):
        return writeError(request, 404, "404 page not found")
