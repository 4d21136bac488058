"""
What gvproxy v0.8.9 makes of its command line and its configuration file
together (its C{GvproxyConfigure}), and how that maps onto C{twistd gvtap}'s
options.

The rules, as v0.8.9 has them:

  - Without C{-config}: gvproxy's defaults, the two DNS zones, the SSH forward
    C{127.0.0.1:SSH-PORT -> 192.168.127.2:22}, the static lease of
    C{5a:94:ef:e4:0c:ee}, the vpnkit UUID's MAC, the host's search domains,
    C{-pcap}, C{-ssh-port} checked against 1024..65535 or -1.
  - With C{-config}: the file decides, and none of those defaults apply;
    C{-ssh-port} and C{-pcap} are ignored (C{-ssh-port} with a warning).
  - Either way the command line wins for C{-debug}, C{-log-file}, the
    C{-listen-*} interfaces, C{-pid-file}, C{-notification}, C{-listen} (all of
    the file's list is replaced), C{-services}, C{-mtu} (when not 0) and
    C{-ec2-metadata-access} (when given); C{-forward-*} add to the file's
    C{forwards}.
  - Defaults whatever the source: MTU 1500, subnet 192.168.127.0/24, gateway
    the first usable address, its MAC C{5a:94:ef:e4:0c:dd}, the NAT table and
    the gateway's virtual addresses both the last usable address (to
    C{127.0.0.1}), each unless the file gives any.

One known bug of v0.8.8 and v0.8.9 is not reproduced: their
C{-ec2-metadata-access} (and the file's top-level C{ec2-metadata-access}) sets
a field nothing reads, so it has no effect; here it lets the guest reach
169.254.0.0/16, as documented.
"""

import copy
import ipaddress
import os
from urllib.parse import urlsplit, unquote

__all__ = ["ConfigureError", "configure", "gvtapSettings", "DEFAULT_VPNKIT_UUID"]

DEFAULT_VPNKIT_UUID = "c3d68012-0208-11ea-9fd7-f2189899ab08"
DEVICE_MAC = "5a:94:ef:e4:0c:ee"
SSH_HOST_PORT = "192.168.127.2:22"
HOST_IP = "192.168.127.254"
_LEVELS = {"panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"}


class ConfigureError(ValueError):
    """
    A combination gvproxy refuses; the message is gvproxy's.
    """


def goQuote(text: str) -> str:
    from gvtwisted.dropin.goflag import _quote

    return _quote(text)


def _goURL(value):
    """
    Go's C{url.Parse} for the parts gvproxy uses: (scheme, path).
    """
    parts = urlsplit(value)
    return parts.scheme, unquote(parts.path)


