"""
The guest's TAP device: open it, configure it, and read and write Ethernet frames
on it from the reactor.

A TAP file descriptor is message oriented: each C{read} returns exactly one frame
and each C{write} injects exactly one frame. So frames are never coalesced into a
byte buffer the way L{twisted.internet.abstract.FileDescriptor} does for streams;
L{TapDevice} keeps a small queue of whole frames for the rare C{EAGAIN} and drops
(and counts) past it, as a NIC's ring would.

Configuration uses ioctls on an ordinary C{AF_INET} datagram socket
(C{SIOCSIFHWADDR}, C{SIOCSIFMTU}, C{SIOCSIFFLAGS}), so no C{ip} subprocess is
needed. Everything here is Linux only.
"""

import errno
import fcntl
import os
import socket
import struct
from collections import deque

from zope.interface import implementer

from twisted.internet import error
from twisted.internet.interfaces import IPushProducer, IReadWriteDescriptor
from twisted.logger import Logger
from twisted.python import failure

from gvtwisted.stack.counters import Counters
from gvtwisted.wire.baresegment import isBareSegment

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
# What gvtap-guest asks of the TAP once the host took offload: the kernel may
# then hand us TCP super-segments with partial checksums, and takes them.
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
VNET_HDR_SIZE = 10

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCGIFHWADDR = 0x8927
SIOCSIFHWADDR = 0x8924

IFF_UP = 0x1
ARPHRD_ETHER = 1
IFNAMSIZ = 16

# The longest frame (past a virtio-net header) that a TAP read hands to the link
# before reading on: a request of a request/response exchange (a ping-pong's
# byte, a DNS query, a SYN) is short; a long frame is bulk, whose read goes on
# and leaves in one batch (a 64 KiB super-segment sent ahead on its own cost
# uploads at MTU 65520 a sixth of their rate: the daemon woke for it alone).
SHORT_FRAME = 512
# How many reads after a lone request TapDevice.doRead skips before it makes
# one again, to see whether requests still come alone: a burst of short frames
# after a ping-pong is read a frame per reactor turn at most this many times.
MAX_READS_SKIPPED = 4
# A TAP read that finds this many frames or more means a busy device (a flood
# of small frames, a bulk upload): the next read sends no frame ahead of the
# others, which in a flood would cost the daemon a wake for one frame of every
# batch (a port scan under a DNS flood got fewer of its SYNs through the full
# TAP queue: tests/e2e/test_link_grace.py's fairness test).
BUSY_FRAMES = 8

# The largest frame a 2-byte length header can carry; a read of one more byte
# tells an oversize frame (from an MTU set above 65521 by someone else) apart.
MAX_LINK_FRAME = 0xFFFF
# A super-segment: the virtio-net header, Ethernet, an IPv4 packet of 64 KiB.
MAX_VNET_FRAME = VNET_HDR_SIZE + 14 + 0xFFFF
READ_SIZE = MAX_VNET_FRAME + 1

# struct ifreq is 16 bytes of name and a 24-byte union (40 bytes on 64-bit).
_IFREQ_SIZE = 40


def _ifreq(name: str, payload: bytes = b"") -> bytearray:
    encoded = name.encode("ascii")
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    req = bytearray(_IFREQ_SIZE)
    req[: len(encoded)] = encoded
    req[IFNAMSIZ : IFNAMSIZ + len(payload)] = payload
    return req


def parseMAC(mac: str) -> bytes:
    """
    Turn C{"5a:94:ef:e4:0c:ee"} into its 6 bytes.

    @raise ValueError: if C{mac} is not six hexadecimal octets separated by
        colons or dashes, or is a multicast address (which no interface may have).
    """
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"bad MAC address {mac!r}")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {mac!r}") from None
    if raw[0] & 1:
        raise ValueError(f"MAC address {mac!r} is multicast")
    return raw


def formatMAC(raw: bytes) -> str:
    """
    Turn 6 bytes into C{"5a:94:ef:e4:0c:ee"}.
    """
    return ":".join(f"{b:02x}" for b in raw)


