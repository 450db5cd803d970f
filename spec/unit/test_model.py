"""The pure model: heartbeat validation, instance slots, droplets and the registry."""

from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import CRASHED, DOWN, FLAPPING, RUNNING, STARTING, STOPPED
from health_manager.metrics import RealtimeTotals
from health_manager.model.desired_app import DesiredApp
from health_manager.model.heartbeat import parse_heartbeat_entry
from health_manager.model.instance import AppInstance
from health_manager.model.registry import DropletRegistry


def entry(**changes):
    base = {"droplet": "app-1", "version": "v1", "instance": "g1", "index": 0,
            "state": "RUNNING", "state_timestamp": 5.5}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def app(instances=2, state="STARTED", version="v1", package_state="STAGED"):
    return DesiredApp(id="app-1", state=state, instances=instances, version=version,
                      package_state=package_state, updated_at=100, memory=256)


DROPLET_LOST = 30


def feed(droplet, guids, index=0, version="v1", state=RUNNING, now=10):
    """Heartbeat each guid in turn; returns the last duplicate reported, or None."""
    found = None
    for guid in guids:
        duplicate = droplet.process_heartbeat(
            parse_heartbeat_entry(entry(instance=guid, index=index, version=version,
                                        state=state)), now, DROPLET_LOST)
        found = duplicate if duplicate is not None else found
    return found


class HeartbeatEntryTests(SynchronousTestCase):
    def test_valid_entry(self):
        """A complete entry becomes a Heartbeat with its fields."""
        beat = parse_heartbeat_entry(entry())
        self.assertEqual((beat.droplet, beat.version, beat.instance, beat.index, beat.state,
                          beat.state_timestamp), ("app-1", "v1", "g1", 0, "RUNNING", 5.5))

    def test_mistyped_fields_rejected(self):
        """Index must be an int >= 0 (not a bool); ids and state must be strings."""
        for bad in (entry(index=True), entry(index=-1), entry(index="0"), entry(index=1.0),
                    entry(droplet=7), entry(version=None), entry(instance=["g"]),
                    entry(state=None), ["not", "an", "object"]):
            self.assertIsNone(parse_heartbeat_entry(bad), bad)

    def test_timestamp_required_for_live_and_crashed_states(self):
        """STARTING/RUNNING/CRASHED need a numeric state_timestamp; other states do not."""
        for state in ("STARTING", "RUNNING", "CRASHED"):
            self.assertIsNone(parse_heartbeat_entry(entry(state=state, state_timestamp=None)))
            self.assertIsNone(parse_heartbeat_entry(entry(state=state, state_timestamp="1")))
        beat = parse_heartbeat_entry(entry(state="EVACUATING", state_timestamp=None))
        self.assertIsNone(beat.state_timestamp)


