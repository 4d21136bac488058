# -*- test-case-name: tests.test_vsock -*-
"""
AF_VSOCK stream sockets for Twisted: an address, a listening port, a client
connector, endpoints and the C{vsock:} endpoint strings.

Guests reach gvproxy (and so gvtap) over virtio-vsock: gvforwarder's default
URL is C{vsock://2:1024/connect}, CID 2 being the host.  Twisted knows no
AF_VSOCK, but it adds a family to its TCP machinery in a few overrides (see
C{twisted/internet/unix.py}); this module does the same, so a vsock link is an
ordinary Twisted transport and the link protocols never know which family
carries them.

Two kernel facts shape the code:

  - A vsock address is C{(cid, port)}, both unsigned 32-bit integers.  Port 0
    is a real port to the kernel, not "any port" as in TCP: to let the kernel
    choose, bind L{VMADDR_PORT_ANY} (C{vsock:any}).  Ports below 1024 need
    C{CAP_NET_BIND_SERVICE}.
  - Platforms without AF_VSOCK (macOS, where the host side talks to vfkit
    over unix sockets) must still import this module, because the plugin file
    that registers the C{vsock:} parsers imports it on every
    C{serverFromString}.  So nothing here touches C{socket.AF_VSOCK} at import
    time; using a vsock socket there fails when the socket is made.
"""

import re
import socket
from errno import EAFNOSUPPORT
from math import isfinite
from urllib.parse import urlsplit

import attr
from twisted.internet import base, defer, tcp
from twisted.internet.endpoints import _WrappingFactory
from twisted.internet.interfaces import (
    IAddress,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

__all__ = [
    "AF_VSOCK",
    "VMADDR_CID_ANY",
    "VMADDR_CID_HYPERVISOR",
    "VMADDR_CID_LOCAL",
    "VMADDR_CID_HOST",
    "VMADDR_PORT_ANY",
    "VSockAddress",
    "VSockServer",
    "VSockPort",
    "VSockClient",
    "VSockConnector",
    "VSockServerEndpoint",
    "VSockClientEndpoint",
    "VSockServerParser",
    "VSockClientParser",
    "parseCID",
    "parsePort",
    "vsockURLToEndpointString",
]

# None where the platform has no AF_VSOCK; see the module docstring.
AF_VSOCK = getattr(socket, "AF_VSOCK", None)

# From linux/vm_sockets.h.  Python 3.11 lacks VMADDR_CID_LOCAL and some
# platforms lack all of them, so they are spelled out here.
VMADDR_CID_ANY = 0xFFFFFFFF
VMADDR_CID_HYPERVISOR = 0
VMADDR_CID_LOCAL = 1
VMADDR_CID_HOST = 2
VMADDR_PORT_ANY = 0xFFFFFFFF

_U32_MAX = 0xFFFFFFFF

_CID_NAMES = {
    "any": VMADDR_CID_ANY,
    "hypervisor": VMADDR_CID_HYPERVISOR,
    "local": VMADDR_CID_LOCAL,
    "host": VMADDR_CID_HOST,
}

# ASCII digits only: int() would also take "+5", " 5", "5_0" and non-ASCII
# digits, none of which a user means as a port number.
_DECIMAL = re.compile(r"[0-9]+\Z")


def _u32(value, what):
    """
    Check that C{value} is an unsigned 32-bit integer, given as an C{int} or
    as a string of decimal digits, and return it as an C{int}.

    @param what: the name of the value, for the error message.
    @raise ValueError: if it is not.
    """
    if isinstance(value, bool):
        # bool is an int subclass; True as a port is always a mistake.
        raise ValueError(f"vsock {what} must be an integer, not {value!r}")
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise ValueError(
                f"vsock {what} must be a decimal integer from 0 to {_U32_MAX},"
                f" not {value!r}"
            )
        value = int(value)
    elif not isinstance(value, int):
        raise ValueError(f"vsock {what} must be an integer, not {value!r}")
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"vsock {what} {value} is outside 0..{_U32_MAX}")
    return value


def parseCID(value):
    """
    Read a context ID: an integer from 0 to 2**32-1, or one of the names of
    the well-known CIDs (C{any}, C{hypervisor}, C{local}, C{host}), because
    C{cid=host} says more in a command line than C{cid=2}.

    @param value: an C{int} or a C{str}.
    @rtype: C{int}
    @raise ValueError: if C{value} names no CID.
    """
    if isinstance(value, str) and value.lower() in _CID_NAMES:
        return _CID_NAMES[value.lower()]
    return _u32(value, "CID")


