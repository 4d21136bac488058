"""
Tests for L{gvtwisted.stack.counters}.
"""

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.stack.counters import Counters


class CountersTests(SynchronousTestCase):
    """
    Counting is exact; complaining is counted every time and logged at a
    bounded rate.
    """

    def setUp(self):
        self.clock = Clock()
        self.counters = Counters(self.clock, logInterval=10.0)
        self.logged = []
        observer = lambda event: self.logged.append(event)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def complaints(self):
        return [e for e in self.logged if e.get("reason") == "bad.thing"]

    def test_increment(self):
        """
        increment adds, get reads, and a counter never touched reads 0.
        """
        self.counters.increment("a")
        self.counters.increment("a", 4)
        self.assertEqual(self.counters.get("a"), 5)
        self.assertEqual(self.counters.get("never"), 0)
        self.assertEqual(self.counters.snapshot(), {"a": 5})

    def test_complainRateLimited(self):
        """
        Every complaint is counted under drop.REASON, but only the first in
        each interval is logged.
        """
        for _ in range(100):
            self.counters.complain("bad.thing", "detail")
        self.assertEqual(self.counters.get("drop.bad.thing"), 100)
        self.assertEqual(len(self.complaints()), 1)
        self.clock.advance(10)
        self.counters.complain("bad.thing")
        self.assertEqual(len(self.complaints()), 2)
        self.assertEqual(self.complaints()[-1]["count"], 101)

    def test_debugLogsEverything(self):
        """
        With a log interval of 0 (twistd gvtap --debug) every complaint is
        logged.
        """
        self.counters.logInterval = 0.0
        for _ in range(5):
            self.counters.complain("bad.thing")
        self.assertEqual(len(self.complaints()), 5)
