"""
The virtual network: the gateway host that sits on the switch and everything
above it.

It answers ARP for the gateway and host addresses (and nothing else), learns the
guests' IP-to-MAC bindings, validates IPv4 headers, answers ICMP echo to the
gateway, and demultiplexes UDP and TCP to ports bound on virtual addresses, like a
second reactor: C{listenUDP}, C{listenTCP} and C{connectTCP} hand out objects that
provide Twisted's own transport interfaces. Traffic for any other destination is
handed to the NAT (C{self.nat}), if one is installed.
"""

import socket

from twisted.logger import Logger

from gvtwisted.stack.reassembly import Reassembler
from gvtwisted.stack.udp import VirtualUDPPort
from gvtwisted.wire import arp, ethernet, icmp, ipv4, udp
from gvtwisted.wire.ethernet import BROADCAST, HEADER as ETH_HEADER

ARP_CACHE_MAX = 4096
PENDING_PER_IP = 16
PENDING_IPS = 256
ARP_RETRY = 1.0
ARP_TRIES = 3

LIMITED_BROADCAST = b"\xff\xff\xff\xff"
ANY = b"\x00\x00\x00\x00"


class GatewayPort:
    """
    The gateway's port on the switch: frames switched to it enter the network.
    """

    name = "gateway"

    def __init__(self, network):
        self._network = network

    def sendFrame(self, frame):
        self._network.frameReceived(frame)


