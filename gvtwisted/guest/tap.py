"""
C{twistd gvtap-guest}: the guest-side helper, a drop-in for gvisor-tap-vsock's
C{gvforwarder}. It opens a TAP device in the guest and carries its frames to the
host over vsock (or a unix or TCP socket), reconnecting every second.

    twistd -n gvtap-guest                                   # vsock CID 2, port 1024
    twistd -n gvtap-guest --connect unix:/run/gvtap.sock --dhcp
    twistd -n gvtap-guest --url vsock://2:1024/connect      # gvforwarder's spelling
"""

import errno
import os
import shutil

from twisted.application.service import MultiService, Service
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python import usage

from gvtwisted.guest import tuntap
from gvtwisted.guest.forwarder import GuestForwarder, urlToEndpointString
from gvtwisted.link.streamunix import linkClientFromString
from gvtwisted.startup import normalizeOptionDocs, versionLine

DEFAULT_CONNECT = "vsock:cid=2:port=1024"
DEFAULT_IFACE = "tap0"
DEFAULT_MAC = "5a:94:ef:e4:0c:ee"
DEFAULT_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65520
DEFAULT_STOP_IF_EXIST = "eth0,ens3,enp0s1"


class _NoReactor:
    """
    A placeholder reactor for parsing endpoint strings without using them.
    """


@normalizeOptionDocs
class Options(usage.Options):
    """
    Command line of C{twistd gvtap-guest}; gvforwarder's flag names are accepted
    too (C{--url}, C{-iface} style is not: use two dashes).
    """

    synopsis = "[options]"
    longdesc = (
        "Carry the frames of a TAP device in this guest to a gvtap or gvproxy host "
        "(like gvisor-tap-vsock's gvforwarder). The link sends 'POST /connect' and "
        "then 2-byte little-endian length-prefixed frames; it reconnects every "
        "second. Without --preexisting the TAP is created (or taken over) and its "
        "MAC and MTU set and link brought up; addresses come from --dhcp or "
        "tap/setup.sh. Frames the TAP cannot take at once wait in a queue of 256 "
        "and are dropped (and counted) beyond it."
    )

    optParameters = [
        [
            "connect",
            "c",
            DEFAULT_CONNECT,
            "The host: a Twisted client endpoint string (vsock:cid=2:port=1024, "
            "unix:/path, tcp:host=H:port=P) or a gvforwarder URL "
            "(vsock://2:1024/connect, unix:///path, tcp://H:P/connect).",
        ],
        ["iface", "i", DEFAULT_IFACE, "The TAP interface name."],
        ["mac", "m", DEFAULT_MAC, "The MAC address to give the TAP interface."],
        ["mtu", None, DEFAULT_MTU, f"The interface MTU ({MIN_MTU}..{MAX_MTU}).", int],
        [
            "stop-if-exist",
            None,
            DEFAULT_STOP_IF_EXIST,
            "Comma-separated interface names: if one of them exists, do nothing "
            "and exit (as gvforwarder does, so a machine with a real network is "
            "left alone). Empty to disable.",
        ],
    ]

    optFlags = [
        ["preexisting", None, "Use a TAP that already exists; configure nothing."],
        [
            "dhcp",
            None,
            "Once the link is up, run 'udhcpc -f -q -i IFACE' (or "
            "'dhclient -4 -1 IFACE' without udhcpc) to configure the interface.",
        ],
        ["debug", "d", "Log more (DHCP client output, every failed retry)."],
        [
            "no-offload",
            None,
            "Do not offer TSO/checksum offload to the host (GET /offload before "
            "POST /connect): plain frames, as gvforwarder sends.",
        ],
    ]

    def opt_url(self, value):
        """
        gvforwarder's name for --connect.
        """
        self["connect"] = value

    def opt_version(self):
        """
        Print gvtap's version (and Twisted's and Python's) and exit.
        """
        print(versionLine("twistd gvtap-guest"))
        raise SystemExit(0)

    def postOptions(self):
        mtu = self["mtu"]
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise usage.UsageError(
                f"--mtu {mtu} is out of range: it must be {MIN_MTU}..{MAX_MTU} "
                f"(a 2-byte frame length cannot carry more than {MAX_MTU} + 14)"
            )
        try:
            self["macBytes"] = tuntap.parseMAC(self["mac"])
        except ValueError as e:
            raise usage.UsageError(f"--mac: {e}") from None
        iface = self["iface"]
        if not iface or len(iface.encode()) >= tuntap.IFNAMSIZ or "/" in iface:
            raise usage.UsageError(f"--iface {iface!r} is not a valid interface name")
        self["stopIfExist"] = [
            name.strip() for name in self["stop-if-exist"].split(",") if name.strip()
        ]
        if self["connect"].startswith("stdio:"):
            # gvforwarder's stdio:CMD?k=v: run CMD -k=v and carry the frames
            # on its standard input and output, with no POST /connect.
            from gvtwisted.guest.stdio import parseStdioURL

            try:
                self["stdio"] = parseStdioURL(self["connect"])
            except ValueError as e:
                raise usage.UsageError(f"--connect: {e}") from None
            self["endpoint"], self["path"] = None, None
            return
        try:
            self["endpoint"], self["path"] = urlToEndpointString(self["connect"])
        except ValueError as e:
            raise usage.UsageError(f"--connect: {e}") from None
        except ImportError as e:
            raise usage.UsageError(f"--connect: vsock support is missing: {e}")
        try:
            # Endpoint parsers only record their reactor, so a stand-in will do
            # to find a bad endpoint string now rather than at start-up.
            linkClientFromString(_NoReactor(), self["endpoint"])
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(
                f"--connect {self['connect']!r}: {e or type(e).__name__}"
            ) from None


