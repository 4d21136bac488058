"""
DHCPv6 messages (RFC 8415) between a client and the gateway's server: the
client/server exchange only (relay messages are refused: there is no relay on
a virtual link), with the options a small server reads and writes: client and
server identifiers (DUIDs), IA_NA with its addresses and status codes, the
option request, elapsed time, rapid commit, DNS servers (RFC 3646, option 23)
and the domain search list (option 24).

A message is kept as its type, transaction id and the list of its options in
order (C{(code, bytes)}), so that options the server does not know survive a
parse and options it does know have one reader each.
"""

import struct

from gvtwisted.wire.icmpv6 import decodeDomainNames, encodeDomainNames

CLIENT_PORT = 546
SERVER_PORT = 547

SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
OPT_INFORMATION_REFRESH_TIME = 32

STATUS_SUCCESS = 0
STATUS_UNSPEC_FAIL = 1
STATUS_NO_ADDRS_AVAIL = 2
STATUS_NO_BINDING = 3
STATUS_NOT_ON_LINK = 4
STATUS_USE_MULTICAST = 5

DUID_LLT = 1
DUID_EN = 2
DUID_LL = 3
DUID_UUID = 4
HARDWARE_ETHERNET = 1

#: RFC 8415 11.1: a DUID is at most 128 bytes after its type.
MAX_DUID = 130

_OPTION = struct.Struct("!HH")
_IA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")


class DHCPv6Error(ValueError):
    """
    A message that cannot be used; C{reason} is a short counter name.
    """

    def __init__(self, reason: str):
        ValueError.__init__(self, reason)
        self.reason = reason


class Message:
    """
    A client/server DHCPv6 message.

    @ivar msgType: L{SOLICIT} ... L{INFORMATION_REQUEST}.
    @ivar transactionId: the 24-bit transaction id.
    @ivar options: C{(code, bytes)} in order.
    """

    __slots__ = ("msgType", "transactionId", "options")

    def __init__(self, msgType: int, transactionId: int, options=()):
        self.msgType = msgType
        self.transactionId = transactionId
        self.options = list(options)

    def get(self, code: int):
        """
        The data of the first option C{code}, or L{None}.
        """
        for c, data in self.options:
            if c == code:
                return data
        return None

    def getAll(self, code: int) -> list:
        return [data for c, data in self.options if c == code]

    def add(self, code: int, data: bytes):
        self.options.append((code, bytes(data)))
        return self

    @property
    def clientID(self):
        return self.get(OPT_CLIENTID)

    @property
    def serverID(self):
        return self.get(OPT_SERVERID)

    def requestedOptions(self) -> list:
        """
        The option codes of the option request option (empty if absent).

        @raise DHCPv6Error: if it has an odd length.
        """
        data = self.get(OPT_ORO)
        if data is None:
            return []
        if len(data) % 2:
            raise DHCPv6Error("dhcpv6.oroLength")
        return list(struct.unpack(f"!{len(data) // 2}H", data))

    def identityAssociations(self) -> list:
        """
        The IA_NA options, parsed (L{IdentityAssociation}).

        @raise DHCPv6Error: if one is malformed.
        """
        return [parseIANA(data) for data in self.getAll(OPT_IA_NA)]

    def toBytes(self) -> bytes:
        return build(self)


def parseOptions(data) -> list:
    """
    C{(code, bytes)} of each option in C{data}.

    @raise DHCPv6Error: if an option runs past the data.
    """
    options = []
    i = 0
    end = len(data)
    while i < end:
        if end - i < 4:
            raise DHCPv6Error("dhcpv6.optionShort")
        code, length = _OPTION.unpack_from(data, i)
        i += 4
        if i + length > end:
            raise DHCPv6Error("dhcpv6.optionLength")
        options.append((code, bytes(data[i:i + length])))
        i += length
    return options


def buildOptions(options) -> bytes:
    return b"".join(_OPTION.pack(code, len(data)) + bytes(data) for code, data in options)


def parse(data) -> Message:
    """
    Parse a client/server message.

    @raise DHCPv6Error: if short, a relay message, or an option is malformed.
    """
    if len(data) < 4:
        raise DHCPv6Error("dhcpv6.short")
    msgType = data[0]
    if msgType in (RELAY_FORW, RELAY_REPL):
        raise DHCPv6Error("dhcpv6.relay")
    if not SOLICIT <= msgType <= INFORMATION_REQUEST:
        raise DHCPv6Error("dhcpv6.unknownType")
    options = parseOptions(data[4:])
    for code, value in options:
        if code in (OPT_CLIENTID, OPT_SERVERID) and not 2 < len(value) <= MAX_DUID:
            raise DHCPv6Error("dhcpv6.duidLength")
    return Message(msgType, int.from_bytes(data[1:4], "big"), options)


