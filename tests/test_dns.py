"""
Tests for L{gvtwisted.services.dns}: the gateway's DNS server.

Unit tests drive the server's protocols with fake transports and a Clock. The
integration tests run the server and a twisted.names upstream of our own on
127.0.0.1 and ask with C{dig} or a raw client over real loopback sockets. No test
sends a query anywhere else, and none reads the machine's resolv.conf: the
upstreams are given, or come from a temporary resolv.conf.
"""

import os
import re
import shutil
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import CannotListenError
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.names import dns, error, resolve, server
from twisted.protocols.basic import Int16StringReceiver
from twisted.trial import unittest

from gvtwisted.services import dns_wire as wire
from gvtwisted.services.dns import (
    DNSService,
    DNSZones,
    GatewayDNSDatagramProtocol,
    GatewayDNSServerFactory,
    defaultZones,
)
from gvtwisted.services.dns_upstream import (
    DNSCache,
    WatchedFile,
    parseResolvConf,
)
from gvtwisted.services.dns_zones import HostsTable, LocalResolver
from gvtwisted.stack.counters import Counters

GATEWAY = "192.168.127.1"
HOST = "192.168.127.254"
DIG = shutil.which("dig")
TYPE_CAA = 257
TYPE_HTTPS = 65
TYPE_PRIVATE = 65280
PRIVATE_DATA = b"\x00\x01\x02\xffgvtap\x00"
CAA_DATA = b"\x00\x05issueletsencrypt.org"
HTTPS_DATA = b"\x00\x01\x00\x00\x01\x00\x03\x02h2"
BIG_STRINGS = [bytes([0x61 + i]) * 250 for i in range(12)]  # 3000 bytes
MEDIUM_STRINGS = [bytes([0x41 + i]) * 200 for i in range(4)]  # 800 bytes


# Helpers


def makeQuery(name, qtype=dns.A, id=4321, edns=None, do=False, opCode=0):
    """
    The bytes of a query for C{name}; with C{edns} set, an OPT record
    advertising that UDP size.
    """
    if isinstance(name, str):
        name = name.encode("ascii")
    m = dns.Message(id=id, recDes=1, opCode=opCode)
    m.addQuery(name, qtype)
    data = m.toStr()
    if edns is None:
        return data
    opt = wire.OPT(udpSize=edns, do=do).encode()
    header = bytearray(data[:12])
    struct.pack_into("!H", header, 10, 1)
    return bytes(header) + data[12:] + opt


def decode(data):
    """
    A twisted.names Message from bytes, as a client would read them.
    """
    m = dns.Message()
    m.fromStr(data)
    return m


class FakeDatagramTransport:
    """
    Collects what the UDP protocol writes.
    """

    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))


def localService(zones=None, **kw):
    """
    A service with no upstream at all: anything not local is SERVFAIL at once,
    so no test using it can send a packet.
    """
    if zones is None:
        zones = defaultZones(GATEWAY, HOST)
    kw.setdefault("upstreams", [])
    svc = DNSService(task.Clock(), DNSZones(zones), **kw)
    svc.udpProtocol.transport = FakeDatagramTransport()
    return svc


def ask(svc, name, qtype=dns.A, **kw):
    """
    Send one query to C{svc}'s UDP protocol and decode the one answer.
    """
    transport = svc.udpProtocol.transport
    before = len(transport.written)
    svc.udpProtocol.datagramReceived(makeQuery(name, qtype, **kw), ("10.0.0.2", 5353))
    assert len(transport.written) == before + 1, "expected exactly one answer"
    data, addr = transport.written[-1]
    assert addr == ("10.0.0.2", 5353)
    return decode(data)


def addresses(message):
    return [rr.payload.dottedQuad() for rr in message.answers if rr.type == dns.A]


def rr(name, type, payload, ttl):
    return dns.RRHeader(name, type, dns.IN, ttl, payload, auth=True)


def upstreamTable():
    """
    The records of the test upstream: (name, type) to (rcode, answers,
    authority, additional). Each type has its own TTL so relaying can be seen.
    """
    soa = rr(
        b"example.test",
        dns.SOA,
        dns.Record_SOA(
            mname=b"ns1.example.test",
            rname=b"hostmaster.example.test",
            serial=2024010101,
            refresh=7200,
            retry=3600,
            expire=1209600,
            minimum=60,
            ttl=3600,
        ),
        3600,
    )
    t = {}
    t[b"a.example.test", dns.A] = (
        0,
        [rr(b"a.example.test", dns.A, dns.Record_A("192.0.2.10", 300), 300)],
        [],
        [],
    )
    t[b"a.example.test", dns.AAAA] = (
        0,
        [
            rr(
                b"a.example.test",
                dns.AAAA,
                dns.Record_AAAA("2001:db8::10", 301),
                301,
            )
        ],
        [],
        [],
    )
    t[b"example.test", dns.MX] = (
        0,
        [rr(b"example.test", dns.MX, dns.Record_MX(10, b"mail.example.test"), 302)],
        [],
        [rr(b"mail.example.test", dns.A, dns.Record_A("192.0.2.25"), 303)],
    )
    t[b"example.test", dns.SOA] = (0, [soa], [], [])
    t[b"example.test", TYPE_CAA] = (
        0,
        [rr(b"example.test", TYPE_CAA, dns.UnknownRecord(CAA_DATA), 304)],
        [],
        [],
    )
    t[b"example.test", TYPE_HTTPS] = (
        0,
        [rr(b"example.test", TYPE_HTTPS, dns.UnknownRecord(HTTPS_DATA), 305)],
        [],
        [],
    )
    t[b"small.example.test", dns.TXT] = (
        0,
        [rr(b"small.example.test", dns.TXT, dns.Record_TXT(b"hello", b"world"), 306)],
        [],
        [],
    )
    t[b"big.example.test", dns.TXT] = (
        0,
        [rr(b"big.example.test", dns.TXT, dns.Record_TXT(*BIG_STRINGS), 307)],
        [],
        [],
    )
    t[b"medium.example.test", dns.TXT] = (
        0,
        [rr(b"medium.example.test", dns.TXT, dns.Record_TXT(*MEDIUM_STRINGS), 308)],
        [],
        [],
    )
    t[b"_sip._tcp.example.test", dns.SRV] = (
        0,
        [
            rr(
                b"_sip._tcp.example.test",
                dns.SRV,
                dns.Record_SRV(10, 20, 5060, b"sip.example.test"),
                309,
            )
        ],
        [],
        [],
    )
    t[b"10.2.0.192.in-addr.arpa", dns.PTR] = (
        0,
        [
            rr(
                b"10.2.0.192.in-addr.arpa",
                dns.PTR,
                dns.Record_PTR(b"a.example.test"),
                310,
            )
        ],
        [],
        [],
    )
    t[b"x.example.test", TYPE_PRIVATE] = (
        0,
        [rr(b"x.example.test", TYPE_PRIVATE, dns.UnknownRecord(PRIVATE_DATA), 311)],
        [],
        [],
    )
    t[b"www.example.test", dns.A] = (
        0,
        [
            rr(
                b"www.example.test", dns.CNAME, dns.Record_CNAME(b"a.example.test"), 312
            ),
            rr(b"a.example.test", dns.A, dns.Record_A("192.0.2.10"), 300),
        ],
        [],
        [],
    )
    t[b"servfail.example.test", dns.A] = (dns.ESERVER, [], [], [])
    t[b"refused.example.test", dns.A] = (dns.EREFUSED, [], [], [])
    t[b"which.example.test", dns.A] = (
        0,
        [rr(b"which.example.test", dns.A, dns.Record_A("192.0.2.1"), 30)],
        [],
        [],
    )
    return t, soa


class FakeUpstream(server.DNSServerFactory):
    """
    A twisted.names server with fixed records, standing in for the host's
    resolver. Unknown names get NXDOMAIN with the zone's SOA, known names of
    another type NOERROR with the SOA (NODATA), as real servers answer.

    Over UDP it truncates an answer larger than 512 bytes, or than the size in
    the query's OPT: cleanly (no records, TC) or, with C{cut=True}, the way
    twisted.names' own Message does it, by slicing bytes mid-record.

    @ivar queries: (name, type, "udp" or "tcp") of each query received.
    """

    def __init__(self, table=None, cut=False):
        server.DNSServerFactory.__init__(self)
        if table is None:
            table, soa = upstreamTable()
        else:
            soa = upstreamTable()[1]
        self.table = table
        self.soa = soa
        self.cut = cut
        self.queries = []
        self.names = {name for name, _ in table}

    def messageReceived(self, message, proto, address=None):
        q = message.queries[0]
        name = q.name.name.lower()
        self.queries.append((name, q.type, "udp" if address else "tcp"))
        entry = self.table.get((name, q.type))
        if entry is None:
            rcode = dns.OK if name in self.names else dns.ENAME
            entry = (rcode, [], [self.soa], [])
        rcode, answers, authority, additional = entry
        response = self._responseFromMessage(
            message,
            rCode=rcode,
            answers=list(answers),
            authority=list(authority),
            additional=list(additional),
        )
        response.auth = True
        response.maxSize = 0
        if address is not None:
            size = 512
            for extra in message.additional:
                if extra.type == dns.OPT:
                    size = max(512, extra.cls)
            if len(response.toStr()) > size:
                if self.cut:
                    response.maxSize = size
                else:
                    response.trunc = 1
                    response.answers = []
                    response.authority = []
                    response.additional = []
        if address is None:
            proto.writeMessage(response)
        else:
            proto.writeMessage(response, address)


