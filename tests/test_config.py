"""
Tests for L{gvtwisted.config} (addresses derived and validated) and the
L{gvtwisted.tap.Options} of C{twistd gvtap}.
"""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.config import ConfigError, NetworkConfig
from gvtwisted.tap import Options

FUZZ = settings(max_examples=100, deadline=None)


class NetworkConfigTests(SynchronousTestCase):
    """
    L{NetworkConfig} derives the gateway, device and host addresses from the
    subnet and refuses configurations that cannot work.
    """

    def test_defaults(self):
        """
        The defaults are gvproxy's: 192.168.127.0/24, gateway .1, device .2,
        host .254, MTU 1500 and the well-known MACs.
        """
        c = NetworkConfig()
        self.assertEqual(str(c.subnet), "192.168.127.0/24")
        self.assertEqual((str(c.gatewayIP), str(c.deviceIP), str(c.hostIP)),
                         ("192.168.127.1", "192.168.127.2", "192.168.127.254"))
        self.assertEqual(c.gatewayIPBytes, bytes([192, 168, 127, 1]))
        self.assertEqual(c.deviceIPBytes, bytes([192, 168, 127, 2]))
        self.assertEqual(c.hostIPBytes, bytes([192, 168, 127, 254]))
        self.assertEqual(c.broadcastIPBytes, bytes([192, 168, 127, 255]))
        self.assertEqual(c.gatewayMAC, bytes.fromhex("5a94efe40cdd"))
        self.assertEqual(c.deviceMAC, bytes.fromhex("5a94efe40cee"))
        self.assertEqual(c.mtu, 1500)

    def test_smallestSubnet(self):
        """
        10.0.0.0/29 gives gateway .1, device .2 and host .6.
        """
        c = NetworkConfig(subnet="10.0.0.0/29")
        self.assertEqual((str(c.gatewayIP), str(c.deviceIP), str(c.hostIP)),
                         ("10.0.0.1", "10.0.0.2", "10.0.0.6"))
        self.assertEqual(c.broadcastIPBytes, bytes([10, 0, 0, 7]))

    def test_hostBitsIgnored(self):
        """
        A subnet written with host bits (10.1.2.3/16) means its network.
        """
        c = NetworkConfig(subnet="10.1.2.3/16")
        self.assertEqual(str(c.subnet), "10.1.0.0/16")
        self.assertEqual(str(c.hostIP), "10.1.255.254")

    def test_explicitAddresses(self):
        """
        Addresses given explicitly are used.
        """
        c = NetworkConfig(gatewayIP="192.168.127.10", deviceIP="192.168.127.20",
                          hostIP="192.168.127.30")
        self.assertEqual((str(c.gatewayIP), str(c.deviceIP), str(c.hostIP)),
                         ("192.168.127.10", "192.168.127.20", "192.168.127.30"))

    def test_inSubnet(self):
        """
        C{inSubnet} tests a 4-byte address against the subnet.
        """
        c = NetworkConfig()
        self.assertTrue(c.inSubnet(bytes([192, 168, 127, 77])))
        self.assertFalse(c.inSubnet(bytes([192, 168, 128, 1])))
        self.assertFalse(c.inSubnet(bytes([0, 0, 0, 0])))

    def test_errors(self):
        """
        Each unusable value raises L{ConfigError} with one line naming the
        problem.
        """
        cases = [
            (dict(subnet="10.0.0.0/30"), "/29"),
            (dict(subnet="nonsense"), "--subnet"),
            (dict(mtu=70000), "--mtu"),
            (dict(mtu=100), "--mtu"),
            (dict(mtu="big"), "--mtu"),
            (dict(gatewayIP="10.0.0.1"), "outside"),
            (dict(gatewayIP="192.168.127.2"), "distinct"),
            (dict(hostIP="192.168.127.1"), "distinct"),
            (dict(hostIP="192.168.127.255"), "broadcast"),
            (dict(deviceIP="192.168.127.0"), "network"),
            (dict(gatewayIP="not-an-ip"), "--gateway-ip"),
            (dict(gatewayMAC="zz:zz:zz:zz:zz:zz"), "--gateway-mac"),
            (dict(deviceMAC="5a:94:ef"), "--device-mac"),
            (dict(deviceMAC="01:00:5e:00:00:01"), "unicast"),
        ]
        for kwargs, fragment in cases:
            with self.assertRaises(ConfigError, msg=repr(kwargs)) as ctx:
                NetworkConfig(**kwargs)
            message = str(ctx.exception)
            self.assertIn(fragment, message, kwargs)
            self.assertNotIn("\n", message)
            self.assertIsInstance(ctx.exception, ValueError)

    def test_mtuBounds(self):
        """
        MTU 65520 (the largest a 2-byte length carries) is accepted; 65521
        is not.
        """
        self.assertEqual(NetworkConfig(mtu=65520).mtu, 65520)
        self.assertEqual(NetworkConfig(mtu="9000").mtu, 9000)
        self.assertRaises(ConfigError, NetworkConfig, mtu=65521)

    @FUZZ
    @given(st.integers(0, 2**32 - 1), st.integers(8, 29))
    def test_anySubnet(self, address, prefix):
        """
        Any subnet from /8 to /29 yields three distinct usable addresses
        inside it.
        """
        subnet = ipaddress.IPv4Network((address, prefix), strict=False)
        c = NetworkConfig(subnet=str(subnet))
        addresses = {c.gatewayIP, c.deviceIP, c.hostIP}
        self.assertEqual(len(addresses), 3)
        for a in addresses:
            self.assertIn(a, subnet)
            self.assertNotIn(a, (subnet.network_address, subnet.broadcast_address))
            self.assertTrue(c.inSubnet(a.packed))


