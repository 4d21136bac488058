"""
Tests for L{gvtwisted.limits}: the soft open-files limit is raised to the
hard one at start, and both are logged.
"""

import resource

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.limits import DescriptorBudget, countOpenDescriptors, raiseFileLimit


class FakeResource:
    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft, hard, refuse=False):
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


class RaiseFileLimitTests(SynchronousTestCase):
    """
    L{raiseFileLimit} against a fake C{resource} module, and once for real.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self):
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_raisedToHard(self):
        """
        A soft limit below the hard one is raised to it, and both are logged.
        """
        fake = FakeResource(1024, 65536)
        self.assertEqual(raiseFileLimit(fake), (65536, 65536))
        self.assertEqual(fake.limits, (65536, 65536))
        self.assertIn("open files: soft limit 65536 (was 1024), hard limit 65536", self.logged())

    def test_unlimitedHard(self):
        """
        With no hard limit the soft one goes to the kernel's maximum, a
        finite number.
        """
        fake = FakeResource(1024, resource.RLIM_INFINITY)
        soft, hard = raiseFileLimit(fake)
        self.assertGreater(soft, 1024)
        self.assertNotEqual(soft, resource.RLIM_INFINITY)

    def test_refused(self):
        """
        If the kernel refuses, the limit stays and a warning says why.
        """
        fake = FakeResource(256, 4096, refuse=True)
        self.assertEqual(raiseFileLimit(fake), (256, 4096))
        self.assertTrue(any("could not raise" in line for line in self.logged()))

    def test_real(self):
        """
        On this process the soft limit ends at the hard one (put back after).
        """
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, before)
        if before[1] != resource.RLIM_INFINITY and before[1] > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, before[1]))
        soft, hard = raiseFileLimit()
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], soft)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(soft, hard)


class DescriptorBudgetTests(SynchronousTestCase):
    """
    L{DescriptorBudget} keeps C{reserve} descriptors out of the NAT's reach.
    """

    def setUp(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.open = 100
        self.counts = 0

    def count(self):
        self.counts += 1
        return self.open

    def test_room(self):
        """
        Room is the soft limit less the reserve less what is open.
        """
        budget = DescriptorBudget(self.clock, reserve=64, soft=200, count=self.count)
        self.assertEqual(budget.room(), 36)
        self.open = 136
        self.clock.advance(1)
        self.assertEqual(budget.room(), 0)

    def test_countedAtMostEveryInterval(self):
        """
        Within the recount interval the count is not taken again, but each
        descriptor the NAT took is subtracted.
        """
        budget = DescriptorBudget(self.clock, reserve=0, soft=200, count=self.count,
                                  recount=0.05)
        self.assertEqual(budget.room(), 100)
        budget.took()
        budget.took(2)
        self.assertEqual(budget.room(), 97)
        self.assertEqual(self.counts, 1)
        self.clock.advance(0.05)
        self.assertEqual(budget.room(), 100)
        self.assertEqual(self.counts, 2)

    def test_realCount(self):
        """
        The real count sees a descriptor this process opens.
        """
        import os

        before = countOpenDescriptors()
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(countOpenDescriptors(), before + 1)
