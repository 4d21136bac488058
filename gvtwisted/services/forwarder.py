"""
Port forwarding into the guest: host sockets whose traffic goes to an address
and port inside the virtual network.

A TCP forward is a real C{listenTCP} on the host; every accepted connection is
spliced (L{gvtwisted.services.splice}) to a virtual connection that
C{network.connectTCP} opens into the guest, with flow control both ways. A unix
forward is the same with a host unix socket (mode 0600: whoever can connect
reaches the guest's port). A UDP forward is a host UDP socket; each client
(ip:port) is a flow with its own virtual source port, so the guest's replies find
their way back to the right client.

The guest sees a forwarded connection coming from the real client's address
when that address is not loopback and not inside the virtual subnet (the guest
answers through its default route, the gateway), and from the host address
(C{.254}) otherwise: a client on the host's loopback has no address the guest
could answer.

gvproxy's rules: a forward is named by its protocol and its local address
string; a second C{expose} of the same pair fails with C{proxy already running},
an C{unexpose} of an unknown pair with C{proxy not found}.

Caps: C{maxUDPFlows} flows per UDP forward (the least recently used flow goes
when a new client comes past it); a UDP flow idle for C{udpIdleTimeout} seconds
is closed.
"""

import errno
import ipaddress
import os
import socket
import stat

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory
from twisted.logger import Logger

from gvtwisted.services.splice import SpliceSide, splice

PROTOCOLS = ("tcp", "udp", "unix")
UDP_IDLE_TIMEOUT = 90.0
MAX_UDP_FLOWS = 1024
UDP_SWEEP_INTERVAL = 10.0
VIRTUAL_EPHEMERAL = (32768, 60999)


class ForwardError(Exception):
    """
    An expose or unexpose that cannot be done; C{str()} is the message the API
    answers with (status 500, as gvproxy does).
    """


class ForwardSpecError(ValueError):
    """
    A malformed local or remote address; the message names the field.
    """


def parseHostPort(text: str, field: str):
    """
    Split C{"HOST:PORT"}, C{"[V6]:PORT"} or C{":PORT"} into C{(host, port)};
    C{host} is C{""} for C{":PORT"}.

    @raise ForwardSpecError: naming C{field}.
    """
    if not isinstance(text, str) or ":" not in text:
        raise ForwardSpecError(f"{field}: {text!r} is not HOST:PORT")
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ForwardSpecError(f"{field}: {text!r}: put an IPv6 address in brackets")
    try:
        number = int(port, 10)
    except ValueError:
        raise ForwardSpecError(f"{field}: {text!r} has no port number") from None
    if not 1 <= number <= 65535 or not port.isdigit():
        raise ForwardSpecError(f"{field}: port {port!r} is not in 1..65535")
    return host, number


def parseRemote(text: str, protocol: str):
    """
    The guest address of a forward as C{(ip, port)}: C{"IP:PORT"}, or for a
    unix forward also gvproxy's C{"tcp://IP:PORT"}.

    @raise ForwardSpecError: naming C{remote}.
    A unix forward's C{ssh-tunnel://user@IP:PORT/path?key=FILE} remote
    gives the address of the sshd it goes through.

    @raise ForwardError: for a unix forward's remote scheme other than tcp
        and ssh-tunnel (gvproxy answers 500 for schemes it lacks), or an
        ssh-tunnel remote gvproxy refuses (no key, no path).
    """
    if not isinstance(text, str):
        raise ForwardSpecError(f"remote: {text!r} is not a string")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if protocol != "unix":
            raise ForwardSpecError(f"remote: {text!r}: a URL is for unix forwards only")
        if scheme == "ssh-tunnel":
            from gvtwisted.services.ssh.forward import parseSSHTunnel

            try:
                tunnel = parseSSHTunnel(text)
            except ValueError as e:
                raise ForwardError(str(e)) from None
            text = f"{tunnel.host}:{tunnel.port}"
        elif scheme != "tcp":
            raise ForwardError(f"remote protocol for unix forwarder is not implemented: {scheme}")
        else:
            text = rest.rstrip("/")
    host, port = parseHostPort(text, "remote")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ForwardSpecError(f"remote: {host!r} is not an IP address") from None
    return str(ip), port


