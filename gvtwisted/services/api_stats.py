"""
The numbers of a running gvtap, for C{GET /stats} (JSON) and C{GET /metrics}
(the Prometheus text exposition format, version 0.0.4).

Counters only ever grow (bytes, frames, drops by reason); gauges are sizes read
at the moment of the request (open TCP connections, NAT flows, leases, links,
forwards). Both routes serve the same numbers, so a dashboard and a person with
curl see the same thing.
"""

import re

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

PREFIX = "gvtap_"


def gauges(gvtap) -> dict:
    """
    The sizes of gvtap's tables now, by dotted name. A part that is not
    built (no DNS, a NAT without UDP) is left out rather than shown as 0.
    """
    values = {}
    tcp = getattr(gvtap, "tcp", None)
    if tcp is not None:
        values["tcp.connections"] = tcp.connectionCount()
    nat = getattr(gvtap, "nat", None)
    for name in ("udp", "icmp"):
        part = getattr(nat, name, None)
        count = getattr(part, "flowCount", None)
        if count is not None:
            values[f"nat.{name}.flows"] = count()
    dhcp = getattr(gvtap, "dhcp", None)
    if dhcp is not None:
        values["dhcp.leases"] = len(dhcp.leases())
    switch = getattr(gvtap, "switch", None)
    if switch is not None:
        # The gateway is a port of the switch too; links are the guests'.
        values["links"] = max(len(switch.ports) - 1, 0)
    forwarder = getattr(gvtap, "forwarder", None)
    if forwarder is not None:
        values["forwards"] = len(forwarder.all())
    return values


def stats(gvtap) -> dict:
    """
    The body of C{GET /stats}: C{{"counters": {...}, "gauges": {...}}}, each
    sorted by name.
    """
    return {
        "counters": gvtap.counters.snapshot(),
        "gauges": dict(sorted(gauges(gvtap).items())),
    }


def metricName(name: str) -> str:
    """
    C{"drop.ipv4.badChecksum"} becomes C{"gvtap_drop_ipv4_badChecksum"}: every
    character Prometheus does not allow in a name becomes an underscore.
    """
    return PREFIX + _INVALID.sub("_", name)


def prometheusText(snapshot: dict) -> str:
    """
    Render L{stats} in the Prometheus text format: one C{# HELP} and one
    C{# TYPE} line per metric, then its sample. Two dotted names that map to
    the same metric name (C{a.b} and C{a_b}) get distinct names (a numeric
    suffix), since a name may appear only once.
    """
    lines = []
    seen = set()
    for kind, values in (("counter", snapshot["counters"]), ("gauge", snapshot["gauges"])):
        for name, value in values.items():
            metric = metricName(name)
            candidate, n = metric, 1
            while candidate in seen:
                n += 1
                candidate = f"{metric}_{n}"
            seen.add(candidate)
            help = name.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {candidate} gvtap {kind} {help}")
            lines.append(f"# TYPE {candidate} {kind}")
            lines.append(f"{candidate} {int(value)}")
    return "\n".join(lines) + "\n" if lines else ""
