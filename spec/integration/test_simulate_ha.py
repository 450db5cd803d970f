"""`simulate --ha 3 --kill-leader-every`: three HM processes on an embedded Redis; the leader
is killed during the faults, another takes over within the lease, and the run still heals
with no duplicate start caused by a failover. No server or HM is left behind."""

import json
import os
import subprocess
import sys
import time

import psutil
from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SimulateHaTests(SynchronousTestCase):
    def test_leader_killed_and_healed(self):
        """Two leader kills: each failover within lease + retry, HEALED, exit 0."""
        process = subprocess.Popen(
            [sys.executable, "-m", "health_manager.cli", "simulate", "--plain", "--seed", "3",
             "--ha", "3", "--kill-leader-every", "6", "--duration", "16", "--apps", "8",
             "--json-summary"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        children, names = set(), set()
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    children.add(child)
                    names.add((child.pid, child.name()))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
        output = process.stdout.read()
        process.stdout.close()
        self.assertEqual(process.returncode, 0, output)
        summary = json.loads(output.strip().splitlines()[-1])
        self.assertTrue(summary["healed"], output)
        self.assertGreaterEqual(len(summary["failovers"]), 1, output)
        for took in summary["took_over_s"]:
            self.assertLessEqual(took, summary["lease_duration"] + summary["retry_period"] + 0.5)
        self.assertEqual(summary["duplicate_starts_after_failover"], 0)
        self.assertIn("HEALED", output)
        time.sleep(0.3)
        left = [c.pid for c in children if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE]
        self.assertEqual(left, [])
        self.assertEqual(len([pid for pid, name in names if "redis-server" in name]), 1)
