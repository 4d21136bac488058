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

    def test_maxBufferedBytes(self):
        """
        --max-buffered-bytes sizes the TCP demux's one buffer budget (512 MiB
        by default).
        """
        self.assertEqual(self.build().tcp.budget.limit, 512 * 1024 * 1024)
        self.assertEqual(self.build(maxBufferedBytes=4096).tcp.budget.limit, 4096)


verifyingVariants(globals())
