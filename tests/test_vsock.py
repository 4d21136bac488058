"""
Tests for L{gvtwisted.link.vsock}.

No test here connects an AF_VSOCK socket: on these machines CID 2 is the real
hypervisor.  Binding and listening are local and allowed; the accept path is
driven with fake sockets on a L{MemoryReactor}, and the client is tested only
up to the point where a socket would be made.
"""

import random
import socket
from errno import EAFNOSUPPORT, EAGAIN

import attr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IListeningPort,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gvtwisted.link.vsock import (
    VMADDR_CID_ANY,
    VMADDR_CID_HOST,
    VMADDR_CID_HYPERVISOR,
    VMADDR_CID_LOCAL,
    VMADDR_PORT_ANY,
    VSockAddress,
    VSockClient,
    VSockClientEndpoint,
    VSockClientParser,
    VSockConnector,
    VSockPort,
    VSockServer,
    VSockServerEndpoint,
    VSockServerParser,
    parseCID,
    parsePort,
    vsockURLToEndpointString,
)

U32 = 2**32 - 1


class VSockAddressTests(SynchronousTestCase):
    """
    L{VSockAddress} is a value: equal, hashable and printable by its fields.
    """

    def test_providesIAddress(self):
        """
        A L{VSockAddress} provides L{IAddress} and has the type C{"VSOCK"}.
        """
        a = VSockAddress(3, 1024)
        self.assertTrue(verifyObject(IAddress, a))
        self.assertEqual(a.type, "VSOCK")
        self.assertEqual((a.cid, a.port), (3, 1024))

    def test_equality(self):
        """
        Addresses are equal when both CID and port are, and never equal to a
        tuple of the same numbers.
        """
        self.assertEqual(VSockAddress(3, 1024), VSockAddress(3, 1024))
        self.assertNotEqual(VSockAddress(3, 1024), VSockAddress(4, 1024))
        self.assertNotEqual(VSockAddress(3, 1024), VSockAddress(3, 1025))
        self.assertNotEqual(VSockAddress(3, 1024), (3, 1024))
        self.assertFalse(VSockAddress(3, 1024) != VSockAddress(3, 1024))

    def test_hash(self):
        """
        Equal addresses hash alike, so an address can key a table of links.
        """
        self.assertEqual(hash(VSockAddress(3, 1024)), hash(VSockAddress(3, 1024)))
        table = {VSockAddress(3, 1024): "a", VSockAddress(4, 1024): "b"}
        self.assertEqual(table[VSockAddress(3, 1024)], "a")
        self.assertEqual(len({VSockAddress(3, 1), VSockAddress(3, 1)}), 1)

    def test_repr(self):
        """
        The repr names the class and both fields.
        """
        self.assertEqual(repr(VSockAddress(2, 1024)), "VSockAddress(cid=2, port=1024)")
        self.assertEqual(
            repr(VSockAddress(VMADDR_CID_ANY, 0)),
            "VSockAddress(cid=4294967295, port=0)",
        )

    def test_frozen(self):
        """
        An address cannot be changed after it is made.
        """
        a = VSockAddress(3, 1024)
        self.assertRaises(attr.exceptions.FrozenInstanceError, setattr, a, "port", 1)
        self.assertEqual(a.port, 1024)

    def test_invalidFields(self):
        """
        A field that is not an unsigned 32-bit int is refused.
        """
        self.assertRaises(ValueError, VSockAddress, -1, 1024)
        self.assertRaises(ValueError, VSockAddress, 3, U32 + 1)
        self.assertRaises(TypeError, VSockAddress, "3", 1024)
        self.assertRaises(TypeError, VSockAddress, 3, True)
        self.assertEqual(VSockAddress(U32, U32).port, U32)


