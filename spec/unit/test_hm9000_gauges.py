"""HM9000's ten gauges (HM9000.md §6) from a hand-built registry: each definition, the
-1 / NaN rule while a state is not fresh, and the pass sliced across reactor turns."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from health_manager.config import Intervals
from health_manager.contracts.hm9000.gauges import GAUGES, NAMES, Hm9000Gauges
from health_manager.freshness import ActualFreshness
from health_manager.metrics import HealthFacts, Metrics
from health_manager.model.desired_app import DesiredApp
from health_manager.model.heartbeat import Heartbeat
from health_manager.model.registry import DropletRegistry
from health_manager.scheduler import Scheduler
from health_manager.testing.desired import FakeDesiredState
from health_manager.web.prometheus import exposition

INTERVALS = Intervals(droplet_lost=30, droplets_analysis=20, desired_state_lost=180)
ZERO = dict.fromkeys(NAMES, 0)
# The scrape-time facts /metrics needs besides the counters: not what the gauges follow.
FACTS = HealthFacts(nats_connected=True, nats_reconnects=0, actual_fresh=True,
                    desired_fresh=True, desired_age=1.0, ha_role="single", ha_epoch=None,
                    ha_transitions=0)


class GaugeRig:
    """A registry built by hand, fresh actual and desired state, and the gauges over it."""

    def __init__(self, slice_size=200, on_run=None):
        self.clock = Clock()
        self.clock.advance(1000)
        self.scheduler = Scheduler(self.clock, on_run=on_run)
        self.registry = DropletRegistry()
        self.freshness = ActualFreshness(self.scheduler, INTERVALS.droplet_lost)
        self.freshness.on_connection_changed(True)
        self.desired = FakeDesiredState()
        self.metrics = Metrics()
        self.gauges = Hm9000Gauges(self.registry, self.scheduler, INTERVALS, self.freshness,
                                   self.desired, self.metrics, slice_size=slice_size)
        self.clock.advance(INTERVALS.droplet_lost)  # the actual state is fresh now

    def now(self):
        return self.clock.seconds()

    def app(self, guid, instances=1, version="v1", state="STARTED", package_state="STAGED"):
        return self.registry.apply_desired(
            DesiredApp(id=guid, state=state, instances=instances, version=version,
                       package_state=package_state, updated_at=0, memory=64), self.now())

    def beat(self, guid, instance, index, version="v1", state="RUNNING"):
        droplet = self.registry.get_or_create(guid, self.now())
        droplet.process_heartbeat(
            Heartbeat(droplet=guid, version=version, instance=instance, index=index,
                      state=state, state_timestamp=self.now()),
            self.now(), INTERVALS.droplet_lost)

    def crash(self, guid, instance, index, version="v1"):
        """`instance` crashed (droplet.exited CRASHED)."""
        droplet = self.registry.get(guid)
        record, held = droplet.process_exit(version, index, instance, self.now())
        droplet.process_exit_crash(record, instance, self.now(), INTERVALS.flapping_timeout,
                                   INTERVALS.flapping_death, self.now(), held)

    def run_pass(self):
        done = self.gauges.update()
        while not done.called:
            self.clock.advance(0)

    def counted(self):
        self.run_pass()
        return self.gauges.values()


class GaugesTestCase(SynchronousTestCase):
    def setUp(self):
        rig = self.rig = GaugeRig()
        self.clock, self.scheduler, self.registry = rig.clock, rig.scheduler, rig.registry
        self.freshness, self.desired, self.metrics = rig.freshness, rig.desired, rig.metrics
        self.gauges = rig.gauges
        self.app, self.beat, self.crash = rig.app, rig.beat, rig.crash
        self.run_pass, self.counted = rig.run_pass, rig.counted

    def assertCounts(self, **expected):
        self.assertEqual(self.counted(), dict(ZERO, **expected))


class DefinitionTests(GaugesTestCase):
    def test_missing_indices_and_apps(self):
        """A desired staged app is desired, its instances desired; an index with no
        instance is missing, and the app is one with missing instances."""
        self.app("a", instances=3)
        self.beat("a", "a0", 0)
        self.beat("a", "a1", 1, state="STARTING")
        self.app("b", instances=2)
        self.beat("b", "b0", 0)
        self.beat("b", "b1", 1)
        self.assertCounts(NumberOfAppsWithAllInstancesReporting=1,
                          NumberOfAppsWithMissingInstances=1, NumberOfMissingIndices=1,
                          NumberOfRunningInstances=4, NumberOfDesiredApps=2,
                          NumberOfDesiredInstances=5)

    def test_running_instances_count_duplicates_and_extras(self):
        """STARTING and RUNNING instances all count, a duplicate on an index and an extra
        index too; an extra index of a desired version is not an undesired app."""
        self.app("a", instances=2)
        self.beat("a", "a0", 0)
        self.beat("a", "a0-dup", 0)
        self.beat("a", "a1", 1, state="STARTING")
        self.beat("a", "a2", 2)
        self.assertCounts(NumberOfAppsWithAllInstancesReporting=1, NumberOfRunningInstances=4,
                          NumberOfDesiredApps=1, NumberOfDesiredInstances=2)

    def test_undesired_running_apps(self):
        """An app version not desired with a live instance is an undesired running app:
        a STOPPED app, a FAILED package, an old version, an app the CC no longer lists,
        an app never described. An undesired version without live instances is not."""
        self.app("stopped", state="STOPPED")
        self.beat("stopped", "s0", 0)
        self.app("failed", package_state="FAILED")
        self.beat("failed", "f0", 0)
        self.app("upgraded", version="v2")
        self.beat("upgraded", "old0", 0, version="v1")
        self.beat("upgraded", "new0", 0, version="v2")
        self.beat("unknown", "u0", 0)
        self.app("quiet", state="STOPPED")
        self.app("gone")
        self.clock.advance(INTERVALS.desired_state_lost - 10)
        self.app("stopped", state="STOPPED")
        self.app("failed", package_state="FAILED")
        self.app("upgraded", version="v2")
        self.app("quiet", state="STOPPED")
        self.clock.advance(11)  # "gone" is no longer described
        for guid, instance, version in (("stopped", "s0", "v1"), ("failed", "f0", "v1"),
                                        ("upgraded", "old0", "v1"), ("upgraded", "new0", "v2"),
                                        ("unknown", "u0", "v1")):
            self.beat(guid, instance, 0, version=version)
        self.beat("gone", "g0", 0)
        self.assertCounts(NumberOfUndesiredRunningApps=5, NumberOfRunningInstances=6,
                          NumberOfAppsWithAllInstancesReporting=1, NumberOfDesiredApps=1,
                          NumberOfDesiredInstances=1)

    def test_pending_apps_are_only_pending(self):
        """A PENDING app counts only as pending staging: not desired, never missing."""
        self.app("staging", instances=3, package_state="PENDING")
        self.beat("staging", "p0", 0)
        self.assertCounts(NumberOfDesiredAppsPendingStaging=1, NumberOfRunningInstances=1)

    def test_crashed_indices_and_instances(self):
        """An index whose instance crashed and that nothing holds is a crashed index (it
        reports, so it is not missing); the crashed instance counts while still heard. A
        crashed index another instance holds is not crashed."""
        self.app("a", instances=3)
        self.beat("a", "a0", 0)
        self.beat("a", "a1", 1)
        self.beat("a", "a2", 2)
        self.beat("a", "a1-dup", 1)
        self.crash("a", "a0", 0)
        self.crash("a", "a1", 1)  # its duplicate takes the index over
        self.assertCounts(NumberOfAppsWithAllInstancesReporting=1, NumberOfRunningInstances=2,
                          NumberOfCrashedInstances=2, NumberOfCrashedIndices=1,
                          NumberOfDesiredApps=1, NumberOfDesiredInstances=3)

    def test_crashed_instances_counted_while_heard(self):
        """A crashed instance its DEA keeps listing (CRASHED heartbeats) counts; one not
        heard for droplet_lost is gone, while its index stays crashed."""
        self.app("a", instances=2)
        self.beat("a", "a0", 0)
        self.beat("a", "a1", 1)
        self.crash("a", "a0", 0)
        self.crash("a", "a1", 1)
        self.clock.advance(INTERVALS.droplet_lost + 1)
        self.beat("a", "a0", 0, state="CRASHED")  # still listed by its DEA
        self.assertCounts(NumberOfAppsWithAllInstancesReporting=1, NumberOfCrashedInstances=1,
                          NumberOfCrashedIndices=2, NumberOfDesiredApps=1,
                          NumberOfDesiredInstances=2)

    def test_silent_instances_are_missing(self):
        """An instance not heard for droplet_lost no longer runs: its index is missing."""
        self.app("a", instances=2)
        self.beat("a", "a0", 0)
        self.beat("a", "a1", 1)
        self.clock.advance(INTERVALS.droplet_lost + 1)
        self.beat("a", "a0", 0)
        self.assertCounts(NumberOfAppsWithMissingInstances=1, NumberOfMissingIndices=1,
                          NumberOfRunningInstances=1, NumberOfDesiredApps=1,
                          NumberOfDesiredInstances=2)

    def test_app_of_zero_instances_reports_all(self):
        """A desired app scaled to 0 has all (no) instances reporting, as in HM9000."""
        self.app("zero", instances=0)
        self.assertCounts(NumberOfAppsWithAllInstancesReporting=1, NumberOfDesiredApps=1)


class FreshnessTests(GaugesTestCase):
    def setUp(self):
        super().setUp()
        self.app("a", instances=2)
        self.beat("a", "a0", 0)

    def assertUnknown(self):
        self.assertIsNone(self.gauges.values())
        varz = self.metrics.varz()
        self.assertEqual({name: varz[name] for name in NAMES}, dict.fromkeys(NAMES, -1))
        text = exposition(self.metrics.families(FACTS)).decode()
        for _name, metric, _help in GAUGES:
            self.assertIn(f"health_manager_{metric} NaN\n", text)

    def test_unknown_before_the_first_pass(self):
        """-1 in /varz and NaN in /metrics until a pass has counted."""
        self.gauges.prepare()
        self.assertUnknown()

    def test_counts_in_varz_and_metrics_once_fresh(self):
        """A fresh pass shows integers under HM9000's names in /varz and as
        health_manager_hm9000_* gauges in /metrics."""
        self.gauges.prepare()
        self.run_pass()
        varz = self.metrics.varz()
        self.assertEqual(varz["NumberOfMissingIndices"], 1)
        self.assertEqual(varz["NumberOfDesiredInstances"], 2)
        self.assertIsInstance(varz["NumberOfRunningInstances"], int)
        text = exposition(self.metrics.families(FACTS)).decode()
        self.assertIn("health_manager_hm9000_number_of_missing_indices 1.0\n", text)
        self.assertIn("# TYPE health_manager_hm9000_number_of_desired_instances gauge", text)

    def test_unknown_while_actual_state_not_fresh(self):
        """Actual state not fresh (bus lost): unknown, though a pass counted before."""
        self.gauges.prepare()
        self.run_pass()
        self.freshness.on_connection_changed(False)
        self.assertUnknown()

    def test_unknown_while_desired_state_not_fresh(self):
        """Desired state not fresh: unknown."""
        self.gauges.prepare()
        self.run_pass()
        self.desired.fresh = False
        self.assertUnknown()

    def test_pass_begun_while_not_fresh_is_not_shown(self):
        """A pass that began before both states were fresh counts nothing: the gauges
        stay unknown until the next pass, even once fresh."""
        self.gauges.prepare()
        self.desired.fresh = False
        self.run_pass()
        self.desired.fresh = True
        self.assertUnknown()
        self.run_pass()
        self.assertEqual(self.gauges.values()["NumberOfMissingIndices"], 1)

    def test_hm2_metrics_have_no_hm9000_gauges(self):
        """Without the hm9000 gauges wired (cc_protocol hm2), /varz and /metrics lack them."""
        metrics = Metrics()
        self.assertEqual(set(NAMES) & set(metrics.varz()), set())
        self.assertNotIn("hm9000", exposition(metrics.families(FACTS)).decode())


class PassTests(GaugesTestCase):
    def setUp(self):
        super().setUp()
        self.gauges = Hm9000Gauges(self.registry, self.scheduler, INTERVALS, self.freshness,
                                   self.desired, self.metrics, slice_size=2)
        self.rig.gauges = self.gauges

    def test_pass_is_sliced_across_reactor_turns(self):
        """slice_size droplets per reactor turn: 5 droplets take 3 slices, the first at
        once and the others each a later turn, and the gauges change only when the pass
        ends."""
        ran = []
        rig = GaugeRig(slice_size=2, on_run=lambda name, _seconds: ran.append(name))
        for n in range(5):
            rig.app(f"app-{n}")
        self.clock, self.gauges = rig.clock, rig.gauges
        done = self.gauges.update()
        self.assertFalse(done.called)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the next slice
        self.assertIsNone(self.gauges.values())
        self.clock.advance(0)
        self.assertTrue(done.called)
        self.assertEqual(ran, ["hm9000_gauges slice"] * 2)
        self.assertEqual(self.gauges.values()["NumberOfDesiredApps"], 5)

    def test_droplets_removed_or_added_mid_pass(self):
        """A pass counts the droplets of its snapshot that are still registered."""
        for n in range(4):
            self.app(f"app-{n}")
        done = self.gauges.update()
        self.registry.remove("app-3")
        self.app("app-new")
        while not done.called:
            self.clock.advance(0)
        self.assertEqual(self.gauges.values()["NumberOfDesiredApps"], 3)

    def test_periodic_every_droplets_analysis(self):
        """prepare() runs a pass every intervals.droplets_analysis seconds."""
        self.gauges.prepare()
        self.scheduler.start()
        self.app("a")
        self.clock.advance(INTERVALS.droplets_analysis - 1)
        self.assertIsNone(self.gauges.values())
        self.clock.advance(1)
        self.assertEqual(self.gauges.values()["NumberOfDesiredApps"], 1)
        self.app("b")
        self.clock.advance(INTERVALS.droplets_analysis)
        self.assertEqual(self.gauges.values()["NumberOfDesiredApps"], 2)

    def test_overlapping_update_joins_the_running_pass(self):
        """update() during a pass returns that pass's Deferred: one walk at a time."""
        for n in range(3):
            self.app(f"app-{n}")
        first = self.gauges.update()
        self.assertIs(self.gauges.update(), first)
        while not first.called:
            self.clock.advance(0)

    def test_stop_abandons_the_pass(self):
        """stop() fires the running pass's Deferred and cancels its next slice."""
        for n in range(5):
            self.app(f"app-{n}")
        done = self.gauges.update()
        self.gauges.stop()
        self.assertTrue(done.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.gauges.values())

    def test_stop_lets_the_scheduler_stop(self):
        """A pass cut by Scheduler.stop() (its next slice cancelled) would keep idle()
        waiting for ever; stop() ends it, so stopping the health manager does not hang."""
        for n in range(5):
            self.app(f"app-{n}")
        self.scheduler.start()
        self.scheduler.track(self.gauges.update())
        idle = self.scheduler.stop()
        self.assertFalse(idle.called)
        self.gauges.stop()
        self.assertTrue(idle.called)

    def test_a_failing_pass_is_logged_and_unknown(self):
        """A droplet that breaks the count makes that pass unknown, logged; the next one
        counts again."""
        self.app("a")
        self.run_pass()
        self.registry.get("a").versions["v1"] = None  # not a mapping of slots
        self.run_pass()
        self.assertIsNone(self.gauges.values())
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        del self.registry.get("a").versions["v1"]
        self.run_pass()
        self.assertEqual(self.gauges.values()["NumberOfDesiredApps"], 1)


