"""
C{twistd gvtap --config FILE}: a gvproxy YAML file applied to
L{gvtwisted.tap.Options}.

The file gives every value the command line did not; an option given on the
command line wins, as in gvproxy v0.8.9 (where C{-listen} replaces the file's
whole list and C{-forward-*} add to its forwards). As there, a file means none
of the built-in defaults that the file could have said: the two DNS zones,
the device's static lease, the SSH forward of C{--ssh-port}, the host's search
domains; what the file does not list is not there.
"""

from gvtwisted.config import ConfigError
from gvtwisted.dropin.gvproxyconfig import ConfigureError, configure, gvtapSettings
from gvtwisted.dropin.yamlconfig import ConfigFileError, loadConfig

# Options whose command-line value replaces the file's.
_REPLACED = ("listen", "listen-qemu", "listen-bess", "listen-vfkit", "listen-vpnkit",
             "services", "mtu", "subnet", "gateway-ip", "gateway-mac", "pcap",
             "notification", "pid-file", "log-file")
# Lists the command line adds to.
_ADDED = ("forward", "forward-sock", "forward-dest", "forward-user", "forward-identity")
# Flags either side can turn on.
_FLAGS = ("debug", "ec2-metadata-access", "listen-stdio")


def givenOptions(argv) -> set:
    """
    The long option names on a C{twistd gvtap} command line (C{--name} or
    C{--name=value}), so that the file does not override them.
    """
    names = set()
    for word in argv:
        if word == "--":
            break
        if word.startswith("--") and len(word) > 2:
            names.add(word[2:].split("=", 1)[0])
    return names


def applyConfigFile(options, path, given):
    """
    Load the gvproxy file C{path} into C{options} (a L{gvtwisted.tap.Options}
    before its own checks).

    @param given: the option names given on the command line.
    @raise ConfigError: one line, for a file gvtap cannot use.
    """
    try:
        fileConfig = loadConfig(path)
        config, warnings = configure(fileConfig, {}, checkSockets=False)
    except (ConfigFileError, ConfigureError) as e:
        raise ConfigError(str(e)) from None
    settings = gvtapSettings(config)
    # What the tap's own opt_ methods would have made of these values.
    from gvtwisted.tap import _socketPath

    settings["listen-vfkit"] = [_socketPath(v, "unixgram") for v in settings["listen-vfkit"]]
    settings["listen-bess"] = [_socketPath(v, "unixpacket") for v in settings["listen-bess"]]
    for name in _REPLACED:
        if name in given or name not in settings:
            continue
        value = settings[name]
        if isinstance(value, list):
            options[name] = list(value)
        elif value is not None:
            options[name] = value
    for name in _ADDED:
        fileValues = settings["forwards"] if name == "forward" else settings[name]
        options[name] = list(fileValues) + list(options.get(name) or [])
    for name in _FLAGS:
        options[name] = bool(options.get(name)) or settings[name]
    # The file's stack.forwards replace the default --ssh-port forward (the
    # gvproxy command passes no --ssh-port with a file: v0.8.9 ignores it).
    if "ssh-port" not in given:
        options["ssh-port"] = -1
    options["network-extras"] = settings["network"]
    options["log-level"] = config["log-level"]
    options["config-warnings"] = warnings
