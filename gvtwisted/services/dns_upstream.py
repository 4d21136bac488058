"""
Asking the host's resolvers, and remembering their answers.

L{Forwarder} sends a query over UDP from a fresh port with a random id, moves to
the next upstream on timeout (two rounds by default) or at once when the
upstream answers ICMP port unreachable, and asks again over TCP
when the UDP answer comes back truncated. It relays what the upstream said,
whatever the rcode: see L{dns_wire} for why it keeps the answer's bytes.

L{WatchedFile} re-reads C{/etc/resolv.conf} (or a hosts file) when it changes,
looking at most once every few seconds, so a laptop that changes networks gets
its new resolvers without a restart.

L{DNSCache} is bounded by entries and by bytes, evicts the least recently used,
and counts time with the injected reactor, so tests drive it with a Clock.
"""

import ipaddress
import os
import random
from collections import OrderedDict

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.basic import Int16StringReceiver

from gvtwisted.services import dns_wire as wire

_random = random.SystemRandom()


def parseResolvConf(text: str) -> list:
    """
    The nameservers of a resolv.conf, as (address, 53) pairs, in file order.

    Like glibc, a file without any nameserver means the local one, 127.0.0.1.
    """
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1]
            try:
                ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                continue
            if (address, 53) not in servers:
                servers.append((address, 53))
    return servers or [("127.0.0.1", 53)]


class WatchedFile:
    """
    A file parsed on first use and again whenever it changes.

    A change is a new modification time, size or inode; they are looked at no
    more than once every C{interval} seconds, so a busy server does not stat the
    file for every query. A file that cannot be read parses as empty text.
    """

    def __init__(self, path, parse, clock, interval: float = 2.0):
        self.path = path
        self._parse = parse
        self._clock = clock
        self._interval = interval
        self._checked = None
        self._signature = object()
        self._value = None

    def __call__(self):
        now = self._clock.seconds()
        if self._checked is None or now - self._checked >= self._interval:
            self._checked = now
            try:
                st = os.stat(self.path)
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                signature = None
            if signature != self._signature:
                self._signature = signature
                text = ""
                if signature is not None:
                    try:
                        with open(self.path, encoding="utf-8", errors="replace") as f:
                            text = f.read(1 << 20)
                    except OSError:
                        pass
                self._value = self._parse(text)
        return self._value


