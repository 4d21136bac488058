"""
End to end: a real C{twistd gvtap}, the guest helper in network namespaces, and
real clients inside them (udhcpc, ping, arping, tcpdump).
"""

import json
import os
import signal
import socket
import struct
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, run, skipReason, waitFor

SKIP = skipReason("ping", "arping", "tcpdump", "curl")


class FoundationTests(E2EMixin, SynchronousTestCase):
    """
    A guest gets its address by DHCP and reaches the gateway.
    """

    if SKIP:
        skip = SKIP

    def test_dhcpAndPing(self):
        """
        udhcpc in a namespace gets 192.168.127.2/24 with router, DNS and MTU
        from the lease, and C{ping -c3} to the gateway loses nothing.
        """
        pcap = os.path.join(self.tempDir, "capture.pcap")
        daemon, sock = self.startDaemon("--pcap", pcap, "--mtu", "1400")
        ns = Namespace(self)
        self.startGuest(ns, sock)
        lease = self.dhcp(ns)
        self.assertEqual(lease["ip"], "192.168.127.2")
        self.assertEqual(lease["subnet"], "255.255.255.0")
        self.assertEqual(lease["router"], "192.168.127.1")
        self.assertEqual(lease["dns"].split(), ["192.168.127.1"])
        self.assertEqual(lease["mtu"], "1400")
        self.assertEqual(lease["serverid"], "192.168.127.1")
        self.assertIn("192.168.127.2/24", ns.run("ip", "-4", "addr", "show", "tap0").stdout)
        ping = ns.run("ping", "-c3", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("3 received", ping.stdout)
        self.assertIn(" 0% packet loss", ping.stdout)
        # The capture reads with tcpdump while the daemon still runs.
        self.assertTrue(daemon.alive())
        dump = run(["tcpdump", "-n", "-r", pcap], check=False)
        self.assertEqual(dump.returncode, 0, dump.stderr)
        self.assertIn("BOOTP/DHCP", dump.stdout)
        self.assertIn("ICMP echo reply", dump.stdout)

    def test_arp(self):
        """
        ARP for the gateway and host addresses is answered, for any other
        address it is not.
        """
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        self.startGuest(ns, sock)
        ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        answered = ns.run("arping", "-c", "2", "-w", "3", "-I", "tap0", "192.168.127.254",
                          check=False)
        self.assertEqual(answered.returncode, 0, answered.stdout + answered.stderr)
        self.assertIn("5a:94:ef:e4:0c:dd", answered.stdout.lower())
        silent = ns.run("arping", "-c", "2", "-w", "2", "-I", "tap0", "192.168.127.77",
                        check=False)
        self.assertNotEqual(silent.returncode, 0, silent.stdout)

    def test_twoGuests(self):
        """
        Two namespaces on one daemon get different leases and ping each other.
        """
        daemon, sock = self.startDaemon()
        first, second = Namespace(self), Namespace(self)
        self.startGuest(first, sock)
        self.startGuest(second, sock, mac="5a:94:ef:e4:0c:01")
        leaseA = self.dhcp(first)
        leaseB = self.dhcp(second)
        self.assertEqual(leaseA["ip"], "192.168.127.2")
        self.assertNotIn(leaseB["ip"], ("192.168.127.1", "192.168.127.2", "192.168.127.254"))
        ping = second.run("ping", "-c2", "-i", "0.2", "-W", "2", leaseA["ip"], check=False)
        self.assertIn("2 received", ping.stdout, ping.stdout + ping.stderr)

    def test_garbageGuest(self):
        """
        A guest that sends garbage frames (and then a bad length) does not stop
        the other guest: its pings still all come back, and the daemon lives.
        """
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        self.startGuest(ns, sock)
        ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(bad.close)
        bad.settimeout(10)
        bad.connect(sock)
        bad.sendall(b"POST /connect HTTP/1.1\r\nHost: x\r\n\r\n")
        junk = [os.urandom(n) for n in (1, 13, 14, 20, 60, 1500, 9000)]
        # Frames with a broadcast destination and random bodies reach the gateway.
        junk += [b"\xff" * 6 + os.urandom(6) + b"\x08\x00" + os.urandom(40) for _ in range(50)]
        junk += [b"\xff" * 6 + os.urandom(6) + b"\x08\x06" + os.urandom(28) for _ in range(50)]
        for frame in junk:
            bad.sendall(struct.pack("<H", len(frame)) + frame)
        ping = ns.run("ping", "-c3", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("3 received", ping.stdout)
        # A zero length closes the bad link only. Before the end of the stream
        # come the frames the switch flooded to the bad link meanwhile (the
        # other guest's ARP, its IPv6 neighbour discovery): read past them.
        bad.sendall(b"\x00\x00")
        bad.settimeout(0.2)

        def closed():
            try:
                while True:
                    if not bad.recv(65536):
                        return True
            except socket.timeout:
                return False

        waitFor(closed, what="the bad link to close")
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)
        self.assertTrue(daemon.alive())

    def test_dhclient(self):
        """
        ISC dhclient gets the static lease too, with router, DNS and MTU.
        """
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        self.startGuest(ns, sock)
        record = os.path.join(self.tempDir, "dhclient.record")
        script = os.path.join(self.tempDir, "dhclient.script")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    "case \"$reason\" in BOUND|RENEW|REBOOT)\n"
                    f"  env | grep -E '^new_' > {record}\n"
                    "  ip addr add \"$new_ip_address/24\" dev \"$interface\";;\n"
                    "esac\nexit 0\n")
        os.chmod(script, 0o755)
        ns.run("dhclient", "-4", "-1", "-sf", script,
               "-lf", os.path.join(self.tempDir, "dhclient.leases"),
               "-pf", os.path.join(self.tempDir, "dhclient.pid"), "tap0", timeout=60)
        self.addCleanup(ns.run, "dhclient", "-x", "-pf",
                        os.path.join(self.tempDir, "dhclient.pid"), check=False)
        values = dict(line.strip().split("=", 1) for line in open(record) if "=" in line)
        self.assertEqual(values["new_ip_address"], "192.168.127.2")
        self.assertEqual(values["new_routers"], "192.168.127.1")
        self.assertEqual(values["new_domain_name_servers"], "192.168.127.1")
        self.assertEqual(values["new_subnet_mask"], "255.255.255.0")
        self.assertEqual(values.get("new_interface_mtu"), "1500")

    def test_guestHelperDHCP(self):
        """
        C{gvtap-guest --dhcp} runs the DHCP client itself once the link is up,
        and the TAP ends up with the static lease (the client's default script
        writes the namespace's own resolv.conf, never the host's).
        """
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        with open("/etc/resolv.conf", "rb") as f:
            hostResolv = f.read()
        self.startGuest(ns, sock, "--dhcp")
        waitFor(lambda: "192.168.127.2/24" in ns.run("ip", "-4", "addr", "show", "tap0").stdout,
                timeout=30, what="the DHCP lease on tap0")
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)
        with open("/etc/resolv.conf", "rb") as f:
            self.assertEqual(f.read(), hostResolv)


