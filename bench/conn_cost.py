"""
What one idle virtual TCP connection costs in memory, measured with
tracemalloc: a network on a Clock, one guest link, N connections from the
guest to a gateway port, each through its handshake, with nothing buffered.

    python bench/conn_cost.py [N]

Prints bytes per connection (everything allocated: the TCPConnection, its
buffers, the protocol, the table entries, the link's sets).
"""

import socket
import sys
import tracemalloc

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from gvtwisted.config import NetworkConfig
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.wire import ipv4
from gvtwisted.wire import tcp as wiretcp

GW_MAC = NetworkConfig().gatewayMAC
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GW_IP = socket.inet_aton("192.168.127.1")
GUEST_IP = socket.inet_aton("192.168.127.2")


class Port:
    def __init__(self):
        self.last = None

    def sendFrame(self, frame):
        self.last = frame


def frame(flags, srcPort, seq, ack=0):
    seg = wiretcp.buildSegment(GUEST_IP, GW_IP, srcPort, 7777, seq, ack, flags, 65535,
                               wiretcp.mssOption(1460) if flags & wiretcp.SYN else b"")
    return GW_MAC + GUEST_MAC + b"\x08\x00" + ipv4.buildHeader(
        GUEST_IP, GW_IP, ipv4.PROTO_TCP, len(seg)) + seg


def main(n):
    clock = Clock()
    counters = Counters(clock)
    switch = Switch(clock, counters)
    network = VirtualNetwork(clock, NetworkConfig(), switch, counters)
    demux = TCPDemux(clock, network, counters, maxConnections=n + 10)
    network.tcp = demux
    port = Port()
    switch.attach(port)
    demux.listenTCP(7777, Factory.forProtocol(Protocol))

    def open(i):
        srcPort = 1024 + i
        switch.receiveFrame(port, frame(wiretcp.SYN, srcPort, 1000))
        synAck = wiretcp.parseSegment(ipv4.parse(port.last).payload)
        switch.receiveFrame(port, frame(wiretcp.ACK, srcPort, 1001, synAck.seq + 1))

    open(0)  # warm up: first-use allocations are not per connection
    clock.advance(0)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(1, n + 1):
        open(i)
    clock.advance(0)
    after = tracemalloc.take_snapshot()
    assert demux.connectionCount() == n + 1, demux.connectionCount()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"connections={n} bytes_per_connection={total // n}")
    top = after.compare_to(before, "lineno")[:5]
    for stat in top:
        print(f"  {stat.size_diff // n:6d} B/conn  {stat.traceback}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