class OptionsTests(SynchronousTestCase):
    """
    L{Options} turns the command line into endpoint strings and a
    L{NetworkConfig}, and stops with one C{gvtap:} line on bad input.
    """

    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def assertExits(self, *args):
        """
        Parsing C{args} raises L{SystemExit} with one line starting C{gvtap:}.
        """
        with self.assertRaises(SystemExit) as ctx:
            self.parse(*args)
        message = ctx.exception.code
        self.assertIsInstance(message, str)
        self.assertTrue(message.startswith("gvtap:"), message)
        self.assertNotIn("\n", message)
        return message

    def test_defaults(self):
        """
        With only an endpoint, the network has the default addresses.
        """
        options = self.parse("--listen", "unix:/tmp/gv.sock")
        c = options["config"]
        self.assertEqual((str(c.gatewayIP), str(c.deviceIP), str(c.hostIP), c.mtu),
                         ("192.168.127.1", "192.168.127.2", "192.168.127.254", 1500))
        self.assertEqual(options["listen"], ["unix:/tmp/gv.sock:mode=600:lockfile=0"])
        self.assertEqual(options["listen-qemu"], [])
        self.assertEqual((options["link-grace"], options["max-macs-per-link"]), (60.0, 64))

    def test_subnet(self):
        """
        C{--subnet 10.0.0.0/29} derives .1, .2 and .6.
        """
        c = self.parse("--listen", "tcp:1024", "--subnet", "10.0.0.0/29", "--mtu", "9000")["config"]
        self.assertEqual((str(c.gatewayIP), str(c.deviceIP), str(c.hostIP), c.mtu),
                         ("10.0.0.1", "10.0.0.2", "10.0.0.6", 9000))

    def test_vsockPort(self):
        """
        C{--vsock-port 1024} adds C{vsock:1024} to the listen endpoints.
        """
        self.assertEqual(self.parse("--vsock-port", "1024")["listen"], ["vsock:1024"])
        self.assertEqual(self.parse("--listen", "tcp:5000", "--vsock-port", "1024")["listen"],
                         ["tcp:5000", "vsock:1024"])

    def test_urls(self):
        """
        gvproxy URLs are converted; C{--listen} and C{--listen-qemu} repeat.
        """
        options = self.parse("--listen", "unix:///tmp/a.sock", "--listen", "tcp://127.0.0.1:1024",
                             "--listen-qemu", "unix:///tmp/q.sock")
        self.assertEqual(options["listen"],
                         ["unix:/tmp/a.sock:mode=600:lockfile=0", "tcp:1024:interface=127.0.0.1"])
        self.assertEqual(options["listen-qemu"], ["unix:/tmp/q.sock:mode=600:lockfile=0"])

    def test_qemuOnly(self):
        """
        A QEMU endpoint alone is enough.
        """
        self.assertEqual(self.parse("--listen-qemu", "tcp:1234")["listen-qemu"], ["tcp:1234"])

    def test_noEndpoint(self):
        """
        With no endpoint at all, parsing exits with a one-line message.
        """
        self.assertIn("--listen", self.assertExits())

    def test_errors(self):
        """
        Each bad value exits with one C{gvtap:} line naming the problem.
        """
        listen = ("--listen", "tcp:1024")
        cases = [
            (("--subnet", "10.0.0.0/30"), "/29"),
            (("--mtu", "70000"), "--mtu"),
            (("--gateway-ip", "10.9.9.1"), "outside"),
            (("--gateway-ip", "192.168.127.254"), "distinct"),
            (("--host-ip", "192.168.127.255"), "broadcast"),
            (("--device-ip", "192.168.127.0"), "network"),
            (("--gateway-mac", "5a:94:ef:e4:0c"), "--gateway-mac"),
            (("--device-mac", "5a:94:ef:e4:0c:zz"), "--device-mac"),
            (("--vsock-port", "abc"), "--vsock-port"),
            (("--listen", "http://127.0.0.1:80"), "scheme"),
            (("--link-grace", "-1"), "--link-grace"),
            (("--max-macs-per-link", "0"), "--max-macs-per-link"),
            (("--max-leases-per-link", "0"), "--max-leases-per-link"),
            (("--max-buffered-bytes", "0"), "--max-buffered-bytes"),
        ]
        for args, fragment in cases:
            message = self.assertExits(*(listen + args))
            self.assertIn(fragment, message, args)


