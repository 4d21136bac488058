"""
Tests for L{gvtwisted.stack.iface}: each guest link owns its state.

smoltcp-style: a network and a TCP demux on a L{Clock}, guest links that are
real L{SwitchPort}s (made by L{LinkFactory}, so pause and resume reach the
network as in the daemon) over a transport that only records frames; whole
frames in, exact frames out.
"""

from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import StringTransport

from gvtwisted.link.listeners import LinkFactory
from gvtwisted.services.nat_udp import FlowTable
from gvtwisted.stack.iface import LinkInterface
from gvtwisted.wire import arp, ipv4
from gvtwisted.wire.tcp import SYN

from tests.test_tcpdemux import (
    GUEST_IP, GUEST_MAC, GUEST_PORT, ISN, OTHER_IP, OTHER_MAC, SERVICE_PORT,
    DemuxTestCase, FakePort, RecordingFactory, parseOut,
)


class GuestSide:
    """
    What a L{SwitchPort} writes to: a protocol with a producer-aware transport
    that records the frames it is given.
    """

    def __init__(self):
        self.transport = StringTransport()
        self.frames = []
        self.onFrame = None

    def sendFrame(self, frame):
        self.frames.append(frame)
        if self.onFrame is not None:
            self.onFrame(frame)


def payloadOf(frame):
    packet = ipv4.parse(frame)
    if packet.proto != ipv4.PROTO_TCP:
        return b""
    return bytes(parseOut(frame)[1].payload)


class LinkTestCase(DemuxTestCase):
    """
    A L{DemuxTestCase} whose guest link is a real L{SwitchPort}.
    """

    grace = 60.0

    def setUp(self):
        DemuxTestCase.setUp(self)
        self.switch.linkGrace = self.grace
        fake = self.iface()
        self.switch.detach(self.guest)
        if fake.graceCall is not None:
            fake.graceCall.cancel()
        self.counters.values.clear()
        self.linkFactory = LinkFactory(self.network, self.counters)
        self.guest, self.side = self.newLink()

    def newLink(self):
        port = self.linkFactory.makePort("guest")
        side = GuestSide()
        port.attach(side)
        # DemuxTestCase's helpers read what a port was sent from .frames.
        port.frames = side.frames
        return port, side

    def iface(self, port=None):
        return self.switch.interfaceFor(port or self.guest)

    def openConnections(self, count, port=None):
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT, factory)
        self.isns = []
        for i in range(count):
            self.isns.append(self.establish(factory, srcPort=GUEST_PORT + i, port=port))
        self.taken(port)
        return factory.protocols


class PauseTests(LinkTestCase):
    """
    Pause and resume touch only the connections blocked on the link, and no
    connection ever sends into a paused link.
    """

    def test_pauseTouchesNothing(self):
        """
        Pausing a link marks it paused and blocks no connection until one has
        something to send; then only that one is blocked.
        """
        protocols = self.openConnections(3)
        self.guest.pauseProducing()
        self.assertTrue(self.iface().paused)
        self.assertEqual(self.iface().blocked, {})
        protocols[1].transport.write(b"x")
        self.clock.advance(0)
        self.assertEqual(list(self.iface().blocked), [protocols[1].transport])
        self.assertEqual(self.taken(), [])

    def test_resumeThatRepausesSendsNothingIntoThePausedLink(self):
        """
        A resume whose output pauses the link again stops there: no segment
        with data reaches the link while it is paused, the connections not yet
        served stay blocked, and every byte goes out over later resumes.
        """
        protocols = self.openConnections(3)
        self.guest.pauseProducing()
        for p in protocols:
            p.transport.write(b"d" * 1460 * 5)
        self.clock.advance(0)
        self.assertEqual(self.taken(), [])
        self.assertEqual(len(self.iface().blocked), 3)
        intoPaused = []
        sinceResume = []

        def onFrame(frame):
            if not payloadOf(frame):
                return
            if self.guest.paused:
                intoPaused.append(frame)
            sinceResume.append(frame)
            if len(sinceResume) == 3:
                # The transport's buffer fills: it pauses its producer.
                self.guest.pauseProducing()

        self.side.onFrame = onFrame
        delivered = 0
        for _ in range(20):
            del sinceResume[:]
            self.guest.resumeProducing()
            self.assertTrue(self.guest.paused or not self.iface().blocked)
            delivered += sum(len(payloadOf(f)) for f in self.side.frames)
            del self.side.frames[:]
            if not self.iface().blocked:
                break
        self.assertEqual(intoPaused, [])
        self.assertEqual(delivered, 3 * 1460 * 5)

    def test_otherLinkUntouched(self):
        """
        Pausing one link leaves another link's connections sending.
        """
        mine = self.openConnections(1)[0]
        other, otherSide = self.newLink()
        self.learn(port=other, mac=OTHER_MAC, ip=OTHER_IP)
        factory = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT + 1, factory)
        self.establish(factory, port=other, mac=OTHER_MAC, ip=OTHER_IP,
                       dstPort=SERVICE_PORT + 1)
        self.taken(other)
        del self.side.frames[:]
        theirs = factory.protocols[0]
        self.guest.pauseProducing()
        mine.transport.write(b"a")
        theirs.transport.write(b"b")
        self.clock.advance(0)
        self.assertEqual(self.taken(), [])
        self.assertEqual([bytes(s.payload) for _, s in self.taken(other)], [b"b"])
        self.assertEqual(self.iface(other).blocked, {})


