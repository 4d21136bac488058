"""
End to end: each guest link owns its state. A real C{twistd gvtap}, guests
in namespaces of the test's own behind real C{gvtap-guest} helpers, servers on
the host's loopback reached through 192.168.127.254.

  - a guest that vanishes (helper killed, namespace deleted) has its host
    sockets closed once C{--link-grace} has passed;
  - no frame addressed to a vanished guest reaches another guest;
  - a link that floods source MACs and then claims another guest's MAC and
    address gets nothing of that guest's, whose pings keep flowing;
  - a helper killed and restarted within 3 s mid-download loses nothing.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, run, skipReason, waitFor

SKIP = skipReason("curl", "tcpdump", "ping")

HOST = "192.168.127.254"
MAC_A = "5a:94:ef:e4:0c:ee"
MAC_B = "5a:94:ef:e4:0c:01"

# Streams bytes to every connection for as long as it is read; prints its port.
STREAM_SERVER = r"""
import socket, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(256)
print(s.getsockname()[1], flush=True)
block = b"s" * 65536
def serve(c):
    try:
        kind = c.recv(1)
        if kind == b"i":
            c.recv(1)          # idle: wait for the other end to go
            return
        while True:
            c.sendall(block)
            if kind == b"s":   # slow: the link never fills
                time.sleep(0.05)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# In the guest: IDLE idle connections and one download that reads forever.
GUEST_CLIENT = r"""
import socket, sys, time
host, port, idle, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conns = []
for _ in range(idle):
    c = socket.create_connection((host, port), timeout=30); c.sendall(b"i"); conns.append(c)
d = socket.create_connection((host, port), timeout=30); d.sendall(kind.encode())
print("ready", flush=True)
while True:
    if not d.recv(1 << 16):
        break
"""


