"""
Start-up as a user meets it: real C{twistd gvtap} processes that cannot start
say exactly one line on standard error, exit with status 1 and leave no
socket or lock file behind; one that finds a stale socket removes it and
starts; C{--version} and C{--help} read cleanly.

Only loopback and files under a temporary directory are used.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [sys.executable, "-c",
          "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class StartupFailureTests(SynchronousTestCase):
    """
    Each way start-up can fail, as a real twistd process.
    """

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gvtap-start-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def gvtap(self, *args, prefix=(), timeout=30):
        """
        Run C{twistd -n gvtap ARGS} to its end; return the completed process.
        """
        return subprocess.run(list(prefix) + TWISTD + ["-n", "--pidfile=", "gvtap", "--ssh-port", "-1", *args],
                              capture_output=True, text=True, env=_env(), cwd=self.dir,
                              timeout=timeout)

    def startDaemon(self, *args):
        """
        Start a daemon that stays up; stop it (by its PID) at cleanup.
        """
        log = open(self.path(f"daemon-{len(os.listdir(self.dir))}.log"), "w")
        self.addCleanup(log.close)
        process = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "gvtap", "--ssh-port", "-1", *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=self.dir)

        def stop():
            if process.poll() is None:
                process.terminate()
                process.wait(10)

        self.addCleanup(stop)
        return process, log.name

    def waitForSocket(self, path, process):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(path)
                return
            except OSError:
                time.sleep(0.05)
        self.fail(f"nothing listened on {path}")

    def assertOneLineFailure(self, result, *fragments):
        """
        C{result} exited 1 with exactly one line on stderr, which contains
        every fragment.
        """
        lines = result.stderr.splitlines()
        self.assertEqual(result.returncode, 1, result.stderr + result.stdout)
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("gvtap: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def assertNothingLeft(self, *names):
        for name in names:
            self.assertFalse(os.path.lexists(self.path(name)), f"{name} was left behind")
            self.assertFalse(os.path.lexists(self.path(name) + ".lock"), f"{name}.lock was left behind")

    def test_missingDirectory(self):
        """
        A socket path in a directory that does not exist names the option,
        the path and the missing directory.
        """
        missing = self.path("no/such/dir/gvtap.sock")
        result = self.gvtap("--listen", f"unix:{self.path('first.sock')}", "--listen", f"unix:{missing}")
        self.assertOneLineFailure(result, "--listen", missing, "does not exist")
        self.assertNothingLeft("first.sock")

    def test_pathInUseByLiveDaemon(self):
        """
        A second daemon on a live daemon's socket refuses to start, says so,
        removes the socket it had already made, and leaves the first daemon's
        socket working.
        """
        live = self.path("live.sock")
        first, _ = self.startDaemon("--listen", f"unix:{live}")
        self.waitForSocket(live, first)
        result = self.gvtap("--listen", f"unix:{self.path('mine.sock')}", "--listen", f"unix:{live}")
        self.assertOneLineFailure(result, "--listen", f"another gvtap is listening on {live}")
        self.assertNothingLeft("mine.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(live)
        self.assertIsNone(first.poll())

    def test_staleSocketRemoved(self):
        """
        A socket file that nobody answers on (a crashed daemon's) is removed,
        logged, and listened on again; start-up logs no C{Starting protocol}
        lines.
        """
        stale = self.path("stale.sock")
        left = socket.socket(socket.AF_UNIX)
        left.bind(stale)
        left.close()
        self.assertTrue(os.path.exists(stale))
        process, logPath = self.startDaemon("--listen", f"unix:{stale}")
        self.waitForSocket(stale, process)
        with open(logPath) as f:
            log = f.read()
        self.assertIn(f"removed the stale socket {stale}", log)
        self.assertNotIn("Starting protocol", log)
        self.assertFalse(os.path.lexists(stale + ".lock"))

    def test_notASocket(self):
        """
        A path that exists and is not a socket is left alone.
        """
        with open(self.path("file"), "w") as f:
            f.write("keep me")
        result = self.gvtap("--listen", f"unix:{self.path('file')}")
        self.assertOneLineFailure(result, "--listen", "not a socket")
        with open(self.path("file")) as f:
            self.assertEqual(f.read(), "keep me")

    def test_portInUse(self):
        """
        A TCP port another program holds is named, with the cause, and the
        unix socket made before it is removed.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = self.gvtap("--listen", f"unix:{self.path('before.sock')}",
                            "--listen-qemu", f"tcp:{port}:interface=127.0.0.1")
        self.assertOneLineFailure(result, "--listen-qemu", str(port), "address already in use")
        self.assertNothingLeft("before.sock")

    def test_datagramPathInUse(self):
        """
        The vfkit datagram socket of a live daemon is refused too, by the
        same probe with the socket's own type.
        """
        live = self.path("vfkit.sock")
        first, _ = self.startDaemon("--listen-vfkit", live)
        deadline = time.monotonic() + 20
        while not os.path.exists(live) and time.monotonic() < deadline:
            time.sleep(0.05)
        result = self.gvtap("--listen-vfkit", live)
        self.assertOneLineFailure(result, "--listen-vfkit", "another gvtap is listening")
        self.assertTrue(os.path.exists(live))
        self.assertIsNone(first.poll())

    def test_permissionDenied(self):
        """
        Without the capabilities that let root write anywhere or bind a low
        port, each failure is one line saying "permission denied".
        """
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or setpriv is None:
            raise self.skipTest("needs root and setpriv (util-linux) to drop capabilities")
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
        closed = self.path("closed")
        os.mkdir(closed, 0o500)
        result = self.gvtap("--listen", f"unix:{closed}/gvtap.sock", prefix=prefix)
        self.assertOneLineFailure(result, "--listen", "permission denied")
        result = self.gvtap("--listen", f"unix:{self.path('ok.sock')}",
                            "--services", "tcp:1:interface=127.0.0.1", prefix=prefix)
        self.assertOneLineFailure(result, "--services", "permission denied")
        self.assertNothingLeft("ok.sock")

    def test_badOptionValue(self):
        """
        A wrong option value is one line too (it fails before logging starts).
        """
        result = self.gvtap("--listen", f"unix:{self.path('x.sock')}", "--mtu", "99999")
        self.assertOneLineFailure(result, "mtu")
        self.assertNothingLeft("x.sock")


class VersionAndHelpTests(SynchronousTestCase):
    """
    C{--version} names gvtap; C{--help} has no stray runs of spaces; every
    option is in the README's table.
    """

    def test_version(self):
        """
        C{twistd gvtap --version} and C{twistd gvtap-guest --version} print
        gvtap's version and Twisted's, and exit 0.
        """
        import twisted

        for plugin in ("gvtap", "gvtap-guest"):
            result = subprocess.run(TWISTD + [plugin, "--version"], capture_output=True, text=True,
                                    env=_env(), timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(f"gvtap) {__version__}", result.stdout)
            self.assertIn(f"Twisted {twisted.__version__}", result.stdout)

    def optionsClasses(self):
        from gvtwisted.guest.tap import Options as GuestOptions
        from gvtwisted.tap import Options

        return Options, GuestOptions

    def test_helpHasNoStraySpaces(self):
        """
        Past the column that separates an option from its text, no line of
        C{--help} has two spaces in a row.
        """
        for options in self.optionsClasses():
            for line in str(options()).splitlines():
                text = re.sub(r"^\s*(-\w, )?--[\w-]+=?\s+", "", line) if line.lstrip().startswith("-") \
                    else line.strip()
                self.assertNotIn("  ", text, f"{options.__module__}: {line!r}")

    def test_everyOptionInReadme(self):
        """
        Every long option of C{twistd gvtap} appears in README.md.
        """
        from gvtwisted.tap import Options

        with open(os.path.join(REPO, "README.md")) as f:
            readme = f.read()
        options = Options()
        names = {long for long in options.longOpt}
        names = {n.rstrip("=") for n in names} - {"help", "version"}
        missing = sorted(n for n in names if f"--{n}" not in readme)
        self.assertEqual(missing, [])
