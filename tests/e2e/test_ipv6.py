"""
End to end over IPv6: a real C{twistd gvtap}, the guest helper in a network
namespace whose kernel has its default IPv6 settings, and real clients: the
kernel's own SLAAC, C{ping -6}, ISC C{dhclient -6} and C{dig}.

The namespace needs no sysctl at all: a new namespace starts with
C{accept_ra=1}, C{autoconf=1}, C{forwarding=0} and C{addr_gen_mode=0}
(EUI-64), which is what a guest distribution has. The tests read these
sysctls and say so if they differ, rather than set them.
"""

import os
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, run, skipReason, waitFor

SKIP = skipReason("ping", "dhclient", "dig")

GATEWAY6 = "fd00:192:168:127::1"
GATEWAY_LL = "fe80::5894:efff:fee4:cdd"
DEVICE_SLAAC = "fd00:192:168:127:5894:efff:fee4:cee"

DHCLIENT_SCRIPT = """#!/bin/sh
# Records what dhclient was told; configures an address it was leased.
env | grep -E '^(reason|new_dhcp6_|new_ip6_)' | sort >> {record}
echo --- >> {record}
case "$reason" in
  BOUND6|REBOOT6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr add "$new_ip6_address/128" dev "$interface" nodad
    ;;
esac
exit 0
"""


