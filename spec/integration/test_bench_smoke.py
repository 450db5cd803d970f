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

    def test_hm9000(self):
        """HM9000's contract (issue 19): both ingest paths count every instance-heartbeat
        (every HTTPS one answered 202 and relayed), both app-state APIs answer every app
        asked with its instances, every crash gets its hm9000.start (and health.start in
        the hm2 run beside it), and memory is measured in both modes."""
        figures = self.results["hm9000"]
        for path in ("https", "nats"):
            row = figures["ingest"][path]
            run = row["runs"][0]
            self.assertEqual(run["instance_heartbeats"], run["messages_sent"] * 100)
            self.assertGreater(row["rate"], 0)
            self.assertGreater(row["cpu_s_per_million"], 0)
        https = figures["ingest"]["https"]["runs"][0]
        self.assertEqual(https["statuses"], {"202": https["messages_sent"]})
        self.assertEqual(https["https_relayed"], https["messages_sent"])
        self.assertEqual(https["https_tls_failures"], 0)
        self.assertEqual([row["apps"] for row in figures["api"]["sets"]], [1, 50, 500])
        for row in figures["api"]["sets"]:
            self.assertTrue(row["complete"])
            self.assertGreaterEqual(row["http_p99"], row["http_p50"])
            self.assertGreater(row["nats_p50"], 0)
        for mode, subject in (("hm9000", "hm9000.start"), ("hm2", "health.start")):
            row = figures["latency"][mode]
            self.assertEqual(row["subject"], subject)
            self.assertEqual(row["answered"], row["crashes"])
            self.assertGreaterEqual(row["p99"], row["p50"])
        for mode in ("hm9000", "hm2"):
            row = figures["memory"][mode]
            self.assertEqual(row["runs"][0]["tracked"], row["instances"])
            self.assertGreater(row["bytes_per_instance"], 0)

    def test_memory(self):
        """Memory is measured per tracked instance, and every instance is tracked."""
        row = self.results["memory"][0]
        self.assertEqual(row["runs"][0]["tracked"], row["instances"])
        self.assertGreater(row["bytes_per_instance"], 0)


class DurableBenchSmokeTests(unittest.SynchronousTestCase):
    """`python -m bench.ha durable smoke`: the durable-state benchmark (issue 11) at a tiny
    size, with a real redis-server; its figures, not its timings, are checked."""

    _cached = None

    @property
    def results(self):
        cls = type(self)
        if cls._cached is None:
            done = subprocess.run([sys.executable, "-m", "bench.ha", "durable", "smoke"],
                                  env=child_env(), check=True, timeout=SMOKE_TIMEOUT,
                                  capture_output=True, text=True)
            cls._cached = json.loads(done.stdout)
        return cls._cached

    def test_spaced_crashes_write_one_call_each(self):
        """A crash on its own costs one fenced Lua call storing its record and its start's
        intent, and /varz counts both."""
        spaced = self.results["writes"]["spaced"]
        self.assertEqual(spaced["crash_keys"], spaced["crashes"])
        self.assertEqual(spaced["starts_sent"], spaced["crashes"])
        self.assertEqual(spaced["lua_calls"], spaced["crashes"])
        self.assertEqual(spaced["sets"], 2 * spaced["crashes"])
        self.assertEqual(spaced["ha_records_written"], 2 * spaced["crashes"])
        self.assertEqual(spaced["ha_record_write_failures"], 0)

    def test_burst_writes_are_batched(self):
        """Crashes arriving together share Lua calls, and every record is stored."""
        burst = self.results["writes"]["burst"]
        self.assertEqual(burst["crash_keys"], burst["crashes"])
        self.assertLess(burst["lua_calls"], burst["crashes"] / 10)
        self.assertEqual(burst["sets"], burst["ha_records_written"])
        self.assertEqual(burst["ha_records_written"], burst["crashes"] + burst["starts_sent"])

    def test_latency_with_and_without_persistence(self):
        """Every crash gets its start with persistence on and off; only "on" writes."""
        latency = self.results["latency"]
        for name in ("off", "on"):
            self.assertEqual(latency[name]["answered"], latency[name]["crashes"])
            self.assertGreaterEqual(latency[name]["p99"], latency[name]["p50"])
            self.assertGreater(latency[name]["p50"], 0)
        self.assertEqual(latency["off"]["ha_records_written"], 0)
        self.assertEqual(latency["on"]["ha_records_written"], 2 * latency["on"]["crashes"])

    def test_crash_burst_loses_nothing(self):
        """After a burst every crash record is in Redis, none failed, and the HM's reactor
        stall was measured."""
        on = self.results["burst"]["on"]
        run = on["runs"][0]
        self.assertEqual(run["crash_keys"], run["crashes"])
        self.assertEqual(run["lost"], 0)
        self.assertEqual(run["ha_record_write_failures"], 0)
        self.assertEqual(run["ha_fenced_writes_refused"], 0)
        self.assertEqual(run["ha_records_written"], run["crash_keys"] + run["start_keys"])
        self.assertGreater(run["hm_longest_stall"], 0)
        self.assertGreater(self.results["burst"]["off"]["runs"][0]["hm_longest_stall"], 0)
