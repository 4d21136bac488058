"""
End-to-end test harness: real C{twistd gvtap} and C{twistd gvtap-guest}
processes, guests in network namespaces the tests make (and always remove), and
real clients inside them.

Everything here is synchronous (C{subprocess}): the daemon under test runs in
its own process, so the test process has no reactor to share.

Network rule: traffic goes only to loopback and to namespaces made here.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def skipReason(*tools):
    """
    Why end-to-end tests cannot run here, or L{None} if they can.
    """
    if os.geteuid() != 0:
        return "end-to-end tests need root (network namespaces, TAP devices)"
    if not os.path.exists("/dev/net/tun"):
        return "end-to-end tests need /dev/net/tun"
    for tool in ("ip",) + tools:
        if shutil.which(tool) is None:
            return f"end-to-end tests need {tool!r} on PATH"
    return None


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(args, timeout=30, check=True, input=None):
    """
    Run a command, return its C{CompletedProcess} (text mode).
    """
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def freePort(kind=socket.SOCK_STREAM, both=False):
    """
    A port of 127.0.0.1 that nothing holds now, for C{kind} (TCP by default),
    or with C{both} for UDP and TCP at once (a DNS server listens on both).

    A TCP socket in TIME_WAIT whose owner did not set C{SO_REUSEADDR} (a
    benchmark's thousands of short connections leave them for a minute)
    keeps even a C{SO_REUSEADDR} listener off its port: the TCP probe binds
    without it, so such a port is passed over.
    """
    for _ in range(100):
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if both else kind)
        try:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if not both:
                return port
            second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                second.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                second.close()
            return port
        finally:
            first.close()
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1")


def waitFor(predicate, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stdioFrameReader(testCase, fd, closed):
    """
    A function that reads the next frame a process writes on C{fd} with
    gvproxy's stdio framing (a 2-byte little-endian length, then the frame):
    the frame, or C{None} after a second with nothing whole. C{closed()} gives
    the message of the failure raised when the process closes C{fd} first.
    """
    import select
    import struct

    buffered = b""

    def recv():
        nonlocal buffered
        while len(buffered) < 2 or len(buffered) < 2 + struct.unpack_from("<H", buffered)[0]:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(closed())
            buffered += chunk
        (length,) = struct.unpack_from("<H", buffered)
        testCase.assertGreaterEqual(length, 14)
        frame, buffered = buffered[2:2 + length], buffered[2 + length:]
        return frame

    return recv


class Process:
    """
    A background process whose output goes to a log file, killed at cleanup.
    """

    def __init__(self, testCase, args, name):
        self.logPath = os.path.join(testCase.tempDir, f"{name}.log")
        self._log = open(self.logPath, "wb")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=environment(), cwd=testCase.tempDir,
                                      start_new_session=True)
        testCase.addCleanup(self.stop)

    def output(self):
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


class Namespace:
    """
    A network namespace made for one test and deleted at its cleanup, even
    when the test fails.
    """

    _count = 0

    def __init__(self, testCase, prefix="gvte2e"):
        Namespace._count += 1
        self.name = f"{prefix}-{os.getpid()}-{Namespace._count}"
        run(["ip", "netns", "add", self.name])
        testCase.addCleanup(self.delete)
        # A resolv.conf of its own, so that nothing run inside can touch the host's.
        self.etc = f"/etc/netns/{self.name}"
        os.makedirs(self.etc, exist_ok=True)
        with open(os.path.join(self.etc, "resolv.conf"), "w") as f:
            f.write("nameserver 192.168.127.1\n")
        run(self.exec("ip", "link", "set", "lo", "up"))

    def exec(self, *args):
        """
        The command line that runs C{args} inside the namespace.
        """
        return ["ip", "netns", "exec", self.name] + list(args)

    def run(self, *args, timeout=30, check=True):
        return run(self.exec(*args), timeout=timeout, check=check)

    def delete(self):
        # Kill whatever still runs inside, then remove the namespace.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)


class E2EMixin:
    """
    For trial test cases: a temporary directory, the daemon, guests.
    """

    def setUp(self):
        self.tempDir = tempfile.mkdtemp(prefix="gvte2e-")
        self.addCleanup(shutil.rmtree, self.tempDir, True)

    def startDaemon(self, *extra, name="gvtap"):
        """
        Start C{twistd -n gvtap} listening on a unix socket; return
        C{(process, socketPath)} once the socket exists.
        """
        sock = os.path.join(self.tempDir, f"{name}.sock")
        process = Process(self, TWISTD + ["-n", "--pidfile=", "gvtap", "--ssh-port", "-1", "--listen", f"unix:{sock}"]
                          + list(extra), name)
        waitFor(lambda: os.path.exists(sock) or not process.alive(), what="the daemon's socket")
        if not process.alive():
            raise AssertionError("gvtap exited at start-up:\n" + process.output())
        return process, sock

    def startGuest(self, namespace, sock, *extra, iface="tap0", mac=None):
        """
        Run C{twistd -n gvtap-guest} in C{namespace}, connected to C{sock};
        return the process once the TAP device is up.
        """
        args = TWISTD + ["-n", "--pidfile=", "gvtap-guest", "--connect", f"unix:{sock}",
                         "--iface", iface]
        if mac is not None:
            args += ["--mac", mac]
        process = Process(self, namespace.exec(*args, *extra), f"guest-{namespace.name}-{iface}")
        waitFor(lambda: "state UP" in namespace.run("ip", "link", "show", iface, check=False).stdout
                or "UP" in namespace.run("ip", "-br", "link", "show", iface, check=False).stdout
                or not process.alive(), what=f"{iface} up in {namespace.name}")
        if not process.alive():
            raise AssertionError("gvtap-guest exited:\n" + process.output())
        return process

    def dhcp(self, namespace, iface="tap0"):
        """
        Run busybox udhcpc once in C{namespace} with a script of ours that
        configures the address and records what the lease said; return that
        record as a dict.
        """
        record = os.path.join(self.tempDir, f"lease-{namespace.name}-{iface}")
        script = os.path.join(self.tempDir, "udhcpc.script")
        with open(script, "w") as f:
            f.write(UDHCPC_SCRIPT.format(record=record))
        os.chmod(script, 0o755)
        udhcpc = shutil.which("udhcpc") or "busybox"
        args = [udhcpc] if udhcpc != "busybox" else ["busybox", "udhcpc"]
        namespace.run(*args, "-f", "-q", "-n", "-t", "5", "-T", "1", "-i", iface, "-s", script,
                      timeout=30)
        values = {}
        with open(record) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                values[key] = value
        return values


UDHCPC_SCRIPT = """#!/bin/sh
# Records the lease and configures the interface; never touches resolv.conf.
case "$1" in
  bound|renew)
    env | grep -E '^(ip|subnet|router|dns|mtu|lease|serverid|search|domain)=' > {record}
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    ;;
esac
exit 0
"""
