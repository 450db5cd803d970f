"""Packaging: an installed health_manager is found by twistd (the flat-layout pitfall)."""

import os
import subprocess
import sys
import sysconfig

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class InstalledPluginTests(TestCase):
    timeout = 300

    def test_twistd_lists_health_manager_after_pip_install(self):
        """After `pip install .` into a fresh venv, `twistd --help` lists health_manager."""
        venv = os.path.abspath(self.mktemp())
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        # The fresh venv sees this environment's dependencies through a .pth file, so only
        # the project itself is installed into it (no downloads), exactly as pip lays it out.
        purelib = sysconfig.get_path("purelib")
        venv_python = os.path.join(venv, "bin", "python")
        venv_site = subprocess.run(
            [venv_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True, capture_output=True, text=True).stdout.strip()
        with open(os.path.join(venv_site, "deps.pth"), "w") as f:
            f.write(purelib + "\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--target", venv_site, ROOT],
            check=True, cwd=venv)
        result = subprocess.run(
            [venv_python, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            capture_output=True, text=True, cwd=venv, timeout=120)
        self.assertIn("health_manager", result.stdout)
        plugin = os.path.join(venv_site, "twisted", "plugins", "health_manager_plugin.py")
        self.assertTrue(os.path.exists(plugin))
        self.assertFalse(os.path.exists(
            os.path.join(venv_site, "twisted", "plugins", "__init__.py")))
