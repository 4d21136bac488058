"""
Sender congestion control: slow start and congestion avoidance (RFC 5681,
counting bytes acknowledged), fast retransmit and NewReno fast recovery (RFC
6582), and the collapse after a retransmission timeout (RFC 5681 3.1).

The controller only keeps the window: sending, timing and retransmitting stay
with the connection, which asks it what to do at each event.
"""

# The largest congestion window: "no limit" in practice.
MAX_WINDOW = 1 << 30

# What L{NewReno.duplicateAck} asks of the connection.
DUP_NOTHING = 0
DUP_SEND = 1
DUP_FAST_RETRANSMIT = 2


class NewReno:
    """
    The congestion window of one connection.

    @ivar cwnd: the congestion window in bytes.
    @ivar ssthresh: the slow start threshold in bytes.
    @ivar dupAcks: consecutive duplicate ACKs seen.
    @ivar inRecovery: whether fast recovery is in progress.
    @ivar recoverEnd: RFC 6582's C{recover}: the highest sequence number sent
        when fast recovery (or the last timeout) began; an ACK at or above it
        ends recovery, and a new one starts only past it.
    """

    __slots__ = ("cwnd", "ssthresh", "caBytes", "dupAcks", "recoverEnd", "inRecovery")

    def __init__(self):
        self.cwnd = 0
        self.ssthresh = MAX_WINDOW
        self.caBytes = 0
        self.dupAcks = 0
        self.recoverEnd = 0
        self.inRecovery = False

    def start(self, mss, initialWindowSegments):
        """
        The handshake is complete: the initial window (RFC 6928's ten segments
        by default) and an unbounded threshold.
        """
        self.cwnd = initialWindowSegments * mss
        self.ssthresh = MAX_WINDOW

    def ackAdvanced(self, acked, ack, sndMax, mss):
        """
        C{acked} new bytes are acknowledged, up to C{ack}, with C{sndMax} the
        highest sequence number sent.

        @return: C{True} for a partial acknowledgement in fast recovery: the
            next hole is lost too and the connection retransmits it now.
        """
        partial = False
        if self.inRecovery:
            if ack >= self.recoverEnd:
                # Full acknowledgement: leave fast recovery (RFC 6582 3.2 step 3).
                self.inRecovery = False
                flight = sndMax - ack
                ssthresh = self.ssthresh
                cwnd = (flight if flight > mss else mss) + mss
                self.cwnd = ssthresh if ssthresh < cwnd else cwnd
            else:
                # Partial acknowledgement: deflate by what was acknowledged.
                partial = True
                cwnd = self.cwnd - acked + mss
                self.cwnd = cwnd if cwnd > mss else mss
        elif self.cwnd < self.ssthresh:
            # Slow start, counting bytes: the guest link is local and ACKs may be
            # stretched by the guest's GRO, so no per-ACK cap.
            self.cwnd += acked
        else:
            self.caBytes += acked
            if self.caBytes >= self.cwnd:
                self.caBytes -= self.cwnd
                self.cwnd += mss
        if self.cwnd > MAX_WINDOW:
            self.cwnd = MAX_WINDOW
        self.dupAcks = 0
        return partial

    def duplicateAck(self, sndUna, sndMax, mss):
        """
        A duplicate ACK (RFC 5681's definition): in recovery each one inflates
        the window; the third outside recovery starts fast retransmit.

        @return: L{DUP_NOTHING}, L{DUP_SEND} (the window grew: send what it
            allows) or L{DUP_FAST_RETRANSMIT} (retransmit the first segment,
            then send).
        """
        self.dupAcks += 1
        if self.inRecovery:
            self.cwnd += mss
            return DUP_SEND
        if self.dupAcks == 3 and sndUna > self.recoverEnd:
            flight = sndMax - sndUna
            self.ssthresh = max(flight // 2, 2 * mss)
            self.recoverEnd = sndMax
            self.inRecovery = True
            self.cwnd = self.ssthresh + 3 * mss
            return DUP_FAST_RETRANSMIT
        return DUP_NOTHING

    def timedOut(self, sndUna, sndMax, mss):
        """
        The retransmission timer expired: half the flight becomes the
        threshold, the window one segment, and recovery is over.
        """
        self.ssthresh = max((sndMax - sndUna) // 2, 2 * mss)
        self.cwnd = mss
        self.caBytes = 0
        self.inRecovery = False
        self.dupAcks = 0
        self.recoverEnd = sndMax
