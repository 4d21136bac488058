"""
The gateway side of one guest TCP connection: an RFC 9293 state machine that does
no I/O of its own and is, to the protocol above it, an ordinary Twisted transport.

Segments come in already parsed (L{gvtwisted.wire.tcp.parseSegment}) through
L{TCPConnection.receiveSyn} and L{TCPConnection.segmentReceived}; segments go out
as complete TCP segments (header, options, payload, checksum) through the
C{send} callable the network gave us. Time comes from an injected
C{IReactorTime}, so the same code runs on the reactor and on
L{twisted.internet.task.Clock} in tests.

The package is laid out as smoltcp lays out its TCP socket:

 - L{machine}: L{TCPMachine}, the connection machine (states, sequence spaces,
   segment processing per state in RFC 9293 3.10.7's order, retransmission,
   timers), no I/O;
 - L{rtt}: L{RttEstimator}, RFC 6298's SRTT, RTTVAR and RTO;
 - L{congestion}: L{NewReno}, slow start, congestion avoidance, fast
   retransmit and recovery;
 - L{assembler}: L{Assembler}, the bounded out-of-order receive queue and its
   SACK blocks;
 - L{transport}: L{TCPConnection}, the machine as a Twisted transport
   (C{ITCPTransport}, C{IPushProducer}, C{IConsumer}, the link's flow control);
 - L{states} and L{sequence}: state names and connection-free helpers.

Sequence numbers are unwrapped on entry into unbounded Python integers (relative
to the variable they are compared with), so every comparison inside is a plain
integer comparison and wrap-around only exists at the wire.
"""

# Looked up here by the machine (so that a test can watch the checksum bursts).
from gvtwisted.wire.checksum import foldEach

from gvtwisted.stack.tcp.states import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    SYN_PENDING,
    SYN_RCVD,
    SYN_SENT,
    TIME_WAIT,
)
from gvtwisted.stack.tcp.sequence import (
    initialSequenceNumber,
    resetForSegment,
)
from gvtwisted.stack.tcp.rtt import RttEstimator
from gvtwisted.stack.tcp.congestion import NewReno
from gvtwisted.stack.tcp.assembler import Assembler
from gvtwisted.stack.tcp.machine import TCPMachine
from gvtwisted.stack.tcp.transport import TCPConnection

__all__ = [
    "Assembler",
    "CLOSED",
    "CLOSE_WAIT",
    "CLOSING",
    "ESTABLISHED",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "LAST_ACK",
    "LISTEN",
    "NewReno",
    "RttEstimator",
    "SYN_PENDING",
    "SYN_RCVD",
    "SYN_SENT",
    "TCPConnection",
    "TCPMachine",
    "TIME_WAIT",
    "foldEach",
    "initialSequenceNumber",
    "resetForSegment",
]
