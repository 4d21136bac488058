"""
End to end for the message and stdio guest links of a real C{twistd gvtap}:
C{--listen-vfkit} (unix datagram), C{--listen-bess} (unix seqpacket) and
C{--listen-stdio} (2-byte little-endian lengths on stdin/stdout). The test
process is the guest: it sends a DHCP DISCOVER from the device MAC and expects
an OFFER of the static lease.
"""

import os
import socket
import struct
import subprocess
import time

import dpkt
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import TWISTD, E2EMixin, environment, stdioFrameReader, waitFor

DEVICE_MAC = bytes.fromhex("5a94efe40cee")
SKIP = "end-to-end tests need root" if os.geteuid() != 0 else None


def dhcpDiscover(xid=0x1234):
    """
    An Ethernet frame with a DHCP DISCOVER from L{DEVICE_MAC}, broadcast.
    """
    message = dpkt.dhcp.DHCP(
        chaddr=DEVICE_MAC, xid=xid,
        opts=((dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPDISCOVER])),))
    udp = dpkt.udp.UDP(sport=68, dport=67, data=bytes(message))
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=b"\x00" * 4, dst=b"\xff" * 4, p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=DEVICE_MAC, dst=b"\xff" * 6,
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(eth)


def dhcpOffer(frame, xid=0x1234):
    """
    The DHCP message in C{frame} if it is an OFFER for transaction C{xid},
    else L{None}.
    """
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
        return None
    if ip.data.dport != 68:
        return None
    message = dpkt.dhcp.DHCP(ip.data.data)
    types = [value for code, value in message.opts if code == dpkt.dhcp.DHCP_OPT_MSGTYPE]
    if message.xid != xid or types != [bytes([dpkt.dhcp.DHCPOFFER])]:
        return None
    return message


def receiveOffer(recv, timeout=15.0):
    """
    Call C{recv()} (a frame, or L{None} on a timeout) until a DHCP OFFER
    comes; return its offered address.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = recv()
        if frame is None:
            continue
        offer = dhcpOffer(frame)
        if offer is not None:
            return socket.inet_ntoa(struct.pack(">I", offer.yiaddr))
    raise AssertionError("no DHCP OFFER")


class MessageLinkTests(E2EMixin, SynchronousTestCase):
    """
    vfkit and bess links of a real daemon.
    """

    if SKIP:
        skip = SKIP

    def test_vfkit(self):
        """
        A unixgram client greets with C{VFKT}, sends a DISCOVER and gets an
        OFFER of 192.168.127.2 sent back to its own address; the host's
        socket file has mode 0600.
        """
        path = os.path.join(self.tempDir, "vfkit.sock")
        daemon, _ = self.startDaemon("--listen-vfkit", f"unixgram://{path}")
        waitFor(lambda: os.path.exists(path) or not daemon.alive(), what="the vfkit socket")
        self.assertTrue(daemon.alive(), daemon.output())
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(guest.close)
        guest.bind(os.path.join(self.tempDir, "guest.sock"))
        guest.settimeout(1.0)
        guest.sendto(b"VFKT", path)
        guest.sendto(dhcpDiscover(), path)

        def recv():
            try:
                return guest.recv(70000)
            except socket.timeout:
                return None

        self.assertEqual(receiveOffer(recv), "192.168.127.2")
        self.assertIn("vfkit", daemon.output())

    def test_bess(self):
        """
        A SOCK_SEQPACKET client sends a DISCOVER as one message and gets an
        OFFER of 192.168.127.2 as one message.
        """
        path = os.path.join(self.tempDir, "bess.sock")
        daemon, _ = self.startDaemon("--listen-bess", f"unixpacket://{path}")
        waitFor(lambda: os.path.exists(path) or not daemon.alive(), what="the bess socket")
        self.assertTrue(daemon.alive(), daemon.output())
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(guest.close)
        guest.settimeout(1.0)
        guest.connect(path)
        guest.send(dhcpDiscover())

        def recv():
            try:
                message = guest.recv(70000)
            except socket.timeout:
                return None
            if message == b"":
                raise AssertionError("gvtap closed the bess link:\n" + daemon.output())
            return message

        self.assertEqual(receiveOffer(recv), "192.168.127.2")


class StdioLinkTests(E2EMixin, SynchronousTestCase):
    """
    The stdio link of a real daemon.
    """

    if SKIP:
        skip = SKIP

    def spawn(self, *twistdOptions):
        process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile="] + list(twistdOptions)
            + ["gvtap", "--ssh-port", "-1", "--listen-stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(), cwd=self.tempDir)

        def stop():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            for stream in (process.stdin, process.stdout, process.stderr):
                stream.close()

        self.addCleanup(stop)
        return process

    def test_stdio(self):
        """
        A DISCOVER written on the daemon's stdin with a 2-byte little-endian
        length gets an OFFER of 192.168.127.2 on its stdout, framed the same
        way, and nothing else (no log lines) is on stdout.
        """
        logfile = os.path.join(self.tempDir, "stdio.log")
        process = self.spawn("--logfile", logfile)
        frame = dhcpDiscover()
        process.stdin.write(struct.pack("<H", len(frame)) + frame)
        process.stdin.flush()
        recv = stdioFrameReader(self, process.stdout.fileno(),
                                lambda: "gvtap closed stdout; log:\n" + open(logfile).read())

        self.assertEqual(receiveOffer(recv), "192.168.127.2")
        self.assertIn("guest link up: stdio", open(logfile).read())

    def test_stdioNeedsLogfile(self):
        """
        Without --logfile twistd would log to stdout, into the frames:
        gvtap refuses to start, with a reason on stderr.
        """
        process = self.spawn()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            self.fail("gvtap --listen-stdio without --logfile did not exit")
        self.assertNotEqual(process.returncode, 0)
        self.assertIn(b"--logfile", process.stderr.read())
