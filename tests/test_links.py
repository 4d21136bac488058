"""
Tests for the guest links: L{gvtwisted.link.listeners} (C{POST /connect}
then LE16 frames, HTTP for anything else, QEMU BE32), L{gvtwisted.link.port}
(a link as a switch port with bounded output), L{gvtwisted.link.endpoints}
(gvproxy URLs) and L{gvtwisted.link.pcap}.

Links run over L{StringTransport}s on a network built on a L{Clock}; a guest
sends an ARP request for the gateway and the test checks the exact framed
reply written back.
"""

import os
import shutil
import subprocess

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from gvtwisted.config import NetworkConfig
from gvtwisted.link import listeners
from gvtwisted.link.endpoints import serverEndpointString, unixPath
from gvtwisted.link.framing import BE32, LE16, MAX_FRAME, encodeFrame
from gvtwisted.link.listeners import LinkFactory
from gvtwisted.link.pcap import PcapWriter
from gvtwisted.link.port import PAUSED_BUDGET, SwitchPort
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from tests.checksumpolicy import verifyingVariants

# The same tests also run in twins with checksum verification on
# (tests.checksumpolicy): one test method called from two classes is meant here.
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.differing_executors])

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GUEST2_MAC = bytes.fromhex("5a94efe40cef")
BCAST = b"\xff" * 6
GW_IP = bytes([192, 168, 127, 1])
GUEST_IP = bytes([192, 168, 127, 2])
GUEST2_IP = bytes([192, 168, 127, 3])

CONNECT = b"POST /connect HTTP/1.1\r\nHost: gvtap\r\nContent-Length: 0\r\n\r\n"


def arpRequest(mac=GUEST_MAC, ip=GUEST_IP, target=GW_IP):
    return (BCAST + mac + b"\x08\x06" + bytes.fromhex("0001080006040001")
            + mac + ip + b"\x00" * 6 + target)


def arpReply(mac=GUEST_MAC, ip=GUEST_IP, target=GW_IP):
    """
    The gateway's reply to L{arpRequest}, byte for byte.
    """
    return (mac + GW_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002")
            + GW_MAC + target + mac + ip)


class FakePort:
    """
    Another switch port that records what is flooded to it.
    """

    name = "fake"

    def __init__(self):
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


