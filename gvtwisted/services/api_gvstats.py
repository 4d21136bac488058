"""
C{GET /stats} in gvproxy's shape: gVisor's C{tcpip.Stats} tree (every
C{*StatCounter} of the gVisor version gvisor-tap-vsock v0.8.9 vendors, by its
Go field name, structs as nested objects, embedded structs under their type's
name) with C{BytesSent} (to the guests) and C{BytesReceived} (from them) at
the root. Tools that watch a gvproxy VM read these two, and some the TCP
group.

gvtap has no gVisor stack: the leaves it has an equivalent for are filled
from its own counters (L{LEAVES}), every other leaf is 0. gvtap's own
counters and gauges are served, unchanged, at C{/gvtap/stats} and
C{/metrics}.
"""

from gvtwisted.services.api_stats import gauges

# (group, its leaves): the gVisor tree, group by group.
GROUPS = (
    ("", "DroppedPackets"),
    ("NICs", "MalformedL4RcvdPackets TxPacketsDroppedNoBufferSpace"),
    ("NICs.Tx", "Packets Bytes"),
    ("NICs.Rx", "Packets Bytes"),
    ("NICs.DisabledRx", "Packets Bytes"),
    ("NICs.Neighbor", "UnreachableEntryLookups DroppedConfirmationForNoninitiatedNeighbor "
        "DroppedInvalidLinkAddressConfirmations"),
    ("ICMP", ""),
    ("ICMP.V4", ""),
    ("ICMP.V4.PacketsSent", "Dropped RateLimited"),
    ("ICMP.V4.PacketsSent.ICMPv4PacketStats", "EchoRequest EchoReply DstUnreachable SrcQuench Redirect TimeExceeded "
        "ParamProblem Timestamp TimestampReply InfoRequest InfoReply"),
    ("ICMP.V4.PacketsReceived", "Invalid"),
    ("ICMP.V4.PacketsReceived.ICMPv4PacketStats", "EchoRequest EchoReply DstUnreachable SrcQuench Redirect TimeExceeded "
        "ParamProblem Timestamp TimestampReply InfoRequest InfoReply"),
    ("ICMP.V6", ""),
    ("ICMP.V6.PacketsSent", "Dropped RateLimited"),
    ("ICMP.V6.PacketsSent.ICMPv6PacketStats", "EchoRequest EchoReply DstUnreachable PacketTooBig TimeExceeded ParamProblem "
        "RouterSolicit RouterAdvert NeighborSolicit NeighborAdvert RedirectMsg "
        "MulticastListenerQuery MulticastListenerReport MulticastListenerReportV2 "
        "MulticastListenerDone"),
    ("ICMP.V6.PacketsReceived", "Unrecognized Invalid RouterOnlyPacketsDroppedByHost"),
    ("ICMP.V6.PacketsReceived.ICMPv6PacketStats", "EchoRequest EchoReply DstUnreachable PacketTooBig TimeExceeded ParamProblem "
        "RouterSolicit RouterAdvert NeighborSolicit NeighborAdvert RedirectMsg "
        "MulticastListenerQuery MulticastListenerReport MulticastListenerReportV2 "
        "MulticastListenerDone"),
    ("IGMP", ""),
    ("IGMP.PacketsSent", "Dropped"),
    ("IGMP.PacketsSent.IGMPPacketStats", "MembershipQuery V1MembershipReport V2MembershipReport V3MembershipReport "
        "LeaveGroup"),
    ("IGMP.PacketsReceived", "Invalid ChecksumErrors Unrecognized"),
    ("IGMP.PacketsReceived.IGMPPacketStats", "MembershipQuery V1MembershipReport V2MembershipReport V3MembershipReport "
        "LeaveGroup"),
    ("IP", "PacketsReceived ValidPacketsReceived DisabledPacketsReceived "
        "InvalidDestinationAddressesReceived InvalidSourceAddressesReceived "
        "PacketsDelivered PacketsSent OutgoingPacketErrors MalformedPacketsReceived "
        "MalformedFragmentsReceived IPTablesPreroutingDropped IPTablesInputDropped "
        "IPTablesForwardDropped IPTablesOutputDropped IPTablesPostroutingDropped "
        "OptionTimestampReceived OptionRecordRouteReceived OptionRouterAlertReceived "
        "OptionUnknownReceived"),
    ("IP.Forwarding", "Unrouteable ExhaustedTTL InitializingSource LinkLocalSource LinkLocalDestination "
        "PacketTooBig HostUnreachable ExtensionHeaderProblem "
        "UnexpectedMulticastInputInterface UnknownOutputEndpoint "
        "NoMulticastPendingQueueBufferSpace OutgoingDeviceNoBufferSpace Errors"),
    ("ARP", "PacketsReceived DisabledPacketsReceived MalformedPacketsReceived "
        "RequestsReceived RequestsReceivedUnknownTargetAddress "
        "OutgoingRequestInterfaceHasNoLocalAddressErrors "
        "OutgoingRequestBadLocalAddressErrors OutgoingRequestsDropped "
        "OutgoingRequestsSent RepliesReceived OutgoingRepliesDropped OutgoingRepliesSent"),
    ("TCP", "ActiveConnectionOpenings PassiveConnectionOpenings CurrentEstablished "
        "CurrentConnected EstablishedResets EstablishedClosed EstablishedTimedout "
        "ListenOverflowSynDrop ListenOverflowAckDrop ListenOverflowSynCookieSent "
        "ListenOverflowSynCookieRcvd ListenOverflowInvalidSynCookieRcvd "
        "FailedConnectionAttempts ValidSegmentsReceived InvalidSegmentsReceived "
        "SegmentsSent SegmentSendErrors ResetsSent ResetsReceived Retransmits "
        "FastRecovery SACKRecovery TLPRecovery SlowStartRetransmits FastRetransmit "
        "Timeouts ChecksumErrors FailedPortReservations SegmentsAckedWithDSACK "
        "SpuriousRecovery SpuriousRTORecovery ForwardMaxInFlightDrop"),
    ("UDP", "PacketsReceived UnknownPortErrors ReceiveBufferErrors MalformedPacketsReceived "
        "PacketsSent PacketSendErrors ChecksumErrors"),)