class SilentUpstream(protocol.DatagramProtocol):
    """
    An upstream that never answers: queries sent to it time out.
    """

    def __init__(self):
        self.received = 0

    def datagramReceived(self, data, addr):
        self.received += 1


class ClockedReactor:
    """
    The real reactor for sockets and timers, with a Clock's time: the cache's
    ages and expiries move only when the test says.
    """

    def __init__(self, clock):
        self._clock = clock

    def seconds(self):
        return self._clock.seconds()

    def __getattr__(self, name):
        return getattr(reactor, name)


class _OneDatagram(protocol.DatagramProtocol):
    def __init__(self, data, address):
        self.data = data
        self.address = address
        self.deferred = defer.Deferred()

    def startProtocol(self):
        self.transport.write(self.data, self.address)

    def datagramReceived(self, data, addr):
        if not self.deferred.called:
            self.deferred.callback(data)


class _OneString(Int16StringReceiver):
    def __init__(self, data):
        self.data = data
        self.deferred = defer.Deferred()

    def connectionMade(self):
        self.sendString(self.data)

    def stringReceived(self, data):
        if not self.deferred.called:
            self.deferred.callback(data)
        self.transport.loseConnection()


@defer.inlineCallbacks
def rawExchange(port, data, tcp=False, timeout=5):
    """
    Send C{data} to 127.0.0.1:C{port} and return the raw answer.
    """
    if tcp:
        p = yield protocol.ClientCreator(reactor, _OneString, data).connectTCP(
            "127.0.0.1", port
        )
        d = p.deferred
    else:
        p = _OneDatagram(data, ("127.0.0.1", port))
        listening = reactor.listenUDP(0, p, interface="127.0.0.1")
        d = p.deferred
    d.addTimeout(timeout, reactor)
    try:
        answer = yield d
    finally:
        if not tcp:
            yield listening.stopListening()
    return answer


def parseDig(output):
    """
    The parts of dig's output the tests look at: status, flags, and the records
    of each section as (name, ttl, class, type, rdata).
    """
    status = re.search(r"status: (\w+)", output)
    flags = re.search(r";; flags:([^;]*);", output)
    sections = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in output.splitlines():
        header = re.match(r";; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:", line)
        if header:
            current = header.group(1)
            continue
        if not line.strip() or line.startswith(";"):
            if not line.strip():
                current = None
            continue
        if current:
            fields = line.split(None, 4)
            sections[current].append(
                (fields[0], int(fields[1]), fields[2], fields[3], fields[4])
            )
    return {
        "status": status.group(1) if status else None,
        "flags": flags.group(1).split() if flags else [],
        **sections,
    }


# Unit tests: local zones


class ZoneMatchingTests(unittest.SynchronousTestCase):
    """
    Names of the local zones are answered at the gateway the way gvproxy does.
    """

    def test_exactName(self):
        """
        C{gateway} and C{host} of both default zones resolve to their addresses,
        authoritatively, with TTL 0: local addresses may change at any time.
        """
        svc = localService()
        for name, ip in [
            ("gateway.containers.internal", GATEWAY),
            ("host.containers.internal", HOST),
            ("gateway.docker.internal", GATEWAY),
            ("host.docker.internal", HOST),
        ]:
            m = ask(svc, name)
            self.assertEqual(m.rCode, dns.OK)
            self.assertTrue(m.auth)
            self.assertEqual(addresses(m), [ip])
            self.assertEqual(m.answers[0].ttl, 0)

    def test_letterCase(self):
        """
        Names match whatever their letter case, and the answer keeps the case
        of the question: resolvers that randomise case check it.
        """
        svc = localService()
        m = ask(svc, "GateWay.Containers.INTERNAL")
        self.assertEqual(addresses(m), [GATEWAY])
        self.assertEqual(m.queries[0].name.name, b"GateWay.Containers.INTERNAL")

    def test_regexp(self):
        """
        A record's Regexp is searched in the name without the zone suffix, as
        gvproxy's MatchString does: C{^.*\\.web$} matches C{a.b.web} under the
        zone but not C{web} itself, and an unanchored pattern matches anywhere.
        """
        svc = localService(
            [
                {
                    "Name": "apps.internal.",
                    "Records": [
                        {"Name": "", "Regexp": "^.*\\.web$", "IP": "10.1.0.1"},
                        {"Regexp": "db", "IP": "10.1.0.2"},
                    ],
                }
            ]
        )
        self.assertEqual(addresses(ask(svc, "a.b.web.apps.internal")), ["10.1.0.1"])
        self.assertEqual(addresses(ask(svc, "mydb1.apps.internal")), ["10.1.0.2"])
        self.assertEqual(ask(svc, "web.apps.internal").rCode, dns.ENAME)

    def test_firstRecordWins(self):
        """
        When several records match, the first one in the zone gives the one
        answer.
        """
        svc = localService(
            [
                {
                    "Name": "x.internal.",
                    "Records": [
                        {"Regexp": "^s", "IP": "10.0.0.1"},
                        {"Name": "srv", "IP": "10.0.0.2"},
                    ],
                }
            ]
        )
        self.assertEqual(addresses(ask(svc, "srv.x.internal")), ["10.0.0.1"])

    def test_defaultIP(self):
        """
        A name a zone does not list gets the zone's DefaultIP when it has one.
        """
        svc = localService(
            [
                {
                    "Name": "dev.internal.",
                    "Records": [{"Name": "a", "IP": "10.0.0.1"}],
                    "DefaultIP": "10.0.0.99",
                }
            ]
        )
        self.assertEqual(addresses(ask(svc, "a.dev.internal")), ["10.0.0.1"])
        self.assertEqual(addresses(ask(svc, "anything.dev.internal")), ["10.0.0.99"])

    def test_nxdomain(self):
        """
        A name under a local zone that matches nothing, in a zone without
        DefaultIP, is NXDOMAIN, authoritative, with the zone's SOA (TTL 0) in the
        authority section so a resolver caches nothing; it never goes upstream.
        """
        svc = localService()
        m = ask(svc, "nothere.containers.internal")
        self.assertEqual(m.rCode, dns.ENAME)
        self.assertTrue(m.auth)
        self.assertEqual(m.answers, [])
        self.assertEqual([a.type for a in m.authority], [dns.SOA])
        self.assertEqual(m.authority[0].ttl, 0)
        self.assertEqual(m.authority[0].payload.minimum, 0)
        self.assertEqual(svc.counters.get("dns.cache.misses"), 0)

    def test_nxdomainAnyType(self):
        """
        A name that does not exist locally is NXDOMAIN for AAAA too.
        """
        m = ask(localService(), "nothere.containers.internal", dns.AAAA)
        self.assertEqual(m.rCode, dns.ENAME)

    def test_aaaaForLocalName(self):
        """
        AAAA (or MX, TXT...) for a name that exists locally with an IPv4
        address is NOERROR with no records, never NXDOMAIN: NXDOMAIN would tell
        the client the name has no A record either.
        """
        svc = localService()
        for qtype in (dns.AAAA, dns.MX, dns.TXT, TYPE_HTTPS):
            m = ask(svc, "gateway.containers.internal", qtype)
            self.assertEqual(m.rCode, dns.OK)
            self.assertEqual(m.answers, [])
            self.assertTrue(m.auth)
        self.assertEqual(svc.counters.get("dns.cache.misses"), 0)

    def test_ipv6Record(self):
        """
        A record with an IPv6 address answers AAAA queries, and A queries get
        NOERROR with no records.
        """
        svc = localService(
            [{"Name": "v6.internal.", "Records": [{"Name": "h", "IP": "fd00::5"}]}]
        )
        m = ask(svc, "h.v6.internal", dns.AAAA)
        self.assertEqual([a.type for a in m.answers], [dns.AAAA])
        self.assertIn(socket.inet_pton(socket.AF_INET6, "fd00::5"), m.toStr())
        m = ask(svc, "h.v6.internal", dns.A)
        self.assertEqual((m.rCode, m.answers), (dns.OK, []))

    def test_apex(self):
        """
        The zone's own name exists: its SOA query gets the SOA, an A query
        NOERROR with no records.
        """
        svc = localService()
        m = ask(svc, "containers.internal", dns.SOA)
        self.assertEqual([a.type for a in m.answers], [dns.SOA])
        m = ask(svc, "containers.internal", dns.A)
        self.assertEqual((m.rCode, m.answers), (dns.OK, []))

    def test_zoneOrder(self):
        """
        As in gvproxy, the first zone in the list whose suffix matches decides,
        even if a later zone is more specific.
        """
        svc = localService(
            [
                {"Name": "internal.", "DefaultIP": "10.0.0.1"},
                {"Name": "crc.internal.", "Records": [{"Name": "h", "IP": "10.0.0.2"}]},
            ]
        )
        self.assertEqual(addresses(ask(svc, "h.crc.internal")), ["10.0.0.1"])

    def test_dottedRecordName(self):
        """
        A record name may have several labels (gvproxy's own tests use
        C{crc.testing} in zone C{internal.}).
        """
        svc = localService(
            [
                {
                    "Name": "internal.",
                    "Records": [{"Name": "crc.testing", "IP": "10.0.0.3"}],
                }
            ]
        )
        self.assertEqual(addresses(ask(svc, "crc.testing.internal")), ["10.0.0.3"])

    def test_notLocalIsForwarded(self):
        """
        A name outside every local zone (including one that merely ends like a
        zone name) is not answered locally.
        """
        svc = localService()
        m = ask(svc, "evilcontainers.internal")
        self.assertEqual(m.rCode, dns.ESERVER)
        self.assertEqual(svc.counters.get("dns.cache.misses"), 1)

    def test_ptrForRecord(self):
        """
        The reverse name of a zone record's address is answered locally with
        the record's full names.
        """
        m = ask(localService(), "1.127.168.192.in-addr.arpa", dns.PTR)
        self.assertEqual(
            sorted(a.payload.name.name for a in m.answers),
            [b"gateway.containers.internal", b"gateway.docker.internal"],
        )