class ParseNumberTests(SynchronousTestCase):
    """
    L{parseCID} and L{parsePort} read unsigned 32-bit numbers and a few names.
    """

    def test_cidNumbers(self):
        """
        Decimal strings and ints from 0 to 2**32-1 are CIDs.
        """
        self.assertEqual(parseCID("0"), 0)
        self.assertEqual(parseCID("3"), 3)
        self.assertEqual(parseCID(str(U32)), U32)
        self.assertEqual(parseCID(7), 7)

    def test_cidNames(self):
        """
        The well-known CIDs have names, in any case.
        """
        self.assertEqual(parseCID("any"), VMADDR_CID_ANY)
        self.assertEqual(parseCID("ANY"), 0xFFFFFFFF)
        self.assertEqual(parseCID("hypervisor"), VMADDR_CID_HYPERVISOR)
        self.assertEqual(parseCID("local"), VMADDR_CID_LOCAL)
        self.assertEqual(parseCID("Host"), VMADDR_CID_HOST)
        self.assertEqual(VMADDR_CID_HOST, 2)

    def test_portAny(self):
        """
        C{any} is the kernel's choose-a-port value; 0 stays port 0.
        """
        self.assertEqual(parsePort("any"), VMADDR_PORT_ANY)
        self.assertEqual(VMADDR_PORT_ANY, U32)
        self.assertEqual(parsePort("0"), 0)
        self.assertEqual(parsePort("1024"), 1024)

    def test_rejects(self):
        """
        Signs, spaces, hex, underscores, non-ASCII digits, empty strings,
        out-of-range numbers, bools and floats are refused with a message that
        names the value.
        """
        for bad in ["", " 5", "5 ", "+5", "-1", "0x10", "5_0", "\u0661\u0662",
                    "4294967296", "1.5", "host"]:
            e = self.assertRaises(ValueError, parsePort, bad)
            self.assertIn("port", str(e))
        for bad in [-1, U32 + 1, True, 1.0, None]:
            self.assertRaises(ValueError, parsePort, bad)
            self.assertRaises(ValueError, parseCID, bad)
        e = self.assertRaises(ValueError, parseCID, "vm3")
        self.assertIn("'vm3'", str(e))
        e = self.assertRaises(ValueError, parsePort, "4294967296")
        self.assertIn("outside", str(e))


class ServerParserTests(SynchronousTestCase):
    """
    L{VSockServerParser} reads C{vsock:} server descriptions.
    """

    def parse(self, description):
        """
        Parse C{description} with L{serverFromString}, which finds
        L{VSockServerParser} through the plugin in C{twisted/plugins}.
        """
        return serverFromString(MemoryReactor(), description)

    def test_plugin(self):
        """
        The parser is a plugin for the C{vsock} prefix.
        """
        parser = VSockServerParser()
        self.assertTrue(verifyObject(IPlugin, parser))
        self.assertTrue(verifyObject(IStreamServerEndpointStringParser, parser))
        self.assertEqual(parser.prefix, "vsock")

    def test_positionalPort(self):
        """
        C{vsock:1024} listens on port 1024 of every CID, backlog 50.
        """
        ep = self.parse("vsock:1024")
        self.assertIsInstance(ep, VSockServerEndpoint)
        self.assertEqual((ep.cid, ep.port, ep.backlog), (VMADDR_CID_ANY, 1024, 50))

    def test_positionalPortAndCID(self):
        """
        C{vsock:1024:cid=3} binds CID 3.
        """
        ep = self.parse("vsock:1024:cid=3")
        self.assertEqual((ep.cid, ep.port), (3, 1024))

    def test_keywordPort(self):
        """
        C{vsock:port=1024} is the same as C{vsock:1024}.
        """
        ep = self.parse("vsock:port=1024")
        self.assertEqual((ep.cid, ep.port, ep.backlog), (VMADDR_CID_ANY, 1024, 50))

    def test_backlog(self):
        """
        C{backlog=} sets the listen queue.
        """
        ep = self.parse("vsock:port=1024:backlog=10")
        self.assertEqual((ep.port, ep.backlog), (1024, 10))

    def test_names(self):
        """
        CID names and C{any} as a port are accepted; the prefix is
        case-insensitive as for Twisted's own endpoints.
        """
        ep = self.parse("VSOCK:any:cid=local")
        self.assertEqual((ep.cid, ep.port), (VMADDR_CID_LOCAL, VMADDR_PORT_ANY))

    def test_limits(self):
        """
        Port 0 and port 2**32-1 are in range.
        """
        self.assertEqual(self.parse("vsock:0").port, 0)
        self.assertEqual(self.parse(f"vsock:{U32}").port, U32)

    def test_errors(self):
        """
        Missing, malformed, out-of-range, repeated and unknown arguments raise
        L{ValueError} with a message that says what is wrong.
        """
        cases = {
            "vsock": "needs a port",
            "vsock:cid=3": "needs a port",
            "vsock:": "decimal integer",
            "vsock:abc": "'abc'",
            "vsock:-1": "'-1'",
            "vsock:4294967296": "outside",
            "vsock:1024:3": "only the port",
            "vsock:1024:port=5": "given twice",
            "vsock:1024:interface=x": "unknown parameter 'interface'",
            "vsock:1024:cid=vm": "CID",
            "vsock:1024:backlog=-1": "backlog",
        }
        for description, message in cases.items():
            e = self.assertRaises(ValueError, self.parse, description)
            self.assertIn(message, str(e), description)

    def test_direct(self):
        """
        The parser also takes ints, as a Python caller may pass them.
        """
        ep = VSockServerParser().parseStreamServer(MemoryReactor(), port=5, cid=3)
        self.assertEqual((ep.cid, ep.port), (3, 5))


