"""
ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861, RFC 8106): the messages
the gateway receives from guests and the ones it sends them.

Every ICMPv6 checksum covers the IPv6 pseudo header, so parsing and building
both take the two addresses. Neighbor Discovery messages are small
representations (L{RouterAdvertisement}, L{NeighborMessage}, ...) with a
parser that raises only L{ICMPv6Error} and a builder that is its inverse.
"""

import struct

from gvtwisted.wire.ipv6 import (
    HEADER_LEN, MIN_MTU, PROTO_ICMPV6, upperChecksum, upperChecksumOK,
)

HEADER = struct.Struct("!BBH")

DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAMETER_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOR_SOLICITATION = 135
NEIGHBOR_ADVERTISEMENT = 136
REDIRECT = 137

# Codes of DEST_UNREACHABLE
NO_ROUTE = 0
ADMIN_PROHIBITED = 1
BEYOND_SCOPE = 2
ADDRESS_UNREACHABLE = 3
PORT_UNREACHABLE = 4
# Codes of TIME_EXCEEDED
HOP_LIMIT_EXCEEDED = 0
REASSEMBLY_TIME_EXCEEDED = 1

# NDP option types
OPT_SOURCE_LL = 1
OPT_TARGET_LL = 2
OPT_PREFIX = 3
OPT_MTU = 5
OPT_RDNSS = 25
OPT_DNSSL = 31

# Router advertisement flags
RA_MANAGED = 0x80
RA_OTHER = 0x40
# Prefix information flags
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40
# Neighbor advertisement flags (the first byte of the reserved word)
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20

#: An error quotes as much of the invoking packet as keeps it within the
#: minimum MTU (RFC 4443 2.4 (c)).
MAX_QUOTE = MIN_MTU - HEADER_LEN - 8

_RA = struct.Struct("!BBHII")
_PREFIX = struct.Struct("!BBBBIII16s")
_MTU = struct.Struct("!BBHI")
_LIFETIME_OPTION = struct.Struct("!BBHI")
_NEIGHBOR = struct.Struct("!I16s")


class ICMPv6Error(ValueError):
    """
    A message that fails validation; C{reason} is a short counter name.
    """

    def __init__(self, reason: str):
        ValueError.__init__(self, reason)
        self.reason = reason


def parse(src: bytes, dst: bytes, message, verify: bool = True):
    """
    C{(type, code, body)} of an ICMPv6 message; C{body} is everything after
    the checksum.

    @raise ICMPv6Error: if short or (with C{verify}) its checksum is wrong.
    """
    if len(message) < 4:
        raise ICMPv6Error("icmpv6.short")
    if verify and not upperChecksumOK(src, dst, PROTO_ICMPV6, message):
        raise ICMPv6Error("icmpv6.checksum")
    return message[0], message[1], message[4:]


def build(src: bytes, dst: bytes, icmpType: int, code: int, body: bytes) -> bytes:
    """
    An ICMPv6 message: type, code, checksum, then C{body}.
    """
    message = bytearray(HEADER.pack(icmpType, code, 0))
    message += body
    csum = upperChecksum(src, dst, PROTO_ICMPV6, message)
    message[2] = csum >> 8
    message[3] = csum & 0xFF
    return bytes(message)


# -- echo and errors --------------------------------------------------------

def echo(src: bytes, dst: bytes, ident: int, sequence: int, data: bytes = b"",
         reply: bool = False) -> bytes:
    """
    An echo request (or reply) with identifier, sequence number and data.
    """
    return build(src, dst, ECHO_REPLY if reply else ECHO_REQUEST, 0,
                 struct.pack("!HH", ident & 0xFFFF, sequence & 0xFFFF) + bytes(data))


def parseEcho(body):
    """
    C{(ident, sequence, data)} of an echo body.

    @raise ICMPv6Error: if shorter than its identifier and sequence.
    """
    if len(body) < 4:
        raise ICMPv6Error("icmpv6.echoShort")
    ident, sequence = struct.unpack_from("!HH", body)
    return ident, sequence, body[4:]


def _error(src, dst, icmpType, code, word, invoking):
    return build(src, dst, icmpType, code,
                 word.to_bytes(4, "big") + bytes(invoking[:MAX_QUOTE]))