class ZoneAPITests(unittest.SynchronousTestCase):
    """
    L{DNSZones.all} and L{DNSZones.add} speak gvproxy's JSON.
    """

    def test_defaultZones(self):
        """
        The default zones are gvproxy's: two zones, each with gateway and host.
        """
        self.assertEqual(
            defaultZones(GATEWAY, HOST),
            [
                {
                    "Name": "containers.internal.",
                    "Records": [
                        {"Name": "gateway", "IP": GATEWAY},
                        {"Name": "host", "IP": HOST},
                    ],
                    "DefaultIP": "",
                },
                {
                    "Name": "docker.internal.",
                    "Records": [
                        {"Name": "gateway", "IP": GATEWAY},
                        {"Name": "host", "IP": HOST},
                    ],
                    "DefaultIP": "",
                },
            ],
        )

    def test_allShape(self):
        """
        C{all()} gives the zones in order, each with Name, Records and
        DefaultIP (C{""} when unset); a record's Regexp key is there only when
        it has one, as gvproxy's C{omitempty} does.
        """
        zones = DNSZones(
            [
                {
                    "Name": "a.internal.",
                    "Records": [
                        {"Name": "x", "IP": "10.0.0.1"},
                        {"Name": "", "Regexp": "^y", "IP": "10.0.0.2"},
                    ],
                    "DefaultIP": "10.0.0.9",
                },
                {"Name": "b.internal"},
            ]
        )
        self.assertEqual(
            zones.all(),
            [
                {
                    "Name": "a.internal.",
                    "Records": [
                        {"Name": "x", "IP": "10.0.0.1"},
                        {"Name": "", "IP": "10.0.0.2", "Regexp": "^y"},
                    ],
                    "DefaultIP": "10.0.0.9",
                },
                {"Name": "b.internal.", "Records": [], "DefaultIP": ""},
            ],
        )

    def test_addNewZone(self):
        """
        A zone of a new name is appended, and answers at once.
        """
        svc = localService()
        svc.zones.add(
            {"Name": "test.internal.", "Records": [{"Name": "vm", "IP": "10.0.0.7"}]}
        )
        self.assertEqual(
            [z["Name"] for z in svc.zones.all()],
            ["containers.internal.", "docker.internal.", "test.internal."],
        )
        self.assertEqual(addresses(ask(svc, "vm.test.internal")), ["10.0.0.7"])

    def test_addReplaces(self):
        """
        Adding a zone of an existing name replaces it in place: the new records
        first, then the old ones, and the new DefaultIP (even empty) wins, as in
        gvproxy. So a new record for an old name takes over.
        """
        svc = localService(
            [
                {"Name": "first.internal.", "DefaultIP": "10.9.9.9"},
                {
                    "Name": "internal.",
                    "Records": [{"Name": "crc", "IP": "10.0.0.2"}],
                    "DefaultIP": "10.0.0.1",
                },
            ]
        )
        svc.zones.add(
            {"Name": "internal.", "Records": [{"Name": "crc", "IP": "10.0.0.3"}]}
        )
        self.assertEqual(
            svc.zones.all()[1],
            {
                "Name": "internal.",
                "Records": [
                    {"Name": "crc", "IP": "10.0.0.3"},
                    {"Name": "crc", "IP": "10.0.0.2"},
                ],
                "DefaultIP": "",
            },
        )
        self.assertEqual(len(svc.zones.all()), 2)
        self.assertEqual(addresses(ask(svc, "crc.internal")), ["10.0.0.3"])
        self.assertEqual(ask(svc, "other.internal").rCode, dns.ENAME)

    def test_addCaseInsensitiveKeys(self):
        """
        JSON keys match without regard to case, as Go's decoder does, and
        unknown keys are ignored.
        """
        zones = DNSZones()
        zones.add(
            {
                "name": "k.internal.",
                "records": [{"name": "a", "ip": "10.0.0.1"}],
                "extra": 1,
            }
        )
        self.assertEqual(
            zones.all(),
            [
                {
                    "Name": "k.internal.",
                    "Records": [{"Name": "a", "IP": "10.0.0.1"}],
                    "DefaultIP": "",
                }
            ],
        )

    def test_addErrors(self):
        """
        Malformed zones raise ValueError naming the bad field, and change
        nothing.
        """
        zones = DNSZones(defaultZones(GATEWAY, HOST))
        before = zones.all()
        cases = [
            ([], "zone"),
            ({}, "Name"),
            ({"Name": 5}, "Name"),
            ({"Name": ""}, "Name"),
            ({"Name": "a..b."}, "Name"),
            ({"Name": "x" * 64 + "."}, "Name"),
            ({"Name": "z.", "Records": {}}, "Records"),
            ({"Name": "z.", "Records": ["x"]}, "Records[0]"),
            (
                {"Name": "z.", "Records": [{"Name": "a", "IP": "300.1.1.1"}]},
                "Records[0].IP",
            ),
            ({"Name": "z.", "Records": [{"Name": "a"}]}, "Records[0].IP"),
            (
                {"Name": "z.", "Records": [{"Name": 1, "IP": "1.1.1.1"}]},
                "Records[0].Name",
            ),
            (
                {
                    "Name": "z.",
                    "Records": [
                        {"Name": "a", "IP": "1.1.1.1"},
                        {"Regexp": "(", "IP": "1.1.1.1"},
                    ],
                },
                "Records[1].Regexp",
            ),
            ({"Name": "z.", "Records": [{"IP": "1.1.1.1"}]}, "Records[0]"),
            ({"Name": "containers.internal.", "DefaultIP": "nope"}, "DefaultIP"),
        ]
        for zone, field in cases:
            with self.assertRaises(ValueError, msg=repr(zone)) as cm:
                zones.add(zone)
            self.assertTrue(
                str(cm.exception).startswith(field), f"{zone!r}: {cm.exception}"
            )
        self.assertEqual(zones.all(), before)


class LocalResolverTests(unittest.SynchronousTestCase):
    """
    L{LocalResolver} is also an L{IResolver} for twisted.names resolver chains.
    """

    def test_lookupAddress(self):
        """
        C{lookupAddress} of a local name gives its A record with TTL 0.
        """
        r = LocalResolver(DNSZones(defaultZones(GATEWAY, HOST)))
        answers, authority, additional = self.successResultOf(
            r.lookupAddress(b"host.docker.internal")
        )
        self.assertEqual([a.payload.dottedQuad() for a in answers], [HOST])
        self.assertEqual(answers[0].ttl, 0)

    def test_chain(self):
        """
        In a L{ResolverChain}, a local NXDOMAIN stops the chain
        (L{AuthoritativeDomainError}) and a name that is not local moves on to
        the next resolver (here one that fails with L{DomainError} too).
        """
        local = LocalResolver(DNSZones(defaultZones(GATEWAY, HOST)))
        chain = resolve.ResolverChain([local])
        self.failureResultOf(
            chain.lookupAddress(b"nope.containers.internal"),
            error.AuthoritativeDomainError,
        )
        self.failureResultOf(chain.lookupAddress(b"example.com"), error.DomainError)


