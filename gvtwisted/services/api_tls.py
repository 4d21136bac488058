"""
TLS with client certificates for the control API.

Twisted's C{ssl:} server endpoint string (26.10) has no option to ask for client
certificates: C{ssl:PORT:privateKey=KEY:certKey=CERT} serves anyone, and
C{caCertsDir=} (which the client string knows) is refused with a C{TypeError}.
Whoever reaches the API can bind host ports and reach every guest port, so an
API on the network must know who calls it. With C{--services-ca FILE}, every
C{ssl:} endpoint is built here instead: the handshake fails unless the client
shows a certificate signed by one of the certificate authorities in C{FILE}.
"""

import re

from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.ssl import (
    Certificate, CertificateOptions, PrivateCertificate, trustRootFromCertificates,
)
from twisted.python.filepath import FilePath

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

# The keys of Twisted's ssl: server string that keep their meaning here.
_KEYS = {"port", "privateKey", "certKey", "interface", "backlog", "extraCertChain"}


def splitDescription(description: str):
    """
    Split an endpoint string into its positional arguments and C{key=value}
    pairs, honouring backslash escapes as Twisted's parser does.
    """
    fields, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(current))
            current = []
        elif ch == "=":
            current.append("\0")
        else:
            current.append(ch)
    fields.append("".join(current))
    args, kwargs = [], {}
    for field in fields:
        if "\0" in field:
            key, _, value = field.partition("\0")
            kwargs[key] = value.replace("\0", "=")
        else:
            args.append(field)
    return args, kwargs


def loadCertificates(path: str) -> list:
    """
    Every PEM certificate in the file at C{path}.

    @raise ValueError: if it holds none.
    """
    data = FilePath(path).getContent()
    certs = [Certificate.loadPEM(block) for block in _PEM_CERT.findall(data)]
    if not certs:
        raise ValueError(f"{path}: no PEM certificate in it")
    return certs


def clientCertificateOptions(privateKey: str, certKey: str, caFile: str,
                             extraCertChain: str | None = None) -> CertificateOptions:
    """
    Server TLS options that require a client certificate signed by a CA of
    C{caFile}.
    """
    keyPEM = FilePath(privateKey).getContent()
    certPEM = FilePath(certKey).getContent()
    mine = PrivateCertificate.loadPEM(certPEM + b"\n" + keyPEM)
    chain = None
    if extraCertChain is not None:
        chain = [c.original for c in loadCertificates(extraCertChain)]
    return CertificateOptions(
        privateKey=mine.privateKey.original,
        certificate=mine.original,
        extraCertChain=chain,
        # A trust root makes the server ask for a client certificate and
        # fail the handshake without one (VERIFY_PEER | FAIL_IF_NO_PEER_CERT).
        trustRoot=trustRootFromCertificates(loadCertificates(caFile)),
    )


def tlsServerEndpoint(reactor, description: str, caFile: str):
    """
    Build the endpoint for an C{ssl:} string with client certificates
    required.

    @raise ValueError: for a string this cannot honour (a key Twisted's C{ssl:}
        parser knows but this does not, no port, unreadable files).
    """
    args, kwargs = splitDescription(description)
    if not args or args[0] != "ssl":
        raise ValueError(f"{description!r} is not an ssl: endpoint")
    args = args[1:]
    if args:
        kwargs.setdefault("port", args.pop(0))
    if args:
        raise ValueError(f"{description!r}: unexpected {':'.join(args)!r}")
    unknown = set(kwargs) - _KEYS
    if unknown:
        raise ValueError(f"{description!r}: {', '.join(sorted(unknown))} not supported with --services-ca")
    if "port" not in kwargs:
        raise ValueError(f"{description!r}: no port")
    privateKey = kwargs.get("privateKey", "server.pem")
    try:
        options = clientCertificateOptions(privateKey, kwargs.get("certKey", privateKey), caFile,
                                           kwargs.get("extraCertChain"))
    except OSError as e:
        raise ValueError(f"{description!r}: {e.strerror}: {e.filename}") from None
    except Exception as e:
        raise ValueError(f"{description!r}: {e}") from None
    return SSL4ServerEndpoint(reactor, int(kwargs["port"]), options,
                              backlog=int(kwargs.get("backlog", 50)),
                              interface=kwargs.get("interface", ""))
