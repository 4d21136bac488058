"""
A host connection carried to a unix socket in the guest over one SSH channel.

The channel is OpenSSH's C{direct-streamlocal@openssh.com} (its PROTOCOL
file, section 2.4): the open request names the socket path in the guest, sshd
connects to it, and the channel's data and EOF are that connection's bytes and
half-close.

Flow control both ways, nothing unbounded:

 - guest to host: when the host socket's buffer fills, its transport pauses
   us, and the channel stops granting the guest's sshd more window (it can
   send at most one window, 128 KiB, past that point);
 - host to guest: when sshd's window is used up, conch buffers and calls
   C{stopWriting}, and we stop reading the host socket until sshd grants more.

An EOF from either side is a half-close on the other: the host's EOF is sent
on the channel only once what is buffered ahead of it has gone.
"""

import struct

from zope.interface import implementer

from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

STREAMLOCAL = b"direct-streamlocal@openssh.com"


def streamLocalRequest(path: str) -> bytes:
    """
    The channel-specific data of a C{direct-streamlocal@openssh.com} open:
    the socket path, a reserved string and a reserved uint32.
    """
    return common.NS(path.encode("utf-8")) + common.NS(b"") + struct.pack(">L", 0)


class StreamLocalChannel(SSHChannel):
    """
    The SSH side of one forwarded connection.

    @ivar host: the L{HostSide} protocol of the host connection, or L{None}.
    @ivar windowHeld: whether the host asked us to stop (its buffer is full);
        the window granted to sshd is then not topped up.
    """

    name = STREAMLOCAL
    log = Logger()

    def __init__(self, path, host, opened, **kw):
        SSHChannel.__init__(self, **kw)
        self.path = path
        self.host = host
        self._opened = opened
        self.windowHeld = False
        self._eofPending = False

    # -- the channel's life ------------------------------------------------

    def channelOpen(self, specificData):
        opened, self._opened = self._opened, None
        if opened is None or opened.called:
            # The host connection gave up while sshd was opening the channel.
            self.host = None
            self.loseConnection()
            return
        opened.callback(self)

    def openFailed(self, reason):
        opened, self._opened = self._opened, None
        if opened is not None and not opened.called:
            opened.errback(reason)

    def dataReceived(self, data):
        host = self.host
        if host is not None and host.transport is not None:
            host.transport.write(data)

    def eofReceived(self):
        host = self.host
        if host is not None and host.transport is not None:
            try:
                host.transport.loseWriteConnection()
            except Exception:
                host.transport.loseConnection()

    def closed(self):
        host, self.host = self.host, None
        if host is not None:
            host.channelClosed()

    # -- host to guest ------------------------------------------------------

    def sendEOF(self):
        """
        End the host's direction of the stream, after what is still buffered
        for lack of window.
        """
        if self.buf:
            self._eofPending = True
        elif not self.localClosed:
            self.conn.sendEOF(self)

    def addWindowBytes(self, data):
        SSHChannel.addWindowBytes(self, data)
        if self._eofPending and not self.buf:
            self._eofPending = False
            if not self.localClosed:
                self.conn.sendEOF(self)

    def stopWriting(self):
        # sshd's window is full: stop reading the host socket.
        host = self.host
        if host is not None and host.transport is not None:
            host.transport.pauseProducing()

    def startWriting(self):
        host = self.host
        if host is not None and host.transport is not None:
            host.transport.resumeProducing()

    # -- guest to host --------------------------------------------------------

    def holdWindow(self):
        self.windowHeld = True

    def releaseWindow(self):
        """
        The host socket drained: grant sshd again what it has used.
        """
        if self.windowHeld:
            self.windowHeld = False
            missing = self.localWindowSize - self.localWindowLeft
            if missing > 0 and not self.localClosed:
                self.conn.adjustWindow(self, missing)


@implementer(IPushProducer)
class _WindowProducer:
    """
    Registered with the host transport: its pause and resume hold and release
    the channel's window.
    """

    def __init__(self, channel):
        self.channel = channel

    def pauseProducing(self):
        self.channel.holdWindow()

    def resumeProducing(self):
        self.channel.releaseWindow()

    def stopProducing(self):
        self.channel.loseConnection()


@implementer(IHalfCloseableProtocol)
class HostSide(Protocol):
    """
    A connection accepted on the host's unix socket, waiting for its channel
    and then joined to it.

    @param openChannel: a callable C{(path, hostSide)} returning a
        L{Deferred} that fires with the open L{StreamLocalChannel}.
    @param counters: a L{gvtwisted.stack.counters.Counters} or L{None}.
    """

    log = Logger()

    def __init__(self, openChannel, path, counters=None, name="ssh"):
        self._openChannel = openChannel
        self.path = path
        self.counters = counters
        self.name = name
        self.channel = None
        self.readDone = False
        self.lost = False
        self._waiting = None

    def connectionMade(self):
        # Read nothing until the channel exists to take it.
        self.transport.pauseProducing()
        self._count("ssh.forward.connections")
        d = self._waiting = self._openChannel(self.path, self)
        d.addCallbacks(self._opened, self._failed)

    def _opened(self, channel):
        self._waiting = None
        if self.lost:
            channel.loseConnection()
            return
        self.channel = channel
        self.transport.registerProducer(_WindowProducer(channel), True)
        self.transport.resumeProducing()
        if self.readDone:
            channel.sendEOF()

    def _failed(self, reason):
        self._waiting = None
        if self.lost:
            return
        from twisted.internet.defer import CancelledError

        if reason.check(CancelledError):
            return
        self._count("ssh.forward.failed")
        self.log.warn("{name}: cannot reach {path} in the guest: {reason}",
                      name=self.name, path=self.path, reason=_describe(reason))
        self.transport.loseConnection()

    def dataReceived(self, data):
        channel = self.channel
        if channel is not None:
            self._count("ssh.forward.bytesToGuest", len(data))
            channel.write(data)

    def readConnectionLost(self):
        self.readDone = True
        if self.channel is not None:
            self.channel.sendEOF()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.lost = True
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.host = None
            channel.loseConnection()
        elif self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()

    def channelClosed(self):
        """
        The channel is gone (closed by the guest, or the session dropped).
        """
        self.channel = None
        if self.transport is not None and not self.lost:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _count(self, name, value=1):
        if self.counters is not None:
            self.counters.increment(name, value)


def _describe(reason) -> str:
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], bytes):
        return args[0].decode("utf-8", "replace")
    return reason.getErrorMessage()