class LinkTestCase(SynchronousTestCase):
    """
    A network, a fake port on its switch, and helpers to open links.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.network = VirtualNetwork(self.clock, NetworkConfig(), self.switch, self.counters)
        self.fake = FakePort()
        self.switch.attach(self.fake)

    def open(self, framing="connect", port=40000):
        factory = LinkFactory(self.network, self.counters, framing)
        factory.site.reactor = self.clock
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def connected(self, port=40000):
        protocol, transport = self.open(port=port)
        protocol.dataReceived(CONNECT)
        return protocol, transport


class ConnectTests(LinkTestCase):
    """
    C{POST /connect} turns a C{--listen} connection into an LE16 guest link.
    """

    def test_headAndFramesInOneRead(self):
        """
        The request head and frames in the same read: the frames reach the
        switch, the gateway's ARP reply is written back LE16-framed, and no
        HTTP response is written.
        """
        protocol, transport = self.open()
        broadcast = BCAST + GUEST_MAC + b"\x88\xb5" + b"hello"
        protocol.dataReceived(CONNECT + encodeFrame(LE16, arpRequest())
                              + encodeFrame(LE16, broadcast))
        self.assertEqual(self.fake.frames, [arpRequest(), broadcast])
        self.assertEqual(transport.value(), encodeFrame(LE16, arpReply()))
        self.assertNotIn(b"HTTP", transport.value())
        self.assertEqual(self.counters.get("link.connects"), 1)
        self.assertEqual(self.counters.get("link.framesReceived"), 2)

    def test_splitAcrossReads(self):
        """
        The head and the frames split at arbitrary points across reads give
        the same frames.
        """
        protocol, transport = self.open()
        wire = (b"POST /connect?x=1 HTTP/1.1\r\n\r\n" + encodeFrame(LE16, arpRequest())
                + encodeFrame(LE16, arpRequest()))
        for i in range(0, len(wire), 7):
            protocol.dataReceived(wire[i:i + 7])
        self.assertEqual(self.fake.frames, [arpRequest(), arpRequest()])
        self.assertEqual(transport.value(), encodeFrame(LE16, arpReply()) * 2)

    def test_linkIsSwitchPort(self):
        """
        The link's port is on the switch while connected, registered as the
        transport's streaming producer, and leaves with its MACs when the
        connection is lost.
        """
        protocol, transport = self.connected()
        protocol.dataReceived(encodeFrame(LE16, arpRequest()))
        port = self.switch.portFor(GUEST_MAC)
        self.assertIsInstance(port, SwitchPort)
        self.assertIn(port, self.switch.ports)
        self.assertIs(transport.producer, port)
        self.assertTrue(transport.streaming)
        self.assertTrue(port.name.startswith("tcp:127.0.0.1:40000"))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertNotIn(port, self.switch.ports)
        self.assertIsNone(self.switch.portFor(GUEST_MAC))

    def test_closedBeforeHead(self):
        """
        A connection lost before a whole head arrives attaches nothing.
        """
        protocol, transport = self.open()
        before = list(self.switch.ports)
        protocol.dataReceived(b"POST /conn")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.switch.ports, before)

    def test_otherRequest404(self):
        """
        Any other request is served by the twisted.web Site: 404.
        """
        protocol, transport = self.open()
        protocol.dataReceived(b"GET /foo HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertEqual(self.counters.get("link.connects"), 0)
        self.assertEqual(self.fake.frames, [])

    def test_getConnectIsHTTP(self):
        """
        C{GET /connect} is not a link request: it is HTTP (404 here).
        """
        protocol, transport = self.open()
        protocol.dataReceived(b"GET /connect HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        self.assertEqual(self.counters.get("link.connects"), 0)

    def test_httpSplitHead(self):
        """
        An HTTP request whose head comes in pieces is still answered once.
        """
        protocol, transport = self.open()
        for piece in (b"GET /a", b"bc HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            protocol.dataReceived(piece)
        self.assertEqual(transport.value().count(b"HTTP/1.1 404 "), 1)

    def test_customSite(self):
        """
        The Site given to the factory serves the other requests.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.static import Data

        root = Resource()
        root.putChild(b"stats", Data(b"{}", "application/json"))
        site = Site(root, reactor=self.clock)
        factory = LinkFactory(self.network, self.counters, "connect", site=site)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertTrue(transport.value().endswith(b"\r\n\r\n{}"))

    def test_oversizeHead(self):
        """
        A request head over 16 KiB with no end gets 431 and the connection
        is closed; later bytes are ignored.
        """
        protocol, transport = self.open()
        protocol.dataReceived(b"POST /connect HTTP/1.1\r\nX: " + b"a" * (16 * 1024))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counters.get("drop.link.requestHeadTooLong"), 1)
        written = transport.value()
        protocol.dataReceived(b"\r\n\r\n" + encodeFrame(LE16, arpRequest()))
        self.assertEqual(transport.value(), written)
        self.assertEqual(self.fake.frames, [])

    def test_zeroLengthAbortsThatLinkOnly(self):
        """
        A zero-length frame aborts its own link; another link keeps working.
        """
        bad, badTransport = self.connected(port=1)
        good, goodTransport = self.connected(port=2)
        bad.dataReceived(encodeFrame(LE16, arpRequest()) + b"\x00\x00")
        self.assertTrue(badTransport.disconnecting)
        self.assertFalse(goodTransport.disconnecting)
        bad.connectionLost(Failure(ConnectionDone()))
        # The bad link's broadcast before the error was flooded to the good one.
        self.assertEqual(goodTransport.value(), encodeFrame(LE16, arpRequest()))
        goodTransport.clear()
        good.dataReceived(encodeFrame(LE16, arpRequest(GUEST2_MAC, GUEST2_IP)))
        self.assertEqual(goodTransport.value(),
                         encodeFrame(LE16, arpReply(GUEST2_MAC, GUEST2_IP)))

    def test_oversizeFrameAbortsThatLinkOnly(self):
        """
        A QEMU link announcing a frame over 128 KiB is aborted; a
        C{/connect} link keeps working.
        """
        bad, badTransport = self.open("qemu")
        good, goodTransport = self.connected()
        bad.dataReceived((MAX_FRAME + 1).to_bytes(4, "big") + b"\x00" * 100)
        self.assertTrue(badTransport.disconnecting)
        good.dataReceived(encodeFrame(LE16, arpRequest()))
        self.assertEqual(goodTransport.value(), encodeFrame(LE16, arpReply()))
        self.assertFalse(goodTransport.disconnecting)

    @FUZZ
    @given(st.lists(st.one_of(
        st.binary(max_size=120),
        st.sampled_from([b"\x00\x00", b"\x00", encodeFrame(LE16, arpRequest()),
                         encodeFrame(LE16, arpRequest())[:5]])), max_size=6))
    def test_randomFrames(self, chunks):
        """
        Random bytes after C{POST /connect} never raise out of
        C{dataReceived}.
        """
        self.setUp()
        protocol, transport = self.connected()
        for chunk in chunks:
            protocol.dataReceived(chunk)

    @FUZZ
    @given(st.binary(max_size=200), st.integers(1, 50))
    def test_randomHead(self, data, step):
        """
        Random bytes as a request head, in any chunking, never raise.
        """
        self.setUp()
        protocol, transport = self.open()
        for i in range(0, len(data), step):
            protocol.dataReceived(data[i:i + step])


