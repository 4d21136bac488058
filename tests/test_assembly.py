"""
Tests for L{gvtwisted.assembly}: the options of C{twistd gvtap} reach the parts
they configure.
"""

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import NetworkConfig
from tests.checksumpolicy import verifyingVariants


class AssemblyTests(SynchronousTestCase):
    """
    One L{Gvtap} wires DHCP, DNS, the NAT and the forwarder onto the network.
    """

    def build(self, **kwargs):
        gvtap = Gvtap(MemoryReactorClock(), NetworkConfig(), resolvConf=os.devnull, **kwargs)
        self.addCleanup(gvtap.stop)
        return gvtap

    def test_dnsOfferedByDHCP(self):
        """
        With DNS on (the default), DHCP offers the gateway as DNS server and
        gateway:53 is bound for UDP and TCP.
        """
        gvtap = self.build()
        self.assertEqual(gvtap.dhcp.config.dnsServers, ["192.168.127.1"])
        gateway = b"\xc0\xa8\x7f\x01"
        self.assertIn((gateway, 53), gvtap.network._udpPorts)
        self.assertIn((gateway, 53), gvtap.tcp._listeners)

    def test_noDNS(self):
        """
        --no-dns: no DNS server is bound, and DHCP offers none.
        """
        gvtap = self.build(dns=False)
        self.assertIsNone(gvtap.dns)
        self.assertEqual(gvtap.dhcp.config.dnsServers, [])
        self.assertNotIn((b"\xc0\xa8\x7f\x01", 53), gvtap.network._udpPorts)

    def test_natPolicy(self):
        """
        --no-host-loopback and --ec2-metadata-access reach all three NATs.
        """
        gvtap = self.build(hostLoopback=False, ec2MetadataAccess=True)
        for part in (gvtap.nat.tcp, gvtap.nat.udp, gvtap.nat.icmp):
            self.assertFalse(part.hostLoopback)
            self.assertTrue(part.ec2MetadataAccess)

    def test_maxConnections(self):
        """
        --max-connections caps the TCP table.
        """
        self.assertEqual(self.build(maxConnections=7).tcp.maxConnections, 7)

    def test_ipv6Zones(self):
        """
        With IPv6 the local zones name the gateway's and the host's IPv6
        addresses too (the host's not with --no-host-loopback); with
        --no-ipv6 they are gvproxy's.
        """
        records = self.build().dns.zones.all()[0]["Records"]
        self.assertIn({"Name": "gateway", "IP": "fd00:192:168:127::1"}, records)
        self.assertIn({"Name": "host", "IP": "fd00:192:168:127::fe"}, records)
        records = self.build(hostLoopback=False).dns.zones.all()[0]["Records"]
        self.assertNotIn({"Name": "host", "IP": "fd00:192:168:127::fe"}, records)
        self.assertEqual(records[:2], [{"Name": "gateway", "IP": "192.168.127.1"},
                                       {"Name": "host", "IP": "192.168.127.254"}])
        gvtap = Gvtap(MemoryReactorClock(), NetworkConfig(ipv6=False), resolvConf=os.devnull)
        self.addCleanup(gvtap.stop)
        self.assertEqual(len(gvtap.dns.zones.all()[0]["Records"]), 2)

    def test_ipv6Services(self):
        """
        DNS (UDP and TCP) and the guest API listen on the gateway's IPv6
        address; DHCPv6 on 547.
        """
        gvtap = self.build()
        gw6 = NetworkConfig().gatewayIP6Bytes
        self.assertIn((gw6, 53), gvtap.ipv6._udpPorts)
        self.assertIn((None, 547), gvtap.ipv6._udpPorts)
        self.assertIn((gw6, 53), gvtap.tcp6._listeners)
        self.assertIn((gw6, 80), gvtap.tcp6._listeners)

    def test_maxBufferedBytes(self):
        """
        --max-buffered-bytes sizes the TCP demux's one buffer budget (512 MiB
        by default).
        """
        self.assertEqual(self.build().tcp.budget.limit, 512 * 1024 * 1024)
        self.assertEqual(self.build(maxBufferedBytes=4096).tcp.budget.limit, 4096)


verifyingVariants(globals())
