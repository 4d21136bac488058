"""
L{gvtwisted.reactor}: what gvtap's reactor adds to Twisted's epoll reactor
(Twisted's own reactor tests, run against it, are in C{test_reactor_twisted}).

Each test builds a fresh L{GvtapReactor} and runs it to its end, so nothing here
touches the global reactor trial runs on.
"""

import os
import socket
import subprocess
import tempfile

from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock
from twisted.python import log
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.reactor import GvtapReactor, TurnEndCall, turnEndScheduler
from tests.test_startup import TWISTD, _env


class RecordingReactor(GvtapReactor):
    """
    A L{GvtapReactor} that notes each poll in C{events} (C{"wait"}, or
    C{"poll0"} when it may not block).
    """

    def __init__(self):
        self.events = []
        GvtapReactor.__init__(self)

    def _wait(self, timeout, most):
        self.events.append("poll0" if timeout == 0 else "wait")
        return GvtapReactor._wait(self, timeout, most)


class _Reader(FileDescriptor):
    """
    A reader of one end of a socket pair, calling C{onRead(data)} per read.
    """

    def __init__(self, reactor, sock, onRead, prefix="TestReader"):
        FileDescriptor.__init__(self, reactor)
        self.sock = sock
        self.onRead = onRead
        self.prefix = prefix
        self.lost = []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return self.prefix

    def doRead(self):
        data = self.sock.recv(4096)
        if not data:
            from twisted.internet.main import CONNECTION_DONE

            return CONNECTION_DONE
        return self.onRead(data)

    def connectionLost(self, reason):
        self.lost.append(reason)
        FileDescriptor.connectionLost(self, reason)