def parseForwardOption(text: str):
    """
    Parse C{--forward [udp:|unix:]LOCAL=REMOTE} into C{(local, remote,
    protocol)}, checked as an expose would be.

    @raise ForwardSpecError: for a malformed value.
    """
    protocol = "tcp"
    for prefix in ("tcp:", "udp:", "unix:"):
        if text.startswith(prefix):
            protocol = prefix[:-1]
            text = text[len(prefix):]
            break
    local, sep, remote = text.rpartition("=")
    if not sep or not local or not remote:
        raise ForwardSpecError(f"--forward {text!r} is not [udp:|unix:]LOCAL=REMOTE")
    if protocol != "unix":
        parseHostPort(local, "local")
    try:
        parseRemote(remote, protocol)
    except ForwardError as e:
        raise ForwardSpecError(str(e)) from None
    return local, remote, protocol


class _GuestSide(SpliceSide):
    """
    The virtual connection's side of a forwarded TCP connection.
    """

    def connectionMade(self):
        if self.peer is not None and self.peer.lost:
            # The host client left while the guest was answering the SYN.
            self.transport.abortConnection()
            return
        SpliceSide.connectionMade(self)


class _HostSide(SpliceSide):
    """
    The host client's side; it cancels the dial into the guest if the client
    goes away first.
    """

    connector = None

    def connectionLost(self, reason):
        peer = self.peer
        self.lost = True
        if peer is not None and peer.transport is None and self.connector is not None:
            self.connector.stopConnecting()
        SpliceSide.connectionLost(self, reason)


class _GuestFactory(ClientFactory):
    """
    Hands the guest side to C{connectTCP}; if the guest refuses or never
    answers, the host client is disconnected.
    """

    noisy = False

    def __init__(self, guestSide, hostSide, counters):
        self.guestSide = guestSide
        self.hostSide = hostSide
        self.counters = counters

    def buildProtocol(self, addr):
        return self.guestSide

    def clientConnectionFailed(self, connector, reason):
        self.counters.increment("forward.tcp.guestRefused")
        transport = self.hostSide.transport
        if transport is not None and not self.hostSide.lost:
            # A reset tells the client what a refused connection would.
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()


class _StreamForwardFactory(Factory):
    """
    Accepts host connections of a TCP or unix forward and dials the guest for
    each.
    """

    noisy = False

    def __init__(self, manager, remote):
        self.manager = manager
        self.remoteIP, self.remotePort = remote

    def buildProtocol(self, addr):
        manager = self.manager
        counters = manager.counters
        hostSide = _HostSide(counters, "forward.tcp.bytesToGuest")
        guestSide = _GuestSide(counters, "forward.tcp.bytesFromGuest")
        splice(hostSide, guestSide)
        source = manager.sourceAddress(getattr(addr, "host", None), self.remoteIP)
        bindAddress = (source, 0) if source is not None else None
        try:
            hostSide.connector = manager.connectTCP(
                self.remoteIP, self.remotePort,
                _GuestFactory(guestSide, hostSide, counters),
                timeout=manager.connectTimeout, bindAddress=bindAddress)
        except Exception as e:
            manager.counters.complain("forward.tcp.dialFailed", str(e))
            return None
        counters.increment("forward.tcp.connections")
        return hostSide


class _UDPFlow:
    """
    One client of a UDP forward and its virtual port in the network.
    """

    def __init__(self, client, port, now):
        self.client = client
        self.port = port
        self.lastSeen = now


class _GuestUDPProtocol(DatagramProtocol):
    """
    Bound on a virtual port: the guest's replies to one flow's client.
    """

    noisy = False

    def __init__(self, forward, flow):
        self.forward = forward
        self.flow = flow

    def datagramReceived(self, data, addr):
        self.forward.replyReceived(self.flow, data, addr)


