"""
End to end: the guest's UDP and pings leave through the NAT of a real
C{twistd gvtap}, to the host's 127.0.0.1 (through 192.168.127.254) and to a
second namespace that stands in for the internet, reached over a veth pair
from the host. Only real answers come back: a ping to an address nobody holds
fails.

Network rule: every packet goes to loopback or to namespaces made here, which
are deleted (with their veth pairs) at cleanup, also when a test fails.
"""

import os
import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, run, skipReason, waitFor

SKIP = skipReason("ping")

GUEST = "192.168.127.2"
HOST = "192.168.127.254"

# A UDP echo server: binds ADDRESS:0, writes the port to PORTFILE, echoes.
ECHO_SERVER = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], 0))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""

# A UDP client: sends a datagram of each size to HOST:PORT and waits for the
# same bytes back, three tries each; prints "SIZE ok" or "SIZE lost".
ECHO_CLIENT = r"""
import os, socket, sys
host, port, sizes = sys.argv[1], int(sys.argv[2]), [int(n) for n in sys.argv[3].split(",")]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((host, port))
failed = False
for size in sizes:
    data = os.urandom(size)
    for attempt in range(3):
        s.send(data)
        try:
            while s.recv(65535) != data:
                pass
        except socket.timeout:
            continue
        print(size, "ok", flush=True)
        break
    else:
        print(size, "lost", flush=True)
        failed = True
sys.exit(1 if failed else 0)
"""


def freeSubnet():
    """
    The third byte of a 10.255.X.0/24 that no route or address on the host
    uses, for the "internet" veth.
    """
    used = run(["ip", "-4", "route"]).stdout + run(["ip", "-4", "addr"]).stdout
    start = 100 + os.getpid() % 100
    for n in list(range(start, 250)) + list(range(2, start)):
        if f"10.255.{n}." not in used:
            return n
    raise AssertionError("no free 10.255.X.0/24 on this host")


