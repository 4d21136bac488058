"""
End to end: offload on gvtap's own guest link (gvtap-guest <-> gvtap), and
plain links with the real gvisor-tap-vsock v0.8.9 binaries on either side.

With offload the guest's kernel hands gvtap-guest TCP super-segments and takes
them from it; the TAP's packet counters show it (a packet is an skb, a
super-segment one packet). The interop tests need gvproxy and gvforwarder
built from v0.8.9 in C{$GVPROXY_BIN_DIR} (default C{/work/gvproxy-bin/v0.8.9});
the repository ships none, and those tests skip without them.
"""

import json
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, skipReason, waitFor
from tests.e2e.test_nat_tcp import SHA_SERVER, UPLOAD_CLIENT, _httpPort, sha256File

SKIP = skipReason("curl", "iperf3")

HOST = "192.168.127.254"
GVPROXY_BIN_DIR = os.environ.get("GVPROXY_BIN_DIR", "/work/gvproxy-bin/v0.8.9")
GVPROXY = os.path.join(GVPROXY_BIN_DIR, "gvproxy")
GVFORWARDER = os.path.join(GVPROXY_BIN_DIR, "gvforwarder")


def tapStats(namespace, iface="tap0"):
    """
    The TAP's kernel counters: C{(rx, tx)} as C{(bytes, packets)} each; rx
    is what gvtap-guest wrote (host to guest), tx what it read.
    """
    [link] = json.loads(namespace.run("ip", "-s", "-j", "link", "show", iface).stdout)
    stats = link["stats64"]
    return ((stats["rx"]["bytes"], stats["rx"]["packets"]),
            (stats["tx"]["bytes"], stats["tx"]["packets"]))


