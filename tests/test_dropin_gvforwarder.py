"""
Tests for the C{gvforwarder} command (L{gvtwisted.dropin.gvforwarder}):
cmd/vm's v0.8.9 flags and defaults, translated to C{twistd gvtap-guest}.
"""

import io

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.dropin import gvforwarder
from gvtwisted.guest.forwarder import GuestForwarder
from gvtwisted.guest.stdio import parseStdioURL
from gvtwisted.guest.tap import Options


def translate(*argv):
    values, _, _ = gvforwarder.gvforwarderFlags("gvforwarder").parse(list(argv))
    return gvforwarder.translate(values)


class TranslateTests(SynchronousTestCase):
    """
    gvforwarder's command lines become twistd gvtap-guest's.
    """

    def test_defaults(self):
        """
        No flags: vsock CID 2 port 1024, tap0, the device MAC, the
        stop-if-exist list, and a DHCP client run once the link is up.
        """
        self.assertEqual(translate(), [
            "--connect", "vsock://2:1024/connect", "--iface", "tap0",
            "--mac", "5a:94:ef:e4:0c:ee", "--stop-if-exist=eth0,ens3,enp0s1", "--dhcp"])

    def test_podmanHyperV(self):
        """
        podman's Hyper-V guest unit: -preexisting -iface %i -url ...: no DHCP.
        """
        self.assertEqual(translate("-preexisting", "-iface", "eth1", "-url",
                                   "vsock://2:1024/connect"), [
            "--connect", "vsock://2:1024/connect", "--iface", "eth1",
            "--mac", "5a:94:ef:e4:0c:ee", "--stop-if-exist=eth0,ens3,enp0s1", "--preexisting"])

    def test_everyFlag(self):
        """
        -url unix://, -mac, -stop-if-exist '', -debug; -mtu is accepted.
        """
        tap = translate("-url", "unix:///run/gv.sock", "-mac", "5a:94:ef:e4:0c:01",
                        "-stop-if-exist=", "-debug", "-mtu", "1500")
        self.assertEqual(tap, ["--connect", "unix:///run/gv.sock", "--iface", "tap0",
                               "--mac", "5a:94:ef:e4:0c:01", "--stop-if-exist=", "--dhcp",
                               "--debug"])
        options = Options()
        options.parseOptions(tap)
        self.assertEqual(options["endpoint"], "unix:/run/gv.sock")
        self.assertEqual(options["stopIfExist"], [])
        self.assertTrue(options["debug"])

    def test_guestOptionsTakeDefaults(self):
        """
        gvtap-guest's Options take the default translation.
        """
        options = Options()
        options.parseOptions(translate("-url", "unix:///tmp/x.sock"))
        self.assertEqual(options["stopIfExist"], ["eth0", "ens3", "enp0s1"])
        self.assertEqual(options["macBytes"], bytes.fromhex("5a94efe40cee"))
        self.assertTrue(options["dhcp"])

    def test_emptyMAC(self):
        """
        -mac '': no --mac (the interface keeps its own address).
        """
        self.assertNotIn("--mac", translate("-mac", ""))

    def test_badMTU(self):
        """
        -mtu takes an int, as Go's flag does.
        """
        err = io.StringIO()
        e = self.assertRaises(SystemExit, gvforwarder.main, ["gvforwarder", "-mtu", "big"],
                              stderr=err)
        self.assertEqual(e.code, 2)
        self.assertTrue(err.getvalue().startswith(
            'invalid value "big" for flag -mtu: parse error\nUsage of gvforwarder:\n'))

    def test_version(self):
        """
        -version: gvforwarder's line, naming gvtap.
        """
        out = io.StringIO()
        e = self.assertRaises(SystemExit, gvforwarder.main, ["gvforwarder", "-version"], stdout=out)
        self.assertEqual(e.code, 0)
        self.assertRegex(out.getvalue(), r"^gvforwarder version v\S+\+gvtap \(gvtap ")

    def test_usage(self):
        """
        The usage lists cmd/vm's flags with their defaults.
        """
        text = gvforwarder.gvforwarderFlags("gvforwarder").usage()
        self.assertIn('  -url string\n    \turl where the tap send packets '
                      '(default "vsock://2:1024/connect")\n', text)
        self.assertIn("  -mtu int\n    \tmtu (default 4000)\n", text)
        self.assertIn('  -stop-if-exist string\n    \tstop if one of these interfaces exists '
                      'at startup (default "eth0,ens3,enp0s1")\n', text)


class DHCPCommandTests(SynchronousTestCase):
    """
    cmd/vm's DHCP client choice.
    """

    def test_udhcpc(self):
        """
        udhcpc when it is on PATH, with cmd/vm's arguments.
        """
        which = {"udhcpc": "/sbin/udhcpc", "dhclient": "/sbin/dhclient"}.get
        self.assertEqual(gvforwarder.gvforwarderDHCPCommand("tap0", which),
                         ["/sbin/udhcpc", "-f", "-q", "-i", "tap0", "-v"])

    def test_dhclient(self):
        """
        Otherwise dhclient in the foreground.
        """
        which = {"dhclient": "/sbin/dhclient"}.get
        self.assertEqual(gvforwarder.gvforwarderDHCPCommand("eth1", which),
                         ["/sbin/dhclient", "-4", "-d", "-v", "eth1"])


class StdioURLTests(SynchronousTestCase):
    """
    gvforwarder's C{stdio:CMD?k=v} URLs.
    """

    def test_parse(self):
        """
        The command, and each query pair as C{-k=v}, in order.
        """
        self.assertEqual(parseStdioURL("stdio:/usr/bin/gvproxy?listen-stdio=accept&debug=true"),
                         ("/usr/bin/gvproxy", ["-listen-stdio=accept", "-debug=true"]))
        self.assertEqual(parseStdioURL("stdio:relay"), ("relay", []))
        self.assertRaises(ValueError, parseStdioURL, "stdio:")

    def test_guestOptions(self):
        """
        gvtap-guest takes a stdio: URL: no endpoint string, no handshake path.
        """
        options = Options()
        options.parseOptions(["--connect", "stdio:/bin/cat?x=1"])
        self.assertEqual(options["stdio"], ("/bin/cat", ["-x=1"]))
        self.assertIsNone(options["path"])

    def test_noHandshake(self):
        """
        A forwarder without a path sends no C{POST /connect}.
        """
        self.assertEqual(GuestForwarder(object(), None, path=None).request, b"")
        self.assertTrue(GuestForwarder(object(), None).request.startswith(b"POST /connect "))