class IPv6Tests(E2EMixin, SynchronousTestCase):
    """
    A guest with a default kernel configures IPv6 from the gateway.
    """

    if SKIP:
        skip = SKIP

    def guest(self, *daemonArgs):
        self.daemon, sock = self.startDaemon(*daemonArgs)
        ns = Namespace(self)
        for name, expected in (("accept_ra", "1"), ("autoconf", "1"), ("forwarding", "0")):
            value = ns.run("sysctl", "-n", f"net.ipv6.conf.default.{name}").stdout.strip()
            self.assertEqual(value, expected, f"net.ipv6.conf.default.{name} in a new namespace")
        self.startGuest(ns, sock)
        return ns

    def waitForSLAAC(self, ns, address=DEVICE_SLAAC, timeout=10.0):
        """
        Wait until the kernel has C{address}/64 on tap0, past duplicate
        address detection; return how long that took.
        """
        started = time.monotonic()

        def ready():
            out = ns.run("ip", "-6", "addr", "show", "dev", "tap0", "scope", "global").stdout
            return f"{address}/64" in out and "tentative" not in out

        waitFor(ready, timeout=timeout, interval=0.1, what=f"{address} by SLAAC")
        return time.monotonic() - started

    def dhclient(self, ns, *args):
        record = os.path.join(self.tempDir, "dhclient.record")
        script = os.path.join(self.tempDir, "dhclient.script")
        with open(script, "w") as f:
            f.write(DHCLIENT_SCRIPT.format(record=record))
        os.chmod(script, 0o755)
        ns.run("dhclient", "-6", *args, "-1", "-sf", script,
               "-lf", os.path.join(self.tempDir, "dhclient.leases"),
               "-pf", os.path.join(self.tempDir, "dhclient.pid"), "tap0", timeout=60)
        with open(record) as f:
            blocks = f.read().split("---\n")
        self.dhclientRecord = blocks
        values = {}
        for line in blocks[-2].splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip("'")
        return values

    def test_slaacAndPing(self):
        """
        Within a few seconds of the link coming up the kernel has its
        EUI-64 address in the prefix (from the router advertisement it
        solicited), the prefix route, a default route through the gateway's
        link-local address, and the MTU; C{ping -6} reaches the
        gateway's global and link-local addresses.
        """
        ns = self.guest("--mtu", "1400")
        took = self.waitForSLAAC(ns)
        self.assertLess(took, 8.0)
        routes = ns.run("ip", "-6", "route", "show", "dev", "tap0").stdout
        self.assertIn("fd00:192:168:127::/64", routes)
        self.assertIn(f"default via {GATEWAY_LL} proto ra", routes)
        mtu = ns.run("sysctl", "-n", "net.ipv6.conf.tap0.mtu").stdout.strip()
        self.assertEqual(mtu, "1400")
        ping = ns.run("ping", "-6", "-c3", "-i", "0.2", "-W", "2", GATEWAY6)
        self.assertIn("3 received", ping.stdout)
        ping = ns.run("ping", "-6", "-c2", "-i", "0.2", "-W", "2", f"{GATEWAY_LL}%tap0")
        self.assertIn("2 received", ping.stdout)
        neighbours = ns.run("ip", "-6", "neigh", "show", "dev", "tap0").stdout
        self.assertIn("5a:94:ef:e4:0c:dd", neighbours)
        self.assertIn("router", neighbours)
        unanswered = ns.run("ping", "-6", "-c1", "-W", "2", "fd00:192:168:127::77", check=False)
        self.assertNotEqual(unanswered.returncode, 0)

    def test_noIPv6(self):
        """
        With --no-ipv6 the guest gets no global address.
        """
        ns = self.guest("--no-ipv6")
        time.sleep(4)
        out = ns.run("ip", "-6", "addr", "show", "dev", "tap0", "scope", "global").stdout
        self.assertNotIn("fd00", out)

    def test_dhcpv6Stateless(self):
        """
        C{dhclient -6 -S} (an information-request) is told the gateway as
        DNS server, the host's search domains (those of the daemon's
        /etc/resolv.conf, if it has any) and a refresh time. ISC dhclient
        runs its script with reason RENEW6 for a stateless reply.
        """
        from gvtwisted.services.dhcp import searchDomainsFromResolvConf

        ns = self.guest()
        self.waitForSLAAC(ns)
        values = self.dhclient(ns, "-S")
        self.assertEqual(values.get("reason"), "RENEW6", self.dhclientRecord)
        self.assertEqual(values.get("new_dhcp6_name_servers"), GATEWAY6)
        self.assertEqual(values.get("new_dhcp6_server_id"), "0:3:0:1:5a:94:ef:e4:c:dd")
        self.assertEqual(values.get("new_dhcp6_info_refresh_time"), "3600")
        self.assertNotIn("new_ip6_address", values)
        domains = searchDomainsFromResolvConf("/etc/resolv.conf")
        if domains:
            self.assertEqual([d.rstrip(".") for d in values.get("new_dhcp6_domain_search", "").split()],
                             [d.rstrip(".") for d in domains])
        else:
            self.assertNotIn("new_dhcp6_domain_search", values)

    def test_dhcpv6Stateful(self):
        """
        C{dhclient -6} (solicit, advertise, request, reply) from the device
        MAC is leased the static address ::2.
        """
        ns = self.guest()
        self.waitForSLAAC(ns)
        values = self.dhclient(ns)
        self.assertEqual(values.get("reason"), "BOUND6", values)
        self.assertEqual(values.get("new_ip6_address"), "fd00:192:168:127::2")
        self.assertEqual(values.get("new_dhcp6_name_servers"), GATEWAY6)
        ping = ns.run("ping", "-6", "-c2", "-i", "0.2", "-W", "2", "-I",
                      "fd00:192:168:127::2", GATEWAY6)
        self.assertIn("2 received", ping.stdout)

    def test_dnsOverIPv6(self):
        """
        C{dig} asks the gateway's DNS on its IPv6 address over UDP and gets
        the local zone's answers, A and AAAA.
        """
        ns = self.guest()
        self.waitForSLAAC(ns)
        answer = ns.run("dig", "+short", "+notcp", "+time=2", "+tries=2", f"@{GATEWAY6}",
                        "gateway.containers.internal", "A").stdout.split()
        self.assertEqual(answer, ["192.168.127.1"])
        answer = ns.run("dig", "+short", "+notcp", "+time=2", "+tries=2", f"@{GATEWAY6}",
                        "gateway.containers.internal", "AAAA").stdout.split()
        self.assertEqual(answer, [GATEWAY6])


HOST6 = "fd00:192:168:127::fe"

# A UDP echo server on IPv6: binds ADDRESS:0, writes the port to PORTFILE.
ECHO6_SERVER = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""

