"""
Coverage-guided fuzzing of the frame entry point with atheris.

    python bench/fuzz_frames.py [FRAMES]          # default 1,000,000

Two guest links (real SwitchPorts) on the daemon's network, on a Clock:
switch, gateway (ARP, IPv4, reassembly, ICMP), TCP demux with an echo listener
on the gateway, a virtual UDP echo port, DHCP, and a NAT stand-in that accepts
every connection and flow without opening a host socket (a fuzzer must not send
anything off the machine). Each input's first byte picks a link and an action
(a frame; pause, resume, drop and come back with the same MAC; the clock moving);
the rest is the frame. The corpus starts from valid frames of every kind.

It prints how many frames it tried, how many exceptions escaped
SwitchPort.frameReceived or framesReceived (must be 0: that would drop a
real link) and how many
the dispatch guards caught (error.* counters; each is a bug behind a guard).
Without atheris installed (pip install atheris) it says so and exits 0.
"""

import atexit
import os
import socket
import sys
import tempfile

try:
    import atheris
except ImportError:
    print("fuzz_frames: atheris is not installed (pip install atheris); nothing run")
    sys.exit(0)

with atheris.instrument_imports():
    from gvtwisted.config import NetworkConfig
    from gvtwisted.link.listeners import LinkFactory
    from gvtwisted.services.dhcp import DHCPConfig, DHCPServer
    from gvtwisted.stack.counters import Counters
    from gvtwisted.stack.network import VirtualNetwork
    from gvtwisted.stack.switch import Switch
    from gvtwisted.stack.tcpdemux import TCPDemux
    from gvtwisted.wire import arp, icmp, ipv4, udp
    from gvtwisted.wire import tcp as wiretcp

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