class IPv6ConfigTests(SynchronousTestCase):
    """
    L{NetworkConfig} derives the IPv6 addresses from C{subnet6} and refuses
    prefixes that guests cannot use; C{--subnet6} and C{--no-ipv6} reach it.
    """

    def test_defaults(self):
        """
        fd00:192:168:127::/64 with gateway ::1, device ::2, host ::fe and the
        gateway's link-local address from its MAC (EUI-64).
        """
        c = NetworkConfig()
        self.assertTrue(c.ipv6)
        self.assertEqual(str(c.subnet6), "fd00:192:168:127::/64")
        self.assertEqual((str(c.gatewayIP6), str(c.deviceIP6), str(c.hostIP6)),
                         ("fd00:192:168:127::1", "fd00:192:168:127::2", "fd00:192:168:127::fe"))
        self.assertEqual(str(c.gatewayLinkLocal6), "fe80::5894:efff:fee4:cdd")
        self.assertEqual(c.gatewayIP6Bytes, ipaddress.IPv6Address("fd00:192:168:127::1").packed)
        self.assertEqual(c.hostIP6Bytes, ipaddress.IPv6Address("fd00:192:168:127::fe").packed)
        self.assertEqual(c.deviceIP6Bytes, ipaddress.IPv6Address("fd00:192:168:127::2").packed)
        self.assertEqual(c.gatewayLinkLocal6Bytes,
                         ipaddress.IPv6Address("fe80::5894:efff:fee4:cdd").packed)

    def test_linkLocalFollowsMAC(self):
        """
        Another gateway MAC gives another link-local address.
        """
        c = NetworkConfig(gatewayMAC="02:00:00:00:00:01")
        self.assertEqual(str(c.gatewayLinkLocal6), "fe80::ff:fe00:1")

    def test_otherSubnet(self):
        """
        A subnet written with host bits means its /64.
        """
        c = NetworkConfig(subnet6="2001:db8:1:2::77/64")
        self.assertEqual(str(c.subnet6), "2001:db8:1:2::/64")
        self.assertEqual(str(c.hostIP6), "2001:db8:1:2::fe")

    def test_inSubnet6(self):
        """
        C{inSubnet6} tests a 16-byte address against the prefix.
        """
        c = NetworkConfig()
        self.assertTrue(c.inSubnet6(ipaddress.IPv6Address("fd00:192:168:127::1234").packed))
        self.assertFalse(c.inSubnet6(ipaddress.IPv6Address("fd00:192:168:128::1").packed))
        self.assertFalse(NetworkConfig(ipv6=False).inSubnet6(c.gatewayIP6Bytes))

    def test_disabled(self):
        """
        With IPv6 off no IPv6 address exists, and a bad C{subnet6} is not
        even looked at.
        """
        c = NetworkConfig(ipv6=False, subnet6="nonsense")
        self.assertFalse(c.ipv6)
        self.assertIsNone(c.subnet6)
        self.assertIsNone(c.gatewayIP6Bytes)
        self.assertIsNone(c.gatewayLinkLocal6Bytes)

    def test_errors(self):
        """
        Each unusable prefix raises one line naming C{--subnet6} and why.
        """
        cases = [
            ("nonsense", "not an IPv6 network"),
            ("192.168.0.0/24", "not an IPv6 network"),
            ("fd00::/48", "/64"),
            ("fd00::/80", "/64"),
            ("fe80::/64", "unicast"),
            ("ff02::/64", "unicast"),
            ("::/64", "unicast"),
        ]
        for subnet6, fragment in cases:
            with self.assertRaises(ConfigError, msg=subnet6) as ctx:
                NetworkConfig(subnet6=subnet6)
            message = str(ctx.exception)
            self.assertIn("--subnet6", message)
            self.assertIn(fragment, message, subnet6)
            self.assertNotIn("\n", message)

    def test_options(self):
        """
        C{--subnet6} and C{--no-ipv6} reach the configuration; a bad prefix
        exits with one C{gvtap:} line.
        """
        options = Options()
        options.parseOptions(["--listen", "tcp:1024", "--subnet6", "2001:db8::/64"])
        self.assertEqual(str(options["config"].gatewayIP6), "2001:db8::1")
        options = Options()
        options.parseOptions(["--listen", "tcp:1024", "--no-ipv6"])
        self.assertFalse(options["config"].ipv6)
        options = Options()
        with self.assertRaises(SystemExit) as ctx:
            options.parseOptions(["--listen", "tcp:1024", "--subnet6", "fd00::/56"])
        self.assertTrue(ctx.exception.code.startswith("gvtap: --subnet6"), ctx.exception.code)
