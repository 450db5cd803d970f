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


def feed(droplet, guids, index=0, version="v1", state=RUNNING, now=10):
    extra = None
    for guid in guids:
        extra = droplet.process_heartbeat(
            parse_heartbeat_entry(entry(instance=guid, index=index, version=version,
                                        state=state)), now)
    return extra


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


class GuidStreamTests(SynchronousTestCase):
    def setUp(self):
        self.droplet = DropletRegistry().get_or_create("app-1", 0)

    def test_same_guid_twice_then_new_is_not_a_duplicate(self):
        """alpha, alpha, beta: nothing to stop."""
        self.assertIsNone(feed(self.droplet, ["alpha", "alpha", "beta"]))

    def test_alternating_guids_stop_the_intruder(self):
        """alpha, beta, alpha: stop beta, keep alpha."""
        self.assertEqual(feed(self.droplet, ["alpha", "beta", "alpha"]), "beta")

    def test_replaced_guid_is_stopped(self):
        """alpha, beta, beta: stop alpha."""
        self.assertEqual(feed(self.droplet, ["alpha", "beta", "beta"]), "alpha")

    def test_stream_keeps_three_guids(self):
        """The guid stream holds at most the last three guids."""
        feed(self.droplet, ["a", "b", "c", "d", "e"])
        self.assertEqual(self.droplet.find_instance("v1", 0).guid_stream, ["c", "d", "e"])


class RunningCountTests(SynchronousTestCase):
    def test_running_counts_distinct_guids_of_running_slots(self):
        """running: RUNNING slots add their distinct guids, STARTING adds 0, all versions."""
        droplet = DropletRegistry().get_or_create("app-1", 0)
        feed(droplet, ["a", "b"], index=0)
        feed(droplet, ["c"], index=1, state=STARTING)
        feed(droplet, ["d"], index=0, version="v0", state=STARTING)
        self.assertEqual(droplet.running_counts(), {"v1": 2, "v0": 0})

    def test_crashed_heartbeat_removes_guid_and_records_crash(self):
        """A CRASHED heartbeat removes its guid from the stream and records a crash."""
        droplet = DropletRegistry().get_or_create("app-1", 0)
        feed(droplet, ["a", "b"])
        droplet.process_heartbeat(parse_heartbeat_entry(
            entry(instance="a", state="CRASHED", state_timestamp=7.0)), 12)
        self.assertEqual(droplet.running_counts(), {"v1": 1})
        self.assertEqual(droplet.crashes, {"a": (12, 7.0)})


class InstanceTests(SynchronousTestCase):
    def test_crash_count_resets_after_flapping_timeout(self):
        """Two crashes within flapping_timeout make FLAPPING; a longer gap restarts the count."""
        instance = AppInstance(0)
        instance.crash(100, 500, 1)
        self.assertEqual((instance.state, instance.crash_count), (CRASHED, 1))
        instance.crash(200, 500, 1)
        self.assertEqual((instance.state, instance.crash_count), (FLAPPING, 2))
        instance.crash(801, 500, 1)
        self.assertEqual((instance.state, instance.crash_count), (CRASHED, 1))

    def test_alive_means_recent_heartbeat_and_not_crashed(self):
        """Alive: not CRASHED and heard within droplet_lost; missing: not alive, no restart."""
        instance = AppInstance(0)
        self.assertTrue(instance.is_missing(0, 30))
        instance.receive_heartbeat(RUNNING, "g", 1.0, 10)
        self.assertTrue(instance.is_alive(40, 30))
        self.assertFalse(instance.is_alive(41, 30))
        instance.pending_restart = object()
        self.assertFalse(instance.is_missing(41, 30))

    def test_exit_marks_down_only_the_current_guid(self):
        """An exit marks the slot DOWN only when it names the slot's current guid."""
        droplet = DropletRegistry().get_or_create("app-1", 0)
        feed(droplet, ["a"])
        record = droplet.process_exit("v1", 0, "other", 20)
        self.assertEqual(record.state, RUNNING)
        droplet.process_exit("v1", 0, "a", 21)
        self.assertEqual((record.state, record.state_timestamp, record.guid_stream),
                         (DOWN, 21, []))


class DropletTests(SynchronousTestCase):
    def setUp(self):
        self.registry = DropletRegistry()
        self.droplet = self.registry.apply_desired(app(instances=2), 0)

    def test_new_droplet_is_stale_until_desired(self):
        """A droplet first seen in a heartbeat is stale; a bulk entry clears that."""
        droplet = self.registry.get_or_create("other", 5)
        self.assertTrue(droplet.desired_state_update_required)
        self.assertFalse(self.droplet.desired_state_update_required)

    def test_extra_index_pruned_by_insertion_order(self):
        """Slots beyond num_instances (in insertion order) are extra; kept ones count."""
        for index in (0, 1, 2):
            feed(self.droplet, ["g%d" % index], index=index)
        stops = self.droplet.prune_extra_instances()
        self.assertEqual(stops, {"g2": ("v1", "Extra instance")})
        self.assertEqual(list(self.droplet.versions["v1"]), [0, 1])

    def test_old_version_pruned_and_table_dropped(self):
        """Slots of a non-live version are stopped and the empty version table dropped."""
        feed(self.droplet, ["new"], index=0)
        feed(self.droplet, ["old"], index=1, version="v0")
        stops = self.droplet.prune_extra_instances()
        self.assertEqual(stops, {"old": ("v0", "Live version mismatch")})
        self.assertNotIn("v0", self.droplet.versions)

    def test_stopped_app_prunes_everything(self):
        """A STOPPED app keeps no slots; live ones are stopped."""
        feed(self.droplet, ["a"], index=0)
        self.droplet.instance("v1", 1, 0)
        self.registry.apply_desired(app(state=STOPPED), 1)
        self.assertEqual(self.droplet.prune_extra_instances(),
                         {"a": ("v1", "Droplet state is STOPPED")})
        self.assertEqual(self.droplet.versions, {})

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
