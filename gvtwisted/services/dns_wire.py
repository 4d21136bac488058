"""
The DNS wire format, just as far as a forwarding cache needs it.

twisted.names decodes a message into objects and encodes it again. That is right
for a server that makes its own answers, but a forwarder must relay what the
upstream said: record types Twisted does not know, RDATA it would re-encode
differently, the exact rcode. So a forwarded answer is kept as the upstream's
bytes, and this module only finds where things are in them: the question, the
start and end of every resource record, and each TTL field. With those offsets we
can give a response the client's id and question, age its TTLs, and truncate it at
a record boundary, all without decoding RDATA.

Compression pointers in DNS only point backwards, and the header and question keep
their length when we swap in the client's question (the same name, maybe in other
letter case). So keeping the records in order and dropping only a tail of them
never breaks a pointer.

The OPT pseudo-record (EDNS0) is hop-by-hop (RFC 6891 section 6.1.1): it is never
relayed or cached. The parser reports it apart from the records, and every
response we send gets an OPT of our own if, and only if, the client sent one.
"""

import struct

# Record types and classes we need by number.
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_TSIG = 250
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# Response codes.
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

# Header flag bits (the 16-bit field after the id).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800

# EDNS option codes that must not cross a hop: a cookie belongs to one client and
# one server (RFC 7873), padding to one transport (RFC 7830).
OPTION_COOKIE = 10
OPTION_PADDING = 12
# Extended DNS Errors (RFC 8914) explain an upstream's failure; worth relaying.
OPTION_EDE = 15

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")
TWO = struct.Struct("!HH")
TTL = struct.Struct("!I")
UINT16 = struct.Struct("!H")

MAX_POINTER_JUMPS = 64
MAX_NAME_LENGTH = 255


class WireError(ValueError):
    """
    The bytes are not a well-formed DNS message.
    """


class Question:
    """
    One entry of the question section.

    @ivar raw: the entry's bytes as received: name, type and class.
    @ivar labels: the name's labels as received (letter case kept).
    @ivar key: the name in lower case, labels joined by dots, no final dot; the
        form every lookup and cache key uses.
    """

    __slots__ = ("raw", "labels", "key", "qtype", "qclass")

    def __init__(self, raw, labels, qtype, qclass):
        self.raw = raw
        self.labels = labels
        self.key = b".".join(labels).lower()
        self.qtype = qtype
        self.qclass = qclass

    @property
    def text(self) -> str:
        """
        The name as text, letter case kept, without the final dot.
        """
        return b".".join(self.labels).decode("latin-1")


class Record:
    """
    Where one resource record lies in its message.

    @ivar section: 0 answer, 1 authority, 2 additional.
    """

    __slots__ = ("section", "start", "end", "rtype", "rclass", "ttl", "rdataStart")

    def __init__(self, section, start, end, rtype, rclass, ttl, rdataStart):
        self.section = section
        self.start = start
        self.end = end
        self.rtype = rtype
        self.rclass = rclass
        self.ttl = ttl
        self.rdataStart = rdataStart

    @property
    def ttlOffset(self) -> int:
        """
        Where the 4-byte TTL field sits: just before the 2-byte RDLENGTH.
        """
        return self.rdataStart - 6


class OPT:
    """
    What an OPT pseudo-record said.

    @ivar options: the raw RDATA: a sequence of (code, length, data) options.
    """

    __slots__ = ("udpSize", "extRcode", "version", "do", "options")

    def __init__(self, udpSize=512, extRcode=0, version=0, do=False, options=b""):
        self.udpSize = udpSize
        self.extRcode = extRcode
        self.version = version
        self.do = do
        self.options = options

    def encode(self) -> bytes:
        """
        The OPT record on the wire: root name, type 41, the UDP size in the class
        field, extended rcode, version and DO flag in the TTL field.
        """
        flags = 0x8000 if self.do else 0
        return (
            b"\x00"
            + struct.pack(
                "!HHBBHH",
                TYPE_OPT,
                self.udpSize,
                self.extRcode & 0xFF,
                self.version,
                flags,
                len(self.options),
            )
            + self.options
        )


