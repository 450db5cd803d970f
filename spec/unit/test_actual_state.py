"""ActualState: validation and counting of dea.heartbeat, droplet.exited, droplet.updated."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import RUNNING
from spec.unit.policy_rig import PolicyRig


class HeartbeatTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig(max_heartbeat_entries=3)

    def test_bad_entries_skipped_good_ones_applied(self):
        """A bad entry is counted and skipped; the other entries of the message apply."""
        rig = self.rig
        bad = dict(rig.beat("g1", 1), index=True)
        rig.heartbeat(rig.beat("g0", 0), bad, dict(rig.beat("g2", 2), state_timestamp=None))
        droplet = rig.registry.get("app-1")
        self.assertEqual(droplet.find_instance("v1", 0).state, RUNNING)
        self.assertIsNone(droplet.find_instance("v1", 1))
        self.assertEqual(rig.metrics.skipped_entries, {"dea.heartbeat": 2})
        self.assertEqual(rig.metrics.heartbeat_msgs_received, 1)
        self.assertEqual(rig.metrics.instance_heartbeats_received, 1)

    def test_bad_messages_rejected_whole(self):
        """Invalid JSON, a non-object, a missing droplets array or too many entries reject
        the message, counted once each."""
        rig = self.rig
        rig.bus.publish("dea.heartbeat", b"{nope")
        rig.bus.publish_json("dea.heartbeat", [1])
        rig.bus.publish_json("dea.heartbeat", {"dea": "d"})
        rig.heartbeat(*[rig.beat(f"g{i}", i) for i in range(4)])
        self.assertEqual(rig.metrics.rejected_messages, {"dea.heartbeat": 4})
        self.assertEqual(len(rig.registry), 0)

    def test_heartbeat_opens_freshness_window(self):
        """A heartbeat counts as proof of connection for actual-state freshness."""
        rig = self.rig
        rig.bus.set_connected(False)
        rig.heartbeat(rig.beat("g0", 0))
        rig.advance(30)
        self.assertTrue(rig.freshness.is_fresh())
        rig.bus.set_connected(True)
        self.assertTrue(rig.freshness.is_fresh())
        rig.bus.set_connected(False)
        self.assertFalse(rig.freshness.is_fresh())


class ExitedAndUpdatedTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig()

    def test_crashed_exit_without_crash_timestamp_rejected(self):
        """A CRASHED exit must carry a numeric crash_timestamp."""
        rig = self.rig
        rig.bus.publish_json("droplet.exited", {"droplet": "a", "version": "v", "instance": "g",
                                                "index": 0, "reason": "CRASHED"})
        rig.bus.publish_json("droplet.exited", {"droplet": "a", "version": "v", "instance": "g",
                                                "index": "0", "reason": "STOPPED"})
        self.assertEqual(rig.metrics.rejected_messages, {"droplet.exited": 2})
        self.assertEqual(rig.metrics.droplet_exited_msgs_received, 2)
        self.assertEqual(rig.starts(), [])

    def test_stopped_exit_marks_down_and_sends_nothing(self):
        """A STOPPED exit marks the instance DOWN and sends no request."""
        rig = self.rig
        rig.desire(instances=1)
        rig.heartbeat(rig.beat("g0", 0))
        rig.exited("g0", 0, reason="STOPPED")
        self.assertEqual(rig.registry.get("app-1").find_instance("v1", 0).state, "DOWN")
        self.assertEqual(rig.bus.published_json("health.*"), [])

    def test_updated_without_droplet_rejected(self):
        """droplet.updated without a string droplet is rejected and triggers nothing."""
        rig = self.rig
        rig.bus.publish_json("droplet.updated", {"droplet": 5})
        self.assertEqual(rig.metrics.rejected_messages, {"droplet.updated": 1})
        self.assertEqual(rig.metrics.droplet_updated_msgs_received, 1)
        self.assertEqual(rig.desired.refresh_calls, 0)