def parsePort(value):
    """
    Read a vsock port: an integer from 0 to 2**32-1, or C{any} for
    L{VMADDR_PORT_ANY}, the kernel's "choose a free port" (port 0 is an
    ordinary port in AF_VSOCK).

    @param value: an C{int} or a C{str}.
    @rtype: C{int}
    @raise ValueError: if C{value} is not a port.
    """
    if isinstance(value, str) and value.lower() == "any":
        return VMADDR_PORT_ANY
    return _u32(value, "port")


def _checkAddressField(name):
    """
    An attrs validator that the field C{name} is an unsigned 32-bit integer.
    """

    def validate(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"VSockAddress.{name} must be an int, not {value!r}")
        if not 0 <= value <= _U32_MAX:
            raise ValueError(f"VSockAddress.{name} {value} is outside 0..{_U32_MAX}")

    return validate


@implementer(IAddress)
@attr.s(frozen=True, slots=True, repr=False)
class VSockAddress:
    """
    The address of one end of an AF_VSOCK stream.

    Immutable and hashable like Twisted's L{IPv4Address}, so it can key a
    table of links.

    @ivar cid: the context ID: the VM, the host (2), or L{VMADDR_CID_ANY} for
        a port bound to every CID.
    @ivar port: the port number.
    @ivar type: always C{"VSOCK"}, as C{IPv4Address.type} is C{"TCP"} or
        C{"UDP"}, for code that logs addresses of any family.
    """

    cid = attr.ib(validator=_checkAddressField("cid"))
    port = attr.ib(validator=_checkAddressField("port"))
    type = "VSOCK"

    def __repr__(self) -> str:
        return f"VSockAddress(cid={self.cid}, port={self.port})"


def _unsupported():
    """
    The error for a platform without AF_VSOCK, raised where a socket would be
    made, so that the failure names the real cause instead of a C{TypeError}
    from C{socket.socket(None, ...)}.
    """
    return OSError(EAFNOSUPPORT, "AF_VSOCK is not supported on this platform")


class VSockServer(tcp.Server):
    """
    The transport of one accepted vsock connection.

    L{tcp.Server} does all the work; only the addresses differ, and TCP_NODELAY,
    which does not exist on AF_VSOCK (the link protocols may ask for it on any
    stream transport, so asking must not fail).
    """

    def getHost(self):
        """
        @return: the L{VSockAddress} this connection was accepted on; its CID is
            the local CID, even when the port was bound to L{VMADDR_CID_ANY}.
        """
        return VSockAddress(*self.socket.getsockname())

    def getPeer(self):
        """
        @return: the L{VSockAddress} of the peer (its CID names the VM).
        """
        return VSockAddress(*self.client)

    def getTcpNoDelay(self):
        """
        AF_VSOCK has no Nagle algorithm to turn off.

        @return: C{False}
        """
        return False

    def setTcpNoDelay(self, enabled):
        """
        Ignored: AF_VSOCK has no TCP_NODELAY.
        """


