"""The one policy with HM9000's Cloud Controller (HM9000.md §5): its crash schedule through
HM 2.0's keys, the index-0 guard, evacuation, and stops the CC carries out unconditionally
(`is_duplicate`) only for an index another instance holds."""

import itertools

from twisted.trial.unittest import SynchronousTestCase

from health_manager.contracts.hm9000.messages import Hm9000Contract
from health_manager.contracts.hm9000.policy import INTERVAL_DEFAULTS
from health_manager.leadership import SingleLeadership
from health_manager.web.state_view import StateView
from spec.unit.policy_rig import PolicyRig


def rig(**intervals):
    ids = itertools.count(1)
    return PolicyRig(intervals=dict(INTERVAL_DEFAULTS, **intervals),
                     contract=Hm9000Contract(message_id=lambda: f"m{next(ids)}"))


def indices(messages):
    return [m["instance_index"] for m in messages]


class CrashScheduleTests(SynchronousTestCase):
    """Crashes 1-3 of a slot restart at once; crash n > 3 waits min(30 × 2^(n−4), 960) s,
    without noise, and the policy never gives up (HM9000.md §5.3)."""

    def crash_loop(self, rig_, crashes):
        """Index 0 crashes `crashes` times, each replacement as soon as it has come up;
        index 1 keeps running. Returns the seconds each crash waited for its restart."""
        rig_.desire(instances=2)
        rig_.settle(rig_.beat("i0", 0), rig_.beat("g1", 1))
        waits = []
        for crash in range(crashes):
            before = len(rig_.starts())
            rig_.exited(f"i{crash}", 0)
            waited = 0
            while len(rig_.starts()) == before:
                rig_.advance(1)
                waited += 1
                if waited % 10 == 0:
                    rig_.heartbeat(rig_.beat("g1", 1))
                if waited > 2000:
                    return waits + [None]
            waits.append(waited)
            rig_.heartbeat(rig_.beat(f"i{crash + 1}", 0), rig_.beat("g1", 1))
        return waits

    def test_the_schedule_forever(self):
        rig_ = rig()
        self.assertEqual(self.crash_loop(rig_, 13),
                         [0, 0, 0, 30, 60, 120, 240, 480, 960, 960, 960, 960, 960])
        self.assertEqual(set(indices(rig_.starts())), {0})

    def test_an_operators_value_wins(self):
        """flapping_death 1 (HM 2.0's): the 2nd crash already waits min_restart_delay."""
        self.assertEqual(self.crash_loop(rig(flapping_death=1), 3), [0, 30, 60])


class IndexZeroGuardTests(SynchronousTestCase):
    """While an app has no STARTING or RUNNING instance at all, only index 0 is restarted."""

    def setUp(self):
        self.rig = rig()
        self.rig.desire(instances=3)
        self.rig.settle(*(self.rig.beat(f"g{i}", i) for i in range(3)))

    def crash_everything(self):
        """Each index crashes in turn; the restarts of the first two never come up. The
        last crash leaves the app without any live instance."""
        rig = self.rig
        for i in range(3):
            rig.exited(f"g{i}", i)
        self.assertEqual(indices(rig.starts()), [0, 1])  # each while another index ran

    def test_an_app_with_nothing_running_restarts_index_zero_only(self):
        rig = self.rig
        self.crash_everything()
        for _ in range(3):
            rig.advance(rig.intervals.droplet_lost)
            rig.analyze()
        self.assertEqual(indices(rig.starts()), [0, 1, 0, 0, 0])

    def test_the_others_follow_once_the_app_runs(self):
        rig = self.rig
        self.crash_everything()
        rig.heartbeat(rig.beat("n0", 0))
        rig.advance(rig.intervals.droplet_lost)
        rig.heartbeat(rig.beat("n0", 0))
        rig.analyze()
        self.assertEqual(indices(rig.starts()), [0, 1, 1, 2])

    def test_a_crash_while_another_index_runs_restarts_at_once(self):
        rig = self.rig
        rig.exited("g2", 2)
        self.assertEqual(indices(rig.starts()), [2])


class EvacuationTests(SynchronousTestCase):
    """An instance first heard EVACUATING gets a replacement at once; once the replacement
    runs, the evacuating instance is stopped with is_duplicate (HM9000.md §5.6)."""

    def setUp(self):
        self.rig = rig()
        self.rig.desire(instances=2)
        self.rig.settle(self.rig.beat("g0", 0), self.rig.beat("g1", 1, ), dea="dea-1")

    def test_replacement_at_once_then_the_evacuated_instance_stopped(self):
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0, state="EVACUATING"), rig.beat("g1", 1), dea="dea-1")
        self.assertEqual(indices(rig.starts()), [0])
        self.assertEqual(rig.stops(), [])
        rig.heartbeat(rig.beat("g0", 0, state="EVACUATING"), rig.beat("g1", 1), dea="dea-1")
        self.assertEqual(len(rig.starts()), 1)  # heard again: no second start
        rig.heartbeat(rig.beat("r0", 0, state="STARTING"), dea="dea-2")
        rig.analyze()
        self.assertEqual(rig.stops(), [])  # the replacement has not come up yet
        rig.heartbeat(rig.beat("r0", 0), dea="dea-2")
        rig.analyze()
        self.assertEqual(rig.stops(), [{
            "message_id": "m2", "droplet": "app-1", "version": "v1", "instance_guid": "g0",
            "instance_index": 0, "is_duplicate": True}])

    def test_dea_exit_reasons_start_at_once_as_today(self):
        rig = self.rig
        rig.exited("g1", 1, reason="DEA_EVACUATION")
        self.assertEqual(indices(rig.starts()), [1])