class GraceTests(LinkTestCase):
    """
    A link that goes away keeps its state for the grace period.
    """

    def test_droppedWhilePausedReleasedAfterGrace(self):
        """
        A link that drops while paused (with data blocked on it) is resumed
        first; its connections stay through the grace period and are then
        aborted, leaving no connection, timer or ARP entry behind.
        """
        protocols = self.openConnections(2)
        conns = [p.transport for p in protocols]
        self.guest.pauseProducing()
        for p in protocols:
            p.transport.write(b"held")
        self.clock.advance(0)
        iface = self.iface()
        self.assertEqual(len(iface.blocked), 2)
        self.guest.detach()
        self.assertFalse(iface.paused)
        self.assertEqual(iface.blocked, {})
        self.clock.advance(self.grace - 1)
        self.assertEqual(self.demux.connectionCount(), 2)
        self.assertEqual(self.counters.get("link.graceExpired"), 0)
        self.clock.advance(1)
        self.clock.advance(0)
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual([c.state for c in conns], ["CLOSED", "CLOSED"])
        for p in protocols:
            self.assertTrue(p.reasons[0].check(ConnectionAborted))
        self.assertEqual(self.counters.get("link.graceExpired"), 1)
        self.assertEqual(self.counters.get("tcp.abortedLinkGone"), 2)
        self.assertIsNone(self.network.macFor(GUEST_IP))
        self.assertEqual(iface.conns, set())
        self.assertEqual([c._timerCall for c in conns], [None, None])
        self.clock.advance(600)
        self.assertEqual(self.demux.connectionCount(), 0)

    def test_returnWithinGraceKeepsConnections(self):
        """
        A new link that shows the same MAC within the grace period takes the
        connections over: data written during the outage reaches the new
        link, and the grace timer no longer runs.
        """
        protocol = self.openConnections(1)[0]
        conn = protocol.transport
        old = self.iface()
        self.guest.detach()
        protocol.transport.write(b"during")
        self.clock.advance(3)
        port, side = self.newLink()
        self.learn(port=port)
        self.assertIs(conn.link, self.iface(port))
        self.assertEqual(old.conns, set())
        self.assertEqual(self.counters.get("link.takenOver"), 1)
        # The retransmission reaches the guest on its new link.
        self.clock.advance(conn._rto + 1)
        payloads = [bytes(s.payload) for _, s in self.taken(port)]
        self.assertIn(b"during", payloads)
        self.clock.advance(self.grace * 2)
        self.assertEqual(self.counters.get("link.graceExpired"), 0)
        self.assertEqual(self.demux.connectionCount(), 1)
        self.assertEqual(conn.state, "ESTABLISHED")
        self.assertEqual(protocol.reasons, [])

    def test_noFrameForDownLinkReachesAnother(self):
        """
        While a link is down, what the gateway sends its guest (here TCP
        retransmissions) is dropped and counted, and no other link sees a
        frame addressed to it, before or after the grace period.
        """
        protocol = self.openConnections(1)[0]
        other, otherSide = self.newLink()
        self.learn(port=other, mac=OTHER_MAC, ip=OTHER_IP)
        protocol.transport.write(b"x" * 5000)
        self.guest.detach()
        self.clock.pump([1.0] * 200)
        self.assertEqual([f for f in otherSide.frames if f[0:6] == GUEST_MAC], [])
        self.assertGreater(self.counters.get("drop.switch.linkDown"), 0)

    def test_flowsFreedAfterGrace(self):
        """
        A NAT flow of a guest behind the link is registered with the link and
        closed when the grace period ends; one closed before leaves it.
        """
        self.learn()
        closed = []

        class Table(FlowTable):
            prefix = "nat.test"

            def _closeFlow(self, flow):
                if not flow.closed:
                    flow.closed = True
                    self._unlink(flow)
                    closed.append(flow)

        class Flow:
            def __init__(self, key):
                self.key = key
                self.lastActive = 0.0
                self.closed = False
                self.link = None

        table = Table(self.clock, self.network, 100, 1000.0)
        kept, early = Flow((GUEST_IP, 1, b"\x08\x08\x08\x08", 53)), \
            Flow((GUEST_IP, 2, b"\x08\x08\x08\x08", 53))
        table._addFlow(kept)
        table._addFlow(early)
        self.assertEqual(set(self.iface().flows), {kept, early})
        table._removeFlow(early)
        self.assertEqual(set(self.iface().flows), {kept})
        iface = self.iface()
        self.guest.detach()
        self.clock.advance(self.grace)
        self.assertEqual(closed, [early, kept])
        self.assertEqual(table.flowCount(), 0)
        self.assertEqual(iface.flows, {})
        self.assertEqual(self.counters.get("nat.test.flowsLinkGone"), 1)

    def test_synPendingFailsAtExpiry(self):
        """
        A connection still waiting for its NAT dial when the grace period
        ends fails its handshake (so the dial is abandoned) and is counted.
        """
        self.demux.nat = self.network.nat
        self.sendSegment(SYN, dst=b"\x08\x08\x08\x08", seq=ISN)
        [conn] = self.network.nat.syns
        failures = []
        conn.onConnectFailed = failures.append
        self.guest.detach()
        self.clock.advance(self.grace)
        self.assertEqual(len(failures), 1)
        self.assertEqual(conn.state, "CLOSED")
        self.assertEqual(self.demux.connectionCount(), 0)


