"""`python -m health_manager.cli simulate` end to end: it heals the foundation, exits 0, and
leaves no nats-server behind, also when stopped with SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import psutil
from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SimulateCommandTests(SynchronousTestCase):
    def launch(self, *args, **environ):
        env = dict(os.environ, PYTHONPATH=ROOT, **environ)
        process = subprocess.Popen(
            [sys.executable, "-m", "health_manager.cli", "simulate", "--plain", "--seed", "1",
             *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._kill, process)
        return process

    def _kill(self, process):
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    def watch(self, process, timeout, until=None):
        """Wait for exit (or `until()`), noting nats-server children; kill on timeout."""
        servers = set()
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    if "nats-server" in child.name():
                        servers.add(child)
            except psutil.NoSuchProcess:
                pass
            if until is not None and until(servers):
                return servers
            time.sleep(0.2)
        if process.poll() is None:
            process.kill()
            self.fail(f"simulate did not finish within {timeout} s")
        return servers

    def assertNoneAlive(self, servers):
        time.sleep(0.2)
        alive = [s.pid for s in servers if s.is_running() and s.status() != psutil.STATUS_ZOMBIE]
        self.assertEqual(alive, [])

    def test_simulate_heals_and_cleans_up(self):
        """A short simulation prints its rerun command, reports HEALED with its time to
        heal, exits 0 and stops its nats-server."""
        process = self.launch("--apps", "5", "--instances", "2", "--duration", "20")
        servers = self.watch(process, timeout=90)
        output = process.stdout.read()
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("HEALED: every desired instance is running", output)
        self.assertIn("health_manager simulate --seed 1 --apps 5 --instances 2", output)
        self.assertIn("time to heal:", output)
        self.assertTrue(servers, "no nats-server child was seen")
        self.assertNoneAlive(servers)

    def test_sigterm_stops_everything(self):
        """SIGTERM prints the summary, says interrupted (exit 130) and leaves no
        nats-server behind."""
        process = self.launch("--apps", "5", "--instances", "2", "--duration", "60")
        servers = self.watch(process, timeout=30, until=lambda found: bool(found))
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        self.watch(process, timeout=15)
        output = process.stdout.read()
        self.assertIn("Summary after", output)
        self.assertIn("(interrupted)", output)
        self.assertIn("INTERRUPTED before the faults ended: not judged", output)
        self.assertEqual(process.returncode, 130)
        self.assertNoneAlive(servers)

    def test_hm9000_heals_and_removes_its_certificates(self):
        """--cc-protocol hm9000: the CC acts on hm9000.* only, half the DEAs heartbeat over
        HTTPS and every one of those heartbeats is taken; the run ends HEALED and removes
        the certificates it made in its temporary directory."""
        tmpdir = os.path.abspath(self.mktemp())
        os.makedirs(tmpdir)
        process = self.launch("--apps", "5", "--instances", "2", "--duration", "12",
                              "--cc-protocol", "hm9000", TMPDIR=tmpdir)
        servers = self.watch(process, timeout=90)
        output = process.stdout.read()
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("HEALED: every desired instance is running", output)
        self.assertRegex(output, r"health manager sent: [1-9]\d* hm9000\.start")
        self.assertRegex(output, r"HTTPS heartbeats: [1-9]\d* accepted \(202\), 0 refused, "
                                 r"0 failed")
        self.assertIn("--cc-protocol hm9000", output)
        self.assertEqual(os.listdir(tmpdir), [])
        self.assertNoneAlive(servers)
