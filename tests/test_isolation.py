"""
Exceptions stop at the service: whatever a service raises at a dispatch point
of the virtual network (a datagram to a virtual UDP port, C{buildProtocol} and
the protocol callbacks of a virtual TCP connection, the NAT hand-offs, each
frame from a link) is logged with its traceback (rate-limited), counted, and
costs that datagram or that connection only.
"""

from twisted.internet.protocol import DatagramProtocol, Factory
from gvtwisted.wire.tcp import ACK, PSH, RST, SYN

from tests.test_iface import LinkTestCase
from tests.test_network import NetworkTestCase, Recorder, udpFrame
from tests.test_tcpdemux import (
    GUEST_PORT, SERVICE_PORT, DemuxTestCase, Recorder as TCPRecorder, RecordingFactory,
)


class Boom(Exception):
    pass


class Raising(DatagramProtocol):
    def __init__(self):
        self.calls = 0

    def datagramReceived(self, data, addr):
        self.calls += 1
        raise Boom(data)


class UDPServiceTests(NetworkTestCase):
    """
    A raising C{DatagramProtocol} on a virtual port costs one datagram.
    """

    def test_raisingProtocolCostsOneDatagram(self):
        """
        The raising port's datagram is lost and counted; the next datagram to
        it is delivered again, and another port's datagrams are untouched.
        """
        bad, good = Raising(), Recorder()
        self.network.listenUDP(5000, bad)
        self.network.listenUDP(5001, good)
        self.send(udpFrame(1000, 5000, b"first"))
        self.send(udpFrame(1000, 5001, b"other"))
        self.send(udpFrame(1000, 5000, b"second"))
        self.assertEqual(bad.calls, 2)
        self.assertEqual([d for d, _ in good.datagrams], [b"other"])
        self.assertEqual(self.counters.get("error.udp.service"), 2)
        # Rate-limited: one traceback for the two.
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)


class TCPServiceTests(DemuxTestCase):
    """
    A raising factory or protocol costs one connection.
    """

    def test_raisingBuildProtocolCostsOneConnection(self):
        """
        A SYN whose factory raises is refused with RST; the next connection
        to a working listener is accepted.
        """

        class Broken(Factory):
            def buildProtocol(self, addr):
                raise Boom("no")

        self.demux.listenTCP(SERVICE_PORT, Broken())
        working = RecordingFactory()
        self.demux.listenTCP(SERVICE_PORT + 1, working)
        self.sendSegment(SYN, seq=100)
        [(_, seg)] = self.taken()
        self.assertTrue(seg.flags & RST)
        self.assertEqual(self.counters.get("error.tcp.buildProtocol"), 1)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.establish(working, dstPort=SERVICE_PORT + 1, srcPort=GUEST_PORT + 1)
        self.assertEqual(working.protocols[0].made, 1)
        self.assertEqual(self.demux.connectionCount(), 1)

    def test_raisingDataReceivedCostsOneConnection(self):
        """
        A protocol whose C{dataReceived} raises has its connection reset; a
        second connection on the same link goes on.
        """

        class Fragile(TCPRecorder):
            def dataReceived(self, data):
                raise Boom(data)

        class Factory2(RecordingFactory):
            def buildProtocol(self, addr):
                p = Fragile() if not self.protocols else TCPRecorder()
                self.protocols.append(p)
                return p

        factory = Factory2()
        self.demux.listenTCP(SERVICE_PORT, factory)
        isn1 = self.establish(factory)
        isn2 = self.establish(factory, srcPort=GUEST_PORT + 1)
        self.taken()
        self.sendSegment(ACK | PSH, seq=0x10000001, ack=isn1 + 1, payload=b"bad")
        self.clock.advance(0)
        self.assertTrue(any(seg.flags & RST for _, seg in self.taken()))
        self.sendSegment(ACK | PSH, seq=0x10000001, ack=isn2 + 1, payload=b"good",
                         srcPort=GUEST_PORT + 1)
        self.clock.advance(0)
        self.assertEqual(factory.protocols[1].data, b"good")
        self.assertEqual(self.counters.get("error.tcp.protocol"), 1)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertEqual(self.demux.connectionCount(), 1)

    def test_raisingNATCostsOneConnection(self):
        """
        A NAT whose C{tcpSyn} raises costs that connection only.
        """

        class BrokenNAT:
            def tcpSyn(self, conn):
                raise Boom("nat")

        self.demux.nat = BrokenNAT()
        self.sendSegment(SYN, dst=b"\x08\x08\x08\x08", seq=100)
        self.assertEqual(self.counters.get("error.nat.tcp"), 1)
        self.assertEqual(self.demux.connectionCount(), 0)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)


class FrameTests(LinkTestCase):
    """
    Each frame from a link is its own unit of failure.
    """

    def test_raisingFramePathKeepsLink(self):
        """
        Something below the switch that raises for a frame does not escape
        the link's C{frameReceived}; the next frames are handled.
        """
        calls = []
        original = self.network.frameReceived

        def flaky(frame):
            calls.append(frame)
            if len(calls) == 1:
                raise Boom("frame")
            return original(frame)

        self.network.gatewayPort._network = type("N", (), {"frameReceived": staticmethod(flaky)})
        self.guest.frameReceived(udpFrame(1000, 5000, b"one"))
        self.learn()
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.counters.get("error.link.frame"), 1)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertIsNotNone(self.switch.interfaceFor(self.guest))

