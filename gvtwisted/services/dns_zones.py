"""
The names the gateway answers itself: gvproxy-compatible local zones and an
optional hosts file.

Facts of gvproxy (gvisor-tap-vsock, pkg/services/dns) that this module keeps:

 - A zone is C{{"Name": "containers.internal.", "Records": [...], "DefaultIP":
   "..."}}; a record is C{{"Name": "gateway", "IP": "...", "Regexp": "..."}}.
   JSON keys match without regard to letter case (Go's encoding/json) and
   unknown keys are ignored.
 - A query name is under a zone when it ends with C{"." + zone name}; the zones
   are tried in list order and the first such zone decides.
 - Within it, the name without the zone suffix (C{"gateway"} for
   C{gateway.containers.internal.}) is compared with each record in order: equal
   to a non-empty C{Name}, or matched anywhere by C{Regexp} (Go's C{MatchString}
   is a search, like Python's C{re.search}). The first record that matches gives
   the one answer; else C{DefaultIP}; else NXDOMAIN. (We add: a later
   matching record of the other address family answers the other query type,
   so that C{gateway} can have both an A and an AAAA record; A answers are
   unchanged.)
 - Local answers have TTL 0.
 - Adding a zone whose name exists replaces that zone with the new one, whose
   records are the new records followed by the old ones (the new C{DefaultIP}
   wins, even if it is empty).
 - The hosts file is consulted after the zones.

Where we differ, on purpose:

 - gvproxy answers only A queries locally and sends other types of a local name
   upstream (or returns an empty answer for AAAA). A name that exists locally has
   no other data anywhere, so every other type gets NOERROR with no records, and a
   name that does not exist gets NXDOMAIN for every type. A record whose IP is an
   IPv6 address answers AAAA queries.
 - Names compare without regard to letter case (DNS names are case-insensitive,
   and some resolvers randomise case).
 - The zone's own name (its apex) exists: NOERROR, with an SOA for SOA queries.
 - Negative local answers carry an SOA of the zone with TTL 0 and MINIMUM 0, so a
   resolver knows it is authoritative and caches nothing.
 - PTR queries for an address of a record with a plain name, or of a hosts file
   line, are answered locally.
"""

import ipaddress
import re
from io import BytesIO

from twisted.internet import defer
from twisted.names import common, dns, error

from gvtwisted.services import dns_wire as wire

_MAX_NAME = 253


def defaultZones(gatewayIP: str, hostIP: str, gatewayIP6=None, hostIP6=None) -> list:
    """
    The zones gvproxy serves out of the box: C{containers.internal.} and
    C{docker.internal.}, each naming the gateway and the host; with IPv6
    addresses, their AAAA records follow the A ones.
    """
    records = [{"Name": "gateway", "IP": str(gatewayIP)}, {"Name": "host", "IP": str(hostIP)}]
    if gatewayIP6 is not None:
        records.append({"Name": "gateway", "IP": str(gatewayIP6)})
    if hostIP6 is not None:
        records.append({"Name": "host", "IP": str(hostIP6)})
    return [
        {"Name": zone, "Records": [dict(r) for r in records], "DefaultIP": ""}
        for zone in ("containers.internal.", "docker.internal.")
    ]


def _field(obj: dict, name: str):
    """
    The value of key C{name} in C{obj}, matched without regard to letter case
    as Go's encoding/json does; an exact match wins.
    """
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _checkDomain(name: str, where: str) -> str:
    """
    Validate a zone name; return it with a final dot.
    """
    if not isinstance(name, str):
        raise ValueError(f"{where}: must be a string")
    if name in ("", "."):
        if name == "":
            raise ValueError(f"{where}: must not be empty (use '.' for the root)")
        return "."
    stripped = name[:-1] if name.endswith(".") else name
    if len(stripped) > _MAX_NAME:
        raise ValueError(f"{where}: longer than {_MAX_NAME} characters")
    for label in stripped.split("."):
        if not label:
            raise ValueError(f"{where}: empty label in {name!r}")
        if len(label.encode("utf-8")) > 63:
            raise ValueError(f"{where}: label longer than 63 bytes in {name!r}")
    return stripped + "."


