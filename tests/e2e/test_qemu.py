"""
End to end with real QEMU on C{--listen-qemu}: QEMU's network hub joins a TAP
device in a namespace (standing in for a guest's NIC) to a C{-netdev stream}
(or the older C{-netdev socket}) connected to gvtap. QEMU runs with no machine
and no CPU: only its network backends, which is the part gvtap talks to.
"""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, run, skipReason, waitFor

SKIP = skipReason("qemu-system-x86_64", "ping")


class QEMUTests(E2EMixin, SynchronousTestCase):
    """
    QEMU's own framing (4-byte big-endian lengths) against gvtap.
    """

    if SKIP:
        skip = SKIP

    def startQEMU(self, namespace, netdev):
        """
        Run QEMU in C{namespace} with a hub joining C{netdev} (the link to
        gvtap, id C{s0}) and a TAP C{qtap0}; configure the TAP as the guest's
        NIC would be (device MAC, up).
        """
        args = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                "-netdev", netdev,
                "-netdev", "tap,id=t0,ifname=qtap0,script=no,downscript=no",
                "-netdev", "hubport,id=h0,hubid=0,netdev=s0",
                "-netdev", "hubport,id=h1,hubid=0,netdev=t0"]
        qemu = Process(self, namespace.exec(*args), f"qemu-{namespace.name}")
        waitFor(lambda: namespace.run("ip", "link", "show", "qtap0", check=False).returncode == 0
                or not qemu.alive(), what="QEMU's TAP")
        self.assertTrue(qemu.alive(), qemu.output())
        namespace.run("ip", "link", "set", "qtap0", "address", "5a:94:ef:e4:0c:ee")
        namespace.run("ip", "link", "set", "qtap0", "up")
        return qemu

    def test_streamUnix(self):
        """
        C{-netdev stream} over a unix socket: DHCP gives the static lease and
        the gateway answers ping.
        """
        qsock = os.path.join(self.tempDir, "qemu.sock")
        daemon, sock = self.startDaemon("--listen-qemu", f"unix:{qsock}")
        waitFor(lambda: os.path.exists(qsock), what="the QEMU socket")
        ns = Namespace(self)
        self.startQEMU(ns, f"stream,id=s0,server=off,addr.type=unix,addr.path={qsock}")
        lease = self.dhcp(ns, iface="qtap0")
        self.assertEqual(lease["ip"], "192.168.127.2")
        ping = ns.run("ping", "-c3", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("3 received", ping.stdout)

    def test_socketTCP(self):
        """
        The older C{-netdev socket,connect=HOST:PORT} to a TCP endpoint on
        loopback works the same.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        daemon, sock = self.startDaemon("--listen-qemu", f"tcp:{port}:interface=127.0.0.1")
        waitFor(lambda: "listening for guests on tcp" in daemon.output(), what="the TCP endpoint")
        ns = Namespace(self)
        # The namespace has its own loopback: QEMU must dial the host's, so it
        # runs outside the namespace and only its TAP moves in.
        self.startQEMUOutside(ns, f"socket,id=s0,connect=127.0.0.1:{port}")
        lease = self.dhcp(ns, iface="qtap0")
        self.assertEqual(lease["ip"], "192.168.127.2")
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)

    def startQEMUOutside(self, namespace, netdev):
        """
        Run QEMU on the host with a TAP whose name is unique, then move the TAP
        into C{namespace} and name it qtap0 there.
        """
        tap = f"gvq{os.getpid() % 100000}"
        args = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                "-netdev", netdev,
                "-netdev", f"tap,id=t0,ifname={tap},script=no,downscript=no",
                "-netdev", "hubport,id=h0,hubid=0,netdev=s0",
                "-netdev", "hubport,id=h1,hubid=0,netdev=t0"]
        qemu = Process(self, args, "qemu-host")
        waitFor(lambda: os.path.exists(f"/sys/class/net/{tap}") or not qemu.alive(),
                what="QEMU's TAP")
        self.assertTrue(qemu.alive(), qemu.output())
        run(["ip", "link", "set", tap, "netns", namespace.name])
        namespace.run("ip", "link", "set", tap, "name", "qtap0")
        namespace.run("ip", "link", "set", "qtap0", "address", "5a:94:ef:e4:0c:ee")
        namespace.run("ip", "link", "set", "qtap0", "up")
        return qemu
