"""
The DNS server at the gateway (UDP and TCP port 53 of the virtual network).

It is twisted.names' server, with the query path replaced so that nothing the
upstream says is lost:

 1. names of the local zones and of the hosts file are answered here, TTL 0
    (L{dns_zones});
 2. everything else comes from a cache of upstream answers, with TTLs aged
    (L{dns_upstream.DNSCache});
 3. or is forwarded to the host's resolvers as bytes, and the answer relayed
    with its rcode, all its sections and its TTLs, whatever the record types
    (L{dns_upstream.Forwarder}, L{dns_wire}).

twisted.names' own server path answers from a resolver's (answers, authority,
additional) tuple: it turns every upstream failure into NXDOMAIN or SERVFAIL,
decodes and re-encodes records, and its client resolver loses the sections of a
negative answer. A forwarder must not, so L{GatewayDNSServerFactory} keeps
twisted.names' protocols, connection tracking and resolver chain but handles a
query's bytes itself.

Answers over UDP are cut to 512 bytes, or to the client's EDNS0 size (at most
C{maxUDPSize}), at a record boundary with TC set; over TCP they may be 65535
bytes. Malformed queries are dropped and counted; nothing raises out of the
protocols.

Usage, on the virtual network (or any reactor)::

    service = DNSService(reactor, DNSZones(defaultZones(gw, host)))
    network.listenUDP(53, service.udpProtocol, interface=gw)
    network.listenTCP(53, service.tcpFactory, interface=gw)
"""

from twisted.internet import error as ierror
from twisted.logger import Logger
from twisted.names import dns, server
from twisted.protocols.policies import TimeoutMixin

from gvtwisted.services import dns_wire as wire
from gvtwisted.services.dns_upstream import (
    DNSCache,
    Forwarder,
    UpstreamTimeout,
    WatchedFile,
    parseResolvConf,
)
from gvtwisted.services.dns_zones import (
    DNSZones,
    HostsTable,
    LocalResolver,
    defaultZones,
    encodeLocalAnswer,
)
from gvtwisted.stack.counters import Counters

__all__ = [
    "DNSService",
    "DNSZones",
    "defaultZones",
    "GatewayDNSServerFactory",
    "GatewayDNSDatagramProtocol",
    "GatewayDNSProtocol",
    "LocalResolver",
    "parseResolvConf",
]


class GatewayDNSDatagramProtocol(dns.DNSDatagramProtocol):
    """
    The UDP side: hands each datagram's bytes to the factory, which answers to
    the datagram's source. This protocol never sends queries of its own, so
    every datagram is a query (or junk).
    """

    noisy = False  # no "Starting protocol" line at every start

    def datagramReceived(self, data, addr):
        self.controller.queryReceived(data, self, addr)


class GatewayDNSProtocol(dns.DNSProtocol, TimeoutMixin):
    """
    One TCP client. Queries may be pipelined; answers go back as they come (RFC
    7766 allows any order). An idle connection is closed after C{idleTimeout}
    seconds so clients cannot hold connections forever.

    L{TimeoutMixin} schedules with C{self.callLater}, which L{dns.DNSMixin}
    defines on the injected reactor.
    """

    idleTimeout = 30
    gone = False

    def connectionMade(self):
        dns.DNSProtocol.connectionMade(self)
        self.setTimeout(self.idleTimeout)

    def stringReceived(self, data):
        self.resetTimeout()
        self.controller.queryReceived(data, self, None)

    def connectionLost(self, reason):
        self.gone = True
        self.setTimeout(None)
        dns.DNSProtocol.connectionLost(self, reason)


