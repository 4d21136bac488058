"""
TCP NAT: the guest's connections to any address become ordinary host sockets.

The real destination is dialled first, while the guest's SYN waits (its
retransmissions are absorbed by the pending connection, so they never start a
second dial). On success the handshake with the guest completes and the two
connections are spliced; on refusal the guest gets RST; when the destination is
unreachable or the dial times out (30 s), the guest gets ICMP unreachable.

The host address (.254 by default) is the host's 127.0.0.1 unless host loopback
is turned off; 169.254.0.0/16 (cloud metadata) is refused unless allowed.

Dials in flight have their own cap, apart from the connection cap, and every
dial has its own timeout: a destination that drops SYNs delays nobody else
(gvproxy's limit of 10 dials blocked all TCP: gvisor-tap-vsock #676).
"""

import errno
import socket
from functools import partial

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger

from gvtwisted.services.hostdial import dialTCP
from gvtwisted.services.nat_policy import BROADCAST, MULTICAST, Refused, hostDestination
from gvtwisted.services.splice import SpliceSide, splice
from gvtwisted.wire import icmp, ipv4


class _HostDial(ClientFactory):
    """
    The factory of one dial to the host, given to the dial directly
    (L{gvtwisted.services.hostdial.dialTCP}, or C{connectTCP} on a test's
    reactor): an endpoint would wrap the protocol (one more Python call on
    every read of the host socket) and add a Deferred to each connection.

    C{connected()} is called once the host side's C{connectionMade} has run,
    C{failed(reason)} if the dial fails, times out or is stopped.
    """

    noisy = False

    def __init__(self, side, connected, failed):
        self.side = side
        side.onConnected = connected
        self._failed = failed

    def buildProtocol(self, addr):
        return self.side

    def clientConnectionFailed(self, connector, reason):
        self._failed(reason)


