"""
One SSH session to a guest's sshd, opened when first needed and re-opened
with backoff.

podman starts gvproxy before the VM boots, so the first connections to a
forwarded socket arrive while nothing listens on the guest's port 22. A
connection that needs the session waits (at most C{maxWait} seconds, at most
C{maxWaiting} of them) while the session is dialled again and again, the delay
doubling from C{initialBackoff} to C{maxBackoff} seconds (gvproxy's own
100 ms to 1 s). When the session drops (sshd restarted, the guest rebooted),
the channels on it close and the next connection dials a new one. A
keepalive request every C{keepaliveInterval} seconds finds a session whose
guest went away without a word.

The TCP connection is made with a C{dial(factory)} callable: for gvtap the
virtual network's C{connectTCP} to the guest's address, so the session runs
through the virtual network and never through the host's.

Host keys: gvproxy accepts whatever key the guest's sshd shows
(C{ssh.InsecureIgnoreHostKey}); so does this, and logs its fingerprint. The
guest is reached only through this process's own virtual network, where no
third party can sit in the middle.
"""

from twisted.conch.ssh import connection, keys, transport, userauth
from twisted.conch.ssh.common import NS
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger

from gvtwisted.services.ssh.channel import StreamLocalChannel, streamLocalRequest

INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 1.0
MAX_WAIT = 60.0
MAX_WAITING = 256
DIAL_TIMEOUT = 5.0
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_TIMEOUT = 15.0


class SessionUnavailable(Exception):
    """
    No SSH session could be opened in time (or too many connections wait).
    """


class IdentityError(ValueError):
    """
    An identity file that cannot be read or is not an OpenSSH private key.
    """


