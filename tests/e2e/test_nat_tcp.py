"""
End to end: the guest's TCP through the NAT to servers on the host's loopback
(192.168.127.254 is the host's 127.0.0.1), with real curl, iperf3 and python
clients inside a namespace.
"""

import hashlib
import json
import os
import socket
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, run, skipReason, waitFor

SKIP = skipReason("curl", "iperf3")

HOST = "192.168.127.254"

# A server that answers each connection with the sha256 of all it received,
# after the client half-closes.
SHA_SERVER = r"""
import hashlib, socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(256)
print(s.getsockname()[1], flush=True)
def serve(c):
    h = hashlib.sha256()
    while True:
        d = c.recv(1 << 16)
        if not d: break
        h.update(d)
    c.sendall(h.hexdigest().encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# A client that uploads a file and prints the sha256 the server saw.
UPLOAD_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
with open(sys.argv[3], "rb") as f:
    while True:
        d = f.read(1 << 16)
        if not d: break
        c.sendall(d)
c.shutdown(socket.SHUT_WR)
out = b""
while True:
    d = c.recv(100)
    if not d: break
    out += d
print(out.decode())
"""

# An echo server, and a client that opens N connections at once through it.
ECHO_SERVER = r"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1024)
print(s.getsockname()[1], flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

PARALLEL_CLIENT = r"""
import socket, sys, selectors
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection((host, port), timeout=30) for _ in range(n)]
ok = 0
for i, s in enumerate(socks):
    msg = f"hello {i}\n".encode() * 100
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
for i, s in enumerate(socks):
    msg = f"hello {i}\n".encode() * 100
    got = b""
    while True:
        d = s.recv(65536)
        if not d: break
        got += d
    ok += got == msg
    s.close()
print(ok)
"""


def sha256File(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TCPNATTests(E2EMixin, SynchronousTestCase):
    """
    TCP from a guest namespace to the host through the NAT.
    """

    if SKIP:
        skip = SKIP

    def setUp(self):
        E2EMixin.setUp(self)
        self.daemon, sock = self.startDaemon()
        self.ns = Namespace(self)
        self.startGuest(self.ns, sock)
        self.ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        self.ns.run("ip", "route", "add", "default", "via", "192.168.127.1")

    def startServer(self, code, name):
        script = os.path.join(self.tempDir, f"{name}.py")
        with open(script, "w") as f:
            f.write(code)
        process = Process(self, [sys.executable, script], name)
        port = waitFor(lambda: process.output().strip().split("\n")[0]
                       if process.output().strip() else None, what=f"{name} to listen")
        return int(port)

    def bigFile(self, mib=100):
        path = os.path.join(self.tempDir, "random.bin")
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        return path

    def test_download(self):
        """
        curl downloads a 100 MiB random file from a server on the host's
        127.0.0.1 through .254, and its sha256 matches.
        """
        path = self.bigFile()
        web = Process(self, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", self.tempDir, "0"], "http")
        port = waitFor(lambda: _httpPort(web.output()), what="http.server")
        out = os.path.join(self.tempDir, "downloaded.bin")
        self.ns.run("curl", "-sS", "--max-time", "120", "-o", out,
                    f"http://{HOST}:{port}/random.bin", timeout=150)
        self.assertEqual(sha256File(out), sha256File(path))

    def test_upload(self):
        """
        A 100 MiB upload through the NAT arrives intact (sha256 on both sides),
        and the half-close lets the server's answer come back.
        """
        path = self.bigFile()
        port = self.startServer(SHA_SERVER, "sha")
        script = os.path.join(self.tempDir, "upload.py")
        with open(script, "w") as f:
            f.write(UPLOAD_CLIENT)
        result = self.ns.run(sys.executable, script, HOST, str(port), path, timeout=150)
        self.assertEqual(result.stdout.strip(), sha256File(path))

    def test_parallel(self):
        """
        200 parallel connections all succeed and each echoes its own bytes.
        """
        port = self.startServer(ECHO_SERVER, "echo")
        script = os.path.join(self.tempDir, "parallel.py")
        with open(script, "w") as f:
            f.write(PARALLEL_CLIENT)
        result = self.ns.run(sys.executable, script, HOST, str(port), "200", timeout=120)
        self.assertEqual(result.stdout.strip(), "200")

    def test_refusedAtOnce(self):
        """
        A closed host port is refused at once (RST), not after a timeout.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        started = time.monotonic()
        result = self.ns.run(sys.executable, "-c",
                             "import socket, sys; socket.create_connection("
                             f"('{HOST}', {port}), timeout=20)", check=False)
        elapsed = time.monotonic() - started
        self.assertIn("ConnectionRefusedError", result.stderr)
        self.assertLess(elapsed, 10)

    def test_iperf3(self):
        """
        iperf3 runs 5 s each way between the guest and the host's loopback,
        and moves data both ways.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        server = Process(self, ["iperf3", "-s", "--forceflush", "-B", "127.0.0.1", "-p", str(port)],
                         "iperf3")
        waitFor(lambda: "listening" in server.output().lower(), what="iperf3 server")
        for flags in ([], ["-R"]):
            result = self.ns.run("iperf3", "-c", HOST, "-p", str(port), "-t", "5", "-J",
                                 *flags, timeout=60)
            report = json.loads(result.stdout)
            self.assertGreater(report["end"]["sum_received"]["bytes"], 1 << 20)


def _httpPort(output):
    """
    The port from http.server's "Serving HTTP on 127.0.0.1 port N" line.
    """
    marker = "port "
    index = output.find(marker)
    if index < 0:
        return None
    digits = "".join(ch for ch in output[index + len(marker):].split()[0] if ch.isdigit())
    return int(digits) if digits else None
