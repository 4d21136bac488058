"""
Tests for the C{gvproxy} command (L{gvtwisted.dropin.gvproxy}): gvproxy v0.8.9's
command lines, as podman and gvisor-tap-vsock's own tests build them, become
the right C{twistd gvtap} arguments, and every combination gvproxy refuses is
refused with gvproxy's message.
"""

import io
import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.dropin import gvproxy
from gvtwisted.dropin.gvproxyconfig import ConfigureError

# GvproxyCommand.ToCmdline() (pkg/types/gvproxy_command.go, v0.8.9) writes, in
# this order: every -listen, every -services, -debug if set, -mtu, -ssh-port,
# the -listen-* sockets, the -forward-* values, -pid-file, -log-file. The
# sockets and forward values come out of Go maps, so their relative order
# varies from run to run: the lists below are two of the orders it produces.

# test-qemu/basic_test.go's expected output, word for word.
QEMU_BASIC_TEST = [
    "-listen", "unix:///tmp/network.sock",
    "-services", "unix:///tmp/services.sock",
    "-debug",
    "-mtu", "1500",
    "-ssh-port", "2222",
    "-listen-qemu", "tcp://0.0.0.0:1234",
    "-forward-user", "demouser",
    "-pid-file", "~/gv-pidfile.txt",
    "-log-file", "~/gv.log",
]

# podman machine on Linux (QEMU provider): NewGvproxyCommand(), SSHPort, the
# API socket forward, AddQemuSocket("unix://" + gvproxy socket), PidFile.
PODMAN_QEMU = [
    "-mtu", "1500",
    "-ssh-port", "41235",
    "-listen-qemu", "unix:///run/user/1000/podman/podman-machine-default-gvproxy.sock",
    "-forward-sock", "/run/user/1000/podman/podman-machine-default-api.sock",
    "-forward-dest", "/run/podman/podman.sock",
    "-forward-user", "root",
    "-forward-identity", "/home/u/.local/share/containers/podman/machine/machine",
    "-pid-file", "/run/user/1000/podman/gvproxy.pid",
]

# podman machine on macOS (applehv/libkrun provider, vfkit) at --log-level
# debug: AddVfkitSocket("unixgram://" + socket), Debug and LogFile set; the
# forward values in another of the map's orders.
PODMAN_VFKIT = [
    "-debug",
    "-mtu", "1500",
    "-ssh-port", "50123",
    "-listen-vfkit", "unixgram:///var/folders/x/T/podman/podman-machine-default-gvproxy.sock",
    "-forward-dest", "/run/podman/podman.sock",
    "-forward-identity", "/Users/u/.local/share/containers/podman/machine/machine",
    "-forward-sock", "/var/folders/x/T/podman/podman-machine-default-api.sock",
    "-forward-user", "core",
    "-pid-file", "/var/folders/x/T/podman/gvproxy.pid",
    "-log-file", "/var/folders/x/T/podman/gvproxy.log",
]


def noSockets(path):
    """
    An C{exists} where no socket path exists and every identity file does.
    """
    return "identity" in path or path.endswith("/machine")


def translate(argv, exists=noSockets):
    values, given, rest = gvproxy.gvproxyFlags("gvproxy").parse(argv)
    return gvproxy.translate(values, argv, exists=exists)