class TurnEndTests(SynchronousTestCase):
    """
    L{GvtapReactor.callAtTurnEnd}: C{callLater(0)}'s promise, kept in a list.
    """

    def setUp(self):
        self.reactor = RecordingReactor()
        self.addCleanup(self.reactor.disconnectAll)


    def runReactor(self, limit=5.0):
        guard = self.reactor.callLater(limit, self.reactor.stop)
        self.reactor.run(installSignalHandlers=False)
        self.assertTrue(guard.active(), "the reactor ran until the test's time limit")
        guard.cancel()

    def test_runsBeforeTheNextWait(self):
        """
        A call made for the end of the turn from a timed call runs in the same
        turn, before the reactor next polls.
        """
        events = self.reactor.events

        def timed():
            events.append("timed")
            self.reactor.callAtTurnEnd(events.append, "turnEnd")
            self.reactor.callAtTurnEnd(self.reactor.stop)

        self.reactor.callLater(0, timed)
        self.runReactor()
        self.assertEqual(events[events.index("timed"):][:2], ["timed", "turnEnd"])

    def test_nestedInTheSameTurn(self):
        """
        A turn-end call scheduled by a turn-end call (the TCP flush handing a
        frame to the link writer) is made in the same turn, before any poll.
        """
        events = self.reactor.events

        def second():
            events.append("second")
            self.reactor.stop()

        def first():
            events.append("first")
            self.reactor.callAtTurnEnd(second)

        self.reactor.callWhenRunning(self.reactor.callAtTurnEnd, first)
        self.runReactor()
        start = events.index("first")
        self.assertEqual(events[start:start + 2], ["first", "second"])

    def test_reschedulingBoundedByAPoll(self):
        """
        A turn-end call that keeps rescheduling itself is made at most
        C{turnEndRounds} times between two polls (which do not block), as
        C{callLater(0)} would let I/O in.
        """
        events = self.reactor.events
        self.reactor.turnEndRounds = 3

        def spin(n):
            events.append("spin")
            if n:
                self.reactor.callAtTurnEnd(spin, n - 1)
            else:
                self.reactor.stop()

        self.reactor.callWhenRunning(self.reactor.callAtTurnEnd, spin, 10)
        self.runReactor()
        run = events[events.index("spin"):]
        self.assertEqual(run.count("spin"), 11)
        self.assertEqual(run[:4], ["spin", "spin", "spin", "poll0"])
        longest = max(len(chunk) for chunk in " ".join(run).split("poll0"))
        self.assertLessEqual(longest, len(" spin spin spin "))

    def test_readDuringRescheduling(self):
        """
        Data that arrives while a turn-end call keeps rescheduling itself is
        read: the reactor polls between the turns.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.setblocking(False)
        reads = []
        spins = []

        def spin():
            spins.append(1)
            if reads or len(spins) > 10000:
                self.reactor.stop()
            else:
                self.reactor.callAtTurnEnd(spin)

        reader = _Reader(self.reactor, a, reads.append)
        self.reactor.addReader(reader)
        self.reactor.callWhenRunning(b.send, b"x")
        self.reactor.callWhenRunning(self.reactor.callAtTurnEnd, spin)
        self.runReactor()
        self.assertEqual(reads, [b"x"])
        self.assertLess(len(spins), 10000)

    def test_cancel(self):
        """
        A cancelled call is not made; C{active()} says whether it is still to be
        made.
        """
        made = []
        keep = self.reactor.callAtTurnEnd(made.append, "kept")
        drop = self.reactor.callAtTurnEnd(made.append, "dropped")
        self.assertTrue(drop.active())
        drop.cancel()
        self.assertFalse(drop.active())
        self.reactor.callAtTurnEnd(self.reactor.stop)
        self.runReactor()
        self.assertEqual(made, ["kept"])
        self.assertFalse(keep.active())
        keep.cancel()  # a no-op once made
        self.assertIsInstance(keep, TurnEndCall)

    def test_errorLoggedAndLoopGoesOn(self):
        """
        An exception from a turn-end call is logged; the calls after it are
        made and the reactor goes on.
        """
        made = []

        def broken():
            raise ZeroDivisionError("turn-end")

        self.reactor.callAtTurnEnd(broken)
        self.reactor.callAtTurnEnd(made.append, "after")
        self.reactor.callLater(0.01, self.reactor.stop)
        self.runReactor()
        self.assertEqual(made, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_timedCallsFireWhileTurnEndCallsChurn(self):
        """
        Skipping C{runUntilCurrent} when nothing is due never skips a due
        call: a 20 ms call fires while turn-end calls keep the loop spinning.
        """
        fired = []

        def spin():
            if not fired:
                self.reactor.callAtTurnEnd(spin)

        self.reactor.callLater(0.02, fired.append, True)
        self.reactor.callLater(0.02, self.reactor.callLater, 0, self.reactor.stop)
        self.reactor.callWhenRunning(spin)
        self.runReactor()
        self.assertEqual(fired, [True])


class DispatchTests(SynchronousTestCase):
    """
    The read dispatch without C{log.callWithLogger}.
    """

    def test_escapingErrorLoggedWithPrefix(self):
        """
        An exception that escapes Twisted's C{_doReadOrWrite} (here from
        C{connectionLost}) is logged with the selectable's log prefix, and the
        reactor keeps serving another reader.
        """
        reactor = GvtapReactor()
        self.addCleanup(reactor.disconnectAll)
        pairs = [socket.socketpair() for _ in range(2)]
        for pair in pairs:
            for s in pair:
                self.addCleanup(s.close)
                s.setblocking(False)
        seen = []
        systems = []
        observer = lambda event: systems.append(event.get("system"))  # noqa: E731
        log.addObserver(observer)
        self.addCleanup(log.removeObserver, observer)

        class Broken(_Reader):
            def connectionLost(self, reason):
                raise RuntimeError("connectionLost")

        broken = Broken(reactor, pairs[0][0], seen.append, prefix="BrokenReader")
        good = _Reader(reactor, pairs[1][0], seen.append)
        reactor.addReader(broken)
        reactor.addReader(good)
        # The broken reader's peer closes (an empty read: CONNECTION_DONE).
        reactor.callWhenRunning(pairs[0][1].close)
        reactor.callLater(0.05, pairs[1][1].send, b"still here")
        reactor.callLater(0.2, reactor.stop)
        reactor.run(installSignalHandlers=False)
        self.assertEqual(seen, [b"still here"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("BrokenReader", systems)


class TurnEndSchedulerTests(SynchronousTestCase):
    """
    L{turnEndScheduler} picks the cheapest "before the next wait" a clock has.
    """

    def test_gvtapReactor(self):
        """
        On L{GvtapReactor} it is C{callAtTurnEnd}.
        """
        reactor = GvtapReactor()
        self.addCleanup(reactor.disconnectAll)
        self.assertEqual(turnEndScheduler(reactor), reactor.callAtTurnEnd)

    def test_clock(self):
        """
        On a L{Clock} (or any other reactor) it is C{callLater(0)}: the test's
        C{advance(0)} makes the call, and the handle cancels.
        """
        clock = Clock()
        made = []
        schedule = turnEndScheduler(clock)
        schedule(made.append, 1)
        schedule(made.append, 2).cancel()
        self.assertEqual(made, [])
        clock.advance(0)
        self.assertEqual(made, [1])


class DefaultReactorTests(SynchronousTestCase):
    """
    C{twistd gvtap} and C{twistd gvtap-guest} run on L{GvtapReactor} unless
    C{twistd -r} chose another.
    """

    def reactorClass(self, *twistdArgs):
        directory = tempfile.mkdtemp(prefix="gvtap-reactor-")
        sock = os.path.join(directory, "gvtap.sock")
        process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", *twistdArgs, "gvtap", "--ssh-port", "-1",
                      "--listen", f"unix:{sock}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=directory)
        try:
            for line in process.stdout:
                if "reactor class:" in line:
                    return line.split("reactor class:", 1)[1].strip().rstrip(".")
            self.fail("twistd never logged its reactor class")
        finally:
            process.terminate()
            process.wait(10)
            process.stdout.close()
            if os.path.exists(sock):
                os.unlink(sock)
            os.rmdir(directory)

    def test_default(self):
        """
        Without C{-r}, the daemon runs on gvtap's reactor.
        """
        self.assertEqual(self.reactorClass(), "gvtwisted.reactor.GvtapReactor")

    def test_chosen(self):
        """
        C{twistd -r epoll} keeps Twisted's epoll reactor.
        """
        self.assertEqual(self.reactorClass("-r", "epoll"),
                         "twisted.internet.epollreactor.EPollReactor")

    def test_named(self):
        """
        C{twistd -r gvtap} names it.
        """
        self.assertEqual(self.reactorClass("-r", "gvtap"), "gvtwisted.reactor.GvtapReactor")
