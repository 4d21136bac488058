"""
The C{gvproxy} command: gvisor-tap-vsock v0.8.9's command line, run by
C{twistd gvtap}'s own service.

It parses Go-style flags exactly as gvproxy does (L{gvtwisted.dropin.goflag}),
applies gvproxy's rules for the flags and the C{-config} file together
(L{gvtwisted.dropin.gvproxyconfig}, with gvproxy's messages), translates the
result into a C{twistd gvtap} argument list (L{translate}), parses that with
L{gvtwisted.tap.Options} and runs L{gvtwisted.tap.makeService}'s service tree
on the reactor: one code path, not a second daemon. Like gvproxy it stays in
the foreground, logs to standard error (or only to C{-log-file}), writes
C{-pid-file} and removes it at exit, and exits 1 after a signal.
"""

import os
import signal
import sys
import time

from gvtwisted.dropin.goflag import FlagSet, _quote
from gvtwisted.dropin.gvproxyconfig import ConfigureError, configure
from gvtwisted.dropin.yamlconfig import ConfigFileError, loadConfig

REFERENCE = "v0.8.9"


def gvtapVersion() -> str:
    try:
        from importlib.metadata import version

        return version("gvtap")
    except Exception:
        return "0.0.0"


def versionLine(binary: str = "gvproxy") -> str:
    """
    gvproxy's C{-version} line (C{gvproxy version vX.Y.Z}), naming gvtap.
    """
    v = gvtapVersion()
    return (f"{binary} version v{v}+gvtap (gvtap {v}, a drop-in for "
            f"gvisor-tap-vsock {REFERENCE})")


def gvproxyFlags(program: str) -> FlagSet:
    """
    Every flag of gvproxy v0.8.9, with its default and its help text.
    """
    f = FlagSet(program)
    f.bool("version", False, "Print version information")
    f.string("config", "", "Use configuration file with command line override")
    f.array("listen", "control endpoint")
    f.bool("debug", False, "Print debug info")
    f.string("pcap", "", "Capture network traffic to a pcap file")
    f.int("mtu", 0, "Set the MTU (default: 1500)")
    f.int("ssh-port", 2222, "Port to access the guest virtual machine. Must be between 1024 and 65535")
    f.string("listen-vpnkit", "", "VPNKit socket to be used by Hyperkit")
    f.string("listen-qemu", "", "Socket to be used by Qemu")
    f.string("listen-bess", "", "unixpacket socket to be used by Bess-compatible applications")
    f.string("listen-stdio", "", "accept stdio pipe")
    f.string("listen-vfkit", "", "unixgram socket to be used by vfkit-compatible applications")
    f.array("forward-sock", "Forwards a unix socket to the guest virtual machine over SSH")
    f.array("forward-dest", "Forwards a unix socket to the guest virtual machine over SSH")
    f.array("forward-user", "SSH user to use for unix socket forward")
    f.array("forward-identity", "Path to SSH identity key for forwarding")
    f.string("pid-file", "", "Generate a file with the PID in it")
    f.string("log-file", "", "Output log messages (logrus) to a given file path")
    f.string("services", "", "Exposes the same HTTP API as the --listen flag, without the /connect endpoint")
    f.bool("ec2-metadata-access", False, "Permits access to EC2 Metadata Service and Amazon Time Sync Service")
    f.string("notification", "", "Socket to be used to send network-ready notifications")
    return f


def translate(values, argv=(), exists=os.path.exists):
    """
    The C{twistd gvtap} arguments for parsed gvproxy flags C{values}.

    The rules of v0.8.9 are checked first (with a C{-config} file read), so a
    command line gvproxy refuses is refused here with its message.

    @param argv: the raw command line (for v0.8.9's C{-ssh-port} warning).
    @return: C{(tapArgv, config, warnings)}: the argument list, the effective
        configuration (L{configure}'s) and the warnings to log.
    @raise ConfigFileError: for a C{-config} file that cannot be used.
    @raise ConfigureError: for a combination gvproxy refuses.
    """
    fileConfig = loadConfig(values["config"]) if values["config"] else None
    config, warnings = configure(fileConfig, values, exists=exists, argv=tuple(argv))
    out = []
    if values["config"]:
        out += ["--config", values["config"]]
    for endpoint in values["listen"]:
        out += ["--listen", endpoint]
    if values["services"]:
        out += ["--services", values["services"]]
    if values["debug"]:
        out.append("--debug")
    if values["mtu"]:
        out += ["--mtu", str(values["mtu"])]
    if not values["config"]:
        # With a file, v0.8.9 ignores -ssh-port (the file's stack.forwards
        # say it) and -pcap (the file's capture-file).
        out.append(f"--ssh-port={values['ssh-port']}")
        if values["pcap"]:
            out += ["--pcap", values["pcap"]]
    for flag in ("listen-qemu", "listen-bess", "listen-vfkit", "listen-vpnkit"):
        if values[flag]:
            out += [f"--{flag}", values[flag]]
    if values["listen-stdio"]:
        out.append("--listen-stdio")
    if values["ec2-metadata-access"]:
        out.append("--ec2-metadata-access")
    if values["notification"]:
        out += ["--notification", values["notification"]]
    for i, sock in enumerate(values["forward-sock"]):
        out += ["--forward-sock", sock, "--forward-dest", values["forward-dest"][i],
                "--forward-user", values["forward-user"][i],
                "--forward-identity", values["forward-identity"][i]]
    if values["pid-file"]:
        out += ["--pid-file", values["pid-file"]]
    if values["log-file"]:
        out += ["--log-file", values["log-file"]]
    return out, config, warnings


