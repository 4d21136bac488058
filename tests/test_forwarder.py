"""
Tests for L{gvtwisted.services.forwarder}: host ports forwarded into the
guest.

Most tests drive L{ForwarderManager} with a memory reactor (host sockets that
record what they were asked) and a fake network (virtual connections and ports
that record what they were asked), so every step of a forward can be checked
without a guest. The unix-socket and bind-failure tests use real sockets, on
paths in the test's own directory and on 127.0.0.1 only.
"""

import errno
import os
import socket
import stat

from zope.interface import implementer

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.services.forwarder import (
    MAX_UDP_FLOWS, ForwardError, ForwarderManager, ForwardSpecError,
    parseForwardOption, parseHostPort, parseRemote,
)
from gvtwisted.stack.counters import Counters


@implementer(IListeningPort)
class RecordingPort:
    """
    A listening port that remembers whether it was closed.
    """

    def __init__(self, kind, port, factory, interface):
        self.kind = kind
        self.port = port
        self.factory = factory
        self.interface = interface
        self.listening = True

    def stopListening(self):
        self.listening = False

    def getHost(self):
        return IPv4Address(self.kind, self.interface or "0.0.0.0", self.port)


class ForwardReactor(MemoryReactorClock):
    """
    A memory reactor whose listening calls return L{RecordingPort}s, or raise
    a L{CannotListenError} with the reason in C{refuse} (for the kinds of
    socket in C{refuseKinds}).
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.ports = []
        self.refuse = None
        self.refuseKinds = ("TCP", "UDP", "UNIX")

    def _listen(self, kind, port, factory, interface):
        if self.refuse is not None and kind in self.refuseKinds:
            raise CannotListenError(interface, port, self.refuse)
        p = RecordingPort(kind, port, factory, interface)
        self.ports.append(p)
        if kind == "UDP":
            factory.makeConnection(FakeHostUDP())
        return p

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._listen("TCP", port, factory, interface)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return self._listen("UDP", port, protocol, interface)

    def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
        p = self._listen("UNIX", address, factory, "")
        p.mode = mode
        return p


class FakeHostUDP:
    """
    The host UDP socket of a forward: records what it sends to clients.
    """

    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


class FakeConnector:
    def __init__(self):
        self.stopped = False

    def stopConnecting(self):
        self.stopped = True


class FakeVirtualUDPPort:
    def __init__(self, network, port, protocol, interface):
        self.network = network
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.sent = []
        self.listening = True
        protocol.makeConnection(self)

    def write(self, data, addr):
        self.sent.append((data, addr))

    def stopListening(self):
        self.listening = False
        del self.network.udpPorts[(self.interface, self.port)]


class FakeNetwork:
    """
    The part of L{VirtualNetwork} a forward uses: C{connectTCP} and
    C{listenUDP}, recorded.
    """

    def __init__(self):
        self.config = NetworkConfig()
        self.connects = []
        self.udpPorts = {}

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = FakeConnector()
        self.connects.append((host, port, factory, bindAddress, connector))
        return connector

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if (interface, port) in self.udpPorts:
            raise CannotListenError(interface, port, "address already in use")
        p = FakeVirtualUDPPort(self, port, protocol, interface)
        self.udpPorts[(interface, port)] = p
        return p


class ParseTests(SynchronousTestCase):
    """
    Addresses of forwards as gvproxy's API and C{--forward} give them.
    """

    def test_hostPort(self):
        """
        HOST:PORT, :PORT and [V6]:PORT split into host and port.
        """
        self.assertEqual(parseHostPort("127.0.0.1:8080", "local"), ("127.0.0.1", 8080))
        self.assertEqual(parseHostPort(":8080", "local"), ("", 8080))
        self.assertEqual(parseHostPort("[::1]:22", "local"), ("::1", 22))

    def test_hostPortErrors(self):
        """
        A missing or out-of-range port, or an unbracketed IPv6 address, is an
        error that names the field.
        """
        for bad in ("127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                    "127.0.0.1:http", "::1:22", "1.2.3.4:+80"):
            e = self.assertRaises(ForwardSpecError, parseHostPort, bad, "local")
            self.assertTrue(str(e).startswith("local: "), str(e))

    def test_remote(self):
        """
        A remote is IPv4:PORT; a unix forward also takes gvproxy's tcp:// URL.
        """
        self.assertEqual(parseRemote("192.168.127.2:80", "tcp"), ("192.168.127.2", 80))
        self.assertEqual(parseRemote("tcp://192.168.127.2:80", "unix"), ("192.168.127.2", 80))

    def test_remoteErrors(self):
        """
        A host name, a URL on a tcp forward, or no port is a spec error naming
        C{remote}; an unknown scheme, or an ssh-tunnel URL without a key or a
        path, is a forward error with gvproxy's message; a good ssh-tunnel URL
        gives its sshd's address (port 22 by default).
        """
        for bad, protocol in (("guest:80", "tcp"), ("tcp://192.168.127.2:80", "tcp"),
                              ("192.168.127.2", "udp")):
            e = self.assertRaises(ForwardSpecError, parseRemote, bad, protocol)
            self.assertTrue(str(e).startswith("remote: "), str(e))
        e = self.assertRaises(ForwardError, parseRemote, "ftp://192.168.127.2:22/x", "unix")
        self.assertIn("not implemented: ftp", str(e))
        e = self.assertRaises(ForwardError, parseRemote, "ssh-tunnel://core@192.168.127.2:22/x", "unix")
        self.assertEqual("key not provided for unix-ssh connection", str(e))
        e = self.assertRaises(ForwardError, parseRemote, "ssh-tunnel://core@192.168.127.2/?key=/k", "unix")
        self.assertEqual("remote uri must contain a path to a socket file", str(e))
        self.assertEqual(parseRemote("ssh-tunnel://core@192.168.127.2/run/x.sock?key=/k", "unix"),
                         ("192.168.127.2", 22))
        self.assertEqual(parseRemote("ssh-tunnel://core@192.168.127.3:2022/x?key=/k", "unix"),
                         ("192.168.127.3", 2022))

    def test_forwardOption(self):
        """
        C{--forward [udp:|unix:]LOCAL=REMOTE} gives (local, remote, protocol).
        """
        self.assertEqual(parseForwardOption("127.0.0.1:8080=192.168.127.2:80"),
                         ("127.0.0.1:8080", "192.168.127.2:80", "tcp"))
        self.assertEqual(parseForwardOption("udp:127.0.0.1:5353=192.168.127.2:53"),
                         ("127.0.0.1:5353", "192.168.127.2:53", "udp"))
        self.assertEqual(parseForwardOption("unix:/run/a=b.sock=192.168.127.2:22"),
                         ("/run/a=b.sock", "192.168.127.2:22", "unix"))

    def test_forwardOptionErrors(self):
        """
        A value without C{=}, with a bad local or a bad remote is refused.
        """
        for bad in ("127.0.0.1:8080", "127.0.0.1=192.168.127.2:80",
                    "127.0.0.1:8080=guest:80", "=192.168.127.2:80"):
            self.assertRaises(ForwardSpecError, parseForwardOption, bad)


class ManagerTests(SynchronousTestCase):
    """
    Expose, unexpose and list, as the API's forwarder routes use them.
    """

    def setUp(self):
        self.reactor = ForwardReactor()
        self.network = FakeNetwork()
        self.counters = Counters()
        self.manager = ForwarderManager(self.reactor, self.network, self.counters)

    def test_exposeTCP(self):
        """
        A tcp expose listens on the local host and port and is listed.
        """
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80", "tcp"))
        [port] = self.reactor.ports
        self.assertEqual((port.kind, port.port, port.interface), ("TCP", 8080, "127.0.0.1"))
        self.assertEqual(self.manager.all(), [
            {"local": "127.0.0.1:8080", "remote": "192.168.127.2:80", "protocol": "tcp"}])

    def test_exposeAllInterfaces(self):
        """
        A local of C{":PORT"} listens on every interface, IPv6 C{[::]} too
        (dual-stack), as Go's C{net.Listen}; UDP as well.
        """
        self.successResultOf(self.manager.expose(":8080", "192.168.127.2:80"))
        self.assertEqual(self.reactor.ports[0].interface, "::")
        self.successResultOf(self.manager.expose(":8080", "192.168.127.2:80", "udp"))
        self.assertEqual((self.reactor.ports[1].kind, self.reactor.ports[1].interface), ("UDP", "::"))

    def test_everyAddressFallbacks(self):
        """
        Without IPv6 the IPv4 wildcard alone listens; where IPv6 sockets are
        v6-only, an IPv4 socket listens beside the IPv6 one and both stop
        together.
        """
        import errno
        import socket as socketModule

        from twisted.internet.error import CannotListenError

        from gvtwisted.services.forwarder import listenEveryAddress

        calls = []

        class Handle:
            def __init__(self, v6only):
                self.v6only = v6only

            def getsockopt(self, level, option):
                assert (level, option) == (socketModule.IPPROTO_IPV6, socketModule.IPV6_V6ONLY)
                return self.v6only

        class Port:
            stopped = False

            def __init__(self, port, interface, v6only):
                self.port, self.interface, self.handle = port, interface, Handle(v6only)

            def getHandle(self):
                return self.handle

            def getHost(self):
                return self

            def stopListening(self):
                self.stopped = True

        def noIPv6(port, handler, interface):
            calls.append(interface)
            if interface == "::":
                raise CannotListenError(interface, port, OSError(errno.EAFNOSUPPORT, "no"))
            return Port(port, interface, 0)

        self.assertEqual(listenEveryAddress(noIPv6, 8080, None).interface, "")
        self.assertEqual(calls, ["::", ""])

        def v6only(port, handler, interface):
            return Port(port, interface, 1)

        both = listenEveryAddress(v6only, 8080, None)
        self.assertEqual([p.interface for p in both.ports], ["::", ""])
        self.successResultOf(both.stopListening())
        self.assertTrue(all(p.stopped for p in both.ports))

        def taken(port, handler, interface):
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))

        self.assertRaises(CannotListenError, listenEveryAddress, taken, 8080, None)

    def test_mappedClientAddress(self):
        """
        An IPv4 client of a dual-stack socket (C{::ffff:a.b.c.d}) shows the
        guest its IPv4 address; a real IPv6 client the host address.
        """
        self.assertEqual(self.manager.sourceAddress("::ffff:203.0.113.9"), "203.0.113.9")
        self.assertIsNone(self.manager.sourceAddress("::ffff:127.0.0.1"))
        self.assertIsNone(self.manager.sourceAddress("2001:db8::1"))

    def test_duplicate(self):
        """
        The same local and protocol again is C{proxy already running}; the
        same local with another protocol is another forward.
        """
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80", "tcp"))
        f = self.failureResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:81", "tcp"),
                                 ForwardError)
        self.assertEqual(f.getErrorMessage(), "proxy already running")
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80", "udp"))
        self.assertEqual(len(self.reactor.ports), 2)

    def test_bindFailure(self):
        """
        A local that cannot listen fails with the operating system's reason,
        and nothing is listed.
        """
        self.reactor.refuse = OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        f = self.failureResultOf(self.manager.expose("127.0.0.1:2222", "192.168.127.2:22"),
                                 ForwardError)
        self.assertEqual(f.getErrorMessage(), "listen tcp 127.0.0.1:2222: Address already in use")
        self.assertEqual(self.manager.all(), [])

    def test_badSpec(self):
        """
        A bad protocol, local or remote fails with a spec error naming it.
        """
        for args, field in ((("127.0.0.1:1", "192.168.127.2:1", "sctp"), "protocol"),
                            (("127.0.0.1", "192.168.127.2:1", "tcp"), "local"),
                            (("", "192.168.127.2:1", "tcp"), "local"),
                            (("127.0.0.1:1", "x:1", "tcp"), "remote")):
            f = self.failureResultOf(self.manager.expose(*args), ForwardSpecError)
            self.assertTrue(f.getErrorMessage().startswith(field + ": "), f.getErrorMessage())
        self.assertEqual(self.reactor.ports, [])

    def test_unexpose(self):
        """
        Unexpose closes the host socket and forgets the forward; a second
        unexpose is C{proxy not found}.
        """
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80"))
        self.successResultOf(self.manager.unexpose("127.0.0.1:8080", "tcp"))
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertEqual(self.manager.all(), [])
        f = self.failureResultOf(self.manager.unexpose("127.0.0.1:8080", "tcp"), ForwardError)
        self.assertEqual(f.getErrorMessage(), "proxy not found")

    def test_unexposeOtherProtocol(self):
        """
        Unexpose matches the protocol too: a udp unexpose leaves the tcp
        forward of the same local alone.
        """
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80"))
        self.failureResultOf(self.manager.unexpose("127.0.0.1:8080", "udp"), ForwardError)
        self.assertTrue(self.reactor.ports[0].listening)

    def test_allSorted(self):
        """
        The list is sorted by local, then protocol.
        """
        for local, protocol in (("127.0.0.1:9", "udp"), ("127.0.0.1:10", "tcp"),
                                ("127.0.0.1:9", "tcp")):
            self.successResultOf(self.manager.expose(local, "192.168.127.2:1", protocol))
        self.assertEqual([(f["local"], f["protocol"]) for f in self.manager.all()],
                         [("127.0.0.1:10", "tcp"), ("127.0.0.1:9", "tcp"), ("127.0.0.1:9", "udp")])

    def test_stop(self):
        """
        Stop closes every forward's socket.
        """
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80"))
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80", "udp"))
        self.successResultOf(self.manager.stop())
        self.assertEqual([p.listening for p in self.reactor.ports], [False, False])
        self.assertEqual(self.manager.all(), [])


class TCPForwardTests(SynchronousTestCase):
    """
    Each host connection of a TCP forward becomes a virtual connection into
    the guest, spliced to it.
    """

    def setUp(self):
        self.reactor = ForwardReactor()
        self.network = FakeNetwork()
        self.counters = Counters()
        self.manager = ForwarderManager(self.reactor, self.network, self.counters)
        self.successResultOf(self.manager.expose("127.0.0.1:8080", "192.168.127.2:80"))
        self.factory = self.reactor.ports[0].factory

    def accept(self, host="127.0.0.1"):
        """
        A host client from C{host} connects: return its protocol and transport.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def guestConnects(self):
        """
        The guest accepts the latest virtual connection: return its transport.
        """
        host, port, factory, bindAddress, connector = self.network.connects[-1]
        guestSide = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        guestSide.makeConnection(transport)
        return transport

    def test_dialsRemote(self):
        """
        A connection dials the remote address inside the network.
        """
        self.accept()
        host, port, _, _, _ = self.network.connects[0]
        self.assertEqual((host, port), ("192.168.127.2", 80))

    def test_loopbackClientFromHostAddress(self):
        """
        A client on the host's loopback shows the guest the host address
        (no bind address: the network's default).
        """
        self.accept("127.0.0.1")
        self.assertIsNone(self.network.connects[0][3])

    def test_realClientAddress(self):
        """
        A client from another machine shows the guest its own address.
        """
        self.accept("10.203.0.2")
        self.assertEqual(self.network.connects[0][3], ("10.203.0.2", 0))

    def test_subnetClientFromHostAddress(self):
        """
        A client whose address lies inside the virtual subnet would confuse
        the guest's routing: it shows the host address instead.
        """
        self.accept("192.168.127.77")
        self.assertIsNone(self.network.connects[0][3])

    def test_bytesBothWays(self):
        """
        Once the guest accepts, bytes flow both ways; bytes the client sent
        before are delivered first (the client is read on meanwhile, up to
        the splice's C{pendingLimit}).
        """
        hostSide, hostTransport = self.accept()
        self.assertEqual(hostTransport.producerState, "producing")
        hostSide.dataReceived(b"early ")
        guestTransport = self.guestConnects()
        self.assertEqual(hostTransport.producerState, "producing")
        hostSide.dataReceived(b"hello")
        self.assertEqual(guestTransport.value(), b"early hello")
        self.network.connects[0][2].guestSide.dataReceived(b"world")
        self.assertEqual(hostTransport.value(), b"world")

    def test_guestRefuses(self):
        """
        When the guest refuses, the host connection is closed.
        """
        hostSide, hostTransport = self.accept()
        _, _, factory, _, connector = self.network.connects[0]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertTrue(hostTransport.disconnecting)
        self.assertEqual(self.counters.get("forward.tcp.guestRefused"), 1)

    def test_clientLeavesFirst(self):
        """
        When the host client leaves before the guest answers, the dial stops;
        a late answer is aborted.
        """
        hostSide, hostTransport = self.accept()
        hostSide.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(self.network.connects[0][4].stopped)
        guestTransport = self.guestConnects()
        self.assertTrue(guestTransport.disconnecting)

    def test_unixClient(self):
        """
        A unix-socket client has no IP: the guest sees the host address.
        """
        self.factory.buildProtocol(UNIXAddress(None)).makeConnection(StringTransport())
        self.assertIsNone(self.network.connects[0][3])


