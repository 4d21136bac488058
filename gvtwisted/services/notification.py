"""
gvproxy's C{-notification unix:///PATH}: JSON messages about the network's
life, each on a connection of its own to a unix socket someone listens on.

The messages, exactly as gvproxy encodes them (compact JSON and a newline):

 - C{{"notification_type":"ready"}} once the guest endpoints listen;
 - C{{"notification_type":"connection_established","mac_address":"..."}}
   when a guest's MAC address is first seen on a link;
 - C{{"notification_type":"connection_closed","mac_address":"..."}} for each
   of a link's MAC addresses when the link goes;
 - C{{"notification_type":"hypervisor_error"}} when a hypervisor endpoint
   cannot listen.

The network never waits for the listener: messages are queued (at most
C{maxQueue}, gvproxy's 100; past that a message is dropped, counted and
logged) and sent one after another, in order, each with a time limit.
"""

import json
from collections import deque
from urllib.parse import unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger

from gvtwisted.wire.ethernet import formatMAC

READY = "ready"
CONNECTION_ESTABLISHED = "connection_established"
CONNECTION_CLOSED = "connection_closed"
HYPERVISOR_ERROR = "hypervisor_error"

MAX_QUEUE = 100
SEND_TIMEOUT = 5.0


def notificationPath(value: str) -> str:
    """
    The socket path of a C{--notification} value: C{unix:///PATH} (gvproxy's
    only form) or a plain path.

    @raise ValueError: for another scheme or an empty path.
    """
    path = value
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme != "unix":
            raise ValueError(f"--notification {value!r}: the address must be a unix:// address")
        path = unquote(parts.path)
    elif value.startswith("unix:"):
        path = value[len("unix:"):]
    if not path or "\0" in path:
        raise ValueError(f"--notification {value!r} is not a socket path")
    return path


def encode(kind: str, mac: str = "") -> bytes:
    """
    One message as gvproxy's Go C{json.Encoder} writes it.
    """
    message = {"notification_type": kind}
    if mac:
        message["mac_address"] = mac
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Deliver(Protocol):
    def __init__(self, sender, message):
        self.sender = sender
        self.message = message

    def connectionMade(self):
        self.transport.write(self.message)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.sender._sent(self)


class _DeliverFactory(ClientFactory):
    noisy = False

    def __init__(self, sender, message):
        self.sender = sender
        self.message = message

    def buildProtocol(self, addr):
        self.protocol = _Deliver(self.sender, self.message)
        return self.protocol

    def clientConnectionFailed(self, connector, reason):
        self.sender._failed(reason)


class NotificationSender:
    """
    Sends notifications to the unix socket at C{path}.

    @ivar queue: the messages not sent yet (encoded).
    """

    log = Logger()

    def __init__(self, reactor, path, counters=None, maxQueue=MAX_QUEUE, timeout=SEND_TIMEOUT):
        self.reactor = reactor
        self.path = path
        self.counters = counters
        self.maxQueue = maxQueue
        self.timeout = timeout
        self.queue = deque()
        self._current = None
        self._timer = None

    def send(self, kind, mac=""):
        """
        Queue one message; never blocks, never raises.
        """
        if len(self.queue) >= self.maxQueue:
            self._count("drop.notification.queueFull")
            self.log.warn("unable to send notification {kind}: {n} already queued",
                          kind=kind, n=len(self.queue))
            return
        self.queue.append(encode(kind, mac))
        self._count("notification.queued")
        if self._current is None:
            self._next()

    def _next(self):
        if not self.queue or self._current is not None:
            return
        message = self.queue.popleft()
        factory = _DeliverFactory(self, message)
        self._current = factory
        self._timer = self.reactor.callLater(self.timeout, self._timedOut, factory)
        try:
            self.reactor.connectUNIX(self.path, factory, timeout=self.timeout)
        except Exception as e:
            self._failedWith(str(e))

    def _done(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._current = None
        self.reactor.callLater(0, self._next)

    def _sent(self, protocol):
        self._count("notification.sent")
        self._done()

    def _failed(self, reason):
        self._failedWith(reason.getErrorMessage())

    def _failedWith(self, why):
        self._count("drop.notification.failed")
        self.log.error("failed to send notification to {path}: {why}", path=self.path, why=why)
        self._done()

    def _timedOut(self, factory):
        self._timer = None
        protocol = getattr(factory, "protocol", None)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()

    def _count(self, name):
        if self.counters is not None:
            self.counters.increment(name)


class LinkNotifications:
    """
    Turns the switch's learn and detach events into C{connection_established}
    and C{connection_closed}, once per MAC address and link (an entry that
    ages out of the MAC table and is learnt again is not a new connection).

    Install with L{watch}.
    """

    def __init__(self, sender):
        self.sender = sender
        self._announced = {}

    def watch(self, switch):
        switch.onLearn = self.learnt
        switch.onDetach = self.detached

    def learnt(self, port, mac):
        macs = self._announced.setdefault(port, set())
        if mac not in macs:
            macs.add(mac)
            self.sender.send(CONNECTION_ESTABLISHED, formatMAC(mac))

    def detached(self, port):
        for mac in sorted(self._announced.pop(port, ())):
            self.sender.send(CONNECTION_CLOSED, formatMAC(mac))


class ReadyService(Service):
    """
    Sends C{ready} when started: put it last in the service tree, after the
    endpoints.
    """

    def __init__(self, sender):
        self.sender = sender

    def startService(self):
        Service.startService(self)
        self.sender.send(READY)


def sendNow(path, kind, timeout=1.0):
    """
    Send one message at once, blocking for at most C{timeout} seconds: for a
    process about to exit on a hypervisor error, whose reactor will not run.
    """
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(encode(kind))
    except OSError:
        pass
    finally:
        s.close()
