"""
The NAT's dial to a host TCP address, with fewer system calls and Python layers
than C{reactor.connectTCP}.

Every connection a guest opens through the NAT is one dial, so the dial is on the
path of the sequential connection rate (C{bench/rr.sh}). Twisted's connector
(C{Connector}, C{Client}) makes the socket and then sets it non-blocking and
close-on-exec (two C{ioctl}), calls C{getsockopt} and C{connect} once before and
once after the socket becomes writable, watches it for reading and writing and
then rewatches it, goes through a Deferred for the address of an IP literal and
a C{callLater(0)} to start, and at close calls C{shutdown} before C{close}
(which fails when the peer closed first). An strace of C{bench/rr.sh} showed 29
system calls per connection in the daemon.

L{dialTCP} makes the socket non-blocking and close-on-exec in the C{socket} call,
calls C{connect} once and, at the end of that reactor turn, looks whether the
handshake is already done (C{getpeername}; C{SO_ERROR} only when it is not): to
the host's loopback it nearly always is, since the kernel completes it within
the C{connect} call, and the guest's SYN-ACK then leaves in the same turn as its
SYN came, without a poll for writability (two C{epoll_ctl}, one C{epoll_wait}).
Only a dial still in progress is watched for writability, and reads C{SO_ERROR}
once it is writable. The socket then goes to a L{HostConnection}: Twisted's own
L{tcp.Connection} (so eager writes, producers, half-close and abort are
Twisted's), closed without a C{shutdown}. The factory sees what it would see
from C{connectTCP}: C{buildProtocol(addr)} then C{makeConnection}, or
C{clientConnectionFailed} with Twisted's error for the errno
(L{error.getConnectError}: a refused dial is a L{error.ConnectionRefusedError},
C{osError} is the errno), a L{error.TimeoutError} after C{timeout} seconds, or a
L{error.UserError} after C{stopConnecting()}; never within the call.
"""

import errno
import os
import socket

from twisted.internet import abstract, error, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python.failure import Failure

from gvtwisted.reactor import turnEndScheduler

_INPROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)


class HostConnection(tcp.Connection):
    """
    A connected host socket as Twisted's TCP transport.
    """

    # close() alone ends the connection (the descriptor is close-on-exec, so
    # no other process holds it); Twisted's shutdown(SHUT_RDWR) before it
    # fails when the peer closed first.
    _shouldShutdown = False

    def __init__(self, sock, protocol, reactor, addressType, peer):
        tcp.Connection.__init__(self, sock, protocol, reactor)
        self._addressType = addressType
        self._peer = peer
        self.connected = 1
        self.logstr = f"{protocol.__class__.__name__},host"

    def getHost(self):
        return self._addressType("TCP", *self.socket.getsockname()[:2])

    def getPeer(self):
        return self._addressType("TCP", *self._peer[:2])

    def logPrefix(self):
        return self.logstr


class _Dial(abstract.FileDescriptor):
    """
    A socket being connected: watched for writability until C{connect}
    finishes, fails, times out or is stopped.
    """

    def __init__(self, reactor, host, port, factory, timeout):
        abstract.FileDescriptor.__init__(self, reactor)
        self.factory = factory
        self._timeoutCall = None
        self._socket = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._addressType = IPv6Address if family == socket.AF_INET6 else IPv4Address
        self._address = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
        except OSError as e:
            self._failSoon(error.ConnectBindError(e.errno, e.strerror))
            return
        self._socket = sock
        err = sock.connect_ex(self._address)
        if err and err not in _INPROGRESS and err != errno.EISCONN:
            self._failSoon(error.getConnectError((err, os.strerror(err))))
            return
        turnEndScheduler(reactor)(self._checkConnected)
        if timeout is not None:
            self._timeoutCall = reactor.callLater(timeout, self._timedOut)

    def _checkConnected(self):
        """
        At the end of the dialling turn: finish a dial whose handshake is
        already done or failed; watch the rest for writability.
        """
        sock = self._socket
        if sock is None:
            return
        try:
            sock.getpeername()
        except OSError:
            # Not connected: failed (SO_ERROR says why; reading it clears it,
            # so it is read once, here or in _finish) or still in progress.
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not err:
                self.reactor.addWriter(self)
                return
            self._finish(err)
            return
        # Connected, which is what SO_ERROR would have said (0).
        self._finish(0)

    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return "HostDial"

    def doWrite(self):
        self._finish()
        return None

    def connectionLost(self, reason):
        # An error event (a refused or reset dial shows as one): the reactor
        # dropped the descriptor; SO_ERROR says why.
        if self._socket is not None:
            self._finish()

    def _finish(self, err=None):
        self.reactor.removeWriter(self)
        sock, self._socket = self._socket, None
        if err is None:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            self._failed(error.getConnectError((err, os.strerror(err))))
            return
        self._cancelTimeout()
        addr = self._addressType("TCP", *self._address[:2])
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            sock.close()
            return
        transport = HostConnection(sock, protocol, self.reactor, self._addressType, self._address)
        protocol.makeConnection(transport)
        transport.startReading()

    def _failSoon(self, err):
        self.reactor.callLater(0, self._failed, err)

    def _timedOut(self):
        self._timeoutCall = None
        self._stop(error.TimeoutError())

    def stopConnecting(self):
        """
        Give up (the guest abandoned its connection): the factory hears a
        L{error.UserError}, as after C{IConnector.stopConnecting}.
        """
        self._stop(error.UserError(string="stopConnecting() called"))

    def _stop(self, err):
        if self._socket is None:
            return
        self.reactor.removeWriter(self)
        self._socket.close()
        self._socket = None
        self._failed(err)

    def _cancelTimeout(self):
        if self._timeoutCall is not None:
            if self._timeoutCall.active():
                self._timeoutCall.cancel()
            self._timeoutCall = None

    def _failed(self, err):
        self._cancelTimeout()
        factory, self.factory = self.factory, None
        if factory is not None:
            factory.clientConnectionFailed(self, Failure(err))


def dialTCP(reactor, host, port, factory, timeout=30):
    """
    Connect to C{host} (an IPv4 or IPv6 literal) and C{port} like
    C{reactor.connectTCP(host, port, factory, timeout)}.

    @return: an object with C{stopConnecting()}.
    """
    return _Dial(reactor, host, port, factory, timeout)