class GatewayDNSServerFactory(server.DNSServerFactory):
    """
    twisted.names' server factory with the query path of the gateway: local
    answers, then the cache, then the upstreams, each answer shaped for the
    client's transport and EDNS size.

    Identical questions that arrive while one is being forwarded wait for the
    same upstream answer instead of asking again.

    @ivar resolver: a L{ResolverChain} of the local resolver, as twisted.names
        servers have; the gateway's own query path does not use it.
    """

    noisy = False  # no "Starting protocol" line at every start

    protocol = GatewayDNSProtocol
    log = Logger()

    def __init__(self, service):
        server.DNSServerFactory.__init__(self, authorities=[service.localResolver])
        self.canRecurse = True
        self.service = service
        self._pending = {}

    def buildProtocol(self, addr):
        if len(self.connections) >= self.service.maxTCPConnections:
            self.service.counters.complain("dns.tooManyTCPConnections", str(addr))
            return None
        p = self.protocol(self, self.service.reactor)
        p.factory = self
        p.idleTimeout = self.service.tcpIdleTimeout
        return p

    def messageReceived(self, message, proto, address=None):
        """
        The entry point of twisted.names protocols that decoded a message: our
        protocols call L{queryReceived} with the bytes instead.
        """
        self.queryReceived(message.toStr(), proto, address)

    def queryReceived(self, data, proto, address):
        """
        Answer the query in C{data}, received on C{proto} from C{address} (UDP)
        or on a TCP connection (C{address} is L{None}).
        """
        try:
            self._handle(data, proto, address)
        except Exception as e:
            self.service.counters.complain("dns.internalError", repr(e))
            self.log.failure("answering a DNS query")

    # The steps

    def _handle(self, data, proto, address):
        svc = self.service
        counters = svc.counters
        counters.increment("dns.queries.tcp" if address is None else "dns.queries.udp")
        try:
            query = wire.parseMessage(data)
        except wire.WireError as e:
            counters.complain("dns.malformedQuery", f"from {address}: {e}")
            return
        if query.isResponse:
            counters.complain("dns.unexpectedResponse", f"from {address}")
            return
        if query.opcode != 0:
            self._error(query, wire.NOTIMP, proto, address)
            return
        if len(query.questions) != 1:
            self._error(query, wire.FORMERR, proto, address)
            return
        if query.opt is not None and query.opt.version != 0:
            self._error(query, wire.BADVERS, proto, address)
            return

        local = svc.localResolver.answer(query.question)
        if local is not None:
            counters.increment("dns.answers.local")
            self._reply(query, encodeLocalAnswer(query, local), proto, address)
            return

        q = query.question
        key = (
            q.key,
            q.qtype,
            q.qclass,
            bool(query.opt is not None and query.opt.do),
            bool(query.flags & wire.FLAG_CD),
            bool(query.flags & wire.FLAG_RD),
        )
        hit = svc.cache.get(key)
        if hit is not None:
            counters.increment("dns.cache.hits")
            message, age = hit
            self._reply(query, message, proto, address, age)
            return
        counters.increment("dns.cache.misses")

        waiters = self._pending.get(key)
        if waiters is not None:
            if len(waiters) >= svc.maxWaiters:
                counters.complain("dns.tooManyWaiters", q.text)
                return
            waiters.append((query, proto, address))
            return
        if len(self._pending) >= svc.maxPending:
            counters.complain("dns.tooManyPending", q.text)
            return
        self._pending[key] = [(query, proto, address)]
        d = svc.forwarder.exchange(query)
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(key,), errbackArgs=(key,)
        )
        d.addErrback(self._internalError)

    def _answered(self, message, key):
        svc = self.service
        waiters = self._pending.pop(key, [])
        ttl = wire.cacheTTL(message, svc.maxTTL, svc.negativeMaxTTL)
        if ttl > 0:
            svc.cache.put(key, message, ttl)
        svc.counters.increment("dns.answers.forwarded", len(waiters))
        for query, proto, address in waiters:
            self._reply(query, message, proto, address)

    def _failed(self, reason, key):
        waiters = self._pending.pop(key, [])
        if reason.check(ierror.ConnectionAborted):
            return
        if not reason.check(UpstreamTimeout):
            self.log.failure("forwarding a DNS query", reason)
        self.service.counters.increment("dns.upstream.failures")
        for query, proto, address in waiters:
            self._error(query, wire.SERVFAIL, proto, address)

    def _internalError(self, reason):
        self.service.counters.complain("dns.internalError", reason.getErrorMessage())
        self.log.failure("answering a DNS query", reason)

    # Sending

    def _limit(self, query, address):
        """
        The largest answer allowed: L{None} (65535) over TCP; over UDP 512 bytes,
        or the client's EDNS0 size, but not more than C{maxUDPSize}.
        """
        if address is None:
            return None
        if query.opt is None:
            return 512
        return max(512, min(query.opt.udpSize, self.service.maxUDPSize))

    def _reply(self, query, message, proto, address, age=0):
        data = wire.buildResponse(
            query,
            message,
            limit=self._limit(query, address),
            age=age,
            udpSize=self.service.maxUDPSize,
        )
        if wire.HEADER.unpack_from(data)[1] & wire.FLAG_TC:
            self.service.counters.increment("dns.answers.truncated")
        self._send(proto, address, data)

    def _error(self, query, rcode, proto, address):
        self.service.counters.increment(f"dns.answers.rcode{rcode}")
        data = wire.buildResponse(
            query,
            None,
            rcode=rcode,
            limit=self._limit(query, address),
            udpSize=self.service.maxUDPSize,
        )
        self._send(proto, address, data)

    def _send(self, proto, address, data):
        if address is None:
            if proto.gone or proto.transport is None:
                return
            proto.sendString(data)
        else:
            transport = proto.transport
            if transport is None:
                return
            try:
                transport.write(data, address)
            except Exception as e:
                self.service.counters.complain("dns.sendFailed", f"{address}: {e}")