class VSockPort(tcp.Port):
    """
    A listening AF_VSOCK port.

    L{tcp.Port} binds C{(self.interface, self.port)}, accepts in a loop and
    hands each socket to C{self.transport}; a vsock address is also a 2-tuple,
    so it is reused as it is, with the CID standing in for the interface.

    @ivar cid: the CID bound, usually L{VMADDR_CID_ANY}.
    """

    addressFamily = AF_VSOCK
    socketType = socket.SOCK_STREAM
    transport = VSockServer
    _type = "VSOCK"
    # vsock has no TIME_WAIT to step over, and the kernel refuses neither
    # option but gives them no meaning here.
    _reuseAddress = False
    _reusePort = False

    def __init__(self, port, factory, backlog=50, cid=VMADDR_CID_ANY, reactor=None):
        """
        @param port: the vsock port; L{VMADDR_PORT_ANY} lets the kernel choose.
        @param factory: the L{IProtocolFactory} for accepted connections.
        @param backlog: the listen queue length.
        @param cid: the CID to bind, L{VMADDR_CID_ANY} for all of this
            machine's.
        @param reactor: an L{IReactorFDSet} provider.
        """
        # Not tcp.Port.__init__: it would read the CID as an IP interface.
        base.BasePort.__init__(self, reactor=reactor)
        self.port = _u32(port, "port")
        self.cid = _u32(cid, "CID")
        self.interface = self.cid
        self.factory = factory
        self.backlog = backlog

    @classmethod
    def _fromListeningDescriptor(cls, reactor, fd, factory):
        """
        Wrap a listening AF_VSOCK socket made outside Twisted (for example one
        passed by systemd socket activation).

        @param fd: the socket's file descriptor; it is duplicated, and must be
            non-blocking and already listening.
        @return: a new L{VSockPort}; call C{startListening} to serve it.
        """
        if cls.addressFamily is None:
            raise _unsupported()
        skt = socket.fromfd(fd, cls.addressFamily, cls.socketType)
        cid, port = skt.getsockname()
        self = cls(port, factory, cid=cid, reactor=reactor)
        self._preexistingSocket = skt
        return self

    def __repr__(self) -> str:
        if self._realPortNumber is not None:
            return (
                f"<{self.__class__.__name__} of {self.factory.__class__} on "
                f"cid {self.cid} port {self._realPortNumber}>"
            )
        return (
            f"<{self.__class__.__name__} of {self.factory.__class__} "
            f"(not listening)>"
        )

    def createInternetSocket(self):
        """
        Make the non-blocking AF_VSOCK socket.

        @raise OSError: C{EAFNOSUPPORT} where the platform has no AF_VSOCK;
            C{startListening} turns it into L{CannotListenError}.
        """
        if self.addressFamily is None:
            raise _unsupported()
        return tcp.Port.createInternetSocket(self)

    def _buildAddr(self, address):
        """
        Turn an address from C{accept} into the L{VSockAddress} given to the
        factory's C{buildProtocol}.
        """
        return VSockAddress(*address)

    def getHost(self):
        """
        @return: the L{VSockAddress} bound, with the real port if the kernel
            chose it.
        """
        return VSockAddress(*self.socket.getsockname())


class VSockClient(tcp.BaseClient):
    """
    The transport of an outgoing vsock connection.

    Modelled on C{twisted.internet.unix.Client}: there is no name to resolve,
    so the connect starts at once from the C{(cid, port)} pair.
    """

    addressFamily = AF_VSOCK
    socketType = socket.SOCK_STREAM

    def __init__(self, cid, port, connector, reactor):
        """
        @param cid: the peer's CID.
        @param port: the peer's port.
        @param connector: the L{VSockConnector} that made this client.
        @param reactor: an L{IReactorFDSet} and L{IReactorTime} provider.
        """
        self.connector = connector
        self.realAddress = self.addr = (cid, port)
        self._finishInit(self.doConnect, self.createInternetSocket(), None, reactor)

    def createInternetSocket(self):
        """
        Make the non-blocking AF_VSOCK socket.

        @raise OSError: C{EAFNOSUPPORT} where the platform has no AF_VSOCK.
        """
        if self.addressFamily is None:
            raise _unsupported()
        return tcp.BaseClient.createInternetSocket(self)

    def getHost(self):
        """
        @return: the local L{VSockAddress}; the kernel binds it on connect.
        """
        return VSockAddress(*self.socket.getsockname())

    def getPeer(self):
        """
        @return: the L{VSockAddress} connected to.
        """
        return VSockAddress(*self.addr)

    def getTcpNoDelay(self):
        """
        AF_VSOCK has no Nagle algorithm to turn off.

        @return: C{False}
        """
        return False

    def setTcpNoDelay(self, enabled):
        """
        Ignored: AF_VSOCK has no TCP_NODELAY.
        """

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} to cid {self.addr[0]} port {self.addr[1]}>"


class VSockConnector(base.BaseConnector):
    """
    An L{IConnector} for vsock, as C{connectUNIX} would return one; the
    reactor has no C{connectVSOCK}, so L{VSockClientEndpoint} makes it.
    """

    def __init__(self, cid, port, factory, timeout, reactor):
        """
        @param cid: the peer's CID.
        @param port: the peer's port.
        @param factory: the L{ClientFactory}.
        @param timeout: seconds to wait for the connection, or L{None}.
        @param reactor: the reactor to connect with.
        """
        base.BaseConnector.__init__(self, factory, timeout, reactor)
        self.cid = cid
        self.port = port

    def _makeTransport(self):
        """
        @return: a new L{VSockClient}, which starts connecting.
        """
        return VSockClient(self.cid, self.port, self, self.reactor)

    def getDestination(self):
        """
        @return: the L{VSockAddress} this connector connects to.
        """
        return VSockAddress(self.cid, self.port)


