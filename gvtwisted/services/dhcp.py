"""
The DHCP server of the virtual network (RFC 2131, options of RFC 2132).

It is an ordinary L{DatagramProtocol}: the virtual network binds it to the
gateway's UDP port 67 and writes what it sends as an Ethernet broadcast, so the
server never needs to know which link a client is on.

What a client gets, in order of preference (RFC 2131 section 4.3.1):

  1. the static lease configured for its hardware address (C{chaddr});
  2. the address it already holds, live or expired but not yet reclaimed;
  3. the address it asks for (option 50), if that address is free;
  4. the first pool address that was never leased or was released;
  5. the pool lease that expired longest ago, reclaimed.

The pool is every usable host address of the subnet except the server, the
reserved addresses (the host address, for instance) and the static ones.

The lease table is bounded (L{DHCPConfig.maxLeases}); when it is full and no
expired lease can be reclaimed, a new client gets nothing and the refusal is
counted. An offered address is held for L{DHCPServer.offerHoldTime} seconds
only (5), so a flood of DISCOVERs from made-up hardware addresses holds its
offers for seconds, not for a lease time; and the clients behind one guest
link hold at most L{DHCPConfig.maxLeasesPerLink} live leases, so one link cannot
take the pool from the others. Static leases do not count toward the cap:
they are bounded by the configuration and must always be honoured.

Parsing and building use C{dpkt.dhcp}: DHCP is control plane, not hot path.
Anything malformed is dropped with a counted, rate-limited complaint; nothing
a guest sends can raise out of L{DHCPServer.datagramReceived}.
"""

import ipaddress
import struct
from dataclasses import dataclass, field

import dpkt
from dpkt import dhcp as _dhcp
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gvtwisted.stack.counters import Counters

# Message types (option 53).
DISCOVER = _dhcp.DHCPDISCOVER
OFFER = _dhcp.DHCPOFFER
REQUEST = _dhcp.DHCPREQUEST
DECLINE = _dhcp.DHCPDECLINE
ACK = _dhcp.DHCPACK
NAK = _dhcp.DHCPNAK
RELEASE = _dhcp.DHCPRELEASE
INFORM = _dhcp.DHCPINFORM

# Option codes used here.
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_MTU = 26
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_MAX_MESSAGE_SIZE = 57
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59
OPT_CLIENT_ID = 61
OPT_DOMAIN_SEARCH = 119

CLIENT_PORT = 68
BROADCAST = ("255.255.255.255", CLIENT_PORT)

# The fixed BOOTP header (236 bytes) plus the magic cookie.
_HEADER_SIZE = 240
# BOOTP's historic minimum message; many clients and relays expect it.
_MIN_REPLY_SIZE = 300
# RFC 2131: every client must accept a 576-byte IP datagram, which leaves
# 576 - 20 (IPv4) - 8 (UDP) bytes of DHCP message.
_DEFAULT_MAX_MESSAGE = 576 - 28

_NAMES = {
    DISCOVER: "discover",
    REQUEST: "request",
    DECLINE: "decline",
    RELEASE: "release",
    INFORM: "inform",
}


def normalizeMAC(mac: str) -> str:
    """
    Spell a hardware address the way the lease table and the API do:
    lower case, colon-separated (C{"5a:94:ef:e4:0c:ee"}).
    """
    return mac.strip().lower().replace("-", ":")


def _formatMAC(raw: bytes) -> str:
    return ":".join("%02x" % b for b in raw)