class QEMUTests(LinkTestCase):
    """
    A C{--listen-qemu} connection is a BE32 link with no handshake.
    """

    def test_frames(self):
        """
        BE32 frames in and out; nothing HTTP.
        """
        protocol, transport = self.open("qemu")
        wire = encodeFrame(BE32, arpRequest())
        protocol.dataReceived(wire[:3])
        protocol.dataReceived(wire[3:])
        self.assertEqual(self.fake.frames, [arpRequest()])
        self.assertEqual(transport.value(), encodeFrame(BE32, arpReply()))

    def test_postIsNotSpecial(self):
        """
        On a QEMU link, bytes that look like HTTP are a (bad) frame length:
        the link is closed and nothing is switched.
        """
        protocol, transport = self.open("qemu")
        protocol.dataReceived(CONNECT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.fake.frames, [])

    def test_unixPeerName(self):
        """
        A link accepted on a unix socket is named after the socket.
        """
        factory = LinkFactory(self.network, self.counters, "qemu")
        protocol = factory.buildProtocol(UNIXAddress(b"/tmp/gv.sock"))
        protocol.makeConnection(StringTransport())
        self.assertTrue(protocol.port.name.startswith("unix:/tmp/gv.sock"))

    @FUZZ
    @given(st.lists(st.one_of(
        st.binary(max_size=120),
        st.sampled_from([b"\x00\x00\x00\x00", b"\x00\x02\x00\x01",
                         encodeFrame(BE32, arpRequest())])), max_size=6))
    def test_randomStream(self, chunks):
        """
        Random bytes on a QEMU link never raise out of C{dataReceived}.
        """
        self.setUp()
        protocol, transport = self.open("qemu")
        for chunk in chunks:
            protocol.dataReceived(chunk)


class RecordingProtocol:
    """
    The side of a link that L{SwitchPort} writes to.
    """

    def __init__(self):
        self.transport = StringTransport()
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