# One random event on a small foundation: (kind, app, index, instance suffix, version).
EVENTS = st.lists(st.tuples(
    st.sampled_from(["app", "stopped", "pending", "failed", "beat", "starting", "crash",
                     "wait"]),
    st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.sampled_from(["x", "y"]),
    st.sampled_from(["v1", "v2"])), max_size=30)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(EVENTS)
    def test_counts_are_consistent_and_independent_of_slicing(self, events):
        """For any foundation: every desired staged app is one of all-reporting or
        missing-instances; missing indices are desired ones, at least one per app with
        missing instances; and slicing the pass changes nothing."""
        results = []
        for slice_size in (1, 200):
            case = GaugeRig(slice_size)
            for kind, guid, index, suffix, version in events:
                instance = f"{guid}{index}{suffix}"
                if kind in ("app", "stopped", "pending", "failed"):
                    case.app(guid, instances=index, version=version,
                             state="STOPPED" if kind == "stopped" else "STARTED",
                             package_state={"pending": "PENDING",
                                            "failed": "FAILED"}.get(kind, "STAGED"))
                elif kind in ("beat", "starting"):
                    case.beat(guid, instance, index, version=version,
                              state="STARTING" if kind == "starting" else "RUNNING")
                elif kind == "crash" and guid in case.registry:
                    case.crash(guid, instance, index, version=version)
                elif kind == "wait":
                    case.clock.advance(10 * index)
            results.append(case.counted())
        counts = results[0]
        self.assertEqual(results[1], counts)
        self.assertEqual(counts["NumberOfAppsWithAllInstancesReporting"]
                         + counts["NumberOfAppsWithMissingInstances"],
                         counts["NumberOfDesiredApps"])
        self.assertLessEqual(counts["NumberOfMissingIndices"],
                             counts["NumberOfDesiredInstances"])
        self.assertGreaterEqual(counts["NumberOfMissingIndices"],
                                counts["NumberOfAppsWithMissingInstances"])