class _UDPForward(DatagramProtocol):
    """
    The host UDP socket of a forward, and its table of flows.
    """

    noisy = False

    def __init__(self, manager, remote):
        self.manager = manager
        self.remote = remote
        self.flows = {}
        self._sweep = None

    def datagramReceived(self, data, addr):
        manager = self.manager
        now = manager.reactor.seconds()
        flow = self.flows.get(addr)
        if flow is None:
            flow = self._open(addr, now)
            if flow is None:
                return
        else:
            # Most recently used last, so the first entry is the one to evict.
            del self.flows[addr]
            self.flows[addr] = flow
        flow.lastSeen = now
        manager.counters.increment("forward.udp.datagramsToGuest")
        try:
            flow.port.write(data, self.remote)
        except ValueError as e:
            manager.counters.complain("forward.udp.tooBig", str(e))

    def _open(self, client, now):
        manager = self.manager
        if len(self.flows) >= manager.maxUDPFlows:
            oldest = next(iter(self.flows))
            manager.counters.increment("forward.udp.flowsEvicted")
            self._close(self.flows[oldest])
        remoteIP = self.remote[0]
        config = manager.network.config
        source = manager.sourceAddress(client[0], remoteIP) or str(
            config.hostIP6 if ":" in remoteIP else config.hostIP)
        flow = _UDPFlow(client, None, now)
        port = manager.bindVirtualUDP(_GuestUDPProtocol(self, flow), source)
        if port is None:
            manager.counters.complain("forward.udp.noVirtualPort", source)
            return None
        flow.port = port
        self.flows[client] = flow
        manager.counters.increment("forward.udp.flows")
        if self._sweep is None:
            self._sweep = manager.reactor.callLater(UDP_SWEEP_INTERVAL, self._sweepIdle)
        return flow

    def replyReceived(self, flow, data, addr):
        if addr != self.remote or self.transport is None:
            # Only the forwarded address answers a flow, as on a connected socket.
            self.manager.counters.increment("drop.forward.udp.strayReply")
            return
        flow.lastSeen = self.manager.reactor.seconds()
        self.manager.counters.increment("forward.udp.datagramsFromGuest")
        try:
            self.transport.write(data, flow.client)
        except OSError as e:
            self.manager.counters.complain("forward.udp.hostSendFailed", str(e))

    def _close(self, flow):
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]
        if flow.port is not None:
            flow.port.stopListening()
            flow.port = None

    def _sweepIdle(self):
        self._sweep = None
        now = self.manager.reactor.seconds()
        for flow in list(self.flows.values()):
            if now - flow.lastSeen >= self.manager.udpIdleTimeout:
                self._close(flow)
        if self.flows:
            self._sweep = self.manager.reactor.callLater(UDP_SWEEP_INTERVAL, self._sweepIdle)

    def closeAll(self):
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for flow in list(self.flows.values()):
            self._close(flow)


class _Forward:
    """
    One exposed forward: what C{/services/forwarder/all} lists, and its
    listening host socket.
    """

    def __init__(self, local, remote, protocol, listener, udp=None, onClose=None):
        self.local = local
        self.remote = remote
        self.protocol = protocol
        self.listener = listener
        self.udp = udp
        self.onClose = onClose

    def toJSON(self):
        return {"local": self.local, "remote": self.remote, "protocol": self.protocol}

    def close(self):
        if self.udp is not None:
            self.udp.closeAll()
        if self.onClose is not None:
            self.onClose()
        return defer.maybeDeferred(self.listener.stopListening)


