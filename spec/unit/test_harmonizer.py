"""The policy (PROTOCOL.md §5 and DESIGN.md §6), driven through the bus like production."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import FLAPPING, STOPPED
from spec.unit.policy_rig import PolicyRig


def start(index, running, version="v1", flapping=False, droplet="app-1"):
    return {"droplet": droplet, "last_updated": 100, "version": version, "indices": [index],
            "running": running, "flapping": flapping}


def stop(instances, running, version="v1", droplet="app-1"):
    return {"droplet": droplet, "last_updated": 100, "instances": instances,
            "running": running, "version": version}


class MissingInstanceTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig()

    def test_missing_index_started_at_normal_priority_after_grace(self):
        """A missing index of a STARTED app gets a start once droplet_lost has passed."""
        rig = self.rig
        rig.desire(instances=2)
        rig.heartbeat(rig.beat("g0", 0))
        rig.advance(10)
        rig.analyze()
        self.assertEqual(rig.starts(), [])
        rig.advance(20)
        rig.heartbeat(rig.beat("g0", 0))
        rig.analyze()
        self.assertEqual(rig.starts(), [start(1, {"v1": 1})])

    def test_missing_check_waits_droplet_lost_between_checks(self):
        """After a missing check found missing indices, the next waits droplet_lost."""
        rig = self.rig
        rig.desire(instances=1)
        rig.advance(30)
        rig.analyze()
        rig.advance(20)
        rig.analyze()
        self.assertEqual(len(rig.starts()), 1)
        rig.advance(10)
        rig.analyze()
        self.assertEqual(len(rig.starts()), 2)

    def test_vanished_instance_marked_down_before_missing_check(self):
        """An instance that stopped heartbeating is DOWN before its start: running excludes it."""
        rig = self.rig
        rig.desire(instances=2)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1))
        rig.advance(31)
        rig.heartbeat(rig.beat("g0", 0))
        rig.analyze()
        self.assertEqual(rig.starts(), [start(1, {"v1": 1})])

    def test_no_missing_start_until_actual_state_fresh(self):
        """Missing starts wait until NATS has been connected for droplet_lost seconds."""
        rig = self.rig
        rig.desire(instances=1)
        rig.advance(25)
        rig.bus.set_connected(False)
        rig.bus.set_connected(True)
        rig.advance(10)
        rig.analyze()
        self.assertEqual(rig.starts(), [])
        rig.advance(30)
        rig.analyze()
        self.assertEqual(rig.starts(), [start(0, {"v1": 0})])

    def test_no_missing_start_while_desired_stale(self):
        """No missing starts while the desired state is not fresh."""
        rig = self.rig
        rig.desire(instances=1)
        rig.desired.fresh = False
        rig.advance(30)
        rig.analyze()
        self.assertEqual(rig.starts(), [])

    def test_no_missing_start_for_droplet_updated_until_refreshed(self):
        """A droplet marked stale by droplet.updated gets no missing start."""
        rig = self.rig
        rig.desire(instances=1)
        rig.bus.publish_json("droplet.updated", {"droplet": "app-1"})
        rig.advance(30)
        rig.analyze()
        self.assertEqual(rig.starts(), [])


class ExtraInstanceTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig()

    def test_extra_index_stop_counts_the_stopped_instance(self):
        """An extra index is stopped with `running` still counting it, so the CC acts."""
        rig = self.rig
        rig.desire(instances=2)
        rig.settle(rig.beat("g0", 0), rig.beat("g1", 1), rig.beat("g2", 2))
        rig.desire(instances=2)
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"g2": "v1"}, {"v1": 3})])
        self.assertEqual(rig.starts(), [])

    def test_extra_is_the_high_index_whatever_order_it_was_heard_in(self):
        """Wanting 2 of indices 0, 1, 2, with index 2 heard first (after an HM restart, before
        the first bulk pass): index 2 is stopped, never wanted index 1 (issue 9, found with
        the CC's own respondent code; HM 2.0 kept slots in insertion order)."""
        rig = self.rig
        rig.settle(rig.beat("e2-0", 0), rig.beat("e2-2", 2), rig.beat("e2-1", 1))
        rig.desire(instances=2)
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"e2-2": "v1"}, {"v1": 3})])

    def test_stopped_app_instances_stopped(self):
        """Every live instance of a STOPPED app is stopped."""
        rig = self.rig
        rig.desire(instances=1, state=STOPPED)
        rig.heartbeat(rig.beat("g0", 0))
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"g0": "v1"}, {"v1": 1})])

    def test_old_version_instance_stopped(self):
        """An instance of a version other than the live one is stopped."""
        rig = self.rig
        rig.desire(instances=1, version="v2")
        rig.settle(rig.beat("new", 0, version="v2"), rig.beat("old", 0, version="v1"))
        rig.desire(instances=1, version="v2")
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"old": "v1"}, {"v2": 1, "v1": 1}, version="v2")])

    def test_duplicate_guid_stopped_from_heartbeat(self):
        """A second instance on a proven index is stopped as soon as it is heard, with
        `running` counting both."""
        rig = self.rig
        rig.desire(instances=1)
        rig.settle(rig.beat("a", 0))
        rig.desire(instances=1)
        rig.heartbeat(rig.beat("b", 0), rig.beat("a", 0))
        self.assertEqual(rig.stops(), [stop({"b": "v1"}, {"v1": 2})])

    def test_duplicate_stop_names_the_same_instance_every_time(self):
        """Two instances heartbeating in turn on one index: every stop names the newcomer,
        never the other (HM 2.0 alternated and could stop both)."""
        rig = self.rig
        rig.desire(instances=1)
        rig.settle(rig.beat("a", 0))
        for _ in range(4):
            rig.desire(instances=1)
            rig.heartbeat(rig.beat("b", 0), dea="dea-2")
            rig.heartbeat(rig.beat("a", 0))
            rig.analyze()
            rig.advance(1)
        self.assertEqual({guid for s in rig.stops() for guid in s["instances"]}, {"b"})

    def test_duplicate_plus_missing_index_heals(self):
        """Desired 3: index 0 runs twice, index 1 once, index 2 is missing. The start for
        index 2 counts held indices (running 2 < 3, so the CC acts); the duplicate's stop
        waits until index 2 runs, then leaves with running 4 (remaining 3, so the CC acts).
        HM 2.0 sent running 3 with both and the CC refused both for ever (issue 9)."""
        rig = self.rig
        rig.desire(instances=3)
        rig.settle(rig.beat("alpha", 0), rig.beat("one", 1))
        rig.heartbeat(rig.beat("beta", 0), dea="dea-2")
        rig.desire(instances=3)
        rig.analyze()
        self.assertEqual(rig.starts(), [start(2, {"v1": 2})])
        self.assertEqual(rig.stops(), [])
        rig.advance(rig.intervals.droplet_lost)
        rig.desire(instances=3)
        rig.settle(rig.beat("alpha", 0), rig.beat("one", 1), rig.beat("two", 2))
        rig.heartbeat(rig.beat("beta", 0), dea="dea-2")
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"beta": "v1"}, {"v1": 4})])

    def test_no_duplicate_stop_while_droplet_stale(self):
        """No duplicate-guid stop for a droplet whose desired state awaits a refresh."""
        rig = self.rig
        rig.heartbeat(rig.beat("a", 0), rig.beat("b", 0), rig.beat("a", 0))
        self.assertEqual(rig.stops(), [])

    def test_no_extra_stop_while_desired_stale(self):
        """No extra-instance stops while the desired state is not fresh."""
        rig = self.rig
        rig.desire(instances=1)
        rig.desired.fresh = False
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1))
        rig.analyze()
        self.assertEqual(rig.stops(), [])

    def test_extra_app_running_instances_stopped(self):
        """An app not refreshed for desired_state_lost has its live instances stopped."""
        rig = self.rig
        rig.desire(instances=2)
        rig.advance(181)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1, state="STARTING"))
        rig.analyze()
        self.assertEqual(rig.stops(), [stop({"g0": "v1", "g1": "v1"}, {"v1": 2})])
        self.assertEqual(rig.starts(), [])

    def test_extra_app_without_instances_sends_no_stop(self):
        """An extra app with no live instance gets no (empty) stop."""
        rig = self.rig
        rig.desire(instances=1)
        rig.advance(181)
        rig.analyze()
        self.assertEqual(rig.stops(), [])
        self.assertEqual(rig.bus.published_json("health.*"), [])


class CrashTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig(noise=lambda low, high: 3.0)
        self.rig.desire(instances=2)
        self.rig.heartbeat(self.rig.beat("g0", 0), self.rig.beat("g1", 1))

    def pending_delays(self):
        now = self.rig.now()
        return [call.getTime() - now for call in self.rig.clock.getDelayedCalls()]

    def crash_again(self, guid):
        rig = self.rig
        rig.heartbeat(rig.beat(guid, 1))
        rig.exited(guid, 1)

    def test_crash_restarted_at_once_with_low_priority(self):
        """A first crash queues a LOW start that leaves at once; running excludes it."""
        self.rig.exited("g1", 1)
        self.assertEqual(self.rig.starts(), [start(1, {"v1": 1})])
        self.assertEqual(self.rig.registry.get("app-1").crashes, {"g1": (1000.0, 1000)})

    def test_crash_restart_is_not_repeated_by_the_missing_check(self):
        """After a crash restart, the missing check waits droplet_lost for the replacement's
        first heartbeat instead of starting the same index again (HM 2.0's duplicate)."""
        rig = self.rig
        rig.advance(rig.intervals.droplet_lost + 1)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1))
        rig.exited("g1", 1)
        rig.advance(rig.intervals.request_queue)
        rig.analyze()
        self.assertEqual(len(rig.starts()), 1)
        rig.advance(rig.intervals.droplet_lost)
        rig.heartbeat(rig.beat("g0", 0))
        rig.analyze()
        self.assertEqual([s["indices"] for s in rig.starts()], [[1], [1]])

    def test_crash_of_an_app_without_desired_state_sends_no_start(self):
        """A crash before the app's desired state is known sends no start (the CC would
        refuse one without the app's version); the crash is still recorded."""
        rig = self.rig
        rig.heartbeat(rig.beat("n0", 0, droplet="app-new"))
        rig.exited("n0", 0, droplet="app-new")
        self.assertEqual(rig.starts(), [])
        self.assertIn("n0", rig.registry.get("app-new").crashes)

    def test_second_crash_flapping_delayed_restart(self):
        """A second crash within flapping_timeout restarts after min_restart_delay ± noise."""
        rig = self.rig
        rig.exited("g1", 1)
        rig.bus.clear()
        self.crash_again("g1b")
        self.assertEqual(rig.registry.get("app-1").find_instance("v1", 1).state, FLAPPING)
        self.assertEqual(rig.noise_calls, [(-5, 5)])
        self.assertEqual(self.pending_delays(), [63.0])
        rig.advance(62)
        self.assertEqual(rig.starts(), [])
        rig.advance(1)
        self.assertEqual(rig.starts(), [start(1, {"v1": 1}, flapping=True)])

    def test_flapping_delay_doubles_then_gives_up(self):
        """Delays double per crash (60, 120, 240); past giveup_crash_number nothing is sent."""
        rig = self.rig
        rig.exited("g1", 1)
        delays = []
        for guid in ("b", "c", "d"):
            self.crash_again(guid)
            delays.extend(self.pending_delays())
            rig.advance(delays[-1])
        self.assertEqual(delays, [63.0, 123.0, 243.0])
        rig.bus.clear()
        self.crash_again("e")
        self.assertEqual(self.pending_delays(), [])
        self.assertEqual(rig.metrics.flapping_restarts_given_up, 1)
        rig.advance(1000)
        self.assertEqual(rig.starts(), [])

    def test_flapping_delay_capped_and_never_given_up(self):
        """With giveup_crash_number <= 0 restarts never stop; the delay is capped."""
        rig = self.rig = PolicyRig(
            intervals={"giveup_crash_number": -1, "max_restart_delay": 100},
            noise=lambda low, high: 0.0)
        rig.desire(instances=2)
        rig.exited("g1", 1)
        delays = []
        for guid in "bcdefg":
            self.crash_again(guid)
            delays.extend(self.pending_delays())
            rig.advance(delays[-1])
        self.assertEqual(delays, [60, 100, 100, 100, 100, 100])

    def test_dea_exit_restarted_at_high_priority(self):
        """DEA shutdown/evacuation restarts go before queued crash restarts."""
        rig = PolicyRig(intervals={"queue_batch_size": 1})
        rig.desire(instances=3)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1), rig.beat("g2", 2))
        rig.exited("g0", 0)
        rig.exited("g1", 1)
        rig.exited("g2", 2, reason="DEA_EVACUATION")
        rig.advance(1)
        rig.nudger.drain()
        rig.advance(1)
        rig.nudger.drain()
        self.assertEqual([s["indices"] for s in rig.starts()], [[0], [2], [1]])

    def test_droplet_updated_cancels_delayed_restart_and_refreshes(self):
        """droplet.updated marks the app stale, cancels pending restarts and refreshes."""
        rig = self.rig
        rig.exited("g1", 1)
        self.crash_again("g1b")
        rig.bus.clear()
        rig.bus.publish_json("droplet.updated", {"droplet": "app-1"})
        self.assertEqual(self.pending_delays(), [])
        self.assertEqual(rig.desired.refresh_calls, 1)
        self.assertTrue(rig.registry.get("app-1").desired_state_update_required)
        rig.advance(100)
        self.assertEqual(rig.starts(), [])

    def test_crash_history_survives_cc_outage(self):
        """No GC while desired state is stale: crash counts survive a long CC outage."""
        rig = self.rig
        rig.exited("g1", 1)
        self.crash_again("g1b")
        rig.desired.fresh = False
        rig.advance(1000)
        rig.harmonizer.gc_droplets()
        self.assertEqual(rig.registry.get("app-1").find_instance("v1", 1).crash_count, 2)

    def test_gc_forgets_unrefreshed_droplets_and_their_restarts(self):
        """GC removes droplets unrefreshed for droplet_gc_grace_period, cancelling restarts."""
        rig = self.rig
        rig.exited("g1", 1)
        self.crash_again("g1b")
        rig.desire("app-2")
        rig.advance(50)
        rig.desire("app-2")
        rig.advance(200)
        rig.harmonizer.gc_droplets()
        self.assertEqual([d.id for d in rig.registry], ["app-2"])
        self.assertEqual(self.pending_delays(), [])


