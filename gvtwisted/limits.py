"""
The process's own limits, matched to the machine's at start.

A Go program (gvproxy) has its soft limit on open files raised to the hard
limit by the runtime; a Python daemon keeps the soft limit it inherited, often
1024, which makes a cap of 16384 connections unreachable. So at start gvtap
raises the soft limit to the hard one and logs both.
"""

import os
import resource

from twisted.logger import Logger

log = Logger()

# Linux refuses RLIM_INFINITY for RLIMIT_NOFILE; it allows up to fs.nr_open.
NR_OPEN = "/proc/sys/fs/nr_open"


def raiseFileLimit(rlimit=resource):
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit (or, with no hard limit,
    to the kernel's C{fs.nr_open}); log the limits. Return C{(soft, hard)} as
    they are afterwards.

    @param rlimit: the C{resource} module (for tests).
    """
    soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    target = hard
    if target == rlimit.RLIM_INFINITY:
        try:
            with open(NR_OPEN) as f:
                target = int(f.read().strip())
        except (OSError, ValueError):
            target = 1 << 20
    was = soft
    if soft != rlimit.RLIM_INFINITY and soft < target:
        try:
            rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warn("could not raise the open files limit from {soft} to {target}: {error}",
                     soft=soft, target=target, error=e)
    log.info("open files: soft limit {soft} (was {was}), hard limit {hard}",
             soft=soft, was=was, hard="unlimited" if hard == rlimit.RLIM_INFINITY else hard)
    return soft, hard


def countOpenDescriptors() -> int:
    """
    How many file descriptors this process has open now.
    """
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own
    except OSError:
        return 0


class DescriptorBudget:
    """
    Keeps a reserve of file descriptors that the NAT may not take, so that
    at the open-files limit the control API and new guest links still get
    theirs: the NAT asks L{room} before it opens a host socket.

    Counting the open descriptors lists C{/proc/self/fd}, so it is done at
    most every C{recount} seconds; in between each descriptor the NAT says it
    took (L{took}) is added, which errs on the side of the reserve.

    @ivar reserve: descriptors kept for the API and new links.
    """

    def __init__(self, clock, reserve: int = 64, soft=None, count=countOpenDescriptors,
                 recount: float = 0.05):
        self._clock = clock
        self.reserve = reserve
        if soft is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.soft = soft
        self._count = count
        self._recount = recount
        self._known = None
        self._countedAt = 0.0

    def room(self) -> int:
        """
        How many more descriptors the NAT may open (0 or less: none).
        """
        if self.soft == resource.RLIM_INFINITY:
            return 1 << 30
        now = self._clock.seconds()
        if self._known is None or now - self._countedAt >= self._recount:
            self._known = self._count()
            self._countedAt = now
        return self.soft - self.reserve - self._known

    def took(self, count: int = 1):
        """
        The NAT opened C{count} descriptors since the last count.
        """
        if self._known is not None:
            self._known += count
