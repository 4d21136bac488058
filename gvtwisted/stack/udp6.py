"""
UDP ports on the gateway's IPv6 addresses: what C{IPv6Gateway.listenUDP}
hands out.

Like L{gvtwisted.stack.udp.VirtualUDPPort}, a port is an ordinary Twisted UDP
transport to its protocol, so twisted.names' C{DNSDatagramProtocol} and the
DHCPv6 server run on it unmodified; addresses are C{(text, port)} pairs with
IPv6 text addresses.
"""

import ipaddress

from zope.interface import implementer

from twisted.internet.address import IPv6Address
from twisted.internet.interfaces import IListeningPort, IUDPTransport

MAX_DATAGRAM = 65527


@implementer(IUDPTransport, IListeningPort)
class VirtualUDP6Port:
    """
    A bound virtual UDP port on IPv6.

    @ivar interface: the address it is bound to (text), C{""} for all of the
        gateway's; replies then come from the gateway address that suits the
        destination (link-local for link-local and multicast ones).
    """

    def __init__(self, gateway, port: int, protocol, interface: str = ""):
        self.gateway = gateway
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self._source = ipaddress.IPv6Address(interface).packed if interface else None
        self.connected = False

    def startListening(self):
        self.protocol.makeConnection(self)

    def stopListening(self):
        self.gateway._unbindUDP(self)
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.doStop()
        return None

    loseConnection = stopListening

    def write(self, datagram, addr=None):
        """
        Send C{datagram} to C{addr}, a C{(host, port)} pair in the network.
        """
        if len(datagram) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(datagram)} bytes is too long")
        host, port = addr[:2]
        dst = ipaddress.IPv6Address(host.split("%")[0]).packed
        src = self._source or self.gateway.sourceFor(dst)
        self.gateway.sendUDP(src, self.port, dst, port, bytes(datagram))

    def writeSequence(self, seq, addr):
        self.write(b"".join(seq), addr)

    def getHost(self):
        return IPv6Address("UDP", self.interface or "::", self.port)

    def connect(self, host, port):
        raise NotImplementedError("connected virtual UDP ports are not supported")

    def setBroadcastAllowed(self, enabled):
        pass

    def getBroadcastAllowed(self):
        return False