class HostsFileTests(unittest.SynchronousTestCase):
    """
    A hosts file adds static names.
    """

    def setUp(self):
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write(
                "# static names\n"
                "192.0.2.50   myhost  alias.lan   # a comment\n"
                "2001:db8::50 myhost\n"
                "bogus line\n"
                "\n"
            )

    def test_parse(self):
        """
        Each line's names map to its address; comments and junk are skipped.
        """
        with open(self.path) as f:
            table = HostsTable(f.read())
        self.assertEqual(sorted(table.names), ["alias.lan", "myhost"])
        self.assertEqual(
            [str(ip) for ip in table.names["myhost"]], ["192.0.2.50", "2001:db8::50"]
        )

    def test_answers(self):
        """
        Names of the hosts file get A and AAAA records with TTL 0, other types
        NOERROR with no records, and the address's reverse name a PTR.
        """
        svc = localService(hostsFile=self.path)
        m = ask(svc, "myhost")
        self.assertEqual(addresses(m), ["192.0.2.50"])
        self.assertEqual(m.answers[0].ttl, 0)
        self.assertEqual(addresses(ask(svc, "ALIAS.lan")), ["192.0.2.50"])
        m = ask(svc, "myhost", dns.AAAA)
        self.assertEqual(len(m.answers), 1)
        self.assertEqual(m.answers[0].type, dns.AAAA)
        m = ask(svc, "myhost", dns.MX)
        self.assertEqual((m.rCode, m.answers), (dns.OK, []))
        m = ask(svc, "50.2.0.192.in-addr.arpa", dns.PTR)
        self.assertEqual([a.payload.name.name for a in m.answers], [b"myhost"])

    def test_reread(self):
        """
        A changed hosts file is read again, but no sooner than the check
        interval after the last look.
        """
        svc = localService(hostsFile=self.path, fileCheckInterval=5)
        self.assertEqual(addresses(ask(svc, "myhost")), ["192.0.2.50"])
        with open(self.path, "w") as f:
            f.write("192.0.2.77 myhost\n")
        os.utime(self.path, (1, 1))
        self.assertEqual(addresses(ask(svc, "myhost")), ["192.0.2.50"])
        svc.reactor.advance(5)
        self.assertEqual(addresses(ask(svc, "myhost")), ["192.0.2.77"])


# Unit tests: wire format, truncation, cache


def upstreamAnswer(
    answers, rcode=0, authority=(), additional=(), name=b"q.example.test", qtype=dns.TXT
):
    """
    A parsed upstream answer built by twisted.names.
    """
    m = dns.Message(id=77, answer=1, recDes=1, recAv=1, rCode=rcode, maxSize=0)
    m.addQuery(name, qtype)
    m.answers = list(answers)
    m.authority = list(authority)
    m.additional = list(additional)
    return wire.parseMessage(m.toStr())


class TruncationTests(unittest.SynchronousTestCase):
    """
    UDP answers fit in 512 bytes or the client's EDNS size, cut at a record
    boundary with TC; TCP answers are whole.
    """

    def bigAnswer(self):
        return upstreamAnswer(
            [rr(b"q.example.test", dns.TXT, dns.Record_TXT(*BIG_STRINGS), 300)]
        )

    def test_udpWithoutEDNS(self):
        """
        Without OPT, a 3000-byte TXT answer becomes at most 512 bytes with TC
        set and no answer records.
        """
        query = wire.parseMessage(makeQuery("q.example.test", dns.TXT))
        data = wire.buildResponse(query, self.bigAnswer(), limit=512)
        self.assertLessEqual(len(data), 512)
        m = decode(data)
        self.assertTrue(m.trunc)
        self.assertEqual(m.answers, [])
        self.assertEqual(m.id, 4321)

    def test_tcpWhole(self):
        """
        Over TCP (no limit) the same answer is whole, byte for byte in its
        strings, and without TC.
        """
        query = wire.parseMessage(makeQuery("q.example.test", dns.TXT))
        data = wire.buildResponse(query, self.bigAnswer(), limit=None)
        self.assertGreater(len(data), 3000)
        m = decode(data)
        self.assertFalse(m.trunc)
        self.assertEqual(m.answers[0].payload.data, BIG_STRINGS)

    def test_ednsSizeHonoured(self):
        """
        An 800-byte answer is truncated for a client without EDNS but whole for
        one that advertised 1232 bytes, with our OPT in the answer.
        """
        medium = upstreamAnswer(
            [rr(b"q.example.test", dns.TXT, dns.Record_TXT(*MEDIUM_STRINGS), 300)]
        )
        plain = wire.parseMessage(makeQuery("q.example.test", dns.TXT))
        self.assertTrue(decode(wire.buildResponse(plain, medium, limit=512)).trunc)
        edns = wire.parseMessage(makeQuery("q.example.test", dns.TXT, edns=1232))
        data = wire.buildResponse(edns, medium, limit=1232)
        parsed = wire.parseMessage(data)
        self.assertFalse(parsed.truncated)
        self.assertEqual(len(parsed.records), 1)
        self.assertIsNotNone(parsed.opt)
        self.assertEqual(parsed.opt.udpSize, 1232)

    def test_serviceLimitsUDP(self):
        """
        The service cuts UDP answers to 512 bytes, to the client's EDNS size,
        and never above C{maxUDPSize} even if the client asks for more.
        """
        svc = localService()
        factory = svc.tcpFactory
        q = lambda **kw: wire.parseMessage(makeQuery("x", **kw))
        self.assertEqual(factory._limit(q(), ("1.1.1.1", 1)), 512)
        self.assertEqual(factory._limit(q(edns=1000), ("1.1.1.1", 1)), 1000)
        self.assertEqual(factory._limit(q(edns=100), ("1.1.1.1", 1)), 512)
        self.assertEqual(factory._limit(q(edns=4096), ("1.1.1.1", 1)), 1232)
        self.assertIsNone(factory._limit(q(edns=4096), None))

    def test_cutAtRecordBoundary(self):
        """
        An answer of many A records is cut after the last record that fits:
        the result is a valid message with fewer records and TC set.
        """
        many = upstreamAnswer(
            [
                rr(
                    b"q.example.test",
                    dns.A,
                    dns.Record_A(f"10.0.{i // 256}.{i % 256}"),
                    60,
                )
                for i in range(100)
            ],
            qtype=dns.A,
        )
        query = wire.parseMessage(makeQuery("q.example.test", dns.A))
        data = wire.buildResponse(query, many, limit=512)
        self.assertLessEqual(len(data), 512)
        m = decode(data)
        self.assertTrue(m.trunc)
        self.assertTrue(0 < len(m.answers) < 100)
        self.assertEqual(
            [a.payload.dottedQuad() for a in m.answers],
            [f"10.0.0.{i}" for i in range(len(m.answers))],
        )

    def test_additionalDroppedWithoutTC(self):
        """
        When only additional records do not fit, they are left out without TC:
        the answer itself is complete.
        """
        answer = upstreamAnswer(
            [
                rr(
                    b"q.example.test",
                    dns.MX,
                    dns.Record_MX(10, b"mail.example.test"),
                    60,
                )
            ],
            additional=[
                rr(b"mail%d.example.test" % i, dns.A, dns.Record_A("10.0.0.1"), 60)
                for i in range(40)
            ],
            qtype=dns.MX,
        )
        query = wire.parseMessage(makeQuery("q.example.test", dns.MX))
        m = decode(wire.buildResponse(query, answer, limit=512))
        self.assertFalse(m.trunc)
        self.assertEqual(len(m.answers), 1)
        self.assertLess(len(m.additional), 40)

    def test_ageTTLs(self):
        """
        TTLs are lowered by the answer's age in the cache, never below 0.
        """
        answer = upstreamAnswer(
            [
                rr(b"q.example.test", dns.A, dns.Record_A("10.0.0.1"), 300),
                rr(b"q.example.test", dns.A, dns.Record_A("10.0.0.2"), 50),
            ],
            qtype=dns.A,
        )
        query = wire.parseMessage(makeQuery("q.example.test", dns.A))
        m = decode(wire.buildResponse(query, answer, age=100))
        self.assertEqual([a.ttl for a in m.answers], [200, 0])

    def test_questionCaseFromClient(self):
        """
        The answer carries the client's question, letter case and id included,
        even when the stored answer was asked in another case.
        """
        answer = upstreamAnswer(
            [rr(b"q.example.test", dns.A, dns.Record_A("10.0.0.1"), 300)], qtype=dns.A
        )
        query = wire.parseMessage(makeQuery("Q.Example.TEST", dns.A, id=999))
        m = decode(wire.buildResponse(query, answer))
        self.assertEqual(m.id, 999)
        self.assertEqual(m.queries[0].name.name, b"Q.Example.TEST")

    def test_rcodeKept(self):
        """
        A relayed answer keeps the upstream's rcode and authority section.
        """
        soa = upstreamTable()[1]
        answer = upstreamAnswer([], rcode=dns.ENAME, authority=[soa], qtype=dns.A)
        query = wire.parseMessage(makeQuery("q.example.test", dns.A))
        m = decode(wire.buildResponse(query, answer))
        self.assertEqual(m.rCode, dns.ENAME)
        self.assertEqual(m.authority[0].payload.minimum, 60)

    def test_unknownTypeBytes(self):
        """
        A record of a type twisted.names does not know keeps its bytes.
        """
        answer = upstreamAnswer(
            [rr(b"q.example.test", TYPE_PRIVATE, dns.UnknownRecord(PRIVATE_DATA), 10)],
            qtype=TYPE_PRIVATE,
        )
        query = wire.parseMessage(makeQuery("q.example.test", TYPE_PRIVATE))
        data = wire.buildResponse(query, answer)
        self.assertIn(PRIVATE_DATA, data)
        self.assertEqual(decode(data).answers[0].payload.data, PRIVATE_DATA)

    def test_partialTruncatedAnswer(self):
        """
        A truncated upstream answer cut in the middle of a record (as
        twisted.names' own server does) parses, with its records dropped.
        """
        m = dns.Message(id=5, answer=1, maxSize=512)
        m.addQuery(b"q.example.test", dns.TXT)
        m.answers = [rr(b"q.example.test", dns.TXT, dns.Record_TXT(*BIG_STRINGS), 300)]
        parsed = wire.parseMessage(m.toStr())
        self.assertTrue(parsed.partial)
        self.assertTrue(parsed.truncated)
        self.assertEqual(parsed.records, [])
        self.assertEqual(wire.cacheTTL(parsed, 86400, 300), 0)


