#!/usr/bin/env python3
"""
The two ends of bench/rr.sh: request/response latency and connection rate over
TCP, with nothing but the standard library (the client runs in the guest
namespace, the server on the host's loopback).

    rr.py server PORT
        Echo every byte back on each connection, on 127.0.0.1:PORT, until killed.
        Prints "ready" once it listens.

    rr.py client HOST PORT [PINGS [CONNECTIONS]]
        1. One connection, PINGS times (default 3000): send 1 byte, wait for it to
           come back; the median and the 90th percentile of the round trip.
        2. CONNECTIONS times (default 600), one after the other: connect, send 1
           byte, receive it, close; connections per second over the whole run.
        Prints one line: rr_us=MEDIAN rr_p90_us=P90 conn_per_s=RATE

Both ends use TCP_NODELAY, so each byte goes out at once.
"""

import selectors
import socket
import statistics
import sys
import time


def server(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    sock.sendall(data)
                except OSError:
                    data = b""
            if not data:
                selector.unregister(sock)
                sock.close()


def connect(host, port):
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client(host, port, pings, connections):
    sock = connect(host, port)
    times = []
    clock = time.perf_counter
    for _ in range(pings):
        start = clock()
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise SystemExit("rr.py: the echo went wrong")
        times.append(clock() - start)
    sock.close()
    start = clock()
    for _ in range(connections):
        sock = connect(host, port)
        sock.sendall(b"y")
        if sock.recv(1) != b"y":
            raise SystemExit("rr.py: the echo went wrong")
        sock.close()
    elapsed = clock() - start
    times.sort()
    print(f"rr_us={statistics.median(times) * 1e6:.0f}"
          f" rr_p90_us={times[int(len(times) * 0.9)] * 1e6:.0f}"
          f" conn_per_s={connections / elapsed:.0f}")


def main(argv):
    if len(argv) >= 3 and argv[1] == "server":
        server(int(argv[2]))
    elif len(argv) >= 4 and argv[1] == "client":
        client(argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 3000,
               int(argv[5]) if len(argv) > 5 else 600)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
