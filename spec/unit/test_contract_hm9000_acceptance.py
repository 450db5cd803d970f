"""HM9000's CC respondent (HM9000.md §1.4; ccng `dea/hm9000/respondent.rb`), one test per
rule in the CC's order, and the first-match order for any app and payload."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import FAILED, PENDING, STAGED, STARTED, STOPPED
from health_manager.contracts.hm9000 import acceptance as cc
from health_manager.contracts.verdict import StartVerdict, StopVerdict
from health_manager.simulation.cloud_controller import SimulatedApp


def app(**overrides):
    fields = dict(guid="app-1", id=1, state=STARTED, instances=2, version="v1",
                  package_state=STAGED, staged=True)
    fields.update(overrides)
    return SimulatedApp(**fields)


def start(**overrides):
    payload = {"message_id": "m-1", "droplet": "app-1", "version": "v1", "instance_index": 1}
    payload.update(overrides)
    return payload


def stop(**overrides):
    payload = {"message_id": "m-2", "droplet": "app-1", "version": "v1",
               "instance_guid": "i-1", "instance_index": 1, "is_duplicate": False}
    payload.update(overrides)
    return payload


class StartRuleTests(SynchronousTestCase):
    def test_missing_key_is_malformed(self):
        """droplet, version and instance_index must be present (Ruby's fetch)."""
        for key in cc.START_KEYS:
            payload = start()
            del payload[key]
            self.assertEqual(cc.judge_start(app(), payload), StartVerdict(False, cc.MALFORMED))
        self.assertEqual(cc.judge_start(app(), ["not", "an", "object"]).reason, cc.MALFORMED)

    def test_message_id_is_not_required(self):
        """The CC ignores message_id."""
        payload = start()
        del payload["message_id"]
        self.assertTrue(cc.judge_start(app(), payload).accepted)

    def test_app_not_found(self):
        """Refused when the CC has no such app."""
        self.assertEqual(cc.judge_start(None, start()), StartVerdict(False, cc.APP_NOT_FOUND))

    def test_version_not_current(self):
        """Refused when the version is not the app's."""
        self.assertEqual(cc.judge_start(app(), start(version="v0")).reason,
                         cc.VERSION_NOT_CURRENT)

    def test_index_outside_desired_instances(self):
        """Refused when instance_index >= app.instances."""
        self.assertEqual(cc.judge_start(app(instances=2), start(instance_index=2)).reason,
                         cc.INDEX_OUTSIDE)
        self.assertTrue(cc.judge_start(app(instances=2), start(instance_index=1)).accepted)

    def test_index_that_is_not_a_number(self):
        """Ruby cannot compare it with app.instances: the handler fails, nothing starts."""
        for index in ("1", None, True, [1]):
            self.assertEqual(cc.judge_start(app(), start(instance_index=index)).reason,
                             cc.MALFORMED)

    def test_no_droplet_hash(self):
        """Refused when no droplet was uploaded."""
        self.assertEqual(cc.judge_start(app(staged=False), start()).reason, cc.NO_DROPLET_HASH)

    def test_not_staged(self):
        """Refused unless package_state is STAGED: failed staging starts nothing here
        (unlike HM 2.0's CC)."""
        for state in (PENDING, FAILED):
            self.assertEqual(cc.judge_start(app(package_state=state), start()).reason,
                             cc.NOT_STAGED)

    def test_not_started(self):
        """Refused when the app is STOPPED."""
        self.assertEqual(cc.judge_start(app(state=STOPPED), start()).reason, cc.NOT_STARTED)

    def test_accepted_starts_exactly_that_index(self):
        """Otherwise exactly instance_index is started."""
        self.assertEqual(cc.judge_start(app(), start(instance_index=0)),
                         StartVerdict(True, cc.WILL_START, (0,)))

    def test_nothing_is_counted(self):
        """Whatever runs already, a valid start is obeyed: the CC has no `running` map."""
        self.assertTrue(cc.judge_start(app(), start(running={"v1": 99})).accepted)


class StopRuleTests(SynchronousTestCase):
    def test_missing_key_is_malformed(self):
        """All five keys must be present; a null value is present."""
        for key in cc.STOP_KEYS:
            payload = stop()
            del payload[key]
            self.assertEqual(cc.judge_stop(app(), payload), StopVerdict(False, cc.MALFORMED))
        self.assertTrue(cc.judge_stop(app(), stop(version=None)).accepted)

    def test_app_not_found(self):
        """Accepted: an instance of an app the CC does not know is stopped."""
        self.assertEqual(cc.judge_stop(None, stop()),
                         StopVerdict(True, cc.APP_NOT_FOUND, ("i-1",)))

    def test_staging_failed(self):
        """Accepted when the app failed to stage."""
        self.assertEqual(cc.judge_stop(app(package_state=FAILED), stop()).reason,
                         cc.STAGING_FAILED)

    def test_duplicate_is_stopped_unconditionally(self):
        """Accepted when is_duplicate, even for the current version, a wanted index and a
        STARTED app: the CC counts nothing."""
        self.assertEqual(cc.judge_stop(app(), stop(is_duplicate=True)),
                         StopVerdict(True, cc.DUPLICATE, ("i-1",)))

    def test_duplicate_is_ruby_truthy(self):
        """Anything but null and false is true in Ruby, 0 and "false" included."""
        for value in (0, "false", "", []):
            self.assertEqual(cc.judge_stop(app(), stop(is_duplicate=value)).reason,
                             cc.DUPLICATE)
        for value in (None, False):
            self.assertFalse(cc.judge_stop(app(), stop(is_duplicate=value)).accepted)

    def test_version_not_current(self):
        """Accepted for an old version's instance, whether or not the new one runs."""
        self.assertEqual(cc.judge_stop(app(), stop(version="v0")).reason,
                         cc.VERSION_NOT_CURRENT)

    def test_index_outside_desired_instances(self):
        """Accepted when instance_index >= app.instances."""
        self.assertEqual(cc.judge_stop(app(instances=2), stop(instance_index=2)).reason,
                         cc.INDEX_OUTSIDE)

    def test_app_stopped(self):
        """Accepted when the app is STOPPED."""
        self.assertEqual(cc.judge_stop(app(state=STOPPED), stop()).reason, cc.APP_STOPPED)

    def test_otherwise_refused(self):
        """A wanted instance of a STARTED app, not a duplicate: will-not-stop."""
        self.assertEqual(cc.judge_stop(app(), stop()), StopVerdict(False, cc.WILL_NOT_STOP))

    def test_index_that_is_not_a_number(self):
        """Reached only when no earlier rule matched; then Ruby's `>=` fails: no stop."""
        self.assertEqual(cc.judge_stop(app(), stop(instance_index="1")).reason, cc.MALFORMED)
        self.assertTrue(cc.judge_stop(app(), stop(instance_index="1", is_duplicate=True))
                        .accepted)


# --- first match wins, for any app and payload ------------------------------------------

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-1, 4), st.sampled_from(
    ["v1", "v2", "app-1", "i-1", "false", ""]), st.floats(0, 4, allow_nan=False))