def destinationUnreachable(src: bytes, dst: bytes, code: int, invoking) -> bytes:
    """
    A destination unreachable error quoting the invoking packet (its IPv6
    header first) as far as the minimum MTU allows.
    """
    return _error(src, dst, DEST_UNREACHABLE, code, 0, invoking)


def packetTooBig(src: bytes, dst: bytes, mtu: int, invoking) -> bytes:
    """
    A packet too big error telling the MTU of the next hop.
    """
    return _error(src, dst, PACKET_TOO_BIG, 0, mtu, invoking)


def timeExceeded(src: bytes, dst: bytes, code: int, invoking) -> bytes:
    """
    A time exceeded error (code L{HOP_LIMIT_EXCEEDED} or
    L{REASSEMBLY_TIME_EXCEEDED}).
    """
    return _error(src, dst, TIME_EXCEEDED, code, 0, invoking)


def parameterProblem(src: bytes, dst: bytes, code: int, pointer: int, invoking) -> bytes:
    """
    A parameter problem error pointing at the offending byte.
    """
    return _error(src, dst, PARAMETER_PROBLEM, code, pointer, invoking)


# -- Neighbor Discovery options ---------------------------------------------

class PrefixInformation:
    """
    A prefix information option (RFC 4861 4.6.2).
    """

    __slots__ = ("prefix", "prefixLength", "flags", "validLifetime", "preferredLifetime")

    def __init__(self, prefix: bytes, prefixLength: int, flags: int = PREFIX_ON_LINK | PREFIX_AUTONOMOUS,
                 validLifetime: int = 86400, preferredLifetime: int = 14400):
        self.prefix = prefix
        self.prefixLength = prefixLength
        self.flags = flags
        self.validLifetime = validLifetime
        self.preferredLifetime = preferredLifetime

    def __eq__(self, other):
        return isinstance(other, PrefixInformation) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self):
        return (f"<PrefixInformation {self.prefix.hex()}/{self.prefixLength} "
                f"flags={self.flags:#x} valid={self.validLifetime} "
                f"preferred={self.preferredLifetime}>")


class NDOptions:
    """
    The options of one Neighbor Discovery message that the gateway reads or
    writes; anything else is skipped on parsing (RFC 4861 4.6: unknown
    options are ignored).

    @ivar sourceLinkLayer: the source link-layer address (6 bytes) or L{None}.
    @ivar targetLinkLayer: the target link-layer address or L{None}.
    @ivar prefixes: a list of L{PrefixInformation}.
    @ivar mtu: the MTU option's value or L{None}.
    @ivar rdnss: C{(lifetime, [16-byte addresses])} or L{None}.
    @ivar dnssl: C{(lifetime, [domain names as str])} or L{None}.
    """

    __slots__ = ("sourceLinkLayer", "targetLinkLayer", "prefixes", "mtu", "rdnss", "dnssl")

    def __init__(self, sourceLinkLayer=None, targetLinkLayer=None, prefixes=(), mtu=None,
                 rdnss=None, dnssl=None):
        self.sourceLinkLayer = sourceLinkLayer
        self.targetLinkLayer = targetLinkLayer
        self.prefixes = list(prefixes)
        self.mtu = mtu
        self.rdnss = rdnss
        self.dnssl = dnssl


def encodeDomainNames(names) -> bytes:
    """
    Domain names in DNS wire form, uncompressed, one after the other (the
    DNSSL option's and DHCPv6's search lists).

    @raise ValueError: for an empty label or a label over 63 bytes.
    """
    out = bytearray()
    for name in names:
        for label in name.rstrip(".").split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
            if not 1 <= len(raw) <= 63:
                raise ValueError(f"bad domain label in {name!r}")
            out.append(len(raw))
            out += raw
        out.append(0)
    return bytes(out)


