"""deploy/systemd: the unit passes `systemd-analyze verify` without a warning, its user is
the one the sysusers file creates, and its ExecStart line runs the health manager."""

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

from twisted.trial.unittest import SkipTest, TestCase

from health_manager.simulation.nats_server import NatsServer
from spec.integration.support import ROOT, write_config

SYSTEMD = os.path.join(ROOT, "deploy", "systemd")
UNIT = os.path.join(SYSTEMD, "health_manager.service")
SYSUSERS = os.path.join(SYSTEMD, "health_manager.sysusers.conf")
PREFIX = "/opt/health_manager"
CONFIG = "/etc/health_manager/health_manager.yml"


def read_unit():
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def tool_or_skip(name):
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed here"
        print(f"\nskipped: {reason}", file=sys.stderr)
        raise SkipTest(reason)
    return found


def venv_prefix():
    """The install prefix standing in for /opt/health_manager: this Python's venv."""
    return os.path.dirname(sysconfig.get_path("scripts"))


class SystemdUnitTests(TestCase):
    timeout = 60

    def test_unit_settings(self):
        """Type=simple, Restart=on-failure, a dedicated user, the config path in ExecStart."""
        service = read_unit()["Service"]
        self.assertEqual(service["Type"], "simple")
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["User"], "health_manager")
        self.assertEqual(service["Group"], "health_manager")
        argv = shlex.split(service["ExecStart"])
        self.assertEqual(argv[0], f"{PREFIX}/bin/twistd")
        self.assertEqual(argv[argv.index("--config") + 1], CONFIG)

    def test_systemd_analyze_verify(self):
        """`systemd-analyze verify` accepts the unit with nothing to say (unknown keys and
        bad values are only warnings there, so any output fails the test)."""
        analyze = tool_or_skip("systemd-analyze")
        scratch = os.path.abspath(self.mktemp())
        os.makedirs(scratch)
        unit = os.path.join(scratch, "health_manager.service")
        with open(UNIT) as f:
            text = f.read()
        # verify checks that ExecStart's program exists: point the prefix at an install.
        with open(unit, "w") as f:
            f.write(text.replace(PREFIX, venv_prefix()))
        result = subprocess.run([analyze, "verify", unit], capture_output=True, text=True,
                                timeout=30)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_sysusers_creates_the_units_user(self):
        """systemd-sysusers (into a scratch root) creates the user the unit runs as, with
        no login shell."""
        sysusers = tool_or_skip("systemd-sysusers")
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "etc"))
        subprocess.run([sysusers, f"--root={root}", SYSUSERS], check=True,
                       capture_output=True, timeout=30)
        with open(os.path.join(root, "etc", "passwd")) as f:
            users = {line.split(":")[0]: line.strip().split(":") for line in f}
        self.assertIn(read_unit()["Service"]["User"], users)
        self.assertTrue(users["health_manager"][6].endswith("nologin"))

    def test_exec_start_runs_the_health_manager(self):
        """ExecStart's command line, with an installed prefix and a real config, starts the
        HM; SIGTERM (KillSignal) stops it well within TimeoutStopSec."""
        service = read_unit()["Service"]
        nats = NatsServer().start()
        self.addCleanup(nats.stop)
        config = write_config(self, mbus=nats.url)
        argv = [config if arg == CONFIG else arg.replace(PREFIX, venv_prefix())
                for arg in shlex.split(service["ExecStart"])]
        log_path = os.path.abspath(self.mktemp())
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=os.path.dirname(log_path), start_new_session=True)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        deadline = time.monotonic() + 15
        while b"health manager started" not in _read(log_path):
            self.assertIsNone(process.poll(), _read(log_path))
            self.assertLess(time.monotonic(), deadline, _read(log_path))
            time.sleep(0.05)
        self.assertEqual(service["KillSignal"], "SIGTERM")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=int(service["TimeoutStopSec"]))
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn(code, (0, -signal.SIGTERM))
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(log_path), "twistd.pid")))


def _read(path):
    with open(path, "rb") as f:
        return f.read()