def iterOptions(rdata: bytes):
    """
    Yield (code, data) for each EDNS option; stop at a malformed tail.
    """
    offset = 0
    while offset + 4 <= len(rdata):
        code, length = TWO.unpack_from(rdata, offset)
        offset += 4
        if offset + length > len(rdata):
            return
        yield code, rdata[offset : offset + length]
        offset += length


def keepOptions(rdata: bytes, keep=(OPTION_EDE,)) -> bytes:
    """
    The options of C{rdata} whose codes are in C{keep}, re-encoded.
    """
    out = []
    for code, data in iterOptions(rdata):
        if code in keep:
            out.append(TWO.pack(code, len(data)) + data)
    return b"".join(out)


class Message:
    """
    A parsed DNS message: header fields, questions, and the position of each
    record in C{data}.

    @ivar data: the message bytes.
    @ivar questionEnd: where the question section ends.
    @ivar records: answer, authority and additional records in wire order,
        without the OPT record and without anything that follows it.
    @ivar opt: the OPT record's content, or L{None}.
    @ivar partial: L{True} if the records could not all be parsed but the
        message had TC set: a truncated answer cut in the middle of a record,
        which some servers send. Its records are dropped.
    """

    __slots__ = (
        "data",
        "id",
        "flags",
        "counts",
        "questions",
        "questionEnd",
        "records",
        "opt",
        "optCount",
        "partial",
    )

    @property
    def isResponse(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def rcode(self) -> int:
        """
        The full response code: the header's 4 bits and the OPT's 8 upper bits.
        """
        high = self.opt.extRcode << 4 if self.opt is not None else 0
        return high | (self.flags & 0xF)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def question(self):
        """
        The first question, or L{None}.
        """
        return self.questions[0] if self.questions else None

    def sectionCount(self, section: int) -> int:
        return sum(1 for r in self.records if r.section == section)


def readName(data: bytes, offset: int):
    """
    Read the domain name at C{offset}, following compression pointers.

    @return: (labels, end) where C{end} is the offset just after the name where
        it was found (after the first pointer, if any).
    @raise WireError: for a truncated name, a bad label type, a pointer loop or
        a name longer than 255 bytes.
    """
    labels = []
    length = 1
    end = None
    jumps = 0
    size = len(data)
    while True:
        if offset >= size:
            raise WireError("name runs past the end")
        n = data[offset]
        if n == 0:
            offset += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if offset + 2 > size:
                raise WireError("pointer runs past the end")
            target = UINT16.unpack_from(data, offset)[0] & 0x3FFF
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > MAX_POINTER_JUMPS or target >= offset:
                # Pointers must go backwards; this also rules out loops.
                raise WireError("bad compression pointer")
            offset = target
            continue
        if kind:
            raise WireError("unknown label type")
        offset += 1
        if offset + n > size:
            raise WireError("label runs past the end")
        labels.append(bytes(data[offset : offset + n]))
        length += n + 1
        if length > MAX_NAME_LENGTH:
            raise WireError("name longer than 255 bytes")
        offset += n
    return labels, (end if end is not None else offset)


def parseMessage(data: bytes) -> Message:
    """
    Parse C{data} as a DNS message.

    Trailing bytes after the last record are ignored. A message with more than
    one OPT record is malformed (RFC 6891 section 6.1.1).

    @raise WireError: if the message is malformed.
    """
    data = bytes(data)
    if len(data) < HEADER.size:
        raise WireError("shorter than a header")
    msgId, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    m = Message()
    m.data = data
    m.id = msgId
    m.flags = flags
    m.counts = (qd, an, ns, ar)
    m.opt = None
    m.optCount = 0
    m.partial = False
    offset = HEADER.size
    questions = []
    for _ in range(qd):
        start = offset
        labels, offset = readName(data, offset)
        if offset + 4 > len(data):
            raise WireError("question runs past the end")
        qtype, qclass = TWO.unpack_from(data, offset)
        offset += 4
        questions.append(Question(data[start:offset], labels, qtype, qclass))
    m.questions = questions
    m.questionEnd = offset
    records = []
    try:
        stopped = False
        for section, count in ((0, an), (1, ns), (2, ar)):
            for _ in range(count):
                start = offset
                _, offset = readName(data, offset)
                if offset + RR_FIXED.size > len(data):
                    raise WireError("record runs past the end")
                rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, offset)
                rdataStart = offset + RR_FIXED.size
                offset = rdataStart + rdlength
                if offset > len(data):
                    raise WireError("record data runs past the end")
                if rtype == TYPE_OPT:
                    if section != 2 or data[start] != 0:
                        raise WireError("OPT record out of place")
                    m.optCount += 1
                    if m.optCount > 1:
                        raise WireError("more than one OPT record")
                    m.opt = OPT(
                        udpSize=rclass,
                        extRcode=ttl >> 24,
                        version=(ttl >> 16) & 0xFF,
                        do=bool(ttl & 0x8000),
                        options=data[rdataStart:offset],
                    )
                    stopped = True
                    continue
                if stopped or rtype == TYPE_TSIG:
                    # Anything after the OPT record (in practice only a TSIG)
                    # belongs to this hop; it is parsed but not kept.
                    stopped = True
                    continue
                records.append(
                    Record(section, start, offset, rtype, rclass, ttl, rdataStart)
                )
    except WireError:
        if not flags & FLAG_TC or not flags & FLAG_QR:
            raise
        m.partial = True
        records = []
    m.records = records
    return m


