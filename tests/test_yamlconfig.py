"""
Tests for gvproxy's YAML configuration file: the schema and its errors
(L{gvtwisted.dropin.yamlconfig}), v0.8.9's rules for file and flags
(L{gvtwisted.dropin.gvproxyconfig}), C{twistd gvtap --config}
(L{gvtwisted.dropin.tapconfig}), and each key taking effect in the network.
"""

import os
import socket
import tempfile

import dpkt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.assembly import Gvtap
from gvtwisted.config import ConfigError, NetworkConfig
from gvtwisted.dropin.gvproxyconfig import ConfigureError, configure, gvtapSettings
from gvtwisted.dropin.yamlconfig import ConfigFileError, parseConfig
from gvtwisted.services.nat_policy import HOST_LOOPBACK_DISABLED, IN_SUBNET, hostDestination
from gvtwisted.tap import Options

FULL = """\
listen:
  - unix:///tmp/gv-api.sock
log-level: debug
stack:
  debug: true
  capture-file: /tmp/cap.pcap
  mtu: 4000
  subnet: 10.0.0.0/24
  gatewayIP: 10.0.0.1
  gatewayMacAddress: 10:11:11:11:11:00
  dns:
    - name: test.internal.
      records:
        - name: one
          ip: 10.0.0.50
        - regexp: '^web-[0-9]+$'
          ip: 10.0.0.51
      defaultIP: 10.0.0.52
  dnsSearchDomains:
    - example.test
    - corp.test
  forwards:
    127.0.0.1:5022: 10.0.0.2:22
    udp:127.0.0.1:5053: 10.0.0.2:53
  nat:
    10.0.0.254: 127.0.0.1
    10.0.0.253: 127.0.0.2
  gatewayVirtualIPs:
    - 10.0.0.254
    - 10.0.0.253
  dhcpStaticLeases:
    10.0.0.2: 10:11:11:11:11:02
    10.0.0.3: "5a:94:ef:e4:0c:33"
  vpnKitUUIDMacAddresses:
    c3d68012-0208-11ea-9fd7-f2189899ab08: 5a:94:ef:e4:0c:ee
  ec2MetadataAccess: true
interfaces:
  qemu: unix:///tmp/gv-qemu.sock
  vfkit: unixgram:///tmp/gv-vfkit.sock
  bess: unixpacket:///tmp/gv-bess.sock
  vpnkit: unix:///tmp/gv-vpnkit.sock
  stdio: accept
forwards:
  - socket: /tmp/podman.sock
    dest: /run/podman/podman.sock
    user: core
    identity: /tmp/id_ed25519
pid-file: /tmp/gv.pid
log-file: /tmp/gv.log
services: unix:///tmp/gv-services.sock
ec2-metadata-access: false
notification: /tmp/notify.sock
"""