class SwitchPortTests(SynchronousTestCase):
    """
    L{SwitchPort} bounds what a paused link is given.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.events = []
        self.port = SwitchPort(self.switch, self.counters, "guest",
                               onPause=lambda p: self.events.append(("pause", p)),
                               onResume=lambda p: self.events.append(("resume", p)))
        self.protocol = RecordingProtocol()
        self.port.attach(self.protocol)
        self.other = FakePort()
        self.switch.attach(self.other)

    def flood(self, count, size=1000):
        frame = BCAST + GUEST2_MAC + b"\x88\xb5" + b"x" * (size - 14)
        for _ in range(count):
            self.switch.receiveFrame(self.other, frame)
        return frame

    def test_producer(self):
        """
        The port provides C{IPushProducer} and registers with the transport
        as a streaming producer.
        """
        self.assertTrue(verifyObject(IPushProducer, self.port))
        self.assertIs(self.protocol.transport.producer, self.port)
        self.assertTrue(self.protocol.transport.streaming)

    def test_unpaused(self):
        """
        Unpaused, every frame is written and counted.
        """
        self.flood(300)
        self.assertEqual(len(self.protocol.frames), 300)
        self.assertEqual(self.counters.get("link.framesSent"), 300)
        self.assertEqual(self.counters.get("link.bytesSent"), 300 * 1000)
        self.assertEqual(self.counters.get("drop.link.paused"), 0)

    def test_pausedBudget(self):
        """
        After C{pauseProducing}, frames up to 256 KiB are still written;
        beyond that they are dropped and counted.
        """
        self.port.pauseProducing()
        self.assertEqual(self.events, [("pause", self.port)])
        self.flood(300)
        fits = PAUSED_BUDGET // 1000
        self.assertEqual(len(self.protocol.frames), fits)
        self.assertEqual(self.counters.get("drop.link.paused"), 300 - fits)

    def test_resumeResets(self):
        """
        C{resumeProducing} lets every frame through again, and a later pause
        starts a fresh budget.
        """
        self.port.pauseProducing()
        self.flood(300)
        self.port.resumeProducing()
        self.assertEqual(self.events[-1], ("resume", self.port))
        sent = len(self.protocol.frames)
        self.flood(300)
        self.assertEqual(len(self.protocol.frames), sent + 300)
        self.port.pauseProducing()
        self.flood(300)
        self.assertEqual(len(self.protocol.frames), sent + 300 + PAUSED_BUDGET // 1000)

    def test_pauseTwice(self):
        """
        A second pause does not reset the budget or notify again.
        """
        self.port.pauseProducing()
        self.flood(PAUSED_BUDGET // 1000)
        self.port.pauseProducing()
        self.flood(1)
        self.assertEqual(self.counters.get("drop.link.paused"), 1)
        self.assertEqual(self.counters.get("link.pauses"), 1)
        self.assertEqual(len(self.events), 1)

    def test_receive(self):
        """
        Frames from the link go to the switch and are counted.
        """
        frame = BCAST + GUEST_MAC + b"\x88\xb5" + b"data"
        self.port.frameReceived(frame)
        self.assertEqual(self.other.frames, [frame])
        self.assertEqual(self.counters.get("link.framesReceived"), 1)
        self.assertEqual(self.counters.get("link.bytesReceived"), len(frame))

    def test_detachWhilePaused(self):
        """
        Detaching a paused port tells the network it resumed (so nothing
        stays blocked on it), leaves the switch, and later sends are no-ops.
        """
        self.port.pauseProducing()
        self.port.detach()
        self.assertEqual(self.events[-1], ("resume", self.port))
        self.assertNotIn(self.port, self.switch.ports)
        self.port.sendFrame(b"x" * 20)
        self.assertEqual(self.protocol.frames, [])
        self.port.detach()
        self.assertEqual(len(self.events), 2)

    def test_stopProducing(self):
        """
        C{stopProducing} detaches the port.
        """
        self.port.stopProducing()
        self.assertNotIn(self.port, self.switch.ports)

    def test_networkTold(self):
        """
        A link made by L{LinkFactory} pauses and resumes its interface in the
        network (which the TCP connections behind it look at).
        """
        network = VirtualNetwork(self.clock, NetworkConfig(), self.switch, self.counters)
        port = LinkFactory(network, self.counters).makePort("peer")
        port.attach(RecordingProtocol())
        iface = self.switch.interfaceFor(port)
        port.pauseProducing()
        self.assertTrue(iface.paused)
        port.resumeProducing()
        self.assertFalse(iface.paused)


class EndpointTests(SynchronousTestCase):
    """
    L{serverEndpointString} accepts gvproxy URLs and Twisted strings.
    """

    def test_unixURL(self):
        """
        C{unix:///tmp/a.sock} is C{unix:/tmp/a.sock} with mode 600.
        """
        self.assertEqual(serverEndpointString("unix:///tmp/a.sock"), "unix:/tmp/a.sock:mode=600:lockfile=0")

    def test_tcpURL(self):
        """
        C{tcp://127.0.0.1:1024} listens on port 1024 of that interface.
        """
        self.assertEqual(serverEndpointString("tcp://127.0.0.1:1024"),
                         "tcp:1024:interface=127.0.0.1")

    def test_tcpURLNoHost(self):
        """
        C{tcp://:1024} listens on every interface.
        """
        self.assertEqual(serverEndpointString("tcp://:1024"), "tcp:1024")

    def test_vsockURL(self):
        """
        C{vsock://:1024} is C{vsock:1024}.
        """
        self.assertEqual(serverEndpointString("vsock://:1024"), "vsock:1024")

    def test_badScheme(self):
        """
        An unknown scheme raises L{ValueError} naming it.
        """
        with self.assertRaises(ValueError) as ctx:
            serverEndpointString("http://127.0.0.1:80")
        self.assertIn("http", str(ctx.exception))

    def test_missingPort(self):
        """
        A tcp or vsock URL without a port raises L{ValueError}.
        """
        self.assertRaises(ValueError, serverEndpointString, "tcp://127.0.0.1")
        self.assertRaises(ValueError, serverEndpointString, "vsock://")

    def test_twistedStrings(self):
        """
        Twisted strings pass unchanged, except that unix gets mode 600
        unless it names a mode.
        """
        self.assertEqual(serverEndpointString("tcp:1024:interface=127.0.0.1"),
                         "tcp:1024:interface=127.0.0.1")
        self.assertEqual(serverEndpointString("vsock:1024"), "vsock:1024")
        self.assertEqual(serverEndpointString("unix:/run/gv.sock"), "unix:/run/gv.sock:mode=600:lockfile=0")
        self.assertEqual(serverEndpointString("unix:/run/gv.sock:mode=660"),
                         "unix:/run/gv.sock:mode=660:lockfile=0")

    def test_unixURLEscapes(self):
        """
        A colon in a unix path is escaped for the endpoint parser, and
        L{unixPath} gives the path back.
        """
        text = serverEndpointString("unix:///tmp/a:b.sock")
        self.assertEqual(text, "unix:/tmp/a\\:b.sock:mode=600:lockfile=0")
        self.assertEqual(unixPath(text), "/tmp/a:b.sock")

    def test_parsesWithTwisted(self):
        """
        The strings made from URLs are accepted by Twisted's
        C{serverFromString}.
        """
        from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString

        endpoint = serverFromString(self, serverEndpointString("unix:///tmp/a.sock"))
        self.assertIsInstance(endpoint, UNIXServerEndpoint)
        self.assertEqual(endpoint._address, "/tmp/a.sock")
        self.assertEqual(endpoint._mode, 0o600)

    def test_unixPath(self):
        """
        L{unixPath} reads the path of a unix endpoint string, with or without
        C{address=}, and is L{None} for others.
        """
        self.assertEqual(unixPath("unix:/tmp/x.sock:mode=600"), "/tmp/x.sock")
        self.assertEqual(unixPath("unix:address=/tmp/x.sock"), "/tmp/x.sock")
        self.assertIsNone(unixPath("tcp:1024"))


class PcapTests(SynchronousTestCase):
    """
    L{PcapWriter} writes classic pcap that dpkt and tcpdump read.
    """

    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        self.frames = [arpRequest(), arpReply()]

    def write(self, **kwargs):
        writer = PcapWriter(self.path, self.clock, **kwargs)
        self.clock.advance(1000.25)
        writer(self.frames[0])
        self.clock.advance(0.5)
        writer(self.frames[1])
        return writer

    def test_dpktReads(self):
        """
        dpkt reads both frames back with their timestamps, link type
        Ethernet.
        """
        self.write().close()
        with open(self.path, "rb") as f:
            reader = dpkt.pcap.Reader(f)
            self.assertEqual(reader.datalink(), dpkt.pcap.DLT_EN10MB)
            records = list(reader)
        self.assertEqual([data for _, data in records], self.frames)
        self.assertEqual([round(ts, 6) for ts, _ in records], [1000.25, 1000.75])

    def test_flushedEachFrame(self):
        """
        The file is readable while the writer is still open.
        """
        writer = self.write()
        with open(self.path, "rb") as f:
            self.assertEqual(len(list(dpkt.pcap.Reader(f))), 2)
        writer.close()
        writer(b"ignored after close")
        writer.close()

    def test_snaplen(self):
        """
        A frame longer than the snap length is cut, with its original length
        recorded.
        """
        self.write(snaplen=20).close()
        with open(self.path, "rb") as f:
            data = f.read()
        self.assertEqual(int.from_bytes(data[16:20], "little"), 20)
        first = data[24:]
        self.assertEqual(int.from_bytes(first[8:12], "little"), 20)
        self.assertEqual(int.from_bytes(first[12:16], "little"), len(self.frames[0]))
        self.assertEqual(first[16:36], self.frames[0][:20])

    def test_tcpdumpReads(self):
        """
        C{tcpdump -r} shows the two ARP frames.
        """
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise SkipTest("tcpdump is not installed")
        self.write().close()
        result = subprocess.run([tcpdump, "-nn", "-e", "-r", self.path],
                                capture_output=True, text=True, timeout=30,
                                env=dict(os.environ, TZ="UTC"))
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 2, result.stdout)
        self.assertIn("Request who-has 192.168.127.1 tell 192.168.127.2", lines[0])
        self.assertIn("Reply 192.168.127.1 is-at 5a:94:ef:e4:0c:dd", lines[1])

    def test_switchTap(self):
        """
        As the switch's tap, the writer records every frame entering it.
        """
        writer = PcapWriter(self.path, self.clock)
        counters = Counters(self.clock)
        switch = Switch(self.clock, counters, tap=writer)
        VirtualNetwork(self.clock, NetworkConfig(), switch, counters)
        guest = FakePort()
        switch.attach(guest)
        switch.receiveFrame(guest, arpRequest())
        writer.close()
        self.assertEqual(guest.frames, [arpReply()])
        with open(self.path, "rb") as f:
            self.assertEqual([d for _, d in dpkt.pcap.Reader(f)], [arpRequest(), arpReply()])


class DescribeTests(SynchronousTestCase):
    """
    Link names come from the peer's address.
    """

    def test_tcp(self):
        """
        A TCP peer is C{tcp:host:port}.
        """
        self.assertEqual(listeners._describe(IPv4Address("TCP", "10.0.0.1", 5)), "tcp:10.0.0.1:5")

    def test_unix(self):
        """
        A unix peer is C{unix:path}.
        """
        self.assertEqual(listeners._describe(UNIXAddress(b"/x")), "unix:/x")


verifyingVariants(globals())