class ForwarderManager:
    """
    The forwards of one gvtap: C{gvtap.forwarder}.

    @ivar connectTimeout: seconds a dial into the guest may take.
    """

    log = Logger()

    def __init__(self, reactor, network, counters, maxUDPFlows=MAX_UDP_FLOWS,
                 udpIdleTimeout=UDP_IDLE_TIMEOUT, connectTimeout=30):
        self.reactor = reactor
        self.network = network
        self.counters = counters
        self.maxUDPFlows = maxUDPFlows
        self.udpIdleTimeout = udpIdleTimeout
        self.connectTimeout = connectTimeout
        self._forwards = {}
        self._nextVirtualPort = VIRTUAL_EPHEMERAL[0] + int.from_bytes(os.urandom(2), "big") % (
            VIRTUAL_EPHEMERAL[1] - VIRTUAL_EPHEMERAL[0])

    # -- the API -----------------------------------------------------------------

    def expose(self, local, remote, protocol="tcp"):
        """
        Start forwarding C{local} on the host to C{remote} in the network.

        @return: a L{Deferred} that fires with L{None} once the host socket
            listens, or fails with L{ForwardError} (already exposed, or the
            operating system's reason the socket cannot listen) or
            L{ForwardSpecError} (a malformed address, naming the field).
        """
        return defer.maybeDeferred(self._expose, local, remote, protocol or "tcp")

    def unexpose(self, local, protocol="tcp"):
        """
        Stop forwarding C{local}: its host socket is closed (a later connection
        is refused); connections already forwarded carry on.

        @return: a L{Deferred} that fires with L{None} once the socket is
            closed, or fails with L{ForwardError} C{proxy not found}.
        """
        forward = self._forwards.pop((protocol or "tcp", local), None)
        if forward is None:
            return defer.fail(ForwardError("proxy not found"))
        self.counters.increment("forward.unexposed")
        self.log.info("forward {protocol} {local} -> {remote} closed",
                      protocol=forward.protocol, local=forward.local, remote=forward.remote)
        return forward.close().addCallback(lambda _: None)

    def all(self) -> list:
        """
        The forwards, sorted by local address then protocol, as gvproxy lists them.
        """
        return [self._forwards[key].toJSON()
                for key in sorted(self._forwards, key=lambda k: (k[1], k[0]))]

    def stop(self):
        """
        Close every forward's host socket.
        """
        forwards, self._forwards = list(self._forwards.values()), {}
        return defer.gatherResults([f.close() for f in forwards], consumeErrors=True)

    # -- helpers for the forwards ---------------------------------------------------

    def sourceAddress(self, clientHost, remote=None):
        """
        The address a forwarded client's traffic shows the guest: the client's
        own address when it is of the family of the guest address C{remote}
        (IPv4 by default; an IPv4 client on a dual-stack socket counts as
        IPv4), or L{None} (the host address) for loopback, unix clients, the
        other family, and addresses the guest would take for its own link.
        """
        if not clientHost:
            return None
        try:
            ip = ipaddress.ip_address(clientHost.split("%")[0])
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        config = self.network.config
        wanted = 6 if remote is not None and ":" in remote else 4
        if ip.version != wanted or ip.is_loopback or ip.is_unspecified or ip.is_multicast \
                or ip.is_link_local or ip == ipaddress.IPv4Address("255.255.255.255"):
            return None
        if ip in (config.subnet if wanted == 4 else config.subnet6):
            return None
        return str(ip)

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        """
        Open a connection into the guest at C{host} (of either family).
        """
        if ":" in host:
            gateway = getattr(self.network, "ipv6", None)
            if gateway is None or gateway.tcp is None:
                raise ForwardError(f"no IPv6 in the network to reach [{host}]")
            return gateway.tcp.connectTCP(host, port, factory, timeout, bindAddress)
        return self.network.connectTCP(host, port, factory, timeout, bindAddress)

    def bindVirtualUDP(self, protocol, interface):
        """
        Bind C{protocol} to a free ephemeral virtual UDP port on C{interface};
        L{None} if none is free.
        """
        low, high = VIRTUAL_EPHEMERAL
        for _ in range(high - low):
            port = self._nextVirtualPort
            self._nextVirtualPort = low + (port + 1 - low) % (high - low)
            try:
                if ":" in interface:
                    gateway = getattr(self.network, "ipv6", None)
                    if gateway is None:
                        return None
                    return gateway.listenUDP(port, protocol, interface=interface)
                return self.network.listenUDP(port, protocol, interface=interface)
            except CannotListenError:
                continue
        return None

    # -- inside ---------------------------------------------------------------------

    def _checkGuestAddress(self, ip):
        """
        A forward leads to a guest: its remote must be a guest's address in
        the subnet (not the gateway's, the host's, the network's or the
        broadcast address), or every host connection would hang until reset.
        """
        config = self.network.config
        if ":" in ip:
            raw = socket.inet_pton(socket.AF_INET6, ip)
            if not config.inSubnet6(raw) or raw in (
                    config.gatewayIP6Bytes, config.hostIP6Bytes, config.prefix6Bytes):
                raise ForwardSpecError(f"remote: {ip} is not a guest address in {config.subnet6}")
            return
        raw = socket.inet_aton(ip)
        if (not config.inSubnet(raw) or raw in (config.gatewayIPBytes, config.hostIPBytes,
                                                config.broadcastIPBytes)
                or int.from_bytes(raw, "big") == config.networkInt):
            raise ForwardSpecError(f"remote: {ip} is not a guest address in {config.subnet}")

    def _expose(self, local, remote, protocol):
        if protocol not in PROTOCOLS:
            raise ForwardSpecError(f"protocol: {protocol!r} is not one of tcp, udp, unix")
        if not isinstance(local, str) or not local:
            raise ForwardSpecError("local: missing")
        target = parseRemote(remote, protocol)
        self._checkGuestAddress(target[0])
        key = (protocol, local)
        if key in self._forwards:
            raise ForwardError("proxy already running")
        udp = onClose = None
        if protocol == "unix" and remote.startswith("ssh-tunnel://"):
            factory, onClose = self._sshTunnel(remote)
            listener = self._listenUNIX(local, factory)
        elif protocol == "unix":
            listener = self._listenUNIX(local, _StreamForwardFactory(self, target))
        else:
            host, port = parseHostPort(local, "local")
            try:
                if protocol == "tcp":
                    listen, handler = self.reactor.listenTCP, _StreamForwardFactory(self, target)
                else:
                    listen = self.reactor.listenUDP
                    handler = udp = _UDPForward(self, target)
                if host:
                    listener = listen(port, handler, interface=host)
                else:
                    listener = listenEveryAddress(listen, port, handler)
            except CannotListenError as e:
                raise ForwardError(f"listen {protocol} {local}: {_reason(e)}") from None
        self._forwards[key] = _Forward(local, remote, protocol, listener, udp, onClose)
        self.counters.increment("forward.exposed")
        self.log.info("forwarding {protocol} {local} -> {remote}",
                      protocol=protocol, local=local, remote=remote)
        return None

    def _sshTunnel(self, remote):
        """
        The factory of an C{ssh-tunnel://} unix forward: each connection a
        channel of one SSH session (opened with the first connection) through
        the virtual network; and what closes that session.
        """
        from gvtwisted.services.ssh.client import IdentityError, loadIdentity
        from gvtwisted.services.ssh.forward import (
            StreamLocalFactory, parseSSHTunnel, sessionFor)

        tunnel = parseSSHTunnel(remote)
        if not tunnel.user:
            raise ForwardError(f"remote: {remote!r} names no SSH user")
        try:
            key = loadIdentity(tunnel.keyPath, tunnel.passphrase)
        except IdentityError as e:
            raise ForwardError(str(e)) from None
        session = sessionFor(self.reactor, self.network, tunnel.host, tunnel.port,
                             tunnel.user, key, self.counters)
        return StreamLocalFactory(session, tunnel.path, self.counters), session.stop

    def _listenUNIX(self, path, factory):
        """
        Listen on a unix socket at C{path} with mode 0600. A socket file left by
        a process that died is replaced; a live socket or any other file is not.
        """
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ForwardError(f"listen unix {path}: {e.strerror}") from None
        else:
            if not stat.S_ISSOCK(mode) or _unixSocketLive(path):
                raise ForwardError(f"listen unix {path}: {os.strerror(errno.EADDRINUSE)}")
            os.unlink(path)
        try:
            return self.reactor.listenUNIX(path, factory, mode=0o600)
        except CannotListenError as e:
            raise ForwardError(f"listen unix {path}: {_reason(e)}") from None


