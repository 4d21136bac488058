"""
End to end: C{--forward-sock} against a real OpenSSH server in the guest.

The guest is a network namespace with a private mount namespace: a tmpfs on
its C{/run} holds sshd's privilege separation directory and the destination
unix socket, which the host cannot see. A small server there answers each
connection once it has read the whole request (so the host's EOF must cross
the channel) with a payload of several MiB and then closes (so the guest's EOF
must cross back).
"""

import hashlib
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, Process, run, skipReason, waitFor

SSHD = "/usr/sbin/sshd"
SKIP = skipReason("ssh-keygen", "unshare", "nsenter") or (
    None if os.path.exists(SSHD) else f"end-to-end SSH tests need {SSHD} (openssh-server)")

GUEST_DIR = "/run/gvtap-guest"
GUEST_SOCK = GUEST_DIR + "/app.sock"

SERVER = r"""
import hashlib, os, random, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
while True:
    c, _ = s.accept()
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\n")
    size, seed = (int(x) for x in head.split())
    c.sendall(hashlib.sha256(body).hexdigest().encode() + b"\n")
    c.sendall(random.Random(seed).randbytes(size))
    c.close()
"""

SSHD_CONFIG = """\
Port 22
ListenAddress 0.0.0.0
HostKey {dir}/host_ed25519
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowStreamLocalForwarding yes
LogLevel VERBOSE
"""


def request(path, size, seed, body=b"", timeout=60):
    """
    One connection to the host socket: send the request and EOF, read the
    reply to its EOF; return C{(bodyDigest, payload)}.
    """
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(timeout)
    try:
        c.connect(path)
        c.sendall(f"{size} {seed}\n".encode() + body)
        c.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        c.close()
    reply = b"".join(chunks)
    digest, _, payload = reply.partition(b"\n")
    return digest.decode(), payload


def descendants(pid):
    """
    The pids of C{pid}'s children, grandchildren, ... (sshd's per-connection
    processes start sessions of their own, so a process group misses them).
    """
    found = []
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    for child in f.read().split():
                        found.append(int(child))
                        pending.append(int(child))
        except OSError:
            pass
    return found