class TCPNAT:
    """
    @ivar dialing: how many dials are in flight (each guest link also
        counts its own, against C{maxDialsPerLink}).
    """

    log = Logger()

    def __init__(self, reactor, network, counters, hostLoopback=True,
                 ec2MetadataAccess=False, dialTimeout=30.0, maxDials=512, maxDialsPerLink=64):
        self.reactor = reactor
        self.network = network
        self.counters = counters
        # A real reactor dials with hostdial (fewer system calls per
        # connection); any other (a test's memory reactor) with connectTCP.
        if isinstance(reactor, PosixReactorBase):
            self._dial = partial(dialTCP, reactor)
        else:
            self._dial = lambda *args, **kwargs: self.reactor.connectTCP(*args, **kwargs)
        self.hostLoopback = hostLoopback
        self.ec2MetadataAccess = ec2MetadataAccess
        self.dialTimeout = dialTimeout
        self.maxDials = maxDials
        self.maxDialsPerLink = maxDialsPerLink
        # A gvtwisted.limits.DescriptorBudget, or None for no reserve.
        self.descriptors = None
        self.dialing = 0

    def admits(self, link) -> bool:
        """
        Whether a SYN from behind C{link} may be dialled now: checked before
        the connection is even made, so that a guest's flood of SYNs past the
        caps costs little. Past a cap the SYN is dropped (counted), not reset.
        """
        if self.dialing >= self.maxDials or (
                link is not None and link.dialing >= self.maxDialsPerLink):
            self.counters.complain("nat.tcp.tooManyDials")
            return False
        return True

    def tcpSyn(self, conn):
        """
        A guest opens C{conn} to an address that is not the gateway's.
        """
        localIP, localPort = conn.localAddr
        target = self._destination(localIP)
        if isinstance(target, Refused):
            self.counters.increment("drop." + self.prefix + "." + target.reason)
            if self._silent(target):
                # Broadcast or multicast: no answer may come from such an
                # address (RFC 1122 3.2.1.3); close the pending SYN silently.
                conn.abortConnection()
            else:
                conn.refuse()
            return
        descriptors = self.descriptors
        if descriptors is not None and descriptors.room() <= 0:
            # The last descriptors are the API's and new links': refuse as a
            # dial that ran out of them would, with RST at once.
            self.counters.complain("nat.tcp.noDescriptors", localIP)
            conn.refuse()
            return
        link = conn.link
        if self.dialing >= self.maxDials or (
                link is not None and link.dialing >= self.maxDialsPerLink):
            # Dropped, not reset: the guest retransmits its SYN, and by then
            # a slot may have freed up (a RST would fail a connect the host
            # would have accepted).
            self.counters.complain("nat.tcp.tooManyDials")
            conn.abortConnection()
            return
        self.dialing += 1
        if link is not None:
            link.dialing += 1
        if descriptors is not None:
            descriptors.took()
        self.counters.increment("nat.tcp.dials")
        guestSide = SpliceSide(self.counters, "nat.tcp.bytesFromGuest")
        hostSide = SpliceSide(self.counters, "nat.tcp.bytesToGuest")
        splice(guestSide, hostSide)
        abandoned = []
        done = []

        def guestGone(reason):
            # The guest reset or stopped answering before the handshake
            # completed: the host connection, made or still dialling, goes too.
            abandoned.append(True)
            self.counters.increment("nat.tcp.abandonedByGuest")
            if hostSide.transport is not None:
                hostSide.transport.abortConnection()
            elif not done:
                connector.stopConnecting()
                dialDone()

        conn.onConnectFailed = guestGone

        def dialDone():
            # Once: a stopped dial may or may not report its failure after.
            if done:
                return
            done.append(True)
            self.dialing -= 1
            if link is not None:
                link.dialing -= 1

        def connected():
            dialDone()
            if abandoned:
                hostSide.transport.abortConnection()
                return
            self.counters.increment("nat.tcp.connected")
            conn.setProtocol(guestSide)
            conn.acceptSyn()

        def failed(reason):
            dialDone()
            if abandoned:
                return
            if reason.check(ConnectionRefusedError):
                self.counters.increment("nat.tcp.refused")
                conn.refuse()
                return
            err = getattr(reason.value, "osError", None)
            if err in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors here, not a fault of the destination:
                # RST at once, and the next SYN is dialled afresh.
                self.counters.complain("nat.tcp.noDescriptors", localIP)
                conn.refuse()
                return
            self.counters.increment("nat.tcp.unreachable")
            self._unreachable(conn, self._unreachableCode(getattr(reason.value, "osError", None)))

        connector = self._dial(target, localPort, _HostDial(hostSide, connected, failed),
                               timeout=self.dialTimeout)

    # -- what the address family decides (NAT66 overrides them) -------------

    prefix = "nat.tcp"

    def _destination(self, localIP):
        """
        Where the guest's destination C{localIP} (text) goes on the host: the
        address to dial, or a L{Refused}.
        """
        return hostDestination(self.network.config, socket.inet_aton(localIP),
                               self.hostLoopback, self.ec2MetadataAccess)

    def _silent(self, refused):
        """
        Whether a refused SYN gets no answer at all (RFC 1122 3.2.1.3: none
        may come from a broadcast or multicast address).
        """
        return refused is BROADCAST or refused is MULTICAST

    def _unreachableCode(self, err):
        return icmp.NET_UNREACHABLE if err == errno.ENETUNREACH else icmp.HOST_UNREACHABLE

    def _unreachable(self, conn, code):
        """
        Tell the guest its SYN cannot be delivered, and drop the connection
        without a RST (an ICMP error is what a router would send).
        """
        localIP, localPort = conn.localAddr
        remoteIP, remotePort = conn.remoteAddr
        src, dst = socket.inet_aton(remoteIP), socket.inet_aton(localIP)
        quoted = ipv4.buildHeader(src, dst, ipv4.PROTO_TCP, 20)
        firstEight = remotePort.to_bytes(2, "big") + localPort.to_bytes(2, "big") + \
            (conn.irs or 0).to_bytes(4, "big")
        body = icmp.build(icmp.DEST_UNREACHABLE, code, b"\x00\x00\x00\x00" + quoted + firstEight)
        self.network.sendIPv4(dst, src, ipv4.PROTO_ICMP, body)
        # A connection still waiting to answer the SYN closes without a RST.
        conn.abortConnection()
