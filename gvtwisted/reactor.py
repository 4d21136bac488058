"""
Twisted's epoll reactor with less work between C{epoll_wait} and C{doRead}.

A 1-byte request and its answer cross four reactor dispatches in gvtap (the guest
helper's TAP read, the daemon's link read, the daemon's host socket read, the guest
helper's link read), and at MTU 1500 every read costs one. Two costs of Twisted's
loop showed in the profiles of C{bench/rr.sh} (py-spy on both processes), and
L{GvtapReactor} removes them while every service stays an unmodified Twisted
protocol on an unmodified transport:

 - L{EPollReactor.doPoll} wraps each dispatch in C{log.callWithLogger}: a
   C{logPrefix()} call, a copy of the legacy logging context dictionary, a push
   and a pop of it, about 2 microseconds (a fifth of the guest helper's busy
   time). Here the dispatch calls Twisted's own C{_doReadOrWrite} directly, so
   every event is handled exactly as Twisted handles it; an exception escaping it
   is still logged with the selectable's log prefix. What is lost is the
   C{system} field of I{legacy} C{log.msg} calls made during a read, which then
   reads C{-} (gvtap logs through L{twisted.logger.Logger}, which never used it).
   Twisted's own test of that field (C{test_logPrefix}) is the one of its
   reactor tests this reactor does not pass, by design.

 - Every C{callLater(0, f)} (the end-of-turn flushes of the TCP stack and the
   link writer, several per round trip) builds a L{DelayedCall}, pushes it on a
   heap whose comparisons are Python methods and pops it again. L{callAtTurnEnd}
   is the same promise, a call before the reactor next waits, kept in a list;
   L{turnEndScheduler} picks it where the clock has it and C{callLater(0)}
   elsewhere (other reactors, a test's L{Clock}). The loop also enters
   C{runUntilCurrent} only when a timed call is new, due, or to be cleaned up.

The reactor is selected like any other (C{twistd -r gvtap}); C{twistd gvtap} and
C{twistd gvtap-guest} (so also C{gvproxy} and C{gvforwarder}) install it when no
reactor was chosen (L{defaultReactor}), and C{twistd -r epoll} keeps Twisted's.
"""

import errno
import functools
import select
import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.logger import Logger
from twisted.python import failure, log

_log = Logger()
_EPOLLIN = select.EPOLLIN
# epoll_wait's timeout is an int of milliseconds: Twisted's bound, in seconds.
_LONGEST_WAIT = 2147483


class TurnEndCall:
    """
    A call that L{GvtapReactor} makes before it next waits, the way
    C{callLater(0, ...)} is made, without a L{DelayedCall}'s heap entry.
    """

    __slots__ = ("func", "args", "cancelled", "called")

    def __init__(self, func, args):
        self.func = func
        self.args = args
        self.cancelled = False
        self.called = False

    def cancel(self):
        """
        Do not make the call (a no-op once it was made, unlike a L{DelayedCall}).
        """
        self.cancelled = True

    def active(self):
        """
        Whether the call is still to be made.
        """
        return not (self.cancelled or self.called)