class ToCmdlineTests(SynchronousTestCase):
    """
    What podman and gvisor-tap-vsock's tests run.
    """

    def test_podmanQEMU(self):
        """
        podman's QEMU machine: the QEMU socket, the SSH port, the API socket
        forward by position, the pid file.
        """
        tap, config, warnings = translate(PODMAN_QEMU)
        self.assertEqual(tap, [
            "--mtu", "1500", "--ssh-port=41235",
            "--listen-qemu", "unix:///run/user/1000/podman/podman-machine-default-gvproxy.sock",
            "--forward-sock", "/run/user/1000/podman/podman-machine-default-api.sock",
            "--forward-dest", "/run/podman/podman.sock",
            "--forward-user", "root",
            "--forward-identity", "/home/u/.local/share/containers/podman/machine/machine",
            "--pid-file", "/run/user/1000/podman/gvproxy.pid",
        ])
        self.assertEqual(warnings, [])
        self.assertEqual(config["forwards"], [{
            "socket": "/run/user/1000/podman/podman-machine-default-api.sock",
            "dest": "/run/podman/podman.sock", "user": "root",
            "identity": "/home/u/.local/share/containers/podman/machine/machine"}])

    def test_podmanVfkit(self):
        """
        podman's vfkit machine at debug level: the unixgram socket, -debug,
        the log file; the forward-* values are matched by position whatever
        order the flags came in.
        """
        tap, config, warnings = translate(PODMAN_VFKIT)
        self.assertEqual(tap, [
            "--debug", "--mtu", "1500", "--ssh-port=50123",
            "--listen-vfkit", "unixgram:///var/folders/x/T/podman/podman-machine-default-gvproxy.sock",
            "--forward-sock", "/var/folders/x/T/podman/podman-machine-default-api.sock",
            "--forward-dest", "/run/podman/podman.sock",
            "--forward-user", "core",
            "--forward-identity", "/Users/u/.local/share/containers/podman/machine/machine",
            "--pid-file", "/var/folders/x/T/podman/gvproxy.pid",
            "--log-file", "/var/folders/x/T/podman/gvproxy.log",
        ])
        self.assertEqual(config["log-level"], "debug")
        self.assertTrue(config["stack"]["debug"])

    def test_qemuBasicTest(self):
        """
        test-qemu/basic_test.go's command has one -forward-user and no other
        -forward-*: gvproxy refuses it, and so do we, with its message.
        """
        e = self.assertRaises(ConfigureError, translate, QEMU_BASIC_TEST)
        self.assertEqual(str(e), (
            "--forward-sock, --forward-dest, --forward-user, and --forward-identity must "
            "all be specified together, the same number of times, or not at all"))
        tap, _, _ = translate(QEMU_BASIC_TEST[:11] + QEMU_BASIC_TEST[13:])
        self.assertEqual(tap, [
            "--listen", "unix:///tmp/network.sock", "--services", "unix:///tmp/services.sock",
            "--debug", "--mtu", "1500", "--ssh-port=2222", "--listen-qemu", "tcp://0.0.0.0:1234",
            "--pid-file", "~/gv-pidfile.txt", "--log-file", "~/gv.log"])


# gvproxy command lines (from v0.8.9's README, cmd/gvproxy/config_test.go and
# test-vfkit) and the twistd gvtap arguments they become.
TABLE = [
    (["-listen", "unix:///tmp/network.sock", "-listen-qemu", "tcp://0.0.0.0:1234"],
     ["--listen", "unix:///tmp/network.sock", "--ssh-port=2222",
      "--listen-qemu", "tcp://0.0.0.0:1234"]),
    (["-debug", "-listen", "unix:///tmp/network.sock", "-listen-bess", "unixpacket:///tmp/bess.sock"],
     ["--listen", "unix:///tmp/network.sock", "--debug", "--ssh-port=2222",
      "--listen-bess", "unixpacket:///tmp/bess.sock"]),
    (["-debug", "-listen", "unix:///tmp/network.sock", "--listen-vfkit", "unixgram:///tmp/vfkit.sock"],
     ["--listen", "unix:///tmp/network.sock", "--debug", "--ssh-port=2222",
      "--listen-vfkit", "unixgram:///tmp/vfkit.sock"]),
    (["--ssh-port=2223", "--listen=unix:///tmp/gvproxy-api-vfkit.sock",
      "--listen-vfkit=unixgram:///tmp/vfkit.sock"],
     ["--listen", "unix:///tmp/gvproxy-api-vfkit.sock", "--ssh-port=2223",
      "--listen-vfkit", "unixgram:///tmp/vfkit.sock"]),
    (["-listen", "vsock://:1024", "-listen", "unix:///tmp/network.sock"],
     ["--listen", "vsock://:1024", "--listen", "unix:///tmp/network.sock", "--ssh-port=2222"]),
    (["-listen-stdio", "accept"], ["--ssh-port=2222", "--listen-stdio"]),
    (["-debug", "-pcap", "capture.pcap"], ["--debug", "--ssh-port=2222", "--pcap", "capture.pcap"]),
    (["-ssh-port", "-1", "-listen", "tcp://127.0.0.1:7777", "-mtu", "4000"],
     ["--listen", "tcp://127.0.0.1:7777", "--mtu", "4000", "--ssh-port=-1"]),
    (["-listen-vpnkit", "unix:///tmp/vpnkit.sock", "-ec2-metadata-access",
      "-notification", "unix:///tmp/notify.sock", "-services", "tcp://127.0.0.1:8080"],
     ["--services", "tcp://127.0.0.1:8080", "--ssh-port=2222",
      "--listen-vpnkit", "unix:///tmp/vpnkit.sock", "--ec2-metadata-access",
      "--notification", "unix:///tmp/notify.sock"]),
    (["-debug=false", "-mtu", "0", "-listen", "unix:///a", "extra", "-debug"],
     ["--listen", "unix:///a", "--ssh-port=2222"]),
]


