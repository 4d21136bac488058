"""
The process's own limits, matched to the machine's at start.

A Go program (gvproxy) has its soft limit on open files raised to the hard
limit by the runtime; a Python daemon keeps the soft limit it inherited, often
1024, which makes a cap of 16384 connections unreachable. So at start gvtap
raises the soft limit to the hard one and logs both.
"""

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
