"""
A hypothesis stateful test of the whole frame path over several guest links.

The network is the daemon's (switch, gateway, TCP demux, DHCP, a listener on the
gateway) on a L{Clock}; the NAT is a stand-in that accepts every connection and
opens a flow per UDP datagram, registering them with their links as the real
one does, but opens no host socket (tests send nothing off the machine). Guest
links are real L{SwitchPort}s. Rules add links, drop them, bring a dropped
guest back on a new link with the same MAC, pause and resume links, and send
valid, mutated and random frames; the clock moves.

Invariants, after every step:

  - no exception escapes a frame, and no guard of a dispatch point caught one
    (every C{error.*} counter is 0);
  - no connection or flow outlives its link's grace period;
  - every connection the demux holds is in its link's set, and every link's
    set holds only connections the demux holds;
  - no TCP segment with data is written into a paused link;
  - a frame the gateway built reaches a link only if it is broadcast or
    addressed to one of that link's MACs.
"""

import socket

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gvtwisted.config import NetworkConfig
from gvtwisted.link.listeners import LinkFactory
from gvtwisted.services.dhcp import DHCPConfig, DHCPServer
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.wire import arp, icmp, ipv4, udp
from gvtwisted.wire import tcp as wiretcp

GRACE = 5.0
CONFIG = NetworkConfig()
GW_MAC = CONFIG.gatewayMAC
GW_IP = CONFIG.gatewayIPBytes
MACS = [bytes.fromhex("5a94efe40c%02x" % i) for i in range(1, 6)]
IPS = [socket.inet_aton(f"192.168.127.{i}") for i in range(10, 15)]
REMOTE = socket.inet_aton("198.51.100.7")


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data * 3)


class GuestSide:
    """
    What a link's transport gets: frames, checked as they arrive.
    """

    def __init__(self, machine):
        self.transport = StringTransport()
        self.machine = machine
        self.port = None
        # Frames until the transport's buffer "fills" and it pauses the
        # link, as a real transport does from inside write().
        self.room = None

    def sendFrame(self, frame):
        self.machine.delivered(self, frame)
        if self.room is not None and not self.port.paused:
            self.room -= 1
            if self.room <= 0:
                self.room = None
                self.port.pauseProducing()


class StandInNAT:
    """
    Accepts every guest connection to a non-gateway address and opens one
    flow per UDP 4-tuple; holds no host socket.
    """

    prefix = "nat.standin"

    def __init__(self, network, counters):
        self.network = network
        self.counters = counters
        self.flows = {}

    def tcpSyn(self, conn):
        conn.setProtocol(Echo())
        conn.acceptSyn()

    def udpReceived(self, packet, srcPort, dstPort, data):
        key = (packet.src, srcPort, packet.dst, dstPort)
        if key not in self.flows:
            flow = Flow(key)
            self.flows[key] = flow
            link = self.network.linkFor(packet.src)
            if link is not None:
                link.addFlow(flow, self)

    def icmpReceived(self, packet, icmpType, code, rest):
        pass

    def releaseFlow(self, flow):
        self.flows.pop(flow.key, None)
        flow.closed = True


class Flow:
    def __init__(self, key):
        self.key = key
        self.closed = False
        self.link = None


def ethernet(dst, src, etherType, payload):
    return dst + src + etherType.to_bytes(2, "big") + payload


def ipFrame(mac, src, dst, proto, payload):
    return ethernet(GW_MAC, mac, 0x0800, ipv4.buildHeader(src, dst, proto, len(payload)) + payload)


class LinksMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters, maxMACsPerLink=3, linkGrace=GRACE)
        self.network = VirtualNetwork(self.clock, CONFIG, self.switch, self.counters)
        self.demux = TCPDemux(self.clock, self.network, self.counters, maxConnections=64)
        self.network.tcp = self.demux
        self.nat = StandInNAT(self.network, self.counters)
        self.network.nat = self.nat
        self.demux.nat = self.nat
        self.dhcp = DHCPServer(DHCPConfig(serverIP=str(CONFIG.gatewayIP), subnet=CONFIG.subnet),
                               self.clock, self.counters,
                               linkOf=lambda mac: self.switch.interfaceOf(
                                   bytes.fromhex(mac.replace(":", ""))))
        self.network.listenUDP(67, self.dhcp)
        self.demux.listenTCP(7, Factory.forProtocol(Echo))
        self.factory = LinkFactory(self.network, self.counters)
        self.links = []        # [(port, side, mac, ip)]
        self.downSince = {}    # iface -> when it went down
        self.seq = {}
        self.violations = []
        self.framesSent = 0
        self.framesDelivered = 0

    # -- links -------------------------------------------------------------

    @initialize()
    def firstLink(self):
        self.addLink(0)

    @precondition(lambda self: len(self.links) < 4)
    @rule(which=st.integers(0, len(MACS) - 1))
    def addLink(self, which):
        side = GuestSide(self)
        port = self.factory.makePort(f"guest{len(self.links)}")
        side.port = port
        port.attach(side)
        self.links.append((port, side, MACS[which], IPS[which]))
        # The guest says who it is (a returning guest takes its state over).
        self.send(len(self.links) - 1, ethernet(
            b"\xff" * 6, MACS[which], 0x0806,
            arp.build(arp.REQUEST, MACS[which], IPS[which], b"\x00" * 6, IPS[which])))

    @precondition(lambda self: self.links)
    @rule(data=st.data())
    def dropLink(self, data):
        index = data.draw(st.integers(0, len(self.links) - 1))
        port, side, mac, ip = self.links.pop(index)
        iface = self.switch.interfaceFor(port)
        port.detach()
        if iface is not None:
            self.downSince[iface] = self.clock.seconds()

    @precondition(lambda self: self.links)
    @rule(data=st.data(), paused=st.booleans())
    def pauseOrResume(self, data, paused):
        port = self.links[data.draw(st.integers(0, len(self.links) - 1))][0]
        if paused:
            port.pauseProducing()
        else:
            port.resumeProducing()

    @precondition(lambda self: self.links)
    @rule(data=st.data(), room=st.integers(1, 5))
    def fillsAfter(self, data, room):
        """
        The link's transport will fill (and pause it) after C{room} frames.
        """
        self.links[data.draw(st.integers(0, len(self.links) - 1))][1].room = room

    @rule(seconds=st.sampled_from([0, 0.01, 0.3, 1.0, 2.0, GRACE]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    # -- frames --------------------------------------------------------------

    def send(self, index, frame):
        port = self.links[index][0]
        self.framesSent += 1
        port.frameReceived(frame)

    def validFrame(self, index, kind, n):
        port, side, mac, ip = self.links[index]
        srcPort = 40000 + n % 64
        if kind == "syn-local" or kind == "syn-nat":
            dst, dstPort = (GW_IP, 7) if kind == "syn-local" else (REMOTE, 80)
            self.seq[(ip, srcPort, dst, dstPort)] = 1000
            seg = wiretcp.buildSegment(ip, dst, srcPort, dstPort, 1000, 0, wiretcp.SYN, 65535,
                                       wiretcp.mssOption(1460))
            return ipFrame(mac, ip, dst, ipv4.PROTO_TCP, seg)
        if kind == "data":
            if not self.demux._conns:
                return None
            keys = sorted(self.demux._conns)
            remote, remotePort, local, localPort = keys[n % len(keys)]
            conn = self.demux._conns[keys[n % len(keys)]]
            if remote != ip or conn.iss is None:
                return None
            seq = conn._rcvNxt & 0xFFFFFFFF
            seg = wiretcp.buildSegment(remote, local, remotePort, localPort, seq,
                                       (conn.iss + 1) & 0xFFFFFFFF, wiretcp.ACK | wiretcp.PSH,
                                       65535, b"", b"x" * (n % 3000 + 1))
            return ipFrame(mac, remote, local, ipv4.PROTO_TCP, seg)
        if kind == "udp-nat":
            return ipFrame(mac, ip, REMOTE, ipv4.PROTO_UDP,
                           udp.build(ip, REMOTE, srcPort, 53, b"q" * 20))
        if kind == "udp-local":
            return ipFrame(mac, ip, GW_IP, ipv4.PROTO_UDP,
                           udp.build(ip, GW_IP, srcPort, 9999, b"nobody"))
        if kind == "ping":
            body = icmp.build(icmp.ECHO_REQUEST, 0, b"\x12\x34\x00\x01pingpong")
            return ipFrame(mac, ip, GW_IP, ipv4.PROTO_ICMP, body)
        return ethernet(b"\xff" * 6, mac, 0x0806,
                        arp.build(arp.REQUEST, mac, ip, b"\x00" * 6, GW_IP))

    @precondition(lambda self: self.links)
    @rule(data=st.data(),
          kind=st.sampled_from(["syn-local", "syn-nat", "data", "udp-nat", "udp-local",
                                "ping", "arp"]),
          n=st.integers(0, 2 ** 16))
    def valid(self, data, kind, n):
        index = data.draw(st.integers(0, len(self.links) - 1))
        frame = self.validFrame(index, kind, n)
        if frame is not None:
            self.send(index, frame)

    @precondition(lambda self: self.links)
    @rule(data=st.data(),
          kind=st.sampled_from(["syn-local", "syn-nat", "udp-nat", "ping", "arp"]),
          flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=4),
          cut=st.integers(0, 300))
    def mutated(self, data, kind, flips, cut):
        index = data.draw(st.integers(0, len(self.links) - 1))
        frame = bytearray(self.validFrame(index, kind, 1))
        for offset, xor in flips:
            if offset < len(frame):
                frame[offset] ^= xor
        self.send(index, bytes(frame[:max(cut, 14)] if cut < len(frame) else frame))

    @precondition(lambda self: self.links)
    @rule(data=st.data(), raw=st.binary(max_size=120))
    def random(self, data, raw):
        index = data.draw(st.integers(0, len(self.links) - 1))
        self.send(index, raw)

    @precondition(lambda self: self.links)
    @rule(data=st.data(), n=st.integers(0, 63), nat=st.booleans())
    def establish(self, data, n, nat):
        """
        A whole handshake from a guest, to the gateway's echo port or through
        the NAT.
        """
        index = data.draw(st.integers(0, len(self.links) - 1))
        port, side, mac, ip = self.links[index]
        dst, dstPort = (REMOTE, 80) if nat else (GW_IP, 7)
        srcPort = 30000 + n
        self.send(index, ipFrame(mac, ip, dst, ipv4.PROTO_TCP, wiretcp.buildSegment(
            ip, dst, srcPort, dstPort, 5000, 0, wiretcp.SYN, 65535, wiretcp.mssOption(1460))))
        conn = self.demux._conns.get((ip, srcPort, dst, dstPort))
        if conn is None or conn.iss is None:
            return
        self.send(index, ipFrame(mac, ip, dst, ipv4.PROTO_TCP, wiretcp.buildSegment(
            ip, dst, srcPort, dstPort, 5001, (conn.iss + 1) & 0xFFFFFFFF, wiretcp.ACK,
            65535)))

    @precondition(lambda self: self.links)
    @rule(data=st.data(), room=st.integers(1, 4), size=st.integers(1, 20000))
    def burst(self, data, room, size):
        """
        A link pauses while every connection on it has data to send; it
        resumes with room for only a few frames, so the resume pauses it
        again part way.
        """
        port, side = self.links[data.draw(st.integers(0, len(self.links) - 1))][:2]
        iface = self.switch.interfaceFor(port)
        port.pauseProducing()
        for conn in sorted(iface.conns, key=repr):
            if conn.connected:
                conn.write(b"b" * size)
        self.clock.advance(0)
        side.room = room
        port.resumeProducing()

    @precondition(lambda self: self.demux._conns)
    @rule(n=st.integers(0, 1000))
    def gatewayWrites(self, n):
        conns = sorted(self.demux._conns.items())
        conn = conns[n % len(conns)][1]
        if conn.connected:
            conn.write(b"w" * (n * 7 % 5000 + 1))

    # -- what the links get ----------------------------------------------------

    def delivered(self, side, frame):
        self.framesDelivered += 1
        port = side.port
        iface = self.switch.interfaceFor(port)
        if frame[6:12] == GW_MAC and not frame[0] & 1:
            if iface is None or frame[0:6] not in iface.macs:
                self.violations.append(("gateway frame for another link", frame[:14].hex()))
        if (port.paused and len(frame) > 34 and frame[12:14] == b"\x08\x00"
                and frame[23] == ipv4.PROTO_TCP):
            try:
                packet = ipv4.parse(frame)
                seg = wiretcp.parseSegment(bytes(packet.payload))
            except Exception:
                return
            if seg.payload:
                self.violations.append(("data into a paused link", frame[:14].hex()))

    # -- invariants --------------------------------------------------------------

    @invariant()
    def nothingCaught(self):
        caught = {k: v for k, v in self.counters.values.items() if k.startswith("error.") and v}
        assert not caught, caught

    @invariant()
    def countersAddUp(self):
        values = self.counters.values
        assert values["link.framesReceived"] == self.framesSent
        assert values["link.framesSent"] == self.framesDelivered
        assert values["tcp.connectionsOpened"] >= self.demux.connectionCount()

    @invariant()
    def noViolation(self):
        assert not self.violations, self.violations[:3]

    @invariant()
    def connectionsBelongToLinks(self):
        conns = set(self.demux._conns.values())
        ifaces = set(self.switch._ifaces.values()) | set(self.downSince)
        for conn in conns:
            if conn.link is not None:
                assert conn in conn.link.conns, conn
        for iface in ifaces:
            assert iface.conns <= conns, (iface, iface.conns - conns)
            assert set(iface.blocked) <= iface.conns, iface

    @invariant()
    def nothingOutlivesGrace(self):
        now = self.clock.seconds()
        for iface, since in list(self.downSince.items()):
            if iface.up:
                # Taken over by a returning guest: no longer down.
                del self.downSince[iface]
                continue
            if now - since >= GRACE:
                assert not iface.conns, (iface, iface.conns)
                assert not iface.flows, (iface, iface.flows)
                assert not iface.macs, iface
        for flow in self.nat.flows.values():
            link = flow.link
            if link is not None and not link.up and link in self.downSince:
                assert now - self.downSince[link] < GRACE

    def teardown(self):
        self.clock.advance(GRACE * 10)


class LinksStatefulTest(LinksMachine.TestCase):
    """
    The machine above, run by hypothesis.
    """

    settings = settings(max_examples=300, stateful_step_count=50, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow])

    def test_links(self):
        """
        Links come, go, come back, pause and resume while valid, mutated and
        random frames flow: the invariants hold after every step.
        """
        self.runTest()
