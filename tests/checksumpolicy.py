"""
Run a test module's network tests under both checksum policies.

gvtap verifies the TCP and UDP checksums of guest frames only with
C{--verify-checksums} (L{VirtualNetwork.verifyChecksums}). Both settings must
carry the same traffic the same way, so a module that builds networks ends with
C{verifyingVariants(globals())}: each of its test case classes gets a twin,
C{...WithVerifiedChecksums}, that runs every test again with verification on.
A test about the policy itself sets C{network.verifyChecksums} on the instance,
which both twins honour. A class that builds no network says so with
C{checksumPolicyIndependent = True} and gets no twin.
"""

from gvtwisted.stack.network import VirtualNetwork


def verifyingVariants(namespace):
    """
    Add to C{namespace} (a test module's globals) a verifying twin of every
    test case class defined there that has test methods.
    """
    from twisted.trial.unittest import SynchronousTestCase

    module = namespace["__name__"]
    for name, cls in list(namespace.items()):
        if not (isinstance(cls, type) and issubclass(cls, SynchronousTestCase)
                and cls.__module__ == module
                and not getattr(cls, "checksumPolicyIndependent", False)
                and any(attr.startswith("test_") for attr in dir(cls))):
            continue

        def setUp(self, _base=cls):
            self.patch(VirtualNetwork, "verifyChecksums", True)
            return _base.setUp(self)

        twin = type(f"{name}WithVerifiedChecksums", (cls,), {
            "setUp": setUp,
            "__module__": module,
            "__doc__": f"L{{{name}}} with TCP and UDP checksum verification on.",
        })
        namespace[twin.__name__] = twin
