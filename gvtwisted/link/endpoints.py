"""
Endpoint descriptions as users write them.

gvproxy takes URLs (C{unix:///tmp/network.sock}, C{tcp://127.0.0.1:1024},
C{vsock://:1024}); Twisted takes endpoint strings (C{unix:/tmp/network.sock},
C{tcp:1024:interface=127.0.0.1}, C{vsock:1024}). Both are accepted, so that
command lines written for gvproxy keep working.

Unix sockets are created with mode 0600 unless the string says otherwise: the
socket carries a whole network and its control API, and only its owner should
be able to connect.
"""

from urllib.parse import urlsplit


def serverEndpointString(text: str) -> str:
    """
    Turn a gvproxy-style URL or a Twisted server endpoint string into a Twisted
    server endpoint string.

    @raise ValueError: for a URL scheme we do not know.
    """
    if "://" in text:
        url = urlsplit(text)
        if url.scheme == "unix":
            text = "unix:" + _escape(url.netloc + url.path)
        elif url.scheme == "tcp":
            if url.port is None:
                raise ValueError(f"{text!r}: a tcp URL needs a port")
            host = url.hostname or ""
            text = f"tcp:{url.port}" + (f":interface={_escape(host)}" if host else "")
        elif url.scheme == "vsock":
            if url.port is None:
                raise ValueError(f"{text!r}: a vsock URL needs a port")
            text = f"vsock:{url.port}"
        else:
            raise ValueError(f"{text!r}: unknown scheme {url.scheme!r} (unix, tcp, vsock)")
    if text.startswith("unix:") and ":mode=" not in text:
        text += ":mode=600"
    if text.startswith("unix:") and ":lockfile=" not in text:
        # No C{PATH.lock}: start-up finds a stale socket itself by asking it
        # (gvtwisted.startup), and a lock file is one more thing a crash
        # leaves behind.
        text += ":lockfile=0"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def unixPath(endpoint: str):
    """
    The socket path of a C{unix:} endpoint string, or L{None}.
    """
    if not endpoint.startswith("unix:"):
        return None
    body = endpoint[len("unix:"):]
    out, escaped = [], False
    for ch in body:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            break
        else:
            out.append(ch)
    path = "".join(out)
    return path[len("address="):] if path.startswith("address=") else path