class ClientParserTests(SynchronousTestCase):
    """
    L{VSockClientParser} reads C{vsock:} client descriptions.
    """

    def parse(self, description):
        """
        Parse C{description} with L{clientFromString}, which finds
        L{VSockClientParser} through the plugin in C{twisted/plugins}.
        """
        return clientFromString(MemoryReactor(), description)

    def test_plugin(self):
        """
        The parser is a plugin for the C{vsock} prefix.
        """
        parser = VSockClientParser()
        self.assertTrue(verifyObject(IPlugin, parser))
        self.assertTrue(
            verifyObject(IStreamClientEndpointStringParserWithReactor, parser)
        )
        self.assertEqual(parser.prefix, "vsock")

    def test_keywords(self):
        """
        C{vsock:cid=2:port=1024} connects to the host's port 1024 with the
        default 30 second timeout.
        """
        ep = self.parse("vsock:cid=2:port=1024")
        self.assertIsInstance(ep, VSockClientEndpoint)
        self.assertEqual((ep.cid, ep.port, ep.timeout), (2, 1024, 30))

    def test_positional(self):
        """
        C{vsock:2:1024} is the same as the keyword form.
        """
        ep = self.parse("vsock:2:1024")
        self.assertEqual((ep.cid, ep.port), (2, 1024))

    def test_timeout(self):
        """
        C{timeout=} takes a number of seconds, fractions too.
        """
        self.assertEqual(self.parse("vsock:cid=3:port=5:timeout=7").timeout, 7.0)
        self.assertEqual(self.parse("vsock:3:5:0.5").timeout, 0.5)

    def test_cidName(self):
        """
        C{cid=host} is CID 2.
        """
        self.assertEqual(self.parse("vsock:cid=host:port=1024").cid, 2)

    def test_errors(self):
        """
        Missing, malformed, out-of-range, repeated and unknown arguments, and
        "any" as a destination, raise L{ValueError} with a clear message.
        """
        cases = {
            "vsock": "needs a cid",
            "vsock:2": "needs a port",
            "vsock:port=1024": "needs a cid",
            "vsock:cid=2": "needs a port",
            "vsock:2:x": "'x'",
            "vsock:2:4294967296": "outside",
            "vsock:-2:1024": "'-2'",
            "vsock:2:1024:30:9": "at most 3 positional",
            "vsock:2:1024:cid=3": "given twice",
            "vsock:2:1024:path=/connect": "unknown parameter 'path'",
            "vsock:2:1024:timeout=0": "positive",
            "vsock:2:1024:timeout=-1": "positive",
            "vsock:2:1024:timeout=nan": "positive",
            "vsock:2:1024:timeout=inf": "positive",
            "vsock:2:1024:timeout=soon": "number of seconds",
            "vsock:any:1024": "needs a CID",
            "vsock:2:any": "needs a port",
        }
        for description, message in cases.items():
            e = self.assertRaises(ValueError, self.parse, description)
            self.assertIn(message, str(e), description)

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, U32 - 1), st.integers(0, U32 - 1))
    def test_roundTrip(self, cid, port):
        """
        Every CID and port a client can name survive a trip through a
        description string.
        """
        ep = VSockClientParser().parseStreamClient(
            MemoryReactor(), cid=str(cid), port=str(port)
        )
        self.assertEqual((ep.cid, ep.port), (cid, port))

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.text(max_size=12), max_size=4),
        st.dictionaries(
            st.sampled_from(["cid", "port", "timeout", "backlog", "x"]),
            st.text(max_size=12),
        ),
    )
    def test_garbageRaisesValueError(self, args, kwargs):
        """
        Whatever strings the parsers get, they either make an endpoint or raise
        L{ValueError}, never another exception.
        """
        for parse in (
            VSockClientParser().parseStreamClient,
            VSockServerParser().parseStreamServer,
        ):
            try:
                ep = parse(MemoryReactor(), *args, **kwargs)
            except ValueError:
                continue
            self.assertTrue(0 <= ep.port <= U32)
            self.assertTrue(0 <= ep.cid <= U32)


