"""
End to end: the control API and port forwarding with a real C{twistd gvtap}
and a guest in a network namespace (192.168.127.2, default route via the
gateway).

Servers run inside the guest namespace; clients run on the host (in this test
process) or in a second namespace, "client", reached over a veth pair, which
stands in for another machine. The API is driven with curl over the daemon's
unix socket, as podman and CRC drive gvproxy's.

Network rule: every address used is loopback, the virtual network, or a veth
pair made here; every namespace and veth is removed at cleanup.
"""

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, freePort, Namespace, Process, run, skipReason, waitFor

SKIP = skipReason("curl")

GUEST = "192.168.127.2"

# One guest server for the TCP tests. Modes: "peer" answers with the
# client's address (and prints it); "echo" echoes until EOF; "sha" answers
# with the sha256 of everything received; "send" sends a file then closes.
GUEST_TCP = r"""
import hashlib, socket, sys, threading
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.127.2", port)); s.listen(512)
print("ready", flush=True)
def serve(c, peer):
    try:
        if mode == "peer":
            print("peer", peer[0], flush=True)
            c.sendall(f"{peer[0]}\n".encode())
        elif mode == "echo":
            while True:
                d = c.recv(65536)
                if not d: break
                c.sendall(d)
        elif mode == "sha":
            h = hashlib.sha256()
            while True:
                d = c.recv(1 << 16)
                if not d: break
                h.update(d)
            c.sendall(h.hexdigest().encode())
        elif mode == "send":
            with open(sys.argv[3], "rb") as f:
                while True:
                    d = f.read(1 << 16)
                    if not d: break
                    c.sendall(d)
    finally:
        c.close()
while True:
    c, peer = s.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"""

GUEST_UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.168.127.2", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, peer = s.recvfrom(65535)
    print("peer", peer[0], flush=True)
    s.sendto(d, peer)