def soaMinimumTTL(message: Message, record: Record) -> int:
    """
    The TTL a negative answer may be cached for, from one of its SOA records:
    the smaller of the SOA's own TTL and its MINIMUM field (RFC 2308 section 5).
    MINIMUM is the last 4 bytes of the RDATA, so no name needs decoding.
    """
    if record.end - record.rdataStart < 22:
        return 0
    minimum = TTL.unpack_from(message.data, record.end - 4)[0]
    return min(record.ttl, minimum)


def cacheTTL(message: Message, maxTTL: int, negativeMaxTTL: int) -> int:
    """
    How long C{message}, an upstream's answer, may be cached, in whole seconds;
    0 for do not cache.

    A positive answer lives as long as its shortest-lived answer record. A
    negative one (NXDOMAIN, or NOERROR without answers) lives as long as its
    SOA says, at most C{negativeMaxTTL}; without an SOA it is not cached (RFC 2308
    section 5). Failures, truncated and partial answers are never cached.
    """
    if message.truncated or message.partial:
        return 0
    rcode = message.rcode
    answers = [r for r in message.records if r.section == 0]
    if rcode == NOERROR and answers:
        ttl = min(_ttlValue(r.ttl) for r in answers)
        return min(ttl, maxTTL)
    if rcode in (NOERROR, NXDOMAIN):
        soas = [r for r in message.records if r.section == 1 and r.rtype == TYPE_SOA]
        if not soas:
            return 0
        ttl = min(_ttlValue(soaMinimumTTL(message, r)) for r in soas)
        return min(ttl, negativeMaxTTL)
    return 0


def _ttlValue(ttl: int) -> int:
    """
    A TTL with the top bit set is to be read as 0 (RFC 2181 section 8).
    """
    return 0 if ttl & 0x80000000 else ttl


def buildQuery(query: Message, msgId: int, udpSize: int, withOPT: bool = True) -> bytes:
    """
    The query we send upstream on behalf of C{query}: a new id, the client's
    RD, AD and CD flags, its first question as received, and an OPT of our own
    (our UDP size and the client's DO flag, no options) unless C{withOPT} is
    false.

    An OPT goes upstream even for a client that sent none, so that answers up to
    C{udpSize} come over UDP and one cache entry serves every client; each client
    then gets an answer shaped for what it sent.
    """
    flags = query.flags & (FLAG_RD | FLAG_AD | FLAG_CD)
    question = query.questions[0].raw
    if not withOPT:
        return HEADER.pack(msgId, flags, 1, 0, 0, 0) + question
    do = query.opt.do if query.opt is not None else False
    opt = OPT(udpSize=udpSize, do=do).encode()
    return HEADER.pack(msgId, flags, 1, 0, 0, 1) + question + opt