class DuplicateTests(SynchronousTestCase):
    def setUp(self):
        self.droplet = DropletRegistry().get_or_create("app-1", 0)

    def slot(self):
        return self.droplet.find_instance("v1", 0)

    def test_one_guid_again_and_again_is_no_duplicate(self):
        """alpha, alpha, alpha: one instance, nothing to stop."""
        self.assertIsNone(feed(self.droplet, ["alpha", "alpha", "alpha"]))
        self.assertIsNone(self.slot().duplicates)

    def test_second_live_guid_is_a_duplicate_of_the_primary(self):
        """alpha then beta on a held index: beta is reported once, alpha stays primary."""
        self.assertEqual(feed(self.droplet, ["alpha", "beta"]), "beta")
        self.assertIsNone(feed(self.droplet, ["beta", "alpha", "beta"]))
        self.assertEqual((self.slot().guid, sorted(self.slot().duplicates)),
                         ("alpha", ["beta"]))

    def test_alternating_heartbeats_keep_one_stable_primary(self):
        """alpha, beta, alpha, beta, ...: the primary never changes, so the instance to stop
        is always beta (HM 2.0 named alpha and beta in turn)."""
        feed(self.droplet, ["alpha", "beta"] * 5)
        self.assertEqual(self.slot().guid, "alpha")
        self.assertEqual(list(self.slot().live_guids(10, DROPLET_LOST)), ["alpha", "beta"])

    def test_running_duplicate_replaces_a_starting_primary(self):
        """A RUNNING instance is kept over a STARTING one, whatever came first."""
        feed(self.droplet, ["alpha"], state=STARTING)
        feed(self.droplet, ["beta"], state=RUNNING)
        self.assertEqual((self.slot().guid, sorted(self.slot().duplicates)),
                         ("beta", ["alpha"]))

    def test_new_guid_takes_over_a_down_slot(self):
        """After the primary exits, the next instance heard is the primary, not a duplicate."""
        feed(self.droplet, ["alpha"])
        self.droplet.process_exit("v1", 0, "alpha", 11)
        self.assertIsNone(feed(self.droplet, ["beta"], now=12))
        self.assertEqual((self.slot().guid, self.slot().duplicates), ("beta", None))

    def test_late_heartbeat_of_an_exited_instance_is_ignored(self):
        """A heartbeat of an instance that already exited (delivered late) changes nothing."""
        feed(self.droplet, ["alpha"])
        self.droplet.process_exit("v1", 0, "alpha", 11)
        feed(self.droplet, ["alpha"], now=12)
        self.assertEqual(self.slot().state, DOWN)

    def test_exit_of_the_primary_promotes_the_duplicate(self):
        """The primary exits while a duplicate runs: the slot stays held, by the duplicate."""
        feed(self.droplet, ["alpha", "beta"])
        record, held = self.droplet.process_exit("v1", 0, "alpha", 11)
        self.assertTrue(held)
        self.assertEqual((record.guid, record.state, record.duplicates), ("beta", RUNNING, None))

    def test_exit_of_a_duplicate_leaves_the_primary(self):
        """A duplicate's exit removes only the duplicate."""
        feed(self.droplet, ["alpha", "beta"])
        record, held = self.droplet.process_exit("v1", 0, "beta", 11)
        self.assertTrue(held)
        self.assertEqual((record.guid, record.duplicates), ("alpha", None))

    def test_vanished_duplicate_is_forgotten(self):
        """A duplicate not heard for droplet_lost is dropped by the analysis walk."""
        feed(self.droplet, ["alpha", "beta"], now=10)
        feed(self.droplet, ["alpha"], now=35)
        self.droplet.mark_vanished_down(41, DROPLET_LOST)
        self.assertIsNone(self.slot().duplicates)

    def test_primary_is_proven_after_droplet_lost_of_heartbeats(self):
        """A primary heard once (perhaps a late heartbeat of a dead instance) is not proven;
        one heard over droplet_lost is."""
        feed(self.droplet, ["alpha"], now=10)
        self.assertFalse(self.slot().is_proven(10, DROPLET_LOST))
        feed(self.droplet, ["alpha"], now=40)
        self.assertTrue(self.slot().is_proven(40, DROPLET_LOST))


class RunningCountTests(SynchronousTestCase):
    def test_start_counts_held_wanted_indices(self):
        """A start's running counts indices below the desired count with a RUNNING primary:
        a duplicate or an extra index does not count (HM 2.0 counted guids)."""
        droplet = DropletRegistry().apply_desired(app(instances=3), 0)
        feed(droplet, ["a", "b"], index=0)
        feed(droplet, ["c"], index=1, state=STARTING)
        feed(droplet, ["x"], index=5)
        feed(droplet, ["d"], index=0, version="v0")
        self.assertEqual(droplet.start_running_counts(), {"v1": 1, "v0": 1})

    def test_stop_counts_every_live_instance(self):
        """A stop's running counts every live instance, duplicates and STARTING included."""
        droplet = DropletRegistry().apply_desired(app(instances=3), 0)
        feed(droplet, ["a", "b"], index=0)
        feed(droplet, ["c"], index=1, state=STARTING)
        self.assertEqual(droplet.stop_running_counts(10, DROPLET_LOST), {"v1": 3})

    def test_crashed_heartbeat_removes_guid_and_records_crash(self):
        """A CRASHED heartbeat takes its instance off the slot and records a crash entry."""
        droplet = DropletRegistry().get_or_create("app-1", 0)
        feed(droplet, ["a", "b"])
        droplet.process_heartbeat(parse_heartbeat_entry(
            entry(instance="a", state="CRASHED", state_timestamp=7.0)), 12, DROPLET_LOST)
        self.assertEqual(droplet.stop_running_counts(12, DROPLET_LOST), {"v1": 1})
        self.assertEqual(droplet.crashes, {"a": (12, 7.0)})


