"""
Tests for L{gvtwisted.wire.ipv6}, L{gvtwisted.wire.icmpv6} and
L{gvtwisted.wire.dhcpv6}.

Golden frames come from three places: frames a Linux guest really sent
(captured on a veth in a network namespace: its duplicate address detection,
router solicitation, MLD report and ISC dhclient's DHCPv6 messages), frames
built by dpkt (an independent implementation of IPv6 and ICMPv6), and
messages laid out field by field from the RFCs with their checksums computed
by the slow reference sum below. hypothesis checks that the parsers raise
nothing but their documented errors.
"""

import struct

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.wire import dhcpv6, icmpv6, ipv6

FUZZ = settings(max_examples=300, deadline=None)

GW_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_MAC = bytes.fromhex("5a94efe40cee")
GUEST_LL = bytes.fromhex("fe800000000000005894effffee40cee")
GW_LL = bytes.fromhex("fe800000000000005894effffee40cdd")
GW6 = bytes.fromhex("fd000192016801270000000000000001")
GUEST6 = bytes.fromhex("fd000192016801270000000000000002")

# What a Linux guest sent when its interface (MAC 5a:94:ef:e4:0c:ee) came up,
# captured on a veth. DAD: a neighbor solicitation from :: for its own
# link-local address, with the nonce option (14) of RFC 7527.
CAPTURED_DAD = bytes.fromhex(
    "3333ffe40cee5a94efe40cee86dd6000000000203aff00000000000000000000000000000000"
    "ff0200000000000000000001ffe40cee8700fee100000000fe800000000000005894effffee4"
    "0cee0e012f87729f6adc")
# A router solicitation with the source link-layer address option.
CAPTURED_RS = bytes.fromhex(
    "3333000000025a94efe40cee86dd6000000000103afffe800000000000005894effffee40cee"
    "ff0200000000000000000000000000028500d05f0000000001015a94efe40cee")
# An MLDv2 report: a hop-by-hop header (router alert, PadN) before ICMPv6.
CAPTURED_MLD = bytes.fromhex(
    "3333000000165a94efe40cee86dd600000000024000100000000000000000000000000000000"
    "ff0200000000000000000000000000163a000502000001008f0061b80000000104000000ff02"
    "00000000000000000001ffe40cee")


def _fixUDPChecksum(frame):
    """
    The veth's checksum offload left dhclient's UDP checksums partial in the
    capture (tcpdump said so); put in the right value so that the frame is
    what a TAP guest sends.
    """
    udpStart = 14 + 40
    datagram = bytearray(frame[udpStart:])
    datagram[6:8] = b"\x00\x00"
    csum = referenceChecksum(frame[22:38], frame[38:54], 17, bytes(datagram))
    return frame[:udpStart + 6] + struct.pack("!H", csum) + frame[udpStart + 8:]


def referenceSum(data: bytes) -> int:
    """
    The ones' complement sum of 16-bit words the slow, obvious way (RFC 1071).
    """
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def referenceChecksum(src, dst, nextHeader, message):
    """
    The upper-layer checksum with the RFC 8200 8.1 pseudo header laid out
    as the RFC draws it.
    """
    pseudo = bytes(src) + bytes(dst) + struct.pack("!I3xB", len(message), nextHeader)
    return 0xFFFF - referenceSum(pseudo + bytes(message))


# dhclient -6 -S (stateless): an information-request from the link-local
# address to ff02::1:2 with a DUID-LL client id, an option request for DNS
# servers, search list, FQDN and SNTP, and elapsed time 0.
CAPTURED_INFO_REQUEST = _fixUDPChecksum(bytes.fromhex(
    "3333000100025a94efe40cee86dd60059f53002c1101fe800000000000005894effffee40cee"
    "ff02000000000000000000000001000202220223002c522b0b7b23c60001000a000300015a94"
    "efe40cee00060008001700180027001f000800020000"))
# dhclient -6 (stateful): a solicit with a DUID-LLT and an IA_NA (IAID
# 0xefe40cee, T1 3600, T2 5400).
CAPTURED_SOLICIT = _fixUDPChecksum(bytes.fromhex(
    "3333000100025a94efe40cee86dd60059f5300401101fe800000000000005894effffee40cee"
    "ff020000000000000000000000010002022202230040523f0164979e0001000e0001000132a1"
    "4c0e5a94efe40cee00060008001700180027001f0008000200000003000cefe40cee00000e10"
    "00001518"))


def withChecksum(src, dst, message: bytes, at: int = 2) -> bytes:
    """
    C{message} with the reference checksum written at offset C{at}.
    """
    csum = referenceChecksum(src, dst, 58 if at == 2 else 17, message)
    return message[:at] + struct.pack("!H", csum) + message[at + 2:]