def _checkIP(value, where: str, required: bool):
    """
    Validate an address given as text; L{None} for an empty optional one.
    """
    if value is None or value == "":
        if required:
            raise ValueError(f"{where}: an IP address is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{where}: not an IP address: {value!r}") from None


class _Record:
    """
    One validated zone record.
    """

    __slots__ = ("name", "key", "ip", "pattern", "regexp")

    def __init__(self, name, ip, pattern):
        self.name = name
        self.key = name.lower().rstrip(".")
        self.ip = ip
        self.pattern = pattern
        self.regexp = re.compile(pattern) if pattern is not None else None

    def matches(self, relative: str) -> bool:
        if self.key and self.key == relative.lower():
            return True
        if self.regexp is not None:
            if self.regexp.search(relative) or self.regexp.search(relative.lower()):
                return True
        return False

    def toJSON(self) -> dict:
        out = {"Name": self.name, "IP": str(self.ip) if self.ip else ""}
        if self.pattern is not None:
            out["Regexp"] = self.pattern
        return out


class _Zone:
    """
    One validated zone.

    @ivar key: the zone name in lower case without its final dot; C{""} for the
        root zone.
    """

    __slots__ = ("name", "key", "records", "defaultIP")

    def __init__(self, name, records, defaultIP):
        self.name = name
        self.key = name.lower().rstrip(".")
        self.records = records
        self.defaultIP = defaultIP

    def relative(self, key: str):
        """
        If the lower-case name C{key} is under this zone, the length of its part
        before the zone suffix (0 for the apex); else L{None}.
        """
        if not self.key:
            return len(key)
        if key == self.key:
            return 0
        if key.endswith("." + self.key):
            return len(key) - len(self.key) - 1
        return None

    def toJSON(self) -> dict:
        return {
            "Name": self.name,
            "Records": [r.toJSON() for r in self.records],
            "DefaultIP": str(self.defaultIP) if self.defaultIP else "",
        }


def _parseZone(zone) -> _Zone:
    """
    Validate one zone in gvproxy's JSON shape.

    @raise ValueError: naming the bad field.
    """
    if not isinstance(zone, dict):
        raise ValueError("zone: must be a JSON object")
    name = _field(zone, "Name")
    if name is None:
        raise ValueError("Name: required")
    name = _checkDomain(name, "Name")
    rawRecords = _field(zone, "Records")
    if rawRecords is None:
        rawRecords = []
    if not isinstance(rawRecords, list):
        raise ValueError("Records: must be a list")
    records = []
    for i, rec in enumerate(rawRecords):
        where = f"Records[{i}]"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: must be a JSON object")
        recName = _field(rec, "Name")
        if recName is None:
            recName = ""
        if not isinstance(recName, str):
            raise ValueError(f"{where}.Name: must be a string")
        pattern = _field(rec, "Regexp")
        if pattern == "":
            pattern = None
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ValueError(f"{where}.Regexp: must be a string")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{where}.Regexp: {e}") from None
        if not recName and pattern is None:
            raise ValueError(f"{where}: needs a Name or a Regexp")
        ip = _checkIP(_field(rec, "IP"), f"{where}.IP", required=True)
        records.append(_Record(recName, ip, pattern))
    defaultIP = _checkIP(_field(zone, "DefaultIP"), "DefaultIP", required=False)
    return _Zone(name, records, defaultIP)