# A UDP client over IPv6: each size to [HOST]:PORT and back, three tries
# each; prints "SIZE ok" or "SIZE lost", or "refused"/"unreachable ERRNO".
ECHO6_CLIENT = r"""
import os, socket, sys
host, port, sizes = sys.argv[1], int(sys.argv[2]), [int(n) for n in sys.argv[3].split(",")]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
# Report soft errors too (an address unreachable is one for UDP, RFC 4443).
s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
s.settimeout(2)
s.connect((host, port))
for size in sizes:
    data = os.urandom(size)
    for attempt in range(3):
        try:
            s.send(data)
            while s.recv(65535) != data:
                pass
        except socket.timeout:
            continue
        except ConnectionRefusedError:
            print("refused", flush=True)
            sys.exit(0)
        except OSError as e:
            print("unreachable", e.errno, flush=True)
            sys.exit(0)
        print(size, "ok", flush=True)
        break
    else:
        print(size, "lost", flush=True)
"""


class NAT66Case(E2EMixin, SynchronousTestCase):
    """
    A daemon and a guest that has its SLAAC address and default route.
    Network rule: only loopback and namespaces made here.
    """

    if SKIP:
        skip = SKIP

    daemonArgs = ()

    def setUp(self):
        E2EMixin.setUp(self)
        from tests.e2e.harness import Process

        self.Process = Process
        self.daemon, sock = self.startDaemon(*self.daemonArgs)
        self.guest = Namespace(self)
        self.startGuest(self.guest, sock)
        IPv6Tests.waitForSLAAC(self, self.guest)
        waitFor(lambda: "default via" in self.guest.run("ip", "-6", "route").stdout,
                what="the default route from the router advertisement")

    def echoServer(self, address, namespace=None, name="echo6"):
        portFile = os.path.join(self.tempDir, f"{name}.port")
        args = [sys.executable, "-c", ECHO6_SERVER, address, portFile]
        process = self.Process(self, namespace.exec(*args) if namespace else args, name)
        waitFor(lambda: os.path.exists(portFile) or not process.alive(), what=f"the {name} server")
        self.assertTrue(process.alive(), process.output())
        with open(portFile) as f:
            return int(f.read())

    def udpEcho(self, host, port, sizes):
        result = self.guest.run(sys.executable, "-c", ECHO6_CLIENT, host, str(port),
                                ",".join(str(n) for n in sizes), timeout=60, check=False)
        return result.stdout.split("\n")[:-1]

    def internet(self):
        """
        A namespace on a veth from the host: host side fd99:N::1/64,
        namespace side fd99:N::2/64. Returns the namespace and "fd99:N::".
        """
        inet = Namespace(self, prefix="gvtinet6")
        n = os.getpid() % 0xFFFF
        prefix = f"fd99:{n:x}::"
        hostSide = f"gvt6nat{os.getpid() % 100000}"
        run(["ip", "link", "add", hostSide, "type", "veth", "peer", "name", "inet0",
             "netns", inet.name])
        self.addCleanup(subprocess.run, ["ip", "link", "del", hostSide], capture_output=True)
        run(["ip", "addr", "add", prefix + "1/64", "dev", hostSide, "nodad"])
        run(["ip", "link", "set", hostSide, "up"])
        inet.run("ip", "addr", "add", prefix + "2/64", "dev", "inet0", "nodad")
        inet.run("ip", "link", "set", "inet0", "up")
        waitFor(lambda: "1 received" in run(["ping", "-6", "-c1", "-W1", prefix + "2"],
                                            check=False).stdout,
                timeout=10, what="the internet namespace to answer the host")
        return inet, prefix