class URLTests(SynchronousTestCase):
    """
    L{vsockURLToEndpointString} turns gvisor-tap-vsock URLs into endpoint
    strings.
    """

    def test_gvforwarderDefault(self):
        """
        gvforwarder's default URL becomes a client string for the host's port
        1024 and the path C{/connect}.
        """
        self.assertEqual(
            vsockURLToEndpointString("vsock://2:1024/connect"),
            ("vsock:cid=2:port=1024", "/connect"),
        )

    def test_feedsClientFromString(self):
        """
        The string it makes is one L{clientFromString} reads back.
        """
        description, path = vsockURLToEndpointString("vsock://3:5000/connect")
        ep = clientFromString(MemoryReactor(), description)
        self.assertEqual((ep.cid, ep.port, path), (3, 5000, "/connect"))

    def test_noPath(self):
        """
        A URL without a path gives an empty path.
        """
        self.assertEqual(
            vsockURLToEndpointString("vsock://2:1024"), ("vsock:cid=2:port=1024", "")
        )

    def test_noCID(self):
        """
        gvproxy's listen URL C{vsock://:1024} has no CID and becomes a server
        string that binds every CID.
        """
        description, path = vsockURLToEndpointString("vsock://:1024")
        self.assertEqual((description, path), ("vsock:port=1024", ""))
        ep = serverFromString(MemoryReactor(), description)
        self.assertEqual((ep.cid, ep.port), (VMADDR_CID_ANY, 1024))

    def test_largePort(self):
        """
        Ports above 65535 are valid vsock ports (urllib would refuse them).
        """
        self.assertEqual(
            vsockURLToEndpointString(f"vsock://3:{U32}/x")[0], f"vsock:cid=3:port={U32}"
        )

    def test_schemeCase(self):
        """
        The scheme is case-insensitive, as in URLs generally.
        """
        self.assertEqual(
            vsockURLToEndpointString("VSOCK://2:1024/connect")[0],
            "vsock:cid=2:port=1024",
        )

    def test_errors(self):
        """
        Anything but C{vsock://[CID]:PORT[/path]} raises L{ValueError}.
        """
        for bad in [
            "",
            "garbage",
            "unix:///tmp/x",
            "http://2:1024/connect",
            "vsock://2/connect",
            "vsock://2:/connect",
            "vsock://x:1024/connect",
            "vsock://2:99999999999/connect",
            "vsock://2:-1/connect",
            "vsock://u@2:1024/connect",
            "vsock://2:1024/connect?a=b",
            "vsock://2:1024/connect#f",
            "vsock://[::1]:1024/",
            "vsock://[/",
            b"vsock://2:1024/connect",
        ]:
            self.assertRaises(ValueError, vsockURLToEndpointString, bad)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=40))
    def test_garbageRaisesValueError(self, text):
        """
        Any text either converts or raises L{ValueError}.
        """
        for url in (text, "vsock://" + text):
            try:
                description, path = vsockURLToEndpointString(url)
            except ValueError:
                continue
            self.assertTrue(description.startswith("vsock:"))