APPS = st.one_of(st.none(), st.builds(
    app, version=st.sampled_from(["v1", "v2"]), instances=st.integers(0, 4),
    state=st.sampled_from([STARTED, STOPPED]),
    package_state=st.sampled_from([PENDING, STAGED, FAILED]), staged=st.booleans()))


def payloads(keys):
    """Dicts holding any subset of `keys`, each with an arbitrary JSON-ish value."""
    return st.fixed_dictionaries({}, optional={key: VALUES for key in keys})


def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def truthy(value):
    return value is not None and value is not False


# The CC's rules in order, as (holds(app, payload), accepted, reason); the last row
# always holds.
START_RULES = [
    (lambda a, p: not all(k in p for k in cc.START_KEYS), False, cc.MALFORMED),
    (lambda a, p: a is None, False, cc.APP_NOT_FOUND),
    (lambda a, p: a.version != p["version"], False, cc.VERSION_NOT_CURRENT),
    (lambda a, p: not number(p["instance_index"]), False, cc.MALFORMED),
    (lambda a, p: p["instance_index"] >= a.instances, False, cc.INDEX_OUTSIDE),
    (lambda a, p: not a.staged, False, cc.NO_DROPLET_HASH),
    (lambda a, p: a.package_state != STAGED, False, cc.NOT_STAGED),
    (lambda a, p: a.state != STARTED, False, cc.NOT_STARTED),
    (lambda a, p: True, True, cc.WILL_START),
]
STOP_RULES = [
    (lambda a, p: not all(k in p for k in cc.STOP_KEYS), False, cc.MALFORMED),
    (lambda a, p: a is None, True, cc.APP_NOT_FOUND),
    (lambda a, p: a.package_state == FAILED, True, cc.STAGING_FAILED),
    (lambda a, p: truthy(p["is_duplicate"]), True, cc.DUPLICATE),
    (lambda a, p: a.version != p["version"], True, cc.VERSION_NOT_CURRENT),
    (lambda a, p: not number(p["instance_index"]), False, cc.MALFORMED),
    (lambda a, p: p["instance_index"] >= a.instances, True, cc.INDEX_OUTSIDE),
    (lambda a, p: a.state == STOPPED, True, cc.APP_STOPPED),
    (lambda a, p: True, False, cc.WILL_NOT_STOP),
]


def first_match(rules, the_app, payload):
    return next((accepted, reason) for holds, accepted, reason in rules
                if holds(the_app, payload))


class FirstMatchTests(SynchronousTestCase):
    @given(APPS, payloads(cc.START_KEYS))
    def test_start_verdict_is_the_first_matching_rule(self, the_app, payload):
        """For any app and payload the start verdict is the first rule that holds; an
        accepted one starts exactly instance_index."""
        verdict = cc.judge_start(the_app, payload)
        self.assertEqual((verdict.accepted, verdict.reason),
                         first_match(START_RULES, the_app, payload))
        self.assertEqual(verdict.indices,
                         (payload["instance_index"],) if verdict.accepted else ())

    @given(APPS, payloads(cc.STOP_KEYS))
    def test_stop_verdict_is_the_first_matching_rule(self, the_app, payload):
        """For any app and payload the stop verdict is the first rule that holds; an
        accepted one stops exactly instance_guid."""
        verdict = cc.judge_stop(the_app, payload)
        self.assertEqual((verdict.accepted, verdict.reason),
                         first_match(STOP_RULES, the_app, payload))
        self.assertEqual(verdict.instances,
                         (payload["instance_guid"],) if verdict.accepted else ())