class PausedGuestTests(E2EMixin, SynchronousTestCase):
    """
    A guest whose link stops reading (a paused VM: its helper is stopped with
    SIGSTOP) costs the others nothing: their traffic goes on, the daemon's
    memory stays bounded, frames for the paused guest are dropped and counted,
    and the guest recovers when it resumes.
    """

    if SKIP:
        skip = SKIP

    def test_pausedGuest(self):
        """
        While guest A is stopped, guest B floods 28 MB of broadcast frames
        (all of which the switch owes A as well) and still pings the gateway
        without loss; the daemon's RSS grows by far less than the flood.
        """
        daemon, sock = self.startDaemon()
        first, second = Namespace(self), Namespace(self)
        helperA = self.startGuest(first, sock)
        self.startGuest(second, sock, mac="5a:94:ef:e4:0c:01")
        first.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        second.run("ip", "addr", "add", "192.168.127.3/24", "dev", "tap0")
        first.run("ping", "-c1", "-W", "2", "192.168.127.1")
        rssBefore = _rss(daemon.popen.pid)
        os.kill(helperA.popen.pid, signal.SIGSTOP)
        self.addCleanup(_cont, helperA.popen.pid)
        flood = ("import socket\n"
                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
                 "data = b'x' * 1400\n"
                 "for i in range(20000):\n"
                 "    try: s.sendto(data, ('192.168.127.255', 9))\n"
                 "    except OSError: pass\n")
        second.run(sys.executable, "-c", flood, timeout=120)
        ping = second.run("ping", "-c5", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("5 received", ping.stdout)
        self.assertTrue(daemon.alive())
        grown = _rss(daemon.popen.pid) - rssBefore
        self.assertLess(grown, 12 * 1024 * 1024, f"daemon RSS grew by {grown} bytes")
        stats = json.loads(run(["curl", "-sS", "--unix-socket", sock, "http://gvtap/gvtap/stats"]).stdout)
        self.assertGreater(stats["counters"].get("drop.link.paused", 0), 0)
        os.kill(helperA.popen.pid, signal.SIGCONT)
        ping = waitFor(lambda: "1 received" in first.run("ping", "-c1", "-W", "2", "192.168.127.1",
                                                        check=False).stdout,
                       timeout=30, what="the resumed guest to reach the gateway")
        self.assertTrue(ping)


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _cont(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