class InstanceTests(SynchronousTestCase):
    def test_crash_count_resets_after_flapping_timeout(self):
        """Two crashes within flapping_timeout make FLAPPING; a longer gap restarts the count."""
        instance = AppInstance(0)
        instance.crash(100, 500, 1, held=False)
        self.assertEqual((instance.state, instance.crash_count), (CRASHED, 1))
        instance.crash(200, 500, 1, held=False)
        self.assertEqual((instance.state, instance.crash_count), (FLAPPING, 2))
        instance.crash(801, 500, 1, held=False)
        self.assertEqual((instance.state, instance.crash_count), (CRASHED, 1))

    def test_crash_of_a_held_slot_counts_but_keeps_it_running(self):
        """A crash counts even when another instance still holds the slot, which stays live."""
        instance = AppInstance(0)
        instance.receive_heartbeat(RUNNING, "g", 1.0, 10, DROPLET_LOST)
        instance.crash(11, 500, 1, held=True)
        self.assertEqual((instance.state, instance.crash_count), (RUNNING, 1))

    def test_alive_means_recent_heartbeat_and_not_crashed(self):
        """Alive: not CRASHED and heard within droplet_lost; missing: not alive, no restart."""
        instance = AppInstance(0)
        self.assertTrue(instance.is_missing(0, 30))
        instance.receive_heartbeat(RUNNING, "g", 1.0, 10, DROPLET_LOST)
        self.assertTrue(instance.is_alive(40, 30))
        self.assertFalse(instance.is_alive(41, 30))
        instance.pending_restart = object()
        self.assertFalse(instance.is_missing(41, 30))

    def test_exit_marks_down_only_the_current_guid(self):
        """An exit marks the slot DOWN only when it names the slot's current guid."""
        droplet = DropletRegistry().get_or_create("app-1", 0)
        feed(droplet, ["a"])
        record, held = droplet.process_exit("v1", 0, "other", 20)
        self.assertEqual((record.state, held), (RUNNING, True))
        _, held = droplet.process_exit("v1", 0, "a", 21)
        self.assertEqual((record.state, record.state_timestamp, held), (DOWN, 21, False))


