"""
Write to a stream socket's transport at once rather than on the next reactor turn.

Twisted's L{FileDescriptor.write} only appends to a buffer and asks the reactor
to watch the socket for writability; the bytes leave in C{doWrite}, one reactor
iteration later, after an C{epoll_ctl} to start watching, an C{epoll_wait} that
reports the socket writable and an C{epoll_ctl} to stop. On a request/response
path (a 1-byte ping-pong through the guest link and the NAT) that is one extra
iteration and three system calls per hop, in each process on the way.

L{writeNow} and L{writeSequenceNow} send straight to the socket when nothing is
buffered ahead (so the order of bytes is kept) and hand only what the kernel did
not take to the transport's ordinary buffer, which then drains as before, with
the same flow control (a producer is paused when I{that} buffer grows). Any other
transport (TLS, a virtual TCP connection, a test's StringTransport) gets its
ordinary C{write}.
"""

import errno

from twisted.internet import tcp

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR)


def _idle(transport) -> bool:
    """
    Whether C{transport} is a plain connected socket transport with nothing
    buffered, so that bytes sent now cannot overtake bytes written before.
    """
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def writeNow(transport, data) -> None:
    """
    Write C{data} (bytes) to C{transport}, sending at once what the socket takes.
    """
    if not data or not _idle(transport):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError as e:
        if e.errno not in _RETRY:
            # Let the transport find the error in its own doWrite and close.
            transport.write(data)
            return
        sent = 0
    if sent < len(data):
        transport.write(bytes(memoryview(data)[sent:]))


def writeSequenceNow(transport, parts) -> None:
    """
    Write the pieces C{parts} (bytes-like) to C{transport} in one C{sendmsg}
    (no joined copy), buffering what the socket did not take.
    """
    if not _idle(transport):
        transport.writeSequence(parts)
        return
    try:
        sent = transport.socket.sendmsg(parts)
    except OSError as e:
        if e.errno not in _RETRY:
            transport.writeSequence(parts)
            return
        sent = 0
    if sent == 0:
        transport.writeSequence(parts)
        return
    rest = []
    for part in parts:
        size = len(part)
        if sent >= size:
            sent -= size
            continue
        rest.append(bytes(memoryview(part)[sent:]) if sent else part)
        sent = 0
    if rest:
        transport.writeSequence(rest)