class DNSZones:
    """
    The local zones, in gvproxy's JSON shape, changeable at run time through the
    control API.
    """

    def __init__(self, zones: list | None = None):
        self._zones = []
        for zone in zones or []:
            self.add(zone)

    def all(self) -> list:
        """
        The zones as C{GET /services/dns/all} serves them. As in gvproxy, a
        record's C{Regexp} key is present only when it has one.
        """
        return [z.toJSON() for z in self._zones]

    def add(self, zone: dict):
        """
        Add C{zone} (the body of C{POST /services/dns/add}). A zone of the same
        name is replaced in place; the new zone's records come first, then the
        old zone's.

        @raise ValueError: for malformed input, naming the bad field; nothing
            changes then.
        """
        new = _parseZone(zone)
        for i, old in enumerate(self._zones):
            if old.key == new.key:
                new.records = new.records + old.records
                self._zones[i] = new
                return
        self._zones.append(new)

    def lookup(self, key: str, text: str):
        """
        Find the local answer for a name.

        @param key: the name in lower case, no final dot.
        @param text: the same name as received (letter case kept), which
            regular expressions see first.
        @return: L{None} if no zone holds the name; else C{(zone, ips)} where
            C{ips} is a list of the addresses for the name (the first matching
            record's, and the first later matching record's of the other
            address family), C{"apex"} for the zone's own name, or L{None} if
            the name does not exist.
        """
        for zone in self._zones:
            n = zone.relative(key)
            if n is None:
                continue
            if n == 0 and zone.key:
                return zone, "apex"
            relative = text[:n]
            ips = []
            for record in zone.records:
                if record.matches(relative):
                    if not ips:
                        ips.append(record.ip)
                    elif record.ip.version != ips[0].version:
                        ips.append(record.ip)
                        break
            if ips:
                return zone, ips
            return zone, [zone.defaultIP] if zone.defaultIP else None
        return None

    def reverse(self, ip) -> list:
        """
        The full names of records with a plain name and address C{ip}, for PTR.
        """
        names = []
        for zone in self._zones:
            for record in zone.records:
                if record.key and record.ip == ip:
                    suffix = zone.name if zone.key else ""
                    names.append(record.name.rstrip(".") + "." + suffix)
        return names


class HostsTable:
    """
    The content of a hosts file: names to addresses and addresses to names.
    """

    def __init__(self, text: str = ""):
        self.names = {}
        self.addresses = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) < 2:
                continue
            try:
                ip = ipaddress.ip_address(fields[0].split("%", 1)[0])
            except ValueError:
                continue
            canonical = fields[1].rstrip(".")
            canonicals = self.addresses.setdefault(ip, [])
            if canonical and canonical not in canonicals:
                canonicals.append(canonical)
            for name in fields[1:]:
                key = name.rstrip(".").lower()
                if not key:
                    continue
                ips = self.names.setdefault(key, [])
                if ip not in ips:
                    ips.append(ip)


def _reverseAddress(key: str):
    """
    The address named by a reverse name (C{4.3.2.1.in-addr.arpa} or the nibble
    form under C{ip6.arpa}), or L{None}.
    """
    try:
        if key.endswith(".in-addr.arpa"):
            parts = key[: -len(".in-addr.arpa")].split(".")
            if len(parts) != 4:
                return None
            return ipaddress.IPv4Address(".".join(reversed(parts)))
        if key.endswith(".ip6.arpa"):
            nibbles = key[: -len(".ip6.arpa")].split(".")
            if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
                return None
            digits = "".join(reversed(nibbles))
            return ipaddress.IPv6Address(int(digits, 16))
    except ValueError:
        return None
    return None


class LocalAnswer:
    """
    An answer made here: a response code and records as twisted.names objects.
    """

    def __init__(self, rcode, answers=(), authority=()):
        self.rcode = rcode
        self.answers = list(answers)
        self.authority = list(authority)