class DropletTests(SynchronousTestCase):
    def setUp(self):
        self.registry = DropletRegistry()
        self.droplet = self.registry.apply_desired(app(instances=2), 0)

    def test_new_droplet_is_stale_until_desired(self):
        """A droplet first seen in a heartbeat is stale; a bulk entry clears that."""
        droplet = self.registry.get_or_create("other", 5)
        self.assertTrue(droplet.desired_state_update_required)
        self.assertFalse(self.droplet.desired_state_update_required)

    def proven(self, *slots, now=10):
        """Heartbeat (guid, index, version) slots at 10 and again at `now` (default: once)."""
        for at in sorted({10, now}):
            for guid, index, version in slots:
                feed(self.droplet, [guid], index=index, version=version, now=at)

    def test_extra_index_chosen_by_index_not_insertion_order(self):
        """Index 2 of an app wanting 2 is extra even when its slot was created first (HM 2.0
        kept slots in insertion order and stopped wanted index 1)."""
        self.proven(("g2", 2, "v1"), ("g0", 0, "v1"), ("g1", 1, "v1"), now=40)
        stops, running, held_back = self.droplet.plan_stops(40, DROPLET_LOST)
        self.assertEqual((stops, running, held_back),
                         ({"g2": ("v1", 2, "Extra instance")}, {"v1": 3}, 0))

    def test_stops_wait_until_every_wanted_index_runs(self):
        """While a wanted index is missing and nothing is surplus, a duplicate is not
        stopped: the CC would refuse (remaining < desired), and the missing start goes
        first. Once every index runs, the duplicate and the extra go together."""
        self.proven(("g0", 0, "v1"), ("dup", 0, "v1"), now=40)
        self.assertEqual(self.droplet.plan_stops(40, DROPLET_LOST), ({}, {"v1": 2}, 1))
        self.proven(("g0", 0, "v1"), ("dup", 0, "v1"), ("g1", 1, "v1"), ("g2", 2, "v1"),
                    now=80)
        stops, running, _ = self.droplet.plan_stops(80, DROPLET_LOST)
        self.assertEqual((stops, running), ({"dup": ("v1", 0, "Instance mismatch"),
                                             "g2": ("v1", 2, "Extra instance")}, {"v1": 4}))

    def test_surplus_goes_down_to_the_desired_count_while_an_index_is_down(self):
        """With a wanted index down (perhaps given up for good), instances above the
        desired count are still stopped, one fewer than would take the app below it."""
        self.proven(("g0", 0, "v1"), ("dup", 0, "v1"), ("g2", 2, "v1"), now=40)
        self.assertEqual(self.droplet.plan_stops(40, DROPLET_LOST),
                         ({"dup": ("v1", 0, "Instance mismatch")}, {"v1": 3}, 1))

    def test_old_version_stopped_and_table_dropped(self):
        """Instances of a non-live version are stopped once the live version runs; a dead
        old-version slot is removed with its version table."""
        self.proven(("new0", 0, "v1"), ("new1", 1, "v1"), ("old", 1, "v0"), now=40)
        self.droplet.instance("v-2", 0, 0)
        stops, _, _ = self.droplet.plan_stops(40, DROPLET_LOST)
        self.assertEqual(stops, {"old": ("v0", 1, "Live version mismatch")})
        self.assertNotIn("v-2", self.droplet.versions)

    def test_stopped_app_prunes_everything(self):
        """A STOPPED app keeps no slots; live ones are stopped."""
        feed(self.droplet, ["a"], index=0)
        self.droplet.instance("v1", 1, 0)
        self.registry.apply_desired(app(state=STOPPED), 1)
        stops, _, _ = self.droplet.plan_stops(10, DROPLET_LOST)
        self.assertEqual(stops, {"a": ("v1", 0, "Droplet state is STOPPED")})
        self.assertEqual(list(self.droplet.versions["v1"]), [0])

    def test_desired_state_from_before_an_update_keeps_the_droplet_stale(self):
        """A bulk page asked for before droplet.updated describes the old app: the droplet
        stays stale until a page asked for later."""
        self.droplet.mark_updated(50)
        self.registry.apply_desired(app(instances=3), 60, asked_at=49)
        self.assertTrue(self.droplet.desired_state_update_required)
        self.registry.apply_desired(app(instances=3), 61, asked_at=51)
        self.assertFalse(self.droplet.desired_state_update_required)

    def test_missing_indices_only_for_started_staged(self):
        """Missing indices are reported only for a STARTED, STAGED app."""
        self.assertEqual(self.droplet.sweep(100, 30, True, 500, RealtimeTotals()), [0, 1])
        self.registry.apply_desired(app(package_state="PENDING"), 1)
        self.assertIsNone(self.droplet.sweep(100, 30, True, 500, RealtimeTotals()))

    def test_realtime_totals(self):
        """Totals count droplets, desired instances, crash entries and live-version states."""
        feed(self.droplet, ["a"], index=0)
        self.droplet.crashes["x"] = (0, 1)
        totals = RealtimeTotals()
        self.droplet.add_realtime(totals)
        self.assertEqual((totals.total_apps, totals.total_instances, totals.crashed_instances,
                          totals.running_instances, totals.missing_instances,
                          totals.started_apps, totals.started_crashes),
                         (1, 2, 1, 1, 1, 1, 1))

    def test_unreadable_entry_keeps_the_app_described(self):
        """An app listed with an unreadable entry is neither extra nor GC-ripe, and keeps
        its last readable desired state."""
        self.registry.mark_described("app-1", 500)
        self.assertFalse(self.droplet.is_extra(600, 180))
        self.assertFalse(self.droplet.ripe_for_gc(600, 240))
        self.assertEqual(self.droplet.num_instances, 2)

    def test_registry_iterates_in_insertion_order(self):
        """The registry yields droplets in the order first seen, and forgets removed ones."""
        self.registry.get_or_create("b", 0)
        self.registry.get_or_create("c", 0)
        self.registry.remove("b")
        self.assertEqual([d.id for d in self.registry], ["app-1", "c"])
        self.assertEqual(len(self.registry), 2)
