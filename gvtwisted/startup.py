"""
Start-up that fails in one line and leaves nothing behind.

A user who starts gvtap on a socket path that is taken, in a directory that
does not exist, or on a port that another program holds needs one sentence
naming the option and the cause, exit status 1, and no half-made sockets on
disk: not twistd's forty-line traceback, and not a C{.lock} file that the next
start trips over.

Unix socket paths are prepared before binding, the way gvproxy does it: a
socket file that nobody answers on is what a crashed daemon left, and is
removed (and logged); one that answers belongs to a live daemon, and is left
alone.
"""

import errno
import os
import socket
import stat
import sys

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

log = Logger()


class StartupError(Exception):
    """
    gvtap cannot start; C{str()} is the one line to show the user.
    """


def prepareUnixSocketPath(path, option, kind=socket.SOCK_STREAM):
    """
    Make C{path} free for a new socket of type C{kind}, or explain why it
    cannot be.

    @raise StartupError: the directory is missing, the path is not a socket,
        or a live process answers on it.
    @return: C{True} when a stale socket was removed.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "/"
    if not os.path.isdir(directory):
        raise StartupError(f"gvtap: cannot listen on {option} {path}: "
                           f"directory {directory} does not exist")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StartupError(f"gvtap: cannot listen on {option} {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"gvtap: cannot listen on {option} {path}: "
                           "the path exists and is not a socket")
    if _answers(path, kind):
        raise StartupError(f"gvtap: cannot listen on {option} {path}: "
                           f"another gvtap is listening on {path}")
    try:
        os.unlink(path)
    except OSError as e:
        raise StartupError(f"gvtap: cannot listen on {option} {path}: cannot remove the stale "
                           f"socket: {e.strerror}") from None
    log.info("gvtap: removed the stale socket {path} (no process answered on it)", path=path)
    return True


def _answers(path, kind):
    """
    Whether a process accepts connections (or datagrams) on the unix socket
    C{path}.
    """
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        return False
    except OSError as e:
        # A socket of another type answers EPROTOTYPE: something is there.
        return e.errno in (errno.EPROTOTYPE, errno.EAGAIN, errno.EACCES, errno.EPERM)
    else:
        return True
    finally:
        probe.close()


def describeListenFailure(exc, option, what):
    """
    The one line for a failure to listen on C{what} (given as C{option}).
    """
    if isinstance(exc, StartupError):
        return str(exc)
    cause = exc
    if isinstance(exc, CannotListenError) and exc.socketError is not None:
        cause = exc.socketError
    if isinstance(cause, OSError) and cause.errno is not None:
        reason = {
            errno.EADDRINUSE: "address already in use",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOENT: "no such file or directory",
            errno.EADDRNOTAVAIL: "no such local address",
            errno.EAFNOSUPPORT: "address family not supported on this host",
        }.get(cause.errno, cause.strerror or str(cause))
    else:
        reason = str(cause) or cause.__class__.__name__
    return f"gvtap: cannot listen on {option} {what}: {reason}"


class GvtapService(MultiService):
    """
    The top of gvtap's service tree: when a child fails to start, the
    sockets already made are removed, the failure is one line on standard
    error, and the process exits with status 1.

    @ivar createdPaths: socket files that this process made, to remove when
        start-up fails after they were bound.
    @ivar twistdOptions: twistd's own options (for the pid file), or L{None}
        when something other than twistd runs the service: then a failure is
        raised as L{StartupError} for that caller to report.
    """

    def __init__(self, twistdOptions=None):
        MultiService.__init__(self)
        self.createdPaths = []
        self.twistdOptions = twistdOptions

    def privilegedStartService(self):
        try:
            MultiService.privilegedStartService(self)
        except StartupError as e:
            self.abandonStart(str(e))

    def startService(self):
        try:
            MultiService.startService(self)
        except StartupError as e:
            self.abandonStart(str(e))

    def abandonStart(self, line):
        """
        Remove what start-up made, say C{line}, and exit with status 1.
        """
        for path in self.createdPaths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.createdPaths = []
        if self.twistdOptions is None or self.twistdOptions.get("statusPipe") is not None:
            # Not run by twistd (the gvproxy command, a test): the caller
            # reports it. Daemonized: standard error is /dev/null, and
            # twistd's parent process prints what an exception says through
            # its pipe.
            raise StartupError(line)
        _removePidfile(self.twistdOptions)
        sys.stderr.flush()
        os.write(2, (line + "\n").encode("utf-8", "replace"))
        raise SystemExit(1)


def _removePidfile(twistdOptions):
    """
    twistd removes its pid file only when start-up raises an L{Exception};
    exiting with L{SystemExit} leaves it to us.
    """
    if twistdOptions is None:
        return
    try:
        pidfile = twistdOptions.get("pidfile")
    except Exception:
        return
    if pidfile:
        try:
            with open(pidfile) as f:
                mine = int(f.read().strip() or 0) == os.getpid()
        except (OSError, ValueError):
            return
        if mine:
            try:
                os.unlink(pidfile)
            except OSError:
                pass


def normalizeOptionDocs(optionsClass):
    """
    Collapse the whitespace of every C{opt_*} docstring of C{optionsClass}, so
    that C{--help} shows no runs of spaces where a docstring wrapped.
    """
    for name in dir(optionsClass):
        if name.startswith("opt_"):
            method = getattr(optionsClass, name)
            doc = getattr(method, "__doc__", None)
            if doc:
                try:
                    method.__doc__ = " ".join(doc.split())
                except AttributeError:
                    pass
    return optionsClass


def versionLine(program):
    """
    What C{--version} prints: gvtap's version, Twisted's and Python's.
    """
    import platform

    import twisted

    from gvtwisted import __version__

    return (f"{program} (gvtap) {__version__}, Twisted {twisted.__version__}, "
            f"Python {platform.python_version()}")
