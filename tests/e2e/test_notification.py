"""
End to end: C{--notification unix:///PATH} tells a listening socket that the
network is ready, that the guest connected (with its MAC) and that it left.
"""

import json
import os
import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, Namespace, skipReason, waitFor

SKIP = skipReason("udhcpc") and skipReason("busybox")


class Listener:
    """
    A unix socket that reads one JSON message per connection, as podman's
    notification reader does.
    """

    def __init__(self, testCase, path):
        self.messages = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        testCase.addCleanup(self.stop)

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            c.settimeout(5)
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.close()
            for line in data.splitlines():
                self.messages.append(json.loads(line))

    def stop(self):
        self.stopped = True
        self.thread.join(5)
        self.sock.close()


class NotificationTests(E2EMixin, SynchronousTestCase):
    """
    gvproxy's notifications, in gvproxy's order.
    """

    if SKIP:
        skip = SKIP

    def test_readyEstablishedClosed(self):
        """
        C{ready} first, then C{connection_established} with the guest's MAC
        once the guest sends, then C{connection_closed} with the same MAC when
        the guest's link goes; one connection per message.
        """
        path = os.path.join(self.tempDir, "notify.sock")
        listener = Listener(self, path)
        daemon, sock = self.startDaemon("--notification", f"unix://{path}")
        waitFor(lambda: listener.messages, what="ready")
        self.assertEqual(listener.messages, [{"notification_type": "ready"}])
        ns = Namespace(self)
        guest = self.startGuest(ns, sock)
        self.dhcp(ns)
        established = {"notification_type": "connection_established",
                       "mac_address": "5a:94:ef:e4:0c:ee"}
        waitFor(lambda: established in listener.messages, what="connection_established")
        guest.stop()
        closed = {"notification_type": "connection_closed", "mac_address": "5a:94:ef:e4:0c:ee"}
        waitFor(lambda: closed in listener.messages, what="connection_closed")
        self.assertEqual(listener.messages, [{"notification_type": "ready"}, established, closed])
        self.assertEqual(listener.connections, 3)
        self.assertTrue(daemon.alive())

    def test_hypervisorError(self):
        """
        A hypervisor endpoint that cannot listen sends C{hypervisor_error}
        before start-up stops.
        """
        path = os.path.join(self.tempDir, "notify.sock")
        listener = Listener(self, path)
        blocker = os.path.join(self.tempDir, "not-a-dir")
        with open(blocker, "w"):
            pass
        from tests.e2e.harness import TWISTD, run

        result = run(TWISTD + ["-n", "--pidfile=", "gvtap", "--ssh-port", "-1",
                               "--notification", path, "--listen-vfkit",
                               os.path.join(blocker, "vfkit.sock")], check=False, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        waitFor(lambda: listener.messages, what="hypervisor_error")
        self.assertEqual(listener.messages, [{"notification_type": "hypervisor_error"}])
