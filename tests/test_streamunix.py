"""
Tests for L{gvtwisted.link.streamunix}: UNIX stream links that read with
C{recv}, on real sockets.
"""

import os
import tempfile

from twisted.internet import defer, error, reactor, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gvtwisted.link import streamunix


class Collect(Protocol):
    """
    Keeps what it receives; fires C{factory.made} when connected and
    C{factory.got} once C{factory.expect} bytes arrived.
    """

    def connectionMade(self):
        self.received = b""
        self.factory.connections.append(self)
        made, self.factory.made = self.factory.made, None
        if made is not None:
            made.callback(self)

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.factory.expect and self.factory.got is not None:
            got, self.factory.got = self.factory.got, None
            got.callback(self.received)


def collectingFactory(expect=0):
    factory = Factory.forProtocol(Collect)
    factory.connections = []
    factory.made = defer.Deferred()
    factory.got = defer.Deferred()
    factory.expect = expect
    return factory


class StreamUNIXTests(TestCase):
    """
    Endpoints built by L{streamunix.linkServerFromString} and
    L{streamunix.linkClientFromString} connect real sockets whose transports
    read with C{recv}.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "link.sock")
        self.addCleanup(os.rmdir, self.directory)

    @defer.inlineCallbacks
    def test_bothWays(self):
        """
        Bytes cross a link in both directions, and both ends are the stream
        transports, whose C{doRead} is TCP's.
        """
        serverFactory = collectingFactory(expect=5)
        port = yield streamunix.linkServerFromString(reactor, f"unix:{self.path}").listen(serverFactory)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, streamunix.StreamUNIXPort)
        clientFactory = collectingFactory(expect=3)
        client = yield streamunix.linkClientFromString(reactor, f"unix:{self.path}").connect(clientFactory)
        self.addCleanup(client.transport.loseConnection)
        server = yield serverFactory.made
        self.assertIsInstance(server.transport, streamunix.StreamUNIXServer)
        self.assertIsInstance(client.transport, streamunix.StreamUNIXClient)
        serverGot, clientGot = serverFactory.got, clientFactory.got
        client.transport.write(b"hello")
        server.transport.write(b"bye")
        self.assertEqual((yield serverGot), b"hello")
        self.assertEqual((yield clientGot), b"bye")

    @defer.inlineCallbacks
    def test_connectionLost(self):
        """
        A client that closes is seen closed by the server, as with Twisted's
        own UNIX transports.
        """
        serverFactory = collectingFactory()
        lost = defer.Deferred()

        class Lost(Collect):
            def connectionLost(self, reason):
                lost.callback([reason])

        serverFactory.protocol = Lost
        port = yield streamunix.linkServerFromString(reactor, f"unix:{self.path}").listen(serverFactory)
        self.addCleanup(port.stopListening)
        client = yield streamunix.linkClientFromString(reactor, f"unix:{self.path}").connect(
            collectingFactory())
        yield serverFactory.made
        client.transport.loseConnection()
        [reason] = yield lost
        self.assertTrue(reason.check(error.ConnectionDone))

    def test_connectRefused(self):
        """
        Connecting to a path with no listener fails the endpoint's Deferred.
        """
        d = streamunix.linkClientFromString(reactor, f"unix:{self.path}").connect(collectingFactory())
        return self.assertFailure(d, Exception)


class OtherReactorTests(SynchronousTestCase):
    """
    Reactors that are not Twisted's POSIX reactors get their own calls, and
    other endpoint types are untouched.
    """

    def test_memoryReactor(self):
        """
        A memory reactor records the connect and the listen as its own.
        """
        memory = MemoryReactor()
        streamunix.linkClientFromString(memory, "unix:/tmp/x.sock").connect(Factory())
        streamunix.linkServerFromString(memory, "unix:/tmp/y.sock").listen(Factory())
        self.assertEqual(memory.unixClients[0][0], "/tmp/x.sock")
        self.assertEqual(memory.unixServers[0][0], "/tmp/y.sock")

    def test_tcpUnchanged(self):
        """
        A tcp: description is Twisted's endpoint on the reactor itself.
        """
        memory = MemoryReactor()
        endpoint = streamunix.linkClientFromString(memory, "tcp:host=127.0.0.1:port=1")
        self.assertIs(endpoint._reactor, memory)

    def test_recvNotRecvmsg(self):
        """
        The stream transports read as TCP's do, not as Twisted's UNIX ones.
        """
        from twisted.internet import tcp

        self.assertIs(streamunix.StreamUNIXServer.doRead, tcp.Connection.doRead)
        self.assertIs(streamunix.StreamUNIXClient.doRead, tcp.Connection.doRead)
        self.assertIsNot(unix.Server.doRead, tcp.Connection.doRead)
