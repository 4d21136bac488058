"""
gvproxy's C{-pid-file} and C{-log-file} (and the YAML's C{pid-file} and
C{log-file}) as services of the gvtap service tree, so that C{gvproxy} and
C{twistd gvtap} honour them the same way.

As gvproxy does: the pid file is created (truncated) at start with the pid and
no newline, and removed at exit; the log file is created (truncated) at start
and every log event goes to it, flushed line by line, closed at exit.
"""

import os

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogPublisher,
    textFileLogObserver,
)

log = Logger()

# logrus' levels (gvproxy's -debug and the YAML's log-level) as Twisted's.
LOGRUS_LEVELS = {
    "panic": LogLevel.critical, "fatal": LogLevel.critical, "error": LogLevel.error,
    "warn": LogLevel.warn, "warning": LogLevel.warn, "info": LogLevel.info,
    "debug": LogLevel.debug, "trace": LogLevel.debug,
}


def logLevel(name) -> LogLevel:
    """
    The Twisted level for a logrus level name (info for an unknown one).
    """
    return LOGRUS_LEVELS.get(str(name or "info").lower(), LogLevel.info)


class PidFileService(Service):
    """
    Write this process's pid to C{path} at start, remove the file at stop.
    """

    def __init__(self, path, getpid=os.getpid):
        self.path = path
        self.getpid = getpid
        self.written = False

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self._write()

    def startService(self):
        Service.startService(self)
        self._write()

    def _write(self):
        if self.written:
            return
        try:
            with open(self.path, "w") as f:
                f.write(str(self.getpid()))
        except OSError as e:
            raise SystemExit(f"failed to create pidfile: {e}")
        self.written = True

    def stopService(self):
        if self.written:
            try:
                os.remove(self.path)
            except OSError as e:
                log.error("failed to remove pidfile: {error}", error=e)
            self.written = False
        return Service.stopService(self)


class LogFileService(Service):
    """
    Send every log event to C{path} (created afresh) while running.
    """

    def __init__(self, path, publisher=globalLogPublisher, reactor=None, level=LogLevel.debug):
        self.path = path
        self.level = level
        self.publisher = publisher
        self.reactor = reactor
        self.file = None
        self.observer = None

    def privilegedStartService(self):
        Service.privilegedStartService(self)
        self._open()

    def startService(self):
        Service.startService(self)
        self._open()

    def _open(self):
        if self.file is not None:
            return
        try:
            self.file = open(self.path, "w", encoding="utf-8")
        except OSError:
            raise SystemExit(f"unable to open log file {self.path}") from None
        self.observer = FilteringLogObserver(textFileLogObserver(self.file),
                                             [LogLevelFilterPredicate(self.level)])
        self.publisher.addObserver(self.observer)

    def stopService(self):
        d = Service.stopService(self)
        if self.reactor is not None and self.reactor.running:
            # Keep the last words (ports closing, the main loop ending): close
            # when the reactor's shutdown is over.
            self.reactor.addSystemEventTrigger("after", "shutdown", self._close)
        else:
            self._close()
        return d

    def _close(self):
        if self.file is not None:
            self.publisher.removeObserver(self.observer)
            self.file.flush()
            self.file.close()
            self.file = None


def addFileServices(top, options, reactor=None):
    """
    Add the pid file and log file services C{options} ask for to C{top}
    (first, so the log file sees everything the others log).
    """
    if options.get("log-file"):
        level = logLevel("debug" if options.get("debug") else options.get("log-level"))
        LogFileService(options["log-file"], reactor=reactor, level=level).setServiceParent(top)
    if options.get("pid-file"):
        PidFileService(options["pid-file"]).setServiceParent(top)