class StopRenderingTests(SynchronousTestCase):
    """The CC executes `is_duplicate: true` unconditionally, so it is set only for an
    instance on an index another (proven) instance holds."""

    def setUp(self):
        self.rig = rig()

    def test_duplicate_is_stopped_as_a_duplicate(self):
        rig = self.rig
        rig.desire(instances=1)
        rig.settle(rig.beat("g0", 0))
        rig.heartbeat(rig.beat("dup", 0))
        [stop] = rig.stops()
        self.assertEqual((stop["instance_guid"], stop["is_duplicate"]), ("dup", True))

    def test_extra_index_is_not_a_duplicate(self):
        rig = self.rig
        rig.desire(instances=1)
        rig.settle(rig.beat("g0", 0), rig.beat("g1", 1))
        rig.analyze()
        [stop] = rig.stops()
        self.assertEqual((stop["instance_guid"], stop["instance_index"],
                          stop["is_duplicate"]), ("g1", 1, False))

    def test_start_shape(self):
        rig = self.rig
        rig.desire(instances=1)
        rig.advance(rig.intervals.droplet_lost)
        rig.analyze()
        self.assertEqual(rig.starts(), [{"message_id": "m1", "droplet": "app-1",
                                         "version": "v1", "instance_index": 0}])
        self.assertEqual(rig.bus.published_json("health.start"), [])


class EvacuationAnnouncedTwiceTests(SynchronousTestCase):
    """DEAs from Dec 2013 to Jun 2016 announced an evacuation twice: a DEA_EVACUATION
    exit and EVACUATING heartbeats. One replacement, whichever comes first."""

    def setUp(self):
        self.rig = rig()
        self.rig.desire(instances=1)
        self.rig.settle(self.rig.beat("g0", 0))

    def test_exit_then_heartbeat(self):
        rig = self.rig
        rig.exited("g0", 0, reason="DEA_EVACUATION")
        rig.heartbeat(rig.beat("g0", 0, state="EVACUATING"))
        self.assertEqual(indices(rig.starts()), [0])

    def test_heartbeat_then_exit(self):
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0, state="EVACUATING"))
        rig.exited("g0", 0, reason="DEA_EVACUATION")
        self.assertEqual(indices(rig.starts()), [0])


class OperatorViewTests(SynchronousTestCase):
    """`dump` and `/v1/apps` (web/state_view.py) show crash counts and the next restart
    with HM9000's CC as with HM 2.0's: both read the one policy's model."""

    def test_crash_count_and_next_restart(self):
        rig_ = rig()
        rig_.desire(instances=2)
        rig_.settle(rig_.beat("i0", 0), rig_.beat("g1", 1))
        for crash in range(3):
            rig_.exited(f"i{crash}", 0)
            rig_.heartbeat(rig_.beat(f"i{crash + 1}", 0), rig_.beat("g1", 1))
        rig_.exited("i3", 0)  # the 4th crash: its restart waits
        view = StateView(rig_.config, rig_.scheduler, rig_.registry, rig_.metrics,
                         rig_.desired, rig_.freshness, SingleLeadership(), rig_.bus,
                         rig_.nudger, rig_.now())
        detail = view.app_detail("app-1")
        index0 = detail["versions"]["v1"][0]
        self.assertEqual((index0["index"], index0["crash_count"]), (0, 4))
        self.assertEqual(index0["next_restart_in"], 30)  # the 4th crash waits 30 s
        self.assertEqual(detail["next_restart_in"], 30)
        self.assertIn("restart in 30 s (crash 4)", index0["reason"])


class RestagingTests(SynchronousTestCase):
    """HM9000's CC refuses a start while the app's package is not STAGED (HM9000.md §1.4),
    so a crash of a restaging (PENDING) app is not restarted; HM 2.0's CC started it on the
    droplet it had."""

    def crash_while_restaging(self, rig_):
        rig_.desire(instances=2)
        rig_.settle(rig_.beat("g0", 0), rig_.beat("g1", 1))
        rig_.desire(instances=2, package_state="PENDING")
        rig_.exited("g0", 0)
        return rig_.starts()

    def test_hm9000_waits_for_staging(self):
        self.assertEqual(self.crash_while_restaging(rig()), [])

    def test_hm2_restarts_on_the_old_droplet(self):
        self.assertEqual(len(self.crash_while_restaging(PolicyRig())), 1)
