"""
End to end for the drop-in commands, as gvproxy users run them: the installed
C{gvproxy} console script with podman's command line and a real QEMU guest
(on C{-listen-qemu}, and on C{-listen-vfkit} through QEMU's C{-netdev dgram},
one frame per unix datagram as vfkit sends them); a C{-config} file whose
zones, static leases, NAT entry and forward take effect; and the installed
C{gvforwarder} in a namespace, with C{-preexisting} (the test runs udhcpc)
and without (gvforwarder runs udhcpc itself).

QEMU runs with no machine and no CPU: its hub joins the network backend to a
TAP in the namespace, which stands in for the guest's NIC.
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (
    E2EMixin, freePort, Namespace, Process, run, skipReason, stdioFrameReader, waitFor,
)

BIN = os.path.dirname(sys.executable)
GVPROXY = os.path.join(BIN, "gvproxy")
GVFORWARDER = os.path.join(BIN, "gvforwarder")


def _skip():
    reason = skipReason("qemu-system-x86_64", "ping", "curl", "dig", "ssh-keygen")
    if reason:
        return reason
    for script in (GVPROXY, GVFORWARDER):
        if not os.path.exists(script):
            return f"{script} is not installed (pip install -e . in this venv)"
    return None


SKIP = _skip()


def tapHasOption(name):
    """
    Whether C{twistd gvtap} has option C{--name} (the SSH forwarding options
    come from another branch; without them the -forward-* words are left out).
    """
    from gvtwisted.tap import Options

    return any(p[0] == name for p in Options.optParameters) or hasattr(
        Options, "opt_" + name.replace("-", "_"))


class DropInMixin(E2EMixin):

    def startGvproxy(self, *argv, name="gvproxy"):
        process = Process(self, [GVPROXY] + list(argv), name)
        return process

    def startQEMU(self, namespace, netdev, mac="5a:94:ef:e4:0c:ee"):
        args = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                "-netdev", netdev,
                "-netdev", "tap,id=t0,ifname=qtap0,script=no,downscript=no",
                "-netdev", "hubport,id=h0,hubid=0,netdev=s0",
                "-netdev", "hubport,id=h1,hubid=0,netdev=t0"]
        qemu = Process(self, namespace.exec(*args), f"qemu-{namespace.name}")
        waitFor(lambda: namespace.run("ip", "link", "show", "qtap0", check=False).returncode == 0
                or not qemu.alive(), what="QEMU's TAP")
        self.assertTrue(qemu.alive(), qemu.output())
        namespace.run("ip", "link", "set", "qtap0", "address", mac)
        namespace.run("ip", "link", "set", "qtap0", "up")
        return qemu

    def serveFile(self, size=3 << 20):
        """
        An HTTP server on the host's 127.0.0.1 with one random file; return
        (port, sha256 of the file).
        """
        root = os.path.join(self.tempDir, "www")
        os.makedirs(root)
        data = os.urandom(size)
        with open(os.path.join(root, "blob"), "wb") as f:
            f.write(data)
        port = freePort()
        server = Process(self, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                str(port), "--directory", root], "http")
        waitFor(lambda: _connects(port) or not server.alive(), what="the HTTP server")
        return port, hashlib.sha256(data).hexdigest()

    def sshKey(self):
        key = os.path.join(self.tempDir, "id_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        return key

    def podmanLine(self, listenFlag, listenValue, sshPort, pidFile, logFile, apiSock):
        """
        What podman's GvproxyCommand.ToCmdline() gives for a machine (plus
        -services for the API, which podman's Windows providers use).
        """
        argv = ["-services", f"unix://{apiSock}", "-mtu", "1500", "-ssh-port", str(sshPort),
                listenFlag, listenValue]
        if tapHasOption("forward-sock"):
            argv += ["-forward-sock", os.path.join(self.tempDir, "podman-api.sock"),
                     "-forward-dest", "/run/podman/podman.sock", "-forward-user", "root",
                     "-forward-identity", self.sshKey()]
        argv += ["-pid-file", pidFile, "-log-file", logFile]
        return argv

    def checkGuest(self, ns, iface="qtap0"):
        lease = self.dhcp(ns, iface=iface)
        self.assertEqual(lease["ip"], "192.168.127.2")
        ping = ns.run("ping", "-c3", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("3 received", ping.stdout)
        dig = ns.run("dig", "+short", "+time=2", "+tries=2", "@192.168.127.1",
                     "host.containers.internal")
        self.assertEqual(dig.stdout.split(), ["192.168.127.254"])
        # /etc/hosts of the host answers (gvproxy's Go resolver reads it).
        dig = ns.run("dig", "+short", "+time=2", "+tries=2", "@192.168.127.1", "localhost", "A")
        self.assertIn("127.0.0.1", dig.stdout.split())
        port, digest = self.serveFile()
        fetched = os.path.join(self.tempDir, "fetched")
        ns.run("curl", "-sS", "-o", fetched, "--max-time", "60",
               f"http://192.168.127.254:{port}/blob", timeout=90)
        with open(fetched, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)

    def checkRunFiles(self, gvproxy, pidFile, logFile, apiSock, sshPort, linkSock):
        with open(pidFile) as f:
            self.assertEqual(f.read(), str(gvproxy.popen.pid))
        os.kill(int(open(pidFile).read()), 0)
        with open(logFile) as f:
            log = f.read()
        self.assertIn("waiting for clients...", log)
        self.assertIn("gvproxy version v", log)
        api = run(["curl", "-sS", "--unix-socket", apiSock, "http://gvtap/services/forwarder/all"])
        self.assertEqual(json.loads(api.stdout), [
            {"local": f"127.0.0.1:{sshPort}", "remote": "192.168.127.2:22", "protocol": "tcp"}])
        leases = json.loads(run(["curl", "-sS", "--unix-socket", apiSock,
                                 "http://gvtap/services/dhcp/leases"]).stdout)
        self.assertEqual(leases.get("192.168.127.2"), "5a:94:ef:e4:0c:ee")
        # A signal ends it as gvproxy: exit status 1, the pid file removed.
        os.kill(gvproxy.popen.pid, signal.SIGTERM)
        self.assertEqual(gvproxy.popen.wait(15), 1)
        self.assertFalse(os.path.exists(pidFile))
        self.assertIn("gvproxy exiting: signal caught", gvproxy.output())
        # gvproxy removes its link socket at exit (podman deletes it first anyway).
        self.assertFalse(os.path.exists(linkSock))
        with open(logFile) as f:
            self.assertIn(f"(UNIX Port {apiSock} Closed)", f.read())


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class GvproxyTests(DropInMixin, SynchronousTestCase):
    """
    The installed C{gvproxy} with podman's command lines.
    """

    if SKIP:
        skip = SKIP

    def test_podmanQEMU(self):
        """
        podman's QEMU machine line on C{-listen-qemu}: the guest gets its
        lease, pings, resolves, fetches a file intact; the pid file holds the
        live pid, the log file is written, the API answers.
        """
        qsock = os.path.join(self.tempDir, "podman-machine-default-gvproxy.sock")
        pidFile = os.path.join(self.tempDir, "gvproxy.pid")
        logFile = os.path.join(self.tempDir, "gv-logfile.log")
        apiSock = os.path.join(self.tempDir, "api.sock")
        sshPort = freePort()
        gvproxy = self.startGvproxy(*self.podmanLine("-listen-qemu", f"unix://{qsock}", sshPort,
                                                     pidFile, logFile, apiSock))
        waitFor(lambda: (os.path.exists(qsock) and os.path.exists(apiSock)
                         and os.path.exists(pidFile)) or not gvproxy.alive(),
                what="gvproxy's sockets")
        self.assertTrue(gvproxy.alive(), gvproxy.output())
        ns = Namespace(self)
        self.startQEMU(ns, f"stream,id=s0,server=off,addr.type=unix,addr.path={qsock}")
        self.checkGuest(ns)
        self.checkRunFiles(gvproxy, pidFile, logFile, apiSock, sshPort, qsock)

    def test_podmanVfkit(self):
        """
        podman's vfkit machine line on C{-listen-vfkit unixgram://}: a QEMU
        C{-netdev dgram} over unix datagrams (vfkit's framing) is the guest.
        """
        vsock = os.path.join(self.tempDir, "vfkit.sock")
        pidFile = os.path.join(self.tempDir, "gvproxy.pid")
        logFile = os.path.join(self.tempDir, "gv-logfile.log")
        apiSock = os.path.join(self.tempDir, "api.sock")
        sshPort = freePort()
        gvproxy = self.startGvproxy(*self.podmanLine("-listen-vfkit", f"unixgram://{vsock}",
                                                     sshPort, pidFile, logFile, apiSock))
        waitFor(lambda: (os.path.exists(vsock) and os.path.exists(apiSock)) or not gvproxy.alive(),
                what="gvproxy's sockets")
        self.assertTrue(gvproxy.alive(), gvproxy.output())
        ns = Namespace(self)
        local = os.path.join(self.tempDir, "qemu-dgram.sock")
        self.startQEMU(ns, f"dgram,id=s0,local.type=unix,local.path={local},"
                           f"remote.type=unix,remote.path={vsock}")
        self.checkGuest(ns)
        self.checkRunFiles(gvproxy, pidFile, logFile, apiSock, sshPort, vsock)

    def test_refusesExistingSocket(self):
        """
        As gvproxy: an existing QEMU socket path is refused, exit status 1.
        """
        qsock = os.path.join(self.tempDir, "taken.sock")
        open(qsock, "w").close()
        result = run([GVPROXY, "-listen-qemu", f"unix://{qsock}"], check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f'level=fatal msg="\\"{qsock}\\" already exists"', result.stderr)

    def test_portTaken(self):
        """
        A -listen address already in use: one fatal line, exit status 1, and
        the pid file it had written is gone.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pidFile = os.path.join(self.tempDir, "gvproxy.pid")
        result = run([GVPROXY, "-listen", f"tcp://127.0.0.1:{taken.getsockname()[1]}",
                      "-ssh-port", "-1", "-pid-file", pidFile], check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn('level=fatal msg="cannot listen: ', result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertFalse(os.path.exists(pidFile))

    def test_configFile(self):
        """
        C{gvproxy -config FILE}: the file's zone, two static leases, a NAT
        entry (an extra virtual IP to the host's 127.0.0.1) and a forward
        take effect.
        """
        port, digest = self.serveFile(size=1 << 20)
        apiSock = os.path.join(self.tempDir, "api.sock")
        qsock = os.path.join(self.tempDir, "qemu.sock")
        fwdPort = freePort()
        config = os.path.join(self.tempDir, "gvproxy.yaml")
        with open(config, "w") as f:
            f.write(f"""\
listen:
  - unix://{apiSock}
interfaces:
  qemu: unix://{qsock}
stack:
  subnet: 10.77.0.0/24
  gatewayIP: 10.77.0.1
  dns:
    - name: lab.internal.
      records:
        - name: alpha
          ip: 10.77.0.10
        - regexp: '^node-[0-9]+$'
          ip: 10.77.0.11
  dnsSearchDomains: [lab.internal]
  nat:
    10.77.0.254: 127.0.0.1
    10.77.0.200: 127.0.0.1
  gatewayVirtualIPs: [10.77.0.254, 10.77.0.200]
  dhcpStaticLeases:
    10.77.0.5: 5a:94:ef:e4:0c:05
    10.77.0.6: 5a:94:ef:e4:0c:06
  forwards:
    127.0.0.1:{fwdPort}: 10.77.0.6:8080
""")
        gvproxy = self.startGvproxy("-config", config)
        waitFor(lambda: (os.path.exists(qsock) and os.path.exists(apiSock)) or not gvproxy.alive(),
                what="gvproxy's sockets")
        self.assertTrue(gvproxy.alive(), gvproxy.output())
        ns1, ns2 = Namespace(self), Namespace(self)
        self.startQEMU(ns1, f"stream,id=s0,server=off,addr.type=unix,addr.path={qsock}",
                       mac="5a:94:ef:e4:0c:05")
        self.startQEMU(ns2, f"stream,id=s0,server=off,addr.type=unix,addr.path={qsock}",
                       mac="5a:94:ef:e4:0c:06")
        self.assertEqual(self.dhcp(ns1, iface="qtap0")["ip"], "10.77.0.5")
        lease = self.dhcp(ns2, iface="qtap0")
        self.assertEqual(lease["ip"], "10.77.0.6")
        self.assertEqual(lease.get("search"), "lab.internal")
        self.assertEqual(lease["router"], "10.77.0.1")
        dig = ns1.run("dig", "+short", "+time=2", "@10.77.0.1", "alpha.lab.internal")
        self.assertEqual(dig.stdout.split(), ["10.77.0.10"])
        dig = ns1.run("dig", "+short", "+time=2", "@10.77.0.1", "node-42.lab.internal")
        self.assertEqual(dig.stdout.split(), ["10.77.0.11"])
        # No default zones with a file.
        dig = ns1.run("dig", "+time=2", "@10.77.0.1", "host.containers.internal", check=False)
        self.assertNotIn("10.77.0.254", dig.stdout.split("ANSWER SECTION")[-1]
                         if "ANSWER SECTION" in dig.stdout else "")
        # The extra NAT address reaches the host's 127.0.0.1.
        fetched = os.path.join(self.tempDir, "fetched")
        ns1.run("curl", "-sS", "-o", fetched, "--max-time", "30",
                f"http://10.77.0.200:{port}/blob", timeout=60)
        with open(fetched, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
        # The forward: host 127.0.0.1:fwdPort to the second guest's 8080.
        ns2.run("ip", "addr", "show", "qtap0")
        server = Process(self, ns2.exec(sys.executable, "-c",
                                        "import socket\n"
                                        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                        "s.bind(('0.0.0.0', 8080)); s.listen(1)\n"
                                        "c, _ = s.accept(); c.sendall(b'hello from guest 6'); c.close()\n"),
                         "guest-server")
        waitFor(lambda: ":8080" in ns2.run("ss", "-ltn", check=False).stdout
                or not server.alive(), what="the guest's server")
        with socket.create_connection(("127.0.0.1", fwdPort), timeout=10) as c:
            c.settimeout(10)
            data = b""
            while True:
                chunk = c.recv(100)
                if not chunk:
                    break
                data += chunk
        self.assertEqual(data, b"hello from guest 6")
        api = json.loads(run(["curl", "-sS", "--unix-socket", apiSock,
                              "http://gvtap/services/forwarder/all"]).stdout)
        self.assertEqual(api, [{"local": f"127.0.0.1:{fwdPort}", "remote": "10.77.0.6:8080",
                                "protocol": "tcp"}])


class GvforwarderTests(DropInMixin, SynchronousTestCase):
    """
    The installed C{gvforwarder} in a namespace against C{twistd gvtap}.
    """

    if SKIP:
        skip = SKIP

    def test_preexisting(self):
        """
        C{gvforwarder -preexisting -iface tap0 -url unix://...}: it takes the
        TAP the guest made and configures nothing; udhcpc (run by the test)
        gets the lease over it.
        """
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        ns.run("ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
        ns.run("ip", "link", "set", "tap0", "address", "5a:94:ef:e4:0c:ee")
        ns.run("ip", "link", "set", "tap0", "up")
        guest = Process(self, ns.exec(GVFORWARDER, "-preexisting", "-iface", "tap0",
                                      "-url", f"unix://{sock}"), "gvforwarder")
        waitFor(lambda: "link up" in guest.output() or not guest.alive(), what="the link")
        self.assertTrue(guest.alive(), guest.output())
        self.assertNotIn("udhcpc", guest.output())
        self.assertEqual(self.dhcp(ns)["ip"], "192.168.127.2")
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)

    def test_runsDHCP(self):
        """
        Without C{-preexisting} gvforwarder makes the TAP, sets the MAC, brings
        it up and runs udhcpc itself: the interface gets the lease.
        """
        if shutil.which("udhcpc") is None:
            raise self.skipTest("needs udhcpc on PATH")
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        guest = Process(self, ns.exec(GVFORWARDER, "-iface", "tap0", "-url", f"unix://{sock}"),
                        "gvforwarder")
        waitFor(lambda: "192.168.127.2/24" in ns.run("ip", "-4", "addr", "show", "tap0",
                                                     check=False).stdout
                or not guest.alive(), timeout=30, what="udhcpc's address on tap0")
        self.assertTrue(guest.alive(), guest.output())
        self.assertIn("5a:94:ef:e4:0c:ee", ns.run("ip", "link", "show", "tap0").stdout)
        self.assertIn("udhcpc", guest.output())
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)

    def test_stopIfExist(self):
        """
        An interface of -stop-if-exist exists: gvforwarder does nothing, exit 0.
        """
        ns = Namespace(self)
        result = run(ns.exec(GVFORWARDER, "-stop-if-exist", "lo", "-url",
                             "unix:///nonexistent.sock"), check=False, timeout=20)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("interface lo exists", result.stderr)
        self.assertEqual(subprocess.run(ns.exec("ip", "link", "show", "tap0"),
                                        capture_output=True).returncode, 1)


class StdioTests(DropInMixin, SynchronousTestCase):
    """
    gvproxy's C{-listen-stdio} and gvforwarder's C{stdio:} URL, together as
    gvisor-tap-vsock means them: the guest helper runs the host side as its
    child and talks frames on its stdin/stdout.
    """

    if SKIP:
        skip = SKIP

    def test_gvproxyStdio(self):
        """
        C{gvproxy -listen-stdio accept}: a DISCOVER framed on stdin gets an
        OFFER framed on stdout, and stdout carries nothing but frames (its
        log goes to stderr).
        """
        import struct

        from tests.e2e.test_links_more import dhcpDiscover, receiveOffer

        process = subprocess.Popen([GVPROXY, "-listen-stdio", "accept", "-ssh-port", "-1"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=open(os.path.join(self.tempDir, "stderr"), "wb"))

        def stop():
            if process.poll() is None:
                process.terminate()
                process.wait(10)
            process.stdin.close()
            process.stdout.close()

        self.addCleanup(stop)
        frame = dhcpDiscover()
        process.stdin.write(struct.pack("<H", len(frame)) + frame)
        process.stdin.flush()
        recv = stdioFrameReader(self, process.stdout.fileno(), lambda: "gvproxy closed stdout")

        self.assertEqual(receiveOffer(recv), "192.168.127.2")
        with open(os.path.join(self.tempDir, "stderr")) as f:
            self.assertIn("guest link up: stdio", f.read())

    def test_gvforwarderRunsGvproxy(self):
        """
        C{gvforwarder -url stdio:GVPROXY?listen-stdio=accept&ssh-port=-1}
        in a namespace starts gvproxy as its child (C{GVPROXY -listen-stdio=accept
        -ssh-port=-1}) with no C{POST /connect}; the TAP gets its lease and
        pings the gateway.
        """
        ns = Namespace(self)
        url = f"stdio:{GVPROXY}?listen-stdio=accept&ssh-port=-1"
        guest = Process(self, ns.exec(GVFORWARDER, "-url", url), "gvforwarder")
        waitFor(lambda: "192.168.127.2/24" in ns.run("ip", "-4", "addr", "show", "tap0",
                                                     check=False).stdout
                or not guest.alive(), timeout=30, what="udhcpc's address on tap0")
        self.assertTrue(guest.alive(), guest.output())
        output = guest.output()
        self.assertIn("no handshake", output)
        self.assertIn("guest link up: stdio", output)
        ping = ns.run("ping", "-c2", "-i", "0.2", "-W", "2", "192.168.127.1")
        self.assertIn("2 received", ping.stdout)