class ChecksumTests(SynchronousTestCase):
    """
    The IPv6 pseudo header sum, done with the IPv4 helper, equals the RFC 8200
    layout summed the slow way.
    """

    def test_capturedChecksumsVerify(self):
        """
        Every ICMPv6 message a real kernel sent verifies.
        """
        for frame in (CAPTURED_DAD, CAPTURED_RS, CAPTURED_MLD):
            packet = ipv6.parse(frame)
            self.assertTrue(ipv6.upperChecksumOK(packet.src, packet.dst, 58, packet.payload))

    def test_capturedUDP(self):
        """
        The DHCPv6 datagrams (checksum recomputed by the reference) verify.
        """
        for frame in (CAPTURED_INFO_REQUEST, CAPTURED_SOLICIT):
            packet = ipv6.parse(frame)
            self.assertTrue(ipv6.upperChecksumOK(packet.src, packet.dst, 17, packet.payload))

    def test_corruptionDetected(self):
        """
        One flipped bit anywhere in the message or in an address fails.
        """
        packet = ipv6.parse(CAPTURED_RS)
        message = bytes(packet.payload)
        for i in range(len(message)):
            bad = bytearray(message)
            bad[i] ^= 0x10
            self.assertFalse(ipv6.upperChecksumOK(packet.src, packet.dst, 58, bytes(bad)), i)
        self.assertFalse(ipv6.upperChecksumOK(packet.src, GW_LL, 58, message))

    @FUZZ
    @given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
           st.sampled_from([6, 17, 58]), st.binary(max_size=200))
    def test_matchesReference(self, src, dst, nextHeader, data):
        """
        L{ipv6.upperChecksum} equals the reference for any addresses and data
        (0 excepted, which is sent as 0xFFFF).
        """
        message = b"\x00\x00" + data
        expected = referenceChecksum(src, dst, nextHeader, message)
        self.assertEqual(ipv6.upperChecksum(src, dst, nextHeader, message), expected or 0xFFFF)
        filled = struct.pack("!H", ipv6.upperChecksum(src, dst, nextHeader, message)) + data
        self.assertTrue(ipv6.upperChecksumOK(src, dst, nextHeader, filled))

    def test_pseudoHeaderSum(self):
        """
        The pseudo header sum is the reference sum of the 40-byte layout.
        """
        pseudo = GUEST_LL + ipv6.ALL_ROUTERS + struct.pack("!I3xB", 70000, 58)
        self.assertEqual(ipv6.pseudoHeaderSum(GUEST_LL, ipv6.ALL_ROUTERS, 58, 70000) % 0xFFFF,
                         referenceSum(pseudo) % 0xFFFF)