class NATTests(E2EMixin, SynchronousTestCase):
    """
    A guest at 192.168.127.2 behind a real daemon uses UDP and ping to the
    host and to an "internet" namespace.
    """

    if SKIP:
        skip = SKIP

    def startNetwork(self):
        """
        Start the daemon and a guest with its static address and default
        route.
        """
        self.daemon, sock = self.startDaemon()
        self.guest = Namespace(self)
        self.startGuest(self.guest, sock)
        self.guest.run("ip", "addr", "add", f"{GUEST}/24", "dev", "tap0")
        self.guest.run("ip", "route", "add", "default", "via", "192.168.127.1")

    def echoServer(self, address, namespace=None, name="echo"):
        """
        Start a UDP echo server on C{address} (in C{namespace}, or on the
        host); return its port.
        """
        portFile = os.path.join(self.tempDir, f"{name}.port")
        args = [sys.executable, "-c", ECHO_SERVER, address, portFile]
        process = Process(self, namespace.exec(*args) if namespace else args, name)
        waitFor(lambda: os.path.exists(portFile) or not process.alive(),
                what=f"the {name} server")
        self.assertTrue(process.alive(), process.output())
        with open(portFile) as f:
            return int(f.read())

    def udpEcho(self, host, port, sizes):
        """
        Run the echo client in the guest; assert every size came back.
        """
        result = self.guest.run(sys.executable, "-c", ECHO_CLIENT, host, str(port),
                                ",".join(str(n) for n in sizes), timeout=60, check=False)
        self.assertEqual(result.stdout.split("\n")[:-1], [f"{n} ok" for n in sizes],
                         result.stdout + result.stderr)
        self.assertEqual(result.returncode, 0)

    def internet(self):
        """
        A namespace reached from the host over a veth pair: host side
        10.255.X.1/24, namespace side 10.255.X.2/24. Returns the namespace
        and the subnet prefix C{"10.255.X."}.
        """
        inet = Namespace(self, prefix="gvtinet")
        n = freeSubnet()
        prefix = f"10.255.{n}."
        hostSide = f"gvtnat{os.getpid() % 100000}"
        run(["ip", "link", "add", hostSide, "type", "veth", "peer", "name", "inet0",
             "netns", inet.name])
        # Deleting the namespace deletes the pair too; this covers the case
        # where the namespace is already gone or the move failed.
        self.addCleanup(subprocess.run, ["ip", "link", "del", hostSide], capture_output=True)
        run(["ip", "addr", "add", prefix + "1/24", "dev", hostSide])
        run(["ip", "link", "set", hostSide, "up"])
        inet.run("ip", "addr", "add", prefix + "2/24", "dev", "inet0")
        inet.run("ip", "link", "set", "inet0", "up")
        waitFor(lambda: "1 received" in run(["ping", "-c1", "-W1", prefix + "2"],
                                            check=False).stdout,
                timeout=10, what="the internet namespace to answer the host")
        return inet, prefix

    def test_udpToHost(self):
        """
        UDP to 192.168.127.254 reaches an echo server on the host's
        127.0.0.1, and datagrams of 1 and 1400 bytes come back intact.
        """
        self.startNetwork()
        port = self.echoServer("127.0.0.1")
        self.udpEcho(HOST, port, [1, 1400])
        self.assertTrue(self.daemon.alive())

    def test_fragmentedUDPToHost(self):
        """
        An 8000-byte datagram, fragmented by the guest at MTU 1500, is
        reassembled, echoed by the host, and fragmented back to the guest,
        intact both ways.
        """
        self.startNetwork()
        port = self.echoServer("127.0.0.1")
        self.udpEcho(HOST, port, [8000, 1, 1400])

    def test_udpPortUnreachable(self):
        """
        UDP to a closed host port fails in the guest with "connection
        refused": the host's port unreachable travelled back as ICMP.
        """
        self.startNetwork()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        s.close()
        script = ("import socket, sys\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "s.settimeout(3)\n"
                  f"s.connect(({HOST!r}, {closed}))\n"
                  "for _ in range(3):\n"
                  "    try:\n"
                  "        s.send(b'x'); s.recv(10)\n"
                  "    except ConnectionRefusedError:\n"
                  "        print('refused'); break\n"
                  "    except socket.timeout:\n"
                  "        pass\n")
        result = self.guest.run(sys.executable, "-c", script, check=False)
        self.assertEqual(result.stdout.strip(), "refused", result.stderr)

    def test_pingHost(self):
        """
        C{ping -c3 192.168.127.254} gets three real replies (the host's
        127.0.0.1 answering).
        """
        self.startNetwork()
        ping = self.guest.run("ping", "-c3", "-i", "0.2", "-W", "2", HOST)
        self.assertIn("3 received", ping.stdout)

    def test_bigPingHost(self):
        """
        A 4000-byte ping, fragmented both ways, gets its replies.
        """
        self.startNetwork()
        ping = self.guest.run("ping", "-c2", "-i", "0.2", "-W", "2", "-s", "4000", HOST,
                              check=False)
        self.assertIn("2 received", ping.stdout, ping.stdout + ping.stderr)

    def test_internet(self):
        """
        A namespace routed from the host stands in for the internet: UDP
        echo and ping to it work through the NAT, and a ping to an address
        of its subnet that nobody holds gets no reply at all.
        """
        self.startNetwork()
        inet, prefix = self.internet()
        port = self.echoServer("0.0.0.0", namespace=inet, name="inetecho")
        self.udpEcho(prefix + "2", port, [1, 1400])
        ping = self.guest.run("ping", "-c3", "-i", "0.2", "-W", "2", prefix + "2", check=False)
        self.assertIn("3 received", ping.stdout, ping.stdout + ping.stderr)
        silent = self.guest.run("ping", "-c3", "-i", "0.3", "-W", "1", prefix + "3",
                                check=False)
        self.assertNotEqual(silent.returncode, 0, silent.stdout)
        self.assertIn(" 0 received", silent.stdout)
        self.assertNotIn("bytes from", silent.stdout)
        self.assertTrue(self.daemon.alive())

    def test_internetTCP(self):
        """
        TCP to the "internet" namespace works through the NAT (an HTTP GET
        gets the file), and a TCP connection to an address there that nobody
        holds fails with "no route to host" from the NAT's ICMP error, not
        with a silent hang.
        """
        self.startNetwork()
        inet, prefix = self.internet()
        root = os.path.join(self.tempDir, "www")
        os.makedirs(root)
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write("hello from the internet namespace\n")
        web = Process(self, inet.exec(sys.executable, "-m", "http.server", "--bind",
                                      prefix + "2", "--directory", root, "8080"), "inetweb")
        waitFor(lambda: "Serving HTTP" in web.output() or not web.alive(), what="http.server")
        got = self.guest.run("curl", "-sS", "--max-time", "20",
                             f"http://{prefix}2:8080/hello.txt", timeout=30)
        self.assertEqual(got.stdout, "hello from the internet namespace\n")
        nobody = self.guest.run(sys.executable, "-c",
                                "import socket; socket.create_connection("
                                f"('{prefix}3', 8080), timeout=40)", timeout=60, check=False)
        self.assertIn("OSError: [Errno 113] No route to host", nobody.stderr)