def openTap(name: str, vnetHeader: bool = False):
    """
    Open (creating it if needed) the TAP device C{name} without packet
    information headers, non-blocking and close-on-exec.

    @param vnetHeader: open it with C{IFF_VNET_HDR}: every frame read or
        written then starts with a 10-byte virtio-net header
        (L{gvtwisted.wire.virtio}); no offload is on until L{setOffload}.

    @return: C{(fd, actualName)}; the kernel may pick the name when C{name}
        holds a C{%d}.
    @raise OSError: when C{/dev/net/tun} cannot be opened or the ioctl fails
        (typically C{EPERM} without C{CAP_NET_ADMIN}, C{EBUSY} when another
        process holds the device).
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnetHeader else 0)
        req = _ifreq(name, struct.pack("H", flags))
        fcntl.ioctl(fd, TUNSETIFF, req)
        if vnetHeader:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
            setOffload(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    actual = bytes(req[:IFNAMSIZ]).split(b"\0", 1)[0].decode("ascii")
    return fd, actual


def setOffload(fd: int, offloads: int):
    """
    Tell a TAP opened with C{IFF_VNET_HDR} which offloads its reader does
    (C{TUNSETOFFLOAD}): with L{OFFLOADS} the kernel sends TCP super-segments
    with partial checksums through it; with 0, only complete frames.
    """
    fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)


def _ioctl(request: int, req: bytearray) -> bytearray:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), request, req)
    return req


def setMAC(name: str, mac: bytes):
    """
    Set the hardware address of interface C{name} to the 6 bytes C{mac}.
    """
    _ioctl(SIOCSIFHWADDR, _ifreq(name, struct.pack("H", ARPHRD_ETHER) + mac))


def getMAC(name: str) -> bytes:
    """
    The 6-byte hardware address of interface C{name}.
    """
    req = _ioctl(SIOCGIFHWADDR, _ifreq(name))
    return bytes(req[IFNAMSIZ + 2 : IFNAMSIZ + 8])


def setMTU(name: str, mtu: int):
    """
    Set the MTU of interface C{name}.
    """
    _ioctl(SIOCSIFMTU, _ifreq(name, struct.pack("i", mtu)))


def getMTU(name: str) -> int:
    """
    The MTU of interface C{name}.
    """
    req = _ioctl(SIOCGIFMTU, _ifreq(name))
    return struct.unpack_from("i", req, IFNAMSIZ)[0]


def setUp(name: str, up: bool = True):
    """
    Bring interface C{name} up (or down), leaving its other flags alone.
    """
    req = _ioctl(SIOCGIFFLAGS, _ifreq(name))
    (flags,) = struct.unpack_from("H", req, IFNAMSIZ)
    flags = (flags | IFF_UP) if up else (flags & ~IFF_UP)
    struct.pack_into("H", req, IFNAMSIZ, flags)
    _ioctl(SIOCSIFFLAGS, req)


def configureTap(name: str, mac: bytes = None, mtu: int = None, up: bool = True):
    """
    Set C{mac} and C{mtu} (when given) on interface C{name}, then bring it up.
    """
    if mac is not None:
        setMAC(name, mac)
    if mtu is not None:
        setMTU(name, mtu)
    if up:
        setUp(name, True)


@implementer(IReadWriteDescriptor, IPushProducer)
class TapDevice:
    """
    A TAP file descriptor in the reactor.

    Frames read from the device go to C{self.frameReceived}, set with
    L{setReceiver}; with no receiver they are dropped and counted as
    C{drop.tapNoLink}, so a guest talking while the link is down gets fresh
    traffic through once it is back, not a backlog of stale frames.
    L{writeFrame} writes one frame.

    As an L{IPushProducer} it stops reading the device while paused, so a link
    transport that registers it (through L{TapProducer}) can stop the guest's
    traffic at the TAP, where the guest kernel queues or drops it.

    @ivar counters: L{Counters} of frames and drops (C{tap.rx.frames},
        C{tap.tx.frames}, C{drop.tapQueueFull}, C{drop.tapWriteError}, ...).
    @ivar maxQueue: frames held when the device answers C{EAGAIN}.
    @ivar readsPerCall: the most frames read per C{doRead}, so one busy
        device cannot starve the rest of the reactor.
    """

    log = Logger()
    disconnected = False

    def __init__(
        self,
        fd: int,
        name: str = "tap",
        reactor=None,
        maxQueue: int = 256,
        readsPerCall: int = 64,
        counters: Counters = None,
        readSize: int = READ_SIZE,
        vnetHeader: bool = False,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.fd = fd
        self.name = name
        self.reactor = reactor
        self.maxQueue = maxQueue
        self.readsPerCall = readsPerCall
        self.readSize = readSize
        # Opened with IFF_VNET_HDR: every frame starts with a virtio-net header.
        self.vnetHeader = vnetHeader
        self.maxFrame = MAX_VNET_FRAME if vnetHeader else MAX_LINK_FRAME
        # Where the Ethernet frame starts in what a read returns.
        self._frameOffset = VNET_HDR_SIZE if vnetHeader else 0
        self.offloads = 0
        self.counters = counters if counters is not None else Counters(reactor)
        self.frameReceived = self._noLink
        self.framesReceived = None
        self._queue = deque()
        # Whether the last read made after a request found the device empty,
        # and how many such reads were skipped since (see doRead).
        self._loneRequests = False
        self._readsSkipped = 0
        # Whether the last read found BUSY_FRAMES frames or more.
        self._busy = False
        self._paused = False
        self._started = False
        self._reading = False
        self._writing = False

    def __repr__(self):
        return f"<TapDevice {self.name} fd={self.fd}>"

    # IFileDescriptor / ILoggingContext

    def fileno(self) -> int:
        return self.fd if not self.disconnected else -1

    def logPrefix(self) -> str:
        return f"TapDevice({self.name})"

    def _noLink(self, frame):
        self.counters.values["drop.tapNoLink"] += 1

    def setReceiver(self, receiver, batchReceiver=None):
        """
        Send frames read from now on to C{receiver} (a callable taking
        C{bytes}), or drop them if it is C{None}.

        @param batchReceiver: if given, a callable that takes a sequence of
            frames instead: a link then writes them in one system call, with
            no end-of-turn call to schedule (C{receiver} is still what
            L{frameReceived} is). It gets the first frame of a L{doRead} alone
            if it is short and not a bare TCP segment (see L{doRead}), and
            otherwise the frames of the read together once the device has no
            more.
        """
        self.frameReceived = self._noLink if receiver is None else receiver
        self.framesReceived = None if receiver is None else batchReceiver

    # Lifecycle

    def startReading(self):
        """
        Watch the device for frames (until L{pauseProducing} or L{close}).
        """
        self._started = True
        self._updateReading()

    def stopReading(self):
        """
        Stop watching the device for frames.
        """
        self._started = False
        self._updateReading()

    def _updateReading(self):
        want = self._started and not self._paused and not self.disconnected
        if want and not self._reading:
            self.reactor.addReader(self)
            self._reading = True
        elif not want and self._reading:
            self.reactor.removeReader(self)
            self._reading = False

    def close(self):
        """
        Leave the reactor, drop queued frames and close the descriptor.
        """
        if self.disconnected:
            return
        if self._reading:
            self.reactor.removeReader(self)
            self._reading = False
        if self._writing:
            self.reactor.removeWriter(self)
            self._writing = False
        self.disconnected = True
        self._queue.clear()
        fd, self.fd = self.fd, -1
        os.close(fd)

    def connectionLost(self, reason):
        """
        The reactor gave up on the descriptor (or is shutting down): close it.
        """
        if not self.disconnected and not reason.check(
            error.ConnectionDone, error.ConnectionLost
        ):
            self.log.failure("TAP device {name} failed", reason, name=self.name)
        self.close()

    # IPushProducer

    def pauseProducing(self):
        """
        Stop reading frames from the device until L{resumeProducing}.
        """
        self._paused = True
        self._updateReading()

    def resumeProducing(self):
        """
        Read frames from the device again.
        """
        self._paused = False
        self._updateReading()

    def stopProducing(self):
        """
        A consumer went away; the device stays open for the next one, so this
        is only a pause. L{TapProducer} keeps it from ever being called.
        """
        self.pauseProducing()

    def setOffloads(self, offloads: int):
        """
        Turn the TAP's offloads on (L{OFFLOADS}) or off (0); only for a
        device opened with C{IFF_VNET_HDR}.
        """
        if offloads != self.offloads and not self.disconnected:
            setOffload(self.fd, offloads)
            self.offloads = offloads

    # Reading

    def doRead(self):
        """
        Read up to L{readsPerCall} frames, each one C{os.read}; hand them on one
        by one, or in batches to a batch receiver (L{setReceiver}).

        A batch receiver gets a first frame that may carry a request (short,
        L{SHORT_FRAME}, and not a bare TCP segment) alone and before the next
        read, unless the last read found the device busy (L{BUSY_FRAMES}): on a request/response exchange that read finds the device
        empty, and the response need not wait for it (measured with
        C{bench/rr.sh}: 4 to 8 microseconds of a 185 microsecond round trip).
        While requests come alone (the read after the last one found nothing)
        that read is not even made, up to L{MAX_READS_SKIPPED} times in a row
        before one is made to check: frames behind a request are then read
        when the reactor next finds the device readable, at once (1 to 6
        microseconds more).
        """
        fd = self.fd
        read = os.read
        size = self.readSize
        maxFrame = self.maxFrame
        batch = [] if self.framesReceived is not None else None
        offset = self._frameOffset
        count = 0
        octets = 0
        afterRequest = False
        try:
            for _ in range(self.readsPerCall):
                try:
                    frame = read(fd, size)
                except BlockingIOError:
                    if afterRequest:
                        # The request came alone.
                        self._loneRequests = True
                    break
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno == errno.EIO:
                        # The interface is down (or was deleted under us):
                        # nothing to read, but the descriptor is still ours.
                        break
                    return failure.Failure(e)
                if not frame:
                    break
                if len(frame) > maxFrame:
                    self.counters.complain(
                        "tapOversize", f"{len(frame)}-byte frame on {self.name}"
                    )
                    continue
                count += 1
                octets += len(frame)
                if batch is not None:
                    if (count == 1 and not self._busy and len(frame) <= offset + SHORT_FRAME
                            and not isBareSegment(frame, offset)):
                        self.framesReceived((frame,))
                        if self._loneRequests and self._readsSkipped < MAX_READS_SKIPPED:
                            # The device is most likely empty: skip the read
                            # that would say so (a system call and an
                            # exception); frames behind the request, if
                            # any, the reactor reports at once.
                            self._readsSkipped += 1
                            break
                        self._readsSkipped = 0
                        afterRequest = True
                        if self._paused or self.disconnected:
                            break
                        continue
                    if afterRequest:
                        # A frame behind the request: not a lone exchange.
                        afterRequest = False
                        self._loneRequests = False
                    batch.append(frame)
                    continue
                self.frameReceived(frame)
                if self._paused or self.disconnected:
                    break
        finally:
            self._busy = count >= BUSY_FRAMES
            if count:
                values = self.counters.values
                values["tap.rx.frames"] += count
                values["tap.rx.bytes"] += octets
            if batch:
                if self.framesReceived is not None:
                    self.framesReceived(batch)
                else:
                    # The link went away while this read was handed on.
                    for frame in batch:
                        self._noLink(frame)
        return None

    # Writing

    def writeFrame(self, frame: bytes):
        """
        Write one frame into the device, or queue it if the device is busy.

        A frame the kernel refuses (shorter than an Ethernet header, longer than
        the MTU allows) is counted and dropped; past L{maxQueue} waiting frames
        new ones are dropped and counted too.
        """
        if self.disconnected:
            self.counters.increment("drop.tapClosed")
            return
        if self._queue:
            self._enqueue(frame)
            return
        try:
            os.write(self.fd, frame)
        except BlockingIOError:
            self._enqueue(frame)
            return
        except OSError as e:
            self.counters.complain("tapWriteError", f"{self.name}: {e}")
            return
        values = self.counters.values
        values["tap.tx.frames"] += 1
        values["tap.tx.bytes"] += len(frame)

    def writeFrames(self, frames, prefix=None):
        """
        Write the frames C{frames} in order, as L{writeFrame} writes each: one
        call for all the frames of a link read.

        The frames may be views of a buffer their caller reuses: a frame that
        has to wait is copied.

        @param prefix: bytes written before each frame, in the same system
            call (a plain virtio-net header, for a device opened with
            C{IFF_VNET_HDR} whose link carries plain frames).
        """
        if prefix is not None:
            frames = [(prefix, frame) for frame in frames]
            write = os.writev
        else:
            write = os.write
        if self.disconnected or self._queue:
            for frame in frames:
                self.writeFrame(_joined(frame))
            return
        fd = self.fd
        written = 0
        octets = 0
        try:
            for index, frame in enumerate(frames):
                try:
                    write(fd, frame)
                except BlockingIOError:
                    for rest in frames[index:]:
                        self._enqueue(_joined(rest))
                    return
                except OSError as e:
                    self.counters.complain("tapWriteError", f"{self.name}: {e}")
                    continue
                written += 1
                octets += len(frame) if prefix is None else len(prefix) + len(frame[1])
        finally:
            if written:
                values = self.counters.values
                values["tap.tx.frames"] += written
                values["tap.tx.bytes"] += octets

    def _enqueue(self, frame):
        if len(self._queue) >= self.maxQueue:
            self.counters.complain("tapQueueFull", f"{self.name} is not draining")
            return
        # Copied: a view of a reused read buffer would change under the queue.
        self._queue.append(frame if type(frame) is bytes else bytes(frame))
        if not self._writing:
            self.reactor.addWriter(self)
            self._writing = True

    def queued(self) -> int:
        """
        How many frames wait for the device.
        """
        return len(self._queue)

    def doWrite(self):
        """
        Write queued frames until the device is busy again or the queue is empty.
        """
        queue = self._queue
        values = self.counters.values
        while queue:
            frame = queue[0]
            try:
                os.write(self.fd, frame)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as e:
                self.counters.complain("tapWriteError", f"{self.name}: {e}")
            else:
                values["tap.tx.frames"] += 1
                values["tap.tx.bytes"] += len(frame)
            queue.popleft()
        if self._writing:
            self.reactor.removeWriter(self)
            self._writing = False
        return None


def _joined(frame):
    """
    A frame given to L{TapDevice.writeFrames} as C{(prefix, frame)}, as one
    bytes-like object.
    """
    return b"".join(frame) if type(frame) is tuple else frame


@implementer(IPushProducer)
class TapProducer:
    """
    The face of a L{TapDevice} that one link connection registers with its
    transport.

    A transport calls C{stopProducing} on its producer when the connection is
    lost; the TAP outlives connections, so here that only detaches this link
    and resumes the device for whoever comes next. Pauses and resumes from a
    detached link are ignored, so a dying connection cannot wedge the device.
    """

    def __init__(self, device: TapDevice):
        self.device = device
        self.paused = False
        self.attached = True

    def pauseProducing(self):
        if self.attached:
            self.paused = True
            self.device.pauseProducing()

    def resumeProducing(self):
        if self.attached:
            self.paused = False
            self.device.resumeProducing()

    def stopProducing(self):
        self.detach()

    def detach(self):
        """
        Forget the link; undo any pause it made.
        """
        if self.attached:
            self.attached = False
            if self.paused:
                self.paused = False
                self.device.resumeProducing()