class SSHForwardTests(E2EMixin, SynchronousTestCase):
    """
    A host socket reaches a unix socket in the guest over one SSH session
    through the virtual network.
    """

    if SKIP:
        skip = SKIP

    def setUp(self):
        E2EMixin.setUp(self)
        os.chmod(self.tempDir, 0o755)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
             os.path.join(self.tempDir, "host_ed25519")])

    def makeIdentity(self, kind):
        key = os.path.join(self.tempDir, f"id_{kind}")
        run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", key])
        with open(key + ".pub") as f, open(os.path.join(self.tempDir, "authorized_keys"), "a") as out:
            out.write(f.read())
        return key

    def startGuestSide(self, ns):
        """
        The holder: a process in the guest's network namespace and a mount
        namespace of its own (tmpfs on /run), serving the destination socket.
        """
        script = os.path.join(self.tempDir, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        shell = (f"mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd {GUEST_DIR} "
                 f"&& exec {sys.executable} {script} {GUEST_SOCK}")
        holder = Process(self, ns.exec("unshare", "-m", "--propagation", "private",
                                       "sh", "-c", shell), f"holder-{ns.name}")
        waitFor(lambda: not holder.alive() or self.inGuest(holder, "test", "-S", GUEST_SOCK).returncode == 0,
                what="the guest's unix socket")
        self.assertTrue(holder.alive(), holder.output())
        return holder

    def inGuest(self, holder, *args, **kw):
        return run(["nsenter", "-t", str(holder.popen.pid), "-m", "-n"] + list(args),
                   check=False, **kw)

    def startSSHD(self, holder):
        config = os.path.join(self.tempDir, "sshd_config")
        with open(config, "w") as f:
            f.write(SSHD_CONFIG.format(dir=self.tempDir))
        sshd = Process(self, ["nsenter", "-t", str(holder.popen.pid), "-m", "-n",
                              SSHD, "-D", "-e", "-f", config], "sshd")
        self.addCleanup(self.killSSHD, sshd)
        waitFor(lambda: not sshd.alive() or ":22 " in self.inGuest(holder, "ss", "-ltn").stdout,
                what="sshd listening")
        self.assertTrue(sshd.alive(), sshd.output())
        return sshd

    def killSSHD(self, sshd):
        if sshd.popen.poll() is not None:
            # Reaped already: its pid may belong to someone else by now.
            return
        for pid in descendants(sshd.popen.pid) + [sshd.popen.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sshd.stop()

    def startForwarding(self, kind="ed25519"):
        key = self.makeIdentity(kind)
        hostSock = os.path.join(self.tempDir, "podman.sock")
        daemon, sock = self.startDaemon("--forward-sock", hostSock, "--forward-dest", GUEST_SOCK,
                                        "--forward-user", "root", "--forward-identity", key)
        waitFor(lambda: os.path.exists(hostSock), what="the forwarded host socket")
        ns = Namespace(self)
        self.startGuest(ns, sock)
        self.assertEqual(self.dhcp(ns)["ip"], "192.168.127.2")
        return daemon, hostSock, ns

    def check(self, hostSock, size, seed, body=b""):
        digest, payload = request(hostSock, size, seed, body)
        self.assertEqual(digest, hashlib.sha256(body).hexdigest())
        self.assertEqual(len(payload), size)
        self.assertEqual(hashlib.sha256(payload).hexdigest(),
                         hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest())

    def test_forwardSockRetryBigRepliesRestart(self):
        """
        With sshd started only after the first connection waits (the retry
        path), a 6 MiB reply to a 1 MiB request is intact, ten sequential
        connections work, the host socket has mode 0600 and the guest's socket
        is not visible on the host; killing every sshd process and starting
        sshd again recovers; the host socket is removed when gvtap stops.
        """
        daemon, hostSock, ns = self.startForwarding()
        self.assertEqual(stat.S_IMODE(os.stat(hostSock).st_mode), 0o600)
        holder = self.startGuestSide(ns)
        self.assertFalse(os.path.exists(GUEST_SOCK))

        # The first connection waits for a session while no sshd runs.
        body = random.Random(7).randbytes(1 << 20)
        result = {}

        def first():
            try:
                result["reply"] = request(hostSock, 6 << 20, 1, body)
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=first)
        t.start()
        time.sleep(1.5)
        self.assertTrue(t.is_alive(), result)
        sshd = self.startSSHD(holder)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", result)
        digest, payload = result["reply"]
        self.assertEqual(digest, hashlib.sha256(body).hexdigest())
        self.assertEqual(hashlib.sha256(payload).digest(),
                         hashlib.sha256(random.Random(1).randbytes(6 << 20)).digest())

        for seed in range(10):
            self.check(hostSock, 100_000 + seed, 100 + seed, b"x" * seed)
        # One session carried them all.
        self.assertEqual(daemon.output().count("SSH session open"), 1, daemon.output())

        # sshd and its session processes die; a new sshd comes up 1 s later.
        self.killSSHD(sshd)
        late = {}

        def during():
            try:
                late["reply"] = request(hostSock, 3 << 20, 2)
            except Exception as e:
                late["error"] = e

        t = threading.Thread(target=during)
        t.start()
        time.sleep(1.0)
        self.startSSHD(holder)
        t.join(60)
        self.assertNotIn("error", late)
        self.assertEqual(hashlib.sha256(late["reply"][1]).digest(),
                         hashlib.sha256(random.Random(2).randbytes(3 << 20)).digest())
        self.check(hostSock, 1 << 20, 3)
        self.assertEqual(daemon.output().count("SSH session open"), 2, daemon.output())

        daemon.stop()
        self.assertFalse(os.path.exists(hostSock))

    def test_rsaAndEcdsaIdentities(self):
        """
        RSA and ECDSA identities in OpenSSH's format authenticate too.
        """
        for kind in ("rsa", "ecdsa"):
            daemon, hostSock, ns = self.startForwarding(kind)
            holder = self.startGuestSide(ns)
            sshd = self.startSSHD(holder)
            try:
                self.check(hostSock, 1 << 20, 5)
            except Exception:
                raise AssertionError(f"{kind}:\n{daemon.output()}\n{sshd.output()}")
            daemon.stop()
            self.killSSHD(sshd)
            holder.stop()
            ns.delete()
            os.unlink(os.path.join(self.tempDir, "authorized_keys"))

    def test_apiSSHTunnel(self):
        """
        C{/services/forwarder/expose} with an C{ssh-tunnel://} remote on a
        unix forward carries connections over SSH to the guest's socket; the
        forward is listed, and C{unexpose} closes it.
        """
        key = self.makeIdentity("ed25519")
        daemon, sock = self.startDaemon()
        ns = Namespace(self)
        self.startGuest(ns, sock)
        self.dhcp(ns)
        holder = self.startGuestSide(ns)
        self.startSSHD(holder)
        local = os.path.join(self.tempDir, "tunnel.sock")
        remote = f"ssh-tunnel://root@192.168.127.2:22{GUEST_SOCK}?key={key}"
        body = '{"local": "%s", "remote": "%s", "protocol": "unix"}' % (local, remote)
        out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
                   "http://x/services/forwarder/expose", "-d", body])
        self.assertEqual(out.stdout, "200")
        self.assertEqual(stat.S_IMODE(os.stat(local).st_mode), 0o600)
        self.check(local, 2 << 20, 9, b"hello")
        self.check(local, 10, 10)
        listed = run(["curl", "-sS", "--unix-socket", sock, "http://x/services/forwarder/all"]).stdout
        self.assertIn('"remote": "%s"' % remote, listed.replace('":"', '": "'))
        out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
                   "http://x/services/forwarder/unexpose", "-d",
                   '{"local": "%s", "protocol": "unix"}' % local])
        self.assertEqual(out.stdout, "200")
        waitFor(lambda: not os.path.exists(local), what="the tunnel socket removed")

    def test_socketCannotBeMade(self):
        """
        A --forward-sock that cannot be made stops start-up with one line
        naming it; a mismatch of the four options too.
        """
        from tests.e2e.harness import TWISTD

        key = self.makeIdentity("ed25519")
        bad = os.path.join(self.tempDir, "missing", "podman.sock")
        base = TWISTD + ["-n", "--pidfile=", "gvtap", "--ssh-port", "-1", "--listen",
                         "unix:" + os.path.join(self.tempDir, "g.sock")]
        result = run(base + ["--forward-sock", bad, "--forward-dest", "/run/x.sock",
                             "--forward-user", "root", "--forward-identity", key],
                     check=False, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"gvtap: cannot listen on --forward-sock {bad}: no such file or directory",
                      result.stdout + result.stderr)
        result = run(base + ["--forward-sock", bad, "--forward-identity", key], check=False,
                     timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         "gvtap: --forward-sock, --forward-dest, --forward-user and "
                         "--forward-identity must all be given together, the same number "
                         "of times (got 1, 0, 0 and 1)")