def loadIdentity(path: str, passphrase=None) -> keys.Key:
    """
    Read an OpenSSH (or PEM) private key: ed25519, ecdsa or rsa.

    @raise IdentityError: naming the file and what is wrong.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise IdentityError(f"cannot read identity {path!r}: {e.strerror}") from None
    try:
        key = keys.Key.fromString(data, passphrase=passphrase.encode() if passphrase else None)
    except keys.EncryptedKeyError:
        raise IdentityError(f"identity {path!r} is encrypted and no passphrase was given") from None
    except (keys.BadKeyError, ValueError, TypeError) as e:
        raise IdentityError(f"identity {path!r} is not a private key: {e}") from None
    if key.isPublic():
        raise IdentityError(f"identity {path!r} is a public key, not a private one")
    return key


class _UserAuth(userauth.SSHUserAuthClient):
    """
    Public-key authentication only, with the one identity given, signed at
    once (RFC 4252 7 allows skipping the query).

    An RSA key signs with rsa-sha2-512 or rsa-sha2-256 when sshd lists it in
    C{server-sig-algs} (RFC 8332, 8308): OpenSSH 8.8 and later refuse the
    SHA-1 C{ssh-rsa} that conch would use by default.
    """

    preferredOrder = [b"publickey"]

    def __init__(self, user, key, instance):
        userauth.SSHUserAuthClient.__init__(self, user, instance)
        self._key = key
        self._offered = False

    def signatureAlgorithm(self) -> bytes:
        sshType = self._key.sshType()
        if sshType != b"ssh-rsa":
            return sshType
        extensions = getattr(self.transport, "peerExtensions", {}) or {}
        offered = extensions.get(b"server-sig-algs", b"").split(b",")
        for algorithm in (b"rsa-sha2-512", b"rsa-sha2-256"):
            if algorithm in offered:
                return algorithm
        return sshType

    def auth_publickey(self):
        if self._offered:
            return False
        self._offered = True
        algorithm = self.signatureAlgorithm()
        blob = self._key.public().blob()
        signed = (NS(self.transport.sessionID) + bytes((userauth.MSG_USERAUTH_REQUEST,))
                  + NS(self.user) + NS(self.instance.name) + NS(b"publickey") + b"\x01"
                  + NS(algorithm) + NS(blob))
        signature = self._key.sign(signed, signatureType=algorithm)
        self.askForAuth(b"publickey", b"\x01" + NS(algorithm) + NS(blob) + NS(signature))
        return True

    def getPassword(self, prompt=None):
        return None

    def getGenericAnswers(self, name, instruction, prompts):
        return defer.fail(NotImplementedError("keyboard-interactive"))


class _Connection(connection.SSHConnection):
    """
    The connection service; a channel whose host is paused gets no window.
    """

    def __init__(self, session):
        connection.SSHConnection.__init__(self)
        self.session = session

    def serviceStarted(self):
        connection.SSHConnection.serviceStarted(self)
        self.session._ready(self)

    def adjustWindow(self, channel, bytesToAdd):
        if getattr(channel, "windowHeld", False):
            return
        connection.SSHConnection.adjustWindow(self, channel, bytesToAdd)


class _ClientTransport(transport.SSHClientTransport):
    def __init__(self, session):
        self.session = session
        self.failure = None

    def verifyHostKey(self, hostKey, fingerprint):
        self.session.log.debug("{name}: guest host key {fingerprint} accepted",
                               name=self.session.name, fingerprint=fingerprint)
        return defer.succeed(True)

    def connectionSecure(self):
        session = self.session
        self.requestService(_UserAuth(session.user.encode("utf-8"), session.key,
                                      _Connection(session)))

    def sendDisconnect(self, reason, desc):
        if self.failure is None:
            self.failure = desc.decode("utf-8", "replace") if isinstance(desc, bytes) else str(desc)
        return transport.SSHClientTransport.sendDisconnect(self, reason, desc)

    def receiveError(self, reasonCode, description):
        if self.failure is None:
            self.failure = "sshd: " + description.decode("utf-8", "replace")
        return transport.SSHClientTransport.receiveError(self, reasonCode, description)

    def connectionLost(self, reason):
        # The session forgets this connection first, so that channels the
        # service fails now are asked for again on a new session.
        self.session._lost(self, reason)
        transport.SSHClientTransport.connectionLost(self, reason)


class _DialFactory(ClientFactory):
    noisy = False

    def __init__(self, session):
        self.session = session

    def buildProtocol(self, addr):
        return _ClientTransport(self.session)

    def clientConnectionFailed(self, connector, reason):
        self.session._dialFailed(reason)


class SSHSession:
    """
    One SSH session, shared by every forwarded connection to one sshd as
    one user.

    @param dial: C{dial(factory, timeout)} starts a TCP connection to sshd
        (for gvtap, the virtual network's C{connectTCP} to the guest).
    @param name: a label for logs, e.g. C{core@192.168.127.2:22}.
    @ivar connection: the running connection service, or L{None}.
    """

    log = Logger()

    def __init__(self, reactor, dial, user, key, name, counters=None,
                 initialBackoff=INITIAL_BACKOFF, maxBackoff=MAX_BACKOFF,
                 maxWait=MAX_WAIT, maxWaiting=MAX_WAITING,
                 keepaliveInterval=KEEPALIVE_INTERVAL, keepaliveTimeout=KEEPALIVE_TIMEOUT):
        self.reactor = reactor
        self.dial = dial
        self.user = user
        self.key = key
        self.name = name
        self.counters = counters
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.maxWait = maxWait
        self.maxWaiting = maxWaiting
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveTimeout = keepaliveTimeout
        self.connection = None
        self.attempts = 0
        self._backoff = initialBackoff
        self._dialling = False
        self._transport = None
        self._retry = None
        self._waiters = []
        self._keepalive = None
        self._stopped = False
        self._lastFailure = None

    # -- what forwards use -------------------------------------------------

    def openChannel(self, path, host):
        """
        Open a C{direct-streamlocal@openssh.com} channel to C{path} in the
        guest for the host connection C{host} (a
        L{gvtwisted.services.ssh.channel.HostSide}).

        @return: a L{Deferred} firing with the open channel, or failing with
            L{SessionUnavailable} or the channel's open failure. Cancelling it
            gives up the wait.
        """
        return self._openChannel(path, host, retries=1)

    def _openChannel(self, path, host, retries):
        def withConnection(conn):
            opened = defer.Deferred()
            channel = StreamLocalChannel(path, host, opened, conn=conn)
            conn.openChannel(channel, streamLocalRequest(path))
            return opened

        def sessionDied(reason):
            # The session died while the channel was opening (sshd was killed
            # and we had not heard yet): try once more, on a new session.
            if retries > 0 and not self._stopped and reason.check(ConnectionLost, ConnectionDone):
                self._count("ssh.forward.retried")
                return self._openChannel(path, host, retries - 1)
            return reason

        return self.connected().addCallback(withConnection).addErrback(sessionDied)

    def connected(self):
        """
        A L{Deferred} that fires with the connection service once the
        session is up (at once if it is).
        """
        if self._stopped:
            return defer.fail(SessionUnavailable(f"{self.name}: stopped"))
        if self.connection is not None:
            return defer.succeed(self.connection)
        if len(self._waiters) >= self.maxWaiting:
            self._count("ssh.session.tooManyWaiting")
            return defer.fail(SessionUnavailable(
                f"{self.name}: {self.maxWaiting} connections already wait for the session"))
        waiter = _Waiter(self)
        self._waiters.append(waiter)
        waiter.timer = self.reactor.callLater(self.maxWait, self._waitTimedOut, waiter)
        if not self._dialling and self._retry is None:
            self._dial()
        return waiter.deferred

    def stop(self):
        """
        Close the session and fail whatever waits for it; open no other.
        """
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._stopKeepalive()
        for waiter in list(self._waiters):
            waiter.fail(SessionUnavailable(f"{self.name}: stopped"))
        if self._transport is not None and self._transport.transport is not None:
            self._transport.transport.loseConnection()

    # -- inside ----------------------------------------------------------------

    def _dial(self):
        self._retry = None
        if self._stopped or not self._waiters:
            return
        self._dialling = True
        self.attempts += 1
        self._count("ssh.session.dials")
        try:
            self.dial(_DialFactory(self), DIAL_TIMEOUT)
        except Exception as e:
            self._dialling = False
            self._failedAttempt(str(e))

    def _dialFailed(self, reason):
        self._dialling = False
        self._failedAttempt(reason.getErrorMessage())

    def _ready(self, conn):
        self._dialling = False
        self.connection = conn
        self._transport = conn.transport
        self._backoff = self.initialBackoff
        self._lastFailure = None
        self._count("ssh.session.opened")
        self.log.info("{name}: SSH session open", name=self.name)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.succeed(conn)
        self._startKeepalive(conn)

    def _lost(self, sshTransport, reason):
        if self.connection is not None and self.connection.transport is sshTransport:
            self.connection = None
            self._transport = None
            self._stopKeepalive()
            self._count("ssh.session.lost")
            self.log.info("{name}: SSH session closed ({reason})", name=self.name,
                          reason=sshTransport.failure or _reason(reason))
            if self._waiters and not self._stopped and self._retry is None:
                self._dial()
            return
        if not self._dialling:
            return
        self._dialling = False
        self._failedAttempt(sshTransport.failure or _reason(reason))

    def _failedAttempt(self, why):
        self._count("ssh.session.failures")
        if why != self._lastFailure:
            # One line per new reason: a booting guest refuses for a minute.
            self._lastFailure = why
            self.log.info("{name}: no SSH session yet ({why}); retrying", name=self.name, why=why)
        if self._stopped or not self._waiters:
            return
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.maxBackoff)
        self._retry = self.reactor.callLater(delay, self._dial)

    def _waitTimedOut(self, waiter):
        waiter.timer = None
        self._count("ssh.session.waitTimedOut")
        waiter.fail(SessionUnavailable(
            f"{self.name}: no SSH session after {self.maxWait:g} s"
            + (f" ({self._lastFailure})" if self._lastFailure else "")))

    def _forget(self, waiter):
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if not self._waiters and self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None

    # -- keepalive ---------------------------------------------------------------

    def _startKeepalive(self, conn):
        if self.keepaliveInterval:
            self._keepalive = self.reactor.callLater(self.keepaliveInterval, self._ping, conn)

    def _stopKeepalive(self):
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def _ping(self, conn):
        self._keepalive = None
        if self.connection is not conn:
            return
        answered = []
        d = conn.sendGlobalRequest(b"keepalive@openssh.com", b"", wantReply=True)

        def reply(_):
            # A success and a failure are both an answer: sshd is there.
            answered.append(True)
            if timeout.active():
                timeout.cancel()
            if self.connection is conn:
                self._startKeepalive(conn)

        def silent():
            if not answered and self.connection is conn:
                self._count("ssh.session.keepaliveTimeout")
                self.log.info("{name}: no keepalive answer in {t:g} s; closing the session",
                              name=self.name, t=self.keepaliveTimeout)
                transport = conn.transport.transport
                abort = getattr(transport, "abortConnection", None)
                (abort or transport.loseConnection)()

        timeout = self.reactor.callLater(self.keepaliveTimeout, silent)
        d.addBoth(reply)

    def _count(self, name):
        if self.counters is not None:
            self.counters.increment(name)


class _Waiter:
    """
    One connection waiting for the session: a cancellable L{Deferred} with a
    time limit.
    """

    def __init__(self, session):
        self.session = session
        self.timer = None
        self.deferred = defer.Deferred(self._cancel)

    def _done(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.session._forget(self)

    def succeed(self, conn):
        self._done()
        self.deferred.callback(conn)

    def fail(self, error):
        self._done()
        self.deferred.errback(error)

    def _cancel(self, deferred):
        self._done()


def _reason(reason) -> str:
    if reason is None or reason.check(ConnectionDone):
        return "connection closed"
    return reason.getErrorMessage()
