"""
Tests for L{gvtwisted.dropin.runfiles}: gvproxy's pid file and log file as
services of the gvtap tree.
"""

import os
import tempfile

from twisted.application.service import MultiService
from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.dropin.runfiles import LogFileService, PidFileService, addFileServices


class PidFileTests(SynchronousTestCase):
    """
    The pid file holds the pid without a newline while running.
    """

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, self.dir)
        self.path = os.path.join(self.dir, "gv.pid")

    def test_writtenAndRemoved(self):
        """
        Written (truncating what was there) at start, removed at stop.
        """
        with open(self.path, "w") as f:
            f.write("99999999 stale\n")
        service = PidFileService(self.path, getpid=lambda: 4242)
        service.privilegedStartService()
        service.startService()
        with open(self.path) as f:
            self.assertEqual(f.read(), "4242")
        service.stopService()
        self.assertFalse(os.path.exists(self.path))

    def test_cannotCreate(self):
        """
        A pid file that cannot be made stops start-up with gvproxy's words.
        """
        service = PidFileService(os.path.join(self.dir, "no", "such", "dir.pid"))
        e = self.assertRaises(SystemExit, service.startService)
        self.assertIn("failed to create pidfile", str(e))


class LogFileTests(SynchronousTestCase):
    """
    The log file receives every event while the service runs.
    """

    def test_events(self):
        """
        Events logged while running are in the file, flushed; the file is
        created afresh; nothing after stop.
        """
        fd, path = tempfile.mkstemp()
        os.write(fd, b"old content\n")
        os.close(fd)
        self.addCleanup(os.remove, path)
        publisher = LogPublisher()
        log = Logger(observer=publisher, namespace="test")
        service = LogFileService(path, publisher=publisher)
        service.startService()
        log.info("waiting for {what}...", what="clients")
        with open(path) as f:
            self.assertIn("[test#info] waiting for clients...", f.read())
        service.stopService()
        log.info("after stop")
        with open(path) as f:
            text = f.read()
        self.assertNotIn("old content", text)
        self.assertNotIn("after stop", text)

    def test_cannotOpen(self):
        """
        A log file that cannot be made: gvproxy's "unable to open log file".
        """
        service = LogFileService("/nonexistent/dir/gv.log", publisher=LogPublisher())
        e = self.assertRaises(SystemExit, service.startService)
        self.assertEqual(str(e), "unable to open log file /nonexistent/dir/gv.log")


class AddTests(SynchronousTestCase):
    """
    L{addFileServices} adds what the options ask for, log file first.
    """

    def test_both(self):
        """
        Both files: the log file's service comes first, so it sees the rest.
        """
        top = MultiService()
        addFileServices(top, {"log-file": "/tmp/x.log", "pid-file": "/tmp/x.pid"})
        self.assertEqual([type(s) for s in top], [LogFileService, PidFileService])

    def test_none(self):
        """
        Neither: no service.
        """
        top = MultiService()
        addFileServices(top, {"log-file": None, "pid-file": None})
        self.assertEqual(list(top), [])


class ShutdownTests(SynchronousTestCase):
    """
    With a running reactor the log file stays open until its shutdown ends.
    """

    def test_closedAfterShutdown(self):
        """
        Events logged between the service's stop and the end of the reactor's
        shutdown (ports closing) still reach the file.
        """

        class Reactor:
            running = True
            triggers = []

            def addSystemEventTrigger(self, phase, event, f):
                self.triggers.append((phase, event, f))

        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.remove, path)
        publisher = LogPublisher()
        log = Logger(observer=publisher, namespace="test")
        reactor = Reactor()
        service = LogFileService(path, publisher=publisher, reactor=reactor)
        service.startService()
        service.stopService()
        log.info("port closed")
        [(phase, event, close)] = reactor.triggers
        self.assertEqual((phase, event), ("after", "shutdown"))
        close()
        log.info("too late")
        with open(path) as f:
            text = f.read()
        self.assertIn("port closed", text)
        self.assertNotIn("too late", text)


class LevelTests(SynchronousTestCase):
    """
    gvproxy's log level (logrus names) applies to the log file.
    """

    def test_names(self):
        """
        logrus' level names map to Twisted's; an unknown one is info.
        """
        from twisted.logger import LogLevel

        from gvtwisted.dropin.runfiles import logLevel

        self.assertEqual([logLevel(n) for n in ("debug", "trace", "info", "warning", "warn",
                                                 "error", "fatal", "panic", "WARNING", "loud", None)],
                         [LogLevel.debug, LogLevel.debug, LogLevel.info, LogLevel.warn,
                          LogLevel.warn, LogLevel.error, LogLevel.critical, LogLevel.critical,
                          LogLevel.warn, LogLevel.info, LogLevel.info])

    def test_fileFiltered(self):
        """
        At log-level error the file gets errors, not information.
        """
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.remove, path)
        publisher = LogPublisher()
        log = Logger(observer=publisher, namespace="test")
        top = MultiService()
        addFileServices(top, {"log-file": path, "log-level": "error"})
        [service] = list(top)
        service.publisher = publisher
        service.startService()
        log.info("chatter")
        log.error("trouble")
        service.stopService()
        with open(path) as f:
            text = f.read()
        self.assertIn("trouble", text)
        self.assertNotIn("chatter", text)
