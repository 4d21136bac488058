"""
Tests for the guest-side helper, C{twistd gvtap-guest}: L{gvtwisted.guest.tuntap},
L{gvtwisted.guest.forwarder}, L{gvtwisted.guest.tap} and C{tap/setup.sh}.

The unit tests run anywhere: a datagram socket pair stands in for the TAP file
descriptor (it keeps message boundaries and answers EAGAIN when full, as a TAP
does), C{StringTransport} for the link and C{Clock} for time.

The real tests need root and /dev/net/tun. Each makes its own network namespace,
runs the helper inside it with C{ip netns exec}, and plays the host on a unix
socket in this process. No traffic leaves loopback or those namespaces, and no
AF_VSOCK socket is ever connected.
"""

import errno
import itertools
import os
import shutil
import socket
import struct
import sys
import tempfile

import dpkt

from twisted.application.service import IService, MultiService
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.guest import forwarder, tap, tuntap
from gvtwisted.link.framing import LE16, FrameDecoder, encodeFrame

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_SH = os.path.join(REPO, "tap", "setup.sh")

GUEST_MAC = bytes.fromhex("5a94efe40cee")
GATEWAY_MAC = bytes.fromhex("5a94efe40cdd")
GUEST_IP = socket.inet_aton("192.168.127.2")
GATEWAY_IP = socket.inet_aton("192.168.127.1")

REQUEST = b"POST /connect HTTP/1.1\r\nHost: gvtap\r\n\r\n"
# What gvproxy v0.8.9 (Go's http.NotFound) answers to a path it does not serve.
GVPROXY_404 = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"X-Content-Type-Options: nosniff\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
               b"Content-Length: 19\r\n\r\n404 page not found\n")


def tcpFrame(payload: bytes, flags: int) -> bytes:
    """
    An Ethernet frame from the guest to the gateway carrying a TCP segment
    with a timestamp option, as the guest's kernel sends them.
    """
    options = b"\x01\x01\x08\x0a" + bytes(8)
    segment = dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=1, flags=flags,
                           off=5 + len(options) // 4, opts=options, data=payload)
    packet = dpkt.ip.IP(src=GUEST_IP, dst=GATEWAY_IP, p=dpkt.ip.IP_PROTO_TCP, data=segment)
    return bytes(dpkt.ethernet.Ethernet(dst=GATEWAY_MAC, src=GUEST_MAC,
                                        type=dpkt.ethernet.ETH_TYPE_IP, data=packet))


def arpRequestFrame():
    """
    A guest's ARP request for the gateway, as the kernel would send it.
    """
    arp = dpkt.arp.ARP(
        op=dpkt.arp.ARP_OP_REQUEST, sha=GUEST_MAC, spa=GUEST_IP,
        tha=b"\0" * 6, tpa=GATEWAY_IP,
    )
    return bytes(
        dpkt.ethernet.Ethernet(
            dst=b"\xff" * 6, src=GUEST_MAC, type=dpkt.ethernet.ETH_TYPE_ARP, data=arp
        )
    )