@implementer(IStreamServerEndpoint)
class VSockServerEndpoint:
    """
    Listen on an AF_VSOCK port, as C{TCP4ServerEndpoint} listens on TCP.

    @ivar port: the port to bind.
    @ivar cid: the CID to bind.
    @ivar backlog: the listen queue length.
    """

    def __init__(self, reactor, port, cid=VMADDR_CID_ANY, backlog=50):
        """
        @param reactor: an L{IReactorFDSet} provider (any POSIX reactor).
        @param port: the port, 0..2**32-1; L{VMADDR_PORT_ANY} lets the kernel
            choose one.
        @param cid: the CID to bind; the default, L{VMADDR_CID_ANY}, accepts
            on every CID of this machine.
        @param backlog: the listen queue length.
        @raise ValueError: if an argument is out of range, so that a bad
            command line fails when it is read, not when it is used.
        """
        self._reactor = reactor
        self.port = _u32(port, "port")
        self.cid = _u32(cid, "CID")
        self.backlog = _backlog(backlog)

    def __repr__(self) -> str:
        return f"VSockServerEndpoint(cid={self.cid}, port={self.port})"

    def listen(self, protocolFactory):
        """
        Bind and listen.

        @return: a L{Deferred} that fires with the L{VSockPort}, or fails with
            L{CannotListenError}.
        """
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, protocolFactory):
        port = VSockPort(
            self.port,
            protocolFactory,
            backlog=self.backlog,
            cid=self.cid,
            reactor=self._reactor,
        )
        port.startListening()
        return port


@implementer(IStreamClientEndpoint)
class VSockClientEndpoint:
    """
    Connect to an AF_VSOCK port, as C{UNIXClientEndpoint} connects to a path.

    @ivar cid: the peer's CID (2 is the host, seen from a guest).
    @ivar port: the peer's port.
    @ivar timeout: seconds to wait for the connection.
    """

    def __init__(self, reactor, cid, port, timeout=30):
        """
        @param reactor: an L{IReactorFDSet} and L{IReactorTime} provider.
        @param cid: the peer's CID.
        @param port: the peer's port.
        @param timeout: seconds to wait before the attempt fails.
        @raise ValueError: if an argument is out of range, or names "any",
            which a connection cannot go to.
        """
        self._reactor = reactor
        self.cid = _u32(cid, "CID")
        self.port = _u32(port, "port")
        if self.cid == VMADDR_CID_ANY:
            raise ValueError("a vsock client needs a CID to connect to, not 'any'")
        if self.port == VMADDR_PORT_ANY:
            raise ValueError("a vsock client needs a port to connect to, not 'any'")
        self.timeout = _timeout(timeout)

    def __repr__(self) -> str:
        return f"VSockClientEndpoint(cid={self.cid}, port={self.port})"

    def connect(self, protocolFactory):
        """
        Connect, as C{UNIXClientEndpoint.connect} does.

        Twisted's private C{_WrappingFactory} is used as its own endpoints use
        it, because it is what makes the returned L{Deferred} cancellable and
        turns a failed attempt into its errback.

        @return: a L{Deferred} that fires with the connected protocol.
        """
        try:
            wf = _WrappingFactory(protocolFactory)
            connector = VSockConnector(
                self.cid, self.port, wf, self.timeout, self._reactor
            )
            connector.connect()
            return wf._onConnection
        except BaseException:
            return defer.fail()


