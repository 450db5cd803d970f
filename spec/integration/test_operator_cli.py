"""Integration: the rough edges a new operator hit (issue 12, section 6), each run as the
operator would: bin/health_manager outside the venv, the pid file, a busy status.port,
--version."""

import os
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import TestCase

from health_manager import __version__
from spec.integration.support import ROOT, write_config

LAUNCHER = os.path.join(ROOT, "bin", "health_manager")
# What a fresh login shell has: no venv on PATH, no PYTHONPATH.
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8"}


def launch(args, cwd, **kwargs):
    return subprocess.Popen([LAUNCHER, *args], cwd=cwd, env=BARE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


class LauncherTests(TestCase):
    timeout = 60

    def setUp(self):
        if not os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")):
            self.skipTest("no .venv in the source tree (make install makes it)")

    def test_version_outside_the_venv(self):
        """bin/health_manager --version works from a bare shell (no venv on PATH) and
        prints health_manager's version and Twisted's."""
        done = launch(["--version"], cwd=self.mktemp_dir())
        out, err = done.communicate(timeout=30)
        self.assertEqual(done.returncode, 0, err)
        self.assertRegex(out.strip(), rf"^health_manager {__version__} \(Twisted \S+, "
                                      r"Python \S+\)$")

    def mktemp_dir(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def start(self, config, cwd):
        hm = launch(["-c", config], cwd=cwd)
        self.addCleanup(self._stop, hm)
        return hm

    @staticmethod
    def _stop(hm):
        if hm.poll() is None:
            os.killpg(hm.pid, signal.SIGTERM)
            try:
                hm.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(hm.pid, signal.SIGKILL)
                hm.wait()
        hm.stdout.close()
        hm.stderr.close()

    @staticmethod
    def wait_for_file(path, timeout=15):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} not written")
            time.sleep(0.05)

    def test_pid_key_honoured_and_no_stray_twistd_pid(self):
        """`pid:` gets the process id; no ./twistd.pid is written, and a second health
        manager (another pid file, another port) starts in the same directory."""
        cwd = self.mktemp_dir()
        pid_path = os.path.join(cwd, "hm.pid")
        first = self.start(write_config(self, pid=pid_path), cwd)
        self.wait_for_file(pid_path)
        with open(pid_path) as f:
            written = int(f.read().strip())
        # The launcher execs into python, which execs into twistd: one process id.
        self.assertEqual(written, first.pid)
        second = self.start(write_config(self), cwd)
        time.sleep(3)
        self.assertIsNone(second.poll(), second.stderr.read() if second.poll() else "")
        self.assertIsNone(first.poll())
        self.assertNotIn("twistd.pid", os.listdir(cwd))
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=10)
        self.assertFalse(os.path.exists(pid_path))

    def test_busy_status_port_is_one_line(self):
        """A busy status.port: exit 1, and stderr is one line naming status.port."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        config = write_config(self, status={"port": port, "user": "u", "password": "p"})
        hm = launch(["-c", config], cwd=self.mktemp_dir())
        out, err = hm.communicate(timeout=30)
        self.assertEqual(hm.returncode, 1, out + err)
        self.assertEqual(err.strip().count("\n"), 0, err)
        self.assertIn("config key 'status.port': cannot listen on 127.0.0.1:%d" % port, err)
        self.assertNotIn("Traceback", out + err)