class EndpointConstructionTests(SynchronousTestCase):
    """
    The endpoints check their arguments when made; nothing here makes a socket.
    """

    def test_serverEndpoint(self):
        """
        L{VSockServerEndpoint} provides L{IStreamServerEndpoint} with the
        documented defaults.
        """
        ep = VSockServerEndpoint(MemoryReactor(), 1024)
        self.assertTrue(verifyObject(IStreamServerEndpoint, ep))
        self.assertEqual((ep.cid, ep.port, ep.backlog), (VMADDR_CID_ANY, 1024, 50))
        self.assertEqual(repr(ep), "VSockServerEndpoint(cid=4294967295, port=1024)")

    def test_serverEndpointErrors(self):
        """
        Out-of-range ports, CIDs and backlogs raise L{ValueError}.
        """
        self.assertRaises(ValueError, VSockServerEndpoint, MemoryReactor(), -1)
        self.assertRaises(ValueError, VSockServerEndpoint, MemoryReactor(), U32 + 1)
        self.assertRaises(ValueError, VSockServerEndpoint, MemoryReactor(), 1, cid=-1)
        self.assertRaises(
            ValueError, VSockServerEndpoint, MemoryReactor(), 1, backlog=-1
        )

    def test_clientEndpoint(self):
        """
        L{VSockClientEndpoint} provides L{IStreamClientEndpoint} with a 30
        second default timeout.
        """
        ep = VSockClientEndpoint(MemoryReactor(), 2, 1024)
        self.assertTrue(verifyObject(IStreamClientEndpoint, ep))
        self.assertEqual((ep.cid, ep.port, ep.timeout), (2, 1024, 30))
        self.assertEqual(repr(ep), "VSockClientEndpoint(cid=2, port=1024)")

    def test_clientEndpointErrors(self):
        """
        A client must name a real CID and port and a positive timeout.
        """
        r = MemoryReactor()
        self.assertRaises(ValueError, VSockClientEndpoint, r, VMADDR_CID_ANY, 1024)
        self.assertRaises(ValueError, VSockClientEndpoint, r, 2, VMADDR_PORT_ANY)
        self.assertRaises(ValueError, VSockClientEndpoint, r, 2, U32 + 1)
        self.assertRaises(ValueError, VSockClientEndpoint, r, 2, 1024, timeout=0)

    def test_connector(self):
        """
        A L{VSockConnector} is an L{IConnector} whose destination is a
        L{VSockAddress}; making one does not connect.
        """
        r = MemoryReactorClock()
        c = VSockConnector(2, 1024, ClientFactory(), 30, r)
        self.assertTrue(verifyObject(IConnector, c))
        self.assertEqual(c.getDestination(), VSockAddress(2, 1024))
        self.assertEqual(c.state, "disconnected")
        self.assertEqual(r.getDelayedCalls(), [])

    def test_connectWithoutAFVSOCK(self):
        """
        Where the platform has no AF_VSOCK, connecting fails at once with
        C{EAFNOSUPPORT}, before any socket exists.
        """
        self.patch(VSockClient, "addressFamily", None)
        r = MemoryReactorClock()
        d = VSockClientEndpoint(r, 2, 1024).connect(Factory.forProtocol(Protocol))
        f = self.failureResultOf(d, OSError)
        self.assertEqual(f.value.errno, EAFNOSUPPORT)
        self.assertEqual(r.getDelayedCalls(), [])

    def test_listenWithoutAFVSOCK(self):
        """
        Where the platform has no AF_VSOCK, listening fails with
        L{CannotListenError} that carries C{EAFNOSUPPORT}.
        """
        self.patch(VSockPort, "addressFamily", None)
        factory = Factory.forProtocol(Protocol)
        d = VSockServerEndpoint(MemoryReactor(), 1024).listen(factory)
        f = self.failureResultOf(d, CannotListenError)
        self.assertEqual(f.value.socketError.errno, EAFNOSUPPORT)
        self.assertEqual(factory.numPorts, 0)


