"""
End to end over IPv6: a real C{twistd gvtap}, the guest helper in a network
namespace whose kernel has its default IPv6 settings, and real clients: the
kernel's own SLAAC, C{ping -6}, ISC C{dhclient -6} and C{dig}.

The namespace needs no sysctl at all: a new namespace starts with
C{accept_ra=1}, C{autoconf=1}, C{forwarding=0} and C{addr_gen_mode=0}
(EUI-64), which is what a guest distribution has. The tests read these
sysctls and say so if they differ, rather than set them.
"""

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, skipReason, waitFor

SKIP = skipReason("ping", "dhclient", "dig")

GATEWAY6 = "fd00:192:168:127::1"
GATEWAY_LL = "fe80::5894:efff:fee4:cdd"
DEVICE_SLAAC = "fd00:192:168:127:5894:efff:fee4:cee"

DHCLIENT_SCRIPT = """#!/bin/sh
# Records what dhclient was told; configures an address it was leased.
env | grep -E '^(reason|new_dhcp6_|new_ip6_)' | sort >> {record}
echo --- >> {record}
case "$reason" in
  BOUND6|REBOOT6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr add "$new_ip6_address/128" dev "$interface" nodad
    ;;
esac
exit 0
"""


class IPv6Tests(E2EMixin, SynchronousTestCase):
    """
    A guest with a default kernel configures IPv6 from the gateway.
    """

    if SKIP:
        skip = SKIP

    def guest(self, *daemonArgs):
        self.daemon, sock = self.startDaemon(*daemonArgs)
        ns = Namespace(self)
        for name, expected in (("accept_ra", "1"), ("autoconf", "1"), ("forwarding", "0")):
            value = ns.run("sysctl", "-n", f"net.ipv6.conf.default.{name}").stdout.strip()
            self.assertEqual(value, expected, f"net.ipv6.conf.default.{name} in a new namespace")
        self.startGuest(ns, sock)
        return ns

    def waitForSLAAC(self, ns, address=DEVICE_SLAAC, timeout=10.0):
        """
        Wait until the kernel has C{address}/64 on tap0, past duplicate
        address detection; return how long that took.
        """
        started = time.monotonic()

        def ready():
            out = ns.run("ip", "-6", "addr", "show", "dev", "tap0", "scope", "global").stdout
            return f"{address}/64" in out and "tentative" not in out

        waitFor(ready, timeout=timeout, interval=0.1, what=f"{address} by SLAAC")
        return time.monotonic() - started

    def dhclient(self, ns, *args):
        record = os.path.join(self.tempDir, "dhclient.record")
        script = os.path.join(self.tempDir, "dhclient.script")
        with open(script, "w") as f:
            f.write(DHCLIENT_SCRIPT.format(record=record))
        os.chmod(script, 0o755)
        ns.run("dhclient", "-6", *args, "-1", "-sf", script,
               "-lf", os.path.join(self.tempDir, "dhclient.leases"),
               "-pf", os.path.join(self.tempDir, "dhclient.pid"), "tap0", timeout=60)
        with open(record) as f:
            blocks = f.read().split("---\n")
        self.dhclientRecord = blocks
        values = {}
        for line in blocks[-2].splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip("'")
        return values

    def test_slaacAndPing(self):
        """
        Within a few seconds of the link coming up the kernel has its
        EUI-64 address in the prefix (from the router advertisement it
        solicited), the prefix route and the MTU; C{ping -6} reaches the
        gateway's global and link-local addresses.
        """
        ns = self.guest("--mtu", "1400")
        took = self.waitForSLAAC(ns)
        self.assertLess(took, 8.0)
        routes = ns.run("ip", "-6", "route", "show", "dev", "tap0").stdout
        self.assertIn("fd00:192:168:127::/64", routes)
        # No NAT66 yet: the gateway is not a default router.
        self.assertNotIn("default", routes)
        mtu = ns.run("sysctl", "-n", "net.ipv6.conf.tap0.mtu").stdout.strip()
        self.assertEqual(mtu, "1400")
        ping = ns.run("ping", "-6", "-c3", "-i", "0.2", "-W", "2", GATEWAY6)
        self.assertIn("3 received", ping.stdout)
        ping = ns.run("ping", "-6", "-c2", "-i", "0.2", "-W", "2", f"{GATEWAY_LL}%tap0")
        self.assertIn("2 received", ping.stdout)
        neighbours = ns.run("ip", "-6", "neigh", "show", "dev", "tap0").stdout
        self.assertIn("5a:94:ef:e4:0c:dd", neighbours)
        self.assertIn("router", neighbours)
        unanswered = ns.run("ping", "-6", "-c1", "-W", "2", "fd00:192:168:127::77", check=False)
        self.assertNotEqual(unanswered.returncode, 0)

    def test_noIPv6(self):
        """
        With --no-ipv6 the guest gets no global address.
        """
        ns = self.guest("--no-ipv6")
        time.sleep(4)
        out = ns.run("ip", "-6", "addr", "show", "dev", "tap0", "scope", "global").stdout
        self.assertNotIn("fd00", out)

    def test_dhcpv6Stateless(self):
        """
        C{dhclient -6 -S} (an information-request) is told the gateway as
        DNS server, the host's search domains (those of the daemon's
        /etc/resolv.conf, if it has any) and a refresh time. ISC dhclient
        runs its script with reason RENEW6 for a stateless reply.
        """
        from gvtwisted.services.dhcp import searchDomainsFromResolvConf

        ns = self.guest()
        self.waitForSLAAC(ns)
        values = self.dhclient(ns, "-S")
        self.assertEqual(values.get("reason"), "RENEW6", self.dhclientRecord)
        self.assertEqual(values.get("new_dhcp6_name_servers"), GATEWAY6)
        self.assertEqual(values.get("new_dhcp6_server_id"), "0:3:0:1:5a:94:ef:e4:c:dd")
        self.assertEqual(values.get("new_dhcp6_info_refresh_time"), "3600")
        self.assertNotIn("new_ip6_address", values)
        domains = searchDomainsFromResolvConf("/etc/resolv.conf")
        if domains:
            self.assertEqual([d.rstrip(".") for d in values.get("new_dhcp6_domain_search", "").split()],
                             [d.rstrip(".") for d in domains])
        else:
            self.assertNotIn("new_dhcp6_domain_search", values)

    def test_dhcpv6Stateful(self):
        """
        C{dhclient -6} (solicit, advertise, request, reply) from the device
        MAC is leased the static address ::2.
        """
        ns = self.guest()
        self.waitForSLAAC(ns)
        values = self.dhclient(ns)
        self.assertEqual(values.get("reason"), "BOUND6", values)
        self.assertEqual(values.get("new_ip6_address"), "fd00:192:168:127::2")
        self.assertEqual(values.get("new_dhcp6_name_servers"), GATEWAY6)
        ping = ns.run("ping", "-6", "-c2", "-i", "0.2", "-W", "2", "-I",
                      "fd00:192:168:127::2", GATEWAY6)
        self.assertIn("2 received", ping.stdout)

    def test_dnsOverIPv6(self):
        """
        C{dig} asks the gateway's DNS on its IPv6 address over UDP and gets
        the local zone's answers, A and AAAA.
        """
        ns = self.guest()
        self.waitForSLAAC(ns)
        answer = ns.run("dig", "+short", "+notcp", "+time=2", "+tries=2", f"@{GATEWAY6}",
                        "gateway.containers.internal", "A").stdout.split()
        self.assertEqual(answer, ["192.168.127.1"])
        answer = ns.run("dig", "+short", "+notcp", "+time=2", "+tries=2", f"@{GATEWAY6}",
                        "gateway.containers.internal", "AAAA").stdout.split()
        self.assertEqual(answer, [GATEWAY6])
