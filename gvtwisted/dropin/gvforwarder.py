"""
The C{gvforwarder} command (gvisor-tap-vsock's guest helper, once called
C{vm}): its v0.8.9 command line, run by C{twistd gvtap-guest}'s own service.

What cmd/vm does, and so what this does:

  - C{-url} (default C{vsock://2:1024/connect}; also C{unix:///PATH} and
    C{stdio:CMD?k=v}, which runs C{CMD -k=v} and talks on its stdin/stdout),
    C{-iface tap0}, C{-mac 5a:94:ef:e4:0c:ee} (empty: keep the interface's),
    C{-mtu 4000}, C{-stop-if-exist eth0,ens3,enp0s1}, C{-preexisting},
    C{-debug}, C{-version}.
  - If an interface of C{-stop-if-exist} exists, log it and exit 0.
  - Without C{-preexisting}: set the MAC, bring the TAP up, and run
    C{udhcpc -f -q -i IFACE -v}, or C{dhclient -4 -d -v IFACE} without udhcpc.
    With it: configure nothing and run no DHCP client.
  - C{-mtu} is the size of gvforwarder's read buffer, not the interface's
    MTU, which it never sets (DHCP's option 26 does): neither is it set here.
  - Reconnect every second after any error.

gvforwarder starts its DHCP client again after each reconnection; here it runs
once, on the first link-up (the lease lives in the guest's kernel across
reconnections, and udhcpc -q would only get the same lease again).
"""

import shutil
import sys

from gvtwisted.dropin.goflag import FlagSet


def gvforwarderFlags(program: str) -> FlagSet:
    f = FlagSet(program)
    f.bool("version", False, "Print version information")
    f.string("url", "vsock://2:1024/connect", "url where the tap send packets")
    f.string("iface", "tap0", "tap interface name")
    f.string("stop-if-exist", "eth0,ens3,enp0s1", "stop if one of these interfaces exists at startup")
    f.string("mac", "5a:94:ef:e4:0c:ee", "mac address")
    f.bool("debug", False, "debug")
    f.int("mtu", 4000, "mtu")
    f.bool("preexisting", False, "use preexisting/preconfigured TAP interface")
    return f


def gvforwarderDHCPCommand(iface: str, which=shutil.which):
    """
    cmd/vm's DHCP client: busybox's udhcpc if on PATH, else dhclient.
    """
    if which("udhcpc"):
        return [which("udhcpc"), "-f", "-q", "-i", iface, "-v"]
    dhclient = which("dhclient") or "dhclient"
    return [dhclient, "-4", "-d", "-v", iface]


def translate(values):
    """
    The C{twistd gvtap-guest} arguments for parsed gvforwarder flags.
    """
    out = ["--connect", values["url"], "--iface", values["iface"]]
    if values["mac"]:
        out += ["--mac", values["mac"]]
    out.append(f"--stop-if-exist={values['stop-if-exist']}")
    if values["preexisting"]:
        out.append("--preexisting")
    else:
        out.append("--dhcp")
    if values["debug"]:
        out.append("--debug")
    return out


def main(argv=None, stdout=None, stderr=None):
    """
    The C{gvforwarder} console script.
    """
    from twisted.python import usage

    from gvtwisted.dropin.gvproxy import fatal, versionLine
    from gvtwisted.guest.tap import Options

    argv = list(sys.argv if argv is None else argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    values, given, rest = gvforwarderFlags(argv[0]).parseOrExit(argv[1:], stderr)
    if values["version"]:
        stdout.write(versionLine("gvforwarder") + "\n")
        raise SystemExit(0)
    options = Options()
    try:
        options.parseOptions(translate(values))
    except usage.UsageError as e:
        fatal(str(e), stderr)
    # gvforwarder never sets the interface's MTU; its -mtu sizes a buffer.
    options["mtu"] = None
    options["dhcpCommand"] = gvforwarderDHCPCommand
    if not values["mac"]:
        # -mac "": gvforwarder leaves the interface's own address.
        options["macBytes"] = None
    raise SystemExit(run(options, stderr=stderr))


def run(options, reactor=None, stderr=None):
    """
    Run C{twistd gvtap-guest}'s service in the foreground; exit status 0.
    """
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
        globalLogBeginner, textFileLogObserver,
    )

    if reactor is None:
        from gvtwisted.reactor import defaultReactor

        reactor = defaultReactor()
    from gvtwisted.dropin.gvproxy import fatal
    from gvtwisted.guest.tap import makeService

    stderr = stderr or sys.stderr
    level = LogLevel.debug if options["debug"] else LogLevel.info
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stderr), [LogLevelFilterPredicate(level)])],
        redirectStandardIO=False)
    try:
        service = makeService(options, reactor)
        service.privilegedStartService()
    except SystemExit as e:
        fatal(str(e.code), stderr)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(service.startService)
    reactor.run()
    return 0