class DNSService:
    """
    Everything the gateway's DNS needs, built once: hand C{udpProtocol} to
    C{listenUDP} and C{tcpFactory} to C{listenTCP} on port 53.

    @param reactor: the real reactor: upstream sockets, timers, and the clock of
        the cache and of the file checks.
    @param zones: the local zones (a L{DNSZones}, or a list in its JSON shape).
    @param upstreams: the resolvers to forward to, as (address, port); by
        default the nameservers of C{resolvConf}, re-read when it changes.
    @param hostsFile: a hosts file whose names are answered locally, re-read
        when it changes.
    @param cacheSize: the most upstream answers cached.
    @param counters: where to count (a L{Counters}).
    @param timeout: seconds to wait for one upstream over UDP.
    @param rounds: how many times each upstream is tried.
    @param maxUDPSize: the largest UDP answer sent, whatever EDNS size a client
        asks for; also the size we advertise. 1232 fits any path MTU of 1280 or
        more without IP fragmentation.
    @param cacheBytes: the most bytes of answers cached.
    @param fileCheckInterval: seconds between checks of resolv.conf and the hosts
        file for changes.
    @param maxTTL: the longest a positive answer is cached.
    @param negativeMaxTTL: the longest a negative answer is cached.
    @param maxPending: the most distinct questions forwarded at once (each
        holds a UDP socket of its own, for source-port randomness); more are
        dropped and counted (the client will retry).
    @param maxTCPConnections: the most TCP clients at once.
    @param tcpIdleTimeout: seconds after which an idle TCP client is closed.
    @param resolvConfPort: the port of the nameservers of C{resolvConf}; 53,
        except in tests, whose servers cannot bind it.

    @ivar udpProtocol: a L{GatewayDNSDatagramProtocol}.
    @ivar tcpFactory: a L{GatewayDNSServerFactory}.
    """

    maxWaiters = 64

    def __init__(
        self,
        reactor,
        zones,
        upstreams=None,
        resolvConf="/etc/resolv.conf",
        hostsFile=None,
        cacheSize=10000,
        counters=None,
        *,
        timeout=2.0,
        rounds=2,
        tcpTimeout=5.0,
        maxUDPSize=1232,
        cacheBytes=8 << 20,
        fileCheckInterval=2.0,
        maxTTL=86400,
        negativeMaxTTL=300,
        maxPending=256,
        maxTCPConnections=128,
        tcpIdleTimeout=30,
        resolvConfPort=53,
    ):
        self.reactor = reactor
        if not isinstance(zones, DNSZones):
            zones = DNSZones(zones)
        self.zones = zones
        self.counters = counters if counters is not None else Counters(reactor)
        self.maxUDPSize = max(512, min(int(maxUDPSize), 65535))
        self.maxTTL = maxTTL
        self.negativeMaxTTL = negativeMaxTTL
        self.maxPending = maxPending
        self.maxTCPConnections = maxTCPConnections
        self.tcpIdleTimeout = tcpIdleTimeout

        if upstreams is not None:
            fixed = [(str(h), int(p)) for h, p in upstreams]
            self.upstreams = lambda: fixed
        else:

            def parse(text):
                return [(host, resolvConfPort) for host, _ in parseResolvConf(text)]

            self.upstreams = WatchedFile(resolvConf, parse, reactor, fileCheckInterval)
        self.hosts = (
            WatchedFile(hostsFile, HostsTable, reactor, fileCheckInterval)
            if hostsFile
            else None
        )
        self.localResolver = LocalResolver(zones, self.hosts)
        self.cache = DNSCache(reactor, cacheSize, cacheBytes)
        self.forwarder = Forwarder(
            reactor,
            self.upstreams,
            self.counters,
            timeout=timeout,
            rounds=rounds,
            tcpTimeout=tcpTimeout,
            udpSize=self.maxUDPSize,
        )
        self.tcpFactory = GatewayDNSServerFactory(self)
        self.udpProtocol = GatewayDNSDatagramProtocol(self.tcpFactory, reactor)

    def stop(self):
        """
        Abandon the questions being forwarded (their sockets and timers go) and
        close the TCP clients. Call it when the service stops.
        """
        self.forwarder.stop()
        for proto in list(self.tcpFactory.connections):
            if proto.transport is not None:
                proto.transport.loseConnection()
