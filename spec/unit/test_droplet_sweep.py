"""Droplet.sweep(): the analysis pass's one walk over a droplet's slots."""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import CRASHED, DOWN, RUNNING, STAGED, STARTED, STOPPED
from health_manager.metrics import RealtimeTotals
from health_manager.model.desired_app import DesiredApp
from health_manager.model.heartbeat import Heartbeat
from health_manager.model.registry import DropletRegistry

DROPLET_LOST = 30
FLAPPING_TIMEOUT = 180
EXITED = "exited"  # a slot state built by a crash exit rather than a heartbeat


def app(instances=2, state=STARTED, version="v1", package_state="STAGED"):
    return DesiredApp(id="app-1", state=state, instances=instances, version=version,
                      package_state=package_state, updated_at=100, memory=256)


def beat(guid, index, version="v1", state=RUNNING):
    return Heartbeat("app-1", version, guid, index, state, 5.5)


class Receipt:
    """A scheduled flapping restart, as far as the model sees one."""

    def cancel(self):
        pass


def totals_tuple(totals):
    return (totals.total_apps, totals.total_instances, totals.crashed_instances,
            totals.running_instances, totals.missing_instances, totals.flapping_instances,
            totals.started_apps, totals.started_crashes, totals.started_running,
            totals.started_missing, totals.started_flapping)


class SweepTests(SynchronousTestCase):
    def setUp(self):
        self.droplet = DropletRegistry().apply_desired(app(instances=2), 0)
        self.totals = RealtimeTotals()

    def sweep(self, now, find_missing=True):
        return self.droplet.sweep(now, DROPLET_LOST, find_missing, FLAPPING_TIMEOUT,
                                  self.totals)

    def test_quiet_droplet_is_finished_by_the_sweep(self):
        """A droplet with every index alive: None, old crash entries pruned, figures added."""
        for index, guid in enumerate(["a", "b"]):
            self.droplet.process_heartbeat(beat(guid, index), 300, DROPLET_LOST)
        self.droplet.crashes["old"] = (0, 1.0)
        self.droplet.crashes["new"] = (300, 2.0)
        self.assertIsNone(self.sweep(320))
        self.assertEqual(list(self.droplet.crashes), ["new"])
        self.assertEqual(totals_tuple(self.totals), (1, 2, 1, 2, 0, 0, 1, 1, 2, 0, 0))

    def test_vanished_instance_marked_down_and_missing(self):
        """A RUNNING slot unheard for droplet_lost is marked DOWN and reported missing;
        the droplet is left to the caller, its figures not yet added."""
        self.droplet.process_heartbeat(beat("a", 0), 10, DROPLET_LOST)
        self.droplet.process_heartbeat(beat("b", 1), 30, DROPLET_LOST)
        self.assertEqual(self.sweep(41), [0])
        record = self.droplet.find_instance("v1", 0)
        self.assertEqual((record.state, record.state_timestamp), (DOWN, 41))
        self.assertEqual(self.droplet.find_instance("v1", 1).state, RUNNING)
        self.assertEqual(totals_tuple(self.totals), (0,) * 11)

    def test_absent_indices_created_down_in_index_order_when_due(self):
        """When the missing check is due, absent live indices are created DOWN, in order."""
        self.droplet.process_heartbeat(beat("b", 1), 10, DROPLET_LOST)
        self.assertEqual(self.sweep(40), [0])
        self.assertEqual(list(self.droplet.versions["v1"]), [1, 0])
        self.assertEqual(self.droplet.find_instance("v1", 0).state, DOWN)

    def test_no_missing_check_still_marks_and_creates_nothing(self):
        """Without a due missing check, vanished slots are still marked DOWN, no slot is
        created, and the droplet is finished with its vanished and absent slots counted."""
        self.droplet.process_heartbeat(beat("a", 0), 10, DROPLET_LOST)
        self.assertIsNone(self.sweep(41, find_missing=False))
        self.assertEqual(self.droplet.find_instance("v1", 0).state, DOWN)
        self.assertEqual(list(self.droplet.versions["v1"]), [0])
        self.assertEqual(totals_tuple(self.totals), (1, 2, 0, 0, 2, 0, 1, 0, 0, 2, 0))

    def test_other_versions_and_higher_indices_are_marked_too(self):
        """Slots outside the live version's desired indices are marked DOWN as well, and
        such a droplet is left to the caller (it may have extra instances)."""
        self.droplet.process_heartbeat(beat("a", 0), 100, DROPLET_LOST)
        self.droplet.process_heartbeat(beat("b", 1), 100, DROPLET_LOST)
        self.droplet.process_heartbeat(beat("c", 5), 10, DROPLET_LOST)
        self.droplet.process_heartbeat(beat("d", 0, version="v0"), 10, DROPLET_LOST)
        self.assertEqual(self.sweep(110), [])
        self.assertEqual(self.droplet.find_instance("v1", 5).state, DOWN)
        self.assertEqual(self.droplet.find_instance("v0", 0).state, DOWN)
        self.assertEqual(totals_tuple(self.totals), (0,) * 11)

    def test_pending_restart_is_not_missing_and_crashed_is(self):
        """A slot with a pending restart is not missing; a recently heard CRASHED one is."""
        self.droplet.process_heartbeat(beat("a", 0), 10, DROPLET_LOST)
        self.droplet.process_heartbeat(beat("b", 1), 40, DROPLET_LOST)
        self.droplet.find_instance("v1", 0).pending_restart = Receipt()
        self.droplet.find_instance("v1", 1).state = CRASHED
        self.assertEqual(self.sweep(50), [1])

    def test_app_not_started_is_left_to_the_caller(self):
        """A STOPPED app has no missing indices, and its figures are left to add_realtime()."""
        self.droplet.set_desired(app(state=STOPPED), 0, 0)
        self.assertEqual(self.sweep(40), [])
        self.assertEqual(self.droplet.versions, {})
        self.assertEqual(totals_tuple(self.totals), (0,) * 11)


