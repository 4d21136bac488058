"""
Tests for L{gvtwisted.wire.baresegment}: which frames the guest helper may hold
back until the end of a TAP read. Frames are built with dpkt, not with the code
under test.
"""

import socket

import dpkt

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.wire.baresegment import isBareSegment

MAC_A = bytes.fromhex("5a94efe40cee")
MAC_B = bytes.fromhex("5a94efe40cdd")
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(8)


def tcp(payload=b"", flags=dpkt.tcp.TH_ACK, options=TIMESTAMPS):
    return dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=1, flags=flags,
                        off=5 + len(options) // 4, opts=options, data=payload)


def ether(packet, kind):
    return bytes(dpkt.ethernet.Ethernet(dst=MAC_B, src=MAC_A, type=kind, data=packet))


def ipv4(segment, protocol=dpkt.ip.IP_PROTO_TCP, options=b""):
    packet = dpkt.ip.IP(src=socket.inet_aton("192.168.127.2"),
                        dst=socket.inet_aton("192.168.127.1"), p=protocol,
                        opts=options, data=segment)
    packet.hl = 5 + len(options) // 4
    return ether(packet, dpkt.ethernet.ETH_TYPE_IP)


def ipv6(segment, nextHeader=dpkt.ip.IP_PROTO_TCP):
    packet = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "fd00::2"),
                          dst=socket.inet_pton(socket.AF_INET6, "fd00::1"),
                          nxt=nextHeader, hlim=64, data=segment)
    packet.plen = len(bytes(segment))
    return ether(packet, dpkt.ethernet.ETH_TYPE_IP6)


class BareSegmentTests(SynchronousTestCase):
    """
    L{isBareSegment} is true exactly for TCP segments without data or SYN.
    """

    def test_bareOverIPv4(self):
        """
        An ACK, a FIN and a RST without data are bare, with or without TCP
        options.
        """
        for flags in (dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK,
                      dpkt.tcp.TH_RST, dpkt.tcp.TH_ACK | dpkt.tcp.TH_ECE):
            for options in (b"", TIMESTAMPS):
                self.assertTrue(isBareSegment(ipv4(tcp(flags=flags, options=options))),
                                (flags, options))

    def test_requestsOverIPv4(self):
        """
        A segment with data (one byte is enough), or with SYN, is not bare.
        """
        self.assertFalse(isBareSegment(ipv4(tcp(b"x"))))
        self.assertFalse(isBareSegment(ipv4(tcp(b"x", dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK))))
        self.assertFalse(isBareSegment(ipv4(tcp(flags=dpkt.tcp.TH_SYN))))
        self.assertFalse(isBareSegment(ipv4(tcp(flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK))))

    def test_ipv4Options(self):
        """
        The TCP header is found behind IPv4 options.
        """
        options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
        self.assertTrue(isBareSegment(ipv4(tcp(), options=options)))
        self.assertFalse(isBareSegment(ipv4(tcp(b"data"), options=options)))

    def test_ipv6(self):
        """
        IPv6 TCP segments are told the same way; one behind an extension
        header counts as not bare.
        """
        self.assertTrue(isBareSegment(ipv6(tcp())))
        self.assertFalse(isBareSegment(ipv6(tcp(b"x"))))
        self.assertFalse(isBareSegment(ipv6(tcp(flags=dpkt.tcp.TH_SYN))))
        hopByHop = b"\x06\x00" + bytes(6) + bytes(tcp())
        self.assertFalse(isBareSegment(ipv6(hopByHop, dpkt.ip.IP_PROTO_HOPOPTS)))

    def test_otherFrames(self):
        """
        UDP, ICMP, ARP and frames too short for the headers are not bare.
        """
        udp = dpkt.udp.UDP(sport=5353, dport=53, data=b"q")
        udp.ulen = 8 + 1
        self.assertFalse(isBareSegment(ipv4(udp, dpkt.ip.IP_PROTO_UDP)))
        echo = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1))
        self.assertFalse(isBareSegment(ipv4(echo, dpkt.ip.IP_PROTO_ICMP)))
        arp = dpkt.arp.ARP(sha=MAC_A, spa=socket.inet_aton("192.168.127.2"),
                           tpa=socket.inet_aton("192.168.127.1"))
        self.assertFalse(isBareSegment(ether(arp, dpkt.ethernet.ETH_TYPE_ARP)))
        ack = ipv4(tcp())
        for cut in (0, 13, 30, 53, len(ack) - 1):
            self.assertFalse(isBareSegment(ack[:cut]), cut)

    def test_offset(self):
        """
        The frame is read from C{offset} on (past a virtio-net header).
        """
        ack = ipv4(tcp())
        data = ipv4(tcp(b"x"))
        self.assertTrue(isBareSegment(bytes(10) + ack, 10))
        self.assertFalse(isBareSegment(bytes(10) + data, 10))
        self.assertFalse(isBareSegment(bytes(10) + ack))
