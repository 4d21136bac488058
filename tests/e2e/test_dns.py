"""
End to end: dig inside a guest namespace asks the gateway (192.168.127.1), which
answers local names itself and forwards the rest to an upstream that this test
starts on 127.0.0.1 (C{twistd dns} with zones of its own). No query leaves the
machine.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import TWISTD, E2EMixin, Namespace, Process, freePort, skipReason, waitFor

SKIP = skipReason("dig", "getent")

FORWARD_ZONE = """
zone = [
    SOA('example.test', mname='ns1.example.test', rname='admin.example.test',
        serial=7, refresh=3600, retry=600, expire=86400, minimum=300, ttl=300),
    NS('example.test', 'ns1.example.test'),
    A('ns1.example.test', '10.53.0.1'),
    A('www.example.test', '10.11.12.13', ttl=1234),
    AAAA('www.example.test', '2001:db8::13'),
    MX('example.test', 10, 'mail.example.test'),
    TXT('txt.example.test', b'hello from upstream'),
    TXT('big.example.test', *[(b'%02d' % i) * 100 for i in range(15)]),
    SRV('_http._tcp.example.test', 1, 5, 8080, 'www.example.test'),
]
"""

REVERSE_ZONE = """
zone = [
    SOA('12.11.10.in-addr.arpa', mname='ns1.example.test', rname='admin.example.test',
        serial=7, refresh=3600, retry=600, expire=86400, minimum=300, ttl=300),
    PTR('13.12.11.10.in-addr.arpa', 'www.example.test'),
]
"""


class DNSTests(E2EMixin, SynchronousTestCase):
    """
    The gateway's DNS, from a guest namespace.
    """

    if SKIP:
        skip = SKIP

    def setUp(self):
        E2EMixin.setUp(self)
        zones = []
        for name, text in (("forward", FORWARD_ZONE), ("reverse", REVERSE_ZONE)):
            path = os.path.join(self.tempDir, f"{name}.zone.py")
            with open(path, "w") as f:
                f.write(text)
            zones += ["--pyzone", path]
        port = freePort(both=True)
        upstream = Process(self, TWISTD + ["-n", "--pidfile=", "dns", "-i", "127.0.0.1",
                                           "-p", str(port)] + zones, "upstream")
        waitFor(lambda: "DNSDatagramProtocol starting on" in upstream.output()
                or not upstream.alive(), what="the upstream DNS server")
        self.assertTrue(upstream.alive(), upstream.output())
        self.daemon, sock = self.startDaemon("--dns-upstream", f"127.0.0.1:{port}")
        self.ns = Namespace(self)
        self.startGuest(self.ns, sock)
        self.ns.run("ip", "addr", "add", "192.168.127.2/24", "dev", "tap0")

    def dig(self, *args):
        result = self.ns.run("dig", "@192.168.127.1", "+time=3", "+tries=2", *args)
        return result.stdout

    def short(self, *args):
        return self.dig("+short", *args).strip().split("\n")

    def test_recordTypes(self):
        """
        A, AAAA, MX, TXT, SRV, PTR and SOA come back as the upstream holds them.
        """
        self.assertEqual(self.short("www.example.test", "A"), ["10.11.12.13"])
        self.assertEqual(self.short("www.example.test", "AAAA"), ["2001:db8::13"])
        self.assertEqual(self.short("example.test", "MX"), ["10 mail.example.test."])
        self.assertEqual(self.short("txt.example.test", "TXT"), ['"hello from upstream"'])
        self.assertEqual(self.short("_http._tcp.example.test", "SRV"),
                         ["1 5 8080 www.example.test."])
        self.assertEqual(self.short("-x", "10.11.12.13"), ["www.example.test."])
        soa = self.short("example.test", "SOA")[0].split()
        self.assertEqual(soa[:3], ["ns1.example.test.", "admin.example.test.", "7"])

    def test_nxdomainAndTTL(self):
        """
        A name the upstream does not have is NXDOMAIN, and the upstream's TTL
        is kept.
        """
        self.assertIn("status: NXDOMAIN", self.dig("nothing.example.test", "A"))
        answer = self.dig("+noall", "+answer", "www.example.test", "A").split()
        self.assertEqual(answer[0], "www.example.test.")
        self.assertLessEqual(int(answer[1]), 1234)
        self.assertGreater(int(answer[1]), 1200)

    def test_tcpAndTruncation(self):
        """
        dig +tcp works; a 3000-byte TXT answer comes back truncated over UDP and
        whole over TCP, and dig without flags retries over TCP by itself.
        """
        self.assertEqual(self.short("+tcp", "www.example.test", "A"), ["10.11.12.13"])
        udp = self.dig("+ignore", "+noedns", "big.example.test", "TXT")
        self.assertIn(" tc", udp.split("flags:")[1].split(";")[0])
        whole = self.short("+tcp", "big.example.test", "TXT")[0]
        self.assertEqual(whole.replace('"', "").replace(" ", ""),
                         "".join(("%02d" % i) * 100 for i in range(15)))
        retried = self.short("big.example.test", "TXT")[0]
        self.assertEqual(retried, whole)

    def test_localNames(self):
        """
        gateway.containers.internal and host.docker.internal resolve locally,
        AAAA for them gives their IPv6 addresses, and getent works in the
        namespace.
        """
        self.assertEqual(self.short("gateway.containers.internal"), ["192.168.127.1"])
        self.assertEqual(self.short("host.docker.internal"), ["192.168.127.254"])
        aaaa = self.dig("host.docker.internal", "AAAA")
        self.assertIn("status: NOERROR", aaaa)
        self.assertIn("ANSWER: 1", aaaa)
        self.assertEqual(self.short("host.docker.internal", "AAAA"), ["fd00:192:168:127::fe"])
        self.assertEqual(self.short("gateway.containers.internal", "AAAA"),
                         ["fd00:192:168:127::1"])
        self.assertIn("status: NXDOMAIN", self.dig("nobody.containers.internal"))
        getent = self.ns.run("getent", "hosts", "www.example.test")
        self.assertIn("www.example.test", getent.stdout)
        self.assertTrue(getent.stdout.split()[0] in ("10.11.12.13", "2001:db8::13"),
                        getent.stdout)
        getent = self.ns.run("getent", "ahostsv4", "www.example.test")
        self.assertIn("10.11.12.13", getent.stdout)