class LocalResolver(common.ResolverBase):
    """
    The local zones and the hosts file as one resolver.

    L{answer} is what the gateway's DNS server uses: it tells apart "not ours"
    (L{None}), NXDOMAIN and an empty NOERROR. The L{IResolver} methods inherited
    from L{ResolverBase} also work, so this can stand first in a
    L{twisted.names.server.DNSServerFactory} resolver chain: a name that is not
    local fails with L{DomainError} (the chain moves on), a local name that does
    not exist with L{AuthoritativeDomainError} (the chain stops).

    @ivar hosts: a callable returning the current L{HostsTable}, or L{None}.
    """

    def __init__(self, zones: DNSZones, hosts=None):
        common.ResolverBase.__init__(self)
        self.zones = zones
        self.hosts = hosts

    def answer(self, question) -> LocalAnswer | None:
        """
        The local answer to C{question} (a L{dns_wire.Question}), or L{None} if
        the name is not local and must be forwarded.
        """
        if question.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return None
        key = question.key.decode("latin-1")
        text = question.text
        owner = text.encode("latin-1")
        qtype = question.qtype

        found = self.zones.lookup(key, text)
        if found is not None:
            zone, ip = found
            soa = self._soa(zone)
            if ip is None:
                return LocalAnswer(wire.NXDOMAIN, authority=[soa])
            if ip == "apex":
                if qtype in (wire.TYPE_SOA, wire.TYPE_ANY):
                    return LocalAnswer(wire.NOERROR, answers=[soa])
                return LocalAnswer(wire.NOERROR, authority=[soa])
            answers = self._addresses(owner, ip, qtype)
            return LocalAnswer(wire.NOERROR, answers, [] if answers else [soa])

        table = self.hosts() if self.hosts is not None else None
        if table is not None and key in table.names:
            return LocalAnswer(
                wire.NOERROR, self._addresses(owner, table.names[key], qtype)
            )

        if qtype in (wire.TYPE_PTR, wire.TYPE_ANY):
            address = _reverseAddress(key)
            if address is not None:
                names = []
                if table is not None:
                    names.extend(table.addresses.get(address, []))
                names.extend(self.zones.reverse(address))
                if names:
                    seen = []
                    for n in names:
                        if n.lower() not in [s.lower() for s in seen]:
                            seen.append(n)
                    return LocalAnswer(
                        wire.NOERROR,
                        [
                            dns.RRHeader(
                                owner,
                                dns.PTR,
                                dns.IN,
                                0,
                                dns.Record_PTR(n.rstrip(".").encode("latin-1"), 0),
                                auth=True,
                            )
                            for n in seen
                        ],
                    )
        return None

    @staticmethod
    def _addresses(owner: bytes, ips, qtype) -> list:
        """
        A and AAAA records with TTL 0 for those of C{ips} that C{qtype} asks for.
        """
        out = []
        for ip in ips:
            if ip.version == 4 and qtype in (wire.TYPE_A, wire.TYPE_ANY):
                payload = dns.Record_A(str(ip), 0)
                rtype = dns.A
            elif ip.version == 6 and qtype in (wire.TYPE_AAAA, wire.TYPE_ANY):
                payload = dns.Record_AAAA(str(ip), 0)
                rtype = dns.AAAA
            else:
                continue
            out.append(dns.RRHeader(owner, rtype, dns.IN, 0, payload, auth=True))
        return out

    @staticmethod
    def _soa(zone) -> dns.RRHeader:
        """
        An SOA for C{zone} with TTL 0 and MINIMUM 0: negative answers from it are
        not to be cached.
        """
        name = zone.key.encode("latin-1")
        return dns.RRHeader(
            name,
            dns.SOA,
            dns.IN,
            0,
            dns.Record_SOA(
                mname=name,
                rname=b"hostmaster." + name if name else b"hostmaster",
                serial=1,
                refresh=3600,
                retry=600,
                expire=86400,
                minimum=0,
                ttl=0,
            ),
            auth=True,
        )

    def _lookup(self, name, cls, type, timeout):
        """
        The L{IResolver} entry point of L{ResolverBase}.
        """
        if isinstance(name, str):
            name = name.encode("latin-1")
        labels = [label for label in name.rstrip(b".").split(b".") if label]
        question = wire.Question(b"", labels, type, cls)
        result = self.answer(question)
        if result is None:
            return defer.fail(error.DomainError(name))
        if result.rcode == wire.NXDOMAIN:
            return defer.fail(error.AuthoritativeDomainError(name))
        return defer.succeed((result.answers, result.authority, []))


def encodeLocalAnswer(query, result: LocalAnswer) -> wire.Message:
    """
    Turn a L{LocalAnswer} into a parsed message, ready for
    L{dns_wire.buildResponse} (which truncates it and adds the client's id and
    OPT like any other answer). The records are encoded by twisted.names.
    """
    question = query.question
    body = BytesIO()
    body.write(question.raw)
    compression = {}
    for rr in result.answers + result.authority:
        rr.encode(body, compression)
    flags = wire.FLAG_QR | wire.FLAG_AA | (result.rcode & 0xF)
    header = wire.HEADER.pack(
        0, flags, 1, len(result.answers), len(result.authority), 0
    )
    return wire.parseMessage(header + body.getvalue())
