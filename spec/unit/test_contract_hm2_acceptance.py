"""HM 2.0's CC respondent (PROTOCOL.md §3.1, §3.2), one test per rule, and properties that
hold for any app and payload."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import FAILED, PENDING, STAGED, STARTED, STOPPED
from health_manager.contracts.hm2 import acceptance as cc
from health_manager.contracts.verdict import StartVerdict, StopVerdict
from health_manager.simulation.cloud_controller import SimulatedApp


def app(**overrides):
    fields = dict(guid="app-1", id=1, state=STARTED, instances=2, version="v1",
                  package_state=STAGED, staged=True)
    fields.update(overrides)
    return SimulatedApp(**fields)


def start(**overrides):
    payload = {"droplet": "app-1", "last_updated": 1, "version": "v1", "indices": [1],
               "running": {"v1": 1}, "flapping": False}
    payload.update(overrides)
    return payload


def stop(**overrides):
    payload = {"droplet": "app-1", "last_updated": 1, "version": "v1",
               "instances": {"i-1": "v1"}, "running": {"v1": 3}}
    payload.update(overrides)
    return payload


class StartRuleTests(SynchronousTestCase):
    def test_missing_or_mistyped_field_is_malformed(self):
        """droplet, indices, version and running are required; indices is a list and
        running an object."""
        for key in ("droplet", "indices", "version", "running"):
            payload = start()
            del payload[key]
            self.assertEqual(cc.judge_start(app(), payload), StartVerdict(False, cc.MALFORMED))
        for bad in ({"indices": 1}, {"running": []}, {"droplet": None}):
            self.assertEqual(cc.judge_start(app(), start(**bad)).reason, cc.MALFORMED)

    def test_app_not_found(self):
        self.assertEqual(cc.judge_start(None, start()).reason, cc.APP_NOT_FOUND)

    def test_app_not_started(self):
        self.assertEqual(cc.judge_start(app(state=STOPPED), start()).reason, cc.NOT_STARTED)

    def test_other_version(self):
        self.assertEqual(cc.judge_start(app(), start(version="v0")).reason, cc.OTHER_VERSION)

    def test_droplet_or_failed_staging_needed(self):
        """No droplet hash refuses, unless staging failed."""
        self.assertEqual(cc.judge_start(app(staged=False, package_state=PENDING),
                                        start()).reason, cc.NO_DROPLET)
        self.assertTrue(cc.judge_start(app(staged=False, package_state=FAILED),
                                       start()).accepted)

    def test_enough_running(self):
        """Refused when running[app.version] (0 when absent) is not below instances."""
        self.assertEqual(cc.judge_start(app(), start(running={"v1": 2})).reason,
                         cc.ENOUGH_RUNNING)
        self.assertTrue(cc.judge_start(app(), start(running={"v0": 5})).accepted)

    def test_accepted_starts_every_index_unchecked(self):
        """Every index is started, none checked against instances."""
        self.assertEqual(cc.judge_start(app(), start(indices=[0, 7], running={})),
                         StartVerdict(True, cc.STARTED_REASON, (0, 7)))


class StopRuleTests(SynchronousTestCase):
    def test_missing_or_mistyped_field_is_malformed(self):
        for key in ("droplet", "instances", "running"):
            payload = stop()
            del payload[key]
            self.assertEqual(cc.judge_stop(app(), payload), StopVerdict(False, cc.MALFORMED))
        for bad in ({"instances": ["i-1"]}, {"running": 3}, {"instances": {"i-1": ["v1"]}}):
            self.assertEqual(cc.judge_stop(app(), stop(**bad)).reason, cc.MALFORMED)

    def test_runaway_app_stopped_whole(self):
        """An unknown app: a DEA stop without filter."""
        self.assertEqual(cc.judge_stop(None, stop()), StopVerdict(True, cc.RUNAWAY, None))

    def test_old_version_needs_the_live_one_running(self):
        payload = stop(instances={"i-1": "v0"}, running={"v0": 1})
        self.assertEqual(cc.judge_stop(app(), payload).reason, cc.OLD_VERSION_WITHOUT_LIVE)
        payload["running"]["v1"] = 1
        self.assertTrue(cc.judge_stop(app(), payload).accepted)

    def test_current_version_keeps_desired_instances(self):
        """Refused when fewer than instances would be left of a STARTED app's version."""
        self.assertEqual(cc.judge_stop(app(), stop(running={"v1": 2})).reason, cc.TOO_FEW_LEFT)
        self.assertTrue(cc.judge_stop(app(state=STOPPED), stop(running={"v1": 2})).accepted)

    def test_one_refused_group_refuses_all(self):
        payload = stop(instances={"i-1": "v1", "i-0": "v0"}, running={"v1": 2, "v0": 1})
        self.assertFalse(cc.judge_stop(app(), payload).accepted)

    def test_accepted_stop_names_the_instances(self):
        self.assertEqual(cc.judge_stop(app(), stop()),
                         StopVerdict(True, cc.STOPPED_REASON, ("i-1",)))

    def test_empty_instances_every_instance(self):
        """As the real CC: an empty map is a DEA stop with an empty (matching all) filter."""
        self.assertEqual(cc.judge_stop(app(), stop(instances={})),
                         StopVerdict(True, cc.EMPTY_INSTANCES, ()))


VERSIONS = st.sampled_from(["v1", "v2"])
APPS = st.builds(app, version=VERSIONS, instances=st.integers(0, 4),
                 state=st.sampled_from([STARTED, STOPPED]),
                 package_state=st.sampled_from([PENDING, STAGED, FAILED]), staged=st.booleans())
RUNNING = st.dictionaries(VERSIONS, st.integers(0, 5))


class PropertyTests(SynchronousTestCase):
    @given(st.one_of(st.none(), APPS), st.builds(
        start, version=VERSIONS, indices=st.lists(st.integers(0, 5), max_size=3),
        running=RUNNING))
    def test_start_accepted_only_when_every_condition_holds(self, the_app, payload):
        """§3.1: accepted exactly when the app exists, is STARTED, has this version, a
        droplet (or failed staging) and fewer running than instances; then every index
        goes to a DEA."""
        verdict = cc.judge_start(the_app, payload)
        holds = the_app is not None and the_app.state == STARTED and (
            the_app.version == payload["version"]) and (
            the_app.staged or the_app.package_state == FAILED) and (
            payload["running"].get(the_app.version, 0) < the_app.instances)
        self.assertEqual(verdict.accepted, holds)
        self.assertEqual(verdict.indices, tuple(payload["indices"]) if holds else ())

    @given(APPS, st.builds(stop, instances=st.dictionaries(
        st.sampled_from(["i-1", "i-2", "i-3"]), VERSIONS), running=RUNNING))
    def test_stop_never_leaves_a_started_app_short(self, the_app, payload):
        """§3.2: an accepted stop of a known app never takes a STARTED app's version below
        its instances by the `running` map, nor an old version while none of the live
        one runs."""
        verdict = cc.judge_stop(the_app, payload)
        running, stopping = payload["running"], list(payload["instances"].values())
        short = the_app.state == STARTED and the_app.version in stopping and (
            running.get(the_app.version, 0) - stopping.count(the_app.version)
            < the_app.instances)
        orphaning = any(v != the_app.version for v in stopping) and (
            running.get(the_app.version, 0) <= 0)
        self.assertEqual(verdict.accepted, not (short or orphaning))
