"""
The round-trip time estimator and retransmission timeout of RFC 6298.

It only does arithmetic: which samples to feed it is the connection's choice
(Karn's rule: never a segment that was retransmitted, unless the sample comes
from an echoed timestamp, RFC 7323 4.1), and so is when to back off.
"""


class RttEstimator:
    """
    SRTT, RTTVAR and the RTO they give (RFC 6298 2), with exponential backoff
    (5.5) and the RTO clamped to C{[minRto, maxRto]}.

    @ivar srtt: the smoothed round-trip time in seconds, C{None} before the
        first sample.
    @ivar rttvar: the round-trip time variation in seconds.
    @ivar rto: the current retransmission timeout in seconds.
    """

    __slots__ = ("srtt", "rttvar", "rto", "minRto", "maxRto", "granularity")

    def __init__(self, initialRto=1.0, minRto=0.2, maxRto=60.0, granularity=0.001):
        """
        @param initialRto: the RTO before any sample (RFC 6298 2.1 says 1 s).
        @param minRto: the lowest RTO a sample can give (RFC 6298 says 1 s; a
            virtual link is far faster, so the connection passes 200 ms as Linux).
        @param maxRto: the highest RTO, sample or backoff.
        @param granularity: G, the clock granularity, the least of C{4 * RTTVAR}.
        """
        self.srtt = None
        self.rttvar = 0.0
        self.rto = initialRto
        self.minRto = minRto
        self.maxRto = maxRto
        self.granularity = granularity

    def sample(self, rtt):
        """
        Take one round-trip measurement (RFC 6298 2.2 for the first, 2.3 after);
        a negative one (a clock that went back) counts as zero.

        @return: the new RTO.
        """
        if rtt < 0:
            rtt = 0.0
        srtt = self.srtt
        if srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            delta = srtt - rtt
            self.rttvar = 0.75 * self.rttvar + 0.25 * (delta if delta > 0 else -delta)
            self.srtt = 0.875 * srtt + 0.125 * rtt
        var = 4 * self.rttvar
        granularity = self.granularity
        rto = self.srtt + (var if var > granularity else granularity)
        if rto < self.minRto:
            rto = self.minRto
        elif rto > self.maxRto:
            rto = self.maxRto
        self.rto = rto
        return rto

    def backoff(self, rto=None):
        """
        The timer expired: double the RTO, up to C{maxRto} (RFC 6298 5.5).

        @param rto: the RTO to double, if not L{rto} (a connection caches the
            RTO in an attribute of its own, read on every ACK).
        @return: the new RTO.
        """
        if rto is None:
            rto = self.rto
        rto = rto * 2
        if rto > self.maxRto:
            rto = self.maxRto
        self.rto = rto
        return rto
