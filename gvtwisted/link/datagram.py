"""
Guest links where the socket keeps message boundaries: one message is one
Ethernet frame, no length header. This module has the shared machinery and the
C{--listen-vfkit} link (a unix C{SOCK_DGRAM} socket, as vfkit and macOS's
Virtualization framework use it); L{gvtwisted.link.seqpacket} builds the
C{--listen-bess} link (unix C{SOCK_SEQPACKET}) on the same base.

Twisted has no transport for these sockets, so each is a small
L{FileDescriptor} of its own that:

  - reads whole messages in a bounded loop per C{doRead} (so one busy guest
    cannot starve the reactor);
  - sends each frame with one system call; when the kernel says C{EAGAIN} or
    C{ENOBUFS} (a unix datagram peer's queue is full), the frame goes to a
    small bounded queue that is retried when the socket is writable (or, when
    the kernel reports writable but still refuses, after a short timer), and
    the link is never closed for it; beyond the queue frames are dropped and
    counted (C{drop.link.queueFull});
  - is its own transport for L{gvtwisted.link.port.SwitchPort}: it accepts
    C{registerProducer(port, True)}, pauses that producer while the queue is
    non-empty and resumes it when the queue drains (so TCP toward the guest
    backs off, as on a stream link whose buffer fills).

vfkit specifics: the host binds the socket (mode 0600) and learns the guest's
address from the first datagram; a first datagram of exactly C{b"VFKT"} is a
greeting and is consumed. Replies go with C{sendto} to the learned peer. A
later C{VFKT} from another address (a restarted VM) moves the link there;
frames from any other address are dropped and counted. When the peer's socket
is gone (C{ECONNREFUSED}/C{ENOENT} on send) the link goes down until the next
datagram.
"""

import errno
import os
import socket
import stat
from collections import deque

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

# The largest frame a message link takes: a 65535-byte IP packet and its
# Ethernet header (MTU 65520 is the network's maximum, so this has room).
MAX_PACKET_FRAME = 65535 + 14
MIN_FRAME = 14
RECV_SIZE = MAX_PACKET_FRAME + 1
READS_PER_CALL = 64
QUEUE_FRAMES = 256
QUEUE_BYTES = 512 * 1024
RETRY_DELAY = 0.005
RETRY_DELAY_MAX = 0.1
VFKIT_MAGIC = b"VFKT"
VFKIT_SNDBUF = 1 << 20
VFKIT_RCVBUF = 4 << 20

RETRY_ERRNOS = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR))
READ_AGAIN_ERRNOS = frozenset((errno.EAGAIN, errno.EWOULDBLOCK))


