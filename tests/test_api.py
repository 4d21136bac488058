"""
Tests for the control API (L{gvtwisted.services.api} and its helpers) and for
its wiring in C{twistd gvtap}.

Requests go through a real twisted.web C{Site} and C{HTTPChannel} over a
L{StringTransport}: raw HTTP bytes in, raw HTTP bytes out, so status lines,
headers and bodies are checked as a client would see them. The gvtap behind it
is the real assembly on a memory reactor, so no socket is opened except in the
tests that say so (TLS and unix socket modes, on 127.0.0.1 and in the test's own
directory).
"""

import datetime
import json
import os
import re
import socket
import ssl
import stat

from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from gvtwisted.link.endpoints import serverEndpointString
from gvtwisted.services.api import makeAPISite
from gvtwisted.services.api_http import MAX_BODY
from gvtwisted.services.api_stats import metricName, prometheusText
from gvtwisted.services.api_tls import splitDescription, tlsServerEndpoint
from tests.checksumpolicy import verifyingVariants

LOOPBACK_PEER = IPv4Address("TCP", "127.0.0.1", 50000)
GUEST_PEER = IPv4Address("TCP", "192.168.127.2", 40000)


class Response:
    """
    A parsed HTTP/1.1 response: C{code}, C{headers} (lower-case names),
    C{body} (de-chunked), C{raw}.
    """

    def __init__(self, raw: bytes):
        self.raw = raw
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode()] = value.strip().decode()
        if self.headers.get("transfer-encoding") == "chunked":
            body = b""
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            self.body = body
        else:
            self.body = rest[:int(self.headers.get("content-length", len(rest)))]

    def json(self):
        return json.loads(self.body)


class APITestMixin:
    """
    A gvtap on a memory reactor and a way to send it raw requests.
    """

    def setUp(self):
        from tests.test_forwarder import ForwardReactor

        self.reactor = ForwardReactor()
        self.gvtap = Gvtap(self.reactor, NetworkConfig(), resolvConf=os.devnull)
        self.site = makeAPISite(self.gvtap)
        self.guestSite = makeAPISite(self.gvtap, guest=True)

    def send(self, raw: bytes, site=None, peer=LOOPBACK_PEER):
        """
        Open a connection to C{site}, send C{raw}; return the transport and
        the protocol.
        """
        site = site or self.site
        protocol = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return transport, protocol

    def request(self, method, path, body=None, site=None, peer=LOOPBACK_PEER, headers=b""):
        """
        Send one request and return its L{Response}.
        """
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + headers
        if body is not None:
            raw += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        raw += b"\r\n" + (body or b"")
        transport, _ = self.send(raw, site, peer)
        return Response(transport.value())


