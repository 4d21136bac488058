"""
Tests for L{gvtwisted.services.dhcp}.

Client messages are built with dpkt, fed to L{DHCPServer.datagramReceived},
and the replies a fake transport records are decoded with dpkt again, option
by option.
"""

import ipaddress
import os
import struct
import tempfile

from dpkt import dhcp as dpktDHCP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.services.dhcp import (
    ACK,
    DECLINE,
    DISCOVER,
    INFORM,
    NAK,
    OFFER,
    RELEASE,
    REQUEST,
    DHCPConfig,
    DHCPServer,
    encodeSearchDomains,
    searchDomainsFromResolvConf,
)
from gvtwisted.stack.counters import Counters

DEVICE_MAC = "5a:94:ef:e4:0c:ee"
OTHER_MAC = "02:00:00:00:00:01"
THIRD_MAC = "02:00:00:00:00:02"
FOURTH_MAC = "02:00:00:00:00:03"
GATEWAY = "192.168.127.1"
DEVICE_IP = "192.168.127.2"
HOST_IP = "192.168.127.254"
FIRST_POOL = "192.168.127.3"
SECOND_POOL = "192.168.127.4"
OTHER_SERVER = "192.168.127.99"


def ipInt(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def ipStr(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def macBytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def clientMessage(
    msgType,
    mac=OTHER_MAC,
    xid=0x12345678,
    requested=None,
    serverID=None,
    ciaddr="0.0.0.0",
    flags=0x8000,
    giaddr="0.0.0.0",
    extra=(),
) -> bytes:
    """
    A client message as a real client would send it: BOOTREQUEST, Ethernet
    hardware type, the message type first, a parameter request list.
    """
    options = [(53, bytes([msgType]))]
    if requested is not None:
        options.append((50, ipaddress.IPv4Address(requested).packed))
    if serverID is not None:
        options.append((54, ipaddress.IPv4Address(serverID).packed))
    options.append((55, bytes([1, 3, 6, 15, 26, 28, 51, 58, 59, 119])))
    options.extend(extra)
    packet = dpktDHCP.DHCP(
        op=dpktDHCP.DHCP_OP_REQUEST,
        xid=xid,
        flags=flags,
        ciaddr=ipInt(ciaddr),
        giaddr=ipInt(giaddr),
        chaddr=macBytes(mac),
        opts=options,
        data=b"",
    )
    return bytes(packet)


def decodeNames(data: bytes) -> list:
    """
    Decode RFC 3397 option data: DNS names with compression pointers
    relative to the start of C{data}. Written independently of the encoder.
    """
    names = []
    offset = 0
    while offset < len(data):
        labels = []
        position = offset
        jumped = False
        for _ in range(128):
            length = data[position]
            if length & 0xC0 == 0xC0:
                pointer = struct.unpack("!H", data[position : position + 2])[0] & 0x3FFF
                if not jumped:
                    offset = position + 2
                jumped = True
                position = pointer
                continue
            if length == 0:
                if not jumped:
                    offset = position + 1
                break
            labels.append(data[position + 1 : position + 1 + length].decode("ascii"))
            position += 1 + length
        else:
            raise ValueError("pointer loop")
        names.append(".".join(labels))
    return names


class FakeDatagramTransport:
    """
    Records what a datagram protocol writes, as (data, address) pairs.
    """

    def __init__(self):
        self.written = []

    def write(self, data, addr=None):
        self.written.append((data, addr))


class Reply:
    """
    A decoded server reply with its options as a dict (repeated options
    concatenated, as RFC 3396 says a client must).
    """

    def __init__(self, data, addr):
        self.raw = data
        self.addr = addr
        self.packet = dpktDHCP.DHCP(data)
        self.options = {}
        self.order = []
        for code, value in self.packet.opts:
            self.order.append(code)
            self.options[code] = self.options.get(code, b"") + bytes(value)

    @property
    def type(self):
        return self.options[53][0]

    @property
    def yiaddr(self):
        return ipStr(self.packet.yiaddr)


def makeConfig(**overrides):
    values = dict(
        serverIP=GATEWAY,
        subnet=ipaddress.IPv4Network("192.168.127.0/24"),
        dnsServers=[GATEWAY],
        mtu=1500,
        leaseTime=3600,
        staticLeases={DEVICE_MAC: DEVICE_IP},
        reserved={GATEWAY, HOST_IP},
        searchDomains=["example.com", "corp.example.com"],
        maxLeases=4096,
    )
    values.update(overrides)
    return DHCPConfig(**values)


class ServerMixin:
    """
    A server on a fake transport with a L{Clock} and its own counters.
    """

    def makeServer(self, **overrides):
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.server = DHCPServer(makeConfig(**overrides), self.clock, self.counters)
        self.transport = FakeDatagramTransport()
        self.server.makeConnection(self.transport)
        return self.server

    def send(self, *args, **kwargs):
        """
        Send one client message; return the decoded reply or L{None}, and
        fail if the server sent more than one.
        """
        before = len(self.transport.written)
        self.server.datagramReceived(clientMessage(*args, **kwargs), ("0.0.0.0", 68))
        new = self.transport.written[before:]
        self.assertLessEqual(len(new), 1)
        return Reply(*new[0]) if new else None

    def bind(self, mac, xid=1):
        """
        Run DISCOVER then REQUEST for C{mac}; return the address it got.
        """
        offer = self.send(DISCOVER, mac=mac, xid=xid)
        self.assertEqual(offer.type, OFFER)
        ack = self.send(
            REQUEST, mac=mac, xid=xid, requested=offer.yiaddr, serverID=GATEWAY
        )
        self.assertEqual(ack.type, ACK)
        return ack.yiaddr


class OfferTests(ServerMixin, SynchronousTestCase):
    """
    DISCOVER gets an OFFER of the right address with the whole configuration.
    """

    def setUp(self):
        self.makeServer()

    def test_staticOfferHeader(self):
        """
        The device MAC is offered its static address in a BOOTREPLY that
        echoes xid, flags, giaddr and chaddr, names the server in siaddr, is
        padded to the BOOTP minimum of 300 bytes and goes to the broadcast
        address, because the client has no address yet.
        """
        reply = self.send(
            DISCOVER, mac=DEVICE_MAC, xid=0xCAFEBABE, flags=0x8000, giaddr="10.0.0.9"
        )
        packet = reply.packet
        self.assertEqual(reply.addr, ("255.255.255.255", 68))
        self.assertEqual(packet.op, dpktDHCP.DHCP_OP_REPLY)
        self.assertEqual(packet.hrd, 1)
        self.assertEqual(packet.hln, 6)
        self.assertEqual(packet.xid, 0xCAFEBABE)
        self.assertEqual(packet.flags, 0x8000)
        self.assertEqual(packet.ciaddr, 0)
        self.assertEqual(reply.yiaddr, DEVICE_IP)
        self.assertEqual(ipStr(packet.siaddr), GATEWAY)
        self.assertEqual(ipStr(packet.giaddr), "10.0.0.9")
        self.assertEqual(bytes(packet.chaddr), macBytes(DEVICE_MAC))
        self.assertEqual(packet.magic, dpktDHCP.DHCP_MAGIC)
        self.assertGreaterEqual(len(reply.raw), 300)
        self.assertEqual(reply.order[0], 53)
        self.assertEqual(reply.type, OFFER)
        self.assertEqual(self.counters.get("dhcp.offer"), 1)
        self.assertEqual(self.counters.get("dhcp.discover"), 1)

    def test_staticOfferOptions(self):
        """
        Every option carries the configured value in its RFC 2132 encoding:
        server id and router are the gateway, the mask is the /24 mask, DNS
        is the gateway, the MTU is two bytes, lease time four bytes with T1 at
        half and T2 at seven eighths of it.
        """
        options = self.send(DISCOVER, mac=DEVICE_MAC).options
        self.assertEqual(options[54], ipaddress.IPv4Address(GATEWAY).packed)
        self.assertEqual(options[1], bytes([255, 255, 255, 0]))
        self.assertEqual(options[3], ipaddress.IPv4Address(GATEWAY).packed)
        self.assertEqual(options[6], ipaddress.IPv4Address(GATEWAY).packed)
        self.assertEqual(options[26], struct.pack("!H", 1500))
        self.assertEqual(options[51], struct.pack("!I", 3600))
        self.assertEqual(options[58], struct.pack("!I", 1800))
        self.assertEqual(options[59], struct.pack("!I", 3150))

    def test_searchOption(self):
        """
        Option 119 holds the search list in DNS wire format, the second name
        pointing at the C{example.com} already written, so it decodes back to
        the configured names.
        """
        data = self.send(DISCOVER, mac=DEVICE_MAC).options[119]
        self.assertEqual(
            data, b"\x07example\x03com\x00" b"\x04corp\xc0\x00"
        )
        self.assertEqual(decodeNames(data), ["example.com", "corp.example.com"])

    def test_optionalOptionsOmitted(self):
        """
        With no DNS servers and no search domains, options 6 and 119 are left
        out rather than sent empty (an empty option 6 is invalid).
        """
        self.makeServer(dnsServers=[], searchDomains=[])
        options = self.send(DISCOVER, mac=DEVICE_MAC).options
        self.assertNotIn(6, options)
        self.assertNotIn(119, options)
        self.assertIn(1, options)

    def test_severalDNSServers(self):
        """
        Option 6 lists every DNS server, four bytes each, in order.
        """
        self.makeServer(dnsServers=["10.0.0.1", "10.0.0.2"])
        options = self.send(DISCOVER, mac=DEVICE_MAC).options
        self.assertEqual(options[6], bytes([10, 0, 0, 1, 10, 0, 0, 2]))

    def test_staticMACAnyCase(self):
        """
        A static lease configured in upper case matches the client's
        hardware address all the same.
        """
        self.makeServer(staticLeases={DEVICE_MAC.upper(): DEVICE_IP})
        self.assertEqual(self.send(DISCOVER, mac=DEVICE_MAC).yiaddr, DEVICE_IP)

    def test_poolOffer(self):
        """
        Another MAC is offered the first pool address: not the gateway, not
        the static address, not the host address.
        """
        reply = self.send(DISCOVER, mac=OTHER_MAC)
        self.assertEqual(reply.type, OFFER)
        self.assertEqual(reply.yiaddr, FIRST_POOL)
        self.assertNotIn(reply.yiaddr, {GATEWAY, DEVICE_IP, HOST_IP})

    def test_reservedSkipped(self):
        """
        Reserved addresses at the start of the pool are skipped.
        """
        self.makeServer(reserved={GATEWAY, HOST_IP, FIRST_POOL})
        self.assertEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, SECOND_POOL)

    def test_twoClientsDifferentAddresses(self):
        """
        Two clients discovering one after the other get different addresses,
        because an offered address is held for the client it was offered to.
        """
        first = self.send(DISCOVER, mac=OTHER_MAC).yiaddr
        second = self.send(DISCOVER, mac=THIRD_MAC).yiaddr
        self.assertEqual((first, second), (FIRST_POOL, SECOND_POOL))

    def test_sameClientSameAddress(self):
        """
        A client that discovers again, bound or not, is offered the address
        it already has.
        """
        first = self.send(DISCOVER, mac=OTHER_MAC).yiaddr
        self.send(DISCOVER, mac=THIRD_MAC)
        self.assertEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, first)
        self.send(REQUEST, mac=OTHER_MAC, requested=first, serverID=GATEWAY)
        self.assertEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, first)

    def test_discoverHonoursFreeRequestedAddress(self):
        """
        A DISCOVER asking for a free pool address (option 50) is offered it.
        """
        reply = self.send(DISCOVER, mac=OTHER_MAC, requested="192.168.127.77")
        self.assertEqual(reply.yiaddr, "192.168.127.77")

    def test_discoverRequestedAddressNotFree(self):
        """
        A DISCOVER asking for an address that is taken, reserved, static or
        outside the subnet gets the first free pool address instead.
        """
        taken = self.bind(OTHER_MAC)
        for wanted in (taken, GATEWAY, HOST_IP, DEVICE_IP, "10.1.2.3", "192.168.127.255"):
            reply = self.send(DISCOVER, mac=THIRD_MAC, requested=wanted)
            self.assertEqual(reply.yiaddr, SECOND_POOL, wanted)

    def test_clientIdentifierEchoed(self):
        """
        The client identifier (option 61) is echoed, as RFC 6842 requires.
        """
        clientID = b"\x01" + macBytes(OTHER_MAC)
        reply = self.send(DISCOVER, mac=OTHER_MAC, extra=[(61, clientID)])
        self.assertEqual(reply.options[61], clientID)

    def test_longSearchListSplit(self):
        """
        A search list longer than 255 bytes is sent as consecutive option 119
        instances (RFC 3396) that concatenate to the whole list; the client's
        maximum message size allows it.
        """
        domains = ["%s%02d.t%02d" % ("x" * 40, i, i) for i in range(10)]
        self.makeServer(searchDomains=domains)
        reply = self.send(DISCOVER, mac=OTHER_MAC, extra=[(57, struct.pack("!H", 1500))])
        self.assertGreater(reply.order.count(119), 1)
        self.assertEqual(decodeNames(reply.options[119]), domains)

    def test_searchListOmittedWhenTooLarge(self):
        """
        When the reply with the search list would exceed what the client can
        take (576-byte datagrams by default), the list is left out and
        counted, and the rest of the configuration is still sent.
        """
        domains = ["%s%02d.t%02d" % ("x" * 40, i, i) for i in range(10)]
        self.makeServer(searchDomains=domains)
        reply = self.send(DISCOVER, mac=OTHER_MAC)
        self.assertNotIn(119, reply.options)
        self.assertIn(1, reply.options)
        self.assertLessEqual(len(reply.raw), 548)
        self.assertEqual(self.counters.get("dhcp.searchOmitted"), 1)