class TableTests(SynchronousTestCase):
    """
    The table of v0.8.9 command lines.
    """

    def test_table(self):
        """
        Each command line becomes its twistd gvtap arguments.
        """
        for argv, want in TABLE:
            self.assertEqual(translate(argv)[0], want, argv)

    def test_tapAcceptsThem(self):
        """
        C{twistd gvtap}'s own Options take the translations (those without
        the options of other features) and build the same endpoints.
        """
        options = gvproxy.parseTapOptions(translate(TABLE[2][0])[0])
        self.assertEqual(options["listen"], ["unix:/tmp/network.sock:mode=600:lockfile=0"])
        self.assertEqual(options["listen-vfkit"], ["/tmp/vfkit.sock"])
        self.assertTrue(options["debug"])
        options = gvproxy.parseTapOptions(translate(TABLE[7][0])[0])
        self.assertEqual(options["ssh-port"], -1)
        self.assertEqual(options["config"].mtu, 4000)

    def test_defaultsAsGvproxy(self):
        """
        Without a file, the effective configuration is v0.8.9's legacy one.
        """
        _, config, _ = translate([])
        stack = config["stack"]
        self.assertEqual(stack["mtu"], 1500)
        self.assertEqual(stack["subnet"], "192.168.127.0/24")
        self.assertEqual(stack["gatewayIP"], "192.168.127.1")
        self.assertEqual(stack["gatewayMacAddress"], "5a:94:ef:e4:0c:dd")
        self.assertEqual(stack["forwards"], {"127.0.0.1:2222": "192.168.127.2:22"})
        self.assertEqual(stack["nat"], {"192.168.127.254": "127.0.0.1"})
        self.assertEqual(stack["gatewayVirtualIPs"], ["192.168.127.254"])
        self.assertEqual(stack["dhcpStaticLeases"], {"192.168.127.2": "5a:94:ef:e4:0c:ee"})
        self.assertEqual(stack["vpnKitUUIDMacAddresses"],
                         {"c3d68012-0208-11ea-9fd7-f2189899ab08": "5a:94:ef:e4:0c:ee"})
        self.assertEqual([z["name"] for z in stack["dns"]],
                         ["containers.internal.", "docker.internal."])
        self.assertEqual(config["log-level"], "info")


