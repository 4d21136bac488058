"""
The RFC 9293 state names of L{gvtwisted.stack.tcp} and the sets of states that
send and receive.

States are compared by identity (C{state is ESTABLISHED}) on the hot path, so
each name exists once, here.
"""

LISTEN = "LISTEN"
# The extra state between receiving a guest's SYN and answering it: the NAT dials
# the real destination first.
SYN_PENDING = "SYN_PENDING"
SYN_SENT = "SYN_SENT"
SYN_RCVD = "SYN_RCVD"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"
CLOSED = "CLOSED"

# States in which data and FIN may be (re)transmitted.
SENDING = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
# States in which incoming data is accepted.
RECEIVING = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))
