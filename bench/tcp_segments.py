"""
A microbenchmark of the TCP machine's per-segment paths, without a link:
10000 in-order data segments from the guest through one ESTABLISHED
connection (its ACKs stretched as on the reactor), then 10000 segments' worth
of data written by the protocol and acknowledged by the guest.

    python3 bench/tcp_segments.py [segments] [rounds]

Prints the best of C{rounds} in microseconds per segment for each direction.
Only meaningful next to another run on the same machine (before/after a change).
"""

import socket
import sys
import time

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from gvtwisted.stack.tcp import TCPConnection
from gvtwisted.wire.tcp import ACK, PSH, SYN, buildSegment, parseSegment, timestampOption

LOCAL = ("192.168.127.1", 80)
REMOTE = ("192.168.127.2", 40000)
LOCAL_IP = socket.inet_aton(LOCAL[0])
REMOTE_IP = socket.inet_aton(REMOTE[0])
MASK = 0xFFFFFFFF
IRS = 1000
MSS = 1448


class Sink(Protocol):
    def __init__(self):
        self.bytes = 0

    def dataReceived(self, data):
        self.bytes += len(data)


def establish():
    clock = Clock()
    out = []
    conn = TCPConnection(clock, LOCAL, REMOTE, out.append, mss=1460,
                         receiveBufferSize=1 << 30, sendBufferSize=1 << 30, iss=5000)
    sink = Sink()
    conn.setProtocol(sink)
    syn = parseSegment(buildSegment(REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS, 0, SYN,
                                    65535, timestampOption(1, 0)))
    conn.receiveSyn(syn)
    conn.acceptSyn()
    conn.segmentReceived(parseSegment(buildSegment(
        REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS + 1, 5001, ACK, 65535,
        timestampOption(2, 0))))
    out.clear()
    return clock, out, conn, sink


def receive(count):
    clock, out, conn, sink = establish()
    payload = b"x" * MSS
    segs = [parseSegment(buildSegment(
        REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], (IRS + 1 + i * MSS) & MASK, 5001,
        ACK | PSH, 65535, timestampOption(3 + i, 0) + b"", payload)) for i in range(count)]
    start = time.perf_counter()
    for i, seg in enumerate(segs):
        conn.segmentReceived(seg)
        if i % 32 == 31:
            clock.advance(0)
    clock.advance(0)
    elapsed = time.perf_counter() - start
    assert sink.bytes == count * MSS, sink.bytes
    return elapsed / count


def send(count):
    clock, out, conn, sink = establish()
    chunk = b"y" * (MSS * 32)
    acks = [parseSegment(buildSegment(
        REMOTE_IP, LOCAL_IP, REMOTE[1], LOCAL[1], IRS + 1, (5001 + (i + 1) * MSS * 2) & MASK,
        ACK, 0xFFFF, timestampOption(3 + i, 0))) for i in range(count // 2)]
    conn._sndWnd = 1 << 30
    conn._maxSndWnd = 1 << 30
    start = time.perf_counter()
    for i in range(count // 32):
        conn.write(chunk)
        clock.advance(0)
        for ack in acks[i * 16:(i + 1) * 16]:
            conn.segmentReceived(ack)
        clock.advance(0)
    elapsed = time.perf_counter() - start
    assert len(out) >= count, len(out)
    return elapsed / count


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    rx = min(receive(count) for _ in range(rounds))
    tx = min(send(count) for _ in range(rounds))
    print(f"receive {rx * 1e6:.2f} us/segment  send+ack {tx * 1e6:.2f} us/segment")


if __name__ == "__main__":
    main()