class RefusedTests(SynchronousTestCase):
    """
    Every combination v0.8.9 refuses, with its message.
    """

    def refused(self, argv, exists=noSockets):
        return str(self.assertRaises(ConfigureError, translate, argv, exists))

    def test_sshPortRange(self):
        """
        -ssh-port must be 1024..65535 or -1 (without a file).
        """
        for port in ("80", "1023", "0", "-2", "65536"):
            self.assertEqual(self.refused(["-ssh-port", port]),
                             "ssh-port value must be between 1024 and 65535", port)
        for port in ("1024", "65535", "-1"):
            translate(["-ssh-port", port])

    def test_exclusions(self):
        """
        qemu, bess and vpnkit exclude one another.
        """
        qemu = ["-listen-qemu", "unix:///tmp/q.sock"]
        bess = ["-listen-bess", "unixpacket:///tmp/b.sock"]
        vpnkit = ["-listen-vpnkit", "unix:///tmp/v.sock"]
        self.assertEqual(self.refused(qemu + vpnkit),
                         "cannot use qemu and vpnkit protocol at the same time")
        self.assertEqual(self.refused(bess + vpnkit),
                         "cannot use bess and vpnkit protocol at the same time")
        self.assertEqual(self.refused(qemu + bess),
                         "cannot use qemu and bess protocol at the same time")

    def test_schemes(self):
        """
        bess needs unixpacket://, vfkit unixgram://, notification unix://.
        """
        self.assertEqual(self.refused(["-listen-bess", "unix:///tmp/b.sock"]),
                         "bess listen address must be unixpacket:// address")
        self.assertEqual(self.refused(["-listen-vfkit", "/tmp/v.sock"]),
                         "vfkit listen address must be unixgram:// address")
        self.assertEqual(self.refused(["-notification", "tcp://127.0.0.1:1"]),
                         "notification listen address must be unix:// address")

    def test_socketExists(self):
        """
        An existing unix socket path for qemu, bess or vfkit is refused.
        """
        for flag, url in (("-listen-qemu", "unix:///tmp/x.sock"),
                          ("-listen-bess", "unixpacket:///tmp/x.sock"),
                          ("-listen-vfkit", "unixgram:///tmp/x.sock")):
            self.assertEqual(self.refused([flag, url], exists=lambda p: True),
                             '"/tmp/x.sock" already exists')
        # A TCP QEMU endpoint has no path to check.
        translate(["-listen-qemu", "tcp://127.0.0.1:1234"], exists=lambda p: True)

    def test_forwardCounts(self):
        """
        The four -forward-* flags: together and as many times each.
        """
        one = ["-forward-sock", "/s", "-forward-dest", "/d", "-forward-user", "u",
               "-forward-identity", "/identity"]
        translate(one + one)
        message = ("--forward-sock, --forward-dest, --forward-user, and --forward-identity "
                   "must all be specified together, the same number of times, or not at all")
        self.assertEqual(self.refused(one[:6]), message)
        self.assertEqual(self.refused(one + one[:2]), message)

    def test_identityMissing(self):
        """
        A forward whose identity file does not exist.
        """
        argv = ["-forward-sock", "/s", "-forward-dest", "/d", "-forward-user", "u",
                "-forward-identity", "/nope/key"]
        self.assertEqual(self.refused(argv, exists=lambda p: False),
                         "identity file \"/nope/key\" can't be loaded: "
                         "stat /nope/key: no such file or directory")


class ConfigFlagTests(SynchronousTestCase):
    """
    C{-config FILE} with flags: what v0.8.9 lets the command line override.
    """

    def configFile(self, text):
        fd, path = tempfile.mkstemp(suffix=".yaml")
        os.write(fd, text.encode())
        os.close(fd)
        self.addCleanup(os.remove, path)
        return path

    def test_configPassedOn(self):
        """
        The file goes to twistd gvtap as --config; -ssh-port and -pcap are
        not passed (v0.8.9 ignores them with a file), and -ssh-port warns.
        """
        path = self.configFile("listen:\n  - unix:///tmp/a.sock\n")
        argv = ["-config", path, "-ssh-port", "3333", "-pcap", "x.pcap", "-mtu", "9000"]
        tap, config, warnings = translate(argv)
        self.assertEqual(tap, ["--config", path, "--mtu", "9000"])
        self.assertEqual(config["stack"]["mtu"], 9000)
        self.assertNotIn("capture-file", config["stack"])
        self.assertEqual(warnings, [
            'CLI argument "-ssh-port" is unavailable with config file. You need to add '
            '"127.0.0.1:3333: 192.168.127.2:22" entry into .stack.forwards in "" instead'])

    def test_noWarningForEqualsForm(self):
        """
        v0.8.9 looks for the exact word -ssh-port: -ssh-port=N does not warn.
        """
        path = self.configFile("")
        self.assertEqual(translate(["-config", path, "-ssh-port=3333"])[2], [])

    def test_badFileIsFatal(self):
        """
        A file with an unknown key: one line, exit status 1.
        """
        path = self.configFile("stack:\n  mtuu: 1500\n")
        err = io.StringIO()
        e = self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", "-config", path],
                              stderr=err)
        self.assertEqual(e.code, 1)
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertIn("level=fatal", lines[0])
        self.assertIn("stack.mtuu: unknown key", lines[0])

    def test_missingFile(self):
        """
        A file that cannot be read: gvproxy's "failed to read config file".
        """
        err = io.StringIO()
        self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", "-config", "/nonexistent.yaml"],
                          stderr=err)
        self.assertIn('msg="failed to read config file: No such file or directory: '
                      '/nonexistent.yaml"', err.getvalue())


