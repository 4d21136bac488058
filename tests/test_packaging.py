"""
Packaging: a regular install and an editable install both put our twistd
plugins where Twisted looks for them (every C{twisted/plugins} directory on
C{sys.path}).

Each test makes a fresh virtual environment with the interpreter that runs
the tests, and lets it see that environment's installed packages (Twisted,
setuptools, wheel) through a C{.pth} file, so nothing is downloaded and the
build needs no isolation. C{venv --system-site-packages} would not do: made
from inside a virtualenv, it exposes the base interpreter's packages, not the
virtualenv's.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WHERE_IS_THE_PLUGIN = (
    "import sys; sys.argv[0] = 'twistd'; "
    "from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker; "
    "import twisted.plugins.gvtwisted_plugins as m; print(m.__file__); "
    "print(sorted(p.tapname for p in getPlugins(IServiceMaker) if p.tapname.startswith('gvtap')))"
)


def _missingBuildTools():
    """
    The name of a build tool the running environment lacks, or L{None}.
    """
    for name in ("setuptools", "wheel"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def _runningSitePackages():
    """
    The site-packages directories of the environment running the tests.
    """
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += [p for p in site.getsitepackages() if p not in paths]
    return [p for p in dict.fromkeys(paths) if os.path.isdir(p)]


class PackagingTests(SynchronousTestCase):
    """
    twistd finds gvtap and gvtap-guest after either install mode, from where
    that install put them.
    """

    missing = _missingBuildTools()
    if missing is not None:
        skip = f"{missing} is needed to build the project (pip install -e '.[test]' brings it)"

    def installAndLocate(self, *pipArgs):
        """
        Install a copy of the project into a new venv; return that venv's
        directory, the copy's directory, the plugin module's file as the
        venv's twistd imports it, and the gvtap plugin names it finds.
        """
        where = tempfile.mkdtemp(prefix="gvtap-venv-")
        self.addCleanup(shutil.rmtree, where, True)
        # Build from a copy: an editable install must not point at the working
        # tree that other tests run from, and a build must not litter it.
        source = os.path.join(where, "src")
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", "_trial_temp*", "*.egg-info", "build", "__pycache__", ".hypothesis",
            "dropin.cache"))
        venv = os.path.join(where, "venv")
        made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
        self.assertEqual(made.returncode, 0, made.stdout + made.stderr)
        python = os.path.join(venv, "bin", "python")
        venvSite = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(venvSite, "zz-running-tests.pth"), "w") as f:
            f.write("\n".join(_runningSitePackages()) + "\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        install = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--no-index", *pipArgs, source], capture_output=True, text=True, cwd=where, env=env)
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        found = subprocess.run([python, "-c", WHERE_IS_THE_PLUGIN],
                               capture_output=True, text=True, cwd=where, env=env)
        self.assertEqual(found.returncode, 0, found.stdout + found.stderr)
        pluginFile, names = found.stdout.strip().splitlines()[-2:]
        return venv, source, pluginFile, names

    def test_regularInstall(self):
        """
        C{pip install .} installs the plugin module into the venv's own
        site-packages, and twistd finds both commands there.
        """
        venv, source, pluginFile, names = self.installAndLocate()
        self.assertTrue(pluginFile.startswith(venv + os.sep), pluginFile)
        self.assertEqual(names, "['gvtap', 'gvtap-guest']")

    def test_editableInstall(self):
        """
        C{pip install -e .} puts the project root on sys.path, so twistd finds
        the plugins in its twisted/plugins directory.
        """
        venv, source, pluginFile, names = self.installAndLocate("-e")
        self.assertTrue(pluginFile.startswith(source + os.sep), pluginFile)
        self.assertEqual(names, "['gvtap', 'gvtap-guest']")
