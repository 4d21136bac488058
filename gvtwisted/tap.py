"""
C{twistd gvtap}: the host side of the virtual network, like gvproxy.

A wrong option value stops start-up with one line on standard error and exit
status 1 (through L{SystemExit}), instead of twistd's full usage text: the user
needs to see what was wrong, not the whole manual.
"""

import ipaddress
import socket

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python import usage

from gvtwisted.config import (
    DEFAULT_DEVICE_MAC, DEFAULT_GATEWAY_MAC, DEFAULT_MTU, DEFAULT_SUBNET,
    DEFAULT_SUBNET6, MAX_MTU, ConfigError, NetworkConfig,
)
from gvtwisted.link.endpoints import serverEndpointString, unixPath
from gvtwisted.link.listeners import LinkFactory
from gvtwisted.services.api import makeAPISite
from gvtwisted.startup import (
    GvtapService, StartupError, describeListenFailure, normalizeOptionDocs,
    prepareUnixSocketPath, versionLine,
)

log = Logger()


@normalizeOptionDocs
class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a user-mode network for virtual machines. Guests connect on --listen "
        "endpoints (gvforwarder / gvtap-guest: HTTP POST /connect, then frames with "
        "a 2-byte little-endian length) or --listen-qemu endpoints (QEMU -netdev "
        "stream/socket: 4-byte big-endian length). Endpoints are Twisted endpoint "
        "strings (unix:/path, tcp:1024:interface=127.0.0.1, vsock:1024) or gvproxy "
        "URLs (unix:///path, tcp://127.0.0.1:1024, vsock://:1024). "
        "Caps: 4096 MAC table entries (aged after 300 s), "
        "4096 DHCP leases (static leases not counted), 4096 ARP entries; "
        "TCP: --max-connections, 512 NAT dials in flight (30 s timeout each); "
        "UDP NAT: 4096 flows (least recently used evicted, 90 s idle); "
        "ICMP echo NAT: 1024 flows (60 s idle); IPv4 reassembly: 64 datagrams, 4 MiB, 30 s; "
        "DNS cache: 10000 entries; "
        "UDP forwards: 1024 flows each (least recently used evicted), closed after 90 s idle; "
        "API request bodies: 1 MiB. The control API (docs/api.md) is served on --listen and "
        "--services endpoints; unix sockets are made with mode 0600. "
        "--listen-vfkit PATH (unix datagram, one frame per datagram, vfkit), "
        "--listen-bess PATH (unix seqpacket, one frame per message) and --listen-stdio "
        "(2-byte little-endian lengths on stdin/stdout; needs -n and --logfile FILE or "
        "--syslog, since twistd otherwise logs to stdout) are guest links too."
    )

    optParameters = [
        ["vsock-port", None, None, "Listen for guests on this vsock port (same as --listen vsock:N)."],
        ["subnet", None, DEFAULT_SUBNET, "The virtual network (a /29 or larger)."],
        ["subnet6", None, DEFAULT_SUBNET6, "The IPv6 network (a /64): gateway ::1 (and the "
                                           "link-local address of its MAC), guest ::2 (static "
                                           "DHCPv6 lease), host ::fe for the host's ::1."],
        ["gateway-ip", None, None, "The gateway's address (default: first usable)."],
        ["host-ip", None, None, "The address that reaches the host's 127.0.0.1 (default: last usable)."],
        ["device-ip", None, None, "The guest's static DHCP lease (default: second usable)."],
        ["gateway-mac", None, DEFAULT_GATEWAY_MAC, "The gateway's MAC address."],
        ["device-mac", None, DEFAULT_DEVICE_MAC, "The MAC address that gets the static lease."],
        ["mtu", None, DEFAULT_MTU, f"The MTU of the virtual network (at most {MAX_MTU})."],
        ["pcap", None, None, "Write every frame that crosses the switch to this pcap file."],
        ["max-connections", None, 16384, "Cap on TCP connections (NAT and local).", int],
        ["dns-hosts", None, "/etc/hosts", "A hosts-format file of names the DNS answers before "
                                          "forwarding, re-read when it changes (like gvproxy, "
                                          "whose Go resolver reads /etc/hosts); '' for none."],
        ["ssh-port", None, 2222, "Forward the host's 127.0.0.1:PORT to the guest's port 22 "
                                 "(-1: no such forward). A port already taken is logged and skipped.", int],
        ["services-ca", None, None, "A PEM file of certificate authorities: every ssl: endpoint "
                                    "then requires a client certificate signed by one of them."],
        ["notification", None, None, "Send gvproxy's JSON notifications (ready, connection_established, "
                                     "connection_closed, hypervisor_error) to the unix socket at "
                                     "unix:///PATH or PATH, one connection per message (at most 100 "
                                     "queued; past that they are dropped and counted)."],
        ["config", None, None, "A gvproxy YAML configuration file (gvisor-tap-vsock v0.8.9's "
                               "schema; docs/drop-in.md); options given here win over it."],
        ["pid-file", None, None, "Write the pid here at start (no newline) and remove it at exit, "
                                 "like gvproxy -pid-file."],
        ["log-file", None, None, "Also log to this file (created afresh), like gvproxy -log-file."],
        ["link-grace", None, 60.0, "Seconds a dropped guest link keeps its connections and flows "
                                   "for the guest to come back with the same MAC.", float],
        ["max-macs-per-link", None, 64, "Cap on MAC addresses learnt on one guest link (a link "
                                        "past it evicts its own oldest).", int],
        ["max-leases-per-link", None, 16, "Cap on live DHCP pool leases held by the clients "
                                          "behind one guest link.", int],
        ["max-buffered-bytes", None, 512 * 1024 * 1024, "Cap on the bytes all TCP connections "
                                                        "buffer together; past it their windows "
                                                        "close (nothing is dropped).", int],
    ]
    optFlags = [
        ["debug", None, "Log every dropped frame and bad input (normally at most one line per reason every 10 s)."],
        ["no-dns", None, "Serve no DNS at the gateway (DHCP then offers no DNS server)."],
        ["no-host-loopback", None, "Refuse the guest's traffic to the host address instead of reaching the host's 127.0.0.1."],
        ["no-ipv6", None, "No IPv6 at all: no router advertisements, neighbor discovery or DHCPv6."],
        ["ec2-metadata-access", None, "Let the guest reach 169.254.0.0/16."],
        ["listen-stdio", None, "One guest link on stdin/stdout (frames with a 2-byte "
                               "little-endian length). Needs -n and --logfile FILE (or "
                               "--syslog): twistd must not log to stdout."],
        ["verify-checksums", None, "Verify the TCP and UDP checksums of the guests' frames "
                                   "(dropped and counted when wrong). Off by default, like "
                                   "gvproxy: a local link cannot corrupt a frame; the IPv4 "
                                   "header checksum is always verified."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []
        self["listen-qemu"] = []
        self["dns-upstream"] = []
        self["services"] = []
        self["forward"] = []
        self["listen-vfkit"] = []
        self["listen-bess"] = []
        self["forward-sock"] = []
        self["forward-dest"] = []
        self["forward-user"] = []
        self["forward-identity"] = []
        self["listen-vpnkit"] = []
        self["vpnkit-uuid-macs"] = {}

    def opt_version(self):
        """
        Print gvtap's version (and Twisted's and Python's) and exit.
        """
        print(versionLine("twistd gvtap"))
        raise SystemExit(0)

    def opt_dns_upstream(self, address):
        """
        Forward DNS queries to ADDR[:PORT] (repeatable; default: the host's
        /etc/resolv.conf, re-read when it changes).
        """
        host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
        try:
            self["dns-upstream"].append((str(ipaddress.IPv4Address(host or address)),
                                         int(port) if port else 53))
        except ValueError:
            raise SystemExit(f"gvtap: --dns-upstream {address!r} is not ADDR[:PORT]")

    def opt_listen(self, endpoint):
        """
        Listen for guests (POST /connect) and the control API on ENDPOINT
        (repeatable).
        """
        self["listen"].append(endpoint)

    def opt_services(self, endpoint):
        """
        Serve the control API (no guest links) on ENDPOINT (repeatable; unix
        sockets get mode 0600; ssl:PORT:privateKey=KEY:certKey=CERT with
        --services-ca requires client certificates).
        """
        self["services"].append(endpoint)

    def opt_forward(self, spec):
        """
        Forward a host address into the network: [udp:|unix:]LOCAL=REMOTE,
        e.g. 127.0.0.1:8080=192.168.127.2:80 or udp:127.0.0.1:5353=192.168.127.2:53
        (repeatable). One that cannot bind is logged and skipped.
        """
        from gvtwisted.services.forwarder import parseForwardOption

        try:
            self["forward"].append(parseForwardOption(spec))
        except ValueError as e:
            raise SystemExit(f"gvtap: {e}")

    def opt_listen_qemu(self, endpoint):
        """
        Listen for QEMU -netdev stream/socket connections on ENDPOINT
        (repeatable; each accepted connection is a switch port).
        """
        self["listen-qemu"].append(endpoint)

    def opt_listen_vfkit(self, path):
        """
        Bind a unix datagram socket at PATH (or unixgram:///PATH) for a vfkit
        guest: one frame per datagram (repeatable; mode 0600).
        """
        self["listen-vfkit"].append(_socketPath(path, "unixgram"))

    def opt_listen_bess(self, path):
        """
        Listen on a unix seqpacket socket at PATH (or unixpacket:///PATH):
        one frame per message, each connection a switch port (repeatable;
        mode 0600).
        """
        self["listen-bess"].append(_socketPath(path, "unixpacket"))

    def opt_forward_sock(self, path):
        """
        A host unix socket (PATH or unix:///PATH, mode 0600) whose connections
        go over SSH to the guest's --forward-dest (repeatable; matched by
        position with --forward-dest, --forward-user and --forward-identity).
        """
        self["forward-sock"].append(path)

    def opt_forward_dest(self, path):
        """
        The unix socket in the guest that the matching --forward-sock reaches
        (repeatable).
        """
        self["forward-dest"].append(path)

    def opt_forward_user(self, user):
        """
        The SSH user for the matching --forward-sock (repeatable).
        """
        self["forward-user"].append(user)

    def opt_forward_identity(self, path):
        """
        The OpenSSH private key (ed25519, ecdsa or rsa) for the matching
        --forward-sock (repeatable).
        """
        self["forward-identity"].append(path)

    def opt_listen_vpnkit(self, endpoint):
        """
        Listen for hyperkit's virtio-vpnkit connections on ENDPOINT (the
        vpnkit handshake, then frames with a 2-byte little-endian length;
        repeatable).
        """
        self["listen-vpnkit"].append(endpoint)

    def opt_vpnkit_uuid_mac(self, spec):
        """
        UUID=MAC: the MAC address a --listen-vpnkit VM with this UUID gets
        (repeatable; gvproxy's vpnKitUUIDMacAddresses). Others get a random
        locally administered address.
        """
        from gvtwisted.wire.ethernet import parseMAC

        uuid, sep, mac = spec.partition("=")
        try:
            if not sep or len(uuid) != 36:
                raise ValueError
            parseMAC(mac)
        except ValueError:
            raise SystemExit(f"gvtap: --vpnkit-uuid-mac {spec!r} is not UUID=MAC")
        self["vpnkit-uuid-macs"][uuid] = mac

    def parseOptions(self, options=None):
        # Which options the command line gave, so that a --config file
        # fills in only the others.
        import sys

        from gvtwisted.dropin.tapconfig import givenOptions

        self.given = givenOptions(sys.argv[1:] if options is None else options)
        # Before anything imports twisted.internet.reactor (conch's userauth,
        # for --forward-sock, does at import): twistd without -r gets
        # GvtapReactor, as twistd -r installs its choice while parsing too.
        from gvtwisted.reactor import defaultReactor

        defaultReactor()
        return usage.Options.parseOptions(self, options)

    def postOptions(self):
        try:
            if self["config"]:
                from gvtwisted.dropin.tapconfig import applyConfigFile

                applyConfigFile(self, self["config"], getattr(self, "given", set()))
            if self["vsock-port"] is not None:
                try:
                    port = int(self["vsock-port"])
                except ValueError:
                    raise ConfigError(f"--vsock-port {self['vsock-port']!r} is not a number") from None
                self["listen"].append(f"vsock:{port}")
            self["listen"] = [serverEndpointString(e) for e in self["listen"]]
            self["listen-qemu"] = [serverEndpointString(e) for e in self["listen-qemu"]]
            self["listen-vpnkit"] = [serverEndpointString(e) for e in self["listen-vpnkit"]]
            self["services"] = [serverEndpointString(e) for e in self["services"]]
            if self["ssh-port"] != -1 and not 1 <= self["ssh-port"] <= 65535:
                raise ConfigError(f"--ssh-port {self['ssh-port']} is not -1 or in 1..65535")
            if self["link-grace"] < 0:
                raise ConfigError(f"--link-grace {self['link-grace']} is negative")
            if self["max-macs-per-link"] < 1:
                raise ConfigError(f"--max-macs-per-link {self['max-macs-per-link']} is below 1")
            if self["max-leases-per-link"] < 1:
                raise ConfigError(f"--max-leases-per-link {self['max-leases-per-link']} is below 1")
            if self["max-buffered-bytes"] < 1:
                raise ConfigError(f"--max-buffered-bytes {self['max-buffered-bytes']} is below 1")
            self["config"] = NetworkConfig(
                subnet=self["subnet"], gatewayIP=self["gateway-ip"],
                hostIP=self["host-ip"], deviceIP=self["device-ip"],
                gatewayMAC=self["gateway-mac"], deviceMAC=self["device-mac"],
                mtu=self["mtu"], subnet6=self["subnet6"], ipv6=not self["no-ipv6"],
                **self.get("network-extras", {}),
            )
            from gvtwisted.services.ssh.forward import socketForwards

            if self["notification"] is not None:
                from gvtwisted.services.notification import notificationPath

                self["notification"] = notificationPath(self["notification"])
            self["socket-forwards"] = socketForwards(
                self["forward-sock"], self["forward-dest"], self["forward-user"],
                self["forward-identity"])
        except ValueError as e:
            raise SystemExit(f"gvtap: {e}")
        if not (self["listen"] or self["listen-qemu"] or self["listen-vfkit"]
                or self["listen-bess"] or self["listen-stdio"] or self["listen-vpnkit"]):
            raise SystemExit("gvtap: give at least one --listen, --listen-qemu, --listen-vfkit, "
                             "--listen-bess, --listen-stdio, --listen-vpnkit or --vsock-port")


def _socketPath(value, scheme):
    """
    The file path of a C{--listen-vfkit}/C{--listen-bess} value: a plain path,
    C{unix:PATH}, or gvproxy's C{unixgram:///PATH} / C{unixpacket:///PATH}.
    """
    from urllib.parse import unquote

    for prefix in (f"{scheme}://", "unix://"):
        if value.startswith(prefix):
            value = unquote(value[len(prefix):])
            break
    else:
        if value.startswith("unix:"):
            value = value[len("unix:"):]
    if not value or "\0" in value:
        raise SystemExit(f"gvtap: {value!r} is not a socket path")
    return value


def guestHint(endpoint: str, framing: str) -> str:
    """
    What to run in the guest (or give QEMU) to join through C{endpoint}.
    """
    path = unixPath(endpoint)
    if framing == "vpnkit":
        return f"hyperkit ... -s N,virtio-vpnkit,path={path or 'PATH'}"
    if framing == "qemu":
        if path is not None:
            return f"qemu ... -netdev stream,id=n0,server=off,addr.type=unix,addr.path={path}"
        return "qemu ... -netdev stream,id=n0,server=off,addr.type=inet,addr.host=HOST,addr.port=PORT"
    if endpoint.startswith("vsock:"):
        port = endpoint.split(":")[1]
        return f"twistd gvtap-guest --connect vsock:cid=2:port={port}  (or gvforwarder -url vsock://2:{port}/connect)"
    if path is not None:
        return f"twistd gvtap-guest --connect unix:{path}"
    return f"twistd gvtap-guest --connect tcp:HOST:PORT  (endpoint {endpoint})"


class _PcapService(Service):
    def __init__(self, writer):
        self.writer = writer

    def stopService(self):
        self.writer.close()
        return Service.stopService(self)


class _StopGvtap(Service):
    def __init__(self, gvtap):
        self.gvtap = gvtap

    def stopService(self):
        self.gvtap.stop()
        return Service.stopService(self)


class _ListeningService(StreamServerEndpointService):
    """
    A listening endpoint of an option (C{--listen}, C{--services}, ...): a
    unix path is prepared first (a stale socket removed, a live one refused),
    a failure is one L{StartupError} line naming the option, and a socket
    file made is recorded in C{createdPaths} for removal if a later part of
    start-up fails.
    """

    def __init__(self, endpoint, factory, description, option, createdPaths):
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self._raiseSynchronously = True
        self._description = description
        self._option = option
        self._createdPaths = createdPaths

    def shownAddress(self):
        path = unixPath(self._description)
        return path if path is not None else self._description.split(":privateKey=")[0]

    def privilegedStartService(self):
        path = unixPath(self._description)
        if path is not None:
            prepareUnixSocketPath(path, self._option)
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except Exception as e:
            raise StartupError(describeListenFailure(e, self._option, self.shownAddress())) from None
        if path is not None:
            self._createdPaths.append(path)


class _AnnouncingEndpointService(_ListeningService):
    """
    Logs one line when the endpoint listens, with the guest command to use.
    """

    def __init__(self, endpoint, factory, description, framing, option, createdPaths):
        _ListeningService.__init__(self, endpoint, factory, description, option, createdPaths)
        self._framing = framing

    notification = None

    def privilegedStartService(self):
        try:
            _ListeningService.privilegedStartService(self)
        except BaseException:
            _hypervisorError(self.notification if self._framing != "connect" else None)
            raise
        self._waitingForPort.addCallback(self._announce)

    def _announce(self, port):
        log.info("gvtap listening for guests on {endpoint}; in the guest: {hint}",
                 endpoint=self._description.replace(":mode=600", "").replace(":lockfile=0", ""),
                 hint=guestHint(self._description, self._framing))
        return port


def makeService(options, reactor=None):
    """
    Build the gvtap service tree from parsed L{Options}.
    """
    if reactor is None:
        from gvtwisted.reactor import defaultReactor

        reactor = defaultReactor()
    from gvtwisted.assembly import Gvtap
    from gvtwisted.link.pcap import PcapWriter
    from gvtwisted.limits import raiseFileLimit

    raiseFileLimit()

    top = GvtapService(getattr(options, "parent", None))
    from gvtwisted.dropin.runfiles import addFileServices

    addFileServices(top, options, reactor)
    pcap = None
    if options["pcap"]:
        pcap = PcapWriter(options["pcap"], reactor)
        _PcapService(pcap).setServiceParent(top)
    gvtap = Gvtap(reactor, options["config"], pcap=pcap, dns=not options["no-dns"],
                  hostLoopback=not options["no-host-loopback"],
                  ec2MetadataAccess=options["ec2-metadata-access"],
                  maxConnections=options["max-connections"],
                  dnsUpstreams=options["dns-upstream"], dnsHosts=options["dns-hosts"],
                  linkGrace=options["link-grace"], maxMACsPerLink=options["max-macs-per-link"],
                  maxLeasesPerLink=options["max-leases-per-link"],
                  verifyChecksums=bool(options["verify-checksums"]),
                  maxBufferedBytes=options["max-buffered-bytes"])
    top.gvtap = gvtap
    notifier = None
    if options.get("notification"):
        from gvtwisted.services.notification import LinkNotifications, NotificationSender

        notifier = NotificationSender(reactor, options["notification"], gvtap.counters)
        LinkNotifications(notifier).watch(gvtap.switch)
    top.notifier = notifier
    if options["debug"]:
        gvtap.counters.logInterval = 0.0
    _StopGvtap(gvtap).setServiceParent(top)
    apiSite = makeAPISite(gvtap)
    _SiteService(apiSite).setServiceParent(top)
    for framing, key in (("connect", "listen"), ("qemu", "listen-qemu")):
        for description in options[key]:
            endpoint = _serverEndpoint(reactor, description, options, api=framing == "connect")
            factory = LinkFactory(gvtap.network, gvtap.counters, framing,
                                  site=apiSite if framing == "connect" else None)
            service = _AnnouncingEndpointService(endpoint, factory, description, framing,
                                                 "--" + key, top.createdPaths)
            service.notification = options.get("notification")
            service.setServiceParent(top)
    for description in options["services"]:
        endpoint = _serverEndpoint(reactor, description, options)
        _ListeningService(endpoint, apiSite, description, "--services",
                          top.createdPaths).setServiceParent(top)
    forwards = list(options["forward"])
    if options["ssh-port"] != -1:
        forwards.insert(0, (f"127.0.0.1:{options['ssh-port']}",
                            f"{options['config'].deviceIP}:22", "tcp"))
    _StaticForwards(gvtap.forwarder, forwards).setServiceParent(top)
    packetFactory = LinkFactory(gvtap.network, gvtap.counters, "qemu")
    if options.get("listen-vpnkit"):
        from gvtwisted.link.vpnkit import VpnkitFactory

        # The configuration's vpnKitUUIDMacAddresses (gvproxy's default maps
        # its well-known UUID to the device MAC), then --vpnkit-uuid-mac.
        uuidMACs = dict(getattr(options["config"], "vpnkitMACs", {}))
        uuidMACs.update(options.get("vpnkit-uuid-macs") or {})
        vpnkitFactory = VpnkitFactory(packetFactory.makePort, options["config"].mtu, uuidMACs)
        for description in options["listen-vpnkit"]:
            endpoint = _serverEndpoint(reactor, description, options, api=False)
            service = _AnnouncingEndpointService(endpoint, vpnkitFactory, description, "vpnkit",
                                                 "--listen-vpnkit", top.createdPaths)
            service.notification = options.get("notification")
            service.setServiceParent(top)
    for path in options["listen-vfkit"]:
        service = _PacketLinkService("vfkit", path, packetFactory.makePort, gvtap.counters,
                                     reactor, top.createdPaths)
        service.notification = options.get("notification")
        service.setServiceParent(top)
    for path in options["listen-bess"]:
        service = _PacketLinkService("bess", path, packetFactory.makePort, gvtap.counters,
                                     reactor, top.createdPaths)
        service.notification = options.get("notification")
        service.setServiceParent(top)
    if options["listen-stdio"]:
        _checkStdioLogging(options)
        _StdioService(packetFactory.makePort, reactor).setServiceParent(top)
    if options.get("socket-forwards"):
        from gvtwisted.services.ssh.forward import SocketForwardService

        forwardService = SocketForwardService(reactor, gvtap.network, str(options["config"].deviceIP),
                                              options["socket-forwards"], gvtap.counters)
        forwardService.createdPaths = top.createdPaths
        forwardService.setServiceParent(top)
    if notifier is not None:
        from gvtwisted.services.notification import ReadyService

        # Last: every endpoint listens by the time it starts.
        ReadyService(notifier).setServiceParent(top)
    return top


def _checkStdioLogging(options):
    """
    Refuse C{--listen-stdio} when twistd would log to stdout (the frames'
    channel) or daemonize (which closes stdin and stdout).
    """
    parent = getattr(options, "parent", None)
    if parent is None:
        return
    try:
        nodaemon = parent["nodaemon"]
        logfile = parent["logfile"]
        syslog = parent.get("syslog", False)
    except KeyError:
        return
    if not nodaemon:
        raise SystemExit("gvtap: --listen-stdio needs twistd -n (a daemon has no stdin/stdout)")
    if not syslog and logfile in (None, "-"):
        raise SystemExit("gvtap: --listen-stdio needs twistd --logfile FILE (or --syslog): "
                         "logging to stdout would corrupt the frames")


def _hypervisorError(notification):
    """
    Tell the C{--notification} socket, if any, that a hypervisor endpoint
    failed (gvproxy's C{hypervisor_error}), before start-up stops.
    """
    if notification:
        from gvtwisted.services.notification import HYPERVISOR_ERROR, sendNow

        sendNow(notification, HYPERVISOR_ERROR)


class _PacketLinkService(Service):
    """
    A C{--listen-vfkit} or C{--listen-bess} socket, bound at start-up.
    """

    notification = None

    def __init__(self, kind, path, makePort, counters, reactor, createdPaths):
        self.kind = kind
        self.path = path
        self.makePort = makePort
        self.counters = counters
        self.reactor = reactor
        self.listener = None
        self.createdPaths = createdPaths

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self._open()

    def startService(self):
        Service.startService(self)
        if self.listener is None:
            self._open()

    def _open(self):
        if self.kind == "vfkit":
            from gvtwisted.link.datagram import VfkitLink as make
            hint = f"vfkit ... --device virtio-net,unixSocketPath={self.path}"
        else:
            from gvtwisted.link.seqpacket import SeqpacketListener as make
            hint = f"a SOCK_SEQPACKET client of {self.path}"
        option = f"--listen-{self.kind}"
        try:
            prepareUnixSocketPath(self.path, option, socket.SOCK_DGRAM if self.kind == "vfkit"
                                  else socket.SOCK_SEQPACKET)
            self.listener = make(self.path, self.makePort, self.counters, self.reactor)
        except (OSError, StartupError) as e:
            _hypervisorError(self.notification)
            raise StartupError(describeListenFailure(e, option, self.path)) from None
        self.createdPaths.append(self.path)
        self.listener.startListening()
        log.info("gvtap listening for guests on {kind}:{path}; in the guest: {hint}",
                 kind=self.kind, path=self.path, hint=hint)

    def stopService(self):
        if self.listener is not None:
            self.listener.stopListening()
            self.listener = None
        return Service.stopService(self)


class _StdioService(Service):
    """
    The C{--listen-stdio} link: frames with a 2-byte little-endian length on
    stdin/stdout.
    """

    def __init__(self, makePort, reactor):
        self.makePort = makePort
        self.reactor = reactor
        self.stdio = None

    def startService(self):
        Service.startService(self)
        from twisted.internet.stdio import StandardIO

        from gvtwisted.link.framing import LE16
        from gvtwisted.link.listeners import GuestLinkProtocol

        self.protocol = GuestLinkProtocol(self.makePort, LE16, "stdio")
        self.stdio = StandardIO(self.protocol, reactor=self.reactor)

    def stopService(self):
        if self.stdio is not None:
            self.stdio.loseConnection()
            self.stdio = None
        return Service.stopService(self)


def _serverEndpoint(reactor, description, options, api=True):
    """
    The endpoint for C{description}. When it serves the control API (C{api}),
    an C{ssl:} one requires client certificates if C{--services-ca} is given
    (Twisted's own C{ssl:} parser cannot), and a network one without them is
    worth a warning.
    """
    from gvtwisted.link.streamunix import linkServerFromString
    from gvtwisted.services.api_tls import tlsServerEndpoint

    try:
        if api and description.startswith("ssl:") and options["services-ca"]:
            return tlsServerEndpoint(reactor, description, options["services-ca"])
        if api and description.startswith(("ssl:", "tcp:")):
            log.warn("gvtap: {endpoint} serves the control API without client "
                     "certificates: anyone who reaches it can forward ports into the "
                     "network (use unix:, or ssl: with --services-ca)",
                     endpoint=description.split(":privateKey=")[0])
        return linkServerFromString(reactor, description)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise SystemExit(f"gvtap: bad endpoint {description!r}: {e}")


class _SiteService(Service):
    """
    Starts the API site once for the endpoints that hand it connections
    themselves (C{--listen}), so that its access log is open.
    """

    def __init__(self, site):
        self.site = site

    def startService(self):
        Service.startService(self)
        self.site.doStart()

    def stopService(self):
        self.site.doStop()
        return Service.stopService(self)


class _StaticForwards(Service):
    """
    The C{--forward} and C{--ssh-port} forwards. One that cannot bind is one
    clear log line, not a failed start: a second gvtap on the machine must not
    die because port 2222 is taken.
    """

    def __init__(self, forwarder, forwards):
        self.forwarder = forwarder
        self.forwards = forwards

    def startService(self):
        Service.startService(self)
        for local, remote, protocol in self.forwards:
            d = self.forwarder.expose(local, remote, protocol)
            d.addErrback(self._failed, local, remote, protocol)

    def _failed(self, reason, local, remote, protocol):
        log.error("gvtap: cannot forward {protocol} {local} to {remote}: {reason}; "
                  "going on without this forward",
                  protocol=protocol, local=local, remote=remote,
                  reason=reason.getErrorMessage())
