"""
The gateway's IPv6 side: every Ethernet frame of type 0x86DD that reaches the
gateway comes here (the virtual network hands them over unparsed).

It is the router of the guests' IPv6 link:

  - Neighbor Discovery (RFC 4861): neighbor solicitations are answered for the
    gateway's global and link-local addresses and the host address, and for
    nothing else; router solicitations are answered and router advertisements
    are sent every L{RA_INTERVAL} seconds with the prefix (on-link and
    autonomous: SLAAC), the MTU and, when a DNS server listens on the
    gateway's address, RDNSS and DNSSL (RFC 8106). A guest's duplicate address
    detection is left unanswered unless it claims one of our addresses, which
    we then defend.
  - Fragments are reassembled (L{gvtwisted.stack.reassembly6}, bounded like
    IPv4's) before anything else looks at them.
  - The neighbour cache (address to MAC), learnt from what guests send and
    bounded like the ARP cache; packets for an unknown neighbour wait (a few,
    briefly) for the answer to a neighbor solicitation.
  - ICMPv6 echo to the gateway is answered; UDP to the gateway goes to ports
    bound with L{IPv6Gateway.listenUDP} (the DHCPv6 server on 547, DNS on 53),
    and a closed port is told with an ICMPv6 port unreachable; TCP to the
    gateway goes to C{tcp} (a L{gvtwisted.stack.tcpdemux6.TCP6Demux}), or is
    refused with a RST without one.
  - Traffic for other destinations goes to C{nat} (NAT66) when one is
    installed; without one the gateway advertises itself with a router
    lifetime of 0 (a router for the prefix, not a default route), so that a
    guest's own stack fails fast toward the internet over IPv6 and falls back
    to IPv4, instead of sending everything into a black hole.

Frames from guests are not trusted: each parser raises only its own
C{ValueError}, which is counted (L{Counters.complain}) and costs that frame.
"""

import ipaddress
import struct

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gvtwisted.stack.reassembly6 import Reassembler6
from gvtwisted.stack.udp6 import VirtualUDP6Port
from gvtwisted.wire import icmpv6, ipv6, tcp, udp
from gvtwisted.wire.ethernet import HEADER as ETH_HEADER, TYPE_IPV6

#: Seconds between unsolicited router advertisements (RFC 4861 6.2.1 allows
#: 4 to 1800; a virtual link has nothing to save).
RA_INTERVAL = 200.0
#: Router lifetime advertised once a NAT can route off the link.
ROUTER_LIFETIME = 1800
#: RDNSS and DNSSL lifetimes: at least 3 x the interval (RFC 8106 5.1).
DNS_LIFETIME = 1800
PREFIX_VALID = 86400
PREFIX_PREFERRED = 14400
#: At most this many solicited advertisements per second, all guests
#: together: a guest that floods RS gets nothing more.
RS_REPLIES_PER_SECOND = 20
#: ICMPv6 errors the gateway sends per second (RFC 4443 2.4 (f)).
ERRORS_PER_SECOND = 50

NEIGHBOR_CACHE_MAX = 4096
PENDING_PER_ADDRESS = 16
PENDING_ADDRESSES = 256
NS_RETRY = 1.0
NS_TRIES = 3

_NDP_TYPES = frozenset((icmpv6.ROUTER_SOLICITATION, icmpv6.ROUTER_ADVERTISEMENT,
                        icmpv6.NEIGHBOR_SOLICITATION, icmpv6.NEIGHBOR_ADVERTISEMENT,
                        icmpv6.REDIRECT))


class _RateLimit:
    """
    At most C{rate} events per second (a window reset every second).
    """

    def __init__(self, clock, rate):
        self._clock = clock
        self._rate = rate
        self._window = None
        self._count = 0

    def allow(self) -> bool:
        now = int(self._clock.seconds())
        if now != self._window:
            self._window = now
            self._count = 0
        self._count += 1
        return self._count <= self._rate