class CacheTTLTests(unittest.SynchronousTestCase):
    """
    How long an upstream answer may be kept.
    """

    def test_positive(self):
        """
        A positive answer lives as long as its shortest answer TTL, capped.
        """
        answer = upstreamAnswer(
            [
                rr(b"q", dns.A, dns.Record_A("10.0.0.1"), 300),
                rr(b"q", dns.A, dns.Record_A("10.0.0.2"), 120),
            ],
            qtype=dns.A,
        )
        self.assertEqual(wire.cacheTTL(answer, 86400, 300), 120)
        self.assertEqual(wire.cacheTTL(answer, 100, 300), 100)

    def test_negative(self):
        """
        NXDOMAIN and NODATA live min(SOA TTL, SOA MINIMUM), capped; without an
        SOA they are not cached (RFC 2308).
        """
        soa = upstreamTable()[1]
        nx = upstreamAnswer([], rcode=dns.ENAME, authority=[soa], qtype=dns.A)
        self.assertEqual(wire.cacheTTL(nx, 86400, 300), 60)
        self.assertEqual(wire.cacheTTL(nx, 86400, 30), 30)
        nodata = upstreamAnswer([], authority=[soa], qtype=dns.A)
        self.assertEqual(wire.cacheTTL(nodata, 86400, 300), 60)
        bare = upstreamAnswer([], rcode=dns.ENAME, qtype=dns.A)
        self.assertEqual(wire.cacheTTL(bare, 86400, 300), 0)

    def test_failures(self):
        """
        SERVFAIL and REFUSED are never cached.
        """
        for rcode in (dns.ESERVER, dns.EREFUSED):
            self.assertEqual(
                wire.cacheTTL(upstreamAnswer([], rcode=rcode), 86400, 300), 0
            )


class DNSCacheTests(unittest.SynchronousTestCase):
    """
    L{DNSCache} keeps answers for their TTL, within its bounds.
    """

    def answer(self, size=1):
        strings = [b"x" * min(255, size - i) for i in range(0, size, 255)]
        return upstreamAnswer([rr(b"q", dns.TXT, dns.Record_TXT(*strings), 60)])

    def test_expiry(self):
        """
        An entry is there, with its age, until its TTL runs out on the clock.
        """
        clock = task.Clock()
        cache = DNSCache(clock)
        a = self.answer()
        cache.put("k", a, 60)
        clock.advance(59.5)
        self.assertEqual(cache.get("k"), (a, 59))
        clock.advance(0.5)
        self.assertIsNone(cache.get("k"))
        self.assertEqual(len(cache), 0)

    def test_zeroTTL(self):
        """
        A TTL of 0 keeps nothing.
        """
        cache = DNSCache(task.Clock())
        cache.put("k", self.answer(), 0)
        self.assertIsNone(cache.get("k"))

    def test_lruByEntries(self):
        """
        Past C{maxEntries}, the least recently used entry goes.
        """
        cache = DNSCache(task.Clock(), maxEntries=2)
        cache.put("a", self.answer(), 60)
        cache.put("b", self.answer(), 60)
        cache.get("a")
        cache.put("c", self.answer(), 60)
        self.assertIsNotNone(cache.get("a"))
        self.assertIsNone(cache.get("b"))
        self.assertIsNotNone(cache.get("c"))

    def test_boundByBytes(self):
        """
        Past C{maxBytes}, old entries go; an answer larger than the whole cache
        is not kept.
        """
        size = len(self.answer(200).data)
        cache = DNSCache(task.Clock(), maxEntries=100, maxBytes=3 * size + 10)
        cache.put("a", self.answer(200), 60)
        cache.put("b", self.answer(200), 60)
        cache.put("c", self.answer(200), 60)
        cache.put("d", self.answer(200), 60)
        self.assertIsNone(cache.get("a"))
        self.assertIsNotNone(cache.get("d"))
        cache.put("huge", self.answer(1000), 60)
        self.assertIsNone(cache.get("huge"))
        self.assertIsNotNone(cache.get("d"))


