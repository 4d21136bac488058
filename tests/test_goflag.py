"""
Tests for L{gvtwisted.dropin.goflag}: Go's C{flag} package behaviour, word for
word (the messages are Go's own, from its C{flag.go}).
"""

import io

from twisted.trial.unittest import SynchronousTestCase

from gvtwisted.dropin.goflag import FlagError, FlagSet, HelpRequested, parseBool, parseInt


def flags():
    f = FlagSet("prog")
    f.string("name", "", "a name")
    f.string("where", "here", "a `place` to be")
    f.int("port", 2222, "a port")
    f.int("mtu", 0, "an MTU")
    f.bool("debug", False, "debug")
    f.bool("on", True, "on by default")
    f.array("listen", "control endpoint")
    f.bool("v", False, "verbose")
    return f


class ParseTests(SynchronousTestCase):
    """
    L{FlagSet.parse} accepts exactly what Go's C{FlagSet.Parse} accepts.
    """

    def parse(self, *argv):
        return flags().parse(list(argv))

    def test_defaults(self):
        """
        Nothing given: every flag has its default, arrays are empty.
        """
        values, given, rest = self.parse()
        self.assertEqual(values, {"name": "", "where": "here", "port": 2222, "mtu": 0,
                                  "debug": False, "on": True, "listen": [], "v": False})
        self.assertEqual((given, rest), ([], []))

    def test_spellings(self):
        """
        C{-f v}, C{-f=v}, C{--f v} and C{--f=v} are one and the same.
        """
        for argv in (["-name", "x"], ["-name=x"], ["--name", "x"], ["--name=x"]):
            self.assertEqual(self.parse(*argv)[0]["name"], "x", argv)

    def test_valueWithEquals(self):
        """
        Only the first C{=} separates the name; the value keeps the others.
        """
        self.assertEqual(self.parse("-name=a=b")[0]["name"], "a=b")

    def test_valueLooksLikeFlag(self):
        """
        A non-boolean flag takes the next word whatever it looks like
        (C{-ssh-port -1}).
        """
        self.assertEqual(self.parse("-port", "-1")[0]["port"], -1)
        self.assertEqual(self.parse("-name", "-debug")[0]["name"], "-debug")

    def test_boolNeverTakesNextWord(self):
        """
        C{-debug false} sets debug and stops at the positional C{false}.
        """
        values, given, rest = self.parse("-debug", "false", "-name", "x")
        self.assertTrue(values["debug"])
        self.assertEqual(values["name"], "")
        self.assertEqual(rest, ["false", "-name", "x"])

    def test_boolValues(self):
        """
        C{-debug=VALUE} takes Go's C{strconv.ParseBool} spellings.
        """
        for text, want in (("true", True), ("1", True), ("T", True), ("TRUE", True),
                           ("false", False), ("0", False), ("F", False), ("False", False)):
            self.assertEqual(self.parse(f"-debug={text}")[0]["debug"], want, text)
        self.assertFalse(self.parse("-on=false")[0]["on"])

    def test_badBool(self):
        """
        A bool value Go cannot parse: Go's message.
        """
        e = self.assertRaises(FlagError, self.parse, "-debug=yes")
        self.assertEqual(str(e), 'invalid boolean value "yes" for -debug: parse error')

    def test_lastWins(self):
        """
        A plain flag given twice keeps the last value.
        """
        self.assertEqual(self.parse("-name", "a", "-name", "b")[0]["name"], "b")

    def test_arrayRepeats(self):
        """
        A repeatable flag keeps every value in order.
        """
        values, given, _ = self.parse("-listen", "a", "--listen=b", "-listen", "c")
        self.assertEqual(values["listen"], ["a", "b", "c"])
        self.assertEqual(given, ["listen", "listen", "listen"])

    def test_stopsAtPositional(self):
        """
        Parsing stops at the first non-flag word, at C{-} and after C{--}.
        """
        self.assertEqual(self.parse("-debug", "x", "-v")[2], ["x", "-v"])
        self.assertEqual(self.parse("-", "-v")[2], ["-", "-v"])
        values, _, rest = self.parse("--", "-v")
        self.assertEqual((values["v"], rest), (False, ["-v"]))

    def test_unknown(self):
        """
        An undefined flag: C{flag provided but not defined: -x}, with one dash
        whatever was typed.
        """
        for argv in (["-x"], ["--x"], ["--x=1"]):
            e = self.assertRaises(FlagError, self.parse, *argv)
            self.assertEqual(str(e), "flag provided but not defined: -x")

    def test_missingArgument(self):
        """
        A value flag at the end: C{flag needs an argument: -name}.
        """
        e = self.assertRaises(FlagError, self.parse, "-name")
        self.assertEqual(str(e), "flag needs an argument: -name")

    def test_badSyntax(self):
        """
        C{---x} and C{-=x}: C{bad flag syntax}.
        """
        for word in ("---x", "-=x", "--=x"):
            e = self.assertRaises(FlagError, self.parse, word)
            self.assertEqual(str(e), f"bad flag syntax: {word}")

    def test_badInt(self):
        """
        Go's messages for an int it cannot parse or that is out of range.
        """
        e = self.assertRaises(FlagError, self.parse, "-port", "abc")
        self.assertEqual(str(e), 'invalid value "abc" for flag -port: parse error')
        e = self.assertRaises(FlagError, self.parse, "-port=99999999999999999999")
        self.assertEqual(str(e),
                         'invalid value "99999999999999999999" for flag -port: value out of range')

    def test_help(self):
        """
        C{-help} and C{-h}, when not defined, ask for the usage.
        """
        self.assertRaises(HelpRequested, self.parse, "-help")
        self.assertRaises(HelpRequested, self.parse, "--h")