class IPv6Tests(SynchronousTestCase):
    """
    L{ipv6.parse} validates and views a packet; the builders make what dpkt
    makes.
    """

    def test_parseCaptured(self):
        """
        The captured router solicitation's fields.
        """
        p = ipv6.parse(CAPTURED_RS)
        self.assertEqual((p.src, p.dst, p.proto, p.hopLimit), (GUEST_LL, ipv6.ALL_ROUTERS, 58, 255))
        self.assertEqual(p.extensions, [])
        self.assertIsNone(p.fragment)
        self.assertEqual(len(p.payload), 16)
        self.assertEqual(len(p.packet), 56)

    def test_parseHopByHop(self):
        """
        The MLD report's hop-by-hop header is walked to ICMPv6.
        """
        p = ipv6.parse(CAPTURED_MLD)
        self.assertEqual(p.extensions, [ipv6.HOP_BY_HOP])
        self.assertEqual(p.proto, 58)
        self.assertEqual(p.payload[0], 143)
        self.assertEqual(len(p.payload), 28)

    def test_parseFlowLabel(self):
        """
        Traffic class and flow label come out of the first word.
        """
        p = ipv6.parse(CAPTURED_INFO_REQUEST)
        self.assertEqual((p.trafficClass, p.flowLabel, p.proto), (0, 0x59F53, 17))

    def test_parsePadding(self):
        """
        Ethernet padding beyond the payload length is not payload.
        """
        p = ipv6.parse(CAPTURED_RS + b"\x00" * 10)
        self.assertEqual(len(p.payload), 16)

    def test_parseErrors(self):
        """
        Each malformed header raises L{ipv6.IPv6Error} with its reason.
        """
        rs = bytearray(CAPTURED_RS)
        cases = []
        cases.append((CAPTURED_RS[:50], "ipv6.short"))
        bad = bytearray(rs)
        bad[14] = 0x40
        cases.append((bad, "ipv6.version"))
        bad = bytearray(rs)
        bad[18:20] = b"\x00\x20"
        cases.append((bad, "ipv6.payloadLength"))
        mld = bytearray(CAPTURED_MLD)
        mld[55] = 9  # hop-by-hop length 80 bytes: past the payload
        cases.append((mld, "ipv6.extensionLength"))
        mld = bytearray(CAPTURED_MLD)
        mld[54] = 0  # a second hop-by-hop header after the first
        cases.append((mld, "ipv6.hopByHopNotFirst"))
        jumbo = bytearray(rs)
        jumbo[18:21] = b"\x00\x00\x00"
        cases.append((jumbo, "ipv6.jumbogram"))
        for data, reason in cases:
            with self.assertRaises(ipv6.IPv6Error) as ctx:
                ipv6.parse(bytes(data))
            self.assertEqual(ctx.exception.reason, reason)

    def test_tooManyExtensions(self):
        """
        A chain of nine destination options headers is refused.
        """
        chain = b"".join(bytes((60, 0)) + b"\x01\x04\x00\x00\x00\x00" for _ in range(8))
        chain += bytes((59, 0)) + b"\x01\x04\x00\x00\x00\x00"
        frame = b"\x00" * 12 + b"\x86\xdd" + ipv6.buildHeader(GUEST6, GW6, 60, len(chain)) + chain
        with self.assertRaises(ipv6.IPv6Error) as ctx:
            ipv6.parse(frame)
        self.assertEqual(ctx.exception.reason, "ipv6.tooManyExtensions")

    def test_dpktExtensionsAndFragment(self):
        """
        A packet dpkt builds with destination options, routing and fragment
        headers is walked to the fragment; its fields are dpkt's.
        """
        udp = dpkt.udp.UDP(sport=1, dport=2, data=b"x" * 16)
        udp.ulen = 24
        packet = dpkt.ip6.IP6(src=GUEST6, dst=GW6, hlim=9, nxt=60, data=bytes(udp))
        packet.extension_hdrs = {
            60: dpkt.ip6.IP6DstOptsHeader(nxt=43, data=b"\x01\x04\x00\x00\x00\x00"),
            43: dpkt.ip6.IP6RoutingHeader(nxt=44, type=0, segs_left=0),
            44: dpkt.ip6.IP6FragmentHeader(nxt=17, frag_off=0x1230 >> 3, m_flag=1, id=0xDEADBEEF),
        }
        packet.all_extension_headers = [packet.extension_hdrs[k] for k in (60, 43, 44)]
        packet.plen = len(bytes(packet)) - 40
        p = ipv6.parse(b"\x00" * 12 + b"\x86\xdd" + bytes(packet))
        self.assertEqual(p.extensions, [60, 43, 44])
        self.assertEqual(p.proto, 17)
        self.assertEqual(p.hopLimit, 9)
        self.assertEqual((p.fragment.offset, p.fragment.more, p.fragment.ident),
                         (0x1230, True, 0xDEADBEEF))
        self.assertEqual(bytes(p.payload), bytes(udp))

    def test_buildHeader(self):
        """
        L{ipv6.buildHeader} packs what dpkt parses.
        """
        header = ipv6.buildHeader(GW6, GUEST6, 58, 100, hopLimit=255, trafficClass=0xB8,
                                  flowLabel=0x12345)
        parsed = dpkt.ip6.IP6(header + b"\x00" * 100)
        self.assertEqual((parsed.src, parsed.dst, parsed.nxt, parsed.hlim, parsed.plen),
                         (GW6, GUEST6, 58, 255, 100))
        self.assertEqual((parsed.fc, parsed.flow), (0xB8, 0x12345))

    def test_fragment(self):
        """
        L{ipv6.fragment} splits into packets within the MTU, all but the last
        a multiple of 8 long, each with a fragment header dpkt reads.
        """
        payload = bytes(range(256)) * 12
        packets = ipv6.fragment(GW6, GUEST6, 17, payload, 1280, 77)
        joined = b""
        for i, packet in enumerate(packets):
            self.assertLessEqual(len(packet), 1280)
            p = ipv6.parse(b"\x00" * 12 + b"\x86\xdd" + packet)
            self.assertEqual(p.fragment.offset, len(joined))
            self.assertEqual(p.fragment.more, i < len(packets) - 1)
            self.assertEqual((p.fragment.ident, p.proto), (77, 17))
            if p.fragment.more:
                self.assertEqual(len(p.payload) % 8, 0)
            joined += bytes(p.payload)
            frag = dpkt.ip6.IP6FragmentHeader(packet[40:48])
            self.assertEqual((frag.nxt, frag.frag_off, frag.m_flag, frag.id),
                             (17, (len(joined) - len(p.payload)) // 8, int(i < len(packets) - 1), 77))
        self.assertEqual(joined, payload)
        self.assertRaises(ValueError, ipv6.fragment, GW6, GUEST6, 17, payload, 40, 1)

    def test_addresses(self):
        """
        EUI-64, solicited-node and multicast MACs as the captures show them.
        """
        self.assertEqual(ipv6.linkLocalFromMAC(GUEST_MAC), GUEST_LL)
        self.assertEqual(ipv6.interfaceIdentifier(GW_MAC), bytes.fromhex("5894effffee40cdd"))
        self.assertEqual(ipv6.solicitedNode(GUEST_LL),
                         bytes.fromhex("ff0200000000000000000001ffe40cee"))
        self.assertEqual(ipv6.multicastMAC(ipv6.solicitedNode(GUEST_LL)), CAPTURED_DAD[:6])
        self.assertTrue(ipv6.isLinkLocal(GUEST_LL))
        self.assertFalse(ipv6.isLinkLocal(GUEST6))
        self.assertTrue(ipv6.isMulticast(ipv6.ALL_NODES))
        self.assertFalse(ipv6.isMulticast(GUEST6))

    @FUZZ
    @given(st.binary(max_size=120), st.integers(0, 20))
    def test_parseFuzz(self, data, offset):
        """
        Random bytes raise nothing but L{ipv6.IPv6Error}.
        """
        try:
            ipv6.parse(data, offset)
        except ipv6.IPv6Error:
            pass

    @FUZZ
    @given(st.sampled_from([CAPTURED_MLD, CAPTURED_SOLICIT, CAPTURED_DAD]),
           st.lists(st.tuples(st.integers(14, 117), st.integers(0, 255)), max_size=6))
    def test_parseMutated(self, frame, changes):
        """
        Captured frames with bytes changed raise nothing but
        L{ipv6.IPv6Error}, and what parses stays inside the frame.
        """
        data = bytearray(frame)
        for i, value in changes:
            if i < len(data):
                data[i] = value
        try:
            p = ipv6.parse(bytes(data))
        except ipv6.IPv6Error:
            return
        self.assertLessEqual(len(p.packet), len(data) - 14)


class ICMPv6Tests(SynchronousTestCase):
    """
    ICMPv6 echo and errors, checked against dpkt.
    """

    def test_parseCaptured(self):
        """
        The captured router solicitation parses to type 133 and its
        source link-layer option.
        """
        p = ipv6.parse(CAPTURED_RS)
        icmpType, code, body = icmpv6.parse(p.src, p.dst, p.payload)
        self.assertEqual((icmpType, code), (icmpv6.ROUTER_SOLICITATION, 0))
        self.assertEqual(icmpv6.parseRouterSolicitation(body).sourceLinkLayer, GUEST_MAC)

    def test_parseChecksum(self):
        """
        A wrong checksum is refused unless verification is off.
        """
        p = ipv6.parse(CAPTURED_RS)
        bad = bytearray(p.payload)
        bad[2] ^= 1
        with self.assertRaises(icmpv6.ICMPv6Error) as ctx:
            icmpv6.parse(p.src, p.dst, bytes(bad))
        self.assertEqual(ctx.exception.reason, "icmpv6.checksum")
        self.assertEqual(icmpv6.parse(p.src, p.dst, bytes(bad), verify=False)[0], 133)
        self.assertRaises(icmpv6.ICMPv6Error, icmpv6.parse, p.src, p.dst, b"\x80\x00\x00")

    def test_echo(self):
        """
        An echo request and reply are what dpkt builds.
        """
        for reply in (False, True):
            ours = icmpv6.echo(GUEST6, GW6, 0x1234, 7, b"ping data", reply=reply)
            theirs = dpkt.icmp6.ICMP6(type=129 if reply else 128,
                                      data=dpkt.icmp6.ICMP6.Echo(id=0x1234, seq=7, data=b"ping data"))
            packet = dpkt.ip6.IP6(src=GUEST6, dst=GW6, nxt=58, hlim=64, data=theirs)
            packet.plen = len(bytes(theirs))
            self.assertEqual(ours, bytes(packet)[40:])
        ident, seq, data = icmpv6.parseEcho(icmpv6.parse(GUEST6, GW6, ours)[2])
        self.assertEqual((ident, seq, bytes(data)), (0x1234, 7, b"ping data"))
        self.assertRaises(icmpv6.ICMPv6Error, icmpv6.parseEcho, b"\x00\x01")

    def test_errors(self):
        """
        Destination unreachable, packet too big and time exceeded quote the
        invoking packet; dpkt reads their fields and the quoted header back.
        """
        invoking = bytes(ipv6.parse(CAPTURED_SOLICIT).packet)
        cases = [
            (icmpv6.destinationUnreachable(GW6, GUEST6, icmpv6.PORT_UNREACHABLE, invoking),
             1, 4, "unreach"),
            (icmpv6.packetTooBig(GW6, GUEST6, 1400, invoking), 2, 0, "toobig"),
            (icmpv6.timeExceeded(GW6, GUEST6, icmpv6.HOP_LIMIT_EXCEEDED, invoking), 3, 0, "timeexceed"),
            (icmpv6.parameterProblem(GW6, GUEST6, 0, 6, invoking), 4, 0, "paramprob"),
        ]
        for message, icmpType, code, attr in cases:
            self.assertEqual(referenceChecksum(GW6, GUEST6, 58, message[:2] + b"\x00\x00" + message[4:]),
                             struct.unpack("!H", message[2:4])[0])
            parsed = dpkt.icmp6.ICMP6(message)
            self.assertEqual((parsed.type, parsed.code), (icmpType, code))
            inner = getattr(parsed, attr)
            self.assertEqual(inner.ip6.src, GUEST_LL)
            self.assertEqual(bytes(message[8:]), invoking)
        self.assertEqual(dpkt.icmp6.ICMP6(cases[1][0]).toobig.mtu, 1400)
        self.assertEqual(dpkt.icmp6.ICMP6(cases[3][0]).paramprob.ptr, 6)

    def test_errorQuoteBounded(self):
        """
        An error about a big packet quotes only what keeps it in 1280 bytes.
        """
        message = icmpv6.packetTooBig(GW6, GUEST6, 1280, b"\x60" + b"\x00" * 5000)
        self.assertEqual(40 + len(message), 1280)


# A router advertisement from the gateway's link-local address to all nodes,
# laid out from RFC 4861 4.2, 4.6 and RFC 8106 5: hop limit 64, flags O,
# router lifetime 1800, reachable 0, retrans 0; source link-layer option;
# prefix fd00:192:168:127::/64 on-link and autonomous, valid 86400,
# preferred 14400; MTU 1500; RDNSS (lifetime 1800) with the gateway;
# DNSSL (lifetime 1800) "containers.internal" padded to 8 bytes.
GOLDEN_RA = bytes.fromhex(
    "8600" "0000" "40" "40" "0708" "00000000" "00000000"
    "0101" "5a94efe40cdd"
    "0304" "40" "c0" "00015180" "00003840" "00000000" "fd000192016801270000000000000000"
    "0501" "0000" "000005dc"
    "1903" "0000" "00000708" "fd000192016801270000000000000001"
    "1f04" "0000" "00000708"
    "0a636f6e7461696e657273" "08696e7465726e616c" "00" "000000")


class NeighborDiscoveryTests(SynchronousTestCase):
    """
    Router and neighbor messages, both ways.
    """

    def routerAdvertisement(self):
        options = icmpv6.NDOptions(
            sourceLinkLayer=GW_MAC,
            prefixes=[icmpv6.PrefixInformation(GW6[:8] + b"\x00" * 8, 64)],
            mtu=1500,
            rdnss=(1800, [GW6]),
            dnssl=(1800, ["containers.internal"]),
        )
        return icmpv6.RouterAdvertisement(flags=icmpv6.RA_OTHER, options=options)

    def test_buildRouterAdvertisement(self):
        """
        The builder lays out the golden advertisement, checksum included.
        """
        ours = icmpv6.buildRouterAdvertisement(GW_LL, ipv6.ALL_NODES, self.routerAdvertisement())
        self.assertEqual(ours, withChecksum(GW_LL, ipv6.ALL_NODES, GOLDEN_RA))

    def test_parseRouterAdvertisement(self):
        """
        The golden advertisement parses to its fields.
        """
        message = withChecksum(GW_LL, ipv6.ALL_NODES, GOLDEN_RA)
        icmpType, code, body = icmpv6.parse(GW_LL, ipv6.ALL_NODES, message)
        self.assertEqual(icmpType, icmpv6.ROUTER_ADVERTISEMENT)
        ra = icmpv6.parseRouterAdvertisement(body)
        self.assertEqual((ra.curHopLimit, ra.flags, ra.routerLifetime), (64, 0x40, 1800))
        o = ra.options
        self.assertEqual(o.sourceLinkLayer, GW_MAC)
        self.assertEqual(o.prefixes, [icmpv6.PrefixInformation(GW6[:8] + b"\x00" * 8, 64, 0xC0,
                                                               86400, 14400)])
        self.assertEqual((o.mtu, o.rdnss, o.dnssl),
                         (1500, (1800, [GW6]), (1800, ["containers.internal"])))

    def test_severalServersAndDomains(self):
        """
        RDNSS with two servers and DNSSL with two names round-trip.
        """
        options = icmpv6.NDOptions(rdnss=(60, [GW6, GUEST6]), dnssl=(60, ["a.example", "b"]))
        data = icmpv6.buildOptions(options)
        self.assertEqual(len(data) % 8, 0)
        parsed = icmpv6.parseOptions(data)
        self.assertEqual(parsed.rdnss, (60, [GW6, GUEST6]))
        self.assertEqual(parsed.dnssl, (60, ["a.example", "b"]))

    def test_parseCapturedDAD(self):
        """
        The captured DAD solicitation: from ::, target its own link-local
        address, the unknown nonce option skipped.
        """
        p = ipv6.parse(CAPTURED_DAD)
        self.assertEqual(p.src, ipv6.UNSPECIFIED)
        icmpType, code, body = icmpv6.parse(p.src, p.dst, p.payload)
        self.assertEqual(icmpType, icmpv6.NEIGHBOR_SOLICITATION)
        ns = icmpv6.parseNeighborMessage(body)
        self.assertEqual(ns.target, GUEST_LL)
        self.assertIsNone(ns.options.sourceLinkLayer)

    def test_neighborSolicitation(self):
        """
        A solicitation for the gateway, laid out from RFC 4861 4.3.
        """
        golden = bytes.fromhex("8700" "0000" "00000000") + GW6 + bytes.fromhex("0101") + GUEST_MAC
        dst = ipv6.solicitedNode(GW6)
        ours = icmpv6.buildNeighborSolicitation(GUEST_LL, dst, GW6, GUEST_MAC)
        self.assertEqual(ours, withChecksum(GUEST_LL, dst, golden))
        ns = icmpv6.parseNeighborMessage(icmpv6.parse(GUEST_LL, dst, ours)[2])
        self.assertEqual((ns.target, ns.flags, ns.options.sourceLinkLayer), (GW6, 0, GUEST_MAC))

    def test_neighborAdvertisement(self):
        """
        A solicited advertisement (router, solicited, override) with the
        target link-layer option, laid out from RFC 4861 4.4.
        """
        golden = bytes.fromhex("8800" "0000" "e0000000") + GW6 + bytes.fromhex("0201") + GW_MAC
        flags = icmpv6.NA_ROUTER | icmpv6.NA_SOLICITED | icmpv6.NA_OVERRIDE
        ours = icmpv6.buildNeighborAdvertisement(GW6, GUEST6, GW6, flags, GW_MAC)
        self.assertEqual(ours, withChecksum(GW6, GUEST6, golden))
        na = icmpv6.parseNeighborMessage(icmpv6.parse(GW6, GUEST6, ours)[2])
        self.assertEqual((na.target, na.flags, na.options.targetLinkLayer), (GW6, 0xE0, GW_MAC))

    def test_routerSolicitationBuild(self):
        """
        A built solicitation is the captured one's ICMPv6 message.
        """
        self.assertEqual(icmpv6.buildRouterSolicitation(GUEST_LL, ipv6.ALL_ROUTERS, GUEST_MAC),
                         CAPTURED_RS[54:])

    def test_optionErrors(self):
        """
        Malformed options raise L{icmpv6.ICMPv6Error} with their reason.
        """
        cases = [
            (b"\x01\x00" + b"\x00" * 6, "ndp.optionZeroLength"),
            (b"\x01\x02" + b"\x00" * 6, "ndp.optionLength"),
            (b"\x01", "ndp.optionShort"),
            (b"\x01\x02" + b"\x00" * 14, "ndp.linkLayerLength"),
            (b"\x03\x01" + b"\x00" * 6, "ndp.prefixLength"),
            (b"\x19\x01" + b"\x00" * 6, "ndp.rdnssLength"),
            (b"\x1f\x01" + b"\x00" * 6, "ndp.dnsslLength"),
            (b"\x1f\x02" + b"\x00" * 6 + b"\x07ab\x00\x00\x00\x00\x00", "ndp.dnsslName"),
            (b"\x1f\x02" + b"\x00" * 6 + b"\xc0\x0c\x00\x00\x00\x00\x00\x00", "ndp.dnsslName"),
        ]
        for data, reason in cases:
            with self.assertRaises(icmpv6.ICMPv6Error, msg=data.hex()) as ctx:
                icmpv6.parseOptions(data)
            self.assertEqual(ctx.exception.reason, reason, data.hex())
        with self.assertRaises(icmpv6.ICMPv6Error) as ctx:
            icmpv6.parseNeighborMessage(b"\x00" * 4 + ipv6.ALL_NODES)
        self.assertEqual(ctx.exception.reason, "ndp.multicastTarget")

    def test_unknownOptionSkipped(self):
        """
        An option of an unknown type is skipped, the ones after it read.
        """
        data = b"\x0e\x01" + b"\x00" * 6 + b"\x01\x01" + GUEST_MAC
        self.assertEqual(icmpv6.parseOptions(data).sourceLinkLayer, GUEST_MAC)

    @FUZZ
    @given(st.binary(max_size=120))
    def test_parsersFuzz(self, data):
        """
        Every NDP parser raises nothing but L{icmpv6.ICMPv6Error} for any
        bytes.
        """
        for parser in (icmpv6.parseOptions, icmpv6.parseRouterSolicitation,
                       icmpv6.parseRouterAdvertisement, icmpv6.parseNeighborMessage,
                       icmpv6.parseEcho):
            try:
                parser(data)
            except icmpv6.ICMPv6Error:
                pass
        try:
            icmpv6.parse(GUEST_LL, GW_LL, data)
        except icmpv6.ICMPv6Error:
            pass

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, 150), st.integers(0, 255)), max_size=4))
    def test_raMutated(self, changes):
        """
        The golden advertisement with bytes changed parses or raises
        L{icmpv6.ICMPv6Error}, nothing else.
        """
        data = bytearray(GOLDEN_RA[4:])
        for i, value in changes:
            if i < len(data):
                data[i] = value
        try:
            icmpv6.parseRouterAdvertisement(bytes(data))
        except icmpv6.ICMPv6Error:
            pass


