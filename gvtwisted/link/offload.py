"""
Negotiating TSO/checksum offload on gvtap's own guest link, before C{POST /connect}.

gvtap-guest, holding a TAP opened with C{IFF_VNET_HDR}, first sends
C{GET /offload} on the new connection. gvtap answers C{200} with the body
C{virtio-net-hdr}; gvproxy (whose HTTP mux knows no such path) answers C{404}
and keeps the connection open, as gvtap does when offload is off. Either way
the guest then sends its C{POST /connect} on the same connection, with the
header C{X-Gvtap-Offload: virtio-net-hdr} only after a C{200}.

With offload, the link carries each frame behind a 4-byte big-endian length
(a super-segment does not fit gvproxy's 2-byte one) and a 10-byte virtio-net
header (L{gvtwisted.wire.virtio}): TCP super-segments up to 64 KiB with
partial checksums, both ways. A gvforwarder sends no probe and no header, so
its link is plain, exactly as before.
"""

OFFLOAD_PATH = b"/offload"
OFFLOAD_HEADER = b"X-Gvtap-Offload"
OFFLOAD_TOKEN = b"virtio-net-hdr"
OFFLOAD_PROBE = b"GET /offload HTTP/1.1\r\nHost: gvtap\r\n\r\n"

# What gvtap answers to the probe.
PROBE_ACCEPTED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: %d\r\n\r\n%s\n" % (len(OFFLOAD_TOKEN) + 1, OFFLOAD_TOKEN))
PROBE_REFUSED = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 19\r\n\r\n404 page not found\n")

MAX_RESPONSE = 16 * 1024

# How much an offload link's transport reads at once (Twisted's default is
# 64 KiB, less than one super-segment with its headers).
OFFLOAD_READ_SIZE = 256 * 1024


class OffloadProbeError(Exception):
    """
    The answer to the probe is not an HTTP response we can read past.
    """


def parseProbeResponse(buffer: bytes):
    """
    Read the host's answer to L{OFFLOAD_PROBE}.

    @return: L{None} while incomplete; else C{(accepted, rest)}, C{rest}
        being whatever followed the response's body.
    @raise OffloadProbeError: for a response without a length, too long, or
        not HTTP.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_RESPONSE:
            raise OffloadProbeError("offload probe: response head too long")
        if buffer and not b"HTTP/"[:len(buffer)] == buffer[:5]:
            raise OffloadProbeError(f"offload probe: not an HTTP response: {buffer[:20]!r}")
        return None
    lines = buffer[:end].split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise OffloadProbeError(f"offload probe: bad status line {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise OffloadProbeError(f"offload probe: bad Content-Length {value[:20]!r}")
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise OffloadProbeError("offload probe: chunked response")
    if length is None:
        raise OffloadProbeError("offload probe: response without Content-Length")
    if length > MAX_RESPONSE:
        raise OffloadProbeError("offload probe: response body too long")
    start = end + 4
    if len(buffer) < start + length:
        return None
    body = buffer[start:start + length]
    accepted = status[1] == b"200" and body.strip() == OFFLOAD_TOKEN
    return accepted, buffer[start + length:]


def wantsOffload(head: bytes) -> bool:
    """
    Whether a C{POST /connect} request head carries the offload header.
    """
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == OFFLOAD_HEADER.lower() and value.strip() == OFFLOAD_TOKEN:
            return True
    return False
