"""The health manager as an operator runs it (`twistd -n health_manager`) against a real
nats-server, the fake Cloud Controller and simulated DEAs (issue 6, items 6 and 8): clean
exit on SIGTERM / SIGINT, and memory bounded under heartbeats for apps nobody desires.
"""

import itertools
import re
import signal
import time

import orjson
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from spec.integration.support import MBUS_PASSWORD, LiveFoundation, rss_mib, sleep, wait_until

START_FIELDS = {"droplet", "last_updated", "version", "indices", "running", "flapping"}


class SignalTests(TestCase):
    timeout = 60

    async def stops_cleanly(self, signum):
        foundation = await LiveFoundation(self).start()
        foundation.place("app-q", 6, running=0)
        # One start per 30 s: after the first, five starts wait in the queue.
        hm = foundation.start_child({"request_queue": 30, "queue_batch_size": 1,
                                     "droplet_lost": 1})
        await wait_until(lambda: foundation.starts(), timeout=20, what="first start")
        await sleep(0.5)
        began = time.monotonic()
        hm.process.send_signal(signum)
        while hm.process.poll() is None:
            self.assertLess(time.monotonic() - began, 5.0, hm.output())
            await sleep(0.05)
        elapsed = time.monotonic() - began
        self.assertIn(hm.process.returncode, (0, -signum))
        output = hm.output()
        queued = re.search(r"stopping with (\d+) queued health.start requests not sent", output)
        self.assertIsNotNone(queued, output)
        self.assertEqual(int(queued.group(1)), 5)
        self.assertIn("health manager stopped", output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn(MBUS_PASSWORD, output)
        await sleep(0.5)
        # Nothing half-built reached the wire: one complete start, no stop.
        self.assertEqual([set(s) for s in foundation.starts()], [START_FIELDS])
        self.assertEqual(foundation.stops(), [])
        print(f"\nexited {elapsed:.2f} s after signal {signum}, code "
              f"{hm.process.returncode}, {queued.group(1)} queued starts logged")

    def test_sigterm(self):
        """SIGTERM: exit within 5 s (0 or death by SIGTERM), NATS drained, the count of
        queued starts not sent logged, no partial message published."""
        return self.stops_cleanly(signal.SIGTERM)

    def test_sigint(self):
        """SIGINT: the same as SIGTERM."""
        return self.stops_cleanly(signal.SIGINT)


class MemoryTests(TestCase):
    timeout = 60

    async def test_memory_bounded_under_undesired_heartbeats(self):
        """A stream of heartbeats for apps the CC does not describe: droplet GC (on a fresh
        desired state) keeps the registry and the resident memory bounded."""
        foundation = await LiveFoundation(self, deas=0).start()
        hm = foundation.start_child({"droplet_gc": 1, "droplet_gc_grace_period": 2,
                                     "desired_state_lost": 60, "droplets_analysis": 1})
        await wait_until(lambda: "bulk update done" in hm.output(), what="desired fresh")
        names = itertools.count()

        def beat():
            foundation.bus.publish("dea.heartbeat", orjson.dumps({"dea": "ghost", "droplets": [
                {"droplet": f"ghost-{next(names)}", "version": "v", "instance": "g",
                 "index": 0, "state": "RUNNING", "state_timestamp": time.time()}
                for _ in range(20)]}))

        stream = task.LoopingCall(beat)
        stream.clock = reactor
        stream.start(0.02)
        self.addCleanup(lambda: stream.running and stream.stop())
        await sleep(8)
        before = rss_mib(hm.process.pid)
        created_before = next(names)
        await sleep(16)
        after = rss_mib(hm.process.pid)
        stream.stop()
        created = next(names)
        _, varz = await foundation.status_get(hm.status_port, "/varz")
        tracked = orjson.loads(varz)["total_apps"]
        removed = [int(n) for n in re.findall(r"droplet GC removed (\d+) of", hm.output())]
        self.assertGreater(sum(removed), created // 2)
        self.assertLess(tracked, created // 4)
        self.assertLess(after - before, 20)
        print(f"\n{created} undesired apps heartbeated ({created - created_before} after the "
              f"first sample); RSS {before:.1f} MiB -> {after:.1f} MiB; droplets tracked at "
              f"the end {tracked}; GC removed {sum(removed)}")