class DHCPv6Tests(SynchronousTestCase):
    """
    DHCPv6 messages, both ways.
    """

    def test_parseInformationRequest(self):
        """
        dhclient's captured information-request.
        """
        message = dhcpv6.parse(ipv6.parse(CAPTURED_INFO_REQUEST).payload[8:])
        self.assertEqual((message.msgType, message.transactionId),
                         (dhcpv6.INFORMATION_REQUEST, 0x7B23C6))
        self.assertEqual(message.clientID, bytes.fromhex("000300015a94efe40cee"))
        self.assertEqual(dhcpv6.duidMAC(message.clientID), GUEST_MAC)
        self.assertEqual(message.requestedOptions(), [23, 24, 39, 31])
        self.assertEqual(message.get(dhcpv6.OPT_ELAPSED_TIME), b"\x00\x00")
        self.assertIsNone(message.serverID)
        self.assertEqual(message.identityAssociations(), [])

    def test_parseSolicit(self):
        """
        dhclient's captured solicit: a DUID-LLT and one IA_NA.
        """
        message = dhcpv6.parse(ipv6.parse(CAPTURED_SOLICIT).payload[8:])
        self.assertEqual(message.msgType, dhcpv6.SOLICIT)
        self.assertEqual(dhcpv6.duidMAC(message.clientID), GUEST_MAC)
        [ia] = message.identityAssociations()
        self.assertEqual((ia.iaid, ia.t1, ia.t2, ia.addresses, ia.status()),
                         (0xEFE40CEE, 3600, 5400, [], None))

    def test_roundTrip(self):
        """
        Parsing what L{dhcpv6.build} made gives the same bytes back.
        """
        raw = bytes(ipv6.parse(CAPTURED_SOLICIT).payload[8:])
        self.assertEqual(dhcpv6.parse(raw).toBytes(), raw)

    def test_buildReply(self):
        """
        A reply with server id, an IA_NA holding one address, DNS servers
        and search list, laid out from RFC 8415 21 and RFC 3646.
        """
        ia = dhcpv6.IdentityAssociation(
            0xEFE40CEE, 1800, 2880, [dhcpv6.IAAddress(GUEST6, 3600, 7200)])
        message = dhcpv6.Message(dhcpv6.REPLY, 0x64979E)
        message.add(dhcpv6.OPT_SERVERID, dhcpv6.duidLL(GW_MAC))
        message.add(dhcpv6.OPT_IA_NA, ia.toBytes())
        message.add(dhcpv6.OPT_DNS_SERVERS, dhcpv6.dnsServers([GW6]))
        message.add(dhcpv6.OPT_DOMAIN_LIST, dhcpv6.domainList(["example.org"]))
        golden = bytes.fromhex(
            "07" "64979e"
            "0002" "000a" "0003" "0001" "5a94efe40cdd"
            "0003" "0028" "efe40cee" "00000708" "00000b40"
            "0005" "0018" "fd000192016801270000000000000002" "00000e10" "00001c20"
            "0017" "0010" "fd000192016801270000000000000001"
            "0018" "000d" "076578616d706c65" "036f7267" "00")
        self.assertEqual(message.toBytes(), golden)
        back = dhcpv6.parse(golden)
        [ia2] = back.identityAssociations()
        self.assertEqual(ia2.addresses[0].address, GUEST6)
        self.assertEqual((ia2.addresses[0].preferredLifetime, ia2.addresses[0].validLifetime),
                         (3600, 7200))
        self.assertEqual(dhcpv6.parseDNSServers(back.get(dhcpv6.OPT_DNS_SERVERS)), [GW6])
        self.assertEqual(dhcpv6.parseDomainList(back.get(dhcpv6.OPT_DOMAIN_LIST)), ["example.org"])

    def test_statusCode(self):
        """
        A status code inside an IA_NA is read back.
        """
        ia = dhcpv6.IdentityAssociation(
            1, options=[(dhcpv6.OPT_STATUS_CODE,
                         dhcpv6.statusCode(dhcpv6.STATUS_NO_ADDRS_AVAIL, "none left"))])
        self.assertEqual(dhcpv6.parseIANA(ia.toBytes()).status(),
                         (dhcpv6.STATUS_NO_ADDRS_AVAIL, "none left"))

    def test_duids(self):
        """
        The MAC is found in DUID-LL and DUID-LLT, not in DUID-EN.
        """
        self.assertEqual(dhcpv6.duidMAC(dhcpv6.duidLL(GW_MAC)), GW_MAC)
        self.assertEqual(dhcpv6.duidMAC(bytes.fromhex("0001000132a14c0e") + GUEST_MAC), GUEST_MAC)
        self.assertIsNone(dhcpv6.duidMAC(bytes.fromhex("0002000000090102030405")))

    def test_errors(self):
        """
        Malformed messages raise L{dhcpv6.DHCPv6Error} with their reason.
        """
        cases = [
            (b"\x0b\x00\x00", "dhcpv6.short"),
            (b"\x0c\x00\x00\x00", "dhcpv6.relay"),
            (b"\x63\x00\x00\x00", "dhcpv6.unknownType"),
            (b"\x0b\x00\x00\x00\x00\x01\x00", "dhcpv6.optionShort"),
            (b"\x0b\x00\x00\x00\x00\x01\x00\x05\x00", "dhcpv6.optionLength"),
            (b"\x0b\x00\x00\x00\x00\x01\x00\x01\x00", "dhcpv6.duidLength"),
        ]
        for data, reason in cases:
            with self.assertRaises(dhcpv6.DHCPv6Error) as ctx:
                dhcpv6.parse(data)
            self.assertEqual(ctx.exception.reason, reason)
        self.assertRaises(dhcpv6.DHCPv6Error, dhcpv6.parseIANA, b"\x00" * 11)
        self.assertRaises(dhcpv6.DHCPv6Error, dhcpv6.parseDNSServers, b"\x00" * 15)
        self.assertRaises(dhcpv6.DHCPv6Error, dhcpv6.parseDomainList, b"\x03ab")
        self.assertRaises(dhcpv6.DHCPv6Error, dhcpv6.Message(11, 0, [(6, b"\x00")]).requestedOptions)

    @FUZZ
    @given(st.binary(max_size=160))
    def test_parseFuzz(self, data):
        """
        Any bytes raise nothing but L{dhcpv6.DHCPv6Error}, in the message and
        in every option reader.
        """
        for parser in (dhcpv6.parseIANA, dhcpv6.parseDNSServers, dhcpv6.parseDomainList,
                       dhcpv6.parseStatusCode):
            try:
                parser(data)
            except dhcpv6.DHCPv6Error:
                pass
        try:
            message = dhcpv6.parse(data)
        except dhcpv6.DHCPv6Error:
            return
        try:
            message.requestedOptions()
            message.identityAssociations()
        except dhcpv6.DHCPv6Error:
            pass

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=5))
    def test_solicitMutated(self, changes):
        """
        The captured solicit with bytes changed parses or raises
        L{dhcpv6.DHCPv6Error}.
        """
        data = bytearray(ipv6.parse(CAPTURED_SOLICIT).payload[8:])
        for i, value in changes:
            data[i % len(data)] = value
        try:
            message = dhcpv6.parse(bytes(data))
            message.identityAssociations()
            message.requestedOptions()
        except dhcpv6.DHCPv6Error:
            pass