class DNSCache:
    """
    Upstream answers by question, each kept as long as its TTL allows.

    @ivar maxEntries: the most answers kept.
    @ivar maxBytes: the most bytes of answers kept.
    """

    def __init__(self, clock, maxEntries: int = 10000, maxBytes: int = 8 << 20):
        self._clock = clock
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self._entries = OrderedDict()
        self._bytes = 0

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        """
        The cached answer for C{key} and its age in whole seconds, or L{None}.
        An expired entry is dropped on the way.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        message, storedAt, expiresAt = entry
        now = self._clock.seconds()
        if now >= expiresAt:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return message, int(now - storedAt)

    def put(self, key, message, ttl: int):
        """
        Keep C{message} for C{ttl} seconds (nothing is kept for 0), evicting the
        least recently used answers while over either bound.
        """
        if ttl <= 0 or self.maxEntries <= 0:
            return
        size = len(message.data)
        if size > self.maxBytes:
            return
        if key in self._entries:
            self._remove(key)
        now = self._clock.seconds()
        self._entries[key] = (message, now, now + ttl)
        self._bytes += size
        while len(self._entries) > self.maxEntries or self._bytes > self.maxBytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def _remove(self, key):
        message = self._entries.pop(key)[0]
        self._bytes -= len(message.data)

    def clear(self):
        self._entries.clear()
        self._bytes = 0


class UpstreamTimeout(Exception):
    """
    No upstream answered in time.
    """


class _UpstreamUDP(protocol.DatagramProtocol):
    """
    The UDP socket of one exchange: hands every datagram to the exchange.
    """

    def __init__(self, exchange, upstream):
        self.exchange = exchange
        self.upstream = upstream

    def datagramReceived(self, data, addr):
        self.exchange.udpReceived(data, addr)

    def connectionRefused(self):
        # The socket is connected to its upstream, so the kernel reports the
        # upstream's ICMP port unreachable as ECONNREFUSED.
        self.exchange.udpRefused(self.upstream)

    def stopProtocol(self):
        # With epoll, Twisted sees that pending ECONNREFUSED as an error
        # event and closes the port instead of calling connectionRefused:
        # a port that stops before its exchange is done was refused.
        self.exchange.udpRefused(self.upstream)


class _UpstreamTCP(Int16StringReceiver):
    """
    A TCP connection to an upstream that carries one query and its answer.
    """

    def __init__(self, exchange, query):
        self.exchange = exchange
        self.query = query

    def connectionMade(self):
        self.sendString(self.query)

    def stringReceived(self, data):
        self.exchange.tcpReceived(data, self)

    def connectionLost(self, reason):
        self.exchange.tcpLost(self)


class _TCPClientFactory(protocol.ClientFactory):
    def __init__(self, exchange, query):
        self.exchange = exchange
        self.query = query

    def buildProtocol(self, addr):
        return _UpstreamTCP(self.exchange, self.query)

    def clientConnectionFailed(self, connector, reason):
        self.exchange.tcpLost(None)


def _canonicalAddress(host: str) -> str:
    """
    An address in the form the reactor reports for datagram sources, for
    comparing an answer's source with the server we asked.
    """
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return host


class _Exchange:
    """
    One question asked of the upstreams until one answers or all time out.

    The same id is used for every try, and each upstream's socket stays open
    until the end, so a late answer from an upstream that was already given
    up on is still welcome.
    """

    def __init__(self, forwarder, query, upstreams):
        self.forwarder = forwarder
        self.reactor = forwarder.reactor
        self.clientQuery = query
        self.question = query.question
        self.id = _random.randrange(65536)
        self.withOPT = True
        self.deferred = defer.Deferred()
        self.upstreams = upstreams
        self.tries = [u for _ in range(forwarder.rounds) for u in upstreams]
        self.asked = set()
        self.ports = {}
        self.timer = None
        self.fallback = None
        self.tcp = None
        self.tcpConnector = None
        self.tcpUpstream = None
        self.truncatedAnswer = None
        self.done = False
        self.failoverFrom = set()
        self.current = None
        self.refused = set()

    def start(self):
        self._next()
        return self.deferred

    # UDP

    def _port(self, host, number):
        """
        The UDP socket for the upstream C{host}:C{number}: one per upstream,
        connected to it, so that its port unreachable fails it over at once
        (an unconnected socket never hears of it, and would wait for the
        timeout). Each stays open until the exchange ends, for late answers.
        """
        key = (host, number)
        port = self.ports.get(key)
        if port is None:
            interface = "::" if ":" in host else "0.0.0.0"
            port = self.reactor.listenUDP(0, _UpstreamUDP(self, key), interface=interface)
            self.ports[key] = port
            try:
                port.connect(host, number)
            except Exception:
                port.stopListening()
                del self.ports[key]
                raise
        return port

    def _next(self):
        if self.done:
            return
        if not self.tries:
            if self.fallback is not None:
                self._finish(self.fallback)
            else:
                self._fail(UpstreamTimeout())
            return
        host, port = self.tries.pop(0)
        self._send(host, port)

    def _send(self, host, port):
        self.asked.add((_canonicalAddress(host), port))
        data = wire.buildQuery(
            self.clientQuery, self.id, self.forwarder.udpSize, self.withOPT
        )
        try:
            self.current = (host, port)
            self._port(host, port).write(data)
        except Exception as e:
            self.forwarder.counters.complain("dns.upstreamSendFailed", f"{host}: {e}")
            self.reactor.callLater(0, self._next)
            return
        self.forwarder.counters.increment("dns.upstream.queries")
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.reactor.callLater(self.forwarder.timeout, self._timedOut)

    def _timedOut(self):
        self.timer = None
        self.forwarder.counters.increment("dns.upstream.timeouts")
        self._next()

    def _accept(self, data):
        """
        Parse an upstream's answer and check that it answers our question;
        L{None} if it does not.
        """
        try:
            m = wire.parseMessage(data)
        except wire.WireError:
            return None
        if m.id != self.id or not m.isResponse or m.opcode != 0:
            return None
        q = m.question
        if q is None:
            # Some servers leave out the question on errors; accept that only
            # without records, whose pointers would be off.
            if m.rcode != wire.NOERROR and not m.records and len(m.questions) == 0:
                return m
            return None
        if len(m.questions) != 1:
            return None
        mine = self.question
        if q.key != mine.key or q.qtype != mine.qtype or q.qclass != mine.qclass:
            return None
        return m

    def udpReceived(self, data, addr):
        if self.done:
            return
        source = (_canonicalAddress(addr[0]), addr[1])
        if source not in self.asked:
            self.forwarder.counters.increment("dns.upstream.strayReplies")
            return
        m = self._accept(data)
        if m is None:
            self.forwarder.counters.increment("dns.upstream.badReplies")
            return
        if self.withOPT and m.opt is None and m.rcode in (wire.FORMERR, wire.NOTIMP):
            # An upstream that does not speak EDNS: ask it again plainly
            # (RFC 6891 section 7).
            self.withOPT = False
            self._send(*self._upstreamFor(addr))
            return
        if m.truncated:
            self.forwarder.counters.increment("dns.upstream.tcpRetries")
            self._cancelTimer()
            self.truncatedAnswer = m
            self._tcp(*self._upstreamFor(addr))
            return
        if m.rcode in (wire.SERVFAIL, wire.REFUSED):
            # This upstream cannot help; another one may.
            self.fallback = m
            self.failoverFrom.add(source)
            remaining = [
                u
                for u in self.tries
                if (_canonicalAddress(u[0]), u[1]) not in self.failoverFrom
            ]
            if remaining:
                self.tries = remaining
                self._cancelTimer()
                self._next()
                return
        self._finish(m)

    def udpRefused(self, upstream):
        """
        C{upstream} answered with ICMP port unreachable: nothing listens
        there (the fallback 127.0.0.1:53 of an empty resolv.conf, often).
        Ask the next one now, not after the timeout.
        """
        if self.done or upstream in self.refused:
            return
        self.refused.add(upstream)
        self.ports.pop(upstream, None)
        self.forwarder.counters.increment("dns.upstream.unreachable")
        host, port = upstream
        dead = (_canonicalAddress(host), port)
        self.failoverFrom.add(dead)
        self.tries = [u for u in self.tries if (_canonicalAddress(u[0]), u[1]) != dead]
        if self.current == upstream:
            self._cancelTimer()
            self._next()

    def _upstreamFor(self, addr):
        for host, port in self.upstreams:
            if (_canonicalAddress(host), port) == (_canonicalAddress(addr[0]), addr[1]):
                return host, port
        return addr[0], addr[1]

    # TCP

    def _tcp(self, host, port):
        query = wire.buildQuery(
            self.clientQuery, self.id, self.forwarder.udpSize, self.withOPT
        )
        self.tcpUpstream = (host, port)
        self.tcpConnector = self.reactor.connectTCP(
            host,
            port,
            _TCPClientFactory(self, query),
            timeout=self.forwarder.tcpTimeout,
        )
        self.timer = self.reactor.callLater(
            self.forwarder.tcpTimeout, self._tcpTimedOut
        )

    def tcpReceived(self, data, proto):
        if self.done:
            return
        m = self._accept(data)
        if m is None:
            self.forwarder.counters.increment("dns.upstream.badReplies")
            return
        self._finish(m)

    def tcpLost(self, proto):
        if not self.done:
            # The TCP try failed: relay the truncated answer; the client will
            # ask us over TCP and we will try again.
            self.forwarder.counters.increment("dns.upstream.tcpFailures")
            self._finish(self.truncatedAnswer)

    def _tcpTimedOut(self):
        self.timer = None
        if not self.done:
            self.forwarder.counters.increment("dns.upstream.tcpFailures")
            self._finish(self.truncatedAnswer)

    # Ending

    def _cancelTimer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _cleanup(self):
        self.done = True
        self._cancelTimer()
        for port in self.ports.values():
            port.stopListening()
        self.ports = {}
        if self.tcpConnector is not None:
            self.tcpConnector.disconnect()
            self.tcpConnector = None
        self.forwarder._exchanges.discard(self)

    def _finish(self, message):
        if self.done:
            return
        self._cleanup()
        self.deferred.callback(message)

    def _fail(self, reason):
        if self.done:
            return
        self._cleanup()
        self.deferred.errback(reason)

    def abort(self):
        self._fail(error.ConnectionAborted())


class Forwarder:
    """
    Sends questions to the upstream resolvers.

    @ivar upstreams: a callable returning the current list of (address, port).
    @ivar timeout: seconds to wait for one upstream over UDP.
    @ivar rounds: how many times each upstream is tried.
    @ivar tcpTimeout: seconds allowed for the TCP retry of a truncated answer.
    @ivar udpSize: the EDNS UDP size we advertise upstream.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        upstreams,
        counters,
        timeout: float = 2.0,
        rounds: int = 2,
        tcpTimeout: float = 5.0,
        udpSize: int = 1232,
    ):
        self.reactor = reactor
        self.upstreams = upstreams
        self.counters = counters
        self.timeout = timeout
        self.rounds = rounds
        self.tcpTimeout = tcpTimeout
        self.udpSize = udpSize
        self._exchanges = set()

    def exchange(self, query) -> defer.Deferred:
        """
        Ask the upstreams C{query}'s question on its behalf.

        @param query: the client's parsed query (L{dns_wire.Message}).
        @return: a Deferred that fires with the upstream's parsed answer, or
            fails with L{UpstreamTimeout} if none answered.
        """
        upstreams = list(self.upstreams())
        if not upstreams:
            return defer.fail(UpstreamTimeout())
        ex = _Exchange(self, query, upstreams)
        self._exchanges.add(ex)
        try:
            return ex.start()
        except Exception:
            ex._fail(Failure())
            return ex.deferred

    def stop(self):
        """
        Abandon every exchange in progress: close their sockets and timers.
        """
        for ex in list(self._exchanges):
            ex.abort()
