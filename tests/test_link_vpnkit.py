"""
Tests for L{gvtwisted.link.vpnkit}: hyperkit's vpnkit handshake byte for
byte, then LE16 frames on the switch.
"""

import struct

from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.config import NetworkConfig
from gvtwisted.link.framing import LE16, encodeFrame
from gvtwisted.link.listeners import LinkFactory
from gvtwisted.link.vpnkit import VpnkitFactory, randomMAC, vpnkitResponse
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from tests.test_links import GUEST_MAC, arpReply, arpRequest

UUID = "d4e5f6a7-0b1c-4d2e-8f90-123456789abc"
HELLO = b"VMN3T" + struct.pack("<I", 22) + b"0123456789abcdef0123456789abcdef01234567"
COMMAND = b"\x01" + UUID.encode() + b"\x00" * 4


def expectedResponse(mtu, mac):
    """
    The 258 bytes hyperkit expects, spelled out field by field.
    """
    response = bytearray(258)
    response[0] = 1
    response[1:3] = mtu.to_bytes(2, "little")
    response[3:5] = (mtu + 14).to_bytes(2, "little")
    response[5:11] = mac
    return bytes(response)


class VpnkitTests(SynchronousTestCase):
    """
    A hyperkit client over a L{StringTransport}, on a network built on a
    L{Clock}.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.switch = Switch(self.clock, self.counters)
        self.network = VirtualNetwork(self.clock, NetworkConfig(mtu=4000), self.switch, self.counters)
        self.links = LinkFactory(self.network, self.counters, "qemu")

    def connect(self, uuidMACs=None, mtu=4000):
        factory = VpnkitFactory(self.links.makePort, mtu, uuidMACs)
        protocol = factory.buildProtocol(UNIXAddress(b"/tmp/vpnkit.sock"))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_handshakeByteForByte(self):
        """
        The hello comes back unchanged, the command gets the 258-byte answer
        with the MTU, MTU + 14 and the MAC the UUID maps to; then LE16 frames
        reach the switch and the gateway's ARP reply comes back framed.
        """
        protocol, transport = self.connect({UUID.upper(): "5a:94:ef:e4:0c:ee"})
        protocol.dataReceived(HELLO[:10])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(HELLO[10:])
        self.assertEqual(transport.value(), HELLO)
        transport.clear()
        protocol.dataReceived(COMMAND[:20])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(COMMAND[20:] + encodeFrame(LE16, arpRequest()))
        response = transport.value()[:258]
        self.assertEqual(response, expectedResponse(4000, GUEST_MAC))
        self.assertEqual(response[:11].hex(), "01a00fae0f5a94efe40cee")
        self.assertEqual(transport.value()[258:], encodeFrame(LE16, arpReply()))
        self.assertEqual(len(self.switch.ports), 2)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.switch.ports), 1)

    def test_oneRead(self):
        """
        Hello, command and a frame in one read work as well.
        """
        protocol, transport = self.connect({UUID: "5a:94:ef:e4:0c:ee"})
        protocol.dataReceived(HELLO + COMMAND + encodeFrame(LE16, arpRequest()))
        self.assertEqual(transport.value(), HELLO + expectedResponse(4000, GUEST_MAC)
                         + encodeFrame(LE16, arpReply()))

    def test_unknownUUIDRandomMAC(self):
        """
        A UUID not in the map gets a random locally administered unicast MAC,
        a different one each time.
        """
        macs = set()
        for _ in range(20):
            protocol, transport = self.connect({})
            protocol.dataReceived(HELLO + COMMAND)
            mac = transport.value()[len(HELLO) + 5:len(HELLO) + 11]
            self.assertEqual(mac[0] & 0x03, 0x02)
            macs.add(mac)
        self.assertEqual(len(macs), 20)
        for _ in range(100):
            mac = randomMAC()
            self.assertEqual(mac[0] & 0x03, 0x02)

    def test_badMTU(self):
        """
        An MTU the LE16 fields cannot hold is refused.
        """
        self.assertRaises(ValueError, vpnkitResponse, 65530, GUEST_MAC)
        self.assertEqual(len(vpnkitResponse(1500, GUEST_MAC)), 258)

    def test_badMapEntry(self):
        """
        A map entry that is no MAC is refused when the factory is built.
        """
        self.assertRaises(ValueError, VpnkitFactory, None, 1500, {UUID: "nope"})
