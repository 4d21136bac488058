"""
The NAT: everything the guest sends to an address that is not the gateway's
becomes ordinary host sockets. One object per protocol; this one is what the
virtual network calls.
"""


class NAT:
    """
    Dispatches the guest's non-local traffic to the TCP, UDP and ICMP NATs.
    """

    def __init__(self, tcp, udp=None, icmp=None):
        self.tcp = tcp
        self.udp = udp
        self.icmp = icmp

    def tcpSyn(self, conn):
        self.tcp.tcpSyn(conn)

    def udpReceived(self, packet, srcPort, dstPort, data):
        if self.udp is not None:
            self.udp.udpReceived(packet, srcPort, dstPort, data)

    def icmpReceived(self, packet, icmpType, code, rest):
        if self.icmp is not None:
            self.icmp.icmpReceived(packet, icmpType, code, rest)

    def stop(self):
        for part in (self.udp, self.icmp):
            if part is not None:
                part.stop()
