"""
Packaging: a regular install and an editable install both put our twistd
plugins where Twisted looks for them (every C{twisted/plugins} directory on
C{sys.path}).

Each test makes a fresh virtual environment that sees this interpreter's
packages (so nothing is downloaded) and installs the project into it without
dependencies and without build isolation.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hasSetuptools():
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    return True


class PackagingTests(SynchronousTestCase):
    """
    C{twistd --help} lists gvtap and gvtap-guest after either install mode.
    """

    if not _hasSetuptools():
        skip = "setuptools is needed to build the project"

    def installAndList(self, *pipArgs):
        where = tempfile.mkdtemp(prefix="gvtap-venv-")
        self.addCleanup(shutil.rmtree, where, True)
        # Build from a copy: an editable install must not point at the working
        # tree that other tests run from, and a build must not litter it.
        source = os.path.join(where, "src")
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", "_trial_temp*", "*.egg-info", "build", "__pycache__", ".hypothesis",
            "dropin.cache"))
        venv = os.path.join(where, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                       check=True, capture_output=True)
        python = os.path.join(venv, "bin", "python")
        install = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             *pipArgs, source], capture_output=True, text=True, cwd=where)
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        listing = subprocess.run(
            [python, "-c", "import sys; from twisted.scripts.twistd import run; "
             "sys.argv[0] = 'twistd'; run()", "--help"],
            capture_output=True, text=True, cwd=where, env=env)
        return listing.stdout

    def test_regularInstall(self):
        """
        C{pip install .} installs the plugin module into site-packages'
        twisted/plugins, and twistd finds both commands.
        """
        listing = self.installAndList()
        self.assertIn("gvtap ", listing)
        self.assertIn("gvtap-guest", listing)

    def test_editableInstall(self):
        """
        C{pip install -e .} puts the project root on sys.path, so twistd finds
        the plugins in its twisted/plugins directory.
        """
        listing = self.installAndList("-e")
        self.assertIn("gvtap ", listing)
        self.assertIn("gvtap-guest", listing)
