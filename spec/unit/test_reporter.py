"""Reporter: healthmanager.status / health / droplet replies (PROTOCOL.md §1.7–§1.9)."""

from twisted.trial.unittest import SynchronousTestCase

from spec.unit.policy_rig import PolicyRig

INBOX = "_INBOX.test"


class ReporterTests(SynchronousTestCase):
    def setUp(self):
        rig = self.rig = PolicyRig(noise=lambda low, high: 0.0)
        rig.desire(instances=2)
        rig.heartbeat(rig.beat("g0", 0, ts=50.5), rig.beat("g1", 1, ts=51.5))

    def ask(self, subject, payload, reply=INBOX):
        self.rig.bus.publish_json(subject, payload, reply=reply)
        return self.rig.bus.published_json(INBOX)

    def test_status_flapping_lists_flapping_indices(self):
        """FLAPPING status lists each flapping index of the version with its since."""
        rig = self.rig
        rig.exited("g1", 1, crash_timestamp=900)
        rig.heartbeat(rig.beat("g1b", 1))
        rig.exited("g1b", 1, crash_timestamp=950)
        replies = self.ask("healthmanager.status",
                           {"droplet": "app-1", "version": "v1", "state": "FLAPPING"})
        self.assertEqual(replies, [{"indices": [{"index": 1, "since": rig.now()}]}])

    def test_status_crashed_lists_crash_entries(self):
        """CRASHED status lists every remembered crash with its crash timestamp."""
        self.rig.exited("g1", 1, crash_timestamp=900)
        replies = self.ask("healthmanager.status", {"droplet": "app-1", "state": "CRASHED"})
        self.assertEqual(replies, [{"instances": [{"instance": "g1", "since": 900}]}])

    def test_status_unknown_droplet_no_reply(self):
        """No reply for an unknown droplet, an unknown state, or no reply subject."""
        self.assertEqual(self.ask("healthmanager.status",
                                  {"droplet": "nope", "state": "CRASHED"}), [])
        self.assertEqual(self.ask("healthmanager.status",
                                  {"droplet": "app-1", "state": "RUNNING"}), [])
        self.assertEqual(self.ask("healthmanager.status",
                                  {"droplet": "app-1", "state": "CRASHED"}, reply=None), [])
        self.assertEqual(self.rig.metrics.healthmanager_status_msgs_received, 3)
        self.assertEqual(self.rig.metrics.rejected_messages, {"healthmanager.status": 1})

    def test_bad_status_payload_rejected(self):
        """A malformed status request gets no reply and is counted."""
        self.rig.bus.publish("healthmanager.status", b"[", reply=INBOX)
        self.ask("healthmanager.status", {"droplet": "app-1", "state": "FLAPPING"})
        self.assertEqual(self.rig.bus.published_json(INBOX), [])
        self.assertEqual(self.rig.metrics.rejected_messages, {"healthmanager.status": 2})

    def test_health_one_reply_per_known_droplet(self):
        """One health reply per known droplet, counting RUNNING indices of that version."""
        rig = self.rig
        rig.desire("app-2", instances=1)
        rig.heartbeat(rig.beat("s", 0, droplet="app-2", state="STARTING"))
        replies = self.ask("healthmanager.health", {"droplets": [
            {"droplet": "app-1", "version": "v1"}, {"droplet": "nope", "version": "v1"},
            {"droplet": "app-2", "version": "v1"}, {"droplet": "app-1", "version": "v9"}]})
        self.assertEqual(replies, [
            {"droplet": "app-1", "version": "v1", "healthy": 2},
            {"droplet": "app-2", "version": "v1", "healthy": 0},
            {"droplet": "app-1", "version": "v9", "healthy": 0}])
        self.assertEqual(rig.metrics.healthmanager_health_request_msgs_received, 1)

    def test_droplet_view_is_clean_json(self):
        """healthmanager.droplet answers a JSON view of each known droplet."""
        replies = self.ask("healthmanager.droplet",
                           {"droplets": [{"droplet": "app-1"}, {"droplet": "nope"}]})
        self.assertEqual(len(replies), 1)
        view = replies[0]
        self.assertEqual((view["id"], view["num_instances"], view["state"],
                          view["live_version"], view["package_state"], view["last_updated"],
                          view["crashes"]), ("app-1", 2, "STARTED", "v1", "STAGED", 100, []))
        self.assertEqual([(i["index"], i["guid"], i["state"]) for i in view["versions"]["v1"]],
                         [(0, "g0", "RUNNING"), (1, "g1", "RUNNING")])