CONFIG = NetworkConfig()
GW_MAC, GW_IP = CONFIG.gatewayMAC, CONFIG.gatewayIPBytes
MACS = [bytes.fromhex("5a94efe40c01"), bytes.fromhex("5a94efe40c02")]
IPS = [socket.inet_aton("192.168.127.10"), socket.inet_aton("192.168.127.11")]
REMOTE = socket.inet_aton("198.51.100.7")


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class UDPEcho(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


class Side:
    def __init__(self):
        self.transport = StringTransport()

    def sendFrame(self, frame):
        pass


class StandInNAT:
    def __init__(self, network):
        self.network = network
        self.flows = {}

    def tcpSyn(self, conn):
        conn.setProtocol(Echo())
        conn.acceptSyn()

    def udpReceived(self, packet, srcPort, dstPort, data):
        key = (packet.src, srcPort, packet.dst, dstPort)
        if key not in self.flows and len(self.flows) < 1000:
            flow = Flow(key)
            self.flows[key] = flow
            link = self.network.linkFor(packet.src)
            if link is not None:
                link.addFlow(flow, self)

    def icmpReceived(self, packet, icmpType, code, rest):
        pass

    def releaseFlow(self, flow):
        self.flows.pop(flow.key, None)


class Flow:
    def __init__(self, key):
        self.key = key
        self.link = None


class World:
    def __init__(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.counters.logInterval = 1e9
        self.switch = Switch(self.clock, self.counters, linkGrace=5.0)
        self.network = VirtualNetwork(self.clock, CONFIG, self.switch, self.counters)
        self.demux = TCPDemux(self.clock, self.network, self.counters, maxConnections=2048)
        self.network.tcp = self.demux
        nat = StandInNAT(self.network)
        self.network.nat = nat
        self.demux.nat = nat
        dhcp = DHCPServer(DHCPConfig(serverIP=str(CONFIG.gatewayIP), subnet=CONFIG.subnet),
                          self.clock, self.counters)
        self.network.listenUDP(67, dhcp)
        self.network.listenUDP(7, UDPEcho())
        self.demux.listenTCP(7, Factory.forProtocol(Echo))
        self.factory = LinkFactory(self.network, self.counters)
        self.ports = [self.newPort(i) for i in range(2)]
        self.frames = 0
        self.escapes = 0

    def newPort(self, i):
        port = self.factory.makePort(f"fuzz{i}")
        port.attach(Side())
        return port

    def step(self, data):
        if not data:
            return
        head, frame = data[0], data[1:]
        i = head & 1
        action = head >> 1
        port = self.ports[i]
        if action == 0x7F:
            port.detach()
            self.ports[i] = self.newPort(i)
        elif action == 0x7E:
            port.pauseProducing()
        elif action == 0x7D:
            port.resumeProducing()
        elif action == 0x7C:
            # Two frames of one read, as a batch (the split point is the
            # frame's first byte).
            cut = frame[0] if frame else 0
            frames = [f for f in (frame[1:cut + 1], frame[cut + 1:]) if f]
            if frames:
                self.frames += len(frames)
                try:
                    port.framesReceived(frames)
                except Exception:
                    self.escapes += 1
                    raise
        elif action >= 0x78:
            self.clock.advance((action - 0x77) * 0.5)
        else:
            self.frames += 1
            try:
                port.frameReceived(frame)
            except Exception:
                self.escapes += 1
                raise
        if self.frames % 64 == 0:
            self.clock.advance(0)


def seeds():
    """
    Valid frames of every kind the network understands, as corpus files.
    """
    mac, ip = MACS[0], IPS[0]

    def ipFrame(dst, proto, payload):
        return GW_MAC + mac + b"\x08\x00" + ipv4.buildHeader(ip, dst, proto, len(payload)) + payload

    frames = [
        b"\xff" * 6 + mac + b"\x08\x06" + arp.build(arp.REQUEST, mac, ip, b"\x00" * 6, GW_IP),
        ipFrame(GW_IP, ipv4.PROTO_ICMP, icmp.build(icmp.ECHO_REQUEST, 0, b"\x00\x01\x00\x01ab")),
        ipFrame(GW_IP, ipv4.PROTO_UDP, udp.build(ip, GW_IP, 1000, 7, b"hello")),
        ipFrame(REMOTE, ipv4.PROTO_UDP, udp.build(ip, REMOTE, 1000, 53, b"query")),
        ipFrame(GW_IP, ipv4.PROTO_TCP, wiretcp.buildSegment(
            ip, GW_IP, 40000, 7, 1000, 0, wiretcp.SYN, 65535, wiretcp.mssOption(1460))),
        ipFrame(REMOTE, ipv4.PROTO_TCP, wiretcp.buildSegment(
            ip, REMOTE, 40001, 80, 1000, 0, wiretcp.SYN, 65535, wiretcp.mssOption(1460))),
        ipFrame(GW_IP, ipv4.PROTO_TCP, wiretcp.buildSegment(
            ip, GW_IP, 40000, 7, 1001, 1, wiretcp.ACK | wiretcp.PSH, 65535, b"", b"data")),
    ]
    fragments = ipv4.fragment(ip, GW_IP, ipv4.PROTO_UDP,
                              udp.build(ip, GW_IP, 1000, 7, b"f" * 3000), 1500, 77)
    frames += [GW_MAC + mac + b"\x08\x00" + f for f in fragments]
    directory = tempfile.mkdtemp(prefix="gvtap-fuzz-")
    for n, frame in enumerate(frames):
        with open(os.path.join(directory, f"seed{n}"), "wb") as f:
            f.write(b"\x00" + frame)
    return directory


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
    world = World()

    def report():
        caught = {k: v for k, v in world.counters.values.items() if k.startswith("error.")}
        print(f"fuzz_frames: inputs={runs} frames={world.frames} escapes={world.escapes} "
              f"caught={sum(caught.values())} {caught or ''}", flush=True)

    atexit.register(report)
    corpus = seeds()
    atheris.Setup([sys.argv[0], f"-atheris_runs={runs}", "-max_len=2048", corpus],
                  world.step)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