def build(message: Message) -> bytes:
    return (bytes((message.msgType,)) + (message.transactionId & 0xFFFFFF).to_bytes(3, "big")
            + buildOptions(message.options))


# -- DUIDs ------------------------------------------------------------------

def duidLL(mac: bytes) -> bytes:
    """
    A DUID-LL (RFC 8415 11.4) for an Ethernet address: what the server
    identifies itself with, stable as long as the gateway's MAC is.
    """
    return struct.pack("!HH", DUID_LL, HARDWARE_ETHERNET) + mac


def duidMAC(duid: bytes):
    """
    The Ethernet address inside a DUID-LLT or DUID-LL, or L{None}.
    """
    if len(duid) == 10 and duid[:4] == b"\x00\x03\x00\x01":
        return bytes(duid[4:10])
    if len(duid) == 14 and duid[:4] == b"\x00\x01\x00\x01":
        return bytes(duid[8:14])
    return None


# -- identity associations --------------------------------------------------

class IAAddress:
    """
    An IA address option (RFC 8415 21.6).
    """

    __slots__ = ("address", "preferredLifetime", "validLifetime", "options")

    def __init__(self, address: bytes, preferredLifetime: int, validLifetime: int, options=()):
        self.address = address
        self.preferredLifetime = preferredLifetime
        self.validLifetime = validLifetime
        self.options = list(options)

    def toBytes(self) -> bytes:
        return (_IAADDR.pack(self.address, self.preferredLifetime, self.validLifetime)
                + buildOptions(self.options))


class IdentityAssociation:
    """
    An IA_NA option (RFC 8415 21.4): its IAID, T1, T2, addresses and other
    options (a status code).
    """

    __slots__ = ("iaid", "t1", "t2", "addresses", "options")

    def __init__(self, iaid: int, t1: int = 0, t2: int = 0, addresses=(), options=()):
        self.iaid = iaid
        self.t1 = t1
        self.t2 = t2
        self.addresses = list(addresses)
        self.options = list(options)

    def status(self):
        """
        C{(code, message)} of the status code option, or L{None}.
        """
        for code, data in self.options:
            if code == OPT_STATUS_CODE:
                return parseStatusCode(data)
        return None

    def toBytes(self) -> bytes:
        return (_IA.pack(self.iaid, self.t1, self.t2)
                + buildOptions([(OPT_IAADDR, a.toBytes()) for a in self.addresses])
                + buildOptions(self.options))


def parseIANA(data) -> IdentityAssociation:
    """
    @raise DHCPv6Error: if short or an inner option is malformed.
    """
    if len(data) < 12:
        raise DHCPv6Error("dhcpv6.iaShort")
    iaid, t1, t2 = _IA.unpack_from(data)
    ia = IdentityAssociation(iaid, t1, t2)
    for code, value in parseOptions(data[12:]):
        if code == OPT_IAADDR:
            if len(value) < 24:
                raise DHCPv6Error("dhcpv6.iaAddressShort")
            address, preferred, valid = _IAADDR.unpack_from(value)
            ia.addresses.append(IAAddress(address, preferred, valid, parseOptions(value[24:])))
        else:
            ia.options.append((code, value))
    return ia


def statusCode(code: int, message: str = "") -> bytes:
    """
    The data of a status code option.
    """
    return struct.pack("!H", code) + message.encode("utf-8")


def parseStatusCode(data):
    """
    C{(code, message)} of a status code option's data.

    @raise DHCPv6Error: if shorter than its code.
    """
    if len(data) < 2:
        raise DHCPv6Error("dhcpv6.statusShort")
    return struct.unpack_from("!H", data)[0], bytes(data[2:]).decode("utf-8", "replace")


# -- DNS configuration options ----------------------------------------------

def dnsServers(addresses) -> bytes:
    """
    The data of a DNS recursive name server option (23): 16-byte addresses.
    """
    return b"".join(addresses)


def parseDNSServers(data) -> list:
    """
    @raise DHCPv6Error: if the length is not a multiple of 16.
    """
    if len(data) % 16:
        raise DHCPv6Error("dhcpv6.dnsServersLength")
    return [bytes(data[i:i + 16]) for i in range(0, len(data), 16)]


def domainList(names) -> bytes:
    """
    The data of a domain search list option (24).
    """
    return encodeDomainNames(names)


def parseDomainList(data) -> list:
    """
    @raise DHCPv6Error: if a name is malformed.
    """
    try:
        return decodeDomainNames(data)
    except ValueError:
        raise DHCPv6Error("dhcpv6.domainList") from None