class SchemaTests(SynchronousTestCase):
    """
    Every key of v0.8.9's schema is read with its type.
    """

    def test_everyKey(self):
        """
        A file with every key gives each value, typed.
        """
        c = parseConfig(FULL, "full.yaml")
        self.assertEqual(c["listen"], ["unix:///tmp/gv-api.sock"])
        self.assertEqual(c["log-level"], "debug")
        s = c["stack"]
        self.assertIs(s["debug"], True)
        self.assertEqual(s["capture-file"], "/tmp/cap.pcap")
        self.assertEqual(s["mtu"], 4000)
        self.assertEqual(s["subnet"], "10.0.0.0/24")
        self.assertEqual(s["gatewayIP"], "10.0.0.1")
        # YAML 1.1 would make this a base-60 number; gvproxy reads a string.
        self.assertEqual(s["gatewayMacAddress"], "10:11:11:11:11:00")
        zone = s["dns"][0]
        self.assertEqual(zone["name"], "test.internal.")
        self.assertEqual(zone["defaultIP"], "10.0.0.52")
        self.assertEqual(zone["records"][0], {"name": "one", "ip": "10.0.0.50"})
        self.assertEqual(zone["records"][1]["regexp"].pattern, "^web-[0-9]+$")
        self.assertEqual(s["dnsSearchDomains"], ["example.test", "corp.test"])
        self.assertEqual(s["forwards"], {"127.0.0.1:5022": "10.0.0.2:22",
                                         "udp:127.0.0.1:5053": "10.0.0.2:53"})
        self.assertEqual(s["nat"], {"10.0.0.254": "127.0.0.1", "10.0.0.253": "127.0.0.2"})
        self.assertEqual(s["gatewayVirtualIPs"], ["10.0.0.254", "10.0.0.253"])
        self.assertEqual(s["dhcpStaticLeases"], {"10.0.0.2": "10:11:11:11:11:02",
                                                 "10.0.0.3": "5a:94:ef:e4:0c:33"})
        self.assertEqual(s["vpnKitUUIDMacAddresses"],
                         {"c3d68012-0208-11ea-9fd7-f2189899ab08": "5a:94:ef:e4:0c:ee"})
        self.assertIs(s["ec2MetadataAccess"], True)
        self.assertEqual(c["interfaces"], {
            "qemu": "unix:///tmp/gv-qemu.sock", "vfkit": "unixgram:///tmp/gv-vfkit.sock",
            "bess": "unixpacket:///tmp/gv-bess.sock", "vpnkit": "unix:///tmp/gv-vpnkit.sock",
            "stdio": "accept"})
        self.assertEqual(c["forwards"], [{"socket": "/tmp/podman.sock",
                                          "dest": "/run/podman/podman.sock", "user": "core",
                                          "identity": "/tmp/id_ed25519"}])
        self.assertEqual(c["pid-file"], "/tmp/gv.pid")
        self.assertEqual(c["log-file"], "/tmp/gv.log")
        self.assertEqual(c["services"], "unix:///tmp/gv-services.sock")
        self.assertIs(c["ec2-metadata-access"], False)
        self.assertEqual(c["notification"], "/tmp/notify.sock")

    def test_aliasBomb(self):
        """
        Aliases that would make the walk huge (400 zones sharing one list of
        400 records: 160000 values from a short file): one line, at once.
        """
        records = "[" + ", ".join(["{name: a, ip: 10.0.0.1}"] * 400) + "]"
        zones = "\n".join(["    - records: *r"] * 399)
        text = f"stack:\n  dns:\n    - records: &r {records}\n{zones}\n"
        e = self.assertRaises(ConfigFileError, parseConfig, text, "f.yaml")
        self.assertEqual(str(e), "f.yaml: more than 100000 values (aliases included)")

    def test_empty(self):
        """
        An empty file (or only a comment) is an empty configuration.
        """
        self.assertEqual(parseConfig(""), {})
        self.assertEqual(parseConfig("# nothing\n"), {})

    def test_errors(self):
        """
        An unknown key, a wrong type or bad YAML: one line naming the file,
        the line and the key.
        """
        cases = [
            ("colour: blue\n", "f.yaml:1: colour: unknown key"),
            ("stack:\n  mtuu: 1\n", "f.yaml:2: stack.mtuu: unknown key"),
            ("stack:\n  dns:\n    - name: x.\n      recs: []\n", "f.yaml:4: stack.dns[0].recs: unknown key"),
            ("stack:\n  mtu: big\n", "f.yaml:2: stack.mtu: expected an integer, got 'big'"),
            ("stack:\n  mtu: '1500'\n", "f.yaml:2: stack.mtu: expected an integer, got '1500'"),
            ("stack:\n  debug: yes\n", "f.yaml:2: stack.debug: expected true or false, got 'yes'"),
            ("listen: unix:///x\n", "f.yaml:1: listen: expected a list, got 'unix:///x'"),
            ("stack: [1]\n", "f.yaml:1: stack: expected a mapping, got a list"),
            ("stack:\n  nat: [a]\n", "f.yaml:2: stack.nat: expected a mapping, got a list"),
            ("stack:\n  dns:\n    - records:\n        - ip: 10.0.0.300\n",
             "f.yaml:4: stack.dns[0].records[0].ip: invalid IP address: 10.0.0.300"),
            ("stack:\n  dns:\n    - records:\n        - regexp: '('\n",
             "f.yaml:4: stack.dns[0].records[0].regexp: bad regular expression '('"),
            ("interfaces:\n  qemu: [x]\n", "f.yaml:2: interfaces.qemu: expected a string, got a list"),
            ("forwards:\n  - socket: /s\n    sock: /t\n", "f.yaml:3: forwards[0].sock: unknown key"),
            ("pid-file: /a\npid-file: /b\n", "f.yaml:2: pid-file: given twice"),
            ("stack: {\n", "f.yaml:2: not valid YAML"),
        ]
        for text, want in cases:
            e = self.assertRaises(ConfigFileError, parseConfig, text, "f.yaml")
            self.assertTrue(str(e).startswith(want), (text, str(e)))
            self.assertNotIn("\n", str(e))


