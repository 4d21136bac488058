"""
The addresses of the virtual network, derived from the subnet and validated the
way gvproxy users expect: gateway = first usable address, device (the guest's
static lease) = second, host = last usable address.
"""

import ipaddress

from gvtwisted.wire.ethernet import parseMAC
from gvtwisted.wire.ipv6 import linkLocalFromMAC

DEFAULT_SUBNET = "192.168.127.0/24"
#: A unique local prefix (RFC 4193) that spells the IPv4 default.
DEFAULT_SUBNET6 = "fd00:192:168:127::/64"
DEFAULT_GATEWAY_MAC = "5a:94:ef:e4:0c:dd"
DEFAULT_DEVICE_MAC = "5a:94:ef:e4:0c:ee"
DEFAULT_MTU = 1500
MAX_MTU = 65520
MIN_MTU = 576
DEFAULT_VPNKIT_UUID = "c3d68012-0208-11ea-9fd7-f2189899ab08"


class ConfigError(ValueError):
    """
    A configuration value that the network cannot run with; the message is
    one line meant for the user.
    """


class NetworkConfig:
    """
    The validated addresses and sizes of one virtual network.

    IP addresses are kept both as L{ipaddress.IPv4Address} (for humans) and as
    4-byte strings (for the data path): C{gatewayIP} / C{gatewayIPBytes} etc.

    IPv6 (unless C{ipv6} is false): the /64 C{subnet6}, the gateway at its
    C{::1} and at the link-local address SLAAC derives from the gateway MAC
    (C{gatewayLinkLocal6}), the host at C{::fe} (standing for the host's
    C{::1} as the IPv4 host address stands for 127.0.0.1) and the device's
    static DHCPv6 address C{::2}; as L{ipaddress.IPv6Address} and as 16-byte
    strings (C{gatewayIP6Bytes} etc.). With C{ipv6} false they are L{None}.
    """

    def __init__(self, subnet=DEFAULT_SUBNET, gatewayIP=None, hostIP=None,
                 deviceIP=None, gatewayMAC=DEFAULT_GATEWAY_MAC,
                 deviceMAC=DEFAULT_DEVICE_MAC, mtu=DEFAULT_MTU,
                 subnet6=DEFAULT_SUBNET6, ipv6=True, *, staticLeases=None,
                 nat=None, virtualIPs=None, zones=None, searchDomains=None,
                 vpnkitMACs=None):
        try:
            self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError as e:
            raise ConfigError(f"--subnet {subnet!r} is not an IPv4 network: {e}") from None
        if self.subnet.prefixlen > 29:
            raise ConfigError(
                f"--subnet {subnet} is too small: it must be a /29 or larger")
        first = self.subnet.network_address + 1
        last = self.subnet.broadcast_address - 1
        self.gatewayIP = self._address("--gateway-ip", gatewayIP, first)
        self.deviceIP = self._address("--device-ip", deviceIP, first + 1)
        self.hostIP = self._address("--host-ip", hostIP, last)
        if len({self.gatewayIP, self.deviceIP, self.hostIP}) != 3:
            raise ConfigError(
                "the gateway, device and host addresses must be distinct "
                f"(got {self.gatewayIP}, {self.deviceIP}, {self.hostIP})")
        try:
            self.gatewayMAC = parseMAC(gatewayMAC)
        except ValueError as e:
            raise ConfigError(f"--gateway-mac: {e}") from None
        try:
            self.deviceMAC = parseMAC(deviceMAC)
        except ValueError as e:
            raise ConfigError(f"--device-mac: {e}") from None
        if self.gatewayMAC[0] & 1 or self.deviceMAC[0] & 1:
            raise ConfigError("MAC addresses must be unicast")
        try:
            mtu = int(mtu)
        except (TypeError, ValueError):
            raise ConfigError(f"--mtu {mtu!r} is not a number") from None
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"--mtu {mtu} is outside {MIN_MTU}..{MAX_MTU}")
        self.mtu = mtu
        self.gatewayIPBytes = self.gatewayIP.packed
        self.hostIPBytes = self.hostIP.packed
        self.deviceIPBytes = self.deviceIP.packed
        self.broadcastIPBytes = self.subnet.broadcast_address.packed
        self.networkInt = int(self.subnet.network_address)
        self.netmaskInt = int(self.subnet.netmask)
        self.ipv6 = bool(ipv6)
        self.subnet6 = self.gatewayIP6 = self.hostIP6 = self.deviceIP6 = None
        self.gatewayLinkLocal6 = None
        self.gatewayIP6Bytes = self.hostIP6Bytes = self.deviceIP6Bytes = None
        self.gatewayLinkLocal6Bytes = self.prefix6Bytes = None
        if self.ipv6:
            self._configureIPv6(subnet6)

        self._extras(staticLeases, nat, virtualIPs, zones, searchDomains, vpnkitMACs)

    def _configureIPv6(self, subnet6):
        try:
            self.subnet6 = ipaddress.IPv6Network(subnet6, strict=False)
        except ValueError as e:
            raise ConfigError(f"--subnet6 {subnet6!r} is not an IPv6 network: {e}") from None
        if self.subnet6.prefixlen != 64:
            raise ConfigError(
                f"--subnet6 {subnet6} must be a /64: guests form their addresses "
                "from a 64-bit interface identifier (SLAAC)")
        network = self.subnet6.network_address
        if (network.is_multicast or network.is_link_local or network.is_loopback
                or network.is_unspecified or network.ipv4_mapped is not None):
            raise ConfigError(
                f"--subnet6 {subnet6} is not a unicast prefix a guest can use "
                "(multicast, link-local, loopback and IPv4-mapped are not)")
        self.gatewayIP6 = network + 1
        self.deviceIP6 = network + 2
        self.hostIP6 = network + 0xFE
        self.gatewayLinkLocal6 = ipaddress.IPv6Address(linkLocalFromMAC(self.gatewayMAC))
        self.prefix6Bytes = network.packed
        self.gatewayIP6Bytes = self.gatewayIP6.packed
        self.deviceIP6Bytes = self.deviceIP6.packed
        self.hostIP6Bytes = self.hostIP6.packed
        self.gatewayLinkLocal6Bytes = self.gatewayLinkLocal6.packed

    def inSubnet6(self, ip: bytes) -> bool:
        """
        Whether a 16-byte address is inside the IPv6 subnet (never, with
        IPv6 off).
        """
        return self.prefix6Bytes is not None and ip[:8] == self.prefix6Bytes[:8]

    def _extras(self, staticLeases, nat, virtualIPs, zones, searchDomains, vpnkitMACs):
        """
        What gvproxy's YAML C{stack} can say beyond the addresses; each has
        gvproxy's default when not given.

        @ivar staticLeases: MAC (lower-case text) to IP text; by default the
            device MAC to the device IP.
        @ivar nat: 4-byte virtual address to the dotted host address its
            traffic goes to; by default the host address to C{127.0.0.1}.
        @ivar virtualIPs: the 4-byte addresses besides the gateway's that the
            gateway answers ARP for; by default the host address.
        @ivar zones: the DNS zones in the API's JSON shape, or L{None} for
            gvproxy's two default zones.
        @ivar searchDomains: DHCP option 119, or L{None} for the host's
            resolv.conf C{search} line.
        @ivar vpnkitMACs: vpnkit UUID (lower-case text) to MAC text; by
            default L{DEFAULT_VPNKIT_UUID} to the device MAC.
        """
        if staticLeases is None:
            staticLeases = {_formatMAC(self.deviceMAC): str(self.deviceIP)}
        self.staticLeases = {}
        for mac, ip in staticLeases.items():
            try:
                key = _formatMAC(parseMAC(mac))
            except ValueError as e:
                raise ConfigError(f"static lease {mac!r}: {e}") from None
            self.staticLeases[key] = str(self._address(f"static lease for {key}", ip, None))
        if nat is None:
            nat = {str(self.hostIP): "127.0.0.1"}
        self.nat = {}
        for virtual, real in nat.items():
            try:
                key = ipaddress.IPv4Address(virtual).packed
                target = str(ipaddress.IPv4Address(real))
            except ValueError:
                raise ConfigError(f"nat {virtual!r}: {real!r}: both must be IPv4 addresses") from None
            self.nat[key] = target
        if virtualIPs is None:
            virtualIPs = [str(self.hostIP)]
        self.virtualIPs = set()
        for ip in virtualIPs:
            address = self._address("gateway virtual IP", ip, None)
            if address == self.gatewayIP:
                continue
            self.virtualIPs.add(address.packed)
        self.zones = zones
        self.searchDomains = None if searchDomains is None else [str(d) for d in searchDomains]
        if vpnkitMACs is None:
            # gvproxy's default: hyperkit's fixed UUID gets the device MAC.
            vpnkitMACs = {DEFAULT_VPNKIT_UUID: _formatMAC(self.deviceMAC)}
        self.vpnkitMACs = {}
        for uuid, mac in vpnkitMACs.items():
            try:
                self.vpnkitMACs[str(uuid).lower()] = _formatMAC(parseMAC(mac))
            except ValueError as e:
                raise ConfigError(f"vpnkit UUID {uuid}: {e}") from None

    def _address(self, option, value, default):
        if value is None:
            return default
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ConfigError(f"{option} {value!r} is not an IPv4 address") from None
        if address not in self.subnet:
            raise ConfigError(f"{option} {address} is outside the subnet {self.subnet}")
        if address in (self.subnet.network_address, self.subnet.broadcast_address):
            raise ConfigError(
                f"{option} {address} is the network or broadcast address of {self.subnet}")
        return address

    def isVirtualIP(self, ip: bytes) -> bool:
        """
        Whether a 4-byte address is the gateway's or one of its virtual
        addresses (answered by ARP, never a guest's).
        """
        return ip == self.gatewayIPBytes or ip in self.virtualIPs

    def inSubnet(self, ip: bytes) -> bool:
        """
        Whether a 4-byte address is inside the subnet.
        """
        return int.from_bytes(ip, "big") & self.netmaskInt == self.networkInt


def _formatMAC(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
