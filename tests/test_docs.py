"""
The documentation cites only files that exist: every relative link and every
C{path.md} / C{path.py} / C{path.sh} named in README.md, docs/ and bench/README.md
resolves inside the repository.
"""

import glob
import os
import re

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
NAMED = re.compile(r"`([A-Za-z0-9_./-]+\.(?:md|py|sh))`")


def documents():
    names = ["README.md", "bench/README.md"] + sorted(
        os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
    return [n for n in names if os.path.exists(os.path.join(REPO, n))]


def resolves(document, target):
    """
    Whether C{target}, cited in C{document}, names a file of the repository:
    relative to the document, to the root, or to the package (docs write
    C{stack/tcp.py} for C{gvtwisted/stack/tcp.py}).
    """
    here = os.path.dirname(os.path.join(REPO, document))
    for base in (here, REPO, os.path.join(REPO, "gvtwisted")):
        if os.path.exists(os.path.normpath(os.path.join(base, target))):
            return True
    # A bare module name (`tcp.py`) is fine if the package has one of that name.
    if "/" not in target:
        return any(glob.glob(os.path.join(REPO, top, "**", target), recursive=True)
                   for top in ("gvtwisted", "tests", "bench", "docs", "tap", "twisted"))
    return False


class DocsTests(SynchronousTestCase):
    """
    Nothing in the documentation points at a file that is not there.
    """

    def test_citedFilesExist(self):
        """
        Every relative link and every named .md/.py/.sh path resolves.
        """
        missing = []
        for document in documents():
            with open(os.path.join(REPO, document), encoding="utf-8") as f:
                text = f.read()
            targets = [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]
            targets += NAMED.findall(text)
            missing += [f"{document}: {t}" for t in targets if not resolves(document, t)]
        self.assertEqual(missing, [])

    def test_checksItself(self):
        """
        The check finds a missing file (so the test above can fail).
        """
        self.assertFalse(resolves("docs/architecture.md", "no/such/design.md"))
        self.assertFalse(resolves("docs/benchmarks.md", "design.md"))
        self.assertTrue(resolves("docs/architecture.md", "../bench/README.md"))