class ConfigureTests(SynchronousTestCase):
    """
    v0.8.9's GvproxyConfigure with a file (its config_test.go cases).
    """

    def test_emptyFile(self):
        """
        An empty file: the address defaults, the NAT table and virtual IPs,
        but none of the legacy defaults (zones, leases, forwards).
        """
        config, warnings = configure({}, {})
        self.assertEqual(config["stack"], {
            "mtu": 1500, "subnet": "192.168.127.0/24", "gatewayIP": "192.168.127.1",
            "gatewayMacAddress": "5a:94:ef:e4:0c:dd", "nat": {"192.168.127.254": "127.0.0.1"},
            "gatewayVirtualIPs": ["192.168.127.254"]})
        self.assertEqual(config["log-level"], "info")
        self.assertEqual(warnings, [])

    def test_autoAddresses(self):
        """
        The gateway, NAT and virtual IP follow the file's subnet.
        """
        config, _ = configure({"stack": {"subnet": "10.0.0.0/16", "mtu": 1480}}, {})
        self.assertEqual(config["stack"]["gatewayIP"], "10.0.0.1")
        self.assertEqual(config["stack"]["nat"], {"10.0.255.254": "127.0.0.1"})
        self.assertEqual(config["stack"]["gatewayVirtualIPs"], ["10.0.255.254"])
        self.assertEqual(config["stack"]["mtu"], 1480)

    def test_flagsWin(self):
        """
        -debug, -mtu, -listen (the whole list), -services, interfaces and
        -pid-file override the file; -forward-* add to its forwards.
        """
        fileConfig = {"listen": ["unix:///a", "unix:///b"], "log-level": "error",
                      "stack": {"mtu": 1400}, "interfaces": {"qemu": "unix:///q"},
                      "pid-file": "/f.pid", "services": "unix:///s1",
                      "forwards": [{"socket": "/1", "dest": "/d", "user": "u", "identity": "/i"}]}
        args = {"debug": True, "mtu": 9000, "listen": ["unix:///c"], "services": "unix:///s2",
                "listen-qemu": "unix:///q2", "pid-file": "/c.pid",
                "forward-sock": ["/2"], "forward-dest": ["/d2"], "forward-user": ["v"],
                "forward-identity": ["/i2"]}
        config, _ = configure(fileConfig, args, exists=lambda p: p.startswith("/i"))
        self.assertEqual(config["log-level"], "debug")
        self.assertTrue(config["stack"]["debug"])
        self.assertEqual(config["stack"]["mtu"], 9000)
        self.assertEqual(config["listen"], ["unix:///c"])
        self.assertEqual(config["services"], "unix:///s2")
        self.assertEqual(config["interfaces"]["qemu"], "unix:///q2")
        self.assertEqual(config["pid-file"], "/c.pid")
        self.assertEqual([f["socket"] for f in config["forwards"]], ["/1", "/2"])

    def test_badLogLevel(self):
        """
        An unknown log level warns and falls back to info.
        """
        config, warnings = configure({"log-level": "loud"}, {})
        self.assertEqual(config["log-level"], "info")
        self.assertEqual(warnings, ['bad log level "loud", falling back to "info"'])

    def test_badSubnet(self):
        """
        A subnet netip cannot parse, or smaller than a /29, is refused.
        """
        e = self.assertRaises(ConfigureError, configure, {"stack": {"subnet": "10.0.0.0"}}, {})
        self.assertTrue(str(e).startswith("failed to parse subnet: "))
        e = self.assertRaises(ConfigureError, configure, {"stack": {"subnet": "10.0.0.0/30"}}, {})
        self.assertEqual(str(e), "failed to identify first usable address in subnet: too small network")

    def test_identityMissing(self):
        """
        config_test.go's "ssh forwards fails on identity file missing".
        """
        fileConfig = {"forwards": [{"socket": "???", "dest": "???", "user": "???",
                                    "identity": "???"}]}
        e = self.assertRaises(ConfigureError, configure, fileConfig, {}, exists=lambda p: False)
        self.assertTrue(str(e).startswith("identity file"))