def _domainLabels(name: str):
    """
    The wire labels of the domain C{name}, or L{None} when it cannot be put
    on the wire (an empty label, a label over 63 bytes, a name over 255 bytes,
    or characters that neither ASCII nor IDNA can spell).
    """
    name = name.strip().rstrip(".")
    if not name:
        return None
    try:
        raw = name.encode("ascii")
    except UnicodeError:
        try:
            raw = name.encode("idna")
        except UnicodeError:
            return None
    labels = raw.split(b".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        return None
    return labels


def encodeSearchDomains(domains) -> bytes:
    """
    Encode a domain search list as the data of option 119 (RFC 3397): the
    names in DNS wire format, one after the other, with RFC 1035 compression
    pointers whose offsets count from the start of this data.

    Names that cannot be encoded and repeated names are left out, so one bad
    line in resolv.conf does not cost the guest the whole list.
    """
    out = bytearray()
    offsets = {}
    seen = set()
    for name in domains:
        labels = _domainLabels(name)
        if labels is None:
            continue
        key = tuple(label.lower() for label in labels)
        if key in seen:
            continue
        seen.add(key)
        for i in range(len(labels)):
            pointer = offsets.get(key[i:])
            if pointer is not None:
                out += struct.pack("!H", 0xC000 | pointer)
                break
            if len(out) < 0x3FFF:
                offsets[key[i:]] = len(out)
            out.append(len(labels[i]))
            out += labels[i]
        else:
            out.append(0)
    return bytes(out)


def searchDomainsFromResolvConf(path: str = "/etc/resolv.conf") -> list:
    """
    The domain search list of a resolv.conf: the names of its last C{search}
    line or, when it has none, the name of its last C{domain} line.

    The guest should resolve short names the way the host does, so the DHCP
    server hands this list out as option 119. A missing or unreadable file
    gives an empty list; the root domain (C{search .}, as some resolvers
    write) and repeated names are dropped.

    @param path: the file to read.
    @return: the domains, without trailing dots, in file order.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return []
    search = None
    domain = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        if words[0] == "search":
            search = words[1:]
        elif words[0] == "domain":
            domain = words[1:2]
    names = search if search is not None else (domain or [])
    result = []
    for name in names:
        if name[0] in "#;":
            break
        name = name.rstrip(".")
        if name and name not in result:
            result.append(name)
    return result


@dataclass
class DHCPConfig:
    """
    What the DHCP server hands out.

    @ivar serverIP: the gateway; the server identifier (option 54) and the
        router (option 3).
    @ivar subnet: the virtual network (option 1 is its netmask). A string is
        accepted and converted.
    @ivar dnsServers: option 6; omitted when empty.
    @ivar mtu: option 26.
    @ivar leaseTime: option 51, in seconds; 58 and 59 are derived from it.
    @ivar staticLeases: hardware address (any case) to IP address.
    @ivar reserved: addresses never leased from the pool.
    @ivar searchDomains: option 119; omitted when empty.
    @ivar maxLeases: cap on the number of pool leases kept.
    @ivar maxLeasesPerLink: cap on the live pool leases (offered or bound) of
        the clients behind one guest link, when the server is told links
        apart (C{linkOf}).
    """

    serverIP: str
    subnet: ipaddress.IPv4Network
    dnsServers: list = field(default_factory=list)
    mtu: int = 1500
    leaseTime: int = 3600
    staticLeases: dict = field(default_factory=dict)
    reserved: set = field(default_factory=set)
    searchDomains: list = field(default_factory=list)
    maxLeases: int = 4096
    maxLeasesPerLink: int = 16

    def __post_init__(self):
        self.subnet = ipaddress.IPv4Network(self.subnet, strict=False)
        self.staticLeases = {
            normalizeMAC(mac): str(ip) for mac, ip in self.staticLeases.items()
        }
        self.reserved = {str(ip) for ip in self.reserved}
        self.dnsServers = [str(ip) for ip in self.dnsServers]
        self.searchDomains = list(self.searchDomains)


class _Lease:
    """
    A pool address given to one hardware address until C{expires}.

    @ivar bound: whether the client took it with a REQUEST; an address that
        was only offered may be dropped when the client picks another server.
    """

    __slots__ = ("mac", "expires", "bound")

    def __init__(self, mac: str, expires: float, bound: bool):
        self.mac = mac
        self.expires = expires
        self.bound = bound


class _Message:
    """
    The fields of a client message that the server acts on, checked.
    """

    __slots__ = (
        "packet",
        "type",
        "mac",
        "requested",
        "serverID",
        "clientID",
        "maxSize",
    )


class DHCPServer(DatagramProtocol):
    """
    A DHCP server for one virtual subnet.

    @ivar offerHoldTime: seconds an offered address stays held for the client
        that was offered it (RFC 2131 4.3.1 says to reserve it for a while).
    @ivar declineHoldTime: seconds an address a client declined (it found the
        address in use) is kept out of the pool.
    """

    noisy = False  # no "Starting protocol" line at every start

    log = Logger()

    offerHoldTime = 5
    declineHoldTime = 600

    def __init__(self, config: DHCPConfig, clock, counters=None, linkOf=None):
        """
        @param linkOf: L{None}, or a callable from a client's hardware address
            (C{"5a:94:..."}) to the guest link it is behind (any hashable, or
            L{None}): then one link holds at most C{config.maxLeasesPerLink}
            pool leases, counted even after its MACs rotate.
        """
        self.config = config
        self._clock = clock
        self._linkOf = linkOf
        # link -> the MACs whose pool lease was bound while behind it.
        self._linkLeases = {}
        # mac -> the link its lease is counted against.
        self._leaseLink = {}
        self._counters = counters if counters is not None else Counters(clock)

        subnet = config.subnet
        network = int(subnet.network_address)
        broadcast = int(subnet.broadcast_address)
        if subnet.prefixlen <= 30:
            self._first, self._last = network + 1, broadcast - 1
        else:
            self._first, self._last = network, broadcast
        self._network = network
        self._broadcast = broadcast
        self._server = int(ipaddress.IPv4Address(config.serverIP))

        self._static = {
            mac: int(ipaddress.IPv4Address(ip))
            for mac, ip in config.staticLeases.items()
        }
        self._excluded = {self._server, network, broadcast}
        self._excluded.update(int(ipaddress.IPv4Address(ip)) for ip in config.reserved)
        self._excluded.update(self._static.values())

        # ip -> mac of static leases handed out at least once (for leases()).
        self._staticGiven = {}
        # Pool leases: ip -> _Lease, and the index mac -> ip.
        self._leases = {}
        self._byMac = {}
        # Declined pool addresses: ip -> time they become usable again.
        self._declined = {}

        self._serverID = struct.pack("!I", self._server)
        self._commonOptions = self._buildCommonOptions(config)
        self._searchOptions = self._buildSearchOptions(config.searchDomains)

    # Configuration turned into option data once.

    def _buildCommonOptions(self, config):
        options = [
            (OPT_SUBNET_MASK, config.subnet.netmask.packed),
            (OPT_ROUTER, self._serverID),
        ]
        if config.dnsServers:
            options.append(
                (
                    OPT_DNS,
                    b"".join(
                        ipaddress.IPv4Address(ip).packed for ip in config.dnsServers
                    ),
                )
            )
        options.append((OPT_MTU, struct.pack("!H", config.mtu)))
        return options

    def _buildSearchOptions(self, domains):
        encoded = encodeSearchDomains(domains)
        # RFC 3396: data longer than 255 bytes goes in consecutive instances
        # of the option, which the client concatenates.
        return [
            (OPT_DOMAIN_SEARCH, encoded[i : i + 255])
            for i in range(0, len(encoded), 255)
        ]

    # Public interface.

    def leases(self) -> dict:
        """
        The live leases, address to hardware address, sorted by address: every
        static lease handed out at least once, and every pool lease (offered or
        bound) that has not expired.
        """
        now = self._clock.seconds()
        table = dict(self._staticGiven)
        for ip, lease in self._leases.items():
            if lease.expires > now:
                table[ip] = lease.mac
        return {
            str(ipaddress.IPv4Address(ip)): mac for ip, mac in sorted(table.items())
        }

    def macFor(self, ip: str):
        """
        The hardware address holding the live lease on C{ip}, or L{None}.

        A cheaper question than L{leases} for a caller that checks one
        address, e.g. to tell whether a frame's source IP is its sender's.
        """
        address = int(ipaddress.IPv4Address(ip))
        mac = self._staticGiven.get(address)
        if mac is not None:
            return mac
        lease = self._leases.get(address)
        if lease is not None and lease.expires > self._clock.seconds():
            return lease.mac
        return None

    def datagramReceived(self, data, addr):
        """
        Answer one client message. Nothing raises out of here: malformed input
        is dropped and counted, and an unexpected failure is logged and counted
        as C{dhcp.internalError} rather than taking the network down.
        """
        try:
            message = self._parse(data)
            if message is not None:
                self._dispatch(message)
        except Exception:
            self.log.failure("DHCP server failed on a message from {addr}", addr=addr)
            self._counters.complain("dhcp.internalError")

    # Parsing.

    def _parse(self, data):
        """
        Decode and check a client message.

        @return: a L{_Message}, or L{None} after counting why it was dropped.
        """
        complain = self._counters.complain
        if len(data) < _HEADER_SIZE:
            complain("dhcp.short", "%d bytes" % (len(data),))
            return None
        try:
            packet = _dhcp.DHCP(bytes(data))
        except (dpkt.Error, struct.error, IndexError, ValueError, TypeError):
            complain("dhcp.unparseable")
            return None
        if packet.op != _dhcp.DHCP_OP_REQUEST:
            complain("dhcp.notRequest", "op %d" % (packet.op,))
            return None
        if packet.magic != _dhcp.DHCP_MAGIC:
            complain("dhcp.badMagic")
            return None
        if packet.hrd != 1 or packet.hln != 6:
            complain(
                "dhcp.badHardware", "htype %d hlen %d" % (packet.hrd, packet.hln)
            )
            return None
        chaddr = bytes(packet.chaddr[:6])
        if chaddr[0] & 1 or chaddr == b"\x00" * 6:
            # A multicast or all-zero source cannot be a client's NIC.
            complain("dhcp.badHardware", _formatMAC(chaddr))
            return None

        options = {}
        for code, value in packet.opts:
            # A repeated option: the first one counts.
            options.setdefault(code, bytes(value))

        msgType = options.get(OPT_MESSAGE_TYPE)
        if msgType is None:
            complain("dhcp.noMessageType")
            return None
        if len(msgType) != 1 or msgType[0] not in _NAMES:
            complain("dhcp.badMessageType", repr(msgType[:4]))
            return None

        message = _Message()
        message.packet = packet
        message.type = msgType[0]
        message.mac = _formatMAC(chaddr)
        for name, code in (("requested", OPT_REQUESTED_IP), ("serverID", OPT_SERVER_ID)):
            value = options.get(code)
            if value is not None:
                if len(value) != 4:
                    complain("dhcp.badOption", "option %d length %d" % (code, len(value)))
                    return None
                value = struct.unpack("!I", value)[0]
            setattr(message, name, value)
        message.clientID = options.get(OPT_CLIENT_ID)
        message.maxSize = _DEFAULT_MAX_MESSAGE
        size = options.get(OPT_MAX_MESSAGE_SIZE)
        if size is not None and len(size) == 2:
            # Counted as an IP datagram; RFC 2132 says it is at least 576.
            message.maxSize = max(struct.unpack("!H", size)[0], 576) - 28
        return message

    def _dispatch(self, message):
        self._counters.increment("dhcp." + _NAMES[message.type])
        if message.type == DISCOVER:
            self._discover(message)
        elif message.type == REQUEST:
            self._request(message)
        elif message.type == RELEASE:
            self._release(message)
        elif message.type == DECLINE:
            self._decline(message)
        else:
            self._inform(message)

    # The lease table.

    def _inPool(self, ip: int) -> bool:
        return self._first <= ip <= self._last and ip not in self._excluded

    def _availableFor(self, ip: int, mac: str, now: float) -> bool:
        """
        Whether the pool address C{ip} may be given to C{mac}: it is in the
        pool, not declined, and not held by another client's live lease.
        """
        if not self._inPool(ip):
            return False
        if self._declined.get(ip, now) > now:
            return False
        lease = self._leases.get(ip)
        return lease is None or lease.mac == mac or lease.expires <= now

    def _drop(self, ip: int):
        lease = self._leases.pop(ip, None)
        if lease is not None and self._byMac.get(lease.mac) == ip:
            del self._byMac[lease.mac]
            self._unlinkLease(lease.mac)

    def _unlinkLease(self, mac):
        link = self._leaseLink.pop(mac, None)
        if link is not None:
            macs = self._linkLeases.get(link)
            if macs is not None:
                macs.discard(mac)
                if not macs:
                    del self._linkLeases[link]

    def _linkFull(self, mac: str, now: float) -> bool:
        """
        Whether C{mac}'s link already holds its share of live pool leases
        (counted and complained about).
        """
        if self._linkOf is None:
            return False
        link = self._linkOf(mac)
        if link is None:
            return False
        macs = self._linkLeases.get(link, ())
        live = 0
        for other in macs:
            ip = self._byMac.get(other)
            lease = self._leases.get(ip) if ip is not None else None
            if lease is not None and lease.expires > now:
                live += 1
        if live >= self.config.maxLeasesPerLink:
            self._counters.complain("dhcp.linkLeasesFull", mac)
            return True
        return False

    def _recordLink(self, mac: str):
        """
        Count C{mac}'s pool lease against the link it is behind now.
        """
        if self._linkOf is None or mac in self._leaseLink:
            return
        link = self._linkOf(mac)
        if link is not None:
            self._linkLeases.setdefault(link, set()).add(mac)
            self._leaseLink[mac] = link

    def _oldestExpired(self, now: float):
        """
        The address of the pool lease that expired first, or L{None}.
        """
        best = None
        bestExpires = now
        for ip, lease in self._leases.items():
            if lease.expires <= bestExpires and self._declined.get(ip, now) <= now:
                best, bestExpires = ip, lease.expires
        return best

    def _firstFree(self, now: float):
        """
        The lowest pool address never leased (or released), else the one whose
        lease expired longest ago, else L{None}.

        The scan stops at the first free address, so it visits at most as many
        addresses as there are leases, exclusions and declines, plus one.
        """
        leases = self._leases
        excluded = self._excluded
        declined = self._declined
        for ip in range(self._first, self._last + 1):
            if ip in excluded or ip in leases:
                continue
            if declined.get(ip, now) > now:
                continue
            return ip
        return self._oldestExpired(now)

    def _bind(self, ip: int, mac: str, expires: float, bound: bool) -> bool:
        """
        Record that the pool address C{ip} belongs to C{mac}, moving the
        client's previous lease and taking over an expired one of another
        client. C{ip} must be available to C{mac}.

        @return: L{False} when the table is full and nothing can be reclaimed.
        """
        previous = self._byMac.get(mac)
        holder = self._leases.get(ip)
        if previous is None and self._linkFull(mac, self._clock.seconds()):
            return False
        grows = previous is None and holder is None
        if grows and len(self._leases) >= self.config.maxLeases:
            victim = self._oldestExpired(self._clock.seconds())
            if victim is None:
                self._counters.complain("dhcp.tableFull", mac)
                return False
            self._drop(victim)
        if previous is not None and previous != ip:
            self._drop(previous)
        if holder is not None and holder.mac != mac:
            self._drop(ip)
        self._leases[ip] = _Lease(mac, expires, bound)
        self._byMac[mac] = ip
        self._recordLink(mac)
        return True

    def _pruneDeclined(self, now: float):
        for ip in [ip for ip, until in self._declined.items() if until <= now]:
            del self._declined[ip]
        while len(self._declined) >= self.config.maxLeases:
            oldest = min(self._declined, key=self._declined.__getitem__)
            del self._declined[oldest]

    # Message handlers.

    def _discover(self, message):
        now = self._clock.seconds()
        mac = message.mac
        static = self._static.get(mac)
        if static is not None:
            self._staticGiven[static] = mac
            self._send(message, OFFER, yiaddr=static, lease=True)
            return
        ip = self._byMac.get(mac)
        if ip is None:
            requested = message.requested
            if requested is not None and self._availableFor(requested, mac, now):
                ip = requested
            else:
                ip = self._firstFree(now)
            if ip is None:
                self._counters.complain("dhcp.poolExhausted", mac)
                return
        lease = self._leases.get(ip)
        if lease is not None and lease.mac == mac and lease.expires > now:
            # Offering again what the client holds must not shorten it.
            expires, bound = lease.expires, lease.bound
        else:
            expires, bound = now + min(self.offerHoldTime, self.config.leaseTime), False
        if not self._bind(ip, mac, expires, bound):
            return
        self._send(message, OFFER, yiaddr=ip, lease=True)

    def _request(self, message):
        now = self._clock.seconds()
        mac = message.mac
        if message.serverID is not None and message.serverID != self._server:
            # The client took another server's offer (RFC 2131 4.3.2): let go
            # of an address that was only offered.
            self._counters.complain("dhcp.otherServer", mac)
            ip = self._byMac.get(mac)
            if ip is not None and not self._leases[ip].bound:
                self._drop(ip)
            return
        requested = message.requested
        if requested is None and message.packet.ciaddr:
            requested = message.packet.ciaddr
        if requested is None:
            self._nak(message, "no requested address")
            return
        static = self._static.get(mac)
        if static is not None:
            if requested != static:
                self._nak(message, "address is not this client's")
                return
            self._staticGiven[static] = mac
            self._send(message, ACK, yiaddr=static, lease=True)
            return
        if not self._availableFor(requested, mac, now):
            self._nak(message, "address not available")
            return
        current = self._leases.get(requested)
        new = current is None or current.mac != mac or not current.bound
        if not self._bind(requested, mac, now + self.config.leaseTime, True):
            return
        if new:
            self.log.info(
                "DHCP: leased {ip} to {mac}",
                ip=str(ipaddress.IPv4Address(requested)),
                mac=mac,
            )
        self._send(message, ACK, yiaddr=requested, lease=True)

    def _release(self, message):
        mac = message.mac
        if message.serverID is not None and message.serverID != self._server:
            self._counters.complain("dhcp.otherServer", mac)
            return
        ciaddr = message.packet.ciaddr
        if self._static.get(mac) == ciaddr:
            # A static lease is the client's for good; nothing to free.
            return
        if self._byMac.get(mac) != ciaddr:
            self._counters.complain("dhcp.releaseNotOwner", mac)
            return
        self._drop(ciaddr)

    def _decline(self, message):
        mac = message.mac
        if message.serverID is not None and message.serverID != self._server:
            self._counters.complain("dhcp.otherServer", mac)
            return
        ip = message.requested
        if ip is None or self._byMac.get(mac) != ip:
            # Only the holder may decline an address, or one guest could
            # empty the pool for all the others.
            self._counters.complain("dhcp.declineNotOwner", mac)
            return
        now = self._clock.seconds()
        self._drop(ip)
        self._pruneDeclined(now)
        self._declined[ip] = now + self.declineHoldTime
        self.log.warn(
            "DHCP: {mac} declined {ip}; the address is in use by someone else",
            mac=mac,
            ip=str(ipaddress.IPv4Address(ip)),
        )

    def _inform(self, message):
        # RFC 2131 4.3.5: configuration only; no address, no lease time.
        self._send(message, ACK, ciaddr=message.packet.ciaddr, lease=False)

    # Replies.

    def _nak(self, message, why):
        self._counters.increment("dhcp.nak")
        self.log.debug("DHCP: NAK to {mac}: {why}", mac=message.mac, why=why)
        options = [
            (OPT_MESSAGE_TYPE, bytes([NAK])),
            (OPT_SERVER_ID, self._serverID),
        ]
        self._write(self._build(message, options))

    def _send(self, message, msgType, yiaddr=0, ciaddr=None, lease=True):
        """
        Send an OFFER or an ACK with the whole configuration.

        The search list is the one option that can grow large; when the reply
        would not fit the client's maximum message size it is left out (and
        counted) rather than sending something the client cannot take.
        """
        options = [
            (OPT_MESSAGE_TYPE, bytes([msgType])),
            (OPT_SERVER_ID, self._serverID),
        ]
        if lease:
            leaseTime = self.config.leaseTime
            options += [
                (OPT_LEASE_TIME, struct.pack("!I", leaseTime)),
                (OPT_RENEWAL_TIME, struct.pack("!I", leaseTime // 2)),
                (OPT_REBINDING_TIME, struct.pack("!I", leaseTime * 7 // 8)),
            ]
        options += self._commonOptions
        tail = []
        if message.clientID is not None:
            # RFC 6842: echo the client identifier.
            tail.append((OPT_CLIENT_ID, message.clientID))
        if ciaddr is None:
            ciaddr = message.packet.ciaddr if msgType == ACK else 0
        siaddr = self._server
        reply = self._build(
            message, options + self._searchOptions + tail, yiaddr, ciaddr, siaddr
        )
        if len(reply) > message.maxSize and self._searchOptions:
            self._counters.increment("dhcp.searchOmitted")
            reply = self._build(message, options + tail, yiaddr, ciaddr, siaddr)
        self._counters.increment("dhcp.offer" if msgType == OFFER else "dhcp.ack")
        self._write(reply)

    def _build(self, message, options, yiaddr=0, ciaddr=0, siaddr=0):
        request = message.packet
        reply = _dhcp.DHCP(
            op=_dhcp.DHCP_OP_REPLY,
            hrd=1,
            hln=6,
            hops=0,
            xid=request.xid,
            secs=0,
            flags=request.flags,
            ciaddr=ciaddr,
            yiaddr=yiaddr,
            siaddr=siaddr,
            giaddr=request.giaddr,
            chaddr=bytes(request.chaddr[:6]),
            opts=options,
            data=b"",
        )
        data = bytes(reply)
        if len(data) < _MIN_REPLY_SIZE:
            data += b"\x00" * (_MIN_REPLY_SIZE - len(data))
        return data

    def _write(self, data):
        if self.transport is None:
            self._counters.complain("dhcp.noTransport")
            return
        self.transport.write(data, BROADCAST)