class _Listeners:
    """
    An IPv6 and an IPv4 socket that listen as one (a host whose IPv6
    sockets do not take IPv4).
    """

    def __init__(self, *ports):
        self.ports = ports

    def getHost(self):
        return self.ports[0].getHost()

    def stopListening(self):
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports],
                                   consumeErrors=True)


def listenEveryAddress(listen, port, handler):
    """
    Listen on C{port} of every address, IPv6 C{[::]} as well as IPv4, as
    Go's C{net.Listen(":PORT")} does: a client that tries C{::1} for
    C{localhost} first is answered. One dual-stack socket where the host
    allows it, an IPv6 and an IPv4 socket where IPv6 sockets are v6-only,
    IPv4 alone on a host without IPv6.

    @param listen: C{reactor.listenTCP} or C{reactor.listenUDP}.
    @raise CannotListenError: as C{listen} does.
    """
    try:
        v6 = listen(port, handler, interface="::")
    except CannotListenError as e:
        if getattr(e.socketError, "errno", None) in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL,
                                                     errno.EPROTONOSUPPORT):
            return listen(port, handler, interface="")
        raise
    handle = v6.getHandle() if hasattr(v6, "getHandle") else getattr(v6, "socket", None)
    try:
        v6only = handle.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except (AttributeError, OSError):
        v6only = 0
    if not v6only:
        return v6
    try:
        v4 = listen(v6.getHost().port, handler, interface="")
    except CannotListenError:
        v6.stopListening()
        raise
    return _Listeners(v6, v4)


def _unixSocketLive(path) -> bool:
    """
    Whether a process listens on the unix socket at C{path}; never blocks (a
    full backlog answers EAGAIN, which means someone is there).
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return True


def _reason(error: CannotListenError) -> str:
    """
    The operating system's words for why a socket cannot listen.
    """
    err = error.socketError
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)