class VirtualNetwork:
    """
    @ivar config: the L{gvtwisted.config.NetworkConfig}.
    @ivar switch: the L{gvtwisted.stack.switch.Switch} the gateway sits on.
    @ivar nat: an object with C{udpReceived}, C{tcpReceived} and
        C{icmpReceived}, or L{None}; it gets traffic for addresses that are not
        the gateway's.
    @ivar leaseOwner: a callable from a dotted IP to the MAC string that holds
        its DHCP lease, or L{None}; used to refuse spoofed sources.
    @ivar verifyChecksums: whether the TCP and UDP checksums of what the guests
        send are verified (the IPv4 header checksum always is). Off by default:
        a guest link is a local socket that cannot corrupt a frame and the
        guest's kernel computed those sums, so checking them only costs a pass
        over every payload byte (gVisor's netstack behind gvproxy does not check
        them either: its link declares receive checksum offload). On
        (C{--verify-checksums}) to debug a hypervisor or a guest driver.
    """

    log = Logger()
    verifyChecksums = False
    # Whether --listen links may negotiate offload (gvtap-guest's probe).
    offload = True

    def __init__(self, reactor, config, switch, counters):
        self.reactor = reactor
        self.config = config
        self.switch = switch
        self.counters = counters
        self.nat = None
        self.tcp = None
        #: the L{gvtwisted.stack.ipv6gateway.IPv6Gateway}, or L{None} (no IPv6)
        self.ipv6 = None
        self.leaseOwner = None
        self.gatewayPort = GatewayPort(self)
        switch.attach(self.gatewayPort, macs=[config.gatewayMAC])
        switch.listeners.append(self)
        self._gwMAC = config.gatewayMAC
        self._gwIP = config.gatewayIPBytes
        self._hostIP = config.hostIPBytes
        self._udpPorts = {}
        self.reassembler = Reassembler(reactor, counters)
        # ip (4 bytes) -> [mac, learntAt]
        self._arpCache = {}
        # ip -> (list of frames-without-ethernet-header builders, tries)
        self._pending = {}
        self._ident = 0

    # -- reactor-like API ---------------------------------------------------

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        """
        Bind C{protocol} to a virtual UDP C{port}, on C{interface} (a dotted
        address of the gateway side) or on every address when empty.

        A port bound on an address other than the gateway's (the host address,
        or a real client's address that a UDP forward shows the guest) gets
        what the guest sends there before the NAT sees it.
        """
        key = (socket.inet_aton(interface) if interface else ANY, port)
        if key in self._udpPorts:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(interface, port, "address already in use")
        p = VirtualUDPPort(self, port, protocol, interface)
        self._udpPorts[key] = p
        p.startListening()
        return p

    def listenTCP(self, port, factory, backlog=50, interface=""):
        """
        Accept virtual TCP connections to C{port} on C{interface} (a gateway
        side address; every one when empty).
        """
        return self.tcp.listenTCP(port, factory, backlog, interface)

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        """
        Open a virtual TCP connection into the guest at C{host}:C{port}.
        """
        return self.tcp.connectTCP(host, port, factory, timeout, bindAddress)

    def _unbindUDP(self, port):
        key = (socket.inet_aton(port.interface) if port.interface else ANY, port.port)
        if self._udpPorts.get(key) is port:
            del self._udpPorts[key]

    def linkPaused(self, port):
        """
        The guest link C{port} cannot take more frames now: TCP connections
        toward guests behind it stop sending until L{linkResumed} (each looks
        at its link's pause state itself; nothing is scanned).
        """
        iface = self.switch.interfaceFor(port)
        if iface is not None:
            iface.pause()

    def linkResumed(self, port):
        iface = self.switch.interfaceFor(port)
        if iface is not None:
            iface.resume()

    def linkFor(self, ip: bytes):
        """
        The L{gvtwisted.stack.iface.LinkInterface} behind which the guest
        address C{ip} was learnt, or L{None}.
        """
        entry = self._arpCache.get(ip)
        if entry is None:
            return None
        return self.switch.interfaceOf(entry[0])

    # -- the switch tells us about links ---------------------------------------

    def macForgotten(self, iface, mac):
        """
        A MAC left its link (evicted, aged and claimed, or expired): the ARP
        entries learnt at it go too, so that ARP and MAC entries age together.
        """
        neighbours = iface.neighbours
        for ip in [ip for ip, m in neighbours.items() if m == mac]:
            del neighbours[ip]
            entry = self._arpCache.get(ip)
            if entry is not None and entry[0] == mac:
                del self._arpCache[ip]

    def linkExpired(self, iface):
        """
        A link stayed down for its whole grace period: abort its guests' TCP
        connections (closing their host sockets) and free their UDP and ICMP
        flows. Its ARP entries go with its MACs; DHCP leases stay until they
        expire.
        """
        if self.tcp is not None:
            self.tcp.linkExpired(iface)
        for flow, table in list(iface.flows.items()):
            table.releaseFlow(flow)
        iface.flows.clear()
        if self.ipv6 is not None:
            self.ipv6.linkExpired(iface)

    # -- frames in ----------------------------------------------------------

    def frameReceived(self, frame):
        """
        A frame the switch delivered to the gateway (its MAC, or flooded).
        """
        if len(frame) < 14:
            self.counters.increment("drop.ethernet.short")
            return
        etherType = (frame[12] << 8) | frame[13]
        if etherType == ethernet.TYPE_IPV6:
            # IPv6 goes to multicast MACs as much as to ours: the IPv6
            # gateway (stack/ipv6gateway.py) sorts it out, if there is one.
            if self.ipv6 is not None:
                self.ipv6.frameReceived(frame)
            else:
                self.counters.increment("drop.ethernet.unsupportedType")
            return
        dst = frame[0:6]
        if dst != self._gwMAC and dst != BROADCAST:
            return
        if etherType == ethernet.TYPE_IPV4:
            self._ipv4Received(frame)
        elif etherType == ethernet.TYPE_ARP:
            self._arpReceived(frame)
        else:
            self.counters.increment("drop.ethernet.unsupportedType")

    def _arpReceived(self, frame):
        try:
            message = arp.parse(frame)
        except ValueError as e:
            self.counters.complain("arp.malformed", str(e))
            return
        if message.senderIP != ANY and not self._learn(message.senderIP, message.senderMAC):
            return
        if message.op != arp.REQUEST:
            return
        if not self.config.isVirtualIP(message.targetIP):
            self.counters.increment("arp.ignored")
            return
        self.counters.increment("arp.replies")
        reply = arp.build(arp.REPLY, self._gwMAC, message.targetIP,
                          message.senderMAC, message.senderIP)
        self._send(ETH_HEADER.pack(message.senderMAC, self._gwMAC, ethernet.TYPE_ARP) + reply)

    def _learn(self, ip, mac) -> bool:
        """
        Remember that C{ip} is at C{mac}, unless that address is leased to
        another MAC (then the frame is a spoof and is dropped).
        """
        entry = self._arpCache.get(ip)
        if entry is not None and entry[0] == mac:
            entry[1] = self.reactor.seconds()
            return True
        if not self.config.inSubnet(ip) or self.config.isVirtualIP(ip) or ip == self._hostIP:
            self.counters.complain("ipv4.foreignSource", socket.inet_ntoa(ip))
            return False
        if self.leaseOwner is not None:
            owner = self.leaseOwner(socket.inet_ntoa(ip))
            if owner is not None and owner != ethernet.formatMAC(mac):
                self.counters.complain("ipv4.spoofedSource", socket.inet_ntoa(ip))
                return False
        iface = self.switch.interfaceOf(mac)
        if iface is None:
            # The switch did not learn the source (its link's table is full
            # of permanent entries): an ARP entry would point nowhere.
            self.counters.increment("drop.arp.unlearntMAC")
            return False
        now = self.reactor.seconds()
        if entry is not None:
            holder = self.switch.interfaceOf(entry[0])
            if (holder is not None and holder is not iface and holder.up
                    and now - entry[1] <= self.switch.ageing):
                # The address is in use by a guest on another live link: a
                # link may not claim another link's neighbour.
                self.counters.complain("ipv4.addressInUse", socket.inet_ntoa(ip))
                return False
            self._forgetNeighbour(ip)
        if len(iface.neighbours) >= self.switch.maxMACsPerLink:
            # A link's own neighbours are capped like its MACs: the least
            # recently seen of them goes.
            cache = self._arpCache
            self._forgetNeighbour(min(iface.neighbours, key=lambda k: cache[k][1]))
            self.counters.increment("arp.linkNeighboursFull")
        if len(self._arpCache) >= ARP_CACHE_MAX:
            oldest = min(self._arpCache, key=lambda k: self._arpCache[k][1])
            self._forgetNeighbour(oldest)
        self._arpCache[ip] = [mac, now]
        iface.neighbours[ip] = mac
        pending = self._pending.pop(ip, None)
        if pending is not None:
            for packet in pending[0]:
                self._send(ETH_HEADER.pack(mac, self._gwMAC, ethernet.TYPE_IPV4) + packet)
        return True

    def _forgetNeighbour(self, ip):
        entry = self._arpCache.pop(ip, None)
        if entry is not None:
            iface = self.switch.interfaceOf(entry[0])
            if iface is not None and iface.neighbours.get(ip) == entry[0]:
                del iface.neighbours[ip]

    def _ipv4Received(self, frame):
        try:
            packet = ipv4.parse(frame)
        except ipv4.IPv4Error as e:
            self.counters.complain(e.reason)
            return
        src = packet.src
        if src != ANY and not self._learn(src, frame[6:12]):
            return
        self.counters.increment("ipv4.received")
        if packet.isFragment:
            packet = self.reassembler.add(packet)
            if packet is None:
                return
        dst = packet.dst
        local = dst == self._gwIP or dst == LIMITED_BROADCAST or dst == self.config.broadcastIPBytes
        proto = packet.proto
        if proto == ipv4.PROTO_UDP:
            self._udpReceived(packet, local, frame[6:12])
        elif proto == ipv4.PROTO_TCP:
            if self.tcp is not None and (local or self.nat is not None):
                self.tcp.segmentReceived(packet, local)
            else:
                self.counters.increment("drop.tcp.noStack")
        elif proto == ipv4.PROTO_ICMP:
            self._icmpReceived(packet, local)
        else:
            self.counters.increment("drop.ipv4.unsupportedProtocol")

    def _icmpReceived(self, packet, local):
        try:
            icmpType, code, rest = icmp.parse(packet.payload)
        except ValueError as e:
            self.counters.complain(str(e))
            return
        if not local:
            if self.nat is not None:
                try:
                    self.nat.icmpReceived(packet, icmpType, code, rest)
                except Exception:
                    self.counters.failure("nat.icmp", socket.inet_ntoa(packet.dst))
            else:
                self.counters.increment("drop.icmp.noRoute")
            return
        if icmpType == icmp.ECHO_REQUEST and packet.dst == self._gwIP:
            self.counters.increment("icmp.echoReplies")
            self.sendIPv4(self._gwIP, packet.src, ipv4.PROTO_ICMP,
                          icmp.build(icmp.ECHO_REPLY, 0, rest))
        else:
            self.counters.increment("icmp.ignored")

    def _udpReceived(self, packet, local, srcMAC):
        try:
            srcPort, dstPort, csum, data = udp.parse(packet.payload)
        except ValueError as e:
            self.counters.complain(str(e))
            return
        if self.verifyChecksums and not udp.checksumOK(
                packet.src, packet.dst, packet.payload[:8 + len(data)]):
            self.counters.complain("udp.checksum")
            return
        if local:
            if dstPort == 67 and bytes(data[28:34]) != srcMAC:
                # DHCP names its client inside the message: a guest must not
                # renew, release or decline another guest's lease.
                self.counters.complain("dhcp.chaddrSpoofed")
                return
            port = self._udpPorts.get((packet.dst, dstPort)) or self._udpPorts.get((ANY, dstPort))
            if port is None:
                if packet.dst == self._gwIP:
                    self.sendICMPError(packet, icmp.DEST_UNREACHABLE, icmp.PORT_UNREACHABLE)
                self.counters.increment("drop.udp.noListener")
                return
            self.counters.increment("udp.local")
            self._deliverUDP(port, data, packet.src, srcPort)
            return
        port = self._udpPorts.get((packet.dst, dstPort))
        if port is not None:
            # A port bound on a non-gateway address (a UDP forward's source).
            self.counters.increment("udp.bound")
            self._deliverUDP(port, data, packet.src, srcPort)
        elif self.nat is not None:
            try:
                self.nat.udpReceived(packet, srcPort, dstPort, data)
            except Exception:
                self.counters.failure("nat.udp", socket.inet_ntoa(packet.dst))
        else:
            self.counters.increment("drop.udp.noRoute")

    def _deliverUDP(self, port, data, src, srcPort):
        """
        Hand a datagram to the protocol of a virtual UDP port; what it raises
        is logged and counted, and costs this datagram only (as with
        Twisted's own C{udp.Port}).
        """
        try:
            port.protocol.datagramReceived(bytes(data), (socket.inet_ntoa(src), srcPort))
        except Exception:
            self.counters.failure("udp.service", f"port {port.port}")

    # -- frames out ---------------------------------------------------------

    def _send(self, frame):
        self.switch.forward(self.gatewayPort, frame)

    def sendFrameParts(self, parts, vnet=None):
        """
        Send a frame given as pieces, a complete header and a payload, which
        reach the guest link's transport as they are, never concatenated (the
        data segments of L{gvtwisted.stack.frames.TCPFrameSender}); C{vnet},
        its virtio-net header for a link with offload.
        """
        self.switch.forwardParts(self.gatewayPort, parts, vnet)

    def linkOffloads(self, mac: bytes) -> bool:
        """
        Whether the guest at C{mac} is on a link that negotiated offload.
        """
        return self.switch.linkOffloads(mac)

    def nextIdent(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def sendIPv4(self, src: bytes, dst: bytes, proto: int, payload: bytes):
        """
        Send an IPv4 packet with C{payload} toward the guest that holds C{dst},
        fragmenting it if it exceeds the MTU and resolving C{dst} with ARP
        first if needed.
        """
        if len(payload) + ipv4.MIN_HEADER > self.config.mtu:
            packets = ipv4.fragment(src, dst, proto, payload, self.config.mtu,
                                    self.nextIdent())
        else:
            packets = [ipv4.buildHeader(src, dst, proto, len(payload)) + payload]
        self.sendPackets(dst, packets)

    def sendPackets(self, dst: bytes, packets):
        """
        Frame and send whole IPv4 packets (headers included) to C{dst}.
        """
        if dst == LIMITED_BROADCAST or dst == self.config.broadcastIPBytes:
            mac = BROADCAST
        else:
            entry = self._arpCache.get(dst)
            if entry is None:
                self._queueForARP(dst, packets)
                return
            mac = entry[0]
        head = ETH_HEADER.pack(mac, self._gwMAC, ethernet.TYPE_IPV4)
        for packet in packets:
            self._send(head + packet)

    def macFor(self, ip: bytes):
        """
        The MAC the guest address C{ip} was learnt at, or L{None}.
        """
        entry = self._arpCache.get(ip)
        return entry[0] if entry is not None else None

    def sendUDP(self, src: bytes, srcPort: int, dst: bytes, dstPort: int, data: bytes):
        """
        Send a UDP datagram from C{src}:C{srcPort} to the guest at C{dst}.
        """
        self.sendIPv4(src, dst, ipv4.PROTO_UDP, udp.build(src, dst, srcPort, dstPort, data))

    def sendICMPError(self, packet, icmpType, code, nextMTU=0):
        """
        Tell the guest that C{packet} could not be delivered.
        """
        self.counters.increment("icmp.errorsSent")
        body = icmp.build(icmpType, code, nextMTU.to_bytes(4, "big")
                          + bytes(packet.header) + bytes(packet.payload[:8]))
        self.sendIPv4(self._gwIP if packet.dst in (ANY, LIMITED_BROADCAST) else packet.dst,
                      packet.src, ipv4.PROTO_ICMP, body)

    def _queueForARP(self, dst, packets):
        if not self.config.inSubnet(dst):
            self.counters.increment("drop.arp.offSubnet")
            return
        pending = self._pending.get(dst)
        new = pending is None
        if new:
            if len(self._pending) >= PENDING_IPS:
                self.counters.increment("drop.arp.pendingFull")
                return
            pending = self._pending[dst] = [[], 0]
        queue = pending[0]
        room = PENDING_PER_IP - len(queue)
        if room < len(packets):
            self.counters.increment("drop.arp.pendingFull", len(packets) - max(room, 0))
        queue.extend(packets[:max(room, 0)])
        if new:
            # Queue first: a guest may answer the request before it returns.
            self._arpRequest(dst)

    def _arpRequest(self, dst):
        pending = self._pending.get(dst)
        if pending is None:
            return
        if pending[1] >= ARP_TRIES:
            del self._pending[dst]
            self.counters.increment("drop.arp.unresolved", len(pending[0]))
            if self.tcp is not None:
                self.tcp.unresolved(dst)
            return
        pending[1] += 1
        request = arp.build(arp.REQUEST, self._gwMAC, self._gwIP, b"\x00" * 6, dst)
        self._send(ETH_HEADER.pack(BROADCAST, self._gwMAC, ethernet.TYPE_ARP) + request)
        self.reactor.callLater(ARP_RETRY, self._arpRequest, dst)
