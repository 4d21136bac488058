"""
Tests for L{gvtwisted.stack.tcp.congestion.NewReno} (RFC 5681, 6582).
"""

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.tcp import NewReno
from gvtwisted.stack.tcp.congestion import (
    DUP_FAST_RETRANSMIT,
    DUP_NOTHING,
    DUP_SEND,
    MAX_WINDOW,
)

MSS = 1000


class NewRenoTests(SynchronousTestCase):
    def started(self):
        cc = NewReno()
        cc.start(MSS, 10)
        return cc

    def test_start(self):
        """
        The initial window is the given number of segments; the threshold is
        unbounded.
        """
        cc = self.started()
        self.assertEqual((cc.cwnd, cc.ssthresh), (10 * MSS, MAX_WINDOW))

    def test_slowStart(self):
        """
        Below the threshold the window grows by every byte acknowledged, with no
        per-ACK cap.
        """
        cc = self.started()
        self.assertFalse(cc.ackAdvanced(5 * MSS, 5 * MSS, 10 * MSS, MSS))
        self.assertEqual(cc.cwnd, 15 * MSS)

    def test_congestionAvoidance(self):
        """
        At or above the threshold the window grows one MSS per window of bytes
        acknowledged.
        """
        cc = self.started()
        cc.ssthresh = cc.cwnd
        cc.ackAdvanced(9 * MSS, 9 * MSS, 20 * MSS, MSS)
        self.assertEqual(cc.cwnd, 10 * MSS)
        cc.ackAdvanced(1 * MSS, 10 * MSS, 20 * MSS, MSS)
        self.assertEqual((cc.cwnd, cc.caBytes), (11 * MSS, 0))

    def test_fastRetransmit(self):
        """
        The third duplicate ACK starts fast recovery: ssthresh half the flight,
        cwnd ssthresh + 3 MSS; later duplicates inflate the window.
        """
        cc = self.started()
        self.assertEqual(cc.duplicateAck(100, 100 + 20 * MSS, MSS), DUP_NOTHING)
        self.assertEqual(cc.duplicateAck(100, 100 + 20 * MSS, MSS), DUP_NOTHING)
        self.assertEqual(cc.duplicateAck(100, 100 + 20 * MSS, MSS), DUP_FAST_RETRANSMIT)
        self.assertTrue(cc.inRecovery)
        self.assertEqual((cc.ssthresh, cc.cwnd, cc.recoverEnd),
                         (10 * MSS, 13 * MSS, 100 + 20 * MSS))
        self.assertEqual(cc.duplicateAck(100, 100 + 20 * MSS, MSS), DUP_SEND)
        self.assertEqual(cc.cwnd, 14 * MSS)

    def test_noFastRetransmitBelowRecover(self):
        """
        Duplicate ACKs at or below the last recovery point do not start a new
        recovery (RFC 6582 4.1).
        """
        cc = self.started()
        cc.recoverEnd = 500
        for _ in range(3):
            what = cc.duplicateAck(500, 500 + 20 * MSS, MSS)
        self.assertEqual(what, DUP_NOTHING)
        self.assertFalse(cc.inRecovery)

    def test_partialAndFullAck(self):
        """
        In recovery an ACK below the recovery point is partial (the caller
        retransmits, the window deflates); one at or past it ends recovery with
        cwnd min(ssthresh, flight + MSS).
        """
        cc = self.started()
        cc.recoverEnd = -1
        for _ in range(3):
            cc.duplicateAck(0, 20 * MSS, MSS)
        self.assertTrue(cc.ackAdvanced(2 * MSS, 2 * MSS, 20 * MSS, MSS))
        self.assertEqual(cc.cwnd, 13 * MSS - 2 * MSS + MSS)
        self.assertTrue(cc.inRecovery)
        self.assertFalse(cc.ackAdvanced(18 * MSS, 20 * MSS, 25 * MSS, MSS))
        self.assertFalse(cc.inRecovery)
        self.assertEqual(cc.cwnd, min(10 * MSS, 5 * MSS + MSS))
        self.assertEqual(cc.dupAcks, 0)

    def test_timedOut(self):
        """
        A timeout collapses the window to one MSS, halves the flight into the
        threshold and ends recovery.
        """
        cc = self.started()
        for _ in range(3):
            cc.duplicateAck(0, 20 * MSS, MSS)
        cc.timedOut(0, 3 * MSS, MSS)
        self.assertEqual((cc.cwnd, cc.ssthresh, cc.inRecovery, cc.dupAcks, cc.recoverEnd),
                         (MSS, 2 * MSS, False, 0, 3 * MSS))

    def test_capped(self):
        """
        The window never exceeds L{MAX_WINDOW}.
        """
        cc = self.started()
        cc.ackAdvanced(MAX_WINDOW, MAX_WINDOW, MAX_WINDOW, MSS)
        self.assertEqual(cc.cwnd, MAX_WINDOW)