class TapConfigTests(SynchronousTestCase):
    """
    C{twistd gvtap --config FILE}: the file fills what the command line did
    not give.
    """

    def configFile(self, text):
        fd, path = tempfile.mkstemp(suffix=".yaml")
        os.write(fd, text.encode())
        os.close(fd)
        self.addCleanup(os.remove, path)
        return path

    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def fullFile(self):
        # A real OpenSSH key: the --forward-identity files are read at start.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption())
        identity = self.configFile(key.decode())
        return self.configFile(FULL.replace("/tmp/id_ed25519", identity)), identity

    def test_everyKeyApplied(self):
        """
        Each key of the file reaches the option or the network setting it names.
        """
        path, identity = self.fullFile()
        o = self.parse("--config", path)
        self.assertEqual(o["listen"], ["unix:/tmp/gv-api.sock:mode=600:lockfile=0"])
        self.assertEqual(o["listen-qemu"], ["unix:/tmp/gv-qemu.sock:mode=600:lockfile=0"])
        self.assertEqual(o["listen-vfkit"], ["/tmp/gv-vfkit.sock"])
        self.assertEqual(o["listen-bess"], ["/tmp/gv-bess.sock"])
        self.assertEqual(o["listen-vpnkit"], ["unix:/tmp/gv-vpnkit.sock:mode=600:lockfile=0"])
        self.assertTrue(o["listen-stdio"])
        self.assertEqual(o["services"], ["unix:/tmp/gv-services.sock:mode=600:lockfile=0"])
        self.assertEqual(o["pcap"], "/tmp/cap.pcap")
        self.assertTrue(o["debug"])
        self.assertTrue(o["ec2-metadata-access"])
        self.assertEqual(o["ssh-port"], -1)
        self.assertEqual(sorted(o["forward"]), [("127.0.0.1:5022", "10.0.0.2:22", "tcp"),
                                                ("127.0.0.1:5053", "10.0.0.2:53", "udp")])
        self.assertEqual(o["forward-sock"], ["/tmp/podman.sock"])
        self.assertEqual(o["forward-dest"], ["/run/podman/podman.sock"])
        self.assertEqual(o["forward-user"], ["core"])
        self.assertEqual(o["forward-identity"], [identity])
        self.assertEqual(o["notification"], "/tmp/notify.sock")
        self.assertEqual(o["pid-file"], "/tmp/gv.pid")
        self.assertEqual(o["log-file"], "/tmp/gv.log")
        c = o["config"]
        self.assertEqual((c.mtu, str(c.subnet), str(c.gatewayIP)), (4000, "10.0.0.0/24", "10.0.0.1"))
        self.assertEqual(c.gatewayMAC, bytes.fromhex("101111111100"))
        self.assertEqual(c.staticLeases, {"10:11:11:11:11:02": "10.0.0.2",
                                          "5a:94:ef:e4:0c:33": "10.0.0.3"})
        self.assertEqual(c.nat, {socket.inet_aton("10.0.0.254"): "127.0.0.1",
                                 socket.inet_aton("10.0.0.253"): "127.0.0.2"})
        self.assertEqual(c.virtualIPs, {socket.inet_aton("10.0.0.254"),
                                        socket.inet_aton("10.0.0.253")})
        self.assertEqual(c.searchDomains, ["example.test", "corp.test"])
        self.assertEqual(c.zones, [{"Name": "test.internal.", "DefaultIP": "10.0.0.52", "Records": [
            {"Name": "one", "IP": "10.0.0.50"},
            {"Name": "", "IP": "10.0.0.51", "Regexp": "^web-[0-9]+$"}]}])
        self.assertEqual(c.vpnkitMACs, {"c3d68012-0208-11ea-9fd7-f2189899ab08": "5a:94:ef:e4:0c:ee"})

    def test_commandLineWins(self):
        """
        Options on the command line replace the file's; --forward adds.
        """
        path, _ = self.fullFile()
        o = self.parse("--config", path, "--listen", "unix:/tmp/other.sock", "--mtu", "1500",
                       "--pid-file", "/tmp/cli.pid", "--forward", "127.0.0.1:6000=10.0.0.2:80")
        self.assertEqual(o["listen"], ["unix:/tmp/other.sock:mode=600:lockfile=0"])
        self.assertEqual(o["config"].mtu, 1500)
        self.assertEqual(o["pid-file"], "/tmp/cli.pid")
        self.assertIn(("127.0.0.1:6000", "10.0.0.2:80", "tcp"), o["forward"])
        self.assertEqual(len(o["forward"]), 3)
        self.assertEqual(o["ssh-port"], -1)
        o = self.parse("--config", path, "--ssh-port", "4444")
        self.assertEqual(o["ssh-port"], 4444)

    def test_noLegacyDefaults(self):
        """
        With a file, the built-in zones, the device's lease and the SSH
        forward are gone unless the file says them.
        """
        o = self.parse("--config", self.configFile("listen: [unix:///tmp/x.sock]\n"))
        c = o["config"]
        self.assertEqual(c.staticLeases, {})
        self.assertEqual(c.zones, [])
        self.assertEqual(c.searchDomains, [])
        self.assertEqual(c.vpnkitMACs, {})
        self.assertEqual(o["ssh-port"], -1)
        self.assertEqual(o["forward"], [])
        self.assertEqual(c.nat, {socket.inet_aton("192.168.127.254"): "127.0.0.1"})

    def test_badFile(self):
        """
        A bad file stops start-up with one line naming the key.
        """
        e = self.assertRaises(SystemExit, self.parse, "--config",
                              self.configFile("stack:\n  nat:\n    10.0.0.1: nowhere\n"),
                              "--listen", "unix:/tmp/x.sock")
        self.assertEqual(str(e), "gvtap: nat '10.0.0.1': 'nowhere': both must be IPv4 addresses")
        e = self.assertRaises(SystemExit, self.parse, "--config",
                              self.configFile("stack:\n  forwards:\n    nowhere: 10.0.0.2:22\n"))
        self.assertIn("stack.forwards nowhere", str(e))
        e = self.assertRaises(SystemExit, self.parse, "--config", "/nonexistent/x.yaml")
        self.assertIn("failed to read config file", str(e))


