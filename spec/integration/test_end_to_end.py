"""End to end over a real nats-server and loopback HTTP: the simulated Cloud Controller and
DEAs, and the health manager, each rule observed on the wire and in the CC's decisions."""

import time

import treq
from twisted.trial.unittest import TestCase

from health_manager.simulation.dea import CRASH_ON_START
from spec.integration.support import LiveFoundation, wait_until


class EndToEndTests(TestCase):
    timeout = 60

    async def foundation(self, **kwargs):
        return await LiveFoundation(self, **kwargs).start()

    async def test_missing_instance_is_restarted(self):
        """An index the CC wants but no DEA runs gets a NORMAL health.start the CC accepts."""
        f = await self.foundation()
        app = f.cc.create_app("app-missing", instances=2, place=False)
        f.cc.start_instances(app, [0])
        await wait_until(lambda: len(f.running("app-missing")) == 2, timeout=20,
                         what="index 1 started")
        start = f.recorder.payloads("health.start")[0]
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
        await wait_until(lambda: f.recorder.payloads("health.stop"), timeout=20,
                         what="health.stop")
        await wait_until(lambda: len(f.running("app-extra")) == 1, what="extra stopped")
        stop = f.recorder.payloads("health.stop")[0]
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
        await wait_until(lambda: f.running("app-crash"), what="instance running")
        await wait_until(lambda: getattr(f.manager.registry.get("app-crash"), "live_version",
                                         None) is not None, what="HM knows the desired state")
        dea, instance = f.instance("app-crash", 0)
        crashed_at = time.monotonic()
        dea.crash(instance.guid)
        await wait_until(lambda: f.recorder.payloads("health.start"), what="restart")
        sent_at = f.recorder.messages[0][0]
        self.assertLess(sent_at - crashed_at, 0.5)
        self.assertEqual(f.recorder.payloads("health.start")[0]["indices"], [0])
        await wait_until(lambda: f.running("app-crash"), what="replacement running")
        replies = await f.request("healthmanager.status",
                                  {"droplet": "app-crash", "state": "CRASHED"})
        self.assertEqual([c["instance"] for c in replies[0]["instances"]], [instance.guid])

    async def test_flapping_instance_is_backed_off(self):
        """A crash restarts at once; the next crash makes the instance FLAPPING and its
        restart waits min_restart_delay with flapping: true; status FLAPPING lists it."""
        f = await LiveFoundation(self).start(manager=False)
        app = f.cc.create_app("app-flap", instances=1, behaviour=CRASH_ON_START, place=False)
        await f.start_manager()
        await wait_until(lambda: any(p["flapping"] for p in f.recorder.payloads("health.start")),
                         timeout=20, what="flapping restart")
        starts = [(t, p) for t, s, p in f.recorder.messages if s == "health.start"]
        flapping = next(n for n, (_, p) in enumerate(starts) if p["flapping"])
        self.assertEqual(flapping, 2, starts)  # missing start, crash restart, flapping restart
        # Crash restart: right after the crash (startup delay 0.2 s + transit).
        self.assertLess(starts[1][0] - starts[0][0], 1.0)
        # Flapping restart: min_restart_delay (2 s, no noise) after the second crash.
        self.assertGreaterEqual(starts[2][0] - starts[1][0], 2.0)
        self.assertTrue(all(p["version"] == app.version for _, p in starts))
        replies = await f.request("healthmanager.status",
                                  {"droplet": "app-flap", "version": app.version,
                                   "state": "FLAPPING"})
        self.assertEqual([i["index"] for i in replies[0]["indices"]], [0])

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
        await wait_until(lambda: f.manager.metrics.heartbeat_msgs_received > 0,
                         what="a heartbeat")
        url = f"http://{f.manager.status_server.host}/varz"
        anonymous = await treq.get(url, persistent=False)
        self.assertEqual(anonymous.code, 401)
        await anonymous.content()
        response = await treq.get(url, auth=("hm-user", "hm-pass"), persistent=False)
        self.assertEqual(response.code, 200)
        varz = await response.json()
        self.assertGreater(varz["heartbeat_msgs_received"], 0)
        self.assertEqual(varz["type"], "HealthManager")
        self.assertIn("started_apps", varz["total"])
        self.assertNotIn("mbus-s3cret", str(varz))