def decodeDomainNames(data, padded: bool = False) -> list:
    """
    The inverse of L{encodeDomainNames}. With C{padded} (the DNSSL option),
    zero bytes after the last name are padding.

    @raise ValueError: for a compression pointer, a name that runs past the
        data, or a name over 255 bytes.
    """
    names = []
    i = 0
    end = len(data)
    while i < end:
        if padded and data[i] == 0:
            if any(data[i:end]):
                raise ValueError("domain list padding is not zero")
            break
        labels = []
        size = 0
        while True:
            if i >= end:
                raise ValueError("domain name runs past the data")
            length = data[i]
            i += 1
            if length == 0:
                break
            if length > 63:
                raise ValueError("compressed or oversized domain label")
            if i + length > end:
                raise ValueError("domain label runs past the data")
            labels.append(bytes(data[i:i + length]).decode("ascii", "replace"))
            size += length + 1
            if size > 255:
                raise ValueError("domain name over 255 bytes")
            i += length
        if not labels:
            raise ValueError("empty domain name")
        names.append(".".join(labels))
    return names


def parseOptions(data) -> NDOptions:
    """
    Parse the options area of a Neighbor Discovery message.

    @raise ICMPv6Error: for an option of length 0, one that runs past the
        message, or a known option of the wrong size (RFC 4861 4.6: such a
        message is discarded).
    """
    options = NDOptions()
    i = 0
    end = len(data)
    while i < end:
        if end - i < 2:
            raise ICMPv6Error("ndp.optionShort")
        kind = data[i]
        length = data[i + 1] * 8
        if length == 0:
            raise ICMPv6Error("ndp.optionZeroLength")
        if i + length > end:
            raise ICMPv6Error("ndp.optionLength")
        body = data[i:i + length]
        if kind in (OPT_SOURCE_LL, OPT_TARGET_LL):
            if length != 8:
                raise ICMPv6Error("ndp.linkLayerLength")
            mac = bytes(body[2:8])
            if kind == OPT_SOURCE_LL:
                options.sourceLinkLayer = mac
            else:
                options.targetLinkLayer = mac
        elif kind == OPT_PREFIX:
            if length != 32:
                raise ICMPv6Error("ndp.prefixLength")
            _, _, plen, flags, valid, preferred, _, prefix = _PREFIX.unpack_from(body)
            if plen > 128:
                raise ICMPv6Error("ndp.prefixLength")
            options.prefixes.append(PrefixInformation(prefix, plen, flags, valid, preferred))
        elif kind == OPT_MTU:
            if length != 8:
                raise ICMPv6Error("ndp.mtuLength")
            options.mtu = _MTU.unpack_from(body)[3]
        elif kind == OPT_RDNSS:
            if length < 24 or (length - 8) % 16:
                raise ICMPv6Error("ndp.rdnssLength")
            lifetime = _LIFETIME_OPTION.unpack_from(body)[3]
            options.rdnss = (lifetime, [bytes(body[j:j + 16]) for j in range(8, length, 16)])
        elif kind == OPT_DNSSL:
            if length < 16:
                raise ICMPv6Error("ndp.dnsslLength")
            lifetime = _LIFETIME_OPTION.unpack_from(body)[3]
            try:
                names = decodeDomainNames(body[8:], padded=True)
            except ValueError:
                raise ICMPv6Error("ndp.dnsslName") from None
            options.dnssl = (lifetime, names)
        i += length
    return options


