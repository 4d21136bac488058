"""
The global budget of bytes buffered by all virtual TCP connections
(C{--max-buffered-bytes}): their send buffers (written by the protocol, not
yet acknowledged by the guest), their out-of-order queues and the in-order
data a paused protocol has not taken yet.

Each connection keeps its own buffers bounded already (its windows); the
budget bounds the sum, which would otherwise reach gigabytes at the
connection cap. Past the budget nothing is dropped: windows close. A
connection that wants to buffer more (open its receive window further, or
let its producer write more) joins the budget's blocked set instead; when the
total drops below the budget again the blocked connections, and only those,
are resumed, one at a time in a later reactor turn, re-checking the budget
at every step (as the link's blocked set does, L{gvtwisted.stack.iface}).
"""

from twisted.logger import Logger


class BufferBudget:
    """
    Bytes buffered across connections, against C{limit}.

    Connections report changes of what they hold with L{charge} (a signed
    delta, O(1)); L{exhausted} says whether they may buffer more; L{block}
    registers one to be resumed (its C{budgetResumed()} is called) once the
    total is below the limit again.

    @ivar limit: the budget in bytes.
    @ivar used: the bytes held now, summed over connections.
    @ivar blocked: the connections waiting for room, in the order they came
        (a dict used as an ordered set).
    """

    __slots__ = ("limit", "used", "blocked", "_clock", "_resumeCall", "_counters")

    log = Logger()

    def __init__(self, clock, limit, counters=None):
        """
        @param clock: an C{IReactorTime}: resumes run in a later turn, never
            inside the segment or acknowledgement that freed the room.
        @param limit: the budget in bytes (positive).
        @param counters: C{None} or a L{gvtwisted.stack.counters.Counters}:
            C{tcp.bufferBudgetBlocked} counts connections that had to wait.
        """
        if limit <= 0:
            raise ValueError(f"buffer budget must be positive, not {limit!r}")
        self.limit = limit
        self.used = 0
        self.blocked = {}
        self._clock = clock
        self._resumeCall = None
        self._counters = counters

    @property
    def exhausted(self):
        """
        Whether the total is at or past the budget.
        """
        return self.used >= self.limit

    def charge(self, delta):
        """
        A connection's holdings grew (C{delta} > 0) or shrank (C{delta} < 0).
        """
        used = self.used + delta
        self.used = used
        if delta < 0 and self.blocked and used < self.limit and self._resumeCall is None:
            self._resumeCall = self._clock.callLater(0, self._resume)

    def block(self, conn):
        """
        C{conn} wants to buffer more but the budget is spent: call its
        C{budgetResumed()} once there is room.
        """
        if conn not in self.blocked:
            self.blocked[conn] = None
            counters = self._counters
            if counters is not None:
                counters.increment("tcp.bufferBudgetBlocked")
            if self.used < self.limit and self._resumeCall is None:
                self._resumeCall = self._clock.callLater(0, self._resume)

    def forget(self, conn):
        """
        C{conn} closed: it no longer waits.
        """
        self.blocked.pop(conn, None)

    def _resume(self):
        """
        Resume blocked connections in the order they blocked while there is
        room; one that fills the budget again leaves the rest waiting for
        the next release.
        """
        self._resumeCall = None
        blocked = self.blocked
        while blocked and self.used < self.limit:
            conn = next(iter(blocked))
            del blocked[conn]
            try:
                conn.budgetResumed()
            except Exception:
                self.log.failure("budgetResumed of {conn} failed", conn=conn)
