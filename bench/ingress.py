"""
A microbenchmark of the daemon's whole ingress path at MTU 1500, without
sockets: batches of 1448-byte in-order TCP data frames from one guest link go
through the switch, the gateway, the IPv4 layer, the demultiplexer and the TCP
machine of a NAT'd connection into its host side (a transport that only counts
bytes), as the frames of one link read do; the ACKs the stack sends go to a
link that drops them.

    python3 bench/ingress.py [frames] [rounds]

Prints the best of C{rounds} in microseconds per frame (and frames per second).
This is the path that bounds plain-frame uploads (the daemon at 100 % CPU in
C{bench/iperf3.sh}'s MTU 1500 up cell); it is only meaningful next to another
run on the same machine (before/after a change, e.g. with C{PYTHONPATH} set to
another tree).
"""

import os
import socket
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.wire import ipv4
from gvtwisted.wire import tcp as wiretcp
from gvtwisted.wire.tcp import ACK, PSH, SYN

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GUEST_IP = socket.inet_aton("192.168.127.2")
REMOTE = "10.1.2.3"
REMOTE_IP = socket.inet_aton(REMOTE)
GUEST_PORT = 40000
ISN = 0x20000000
MSS = 1448
BATCH = 43  # 1514-byte frames in one 64 KiB read
MASK = 0xFFFFFFFF


class DropPort:
    name = "guest"

    def __init__(self):
        self.frames = 0
        self.last = None

    def sendFrame(self, frame):
        self.frames += 1
        self.last = frame

    def sendFrameParts(self, parts, vnet=None):
        # A switch port's signature (the switch hands a port pieces and,
        # for an offload link, the virtio-net header).
        self.frames += 1
        self.last = b"".join(parts)


class CountingTransport(StringTransport):
    def __init__(self):
        StringTransport.__init__(self, peerAddress=IPv4Address("TCP", REMOTE, 80))
        self.count = 0

    def write(self, data):
        self.count += len(data)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


def frame(seq, ack, flags, payload=b"", options=b"", tsval=None):
    if tsval is not None:
        options = b"\x01\x01" + wiretcp.timestampOption(tsval, 0)  # as Linux lays them out
    seg = wiretcp.buildSegment(GUEST_IP, REMOTE_IP, GUEST_PORT, 80, seq & MASK, ack & MASK,
                               flags, 65535, options, payload)
    return GW_MAC + GUEST_MAC + b"\x08\x00" + ipv4.buildHeader(
        GUEST_IP, REMOTE_IP, ipv4.PROTO_TCP, len(seg)) + seg


def connected():
    reactor = MemoryReactorClock()
    gvtap = Gvtap(reactor, NetworkConfig(), resolvConf=os.devnull)
    port = DropPort()
    gvtap.switch.attach(port)
    switch = gvtap.switch
    switch.receiveFrame(port, frame(ISN, 0, SYN, options=wiretcp.mssOption(1460) + b"\x01\x01"
                                    + wiretcp.timestampOption(1, 0)))
    host, _, factory, _, _ = reactor.tcpClients[0]
    side = factory.buildProtocol(IPv4Address("TCP", host, 80))
    transport = CountingTransport()
    side.makeConnection(transport)
    reactor.advance(0)
    synAck = wiretcp.parseSegment(bytes(ipv4.parse(port.last).payload))
    switch.receiveFrame(port, frame(ISN + 1, synAck.seq + 1, ACK, tsval=2))
    reactor.advance(0)
    return reactor, switch, port, transport, (synAck.seq + 1) & MASK


def run(count):
    reactor, switch, port, transport, ourSeq = connected()
    payload = b"x" * MSS
    frames = [frame(ISN + 1 + i * MSS, ourSeq, ACK | PSH, payload, tsval=3 + i)
              for i in range(count)]
    batches = [frames[i:i + BATCH] for i in range(0, count, BATCH)]
    start = time.perf_counter()
    for batch in batches:
        switch.receiveFrames(port, batch)
        reactor.advance(0)
    elapsed = time.perf_counter() - start
    assert transport.count == count * MSS, (transport.count, count * MSS)
    return elapsed / count * 1e6


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 20000
    rounds = int(argv[2]) if len(argv) > 2 else 5
    best = min(run(count) for _ in range(rounds))
    print(f"ingress mtu=1500 us_per_frame={best:.2f} frames_per_s={1e6 / best:.0f}")


if __name__ == "__main__":
    main(sys.argv)
