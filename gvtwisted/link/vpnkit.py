"""
The vpnkit link, as hyperkit's C{virtio-vpnkit} device speaks it
(hyperkit's C{src/lib/pci_virtio_net_vpnkit.c}, gvproxy's
C{-listen-vpnkit}).

The handshake, then frames with a 2-byte little-endian length:

 1. hyperkit sends a 49-byte hello (C{"VMN3T"}, a version, a commit id);
    the host sends the same 49 bytes back;
 2. hyperkit sends a 41-byte command: a command byte, the VM's 36-character
    UUID at bytes 1..36, and reserved bytes;
 3. the host answers 258 bytes: C{0x01}, the MTU (LE16), the largest frame,
    MTU + 14 (LE16), the guest's MAC address (6 bytes), zeros.

The guest's MAC is the one its UUID maps to (gvproxy's
C{vpnKitUUIDMacAddresses}), else a random locally administered unicast
address, as gvproxy picks.
"""

import os
import struct

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from gvtwisted.link.framing import LE16
from gvtwisted.link.listeners import GuestLinkProtocol, _describe

HELLO_SIZE = 49
COMMAND_SIZE = 41
RESPONSE_SIZE = 258
ETHERNET_HEADER = 14


def randomMAC() -> bytes:
    """
    A random MAC with the locally administered bit set and the multicast bit
    clear.
    """
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] | 0x02) & 0xFE
    return bytes(mac)


def vpnkitResponse(mtu: int, mac: bytes) -> bytes:
    """
    The host's 258-byte answer to hyperkit's command.

    @raise ValueError: for an MTU that does not fit the LE16 fields.
    """
    if not 0 <= mtu + ETHERNET_HEADER <= 0xFFFF:
        raise ValueError(f"invalid MTU: {mtu}")
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
    return b"\x01" + struct.pack("<HH", mtu, mtu + ETHERNET_HEADER) + mac + b"\x00" * (
        RESPONSE_SIZE - 11)


class VpnkitHandshake(Protocol):
    """
    One hyperkit connection: the handshake, then a L{GuestLinkProtocol}
    with LE16 frames that joins the switch.

    @param macFor: a callable from the VM's UUID (C{str}) to its MAC
        (6 bytes).
    """

    log = Logger()

    def __init__(self, makePort, mtu, macFor, peerName):
        self._makePort = makePort
        self._mtu = mtu
        self._macFor = macFor
        self.peerName = peerName
        self._buffer = b""
        self._state = "hello"
        self._link = None
        self.uuid = None
        self.mac = None

    def dataReceived(self, data):
        if self._link is not None:
            self._link.dataReceived(data)
            return
        self._buffer += data
        if self._state == "hello":
            if len(self._buffer) < HELLO_SIZE:
                return
            hello, self._buffer = self._buffer[:HELLO_SIZE], self._buffer[HELLO_SIZE:]
            self.transport.write(hello)
            self._state = "command"
        if self._state == "command":
            if len(self._buffer) < COMMAND_SIZE:
                return
            command, rest = self._buffer[:COMMAND_SIZE], self._buffer[COMMAND_SIZE:]
            self._buffer = b""
            self.uuid = command[1:37].decode("ascii", "replace")
            try:
                self.mac = self._macFor(self.uuid)
                response = vpnkitResponse(self._mtu, self.mac)
            except ValueError as e:
                self.log.error("vpnkit link {peer}: {error}; closing it", peer=self.peerName, error=e)
                self.transport.loseConnection()
                self._state = "closed"
                return
            self.log.info("vpnkit link {peer}: VM {uuid} gets MAC {mac}", peer=self.peerName,
                          uuid=self.uuid, mac=":".join(f"{b:02x}" for b in self.mac))
            self.transport.write(response)
            self._state = "frames"
            self._link = GuestLinkProtocol(self._makePort, LE16, self.peerName)
            self._link.makeConnection(self.transport)
            if rest:
                self._link.dataReceived(rest)

    def connectionLost(self, reason):
        if self._link is not None:
            self._link.connectionLost(reason)


class VpnkitFactory(Factory):
    """
    Accepts hyperkit connections on a C{--listen-vpnkit} endpoint.

    @param uuidMACs: the UUID to MAC map (C{{"uuid": "5a:94:..."}} or to
        6 bytes), filled from the options or the YAML configuration's
        C{vpnKitUUIDMacAddresses}; looked up case-insensitively.
    """

    noisy = False

    def __init__(self, makePort, mtu, uuidMACs=None):
        self.makePort = makePort
        self.mtu = mtu
        self.uuidMACs = {}
        for uuid, mac in (uuidMACs or {}).items():
            self.uuidMACs[uuid.lower()] = mac if isinstance(mac, bytes) else _parseMAC(mac)

    def macFor(self, uuid: str) -> bytes:
        mac = self.uuidMACs.get(uuid.lower())
        return mac if mac is not None else randomMAC()

    def buildProtocol(self, addr):
        return VpnkitHandshake(self.makePort, self.mtu, self.macFor, f"vpnkit {_describe(addr)}")


def _parseMAC(text: str) -> bytes:
    parts = text.replace("-", ":").split(":")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        mac = b""
    if len(mac) != 6 or any(len(p) not in (1, 2) for p in parts):
        raise ValueError(f"{text!r} is not a MAC address")
    return mac