class GvtapReactor(EPollReactor):
    """
    An L{EPollReactor} whose read dispatch is a direct C{doRead} call, whose turn
    skips the timed-call machinery when nothing is due, and which runs
    L{callAtTurnEnd} calls before it next waits.
    """

    # How deep turn-end calls scheduled by turn-end calls are made before the
    # reactor polls (without blocking) in between.
    turnEndRounds = 4

    def __init__(self):
        self._turnEnd = []
        EPollReactor.__init__(self)

    def callAtTurnEnd(self, func, *args):
        """
        Call C{func(*args)} before the reactor next waits for events: what
        C{callLater(0, func, *args)} does, at a fraction of its cost (no
        L{DelayedCall}, no heap). Calls added while these calls run are made
        in the same turn, up to L{turnEndRounds} rounds deep (the TCP stack's
        flush hands frames to the link writer, which itself flushes at the end
        of the turn), then after a poll, so a callback that keeps rescheduling
        itself still lets I/O in.

        @return: a handle with C{cancel()} and C{active()}.
        """
        call = TurnEndCall(func, args)
        self._turnEnd.append(call)
        return call

    def _runTurnEnd(self):
        calls = self._turnEnd
        self._turnEnd = []
        for call in calls:
            if call.cancelled:
                continue
            call.called = True
            try:
                call.func(*call.args)
            except BaseException:
                _log.failure("while handling a turn-end call")

    def mainLoop(self):
        """
        Twisted's loop (timed calls, then a poll for as long as the next timed
        call allows), with L{runUntilCurrent} entered only when it has work.
        """
        while self._started:
            try:
                while self._started:
                    pending = self._pendingTimedCalls
                    if (
                        self._newTimedCalls
                        or self.threadCallQueue
                        or self._justStopped
                        or self._cancellations > 50
                        or (pending and pending[0].time <= self.seconds())
                    ):
                        self.runUntilCurrent()
                    # After the timed calls, so that what they schedule for the
                    # end of the turn leaves in this turn, not after a poll.
                    rounds = self.turnEndRounds
                    while self._turnEnd and rounds:
                        self._runTurnEnd()
                        rounds -= 1
                    if self._turnEnd or self._justStopped or not self.running:
                        timeout = 0
                    else:
                        # Twisted's timeout(), inline: it runs before every wait.
                        if self._newTimedCalls:
                            self._insertNewDelayedCalls()
                        pending = self._pendingTimedCalls
                        if pending:
                            timeout = pending[0].time - self.seconds()
                            timeout = 0 if timeout < 0 else min(timeout, _LONGEST_WAIT)
                        else:
                            timeout = None
                    self.doIteration(timeout)
            except BaseException:
                _log.failure("Unexpected error in main loop.")
        _log.info("Main loop terminated.")

    def doPoll(self, timeout):
        """
        Poll, then dispatch: a plain read event (C{EPOLLIN} alone, nearly every
        event) straight to C{doRead}, as Twisted's C{_doReadOrWrite} would
        handle it; everything else through C{_doReadOrWrite} itself.
        """
        if timeout is None:
            timeout = -1
        selectables = self._selectables
        try:
            events = self._wait(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        doReadOrWrite = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                if event != _EPOLLIN:
                    doReadOrWrite(selectable, fd, event)
                    continue
                try:
                    why = _NO_FILEDESC if selectable.fileno() == -1 else selectable.doRead()
                except BaseException:
                    # As Twisted does: logged, and the selectable is dropped.
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)
            except BaseException:
                log.callWithLogger(selectable, log.err, failure.Failure())

    doIteration = doPoll

    def _wait(self, timeout, most):
        # Its own frame, so that a profile tells waiting from dispatching.
        return self._poller.poll(timeout, most)


def turnEndScheduler(clock):
    """
    The cheapest way C{clock} offers to call a function before it next waits:
    L{GvtapReactor.callAtTurnEnd}, or C{callLater(0, ...)} on any other reactor
    or a test's L{Clock} (whose C{advance(0)} then runs it).
    """
    # One scheduler per clock, shared by all its connections (a bound method or
    # partial apiece would be ~250 bytes per connection), kept on the clock: a
    # weak-keyed table would keep every clock alive through its own value.
    scheduler = getattr(clock, "_gvtapTurnEndScheduler", None)
    if scheduler is not None:
        return scheduler
    callAtTurnEnd = getattr(clock, "callAtTurnEnd", None)
    scheduler = callAtTurnEnd if callAtTurnEnd is not None else functools.partial(clock.callLater, 0)
    try:
        clock._gvtapTurnEndScheduler = scheduler
    except AttributeError:
        pass
    return scheduler


def defaultReactor():
    """
    The global reactor for C{twistd gvtap} and C{twistd gvtap-guest}: if none is
    installed yet (C{twistd} without C{-r}), install L{GvtapReactor} where epoll
    exists; a reactor chosen with C{twistd -r NAME} (or installed by anything
    else first) is kept.
    """
    if "twisted.internet.reactor" not in sys.modules:
        try:
            import select

            select.epoll
        except AttributeError:
            pass
        else:
            install()
    from twisted.internet import reactor

    return reactor


def install():
    """
    Install L{GvtapReactor} as Twisted's global reactor.
    """
    from twisted.internet.main import installReactor

    reactor = GvtapReactor()
    installReactor(reactor)
    return reactor


__all__ = ["GvtapReactor", "TurnEndCall", "defaultReactor", "install", "turnEndScheduler"]