# ---------------------------------------------------------------------------
# Options


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}: gvforwarder's defaults and flags, and clear usage errors.
    """

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        """
        With no arguments the helper does what gvforwarder does by default:
        vsock CID 2 port 1024, tap0, MAC 5a:94:ef:e4:0c:ee, MTU 1500, and it
        configures the TAP itself.
        """
        options = self.parse()
        self.assertEqual(options["connect"], "vsock:cid=2:port=1024")
        self.assertEqual(options["endpoint"], "vsock:cid=2:port=1024")
        self.assertEqual(options["path"], "/connect")
        self.assertEqual(options["iface"], "tap0")
        self.assertEqual(options["mac"], "5a:94:ef:e4:0c:ee")
        self.assertEqual(options["macBytes"], GUEST_MAC)
        self.assertEqual(options["mtu"], 1500)
        self.assertFalse(options["preexisting"])
        self.assertFalse(options["dhcp"])
        self.assertFalse(options["debug"])
        self.assertEqual(options["stopIfExist"], ["eth0", "ens3", "enp0s1"])

    def test_urlAlias(self):
        """
        C{--url} is gvforwarder's name for C{--connect}, and its vsock URL is
        turned into an endpoint string.
        """
        options = self.parse("--url", "vsock://2:1024/connect")
        self.assertEqual(options["connect"], "vsock://2:1024/connect")
        self.assertEqual(options["endpoint"], "vsock:cid=2:port=1024")
        self.assertEqual(options["path"], "/connect")

    def test_connectUnixURL(self):
        """
        A unix:// URL becomes a unix: endpoint string.
        """
        options = self.parse("--connect", "unix:///run/gvtap.sock")
        self.assertEqual(options["endpoint"], "unix:/run/gvtap.sock")

    def test_flags(self):
        """
        The flags and the other parameters land where makeService reads them.
        """
        options = self.parse(
            "--preexisting", "--dhcp", "--debug", "--iface", "vm1",
            "--mac", "02-00-00-00-00-01", "--mtu", "65520", "--stop-if-exist", "",
        )
        self.assertTrue(options["preexisting"])
        self.assertTrue(options["dhcp"])
        self.assertTrue(options["debug"])
        self.assertEqual(options["iface"], "vm1")
        self.assertEqual(options["macBytes"], bytes.fromhex("020000000001"))
        self.assertEqual(options["mtu"], 65520)
        self.assertEqual(options["stopIfExist"], [])

    def test_mtuBounds(self):
        """
        MTU 68 and 65520 are the smallest and largest accepted; one past either
        end is a usage error that says the range.
        """
        self.assertEqual(self.parse("--mtu", "68")["mtu"], 68)
        self.assertEqual(self.parse("--mtu", "65520")["mtu"], 65520)
        for bad in ("67", "65521", "0", "-1500"):
            e = self.assertRaises(usage.UsageError, self.parse, "--mtu", bad)
            self.assertIn("68..65520", str(e))

    def test_mtuNotANumber(self):
        """
        A non-numeric MTU is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--mtu", "big")

    def test_badMAC(self):
        """
        A malformed or multicast MAC is a usage error naming --mac.
        """
        for bad in ("5a:94:ef:e4:0c", "zz:94:ef:e4:0c:ee", "01:00:5e:00:00:01", ""):
            e = self.assertRaises(usage.UsageError, self.parse, "--mac", bad)
            self.assertIn("--mac", str(e))

    def test_badIface(self):
        """
        An interface name the kernel cannot hold (16 bytes or more) is refused.
        """
        self.assertRaises(usage.UsageError, self.parse, "--iface", "x" * 16)
        self.assertRaises(usage.UsageError, self.parse, "--iface", "")

    def test_badConnect(self):
        """
        An unknown URL scheme or endpoint type is a usage error naming --connect.
        """
        for bad in ("http://host/connect", "nosuchendpoint:foo", "tcp://host/x"):
            e = self.assertRaises(usage.UsageError, self.parse, "--connect", bad)
            self.assertIn("--connect", str(e))


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} wires the options into services without starting them.
    """

    def test_makeService(self):
        """
        The result is an unstarted L{MultiService} holding the guest service,
        whose forwarder connects to the endpoint given and whose settings
        come from the options.
        """
        options = tap.Options()
        options.parseOptions(
            ["--connect", "unix:///tmp/gv.sock", "--iface", "tap7", "--mtu", "9000", "--dhcp"]
        )
        reactor = MemoryReactorClock()
        top = tap.makeService(options, reactor)
        self.assertIsInstance(top, MultiService)
        self.assertTrue(IService.providedBy(top))
        (guest,) = list(top)
        self.assertEqual(guest.iface, "tap7")
        self.assertEqual(guest.mtu, 9000)
        self.assertEqual(guest.mac, GUEST_MAC)
        self.assertIs(guest.dhcp, tap.dhcpCommand)
        self.assertIsInstance(guest.forwarder.endpoint, UNIXClientEndpoint)
        self.assertEqual(guest.forwarder.endpoint._path, "/tmp/gv.sock")
        self.assertIs(guest.forwarder.clock, reactor)
        self.assertFalse(guest.running)
        self.assertEqual(reactor.unixClients, [])


# ---------------------------------------------------------------------------
# URLs and the request


class URLTests(SynchronousTestCase):
    """
    L{forwarder.urlToEndpointString}: gvforwarder URLs to endpoint strings.
    """

    def test_unix(self):
        """
        unix:///path names the socket file; the request path stays /connect.
        """
        self.assertEqual(
            forwarder.urlToEndpointString("unix:///run/user/1000/gv.sock"),
            ("unix:/run/user/1000/gv.sock", "/connect"),
        )

    def test_unixEscapes(self):
        """
        Colons and equals signs in a socket path are escaped, so the endpoint
        parser gives back exactly the path.
        """
        from twisted.internet.endpoints import clientFromString

        s, _ = forwarder.urlToEndpointString("unix:///tmp/a:b=c")
        endpoint = clientFromString(MemoryReactorClock(), s)
        self.assertEqual(endpoint._path, "/tmp/a:b=c")

    def test_tcp(self):
        """
        tcp://HOST:PORT/PATH becomes tcp:host=HOST:port=PORT and keeps the path.
        """
        self.assertEqual(
            forwarder.urlToEndpointString("tcp://127.0.0.1:7777/connect"),
            ("tcp:host=127.0.0.1:port=7777", "/connect"),
        )
        self.assertEqual(
            forwarder.urlToEndpointString("tcp://localhost:80"),
            ("tcp:host=localhost:port=80", "/connect"),
        )

    def test_tcpIPv6(self):
        """
        An IPv6 literal's colons are escaped for the endpoint parser.
        """
        from twisted.internet.endpoints import clientFromString

        s, path = forwarder.urlToEndpointString("tcp://[::1]:7777/connect")
        endpoint = clientFromString(MemoryReactorClock(), s)
        self.assertEqual((endpoint._host, endpoint._port, path), ("::1", 7777, "/connect"))

    def test_vsock(self):
        """
        vsock://CID:PORT/PATH goes through the vsock module and keeps its path.
        """
        self.assertEqual(
            forwarder.urlToEndpointString("vsock://2:1024/connect"),
            ("vsock:cid=2:port=1024", "/connect"),
        )
        self.assertEqual(
            forwarder.urlToEndpointString("vsock://3:2000/other"),
            ("vsock:cid=3:port=2000", "/other"),
        )

    def test_endpointStringPassesThrough(self):
        """
        Anything without :// is already an endpoint string.
        """
        for s in ("unix:/x", "vsock:cid=2:port=1024", "tcp:host=h:port=1"):
            self.assertEqual(forwarder.urlToEndpointString(s), (s, "/connect"))

    def test_bad(self):
        """
        Unknown schemes and URLs missing a part are refused with ValueError.
        """
        for bad in ("ftp://x/y", "tcp://host/connect", "unix://", "", "tcp://h:99999/"):
            self.assertRaises(ValueError, forwarder.urlToEndpointString, bad)

    def test_connectRequest(self):
        """
        The link opens with exactly gvforwarder's request line, a Host header
        and an empty line: no body, nothing else.
        """
        self.assertEqual(forwarder.connectRequest(), REQUEST)
        self.assertEqual(
            forwarder.connectRequest("/other"),
            b"POST /other HTTP/1.1\r\nHost: gvtap\r\n\r\n",
        )


# ---------------------------------------------------------------------------
# The link protocol


class FakeTap:
    """
    The parts of L{tuntap.TapDevice} the link protocol uses, recording calls.
    """

    def __init__(self):
        self.written = []
        self.paused = False
        self.pauses = 0
        self.setReceiver(None)

    def _drop(self, frame):
        self.dropped = getattr(self, "dropped", 0) + 1

    def setReceiver(self, receiver, batchReceiver=None):
        self.frameReceived = self._drop if receiver is None else receiver
        self.framesReceived = None if receiver is None else batchReceiver

    def writeFrame(self, frame):
        self.written.append(bytes(frame))

    def writeFrames(self, frames):
        self.batches = getattr(self, "batches", 0) + 1
        for frame in frames:
            self.writeFrame(frame)

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False


def connectedProtocol(tapDevice=None, owner=None):
    """
    A L{forwarder.GuestLinkProtocol} connected to a L{StringTransport}.
    """
    tapDevice = tapDevice or FakeTap()
    p = forwarder.GuestLinkProtocol(tapDevice, REQUEST)
    factory = protocol.Factory()
    factory.owner = owner
    p.factory = factory
    transport = StringTransport()
    p.makeConnection(transport)
    return p, transport, tapDevice


class GuestLinkProtocolTests(SynchronousTestCase):
    """
    L{forwarder.GuestLinkProtocol} relays frames between the TAP and the host.
    """

    def test_requestFirst(self):
        """
        The first bytes on a new link are the POST request and nothing else.
        """
        _, transport, _ = connectedProtocol()
        self.assertEqual(transport.value(), REQUEST)

    def test_tapFrameGoesOutFramed(self):
        """
        A frame read from the TAP is sent to the host after the request with a
        2-byte little-endian length.
        """
        _, transport, device = connectedProtocol()
        frame = arpRequestFrame()
        device.frameReceived(frame)
        device.frameReceived(b"\x01" * 1514)
        self.assertEqual(
            transport.value(),
            REQUEST + struct.pack("<H", len(frame)) + frame
            + b"\xea\x05" + b"\x01" * 1514,
        )

    def test_hostFramesGoToTap(self):
        """
        Frames from the host become one TAP write each, even when they arrive
        split anywhere, including inside the length header, or several at once.
        """
        p, _, device = connectedProtocol()
        frames = [arpRequestFrame(), b"\x02" * 60, b"\x03" * 1514]
        wire = b"".join(encodeFrame(LE16, f) for f in frames)
        for cut in (1, 2, 3, 61, 65):
            device.written.clear()
            p.dataReceived(wire[:cut])
            p.dataReceived(wire[cut:])
            self.assertEqual(device.written, frames, f"cut at {cut}")
        device.written.clear()
        for i in range(len(wire)):
            p.dataReceived(wire[i : i + 1])
        self.assertEqual(device.written, frames)

    def test_tapBatchGoesOutFramed(self):
        """
        The frames of one TAP read (the device's batch receiver) go out framed,
        in order, behind frames sent one by one.
        """
        _, transport, device = connectedProtocol()
        device.frameReceived(b"\x01" * 60)
        device.framesReceived([b"\x02" * 61, b"\x03" * 62])
        self.assertEqual(
            transport.value(),
            REQUEST + b"\x3c\x00" + b"\x01" * 60 + b"\x3d\x00" + b"\x02" * 61
            + b"\x3e\x00" + b"\x03" * 62,
        )

    def test_hostFramesOfOneReadInOneCall(self):
        """
        The frames of one link read reach a device that takes batches in one
        C{writeFrames} call.
        """
        p, _, device = connectedProtocol()
        frames = [b"\x02" * 60, b"\x03" * 1514, b"\x04" * 70]
        p.dataReceived(b"".join(encodeFrame(LE16, f) for f in frames))
        self.assertEqual(device.written, frames)
        self.assertEqual(device.batches, 1)

    def test_badLengthClosesLink(self):
        """
        A zero length breaks the framing: the link is dropped, frames before
        it are still delivered.
        """
        p, transport, device = connectedProtocol()
        p.dataReceived(encodeFrame(LE16, b"\x04" * 60) + b"\0\0" + b"junk")
        self.assertEqual(device.written, [b"\x04" * 60])
        self.assertTrue(transport.disconnecting)

    def test_producerRegistered(self):
        """
        The TAP is the transport's streaming producer: when the transport's
        buffer is full the TAP stops being read, and reading resumes after.
        """
        _, transport, device = connectedProtocol()
        self.assertTrue(transport.streaming)
        transport.producer.pauseProducing()
        self.assertTrue(device.paused)
        transport.producer.resumeProducing()
        self.assertFalse(device.paused)

    def test_connectionLostDetaches(self):
        """
        After the link is gone, TAP frames are no longer sent on it, a pause
        it left behind is undone, and a late pause from it is ignored.
        """
        p, transport, device = connectedProtocol()
        transport.producer.pauseProducing()
        producer = transport.producer
        before = transport.value()
        p.connectionLost(Failure(error.ConnectionDone()))
        self.assertFalse(device.paused)
        device.frameReceived(b"\x05" * 60)
        self.assertEqual(transport.value(), before)
        self.assertEqual(device.dropped, 1)
        producer.stopProducing()
        producer.pauseProducing()
        self.assertFalse(device.paused)

    def test_newerLinkKeepsReceiver(self):
        """
        When an old link's loss is reported after a new link took the TAP, the
        new link keeps receiving TAP frames.
        """
        device = FakeTap()
        old, _, _ = connectedProtocol(device)
        new, transport, _ = connectedProtocol(device)
        old.connectionLost(Failure(error.ConnectionDone()))
        device.frameReceived(b"\x06" * 60)
        self.assertTrue(transport.value().endswith(b"\x06" * 60))


# ---------------------------------------------------------------------------
# Reconnection


class FakeEndpoint:
    """
    A client endpoint whose attempts the test completes by hand.
    """

    def __init__(self):
        self.attempts = []
        self.cancelled = 0

    def connect(self, factory):
        def cancel(d):
            self.cancelled += 1

        d = defer.Deferred(cancel)
        self.attempts.append((factory, d))
        return d

    def succeed(self):
        """
        Complete the latest attempt with a protocol on a StringTransport.
        """
        factory, d = self.attempts[-1]
        p = factory.buildProtocol(None)
        transport = StringTransport()
        p.makeConnection(transport)
        d.callback(p)
        return p, transport

    def fail(self):
        factory, d = self.attempts[-1]
        d.errback(Failure(error.ConnectionRefusedError("nobody home")))


class GuestForwarderTests(SynchronousTestCase):
    """
    L{forwarder.GuestForwarder} keeps one link up, retrying every second.
    """

    def setUp(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.device = FakeTap()
        self.forwarder = forwarder.GuestForwarder(
            self.endpoint, self.clock, device=self.device, description="test"
        )

    def test_connectsOnStart(self):
        """
        Starting the service makes one attempt, and once connected the link
        carries the request and then TAP frames.
        """
        self.assertEqual(self.endpoint.attempts, [])
        self.forwarder.startService()
        self.assertEqual(len(self.endpoint.attempts), 1)
        p, transport = self.endpoint.succeed()
        self.assertIs(self.forwarder.connection, p)
        self.device.frameReceived(b"\x07" * 60)
        self.assertEqual(transport.value(), REQUEST + b"\x3c\x00" + b"\x07" * 60)

    def test_retryAfterFailureEverySecond(self):
        """
        A failed attempt is retried after exactly one second, again and again.
        """
        self.forwarder.startService()
        for n in range(1, 4):
            self.endpoint.fail()
            self.clock.advance(0.999)
            self.assertEqual(len(self.endpoint.attempts), n)
            self.clock.advance(0.001)
            self.assertEqual(len(self.endpoint.attempts), n + 1)
        self.assertEqual(self.forwarder.failures, 3)

    def test_reconnectAfterDisconnect(self):
        """
        When the host drops the link, a new attempt follows one second later
        and sends the request again.
        """
        self.forwarder.startService()
        p, _ = self.endpoint.succeed()
        p.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNone(self.forwarder.connection)
        self.clock.advance(0.9)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.endpoint.attempts), 2)
        _, transport = self.endpoint.succeed()
        self.assertEqual(transport.value(), REQUEST)
        self.assertEqual(self.forwarder.connects, 2)

    def test_connectTimeout(self):
        """
        An attempt that hangs is cancelled after the timeout and retried.
        """
        self.forwarder.startService()
        self.clock.advance(forwarder.CONNECT_TIMEOUT)
        self.assertEqual(self.endpoint.cancelled, 1)
        self.clock.advance(1)
        self.assertEqual(len(self.endpoint.attempts), 2)

    def test_stopCancelsRetry(self):
        """
        Stopping while waiting to retry: no attempt is made afterwards.
        """
        self.forwarder.startService()
        self.endpoint.fail()
        self.forwarder.stopService()
        self.clock.advance(10)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopCancelsAttempt(self):
        """
        Stopping while connecting cancels the attempt and does not retry.
        """
        self.forwarder.startService()
        self.forwarder.stopService()
        self.assertEqual(self.endpoint.cancelled, 1)
        self.clock.advance(10)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stopWhileConnected(self):
        """
        Stopping closes the link, the returned Deferred fires when it is gone,
        and no reconnection follows.
        """
        self.forwarder.startService()
        p, transport = self.endpoint.succeed()
        d = self.forwarder.stopService()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        p.connectionLost(Failure(error.ConnectionDone()))
        self.successResultOf(d)
        self.clock.advance(10)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_logsOnce(self):
        """
        One line when connecting starts failing (not one per retry), one when
        the link comes up, one when it goes down.
        """
        with capturedLogs() as events:
            self.forwarder.startService()
            for _ in range(5):
                self.endpoint.fail()
                self.clock.advance(1)
            p, _ = self.endpoint.succeed()
            p.connectionLost(Failure(error.ConnectionDone()))
        texts = [e["log_format"] for e in events]
        self.assertEqual(len(texts), 3, texts)
        self.assertIn("cannot connect", texts[0])
        self.assertIn("link up", texts[1])
        self.assertIn("link down", texts[2])

    def test_linkUpHooks(self):
        """
        Hooks run with the protocol on every link-up; a failing hook is logged
        and does not break the link.
        """
        seen = []
        self.forwarder.linkUpHooks.append(lambda p: 1 / 0)
        self.forwarder.linkUpHooks.append(seen.append)
        self.forwarder.startService()
        p, _ = self.endpoint.succeed()
        self.assertEqual(seen, [p])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIs(self.forwarder.connection, p)

    def test_fromString(self):
        """
        fromString accepts a gvforwarder URL and posts to its path.
        """
        f = forwarder.GuestForwarder.fromString(
            MemoryReactorClock(), "unix:///tmp/x.sock"
        )
        self.assertEqual(f.endpoint._path, "/tmp/x.sock")
        self.assertEqual(f.request, REQUEST)


# ---------------------------------------------------------------------------
# The TAP device, with a datagram socket pair standing in for the TAP fd


class TapDeviceTests(SynchronousTestCase):
    """
    L{tuntap.TapDevice}: one read is one frame, one write is one frame.
    """

    def setUp(self):
        self.ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.peer.setblocking(False)
        self.addCleanup(self.peer.close)
        self.reactor = MemoryReactorClock()
        self.device = tuntap.TapDevice(
            os.dup(self.ours.fileno()), "fake0", reactor=self.reactor, maxQueue=4,
            readsPerCall=8,
        )
        self.ours.close()
        self.addCleanup(self.device.close)
        self.frames = []
        self.device.setReceiver(self.frames.append)

    def test_readsFrames(self):
        """
        Each datagram becomes one frame, in order, and is counted.
        """
        sent = [b"\x01" * 60, b"\x02" * 1514, b"\x03" * 9014]
        for f in sent:
            self.peer.send(f)
        self.device.doRead()
        self.assertEqual(self.frames, sent)
        self.assertEqual(self.device.counters.get("tap.rx.frames"), 3)
        self.assertEqual(self.device.counters.get("tap.rx.bytes"), 60 + 1514 + 9014)

    def test_readBound(self):
        """
        One doRead reads at most readsPerCall frames; the rest wait.
        """
        for i in range(10):
            self.peer.send(bytes([i]) * 60)
        self.device.doRead()
        self.assertEqual(len(self.frames), 8)
        self.device.doRead()
        self.assertEqual(len(self.frames), 10)

    def test_pauseStopsReading(self):
        """
        pauseProducing takes the device out of the reactor's readers and
        resumeProducing puts it back; a pause during doRead ends the loop.
        """
        self.device.startReading()
        self.assertIn(self.device, self.reactor.readers)
        self.device.pauseProducing()
        self.assertNotIn(self.device, self.reactor.readers)
        self.device.resumeProducing()
        self.assertIn(self.device, self.reactor.readers)

        def pauseAfterOne(frame):
            self.frames.append(frame)
            self.device.pauseProducing()

        self.device.setReceiver(pauseAfterOne)
        for i in range(3):
            self.peer.send(bytes([i]) * 60)
        self.device.doRead()
        self.assertEqual(len(self.frames), 1)
        self.assertNotIn(self.device, self.reactor.readers)

    def test_batchReceiver(self):
        """
        With a batch receiver, the first frame of a doRead (not a bare TCP
        segment) arrives alone, before the device is read again, and the rest
        of the read in one call, in order; after a read that found the device
        busy, the next read's frames come in one call. All are counted, and
        the per-frame receiver is not called.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        sent = [bytes([i]) * (60 + i) for i in range(10)]
        for f in sent:
            self.peer.send(f)
        self.device.doRead()
        self.device.doRead()
        self.device.doRead()
        self.assertEqual(batches, [sent[:1], sent[1:8], sent[8:]])
        self.assertEqual(self.frames, [])
        self.assertEqual(self.device.counters.get("tap.rx.frames"), 10)

    def test_firstFrameBeforeNextRead(self):
        """
        The first frame reaches the batch receiver before the device is read
        again: a frame the guest sends meanwhile comes in the next batch.
        """
        batches = []

        def receive(frames):
            batches.append(list(frames))
            if len(batches) == 1:
                self.peer.send(b"\x09" * 61)

        self.device.setReceiver(self.frames.append, receive)
        self.peer.send(b"\x08" * 60)
        self.device.doRead()
        self.assertEqual(batches, [[b"\x08" * 60], [b"\x09" * 61]])

    def countReads(self):
        """
        Count the device's reads (os.read as tuntap calls it).
        """
        reads = []
        realRead = os.read

        def read(fd, size):
            if fd == self.device.fd:
                reads.append(fd)
            return realRead(fd, size)

        self.patch(tuntap.os, "read", read)
        return reads

    def test_loneRequestsSkipTheEmptyRead(self):
        """
        Once a request came alone (the read after it found the device
        empty), the next requests are handed on without that read, up to
        MAX_READS_SKIPPED times in a row; then one read checks again.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        reads = self.countReads()
        expected = []
        for i in range(2 + 2 * (tuntap.MAX_READS_SKIPPED + 1)):
            frame = bytes([i]) * 60
            self.peer.send(frame)
            del reads[:]
            self.device.doRead()
            expected.append([frame])
            skipped = i % (tuntap.MAX_READS_SKIPPED + 1) != 0
            self.assertEqual(len(reads), 1 if skipped else 2, i)
        self.assertEqual(batches, expected)

    def test_burstAfterLoneRequests(self):
        """
        Frames queued behind a request whose read was skipped are read when
        the device is next read, and a read that finds them makes the device
        read on after requests again.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        self.peer.send(b"\x01" * 60)
        self.device.doRead()
        burst = [bytes([i]) * 61 for i in range(2, 12)]
        for frame in burst:
            self.peer.send(frame)
        self.device.doRead()
        self.assertEqual(batches, [[b"\x01" * 60], burst[:1]])
        # Read on now: the rest of the burst comes in this call.
        del batches[:]
        for _ in range(tuntap.MAX_READS_SKIPPED + 1):
            self.device.doRead()
            if not any(len(b) > 1 for b in batches):
                continue
            break
        got = [f for b in batches for f in b]
        self.assertEqual(got, burst[1:])
        self.assertTrue(any(len(b) > 1 for b in batches))
        # A frame behind a request was seen: the next request is read on
        # after.
        reads = self.countReads()
        self.peer.send(b"\x0d" * 60)
        self.device.doRead()
        self.assertEqual(len(reads), 2)

    def test_busyDeviceSendsNothingAhead(self):
        """
        After a read that found BUSY_FRAMES frames or more, the next read's
        first request goes with the rest of its read; a read that finds fewer
        makes the device quiet again.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        burst = [bytes([i]) * 60 for i in range(tuntap.BUSY_FRAMES)]
        for frame in burst:
            self.peer.send(frame)
        self.device.doRead()
        self.assertEqual(batches, [burst[:1], burst[1:]])
        del batches[:]
        for frame in burst[:3]:
            self.peer.send(frame)
        self.device.doRead()
        self.assertEqual(batches, [burst[:3]])
        del batches[:]
        self.peer.send(burst[0])
        self.peer.send(burst[1])
        self.device.doRead()
        self.assertEqual(batches, [burst[:1], burst[1:2]])

    def test_bareSegmentWaitsForTheRest(self):
        """
        A bare TCP segment read first (the guest's ACK before its data) is
        not sent alone: it goes with the rest of the read in one batch.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        ack = tcpFrame(b"", dpkt.tcp.TH_ACK)
        data = tcpFrame(b"x", dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH)
        self.peer.send(ack)
        self.peer.send(data)
        self.device.doRead()
        self.assertEqual(batches, [[ack, data]])

    def test_longFrameWaitsForTheRest(self):
        """
        A first frame longer than SHORT_FRAME is bulk, not a request: it goes
        with the rest of the read in one batch.
        """
        batches = []
        self.device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        long = tcpFrame(b"d" * (tuntap.SHORT_FRAME - 65), dpkt.tcp.TH_ACK)
        self.assertEqual(len(long), tuntap.SHORT_FRAME + 1)
        self.peer.send(long)
        self.peer.send(b"\x07" * 60)
        self.device.doRead()
        self.assertEqual(batches, [[long, b"\x07" * 60]])
        batches.clear()
        short = long[:-1]
        self.peer.send(short)
        self.peer.send(b"\x07" * 60)
        self.device.doRead()
        self.assertEqual(batches, [[short], [b"\x07" * 60]])

    def test_bareSegmentAfterVirtioHeader(self):
        """
        On a device opened with IFF_VNET_HDR, the frame is read past the
        virtio-net header when telling a bare segment.
        """
        fd = os.dup(self.device.fd)
        device = tuntap.TapDevice(fd, "fake1", reactor=self.reactor, vnetHeader=True)
        self.addCleanup(device.close)
        batches = []
        device.setReceiver(self.frames.append, lambda b: batches.append(list(b)))
        ack = bytes(tuntap.VNET_HDR_SIZE) + tcpFrame(b"", dpkt.tcp.TH_ACK)
        data = bytes(tuntap.VNET_HDR_SIZE) + tcpFrame(b"x", dpkt.tcp.TH_ACK)
        for first in (ack, data):
            batches.clear()
            self.peer.send(first)
            self.peer.send(b"\x07" * 60)
            device.doRead()
            expected = [[ack, b"\x07" * 60]] if first is ack else [[data], [b"\x07" * 60]]
            self.assertEqual(batches, expected)

    def test_linkGoneDuringRead(self):
        """
        A receiver that drops the link while handed the first frame leaves the
        rest of the read dropped and counted, not handed to nobody.
        """
        def receive(frames):
            self.device.setReceiver(None)

        self.device.setReceiver(self.frames.append, receive)
        self.peer.send(b"\x01" * 60)
        self.peer.send(b"\x02" * 60)
        self.device.doRead()
        self.assertEqual(self.device.counters.get("drop.tapNoLink"), 1)
        self.assertEqual(self.device.counters.get("tap.rx.frames"), 2)

    def test_batchReceiverCleared(self):
        """
        setReceiver(None) forgets the batch receiver too: frames are dropped
        and counted.
        """
        batches = []
        self.device.setReceiver(self.frames.append, batches.append)
        self.device.setReceiver(None)
        self.peer.send(b"\x01" * 60)
        self.device.doRead()
        self.assertEqual(batches, [])
        self.assertEqual(self.device.counters.get("drop.tapNoLink"), 1)

    def test_writeFrames(self):
        """
        writeFrames writes each frame as one datagram, in order, and counts
        them; a busy device queues the rest in order and drains it later.
        """
        self.device.writeFrames([b"\x01" * 60, memoryview(b"\x02" * 70)])
        self.assertEqual(self.peer.recv(100), b"\x01" * 60)
        self.assertEqual(self.peer.recv(100), b"\x02" * 70)
        self.assertEqual(self.device.counters.get("tap.tx.frames"), 2)
        self.assertEqual(self.device.counters.get("tap.tx.bytes"), 130)
        # Fill the socket until it refuses, then hand a batch.
        filler = 0
        try:
            while True:
                os.write(self.device.fd, b"\x00" * 60)
                filler += 1
        except BlockingIOError:
            pass
        self.device.writeFrames([b"\x03" * 60, b"\x04" * 60])
        self.assertEqual(self.device.queued(), 2)
        for _ in range(filler):
            self.peer.recv(100)
        self.device.doWrite()
        self.assertEqual(self.peer.recv(100), b"\x03" * 60)
        self.assertEqual(self.peer.recv(100), b"\x04" * 60)
        self.assertEqual(self.device.queued(), 0)

    def test_writeFramesPrefix(self):
        """
        With a prefix, each frame is written behind it as one datagram, and
        the prefix is counted in the bytes written.
        """
        self.device.writeFrames([b"\x01" * 60, memoryview(b"\x02" * 70)], prefix=b"\0" * 10)
        self.assertEqual(self.peer.recv(100), b"\0" * 10 + b"\x01" * 60)
        self.assertEqual(self.peer.recv(100), b"\0" * 10 + b"\x02" * 70)
        self.assertEqual(self.device.counters.get("tap.tx.frames"), 2)
        self.assertEqual(self.device.counters.get("tap.tx.bytes"), 150)

    def test_queuedViewsAreCopied(self):
        """
        Frames given as views of a buffer that must wait for the device are
        copied: the buffer's later contents do not reach the device, with or
        without a prefix.
        """
        filler = self.fill()
        buffer = bytearray(b"\x05" * 60)
        self.device.writeFrames([memoryview(buffer)])
        self.device.writeFrames([memoryview(buffer)], prefix=b"\0" * 10)
        self.device.writeFrames([memoryview(buffer)])
        buffer[:] = b"\x06" * 60
        self.assertEqual(self.device.queued(), 3)
        for _ in range(filler):
            self.peer.recv(65536)
        self.device.doWrite()
        self.assertEqual(self.drain(), [b"\x05" * 60, b"\0" * 10 + b"\x05" * 60, b"\x05" * 60])

    def test_noReceiverDrops(self):
        """
        With no receiver (link down) frames are read and dropped, counted.
        """
        self.device.setReceiver(None)
        self.peer.send(b"\x01" * 60)
        self.device.doRead()
        self.assertEqual(self.frames, [])
        self.assertEqual(self.device.counters.get("drop.tapNoLink"), 1)

    def test_oversizeDropped(self):
        """
        A frame too long for a 2-byte length header is dropped and counted,
        and the frames around it still pass.
        """
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.peer.send(b"\x01" * 60)
        try:
            self.peer.send(b"\x02" * 70000)
        except OSError as e:
            raise self.skipTest(f"cannot send a 70000-byte datagram here: {e}")
        self.peer.send(b"\x03" * 60)
        self.device.doRead()
        self.assertEqual(self.frames, [b"\x01" * 60, b"\x03" * 60])
        self.assertEqual(self.device.counters.get("drop.tapOversize"), 1)
        self.flushLoggedErrors()

    def test_writesFramesSeparately(self):
        """
        Each writeFrame is one datagram on the other side: frames are never
        coalesced.
        """
        self.device.writeFrame(b"\x01" * 60)
        self.device.writeFrame(b"\x02" * 1514)
        self.assertEqual(self.peer.recv(65536), b"\x01" * 60)
        self.assertEqual(self.peer.recv(65536), b"\x02" * 1514)
        self.assertEqual(self.device.counters.get("tap.tx.frames"), 2)

    def fill(self):
        """
        Fill the peer's receive queue until a write would block.
        """
        n = 0
        while True:
            try:
                os.write(self.device.fd, b"\xff" * 1000)
            except BlockingIOError:
                return n
            n += 1

    def drain(self):
        got = []
        while True:
            try:
                got.append(self.peer.recv(65536))
            except BlockingIOError:
                return got

    def test_queueWhenBusyThenDrain(self):
        """
        When the device says EAGAIN, frames wait in order (up to maxQueue),
        later ones are dropped and counted, and doWrite sends the queue once
        there is room, then leaves the reactor's writers.
        """
        self.fill()
        for i in range(6):
            self.device.writeFrame(bytes([i]) * 60)
        self.assertEqual(self.device.queued(), 4)
        self.assertEqual(self.device.counters.get("drop.tapQueueFull"), 2)
        self.assertIn(self.device, self.reactor.writers)
        got = self.drain()
        self.device.doWrite()
        self.assertEqual(self.device.queued(), 0)
        self.assertNotIn(self.device, self.reactor.writers)
        got = self.drain()
        self.assertEqual(got, [bytes([i]) * 60 for i in range(4)])

    def test_writeErrorCounted(self):
        """
        A frame the kernel refuses is counted and dropped; it never raises
        into the link.
        """
        self.peer.close()
        self.device.writeFrame(b"\x01" * 60)
        self.assertEqual(self.device.counters.get("drop.tapWriteError"), 1)

    def test_close(self):
        """
        close leaves the reactor and closes the descriptor; later writes are
        counted drops.
        """
        fd = self.device.fd
        self.device.startReading()
        self.device.close()
        self.assertNotIn(self.device, self.reactor.readers)
        self.assertEqual(self.device.fileno(), -1)
        e = self.assertRaises(OSError, os.fstat, fd)
        self.assertEqual(e.errno, errno.EBADF)
        self.device.writeFrame(b"\x01" * 60)
        self.assertEqual(self.device.counters.get("drop.tapClosed"), 1)

    def test_producerDetachResumes(self):
        """
        A TapProducer whose link is lost resumes the device it paused, and
        ignores the link afterwards.
        """
        self.device.startReading()
        producer = tuntap.TapProducer(self.device)
        producer.pauseProducing()
        self.assertNotIn(self.device, self.reactor.readers)
        producer.stopProducing()
        self.assertIn(self.device, self.reactor.readers)
        producer.pauseProducing()
        self.assertIn(self.device, self.reactor.readers)


class MACTests(SynchronousTestCase):
    """
    L{tuntap.parseMAC} and L{tuntap.formatMAC}.
    """

    def test_roundTrip(self):
        """
        Colon and dash forms parse to the same bytes and format back.
        """
        self.assertEqual(tuntap.parseMAC("5a:94:ef:e4:0c:ee"), GUEST_MAC)
        self.assertEqual(tuntap.parseMAC("5A-94-EF-E4-0C-EE"), GUEST_MAC)
        self.assertEqual(tuntap.formatMAC(GUEST_MAC), "5a:94:ef:e4:0c:ee")

    def test_bad(self):
        """
        Wrong lengths, non-hex digits and multicast addresses are refused.
        """
        for bad in ("5a:94:ef:e4:0c", "5a:94:ef:e4:0c:ee:00", "5a:94:ef:e4:0c:g0",
                    "ff:ff:ff:ff:ff:ff", "5a:94:ef:e4:0c:eee"):
            self.assertRaises(ValueError, tuntap.parseMAC, bad)


# ---------------------------------------------------------------------------
# The guest service


class FakeProcess:
    """
    A process transport that records signals.
    """

    def __init__(self):
        self.signals = []

    def signalProcess(self, signal):
        self.signals.append(signal)


class FakeProcessReactor(MemoryReactorClock):
    """
    A memory reactor that records spawnProcess and stop calls.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.spawned = []
        self.stopped = 0
        self.whenRunning = []

    def spawnProcess(self, processProtocol, executable, args, env=None, **kw):
        self.spawned.append((processProtocol, executable, args))
        return FakeProcess()

    def callWhenRunning(self, f, *a, **kw):
        self.whenRunning.append((f, a, kw))

    def stop(self):
        self.stopped += 1


class GuestServiceTests(SynchronousTestCase):
    """
    L{tap.GuestService}: open and configure the TAP, start the link, DHCP.
    """

    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.endpoint = FakeEndpoint()
        self.forwarder = forwarder.GuestForwarder(self.endpoint, self.reactor)
        self.opened = []
        self.configured = []

    def openTap(self, name):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(b.close)
        self.opened.append(name)
        return a.detach(), name

    def configureTap(self, name, mac=None, mtu=None, up=True):
        self.configured.append((name, mac, mtu, up))

    def service(self, **kw):
        kw.setdefault("mac", GUEST_MAC)
        kw.setdefault("interfaceExists", lambda name: False)
        s = tap.GuestService(
            self.forwarder, self.reactor, openTap=self.openTap,
            configureTap=self.configureTap, **kw
        )
        self.addCleanup(lambda: s.running and s.stopService())
        return s

    def test_configures(self):
        """
        Without --preexisting the TAP gets the MAC and MTU and is brought up,
        before the link starts connecting.
        """
        s = self.service(iface="tap3", mtu=9000)
        s.privilegedStartService()
        self.assertEqual(self.configured, [("tap3", GUEST_MAC, 9000, True)])
        self.assertEqual(self.endpoint.attempts, [])
        s.startService()
        self.assertEqual(self.opened, ["tap3"])
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertIs(self.forwarder.device, s.device)
        self.assertIn(s.device, self.reactor.readers)

    def test_preexisting(self):
        """
        With --preexisting the TAP is opened but nothing is configured.
        """
        s = self.service(preexisting=True)
        s.startService()
        self.assertEqual(self.opened, ["tap0"])
        self.assertEqual(self.configured, [])

    def test_stopIfExist(self):
        """
        If a listed interface exists the TAP is not touched and the reactor is
        asked to stop.
        """
        s = self.service(stopIfExist=["eth0"], interfaceExists=lambda n: n == "eth0")
        s.privilegedStartService()
        s.startService()
        self.assertEqual(self.opened, [])
        self.assertEqual(self.endpoint.attempts, [])
        self.assertEqual(s.refused, "eth0")
        [(f, a, kw)] = self.reactor.whenRunning
        f(*a, **kw)
        self.assertEqual(self.reactor.stopped, 1)

    def test_dhcpOnFirstLinkUp(self):
        """
        --dhcp runs the DHCP client once the link is up, and only the first
        time: the lease stays in the guest across reconnections. Stopping
        the service stops a client still running.
        """
        s = self.service(dhcp=lambda iface: ["/sbin/udhcpc", "-f", "-q", "-i", iface])
        s.startService()
        self.assertEqual(self.reactor.spawned, [])
        p, _ = self.endpoint.succeed()
        [(_, executable, args)] = self.reactor.spawned
        self.assertEqual(executable, "/sbin/udhcpc")
        self.assertEqual(args, ["/sbin/udhcpc", "-f", "-q", "-i", "tap0"])
        p.connectionLost(Failure(error.ConnectionDone()))
        self.reactor.advance(1)
        self.endpoint.succeed()
        self.assertEqual(len(self.reactor.spawned), 1)
        process = s.dhcpProcess
        s.stopService()
        self.assertEqual(process.signals, ["TERM"])

    def test_openFailureExits(self):
        """
        A TAP that cannot be opened ends the program with one clear line
        (SystemExit, so twistd prints it without a traceback), not a crash.
        """

        def busy(name):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

        s = tap.GuestService(
            self.forwarder, self.reactor, openTap=busy,
            interfaceExists=lambda name: False,
        )
        e = self.assertRaises(SystemExit, s.privilegedStartService)
        self.assertIn("cannot open TAP tap0", str(e.code))
        self.assertIn("another process holds it", str(e.code))
        self.assertEqual(self.endpoint.attempts, [])

    def test_noDhcpByDefault(self):
        """
        Without --dhcp no process is started.
        """
        s = self.service()
        s.startService()
        self.endpoint.succeed()
        self.assertEqual(self.reactor.spawned, [])

    def test_stopClosesTap(self):
        """
        Stopping closes the link and then the TAP.
        """
        s = self.service()
        s.startService()
        device = s.device
        p, transport = self.endpoint.succeed()
        d = s.stopService()
        self.assertTrue(transport.disconnecting)
        p.connectionLost(Failure(error.ConnectionDone()))
        self.successResultOf(d)
        self.assertTrue(device.disconnected)
        self.assertIsNone(s.device)


class DHCPProtocolTests(SynchronousTestCase):
    """
    The DHCP client's exit is always logged, with its last words on failure.
    """

    def test_failureLogged(self):
        """
        A failing client's status and last line of output are logged, and
        the service hears the exit code.
        """
        codes = []
        p = tap._DHCPProtocol("udhcpc", False, codes.append)
        p.childDataReceived(2, b"udhcpc: started\nudhcpc: no lease, fail")
        p.childDataReceived(2, b"ing\n")
        with capturedLogs() as events:
            p.processEnded(Failure(error.ProcessTerminated(exitCode=1)))
        self.assertEqual(codes, [1])
        [event] = events
        self.assertEqual(event["code"], 1)
        self.assertEqual(event["last"], "udhcpc: no lease, failing")

    def test_successLogged(self):
        """
        A clean exit is logged as success.
        """
        codes = []
        p = tap._DHCPProtocol("udhcpc", True, codes.append)
        with capturedLogs() as events:
            p.childDataReceived(1, b"lease obtained\n")
            p.processEnded(Failure(error.ProcessDone(0)))
        self.assertEqual(codes, [0])
        self.assertEqual(len(events), 2)
        self.assertIn("configured", events[1]["log_format"])


class DHCPCommandTests(SynchronousTestCase):
    """
    L{tap.dhcpCommand} picks a DHCP client that exits once it has a lease.
    """

    def which(self, available):
        return lambda name: f"/bin/{name}" if name in available else None

    def test_udhcpc(self):
        """
        udhcpc is preferred, in the foreground and quitting after the lease.
        """
        self.assertEqual(
            tap.dhcpCommand("tap0", self.which({"udhcpc", "busybox", "dhclient"})),
            ["/bin/udhcpc", "-f", "-q", "-i", "tap0"],
        )

    def test_busybox(self):
        """
        Without a udhcpc link, busybox's applet is used.
        """
        self.assertEqual(
            tap.dhcpCommand("tap0", self.which({"busybox", "dhclient"})),
            ["/bin/busybox", "udhcpc", "-f", "-q", "-i", "tap0"],
        )

    def test_dhclient(self):
        """
        dhclient is the last resort, with -1 (one try) instead of -d (forever).
        """
        self.assertEqual(
            tap.dhcpCommand("tap0", self.which({"dhclient"})),
            ["/bin/dhclient", "-4", "-1", "tap0"],
        )
        self.assertIsNone(tap.dhcpCommand("tap0", self.which(set())))


# ---------------------------------------------------------------------------
# Backpressure over a real unix socket (no root needed)


class SlowHostProtocol(protocol.Protocol):
    """
    A host that does not read until told to, then collects frames.
    """

    def connectionMade(self):
        self.transport.pauseProducing()
        self.buffer = b""
        self.frames = []
        self.decoder = FrameDecoder(LE16)
        self.factory.connected.callback(self)

    def dataReceived(self, data):
        if self.buffer is not None:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            request, _, data = self.buffer.partition(b"\r\n\r\n")
            self.request = request + b"\r\n\r\n"
            self.buffer = None
        self.frames.extend(self.decoder.feed(data))
        if len(self.frames) >= self.factory.expected and not self.factory.done.called:
            self.factory.done.callback(None)


class BackpressureTests(TestCase):
    """
    A host that stops reading stops our reads of the TAP instead of growing the
    link's buffer, and nothing is lost once it reads again.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_slowHostPausesTap(self):
        """
        With the host not reading, the device leaves the reactor's readers and
        the transport holds little more than its own buffer size; once the host
        reads, every frame arrives, in order, byte for byte.
        """
        from twisted.internet import reactor

        tmp = tempfile.mkdtemp(prefix="gvtg-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "host.sock")
        factory = protocol.Factory.forProtocol(SlowHostProtocol)
        factory.connected = defer.Deferred()
        factory.done = defer.Deferred()
        total = 3000
        factory.expected = total
        port = reactor.listenUNIX(path, factory)
        self.addCleanup(port.stopListening)

        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.setblocking(False)
        self.addCleanup(peer.close)
        device = tuntap.TapDevice(ours.detach(), "fake0", reactor=reactor)
        os.set_blocking(device.fd, False)
        self.addCleanup(device.close)
        link = forwarder.GuestForwarder(
            UNIXClientEndpoint(reactor, path), reactor, device=device
        )
        device.startReading()
        link.startService()
        self.addCleanup(link.stopService)
        host = yield factory.connected

        frames = [i.to_bytes(4, "big") * 375 for i in range(total)]
        sent = 0
        while sent < total:
            try:
                peer.send(frames[sent])
                sent += 1
            except BlockingIOError:
                if device._paused:
                    break
                yield deferLater(reactor, 0.001, lambda: None)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(device._paused, "the TAP was never paused")
        self.assertNotIn(device, reactor.getReaders())
        transport = link.connection.transport
        held = len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer))
        self.assertLess(held, transport.bufferSize + 2 * 1502)

        host.transport.resumeProducing()
        while sent < total:
            try:
                peer.send(frames[sent])
                sent += 1
            except BlockingIOError:
                yield deferLater(reactor, 0.001, lambda: None)
        yield factory.done
        self.assertEqual(host.request, REQUEST)
        self.assertEqual(len(host.frames), total)
        self.assertTrue(host.frames == frames, "frames differ or are out of order")
        self.assertEqual(device.counters.get("drop.tapNoLink"), 0)


# ---------------------------------------------------------------------------
# Real tests: namespaces, a real TAP and a real twistd


def _realSkip():
    if not sys.platform.startswith("linux"):
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and TAP devices"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


_nsCounter = itertools.count()


def run(*argv):
    """
    Run a command; fire with C{(out, err, code)}.
    """
    return getProcessOutputAndValue(argv[0], argv[1:], env=os.environ, path=REPO)


class NamespaceMixin:
    """
    A fresh named network namespace per test, always deleted afterwards.
    """

    skip = _realSkip()
    timeout = 60

    @defer.inlineCallbacks
    def makeNamespace(self):
        ip = shutil.which("ip")
        name = f"gvtg-{os.getpid()}-{next(_nsCounter)}"
        out, err, code = yield run(ip, "netns", "add", name)
        if code != 0:
            raise self.skipTest(f"cannot create a network namespace: {err!r}")
        self.addCleanup(run, ip, "netns", "delete", name)
        self.ip = ip
        return name

    @defer.inlineCallbacks
    def check(self, *argv):
        out, err, code = yield run(*argv)
        self.assertEqual(code, 0, f"{argv} failed ({code}): {out!r} {err!r}")
        return out.decode()


class FakeHostProtocol(protocol.Protocol):
    """
    The host end of a /connect link: takes the request, then LE16 frames, and
    answers ARP and ICMP echo for the gateway 192.168.127.1. An offload probe
    (C{GET /offload}) gets the 404 gvproxy's HTTP mux sends, on a connection
    that stays open, as gvproxy's does.
    """

    def connectionMade(self):
        self.buffer = b""
        self.probes = 0
        self.request = None
        self.decoder = FrameDecoder(LE16)
        self.factory.connections.append(self)
        self.factory.notify()

    def dataReceived(self, data):
        if self.request is None:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            self.request, _, data = self.buffer.partition(b"\r\n\r\n")
            self.request += b"\r\n\r\n"
            if self.request.startswith(b"GET /offload "):
                self.probes += 1
                self.transport.write(GVPROXY_404)
                self.request, self.buffer = None, b""
                if data:
                    self.dataReceived(data)
                return
            self.factory.notify()
        for frame in self.decoder.feed(data):
            self.factory.frames.append(frame)
            self.answer(frame)
            self.factory.notify()

    def send(self, frame):
        self.transport.write(encodeFrame(LE16, bytes(frame)))

    def answer(self, frame):
        eth = dpkt.ethernet.Ethernet(frame)
        if eth.type == dpkt.ethernet.ETH_TYPE_ARP:
            arp = eth.data
            if arp.op == dpkt.arp.ARP_OP_REQUEST and arp.tpa == GATEWAY_IP:
                reply = dpkt.arp.ARP(
                    op=dpkt.arp.ARP_OP_REPLY, sha=GATEWAY_MAC, spa=GATEWAY_IP,
                    tha=arp.sha, tpa=arp.spa,
                )
                self.send(dpkt.ethernet.Ethernet(
                    dst=arp.sha, src=GATEWAY_MAC, type=dpkt.ethernet.ETH_TYPE_ARP,
                    data=reply,
                ))
        elif eth.type == dpkt.ethernet.ETH_TYPE_IP:
            ip = eth.data
            if (ip.p == dpkt.ip.IP_PROTO_ICMP and ip.dst == GATEWAY_IP
                    and ip.data.type == dpkt.icmp.ICMP_ECHO):
                icmp = ip.data
                icmp.type = dpkt.icmp.ICMP_ECHOREPLY
                icmp.sum = 0
                reply = dpkt.ip.IP(
                    src=ip.dst, dst=ip.src, p=ip.p, ttl=64, id=ip.id, data=icmp,
                )
                self.send(dpkt.ethernet.Ethernet(
                    dst=eth.src, src=GATEWAY_MAC, type=dpkt.ethernet.ETH_TYPE_IP,
                    data=reply,
                ))


class FakeHostFactory(protocol.Factory):
    protocol = FakeHostProtocol

    def __init__(self, reactor):
        self.reactor = reactor
        self.connections = []
        self.frames = []
        self._waiters = []

    def notify(self):
        waiters, self._waiters = self._waiters, []
        for predicate, d in waiters:
            if predicate():
                d.callback(None)
            else:
                self._waiters.append((predicate, d))

    def waitFor(self, predicate, timeout, what):
        """
        Fire when C{predicate()} holds, or fail after C{timeout} seconds.
        """
        if predicate():
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append((predicate, d))

        def timedOut(f):
            f.trap(defer.TimeoutError)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")

        return d.addTimeout(timeout, self.reactor).addErrback(timedOut)


class HelperProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def childDataReceived(self, fd, data):
        self.output += data

    def processEnded(self, reason):
        # The exception as a value, not a failure: the caller judges how the
        # helper ended.
        self.ended.callback(reason.value)


class RealHelperTests(NamespaceMixin, TestCase):
    """
    twistd gvtap-guest in a namespace of its own, against a fake host on a
    unix socket in this process.
    """

    @defer.inlineCallbacks
    def startHelper(self, *extra):
        from twisted.internet import reactor

        self.ns = yield self.makeNamespace()
        tmp = tempfile.mkdtemp(prefix="gvtg-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.path = os.path.join(tmp, "host.sock")
        self.host = FakeHostFactory(reactor)
        port = reactor.listenUNIX(self.path, self.host)
        self.addCleanup(port.stopListening)
        self.addCleanup(
            lambda: [c.transport.abortConnection() for c in self.host.connections]
        )

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO, env.get("PYTHONPATH")) if p
        )
        argv = [
            self.ip, "netns", "exec", self.ns, sys.executable, "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "gvtap-guest", "--connect", "unix:" + self.path,
            *extra,
        ]
        self.helper = HelperProcess()
        self.process = reactor.spawnProcess(
            self.helper, argv[0], argv, env=env, path=REPO
        )
        self.addCleanup(self.stopHelper)
        try:
            yield self.host.waitFor(
                lambda: any(c.request for c in self.host.connections),
                20, "the helper's first request",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}; helper output:\n{self.helper.output.decode()}")

    @defer.inlineCallbacks
    def stopHelper(self):
        from twisted.internet import reactor

        if self.helper.ended.called:
            return
        self.process.signalProcess("TERM")
        kill = reactor.callLater(5, self._kill)
        # twistd ends by re-raising the signal that stopped it, so a TERM exit
        # is the expected one.
        reason = yield self.helper.ended
        if kill.active():
            kill.cancel()
        self.assertEqual(getattr(reason, "signal", None), 15,
                         f"helper did not stop on TERM: {reason}\n"
                         f"{self.helper.output.decode()}")
        self.assertIn(b"link closed", self.helper.output)

    def _kill(self):
        try:
            self.process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    @defer.inlineCallbacks
    def test_createsTap(self):
        """
        The helper creates the TAP with the MAC and MTU given, up, and opens the
        link with exactly the POST request.
        """
        yield self.startHelper("--iface", "tap0", "--mac", "5a:94:ef:e4:0c:ef",
                               "--mtu", "9000")
        out = yield self.check(self.ip, "-n", self.ns, "link", "show", "tap0")
        self.assertIn("link/ether 5a:94:ef:e4:0c:ef", out)
        self.assertIn("mtu 9000", out)
        self.assertIn(",UP", out)
        self.assertEqual(self.host.connections[0].request, REQUEST)

    @defer.inlineCallbacks
    def test_pingThroughLink(self):
        """
        A ping in the namespace sends an ARP request that reaches the host
        framed; the host's ARP and ICMP replies are written into the TAP, so
        the neighbour is learnt and the ping succeeds.
        """
        yield self.startHelper("--iface", "tap0")
        yield self.check(self.ip, "-n", self.ns, "addr", "add", "192.168.127.2/24",
                         "dev", "tap0")
        for attempt in range(3):
            out, err, code = yield run(
                self.ip, "netns", "exec", self.ns, "ping", "-c1", "-W1", "192.168.127.1"
            )
            if code == 0:
                break
        self.assertEqual(code, 0, f"ping failed: {out!r} {err!r}\n"
                         f"helper: {self.helper.output.decode()}")

        def isArpRequest(frame):
            return (frame[12:14] == b"\x08\x06" and frame[6:12] == GUEST_MAC
                    and frame[20:22] == b"\x00\x01" and frame[38:42] == GATEWAY_IP)

        arps = [f for f in self.host.frames if isArpRequest(f)]
        self.assertTrue(arps, f"no ARP request among {len(self.host.frames)} frames")
        self.assertEqual(arps[0][28:32], GUEST_IP)
        echoes = [f for f in self.host.frames
                  if f[12:14] == b"\x08\x00" and f[23] == 1 and f[30:34] == GATEWAY_IP]
        self.assertTrue(echoes, "no ICMP echo request reached the host")
        neigh = yield self.check(self.ip, "-n", self.ns, "neigh", "show", "dev", "tap0")
        self.assertIn("192.168.127.1 lladdr 5a:94:ef:e4:0c:dd", neigh)

    @defer.inlineCallbacks
    def test_reconnects(self):
        """
        When the host closes the link the helper connects again about a second
        later and sends the request again.
        """
        from twisted.internet import reactor

        yield self.startHelper("--iface", "tap0")
        first = self.host.connections[0]
        closed = reactor.seconds()
        first.transport.loseConnection()
        yield self.host.waitFor(
            lambda: len(self.host.connections) >= 2 and self.host.connections[1].request,
            10, "a second connection",
        )
        waited = reactor.seconds() - closed
        self.assertEqual(self.host.connections[1].request, REQUEST)
        self.assertTrue(0.8 <= waited < 2.5, f"reconnected after {waited:.2f} s")
        self.assertIn(b"link down", self.helper.output)
        for _ in range(50):
            # The log line may reach us a moment after the request.
            if self.helper.output.count(b"link up") >= 2:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.helper.output.count(b"link up"), 2)
        # Each connection first probed for offload and got gvproxy's 404.
        self.assertEqual([c.probes for c in self.host.connections[:2]], [1, 1])


