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
    return json.loads(run(["curl", "-sS", "--unix-socket", sock, "http://gvtap/stats"]).stdout)


class LinkGraceTests(E2EMixin, SynchronousTestCase):
    """
    What a guest leaves behind when its link goes.
    """

    if SKIP:
        skip = SKIP

    def startServer(self, code, name):
        script = os.path.join(self.tempDir, f"{name}.py")
        with open(script, "w") as f:
            f.write(code)
        process = Process(self, [sys.executable, script], name)
        port = waitFor(lambda: process.output().strip().split("\n")[0]
                       if process.output().strip() else None, what=f"{name} to listen")
        return int(port)

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
