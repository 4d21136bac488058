"""
Tests for L{gvtwisted.stack.tcp.rtt.RttEstimator} (RFC 6298).
"""

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.tcp import RttEstimator


class RttEstimatorTests(SynchronousTestCase):
    def test_initial(self):
        """
        Before any sample the RTO is the initial one and SRTT is unknown.
        """
        rtt = RttEstimator(initialRto=1.0)
        self.assertEqual((rtt.rto, rtt.srtt), (1.0, None))

    def test_firstSample(self):
        """
        The first sample R sets SRTT = R, RTTVAR = R / 2, so RTO = 3 R (RFC
        6298 2.2).
        """
        rtt = RttEstimator(minRto=0.2)
        self.assertEqual(rtt.sample(1.0), 3.0)
        self.assertEqual((rtt.srtt, rtt.rttvar, rtt.rto), (1.0, 0.5, 3.0))

    def test_laterSample(self):
        """
        Later samples are smoothed with alpha 1/8 and beta 1/4 (RFC 6298 2.3).
        """
        rtt = RttEstimator(minRto=0.0)
        rtt.sample(1.0)
        rto = rtt.sample(2.0)
        self.assertEqual(rtt.rttvar, 0.75 * 0.5 + 0.25 * 1.0)
        self.assertEqual(rtt.srtt, 0.875 * 1.0 + 0.125 * 2.0)
        self.assertEqual(rto, rtt.srtt + 4 * rtt.rttvar)

    def test_clamped(self):
        """
        The RTO stays within [minRto, maxRto]; a tiny RTTVAR counts as the clock
        granularity.
        """
        rtt = RttEstimator(minRto=0.2, maxRto=60.0, granularity=0.001)
        self.assertEqual(rtt.sample(0.001), 0.2)
        self.assertEqual(RttEstimator(maxRto=60.0).sample(100.0), 60.0)
        steady = RttEstimator(minRto=0.0, granularity=0.5)
        for _ in range(200):
            steady.sample(1.0)
        self.assertAlmostEqual(steady.rto, 1.5)

    def test_negativeSample(self):
        """
        A negative sample (a clock that went back) counts as zero.
        """
        rtt = RttEstimator(minRto=0.0, granularity=0.001)
        rtt.sample(-5.0)
        self.assertEqual((rtt.srtt, rtt.rto), (0.0, 0.001))

    def test_backoff(self):
        """
        Each backoff doubles the RTO up to maxRto (RFC 6298 5.5); a given RTO is
        doubled instead of the estimator's own.
        """
        rtt = RttEstimator(initialRto=1.0, maxRto=5.0)
        self.assertEqual([rtt.backoff() for _ in range(4)], [2.0, 4.0, 5.0, 5.0])
        self.assertEqual(rtt.backoff(0.5), 1.0)
        self.assertEqual(rtt.rto, 1.0)
