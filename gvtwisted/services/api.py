"""
The control API: gvproxy's HTTP routes, as a twisted.web resource tree.

The host side (L{makeAPIResource}) is served on every C{--listen} endpoint (any
request that is not C{POST /connect}) and on every C{--services} endpoint. The
guest side (L{makeGuestAPIResource}) has the three forwarder routes only and is
served inside the network at C{http://GATEWAY:80}, so that a guest can publish
its own ports.

The shapes, status codes and messages are gvproxy's, because podman machine,
CRC, lima and the gvisor-tap-vsock Go client drive them unchanged:

  - JSON bodies end with a newline; errors are C{text/plain} with the message
    and a newline (the Go client returns the trimmed body as the error);
  - expose and unexpose answer 200 with an empty body; 400 for a body that is
    not JSON or lacks a field (the message names the field); 500 C{proxy
    already running}, C{proxy not found}, or the operating system's reason a
    socket cannot listen;
  - a wrong method is 405 (gvproxy says 400), and a body over 1 MiB is 413.

See C{docs/api.md} for every route with examples.
"""

import ipaddress

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gvtwisted.services.api_http import (
    MISSING, APISite, Node, checkRoute, field, readJSONObject, writeError, writeJSON,
)
from gvtwisted.services.api_gvstats import gvisorStats
from gvtwisted.services.api_stats import prometheusText, stats
from gvtwisted.services.api_tunnel import TunnelResource
from gvtwisted.services.forwarder import ForwardError, ForwardSpecError

log = Logger()

__all__ = ["makeAPIResource", "makeGuestAPIResource", "APISite"]


class _Route(Resource):
    """
    A leaf route: C{methods} it answers, C{handle(request)} for the rest.
    """

    isLeaf = True
    methods = (b"GET",)

    def __init__(self, gvtap):
        Resource.__init__(self)
        self.gvtap = gvtap

    def render(self, request):
        refusal = checkRoute(request, self.methods)
        if refusal is not None:
            return refusal
        return self.handle(request)


def _finishLater(request, d, what):
    """
    Answer C{request} when C{d} fires: 200 with an empty body, or the error's
    status and message.
    """

    def done(_):
        if not request._disconnected:
            request.setHeader(b"content-length", b"0")
            request.finish()

    def failed(reason):
        if reason.check(ForwardSpecError):
            code = 400
        elif reason.check(ForwardError):
            code = 500
        else:
            log.failure("{what} failed", reason, what=what)
            code = 500
        if not request._disconnected:
            request.write(writeError(request, code, reason.getErrorMessage()))
            request.finish()

    d.addCallbacks(done, failed)
    return NOT_DONE_YET


def _stringField(body, name, request, default=MISSING):
    """
    C{(value, None)} for a string field, or C{(None, body of a 400)} naming it.
    """
    value = field(body, name)
    if value is MISSING or value is None:
        if default is not MISSING:
            return default, None
        return None, writeError(request, 400, f"{name}: missing")
    if not isinstance(value, str):
        return None, writeError(request, 400, f"{name}: must be a string, not {type(value).__name__}")
    return value, None


def _stringFields(request, *names, optional=()):
    """
    Read the JSON object body and the string fields C{names} (C{optional}
    ones default to C{""}): C{([values...], None)}, or C{(None, body of a
    400)} naming what was wrong.
    """
    body, refusal = readJSONObject(request)
    if refusal is not None:
        return None, refusal
    values = []
    for name in names:
        value, refusal = _stringField(body, name, request,
                                      default="" if name in optional else MISSING)
        if refusal is not None:
            return None, refusal
        values.append(value)
    return values, None


class ForwardsResource(_Route):
    """
    C{GET /services/forwarder/all}: the forwards, sorted by local then protocol.
    """

    def handle(self, request):
        return writeJSON(request, self.gvtap.forwarder.all())


class ExposeResource(_Route):
    """
    C{POST /services/forwarder/expose}: C{{"local", "remote", "protocol"}}. A
    remote of C{":PORT"} means that port at the caller's own address (the
    guest that asks, on the guest side).
    """

    methods = (b"POST",)

    def handle(self, request):
        values, refusal = _stringFields(request, "local", "remote", "protocol",
                                        optional=("protocol",))
        if refusal is not None:
            return refusal
        local, remote, protocol = values
        if not local:
            return writeError(request, 400, "local: missing")
        if remote.startswith(":"):
            client = request.getClientAddress()
            host = getattr(client, "host", None)
            try:
                ip = ipaddress.ip_address(host)
            except (ValueError, TypeError):
                return writeError(request, 400, f"remote: {remote!r} means the caller's IP, and "
                                                "this connection has no IP address")
            remote = (f"[{ip}]" if ip.version == 6 else str(ip)) + remote
        return _finishLater(request, self.gvtap.forwarder.expose(local, remote, protocol or "tcp"),
                            "expose")