class ForwarderRouteTests(APITestMixin, SynchronousTestCase):
    """
    C{/services/forwarder/all}, C{/expose} and C{/unexpose}.
    """

    def expose(self, body, **kw):
        return self.request("POST", "/services/forwarder/expose", body, **kw)

    def test_allEmpty(self):
        """
        With no forward the list is an empty JSON array (with Go's newline).
        """
        r = self.request("GET", "/services/forwarder/all")
        self.assertEqual((r.code, r.body), (200, b"[]\n"))
        self.assertEqual(r.headers["content-type"], "application/json")

    def test_expose(self):
        """
        An expose answers 200 with an empty body, listens on the host, and
        the forward is listed.
        """
        r = self.expose({"local": "127.0.0.1:8080", "remote": "192.168.127.2:80",
                         "protocol": "tcp"})
        self.assertEqual((r.code, r.body, r.headers.get("content-length")), (200, b"", "0"))
        self.assertEqual([(p.kind, p.port, p.interface) for p in self.reactor.ports],
                         [("TCP", 8080, "127.0.0.1")])
        self.assertEqual(self.request("GET", "/services/forwarder/all").json(), [
            {"local": "127.0.0.1:8080", "remote": "192.168.127.2:80", "protocol": "tcp"}])

    def test_exposeDefaultProtocol(self):
        """
        Without a protocol, tcp is meant.
        """
        self.assertEqual(self.expose({"local": "127.0.0.1:8080", "remote": "192.168.127.2:80"}).code, 200)
        self.assertEqual(self.gvtap.forwarder.all()[0]["protocol"], "tcp")

    def test_exposeCaseInsensitiveKeys(self):
        """
        Keys match without regard to case, as Go's JSON decoder matches them.
        """
        r = self.expose({"Local": "127.0.0.1:8080", "Remote": "192.168.127.2:80", "Protocol": "udp"})
        self.assertEqual(r.code, 200)
        self.assertEqual(self.gvtap.forwarder.all()[0]["protocol"], "udp")

    def test_exposeTwice(self):
        """
        A second expose of the same local is 500 C{proxy already running}.
        """
        body = {"local": "127.0.0.1:8080", "remote": "192.168.127.2:80"}
        self.expose(body)
        r = self.expose(body)
        self.assertEqual((r.code, r.body), (500, b"proxy already running\n"))
        self.assertEqual(r.headers["content-type"], "text/plain; charset=utf-8")

    def test_exposeBadJSON(self):
        """
        A body that is not JSON, or not an object, is 400.
        """
        for body in (b"{", b"\xff", b"[1]", b""):
            r = self.expose(body)
            self.assertEqual(r.code, 400, body)
        self.assertEqual(self.reactor.ports, [])

    def test_exposeMissingField(self):
        """
        A missing local or remote is 400 with a message that names it.
        """
        r = self.expose({"remote": "192.168.127.2:80"})
        self.assertEqual((r.code, r.body), (400, b"local: missing\n"))
        r = self.expose({"local": "127.0.0.1:8080"})
        self.assertEqual((r.code, r.body), (400, b"remote: missing\n"))
        r = self.expose({"local": 8080, "remote": "192.168.127.2:80"})
        self.assertEqual(r.code, 400)
        self.assertIn(b"local", r.body)

    def test_exposeBadValues(self):
        """
        A malformed remote or an unknown protocol is 400 naming the field.
        """
        r = self.expose({"local": "127.0.0.1:8080", "remote": "guest:80"})
        self.assertEqual(r.code, 400)
        self.assertTrue(r.body.startswith(b"remote: "), r.body)
        r = self.expose({"local": "127.0.0.1:8080", "remote": "192.168.127.2:80", "protocol": "sctp"})
        self.assertEqual(r.code, 400)
        self.assertTrue(r.body.startswith(b"protocol: "), r.body)

    def test_exposeBindFails(self):
        """
        A local that cannot listen is 500 with the operating system's reason.
        """
        self.reactor.refuse = OSError(98, "Address already in use")
        r = self.expose({"local": "127.0.0.1:2222", "remote": "192.168.127.2:22"})
        self.assertEqual((r.code, r.body),
                         (500, b"listen tcp 127.0.0.1:2222: Address already in use\n"))

    def test_wrongMethod(self):
        """
        GET on expose, or POST on all, is 405 with an Allow header.
        """
        r = self.request("GET", "/services/forwarder/expose")
        self.assertEqual((r.code, r.headers["allow"]), (405, "POST"))
        r = self.request("POST", "/services/forwarder/all", b"{}")
        self.assertEqual((r.code, r.headers["allow"]), (405, "GET, HEAD"))

    def test_bodyTooLarge(self):
        """
        A Content-Length over 1 MiB is 413 before the body is read, and the
        connection is closed; nothing is exposed.
        """
        transport, _ = self.send(
            b"POST /services/forwarder/expose HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: " + str(MAX_BODY + 1).encode() + b"\r\n"
            b"Expect: 100-continue\r\n\r\n")
        r = Response(transport.value())
        self.assertEqual(r.code, 413)
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_chunkedBodyTooLarge(self):
        """
        A chunked body that grows past 1 MiB gets 413 once it does.
        """
        chunk = b"x" * 65536
        raw = (b"POST /services/forwarder/expose HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        transport, protocol = self.send(raw)
        for _ in range(16):
            protocol.dataReceived(b"10000\r\n" + chunk + b"\r\n")
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"10000\r\n" + chunk + b"\r\n")
        self.assertEqual(Response(transport.value()).code, 413)
        self.assertTrue(transport.disconnecting)

    def test_bodyAtLimit(self):
        """
        A body of exactly 1 MiB is read (and, being no JSON object, is 400).
        """
        r = self.expose(b" " * (MAX_BODY - 2) + b"[]")
        self.assertEqual(r.code, 400)

    def test_unexpose(self):
        """
        Unexpose answers 200 and removes the forward; again, 500 C{proxy not
        found}.
        """
        self.expose({"local": "127.0.0.1:8080", "remote": "192.168.127.2:80"})
        r = self.request("POST", "/services/forwarder/unexpose", {"local": "127.0.0.1:8080"})
        self.assertEqual((r.code, r.body), (200, b""))
        self.assertEqual(self.gvtap.forwarder.all(), [])
        r = self.request("POST", "/services/forwarder/unexpose",
                         {"local": "127.0.0.1:8080", "protocol": "tcp"})
        self.assertEqual((r.code, r.body), (500, b"proxy not found\n"))

    def test_unexposeBad(self):
        """
        Unexpose without local, or with bad JSON, is 400.
        """
        self.assertEqual(self.request("POST", "/services/forwarder/unexpose", {}).code, 400)
        self.assertEqual(self.request("POST", "/services/forwarder/unexpose", b"x").code, 400)

    def test_remoteCallerIP(self):
        """
        On the guest API a remote of C{":PORT"} is that port at the caller's
        address.
        """
        r = self.expose({"local": "127.0.0.1:8080", "remote": ":8080"}, site=self.guestSite,
                        peer=GUEST_PEER)
        self.assertEqual(r.code, 200)
        self.assertEqual(self.gvtap.forwarder.all()[0]["remote"], "192.168.127.2:8080")

    def test_remoteCallerWithoutIP(self):
        """
        Over a unix socket the caller has no IP: C{":PORT"} is 400.
        """
        r = self.expose({"local": "127.0.0.1:8080", "remote": ":8080"}, peer=UNIXAddress(None))
        self.assertEqual(r.code, 400)
        self.assertTrue(r.body.startswith(b"remote: "))

    def test_remoteOutsideSubnet(self):
        """
        A remote that is not a guest address (outside the subnet, or the
        gateway's, the host's or the broadcast address) is refused with 400
        naming C{remote}, and nothing is forwarded.
        """
        for remote in ("10.0.0.5:80", "192.168.127.1:80", "192.168.127.254:80",
                       "192.168.127.255:80", "192.168.127.0:80"):
            r = self.expose({"local": "127.0.0.1:0", "remote": remote})
            self.assertEqual(r.code, 400, remote)
            self.assertTrue(r.body.startswith(b"remote: "), r.body)
        self.assertEqual(self.gvtap.forwarder.all(), [])

    def test_guestSite(self):
        """
        The guest API serves the three forwarder routes and nothing else.
        """
        self.assertEqual(self.request("GET", "/services/forwarder/all", site=self.guestSite).code, 200)
        for path in ("/stats", "/leases", "/services/dns/all", "/cam", "/tunnel?ip=1.2.3.4&port=1"):
            self.assertEqual(self.request("GET", path, site=self.guestSite).code, 404, path)

    def test_guestSiteServedAtGateway(self):
        """
        The assembly listens with the guest API on the gateway's port 80.
        """
        listener = self.gvtap.guestAPI
        self.assertEqual((listener.getHost().host, listener.getHost().port), ("192.168.127.1", 80))
        resource = listener.factory.resource
        self.assertIn(b"services", resource.children)
        self.assertNotIn(b"stats", resource.children)


