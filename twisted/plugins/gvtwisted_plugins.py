"""
Twisted plugins of gvtap: the C{twistd gvtap} and C{twistd gvtap-guest} service
makers and the C{vsock:} endpoint string parsers.

This directory must never have an C{__init__.py}: Twisted finds plugins by scanning
every C{twisted/plugins} directory on C{sys.path}.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

from gvtwisted.link.vsock import VSockClientParser, VSockServerParser

gvtap = ServiceMaker(
    "gvtap",
    "gvtwisted.tap",
    "A user-mode network for virtual machines (the host side, like gvproxy).",
    "gvtap",
)

gvtapGuest = ServiceMaker(
    "gvtap-guest",
    "gvtwisted.guest.tap",
    "Carry a guest's TAP device to a gvtap or gvproxy host (like gvforwarder).",
    "gvtap-guest",
)

gvtapReactor = Reactor(
    "gvtap",
    "gvtwisted.reactor",
    "epoll with a direct read dispatch (gvtap's default; twistd -r gvtap).",
)

vsockServerParser = VSockServerParser()
vsockClientParser = VSockClientParser()