class UnexposeResource(_Route):
    """
    C{POST /services/forwarder/unexpose}: C{{"local", "protocol"}}.
    """

    methods = (b"POST",)

    def handle(self, request):
        values, refusal = _stringFields(request, "local", "protocol", optional=("protocol",))
        if refusal is not None:
            return refusal
        local, protocol = values
        return _finishLater(request, self.gvtap.forwarder.unexpose(local, protocol or "tcp"),
                            "unexpose")


class LeasesResource(_Route):
    """
    C{GET /services/dhcp/leases} and C{GET /leases}: address to MAC.
    """

    def handle(self, request):
        return writeJSON(request, allLeases(self.gvtap))


def allLeases(gvtap) -> dict:
    """
    gvproxy's lease table: the gateway's address and MAC, every static
    lease (given out or not), and the live pool leases; keys in Go's
    (string) order.
    """
    config = gvtap.config
    table = {str(config.gatewayIP): _formatMAC(config.gatewayMAC)}
    dhcp = gvtap.dhcp
    for mac, ip in getattr(dhcp.config, "staticLeases", {}).items():
        table[ip] = mac
    table.update(dhcp.leases())
    return dict(sorted(table.items()))


def _formatMAC(mac) -> str:
    return mac if isinstance(mac, str) else ":".join(f"{b:02x}" for b in mac)


class ZonesResource(_Route):
    """
    C{GET /services/dns/all}: the local DNS zones (none when DNS is off).
    """

    def handle(self, request):
        dns = self.gvtap.dns
        return writeJSON(request, dns.zones.all() if dns is not None else [])


class AddZoneResource(_Route):
    """
    C{POST /services/dns/add}: one zone; a zone of the same name is replaced
    (its new records first).
    """

    methods = (b"POST",)

    def handle(self, request):
        dns = self.gvtap.dns
        body, refusal = readJSONObject(request)
        if refusal is not None:
            return refusal
        if dns is None:
            return writeError(request, 500, "DNS is off (--no-dns)")
        try:
            dns.zones.add(body)
        except ValueError as e:
            return writeError(request, 400, str(e))
        log.info("DNS zone {name!r} added through the API", name=field(body, "Name"))
        return b""


class StatsResource(_Route):
    """
    C{GET /stats}: gvproxy's shape, gVisor's statistics tree with
    C{BytesSent} and C{BytesReceived}.
    """

    def handle(self, request):
        return writeJSON(request, gvisorStats(self.gvtap))


class GvtapStatsResource(_Route):
    """
    C{GET /gvtap/stats}: gvtap's own counters and gauges as JSON.
    """

    def handle(self, request):
        return writeJSON(request, stats(self.gvtap))


class MetricsResource(_Route):
    """
    C{GET /metrics}: the same numbers in the Prometheus text format.
    """

    def handle(self, request):
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return prometheusText(stats(self.gvtap)).encode("utf-8")


class CAMResource(_Route):
    """
    C{GET /cam}: gvproxy's shape, each guest MAC address to its port's
    number.
    """

    def handle(self, request):
        return writeJSON(request, self.gvtap.switch.cam())


class GvtapCAMResource(_Route):
    """
    C{GET /gvtap/cam}: the whole MAC table, gateway included, MAC to port
    name.
    """

    def handle(self, request):
        return writeJSON(request, self.gvtap.switch.table())


def _forwarderNode(gvtap):
    node = Node()
    node.putChild(b"all", ForwardsResource(gvtap))
    node.putChild(b"expose", ExposeResource(gvtap))
    node.putChild(b"unexpose", UnexposeResource(gvtap))
    return node


def makeAPIResource(gvtap):
    """
    The host side's route tree.
    """
    root = Node()
    services = Node()
    root.putChild(b"services", services)
    services.putChild(b"forwarder", _forwarderNode(gvtap))
    dhcp = Node()
    services.putChild(b"dhcp", dhcp)
    dhcp.putChild(b"leases", LeasesResource(gvtap))
    dns = Node()
    services.putChild(b"dns", dns)
    dns.putChild(b"all", ZonesResource(gvtap))
    dns.putChild(b"add", AddZoneResource(gvtap))
    root.putChild(b"leases", LeasesResource(gvtap))
    root.putChild(b"stats", StatsResource(gvtap))
    root.putChild(b"metrics", MetricsResource(gvtap))
    root.putChild(b"cam", CAMResource(gvtap))
    own = Node()
    root.putChild(b"gvtap", own)
    own.putChild(b"stats", GvtapStatsResource(gvtap))
    own.putChild(b"cam", GvtapCAMResource(gvtap))
    root.putChild(b"tunnel", TunnelResource(gvtap))
    return root


def makeGuestAPIResource(gvtap):
    """
    The guest side's route tree: the forwarder routes only (no tunnel, no
    stats, no DNS changes from inside).
    """
    root = Node()
    services = Node()
    root.putChild(b"services", services)
    services.putChild(b"forwarder", _forwarderNode(gvtap))
    return root


def makeAPISite(gvtap, guest=False):
    """
    An L{APISite} serving the host (or, with C{guest}, the guest) routes.
    """
    resource = makeGuestAPIResource(gvtap) if guest else makeAPIResource(gvtap)
    return APISite(resource, reactor=gvtap.reactor)