class ZeroGraceTests(LinkTestCase):
    """
    With no grace period a dropped link is released at once.
    """

    grace = 0

    def test_releasedAtOnce(self):
        """
        C{--link-grace 0}: the connections go when the link does.
        """
        self.openConnections(1)
        self.guest.detach()
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(self.counters.get("tcp.abortedLinkGone"), 1)


class InterfaceTests(DemuxTestCase):
    """
    L{LinkInterface} on its own.
    """

    def test_runBlockedStopsWhenPaused(self):
        """
        The resume loop re-checks the pause state before every connection.
        """
        iface = LinkInterface(FakePort())
        served = []

        class Conn:
            def __init__(self, name, repause=False):
                self.name, self.repause = name, repause

            def linkResumed(self):
                served.append(self.name)
                if self.repause:
                    iface.pause()

        for c in (Conn("a"), Conn("b", repause=True), Conn("c")):
            iface.block(c)
        iface.pause()
        iface.resume()
        self.assertEqual(served, ["a", "b"])
        self.assertEqual([c.name for c in iface.blocked], ["c"])
        iface.resume()
        self.assertEqual(served, ["a", "b", "c"])

    def test_raisingConnectionCostsOnlyItself(self):
        """
        A connection whose resume raises is logged; the others still resume.
        """
        iface = LinkInterface(FakePort())
        served = []

        class Bad:
            def linkResumed(self):
                raise RuntimeError("boom")

        class Good:
            def linkResumed(self):
                served.append(self)

        good = Good()
        iface.block(Bad())
        iface.block(good)
        iface.pause()
        iface.resume()
        self.assertEqual(served, [good])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)



class NeighbourTests(LinkTestCase):
    """
    ARP neighbours belong to the link they were learnt from.
    """

    def test_otherLinkCannotClaimAddress(self):
        """
        A link that claims the IP address of a guest on another live link
        (with its own MAC) is refused and counted; the gateway's frames for
        that address still go to the guest that holds it.
        """
        self.learn()
        other, otherSide = self.newLink()
        message = arp.build(arp.REQUEST, OTHER_MAC, GUEST_IP, b"\x00" * 6, GUEST_IP)
        self.switch.receiveFrame(other, b"\xff" * 6 + OTHER_MAC + b"\x08\x06" + message)
        self.assertEqual(self.network.macFor(GUEST_IP), GUEST_MAC)
        self.assertEqual(self.counters.get("drop.ipv4.addressInUse"), 1)

    def test_downLinkAddressMayBeClaimed(self):
        """
        The address of a guest whose link is down may be taken by a guest on
        another link (a new VM with the old one's address).
        """
        self.learn()
        self.guest.detach()
        other, otherSide = self.newLink()
        self.learn(port=other, mac=OTHER_MAC, ip=GUEST_IP)
        self.assertIs(self.network.linkFor(GUEST_IP), self.iface(other))

    def test_neighboursCapped(self):
        """
        A link holds at most as many neighbours as MACs; past that its own
        least recently seen one goes, never another link's.
        """
        self.switch.maxMACsPerLink = 2
        other, otherSide = self.newLink()
        self.learn(port=other, mac=OTHER_MAC, ip=OTHER_IP)
        for last in (10, 11, 12):
            self.clock.advance(1)
            self.learn(ip=bytes([192, 168, 127, last]))
        self.assertEqual(sorted(self.iface().neighbours),
                         [bytes([192, 168, 127, 11]), bytes([192, 168, 127, 12])])
        self.assertIsNone(self.network.macFor(bytes([192, 168, 127, 10])))
        self.assertEqual(self.network.macFor(OTHER_IP), OTHER_MAC)

    def test_evictedMACTakesItsNeighbours(self):
        """
        ARP and MAC entries age together: when a link's MAC is evicted by its
        cap, the ARP entries learnt at that MAC go with it.
        """
        self.switch.maxMACsPerLink = 1
        self.learn()
        self.clock.advance(1)
        self.learn(mac=OTHER_MAC, ip=OTHER_IP)
        self.assertIsNone(self.network.macFor(GUEST_IP))
        self.assertIsNone(self.switch.portFor(GUEST_MAC))
        self.assertEqual(self.network.macFor(OTHER_IP), OTHER_MAC)
