"""
Tests for L{gvtwisted.services.nat_icmp}: the guest's pings through host
ICMP sockets, and never a reply the destination did not send.

Real pings go only to 127.0.0.1 in this process, and to a silent veth inside
network namespaces that the tests make (the network rule).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.services.nat_icmp import (
    MODE_DATAGRAM, MODE_NONE, MODE_RAW, ICMPNAT, availableMode,
)
from gvtwisted.services.nat_udp import SocketReader
from gvtwisted.wire import icmp, ipv4
from gvtwisted.wire.checksum import verifies

from tests.e2e.harness import Namespace, environment
from tests.test_nat_udp import GATEWAY_MAC, GUEST, GUEST_MAC, HOST, FakeNetwork

BLACKHOLE = socket.inet_aton("10.255.0.2")


def echoArgs(src, dst, ident, seq, data=b"abcdefgh", icmpType=icmp.ECHO_REQUEST):
    """
    The arguments C{icmpReceived} gets for a guest's echo request, parsed
    from a real frame.
    """
    body = icmp.build(icmpType, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + data)
    frame = (GATEWAY_MAC + GUEST_MAC + b"\x08\x00"
             + ipv4.buildHeader(src, dst, ipv4.PROTO_ICMP, len(body)) + body)
    packet = ipv4.parse(frame)
    icmpType, code, rest = icmp.parse(packet.payload)
    return packet, icmpType, code, rest


def echoReply(src, natIdent, seq, data, replyType=icmp.ECHO_REPLY, corrupt=False):
    """
    What a raw ICMP socket reads when C{src} answers: IP header included.
    """
    body = bytearray(icmp.build(replyType, 0, natIdent + seq.to_bytes(2, "big") + data))
    if corrupt:
        body[-1] ^= 0xFF
    return ipv4.buildHeader(src, socket.inet_aton("10.0.0.1"), ipv4.PROTO_ICMP, len(body)) + bytes(body)


class FakeRawSocket:
    """
    Stands for the raw ICMP socket: records what is sent, reads what the
    test queued.
    """

    def __init__(self):
        self.sent = []
        self.incoming = []
        self.closed = False

    def fileno(self):
        return -1 if self.closed else 1000

    def sendto(self, data, address):
        self.sent.append((bytes(data), address))
        return len(data)

    def recv(self, size):
        if not self.incoming:
            raise BlockingIOError()
        return self.incoming.pop(0)

    def close(self):
        self.closed = True


class RawModeTests(SynchronousTestCase):
    """
    Raw mode with a fake socket: identifiers rewritten per flow, and only
    real answers from the pinged host passed on.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.network = FakeNetwork(self.reactor)
        self.counters = self.network.counters
        self.nat = ICMPNAT(self.reactor, self.network, mode=MODE_RAW)
        self.addCleanup(self.nat.stop)
        self.raw = FakeRawSocket()
        self.nat._raw = self.raw
        self.nat._rawReader = SocketReader(self.reactor, self.raw, self.nat._readRaw)
        self.reactor.addReader(self.nat._rawReader)

    def test_requestRewritten(self):
        """
        An echo request to the host address leaves toward 127.0.0.1 with an
        identifier of the NAT's choosing, the guest's sequence and data, and
        a right checksum.
        """
        self.nat.icmpReceived(*echoArgs(GUEST, HOST, 0x1234, 7, b"payload!"))
        ((message, address),) = self.raw.sent
        self.assertEqual(address, ("127.0.0.1", 0))
        self.assertEqual(message[0], icmp.ECHO_REQUEST)
        self.assertTrue(verifies(message))
        self.assertEqual(message[6:8], (7).to_bytes(2, "big"))
        self.assertEqual(message[8:], b"payload!")
        (flow,) = self.nat._flows.values()
        self.assertEqual(message[4:6], flow.natIdent)
        self.assertEqual(self.counters.get("nat.icmp.echoRequestsOut"), 1)

    def test_uniqueIdentifiers(self):
        """
        Two guests using the same identifier toward the same destination
        get different identifiers on the host, so replies can be told apart.
        """
        other = socket.inet_aton("192.168.127.3")
        self.nat.icmpReceived(*echoArgs(GUEST, HOST, 0x1234, 1))
        self.nat.icmpReceived(*echoArgs(other, HOST, 0x1234, 1))
        idents = {m[4:6] for m, _ in self.raw.sent}
        self.assertEqual(len(idents), 2)
        self.assertEqual(self.nat.flowCount(), 2)

    def test_replyRestoresIdentifier(self):
        """
        A reply from the pinged host with the flow's identifier reaches the
        guest from the address it pinged, with its own identifier,
        sequence and data, and a right checksum.
        """
        self.nat.icmpReceived(*echoArgs(GUEST, HOST, 0x1234, 7, b"payload!"))
        (flow,) = self.nat._flows.values()
        self.raw.incoming.append(echoReply(socket.inet_aton("127.0.0.1"), flow.natIdent, 7,
                                           b"payload!"))
        self.nat._rawReader.doRead()
        ((src, dst, proto, message),) = self.network.ipv4Sent
        self.assertEqual((src, dst, proto), (HOST, GUEST, ipv4.PROTO_ICMP))
        self.assertEqual(message[0:2], bytes((icmp.ECHO_REPLY, 0)))
        self.assertEqual(message[4:], (0x1234).to_bytes(2, "big") + (7).to_bytes(2, "big")
                         + b"payload!")
        self.assertTrue(verifies(message))
        self.assertEqual(self.counters.get("nat.icmp.echoRepliesIn"), 1)

    def test_nothingForged(self):
        """
        Nothing reaches the guest unless its destination answered: not for
        a request left unanswered, not for a reply from another host, with
        another identifier, of another type, or with a bad checksum.
        """
        self.nat.icmpReceived(*echoArgs(GUEST, HOST, 0x1234, 7))
        (flow,) = self.nat._flows.values()
        self.reactor.advance(30)
        self.assertEqual(self.network.ipv4Sent, [])
        otherIdent = ((int.from_bytes(flow.natIdent, "big") + 1) & 0xFFFF).to_bytes(2, "big")
        self.raw.incoming += [
            echoReply(socket.inet_aton("127.0.0.2"), flow.natIdent, 7, b"abcdefgh"),
            echoReply(socket.inet_aton("127.0.0.1"), otherIdent, 7, b"abcdefgh"),
            echoReply(socket.inet_aton("127.0.0.1"), flow.natIdent, 7, b"abcdefgh",
                      replyType=icmp.ECHO_REQUEST),
            echoReply(socket.inet_aton("127.0.0.1"), flow.natIdent, 7, b"abcdefgh",
                      corrupt=True),
            b"\x45\x00",
        ]
        self.nat._rawReader.doRead()
        self.assertEqual(self.network.ipv4Sent, [])
        self.assertEqual(self.counters.get("drop.nat.icmp.replyChecksum"), 1)

    def test_capAndExpiry(self):
        """
        At the cap the least recently used flow gives way, and its
        identifier is freed; idle flows expire, and with the last one the
        raw socket is closed.
        """
        nat = ICMPNAT(self.reactor, self.network, mode=MODE_RAW, maxFlows=2, idleTimeout=60.0)
        raw = FakeRawSocket()
        nat._raw = raw
        nat._rawReader = SocketReader(self.reactor, raw, nat._readRaw)
        self.reactor.addReader(nat._rawReader)
        for ident in (1, 2, 3):
            nat.icmpReceived(*echoArgs(GUEST, HOST, ident, 1))
        self.assertEqual(nat.flowCount(), 2)
        self.assertEqual(sorted(key[1] for key in nat._flows), [b"\0\2", b"\0\3"])
        self.assertEqual(len(nat._byIdent), 2)
        self.assertEqual(self.counters.get("nat.icmp.flowsEvicted"), 1)
        self.reactor.advance(45)
        nat.icmpReceived(*echoArgs(GUEST, HOST, 3, 2))
        self.reactor.advance(30)
        self.assertEqual([key[1] for key in nat._flows], [b"\0\3"])
        self.reactor.advance(60)
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(nat._byIdent, {})
        self.assertTrue(raw.closed)
        self.assertIsNone(nat._raw)
        self.assertNotIn(nat._rawReader, self.reactor.readers)
        self.assertEqual(self.counters.get("nat.icmp.flowsExpired"), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class PolicyTests(SynchronousTestCase):
    """
    What is refused, dropped or counted before any socket is opened.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.network = FakeNetwork(self.reactor)
        self.counters = self.network.counters

    def test_hostLoopbackDisabled(self):
        """
        With host loopback off, a ping to the host address is answered with
        an admin-prohibited unreachable, never with an echo reply.
        """
        nat = ICMPNAT(self.reactor, self.network, hostLoopback=False, mode=MODE_RAW)
        nat.icmpReceived(*echoArgs(GUEST, HOST, 1, 1))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual([e[4:] for e in self.network.icmpErrors],
                         [(icmp.DEST_UNREACHABLE, icmp.ADMIN_PROHIBITED)])
        self.assertEqual(self.network.ipv4Sent, [])
        self.assertEqual(self.counters.get("drop.nat.icmp.hostLoopbackDisabled"), 1)

    def test_ec2Refused(self):
        """
        Pings to 169.254.169.254 are refused unless metadata access is on.
        """
        nat = ICMPNAT(self.reactor, self.network, mode=MODE_RAW)
        nat.icmpReceived(*echoArgs(GUEST, socket.inet_aton("169.254.169.254"), 1, 1))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.counters.get("drop.nat.icmp.linkLocal"), 1)

    def test_broadcastAndOtherTypes(self):
        """
        Broadcast and multicast pings, and ICMP messages other than echo
        requests, are counted and dropped without an answer.
        """
        nat = ICMPNAT(self.reactor, self.network, mode=MODE_RAW)
        nat.icmpReceived(*echoArgs(GUEST, b"\xff\xff\xff\xff", 1, 1))
        nat.icmpReceived(*echoArgs(GUEST, socket.inet_aton("224.0.0.1"), 1, 1))
        nat.icmpReceived(*echoArgs(GUEST, HOST, 1, 1, icmpType=icmp.ECHO_REPLY))
        nat.icmpReceived(*echoArgs(GUEST, HOST, 1, 1, icmpType=icmp.TIME_EXCEEDED))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.network.icmpErrors, [])
        self.assertEqual(self.counters.get("drop.nat.icmp.broadcast"), 1)
        self.assertEqual(self.counters.get("drop.nat.icmp.multicast"), 1)
        self.assertEqual(self.counters.get("drop.nat.icmp.unsupportedType"), 2)

    def test_short(self):
        """
        An echo request without room for identifier and sequence is counted
        and dropped, without an exception.
        """
        nat = ICMPNAT(self.reactor, self.network, mode=MODE_RAW)
        packet = echoArgs(GUEST, HOST, 1, 1)[0]
        nat.icmpReceived(packet, icmp.ECHO_REQUEST, 0, memoryview(b"\x00\x01"))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.counters.get("drop.nat.icmp.short"), 1)

    def test_noSocket(self):
        """
        Without any kind of ICMP socket, pings are counted and dropped.
        """
        nat = ICMPNAT(self.reactor, self.network, mode=MODE_NONE)
        nat.icmpReceived(*echoArgs(GUEST, HOST, 1, 1))
        nat.icmpReceived(*echoArgs(GUEST, HOST, 1, 2))
        self.assertEqual(nat.flowCount(), 0)
        self.assertEqual(self.network.ipv4Sent, [])
        self.assertEqual(self.counters.get("drop.nat.icmp.noSocket"), 2)


class RealPingTests(TestCase):
    """
    A real ping to the host's 127.0.0.1, through whichever ICMP socket this
    process may open.
    """

    timeout = 10

    if availableMode() == MODE_NONE:
        skip = "no ICMP socket: neither ping_group_range nor CAP_NET_RAW allows one"

    @defer.inlineCallbacks
    def test_echoToHostAddress(self):
        """
        An echo request to the host address gets 127.0.0.1's real reply,
        with the guest's identifier, sequence and data, from the host
        address.
        """
        network = FakeNetwork(reactor)
        nat = ICMPNAT(reactor, network)
        self.addCleanup(nat.stop)
        d = network.nextSend()
        nat.icmpReceived(*echoArgs(GUEST, HOST, 0xBEEF, 42, b"real ping data"))
        src, dst, proto, message = yield d
        self.assertEqual((src, dst, proto), (HOST, GUEST, ipv4.PROTO_ICMP))
        self.assertEqual(message[0], icmp.ECHO_REPLY)
        self.assertTrue(verifies(message))
        self.assertEqual(message[4:], (0xBEEF).to_bytes(2, "big") + (42).to_bytes(2, "big")
                         + b"real ping data")
        self.assertIn(nat.mode, (MODE_DATAGRAM, MODE_RAW))


# Run inside a test namespace: pings the namespace's 127.0.0.1 (through the
# host address) and a black hole, and prints what the guest would get.
NAMESPACE_SCRIPT = r"""
import json, socket, sys
from twisted.internet import reactor
from gvtwisted.config import NetworkConfig
from gvtwisted.stack.counters import Counters
from gvtwisted.services.nat_icmp import ICMPNAT
from gvtwisted.wire import icmp, ipv4

class Network:
    config = NetworkConfig()
    counters = Counters()
    sent = []
    errors = []
    def sendIPv4(self, src, dst, proto, payload):
        self.sent.append([socket.inet_ntoa(src), socket.inet_ntoa(dst), proto,
                          bytes(payload).hex()])
    def sendICMPError(self, packet, icmpType, code):
        self.errors.append([icmpType, code])
    def sendUDP(self, *args):
        pass
    def linkFor(self, ip):
        return None

network = Network()
nat = ICMPNAT(reactor, network, mode=sys.argv[1])
guest = socket.inet_aton("192.168.127.2")

def echo(dst, ident, seq):
    body = icmp.build(8, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + b"namespace")
    packet = ipv4.parse(b"\0" * 14 + ipv4.buildHeader(guest, socket.inet_aton(dst), 1,
                                                         len(body)) + body)
    icmpType, code, rest = icmp.parse(packet.payload)
    nat.icmpReceived(packet, icmpType, code, rest)

def start():
    for seq in (1, 2, 3):
        echo("192.168.127.254", 0x4242, seq)
        echo(sys.argv[2], 0x4343, seq)

def finish():
    print(json.dumps({"mode": nat.mode, "sent": network.sent, "errors": network.errors,
                      "counters": network.counters.snapshot()}))
    nat.stop()
    reactor.stop()

reactor.callWhenRunning(start)
reactor.callLater(1.5, finish)
reactor.run()
"""


class NamespaceTests(SynchronousTestCase):
    """
    Both socket kinds for real, in a namespace of the test's own: there the
    test may allow datagram ICMP sockets (C{ping_group_range} is per
    namespace) and give pings an address that never answers (a veth pair
    with a silent far end).
    """

    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip = "needs root and ip(8) to make a network namespace"

    def pingInNamespace(self, mode):
        ns = Namespace(self, prefix="gvtnaticmp")
        # A veth pair whose far end has no address, and a static neighbour
        # entry: pings to 10.255.0.2 leave on the wire and nobody answers.
        ns.run("ip", "link", "add", "hole0", "type", "veth", "peer", "name", "hole1")
        ns.run("ip", "addr", "add", "10.255.0.1/24", "dev", "hole0")
        ns.run("ip", "link", "set", "hole0", "up")
        ns.run("ip", "link", "set", "hole1", "up")
        ns.run("ip", "neigh", "add", "10.255.0.2", "lladdr", "02:00:00:00:00:02",
               "dev", "hole0")
        if mode == MODE_DATAGRAM:
            ns.run("sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")
        result = subprocess.run(
            ns.exec(sys.executable, "-c", NAMESPACE_SCRIPT, mode, socket.inet_ntoa(BLACKHOLE)),
            capture_output=True, text=True, timeout=30, env=environment())
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def assertOnlyRealReplies(self, outcome, mode):
        self.assertEqual(outcome["mode"], mode)
        replies = [bytes.fromhex(m) for _, _, _, m in outcome["sent"]]
        self.assertEqual([s[:3] for s in outcome["sent"]],
                         [["192.168.127.254", "192.168.127.2", 1]] * 3)
        for seq, message in enumerate(replies, 1):
            self.assertEqual(message[0], icmp.ECHO_REPLY)
            self.assertTrue(verifies(message))
            self.assertEqual(message[4:], (0x4242).to_bytes(2, "big") + seq.to_bytes(2, "big")
                             + b"namespace")
        self.assertEqual(outcome["counters"].get("nat.icmp.echoRequestsOut"), 6)
        self.assertEqual(outcome["counters"].get("nat.icmp.echoRepliesIn"), 3)

    def test_datagramSockets(self):
        """
        With datagram ICMP sockets allowed, the host address answers with
        the guest's identifier restored, and the black hole gets no reply.
        """
        self.assertOnlyRealReplies(self.pingInNamespace(MODE_DATAGRAM), MODE_DATAGRAM)

    def test_rawSocket(self):
        """
        The same through the raw socket: three real replies, nothing for
        the black hole.
        """
        self.assertOnlyRealReplies(self.pingInNamespace(MODE_RAW), MODE_RAW)