class NAT66Tests(NAT66Case):
    """
    The guest's IPv6 UDP and pings leave through NAT66: to the host's ::1
    (through ::fe) and to an "internet" namespace on a veth with IPv6
    addresses.
    """

    def test_pingHost(self):
        """
        C{ping -6 ::fe} gets real replies from the host's ::1.
        """
        ping = self.guest.run("ping", "-6", "-c3", "-i", "0.2", "-W", "2", HOST6)
        self.assertIn("3 received", ping.stdout)

    def test_udpToHost(self):
        """
        UDP over IPv6 to [::fe]:PORT reaches an echo server on the host's
        [::1]:PORT; 1 and 1200 bytes come back intact.
        """
        port = self.echoServer("::1")
        self.assertEqual(self.udpEcho(HOST6, port, [1, 1200]), ["1 ok", "1200 ok"])

    def test_fragmentedUDPToHost(self):
        """
        An 8000-byte datagram, fragmented by the guest's kernel, is
        reassembled, echoed by the host's ::1 and fragmented back, intact.
        """
        port = self.echoServer("::1")
        self.assertEqual(self.udpEcho(HOST6, port, [8000, 1]), ["8000 ok", "1 ok"])

    def test_udpPortUnreachable(self):
        """
        UDP to a closed port of the host's ::1 is refused in the guest: the
        port unreachable travelled back as ICMPv6.
        """
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        closed = s.getsockname()[1]
        s.close()
        self.assertEqual(self.udpEcho(HOST6, closed, [1]), ["refused"])

    def test_internet(self):
        """
        ping -6 and UDP to a namespace reached over a veth from the host go
        through NAT66 and come back; an address nobody holds gets no reply.
        """
        inet, prefix = self.internet()
        ping = self.guest.run("ping", "-6", "-c3", "-i", "0.2", "-W", "2", prefix + "2")
        self.assertIn("3 received", ping.stdout)
        port = self.echoServer(prefix + "2", namespace=inet, name="inet-echo6")
        self.assertEqual(self.udpEcho(prefix + "2", port, [1, 1200]), ["1 ok", "1200 ok"])
        nobody = self.guest.run("ping", "-6", "-c1", "-W", "2", prefix + "77", check=False)
        self.assertNotEqual(nobody.returncode, 0)

    def test_noRouteAtOnce(self):
        """
        A destination the host has no route to (an unreachable route added
        for the test) is answered with an ICMPv6 unreachable at once.
        """
        prefix = f"fd98:{os.getpid() % 0xFFFF:x}::"
        run(["ip", "-6", "route", "add", "unreachable", prefix + "/64"])
        self.addCleanup(subprocess.run, ["ip", "-6", "route", "del", "unreachable", prefix + "/64"],
                        capture_output=True)
        started = time.monotonic()
        ping = self.guest.run("ping", "-6", "-c1", "-W", "5", prefix + "1", check=False)
        self.assertNotEqual(ping.returncode, 0)
        self.assertIn("Destination unreachable", ping.stdout + ping.stderr)
        self.assertLess(time.monotonic() - started, 3.0)
        result = self.udpEcho(prefix + "1", 9, [1])
        self.assertEqual(len(result), 1)
        self.assertTrue(result[0].startswith("unreachable"), result)


class TCP66Tests(NAT66Case):
    """
    TCP over NAT66: to a server bound only to the host's [::1] (through
    ::fe), and to the IPv6 "internet" namespace; DNS over TCP on the
    gateway's IPv6 address.
    """

    def bigFile(self, mib):
        path = os.path.join(self.tempDir, "random.bin")
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        return path

    def httpServer(self, address, namespace=None):
        from tests.e2e.test_nat_tcp import _httpPort

        args = [sys.executable, "-m", "http.server", "--bind", address, "--directory",
                self.tempDir, "0"]
        web = self.Process(self, namespace.exec(*args) if namespace else args, "http6")
        return waitFor(lambda: _httpPort(web.output()), what="http.server on IPv6")

    def test_curlHostLoopback(self):
        """
        curl over IPv6 downloads 20 MiB from a server bound only to the
        host's [::1], through [::fe], and the sha256 matches; so does
        host.containers.internal, now that it has an AAAA record.
        """
        from tests.e2e.test_nat_tcp import sha256File

        path = self.bigFile(20)
        port = self.httpServer("::1")
        out = os.path.join(self.tempDir, "downloaded.bin")
        self.guest.run("curl", "-6", "-sS", "--max-time", "120", "-o", out,
                       f"http://[{HOST6}]:{port}/random.bin", timeout=150)
        self.assertEqual(sha256File(out), sha256File(path))
        answer = self.guest.run("dig", "+short", f"@{GATEWAY6}", "host.containers.internal",
                                "AAAA").stdout.split()
        self.assertEqual(answer, [HOST6])

    def test_refusedAtOnce(self):
        """
        A closed port of the host's ::1 is refused at once (RST).
        """
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
        started = time.monotonic()
        result = self.guest.run(sys.executable, "-c",
                                "import socket; socket.create_connection("
                                f"('{HOST6}', {port}), timeout=20)", check=False)
        self.assertIn("ConnectionRefusedError", result.stderr)
        self.assertLess(time.monotonic() - started, 10)

    def test_internetTCP(self):
        """
        curl -6 to a server in the IPv6 "internet" namespace through NAT66;
        the sha256 matches.
        """
        from tests.e2e.test_nat_tcp import sha256File

        inet, prefix = self.internet()
        path = self.bigFile(5)
        port = self.httpServer(prefix + "2", namespace=inet)
        out = os.path.join(self.tempDir, "downloaded.bin")
        self.guest.run("curl", "-6", "-sS", "--max-time", "60", "-o", out,
                       f"http://[{prefix}2]:{port}/random.bin", timeout=90)
        self.assertEqual(sha256File(out), sha256File(path))

    def test_dnsOverTCP(self):
        """
        dig +tcp to the gateway's IPv6 address is answered.
        """
        answer = self.guest.run("dig", "+short", "+tcp", "+time=2", f"@{GATEWAY6}",
                                "gateway.containers.internal", "AAAA").stdout.split()
        self.assertEqual(answer, [GATEWAY6])


