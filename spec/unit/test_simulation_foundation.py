"""The foundation on InMemoryBus + task.Clock: scenario, faults and the healthy verdict."""

import random

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import build_config
from health_manager.simulation.certificates import make_certificates
from health_manager.simulation.foundation import (
    EVACUATE_BY_EXITS_AND_HEARTBEATS,
    EVACUATE_BY_HEARTBEATS,
    Foundation,
    Scenario,
    demo_config,
    hm9000_demo_config,
)
from health_manager.simulation.heartbeats import NatsHeartbeats
from health_manager.testing.bus import InMemoryBus


class FoundationTests(SynchronousTestCase):
    def make(self, **scenario):
        self.clock = task.Clock()
        self.bus = InMemoryBus(self.clock)
        self.bus.start()
        defaults = dict(apps=10, instances=2, crashy=0.2, flapping=0.1, missing=0.0, deas=3)
        defaults.update(scenario)
        foundation = Foundation(self.clock, self.bus, Scenario(**defaults), random.Random(4))
        self.successResultOf(foundation.start())
        self.addCleanup(foundation.stop)
        return foundation

    def test_populate_starts_every_instance(self):
        """With nothing missing, every desired instance runs after the startup delay."""
        foundation = self.make()
        foundation.populate()
        self.clock.advance(1)
        snapshot = foundation.snapshot()
        self.assertEqual((snapshot.apps, snapshot.flapping_apps), (10, 1))
        self.assertEqual((snapshot.desired, snapshot.running), (18, 18))
        self.assertTrue(snapshot.healthy)

    def test_instances_spread_over_deas(self):
        """Instances are placed on the least-loaded DEA, so DEAs get even shares."""
        foundation = self.make(flapping=0, crashy=0)
        foundation.populate()
        self.assertEqual(sorted(len(d.instances) for d in foundation.deas), [6, 7, 7])

    def test_missing_instances_make_it_unhealthy(self):
        """Instances left out at start count as missing."""
        foundation = self.make(missing=0.5, flapping=0)
        foundation.populate()
        self.clock.advance(1)
        snapshot = foundation.snapshot()
        self.assertGreater(snapshot.missing, 0)
        self.assertFalse(snapshot.healthy)

    def test_crash_random_reports_exit(self):
        """crash_random crashes one RUNNING instance, reported on droplet.exited."""
        foundation = self.make(flapping=0, crashy=0)
        foundation.populate()
        self.clock.advance(1)
        guid = foundation.crash_random()
        self.assertEqual([e["instance"] for e in self.bus.published_json("droplet.exited")],
                         [guid])
        self.assertEqual(foundation.snapshot().missing, 1)

    def test_health_start_heals(self):
        """A health.start the CC accepts brings the missing index back."""
        foundation = self.make(flapping=0, crashy=0, apps=1, instances=1)
        foundation.populate()
        self.clock.advance(1)
        foundation.kill_random()
        app = foundation.cc.apps["app-0000"]
        self.bus.publish_json("health.start", {
            "droplet": app.guid, "version": app.version, "indices": [0],
            "running": {app.version: 0}, "last_updated": 0, "flapping": False})
        self.clock.advance(1)
        self.assertTrue(foundation.snapshot().healthy)

    def test_evacuate_one_keeps_a_dea(self):
        """evacuate_one evacuates DEAs but never the last active one."""
        foundation = self.make(deas=2)
        self.assertIsNotNone(foundation.evacuate_one())
        self.assertIsNone(foundation.evacuate_one())
        self.assertEqual(foundation.snapshot().deas_active, 1)

    def test_calm_down_stops_crashy_apps(self):
        """After calm_down crashy apps keep running."""
        foundation = self.make(flapping=0, crashy=1.0)
        foundation.populate()
        self.clock.advance(1)
        foundation.calm_down()
        self.clock.advance(60)
        self.assertEqual(foundation.snapshot().crashes, 0)

    def test_demo_config_is_valid(self):
        """The demo configuration passes the health manager's validation without warnings."""
        config, warnings = build_config(demo_config("nats://127.0.0.1:4222",
                                                    "http://127.0.0.1:8181"), environ={})
        self.assertEqual(warnings, [])
        self.assertEqual(config.intervals.droplet_lost, 3)