def configure(fileConfig, args, exists=os.path.exists, argv=(), checkSockets=True):
    """
    gvproxy v0.8.9's C{GvproxyConfigure}: the effective configuration.

    @param fileConfig: the checked configuration file (see
        L{gvtwisted.dropin.yamlconfig.loadConfig}), or L{None} without C{-config}.
    @param args: the command line's values, by gvproxy flag name (C{listen},
        C{debug}, C{mtu}, C{ssh-port}, C{listen-qemu}, ..., C{forward-sock}...).
    @param exists: C{os.path.exists}, for the socket and identity checks.
    @param argv: the raw command line (for the C{-ssh-port} warning, which
        v0.8.9 gives only for the exact words C{-ssh-port} / C{--ssh-port}).
    @param checkSockets: refuse unix socket paths that exist and more than
        one of qemu, bess and vpnkit, as gvproxy does (C{twistd gvtap}
        replaces a stale socket and serves every kind of link at once).
    @return: C{(config, warnings)}: the configuration in the file's shape
        with every default filled in, and the warning lines gvproxy would log.
    @raise ConfigureError: with gvproxy's message.
    """
    warnings = []
    config = copy.deepcopy(fileConfig) if fileConfig is not None else {}
    withFile = fileConfig is not None
    stack = config.setdefault("stack", {})
    interfaces = config.setdefault("interfaces", {})

    if args.get("debug"):
        config["log-level"] = "debug"
    if args.get("log-file"):
        config["log-file"] = args["log-file"]
    if not config.get("log-level"):
        config["log-level"] = "info"
    if config["log-level"].lower() not in _LEVELS:
        warnings.append(f'bad log level "{config["log-level"]}", falling back to "info"')
        config["log-level"] = "info"

    if not stack.get("mtu"):
        stack["mtu"] = 1500
    if not stack.get("subnet"):
        stack["subnet"] = "192.168.127.0/24"
    try:
        subnet = _parsePrefix(stack["subnet"])
    except ValueError as e:
        raise ConfigureError(f"failed to parse subnet: {e}") from None
    if subnet.prefixlen + 3 > subnet.max_prefixlen:
        raise ConfigureError(
            "failed to identify first usable address in subnet: too small network")
    first = subnet.network_address + 1
    last = subnet.broadcast_address - 1
    if not stack.get("gatewayIP"):
        stack["gatewayIP"] = str(first)
    if not stack.get("gatewayMacAddress"):
        stack["gatewayMacAddress"] = "5a:94:ef:e4:0c:dd"
    if not stack.get("nat"):
        stack["nat"] = {str(last): "127.0.0.1"}
    if not stack.get("gatewayVirtualIPs"):
        stack["gatewayVirtualIPs"] = [str(last)]

    for flag, key in (("listen-qemu", "qemu"), ("listen-bess", "bess"),
                      ("listen-vfkit", "vfkit"), ("listen-vpnkit", "vpnkit"),
                      ("listen-stdio", "stdio")):
        if args.get(flag):
            interfaces[key] = args[flag]
    if args.get("pid-file"):
        config["pid-file"] = args["pid-file"]
    if args.get("notification"):
        scheme, path = _goURL(args["notification"])
        if scheme != "unix":
            raise ConfigureError("notification listen address must be unix:// address")
        config["notification"] = path
    if args.get("listen"):
        config["listen"] = list(args["listen"])
    if args.get("services"):
        config["services"] = args["services"]
    if args.get("ec2-metadata-access"):
        config["ec2-metadata-access"] = True
    if args.get("mtu"):
        stack["mtu"] = args["mtu"]

    if interfaces.get("qemu"):
        scheme, path = _goURL(interfaces["qemu"])
        if checkSockets and scheme == "unix" and path and exists(path):
            raise ConfigureError(f"{goQuote(path)} already exists")
    for key, scheme in (("bess", "unixpacket"), ("vfkit", "unixgram")):
        if interfaces.get(key):
            given, path = _goURL(interfaces[key])
            if given != scheme:
                raise ConfigureError(f"{key} listen address must be {scheme}:// address")
            if checkSockets and path and exists(path):
                raise ConfigureError(f"{goQuote(path)} already exists")
    if not checkSockets:
        pass
    elif interfaces.get("vpnkit") and interfaces.get("qemu"):
        raise ConfigureError("cannot use qemu and vpnkit protocol at the same time")
    elif interfaces.get("vpnkit") and interfaces.get("bess"):
        raise ConfigureError("cannot use bess and vpnkit protocol at the same time")
    elif interfaces.get("qemu") and interfaces.get("bess"):
        raise ConfigureError("cannot use qemu and bess protocol at the same time")

    sshPort = args.get("ssh-port", 2222)
    if withFile and ("-ssh-port" in argv or "--ssh-port" in argv):
        warnings.append(
            'CLI argument "-ssh-port" is unavailable with config file. You need to add '
            f'"127.0.0.1:{sshPort}: {SSH_HOST_PORT}" entry into .stack.forwards in "" instead')
    if config["log-level"].lower() == "debug":
        stack["debug"] = True

    if not withFile:
        if (sshPort != -1 and sshPort < 1024) or sshPort > 65535:
            raise ConfigureError("ssh-port value must be between 1024 and 65535")
        if args.get("pcap"):
            stack["capture-file"] = args["pcap"]
        gateway = stack["gatewayIP"]
        stack["dns"] = [
            {"name": zone, "records": [{"name": "gateway", "ip": gateway},
                                       {"name": "host", "ip": HOST_IP}]}
            for zone in ("containers.internal.", "docker.internal.")
        ]
        # None: the host's resolv.conf "search" line, read where the network
        # is built (and so by twistd gvtap too).
        stack["dnsSearchDomains"] = None
        stack["forwards"] = {} if sshPort == -1 else {f"127.0.0.1:{sshPort}": SSH_HOST_PORT}
        stack["dhcpStaticLeases"] = {"192.168.127.2": DEVICE_MAC}
        stack["vpnKitUUIDMacAddresses"] = {DEFAULT_VPNKIT_UUID: DEVICE_MAC}

    socks = args.get("forward-sock") or []
    counts = {len(socks)} | {len(args.get(k) or []) for k in
                             ("forward-dest", "forward-user", "forward-identity")}
    if len(counts) != 1:
        raise ConfigureError(
            "--forward-sock, --forward-dest, --forward-user, and --forward-identity must "
            "all be specified together, the same number of times, or not at all")
    forwards = config.setdefault("forwards", [])
    for i, sock in enumerate(socks):
        forwards.append({"socket": sock, "dest": args["forward-dest"][i],
                         "user": args["forward-user"][i],
                         "identity": args["forward-identity"][i]})
    for forward in forwards:
        identity = forward.get("identity", "")
        if not exists(identity):
            raise ConfigureError(
                f"identity file {goQuote(identity)} can't be loaded: "
                f"stat {identity}: no such file or directory")
    return config, warnings