def _freePort(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ForwardTests(NAT66Case):
    """
    Forwards from the host into the guest with IPv6: C{:PORT} answers on
    the host's 127.0.0.1 and [::1]; a forward to the guest's IPv6 address
    works, and the guest sees the host address of the right family.
    """

    def setUp(self):
        self.dual = _freePort()
        self.six = _freePort(socket.AF_INET6, "::1")
        self.udp6 = _freePort(socket.AF_INET6, "::1")
        self.guestPort = 8000 + os.getpid() % 1000
        self.daemonArgs = (
            "--forward", f":{self.dual}=192.168.127.2:{self.guestPort}",
            "--forward", f"[::1]:{self.six}=[{DEVICE_SLAAC}]:{self.guestPort}",
            "--forward", f"udp:[::1]:{self.udp6}=[{DEVICE_SLAAC}]:{self.guestPort + 1}")
        NAT66Case.setUp(self)
        self.guest.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")
        with open(os.path.join(self.tempDir, "hello.txt"), "w") as f:
            f.write("hello from the guest\n")
        args = [sys.executable, "-m", "http.server", "--bind", "::", "--directory",
                self.tempDir, str(self.guestPort)]
        self.web = self.Process(self, self.guest.exec(*args), "guest-http")
        waitFor(lambda: "Serving HTTP" in self.web.output(), what="the guest's http.server")

    def fetch(self, url):
        return run(["curl", "-sS", "--max-time", "20", url], timeout=30).stdout

    def test_bothFamilies(self):
        """
        C{:PORT} answers on 127.0.0.1 and on [::1] (to the guest's IPv4
        server, which sees the IPv4 host address); C{[::1]:PORT} to the
        guest's IPv6 address reaches it over IPv6, from ::fe.
        """
        self.assertEqual(self.fetch(f"http://127.0.0.1:{self.dual}/hello.txt"),
                         "hello from the guest\n")
        self.assertEqual(self.fetch(f"http://[::1]:{self.dual}/hello.txt"),
                         "hello from the guest\n")
        self.assertEqual(self.fetch(f"http://[::1]:{self.six}/hello.txt"),
                         "hello from the guest\n")
        log = self.web.output()
        self.assertIn("::ffff:192.168.127.254", log)
        self.assertIn(HOST6, log)

    def test_udpOverIPv6(self):
        """
        A UDP forward from the host's [::1] to the guest's IPv6 address
        carries a datagram there and the answer back; the guest sees ::fe.
        """
        portFile = os.path.join(self.tempDir, "guest-echo.port")
        server = ECHO6_SERVER.replace("s.bind((sys.argv[1], 0))",
                                      f"s.bind((sys.argv[1], {self.guestPort + 1}))")
        server = server.replace("s.sendto(data, addr)", "s.sendto(addr[0].encode(), addr)")
        process = self.Process(self, self.guest.exec(sys.executable, "-c", server, "::", portFile),
                               "guest-echo6")
        waitFor(lambda: os.path.exists(portFile) or not process.alive(), what="the guest's echo")
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.settimeout(2)
        for _ in range(3):
            s.sendto(b"who am I?", ("::1", self.udp6))
            try:
                data, _ = s.recvfrom(100)
                break
            except socket.timeout:
                continue
        else:
            self.fail("no answer through the UDP forward")
        s.close()
        self.assertEqual(data.decode(), HOST6)