# gVisor leaf -> the gvtap counters (or, with "gauge:", gauges) that add up
# to it. Only honest equivalents: what is not here stays 0.
LEAVES = {
    "DroppedPackets": ("drop.*",),
    "NICs.Tx.Packets": ("link.framesSent",),
    "NICs.Tx.Bytes": ("link.bytesSent",),
    "NICs.Rx.Packets": ("link.framesReceived",),
    "NICs.Rx.Bytes": ("link.bytesReceived",),
    "ARP.RequestsReceived": ("arp.replies", "arp.ignored"),
    "ARP.RequestsReceivedUnknownTargetAddress": ("arp.ignored",),
    "ARP.MalformedPacketsReceived": ("drop.arp.malformed",),
    "ARP.OutgoingRepliesSent": ("arp.replies",),
    "IP.PacketsReceived": ("ipv4.received",),
    "IP.InvalidSourceAddressesReceived": ("drop.ipv4.foreignSource", "drop.ipv4.spoofedSource"),
    "ICMP.V4.PacketsSent.ICMPv4PacketStats.EchoReply": ("icmp.echoReplies",),
    "ICMP.V4.PacketsReceived.ICMPv4PacketStats.EchoRequest": ("icmp.echoReplies",
                                                               "nat.icmp.echoRequestsOut"),
    "ICMP.V4.PacketsSent.ICMPv4PacketStats.DstUnreachable": ("icmp.errorsSent",),
    "TCP.PassiveConnectionOpenings": ("nat.tcp.dials",),
    "TCP.ActiveConnectionOpenings": ("forward.tcp.connections", "api.tunnel.opened"),
    "TCP.FailedConnectionAttempts": ("forward.tcp.guestRefused", "api.tunnel.failed"),
    "TCP.CurrentEstablished": ("gauge:tcp.connections",),
    "TCP.CurrentConnected": ("gauge:tcp.connections",),
    "TCP.ResetsSent": ("tcp.resetsSent",),
    "TCP.ChecksumErrors": ("drop.tcp.checksum",),
    "TCP.InvalidSegmentsReceived": ("drop.tcp.checksum", "drop.tcp.malformed"),
    "UDP.PacketsReceived": ("nat.udp.datagramsOut", "udp.local"),
    "UDP.PacketsSent": ("nat.udp.datagramsIn",),
    "UDP.UnknownPortErrors": ("drop.udp.noListener",),
    "UDP.ChecksumErrors": ("drop.udp.checksum",),
}


def _value(names, counters, gaugeValues):
    total = 0
    for name in names:
        if name == "drop.*":
            total += sum(v for k, v in counters.items() if k.startswith("drop."))
        elif name.startswith("gauge:"):
            total += gaugeValues.get(name[len("gauge:"):], 0)
        else:
            total += counters.get(name, 0)
    return total


def gvisorStats(gvtap) -> dict:
    """
    The body of C{GET /stats}: gVisor's tree with gvtap's numbers, keys
    sorted at every level (as Go encodes a map).
    """
    counters = dict(gvtap.counters.values)
    gaugeValues = gauges(gvtap)
    root = {}
    for group, leaves in GROUPS:
        node = root
        for part in group.split(".") if group else ():
            node = node.setdefault(part, {})
        for leaf in leaves.split():
            path = f"{group}.{leaf}" if group else leaf
            names = LEAVES.get(path)
            node[leaf] = _value(names, counters, gaugeValues) if names else 0
    root["BytesSent"] = counters.get("link.bytesSent", 0)
    root["BytesReceived"] = counters.get("link.bytesReceived", 0)
    return _sorted(root)


def _sorted(node):
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node)}
    return node
