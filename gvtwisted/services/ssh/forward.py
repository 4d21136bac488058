"""
Host unix sockets forwarded over SSH to unix sockets in the guest: gvproxy's
C{-forward-sock}/C{-forward-dest}/C{-forward-user}/C{-forward-identity}
(podman machine's API socket), and the control API's
C{ssh-tunnel://user@host:port/path?key=FILE} remotes.

Each host socket is made with mode 0600 (whoever can connect reaches the
guest's socket as the SSH user) and removed when gvtap stops. Forwards with
the same sshd, user and identity share one L{SSHSession}.
"""

import errno
import os
import stat
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from gvtwisted.services.ssh.channel import HostSide
from gvtwisted.services.ssh.client import IdentityError, SSHSession, loadIdentity


class SocketForward:
    """
    One C{--forward-sock}: the host socket C{sock}, the guest socket
    C{dest}, the SSH C{user} and the private C{key} read from C{identity}.
    """

    def __init__(self, sock, dest, user, identity, key=None):
        self.sock = sock
        self.dest = dest
        self.user = user
        self.identity = identity
        self.key = key


def socketPath(value: str, option: str = "--forward-sock") -> str:
    """
    A host socket path given as a path, C{unix:PATH} or C{unix:///PATH}.

    @raise ValueError: naming C{option}.
    """
    path = value
    if value.startswith("unix://"):
        path = unquote(urlsplit(value).path)
    elif value.startswith("unix:"):
        path = value[len("unix:"):]
    elif "://" in value:
        raise ValueError(f"{option} {value!r}: only unix sockets can be forwarded here")
    if not path or "\0" in path:
        raise ValueError(f"{option} {value!r} is not a socket path")
    return path


def socketForwards(socks, dests, users, identities):
    """
    Match the four repeatable options by position and read the identities.

    @raise ValueError: a count mismatch or a bad value, as one line.
    """
    counts = (len(socks), len(dests), len(users), len(identities))
    if len(set(counts)) != 1:
        raise ValueError(
            "--forward-sock, --forward-dest, --forward-user and --forward-identity must all "
            "be given together, the same number of times (got %d, %d, %d and %d)" % counts)
    forwards = []
    for sock, dest, user, identity in zip(socks, dests, users, identities):
        if not dest.startswith("/") or "\0" in dest:
            raise ValueError(f"--forward-dest {dest!r} is not an absolute socket path in the guest")
        if not user:
            raise ValueError("--forward-user is empty")
        try:
            key = loadIdentity(identity)
        except IdentityError as e:
            raise ValueError(f"--forward-identity: {e}") from None
        forwards.append(SocketForward(socketPath(sock), dest, user, identity, key))
    return forwards


class SSHTunnel:
    """
    A parsed C{ssh-tunnel://user@host:port/path?key=FILE[&passphrase=P]}.
    """

    def __init__(self, user, host, port, path, keyPath, passphrase):
        self.user = user
        self.host = host
        self.port = port
        self.path = path
        self.keyPath = keyPath
        self.passphrase = passphrase


def parseSSHTunnel(remote: str) -> SSHTunnel:
    """
    Parse an C{ssh-tunnel://} remote (gvproxy's rules: the key is required,
    the port defaults to 22, the path must name a socket).

    @raise ValueError: with gvproxy's message where it has one.
    """
    parts = urlsplit(remote)
    if parts.scheme != "ssh-tunnel":
        raise ValueError(f"remote: {remote!r} is not an ssh-tunnel:// URL")
    query = parse_qs(parts.query)
    key = (query.get("key") or [""])[0]
    if not key:
        raise ValueError("key not provided for unix-ssh connection")
    if parts.path in ("", "/"):
        raise ValueError("remote uri must contain a path to a socket file")
    try:
        port = parts.port or 22
    except ValueError:
        raise ValueError(f"remote: {remote!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"remote: {remote!r} names no host")
    return SSHTunnel(unquote(parts.username or ""), parts.hostname, port,
                     unquote(parts.path), key, (query.get("passphrase") or [None])[0])


class StreamLocalFactory(Factory):
    """
    Accepts host connections and carries each over its own channel of
    C{session} to C{path} in the guest.
    """

    noisy = False

    def __init__(self, session, path, counters=None):
        self.session = session
        self.path = path
        self.counters = counters

    def buildProtocol(self, addr):
        return HostSide(self.session.openChannel, self.path, self.counters, self.session.name)


def networkDialler(network, host, port):
    """
    A C{dial(factory, timeout)} for L{SSHSession} that connects through the
    virtual network to C{host}:C{port}.
    """
    def dial(factory, timeout):
        return network.connectTCP(host, port, factory, timeout=timeout)
    return dial


def sessionFor(reactor, network, host, port, user, key, counters=None):
    """
    A new L{SSHSession} to C{user@host:port} through C{network}.
    """
    return SSHSession(reactor, networkDialler(network, host, port), user, key,
                      f"ssh {user}@{host}:{port}", counters=counters)


def listenUnixSocket(reactor, path, factory):
    """
    Listen on C{path} with mode 0600. A socket file a dead process left is
    replaced; a live socket or another kind of file is an error.

    @raise OSError: why it cannot listen.
    """
    from gvtwisted.services.forwarder import _unixSocketLive

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode) or _unixSocketLive(path):
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)
        os.unlink(path)
    try:
        return reactor.listenUNIX(path, factory, mode=0o600)
    except CannotListenError as e:
        error = e.socketError
        if isinstance(error, OSError):
            raise error from None
        raise OSError(errno.EINVAL, str(error), path) from None


class SocketForwardService(Service):
    """
    The C{--forward-sock} sockets of one gvtap, listening from start-up; the
    SSH session behind them is opened with the first connection.
    """

    log = Logger()

    def __init__(self, reactor, network, sshHost, forwards, counters=None, sshPort=22):
        self.reactor = reactor
        self.network = network
        self.sshHost = sshHost
        self.sshPort = sshPort
        self.forwards = forwards
        self.counters = counters
        self.sessions = {}
        self.listeners = []
        # Socket files made, for gvtwisted.startup to remove if start-up fails.
        self.createdPaths = None

    def privilegedStartService(self):
        # Bound before start-up finishes, so that a socket that cannot be made
        # stops start-up with one line (as the other listeners do).
        Service.privilegedStartService(self)
        self._listen()

    def startService(self):
        Service.startService(self)
        if not self.listeners:
            self._listen()

    def _listen(self):
        for forward in self.forwards:
            sessionKey = (forward.user, forward.identity)
            session = self.sessions.get(sessionKey)
            if session is None:
                session = self.sessions[sessionKey] = sessionFor(
                    self.reactor, self.network, self.sshHost, self.sshPort,
                    forward.user, forward.key, self.counters)
            try:
                port = listenUnixSocket(self.reactor, forward.sock,
                                        StreamLocalFactory(session, forward.dest, self.counters))
            except OSError as e:
                from gvtwisted.startup import StartupError, describeListenFailure

                raise StartupError(describeListenFailure(e, "--forward-sock", forward.sock)) from None
            self.listeners.append(port)
            if self.createdPaths is not None:
                self.createdPaths.append(forward.sock)
            self.log.info("forwarding unix socket {sock} to {dest} in the guest over "
                          "{session}", sock=forward.sock, dest=forward.dest, session=session.name)

    def stopService(self):
        for session in self.sessions.values():
            session.stop()
        listeners, self.listeners = self.listeners, []
        for port in listeners:
            # Twisted removes the socket file when the port stops listening.
            port.stopListening()
        return Service.stopService(self)