class IPv6Gateway:
    """
    @ivar neighbours: 16-byte address to C{[mac, learntAt]}.
    @ivar nat: an object with C{ipv6Received(packet, srcMAC)}, or L{None}.
    @ivar addressOwner: a callable from a 16-byte address to the 6-byte MAC
        that holds its DHCPv6 lease (or L{None}); a guest that uses another's
        leased address is refused.
    @ivar dnsAvailable: whether a DNS server listens on the gateway's
        address; RDNSS and DNSSL are advertised only then.
    @ivar searchDomains: the DNSSL names.
    """

    log = Logger()

    def __init__(self, reactor, config, switch, port, counters, searchDomains=(), network=None):
        """
        @param network: the L{gvtwisted.stack.network.VirtualNetwork} whose
            checksum policy (C{verifyChecksums}) the data path follows; without
            one, every checksum is verified.
        """
        self._network = network
        self.reactor = reactor
        self.config = config
        self.switch = switch
        self.port = port
        self.counters = counters
        self.searchDomains = list(searchDomains)
        self.dnsAvailable = False
        self.nat = None
        #: the L{gvtwisted.stack.tcpdemux6.TCP6Demux}, or L{None} (TCP refused)
        self.tcp = None
        self.addressOwner = None
        self.neighbours = {}
        self._pending = {}
        self._udpPorts = {}
        self._mac = config.gatewayMAC
        self._global = config.gatewayIP6Bytes
        self._linkLocal = config.gatewayLinkLocal6Bytes
        self._host = config.hostIP6Bytes
        self._ours = frozenset((self._global, self._linkLocal, self._host))
        self._gatewayAddresses = frozenset((self._global, self._linkLocal))
        self._multicast = frozenset(
            [ipv6.ALL_NODES, ipv6.ALL_ROUTERS, ipv6.ALL_DHCP_AGENTS]
            + [ipv6.solicitedNode(a) for a in self._ours])
        self._rsLimit = _RateLimit(reactor, RS_REPLIES_PER_SECOND)
        self._errorLimit = _RateLimit(reactor, ERRORS_PER_SECOND)
        self.reassembler = Reassembler6(reactor, counters)
        self._advertiser = LoopingCall(self.advertise)
        self._advertiser.clock = reactor

    @property
    def verifyChecksums(self) -> bool:
        """
        Whether the TCP and UDP checksums of what guests send through NAT66 are
        verified: the IPv4 network's policy (C{--verify-checksums}; a local
        socket link cannot corrupt a frame). What comes to the gateway itself
        (NDP, DHCPv6, DNS, echo) is always verified: it is little, and it is
        the control plane.
        """
        return self._network.verifyChecksums if self._network is not None else True

    # -- lifecycle --------------------------------------------------------

    def start(self):
        """
        Start the periodic router advertisements (the first one now).
        """
        if not self._advertiser.running:
            self._advertiser.start(RA_INTERVAL, now=True)

    def stop(self):
        """
        Stop advertising, and forget the neighbours and the packets that
        waited for them.
        """
        if self._advertiser.running:
            self._advertiser.stop()
        self.reassembler.stop()
        for pending in self._pending.values():
            if pending[2] is not None and pending[2].active():
                pending[2].cancel()
        self._pending.clear()

    # -- a reactor-like API -------------------------------------------------

    def listenUDP(self, port, protocol, interface=""):
        """
        Bind C{protocol} to UDP C{port} on the gateway's IPv6 address
        C{interface} (text), or on all of them (and the multicast groups the
        gateway is in) when empty.
        """
        key = (ipaddress.IPv6Address(interface).packed if interface else None, port)
        if key in self._udpPorts:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(interface, port, "address already in use")
        p = VirtualUDP6Port(self, port, protocol, interface)
        self._udpPorts[key] = p
        p.startListening()
        return p

    def _unbindUDP(self, port):
        key = (ipaddress.IPv6Address(port.interface).packed if port.interface else None,
               port.port)
        if self._udpPorts.get(key) is port:
            del self._udpPorts[key]

    def linkFor(self, address: bytes):
        """
        The L{gvtwisted.stack.iface.LinkInterface} behind which the guest
        address C{address} was learnt, or L{None}: it owns the connections
        and flows of that guest (pause state, end of the link).
        """
        mac = self.macFor(address)
        return self.switch.interfaceOf(mac) if mac is not None else None

    def linkExpired(self, iface):
        """
        A link stayed down for its whole grace period: its IPv6 neighbours
        go (its connections and flows went with the IPv4 side's clean-up,
        which covers every connection and flow the link owns).
        """
        for address in [a for a, e in self.neighbours.items()
                        if self.switch.interfaceOf(e[0]) in (iface, None)]:
            del self.neighbours[address]

    def macFor(self, address: bytes):
        """
        The MAC the guest address C{address} was learnt at, or L{None}.
        """
        entry = self.neighbours.get(address)
        return entry[0] if entry is not None else None

    def sourceFor(self, dst: bytes) -> bytes:
        """
        The gateway address to send to C{dst} from: link-local for a
        link-local or multicast destination, else the global one.
        """
        if ipv6.isLinkLocal(dst) or ipv6.isMulticast(dst):
            return self._linkLocal
        return self._global

    # -- frames in ----------------------------------------------------------

    def frameReceived(self, frame):
        """
        An IPv6 frame switched to the gateway (its MAC, or multicast).
        """
        dstMAC = frame[0:6]
        if dstMAC != self._mac and not dstMAC[0] & 1:
            # Unicast to another guest, flooded by the switch: not ours.
            return
        try:
            packet = ipv6.parse(frame)
        except ipv6.IPv6Error as e:
            self.counters.complain(e.reason)
            return
        self.counters.increment("ipv6.received")
        srcMAC = bytes(frame[6:12])
        src = packet.src
        dst = packet.dst
        if src in self._ours:
            self.counters.complain("ipv6.ourSource", str(ipaddress.IPv6Address(src)))
            return
        if ipv6.isMulticast(src):
            self.counters.complain("ipv6.multicastSource")
            return
        if src != ipv6.UNSPECIFIED and not self._learn(src, srcMAC):
            return
        if packet.isFragment:
            try:
                packet = self.reassembler.add(packet)
            except ipv6.IPv6Error as e:
                self.counters.complain(e.reason)
                return
            if packet is None:
                return
            dst = packet.dst
        proto = packet.proto
        local = dst in self._gatewayAddresses or dst in self._multicast
        if not local:
            if ipv6.isMulticast(dst):
                # MLD reports, mDNS, other groups: nobody here listens.
                self.counters.increment("ipv6.multicastIgnored")
            elif dst == self._host and proto == ipv6.PROTO_ICMPV6:
                # Neighbor discovery for the host address is ours; its echo
                # goes on to the NAT from there.
                self._icmpReceived(packet, srcMAC)
            elif proto == ipv6.PROTO_UDP and self._boundUDP(packet):
                pass
            elif self.nat is not None:
                self.nat.ipv6Received(packet, srcMAC)
            elif dst == self._host and proto == ipv6.PROTO_TCP:
                self.refuseTCP(packet)
            else:
                self.counters.increment("drop.ipv6.noRoute")
                self.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, icmpv6.NO_ROUTE)
            return
        if proto == ipv6.PROTO_ICMPV6:
            self._icmpReceived(packet, srcMAC)
        elif proto == ipv6.PROTO_UDP:
            self._udpReceived(packet)
        elif proto == ipv6.PROTO_TCP:
            if self.tcp is not None:
                self.tcp.segmentReceived(packet, True)
            else:
                self.refuseTCP(packet)
        elif proto == ipv6.NO_NEXT_HEADER:
            pass
        else:
            self.counters.increment("drop.ipv6.unsupportedProtocol")

    def _learn(self, address, mac) -> bool:
        """
        Remember that C{address} is at C{mac}. An address outside the link
        (neither link-local nor in the prefix) or leased to another MAC is
        refused, and so is the frame that carried it.
        """
        entry = self.neighbours.get(address)
        if entry is not None and entry[0] == mac:
            entry[1] = self.reactor.seconds()
            return True
        if not (ipv6.isLinkLocal(address) or self.config.inSubnet6(address)):
            self.counters.complain("ipv6.foreignSource", str(ipaddress.IPv6Address(address)))
            return False
        if self.addressOwner is not None:
            owner = self.addressOwner(address)
            if owner is not None and owner != mac:
                self.counters.complain("ipv6.spoofedSource", str(ipaddress.IPv6Address(address)))
                return False
        if len(self.neighbours) >= NEIGHBOR_CACHE_MAX and address not in self.neighbours:
            oldest = min(self.neighbours, key=lambda k: self.neighbours[k][1])
            del self.neighbours[oldest]
            self.counters.increment("ndp.neighboursEvicted")
        self.neighbours[address] = [mac, self.reactor.seconds()]
        pending = self._pending.pop(address, None)
        if pending is not None:
            if pending[2] is not None and pending[2].active():
                pending[2].cancel()
            head = ETH_HEADER.pack(mac, self._mac, TYPE_IPV6)
            for packet in pending[0]:
                self._send(head + packet)
        return True

    # -- ICMPv6 and Neighbor Discovery ----------------------------------

    def _icmpReceived(self, packet, srcMAC):
        try:
            icmpType, code, body = icmpv6.parse(packet.src, packet.dst, packet.payload)
        except icmpv6.ICMPv6Error as e:
            self.counters.complain(e.reason)
            return
        if icmpType in _NDP_TYPES:
            if packet.hopLimit != 255 or code != 0:
                # RFC 4861 6.1, 7.1: it did not come from this link.
                self.counters.complain("ndp.notOnLink")
                return
            try:
                if icmpType == icmpv6.NEIGHBOR_SOLICITATION:
                    self._neighborSolicitation(packet, srcMAC, icmpv6.parseNeighborMessage(body))
                elif icmpType == icmpv6.ROUTER_SOLICITATION:
                    self._routerSolicitation(packet, srcMAC, icmpv6.parseRouterSolicitation(body))
                elif icmpType == icmpv6.NEIGHBOR_ADVERTISEMENT:
                    self._neighborAdvertisement(packet, srcMAC, icmpv6.parseNeighborMessage(body))
                else:
                    self.counters.increment("ndp.ignored")
            except icmpv6.ICMPv6Error as e:
                self.counters.complain(e.reason)
            return
        if icmpType == icmpv6.ECHO_REQUEST and packet.dst in self._gatewayAddresses:
            self.counters.increment("icmpv6.echoReplies")
            self.sendIPv6(packet.dst, packet.src, ipv6.PROTO_ICMPV6,
                          icmpv6.build(packet.dst, packet.src, icmpv6.ECHO_REPLY, 0, body))
        elif packet.dst == self._host:
            if self.nat is not None:
                self.nat.ipv6Received(packet, srcMAC)
            else:
                self.counters.increment("drop.ipv6.noRoute")
        else:
            self.counters.increment("icmpv6.ignored")

    def _neighborSolicitation(self, packet, srcMAC, ns):
        target = ns.target
        unspecified = packet.src == ipv6.UNSPECIFIED
        if unspecified:
            if ns.options.sourceLinkLayer is not None:
                self.counters.complain("ndp.dadWithLinkLayer")
                return
            if not ipv6.isMulticast(packet.dst):
                self.counters.complain("ndp.dadUnicast")
                return
        if target not in self._ours:
            # Another guest's address, or a guest's DAD for its own: not ours
            # to answer.
            self.counters.increment("ndp.solicitationsIgnored")
            return
        src = target
        flags = icmpv6.NA_ROUTER | icmpv6.NA_OVERRIDE
        if unspecified:
            # Someone is about to take our address: defend it (RFC 4862 5.4.3
            # on their side, RFC 4861 7.2.4 on ours: to all nodes, not
            # solicited).
            self.counters.increment("ndp.addressDefended")
            dst = ipv6.ALL_NODES
            mac = ipv6.multicastMAC(dst)
        else:
            flags |= icmpv6.NA_SOLICITED
            dst = packet.src
            mac = ns.options.sourceLinkLayer or srcMAC
            if ns.options.sourceLinkLayer is not None and ns.options.sourceLinkLayer != srcMAC:
                self.counters.complain("ndp.linkLayerMismatch")
                return
        self.counters.increment("ndp.neighborAdvertisements")
        message = icmpv6.buildNeighborAdvertisement(src, dst, target, flags, self._mac)
        self._sendTo(mac, src, dst, ipv6.PROTO_ICMPV6, message, hopLimit=255)

    def _neighborAdvertisement(self, packet, srcMAC, na):
        if na.target in self._ours:
            self.counters.complain("ndp.claimsOurAddress", str(ipaddress.IPv6Address(na.target)))
            return
        mac = na.options.targetLinkLayer or srcMAC
        if mac != srcMAC:
            # The switch vouches for the frame's source MAC only.
            self.counters.complain("ndp.linkLayerMismatch")
            return
        self._learn(na.target, mac)

    def _routerSolicitation(self, packet, srcMAC, options):
        if packet.src == ipv6.UNSPECIFIED and options.sourceLinkLayer is not None:
            self.counters.complain("ndp.rsWithLinkLayer")
            return
        if not self._rsLimit.allow():
            self.counters.increment("drop.ndp.rsRateLimited")
            return
        if packet.src == ipv6.UNSPECIFIED:
            self.advertise()
        else:
            self.counters.increment("ndp.routerAdvertisements")
            self._sendTo(srcMAC, self._linkLocal, packet.src, ipv6.PROTO_ICMPV6,
                         self.routerAdvertisement(packet.src), hopLimit=255)

    def routerAdvertisement(self, dst=ipv6.ALL_NODES) -> bytes:
        """
        The ICMPv6 router advertisement the gateway sends to C{dst}.
        """
        options = icmpv6.NDOptions(
            sourceLinkLayer=self._mac,
            prefixes=[icmpv6.PrefixInformation(
                self.config.prefix6Bytes, 64,
                icmpv6.PREFIX_ON_LINK | icmpv6.PREFIX_AUTONOMOUS,
                PREFIX_VALID, PREFIX_PREFERRED)],
            mtu=self.config.mtu,
        )
        if self.dnsAvailable:
            options.rdnss = (DNS_LIFETIME, [self._global])
            if self.searchDomains:
                options.dnssl = (DNS_LIFETIME, self.searchDomains)
        ra = icmpv6.RouterAdvertisement(
            curHopLimit=64, flags=icmpv6.RA_OTHER,
            routerLifetime=ROUTER_LIFETIME if self.nat is not None else 0,
            options=options)
        return icmpv6.buildRouterAdvertisement(self._linkLocal, dst, ra)

    def advertise(self):
        """
        Send a router advertisement to all nodes.
        """
        self.counters.increment("ndp.routerAdvertisements")
        self._sendTo(ipv6.multicastMAC(ipv6.ALL_NODES), self._linkLocal, ipv6.ALL_NODES,
                     ipv6.PROTO_ICMPV6, self.routerAdvertisement(), hopLimit=255)

    # -- UDP and TCP to the gateway -----------------------------------------

    def _udpReceived(self, packet):
        try:
            srcPort, dstPort, _, data = udp.parse(packet.payload)
        except ValueError as e:
            self.counters.complain("ipv6." + str(e))
            return
        datagram = packet.payload[:8 + len(data)]
        # The data path's checksum policy, as for IPv4 and NAT66: a guest
        # with checksum offload sends partial checksums that only the
        # pseudo header covers.
        if self.verifyChecksums and not ipv6.upperChecksumOK(
                packet.src, packet.dst, ipv6.PROTO_UDP, datagram):
            self.counters.complain("ipv6.udp.checksum")
            return
        port = self._udpPorts.get((packet.dst, dstPort)) or self._udpPorts.get((None, dstPort))
        if port is None:
            self.counters.increment("drop.ipv6.udp.noListener")
            if not ipv6.isMulticast(packet.dst):
                self.sendICMPv6Error(packet, icmpv6.DEST_UNREACHABLE, icmpv6.PORT_UNREACHABLE)
            return
        self.counters.increment("ipv6.udp.local")
        address = str(ipaddress.IPv6Address(packet.src))
        try:
            port.protocol.datagramReceived(bytes(data), (address, srcPort))
        except Exception:
            self.counters.increment("ipv6.udp.protocolErrors")
            self.log.failure("UDP protocol on [{address}]:{port} failed",
                             address=address, port=dstPort)

    def _boundUDP(self, packet):
        """
        Deliver a datagram for an address that is not the gateway's to a
        port bound on that very address (a UDP forward's source, which the
        guest answers), before the NAT sees it; whether there was one.
        """
        if not self._udpPorts or len(packet.payload) < 8:
            return False
        dstPort = (packet.payload[2] << 8) | packet.payload[3]
        if (packet.dst, dstPort) not in self._udpPorts:
            return False
        self._udpReceived(packet)
        return True

    def refuseTCP(self, packet):
        """
        Refuse a TCP segment to the gateway with a RST (RFC 9293 3.10.7.1),
        as a host with nothing listening does.
        """
        try:
            seg = tcp.parseSegment(packet.payload)
        except ValueError as e:
            self.counters.complain("ipv6.tcp.malformed", str(e))
            return
        if seg.flags & tcp.RST or ipv6.isMulticast(packet.dst):
            return
        self.counters.increment("ipv6.tcp.refused")
        if seg.flags & tcp.ACK:
            seq, ack, flags = seg.ack, 0, tcp.RST
        else:
            length = len(seg.payload) + (1 if seg.flags & tcp.SYN else 0) + (
                1 if seg.flags & tcp.FIN else 0)
            seq, ack, flags = 0, seg.seq + length, tcp.RST | tcp.ACK
        reply = tcp.buildSegment(packet.dst, packet.src, seg.dstPort, seg.srcPort,
                                 seq, ack, flags, 0)
        # buildSegment folds the IPv4 pseudo header; over IPv6 the sum is the
        # same but for where the length goes, which modular addition ignores.
        self.sendIPv6(packet.dst, packet.src, ipv6.PROTO_TCP, reply)

    # -- frames out ---------------------------------------------------------

    def _send(self, frame):
        self.switch.forward(self.port, frame)

    def sendUDP(self, src: bytes, srcPort: int, dst: bytes, dstPort: int, data: bytes):
        """
        Send a UDP datagram from the gateway side to a guest (or a group).
        """
        length = 8 + len(data)
        header = bytearray(struct.pack("!HHHH", srcPort, dstPort, length, 0))
        datagram = header + data
        csum = ipv6.upperChecksum(src, dst, ipv6.PROTO_UDP, datagram)
        datagram[6] = csum >> 8
        datagram[7] = csum & 0xFF
        self.sendIPv6(src, dst, ipv6.PROTO_UDP, bytes(datagram))

    def sendIPv6(self, src: bytes, dst: bytes, proto: int, payload: bytes, hopLimit: int = 64):
        """
        Send an IPv6 packet toward C{dst}, resolving its MAC by neighbor
        discovery first if need be, and fragmenting above the MTU.
        """
        if len(payload) + ipv6.HEADER_LEN > self.config.mtu:
            self._ident = getattr(self, "_ident", 0) + 1
            packets = ipv6.fragment(src, dst, proto, payload, self.config.mtu, self._ident,
                                    hopLimit)
        else:
            packets = [ipv6.buildHeader(src, dst, proto, len(payload), hopLimit) + payload]
        if ipv6.isMulticast(dst):
            mac = ipv6.multicastMAC(dst)
        else:
            mac = self.macFor(dst)
            if mac is None:
                self._queue(dst, packets)
                return
        head = ETH_HEADER.pack(mac, self._mac, TYPE_IPV6)
        for packet in packets:
            self._send(head + packet)

    def _sendTo(self, mac, src, dst, proto, payload, hopLimit=64):
        self._send(ETH_HEADER.pack(mac, self._mac, TYPE_IPV6)
                   + ipv6.buildHeader(src, dst, proto, len(payload), hopLimit) + payload)

    def sendICMPv6Error(self, packet, icmpType, code, word=0, src=None):
        """
        Tell a guest that C{packet} (anything with C{src}, C{dst} and
        C{packet}, the bytes to quote) could not be delivered, within the
        rate limit, and never about a packet from the unspecified address.

        @param src: the error's source; by default the destination itself if
            it is ours, else the gateway (a router reports what it could not
            deliver).
        """
        if packet.src == ipv6.UNSPECIFIED or not self._errorLimit.allow():
            return
        self.counters.increment("icmpv6.errorsSent")
        if src is None:
            src = packet.dst if packet.dst in self._ours else self.sourceFor(packet.src)
        message = icmpv6.build(src, packet.src, icmpType, code,
                               word.to_bytes(4, "big") + bytes(packet.packet[:icmpv6.MAX_QUOTE]))
        self.sendIPv6(src, packet.src, ipv6.PROTO_ICMPV6, message)

    def _queue(self, dst, packets):
        if not (ipv6.isLinkLocal(dst) or self.config.inSubnet6(dst)):
            self.counters.increment("drop.ndp.offLink")
            return
        pending = self._pending.get(dst)
        new = pending is None
        if new:
            if len(self._pending) >= PENDING_ADDRESSES:
                self.counters.increment("drop.ndp.pendingFull", len(packets))
                return
            pending = self._pending[dst] = [[], 0, None]
        queue = pending[0]
        room = max(PENDING_PER_ADDRESS - len(queue), 0)
        if room < len(packets):
            self.counters.increment("drop.ndp.pendingFull", len(packets) - room)
        queue.extend(packets[:room])
        if new:
            self._solicit(dst)

    def _solicit(self, dst):
        pending = self._pending.get(dst)
        if pending is None:
            return
        if pending[1] >= NS_TRIES:
            del self._pending[dst]
            self.counters.increment("drop.ndp.unresolved", len(pending[0]))
            if self.tcp is not None:
                # Connections opened into that address fail now, not after
                # their timeout.
                self.tcp.unresolved(dst)
            return
        pending[1] += 1
        group = ipv6.solicitedNode(dst)
        src = self.sourceFor(dst)
        self.counters.increment("ndp.neighborSolicitations")
        self._sendTo(ipv6.multicastMAC(group), src, group, ipv6.PROTO_ICMPV6,
                     icmpv6.buildNeighborSolicitation(src, group, dst, self._mac), hopLimit=255)
        pending[2] = self.reactor.callLater(NS_RETRY, self._solicit, dst)