class RequestTests(ServerMixin, SynchronousTestCase):
    """
    REQUEST is ACKed when the address is the client's or free for it, NAKed
    otherwise, and ignored when meant for another server.
    """

    def setUp(self):
        self.makeServer()

    def test_requestAck(self):
        """
        A REQUEST for the offered address is ACKed with the address, the
        lease time and the whole configuration, and the lease is listed.
        """
        offer = self.send(DISCOVER, mac=OTHER_MAC, xid=7)
        ack = self.send(
            REQUEST, mac=OTHER_MAC, xid=7, requested=offer.yiaddr, serverID=GATEWAY
        )
        self.assertEqual(ack.type, ACK)
        self.assertEqual(ack.packet.xid, 7)
        self.assertEqual(ack.yiaddr, FIRST_POOL)
        self.assertEqual(ack.options[51], struct.pack("!I", 3600))
        self.assertEqual(ack.options[1], bytes([255, 255, 255, 0]))
        self.assertEqual(decodeNames(ack.options[119]), ["example.com", "corp.example.com"])
        self.assertEqual(self.server.leases(), {FIRST_POOL: OTHER_MAC})
        self.assertEqual(self.counters.get("dhcp.ack"), 1)

    def test_staticRequestAck(self):
        """
        The device's REQUEST for its static address is ACKed, and the static
        lease is then listed.
        """
        self.assertEqual(self.server.leases(), {})
        ack = self.send(REQUEST, mac=DEVICE_MAC, requested=DEVICE_IP, serverID=GATEWAY)
        self.assertEqual((ack.type, ack.yiaddr), (ACK, DEVICE_IP))
        self.assertEqual(self.server.leases(), {DEVICE_IP: DEVICE_MAC})

    def test_macFor(self):
        """
        L{DHCPServer.macFor} names the holder of a live lease, static or
        pool, and nobody for a free or expired address.
        """
        address = self.bind(OTHER_MAC)
        self.bind(DEVICE_MAC)
        self.assertEqual(self.server.macFor(address), OTHER_MAC)
        self.assertEqual(self.server.macFor(DEVICE_IP), DEVICE_MAC)
        self.assertIsNone(self.server.macFor("192.168.127.100"))
        self.clock.advance(3600)
        self.assertIsNone(self.server.macFor(address))
        self.assertEqual(self.server.macFor(DEVICE_IP), DEVICE_MAC)

    def test_newLeaseLogged(self):
        """
        Binding a new lease is logged once; a renewal is not.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        address = self.bind(OTHER_MAC)
        self.send(REQUEST, mac=OTHER_MAC, ciaddr=address)
        leased = [e for e in events if e.get("log_format", "").startswith("DHCP: leased")]
        self.assertEqual([(e["ip"], e["mac"]) for e in leased], [(address, OTHER_MAC)])

    def test_leasesSortedByAddress(self):
        """
        L{DHCPServer.leases} is sorted by address numerically, static leases
        included.
        """
        self.send(REQUEST, mac=OTHER_MAC, requested="192.168.127.10")
        self.send(REQUEST, mac=THIRD_MAC, requested="192.168.127.9")
        self.bind(DEVICE_MAC)
        self.assertEqual(
            list(self.server.leases().items()),
            [
                (DEVICE_IP, DEVICE_MAC),
                ("192.168.127.9", THIRD_MAC),
                ("192.168.127.10", OTHER_MAC),
            ],
        )

    def test_requestOthersAddressNak(self):
        """
        A REQUEST for an address leased to another client is NAKed with
        no address, and the holder keeps it.
        """
        taken = self.bind(OTHER_MAC)
        nak = self.send(REQUEST, mac=THIRD_MAC, requested=taken, serverID=GATEWAY)
        self.assertEqual(nak.type, NAK)
        self.assertEqual(nak.packet.yiaddr, 0)
        self.assertEqual(nak.packet.siaddr, 0)
        self.assertEqual(nak.options[54], ipaddress.IPv4Address(GATEWAY).packed)
        self.assertNotIn(51, nak.options)
        self.assertNotIn(1, nak.options)
        # Padded to the BOOTP minimum like the other replies.
        self.assertEqual(len(nak.raw), 300)
        self.assertEqual(self.server.leases(), {taken: OTHER_MAC})
        self.assertEqual(self.counters.get("dhcp.nak"), 1)

    def test_requestStaticOfAnotherNak(self):
        """
        Nobody but the device may take the device's static address, even
        before the device came up.
        """
        nak = self.send(REQUEST, mac=OTHER_MAC, requested=DEVICE_IP)
        self.assertEqual(nak.type, NAK)

    def test_staticClientWrongAddressNak(self):
        """
        A client with a static lease asking for another address (say, one it
        remembers from another network) is NAKed, so it starts over and gets
        its static address.
        """
        nak = self.send(REQUEST, mac=DEVICE_MAC, requested=FIRST_POOL)
        self.assertEqual(nak.type, NAK)
        self.assertEqual(self.send(DISCOVER, mac=DEVICE_MAC).yiaddr, DEVICE_IP)

    def test_requestNotInPoolNak(self):
        """
        Addresses outside the subnet, the gateway, the host address and the
        broadcast address are wrong for any client: NAK.
        """
        for wanted in ("10.0.2.15", GATEWAY, HOST_IP, "192.168.127.255", "192.168.127.0"):
            reply = self.send(REQUEST, mac=OTHER_MAC, requested=wanted)
            self.assertEqual(reply.type, NAK, wanted)
        self.assertEqual(self.server.leases(), {})

    def test_requestWithoutAddressNak(self):
        """
        A REQUEST with neither option 50 nor ciaddr names no address to
        confirm: NAK, so that the client discovers again.
        """
        self.assertEqual(self.send(REQUEST, mac=OTHER_MAC).type, NAK)

    def test_requestFreeAddressAck(self):
        """
        A client rebooting with an address it remembers (INIT-REBOOT, no
        server id) gets it when it is free, e.g. after gvtap restarted.
        """
        ack = self.send(REQUEST, mac=OTHER_MAC, requested="192.168.127.50")
        self.assertEqual((ack.type, ack.yiaddr), (ACK, "192.168.127.50"))
        self.assertEqual(self.server.leases(), {"192.168.127.50": OTHER_MAC})

    def test_requestMovesLease(self):
        """
        A client that takes another free address gives up its previous one:
        one client holds one lease.
        """
        first = self.bind(OTHER_MAC)
        self.send(REQUEST, mac=OTHER_MAC, requested="192.168.127.50")
        self.assertEqual(self.server.leases(), {"192.168.127.50": OTHER_MAC})
        self.assertEqual(self.send(DISCOVER, mac=THIRD_MAC).yiaddr, first)

    def test_otherServerIgnored(self):
        """
        A REQUEST naming another server means the client chose that server's
        offer: no reply, counted, and the address we only offered is let go.
        """
        offer = self.send(DISCOVER, mac=OTHER_MAC)
        reply = self.send(
            REQUEST, mac=OTHER_MAC, requested=offer.yiaddr, serverID=OTHER_SERVER
        )
        self.assertIsNone(reply)
        self.assertEqual(self.counters.get("drop.dhcp.otherServer"), 1)
        self.assertEqual(self.server.leases(), {})

    def test_otherServerKeepsBoundLease(self):
        """
        A REQUEST for another server does not take away a lease the client
        had already bound with us.
        """
        address = self.bind(OTHER_MAC)
        self.send(REQUEST, mac=OTHER_MAC, requested=address, serverID=OTHER_SERVER)
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})

    def test_renewWithCiaddr(self):
        """
        A renewing client puts its address in ciaddr and sends no option 50;
        it is ACKed with ciaddr echoed and the lease runs a full lease time
        from the renewal.
        """
        address = self.bind(OTHER_MAC)
        self.clock.advance(1800)
        ack = self.send(REQUEST, mac=OTHER_MAC, ciaddr=address, flags=0)
        self.assertEqual((ack.type, ack.yiaddr), (ACK, address))
        self.assertEqual(ipStr(ack.packet.ciaddr), address)
        self.clock.advance(3000)
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})
        self.clock.advance(601)
        self.assertEqual(self.server.leases(), {})

    def test_renewOthersAddressNak(self):
        """
        Renewing an address (ciaddr) that belongs to someone else is NAKed.
        """
        address = self.bind(OTHER_MAC)
        self.assertEqual(self.send(REQUEST, mac=THIRD_MAC, ciaddr=address).type, NAK)


class LifecycleTests(ServerMixin, SynchronousTestCase):
    """
    RELEASE, DECLINE, INFORM, lease expiry and the table cap.
    """

    def setUp(self):
        self.makeServer()

    def test_releaseFreesPoolLease(self):
        """
        A RELEASE frees the client's pool lease: it leaves the table and the
        next client is offered that address.
        """
        address = self.bind(OTHER_MAC)
        self.assertIsNone(self.send(RELEASE, mac=OTHER_MAC, ciaddr=address, serverID=GATEWAY))
        self.assertEqual(self.server.leases(), {})
        self.assertEqual(self.counters.get("dhcp.release"), 1)
        self.assertEqual(self.send(DISCOVER, mac=THIRD_MAC).yiaddr, address)

    def test_staticSurvivesRelease(self):
        """
        A static lease stays listed after RELEASE and the device still gets
        its address afterwards.
        """
        self.bind(DEVICE_MAC)
        self.send(RELEASE, mac=DEVICE_MAC, ciaddr=DEVICE_IP, serverID=GATEWAY)
        self.assertEqual(self.server.leases(), {DEVICE_IP: DEVICE_MAC})
        self.assertEqual(self.send(DISCOVER, mac=DEVICE_MAC).yiaddr, DEVICE_IP)

    def test_releaseByOtherIgnored(self):
        """
        A client cannot release someone else's lease.
        """
        address = self.bind(OTHER_MAC)
        self.send(RELEASE, mac=THIRD_MAC, ciaddr=address)
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})
        self.assertEqual(self.counters.get("drop.dhcp.releaseNotOwner"), 1)

    def test_leaseExpiry(self):
        """
        A lease disappears from the table after the lease time, and its
        address can then be given to another client.
        """
        address = self.bind(OTHER_MAC)
        self.clock.advance(3599)
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})
        self.assertEqual(self.send(REQUEST, mac=THIRD_MAC, requested=address).type, NAK)
        self.clock.advance(1)
        self.assertEqual(self.server.leases(), {})
        ack = self.send(REQUEST, mac=THIRD_MAC, requested=address)
        self.assertEqual((ack.type, ack.yiaddr), (ACK, address))
        self.assertEqual(self.server.leases(), {address: THIRD_MAC})
        # The previous holder now is refused it and offered another.
        self.assertEqual(self.send(REQUEST, mac=OTHER_MAC, ciaddr=address).type, NAK)
        self.assertNotEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, address)

    def test_expiredLeaseSticky(self):
        """
        A client whose lease expired gets the same address back if nobody
        took it in the meantime.
        """
        address = self.bind(OTHER_MAC)
        self.clock.advance(10000)
        self.bind(THIRD_MAC)
        self.assertEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, address)

    def test_expiredLeaseReclaimedWhenPoolFull(self):
        """
        When every pool address has been leased, an expired lease is
        reclaimed for a new client.
        """
        # /29: hosts .1-.6; .1 server, .2 static, .6 reserved: pool .3-.5.
        self.makeServer(
            subnet=ipaddress.IPv4Network("192.168.127.0/29"),
            reserved={GATEWAY, "192.168.127.6"},
        )
        addresses = [self.bind(mac) for mac in (OTHER_MAC, THIRD_MAC, FOURTH_MAC)]
        self.assertEqual(addresses, ["192.168.127.3", "192.168.127.4", "192.168.127.5"])
        self.assertIsNone(self.send(DISCOVER, mac="02:00:00:00:00:09"))
        self.assertEqual(self.counters.get("drop.dhcp.poolExhausted"), 1)
        self.clock.advance(1800)
        self.send(REQUEST, mac=OTHER_MAC, ciaddr=addresses[0])
        self.send(REQUEST, mac=FOURTH_MAC, ciaddr=addresses[2])
        self.clock.advance(1801)
        self.assertEqual(self.send(DISCOVER, mac="02:00:00:00:00:09").yiaddr, addresses[1])

    def test_offerHoldExpires(self):
        """
        An address only offered is held for L{DHCPServer.offerHoldTime}, not
        a whole lease time.
        """
        address = self.send(DISCOVER, mac=OTHER_MAC).yiaddr
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})
        self.clock.advance(self.server.offerHoldTime)
        self.assertEqual(self.server.leases(), {})
        self.assertEqual(self.send(REQUEST, mac=THIRD_MAC, requested=address).type, ACK)

    def test_rediscoverKeepsBoundExpiry(self):
        """
        Discovering again while bound does not shorten the lease to the offer
        hold time.
        """
        address = self.bind(OTHER_MAC)
        self.send(DISCOVER, mac=OTHER_MAC)
        self.clock.advance(3000)
        self.assertEqual(self.server.leases(), {address: OTHER_MAC})

    def test_declineHoldsAddress(self):
        """
        A declined address (the client found it in use) leaves the pool for
        L{DHCPServer.declineHoldTime}; the client is offered another one.
        """
        address = self.bind(OTHER_MAC)
        self.send(DECLINE, mac=OTHER_MAC, requested=address, serverID=GATEWAY)
        self.assertEqual(self.server.leases(), {})
        self.assertEqual(self.counters.get("dhcp.decline"), 1)
        self.assertEqual(self.send(DISCOVER, mac=OTHER_MAC).yiaddr, SECOND_POOL)
        self.assertEqual(self.send(REQUEST, mac=THIRD_MAC, requested=address).type, NAK)
        self.clock.advance(self.server.declineHoldTime)
        self.assertEqual(self.send(REQUEST, mac=THIRD_MAC, requested=address).type, ACK)

    def test_declineNotOwnerIgnored(self):
        """
        Only the holder of an address can decline it; otherwise one guest
        could take every address out of the pool.
        """
        self.send(DECLINE, mac=OTHER_MAC, requested="192.168.127.40")
        self.assertEqual(self.counters.get("drop.dhcp.declineNotOwner"), 1)
        self.assertEqual(
            self.send(REQUEST, mac=THIRD_MAC, requested="192.168.127.40").type, ACK
        )

    def test_inform(self):
        """
        INFORM (the client configured its address itself) is ACKed with the
        configuration, its ciaddr echoed, no yiaddr and no lease time, and
        changes nothing in the table.
        """
        ack = self.send(INFORM, mac=OTHER_MAC, ciaddr="192.168.127.200", flags=0)
        self.assertEqual(ack.type, ACK)
        self.assertEqual(ack.packet.yiaddr, 0)
        self.assertEqual(ipStr(ack.packet.ciaddr), "192.168.127.200")
        self.assertNotIn(51, ack.options)
        self.assertNotIn(58, ack.options)
        self.assertEqual(ack.options[1], bytes([255, 255, 255, 0]))
        self.assertEqual(ack.options[26], struct.pack("!H", 1500))
        self.assertEqual(self.server.leases(), {})

    def test_tableCap(self):
        """
        With the table full of live leases a new client gets no offer and the
        refusal is counted; once a lease expires it is reclaimed.
        """
        self.makeServer(maxLeases=2)
        self.bind(OTHER_MAC)
        self.bind(THIRD_MAC)
        self.assertIsNone(self.send(DISCOVER, mac=FOURTH_MAC))
        self.assertIsNone(self.send(REQUEST, mac=FOURTH_MAC, requested="192.168.127.80"))
        self.assertEqual(self.counters.get("drop.dhcp.tableFull"), 2)
        self.assertEqual(len(self.server.leases()), 2)
        # Static leases are outside the cap: the device is always served.
        self.assertEqual(self.send(DISCOVER, mac=DEVICE_MAC).yiaddr, DEVICE_IP)
        self.clock.advance(3600)
        self.assertEqual(self.send(DISCOVER, mac=FOURTH_MAC).type, OFFER)
        self.assertEqual(len(self.server._leases), 2)

    def test_tableCapFloodOfDiscovers(self):
        """
        A flood of DISCOVERs from made-up MACs never grows the table past the
        cap.
        """
        self.makeServer(maxLeases=10)
        for i in range(50):
            self.send(DISCOVER, mac="02:00:00:00:01:%02x" % (i,))
        self.assertEqual(len(self.server._leases), 10)
        self.assertEqual(self.counters.get("drop.dhcp.tableFull"), 40)


class PerLinkTests(ServerMixin, SynchronousTestCase):
    """
    One guest link holds at most C{maxLeasesPerLink} live pool leases, so a
    flood of DISCOVERs or whole DORAs from one link cannot take the pool.
    """

    def setUp(self):
        self.links = {}
        self.clock = Clock()
        self.counters = Counters(self.clock)
        self.server = DHCPServer(makeConfig(maxLeasesPerLink=4), self.clock, self.counters,
                                 linkOf=lambda mac: self.links.get(mac, "flooder"))
        self.transport = FakeDatagramTransport()
        self.server.makeConnection(self.transport)

    def flood(self, count, dora):
        offers = 0
        for i in range(count):
            mac = "02:00:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255)
            reply = self.send(DISCOVER, mac=mac, xid=i)
            if reply is None:
                continue
            offers += 1
            if dora:
                self.send(REQUEST, mac=mac, xid=i, requested=reply.yiaddr, serverID=GATEWAY)
        return offers

    def test_discoverFlood(self):
        """
        300 DISCOVERs from one link get 4 offers; the rest are refused and
        counted; a client on another link still gets an offer at once.
        """
        self.assertEqual(self.flood(300, dora=False), 4)
        self.assertEqual(self.counters.get("drop.dhcp.linkLeasesFull"), 296)
        self.links[THIRD_MAC] = "newcomer"
        self.assertIsNotNone(self.send(DISCOVER, mac=THIRD_MAC))

    def test_offersFreeAfterHold(self):
        """
        Offers hold their addresses for a few seconds only: then the flooding
        link may be offered again.
        """
        self.flood(10, dora=False)
        self.clock.advance(self.server.offerHoldTime)
        self.assertIsNotNone(self.send(DISCOVER, mac="02:00:00:99:99:99"))

    def test_doraFlood(self):
        """
        300 full DORAs from one link bind 4 leases, not the pool; a new guest
        on another link is leased at once.
        """
        self.flood(300, dora=True)
        self.assertEqual(len(self.server.leases()), 4)
        self.links[THIRD_MAC] = "newcomer"
        offer = self.send(DISCOVER, mac=THIRD_MAC)
        ack = self.send(REQUEST, mac=THIRD_MAC, requested=offer.yiaddr, serverID=GATEWAY)
        self.assertEqual(ack.type, ACK)

    def test_renewNotCounted(self):
        """
        A client at the cap renews and re-discovers its own lease freely.
        """
        self.flood(4, dora=True)
        mac = "02:00:00:00:00:00"
        address = self.server._byMac[mac]
        ack = self.send(REQUEST, mac=mac, ciaddr=ipStr(address))
        self.assertEqual(ack.type, ACK)
        self.assertEqual(self.send(DISCOVER, mac=mac).yiaddr, ipStr(address))


class MalformedTests(ServerMixin, SynchronousTestCase):
    """
    Bad input is dropped and counted, with no reply and no exception.
    """

    def setUp(self):
        self.makeServer()

    def assertDropped(self, data, reason):
        self.server.datagramReceived(data, ("0.0.0.0", 68))
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.counters.get("drop.dhcp." + reason), 1, self.counters.snapshot())

    def test_short(self):
        """
        Fewer bytes than the BOOTP header and the magic cookie.
        """
        self.assertDropped(clientMessage(DISCOVER)[:239], "short")

    def test_reply(self):
        """
        A BOOTREPLY (another server's answer, or a reflection) is not for us.
        """
        data = bytearray(clientMessage(DISCOVER))
        data[0] = 2
        self.assertDropped(bytes(data), "notRequest")

    def test_badMagic(self):
        """
        Without the DHCP magic cookie it is plain BOOTP or garbage.
        """
        data = bytearray(clientMessage(DISCOVER))
        data[236:240] = b"\x00\x00\x00\x00"
        self.assertDropped(bytes(data), "badMagic")

    def test_badHardwareType(self):
        """
        Only Ethernet (htype 1, hlen 6) exists on this network.
        """
        data = bytearray(clientMessage(DISCOVER))
        data[1] = 6
        self.assertDropped(bytes(data), "badHardware")

    def test_badHardwareLength(self):
        """
        A hardware length other than 6 is not an Ethernet address.
        """
        data = bytearray(clientMessage(DISCOVER))
        data[2] = 16
        self.assertDropped(bytes(data), "badHardware")

    def test_multicastHardwareAddress(self):
        """
        A multicast chaddr cannot be a NIC; leasing to it would be wrong.
        """
        self.assertDropped(clientMessage(DISCOVER, mac="01:00:5e:00:00:01"), "badHardware")

    def test_noMessageType(self):
        """
        Without option 53 it is BOOTP, not DHCP.
        """
        packet = dpktDHCP.DHCP(clientMessage(DISCOVER))
        packet.opts = [opt for opt in packet.opts if opt[0] != 53]
        self.assertDropped(bytes(packet), "noMessageType")

    def test_serverMessageType(self):
        """
        A client cannot send OFFER, ACK or NAK.
        """
        self.assertDropped(clientMessage(OFFER), "badMessageType")

    def test_badRequestedAddressLength(self):
        """
        An option 50 that is not four bytes is malformed.
        """
        packet = dpktDHCP.DHCP(clientMessage(DISCOVER))
        packet.opts.append((50, b"\x01\x02\x03"))
        self.assertDropped(bytes(packet), "badOption")

    def test_truncatedOptions(self):
        """
        Options cut off before an option's length byte (dpkt raises on
        that) are counted as unparseable, not a crash.
        """
        data = clientMessage(DISCOVER)
        self.assertDropped(data[:240] + b"\x35", "unparseable")
        self.assertEqual(self.counters.get("drop.dhcp.internalError"), 0)

    def test_truncatedOptionValue(self):
        """
        A message type option whose value is cut off is not a message type.
        """
        data = clientMessage(DISCOVER)
        self.assertDropped(data[:240] + b"\x35\x01", "badMessageType")

    def test_noTransport(self):
        """
        A server not yet bound to a port counts what it could not send.
        """
        server = DHCPServer(makeConfig(), Clock(), self.counters)
        server.datagramReceived(clientMessage(DISCOVER), ("0.0.0.0", 68))
        self.assertEqual(self.counters.get("drop.dhcp.noTransport"), 1)

    def test_defaultCounters(self):
        """
        Without counters given the server keeps its own and still works.
        """
        server = DHCPServer(makeConfig(), Clock())
        transport = FakeDatagramTransport()
        server.makeConnection(transport)
        server.datagramReceived(b"junk", ("0.0.0.0", 68))
        server.datagramReceived(clientMessage(DISCOVER), ("0.0.0.0", 68))
        self.assertEqual(len(transport.written), 1)


def _validDiscovers():
    return st.sampled_from(
        [
            clientMessage(DISCOVER),
            clientMessage(DISCOVER, mac=DEVICE_MAC),
            clientMessage(REQUEST, requested=FIRST_POOL, serverID=GATEWAY),
            clientMessage(RELEASE, ciaddr=FIRST_POOL),
            clientMessage(DECLINE, requested=FIRST_POOL),
            clientMessage(INFORM, ciaddr=FIRST_POOL),
        ]
    )


@st.composite
def _mutated(draw):
    data = bytearray(draw(_validDiscovers()))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if kind == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] = draw(st.integers(0, 255))
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "insert":
            index = draw(st.integers(0, len(data)))
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            index = draw(st.integers(0, len(data) - 1))
            del data[index : index + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def _randomOptions(draw):
    """
    A well-formed header with arbitrary option codes and values, so that the
    option handling (not only the header checks) sees odd input.
    """
    options = [(53, bytes([draw(st.integers(0, 255))]))] if draw(st.booleans()) else []
    options += draw(
        st.lists(
            st.tuples(st.integers(1, 254), st.binary(max_size=20)), max_size=10
        )
    )
    packet = dpktDHCP.DHCP(
        op=1,
        chaddr=draw(st.binary(min_size=6, max_size=6)),
        ciaddr=draw(st.integers(0, 2**32 - 1)),
        opts=options,
        data=b"",
    )
    return bytes(packet)


class FuzzTests(ServerMixin, SynchronousTestCase):
    """
    Nothing a guest sends raises out of C{datagramReceived} or reaches the
    catch-all that counts internal errors.
    """

    def feed(self, data):
        self.server.datagramReceived(data, ("0.0.0.0", 68))
        self.assertEqual(self.counters.get("drop.dhcp.internalError"), 0)
        for written, addr in self.transport.written:
            self.assertEqual(addr, ("255.255.255.255", 68))
            self.assertEqual(Reply(written, addr).packet.op, 2)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=600))
    def test_randomBytes(self, data):
        """
        Random bytes never raise.
        """
        self.makeServer()
        self.feed(data)

    @settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
    @given(_mutated())
    def test_mutatedMessages(self, data):
        """
        Valid client messages with bytes flipped, cut, inserted or deleted
        never raise.
        """
        self.makeServer(maxLeases=4)
        self.feed(data)

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_randomOptions(), min_size=1, max_size=10))
    def test_randomOptionSequences(self, messages):
        """
        Sequences of messages with arbitrary options and client addresses
        never raise, and the table never passes its cap.
        """
        self.makeServer(maxLeases=3)
        for data in messages:
            self.feed(data)
        self.assertLessEqual(len(self.server._leases), 3)


class SearchDomainTests(SynchronousTestCase):
    """
    The search list: read from resolv.conf, encoded for option 119.
    """

    def resolvConf(self, text):
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        return path

    def test_searchLine(self):
        """
        The names of the C{search} line, in order.
        """
        path = self.resolvConf(
            "# generated\nnameserver 10.0.0.1\nsearch example.com corp.example.com\n"
        )
        self.assertEqual(
            searchDomainsFromResolvConf(path), ["example.com", "corp.example.com"]
        )

    def test_domainLine(self):
        """
        Without a C{search} line, the C{domain} line's name.
        """
        path = self.resolvConf("domain lab.example.org\nnameserver 10.0.0.1\n")
        self.assertEqual(searchDomainsFromResolvConf(path), ["lab.example.org"])

    def test_searchWinsOverDomain(self):
        """
        With both, the C{search} line is used.
        """
        path = self.resolvConf("search a.example\ndomain b.example\n")
        self.assertEqual(searchDomainsFromResolvConf(path), ["a.example"])

    def test_lastSearchLineWins(self):
        """
        As in the resolver, the last C{search} line counts.
        """
        path = self.resolvConf("search a.example\nsearch b.example c.example\n")
        self.assertEqual(searchDomainsFromResolvConf(path), ["b.example", "c.example"])

    def test_rootAndDotsDropped(self):
        """
        Trailing dots are removed and the root domain (systemd-resolved
        writes C{search .}) is not a search domain.
        """
        path = self.resolvConf("search . example.com. example.com\n")
        self.assertEqual(searchDomainsFromResolvConf(path), ["example.com"])

    def test_none(self):
        """
        A resolv.conf with neither line gives an empty list.
        """
        path = self.resolvConf("nameserver 10.0.0.1\n; search commented.example\n")
        self.assertEqual(searchDomainsFromResolvConf(path), [])

    def test_missingFile(self):
        """
        A missing file gives an empty list, not an error.
        """
        self.assertEqual(
            searchDomainsFromResolvConf("/nonexistent/dir/resolv.conf"), []
        )

    def test_encodeSkipsInvalidNames(self):
        """
        Names that cannot be on the wire (a 64-byte label, an empty label)
        are skipped and the rest are still encoded; repeats are dropped.
        """
        encoded = encodeSearchDomains(
            ["a" * 64 + ".example", "bad..example", "good.example", "GOOD.example"]
        )
        self.assertEqual(decodeNames(encoded), ["good.example"])

    def test_encodeCompression(self):
        """
        A shared suffix is written once and pointed to afterwards.
        """
        encoded = encodeSearchDomains(["a.example.com", "b.example.com", "example.com"])
        self.assertEqual(
            encoded,
            b"\x01a\x07example\x03com\x00" b"\x01b\xc0\x02" b"\xc0\x02",
        )
        self.assertEqual(
            decodeNames(encoded), ["a.example.com", "b.example.com", "example.com"]
        )
