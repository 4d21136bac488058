"""
The network's view of one switch port: a link interface, as smoltcp's C{iface}.

Everything a guest holds is tied to the link it came from, so that what
happens to the link (it fills up, it drops, it comes back) reaches exactly
that guest's state and nothing else, without scanning any global table:

  - the link's pause state: a TCP connection holds a reference to its link
    and looks at C{link.paused} before it emits data; one that finds it paused
    joins the link's C{blocked} set, and a resume walks that set only, one
    connection at a time, stopping as soon as the link pauses again (so no
    connection ever sends into a paused link);
  - the MAC addresses learnt on it (at most C{maxMACs}: a link that floods
    source addresses evicts only its own);
  - the ARP neighbours learnt from it (an IP address whose MAC is one of the
    link's);
  - the TCP connections and the UDP and ICMP NAT flows whose guest end is
    behind it.

When the port goes away the interface goes I{down}: frames for its MACs are
dropped, and its state is kept for a grace period. A new port that shows one of
its MACs within that time takes everything over (L{takeOver}); otherwise
L{gvtwisted.stack.switch.Switch} calls the listeners' C{linkExpired}, which
abort the connections, free the flows and forget the neighbours.
"""

from twisted.logger import Logger


class LinkInterface:
    """
    @ivar port: the switch port (an object with C{sendFrame}), or L{None}
        once the link is down.
    @ivar name: the port's name, for logs and the API.
    @ivar up: whether the port is attached.
    @ivar paused: whether the link asked us to stop sending.
    @ivar macs: MAC (6 bytes) to the time it was last seen as a source, or
        L{None} for a permanent address.
    @ivar neighbours: guest IP (4 bytes) to the MAC it was learnt at.
    @ivar conns: the TCP connections whose guest end is behind this link.
    @ivar flows: the NAT flows (UDP, ICMP) of guests behind this link, each
        to the table that holds it.
    @ivar dialing: how many NAT dials for guests behind this link are in
        flight.
    @ivar blocked: the connections that found the link paused and wait for
        L{resume} (a dict used as an ordered set: first blocked, first served).
    """

    __slots__ = ("port", "name", "up", "paused", "macs", "neighbours", "conns",
                 "flows", "blocked", "graceCall", "dialing", "_resuming")

    log = Logger()

    def __init__(self, port, name=None):
        self.port = port
        self.name = name if name is not None else getattr(port, "name", repr(port))
        self.up = True
        self.paused = False
        self.macs = {}
        self.neighbours = {}
        self.conns = set()
        self.flows = {}
        self.blocked = {}
        self.graceCall = None
        self.dialing = 0
        self._resuming = False

    def __repr__(self):
        state = "up" if self.up else "down"
        if self.paused:
            state += ",paused"
        return (f"<LinkInterface {self.name} {state} macs={len(self.macs)}"
                f" conns={len(self.conns)} flows={len(self.flows)}>")

    # -- pause and resume ----------------------------------------------------

    def pause(self):
        """
        The link cannot take more frames: nothing else to do, since every
        connection looks at C{paused} before it sends.
        """
        self.paused = True

    def resume(self):
        """
        The link takes frames again: let the blocked connections send, in the
        order they blocked, for as long as the link stays unpaused.
        """
        if not self.paused:
            return
        self.paused = False
        self.runBlocked()

    def block(self, conn):
        """
        C{conn} has something to send and found the link paused.
        """
        self.blocked[conn] = None

    def runBlocked(self):
        """
        Give each blocked connection its turn, re-checking the pause state
        before every one: a connection whose output pauses the link again
        blocks itself anew, and the rest wait for the next resume. A resume
        that happens inside this loop does not start a second one.
        """
        if self._resuming:
            return
        self._resuming = True
        blocked = self.blocked
        try:
            while blocked and not self.paused:
                conn = next(iter(blocked))
                del blocked[conn]
                try:
                    conn.linkResumed()
                except Exception:
                    self.log.failure("resuming {conn} on {link} failed", conn=conn,
                                     link=self.name)
        finally:
            self._resuming = False

    # -- what the link holds ---------------------------------------------------

    def addConnection(self, conn):
        conn.link = self
        self.conns.add(conn)

    def removeConnection(self, conn):
        self.conns.discard(conn)
        self.blocked.pop(conn, None)

    def addFlow(self, flow, table):
        flow.link = self
        self.flows[flow] = table

    def removeFlow(self, flow):
        self.flows.pop(flow, None)

    def oldestMAC(self):
        """
        The least recently seen learnt MAC, or L{None} (a scan of this link's
        own entries only, at most its cap).
        """
        oldest = None
        for mac, seen in self.macs.items():
            if seen is not None and (oldest is None or seen < oldest[0]):
                oldest = (seen, mac)
        return oldest[1] if oldest is not None else None

    def takeOver(self, old):
        """
        Adopt everything the down interface C{old} held: its MACs, neighbours,
        connections and flows now belong to this link.
        """
        for mac, seen in old.macs.items():
            self.macs[mac] = seen
        old.macs = {}
        self.neighbours.update(old.neighbours)
        old.neighbours = {}
        for conn in old.conns:
            conn.link = self
        self.conns.update(old.conns)
        old.conns = set()
        for flow, table in old.flows.items():
            flow.link = self
            self.flows[flow] = table
        old.flows = {}
        for conn in old.blocked:
            self.blocked[conn] = None
        old.blocked = {}
        if not self.paused:
            self.runBlocked()
