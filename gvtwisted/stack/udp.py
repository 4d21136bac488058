"""
UDP ports on virtual addresses: what C{VirtualNetwork.listenUDP} hands out.

A port is an ordinary Twisted UDP transport as far as its protocol can tell, so
twisted.names' C{DNSDatagramProtocol} or our DHCP server run on it unmodified.
"""

import socket

from zope.interface import implementer

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IUDPTransport

MAX_DATAGRAM = 65507


@implementer(IUDPTransport, IListeningPort)
class VirtualUDPPort:
    """
    A bound virtual UDP port.

    @ivar interface: the dotted address it is bound to, C{""} for all.
    """

    def __init__(self, network, port: int, protocol, interface: str = ""):
        self.network = network
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self._source = socket.inet_aton(interface or str(network.config.gatewayIP))
        self.connected = False

    def startListening(self):
        self.protocol.makeConnection(self)

    def stopListening(self):
        self.network._unbindUDP(self)
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.doStop()
        return None

    loseConnection = stopListening

    def write(self, datagram, addr=None):
        """
        Send C{datagram} to C{addr} (a C{(host, port)} pair) in the network.
        """
        if len(datagram) > MAX_DATAGRAM:
            raise ValueError(f"datagram of {len(datagram)} bytes is too long")
        host, port = addr
        self.network.sendUDP(self._source, self.port, socket.inet_aton(host), port, datagram)

    def writeSequence(self, seq, addr):
        self.write(b"".join(seq), addr)

    def getHost(self):
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def connect(self, host, port):
        raise NotImplementedError("connected virtual UDP ports are not supported")

    def setBroadcastAllowed(self, enabled):
        pass

    def getBroadcastAllowed(self):
        return True