class FakeConnectedSocket:
    """
    Enough of an accepted AF_VSOCK socket for L{VSockServer}.
    """

    def __init__(self, sockname):
        self.sockname = sockname
        self.closed = False

    def setblocking(self, flag):
        self.blocking = flag

    def fileno(self):
        return -1

    def getsockname(self):
        return self.sockname

    def close(self):
        self.closed = True


class FakeListeningSocket:
    """
    A listening socket whose C{accept} returns queued connections, then fails
    with C{EAGAIN} as a non-blocking socket does.
    """

    def __init__(self, pending):
        self.pending = list(pending)

    def accept(self):
        if not self.pending:
            raise OSError(EAGAIN, "no more")
        return self.pending.pop(0)


class RecordingFactory(Factory):
    """
    A factory that records the addresses it is asked to build for.
    """

    protocol = Protocol

    def __init__(self, refuse=False):
        self.addresses = []
        self.refuse = refuse

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        if self.refuse:
            return None
        return Factory.buildProtocol(self, addr)


class AcceptTests(SynchronousTestCase):
    """
    L{VSockPort} turns accepted sockets into L{VSockServer} transports with
    vsock addresses.  Fake sockets stand in for the kernel.
    """

    def accept(self, factory, pending):
        """
        Run one accept round of a L{VSockPort} over C{pending} connections.
        """
        port = VSockPort(1024, factory, reactor=MemoryReactor())
        port.socket = FakeListeningSocket(pending)
        port.numberAccepts = 100
        port.doRead()
        return port

    def test_accept(self):
        """
        The factory gets the peer's L{VSockAddress}; the transport is a
        L{VSockServer} whose host and peer are L{VSockAddress}es.
        """
        factory = RecordingFactory()
        skt = FakeConnectedSocket((2, 1024))
        self.accept(factory, [(skt, (3, 50000))])
        self.assertEqual(factory.addresses, [VSockAddress(3, 50000)])
        self.assertFalse(skt.closed)

    def test_transportAddresses(self):
        """
        The protocol's transport reports the local and peer vsock addresses,
        and accepts TCP_NODELAY requests without failing.
        """
        built = []

        class F(RecordingFactory):
            def buildProtocol(self, addr):
                p = RecordingFactory.buildProtocol(self, addr)
                built.append(p)
                return p

        self.accept(F(), [(FakeConnectedSocket((2, 1024)), (3, 50000))])
        [proto] = built
        transport = proto.transport
        self.assertIsInstance(transport, VSockServer)
        self.assertEqual(transport.getPeer(), VSockAddress(3, 50000))
        self.assertEqual(transport.getHost(), VSockAddress(2, 1024))
        transport.setTcpNoDelay(True)
        self.assertFalse(transport.getTcpNoDelay())

    def test_refused(self):
        """
        When the factory builds no protocol, the accepted socket is closed.
        """
        skt = FakeConnectedSocket((2, 1024))
        factory = RecordingFactory(refuse=True)
        self.accept(factory, [(skt, (3, 50000))])
        self.assertTrue(skt.closed)
        self.assertEqual(factory.addresses, [VSockAddress(3, 50000)])

    def test_sessionNumbers(self):
        """
        Each accepted connection gets the next session number.
        """
        factory = RecordingFactory()
        port = self.accept(
            factory,
            [
                (FakeConnectedSocket((2, 1024)), (3, 1)),
                (FakeConnectedSocket((2, 1024)), (4, 2)),
            ],
        )
        self.assertEqual(port.sessionno, 2)
        self.assertEqual(factory.addresses, [VSockAddress(3, 1), VSockAddress(4, 2)])


