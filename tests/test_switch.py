"""
Tests for L{gvtwisted.stack.switch}: a learning switch with MAC ownership.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.counters import Counters
from gvtwisted.stack.switch import Switch

FUZZ = settings(max_examples=200, deadline=None)

MAC_A = bytes.fromhex("5a94efe40c0a")
MAC_B = bytes.fromhex("5a94efe40c0b")
MAC_C = bytes.fromhex("5a94efe40c0c")
GW = bytes.fromhex("5a94efe40cdd")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


class FakePort:
    """
    A switch port that records the frames sent to it.
    """

    def __init__(self, name):
        self.name = name
        self.frames = []

    def sendFrame(self, frame):
        self.frames.append(frame)


def frame(dst, src, payload=b"payload"):
    return dst + src + b"\x08\x00" + payload


class SwitchTests(SynchronousTestCase):
    """
    L{Switch} learns, forwards, floods and refuses stolen addresses.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.tapped = []
        self.switch = Switch(self.clock, self.counters, tap=self.tapped.append)
        self.a, self.b, self.c = FakePort("a"), FakePort("b"), FakePort("c")
        self.gw = FakePort("gateway")
        self.switch.attach(self.gw, macs=[GW])
        for p in (self.a, self.b, self.c):
            self.switch.attach(p)

    def test_forwardFromGateway(self):
        """
        A frame the gateway built goes to the port its destination was learnt
        on (and to the capture), and learns nothing: the gateway's own MAC
        stays its permanent entry.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        for port in (self.a, self.b, self.c, self.gw):
            del port.frames[:]
        del self.tapped[:]
        reply = frame(MAC_A, GW)
        self.switch.forward(self.gw, reply)
        self.assertEqual(self.a.frames, [reply])
        self.assertEqual(self.b.frames + self.c.frames + self.gw.frames, [])
        self.assertEqual(self.tapped, [reply])
        self.assertEqual(self.switch.portFor(GW), self.gw)

    def test_forwardUnknownDropped(self):
        """
        A gateway frame for a MAC no link holds is dropped and counted, never
        flooded: no other guest may see it.
        """
        f = frame(MAC_A, GW)
        self.switch.forward(self.gw, f)
        self.assertEqual((self.a.frames, self.b.frames, self.c.frames, self.gw.frames),
                         ([], [], [], []))
        self.assertEqual(self.counters.get("drop.switch.unknownDestination"), 1)

    def test_forwardAgedGoesToItsLink(self):
        """
        A gateway frame for a MAC not seen for longer than C{ageing} still goes
        to the live link that holds it, and only there.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing + 1)
        for port in (self.a, self.b, self.c, self.gw):
            del port.frames[:]
        f = frame(MAC_A, GW)
        self.switch.forward(self.gw, f)
        self.assertEqual((self.a.frames, self.b.frames, self.c.frames, self.gw.frames),
                         ([f], [], [], []))

    def test_forwardToDownLinkDropped(self):
        """
        A gateway frame for a MAC whose link is down (within its grace
        period) is dropped and counted, not flooded to the other links.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.detach(self.a)
        for port in (self.a, self.b, self.c, self.gw):
            del port.frames[:]
        self.switch.forward(self.gw, frame(MAC_A, GW))
        self.assertEqual((self.a.frames, self.b.frames, self.c.frames, self.gw.frames),
                         ([], [], [], []))
        self.assertEqual(self.counters.get("drop.switch.linkDown"), 1)

    def test_unknownUnicastFloods(self):
        """
        A frame to an unknown MAC goes to every port but the one it came in on.
        """
        f = frame(MAC_B, MAC_A)
        self.switch.receiveFrame(self.a, f)
        self.assertEqual((self.a.frames, self.b.frames, self.c.frames, self.gw.frames),
                         ([], [f], [f], [f]))

    def test_broadcastAndMulticastFlood(self):
        """
        Broadcast and multicast go to every other port even when known.
        """
        for dst in (BCAST, MCAST):
            f = frame(dst, MAC_A)
            self.switch.receiveFrame(self.a, f)
            self.assertEqual(self.b.frames[-1], f)
            self.assertEqual(self.c.frames[-1], f)
            self.assertEqual(self.a.frames, [])

    def test_learnedUnicast(self):
        """
        After B has sent a frame, frames to B go only to B's port.
        """
        self.switch.receiveFrame(self.b, frame(BCAST, MAC_B))
        self.a.frames[:] = self.c.frames[:] = self.gw.frames[:] = []
        f = frame(MAC_B, MAC_A)
        self.switch.receiveFrame(self.a, f)
        self.assertEqual(self.b.frames, [f])
        self.assertEqual((self.c.frames, self.gw.frames), ([], []))

    def test_permanentGateway(self):
        """
        The gateway's MAC is known from the start: unicast to it goes only
        to the gateway port.
        """
        f = frame(GW, MAC_A)
        self.switch.receiveFrame(self.a, f)
        self.assertEqual(self.gw.frames, [f])
        self.assertEqual((self.b.frames, self.c.frames), ([], []))

    def test_hairpinDropped(self):
        """
        A unicast frame to a MAC learned on the same port is not sent back.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.receiveFrame(self.a, frame(MAC_A, MAC_C))
        self.assertEqual(self.a.frames, [])

    def test_macSpoofDropped(self):
        """
        A frame from another port claiming a live MAC is dropped and counted,
        and the table keeps the first owner.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        before = len(self.b.frames)
        self.switch.receiveFrame(self.c, frame(BCAST, MAC_A))
        self.assertEqual(len(self.b.frames), before)
        self.assertEqual(self.counters.get("drop.switch.macSpoofed"), 1)
        self.assertIs(self.switch.portFor(MAC_A), self.a)

    def test_gatewayMACSpoofDropped(self):
        """
        A guest cannot send with the gateway's MAC as source.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, GW))
        self.assertEqual(self.b.frames, [])
        self.assertEqual(self.counters.get("drop.switch.macSpoofed"), 1)
        self.assertIs(self.switch.portFor(GW), self.gw)

    def test_agedEntryReusable(self):
        """
        Once an entry is older than C{ageing}, another port may take the MAC.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing + 1)
        self.switch.receiveFrame(self.c, frame(BCAST, MAC_A))
        self.assertEqual(self.counters.get("drop.switch.macSpoofed"), 0)
        self.assertIs(self.switch.portFor(MAC_A), self.c)

    def test_portForAges(self):
        """
        C{portFor} forgets an aged entry, and unicast to it floods again.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing + 1)
        self.assertIsNone(self.switch.portFor(MAC_A))
        f = frame(MAC_A, MAC_B)
        self.switch.receiveFrame(self.b, f)
        self.assertEqual(self.c.frames[-1], f)

    def test_refreshKeepsEntry(self):
        """
        Traffic from a MAC refreshes its entry so it does not age out.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing - 1)
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(self.switch.ageing - 1)
        self.assertIs(self.switch.portFor(MAC_A), self.a)

    def test_detachForgets(self):
        """
        Detaching a port removes it: its MACs lead nowhere, another port that
        shows one takes it over, and the detached port gets no more frames.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.switch.detach(self.a)
        self.assertNotIn(self.a, self.switch.ports)
        self.assertIsNone(self.switch.portFor(MAC_A))
        self.switch.receiveFrame(self.b, frame(BCAST, MAC_A))
        self.assertIs(self.switch.portFor(MAC_A), self.b)
        self.switch.receiveFrame(self.c, frame(BCAST, MAC_C))
        self.assertEqual(self.a.frames, [])
        self.switch.detach(self.a)  # twice is harmless

    def test_shortFrame(self):
        """
        A frame under 14 bytes is dropped and counted, and not tapped.
        """
        self.switch.receiveFrame(self.a, b"\xff" * 13)
        self.assertEqual(self.counters.get("drop.ethernet.short"), 1)
        self.assertEqual((self.b.frames, self.tapped), ([], []))

    def test_multicastSource(self):
        """
        A group address as source is dropped and counted, and not learnt.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MCAST))
        self.assertEqual(self.counters.get("drop.ethernet.multicastSource"), 1)
        self.assertEqual(self.b.frames, [])
        self.assertIsNone(self.switch.portFor(MCAST))

    def test_tap(self):
        """
        The tap sees every frame of at least 14 bytes that enters the switch.
        """
        f = frame(MAC_B, MAC_A)
        self.switch.receiveFrame(self.a, f)
        self.assertEqual(self.tapped, [f])

    def test_table(self):
        """
        C{table} maps formatted MACs to port names, without aged entries.
        """
        self.switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(200)
        self.switch.receiveFrame(self.b, frame(BCAST, MAC_B))
        self.assertEqual(self.switch.table(), {
            "5a:94:ef:e4:0c:0a": "a", "5a:94:ef:e4:0c:0b": "b", "5a:94:ef:e4:0c:dd": "gateway"})
        self.clock.advance(200)
        self.assertEqual(self.switch.table(), {
            "5a:94:ef:e4:0c:0b": "b", "5a:94:ef:e4:0c:dd": "gateway"})

    def test_capEvictsOwnOldest(self):
        """
        A link past its cap evicts its own least recently seen MAC; another
        link's entries and the permanent ones stay.
        """
        switch = Switch(self.clock, self.counters, maxMACsPerLink=2)
        switch.attach(self.gw, macs=[GW])
        switch.attach(self.a)
        switch.attach(self.b)
        switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        self.clock.advance(1)
        switch.receiveFrame(self.b, frame(BCAST, MAC_B))
        self.clock.advance(1)
        switch.receiveFrame(self.b, frame(BCAST, MAC_C))
        self.clock.advance(1)
        other = bytes.fromhex("5a94efe40c0e")
        switch.receiveFrame(self.b, frame(BCAST, other))
        self.assertIs(switch.portFor(MAC_A), self.a)
        self.assertIsNone(switch.portFor(MAC_B))
        self.assertIs(switch.portFor(MAC_C), self.b)
        self.assertIs(switch.portFor(other), self.b)
        self.assertIs(switch.portFor(GW), self.gw)
        self.assertEqual(self.counters.get("switch.linkTableFull"), 1)

    def test_floodEvictsNothingOfAnother(self):
        """
        A link that floods thousands of source MACs keeps at most its cap and
        evicts nothing of another link; then claiming the victim's MAC is
        refused, and frames for the victim still reach only the victim.
        """
        switch = Switch(self.clock, self.counters)
        switch.attach(self.gw, macs=[GW])
        switch.attach(self.a)
        switch.attach(self.b)
        switch.receiveFrame(self.a, frame(BCAST, MAC_A))
        for i in range(10000):
            mac = b"\x02" + i.to_bytes(5, "big")
            switch.receiveFrame(self.b, frame(BCAST, mac))
        self.assertEqual(len(switch.interfaceFor(self.b).macs), switch.maxMACsPerLink)
        self.assertIs(switch.portFor(MAC_A), self.a)
        switch.receiveFrame(self.b, frame(BCAST, MAC_A))
        self.assertEqual(self.counters.get("drop.switch.macSpoofed"), 1)
        del self.a.frames[:], self.b.frames[:]
        f = frame(MAC_A, GW)
        switch.forward(self.gw, f)
        self.assertEqual((self.a.frames, self.b.frames), ([f], []))

    def test_capAllPermanent(self):
        """
        When a link's table is full of permanent entries, the frame is still
        forwarded but not learnt, and C{switch.tableFull} is counted.
        """
        switch = Switch(self.clock, self.counters, maxMACsPerLink=1)
        switch.attach(self.gw, macs=[GW])
        switch.attach(self.a, macs=[MAC_C])
        f = frame(BCAST, MAC_A)
        switch.receiveFrame(self.a, f)
        self.assertEqual(self.gw.frames, [f])
        self.assertIsNone(switch.portFor(MAC_A))
        self.assertEqual(self.counters.get("switch.tableFull"), 1)

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=40),
                              st.floats(0, 400)), max_size=30))
    def test_randomFrames(self, events):
        """
        Random frames from random ports never raise; each link's table stays
        within its cap; no frame ever goes back to the port it came from.
        """
        clock = Clock()
        switch = Switch(clock, Counters(clock), maxMACsPerLink=2)
        ports = [FakePort(str(i)) for i in range(3)]
        for p in ports:
            switch.attach(p)
        for index, data, delay in events:
            clock.advance(delay)
            before = len(ports[index].frames)
            switch.receiveFrame(ports[index], data)
            self.assertEqual(len(ports[index].frames), before)
            self.assertLessEqual(len(switch._table), 6)
            for p in ports:
                self.assertLessEqual(len(switch.interfaceFor(p).macs), 2)
