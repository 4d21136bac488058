"""
gvforwarder's C{stdio:CMD?k=v} link: the guest helper runs C{CMD -k=v} and
carries the frames (2-byte little-endian lengths) on the child's standard
input and output, with no C{POST /connect} (as gvisor-tap-vsock's
C{pkg/transport} does). The child's standard error is logged.
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet.endpoints import ProcessEndpoint, StandardErrorBehavior


def parseStdioURL(url: str):
    """
    C{stdio:/usr/bin/cmd?a=1&b=2} to C{("/usr/bin/cmd", ["-a=1", "-b=2"])}.

    @raise ValueError: when there is no command.
    """
    parts = urlsplit(url)
    if parts.scheme != "stdio":
        raise ValueError(f"{url!r} is not a stdio: URL")
    command = unquote(parts.path or parts.netloc)
    if parts.netloc and parts.path:
        command = unquote(parts.netloc + parts.path)
    if not command:
        raise ValueError(f"no command in {url!r}")
    args = [f"-{k}={v}" for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return command, args


def stdioEndpoint(reactor, parsed):
    """
    A client endpoint that starts the command of L{parseStdioURL}'s result.
    """
    command, args = parsed
    return ProcessEndpoint(reactor, command, [command] + list(args), env=dict(os.environ),
                           errFlag=StandardErrorBehavior.LOG)
