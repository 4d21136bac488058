"""
gvproxy's YAML configuration file (C{gvproxy -config FILE}, also
C{twistd gvtap --config FILE}), with gvisor-tap-vsock v0.8.9's schema and its
rules for what the file and the command line each decide.

The file is read as a node tree (L{yaml.compose}) rather than loaded, so that a
string field keeps the text as written: YAML 1.1 (PyYAML) would read
C{10:11:11:11:11:00} as a base-60 integer, where gvproxy's YAML library reads a
string. Unlike gvproxy, which ignores them, an unknown key is an error: a
misspelt key that silently does nothing is worse than a refusal. Every error is
one line naming the file, the line and the key.
"""

import ipaddress
import re

import yaml

__all__ = ["ConfigFileError", "loadConfig", "parseConfig", "SCHEMA"]


class ConfigFileError(ValueError):
    """
    A configuration file gvtap cannot use; the message is one line.
    """


# The schema: a dict is a mapping with these keys; a list of one element is a
# sequence of it; ("map", K, V) a mapping with free keys; a string names a
# scalar type.
_RECORD = {"name": "str", "ip": "ip", "regexp": "regexp"}
_ZONE = {"name": "str", "records": [_RECORD], "defaultIP": "ip"}
_STACK = {
    "debug": "bool",
    "capture-file": "str",
    "mtu": "int",
    "subnet": "str",
    "gatewayIP": "str",
    "gatewayMacAddress": "str",
    "dns": [_ZONE],
    "dnsSearchDomains": ["str"],
    "forwards": ("map", "str", "str"),
    "nat": ("map", "str", "str"),
    "gatewayVirtualIPs": ["str"],
    "dhcpStaticLeases": ("map", "str", "str"),
    "vpnKitUUIDMacAddresses": ("map", "str", "str"),
    "ec2MetadataAccess": "bool",
}
_FORWARD = {"socket": "str", "dest": "str", "user": "str", "identity": "str"}
SCHEMA = {
    "listen": ["str"],
    "log-level": "str",
    "stack": _STACK,
    "interfaces": {"vpnkit": "str", "qemu": "str", "bess": "str", "stdio": "str", "vfkit": "str"},
    "forwards": [_FORWARD],
    "pid-file": "str",
    "log-file": "str",
    "services": "str",
    "ec2-metadata-access": "bool",
    "notification": "str",
}

# The most values a file may hold, aliases counted each time they are used:
# a few repeated anchors must not make the walk exponential.
MAX_NODES = 100_000

_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$")
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


def loadConfig(path: str) -> dict:
    """
    Read and check a gvproxy configuration file.

    @return: the configuration as plain dicts, lists, strings, ints and bools
        (IP fields as text, regexps as compiled patterns); keys not in the file
        are absent.
    @raise ConfigFileError: for a file that cannot be read or is not valid.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigFileError(f"failed to read config file: {e.strerror}: {path}") from None
    return parseConfig(text, path)


def parseConfig(text, name="config") -> dict:
    """
    Check the YAML C{text} (bytes or str) against gvproxy's schema.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigFileError(f"{where}: not valid YAML: {problem}") from None
    if node is None or _isNull(node):
        return {}
    return _check(node, SCHEMA, "", name, [MAX_NODES])


def _isNull(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _where(node, name, key):
    line = node.start_mark.line + 1
    return f"{name}:{line}: {key or 'top level'}"


def _describe(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _check(node, schema, key, name, budget):
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigFileError(f"{name}: more than {MAX_NODES} values (aliases included)")
    if isinstance(schema, dict):
        if _isNull(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigFileError(
                f"{_where(node, name, key)}: expected a mapping, got {_describe(node)}")
        result = {}
        for keyNode, valueNode in node.value:
            field = keyNode.value if isinstance(keyNode, yaml.ScalarNode) else None
            path = f"{key}.{field}" if key else str(field)
            if field not in schema:
                known = ", ".join(sorted(schema))
                raise ConfigFileError(
                    f"{_where(keyNode, name, path)}: unknown key (known here: {known})")
            if field in result:
                raise ConfigFileError(f"{_where(keyNode, name, path)}: given twice")
            result[field] = _check(valueNode, schema[field], path, name, budget)
        return result
    if isinstance(schema, list):
        if _isNull(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigFileError(
                f"{_where(node, name, key)}: expected a list, got {_describe(node)}")
        return [_check(item, schema[0], f"{key}[{i}]", name, budget)
                for i, item in enumerate(node.value)]
    if isinstance(schema, tuple):
        if _isNull(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigFileError(
                f"{_where(node, name, key)}: expected a mapping, got {_describe(node)}")
        result = {}
        for keyNode, valueNode in node.value:
            budget[0] -= 1
            if budget[0] < 0:
                raise ConfigFileError(f"{name}: more than {MAX_NODES} values (aliases included)")
            k = _scalar(keyNode, schema[1], f"{key} key", name)
            result[k] = _scalar(valueNode, schema[2], f"{key}.{k}", name)
        return result
    return _scalar(node, schema, key, name)


def _scalar(node, kind, key, name):
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigFileError(
            f"{_where(node, name, key)}: expected {_KIND[kind]}, got {_describe(node)}")
    value = node.value
    null = _isNull(node)
    if kind == "str":
        return "" if null else value
    if kind == "int":
        if null:
            return 0
        if node.style is None and _INT.match(value):
            return int(value.replace("_", ""), 0)
        raise ConfigFileError(f"{_where(node, name, key)}: expected an integer, got {value!r}")
    if kind == "bool":
        if null:
            return False
        if node.style is None and value in _TRUE:
            return True
        if node.style is None and value in _FALSE:
            return False
        raise ConfigFileError(f"{_where(node, name, key)}: expected true or false, got {value!r}")
    if kind == "ip":
        if null or value == "":
            return ""
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ConfigFileError(
                f"{_where(node, name, key)}: invalid IP address: {value}") from None
    if kind == "regexp":
        if null:
            return None
        try:
            return re.compile(value)
        except re.error as e:
            raise ConfigFileError(
                f"{_where(node, name, key)}: bad regular expression {value!r}: {e}") from None
    raise AssertionError(kind)


_KIND = {"str": "a string", "int": "an integer", "bool": "true or false",
         "ip": "an IP address", "regexp": "a regular expression"}
