"""`twistd -n health_manager` as an operator runs it: start, config errors, clean signals."""

import os
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import NatsServer, free_port
from spec.integration.support import ROOT, TWISTD, TwistdProcess, write_config


class TwistdTests(TestCase):
    timeout = 60

    def test_invalid_config_exits_with_one_line(self):
        """A wrong-typed interval stops the start: exit ≠ 0, one line naming the key."""
        path = write_config(self, intervals={"droplet_lost": "abc"})
        result = subprocess.run(
            [sys.executable, TWISTD, "-n", "health_manager", "-c", path],
            capture_output=True, text=True, cwd=ROOT, timeout=30,
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stderr.strip().count("\n"), 0, result.stderr)
        self.assertIn("'intervals.droplet_lost'", result.stderr)

    def test_unknown_key_is_a_warning_not_fatal(self):
        """An unknown key is logged by name and the service still starts."""
        nats = NatsServer().start()
        self.addCleanup(nats.stop)
        path = write_config(self, mbus=nats.url,
                            intervals={"expected_state_update": 10})
        hm = TwistdProcess(self, path)
        hm.wait_for("health manager started")
        self.assertIn("intervals.expected_state_update", hm.output())

    def stops_within_five_seconds(self, signum):
        nats = NatsServer(user="nats", password="s3cr3t-mbus").start()
        self.addCleanup(nats.stop)
        hm = TwistdProcess(self, write_config(self, mbus=nats.url))
        hm.wait_for("health manager started")
        started = time.monotonic()
        hm.process.send_signal(signum)
        code = hm.process.wait(timeout=10)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5.0)
        self.assertIn(code, (0, -signum))
        output = hm.output()
        self.assertIn("health manager stopped", output)
        self.assertNotIn("s3cr3t-mbus", output)

    def test_sigterm_stops_cleanly(self):
        """SIGTERM drains NATS and exits within 5 s."""
        self.stops_within_five_seconds(signal.SIGTERM)

    def test_sigint_stops_cleanly(self):
        """SIGINT drains NATS and exits within 5 s."""
        self.stops_within_five_seconds(signal.SIGINT)

    def test_starts_without_nats_and_serves_healthz(self):
        """With NATS unreachable the process stays up, logs its attempts, and stops on
        SIGTERM."""
        hm = TwistdProcess(self, write_config(self, mbus=f"nats://127.0.0.1:{free_port()}"))
        time.sleep(3)
        self.assertIsNone(hm.process.poll(), hm.output())
        hm.process.send_signal(signal.SIGTERM)
        self.assertIn(hm.process.wait(timeout=10), (0, -signal.SIGTERM))