class SetupScriptTests(NamespaceMixin, TestCase):
    """
    tap/setup.sh configures the TAP statically and writes the namespace's
    resolv.conf, never the host's.
    """

    @defer.inlineCallbacks
    def prepare(self):
        ns = yield self.makeNamespace()
        netnsDir = "/etc/netns"
        existed = os.path.isdir(netnsDir)

        def cleanEtc():
            shutil.rmtree(os.path.join(netnsDir, ns), ignore_errors=True)
            if not existed:
                try:
                    os.rmdir(netnsDir)
                except OSError:
                    pass

        self.addCleanup(cleanEtc)
        yield self.check(self.ip, "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
        return ns

    def hostResolv(self):
        try:
            st = os.stat("/etc/resolv.conf")
            with open("/etc/resolv.conf", "rb") as f:
                return (st.st_ino, f.read())
        except FileNotFoundError:
            return None

    @defer.inlineCallbacks
    def test_defaults(self):
        """
        With only the interface: 192.168.127.2/24, default route via
        192.168.127.1, nameserver 192.168.127.1 in /etc/netns/NS/resolv.conf;
        the host's /etc/resolv.conf is byte for byte (and inode) the same.
        """
        ns = yield self.prepare()
        before = self.hostResolv()
        yield self.check(self.ip, "netns", "exec", ns, "sh", SETUP_SH, "tap0")
        self.assertEqual(self.hostResolv(), before)
        with open(f"/etc/netns/{ns}/resolv.conf") as f:
            self.assertEqual(f.read(), "nameserver 192.168.127.1\n")
        addr = yield self.check(self.ip, "-n", ns, "addr", "show", "dev", "tap0")
        self.assertIn("inet 192.168.127.2/24", addr)
        route = yield self.check(self.ip, "-n", ns, "route", "show", "default")
        self.assertIn("default via 192.168.127.1 dev tap0", route)
        link = yield self.check(self.ip, "-n", ns, "link", "show", "tap0")
        self.assertIn(",UP", link)

    @defer.inlineCallbacks
    def test_arguments(self):
        """
        Address and gateway can be given, and running it twice is harmless.
        """
        ns = yield self.prepare()
        before = self.hostResolv()
        for _ in range(2):
            yield self.check(self.ip, "netns", "exec", ns, "sh", SETUP_SH, "tap0",
                             "10.9.8.7/16", "10.9.0.1")
        self.assertEqual(self.hostResolv(), before)
        with open(f"/etc/netns/{ns}/resolv.conf") as f:
            self.assertEqual(f.read(), "nameserver 10.9.0.1\n")
        addr = yield self.check(self.ip, "-n", ns, "addr", "show", "dev", "tap0")
        self.assertIn("inet 10.9.8.7/16", addr)
        route = yield self.check(self.ip, "-n", ns, "route", "show", "default")
        self.assertIn("default via 10.9.0.1 dev tap0", route)


class SetupScriptUsageTests(TestCase):
    """
    tap/setup.sh refuses wrong arguments before touching anything.
    """

    @defer.inlineCallbacks
    def test_usage(self):
        """
        No arguments, too many, or an address without a prefix: exit 2 with a
        usage line on stderr.
        """
        for args in ((), ("a", "b", "c", "d"), ("tap0", "192.168.127.2")):
            out, err, code = yield run("/bin/sh", SETUP_SH, *args)
            self.assertEqual(code, 2, f"{args}: {err!r}")
            self.assertIn(b"usage:", err)

    @defer.inlineCallbacks
    def test_missingInterface(self):
        """
        A missing interface is reported before any change is made.
        """
        out, err, code = yield run("/bin/sh", SETUP_SH, "gvtg-no-such-if")
        self.assertEqual(code, 1)
        self.assertIn(b"no interface", err)