class UDPForwardTests(SynchronousTestCase):
    """
    A UDP forward keeps one flow per client, each on its own virtual port.
    """

    def setUp(self):
        self.reactor = ForwardReactor()
        self.network = FakeNetwork()
        self.counters = Counters()
        self.manager = ForwarderManager(self.reactor, self.network, self.counters,
                                        maxUDPFlows=2)
        self.successResultOf(self.manager.expose("127.0.0.1:5353", "192.168.127.2:53", "udp"))
        self.forward = self.reactor.ports[0].factory
        self.host = self.forward.transport

    def test_flowPerClient(self):
        """
        Two clients get two virtual ports; each datagram goes to the remote.
        """
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.forward.datagramReceived(b"b", ("127.0.0.1", 1001))
        self.forward.datagramReceived(b"c", ("127.0.0.1", 1000))
        ports = list(self.network.udpPorts.values())
        self.assertEqual(len(ports), 2)
        self.assertEqual(sorted(p.sent for p in ports), [
            [(b"a", ("192.168.127.2", 53)), (b"c", ("192.168.127.2", 53))],
            [(b"b", ("192.168.127.2", 53))]])

    def test_sourceAddress(self):
        """
        A loopback client's flow is bound on the host address; a real
        client's on its own address.
        """
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.forward.datagramReceived(b"b", ("10.203.0.2", 1000))
        self.assertEqual(sorted(i for i, _ in self.network.udpPorts),
                         ["10.203.0.2", "192.168.127.254"])

    def test_reply(self):
        """
        A reply from the remote goes back to the flow's client; a datagram
        from any other address is dropped.
        """
        self.forward.datagramReceived(b"q", ("127.0.0.1", 1000))
        [port] = self.network.udpPorts.values()
        port.protocol.datagramReceived(b"answer", ("192.168.127.2", 53))
        port.protocol.datagramReceived(b"stray", ("192.168.127.3", 53))
        self.assertEqual(self.host.sent, [(b"answer", ("127.0.0.1", 1000))])
        self.assertEqual(self.counters.get("drop.forward.udp.strayReply"), 1)

    def test_idleTimeout(self):
        """
        A flow idle for 90 s is closed and its virtual port freed; a flow that
        keeps talking stays.
        """
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.forward.datagramReceived(b"b", ("127.0.0.1", 1001))
        for _ in range(9):
            self.reactor.advance(10)
            self.forward.datagramReceived(b"b", ("127.0.0.1", 1001))
        self.reactor.advance(10)
        self.assertEqual(list(self.forward.flows), [("127.0.0.1", 1001)])
        self.assertEqual(len(self.network.udpPorts), 1)

    def test_cap(self):
        """
        Past the cap, the least recently used flow is closed for the new one.
        """
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.forward.datagramReceived(b"b", ("127.0.0.1", 1001))
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        self.forward.datagramReceived(b"c", ("127.0.0.1", 1002))
        self.assertEqual(sorted(self.forward.flows), [("127.0.0.1", 1000), ("127.0.0.1", 1002)])
        self.assertEqual(len(self.network.udpPorts), 2)
        self.assertEqual(self.counters.get("forward.udp.flowsEvicted"), 1)

    def test_defaultCap(self):
        """
        The default cap is stated, and bounded.
        """
        self.assertEqual(MAX_UDP_FLOWS, 1024)

    def test_unexposeClosesFlows(self):
        """
        Unexpose closes the flows' virtual ports with the host socket.
        """
        self.forward.datagramReceived(b"a", ("127.0.0.1", 1000))
        [port] = self.network.udpPorts.values()
        self.successResultOf(self.manager.unexpose("127.0.0.1:5353", "udp"))
        self.assertFalse(port.listening)
        self.assertEqual(self.network.udpPorts, {})