def logrusLine(level: str, message: str, now=time.time) -> str:
    """
    A line in logrus' text format, as gvproxy writes to a non-terminal.
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now()))
    offset = time.strftime("%z", time.localtime(now()))
    offset = "Z" if offset in ("+0000", "-0000") else f"{offset[:3]}:{offset[3:]}"
    needsQuotes = not message or any(not (c.isalnum() or c in "-._/@^+") for c in message)
    return f'time="{stamp}{offset}" level={level} msg={_quote(message) if needsQuotes else message}\n'


def humanBytes(count: int) -> str:
    """
    go-humanize's C{Bytes}: SI units, one decimal below 10 (C{"82 B"},
    C{"1.5 kB"}, C{"83 MB"}), as gvproxy's debug line shows them.
    """
    if count < 10:
        return f"{count} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exponent = 0
    while exponent + 1 < len(units) and count >= 1000 ** (exponent + 1):
        exponent += 1
    value = int(count / 1000 ** exponent * 10 + 0.5) / 10
    return f"{value:.1f} {units[exponent]}" if value < 10 else f"{value:.0f} {units[exponent]}"


def trafficLine(counters) -> str:
    """
    gvproxy's periodic debug line: bytes sent to and received from the VMs.
    """
    return (f"{humanBytes(counters.get('link.bytesSent'))} sent to the VM, "
            f"{humanBytes(counters.get('link.bytesReceived'))} received from the VM")


def fatal(message: str, stderr=None):
    """
    gvproxy's C{log.Fatal}: one line on standard error, exit status 1.
    """
    (stderr or sys.stderr).write(logrusLine("fatal", message))
    raise SystemExit(1)


def parseTapOptions(tapArgv):
    """
    Parse C{tapArgv} with C{twistd gvtap}'s own L{Options}.

    @raise SystemExit: with the one-line reason, for an argument list it refuses.
    """
    from twisted.python import usage

    from gvtwisted.tap import Options

    options = Options()
    try:
        options.parseOptions(tapArgv)
    except usage.UsageError as e:
        raise SystemExit(f"gvtap: {e}") from None
    return options


def main(argv=None, stdout=None, stderr=None):
    """
    The C{gvproxy} console script.
    """
    argv = list(sys.argv if argv is None else argv)
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    values, given, rest = gvproxyFlags(argv[0]).parseOrExit(argv[1:], stderr)
    if values["version"]:
        stdout.write(versionLine() + "\n")
        raise SystemExit(0)
    try:
        tapArgv, config, warnings = translate(values, argv[1:])
    except ConfigFileError as e:
        text = str(e)
        if not text.startswith("failed to"):
            text = f"failed to parse configuration: {text}"
        fatal(text, stderr)
    except ConfigureError as e:
        fatal(str(e), stderr)
    for line in warnings:
        stderr.write(logrusLine("warning", line))
    try:
        options = parseTapOptions(tapArgv)
    except SystemExit as e:
        fatal(str(e.code), stderr)
    raise SystemExit(run(options, config, tapArgv, stderr=stderr))


def run(options, config, tapArgv, reactor=None, stderr=None):
    """
    Run C{twistd gvtap}'s service for parsed L{Options} in the foreground.

    @return: the exit status: 1 after a signal (as gvproxy), 0 otherwise.
    """
    from twisted.logger import (
        FilteringLogObserver, Logger, LogLevelFilterPredicate,
        globalLogBeginner, textFileLogObserver,
    )

    if reactor is None:
        from gvtwisted.reactor import defaultReactor

        reactor = defaultReactor()
    from twisted.internet.error import CannotListenError

    from gvtwisted.dropin.runfiles import logLevel
    from gvtwisted.startup import StartupError
    from gvtwisted.tap import makeService

    stderr = stderr or sys.stderr
    log = Logger(namespace="gvproxy")
    options["log-level"] = config["log-level"]
    level = logLevel("debug" if options["debug"] else config["log-level"])
    observers = []
    if not options["log-file"]:
        observers.append(FilteringLogObserver(
            textFileLogObserver(stderr), [LogLevelFilterPredicate(level)]))
    try:
        service = makeService(options, reactor)
    except SystemExit as e:
        fatal(str(e.code), stderr)
    # Before the log file's observer joins: the buffer of early events is
    # replayed to every observer there is at this point.
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)

    def failed(message):
        # Undo what started (the pid file, sockets bound so far), then die
        # as gvproxy does.
        try:
            service.stopService()
        except Exception:
            pass
        fatal(message, stderr)

    def start(phase):
        # One start-up phase; any failure to listen is gvproxy's fatal line.
        try:
            phase()
        except StartupError as e:
            failed("cannot listen: " + str(e).replace("gvtap: cannot listen on ", "", 1))
        except SystemExit as e:
            failed(str(e.code))
        except (CannotListenError, OSError) as e:
            failed(f"cannot listen: {e}")

    start(service.privilegedStartService)
    log.info("{version}", version=versionLine())
    log.debug("command line: {argv!r}, as twistd gvtap {tap!r}", argv=sys.argv, tap=tapArgv)
    state = {"signal": None}

    def caught(signum, frame):
        state["signal"] = signum
        reactor.callFromThread(reactor.stop)

    def installSignals():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, caught)

    reactor.callWhenRunning(installSignals)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    start(service.startService)
    log.info("waiting for clients...")
    if options["debug"]:
        from twisted.internet.task import LoopingCall

        stats = LoopingCall(lambda: log.debug("{line}", line=trafficLine(service.gvtap.counters)))
        stats.clock = reactor
        stats.start(5.0, now=False)
    reactor.run()
    if state["signal"] is not None:
        stderr.write(logrusLine("error", "gvproxy exiting: signal caught"))
        return 1
    return 0
