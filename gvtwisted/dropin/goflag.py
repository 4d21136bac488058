"""
A command-line parser with the behaviour of Go's C{flag} package, so that the
C{gvproxy} and C{gvforwarder} commands take exactly the command lines that
podman, crc, lima and scripts already build for gvisor-tap-vsock's binaries.

What Go's C{flag} does, and so what this does:

  - C{-name value}, C{-name=value}, C{--name value}, C{--name=value}: one or
    two dashes mean the same thing.
  - A boolean flag never takes the next word: C{-debug}, C{-debug=true},
    C{-debug=false} (values as Go's C{strconv.ParseBool}).
  - Parsing stops at the first word that is not a flag (or that is C{-}), and
    after C{--}; the rest are positional arguments.
  - A flag given twice: the last value wins, except for repeatable ("array")
    flags, which collect every value.
  - C{-help} / C{-h} (when not defined): the usage on standard error, exit 0.
  - Anything wrong: one line (C{flag provided but not defined: -x}, C{flag
    needs an argument: -x}, C{invalid value "v" for flag -x: parse error}...),
    then the usage, on standard error, exit status 2.
"""

import sys

__all__ = ["FlagSet", "FlagError", "HelpRequested", "parseBool", "parseInt"]


class FlagError(Exception):
    """
    A command line Go's C{flag} package would refuse; the message is Go's.
    """


