"""End to end over a real nats-server and loopback HTTP: the simulated Cloud Controller and
DEAs, and the health manager, each rule observed on the wire and in the CC's decisions."""

import time

import treq
from twisted.trial.unittest import TestCase

from health_manager.simulation.dea import CRASH_ON_START
from spec.integration.support import (
    MBUS_PASSWORD,
    STATUS_PASSWORD,
    STATUS_USER,
    LiveFoundation,
    wait_until,
)

# Slower bulk timeouts and GC than the shared defaults, and the 2 s minimum restart delay
# the flapping test measures.
INTERVALS = {"desired_state_lost": 30, "droplet_lost": 1.5, "request_queue": 1,
             "min_restart_delay": 2, "max_restart_delay": 8, "droplet_gc_grace_period": 60,
             "droplet_gc": 30, "bulk_credentials_timeout": 2, "bulk_request_timeout": 3}


class EndToEndTests(TestCase):
    timeout = 60

    async def foundation(self):
        """One DEA, and the health manager started."""
        f = await LiveFoundation(self, deas=1).start()
        await f.start_manager(INTERVALS)
        return f

    async def test_missing_instance_is_restarted(self):
        """An index the CC wants but no DEA runs gets a NORMAL health.start the CC accepts."""
        f = await self.foundation()
        app = f.cc.create_app("app-missing", instances=2, place=False)
        f.cc.start_instances(app, [0])
        await wait_until(lambda: len(f.running_indices("app-missing")) == 2, timeout=20,
                         what="index 1 started")
        start = f.starts()[0]
        self.assertEqual(start["droplet"], "app-missing")
        self.assertEqual(start["indices"], [1])
        self.assertEqual(start["version"], app.version)
        self.assertEqual(start["running"], {app.version: 1})
        self.assertFalse(start["flapping"])
        self.assertEqual(f.cc.decision_counts[("start", False)], 0)

    async def test_extra_instance_is_stopped(self):
        """An index above the desired count is stopped with a `running` the CC acts on."""
        f = await self.foundation()
        app = f.cc.create_app("app-extra", instances=1)
        f.cc.start_instances(app, [1])
        await wait_until(lambda: f.stops(), timeout=20, what="health.stop")
        await wait_until(lambda: len(f.running_indices("app-extra")) == 1, timeout=10,
                         what="extra stopped")
        stop = f.stops()[0]
        _, extra = f.instance("app-extra", 0)
        self.assertEqual(list(stop["instances"].values()), [app.version])
        self.assertNotIn(extra.guid, stop["instances"])
        self.assertEqual(stop["running"], {app.version: 2})
        self.assertEqual(f.cc.decision_counts[("stop", True)], 1)
        self.assertEqual(f.cc.decision_counts[("stop", False)], 0)

    async def test_crash_is_restarted_at_once(self):
        """A crashed instance gets a LOW health.start at once, not at the next queue tick."""
        f = await self.foundation()
        f.cc.create_app("app-crash", instances=1)
        await wait_until(lambda: f.running_indices("app-crash"), timeout=10,
                         what="instance running")
        await wait_until(lambda: getattr(f.manager.registry.get("app-crash"), "live_version",
                                         None) is not None,
                         timeout=10, what="HM knows the desired state")
        dea, instance = f.instance("app-crash", 0)
        crashed_at = time.monotonic()
        dea.crash(instance.guid)
        await wait_until(lambda: f.starts(), timeout=10, what="restart")
        sent_at = f.recorder.messages[0][0]
        self.assertLess(sent_at - crashed_at, 0.5)
        self.assertEqual(f.starts()[0]["indices"], [0])
        await wait_until(lambda: f.running_indices("app-crash"), timeout=10,
                         what="replacement running")
        replies = await f.request("healthmanager.status",
                                  {"droplet": "app-crash", "state": "CRASHED"})
        self.assertEqual([c["instance"] for c in replies[0]["instances"]], [instance.guid])

    async def test_flapping_instance_is_backed_off(self):
        """A crash restarts at once; the next crash makes the instance FLAPPING and its
        restart waits min_restart_delay with flapping: true; status FLAPPING lists it."""
        f = await LiveFoundation(self, deas=1).start()
        app = f.cc.create_app("app-flap", instances=1, behaviour=CRASH_ON_START, place=False)
        await f.start_manager(INTERVALS)
        # While the delayed restart is pending, the CC's status query lists the index.
        await wait_until(lambda: len(f.starts()) >= 2, timeout=20, what="crash restart")
        flapping_indices = []
        while not flapping_indices and not any(p["flapping"] for p in f.starts()):
            replies = await f.request("healthmanager.status",
                                      {"droplet": "app-flap", "version": app.version,
                                       "state": "FLAPPING"})
            flapping_indices = [i["index"] for i in replies[0]["indices"]] if replies else []
        self.assertEqual(flapping_indices, [0])
        await wait_until(lambda: any(p["flapping"] for p in f.starts()),
                         timeout=20, what="flapping restart")
        starts = [(t, p) for t, s, p in f.recorder.messages if s == "health.start"]
        flapping = next(n for n, (_, p) in enumerate(starts) if p["flapping"])
        self.assertEqual(flapping, 2, starts)  # missing start, crash restart, flapping restart
        # Crash restart: right after the crash (startup delay 0.2 s + transit).
        self.assertLess(starts[1][0] - starts[0][0], 1.0)
        # Flapping restart: min_restart_delay (2 s, no noise) after the second crash.
        self.assertGreaterEqual(starts[2][0] - starts[1][0], 2.0)
        self.assertTrue(all(p["version"] == app.version for _, p in starts))

    async def test_health_and_status_replies(self):
        """healthmanager.health answers one message per known droplet with its healthy
        count; an unknown droplet gets no reply."""
        f = await self.foundation()
        app = f.cc.create_app("app-ok", instances=2)
        await wait_until(lambda: f.manager.registry.get("app-ok") is not None
                         and f.manager.registry.get("app-ok").healthy_count(app.version) == 2,
                         timeout=20, what="both instances known and desired")
        replies = await f.request("healthmanager.health", {"droplets": [
            {"droplet": "app-ok", "version": app.version},
            {"droplet": "app-unknown", "version": "v"}]}, max_replies=2)
        self.assertEqual(replies, [{"droplet": "app-ok", "version": app.version, "healthy": 2}])
        self.assertEqual(await f.request("healthmanager.status",
                                         {"droplet": "app-unknown", "state": "CRASHED"}), [])

    async def test_varz_requires_credentials(self):
        """/varz answers 401 without credentials and current counters with them."""
        f = await self.foundation()
        f.cc.create_app("app-varz", instances=1)
        await wait_until(lambda: f.manager.metrics.heartbeat_msgs_received > 0, timeout=10,
                         what="a heartbeat")
        url = f"http://{f.manager.status_server.host}/varz"
        anonymous = await treq.get(url, persistent=False)
        self.assertEqual(anonymous.code, 401)
        await anonymous.content()
        response = await treq.get(url, auth=(STATUS_USER, STATUS_PASSWORD), persistent=False)
        self.assertEqual(response.code, 200)
        varz = await response.json()
        self.assertGreater(varz["heartbeat_msgs_received"], 0)
        self.assertEqual(varz["type"], "HealthManager")
        self.assertIn("started_apps", varz["total"])
        self.assertNotIn(MBUS_PASSWORD, str(varz))
