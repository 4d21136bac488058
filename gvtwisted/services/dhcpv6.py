"""
The DHCPv6 server of the virtual network (RFC 8415), on UDP 547 of the
gateway's IPv6 side.

Stateless service (an INFORMATION-REQUEST, which is what a guest configured
by router advertisements sends when the "other configuration" flag is set)
answers with the DNS server (the gateway) and the search list. Stateful
service, for the clients that ask with an IA_NA, leases the static device
address C{::2} to the device MAC and an address of a small pool to anyone
else. SOLICIT gets ADVERTISE (or REPLY with rapid commit), REQUEST, RENEW
and REBIND get REPLY with the binding, RELEASE and DECLINE free it, CONFIRM
tells whether the addresses are on the link.

Which MAC a client has is what the gateway learnt from the frame that carried
the message (the switch vouches for it), never the DUID the client chose: a
guest cannot name itself the device and take C{::2}.

The binding table is the pool (L{POOL_SIZE} addresses, keyed by DUID and
IAID), so it is bounded; an expired binding is reused. Anything malformed is
dropped with a counted complaint; nothing a guest sends raises out of
L{DHCPv6Server.datagramReceived}.
"""

import ipaddress

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from gvtwisted.wire import dhcpv6 as wire

POOL_START = 0x1000
POOL_SIZE = 256
PREFERRED_LIFETIME = 3600
VALID_LIFETIME = 7200
T1 = PREFERRED_LIFETIME // 2
T2 = PREFERRED_LIFETIME * 4 // 5
#: How long an ADVERTISE holds an address for the REQUEST that follows.
OFFER_HOLD = 60
INFORMATION_REFRESH = 3600

_NAMES = {
    wire.SOLICIT: "solicit", wire.REQUEST: "request", wire.CONFIRM: "confirm",
    wire.RENEW: "renew", wire.REBIND: "rebind", wire.RELEASE: "release",
    wire.DECLINE: "decline", wire.INFORMATION_REQUEST: "informationRequest",
}


class _Binding:
    __slots__ = ("address", "key", "mac", "expires")

    def __init__(self, address, key, mac, expires):
        self.address = address
        self.key = key
        self.mac = mac
        self.expires = expires


