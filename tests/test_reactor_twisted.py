"""
Twisted's own reactor tests, run against L{gvtwisted.reactor.GvtapReactor}.

Twisted tests every reactor it ships with the same builders (TCP, UNIX, UDP,
TLS, processes, threads, timed calls, system events, file descriptor sets); this
module builds each of them once more, for gvtap's reactor, exactly as Twisted's
modules build them for C{EPollReactor}. A change to the reactor that breaks any
Twisted semantics a protocol relies on fails here.

Left out, each with its reason (L{LEFT_OUT}): C{test_logPrefix}, which checks
that the legacy logging context names the protocol during a read, the wrapping
L{GvtapReactor} drops by design (see its module docstring); and two tests that
Twisted's own C{EPollReactor} skips or cannot pass here either.
"""

import inspect
import os

from twisted.internet.test import (
    test_core,
    test_fdset,
    test_process,
    test_tcp,
    test_threads,
    test_time,
    test_tls,
    test_udp,
    test_unix,
)

GVTAP_REACTOR = "gvtwisted.reactor.GvtapReactor"
TWISTED_MODULES = (
    test_core,
    test_time,
    test_fdset,
    test_threads,
    test_tcp,
    test_unix,
    test_udp,
    test_tls,
    test_process,
)
LEFT_OUT = {
    "test_logPrefix": (
        "GvtapReactor does not set the legacy log context (log.callWithLogger) "
        "around a read, by design: see gvtwisted/reactor.py"
    ),
    "test_lostFileDescriptor": (
        "epoll cannot detect a descriptor closed and replaced under it; Twisted "
        "skips this test for EPollReactor by its class name"
    ),
}
if os.getuid() == 0:
    LEFT_OUT["test_changeUID"] = (
        "as root in a container the spawned child cannot switch its uid; Twisted's "
        "own EPollReactor fails this test here too, so it says nothing of the reactor"
    )


def _leftOut(reason):
    def test(self):
        pass

    test.skip = reason
    return test


def _buildersOf(module):
    """
    The builders C{module} makes Twisted's epoll test cases from.
    """
    builders = []
    for name, value in sorted(vars(module).items()):
        if inspect.isclass(value) and name.endswith("_EPollReactorTests"):
            builder = value.__bases__[0]
            if builder not in builders:
                builders.append(builder)
    return builders


def _makeTestCases(namespace):
    made = 0
    for module in TWISTED_MODULES:
        for builder in _buildersOf(module):
            attributes = {"_reactors": [GVTAP_REACTOR], "__module__": __name__}
            for testName, reason in LEFT_OUT.items():
                if hasattr(builder, testName):
                    attributes[testName] = _leftOut(reason)
            ours = type(builder.__name__, (builder,), attributes)
            for name, case in ours.makeTestCaseClasses().items():
                # Named as trial's workers (-j) look them up: module.name.
                assert name not in namespace, f"two of Twisted's builders make {name}"
                case.__module__ = __name__
                case.__qualname__ = name
                namespace[name] = case
                made += 1
    # An empty module would pass by running nothing.
    assert made >= 25, f"only {made} of Twisted's reactor test cases were found"


_makeTestCases(globals())