"""


def freeSubnet():
    """
    A 10.203.X.0/24 that no address or route on the host uses.
    """
    used = run(["ip", "-4", "route"]).stdout + run(["ip", "-4", "addr"]).stdout
    for n in [0] + list(range(1 + os.getpid() % 200, 250)) + list(range(1, 1 + os.getpid() % 200)):
        if f"10.203.{n}." not in used:
            return f"10.203.{n}."
    raise AssertionError("no free 10.203.X.0/24 on this host")


def sha256File(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class APITestsMixin(E2EMixin):
    """
    A daemon, a guest, and helpers to drive the API and to start guest
    servers.
    """

    daemonArgs = ()

    def setUp(self):
        E2EMixin.setUp(self)
        self.daemon, self.sock = self.startDaemon("--ssh-port", "-1", *self.daemonArgs)
        self.guest = Namespace(self)
        self.startGuest(self.guest, self.sock)
        self.guest.run("ip", "addr", "add", f"{GUEST}/24", "dev", "tap0")
        self.guest.run("ip", "route", "add", "default", "via", "192.168.127.1")

    def api(self, path, body=None, sock=None):
        """
        curl the API over the daemon's unix socket; return (status, body),
        the body exactly as served.
        """
        args = ["curl", "-sS", "--max-time", "20", "--unix-socket", sock or self.sock,
                "-w", "\n%{http_code}", f"http://x{path}"]
        if body is not None:
            args += ["-d", json.dumps(body)]
        out = run(args, timeout=30).stdout
        text, _, code = out.rpartition("\n")
        return int(code), text

    def expose(self, local, remote, protocol="tcp"):
        code, text = self.api("/services/forwarder/expose",
                              {"local": local, "remote": remote, "protocol": protocol})
        self.assertEqual((code, text), (200, ""))

    def guestServer(self, code, name, *args):
        """
        Start a Python server inside the guest; return once it listens.
        """
        script = os.path.join(self.tempDir, f"{name}.py")
        with open(script, "w") as f:
            f.write(code)
        process = Process(self, self.guest.exec(sys.executable, script, *args), name)
        waitFor(lambda: "ready" in process.output() or not process.alive(), what=name)
        self.assertTrue(process.alive(), process.output())
        return process

    def tcpServer(self, mode, port, *extra):
        return self.guestServer(GUEST_TCP, f"tcp-{mode}-{port}", mode, str(port), *extra)

    def httpServer(self, port=8080):
        """
        C{python3 -m http.server} in the guest, serving a file C{hello.txt}.
        """
        with open(os.path.join(self.tempDir, "hello.txt"), "w") as f:
            f.write("hello from the guest\n")
        process = Process(self, self.guest.exec(sys.executable, "-m", "http.server", "--bind", GUEST,
                                                "--directory", self.tempDir, str(port)), "http")
        waitFor(lambda: "Serving HTTP" in process.output() or not process.alive(), what="http.server")
        return process


def readAll(s):
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data
        data += d


class ForwardTests(APITestsMixin, SynchronousTestCase):
    """
    Forwards made through the API, and the API itself, against a real guest.
    """

    if SKIP:
        skip = SKIP

    def test_exposeAndUnexpose(self):
        """
        curl through an exposed port gets the guest's http.server; after
        unexpose the port is refused; a second expose of the same local is
        500 C{proxy already running}.
        """
        self.httpServer()
        port = freePort()
        local = f"127.0.0.1:{port}"
        self.expose(local, f"{GUEST}:8080")
        out = run(["curl", "-sS", "--max-time", "20", f"http://{local}/hello.txt"], timeout=30)
        self.assertEqual(out.stdout, "hello from the guest\n")
        self.assertEqual(self.api("/services/forwarder/all")[1].strip(), json.dumps(
            [{"local": local, "remote": f"{GUEST}:8080", "protocol": "tcp"}]))
        self.assertEqual(self.api("/services/forwarder/expose",
                                  {"local": local, "remote": f"{GUEST}:8080"}),
                         (500, "proxy already running\n"))
        self.assertEqual(self.api("/services/forwarder/unexpose", {"local": local}), (200, ""))
        result = run(["curl", "-sS", "--max-time", "10", f"http://{local}/"], check=False)
        self.assertEqual(result.returncode, 7, result.stderr)  # couldn't connect

    def test_guestRefuses(self):
        """
        A forward to a closed guest port closes the host connection at once.
        """
        port = freePort()
        self.expose(f"127.0.0.1:{port}", f"{GUEST}:9")
        try:
            # The reset can come before connect() even returns: at once.
            c = socket.create_connection(("127.0.0.1", port), timeout=20)
        except ConnectionResetError:
            return
        self.addCleanup(c.close)
        try:
            self.assertEqual(c.recv(10), b"")
        except ConnectionResetError:
            pass

    def test_udp(self):
        """
        A UDP forward to an echo server in the guest round-trips, for two
        clients at once.
        """
        self.guestServer(GUEST_UDP_ECHO, "udp-echo", "5300")
        port = freePort(socket.SOCK_DGRAM)
        self.expose(f"127.0.0.1:{port}", f"{GUEST}:5300", "udp")
        clients = []
        for i in range(2):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(2)
            self.addCleanup(c.close)
            clients.append(c)
        for attempt in range(5):
            try:
                for i, c in enumerate(clients):
                    c.sendto(f"ping {i}".encode(), ("127.0.0.1", port))
                self.assertEqual([c.recvfrom(100)[0] for c in clients], [b"ping 0", b"ping 1"])
                break
            except socket.timeout:
                # The first datagram may wait for ARP; UDP does not retry.
                continue
        else:
            self.fail("no UDP echo through the forward")

    def test_unix(self):
        """
        A unix forward reaches the guest's http.server, and its socket has
        mode 0600.
        """
        self.httpServer()
        path = os.path.join(self.tempDir, "fwd.sock")
        self.expose(path, f"{GUEST}:8080", "unix")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        out = run(["curl", "-sS", "--max-time", "20", "--unix-socket", path, "http://x/hello.txt"],
                  timeout=30)
        self.assertEqual(out.stdout, "hello from the guest\n")

    def test_exposeFromGuest(self):
        """
        The guest exposes its own port through http://192.168.127.1/ with a
        remote of C{":8080"} (its own address), and the host reaches it.
        """
        self.httpServer()
        port = freePort()
        result = self.guest.run(
            "curl", "-sS", "--max-time", "20", "-w", "%{http_code}",
            "http://192.168.127.1/services/forwarder/expose",
            "-d", json.dumps({"local": f"127.0.0.1:{port}", "remote": ":8080"}), timeout=30)
        self.assertEqual(result.stdout, "200")
        self.assertEqual(json.loads(self.api("/services/forwarder/all")[1])[0]["remote"],
                         f"{GUEST}:8080")
        out = run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}/hello.txt"], timeout=30)
        self.assertEqual(out.stdout, "hello from the guest\n")
        code = self.guest.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                              "http://192.168.127.1/stats", timeout=30).stdout
        self.assertEqual(code, "404")

    def test_tunnel(self):
        """
        C{/tunnel} answers the raw bytes C{OK} and then carries bytes both
        ways to the guest's echo server.
        """
        self.tcpServer("echo", 7007)
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(20)
        self.addCleanup(c.close)
        c.connect(self.sock)
        c.sendall(f"GET /tunnel?ip={GUEST}&port=7007 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while len(got) < 2:
            got += c.recv(2 - len(got))
        self.assertEqual(got, b"OK")
        message = os.urandom(100000)
        c.sendall(message)
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(readAll(c), message)

    def test_parallel(self):
        """
        100 parallel connections through one forward each get their own
        bytes back.
        """
        self.tcpServer("echo", 7008)
        port = freePort()
        self.expose(f"127.0.0.1:{port}", f"{GUEST}:7008")
        results = [None] * 100

        def client(i):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
                    message = f"connection {i}\n".encode() * 200
                    c.sendall(message)
                    c.shutdown(socket.SHUT_WR)
                    results[i] = readAll(c) == message
            except OSError as e:
                results[i] = repr(e)

        workers = [threading.Thread(target=client, args=(i,)) for i in range(100)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        self.assertEqual(results, [True] * 100)

    def test_bulk(self):
        """
        50 MiB each way through a forward, with matching sha256.
        """
        path = os.path.join(self.tempDir, "random.bin")
        with open(path, "wb") as f:
            for _ in range(50):
                f.write(os.urandom(1 << 20))
        expected = sha256File(path)
        self.tcpServer("sha", 7009)
        self.tcpServer("send", 7010, path)
        up, down = freePort(), freePort()
        self.expose(f"127.0.0.1:{up}", f"{GUEST}:7009")
        self.expose(f"127.0.0.1:{down}", f"{GUEST}:7010")
        with socket.create_connection(("127.0.0.1", up), timeout=120) as c:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 16), b""):
                    c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            self.assertEqual(readAll(c).decode(), expected)
        with socket.create_connection(("127.0.0.1", down), timeout=120) as c:
            h = hashlib.sha256()
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                h.update(d)
            self.assertEqual(h.hexdigest(), expected)

    def test_clientAddress(self):
        """
        A connection from another machine (the "client" namespace over a
        veth pair) shows the guest that machine's address; one from the
        host's loopback shows the host address.
        """
        prefix = freeSubnet()
        client = Namespace(self, prefix="gvtcli")
        hostSide = f"gvtapi{os.getpid() % 100000}"
        run(["ip", "link", "add", hostSide, "type", "veth", "peer", "name", "cli0",
             "netns", client.name])
        self.addCleanup(subprocess.run, ["ip", "link", "del", hostSide], capture_output=True)
        run(["ip", "addr", "add", prefix + "1/24", "dev", hostSide])
        run(["ip", "link", "set", hostSide, "up"])
        client.run("ip", "addr", "add", prefix + "2/24", "dev", "cli0")
        client.run("ip", "link", "set", "cli0", "up")
        server = self.tcpServer("peer", 7011)
        port = freePort()
        self.expose(f"{prefix}1:{port}", f"{GUEST}:7011")
        script = ("import socket, sys\n"
                  "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)\n"
                  "print(c.recv(100).decode().strip())\n")
        result = waitFor(lambda: client.run(sys.executable, "-c", script, prefix + "1", str(port),
                                            check=False, timeout=30).stdout.strip(),
                         timeout=20, what="an answer from the guest to the client namespace")
        self.assertEqual(result, prefix + "2")
        self.assertIn(f"peer {prefix}2", server.output())
        self.expose(f"127.0.0.1:{port}", f"{GUEST}:7011")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            self.assertEqual(readAll(c), b"192.168.127.254\n")

    def test_observability(self):
        """
        /stats counts the forward's connection and bytes, and /metrics
        serves the same counter.
        """
        self.tcpServer("echo", 7012)
        port = freePort()
        self.expose(f"127.0.0.1:{port}", f"{GUEST}:7012")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            c.sendall(b"x" * 1000)
            c.shutdown(socket.SHUT_WR)
            readAll(c)
        code, text = self.api("/gvtap/stats")
        stats = json.loads(text)
        self.assertEqual(stats["counters"]["forward.tcp.connections"], 1)
        self.assertEqual(stats["counters"]["forward.tcp.bytesToGuest"], 1000)
        self.assertEqual(stats["gauges"]["links"], 1)
        code, text = self.api("/metrics")
        self.assertIn("\ngvtap_forward_tcp_connections 1\n", text)
        # gvproxy's shapes: gVisor's tree, MAC to port number, the lease table.
        gvisor = json.loads(self.api("/stats")[1])
        self.assertGreater(gvisor["BytesSent"], 1000)
        self.assertGreater(gvisor["BytesReceived"], 1000)
        self.assertEqual(gvisor["TCP"]["ActiveConnectionOpenings"], 1)
        self.assertEqual(json.loads(self.api("/cam")[1]), {"5a:94:ef:e4:0c:ee": 0})
        self.assertEqual(json.loads(self.api("/leases")[1]),
                         {"192.168.127.1": "5a:94:ef:e4:0c:dd", "192.168.127.2": "5a:94:ef:e4:0c:ee"})


class DaemonTests(E2EMixin, SynchronousTestCase):
    """
    The API's endpoints and static forwards as the daemon's options make them.
    """

    if SKIP:
        skip = SKIP

    def test_socketModes(self):
        """
        The --listen and --services unix sockets have mode 0600 whatever the
        umask, and --services serves the API.
        """
        api = os.path.join(self.tempDir, "api.sock")
        old = os.umask(0)
        try:
            _, sock = self.startDaemon("--ssh-port", "-1", "--services", f"unix://{api}")
        finally:
            os.umask(old)
        waitFor(lambda: os.path.exists(api), what="the API socket")
        for path in (sock, api):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
        out = run(["curl", "-sS", "--unix-socket", api, "http://x/services/forwarder/all"]).stdout
        self.assertEqual(out, "[]\n")
        # The API-only endpoint has no /connect.
        result = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", api,
                      "-X", "POST", "http://x/connect"], check=False)
        self.assertEqual(result.stdout, "404")

    def test_tls(self):
        """
        An ssl: --services endpoint with --services-ca serves a client with a
        certificate from that CA and refuses one without.
        """
        from tests.test_api import makeCertificates

        certs = makeCertificates(self.tempDir)
        port = freePort()
        self.startDaemon("--ssh-port", "-1", "--services-ca", certs["ca"], "--services",
                         f"ssl:{port}:interface=127.0.0.1:privateKey={certs['serverKey']}"
                         f":certKey={certs['serverCert']}")
        url = f"https://127.0.0.1:{port}/services/forwarder/all"
        base = ["curl", "-sS", "--max-time", "10", "--cacert", certs["ca"]]
        waitFor(lambda: run(base + ["--cert", certs["clientCert"], "--key", certs["clientKey"], url],
                            check=False).returncode == 0, what="the TLS API")
        good = run(base + ["--cert", certs["clientCert"], "--key", certs["clientKey"], url])
        self.assertEqual(good.stdout, "[]\n")
        bad = run(base + [url], check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertEqual(bad.stdout, "")
        rogue = run(base + ["--cert", certs["rogueCert"], "--key", certs["rogueKey"], url], check=False)
        self.assertNotEqual(rogue.returncode, 0)

    def test_staticForwards(self):
        """
        --forward and --ssh-port forwards are listed; a second daemon whose
        forwards are taken logs one line for each and runs on.
        """
        web, ssh = freePort(), freePort()
        args = ("--ssh-port", str(ssh), "--forward", f"127.0.0.1:{web}=192.168.127.2:8080",
                "--forward", f"udp:127.0.0.1:{web}=192.168.127.2:53")
        _, sock = self.startDaemon(*args)
        forwards = json.loads(run(["curl", "-sS", "--unix-socket", sock,
                                   "http://x/services/forwarder/all"]).stdout)
        self.assertEqual(sorted((f["local"], f["remote"], f["protocol"]) for f in forwards), sorted([
            (f"127.0.0.1:{ssh}", "192.168.127.2:22", "tcp"),
            (f"127.0.0.1:{web}", "192.168.127.2:8080", "tcp"),
            (f"127.0.0.1:{web}", "192.168.127.2:53", "udp")]))
        second, sock2 = self.startDaemon(*args, name="second")
        waitFor(lambda: second.output().count("cannot forward") >= 3 or not second.alive(),
                what="the second daemon's complaints")
        self.assertTrue(second.alive(), second.output())
        self.assertEqual(second.output().count("cannot forward"), 3, second.output())
        self.assertIn("Address already in use", second.output())
        out = run(["curl", "-sS", "--unix-socket", sock2, "http://x/services/forwarder/all"]).stdout
        self.assertEqual(out, "[]\n")