class OtherRouteTests(APITestMixin, SynchronousTestCase):
    """
    Leases, DNS, stats, metrics, the MAC table and unknown paths.
    """

    def test_leases(self):
        """
        C{/services/dhcp/leases} and C{/leases} both serve gvproxy's table:
        the gateway, the static lease (given out or not) and the pool's
        leases, in Go's key order.
        """
        self.assertEqual(self.request("GET", "/leases").json(),
                         {"192.168.127.1": "5a:94:ef:e4:0c:dd", "192.168.127.2": "5a:94:ef:e4:0c:ee"})
        self.gvtap.dhcp.leases = lambda: {"192.168.127.3": "5a:94:ef:e4:0c:01",
                                          "192.168.127.10": "5a:94:ef:e4:0c:02"}
        for path in ("/services/dhcp/leases", "/leases"):
            r = self.request("GET", path)
            self.assertEqual(list(r.json().items()), [
                ("192.168.127.1", "5a:94:ef:e4:0c:dd"), ("192.168.127.10", "5a:94:ef:e4:0c:02"),
                ("192.168.127.2", "5a:94:ef:e4:0c:ee"), ("192.168.127.3", "5a:94:ef:e4:0c:01")])

    def test_dnsAll(self):
        """
        C{/services/dns/all} serves the default zones in gvproxy's shape.
        """
        zones = self.request("GET", "/services/dns/all").json()
        self.assertEqual([z["Name"] for z in zones], ["containers.internal.", "docker.internal."])
        self.assertEqual(zones[0]["Records"][0], {"Name": "gateway", "IP": "192.168.127.1"})

    def test_dnsAdd(self):
        """
        C{/services/dns/add} adds a zone: 200, empty body, then listed.
        """
        zone = {"Name": "example.test.", "Records": [{"Name": "web", "IP": "192.168.127.2"}]}
        r = self.request("POST", "/services/dns/add", zone)
        self.assertEqual((r.code, r.body), (200, b""))
        names = [z["Name"] for z in self.request("GET", "/services/dns/all").json()]
        self.assertIn("example.test.", names)

    def test_dnsAddBad(self):
        """
        A malformed zone is 400 with the zone parser's message, which names
        the field; bad JSON is 400 too; GET is 405.
        """
        r = self.request("POST", "/services/dns/add",
                         {"Name": "x.", "Records": [{"Name": "a", "IP": "not-an-ip"}]})
        self.assertEqual(r.code, 400)
        self.assertIn(b"IP", r.body)
        self.assertEqual(self.request("POST", "/services/dns/add", b"{").code, 400)
        self.assertEqual(self.request("GET", "/services/dns/add").code, 405)

    def test_statsGvisorShape(self):
        """
        C{/stats} is gVisor's tree as gvproxy serves it: C{BytesSent} and
        C{BytesReceived} at the root, the groups as nested objects with Go's
        field names, all 169 leaves numbers, keys sorted; gvtap's counters
        fill the leaves they match.
        """
        counters = self.gvtap.counters
        counters.increment("link.bytesSent", 1234)
        counters.increment("link.bytesReceived", 99)
        counters.increment("tcp.resetsSent", 3)
        counters.increment("drop.udp.noListener", 2)
        counters.increment("drop.tcp.checksum", 1)
        r = self.request("GET", "/stats")
        stats = r.json()
        self.assertEqual((stats["BytesSent"], stats["BytesReceived"]), (1234, 99))
        self.assertEqual(sorted(stats), ["ARP", "BytesReceived", "BytesSent", "DroppedPackets",
                                         "ICMP", "IGMP", "IP", "NICs", "TCP", "UDP"])
        self.assertEqual(stats["TCP"]["ResetsSent"], 3)
        self.assertEqual(stats["TCP"]["ChecksumErrors"], 1)
        self.assertEqual(stats["UDP"]["UnknownPortErrors"], 2)
        self.assertEqual(stats["DroppedPackets"], 3)
        self.assertEqual(stats["NICs"]["Tx"], {"Bytes": 1234, "Packets": 0})
        self.assertEqual(stats["ICMP"]["V4"]["PacketsSent"]["ICMPv4PacketStats"]["EchoReply"], 0)
        self.assertIn("Forwarding", stats["IP"])

        def leaves(node):
            return sum(leaves(v) if isinstance(v, dict) else 1 for v in node.values())

        self.assertEqual(leaves(stats), 171)
        self.assertIn(b'{"ARP": {"DisabledPacketsReceived": 0, ', r.body)

    def test_stats(self):
        """
        C{/gvtap/stats} has every counter and the gauges.
        """
        self.gvtap.counters.increment("link.bytesSent", 1234)
        stats = self.request("GET", "/gvtap/stats").json()
        self.assertEqual(stats["counters"]["link.bytesSent"], 1234)
        for gauge in ("tcp.connections", "dhcp.leases", "links", "forwards"):
            self.assertIn(gauge, stats["gauges"])
        self.assertEqual(stats["gauges"]["links"], 0)

    def test_metrics(self):
        """
        C{/metrics} is valid Prometheus text with the same numbers.
        """
        self.gvtap.counters.increment("link.bytesSent", 1234)
        self.gvtap.counters.increment("drop.ipv4.badChecksum")
        r = self.request("GET", "/metrics")
        self.assertTrue(r.headers["content-type"].startswith("text/plain; version=0.0.4"))
        samples = checkExposition(self, r.body.decode())
        self.assertEqual(samples["gvtap_link_bytesSent"], ("counter", 1234))
        self.assertEqual(samples["gvtap_drop_ipv4_badChecksum"], ("counter", 1))
        self.assertEqual(samples["gvtap_tcp_connections"][0], "gauge")

    def test_metricNamesCollide(self):
        """
        Two counters that map to one metric name get distinct names.
        """
        text = prometheusText({"counters": {"a.b": 1, "a_b": 2}, "gauges": {}})
        samples = checkExposition(self, text)
        self.assertEqual(sorted(v for _, v in samples.values()), [1, 2])
        self.assertEqual(metricName("x.y-z"), "gvtap_x_y_z")

    def test_cam(self):
        """
        C{/cam} maps each guest MAC to its port's number, as gvproxy's; the
        gateway is not listed there, but is on C{/gvtap/cam} (port names).
        """
        self.assertEqual(self.request("GET", "/cam").json(), {})
        self.assertEqual(self.request("GET", "/gvtap/cam").json(), {"5a:94:ef:e4:0c:dd": "gateway"})

        class Port:
            def __init__(self, name):
                self.name = name

            def sendFrame(self, frame):
                pass

        switch = self.gvtap.switch
        first, second = Port("a"), Port("b")
        switch.attach(first)
        switch.attach(second)
        broadcast = b"\xff" * 6
        switch.receiveFrame(second, broadcast + bytes.fromhex("5a94efe40cee") + b"\x08\x00")
        switch.receiveFrame(first, broadcast + bytes.fromhex("5a94efe40c01") + b"\x08\x00")
        self.assertEqual(self.request("GET", "/cam").json(),
                         {"5a:94:ef:e4:0c:01": 0, "5a:94:ef:e4:0c:ee": 1})
        self.assertEqual(self.request("GET", "/gvtap/cam").json()["5a:94:ef:e4:0c:ee"], "b")

    def test_notFound(self):
        """
        Unknown paths, paths below a route and the root are 404 with Go's
        text.
        """
        for path in ("/", "/nothing", "/services", "/services/", "/stats/x", "/services/forwarder/"):
            r = self.request("GET", path)
            self.assertEqual((r.code, r.body), (404, b"404 page not found\n"), path)

    def test_head(self):
        """
        HEAD on a GET route answers without a body.
        """
        r = self.request("HEAD", "/stats")
        self.assertEqual((r.code, r.body), (200, b""))


