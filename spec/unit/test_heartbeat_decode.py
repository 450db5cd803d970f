"""The fast heartbeat decode (msgspec) against the reference path (orjson + per-entry
checks): it may decline a message, but whenever it answers, it answers the same."""

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from health_manager.model.heartbeat import decode_heartbeat_message, parse_heartbeat_entry
from spec.unit.test_hostile_input import encoded, heartbeat, raw

# Messages that are mostly well-formed, so the fast path answers often, with each field now
# and then of a wrong type, out of range, missing, null, or an extra field beside it.
odd = (st.none() | st.booleans() | st.text(max_size=3) | st.floats()
       | st.sampled_from([-1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, 1e400, [], {}]))
near_entry = st.fixed_dictionaries(
    {"droplet": st.text(max_size=6), "version": st.sampled_from(["v1", "v2"]),
     "instance": st.text(max_size=4), "index": st.integers(min_value=0, max_value=9),
     "state": st.sampled_from(["STARTING", "RUNNING", "CRASHED", "EVACUATING", "DOWN"]),
     "state_timestamp": st.floats(allow_nan=False, allow_infinity=False) | st.integers(
         min_value=-2 ** 63, max_value=2 ** 63 - 1)},
    optional={"cc_partition": st.just("default")},
).flatmap(lambda good: st.one_of(st.just(good), st.tuples(
    st.sampled_from([*good, "extra"]), odd).map(lambda swap: {**good, swap[0]: swap[1]})))
near_message = st.fixed_dictionaries(
    {"droplets": st.lists(near_entry, max_size=4)},
    optional={"dea": st.text(max_size=4) | odd, "prod": st.booleans() | odd})

FIELDS = ("droplet", "version", "instance", "index", "state", "state_timestamp")


def reference(data):
    """(DEA id, entries) as the reference path applies them, or None when it rejects or
    skips any."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or type(body.get("droplets")) is not list:
        return None
    beats = [parse_heartbeat_entry(entry) for entry in body["droplets"]]
    dea = body.get("dea")
    return None if None in beats else (dea if type(dea) is str else None, beats)


def fields(beat):
    return tuple((getattr(beat, name), type(getattr(beat, name))) for name in FIELDS)


def entry(**changes):
    base = {"cc_partition": "default", "droplet": "app-1", "version": "v1", "instance": "g1",
            "index": 0, "state": "RUNNING", "state_timestamp": 1378337194.52}
    base.update(changes)
    return base


class DecodeHeartbeatsTests(SynchronousTestCase):
    def test_plain_dea_message_takes_fast_path(self):
        """A well-formed DEA heartbeat decodes in one step into its entries."""
        data = orjson.dumps({"dea": "dea-1", "prod": False, "droplets": [
            entry(), entry(index=1, state="CRASHED", state_timestamp=5),
            entry(state="EVACUATING", state_timestamp=None)]})
        message = decode_heartbeat_message(data)
        self.assertEqual(message.dea, "dea-1")
        self.assertEqual([fields(b) for b in message.droplets],
                         [fields(b) for b in reference(data)[1]])

    def test_declines_what_it_does_not_know(self):
        """An unknown field, a bad entry, a missing timestamp or a huge integer are left to
        the reference path."""
        for droplets in ([entry(extra=1)], [entry(index=True)], [entry(index=2 ** 63)],
                         [entry(state_timestamp=None)], [entry(droplet=None)], ["x"]):
            data = orjson.dumps({"dea": "d", "droplets": droplets})
            self.assertIsNone(decode_heartbeat_message(data), droplets)
        self.assertIsNone(decode_heartbeat_message(b'{"droplets": [], "other": 1}'))
        self.assertIsNone(decode_heartbeat_message(b'{"droplets": [], "x": 1e400}'))
        self.assertIsNone(decode_heartbeat_message(b'{"droplets": [], "dea": 7}'))

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.builds(encoded, heartbeat, st.booleans(),
                  st.none() | st.integers(min_value=0, max_value=400)), raw,
        st.builds(lambda message, ascii: json.dumps(message, ensure_ascii=ascii).encode(),
                  near_message, st.booleans())))
    def test_agrees_with_reference_path(self, data):
        """Whenever the fast decode answers, the reference path applies the same entries
        (same values, same types), names the same DEA, and rejects or skips nothing."""
        message = decode_heartbeat_message(data)
        if message is not None:
            expected = reference(data)
            self.assertIsNotNone(expected, data)
            self.assertEqual(message.dea, expected[0], data)
            self.assertEqual([fields(b) for b in message.droplets],
                             [fields(b) for b in expected[1]], data)