def buildResponse(
    query: Message,
    answer: Message | None = None,
    rcode: int | None = None,
    limit: int | None = None,
    age: int = 0,
    udpSize: int = 1232,
    recursionAvailable: bool = True,
) -> bytes:
    """
    The response to send to the client that asked C{query}.

    @param answer: the parsed answer to relay (an upstream's, a cached one, or
        one we made). Its records keep their bytes; its header gives the flags
        and rcode; its question is replaced by the client's, which has the same
        length. L{None} for an error with no answer.
    @param rcode: the full response code when C{answer} is L{None}.
    @param limit: the largest message allowed (the UDP limit), L{None} for TCP
        (65535). Records that do not fit are left off from the end; TC is set if
        an answer or authority record had to go.
    @param age: seconds to take off every TTL (how long it sat in the cache).
    @param udpSize: the UDP size we advertise in our OPT.
    """
    if limit is None:
        limit = 65535
    clientQuestion = query.question
    clientFlags = query.flags
    if answer is not None:
        flags = answer.flags & (FLAG_AA | FLAG_TC | FLAG_RA | FLAG_AD | FLAG_CD)
        fullRcode = answer.rcode
        records = answer.records
        data = answer.data
        if answer.question is not None and (
            clientQuestion is None
            or len(answer.question.raw) == len(clientQuestion.raw)
        ):
            questionEnd = answer.questionEnd
            prefixEnd = questionEnd
        else:
            # An answer without a question (some servers do that for errors)
            # has no records either: checked when it was accepted.
            records = []
            questionEnd = prefixEnd = HEADER.size
    else:
        flags = FLAG_RA if recursionAvailable else 0
        fullRcode = rcode or 0
        records = []
        data = b""
        questionEnd = prefixEnd = HEADER.size
    flags |= FLAG_QR | (clientFlags & (FLAG_RD | OPCODE_MASK))
    if recursionAvailable:
        flags |= FLAG_RA

    if query.opt is not None:
        options = b""
        if answer is not None and answer.opt is not None:
            options = keepOptions(answer.opt.options)
        do = query.opt.do
        opt = OPT(udpSize=udpSize, extRcode=fullRcode >> 4, do=do, options=options)
        optBytes = opt.encode()
    else:
        optBytes = b""
        if fullRcode > 15:
            # An extended rcode cannot be said without EDNS.
            fullRcode = SERVFAIL
    flags = (flags & ~0xF) | (fullRcode & 0xF)

    questionBytes = clientQuestion.raw if clientQuestion is not None else b""
    qdcount = 1 if clientQuestion is not None else 0
    base = HEADER.size + len(questionBytes)
    if base + len(optBytes) > limit and optBytes:
        # Our OPT with relayed options does not fit: send it bare.
        opt.options = b""
        optBytes = opt.encode()

    keep = len(records)
    while keep and base + (records[keep - 1].end - prefixEnd) + len(optBytes) > limit:
        keep -= 1
    if any(r.section < 2 for r in records[keep:]):
        flags |= FLAG_TC
    kept = records[:keep]

    body = bytearray(data[prefixEnd : kept[-1].end]) if kept else bytearray()
    if age or kept:
        for r in kept:
            ttl = _ttlValue(r.ttl)
            TTL.pack_into(body, r.ttlOffset - prefixEnd, max(0, ttl - age))
    counts = [0, 0, 0]
    for r in kept:
        counts[r.section] += 1
    if optBytes:
        counts[2] += 1
    header = HEADER.pack(query.id, flags, qdcount, *counts)
    return header + questionBytes + bytes(body) + optBytes