def openFiles(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def stats(sock):
    return json.loads(run(["curl", "-sS", "--unix-socket", sock, "http://gvtap/gvtap/stats"]).stdout)


def startServer(testCase, code, name):
    """
    Run the server C{code} on the host; return the port it printed.
    """
    script = os.path.join(testCase.tempDir, f"{name}.py")
    with open(script, "w") as f:
        f.write(code)
    process = Process(testCase, [sys.executable, script], name)
    port = waitFor(lambda: process.output().strip().split("\n")[0]
                   if process.output().strip() else None, what=f"{name} to listen")
    return int(port)


class LinkGraceTests(E2EMixin, SynchronousTestCase):
    """
    What a guest leaves behind when its link goes.
    """

    if SKIP:
        skip = SKIP

    def startServer(self, code, name):
        return startServer(self, code, name)

    def guest(self, sock, ip, mac, **kw):
        ns = Namespace(self)
        helper = self.startGuest(ns, sock, mac=mac, **kw)
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "tap0")
        ns.run("ip", "route", "add", "default", "via", "192.168.127.1")
        return ns, helper

    def runClient(self, ns, port, idle, kind="d"):
        script = os.path.join(self.tempDir, "client.py")
        with open(script, "w") as f:
            f.write(GUEST_CLIENT)
        client = Process(self, ns.exec(sys.executable, script, HOST, str(port), str(idle), kind),
                         f"client-{ns.name}")
        waitFor(lambda: "ready" in client.output() or not client.alive(), timeout=60,
                what="the guest's connections")
        self.assertTrue(client.alive(), client.output())
        return client

    def test_vanishedGuestReleased(self):
        """
        (a) A guest with 50 idle connections and a download in progress
        loses its link and its namespace: during the grace period the daemon
        still holds the host sockets; within C{--link-grace} plus a few
        seconds its open file descriptors are back to where they were before
        the guest came, and the counters say why.
        """
        grace = 4
        daemon, sock = self.startDaemon("--link-grace", str(grace))
        port = self.startServer(STREAM_SERVER, "stream")
        time.sleep(0.5)
        before = openFiles(daemon.popen.pid)
        ns, helper = self.guest(sock, "192.168.127.2", MAC_A)
        self.runClient(ns, port, 50)
        self.assertGreaterEqual(openFiles(daemon.popen.pid), before + 51)
        helper.popen.send_signal(signal.SIGKILL)
        ns.delete()
        gone = time.monotonic()
        time.sleep(1)
        self.assertGreaterEqual(openFiles(daemon.popen.pid), before + 51,
                                "the grace period should keep the connections")
        waitFor(lambda: openFiles(daemon.popen.pid) <= before, timeout=grace + 5,
                what="the daemon's descriptors to come back down")
        self.assertGreater(time.monotonic() - gone, grace - 1)
        body = stats(sock)
        self.assertEqual(body["counters"].get("link.graceExpired"), 1)
        self.assertGreaterEqual(body["counters"].get("tcp.abortedLinkGone", 0), 51)
        self.assertEqual(body["gauges"].get("tcp.connections"), 0)
        self.assertTrue(daemon.alive())

    def test_noFrameForVanishedGuest(self):
        """
        (b) Two guests; A's link dies mid-download. B's tcpdump sees no frame
        addressed to A's MAC, and the daemon counts what it dropped.
        """
        daemon, sock = self.startDaemon("--link-grace", "10")
        port = self.startServer(STREAM_SERVER, "stream")
        nsA, helperA = self.guest(sock, "192.168.127.2", MAC_A)
        nsB, helperB = self.guest(sock, "192.168.127.3", MAC_B)
        capture = os.path.join(self.tempDir, "b.pcap")
        dump = Process(self, nsB.exec("tcpdump", "-U", "-n", "-i", "tap0", "-w", capture,
                                      "ether", "dst", MAC_A), "tcpdump")
        waitFor(lambda: "listening" in dump.output() or not dump.alive(), what="tcpdump")
        # A slow download: data is always in flight, and the link never
        # fills (so the NAT retransmits toward A once it is gone).
        self.runClient(nsA, port, 0, kind="s")
        time.sleep(1)
        helperA.popen.send_signal(signal.SIGKILL)
        # The NAT keeps retransmitting toward A for a while.
        time.sleep(6)
        nsB.run("ping", "-c", "1", "-W", "2", "192.168.127.1")
        dump.stop()
        result = run(["tcpdump", "-n", "-r", capture], check=False)
        self.assertEqual(result.stdout.strip(), "", f"B saw frames for A:\n{result.stdout}")
        counters = stats(sock)["counters"]
        self.assertGreater(counters.get("drop.switch.linkDown", 0), 0)

    def test_macFloodThenClaim(self):
        """
        (c) A link floods 10000 source MACs and then takes the victim's MAC
        and IP: it receives nothing addressed to the victim, whose pings to
        the gateway keep flowing.
        """
        daemon, sock = self.startDaemon()
        victim, _ = self.guest(sock, "192.168.127.2", MAC_A)
        attacker, _ = self.guest(sock, "192.168.127.3", MAC_B)
        victim.run("ping", "-c", "1", "-W", "2", "192.168.127.1")
        capture = os.path.join(self.tempDir, "attacker.pcap")
        dump = Process(self, attacker.exec("tcpdump", "-U", "-n", "-i", "tap0", "-Q", "in",
                                           "-w", capture, "ether", "dst", MAC_A), "tcpdump")
        waitFor(lambda: "listening" in dump.output() or not dump.alive(), what="tcpdump")
        # 10000 source MACs, then at once a gratuitous ARP from the victim's
        # MAC for the victim's address.
        victimMAC = bytes.fromhex(MAC_A.replace(":", ""))
        garp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + victimMAC + bytes([192, 168, 127, 2])
                + b"\x00" * 6 + bytes([192, 168, 127, 2]))
        flood = ("import socket, time\n"
                 "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
                 "s.bind(('tap0', 0))\n"
                 "for i in range(10000):\n"
                 "    src = b'\\x02' + i.to_bytes(5, 'big')\n"
                 "    s.send(b'\\xff' * 6 + src + b'\\x88\\xb5' + b'x' * 46)\n"
                 # Paced, so that the TAP's queue drops none of them.
                 "    if i % 100 == 99: time.sleep(0.005)\n"
                 f"s.send(b'\\xff' * 6 + {victimMAC!r} + b'\\x08\\x06' + {garp!r})\n")
        attacker.run(sys.executable, "-c", flood, timeout=120)
        attacker.run("ip", "link", "set", "tap0", "address", MAC_A)
        attacker.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        attacker.run("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "192.168.127.2",
                     "192.168.127.1", check=False)
        pinging = subprocess.Popen(victim.exec("ping", "-c", "30", "-i", "0.1", "-W", "1",
                                               "192.168.127.1"),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: pinging.poll() is None and pinging.kill())
        attacker.run("ping", "-c", "5", "-i", "0.2", "-W", "1", "-I", "192.168.127.2",
                     "192.168.127.1", check=False)
        out, _ = pinging.communicate(timeout=60)
        dump.stop()
        self.assertIn("30 received", out)
        result = run(["tcpdump", "-n", "-r", capture], check=False)
        self.assertEqual(result.stdout.strip(), "", f"the attacker got:\n{result.stdout}")
        counters = stats(sock)["counters"]
        self.assertGreater(counters.get("drop.switch.macSpoofed", 0), 0)
        self.assertGreater(counters.get("switch.linkTableFull", 0), 0)

    def test_helperRestartedMidDownload(self):
        """
        (e) The helper is killed and restarted within 3 s in the middle of a
        download (the TAP device stays, as a persistent one does): the
        download completes with a matching sha256.
        """
        daemon, sock = self.startDaemon()
        path = os.path.join(self.tempDir, "random.bin")
        with open(path, "wb") as f:
            for _ in range(24):
                f.write(os.urandom(1 << 20))
        web = Process(self, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", self.tempDir, "0"], "http")
        port = waitFor(lambda: _httpPort(web.output()), what="http.server")
        ns = Namespace(self)
        ns.run("ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
        ns.run("ip", "link", "set", "tap0", "address", MAC_A)
        ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        ns.run("ip", "link", "set", "tap0", "up")
        ns.run("ip", "route", "add", "default", "via", "192.168.127.1")
        helper = self.startGuest(ns, sock, "--preexisting", mac=MAC_A)
        out = os.path.join(self.tempDir, "downloaded.bin")
        curl = subprocess.Popen(ns.exec("curl", "-sS", "--limit-rate", "4M", "--max-time", "120",
                                        "-o", out, f"http://{HOST}:{port}/random.bin"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: curl.poll() is None and curl.kill())
        waitFor(lambda: os.path.exists(out) and os.path.getsize(out) > 4 << 20, timeout=30,
                what="the download to be under way")
        helper.popen.send_signal(signal.SIGKILL)
        helper.popen.wait(5)
        time.sleep(2)
        self.startGuest(ns, sock, "--preexisting", mac=MAC_A)
        output, _ = curl.communicate(timeout=150)
        self.assertEqual(curl.returncode, 0, output)
        self.assertEqual(_sha256(out), _sha256(path))
        counters = stats(sock)["counters"]
        self.assertEqual(counters.get("link.takenOver"), 1)
        self.assertEqual(counters.get("link.graceExpired", 0), 0)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _httpPort(output):
    marker = "port "
    index = output.find(marker)
    if index < 0:
        return None
    digits = "".join(ch for ch in output[index + len(marker):].split()[0] if ch.isdigit())
    return int(digits) if digits else None


# In the guest: N connections at once; prints how many worked (echoed), how
# many were reset, how many failed otherwise, and the slowest refusal.
MANY_CLIENT = r"""
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok, reset, other, slowest, socks = 0, 0, 0, 0.0, []
for i in range(n):
    started = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=20)
        socks.append(s)
    except ConnectionRefusedError:
        reset += 1
        slowest = max(slowest, time.monotonic() - started)
    except OSError as e:
        other += 1
print("opened", flush=True)
sys.stdin.readline()
for s in socks:
    try:
        s.sendall(b"ping")
        ok += s.recv(16) == b"ping"
    except OSError:
        pass
    s.close()
print(json.dumps({"ok": ok, "open": len(socks), "reset": reset, "other": other,
                  "slowest": slowest}), flush=True)
"""

ECHO_SERVER = r"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1024)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class FileLimitTests(E2EMixin, SynchronousTestCase):
    """
    (d) The daemon under C{prlimit --nofile=256}.
    """

    if SKIP or shutil.which("prlimit") is None:
        skip = SKIP or "needs prlimit"

    def test_thousandConnections(self):
        """
        1000 connections from a guest to a host server: those past the limit
        are reset at once, the rest work; the control API answers while the
        NAT is at its limit; afterwards a 10 MiB download arrives intact.
        """
        from tests.e2e.harness import TWISTD

        sock = os.path.join(self.tempDir, "gvtap.sock")
        daemon = Process(self, ["prlimit", "--nofile=256", "--"] + TWISTD + [
            "-n", "--pidfile=", "gvtap", "--ssh-port", "-1", "--listen", f"unix:{sock}"],
            "gvtap")
        waitFor(lambda: os.path.exists(sock) or not daemon.alive(), what="the daemon's socket")
        self.assertTrue(daemon.alive(), daemon.output())
        self.assertIn("soft limit 256", daemon.output())
        echoPort = startServer(self, ECHO_SERVER, "echo")
        ns = Namespace(self)
        self.startGuest(ns, sock)
        ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        ns.run("ip", "route", "add", "default", "via", "192.168.127.1")
        script = os.path.join(self.tempDir, "many.py")
        with open(script, "w") as f:
            f.write(MANY_CLIENT)
        client = subprocess.Popen(ns.exec("prlimit", "--nofile=4096", "--", sys.executable,
                                          script, HOST, str(echoPort), "1000"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: client.poll() is None and client.kill())
        started = time.monotonic()
        self.assertEqual(client.stdout.readline().strip(), "opened")
        elapsed = time.monotonic() - started
        # At the limit, the API still answers: the reserve is its.
        body = stats(sock)
        client.stdin.write("\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        client.wait(30)
        self.assertEqual(result["other"], 0, result)
        self.assertGreater(result["reset"], 0, result)
        self.assertGreater(result["open"], 50, result)
        self.assertEqual(result["ok"], result["open"], result)
        self.assertEqual(result["open"] + result["reset"], 1000)
        self.assertLess(result["slowest"], 2.0, result)
        self.assertLess(elapsed, 60)
        self.assertGreater(body["counters"].get("drop.nat.tcp.noDescriptors", 0), 0)
        # Afterwards a download works and is intact.
        path = os.path.join(self.tempDir, "ten.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(10 << 20))
        web = Process(self, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", self.tempDir, "0"], "http")
        port = waitFor(lambda: _httpPort(web.output()), what="http.server")
        out = os.path.join(self.tempDir, "got.bin")
        waitFor(lambda: ns.run("curl", "-sS", "--max-time", "60", "-o", out,
                               f"http://{HOST}:{port}/ten.bin", check=False,
                               timeout=90).returncode == 0,
                timeout=60, interval=1, what="the download")
        self.assertEqual(_sha256(out), _sha256(path))
        self.assertTrue(daemon.alive())


# In the guest: COUNT DISCOVERs from as many made-up MACs, each completed to a
# DORA when the second argument says so; prints offers and acks received.
DHCP_FLOOD = r"""
import json, select, socket, struct, sys, time
count, dora = int(sys.argv[1]), sys.argv[2] == "dora"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("tap0", 0))

def checksum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def frame(mac, xid, kind, requested=None):
    options = bytes([53, 1, kind])
    if requested:
        options += bytes([50, 4]) + requested + bytes([54, 4]) + bytes([192, 168, 127, 1])
    options += b"\xff"
    bootp = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, xid, 0, 0x8000, 0, 0, 0, 0)
    bootp += mac + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63" + options
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     b"\0" * 4, b"\xff" * 4)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp

def replies(deadline):
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            return
        data = s.recv(4096)
        if len(data) < 282 or data[23] != 17 or data[36:38] != b"\x00\x44":
            continue
        bootp = data[42:]
        xid = struct.unpack("!I", bootp[4:8])[0]
        opts = bootp[240:]
        kind = None
        i = 0
        while i < len(opts) and opts[i] != 255:
            if opts[i] == 0: i += 1; continue
            if opts[i] == 53: kind = opts[i + 2]
            i += 2 + opts[i + 1]
        yield xid, kind, bootp[16:20]

offers = acks = 0
if not dora:
    # All at once, then whatever offers come within a second.
    for i in range(count):
        s.send(frame(b"\x02\x11" + i.to_bytes(4, "big"), i, 1))
    offers = sum(1 for xid, kind, _ in replies(time.monotonic() + 1.0) if kind == 2)
    count = 0
for i in range(count):
    mac = b"\x02\x11" + i.to_bytes(4, "big")
    s.send(frame(mac, i, 1))
    for xid, kind, yiaddr in replies(time.monotonic() + 0.05):
        if xid == i and kind == 2:
            offers += 1
            if dora:
                s.send(frame(mac, i, 3, yiaddr))
                for xid2, kind2, _ in replies(time.monotonic() + 0.05):
                    if xid2 == i and kind2 == 5:
                        acks += 1
                        break
            break
print(json.dumps({"offers": offers, "acks": acks}))
"""


class DHCPFloodTests(E2EMixin, SynchronousTestCase):
    """
    (g) One link cannot take the pool.
    """

    if SKIP or skipReason("udhcpc"):
        skip = SKIP or skipReason("udhcpc")

    def test_floodThenNewGuest(self):
        """
        300 DISCOVERs and then 300 DORAs from one link get at most
        C{--max-leases-per-link} offers and leases; a new guest on another
        link then gets a lease at once.
        """
        daemon, sock = self.startDaemon()
        flooder = Namespace(self)
        self.startGuest(flooder, sock, mac="5a:94:ef:e4:0c:01")
        script = os.path.join(self.tempDir, "dhcpflood.py")
        with open(script, "w") as f:
            f.write(DHCP_FLOOD)
        for mode in ("discover", "dora"):
            result = json.loads(flooder.run(sys.executable, script, "300", mode,
                                            timeout=120).stdout)
            self.assertLessEqual(result["offers"], 16, result)
            self.assertGreater(result["offers"], 0, result)
            if mode == "dora":
                self.assertEqual(result["acks"], result["offers"], result)
        newcomer = Namespace(self)
        self.startGuest(newcomer, sock, mac="5a:94:ef:e4:0c:02")
        started = time.monotonic()
        lease = self.dhcp(newcomer)
        self.assertLess(time.monotonic() - started, 5)
        self.assertTrue(lease.get("ip", "").startswith("192.168.127."), lease)
        counters = stats(sock)["counters"]
        self.assertGreater(counters.get("drop.dhcp.linkLeasesFull", 0), 0)


# In the guest: connect to every port of ADDR (non-blocking, 1000 at a time),
# then nothing; prints how many were refused.
SCAN = r"""
import errno, select, socket, sys, time
host = sys.argv[1]
refused = 0
for start in range(1, 65536, 1000):
    socks = []
    for port in range(start, min(start + 1000, 65536)):
        s = socket.socket(); s.setblocking(False)
        s.connect_ex((host, port)); socks.append(s)
    deadline = time.monotonic() + 2
    pending = list(socks)
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], pending, [], 0.2)
        for s in writable:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED:
                refused += 1
            pending.remove(s)
    for s in socks:
        s.close()
print(refused, flush=True)
"""

# In the guest: DNS queries for a local name as fast as it can for SECONDS.
DNS_FLOOD = r"""
import os, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
name = b"".join(bytes([len(p)]) + p for p in b"gateway.containers.internal".split(b".")) + b"\0"
end = time.monotonic() + float(sys.argv[1])
sent = 0
while time.monotonic() < end:
    q = struct.pack("!HHHHHH", sent & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    try:
        s.sendto(q, ("192.168.127.1", 53)); sent += 1
    except BlockingIOError:
        time.sleep(0.0005)
    try:
        while True: s.recv(512)
    except BlockingIOError:
        pass
print(sent, flush=True)
"""


class FairnessTests(E2EMixin, SynchronousTestCase):
    guest = LinkGraceTests.guest

    """
    (f) One guest's port scan and DNS flood do not starve another guest.
    """

    if SKIP:
        skip = SKIP

    def test_scanAndDNSFloodDoNotStarvePings(self):
        """
        With the daemon in a namespace of the test's own (so the scan of the
        host address reaches only that namespace's loopback), one guest
        connects to every port of the host and floods DNS while the other's
        pings to the gateway keep a median under 5 ms (or, on a machine so
        busy that the quiet median is over 1.25 ms, under four times it).
        """
        from tests.e2e.harness import TWISTD

        home = Namespace(self, prefix="gvtdaemon")
        sock = os.path.join(self.tempDir, "gvtap.sock")
        daemon = Process(self, home.exec(*TWISTD, "-n", "--pidfile=", "gvtap", "--ssh-port",
                                         "-1", "--listen", f"unix:{sock}"), "gvtap")
        waitFor(lambda: os.path.exists(sock) or not daemon.alive(), what="the daemon's socket")
        self.assertTrue(daemon.alive(), daemon.output())
        scanner, _ = self.guest(sock, "192.168.127.2", MAC_A)
        victim, _ = self.guest(sock, "192.168.127.3", MAC_B)
        victim.run("ping", "-c", "2", "-W", "2", "192.168.127.1")
        # The victim's own latency before the flood, on this machine now: a
        # busy machine slows every ping, flood or not, and the bound must
        # measure starvation, not the machine.
        quiet = victim.run("ping", "-c", "20", "-i", "0.2", "-W", "2", "192.168.127.1",
                           timeout=30, check=False)
        quietTimes = sorted(float(part.split("=")[1]) for line in quiet.stdout.splitlines()
                            for part in line.split() if part.startswith("time="))
        self.assertGreaterEqual(len(quietTimes), 18, quiet.stdout)
        baseline = quietTimes[len(quietTimes) // 2]
        for name, code in (("scan", SCAN), ("dnsflood", DNS_FLOOD)):
            with open(os.path.join(self.tempDir, f"{name}.py"), "w") as f:
                f.write(code)
        # Unfair scheduling measured 25-33 ms (scan) and 100-225 ms (DNS
        # flood) here; 5 ms on a quiet machine, four times the quiet median
        # on a loaded one. A second round is run only when the first misses:
        # one loaded moment of a shared machine must not decide, while an
        # unfair daemon misses both by far.
        bound = max(5.0, 4 * baseline)
        medians = []
        for attempt in range(2):
            median, times, sent = self.floodAndPing(scanner, victim)
            medians.append(median)
            self.assertGreater(sent, 10000)
            if median < bound:
                break
        self.assertLess(min(medians), bound,
                        f"medians {medians} ms (quiet {baseline} ms); last round {times}")
        counters = stats(sock)["counters"]
        # The scan really loaded the daemon: hundreds of closed ports dialled
        # and refused (at nice 19, on two cores, it reaches 600 to a few
        # thousand in a round).
        self.assertGreater(counters.get("nat.tcp.refused", 0), 300)
        self.assertTrue(daemon.alive())

    def floodAndPing(self, scanner, victim):
        """
        One round: C{scanner} scans every port of the host and floods DNS
        while C{victim} pings the gateway 60 times; return the ping median,
        the sorted times, and how many queries the flood sent.
        """
        # The load generators run at the lowest CPU priority: on two cores
        # their own busy loops would otherwise take the CPU from the daemon,
        # and the test would measure the machine, not the daemon's fairness
        # between links (a VM's guest burns its own vCPUs, not the host's
        # network process's).
        scan = subprocess.Popen(scanner.exec(
            "nice", "-n", "19", "prlimit", "--nofile=4096", "--", sys.executable,
            os.path.join(self.tempDir, "scan.py"), HOST),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: scan.poll() is None and scan.kill())
        flood = subprocess.Popen(scanner.exec(
            "nice", "-n", "19", sys.executable, os.path.join(self.tempDir, "dnsflood.py"), "15"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: flood.poll() is None and flood.kill())
        time.sleep(1)
        ping = victim.run("ping", "-c", "60", "-i", "0.2", "-W", "2", "192.168.127.1",
                          timeout=60, check=False)
        times = sorted(float(part.split("=")[1]) for line in ping.stdout.splitlines()
                       for part in line.split() if part.startswith("time="))
        floodOut, _ = flood.communicate(timeout=60)
        scan.kill()
        scan.wait(30)
        self.assertGreaterEqual(len(times), 55, ping.stdout)
        return times[len(times) // 2], times, int(floodOut.split()[0])
