"""Unit tests: /metrics in the Prometheus text format, rendered from the same Metrics as
/varz, with Prometheus naming, fixed label sets and no stale gauges."""

import math

import orjson
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from health_manager.constants import HIGH, LOW, NORMAL
from health_manager.interfaces import ILeadership
from health_manager.metrics import Metrics
from spec.unit.view_rig import ViewRig


@implementer(ILeadership)
class Standby:
    role = "standby"
    leader_id = "hm-0"
    epoch = 7
    transitions = 3

    def is_acting(self):
        return False


def scrape(rig):
    code, headers, body = rig.get(b"/metrics")
    assert code == 200, (code, body)
    assert headers[b"content-type"].startswith(b"text/plain; version="), headers
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, body


class MetricsTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ViewRig()

    def healthy_app(self, droplet="0b1c2d3e-app-guid", instances=2):
        rig = self.rig
        rig.desire(droplet, instances=instances)
        rig.heartbeat(*(rig.beat(f"{droplet}-g{i}", i, droplet=droplet)
                        for i in range(instances)))

    def test_prometheus_naming(self):
        """Every family has the health_manager_ prefix, counters end in _total, and no
        label value is an app guid or instance guid."""
        self.healthy_app()
        self.rig.warm_up()
        self.rig.analyze()
        samples, body = scrape(self.rig)
        for name, _labels in samples:
            self.assertTrue(name.startswith("health_manager_"), name)
        types = [line.split()[2:] for line in body.decode().splitlines()
                 if line.startswith("# TYPE ")]
        self.assertGreater(len(types), 20)
        for name, kind in types:
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
            if "second" in name:
                self.assertTrue(name.endswith("_seconds"), name)
        self.assertNotIn(b"0b1c2d3e-app-guid", body)
        self.assertIn(b"# TYPE health_manager_starts_total counter", body)

    def test_varz_and_metrics_show_the_same_counters(self):
        """A counter changed in Metrics appears, with the same value, in /varz and in
        /metrics."""
        self.rig.metrics.droplet_exited_msgs_received = 41
        self.rig.metrics.bulk_api_errors = 3
        varz = orjson.loads(self.rig.get(b"/varz")[2])
        samples, _ = scrape(self.rig)
        self.assertEqual(varz["droplet_exited_msgs_received"], 41)
        self.assertEqual(samples[("health_manager_messages_received_total",
                                  (("subject", "droplet.exited"),))], 41)
        self.assertEqual(varz["bulk_api_errors"], 3)
        self.assertEqual(samples[("health_manager_desired_state_errors_total", ())], 3)

    def test_instance_gauges_absent_before_first_pass_nan_when_not_fresh(self):
        """Instance gauges are absent before an analysis pass, NaN while the actual or
        desired state is not fresh, and numbers only while both are."""
        self.healthy_app(instances=3)
        samples, _ = scrape(self.rig)
        running = ("health_manager_instances", (("state", "running"),))
        self.assertNotIn(running, samples)
        self.assertNotIn(("health_manager_desired_state_age_seconds", ()), samples)
        self.rig.analyze()  # actual state not fresh yet (droplet_lost not passed)
        samples, _ = scrape(self.rig)
        self.assertTrue(math.isnan(samples[running]))
        self.assertEqual(samples[("health_manager_actual_state_fresh", ())], 0)
        self.rig.warm_up()
        self.healthy_app(instances=3)
        self.rig.analyze()
        samples, _ = scrape(self.rig)
        self.assertEqual(samples[running], 3)
        self.assertEqual(samples[("health_manager_actual_state_fresh", ())], 1)
        self.rig.desired.fresh = False
        samples, _ = scrape(self.rig)
        self.assertTrue(math.isnan(samples[running]))
        self.assertEqual(samples[("health_manager_desired_state_fresh", ())], 0)

    def test_desired_state_age(self):
        """desired_state_age_seconds counts from the last complete bulk pass."""
        self.rig.desired.last_success = self.rig.now() - 12
        samples, _ = scrape(self.rig)
        self.assertEqual(samples[("health_manager_desired_state_age_seconds", ())], 12)

    def test_starts_by_reason_and_priority(self):
        """Starts are counted by reason and priority: missing/normal, crashed/low,
        evacuation/high, and flapping restarts as flapping/immediate."""
        metrics = self.rig.metrics
        for priority in (NORMAL, LOW, HIGH, HIGH):
            metrics.count_start(priority)
        metrics.count_start(None)
        samples, _ = scrape(self.rig)

        def starts(reason, priority):
            return samples[("health_manager_starts_total",
                            (("priority", priority), ("reason", reason)))]

        self.assertEqual((starts("missing", "normal"), starts("crashed", "low"),
                          starts("evacuation", "high"), starts("flapping", "immediate")),
                         (1, 1, 2, 1))

    def test_queued_start_counted_when_sent(self):
        """A missing instance's start is counted once it is published by the Nudger."""
        rig = self.rig
        rig.desire("app-1", instances=2)
        rig.warm_up()
        rig.heartbeat(rig.beat("g0", 0))
        rig.analyze()
        self.assertEqual(len(rig.starts()), 1)
        self.assertEqual(rig.metrics.starts, {("missing", "normal"): 1})

    def test_stops_by_reason(self):
        """Stops are labelled by the policy's reason; mixed or unknown reasons are
        unclassified."""
        metrics = Metrics()
        metrics.count_stop("Extra app")
        metrics.count_stop("Extra instance")
        metrics.count_stop("Extra instance, Live version mismatch")
        metrics.count_stop(None)
        self.assertEqual(metrics.stops, {"extra_app": 1, "extra_instance": 1,
                                         "unclassified": 2})

    def test_longest_slice_of_last_pass(self):
        """The longest slice gauge is the longest analysis slice of the last complete
        pass, its final slice included; other tasks do not count."""
        metrics = Metrics()
        metrics.observe_run("droplets_analysis", 0.004)
        metrics.observe_run("droplet_gc", 9.0)
        metrics.observe_run("droplets_analysis slice", 0.007)
        self.assertIsNone(metrics.analysis_longest_slice)
        metrics.publish_realtime(metrics.realtime, 0.02)
        metrics.observe_run("droplets_analysis slice", 0.009)  # the pass's last slice
        self.assertEqual(metrics.analysis_longest_slice, 0.009)
        metrics.observe_run("droplets_analysis", 0.001)
        metrics.publish_realtime(metrics.realtime, 0.001)
        metrics.observe_run("droplets_analysis slice", 0.002)
        self.assertEqual(metrics.analysis_longest_slice, 0.002)
        self.assertEqual(metrics.analysis_slices.count, 5)

    def test_ha_from_leadership(self):
        """HA role, epoch and transitions come from the leadership."""
        rig = ViewRig(leadership=Standby())
        samples, _ = scrape(rig)
        self.assertEqual(samples[("health_manager_ha_role", (("role", "standby"),))], 1)
        self.assertEqual(samples[("health_manager_ha_role", (("role", "single"),))], 0)
        self.assertEqual(samples[("health_manager_ha_epoch", ())], 7)
        self.assertEqual(samples[("health_manager_ha_transitions_total", ())], 3)
        samples, _ = scrape(self.rig)
        self.assertNotIn(("health_manager_ha_epoch", ()), samples)

    def test_nats_figures(self):
        """nats_connected follows the bus; reconnects are the bus's own count."""
        self.rig.bus.reconnects = 2
        samples, _ = scrape(self.rig)
        self.assertEqual(samples[("health_manager_nats_connected", ())], 1)
        self.assertEqual(samples[("health_manager_nats_reconnects_total", ())], 2)
        self.rig.bus.set_connected(False)
        samples, _ = scrape(self.rig)
        self.assertEqual(samples[("health_manager_nats_connected", ())], 0)

    def test_nats_server_label(self):
        """The NATS server the bus is on is the label of nats_server; none while on none."""
        self.rig.bus.server = "nats://nats:***@10.0.0.2:4222"
        samples, _ = scrape(self.rig)
        self.assertEqual(samples[("health_manager_nats_server",
                                  (("server", "nats://nats:***@10.0.0.2:4222"),))], 1)
        self.rig.bus.server = None
        samples, _ = scrape(self.rig)
        self.assertEqual([key for key in samples if key[0] == "health_manager_nats_server"],
                         [])

    def test_metrics_behind_basic_auth(self):
        """/metrics answers 401 without the status credentials."""
        code, _headers, body = self.rig.get(b"/metrics", authorization=b"Basic eDp5")
        self.assertEqual(code, 401)
        self.assertNotIn(b"health_manager_", body)