def bindUnix(path, sockType, mode=0o600):
    """
    A non-blocking unix socket of C{sockType} bound to C{path} with C{mode}.

    A leftover socket file nobody serves is removed first; one that a live
    process still serves is an error (L{OSError} C{EADDRINUSE}).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        if _socketAlive(path, sockType):
            raise OSError(errno.EADDRINUSE, f"{path} is in use")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, sockType)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.setblocking(False)
    return sock


def _socketAlive(path, sockType):
    probe = socket.socket(socket.AF_UNIX, sockType)
    try:
        probe.connect(path)
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


class PacketLink(FileDescriptor):
    """
    A socket whose messages are whole frames, with a bounded send queue.

    Subclasses define C{_sendOne(frame)} (one system call), C{_sendFailed(error)}
    (a send error other than a retryable one) and C{doRead}. Incoming frames
    go to C{self.frameReceived}, which L{SwitchPort.attach} sets.

    @ivar counters: the network's L{gvtwisted.stack.counters.Counters}.
    @ivar transport: this object itself, so that it can be handed to
        L{SwitchPort.attach} as both the protocol and its transport.
    """

    log = Logger()
    maxQueueFrames = QUEUE_FRAMES
    maxQueueBytes = QUEUE_BYTES

    def __init__(self, sock, counters, reactor=None):
        FileDescriptor.__init__(self, reactor)
        self.socket = sock
        self.fileno = sock.fileno
        self.counters = counters
        self.transport = self
        self._queue = deque()
        self._queuedBytes = 0
        self._pausedProducer = False
        self._retryCall = None
        self._retryDelay = RETRY_DELAY
        self._buffer = bytearray(RECV_SIZE)
        self._view = memoryview(self._buffer)

    # The protocol side, for SwitchPort.

    def frameReceived(self, frame):
        """
        Replaced by L{SwitchPort.attach}.
        """

    def queued(self):
        """
        How many frames wait for the kernel to take them.
        """
        return len(self._queue)

    def sendFrame(self, frame):
        """
        Send one frame as one message, or queue it if the kernel cannot take
        it now, or drop and count it if the queue is full.
        """
        if self.disconnected or self.disconnecting:
            return
        if self._queue:
            self._enqueue(frame)
            return
        try:
            self._sendOne(frame)
        except OSError as e:
            if e.errno in RETRY_ERRNOS:
                self.counters.increment("link.sendBlocked")
                self._enqueue(frame)
                if self._queue:
                    self.startWriting()
            else:
                self._sendFailed(e)

    def _enqueue(self, frame):
        if (len(self._queue) >= self.maxQueueFrames
                or self._queuedBytes + len(frame) > self.maxQueueBytes):
            self.counters.increment("drop.link.queueFull")
            return
        self._queue.append(frame)
        self._queuedBytes += len(frame)
        if not self._pausedProducer and self.producer is not None:
            self._pausedProducer = True
            self.producer.pauseProducing()

    def doWrite(self):
        sent = 0
        queue = self._queue
        while queue:
            frame = queue[0]
            try:
                self._sendOne(frame)
            except OSError as e:
                if e.errno in RETRY_ERRNOS:
                    if sent == 0:
                        # Writable by poll, yet refused (an unconnected unix
                        # datagram socket polls writable whatever the peer's
                        # queue holds): try again after a short while.
                        self.stopWriting()
                        self._retryLater()
                    return None
                queue.popleft()
                self._queuedBytes -= len(frame)
                result = self._sendFailed(e)
                if result is not None or self.disconnected or self.disconnecting:
                    return result
                continue
            queue.popleft()
            self._queuedBytes -= len(frame)
            sent += 1
        self._retryDelay = RETRY_DELAY
        self.stopWriting()
        self._drained()
        return None

    def _retryLater(self):
        if self._retryCall is None:
            self._retryCall = self.reactor.callLater(self._retryDelay, self._retry)
            self._retryDelay = min(self._retryDelay * 2, RETRY_DELAY_MAX)

    def _retry(self):
        self._retryCall = None
        if not self.disconnected and self._queue:
            self.startWriting()

    def _drained(self):
        if self._pausedProducer:
            self._pausedProducer = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def _clearQueue(self):
        self._queue.clear()
        self._queuedBytes = 0
        if self._retryCall is not None:
            self._retryCall.cancel()
            self._retryCall = None
        self._retryDelay = RETRY_DELAY

    # The transport side.

    def registerProducer(self, producer, streaming):
        FileDescriptor.registerProducer(self, producer, streaming)
        if self.producer is producer and self._queue:
            self._pausedProducer = True
            producer.pauseProducing()

    def unregisterProducer(self):
        self.producer = None
        self._pausedProducer = False

    def getPeer(self):
        return getattr(self, "peerName", "?")

    def loseConnection(self, _connDone=Failure(ConnectionDone())):
        """
        Close now: frames still queued are dropped (a message link has no
        half-written frame to finish).
        """
        self.abortConnection()

    def abortConnection(self):
        if self.disconnected:
            return
        self.stopReading()
        self.stopWriting()
        self.connectionLost(Failure(ConnectionDone()))

    def connectionLost(self, reason):
        self._clearQueue()
        FileDescriptor.connectionLost(self, reason)
        self.fileno = lambda: -1
        self.socket.close()

    def logPrefix(self):
        return self.__class__.__name__


class VfkitLink(PacketLink):
    """
    The C{--listen-vfkit} socket and its one guest link.

    @param path: the socket path to bind (mode 0600).
    @param makePort: called with a peer name, returns an unattached
        L{SwitchPort} (e.g. L{gvtwisted.link.listeners.LinkFactory.makePort}).
    @ivar peer: the learned peer address, or L{None}.
    @ivar port: the L{SwitchPort} while a peer is known.
    """

    def __init__(self, path, makePort, counters, reactor=None,
                 sndbuf=VFKIT_SNDBUF, rcvbuf=VFKIT_RCVBUF):
        sock = bindUnix(path, socket.SOCK_DGRAM)
        for option, size in ((socket.SO_SNDBUF, sndbuf), (socket.SO_RCVBUF, rcvbuf)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass
        PacketLink.__init__(self, sock, counters, reactor)
        self.path = path
        self.peerName = f"vfkit:{path}"
        self._makePort = makePort
        self.peer = None
        self.port = None

    def startListening(self):
        self.startReading()

    def stopListening(self):
        """
        Close the socket, take the link down and remove the socket file.
        """
        self._linkDown()
        self.abortConnection()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def doRead(self):
        recvfrom_into = self.socket.recvfrom_into
        buf = self._buffer
        for _ in range(READS_PER_CALL):
            try:
                n, addr = recvfrom_into(buf)
            except OSError as e:
                if e.errno in READ_AGAIN_ERRNOS:
                    return None
                if e.errno == errno.EINTR:
                    continue
                self.counters.complain("link.vfkit.recvError", os.strerror(e.errno))
                return None
            self._datagram(n, addr)
            if self.disconnected:
                return None
        return None

    def _datagram(self, n, addr):
        view = self._view
        if addr != self.peer or self.peer is None:
            if not addr:
                self.counters.complain("link.vfkit.unboundPeer", self.path)
                return
            greeting = n == len(VFKIT_MAGIC) and view[:n] == VFKIT_MAGIC
            if self.peer is not None and not greeting:
                self.counters.complain("link.vfkit.foreignPeer", repr(addr))
                return
            self._learn(addr)
            if greeting:
                self.counters.increment("link.vfkit.greetings")
                return
        elif n == len(VFKIT_MAGIC) and view[:n] == VFKIT_MAGIC:
            # The same peer greeting again: still not a frame.
            self.counters.increment("link.vfkit.greetings")
            return
        if n < MIN_FRAME:
            self.counters.complain("link.runtFrame", f"{n} bytes from {addr!r}")
            return
        if n > MAX_PACKET_FRAME:
            self.counters.complain("link.oversizeFrame", f"from {addr!r}")
            return
        self.frameReceived(bytes(view[:n]))

    def _learn(self, addr):
        if self.port is not None:
            self._linkDown()
        self.peer = addr
        name = addr.decode("utf-8", "replace") if isinstance(addr, bytes) else addr
        self.log.info("vfkit link on {path}: peer {peer}", path=self.path, peer=name)
        self.port = self._makePort(f"vfkit:{name}")
        self.port.attach(self)

    def _linkDown(self):
        port = self.port
        self.port = None
        self.peer = None
        self._clearQueue()
        self.__dict__.pop("frameReceived", None)
        self.producer = None
        self._pausedProducer = False
        if port is not None:
            port.detach()

    def _sendOne(self, frame):
        if self.peer is None:
            self.counters.increment("drop.link.vfkit.noPeer")
            return
        self.socket.sendto(frame, self.peer)

    def _sendFailed(self, error):
        if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
            self.log.info("vfkit peer {peer} is gone: {error}", peer=self.peer,
                          error=os.strerror(error.errno))
            self.reactor.callLater(0, self._peerGone, self.peer)
        else:
            self.counters.complain("link.sendError", os.strerror(error.errno))
        return None

    def _peerGone(self, peer):
        if self.peer == peer and peer is not None:
            self._linkDown()

    def connectionLost(self, reason):
        port = self.port
        self.port = None
        self.producer = None
        PacketLink.connectionLost(self, reason)
        if port is not None:
            port.detach()