def dhcpCommand(iface: str, which=shutil.which):
    """
    The DHCP client command line to run for C{iface}, or C{None} if there is none.

    udhcpc with C{-q} quits once it has a lease; dhclient with C{-1} tries once
    and then leaves a background daemon to renew (gvforwarder runs C{dhclient -d},
    which never exits, so nobody could tell it had succeeded).
    """
    udhcpc = which("udhcpc")
    if udhcpc:
        return [udhcpc, "-f", "-q", "-i", iface]
    busybox = which("busybox")
    if busybox:
        return [busybox, "udhcpc", "-f", "-q", "-i", iface]
    dhclient = which("dhclient")
    if dhclient:
        return [dhclient, "-4", "-1", iface]
    return None


class _DHCPProtocol(ProcessProtocol):
    """
    Watch the DHCP client: its output is logged with --debug, its exit always
    (with its last line of output when it failed).
    """

    log = Logger()

    def __init__(self, name, debug, done):
        self.name = name
        self.debug = debug
        self.done = done
        self.lastLine = ""
        self._partial = {}

    def childDataReceived(self, fd, data):
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.lastLine = line
            if self.debug:
                self.log.info("{name}: {line}", name=self.name, line=line)

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        if code == 0:
            self.log.info("{name} exited: the interface is configured", name=self.name)
        elif signal is not None:
            self.log.warn("{name} was killed by signal {sig}", name=self.name, sig=signal)
        else:
            self.log.warn(
                "{name} exited with status {code}: {last}",
                name=self.name,
                code=code,
                last=self.lastLine or "(no output)",
            )
        self.done(code)


