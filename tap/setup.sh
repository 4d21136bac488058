#!/bin/sh
# Static configuration of the guest's TAP interface for a gvtap (or gvproxy) host,
# for guests that do not run DHCP (twistd gvtap-guest --dhcp does that instead).
#
#   tap/setup.sh IFACE [ADDR/PREFIX] [GATEWAY]
#
# Defaults: 192.168.127.2/24 via 192.168.127.1, the gateway also being the
# nameserver. Brings IFACE up, sets the address and the default route, and writes
# resolv.conf: inside a named network namespace (ip netns exec NAME ...) that is
# /etc/netns/NAME/resolv.conf, which `ip netns exec` shows as /etc/resolv.conf to
# the namespace's processes; the host's own /etc/resolv.conf is never touched
# there. Outside a named namespace it is /etc/resolv.conf.
set -eu

usage() {
    echo "usage: $0 IFACE [ADDR/PREFIX] [GATEWAY]" >&2
    echo "  defaults: 192.168.127.2/24 via 192.168.127.1 (also the nameserver)" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 3 ] || usage
case "$1" in -h|--help|"") usage ;; esac

iface=$1
addr=${2:-192.168.127.2/24}
gateway=${3:-192.168.127.1}

case "$addr" in
    */*) ;;
    *) echo "$0: address '$addr' needs a prefix length, as in 192.168.127.2/24" >&2
       usage ;;
esac

if [ ! -e "/sys/class/net/$iface" ]; then
    echo "$0: no interface '$iface' (start twistd gvtap-guest first)" >&2
    exit 1
fi

ip link set dev "$iface" up
ip addr replace "$addr" dev "$iface"
ip route replace default via "$gateway" dev "$iface"

netns=$(ip netns identify $$ 2>/dev/null || true)
if [ -n "$netns" ]; then
    dir=/etc/netns/$netns
    mkdir -p "$dir"
    resolv=$dir/resolv.conf
else
    resolv=/etc/resolv.conf
fi

# Write a new file and rename it over the old one, so a symlink (to a resolver
# daemon's file) is replaced rather than written through; a bind-mounted file
# (as in containers) cannot be renamed over, so fall back to writing in place.
tmp=$resolv.gvtap.$$
printf 'nameserver %s\n' "$gateway" > "$tmp"
if ! mv -f "$tmp" "$resolv" 2>/dev/null; then
    cat "$tmp" > "$resolv"
    rm -f "$tmp"
fi

echo "$iface: $addr, default via $gateway, nameserver $gateway in $resolv"