def _backlog(value):
    """
    Read a listen backlog: a non-negative integer.
    """
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise ValueError(f"vsock backlog must be a decimal integer, not {value!r}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"vsock backlog must be a non-negative integer, not {value!r}")
    return value


def _timeout(value):
    """
    Read a connect timeout: a positive, finite number of seconds.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"vsock timeout must be a number of seconds, not {value!r}"
        ) from None
    if isinstance(value, bool) or not isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"vsock timeout must be a positive number of seconds, not {value!r}"
        )
    return seconds


def _bindArguments(what, names, required, args, kwargs):
    """
    Match an endpoint string's positional and keyword arguments to C{names},
    as a Python call would, but with errors that speak of the string.

    @param what: C{"server"} or C{"client"}, for the messages.
    @param names: the parameter names, in positional order.
    @param required: the names that must be given.
    @return: a C{dict} from name to the value given.
    @raise ValueError: on too many positional arguments, an unknown or
        repeated parameter, or a missing one.
    """
    if len(args) > len(names):
        raise ValueError(
            f"vsock {what} takes at most {len(names)} positional "
            f"argument{'s' if len(names) != 1 else ''} "
            f"({', '.join(names)}), got {len(args)}: {list(args)!r}"
        )
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise ValueError(
                f"vsock {what}: unknown parameter {key!r}; "
                f"known: {', '.join(names)}"
            )
        if key in bound:
            raise ValueError(f"vsock {what}: {key} given twice")
        bound[key] = value
    for name in required:
        if name not in bound:
            raise ValueError(f"vsock {what} needs a {name}, as in {_EXAMPLES[what]}")
    return bound


_EXAMPLES = {
    "server": "'vsock:1024' or 'vsock:port=1024:cid=any'",
    "client": "'vsock:2:1024' or 'vsock:cid=2:port=1024'",
}


@implementer(IPlugin, IStreamServerEndpointStringParser)
class VSockServerParser:
    """
    The C{vsock:} server endpoint string, registered as a plugin so that
    C{--listen vsock:1024} works wherever Twisted takes an endpoint.

    Forms: C{vsock:PORT}, C{vsock:port=PORT}, with C{cid=CID} (default
    C{any}) and C{backlog=N}.  PORT may be C{any}; CID may be a number or
    C{any}, C{hypervisor}, C{local}, C{host}.
    """

    prefix = "vsock"

    def parseStreamServer(self, reactor, *args, **kwargs):
        """
        @return: a L{VSockServerEndpoint}.
        @raise ValueError: on a malformed description.
        """
        if len(args) > 1:
            # Only the port is positional: "vsock:1024:3" could mean either
            # a CID or a backlog, so it is refused rather than guessed.
            raise ValueError(
                f"vsock server takes only the port as a positional argument; "
                f"use cid= and backlog= for the rest, got {list(args)!r}"
            )
        bound = _bindArguments(
            "server", ("port", "cid", "backlog"), ("port",), args, kwargs
        )
        return VSockServerEndpoint(
            reactor,
            parsePort(bound["port"]),
            cid=parseCID(bound.get("cid", VMADDR_CID_ANY)),
            backlog=_backlog(bound.get("backlog", 50)),
        )


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class VSockClientParser:
    """
    The C{vsock:} client endpoint string, registered as a plugin so that a
    guest helper can take C{vsock:cid=2:port=1024} like any other endpoint.

    Forms: C{vsock:CID:PORT}, C{vsock:cid=CID:port=PORT}, with
    C{timeout=SECONDS} (default 30).
    """

    prefix = "vsock"

    def parseStreamClient(self, reactor, *args, **kwargs):
        """
        @return: a L{VSockClientEndpoint}.
        @raise ValueError: on a malformed description.
        """
        bound = _bindArguments(
            "client", ("cid", "port", "timeout"), ("cid", "port"), args, kwargs
        )
        return VSockClientEndpoint(
            reactor,
            parseCID(bound["cid"]),
            parsePort(bound["port"]),
            timeout=_timeout(bound.get("timeout", 30)),
        )


def vsockURLToEndpointString(url):
    """
    Turn a gvisor-tap-vsock URL into an endpoint string and a path.

    gvforwarder takes C{-url vsock://2:1024/connect} and gvproxy
    C{-listen vsock://:1024}; users carry these URLs over, so they are
    accepted as they are.  C{vsock://2:1024/connect} becomes
    C{("vsock:cid=2:port=1024", "/connect")}; with no CID, as in
    C{vsock://:1024}, the string is C{"vsock:port=1024"}, a server
    description (a client needs a CID and refuses it).

    @param url: the URL, a C{str}.
    @return: C{(endpointString, path)}; the path is C{""} when absent.
    @raise ValueError: if C{url} is not such a URL.
    """
    if not isinstance(url, str):
        raise ValueError(f"a vsock URL must be a string, not {url!r}")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"not a vsock URL: {url!r} ({e})") from None
    if parts.scheme.lower() != "vsock":
        raise ValueError(f"not a vsock URL (expected vsock://CID:PORT/path): {url!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"a vsock URL has only a CID, a port and a path: {url!r}")
    cidText, colon, portText = parts.netloc.rpartition(":")
    if not colon:
        raise ValueError(f"vsock URL {url!r} has no port (expected vsock://CID:PORT)")
    port = parsePort(portText)
    if cidText:
        return f"vsock:cid={parseCID(cidText)}:port={port}", parts.path
    return f"vsock:port={port}", parts.path
