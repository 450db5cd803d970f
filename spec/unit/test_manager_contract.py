"""The Manager speaks exactly one contract, the one `cc_protocol` names (issue 19): its
starts and stops, its CC's policy parameters and desired-state reading, its answers."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import LOW
from health_manager.testing.orders import start_order
from spec.unit.test_manager_ha import manager

HM9000 = {"cc_protocol": "hm9000",
          "bulk_api": {"host": "h", "user": "bulk_api", "password": "secret"},
          "hm9000": {"api_port": 0, "api_user": "internal", "api_password": "secret"}}


class ContractSelectionTests(SynchronousTestCase):
    def test_hm2_by_default(self):
        hm, bus = manager()
        hm.nudger.queue_start("a", 0, LOW, lambda: start_order("a"))
        self.assertEqual(len(bus.published_json("health.start")), 1)
        self.assertEqual(bus.published_json("hm9000.start"), [])
        self.assertIsNotNone(hm.reporter)
        self.assertIsNone(hm.hm9000_gauges)
        self.assertFalse(hm.contract.policy.restart_only_index_zero_while_app_down)

    def test_hm9000_speaks_only_hm9000(self):
        hm, bus = manager(**HM9000)
        hm.nudger.queue_start("a", 0, LOW, lambda: start_order("a"))
        [start] = bus.published_json("hm9000.start")
        self.assertEqual(set(start), {"message_id", "droplet", "version", "instance_index"})
        self.assertEqual(bus.published_json("health.start"), [])
        self.assertIsNone(hm.reporter)  # no healthmanager.* answers: HM9000 gave none
        self.assertIsNotNone(hm.hm9000_gauges)
        self.assertTrue(hm.contract.policy.replace_evacuating_instances)
        self.assertFalse(hm.contract.fetch_user_counts)

    def test_configured_subjects(self):
        raw = dict(HM9000, hm9000=dict(HM9000["hm9000"], start_subject="x.start",
                                       stop_subject="x.stop"))
        hm, bus = manager(**raw)
        hm.nudger.queue_start("a", 0, LOW, lambda: start_order("a"))
        self.assertEqual(len(bus.published_json("x.start")), 1)
        self.assertEqual(hm.contract.stop_subject, "x.stop")
