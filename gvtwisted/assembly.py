"""
Put one virtual network together: counters, switch, gateway, services.

Kept apart from the twistd plugin so that tests build the same network that
C{twistd gvtap} runs, with a C{Clock} or a real reactor.
"""

import socket

from gvtwisted.config import NetworkConfig
from gvtwisted.limits import DescriptorBudget
from gvtwisted.services.dhcp import DHCPConfig, DHCPServer, searchDomainsFromResolvConf
from gvtwisted.stack.counters import Counters
from gvtwisted.stack.network import VirtualNetwork
from gvtwisted.stack.switch import Switch
from gvtwisted.stack.fastpath import TCPFastPath
from gvtwisted.stack.tcpdemux import TCPDemux
from gvtwisted.services.dns import DNSService, DNSZones, defaultZones
from gvtwisted.services.nat import NAT
from gvtwisted.services.nat_icmp import ICMPNAT
from gvtwisted.services.nat_tcp import TCPNAT
from gvtwisted.services.forwarder import ForwarderManager
from gvtwisted.services.nat_udp import UDPNAT


class Gvtap:
    """
    The parts of one running virtual network.

    @ivar config: the L{NetworkConfig}.
    @ivar counters: the L{Counters} every part counts into.
    @ivar switch: the L{Switch}.
    @ivar network: the L{VirtualNetwork}.
    @ivar dhcp: the L{DHCPServer}.
    """

    def __init__(self, reactor, config: NetworkConfig, pcap=None,
                 resolvConf="/etc/resolv.conf", dns=True, maxMACsPerLink=64,
                 hostLoopback=True, ec2MetadataAccess=False, maxConnections=16384,
                 dnsUpstreams=None, dnsHosts=None, guestAPI=True, linkGrace=60.0,
                 maxLeasesPerLink=16, descriptorReserve=64,
                 verifyChecksums=None, maxBufferedBytes=512 * 1024 * 1024):
        self.reactor = reactor
        self.config = config
        self.counters = Counters(reactor)
        self.pcap = pcap
        self.switch = Switch(reactor, self.counters, maxMACsPerLink=maxMACsPerLink, tap=pcap,
                             linkGrace=linkGrace)
        self.network = VirtualNetwork(reactor, config, self.switch, self.counters)
        if verifyChecksums is not None:
            self.network.verifyChecksums = verifyChecksums
        gateway = str(config.gatewayIP)
        self.dhcp = DHCPServer(
            DHCPConfig(
                serverIP=gateway,
                subnet=config.subnet,
                dnsServers=[gateway] if dns else [],
                mtu=config.mtu,
                staticLeases=dict(config.staticLeases),
                reserved={gateway, str(config.hostIP)} | {
                    socket.inet_ntoa(ip) for ip in config.virtualIPs},
                searchDomains=(searchDomainsFromResolvConf(resolvConf)
                               if config.searchDomains is None else config.searchDomains),
                maxLeasesPerLink=maxLeasesPerLink,
            ),
            reactor,
            self.counters,
            linkOf=self._linkOfMAC,
        )
        self.network.listenUDP(67, self.dhcp)
        self.network.leaseOwner = self._leaseOwner
        self.tcp = TCPDemux(reactor, self.network, self.counters, maxConnections,
                            maxBufferedBytes)
        self.network.tcp = self.tcp
        self.switch.fastPath = TCPFastPath(self.switch, self.network, self.tcp)
        self.nat = NAT(
            TCPNAT(reactor, self.network, self.counters, hostLoopback, ec2MetadataAccess),
            udp=UDPNAT(reactor, self.network, hostLoopback=hostLoopback,
                       ec2MetadataAccess=ec2MetadataAccess),
            icmp=ICMPNAT(reactor, self.network, hostLoopback=hostLoopback,
                         ec2MetadataAccess=ec2MetadataAccess),
        )
        self.tcp.nat = self.nat
        # The NAT leaves the last descriptors to the API and new guest links.
        self.descriptors = DescriptorBudget(reactor, reserve=descriptorReserve)
        for part in (self.nat.tcp, self.nat.udp, self.nat.icmp):
            part.descriptors = self.descriptors
        self.network.nat = self.nat
        self.dns = None
        if dns:
            self.dns = DNSService(
                reactor,
                DNSZones(defaultZones(gateway, str(config.hostIP), *_zones6(config, hostLoopback))
                         if config.zones is None else config.zones),
                upstreams=dnsUpstreams or None,
                resolvConf=resolvConf,
                hostsFile=dnsHosts,
                counters=self.counters,
            )
            self.network.listenUDP(53, self.dns.udpProtocol, interface=gateway)
            self.network.listenTCP(53, self.dns.tcpFactory, interface=gateway)
        self.ipv6 = None
        if config.ipv6:
            self._startIPv6(reactor, config, dns, resolvConf, hostLoopback, maxConnections)
        # Host ports forwarded into the network, and the guest's own API at
        # http://GATEWAY:80 (the forwarder routes only) to ask for them.
        self.forwarder = ForwarderManager(reactor, self.network, self.counters)
        self.guestAPI = self.guestAPI6 = None
        if guestAPI:
            from gvtwisted.services.api import makeAPISite

            site = makeAPISite(self, guest=True)
            self.guestAPI = self.network.listenTCP(80, site, interface=gateway)
            if self.ipv6 is not None:
                self.guestAPI6 = self.tcp6.listenTCP(80, site, interface=str(config.gatewayIP6))

    def _startIPv6(self, reactor, config, dns, resolvConf, hostLoopback=True,
                   maxConnections=16384):
        """
        The gateway's IPv6 side (router advertisements, neighbor discovery,
        DHCPv6), handed every IPv6 frame by the network.
        """
        from gvtwisted.services.dhcpv6 import DHCPv6Server
        from gvtwisted.stack.ipv6gateway import IPv6Gateway

        domains = searchDomainsFromResolvConf(resolvConf)
        self.ipv6 = IPv6Gateway(reactor, config, self.switch, self.network.gatewayPort,
                                self.counters, searchDomains=domains, network=self.network)
        self.dhcpv6 = DHCPv6Server(
            reactor, self.counters, config.gatewayMAC, config.prefix6Bytes,
            self.ipv6.macFor,
            dnsServers=[config.gatewayIP6Bytes] if dns else [],
            searchDomains=domains,
            staticLeases={config.deviceMAC: config.deviceIP6Bytes})
        self.ipv6.listenUDP(547, self.dhcpv6)
        self.ipv6.addressOwner = self.dhcpv6.ownerOf
        if dns and self.dns is not None:
            from gvtwisted.services.dns import GatewayDNSDatagramProtocol

            # A protocol of its own: a datagram protocol answers through the
            # one transport it was connected to.
            self.dns6Protocol = GatewayDNSDatagramProtocol(self.dns.tcpFactory, reactor)
            self.ipv6.listenUDP(53, self.dns6Protocol, interface=str(config.gatewayIP6))
            self.ipv6.dnsAvailable = True
        from gvtwisted.services.nat66 import NAT66
        from gvtwisted.services.nat66_icmp import ICMP66NAT
        from gvtwisted.services.nat66_udp import UDP66NAT

        from gvtwisted.services.nat66_tcp import TCP66NAT
        from gvtwisted.stack.tcpdemux6 import TCP6Demux

        self.tcp6 = TCP6Demux(reactor, self.ipv6, self.counters, maxConnections)
        self.tcp6.nat = TCP66NAT(reactor, self.ipv6, self.counters, hostLoopback=hostLoopback)
        self.ipv6.tcp = self.tcp6
        self.nat66 = NAT66(self.ipv6,
                           udp=UDP66NAT(reactor, self.ipv6, hostLoopback=hostLoopback),
                           icmp=ICMP66NAT(reactor, self.ipv6, hostLoopback=hostLoopback),
                           tcp=self.tcp6)
        for part in (self.tcp6.nat, self.nat66.udp, self.nat66.icmp):
            # The same reserve of descriptors as the IPv4 NAT's.
            part.descriptors = self.descriptors
        if self.dns is not None:
            self.tcp6.listenTCP(53, self.dns.tcpFactory, interface=str(config.gatewayIP6))
        self.ipv6.nat = self.nat66
        self.network.ipv6 = self.ipv6
        self.ipv6.start()

    def stop(self):
        """
        Close every host socket and timer the network holds.
        """
        if self.ipv6 is not None:
            self.ipv6.stop()
            self.nat66.stop()
        if self.dns is not None:
            self.dns.stop()
        self.nat.stop()
        self.forwarder.stop()
        if self.guestAPI is not None:
            self.guestAPI.stopListening()
        if self.guestAPI6 is not None:
            self.guestAPI6.stopListening()
        self.network.reassembler.stop()

    def _leaseOwner(self, ip):
        return self.dhcp.macFor(ip)

    def _linkOfMAC(self, mac):
        try:
            raw = bytes.fromhex(mac.replace(":", ""))
        except ValueError:
            return None
        return self.switch.interfaceOf(raw)


def _zones6(config, hostLoopback):
    """
    The IPv6 addresses of C{gateway} and C{host} in the local zones: none
    without IPv6; the host's only if the NAT takes ::fe to the host's ::1.
    """
    if not config.ipv6:
        return None, None
    return str(config.gatewayIP6), (str(config.hostIP6) if hostLoopback and HOST6_REACHABLE else None)


#: Whether the NAT reaches the host's ::1 through ::fe (NAT66).
HOST6_REACHABLE = True


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