class GuestService(Service):
    """
    Open and configure the TAP on start, then keep the link to the host.

    @ivar forwarder: the L{GuestForwarder}, started after the TAP is open.
    @ivar device: the open L{tuntap.TapDevice}, or C{None}.
    @ivar dhcpRuns: how many times a DHCP client was started.
    """

    log = Logger()

    def __init__(
        self,
        forwarder,
        reactor,
        iface=DEFAULT_IFACE,
        mac: bytes = None,
        mtu: int = DEFAULT_MTU,
        preexisting=False,
        dhcp=None,
        stopIfExist=(),
        debug=False,
        openTap=tuntap.openTap,
        configureTap=tuntap.configureTap,
        interfaceExists=lambda name: os.path.exists(f"/sys/class/net/{name}"),
        offload=False,
    ):
        self.forwarder = forwarder
        # Open the TAP with IFF_VNET_HDR so that the link can offer offload
        # to the host (gvtwisted.link.offload).
        self.offload = offload
        forwarder.offload = offload
        self.reactor = reactor
        self.iface = iface
        self.mac = mac
        self.mtu = mtu
        self.preexisting = preexisting
        self.dhcp = dhcp
        self.stopIfExist = list(stopIfExist)
        self.debug = debug
        self.device = None
        self.dhcpRuns = 0
        self.dhcpProcess = None
        self.refused = None
        self._openTap = openTap
        self._configureTap = configureTap
        self._interfaceExists = interfaceExists
        forwarder.linkUpHooks.append(self._linkUp)

    def privilegedStartService(self):
        """
        Open the TAP before twistd drops privileges (with C{--uid}).
        """
        Service.privilegedStartService(self)
        for name in self.stopIfExist:
            if self._interfaceExists(name):
                self.refused = name
                self.log.warn(
                    "interface {name} exists: this guest has a network already; "
                    "exiting (see --stop-if-exist)",
                    name=name,
                )
                self.reactor.callWhenRunning(self.reactor.stop)
                return
        if self.device is None:
            self._openOrExit()

    def _openOrExit(self):
        try:
            self._open()
        except OSError as e:
            hint = {
                errno.EPERM: " (needs root or CAP_NET_ADMIN)",
                errno.EACCES: " (needs root or CAP_NET_ADMIN)",
                errno.EBUSY: " (another process holds it)",
                errno.ENOENT: " (no /dev/net/tun: load the tun module)",
            }.get(e.errno, "")
            raise SystemExit(
                f"gvtap-guest: cannot open TAP {self.iface}: {e.strerror}{hint}"
            ) from None

    def _open(self):
        if self.offload:
            fd, name = self._openTap(self.iface, vnetHeader=True)
        else:
            fd, name = self._openTap(self.iface)
        try:
            if not self.preexisting:
                self._configureTap(name, mac=self.mac, mtu=self.mtu, up=True)
        except BaseException:
            os.close(fd)
            raise
        self.iface = name
        self.device = tuntap.TapDevice(fd, name, reactor=self.reactor,
                                       vnetHeader=self.offload)
        if self.preexisting:
            how = " (preexisting, not configured)"
        else:
            how = (f", MAC {tuntap.formatMAC(self.mac)}" if self.mac else "") + (
                f", MTU {self.mtu}" if self.mtu is not None else "") + ", up"
        self.log.info("TAP {name} open{how}", name=name, how=how)

    def startService(self):
        if self.refused:
            Service.startService(self)
            return
        if self.device is None:
            self._openOrExit()
        Service.startService(self)
        self.device.startReading()
        self.forwarder.device = self.device
        self.forwarder.startService()

    def stopService(self):
        Service.stopService(self)
        d = None
        if self.forwarder.running:
            d = self.forwarder.stopService()
        if self.dhcpProcess is not None:
            try:
                self.dhcpProcess.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
        return maybeDeferred(lambda: d).addBoth(self._close)

    def _close(self, result):
        if self.device is not None:
            self.device.close()
            self.device = None
        return result

    def _linkUp(self, protocol):
        # One DHCP run, on the first link-up only: the lease stays in the guest
        # across reconnections.
        if not self.dhcp or self.dhcpRuns:
            return
        argv = self.dhcp(self.iface) if callable(self.dhcp) else None
        if not argv:
            self.log.warn("--dhcp: neither udhcpc, busybox nor dhclient is on PATH")
            self.dhcpRuns += 1
            return
        self.dhcpRuns += 1
        name = os.path.basename(argv[0])
        self.log.info("running {argv}", argv=" ".join(argv))
        self.dhcpProcess = self.reactor.spawnProcess(
            _DHCPProtocol(name, self.debug, self._dhcpDone),
            argv[0],
            argv,
            env=dict(os.environ),
        )

    def _dhcpDone(self, code):
        self.dhcpProcess = None


def makeService(options, reactor=None):
    """
    Build the C{gvtap-guest} service from parsed L{Options}.
    """
    if reactor is None:
        from gvtwisted.reactor import defaultReactor

        reactor = defaultReactor()

    if options.get("stdio"):
        from gvtwisted.guest.stdio import stdioEndpoint

        endpoint = stdioEndpoint(reactor, options["stdio"])
    else:
        endpoint = linkClientFromString(reactor, options["endpoint"])
    forwarder = GuestForwarder(
        endpoint,
        reactor,
        path=options["path"],
        description=options["connect"],
        debug=bool(options["debug"]),
    )
    guest = GuestService(
        forwarder,
        reactor,
        iface=options["iface"],
        mac=options["macBytes"],
        mtu=options["mtu"],
        preexisting=bool(options["preexisting"]),
        dhcp=options.get("dhcpCommand", dhcpCommand) if options["dhcp"] else None,
        stopIfExist=options["stopIfExist"],
        debug=bool(options["debug"]),
        offload=not options["no-offload"] and bool(options["path"]),
    )
    top = MultiService()
    guest.setServiceParent(top)
    return top