def _parsePrefix(text):
    """
    Go's C{netip.ParsePrefix}: an address, C{/}, a decimal length; the
    address need not be the network's first (it is masked).
    """
    if "/" not in text:
        raise ValueError(f'netip.ParsePrefix("{text}"): no \'/\'')
    address, _, bits = text.partition("/")
    if not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
        raise ValueError(f'netip.ParsePrefix("{text}"): bad bits after slash: "{bits}"')
    try:
        return ipaddress.ip_network(f"{ipaddress.ip_address(address)}/{int(bits)}", strict=False)
    except ValueError as e:
        raise ValueError(f'netip.ParsePrefix("{text}"): {e}') from None


def _zoneJSON(zone):
    records = []
    for record in zone.get("records") or []:
        entry = {"Name": record.get("name", ""), "IP": record.get("ip", "")}
        regexp = record.get("regexp")
        if regexp is not None:
            entry["Regexp"] = regexp.pattern if hasattr(regexp, "pattern") else str(regexp)
        records.append(entry)
    return {"Name": zone.get("name", ""), "Records": records,
            "DefaultIP": zone.get("defaultIP", "") or ""}


def gvtapSettings(config):
    """
    The C{twistd gvtap} option values that run the effective gvproxy
    configuration C{config} (from L{configure}).

    @return: a dict of option name to value, plus C{"network"}: the keyword
        arguments of L{gvtwisted.config.NetworkConfig} beyond the addresses.
    """
    stack = config["stack"]
    interfaces = config.get("interfaces", {})
    from gvtwisted.services.forwarder import parseForwardOption

    forwards = []
    for local, remote in (stack.get("forwards") or {}).items():
        protocol = "tcp"
        if local.startswith("udp:"):
            protocol, local = "udp", local[len("udp:"):]
        try:
            forwards.append(parseForwardOption(f"{protocol}:{local}={remote}"))
        except ValueError as e:
            raise ConfigureError(f"stack.forwards {local}: {remote}: {e}") from None
    leases = {}
    for ip, mac in (stack.get("dhcpStaticLeases") or {}).items():
        leases[mac] = ip
    network = {
        "staticLeases": leases,
        "nat": dict(stack.get("nat") or {}),
        "virtualIPs": list(stack.get("gatewayVirtualIPs") or []),
        "zones": [_zoneJSON(z) for z in stack.get("dns") or []],
        "searchDomains": (None if stack.get("dnsSearchDomains", ()) is None
                          else list(stack.get("dnsSearchDomains") or [])),
        "vpnkitMACs": dict(stack.get("vpnKitUUIDMacAddresses") or {}),
    }
    socks = config.get("forwards") or []
    settings = {
        "listen": list(config.get("listen") or []),
        "listen-qemu": [interfaces["qemu"]] if interfaces.get("qemu") else [],
        "listen-bess": [interfaces["bess"]] if interfaces.get("bess") else [],
        "listen-vfkit": [interfaces["vfkit"]] if interfaces.get("vfkit") else [],
        "listen-vpnkit": [interfaces["vpnkit"]] if interfaces.get("vpnkit") else [],
        "listen-stdio": bool(interfaces.get("stdio")),
        "services": [config["services"]] if config.get("services") else [],
        "mtu": stack["mtu"],
        "subnet": stack["subnet"],
        "gateway-ip": stack["gatewayIP"],
        "gateway-mac": stack["gatewayMacAddress"],
        "pcap": stack.get("capture-file") or None,
        "debug": bool(stack.get("debug")),
        "ec2-metadata-access": bool(config.get("ec2-metadata-access")
                                    or stack.get("ec2MetadataAccess")),
        "forwards": forwards,
        "forward-sock": [f.get("socket", "") for f in socks],
        "forward-dest": [f.get("dest", "") for f in socks],
        "forward-user": [f.get("user", "") for f in socks],
        "forward-identity": [f.get("identity", "") for f in socks],
        "notification": ("unix://" + config["notification"]) if config.get("notification") else None,
        "pid-file": config.get("pid-file") or None,
        "log-file": config.get("log-file") or None,
        "network": network,
    }
    return settings