class HelpRequested(Exception):
    """
    C{-help} or C{-h} was given (and is not a defined flag).
    """


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parseBool(text: str) -> bool:
    """
    Go's C{strconv.ParseBool}.

    @raise ValueError: with Go's reason C{parse error}.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("parse error")


def _underscoresOK(text: str) -> bool:
    # Go's strconv.underscoreOK: underscores only between digits, or between
    # a base prefix and a digit.
    saw = "^"
    i = 0
    if text[:1] in "+-":
        text = text[1:]
    hexadecimal = False
    if len(text) >= 2 and text[0] == "0" and text[1] in "bBoOxX":
        i = 2
        saw = "0"
        hexadecimal = text[1] in "xX"
    while i < len(text):
        c = text[i]
        if c.isdigit() or (hexadecimal and c in "abcdefABCDEF"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parseInt(text: str, bits: int = 64) -> int:
    """
    Go's C{strconv.ParseInt(text, 0, bits)}: an optional sign, then decimal,
    C{0x} hexadecimal, C{0o} or a leading C{0} octal, C{0b} binary;
    underscores between digits.

    @raise ValueError: C{parse error} or C{value out of range}, as Go says.
    """
    if not text:
        raise ValueError("parse error")
    sign, body = 1, text
    if body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        raise ValueError("parse error")
    base, digits = 10, body
    if body[0] == "0" and len(body) > 1:
        prefix = body[1].lower()
        if prefix == "x":
            base, digits = 16, body[2:]
        elif prefix == "o":
            base, digits = 8, body[2:]
        elif prefix == "b":
            base, digits = 2, body[2:]
        else:
            base, digits = 8, body[1:]
    if "_" in digits and not _underscoresOK(text):
        raise ValueError("parse error")
    digits = digits.replace("_", "")
    if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError("parse error")
    try:
        value = sign * int(digits, base)
    except ValueError:
        raise ValueError("parse error") from None
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise ValueError("value out of range")
    return value


class _Flag:
    __slots__ = ("name", "kind", "default", "usage")

    def __init__(self, name, kind, default, usage):
        self.name = name
        self.kind = kind
        self.default = default
        self.usage = usage


class FlagSet:
    """
    A set of Go-style flags. Define them with L{string}, L{int}, L{bool} and
    L{array}, then L{parse} an argument list into a dict of values.

    @ivar name: the program name the usage starts with (Go's C{os.Args[0]}).
    """

    def __init__(self, name: str):
        self.name = name
        self._flags = {}

    def string(self, name, default, usage):
        self._flags[name] = _Flag(name, "string", default, usage)

    def int(self, name, default, usage):
        self._flags[name] = _Flag(name, "int", default, usage)

    def bool(self, name, default, usage):
        self._flags[name] = _Flag(name, "bool", default, usage)

    def array(self, name, usage):
        """
        A repeatable flag (gvproxy's C{arrayFlags}): every value is kept, in order.
        """
        self._flags[name] = _Flag(name, "array", None, usage)

    def defaults(self) -> dict:
        return {f.name: ([] if f.kind == "array" else f.default) for f in self._flags.values()}

    def parse(self, argv):
        """
        Parse C{argv} (without the program name).

        @return: C{(values, given, rest)}: every flag's value by name, the
            names given on the command line in order (repeats included), and the
            positional arguments after the flags.
        @raise FlagError: with Go's message.
        @raise HelpRequested: for C{-help} / C{-h}.
        """
        values = self.defaults()
        given = []
        args = list(argv)
        while args:
            s = args[0]
            if len(s) < 2 or s[0] != "-":
                break
            minuses = 1
            if s[1] == "-":
                minuses = 2
                if len(s) == 2:
                    args.pop(0)
                    break
            name = s[minuses:]
            if not name or name[0] in "-=":
                raise FlagError(f"bad flag syntax: {s}")
            args.pop(0)
            hasValue, value = False, ""
            if "=" in name[1:]:
                at = name.index("=", 1)
                name, value, hasValue = name[:at], name[at + 1:], True
            flag = self._flags.get(name)
            if flag is None:
                if name in ("help", "h"):
                    raise HelpRequested()
                raise FlagError(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                if hasValue:
                    try:
                        values[name] = parseBool(value)
                    except ValueError as e:
                        raise FlagError(
                            f"invalid boolean value {_quote(value)} for -{name}: {e}") from None
                else:
                    values[name] = True
            else:
                if not hasValue and args:
                    value, hasValue = args.pop(0), True
                if not hasValue:
                    raise FlagError(f"flag needs an argument: -{name}")
                if flag.kind == "int":
                    try:
                        values[name] = parseInt(value)
                    except ValueError as e:
                        raise FlagError(
                            f"invalid value {_quote(value)} for flag -{name}: {e}") from None
                elif flag.kind == "array":
                    values[name].append(value)
                else:
                    values[name] = value
            given.append(name)
        return values, given, args

    def usage(self) -> str:
        """
        The text Go's default C{flag.Usage} prints: C{Usage of NAME:}, then
        each flag in name order with its type word, help and non-zero default.
        """
        lines = [f"Usage of {self.name}:"]
        for name in sorted(self._flags):
            flag = self._flags[name]
            head = f"  -{name}"
            word = {"string": "string", "int": "int", "array": "value", "bool": ""}[flag.kind]
            usage = flag.usage
            # Go's UnquoteUsage: a `word` in backquotes names the argument.
            start = usage.find("`")
            if start != -1:
                end = usage.find("`", start + 1)
                if end != -1:
                    word = usage[start + 1:end]
                    usage = usage[:start] + word + usage[end + 1:]
            if word:
                head += " " + word
            head += "\t" if len(head) <= 4 else "\n    \t"
            text = head + usage.replace("\n", "\n    \t")
            if flag.kind == "string" and flag.default:
                text += f" (default {_quote(flag.default)})"
            elif flag.kind == "int" and flag.default:
                text += f" (default {flag.default})"
            elif flag.kind == "bool" and flag.default:
                text += " (default true)"
            lines.append(text)
        return "\n".join(lines) + "\n"

    def parseOrExit(self, argv, stderr=None):
        """
        L{parse} as Go's C{flag.CommandLine} does (C{ExitOnError}): on an error
        the message and the usage go to standard error and the process exits
        with status 2; C{-help} prints the usage and exits 0.
        """
        stderr = stderr if stderr is not None else sys.stderr
        try:
            return self.parse(argv)
        except HelpRequested:
            stderr.write(self.usage())
            raise SystemExit(0)
        except FlagError as e:
            stderr.write(f"{e}\n")
            stderr.write(self.usage())
            raise SystemExit(2)


def _quote(text: str) -> str:
    """
    Go's C{%q} for the strings a command line holds: double quotes, with
    backslash escapes for quotes, backslashes and control characters.
    """
    out = ['"']
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