class AnalysisPassTests(SynchronousTestCase):
    def setUp(self):
        self.rig = PolicyRig(number_of_droplets_analyzed_per_analysis_iteration=2)
        for n in range(5):
            self.rig.desire(f"app-{n}")
        self.rig.advance(30)

    def test_slices_yield_to_reactor_and_cover_all_droplets(self):
        """A pass analyses one slice per reactor turn, then publishes realtime totals."""
        rig = self.rig
        done = rig.harmonizer.analyze_droplets()
        self.assertEqual(len(rig.starts()), 2)
        self.assertFalse(done.called)
        self.assertEqual(len(rig.clock.getDelayedCalls()), 1)
        rig.clock.advance(0)
        self.assertEqual(len(rig.starts()), 5)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual((rig.metrics.realtime.total_apps,
                          rig.metrics.realtime.missing_instances), (5, 5))

    def test_a_stop_mid_pass_ends_the_pass_and_the_scheduler_idles(self):
        """Stopping between two slices ends the pass there, so the scheduler's stop (which
        cancels the next slice) does not wait for a pass that will never finish."""
        rig = self.rig
        rig.scheduler.start()
        rig.scheduler.track(rig.harmonizer.analyze_droplets())
        rig.harmonizer.stop()
        stopped = rig.scheduler.stop()
        self.assertIsNone(self.successResultOf(stopped))
        rig.clock.advance(0)
        self.assertEqual(len(rig.starts()), 2)  # the first slice only

    def test_droplet_removed_mid_pass_is_skipped(self):
        """A droplet removed while its pass runs is not analysed."""
        rig = self.rig
        done = rig.harmonizer.analyze_droplets()
        rig.registry.remove("app-3")
        rig.clock.advance(0)
        self.successResultOf(done)
        self.assertEqual(sorted(s["droplet"] for s in rig.starts()),
                         ["app-0", "app-1", "app-2", "app-4"])
        self.assertEqual(rig.metrics.realtime.total_apps, 4)

    def test_prepare_registers_periodic_work(self):
        """prepare(): desired refresh at once and every desired_state_update, analysis
        every droplets_analysis."""
        rig = self.rig
        rig.harmonizer.prepare()
        rig.scheduler.start()
        rig.clock.advance(0)
        self.assertEqual(rig.desired.refresh_calls, 1)
        rig.clock.advance(20)
        self.assertEqual(len(rig.starts()), 5)
        self.assertEqual(rig.metrics.realtime.total_apps, 5)
        rig.clock.advance(40)
        self.assertEqual(rig.desired.refresh_calls, 2)