class RealSocketTests(TestCase):
    """
    Forwards on real host sockets: unix socket files and bind failures.
    """

    def setUp(self):
        self.manager = ForwarderManager(reactor, FakeNetwork(), Counters())
        self.addCleanup(self.manager.stop)
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_unixMode(self):
        """
        A unix forward's socket has mode 0600 even with umask 0, and
        unexpose removes it.
        """
        path = os.path.join(self.dir, "fwd.sock")
        old = os.umask(0)
        try:
            self.successResultOf(self.manager.expose(path, "192.168.127.2:22", "unix"))
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(self.manager.all()[0]["protocol"], "unix")
        d = self.manager.unexpose(path, "unix")
        d.addCallback(lambda _: self.assertFalse(os.path.exists(path)))
        return d

    def test_unixStaleSocket(self):
        """
        A socket file nobody listens on (left by a dead process) is replaced.
        """
        path = os.path.join(self.dir, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
        self.successResultOf(self.manager.expose(path, "192.168.127.2:22", "unix"))

    def test_unixLiveSocket(self):
        """
        A socket someone listens on, or a regular file, is not touched.
        """
        path = os.path.join(self.dir, "live.sock")
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.bind(path)
        s.listen(1)
        f = self.failureResultOf(self.manager.expose(path, "192.168.127.2:22", "unix"), ForwardError)
        self.assertIn("Address already in use", f.getErrorMessage())
        plain = os.path.join(self.dir, "file")
        open(plain, "w").close()
        self.failureResultOf(self.manager.expose(plain, "192.168.127.2:22", "unix"), ForwardError)
        self.assertTrue(os.path.isfile(plain))

    def test_portTaken(self):
        """
        A TCP port already taken fails with the operating system's words.
        """
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        local = f"127.0.0.1:{s.getsockname()[1]}"
        f = self.failureResultOf(self.manager.expose(local, "192.168.127.2:80"), ForwardError)
        self.assertEqual(f.getErrorMessage(), f"listen tcp {local}: Address already in use")

    def test_unexposeRefusesLater(self):
        """
        After unexpose a connection to the local port is refused.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        local = f"127.0.0.1:{port}"
        self.successResultOf(self.manager.expose(local, "192.168.127.2:80"))
        d = self.manager.unexpose(local)

        def check(_):
            c = socket.socket()
            self.addCleanup(c.close)
            self.assertEqual(c.connect_ex(("127.0.0.1", port)), errno.ECONNREFUSED)

        return d.addCallback(check)

    def test_anyAddressDualStack(self):
        """
        A C{":PORT"} forward takes connections on C{::1} (clients that try
        IPv6 for localhost first) and, where the host has it, on 127.0.0.1;
        each dials the guest.
        """
        if not socket.has_ipv6:
            raise SkipTest("no IPv6 on this host")
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind(("::1", 0))
        except OSError:
            probe.close()
            raise SkipTest("no ::1 on this host")
        port = probe.getsockname()[1]
        probe.close()
        self.successResultOf(self.manager.expose(f":{port}", "192.168.127.2:80"))
        addresses = [(socket.AF_INET6, "::1")]
        v4 = socket.socket()
        try:
            v4.bind(("127.0.0.1", 0))
            addresses.append((socket.AF_INET, "127.0.0.1"))
        except OSError:
            pass
        finally:
            v4.close()
        clients = []
        for family, host in addresses:
            c = socket.socket(family)
            c.setblocking(False)
            self.addCleanup(c.close)
            c.connect_ex((host, port))
            clients.append(c)
        network = self.manager.network

        def dialled():
            if len(network.connects) < len(addresses):
                return task.deferLater(reactor, 0.01, dialled)
            self.assertEqual([c[:2] for c in network.connects],
                             [("192.168.127.2", 80)] * len(addresses))

        return task.deferLater(reactor, 0, dialled)

class IPv6ForwardTests(SynchronousTestCase):
    """
    Forwards with IPv6: remotes on the guest's IPv6 addresses, and the
    source address a client of either family shows the guest.
    """

    def setUp(self):
        self.network = FakeNetwork()
        self.network6 = FakeNetwork()
        self.network.ipv6 = self.network6
        self.network6.tcp = self.network6
        self.manager = ForwarderManager(ForwardReactor(), self.network, Counters())

    def test_remote(self):
        """
        C{[v6]:PORT} is a remote, in its compressed form.
        """
        self.assertEqual(parseRemote("[fd00:192:168:127:0::2]:80", "tcp"),
                         ("fd00:192:168:127::2", 80))
        self.assertEqual(parseRemote("tcp://[fd00:192:168:127::2]:22", "unix"),
                         ("fd00:192:168:127::2", 22))
        self.assertEqual(parseRemote("[fd00:192:168:127::2]:53", "udp"),
                         ("fd00:192:168:127::2", 53))
        self.assertRaises(ForwardSpecError, parseRemote, "fd00::2:80", "tcp")

    def test_sourceAddress(self):
        """
        The client's own address when it is of the remote's family and not
        loopback or on the guests' link; an IPv4 client on a dual-stack
        socket (::ffff:a.b.c.d) counts as IPv4.
        """
        source = self.manager.sourceAddress
        self.assertEqual(source("::ffff:10.203.0.2"), "10.203.0.2")
        self.assertIsNone(source("::ffff:127.0.0.1"))
        self.assertIsNone(source("2001:db8::5"))
        self.assertEqual(source("2001:db8::5", "fd00:192:168:127::2"), "2001:db8::5")
        self.assertIsNone(source("::1", "fd00:192:168:127::2"))
        self.assertIsNone(source("fe80::1%eth0", "fd00:192:168:127::2"))
        self.assertIsNone(source("fd00:192:168:127::9", "fd00:192:168:127::2"))
        self.assertIsNone(source("10.203.0.2", "fd00:192:168:127::2"))

    def test_connectsOverIPv6(self):
        """
        A connection to an IPv6 forward is dialled on the IPv6 side, from
        the client's address when it may be shown.
        """
        from twisted.internet.address import IPv6Address

        self.successResultOf(self.manager.expose("[::1]:8080", "[fd00:192:168:127::2]:80"))
        [port] = self.manager.reactor.ports
        self.assertEqual(port.interface, "::1")
        port.factory.buildProtocol(IPv6Address("TCP", "2001:db8::5", 5555))
        port.factory.buildProtocol(IPv6Address("TCP", "::1", 5556))
        self.assertEqual(self.network.connects, [])
        self.assertEqual([(h, p, b) for h, p, _, b, _ in self.network6.connects],
                         [("fd00:192:168:127::2", 80, ("2001:db8::5", 0)),
                          ("fd00:192:168:127::2", 80, None)])

    def test_udpOverIPv6(self):
        """
        A UDP forward to an IPv6 remote binds each flow's virtual port on the
        IPv6 side: on the host address ::fe for a loopback client, on a real
        client's own IPv6 address otherwise.
        """
        self.successResultOf(self.manager.expose("[::1]:5353", "[fd00:192:168:127::2]:53", "udp"))
        [port] = self.manager.reactor.ports
        self.assertEqual((port.kind, port.interface), ("UDP", "::1"))
        forward = port.factory
        forward.datagramReceived(b"q", ("::1", 1000, 0, 0))
        forward.datagramReceived(b"r", ("2001:db8::5", 1000, 0, 0))
        self.assertEqual(self.network.udpPorts, {})
        self.assertEqual(sorted(i for i, _ in self.network6.udpPorts),
                         ["2001:db8::5", "fd00:192:168:127::fe"])
        sent = sorted(p.sent for p in self.network6.udpPorts.values())
        self.assertEqual(sent, [[(b"q", ("fd00:192:168:127::2", 53))],
                                [(b"r", ("fd00:192:168:127::2", 53))]])
