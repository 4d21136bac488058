"""
UNIX stream connections that read with C{recv}, for links and services that
never receive file descriptors.

Twisted's UNIX transports read every chunk with C{recvmsg} and an ancillary
buffer, so that a protocol may receive file descriptors, and parse the
ancillary data of every read. A guest link carries frames and nothing else:
measured with C{bench/rr.sh}'s ping-pong through gvtap-guest (one link read
per round trip in the helper, one in the daemon), the helper's CPU per round
trip fell by about 7 microseconds (a tenth) and the round trip by 8 when its
link read with C{recv}, which is what Twisted's TCP transport does.

L{StreamUNIXReactor} is a view of a reactor whose C{connectUNIX} and
C{listenUNIX} make such connections; Twisted's own UNIX endpoints take it as
their reactor (L{linkServerFromString}, L{linkClientFromString}), so the
parsing of C{unix:} descriptions, the endpoint's Deferreds and every other
behaviour stay Twisted's. A reactor that is not one of Twisted's POSIX reactors
(a test's memory reactor) gets its own C{connectUNIX} and C{listenUNIX}.
"""

from twisted.internet import tcp, unix
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.posixbase import PosixReactorBase


class StreamUNIXServer(unix.Server):
    """
    An accepted UNIX connection that reads with C{recv} (no file descriptors).
    """

    doRead = tcp.Connection.doRead


class StreamUNIXClient(unix.Client):
    """
    A connecting UNIX connection that reads with C{recv} (no file descriptors).
    """

    doRead = tcp.Connection.doRead


class StreamUNIXPort(unix.Port):
    """
    A listening UNIX port whose connections are L{StreamUNIXServer}s.
    """

    transport = StreamUNIXServer


class StreamUNIXConnector(unix.Connector):
    """
    A UNIX connector whose connection is a L{StreamUNIXClient}.
    """

    def _makeTransport(self):
        return StreamUNIXClient(self.address, self, self.reactor, self.checkPID)


class StreamUNIXReactor:
    """
    C{reactor}, except that its UNIX stream connections read with C{recv}.
    """

    def __init__(self, reactor):
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def connectUNIX(self, address, factory, timeout=30, checkPID=0):
        reactor = self._reactor
        if not isinstance(reactor, PosixReactorBase):
            return reactor.connectUNIX(address, factory, timeout=timeout, checkPID=checkPID)
        connector = StreamUNIXConnector(address, factory, timeout, reactor, checkPID)
        connector.connect()
        return connector

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        reactor = self._reactor
        if not isinstance(reactor, PosixReactorBase):
            return reactor.listenUNIX(address, factory, backlog=backlog, mode=mode,
                                      wantPID=wantPID)
        port = StreamUNIXPort(address, factory, backlog, mode, reactor, wantPID)
        port.startListening()
        return port


def _isUNIX(description: str) -> bool:
    return description.startswith("unix:")


def linkServerFromString(reactor, description: str):
    """
    C{serverFromString}, with L{StreamUNIXReactor} under a C{unix:} endpoint.
    """
    if _isUNIX(description):
        reactor = StreamUNIXReactor(reactor)
    return serverFromString(reactor, description)


def linkClientFromString(reactor, description: str):
    """
    C{clientFromString}, with L{StreamUNIXReactor} under a C{unix:} endpoint.
    """
    if _isUNIX(description):
        reactor = StreamUNIXReactor(reactor)
    return clientFromString(reactor, description)