class TransfersMixin:
    """
    A 50 MiB download with curl, an upload, iperf3 both ways, each checked.
    """

    def bigFile(self, mib=50):
        path = os.path.join(self.tempDir, "random.bin")
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        return path

    def download(self, path):
        web = Process(self, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", self.tempDir, "0"], "http")
        port = waitFor(lambda: _httpPort(web.output()), what="http.server")
        out = os.path.join(self.tempDir, "downloaded.bin")
        self.ns.run("curl", "-sS", "--max-time", "120", "-o", out,
                    f"http://{HOST}:{port}/{os.path.basename(path)}", timeout=150)
        self.assertEqual(sha256File(out), sha256File(path))

    def upload(self, path):
        script = os.path.join(self.tempDir, "sha.py")
        with open(script, "w") as f:
            f.write(SHA_SERVER)
        server = Process(self, [sys.executable, script], "sha")
        port = int(waitFor(lambda: server.output().strip().split("\n")[0]
                           if server.output().strip() else None, what="sha server"))
        client = os.path.join(self.tempDir, "upload.py")
        with open(client, "w") as f:
            f.write(UPLOAD_CLIENT)
        result = self.ns.run(sys.executable, client, HOST, str(port), path, timeout=150)
        self.assertEqual(result.stdout.strip(), sha256File(path))

    def iperf3(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        server = Process(self, ["iperf3", "-s", "--forceflush", "-B", "127.0.0.1",
                                "-p", str(port)], "iperf3")
        waitFor(lambda: "listening" in server.output().lower(), what="iperf3 server")
        for flags in ([], ["-R"]):
            result = self.ns.run("iperf3", "-c", HOST, "-p", str(port), "-t", "3", "-J",
                                 *flags, timeout=60)
            report = json.loads(result.stdout)
            self.assertGreater(report["end"]["sum_received"]["bytes"], 1 << 20)


class OffloadLinkTests(TransfersMixin, E2EMixin, SynchronousTestCase):
    """
    gvtap-guest and gvtap at MTU 1500 negotiate offload; data moves intact
    as super-segments both ways.
    """

    if SKIP:
        skip = SKIP

    guestArgs = ()
    offload = True

    def setUp(self):
        E2EMixin.setUp(self)
        self.daemon, sock = self.startDaemon("--mtu", "1500")
        self.ns = Namespace(self)
        self.guest = self.startGuest(self.ns, sock, "--mtu", "1500", *self.guestArgs)
        waitFor(lambda: "link up" in self.guest.output(), what="the link")
        self.ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        self.ns.run("ip", "route", "add", "default", "via", "192.168.127.1")

    def assertSegments(self, before, after, direction):
        bytes_ = after[0] - before[0]
        packets = after[1] - before[1]
        average = bytes_ / max(packets, 1)
        if self.offload:
            self.assertGreater(average, 3000, f"{direction}: {packets} packets, {bytes_} bytes")
        else:
            self.assertLessEqual(average, 1514, f"{direction}: {packets} packets, {bytes_} bytes")

    def test_linkNegotiated(self):
        """
        The guest helper says the link is up with offload (or without, when
        turned off), and the TAP's offloads follow.
        """
        self.assertEqual(", offload)" in self.guest.output(), self.offload,
                         self.guest.output())
        self.assertEqual("(offload)" in self.daemon.output(), self.offload,
                         self.daemon.output())

    def test_download(self):
        """
        curl downloads 50 MiB from the host's loopback, sha256 intact; toward
        the guest the frames were super-segments (with offload).
        """
        path = self.bigFile()
        before = tapStats(self.ns)[0]
        self.download(path)
        self.assertSegments(before, tapStats(self.ns)[0], "host to guest")

    def test_upload(self):
        """
        50 MiB uploaded to the host's loopback arrive intact; the guest's
        kernel sent super-segments (with offload).
        """
        path = self.bigFile()
        before = tapStats(self.ns)[1]
        self.upload(path)
        self.assertSegments(before, tapStats(self.ns)[1], "guest to host")

    def test_iperf3(self):
        """
        iperf3 runs both ways over the link and moves data.
        """
        self.iperf3()


class NoOffloadLinkTests(OffloadLinkTests):
    """
    The same with C{gvtap-guest --no-offload}: plain frames, no super-segment.
    """

    guestArgs = ("--no-offload",)
    offload = False


def interopSkip():
    if SKIP:
        return SKIP
    for binary in (GVPROXY, GVFORWARDER):
        if not os.access(binary, os.X_OK):
            return f"needs gvisor-tap-vsock v0.8.9 binaries in $GVPROXY_BIN_DIR ({binary} missing)"
    return None


class GvproxyInteropTests(TransfersMixin, E2EMixin, SynchronousTestCase):
    """
    Plain links with the real gvisor-tap-vsock: gvtap-guest against gvproxy
    (which answers the probe 404), and gvforwarder against gvtap (which
    sends no probe).
    """

    skip = interopSkip()

    def startGvproxy(self):
        sock = os.path.join(self.tempDir, "gvproxy.sock")
        process = Process(self, [GVPROXY, "-listen", f"unix://{sock}", "-mtu", "1500",
                                 "-ssh-port", "-1"], "gvproxy")
        waitFor(lambda: os.path.exists(sock) or not process.alive(), what="gvproxy's socket")
        if not process.alive():
            raise AssertionError("gvproxy exited:\n" + process.output())
        return sock

    def test_guestAgainstGvproxy(self):
        """
        gvtap-guest's probe gets gvproxy's 404, the POST on the same
        connection makes a plain link, and a download and an upload through
        gvproxy's NAT arrive intact.
        """
        sock = self.startGvproxy()
        self.ns = Namespace(self)
        guest = self.startGuest(self.ns, sock, "--mtu", "1500")
        waitFor(lambda: "link up" in guest.output(), what="the link")
        self.assertIn("(/connect)", guest.output())
        self.assertNotIn("offload probe", guest.output())
        self.ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        self.ns.run("ip", "route", "add", "default", "via", "192.168.127.1")
        self.ns.run("ping", "-c", "2", "-W", "5", "192.168.127.1", timeout=20)
        path = self.bigFile(20)
        self.download(path)
        self.upload(path)
        self.assertIn("(/connect)", guest.output())

    def test_gvforwarderAgainstGvtap(self):
        """
        gvforwarder (no probe) gets a plain link from gvtap; data moves
        intact both ways.
        """
        self.daemon, sock = self.startDaemon("--mtu", "1500")
        self.ns = Namespace(self)
        self.ns.run("ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
        self.ns.run("ip", "link", "set", "tap0", "address", "5a:94:ef:e4:0c:ee", "mtu", "1500", "up")
        self.ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        self.ns.run("ip", "route", "add", "default", "via", "192.168.127.1")
        forwarder = Process(self, self.ns.exec(GVFORWARDER, "-preexisting", "-iface", "tap0",
                                               "-mtu", "1500", "-stop-if-exist=",
                                               "-url", f"unix://{sock}"), "gvforwarder")
        waitFor(lambda: "waiting for packets" in forwarder.output() or not forwarder.alive(),
                what="gvforwarder")
        self.ns.run("ping", "-c", "2", "-W", "5", "192.168.127.1", timeout=20)
        path = self.bigFile(20)
        self.download(path)
        self.upload(path)
        self.assertIn("guest link up: unix:", self.daemon.output())
        self.assertNotIn("(offload)", self.daemon.output())