class DHCPv6Server(DatagramProtocol):
    """
    @ivar bindings: 16-byte address to L{_Binding}.
    """

    log = Logger()
    noisy = False  # no "Starting protocol" line at every start

    def __init__(self, clock, counters, serverMAC: bytes, prefix: bytes, macFor,
                 dnsServers=(), searchDomains=(), staticLeases=None):
        """
        @param prefix: the 16-byte network address of the /64.
        @param macFor: a callable from a client's 16-byte address to the MAC
            it was learnt at (or L{None}).
        @param dnsServers: 16-byte addresses offered as DNS servers.
        @param staticLeases: 6-byte MAC to 16-byte address.
        """
        self.clock = clock
        self.counters = counters
        self.duid = wire.duidLL(serverMAC)
        self.prefix = prefix
        self.macFor = macFor
        self.dnsServers = list(dnsServers)
        self.searchDomains = list(searchDomains)
        self.staticLeases = dict(staticLeases or {})
        self._staticAddresses = {a: m for m, a in self.staticLeases.items()}
        self.bindings = {}
        self._byKey = {}

    # -- entry --------------------------------------------------------------

    def datagramReceived(self, data, addr):
        host, port = addr[:2]
        try:
            message = wire.parse(data)
            source = ipaddress.IPv6Address(host).packed
            self._dispatch(message, source, (host, port))
        except wire.DHCPv6Error as e:
            self.counters.complain(e.reason)

    def _dispatch(self, message, source, addr):
        kind = _NAMES.get(message.msgType)
        if kind is None:
            self.counters.increment("dhcpv6.ignored")
            return
        self.counters.increment("dhcpv6." + kind)
        clientID = message.clientID
        serverID = message.serverID
        if message.msgType == wire.INFORMATION_REQUEST:
            if serverID is not None and serverID != self.duid:
                return
            if message.get(wire.OPT_IA_NA) is not None or message.get(wire.OPT_IA_TA) is not None:
                # RFC 8415 16.12: an information-request with an IA is discarded.
                self.counters.complain("dhcpv6.informationRequestWithIA")
                return
            reply = self._reply(wire.REPLY, message)
            reply.add(wire.OPT_INFORMATION_REFRESH_TIME, INFORMATION_REFRESH.to_bytes(4, "big"))
            self._send(reply, addr)
            return
        if clientID is None:
            self.counters.complain("dhcpv6.noClientID")
            return
        mustName = message.msgType in (wire.REQUEST, wire.RENEW, wire.RELEASE, wire.DECLINE)
        if mustName and serverID != self.duid:
            # For another server (or none named): not ours to answer.
            self.counters.increment("dhcpv6.notForUs")
            return
        if not mustName and serverID is not None:
            self.counters.complain("dhcpv6.unexpectedServerID")
            return
        mac = self.macFor(source)
        if message.msgType == wire.SOLICIT:
            self._solicit(message, mac, addr)
        elif message.msgType in (wire.REQUEST, wire.RENEW, wire.REBIND):
            self._assign(message, mac, addr, rebind=message.msgType == wire.REBIND)
        elif message.msgType in (wire.RELEASE, wire.DECLINE):
            self._release(message, addr)
        elif message.msgType == wire.CONFIRM:
            self._confirm(message, addr)

    # -- messages -----------------------------------------------------------

    def _reply(self, msgType, request):
        reply = wire.Message(msgType, request.transactionId)
        reply.add(wire.OPT_SERVERID, self.duid)
        if request.clientID is not None:
            reply.add(wire.OPT_CLIENTID, request.clientID)
        requested = request.requestedOptions()
        if self.dnsServers and (not requested or wire.OPT_DNS_SERVERS in requested):
            reply.add(wire.OPT_DNS_SERVERS, wire.dnsServers(self.dnsServers))
        if self.searchDomains and (not requested or wire.OPT_DOMAIN_LIST in requested):
            try:
                reply.add(wire.OPT_DOMAIN_LIST, wire.domainList(self.searchDomains))
            except ValueError:
                pass
        return reply

    def _solicit(self, message, mac, addr):
        rapid = message.get(wire.OPT_RAPID_COMMIT) is not None
        reply = self._reply(wire.REPLY if rapid else wire.ADVERTISE, message)
        if rapid:
            reply.add(wire.OPT_RAPID_COMMIT, b"")
        for ia in message.identityAssociations():
            lifetime = VALID_LIFETIME if rapid else OFFER_HOLD
            address = self._lease(message.clientID, ia.iaid, mac, lifetime)
            reply.add(wire.OPT_IA_NA, self._ia(ia.iaid, address).toBytes())
        self._send(reply, addr)

    def _assign(self, message, mac, addr, rebind):
        reply = self._reply(wire.REPLY, message)
        for ia in message.identityAssociations():
            key = (message.clientID, ia.iaid)
            if rebind and key not in self._byKey:
                # RFC 8415 18.3.5: with no binding, a REBIND is answered only
                # if its addresses are wrong for the link (they are not ours
                # to judge otherwise).
                if any(not self._onLink(a.address) for a in ia.addresses):
                    reply.add(wire.OPT_IA_NA, self._ia(ia.iaid, None, zeroLifetimes=ia.addresses).toBytes())
                continue
            if message.msgType == wire.RENEW and key not in self._byKey:
                reply.add(wire.OPT_IA_NA, wire.IdentityAssociation(
                    ia.iaid, options=[(wire.OPT_STATUS_CODE, wire.statusCode(
                        wire.STATUS_NO_BINDING, "no binding"))]).toBytes())
                continue
            address = self._lease(message.clientID, ia.iaid, mac, VALID_LIFETIME)
            reply.add(wire.OPT_IA_NA, self._ia(ia.iaid, address).toBytes())
        self._send(reply, addr)

    def _release(self, message, addr):
        for ia in message.identityAssociations():
            binding = self._byKey.pop((message.clientID, ia.iaid), None)
            if binding is not None:
                del self.bindings[binding.address]
        reply = self._reply(wire.REPLY, message)
        reply.add(wire.OPT_STATUS_CODE, wire.statusCode(wire.STATUS_SUCCESS, "released"))
        self._send(reply, addr)

    def _confirm(self, message, addr):
        addresses = [a.address for ia in message.identityAssociations() for a in ia.addresses]
        if not addresses:
            return
        ok = all(self._onLink(a) for a in addresses)
        reply = self._reply(wire.REPLY, message)
        reply.add(wire.OPT_STATUS_CODE, wire.statusCode(
            wire.STATUS_SUCCESS if ok else wire.STATUS_NOT_ON_LINK,
            "on link" if ok else "not on link"))
        self._send(reply, addr)

    def _ia(self, iaid, address, zeroLifetimes=()):
        if zeroLifetimes:
            return wire.IdentityAssociation(
                iaid, 0, 0, [wire.IAAddress(a.address, 0, 0) for a in zeroLifetimes])
        if address is None:
            return wire.IdentityAssociation(
                iaid, options=[(wire.OPT_STATUS_CODE, wire.statusCode(
                    wire.STATUS_NO_ADDRS_AVAIL, "no addresses left"))])
        return wire.IdentityAssociation(
            iaid, T1, T2, [wire.IAAddress(address, PREFERRED_LIFETIME, VALID_LIFETIME)])

    def _send(self, reply, addr):
        self.counters.increment("dhcpv6.replies")
        self.transport.write(reply.toBytes(), addr)

    # -- bindings -----------------------------------------------------------

    def _onLink(self, address):
        return address[:8] == self.prefix[:8]

    def _lease(self, clientID, iaid, mac, lifetime):
        """
        The address for C{(clientID, iaid)}, bound for C{lifetime} seconds
        (extended, never shortened), or L{None} when the pool is full.
        """
        now = self.clock.seconds()
        key = (clientID, iaid)
        static = self.staticLeases.get(mac) if mac is not None else None
        binding = self._byKey.get(key)
        if binding is not None and (static is None or binding.address == static):
            binding.expires = max(binding.expires, now + lifetime)
            return binding.address
        if binding is not None:
            self._drop(binding)
        if static is not None:
            address = static
            old = self.bindings.get(address)
            if old is not None:
                # The device's address is the device's, whatever its IAID.
                self._drop(old)
        else:
            address = self._free(now)
            if address is None:
                self.counters.increment("drop.dhcpv6.poolFull")
                return None
        binding = _Binding(address, key, mac, now + lifetime)
        self.bindings[address] = binding
        self._byKey[key] = binding
        return address

    def _drop(self, binding):
        self.bindings.pop(binding.address, None)
        if self._byKey.get(binding.key) is binding:
            del self._byKey[binding.key]

    def _free(self, now):
        base = int.from_bytes(self.prefix[:8], "big") << 64
        expired = None
        for i in range(POOL_SIZE):
            address = (base | (POOL_START + i)).to_bytes(16, "big")
            binding = self.bindings.get(address)
            if binding is None:
                return address
            if binding.expires <= now and (expired is None or binding.expires < expired.expires):
                expired = binding
        if expired is None:
            return None
        self._drop(expired)
        return expired.address

    def ownerOf(self, address: bytes):
        """
        The MAC that holds a live lease on C{address} (or the static one), or
        L{None}: the gateway refuses that address from any other MAC.
        """
        static = self._staticAddresses.get(address)
        if static is not None:
            return static
        binding = self.bindings.get(address)
        if binding is None or binding.mac is None or binding.expires <= self.clock.seconds():
            return None
        return binding.mac

    def leases(self) -> dict:
        """
        Live bindings: text address to the MAC (text) they were made for.
        """
        now = self.clock.seconds()
        return {str(ipaddress.IPv6Address(a)): ":".join(f"{x:02x}" for x in b.mac or b"")
                for a, b in sorted(self.bindings.items()) if b.expires > now}
