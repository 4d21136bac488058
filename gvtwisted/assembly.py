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
                DNSZones(defaultZones(gateway, str(config.hostIP))
                         if config.zones is None else config.zones),
                upstreams=dnsUpstreams or None,
                resolvConf=resolvConf,
                hostsFile=dnsHosts,
                counters=self.counters,
            )
            self.network.listenUDP(53, self.dns.udpProtocol, interface=gateway)
            self.network.listenTCP(53, self.dns.tcpFactory, interface=gateway)
        # Host ports forwarded into the network, and the guest's own API at
        # http://GATEWAY:80 (the forwarder routes only) to ask for them.
        self.forwarder = ForwarderManager(reactor, self.network, self.counters)
        self.guestAPI = None
        if guestAPI:
            from gvtwisted.services.api import makeAPISite

            self.guestAPI = self.network.listenTCP(80, makeAPISite(self, guest=True),
                                                   interface=gateway)

    def stop(self):
        """
        Close every host socket and timer the network holds.
        """
        if self.dns is not None:
            self.dns.stop()
        self.nat.stop()
        self.forwarder.stop()
        if self.guestAPI is not None:
            self.guestAPI.stopListening()
        self.network.reassembler.stop()

    def _leaseOwner(self, ip):
        return self.dhcp.macFor(ip)

    def _linkOfMAC(self, mac):
        try:
            raw = bytes.fromhex(mac.replace(":", ""))
        except ValueError:
            return None
        return self.switch.interfaceOf(raw)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