class ResolvConfTests(unittest.SynchronousTestCase):
    """
    Nameservers come from resolv.conf, read again when it changes.
    """

    def test_parse(self):
        """
        Nameserver lines give (address, 53) in order, IPv6 included; comments,
        duplicates and junk are skipped.
        """
        text = (
            "# comment\nsearch lan\nnameserver 127.0.0.53\n"
            "nameserver ::1 # v6\nnameserver 127.0.0.53\nnameserver bogus\n"
            "; nameserver 10.0.0.1\noptions edns0\n"
        )
        self.assertEqual(parseResolvConf(text), [("127.0.0.53", 53), ("::1", 53)])

    def test_parseEmpty(self):
        """
        Without a nameserver, the local one is meant, as for glibc.
        """
        self.assertEqual(parseResolvConf("search lan\n"), [("127.0.0.1", 53)])

    def test_watchedFile(self):
        """
        A L{WatchedFile} parses once, looks again only after its interval, and
        parses again only when the file changed.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nameserver 10.0.0.1\n")
        clock = task.Clock()
        calls = []

        def parse(text):
            calls.append(text)
            return parseResolvConf(text)

        watched = WatchedFile(path, parse, clock, interval=3)
        self.assertEqual(watched(), [("10.0.0.1", 53)])
        with open(path, "w") as f:
            f.write("nameserver 10.0.0.2\n")
        os.utime(path, (5, 5))
        self.assertEqual(watched(), [("10.0.0.1", 53)])
        clock.advance(3)
        self.assertEqual(watched(), [("10.0.0.2", 53)])
        clock.advance(3)
        watched()
        self.assertEqual(len(calls), 2)
        os.remove(path)
        clock.advance(3)
        self.assertEqual(watched(), [("127.0.0.1", 53)])


# Unit tests: robustness


class MalformedTests(unittest.SynchronousTestCase):
    """
    Bad queries are dropped (or refused with the right rcode) and counted;
    nothing raises out of the protocols.
    """

    def test_garbageDropped(self):
        """
        Bytes that are not a DNS message, a truncated question, a pointer loop
        and a response sent to us are all dropped without an answer, and
        counted.
        """
        svc = localService()
        loop = (
            struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
        )
        samples = [
            b"",
            b"\x00\x01",
            b"\x00" * 11,
            makeQuery("gateway.containers.internal")[:20],
            loop,
        ]
        for data in samples:
            svc.udpProtocol.datagramReceived(data, ("10.0.0.2", 1))
        response = bytearray(makeQuery("gateway.containers.internal"))
        response[2] |= 0x80
        svc.udpProtocol.datagramReceived(bytes(response), ("10.0.0.2", 1))
        self.assertEqual(svc.udpProtocol.transport.written, [])
        self.assertEqual(svc.counters.get("drop.dns.malformedQuery"), len(samples))
        self.assertEqual(svc.counters.get("drop.dns.unexpectedResponse"), 1)

    def test_rcodes(self):
        """
        A query without a question is FORMERR, an opcode other than QUERY is
        NOTIMP, an EDNS version other than 0 is BADVERS.
        """
        svc = localService()
        empty = struct.pack("!HHHHHH", 7, 0x0100, 0, 0, 0, 0)
        svc.udpProtocol.datagramReceived(empty, ("10.0.0.2", 1))
        m = decode(svc.udpProtocol.transport.written[-1][0])
        self.assertEqual((m.id, m.answer, m.rCode), (7, 1, dns.EFORMAT))
        m = ask(svc, "gateway.containers.internal", opCode=dns.OP_STATUS)
        self.assertEqual(m.rCode, dns.ENOTIMP)
        data = bytearray(makeQuery("gateway.containers.internal", edns=1232))
        data[-5] = 1  # the OPT's version byte
        svc.udpProtocol.datagramReceived(bytes(data), ("10.0.0.2", 1))
        parsed = wire.parseMessage(svc.udpProtocol.transport.written[-1][0])
        self.assertEqual(parsed.rcode, wire.BADVERS)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_randomBytes(self, data):
        """
        Random datagrams never raise out of the protocol.
        """
        svc = localService()
        svc.udpProtocol.datagramReceived(data, ("10.0.0.2", 1))
        self.assertEqual(svc.counters.get("drop.dns.internalError"), 0)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6))
    def test_mutatedQueries(self, mutations):
        """
        Valid queries with bytes changed never raise out of the protocol, and
        whatever is answered is a well-formed message.
        """
        svc = localService()
        data = bytearray(makeQuery("gateway.containers.internal", edns=1232))
        for position, value in mutations:
            if position < len(data):
                data[position] = value
        svc.udpProtocol.datagramReceived(bytes(data), ("10.0.0.2", 1))
        self.assertEqual(svc.counters.get("drop.dns.internalError"), 0)
        for answer, _ in svc.udpProtocol.transport.written:
            wire.parseMessage(answer)


class TCPProtocolTests(unittest.SynchronousTestCase):
    """
    The TCP side answers length-prefixed queries on the same connection.
    """

    def test_localAnswerOverTCP(self):
        """
        A query on a TCP connection gets its answer, length-prefixed; two
        pipelined queries get two answers.
        """
        svc = localService()
        proto = svc.tcpFactory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        q1 = makeQuery("gateway.containers.internal", id=1)
        q2 = makeQuery("host.containers.internal", id=2)
        proto.dataReceived(
            struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2
        )
        out = transport.value()
        first = struct.unpack("!H", out[:2])[0]
        m1 = decode(out[2 : 2 + first])
        m2 = decode(out[4 + first :])
        self.assertEqual((m1.id, addresses(m1)), (1, [GATEWAY]))
        self.assertEqual((m2.id, addresses(m2)), (2, [HOST]))
        proto.connectionLost(None)
        self.assertEqual(svc.tcpFactory.connections, [])

    def test_idleTimeout(self):
        """
        An idle TCP client is disconnected after C{tcpIdleTimeout} seconds.
        """
        svc = localService(tcpIdleTimeout=10)
        proto = svc.tcpFactory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        svc.reactor.advance(9)
        self.assertFalse(transport.disconnecting)
        svc.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)

    def test_connectionCap(self):
        """
        Past C{maxTCPConnections}, new connections are refused.
        """
        svc = localService(maxTCPConnections=1)
        p = svc.tcpFactory.buildProtocol(None)
        p.makeConnection(StringTransport())
        self.assertIsNone(svc.tcpFactory.buildProtocol(None))
        p.connectionLost(None)
        self.assertIsNotNone(svc.tcpFactory.buildProtocol(None))

    def test_contract(self):
        """
        The service hands out twisted.names' own kinds of protocol and factory.
        """
        svc = localService()
        self.assertIsInstance(svc.udpProtocol, dns.DNSDatagramProtocol)
        self.assertIsInstance(svc.udpProtocol, GatewayDNSDatagramProtocol)
        self.assertIsInstance(svc.tcpFactory, server.DNSServerFactory)
        self.assertIsInstance(svc.tcpFactory, GatewayDNSServerFactory)


# Integration tests over loopback


class _LoopbackMixin:
    """
    Start a fake upstream and the service on 127.0.0.1, with cleanups.
    """

    def listenBoth(self, udpProtocol, tcpFactory, interface="127.0.0.1", port=0):
        """
        Listen on the same port number over TCP and UDP. With port 0 the TCP
        port is picked first; if its number is taken for UDP (other tests run
        on this machine too), try again with another one.
        """
        for attempt in range(20):
            tcp = reactor.listenTCP(port, tcpFactory, interface=interface)
            number = tcp.getHost().port
            try:
                udp = reactor.listenUDP(number, udpProtocol, interface=interface)
            except CannotListenError:
                tcp.stopListening()
                if port or attempt == 19:
                    raise
                continue
            self.addCleanup(tcp.stopListening)
            self.addCleanup(udp.stopListening)
            return number

    def startUpstream(self, interface="127.0.0.1", port=0, **kw):
        upstream = FakeUpstream(**kw)
        port = self.listenBoth(
            dns.DNSDatagramProtocol(upstream), upstream, interface, port
        )
        return upstream, port

    def startService(
        self, upstreamPort=None, upstreams=None, serviceReactor=None, **kw
    ):
        if upstreams is None:
            upstreams = [("127.0.0.1", upstreamPort)]
        svc = DNSService(
            serviceReactor or reactor,
            DNSZones(defaultZones(GATEWAY, HOST)),
            upstreams=upstreams,
            counters=Counters(),
            **kw,
        )
        port = self.listenBoth(svc.udpProtocol, svc.tcpFactory)
        self.addCleanup(svc.stop)
        return svc, port

    @defer.inlineCallbacks
    def dig(self, port, *args):
        """
        Run dig against the service and return its parsed output.
        """
        out, err, code = yield getProcessOutputAndValue(
            DIG,
            ["-r", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
            env={"PATH": os.environ.get("PATH", "")},
        )
        output = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, output + err.decode("utf-8", "replace"))
        return parseDig(output), output

    @defer.inlineCallbacks
    def query(self, port, name, qtype=dns.A, tcp=False, **kw):
        """
        Ask the service with a raw client; return the parsed answer.
        """
        data = yield rawExchange(port, makeQuery(name, qtype, **kw), tcp=tcp)
        return decode(data)


class DigTests(_LoopbackMixin, unittest.TestCase):
    """
    The service, on real sockets, asked by dig, forwarding to a twisted.names
    upstream of the test's own.
    """

    if DIG is None:
        skip = "dig is not installed"

    def setUp(self):
        self.upstream, upstreamPort = self.startUpstream()
        self.service, self.port = self.startService(upstreamPort)

    @defer.inlineCallbacks
    def test_a(self):
        """
        An A record is relayed with its TTL.
        """
        r, out = yield self.dig(self.port, "a.example.test", "A")
        self.assertEqual(r["status"], "NOERROR")
        self.assertEqual(
            r["ANSWER"], [("a.example.test.", 300, "IN", "A", "192.0.2.10")]
        )
        self.assertIn("ra", r["flags"])

    @defer.inlineCallbacks
    def test_aaaa(self):
        """
        An AAAA record is relayed: unlike gvproxy, which answered AAAA with
        nothing.
        """
        r, out = yield self.dig(self.port, "a.example.test", "AAAA")
        self.assertEqual(
            r["ANSWER"], [("a.example.test.", 301, "IN", "AAAA", "2001:db8::10")]
        )

    @defer.inlineCallbacks
    def test_mx(self):
        """
        An MX answer keeps its additional section.
        """
        r, out = yield self.dig(self.port, "example.test", "MX")
        self.assertEqual(
            r["ANSWER"], [("example.test.", 302, "IN", "MX", "10 mail.example.test.")]
        )
        self.assertEqual(
            r["ADDITIONAL"], [("mail.example.test.", 303, "IN", "A", "192.0.2.25")]
        )

    @defer.inlineCallbacks
    def test_txt(self):
        """
        A TXT record of several strings is relayed whole.
        """
        r, out = yield self.dig(self.port, "small.example.test", "TXT")
        self.assertEqual(
            r["ANSWER"], [("small.example.test.", 306, "IN", "TXT", '"hello" "world"')]
        )

    @defer.inlineCallbacks
    def test_srv(self):
        """
        An SRV record is relayed.
        """
        r, out = yield self.dig(self.port, "_sip._tcp.example.test", "SRV")
        self.assertEqual(
            r["ANSWER"],
            [
                (
                    "_sip._tcp.example.test.",
                    309,
                    "IN",
                    "SRV",
                    "10 20 5060 sip.example.test.",
                )
            ],
        )

    @defer.inlineCallbacks
    def test_ptr(self):
        """
        A PTR query (dig -x) for an address that is not local is forwarded.
        """
        r, out = yield self.dig(self.port, "-x", "192.0.2.10")
        self.assertEqual(
            r["ANSWER"],
            [("10.2.0.192.in-addr.arpa.", 310, "IN", "PTR", "a.example.test.")],
        )

    @defer.inlineCallbacks
    def test_soa(self):
        """
        An SOA record is relayed.
        """
        r, out = yield self.dig(self.port, "example.test", "SOA")
        self.assertEqual(
            r["ANSWER"],
            [
                (
                    "example.test.",
                    3600,
                    "IN",
                    "SOA",
                    "ns1.example.test. hostmaster.example.test. 2024010101 7200 3600 1209600 60",
                )
            ],
        )

    @defer.inlineCallbacks
    def test_caa(self):
        """
        CAA, a type twisted.names does not know, is relayed byte for byte.
        """
        r, out = yield self.dig(self.port, "example.test", "CAA")
        self.assertEqual(
            r["ANSWER"],
            [("example.test.", 304, "IN", "CAA", '0 issue "letsencrypt.org"')],
        )

    @defer.inlineCallbacks
    def test_https(self):
        """
        HTTPS records are relayed.
        """
        r, out = yield self.dig(self.port, "example.test", "TYPE65")
        self.assertEqual(len(r["ANSWER"]), 1)
        self.assertEqual(r["ANSWER"][0][1:4], (305, "IN", "HTTPS"))
        self.assertIn("alpn", r["ANSWER"][0][4])

    @defer.inlineCallbacks
    def test_unknownType(self):
        """
        A private-use type is relayed; dig shows its RDATA in RFC 3597 form,
        identical to what the upstream holds.
        """
        r, out = yield self.dig(self.port, "x.example.test", "TYPE65280")
        self.assertEqual(
            r["ANSWER"],
            [
                (
                    "x.example.test.",
                    311,
                    "IN",
                    "TYPE65280",
                    "\\# %d %s" % (len(PRIVATE_DATA), PRIVATE_DATA.hex().upper()),
                )
            ],
        )

    @defer.inlineCallbacks
    def test_cname(self):
        """
        A CNAME chain is relayed as the upstream gave it.
        """
        r, out = yield self.dig(self.port, "www.example.test", "A")
        self.assertEqual([a[3] for a in r["ANSWER"]], ["CNAME", "A"])

    @defer.inlineCallbacks
    def test_nxdomain(self):
        """
        NXDOMAIN keeps its rcode and the upstream's SOA: gvproxy turned every
        failure into NXDOMAIN and dropped the authority section.
        """
        r, out = yield self.dig(self.port, "nothere.example.test", "A")
        self.assertEqual(r["status"], "NXDOMAIN")
        self.assertEqual([a[3] for a in r["AUTHORITY"]], ["SOA"])

    @defer.inlineCallbacks
    def test_nodata(self):
        """
        A name without data of the type asked is NOERROR with the SOA.
        """
        r, out = yield self.dig(self.port, "a.example.test", "MX")
        self.assertEqual((r["status"], r["ANSWER"]), ("NOERROR", []))
        self.assertEqual([a[3] for a in r["AUTHORITY"]], ["SOA"])

    @defer.inlineCallbacks
    def test_servfail(self):
        """
        An upstream's SERVFAIL is relayed as SERVFAIL.
        """
        r, out = yield self.dig(self.port, "servfail.example.test", "A")
        self.assertEqual(r["status"], "SERVFAIL")

    @defer.inlineCallbacks
    def test_tcp(self):
        """
        dig +tcp gets the same answer over TCP.
        """
        r, out = yield self.dig(self.port, "+tcp", "a.example.test", "A")
        self.assertEqual(
            r["ANSWER"], [("a.example.test.", 300, "IN", "A", "192.0.2.10")]
        )

    @defer.inlineCallbacks
    def test_bigTXT(self):
        """
        A 3000-byte TXT answer comes over UDP truncated (tc, no answer) with or
        without EDNS, and whole over TCP. The upstream was asked over UDP first,
        then over TCP when its answer was truncated.
        """
        r, out = yield self.dig(
            self.port, "+ignore", "+noedns", "big.example.test", "TXT"
        )
        self.assertIn("tc", r["flags"])
        self.assertEqual(r["ANSWER"], [])
        r, out = yield self.dig(self.port, "+ignore", "big.example.test", "TXT")
        self.assertIn("tc", r["flags"])
        self.assertEqual(r["ANSWER"], [])
        r, out = yield self.dig(self.port, "+tcp", "big.example.test", "TXT")
        self.assertNotIn("tc", r["flags"])
        strings = re.findall(r'"([^"]*)"', r["ANSWER"][0][4])
        self.assertEqual([s.encode() for s in strings], BIG_STRINGS)
        self.assertEqual(
            [q[2] for q in self.upstream.queries if q[0] == b"big.example.test"],
            ["udp", "tcp"],
        )

    @defer.inlineCallbacks
    def test_ednsSize(self):
        """
        An 800-byte answer is truncated for a client without EDNS and whole for
        dig's default EDNS size of 1232 bytes.
        """
        r, out = yield self.dig(
            self.port, "+ignore", "+noedns", "medium.example.test", "TXT"
        )
        self.assertIn("tc", r["flags"])
        r, out = yield self.dig(self.port, "+ignore", "medium.example.test", "TXT")
        self.assertNotIn("tc", r["flags"])
        self.assertEqual(len(r["ANSWER"]), 1)

    @defer.inlineCallbacks
    def test_localNames(self):
        """
        gateway.containers.internal and host.docker.internal are answered
        locally, TTL 0, and never reach the upstream.
        """
        r, out = yield self.dig(self.port, "gateway.containers.internal")
        self.assertEqual(
            r["ANSWER"], [("gateway.containers.internal.", 0, "IN", "A", GATEWAY)]
        )
        self.assertIn("aa", r["flags"])
        r, out = yield self.dig(self.port, "host.docker.internal")
        self.assertEqual(r["ANSWER"], [("host.docker.internal.", 0, "IN", "A", HOST)])
        r, out = yield self.dig(self.port, "host.docker.internal", "AAAA")
        self.assertEqual((r["status"], r["ANSWER"]), ("NOERROR", []))
        self.assertEqual(self.upstream.queries, [])


class ForwardingTests(_LoopbackMixin, unittest.TestCase):
    """
    Forwarding details checked with a raw client over loopback.
    """

    @defer.inlineCallbacks
    def test_unknownTypeByteExact(self):
        """
        The RDATA of an unknown type reaches the client byte for byte, over
        UDP and TCP.
        """
        upstream, upstreamPort = self.startUpstream()
        svc, port = self.startService(upstreamPort)
        for tcp in (False, True):
            m = yield self.query(port, "x.example.test", TYPE_PRIVATE, tcp=tcp)
            self.assertEqual(m.answers[0].type, TYPE_PRIVATE)
            self.assertEqual(m.answers[0].payload.data, PRIVATE_DATA)

    @defer.inlineCallbacks
    def test_cachedWithAgedTTL(self):
        """
        A second query is answered from the cache with the TTL lowered by the
        time spent there; once the TTL has run out the upstream is asked again.
        Negative answers are cached for the SOA's MINIMUM.
        """
        clock = task.Clock()
        clock.advance(1000)
        upstream, upstreamPort = self.startUpstream()
        svc, port = self.startService(
            upstreamPort, serviceReactor=ClockedReactor(clock)
        )
        m = yield self.query(port, "a.example.test")
        self.assertEqual(m.answers[0].ttl, 300)
        clock.advance(100)
        m = yield self.query(port, "A.EXAMPLE.test", id=77)
        self.assertEqual((m.id, m.answers[0].ttl), (77, 200))
        self.assertEqual(m.queries[0].name.name, b"A.EXAMPLE.test")
        self.assertEqual(len(upstream.queries), 1)
        clock.advance(200)
        m = yield self.query(port, "a.example.test")
        self.assertEqual(m.answers[0].ttl, 300)
        self.assertEqual(len(upstream.queries), 2)

        m = yield self.query(port, "nx.example.test")
        self.assertEqual(m.rCode, dns.ENAME)
        clock.advance(59)
        m = yield self.query(port, "nx.example.test")
        self.assertEqual(m.rCode, dns.ENAME)
        self.assertEqual(m.authority[0].ttl, 3600 - 59)
        self.assertEqual(len(upstream.queries), 3)
        clock.advance(1)
        yield self.query(port, "nx.example.test")
        self.assertEqual(len(upstream.queries), 4)
        self.assertEqual(svc.counters.get("dns.cache.hits"), 2)

    @defer.inlineCallbacks
    def test_sloppyTruncation(self):
        """
        An upstream that truncates by cutting a record in half (as
        twisted.names' own server does) still leads to the whole answer over
        TCP.
        """
        upstream, upstreamPort = self.startUpstream(cut=True)
        svc, port = self.startService(upstreamPort)
        m = yield self.query(port, "big.example.test", dns.TXT, tcp=True)
        self.assertEqual(m.answers[0].payload.data, BIG_STRINGS)
        m = yield self.query(port, "big.example.test", dns.TXT)
        self.assertTrue(m.trunc)

    @defer.inlineCallbacks
    def test_timeoutThenNextUpstream(self):
        """
        When the first upstream does not answer, the next one is asked after
        the timeout.
        """
        silent = SilentUpstream()
        silentPort = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(silentPort.stopListening)
        upstream, upstreamPort = self.startUpstream()
        svc, port = self.startService(
            upstreams=[
                ("127.0.0.1", silentPort.getHost().port),
                ("127.0.0.1", upstreamPort),
            ],
            timeout=0.2,
        )
        m = yield self.query(port, "a.example.test")
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.0.2.10")
        self.assertEqual(silent.received, 1)
        self.assertEqual(svc.counters.get("dns.upstream.timeouts"), 1)

    @defer.inlineCallbacks
    def test_allTimeOut(self):
        """
        When no upstream answers in any round, the client gets SERVFAIL.
        """
        silent = SilentUpstream()
        silentPort = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(silentPort.stopListening)
        svc, port = self.startService(
            upstreams=[("127.0.0.1", silentPort.getHost().port)], timeout=0.1, rounds=2
        )
        m = yield self.query(port, "a.example.test")
        self.assertEqual(m.rCode, dns.ESERVER)
        self.assertEqual(silent.received, 2)

    def closedUDPPort(self):
        """
        A loopback UDP port nothing listens on (answers port unreachable).
        """
        probe = reactor.listenUDP(0, SilentUpstream(), interface="127.0.0.1")
        number = probe.getHost().port
        probe.stopListening()
        return number

    @defer.inlineCallbacks
    def test_portUnreachableFailsOverAtOnce(self):
        """
        An upstream that answers ICMP port unreachable is failed over at once,
        long before the timeout, and not asked again in the next round.
        """
        upstream, upstreamPort = self.startUpstream()
        svc, port = self.startService(
            upstreams=[("127.0.0.1", self.closedUDPPort()), ("127.0.0.1", upstreamPort)],
            timeout=5.0,
        )
        started = reactor.seconds()
        m = yield self.query(port, "a.example.test")
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.0.2.10")
        self.assertEqual(svc.counters.get("dns.upstream.unreachable"), 1)
        self.assertEqual(svc.counters.get("dns.upstream.timeouts"), 0)

    @defer.inlineCallbacks
    def test_onlyUnreachableServfailsAtOnce(self):
        """
        With only an unreachable upstream (an empty resolv.conf's fallback to
        127.0.0.1:53 where nothing listens) the client gets SERVFAIL at once,
        not after every round timed out.
        """
        svc, port = self.startService(upstreams=[("127.0.0.1", self.closedUDPPort())],
                                      timeout=5.0, rounds=2)
        started = reactor.seconds()
        m = yield self.query(port, "a.example.test")
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertEqual(m.rCode, dns.ESERVER)

    @defer.inlineCallbacks
    def test_refusedThenNextUpstream(self):
        """
        An upstream's REFUSED sends the question to the next upstream; the last
        answer is relayed if every upstream refuses.
        """
        first, firstPort = self.startUpstream()
        second, secondPort = self.startUpstream()
        svc, port = self.startService(
            upstreams=[("127.0.0.1", firstPort), ("127.0.0.1", secondPort)]
        )
        m = yield self.query(port, "refused.example.test")
        self.assertEqual(m.rCode, dns.EREFUSED)
        self.assertEqual(len(first.queries), 1)
        self.assertEqual(len(second.queries), 1)

    @defer.inlineCallbacks
    def test_coalescing(self):
        """
        Identical questions asked at once make one upstream query.
        """
        upstream, upstreamPort = self.startUpstream()
        svc, port = self.startService(upstreamPort)
        answers = yield defer.gatherResults(
            [self.query(port, "a.example.test", id=i) for i in range(1, 6)]
        )
        self.assertEqual(sorted(m.id for m in answers), [1, 2, 3, 4, 5])
        self.assertEqual(len(upstream.queries), 1)

    @defer.inlineCallbacks
    def test_resolvConfChange(self):
        """
        With upstreams from a resolv.conf, a change of its nameserver is picked
        up: later queries go to the new server. (Both servers listen on the same
        port of two loopback addresses; the port comes with C{resolvConfPort}.)
        """
        first, port1 = self.startUpstream(interface="127.0.0.1")
        table = upstreamTable()[0]
        table[b"which.example.test", dns.A] = (
            0,
            [rr(b"which.example.test", dns.A, dns.Record_A("192.0.2.2"), 30)],
            [],
            [],
        )
        try:
            second, _ = self.startUpstream(
                interface="127.0.0.2", port=port1, table=table
            )
        except CannotListenError as e:
            raise unittest.SkipTest(f"cannot listen on 127.0.0.2:{port1}: {e}")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nameserver 127.0.0.1\n")
        svc = DNSService(
            reactor,
            DNSZones(defaultZones(GATEWAY, HOST)),
            resolvConf=path,
            resolvConfPort=port1,
            fileCheckInterval=0,
            cacheSize=0,
        )
        self.addCleanup(svc.stop)
        udp = reactor.listenUDP(0, svc.udpProtocol, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        port = udp.getHost().port
        m = yield self.query(port, "which.example.test")
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.0.2.1")
        with open(path, "w") as f:
            f.write("nameserver 127.0.0.2\n")
        os.utime(path, (12345, 12345))
        m = yield self.query(port, "which.example.test")
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.0.2.2")
        self.assertEqual((len(first.queries), len(second.queries)), (1, 1))


class IPv6ZoneTests(unittest.SynchronousTestCase):
    """
    With IPv6 addresses, the local zones answer AAAA for the gateway and the
    host, and A answers are unchanged.
    """

    GATEWAY6 = "fd00:192:168:127::1"
    HOST6 = "fd00:192:168:127::fe"

    def service(self):
        return localService(defaultZones(GATEWAY, HOST, self.GATEWAY6, self.HOST6))

    def test_aaaa(self):
        """
        AAAA for gateway and host in both zones gives the IPv6 addresses,
        with TTL 0.
        """
        svc = self.service()
        for zone in ("containers.internal", "docker.internal"):
            for name, expected in (("gateway", self.GATEWAY6), ("host", self.HOST6)):
                answer = ask(svc, f"{name}.{zone}", dns.AAAA)
                self.assertEqual(answer.rCode, dns.OK)
                self.assertEqual([(rr.type, rr.payload._address, rr.ttl) for rr in answer.answers],
                                 [(dns.AAAA, expected, 0)])

    def test_aUnchanged(self):
        """
        A queries get exactly the IPv4 address, as without IPv6.
        """
        svc = self.service()
        self.assertEqual(addresses(ask(svc, "gateway.containers.internal")), [GATEWAY])
        self.assertEqual(len(ask(svc, "host.docker.internal").answers), 1)

    def test_any(self):
        """
        ANY gets both.
        """
        answer = ask(self.service(), "gateway.containers.internal", dns.ALL_RECORDS)
        self.assertEqual(sorted(rr.type for rr in answer.answers), [dns.A, dns.AAAA])

    def test_withoutIPv6(self):
        """
        Without IPv6 addresses, AAAA is NOERROR with no answer (as before).
        """
        answer = ask(localService(), "gateway.containers.internal", dns.AAAA)
        self.assertEqual((answer.rCode, answer.answers), (dns.OK, []))

    def test_firstOfEachFamily(self):
        """
        The first matching record of each family answers; a third record is
        not consulted.
        """
        zones = [{"Name": "z.test.", "Records": [
            {"Name": "a", "IP": "2001:db8::1"},
            {"Regexp": "^a$", "IP": "2001:db8::2"},
            {"Name": "a", "IP": "192.0.2.1"},
            {"Name": "a", "IP": "192.0.2.2"},
        ]}]
        svc = localService(zones)
        self.assertEqual(addresses(ask(svc, "a.z.test")), ["192.0.2.1"])
        self.assertEqual([rr.payload._address for rr in ask(svc, "a.z.test", dns.AAAA).answers],
                         ["2001:db8::1"])