class NetworkEffectTests(SynchronousTestCase):
    """
    The file's network settings take effect in the assembled network.
    """

    def setUp(self):
        self.clock = Clock()
        fileConfig = parseConfig(FULL)
        config, _ = configure(fileConfig, {}, exists=lambda p: True, checkSockets=False)
        settings = gvtapSettings(config)
        self.config = NetworkConfig(subnet="10.0.0.0/24", gatewayMAC="10:11:11:11:11:00",
                                    **settings["network"])
        self.gvtap = Gvtap(self.clock, self.config, resolvConf="/nonexistent", guestAPI=False)
        self.addCleanup(self.gvtap.stop)

    def test_staticLeases(self):
        """
        Both static leases are the DHCP server's.
        """
        self.assertEqual(self.gvtap.dhcp.config.staticLeases,
                         {"10:11:11:11:11:02": "10.0.0.2", "5a:94:ef:e4:0c:33": "10.0.0.3"})

    def test_searchDomains(self):
        """
        dnsSearchDomains become DHCP option 119.
        """
        self.assertEqual(self.gvtap.dhcp.config.searchDomains, ["example.test", "corp.test"])

    def test_zones(self):
        """
        The file's zones are the DNS's zones at start.
        """
        zones = self.gvtap.dns.zones.all()
        self.assertEqual([z["Name"] for z in zones], ["test.internal."])
        self.assertEqual(zones[0]["DefaultIP"], "10.0.0.52")
        self.assertEqual([r.get("Regexp") for r in zones[0]["Records"]], [None, "^web-[0-9]+$"])

    def test_natTable(self):
        """
        Each virtual address goes to its host address; others in the subnet
        are refused; without host loopback the host address is refused.
        """
        dst = socket.inet_aton
        self.assertEqual(hostDestination(self.config, dst("10.0.0.254"), True, False), "127.0.0.1")
        self.assertEqual(hostDestination(self.config, dst("10.0.0.253"), True, False), "127.0.0.2")
        self.assertIs(hostDestination(self.config, dst("10.0.0.99"), True, False), IN_SUBNET)
        self.assertIs(hostDestination(self.config, dst("10.0.0.254"), False, False),
                      HOST_LOOPBACK_DISABLED)
        self.assertEqual(hostDestination(self.config, dst("10.0.0.253"), False, False), "127.0.0.2")

    def test_virtualIPsAnswerARP(self):
        """
        The gateway answers ARP for each of gatewayVirtualIPs, not others.
        """
        frames = []

        class Port:
            name = "guest"

            def sendFrame(self, frame):
                frames.append(frame)

        port = Port()
        self.gvtap.switch.attach(port)
        mac = bytes.fromhex("101111111102")
        for target in ("10.0.0.253", "10.0.0.254", "10.0.0.77"):
            request = dpkt.arp.ARP(op=1, sha=mac, spa=socket.inet_aton("10.0.0.2"),
                                   tha=b"\x00" * 6, tpa=socket.inet_aton(target))
            self.gvtap.switch.receiveFrame(port, bytes(dpkt.ethernet.Ethernet(
                dst=b"\xff" * 6, src=mac, type=0x0806, data=bytes(request))))
        answered = [socket.inet_ntoa(dpkt.ethernet.Ethernet(f).data.spa) for f in frames]
        self.assertEqual(answered, ["10.0.0.253", "10.0.0.254"])