class ParseIntTests(SynchronousTestCase):
    """
    L{parseInt} is Go's C{strconv.ParseInt(s, 0, 64)}.
    """

    def test_bases(self):
        """
        Decimal, signs, 0x, 0o, 0b and a leading-zero octal, underscores.
        """
        for text, want in (("1500", 1500), ("-1", -1), ("+7", 7), ("0x10", 16), ("0X1f", 31),
                           ("0o17", 15), ("017", 15), ("0b101", 5), ("1_000", 1000), ("0", 0)):
            self.assertEqual(parseInt(text), want, text)

    def test_bad(self):
        """
        Go refuses these with C{parse error}.
        """
        for text in ("", "-", "12a", "0x", "08", "1__0", "_1", "1_", " 1", "1.0"):
            e = self.assertRaises(ValueError, parseInt, text)
            self.assertEqual(str(e), "parse error", text)

    def test_parseBool(self):
        """
        Only Go's spellings.
        """
        self.assertTrue(parseBool("t"))
        self.assertRaises(ValueError, parseBool, "yes")


class UsageTests(SynchronousTestCase):
    """
    The usage text and the exits of Go's C{ExitOnError} command line.
    """

    def test_usageFormat(self):
        """
        Go's C{PrintDefaults}: sorted, type words, one-letter bools on one line,
        defaults that are not zero values (strings quoted).
        """
        self.assertEqual(flags().usage(), (
            "Usage of prog:\n"
            "  -debug\n    \tdebug\n"
            "  -listen value\n    \tcontrol endpoint\n"
            "  -mtu int\n    \tan MTU\n"
            "  -name string\n    \ta name\n"
            "  -on\n    \ton by default (default true)\n"
            "  -port int\n    \ta port (default 2222)\n"
            "  -v\tverbose\n"
            '  -where place\n    \ta place to be (default "here")\n'))

    def test_exitOnError(self):
        """
        An error: the message then the usage on stderr, exit status 2.
        """
        err = io.StringIO()
        e = self.assertRaises(SystemExit, flags().parseOrExit, ["-nope"], err)
        self.assertEqual(e.code, 2)
        self.assertTrue(err.getvalue().startswith(
            "flag provided but not defined: -nope\nUsage of prog:\n"))

    def test_helpExitsZero(self):
        """
        C{-help}: the usage on stderr, exit status 0.
        """
        err = io.StringIO()
        e = self.assertRaises(SystemExit, flags().parseOrExit, ["-help"], err)
        self.assertEqual(e.code, 0)
        self.assertTrue(err.getvalue().startswith("Usage of prog:\n"))