def checkExposition(testCase, text):
    """
    Check C{text} against the Prometheus text format (0.0.4): HELP and TYPE
    before each metric's sample, valid names, one TYPE per name, numeric
    values, a final newline. Return C{{name: (type, value)}}.
    """
    testCase.assertTrue(text.endswith("\n"))
    name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    types, samples, helped = {}, {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            m = re.fullmatch(rf"# HELP ({name}) .*", line)
            testCase.assertIsNotNone(m, line)
            helped.add(m.group(1))
        elif line.startswith("# TYPE "):
            m = re.fullmatch(rf"# TYPE ({name}) (counter|gauge)", line)
            testCase.assertIsNotNone(m, line)
            testCase.assertNotIn(m.group(1), types)
            types[m.group(1)] = m.group(2)
        else:
            m = re.fullmatch(rf"({name}) (-?[0-9]+(?:\.[0-9]+)?)", line)
            testCase.assertIsNotNone(m, line)
            testCase.assertIn(m.group(1), types)
            testCase.assertIn(m.group(1), helped)
            testCase.assertNotIn(m.group(1), samples)
            samples[m.group(1)] = (types[m.group(1)], int(m.group(2)))
    return samples


class FakeConnector:
    def __init__(self):
        self.stopped = False

    def stopConnecting(self):
        self.stopped = True


class TunnelTests(APITestMixin, SynchronousTestCase):
    """
    C{/tunnel?ip=&port=}: dial first, then C{OK} and raw bytes.
    """

    def setUp(self):
        APITestMixin.setUp(self)
        self.dials = []

        def connectTCP(host, port, factory, timeout=30, bindAddress=None):
            connector = FakeConnector()
            self.dials.append((host, port, factory, connector))
            return connector

        self.gvtap.network.connectTCP = connectTCP

    def test_missing(self):
        """
        Without ip or port, or with bad ones, the answer is gvproxy's 500
        (with Go's strconv words for the port) and nothing is dialled.
        """
        for query, message in (("", b"ip is mandatory\n"),
                               ("?ip=192.168.127.2",
                                b'strconv.ParseUint: parsing "": invalid syntax\n'),
                               ("?ip=192.168.127.2&port=a",
                                b'strconv.ParseUint: parsing "a": invalid syntax\n'),
                               ("?ip=192.168.127.2&port=70000",
                                b'strconv.ParseUint: parsing "70000": value out of range\n'),
                               ("?ip=x&port=1", None), ("?ip=192.168.127.2&port=0", None)):
            r = self.request("GET", "/tunnel" + query)
            self.assertEqual(r.code, 500, query)
            if message is not None:
                self.assertEqual(r.body, message)
        self.assertEqual(self.dials, [])

    def test_tunnel(self):
        """
        When the guest accepts, the client gets the raw bytes C{OK} (no
        status line) and then bytes flow both ways, including bytes the
        client sent right after the request.
        """
        transport, protocol = self.send(b"GET /tunnel?ip=192.168.127.2&port=22 HTTP/1.1\r\n"
                                        b"Host: x\r\n\r\nearly")
        self.assertEqual(transport.value(), b"")
        host, port, factory, _ = self.dials[0]
        self.assertEqual((host, port), ("192.168.127.2", 22))
        guestSide = factory.buildProtocol(IPv4Address("TCP", host, port))
        guestTransport = StringTransport()
        guestSide.makeConnection(guestTransport)
        self.assertEqual(transport.value(), b"OK")
        self.assertEqual(guestTransport.value(), b"early")
        transport.protocol.dataReceived(b" more")
        self.assertEqual(guestTransport.value(), b"early more")
        guestSide.dataReceived(b"SSH-2.0-x\r\n")
        self.assertEqual(transport.value(), b"OKSSH-2.0-x\r\n")

    def test_refused(self):
        """
        When the guest refuses, the client gets an ordinary HTTP 500.
        """
        transport, _ = self.send(b"GET /tunnel?ip=192.168.127.2&port=22 HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, factory, connector = self.dials[0]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        r = Response(transport.value())
        self.assertEqual(r.code, 500)
        self.assertTrue(r.body.startswith(b"dial 192.168.127.2:22: "), r.body)

    def test_clientGone(self):
        """
        When the client leaves before the guest answers, the dial stops.
        """
        transport, protocol = self.send(b"GET /tunnel?ip=192.168.127.2&port=22 HTTP/1.1\r\n"
                                        b"Host: x\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(self.dials[0][3].stopped)


def makeCertificates(directory):
    """
    Write a CA, a server certificate for 127.0.0.1 signed by it, a client
    certificate signed by it, and a client certificate signed by another CA,
    into C{directory}; return their paths by name (C{ca}, C{serverKey},
    C{serverCert}, C{clientKey}, C{clientCert}, C{rogueKey}, C{rogueCert}).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def build(subject, key, issuer, issuerKey, ca=False, usage=None, san=None):
        # Everything a strict verifier (Python 3.13's VERIFY_X509_STRICT)
        # requires: key identifiers, basic constraints and key usage on every
        # certificate.
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       issuerKey.public_key()), critical=False)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, key_cert_sign=ca, crl_sign=ca,
                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                       key_agreement=not ca, encipher_only=False, decipher_only=False),
                       critical=True))
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuerKey, hashes.SHA256())

    def write(filename, data):
        path = os.path.join(directory, filename)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def keyPEM(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def certPEM(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    paths = {}
    caKey = ec.generate_private_key(ec.SECP256R1())
    ca = build("gvtap test CA", caKey, "gvtap test CA", caKey, ca=True)
    paths["ca"] = write("ca.pem", certPEM(ca))
    serverKey = ec.generate_private_key(ec.SECP256R1())
    server = build("127.0.0.1", serverKey, "gvtap test CA", caKey,
                   usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   san=[x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")])
    paths["serverKey"] = write("server.key", keyPEM(serverKey))
    paths["serverCert"] = write("server.pem", certPEM(server))
    clientKey = ec.generate_private_key(ec.SECP256R1())
    client = build("client", clientKey, "gvtap test CA", caKey, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    paths["clientKey"] = write("client.key", keyPEM(clientKey))
    paths["clientCert"] = write("client.pem", certPEM(client))
    rogueCAKey = ec.generate_private_key(ec.SECP256R1())
    rogueKey = ec.generate_private_key(ec.SECP256R1())
    rogue = build("rogue", rogueKey, "rogue CA", rogueCAKey, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    paths["rogueKey"] = write("rogue.key", keyPEM(rogueKey))
    paths["rogueCert"] = write("rogue.pem", certPEM(rogue))
    return paths


def tlsGet(port, caFile, cert=None, key=None, path="/services/forwarder/all"):
    """
    A blocking HTTPS GET on 127.0.0.1:C{port} (run it in a thread); the raw
    answer, or the exception's text.
    """
    context = ssl.create_default_context(cafile=caFile)
    if cert is not None:
        context.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data
    except (OSError, ssl.SSLError) as e:
        return f"error: {e}"


class EchoTransport(StringTransport):
    """
    A guest connection that echoes what it is sent, on the next reactor turn.
    """

    protocol = None

    def write(self, data):
        reactor.callLater(0, self.protocol.dataReceived, data)


def tlsTunnel(port, caFile, cert, key):
    """
    Open C{/tunnel} over TLS (blocking; run it in a thread), send C{ping}
    after C{OK}; return the first six bytes read, or the exception's text.
    """
    context = ssl.create_default_context(cafile=caFile)
    context.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /tunnel?ip=192.168.127.2&port=22 HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while len(data) < 2:
                    data += s.recv(2 - len(data))
                s.sendall(b"ping")
                while len(data) < 6:
                    chunk = s.recv(6 - len(data))
                    if not chunk:
                        break
                    data += chunk
                return data
    except (OSError, ssl.SSLError) as e:
        return f"error: {e}"


class TLSTests(APITestMixin, TestCase):
    """
    The API over TLS with client certificates (real sockets on 127.0.0.1).
    """

    def setUp(self):
        APITestMixin.setUp(self)
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.certs = makeCertificates(self.dir)

    def listen(self):
        c = self.certs
        description = (f"ssl:0:interface=127.0.0.1:privateKey={c['serverKey']}"
                       f":certKey={c['serverCert']}")
        endpoint = tlsServerEndpoint(reactor, description, c["ca"])
        d = endpoint.listen(self.site)

        def listening(port):
            self.addCleanup(port.stopListening)
            return port.getHost().port

        return d.addCallback(listening)

    def test_clientCertificate(self):
        """
        A client with a certificate from the configured CA is served.
        """
        c = self.certs
        d = self.listen()
        d.addCallback(lambda port: threads.deferToThread(tlsGet, port, c["ca"], c["clientCert"],
                                                          c["clientKey"]))
        d.addCallback(lambda data: self.assertTrue(
            isinstance(data, bytes) and data.startswith(b"HTTP/1.1 200 OK"), data))
        return d

    def test_noCertificate(self):
        """
        A client without a certificate gets no answer.
        """
        d = self.listen()
        d.addCallback(lambda port: threads.deferToThread(tlsGet, port, self.certs["ca"]))
        d.addCallback(self.assertRefused)
        return d

    def test_otherCA(self):
        """
        A client whose certificate another CA signed gets no answer.
        """
        c = self.certs
        d = self.listen()
        d.addCallback(lambda port: threads.deferToThread(tlsGet, port, c["ca"], c["rogueCert"],
                                                          c["rogueKey"]))
        d.addCallback(self.assertRefused)
        return d

    def test_tunnelOverTLS(self):
        """
        C{/tunnel} works over TLS too: C{OK}, then bytes both ways (here to
        a fake guest that echoes).
        """
        c = self.certs
        gvtap = self.gvtap

        def connectTCP(host, port, factory, timeout=30, bindAddress=None):
            guestSide = factory.buildProtocol(IPv4Address("TCP", host, port))
            transport = EchoTransport()
            transport.protocol = guestSide
            reactor.callLater(0, guestSide.makeConnection, transport)
            return None

        gvtap.network.connectTCP = connectTCP
        d = self.listen()
        d.addCallback(lambda port: threads.deferToThread(tlsTunnel, port, c["ca"], c["clientCert"],
                                                          c["clientKey"]))
        d.addCallback(lambda data: self.assertEqual(data, b"OKping"))
        return d

    def assertRefused(self, data):
        """
        The handshake failed: the client saw a TLS alert, never HTTP.
        """
        self.assertIsInstance(data, str)
        self.assertTrue(data.startswith("error: "), data)

    def test_twistedSSLStringHasNoClientCAs(self):
        """
        Twisted's own C{ssl:} server string does not take C{caCertsDir} (the
        reason for C{--services-ca}); should that change, this test says so.
        """
        c = self.certs
        self.assertRaises(TypeError, serverFromString, reactor,
                          f"ssl:0:privateKey={c['serverKey']}:certKey={c['serverCert']}"
                          f":caCertsDir={self.dir}")

    def test_splitDescription(self):
        """
        Endpoint strings split like Twisted's, with backslash escapes.
        """
        self.assertEqual(splitDescription(r"ssl:443:privateKey=C\:\\k.pem:interface=127.0.0.1"),
                         (["ssl", "443"], {"privateKey": "C:\\k.pem", "interface": "127.0.0.1"}))

    def test_badDescription(self):
        """
        Keys the client-certificate endpoint cannot honour, a missing port or
        a missing file are errors with the string in the message.
        """
        c = self.certs
        for description in (f"ssl:0:privateKey={c['serverKey']}:sslmethod=TLS_METHOD",
                            f"ssl:privateKey={c['serverKey']}",
                            "ssl:0:privateKey=/nonexistent/key.pem"):
            self.assertRaises(ValueError, tlsServerEndpoint, reactor, description, c["ca"])


class UnixModeTests(APITestMixin, TestCase):
    """
    The API's unix socket is its owner's only.
    """

    def test_mode0600(self):
        """
        A unix endpoint made from a gvproxy URL or a Twisted string has mode
        0600 even with umask 0.
        """
        dir = self.mktemp()
        os.makedirs(dir)
        ports = []
        old = os.umask(0)
        try:
            for i, text in enumerate((f"unix://{dir}/a.sock", f"unix:{dir}/b.sock")):
                endpoint = serverFromString(reactor, serverEndpointString(text))
                ports.append(self.successResultOf(endpoint.listen(self.site)))
        finally:
            os.umask(old)
        for port in ports:
            self.addCleanup(port.stopListening)
        for name in ("a.sock", "b.sock"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(dir, name)).st_mode), 0o600)


class TapTests(SynchronousTestCase):
    """
    The options of C{twistd gvtap} for the API and forwards, and what
    makeService builds from them.
    """

    def parse(self, *args):
        from gvtwisted.tap import Options

        options = Options()
        options.parseOptions(["--listen", "unix:/tmp/gvtap-test-never.sock"] + list(args))
        return options

    def test_defaults(self):
        """
        By default: no --services, no --forward, the ssh port 2222.
        """
        options = self.parse()
        self.assertEqual((options["services"], options["forward"], options["ssh-port"]),
                         ([], [], 2222))

    def test_services(self):
        """
        --services takes gvproxy URLs too, and unix sockets get mode 600.
        """
        options = self.parse("--services", "unix:///run/api.sock", "--services", "tcp://127.0.0.1:7777")
        self.assertEqual(options["services"], ["unix:/run/api.sock:mode=600:lockfile=0",
                                               "tcp:7777:interface=127.0.0.1"])

    def test_forward(self):
        """
        --forward is repeatable and parsed as it goes.
        """
        options = self.parse("--forward", "127.0.0.1:8080=192.168.127.2:80",
                             "--forward", "udp:127.0.0.1:5353=192.168.127.2:53")
        self.assertEqual(options["forward"], [("127.0.0.1:8080", "192.168.127.2:80", "tcp"),
                                              ("127.0.0.1:5353", "192.168.127.2:53", "udp")])

    def test_badValues(self):
        """
        A bad --forward or --ssh-port stops start-up with one line.
        """
        for args in (["--forward", "nonsense"], ["--ssh-port", "0"], ["--ssh-port", "70000"]):
            e = self.assertRaises(SystemExit, self.parse, *args)
            self.assertTrue(str(e).startswith("gvtap: "), str(e))

    def test_verifyChecksums(self):
        """
        The guests' TCP and UDP checksums are verified only with
        --verify-checksums.
        """
        from tests.test_forwarder import ForwardReactor

        top = self.makeService(ForwardReactor(), "--ssh-port", "-1")
        self.assertIs(top.gvtap.network.verifyChecksums, False)
        top = self.makeService(ForwardReactor(), "--ssh-port", "-1", "--verify-checksums")
        self.assertIs(top.gvtap.network.verifyChecksums, True)

    def makeService(self, reactor, *args):
        from gvtwisted import tap

        options = self.parse(*args)
        top = tap.makeService(options, reactor)
        top.startService()
        self.addCleanup(top.stopService)
        return top

    def test_wiring(self):
        """
        The --listen endpoint serves the API site for non-/connect requests;
        --services serves the same site; the ssh forward and --forward forwards
        are exposed at start-up.
        """
        from tests.test_forwarder import ForwardReactor

        reactor = ForwardReactor()
        top = self.makeService(reactor, "--services", "unix:/tmp/gvtap-test-never-api.sock",
                               "--forward", "127.0.0.1:8080=192.168.127.2:80")
        factories = {p.port: p.factory for p in reactor.ports if p.kind == "UNIX"}
        link = factories["/tmp/gvtap-test-never.sock"]
        api = factories["/tmp/gvtap-test-never-api.sock"]
        self.assertIs(link.site, api)
        self.assertIn(b"tunnel", api.resource.children)
        self.assertEqual(top.gvtap.forwarder.all(), [
            {"local": "127.0.0.1:2222", "remote": "192.168.127.2:22", "protocol": "tcp"},
            {"local": "127.0.0.1:8080", "remote": "192.168.127.2:80", "protocol": "tcp"}])

    def test_linkOptionsReachSwitch(self):
        """
        C{--link-grace} and C{--max-macs-per-link} reach the switch.
        """
        from tests.test_forwarder import ForwardReactor

        top = self.makeService(ForwardReactor(), "--ssh-port", "-1", "--link-grace", "7.5",
                               "--max-macs-per-link", "3", "--max-leases-per-link", "2")
        self.assertEqual((top.gvtap.switch.linkGrace, top.gvtap.switch.maxMACsPerLink), (7.5, 3))
        self.assertEqual(top.gvtap.dhcp.config.maxLeasesPerLink, 2)

    def test_sshPortDisabled(self):
        """
        --ssh-port -1 exposes no ssh forward.
        """
        from tests.test_forwarder import ForwardReactor

        top = self.makeService(ForwardReactor(), "--ssh-port", "-1")
        self.assertEqual(top.gvtap.forwarder.all(), [])

    def test_staticForwardCannotBind(self):
        """
        A static forward that cannot bind is one error line naming it, and
        start-up goes on.
        """
        from tests.test_forwarder import ForwardReactor

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        reactor = ForwardReactor()
        reactor.refuse = OSError(98, "Address already in use")
        reactor.refuseKinds = ("TCP",)
        top = self.makeService(reactor)
        self.assertTrue(top.running)
        errors = [e for e in events if e.get("log_level") is not None
                  and e["log_level"].name == "error" and "cannot forward" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["local"], "127.0.0.1:2222")
        self.assertIn("Address already in use", errors[0]["reason"])


verifyingVariants(globals())