def _lifetimeOption(kind, lifetime, data):
    data += b"\x00" * (-len(data) % 8)
    return _LIFETIME_OPTION.pack(kind, 1 + len(data) // 8, 0, lifetime) + data


def buildOptions(options: NDOptions) -> bytes:
    """
    The options area for C{options}: link-layer addresses, prefixes, MTU,
    RDNSS, DNSSL, in that order.
    """
    out = bytearray()
    if options.sourceLinkLayer is not None:
        out += bytes((OPT_SOURCE_LL, 1)) + options.sourceLinkLayer
    if options.targetLinkLayer is not None:
        out += bytes((OPT_TARGET_LL, 1)) + options.targetLinkLayer
    for p in options.prefixes:
        out += _PREFIX.pack(OPT_PREFIX, 4, p.prefixLength, p.flags, p.validLifetime,
                            p.preferredLifetime, 0, p.prefix)
    if options.mtu is not None:
        out += _MTU.pack(OPT_MTU, 1, 0, options.mtu)
    if options.rdnss is not None:
        lifetime, servers = options.rdnss
        out += _lifetimeOption(OPT_RDNSS, lifetime, b"".join(servers))
    if options.dnssl is not None:
        lifetime, names = options.dnssl
        out += _lifetimeOption(OPT_DNSSL, lifetime, encodeDomainNames(names))
    return bytes(out)


# -- Neighbor Discovery messages --------------------------------------------

class RouterAdvertisement:
    """
    A router advertisement (RFC 4861 4.2).

    @ivar routerLifetime: seconds, 0 for "not a default router".
    @ivar flags: L{RA_MANAGED} / L{RA_OTHER}.
    """

    __slots__ = ("curHopLimit", "flags", "routerLifetime", "reachableTime",
                 "retransTimer", "options")

    def __init__(self, curHopLimit=64, flags=0, routerLifetime=1800, reachableTime=0,
                 retransTimer=0, options=None):
        self.curHopLimit = curHopLimit
        self.flags = flags
        self.routerLifetime = routerLifetime
        self.reachableTime = reachableTime
        self.retransTimer = retransTimer
        self.options = options if options is not None else NDOptions()


class NeighborMessage:
    """
    A neighbor solicitation or advertisement (RFC 4861 4.3, 4.4).

    @ivar flags: for an advertisement, L{NA_ROUTER} | L{NA_SOLICITED} |
        L{NA_OVERRIDE}; 0 for a solicitation.
    @ivar target: the 16-byte target address.
    """

    __slots__ = ("flags", "target", "options")

    def __init__(self, target, flags=0, options=None):
        self.target = target
        self.flags = flags
        self.options = options if options is not None else NDOptions()


def parseRouterSolicitation(body) -> NDOptions:
    """
    The options of a router solicitation's C{body} (after the checksum).

    @raise ICMPv6Error: if short or its options are malformed.
    """
    if len(body) < 4:
        raise ICMPv6Error("ndp.rsShort")
    return parseOptions(body[4:])


def buildRouterSolicitation(src: bytes, dst: bytes, sourceLinkLayer=None) -> bytes:
    return build(src, dst, ROUTER_SOLICITATION, 0,
                 b"\x00" * 4 + buildOptions(NDOptions(sourceLinkLayer=sourceLinkLayer)))


def parseRouterAdvertisement(body) -> RouterAdvertisement:
    """
    @raise ICMPv6Error: if short or its options are malformed.
    """
    if len(body) < 12:
        raise ICMPv6Error("ndp.raShort")
    hop, flags, lifetime, reachable, retrans = _RA.unpack_from(body)
    return RouterAdvertisement(hop, flags, lifetime, reachable, retrans,
                               parseOptions(body[12:]))


def buildRouterAdvertisement(src: bytes, dst: bytes, ra: RouterAdvertisement) -> bytes:
    return build(src, dst, ROUTER_ADVERTISEMENT, 0,
                 _RA.pack(ra.curHopLimit, ra.flags, ra.routerLifetime, ra.reachableTime,
                          ra.retransTimer) + buildOptions(ra.options))


def parseNeighborMessage(body) -> NeighborMessage:
    """
    A neighbor solicitation's or advertisement's C{body}.

    @raise ICMPv6Error: if short, the target is multicast (RFC 4861 7.1.1),
        or its options are malformed.
    """
    if len(body) < 20:
        raise ICMPv6Error("ndp.neighborShort")
    word, target = _NEIGHBOR.unpack_from(body)
    if target[0] == 0xFF:
        raise ICMPv6Error("ndp.multicastTarget")
    return NeighborMessage(target, word >> 24, parseOptions(body[20:]))


def buildNeighborSolicitation(src: bytes, dst: bytes, target: bytes, sourceLinkLayer=None) -> bytes:
    return build(src, dst, NEIGHBOR_SOLICITATION, 0,
                 _NEIGHBOR.pack(0, target)
                 + buildOptions(NDOptions(sourceLinkLayer=sourceLinkLayer)))


def buildNeighborAdvertisement(src: bytes, dst: bytes, target: bytes, flags: int,
                               targetLinkLayer=None) -> bytes:
    return build(src, dst, NEIGHBOR_ADVERTISEMENT, 0,
                 _NEIGHBOR.pack(flags << 24, target)
                 + buildOptions(NDOptions(targetLinkLayer=targetLinkLayer)))
