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
from twisted.logger import Logger, globalLogPublisher, textFileLogObserver

log = Logger()


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

    def __init__(self, path, publisher=globalLogPublisher, reactor=None):
        self.path = path
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
        self.observer = textFileLogObserver(self.file)
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
        LogFileService(options["log-file"], reactor=reactor).setServiceParent(top)
    if options.get("pid-file"):
        PidFileService(options["pid-file"]).setServiceParent(top)
