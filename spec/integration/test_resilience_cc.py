"""Resilience against a failing Cloud Controller (issue 6, item 3): the bulk API answers
500, 401 or garbage, hangs, is down, or describes one app badly, for longer than both
`desired_state_lost` and `droplet_gc_grace_period`. Real NATS, the fake CC over real HTTP,
simulated DEAs; assertions on the health.start / health.stop messages seen on the wire.
"""

import re
import time

from twisted.trial.unittest import TestCase

from health_manager.simulation.cloud_controller import (
    FAULT_401,
    FAULT_500,
    FAULT_GARBAGE,
    FAULT_HANG,
)
from spec.integration.support import BULK_PASSWORD, LiveFoundation, LogCapture, sleep, wait_until

# An outage of OUTAGE seconds outlasts desired_state_lost and the GC grace period, with GC
# sweeps every second: an HM without freshness gating stops every app and forgets them all.
INTERVALS = {"desired_state_lost": 3, "droplet_gc_grace_period": 4, "droplet_gc": 1,
             "giveup_crash_number": 0}
OUTAGE = 8
APPS = {"app-a": 2, "app-b": 1, "app-crashy": 2}


class CloudControllerFaultTests(TestCase):
    timeout = 60

    async def setUp(self):
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.foundation = foundation = await LiveFoundation(self).start()
        for guid, instances in APPS.items():
            foundation.place(guid, instances)
        self.manager = manager = await foundation.start_manager(INTERVALS)
        await wait_until(lambda: manager.desired_state.is_fresh()
                         and manager.freshness.is_fresh()
                         and all(foundation.running_indices(g) == list(range(n))
                                 for g, n in APPS.items()), what="healthy foundation")
        # Crash history: two crashes of app-crashy[0], the second one counted as flapping
        # (flapping_death 1) and restarted after a delay.
        for _ in range(2):
            guid = next(i.guid for _, i in foundation.instances_of("app-crashy")
                        if i.index == 0 and i.state == "RUNNING")
            dea = next(d for d, i in foundation.instances_of("app-crashy") if i.guid == guid)
            dea.crash(guid)
            await wait_until(lambda: foundation.running_indices("app-crashy") == [0, 1],
                             what="app-crashy restarted")
        self.crashy = manager.registry.get("app-crashy")
        self.history = self.crash_history()
        self.assertEqual(self.history[1], 2)
        self.assertTrue(self.history[0])

    def crash_history(self):
        record = self.crashy.find_instance("app-crashy-v1", 0)
        return sorted(self.crashy.crashes), record.crash_count

    async def outage(self, begin, end):
        """Run the fault for OUTAGE seconds; check nothing wrong happened; recover."""
        foundation, manager = self.foundation, self.manager
        droplets = sorted(d.id for d in manager.registry)
        began = time.monotonic()
        await begin()
        await wait_until(lambda: not manager.desired_state.is_fresh(), what="stale")
        await sleep(OUTAGE)
        self.assertEqual((foundation.starts(began), foundation.stops(began)), ([], []))
        self.assertEqual(sorted(d.id for d in manager.registry), droplets)
        self.assertIs(manager.registry.get("app-crashy"), self.crashy)
        self.assertEqual(self.crash_history(), self.history)
        self.assertIn("droplet GC skipped: desired state is not fresh", self.logs.text())
        delays = [float(d) for d in re.findall(r"bulk update retry in ([0-9.]+) s",
                                                self.logs.text())]
        self.assertGreaterEqual(len(delays), 2)
        self.assertGreater(delays[-1], delays[0])  # backoff, not a tight retry loop
        await end()
        recovered = await wait_until(manager.desired_state.is_fresh, timeout=20,
                                     what="desired state fresh again")
        # Full recovery: a genuinely missing instance is started again.
        after = time.monotonic()
        foundation.kill_instance("app-a", 1)
        await wait_until(lambda: foundation.starts(after), what="start after recovery")
        self.assertEqual([(s["droplet"], s["indices"]) for s in foundation.starts(after)],
                         [("app-a", [1])])
        self.assertNotIn(BULK_PASSWORD, self.logs.text())
        return delays, recovered

    def fault(self, name):
        async def begin():
            self.foundation.cc.fault = name

        async def end():
            self.foundation.cc.fault = None

        return begin, end

    async def test_500(self):
        """HTTP 500 from the bulk API: no stop, no GC, history kept, backoff, recovery."""
        delays, recovered = await self.outage(*self.fault(FAULT_500))
        print(f"\n500: retry delays {delays}, fresh {recovered:.1f} s after recovery")

    async def test_401_requests_credentials_again(self):
        """HTTP 401: as for 500, and the credentials are requested again over NATS."""
        requests = self.manager.metrics.bulk_credentials_requests
        await self.outage(*self.fault(FAULT_401))
        self.assertGreater(self.manager.metrics.bulk_credentials_requests, requests + 1)

    async def test_garbage(self):
        """A body that is not JSON: treated as a failed pass, nothing acted on."""
        await self.outage(*self.fault(FAULT_GARBAGE))

    async def test_hanging_connection(self):
        """A bulk request that never answers times out (bulk_request_timeout) and is
        retried with backoff; nothing acted on."""
        await self.outage(*self.fault(FAULT_HANG))
        self.assertIn("timed out after 1 s", self.logs.text())

    async def test_down(self):
        """The Cloud Controller refuses connections for longer than the GC grace period:
        nothing acted on, nothing forgotten, full recovery once it listens again."""
        await self.outage(self.foundation.cc_down, self.cc_up)

    async def cc_up(self):
        self.foundation.cc_up()

    async def test_bad_entry_skips_that_entry_only(self):
        """One app entry missing a required field is skipped and counted; the other apps
        are refreshed, and the skipped app is neither stopped nor forgotten."""
        foundation, manager = self.foundation, self.manager
        began = time.monotonic()
        foundation.cc.apps["app-b"].package_state = None
        await sleep(OUTAGE)
        self.assertGreater(manager.metrics.skipped_entries.get("bulk_api", 0), 0)
        self.assertTrue(manager.desired_state.is_fresh())
        self.assertEqual((foundation.starts(began), foundation.stops(began)), ([], []))
        self.assertIn("app-b", manager.registry)
        self.assertEqual(foundation.running_indices("app-b"), [0])
        self.assertIn("bulk entry app-b skipped", self.logs.text())
