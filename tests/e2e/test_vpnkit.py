"""
End to end: a hyperkit-speaking client on a real C{--listen-vpnkit} unix
socket of C{twistd gvtap}.
"""

import os
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import E2EMixin, skipReason, waitFor
from tests.test_link_vpnkit import COMMAND, HELLO, UUID, expectedResponse
from tests.test_links import GUEST_MAC, arpReply, arpRequest

SKIP = skipReason()


def readExactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


class VpnkitTests(E2EMixin, SynchronousTestCase):
    """
    The handshake and frames over a real socket.
    """

    if SKIP:
        skip = SKIP

    def test_hyperkitClient(self):
        """
        The hello is echoed, the answer carries the MTU and the MAC mapped to
        the VM's UUID, and an ARP request for the gateway is answered.
        """
        path = os.path.join(self.tempDir, "vpnkit.sock")
        self.startDaemon("--listen-vpnkit", f"unix://{path}", "--mtu", "1500",
                         "--vpnkit-uuid-mac", f"{UUID}=5a:94:ef:e4:0c:ee")
        waitFor(lambda: os.path.exists(path), what="the vpnkit socket")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        self.addCleanup(s.close)
        s.connect(path)
        s.sendall(HELLO)
        self.assertEqual(readExactly(s, len(HELLO)), HELLO)
        s.sendall(COMMAND)
        self.assertEqual(readExactly(s, 258), expectedResponse(1500, GUEST_MAC))
        request = arpRequest()
        s.sendall(struct.pack("<H", len(request)) + request)
        (length,) = struct.unpack("<H", readExactly(s, 2))
        self.assertEqual(readExactly(s, length), arpReply())