class MainTests(SynchronousTestCase):
    """
    The console script's own exits.
    """

    def test_version(self):
        """
        -version: one gvproxy-style line naming gvtap and its version, exit 0.
        """
        out = io.StringIO()
        e = self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", "-version"], stdout=out)
        self.assertEqual(e.code, 0)
        line = out.getvalue()
        self.assertRegex(line, r"^gvproxy version v\d+\.\d+\.\d+\+gvtap \(gvtap \d+\.\d+\.\d+, ")
        self.assertTrue(line.endswith("\n") and line.count("\n") == 1)

    def test_unknownFlag(self):
        """
        An unknown flag: Go's message and the usage, exit 2.
        """
        err = io.StringIO()
        e = self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", "-listen-qemuu", "x"],
                              stderr=err)
        self.assertEqual(e.code, 2)
        self.assertTrue(err.getvalue().startswith(
            "flag provided but not defined: -listen-qemuu\nUsage of gvproxy:\n  -config string\n"))

    def test_help(self):
        """
        -help and -h: the usage, exit 0.
        """
        for word in ("-help", "-h", "--help"):
            err = io.StringIO()
            e = self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", word], stderr=err)
            self.assertEqual(e.code, 0)
            self.assertIn("  -ssh-port int\n    \tPort to access the guest virtual machine. "
                          "Must be between 1024 and 65535 (default 2222)\n", err.getvalue())

    def test_refusedIsFatal(self):
        """
        A refused combination is one logrus-style fatal line, exit 1.
        """
        err = io.StringIO()
        e = self.assertRaises(SystemExit, gvproxy.main, ["gvproxy", "-ssh-port", "22"], stderr=err)
        self.assertEqual(e.code, 1)
        self.assertRegex(err.getvalue(), r'^time="[^"]+" level=fatal '
                         r'msg="ssh-port value must be between 1024 and 65535"\n$')

    def test_logrusLine(self):
        """
        logrus quotes a message only when it needs quotes.
        """
        self.assertIn("msg=ready\n", gvproxy.logrusLine("info", "ready"))
        self.assertIn('msg="two words"\n', gvproxy.logrusLine("info", "two words"))


class HostsFileTests(SynchronousTestCase):
    """
    Like gvproxy v0.8.x (whose Go resolver reads the host's /etc/hosts), the
    DNS answers the host's hosts file names before forwarding, by default.
    """

    def build(self, *argv):
        from twisted.internet.task import Clock

        from gvtwisted.tap import makeService

        options = gvproxy.parseTapOptions(["--listen", "unix:/tmp/gvtap-hosts-test.sock"] + list(argv))
        top = makeService(options, Clock())
        self.addCleanup(top.gvtap.stop)
        return options, top.gvtap

    def test_defaultEtcHosts(self):
        """
        Without --dns-hosts the hosts file is /etc/hosts.
        """
        options, gvtap = self.build()
        self.assertEqual(options["dns-hosts"], "/etc/hosts")
        self.assertEqual(gvtap.dns.hosts.path, "/etc/hosts")

    def test_injected(self):
        """
        --dns-hosts PATH serves PATH's names; --dns-hosts '' none.
        """
        fd, path = tempfile.mkstemp()
        os.write(fd, b"10.9.8.7 build-box build-box.lan\n")
        os.close(fd)
        self.addCleanup(os.remove, path)
        _, gvtap = self.build("--dns-hosts", path)
        table = gvtap.dns.hosts()
        self.assertEqual([str(ip) for ip in table.names["build-box.lan"]], ["10.9.8.7"])
        _, gvtap = self.build("--dns-hosts", "")
        self.assertIsNone(gvtap.dns.hosts)


class DebugLineTests(SynchronousTestCase):
    """
    gvproxy's debug line every 5 s, with go-humanize's byte counts.
    """

    def test_humanBytes(self):
        """
        SI units, one decimal below 10, as go-humanize's Bytes.
        """
        self.assertEqual([gvproxy.humanBytes(n) for n in
                          (0, 9, 82, 999, 1000, 1500, 9949, 9950, 82854982, 10 ** 9)],
                         ["0 B", "9 B", "82 B", "999 B", "1.0 kB", "1.5 kB", "9.9 kB",
                          "10 kB", "83 MB", "1.0 GB"])

    def test_trafficLine(self):
        """
        From the link byte counters.
        """
        from twisted.internet.task import Clock

        from gvtwisted.stack.counters import Counters

        counters = Counters(Clock())
        counters.increment("link.bytesSent", 1500)
        self.assertEqual(gvproxy.trafficLine(counters),
                         "1.5 kB sent to the VM, 0 B received from the VM")