class Hm9000FoundationTests(SynchronousTestCase):
    """A foundation whose CC speaks HM9000's contract."""

    def make(self, https_heartbeats=None, **scenario):
        self.clock = task.Clock()
        self.bus = InMemoryBus(self.clock)
        self.bus.start()
        defaults = dict(apps=1, instances=2, crashy=0, flapping=0, missing=0.0, deas=4)
        defaults.update(scenario)
        foundation = Foundation(self.clock, self.bus, Scenario(**defaults), random.Random(4),
                                cc_protocol="hm9000", https_heartbeats=https_heartbeats)
        self.successResultOf(foundation.start())
        self.addCleanup(foundation.stop)
        foundation.populate()
        self.clock.advance(1)
        return foundation

    def hm9000_start(self, app, index):
        self.bus.publish_json("hm9000.start", {
            "message_id": "m", "droplet": app.guid, "version": app.version,
            "instance_index": index})

    def test_hm9000_start_heals(self):
        """An hm9000.start the CC accepts brings the missing index back."""
        foundation = self.make()
        foundation.kill_random()
        app = foundation.cc.apps["app-0000"]
        missing = {0, 1} - {i.index for dea in foundation.deas for i in dea.live_instances()}
        self.hm9000_start(app, missing.pop())
        self.clock.advance(1)
        self.assertTrue(foundation.snapshot().healthy)
        self.assertEqual(foundation.snapshot().starts_accepted, 1)

    def test_every_other_dea_heartbeats_through_the_factory(self):
        """https_heartbeats(uuid) makes the senders of the odd-numbered DEAs."""
        asked = []

        def https_heartbeats(uuid):
            asked.append(uuid)
            # Any IHeartbeatSender will do here; the HTTPS one needs a real reactor.
            return NatsHeartbeats(self.bus)

        foundation = self.make(https_heartbeats=https_heartbeats)
        self.assertEqual(asked, ["1-dea01", "3-dea03"])
        self.assertEqual(len(foundation.https_senders), 2)

    def test_evacuation_with_heartbeats_is_replaced_then_stopped(self):
        """The HM9000 way: the DEA heartbeats EVACUATING until a replacement runs and
        the evacuating instance is stopped as a duplicate; then it leaves."""
        foundation = self.make(instances=1)
        uuid = foundation.evacuate_one(EVACUATE_BY_HEARTBEATS)
        [dea] = [d for d in foundation.deas if d.uuid == uuid]
        [evacuating] = dea.instances.values()
        self.assertEqual(evacuating.state, "EVACUATING")
        self.assertFalse(foundation.snapshot().healthy)
        app = foundation.cc.apps["app-0000"]
        placed_before = self.bus.published_json(f"dea.{uuid}.start")
        self.hm9000_start(app, 0)
        self.clock.advance(1)
        self.assertTrue(foundation.snapshot().healthy)
        # The CC placed it elsewhere: the evacuating DEA said dea.shutdown.
        self.assertEqual(self.bus.published_json(f"dea.{uuid}.start"), placed_before)
        self.assertEqual(evacuating.state, "EVACUATING")
        self.bus.publish_json("hm9000.stop", {
            "message_id": "m", "droplet": app.guid, "version": app.version,
            "instance_guid": evacuating.guid, "instance_index": 0, "is_duplicate": True})
        self.assertFalse(dea.active)
        self.assertTrue(foundation.snapshot().healthy)

    def test_evacuation_until_june_2016_also_announces_exits(self):
        """Dec 2013 - Jun 2016: a droplet.exited DEA_EVACUATION per instance, and the
        instances stay, EVACUATING, until stopped."""
        foundation = self.make(instances=1)
        uuid = foundation.evacuate_one(EVACUATE_BY_EXITS_AND_HEARTBEATS)
        [dea] = [d for d in foundation.deas if d.uuid == uuid]
        [evacuating] = dea.instances.values()
        self.assertEqual([(e["instance"], e["reason"])
                          for e in self.bus.published_json("droplet.exited")],
                         [(evacuating.guid, "DEA_EVACUATION")])
        self.assertEqual(evacuating.state, "EVACUATING")

    def test_deas_heartbeat_when_empty(self):
        """HM9000-era DEAs heartbeat with no instance too."""
        foundation = self.make(apps=1, instances=1)
        self.clock.advance(1)
        empty = {dea.uuid for dea in foundation.deas if not dea.instances}
        self.assertTrue(empty)
        self.assertEqual({b["dea"] for b in self.bus.published_json("dea.heartbeat")
                          if not b["droplets"]}, empty)

    def test_hm9000_demo_config_is_valid(self):
        """The hm9000 demo configuration passes the health manager's validation without
        warnings: the HM9000 contract, the bulk API's credentials from the config, the
        listener on the given port with the simulation's certificates."""
        files = make_certificates(self.mktemp())
        config, warnings = build_config(hm9000_demo_config(
            "nats://127.0.0.1:4222", "http://127.0.0.1:8181", "bulk_api", "secret", 5335,
            files), environ={})
        self.assertEqual(warnings, [])
        self.assertEqual((config.cc_protocol, config.bulk_api.user), ("hm9000", "bulk_api"))
        self.assertEqual((config.hm9000.heartbeat_port, config.hm9000.ssl.ca_file),
                         (5335, files["ca_file"]))

    def test_unknown_evacuation_refused(self):
        with self.assertRaises(ValueError):
            self.make().evacuate_one("teleport")