class NetworkConfigTests(SynchronousTestCase):
    """
    L{NetworkConfig}'s checks of the extra settings.
    """

    def test_defaults(self):
        """
        By default: the device lease, .254 to 127.0.0.1, .254 answered.
        """
        c = NetworkConfig()
        self.assertEqual(c.staticLeases, {"5a:94:ef:e4:0c:ee": "192.168.127.2"})
        self.assertEqual(c.nat, {socket.inet_aton("192.168.127.254"): "127.0.0.1"})
        self.assertEqual(c.virtualIPs, {socket.inet_aton("192.168.127.254")})
        self.assertIsNone(c.zones)
        self.assertIsNone(c.searchDomains)
        self.assertEqual(c.vpnkitMACs, {"c3d68012-0208-11ea-9fd7-f2189899ab08": "5a:94:ef:e4:0c:ee"})

    def test_bad(self):
        """
        A lease outside the subnet, a bad MAC or a virtual IP outside: one line.
        """
        e = self.assertRaises(ConfigError, NetworkConfig, staticLeases={"5a:94:ef:e4:0c:01": "10.1.1.1"})
        self.assertIn("outside the subnet", str(e))
        self.assertRaises(ConfigError, NetworkConfig, staticLeases={"nope": "192.168.127.9"})
        self.assertRaises(ConfigError, NetworkConfig, virtualIPs=["10.9.9.9"])