def scenario():
    desired = st.builds(app, instances=st.integers(0, 4),
                        state=st.sampled_from([STARTED, STARTED, STOPPED]),
                        version=st.sampled_from(["v1", "v1", "v2"]),
                        package_state=st.sampled_from(["STAGED", "PENDING"]))
    slot = st.tuples(st.sampled_from(["v1", "v1", "v1", "v2"]), st.integers(0, 4),
                     st.sampled_from(["g1", "g2", "g3"]),
                     st.sampled_from(["RUNNING", "STARTING", "CRASHED", EXITED]),
                     st.integers(0, 100), st.booleans())
    return st.tuples(desired, st.lists(slot, max_size=6),
                     st.lists(st.integers(0, 300), max_size=3), st.integers(0, 200),
                     st.booleans())


def build(desired, slots, crash_times):
    droplet = DropletRegistry().apply_desired(desired, 0)
    for version, index, guid, state, heard, pending in slots:
        if state == EXITED:
            # Heard RUNNING, then a crash exit: CRASHED, or FLAPPING on the slot's 2nd crash.
            droplet.process_heartbeat(beat(guid, index, version, RUNNING), heard, DROPLET_LOST)
            record, held = droplet.process_exit(version, index, guid, heard)
            droplet.process_exit_crash(record, guid, heard, FLAPPING_TIMEOUT, 1, heard, held)
        else:
            droplet.process_heartbeat(beat(guid, index, version, state), heard, DROPLET_LOST)
        if pending:
            droplet.find_instance(version, index).pending_restart = Receipt()
    for number, seen in enumerate(crash_times):
        droplet.crashes[f"c{number}"] = (seen, 1.0)
    return droplet


def reference_missing_indices(droplet, now):
    """§5.6 walked plainly, as the analysis did before sweep(): the live-version indices
    below num_instances that are missing, for a STARTED and STAGED app; absent slots are
    created DOWN."""
    if droplet.state != STARTED or droplet.package_state != STAGED:
        return []
    return [index for index in range(droplet.num_instances)
            if droplet.instance(droplet.live_version, index, now).is_missing(now, DROPLET_LOST)]


class SweepEquivalenceTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(scenario())
    # Rare under random draws: recently crashed (CRASHED) and twice-crashed (FLAPPING) slots.
    @example((app(instances=2), [("v1", 0, "g1", EXITED, 90, False)], [], 100, True))
    @example((app(instances=2), [("v1", 1, "g1", EXITED, 80, False),
                                 ("v1", 1, "g2", EXITED, 90, False)], [], 100, True))
    def test_sweep_does_what_the_separate_walks_do(self, case):
        """sweep() == mark_vanished_down() then missing_indices() when due; when it returns
        None, nothing was missing or to stop and prune_crashes() + add_realtime() ran."""
        desired, slots, crash_times, now, find_missing = case
        swept = build(desired, slots, crash_times)
        reference = build(desired, slots, crash_times)
        swept_totals, reference_totals = RealtimeTotals(), RealtimeTotals()
        result = swept.sweep(now, DROPLET_LOST, find_missing, FLAPPING_TIMEOUT, swept_totals)
        reference.mark_vanished_down(now, DROPLET_LOST)
        missing = reference_missing_indices(reference, now) if find_missing else []
        if result is None:
            self.assertEqual(missing, [])
            unchanged = reference.to_view()
            stops, _, held_back = reference.plan_stops(now, DROPLET_LOST)
            self.assertEqual((stops, held_back), ({}, 0))
            self.assertEqual(reference.to_view(), unchanged)
            reference.prune_crashes(now, FLAPPING_TIMEOUT)
            reference.add_realtime(reference_totals)
        else:
            self.assertEqual(list(result), missing)
        self.assertEqual(swept.to_view(), reference.to_view())
        self.assertEqual(totals_tuple(swept_totals), totals_tuple(reference_totals))