def _requireVSock():
    """
    Skip unless this kernel can make AF_VSOCK sockets.
    """
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise SkipTest("this platform has no socket.AF_VSOCK")
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
    except OSError as e:
        raise SkipTest(f"the kernel cannot make AF_VSOCK sockets: {e}")


def _highPort():
    """
    A random port far from the well-known vsock ports (1024 is gvproxy's).
    """
    return random.randrange(1 << 20, 1 << 31)


class ListenTests(TestCase):
    """
    L{VSockServerEndpoint} binds real AF_VSOCK ports with the real reactor.
    Nothing connects to them.
    """

    def setUp(self):
        _requireVSock()

    def listen(self, endpoint, factory):
        """
        Listen on C{endpoint} and stop listening when the test ends.
        """
        d = endpoint.listen(factory)
        d.addCallback(lambda port: self.addCleanup(self.stopIfListening, port) or port)
        return d

    def stopIfListening(self, port):
        """
        Stop C{port} if the test has not.
        """
        if port.connected:
            return port.stopListening()

    def test_listenAnyPort(self):
        """
        Listening on L{VMADDR_PORT_ANY} binds a port the kernel chooses, shown
        by C{getHost}; stopping closes the socket and stops the factory.
        """
        factory = Factory.forProtocol(Protocol)
        d = self.listen(VSockServerEndpoint(reactor, VMADDR_PORT_ANY), factory)

        def listening(port):
            self.assertTrue(verifyObject(IListeningPort, port))
            host = port.getHost()
            self.assertIsInstance(host, VSockAddress)
            self.assertEqual(host.cid, VMADDR_CID_ANY)
            self.assertNotEqual(host.port, VMADDR_PORT_ANY)
            self.assertEqual((host.cid, host.port), port.socket.getsockname())
            self.assertEqual(factory.numPorts, 1)
            return port.stopListening().addCallback(lambda _: port)

        def stopped(port):
            self.assertFalse(port.connected)
            self.assertFalse(hasattr(port, "socket"))
            self.assertEqual(factory.numPorts, 0)

        return d.addCallback(listening).addCallback(stopped)

    def test_listenGivenPort(self):
        """
        Listening on a given port binds exactly that port, and a second
        listener on it fails with L{CannotListenError}.
        """
        number = _highPort()
        d = self.listen(
            VSockServerEndpoint(reactor, number), Factory.forProtocol(Protocol)
        )

        def listening(port):
            self.assertEqual(port.getHost(), VSockAddress(VMADDR_CID_ANY, number))
            self.assertIn(f"port {number}", repr(port))
            second = VSockServerEndpoint(reactor, number).listen(
                Factory.forProtocol(Protocol)
            )
            return self.assertFailure(second, CannotListenError)

        return d.addCallback(listening)

    def test_serverFromString(self):
        """
        A C{vsock:} string from L{serverFromString} listens for real.
        """
        number = _highPort()
        ep = serverFromString(reactor, f"vsock:{number}:cid=any:backlog=5")
        d = self.listen(ep, Factory.forProtocol(Protocol))
        d.addCallback(
            lambda port: self.assertEqual(
                port.getHost(), VSockAddress(VMADDR_CID_ANY, number)
            )
        )
        return d

    def test_fromListeningDescriptor(self):
        """
        A listening AF_VSOCK socket made outside Twisted can be served, and
        keeps its address.
        """
        skt = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        self.addCleanup(skt.close)
        skt.bind((VMADDR_CID_ANY, VMADDR_PORT_ANY))
        skt.listen(5)
        skt.setblocking(False)
        port = VSockPort._fromListeningDescriptor(
            reactor, skt.fileno(), Factory.forProtocol(Protocol)
        )
        port.startListening()
        self.addCleanup(self.stopIfListening, port)
        self.assertEqual(port.getHost(), VSockAddress(*skt.getsockname()))
        self.assertEqual(port.port, skt.getsockname()[1])
