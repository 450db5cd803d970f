"""Every benchmark runs at smoke size and produces sane, non-zero figures (no timing limits).

The benchmarks run in a child process (`python -m bench.run --size smoke`), as a person
would run them; they start their own nats-server and child processes.
"""

import json
import os
import subprocess
import sys

from twisted.trial import unittest

from bench.common import child_env

SMOKE_TIMEOUT = 120


class BenchSmokeTests(unittest.SynchronousTestCase):
    # Filled by the first test that runs: the benchmarks run once for the whole class.
    _cached = None

    @property
    def results(self):
        cls = type(self)
        if cls._cached is None:
            output = os.path.abspath("bench-smoke.json")
            subprocess.run([sys.executable, "-m", "bench.run", "--size", "smoke", "--output",
                            output], env=child_env(), check=True, timeout=SMOKE_TIMEOUT,
                           stdout=subprocess.DEVNULL)
            with open(output) as f:
                cls._cached = json.load(f)
        return cls._cached

    def test_machine(self):
        """The results name the machine and the date they were measured on."""
        machine = self.results["machine"]
        self.assertGreater(machine["nproc"], 0)
        self.assertTrue(machine["date"])
        self.assertTrue(machine["twisted"])

    def test_ingest(self):
        """Ingest counts every instance-heartbeat the HM processed, with a positive rate
        and CPU cost, and no slow-consumer drops at the paced rate."""
        row = self.results["ingest"][0]
        run = row["runs"][0]
        self.assertEqual(run["instance_heartbeats"], run["messages_sent"] * 100)
        self.assertGreater(row["rate"], 0)
        self.assertGreater(row["cpu_s_per_million"], 0)
        self.assertGreater(row["decode_us"], 0)
        self.assertGreater(row["handler_us"], row["decode_us"])
        self.assertEqual(row["drops"], 0)

    def test_analysis(self):
        """An analysis pass covers every tracked instance, all running, and is timed."""
        row = self.results["analysis"][0]
        run = row["runs"][0]
        self.assertEqual(run["running"], row["instances"])
        self.assertEqual(run["starts"] + run["stops"], 0)
        self.assertGreater(row["cpu"], 0)
        self.assertGreater(row["longest_slice"], 0)

    def test_desired(self):
        """The bulk load applies every app of the simulated CC, and both passes are timed."""
        row = self.results["desired"][0]
        self.assertTrue(row["ok"])
        self.assertGreater(row["load"]["wall"], 0)
        self.assertGreater(row["update"]["cpu"], 0)

    def test_latency(self):
        """Every crash gets its health.start, within the start rate limit."""
        for row in self.results["latency"]:
            self.assertEqual(row["answered"], row["crashes"])
            self.assertGreater(row["p99"], 0)
            self.assertGreaterEqual(row["p99"], row["p50"])
            self.assertLessEqual(row["max_starts_per_window"], row["queue_batch_size"])

    def test_memory(self):
        """Memory is measured per tracked instance, and every instance is tracked."""
        row = self.results["memory"][0]
        self.assertEqual(row["runs"][0]["tracked"], row["instances"])
        self.assertGreater(row["bytes_per_instance"], 0)
