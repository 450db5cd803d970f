"""Hostile input on every subscribed subject (issue 6, items 4 and 5).

Hypothesis throws generated payloads (invalid JSON, wrong types, huge numbers, deep nesting,
missing and extra fields, unicode, empty) at the real handlers, wired as the Manager wires
them, over InMemoryBus on a task.Clock. Rules pinned: no exception escapes a handler, each
rejected message is counted in varz, a request is answered only on its own reply subject
(and a bad one not at all), and the policy still starts a genuinely missing instance
afterwards.
"""

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from health_manager.blackbox import MAX_SECONDS, BlackBoxDriver
from health_manager.component import Component
from health_manager.constants import EXIT_CRASHED
from spec.unit.policy_rig import PolicyRig

MESSAGES_PER_EXAMPLE = 5
# Each generated message is delivered with its field-by-field variants (about 10 on
# average): generating every payload from scratch would take minutes, not seconds.
EXAMPLES = 2_500  # about 137k payloads; Hypothesis generates fewer on a loaded machine
MIN_PAYLOADS = 100_000

HEARTBEAT = "dea.heartbeat"
EXITED = "droplet.exited"
UPDATED = "droplet.updated"
STATUS = "healthmanager.status"
HEALTH = "healthmanager.health"
DROPLET = "healthmanager.droplet"
DISCOVER = "vcap.component.discover"
ADVANCE = "healthmanager.advance_time"
REQUEST_SUBJECTS = (STATUS, HEALTH, DROPLET, DISCOVER, ADVANCE)
# Subjects whose handlers validate JSON and count a rejected message in varz.
COUNTED_SUBJECTS = (HEARTBEAT, EXITED, UPDATED, STATUS, HEALTH, DROPLET, ADVANCE)
SUBJECTS = COUNTED_SUBJECTS + (DISCOVER,)
# What the policy may publish on its own while handling an event.
POLICY_SUBJECTS = ("health.start", "health.stop")

# -- strategies --------------------------------------------------------------------------

# Small pools so that hostile messages meet each other's state (crashes, extras, flapping).
ids = st.sampled_from(["app-1", "app-2", "app-3", "", "app-\u00e9\U0001f600"]) | st.text(
    max_size=12)
huge_ints = st.sampled_from([2 ** 63 - 1, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, -1, 0])
scalars = (st.none() | st.booleans() | st.integers() | huge_ints
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=16))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
MISSING = object()


def mutated(template):
    """A dict built from `template` (field -> strategy of good values) where each field is
    kept, dropped, or replaced by any JSON value, plus a few extra fields."""
    fields = {
        key: st.one_of(good, good, st.just(MISSING), values)
        for key, good in template.items()}
    return st.tuples(st.fixed_dictionaries(fields),
                     st.dictionaries(st.text(max_size=8), values, max_size=2)).map(
        lambda parts: {**parts[1], **{k: v for k, v in parts[0].items() if v is not MISSING}})


indices = st.integers(min_value=0, max_value=4) | huge_ints
heartbeat_entry = mutated({
    "droplet": ids, "version": st.sampled_from(["v1", "v2"]),
    "instance": st.sampled_from(["g1", "g2", "g3"]), "index": indices,
    "state": st.sampled_from(["STARTING", "RUNNING", "CRASHED", "EVACUATING", "DOWN"]),
    "state_timestamp": st.floats(min_value=0, max_value=2e9) | st.integers(),
    "cc_partition": st.just("default")})
heartbeat = mutated({"dea": st.text(max_size=8),
                     "droplets": st.lists(heartbeat_entry | values, max_size=6)})
exited = mutated({
    "droplet": ids, "version": st.sampled_from(["v1", "v2"]),
    "instance": st.sampled_from(["g1", "g2", "g3"]), "index": indices,
    "reason": st.sampled_from(["CRASHED", "STOPPED", "DEA_SHUTDOWN", "DEA_EVACUATION", "X"]),
    "crash_timestamp": st.integers(min_value=0, max_value=2 ** 40) | st.floats(),
    "exit_status": st.integers(), "exit_description": st.text(max_size=8)})
updated = mutated({"droplet": ids})
status = mutated({"droplet": ids, "state": st.sampled_from(["FLAPPING", "CRASHED", "RUNNING"]),
                  "version": st.sampled_from(["v1", "v2"])})
droplet_list = mutated({"droplets": st.lists(
    mutated({"droplet": ids, "version": st.sampled_from(["v1", "v2"])}) | values,
    max_size=5)})
advance = mutated({"seconds": st.integers(min_value=-2, max_value=3) | huge_ints})
SHAPED = {HEARTBEAT: heartbeat, EXITED: exited, UPDATED: updated, STATUS: status,
          HEALTH: droplet_list, DROPLET: droplet_list, DISCOVER: values, ADVANCE: advance}


def encoded(value, ensure_ascii, cut):
    """`value` as JSON text (stdlib, so NaN/Infinity and ints beyond 64 bits appear), cut
    short when `cut` is a number."""
    text = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    return text if cut is None else text[:cut]


deep = st.integers(min_value=1, max_value=5_000).flatmap(lambda depth: st.sampled_from([
    b"[" * depth + b"]" * depth,
    b'{"droplets":' * depth + b"{}" + b"}" * depth,
    b"[" * depth]))
raw = st.one_of(
    st.just(b""), st.binary(max_size=48), st.text(max_size=32).map(str.encode), deep,
    st.sampled_from([b"null", b"true", b"1e400", b"-0", b'"x"', b"{", b"{}", b"[]",
                     b'{"droplets": []}', b"\xff\xfe", b'{"a":1,"a":2}', b" \n"]),
    st.builds(lambda digits: b"9" * digits, st.integers(min_value=19, max_value=600)))


# Values swapped into each field of a generated message, for the field-by-field variants.
SWAPS = (MISSING, None, True, 0, -1, 2 ** 64, 1e308, float("nan"), "", "\u0000\U0010ffff",
         [], {}, [[[[]]]], {"droplet": {"droplet": None}})


def swapped(body, key, value):
    variant = dict(body)
    if value is MISSING:
        variant.pop(key, None)
    else:
        variant[key] = value
    return variant


def variants(body, swaps):
    """`body`, then copies of it with each field (and each field of a first heartbeat
    entry) dropped or replaced by each of `swaps`."""
    yield body
    if type(body) is not dict:
        return
    for key in list(body)[:8]:
        for value in swaps:
            yield swapped(body, key, value)
    entries = body.get("droplets")
    if type(entries) is list and entries and type(entries[0]) is dict:
        for key in list(entries[0])[:8]:
            for value in swaps:
                yield dict(body, droplets=[swapped(entries[0], key, value)] + entries[1:])


@st.composite
def message(draw):
    """(subject, payloads, reply): one generated message and its derived variants."""
    subject = draw(st.sampled_from(SUBJECTS))
    reply = None
    if subject in REQUEST_SUBJECTS and draw(st.integers(min_value=0, max_value=4)):
        reply = "_INBOX.test." + draw(st.text(alphabet="abc123", min_size=1, max_size=6))
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        return subject, [draw(raw)], reply
    body = draw(SHAPED[subject] | values)
    swaps = draw(st.lists(st.sampled_from(SWAPS), min_size=6, max_size=len(SWAPS),
                          unique_by=id))
    cut = draw(st.none() | st.none() | st.integers(min_value=0, max_value=40))
    ensure_ascii = draw(st.booleans())
    payloads = [encoded(variant, ensure_ascii, None) for variant in variants(body, swaps)]
    payloads.append(encoded(body, ensure_ascii, cut))
    return subject, payloads, reply


# -- the oracle: PROTOCOL.md's rules for a whole message, restated -----------------------

def json_object(data):
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return body if type(body) is dict else None


def is_str(value):
    return type(value) is str


def must_be_rejected(subject, body, max_entries, reply):
    """True when PROTOCOL.md says the whole message is unusable (counted as rejected)."""
    if body is None:
        return True
    if subject == ADVANCE:
        seconds = body.get("seconds")
        return not reply or type(seconds) is not int or not 0 <= seconds <= MAX_SECONDS
    if subject == HEARTBEAT:
        entries = body.get("droplets")
        return type(entries) is not list or len(entries) > max_entries
    if subject == EXITED:
        index = body.get("index")
        crash = body.get("crash_timestamp")
        return (not all(is_str(body.get(k)) for k in ("droplet", "version", "instance",
                                                       "reason"))
                or type(index) is not int or index < 0
                or (body.get("reason") == EXIT_CRASHED
                    and type(crash) not in (int, float)))
    if subject == UPDATED:
        return not is_str(body.get("droplet"))
    if subject == STATUS:
        state = body.get("state")
        return (not is_str(body.get("droplet")) or state not in ("FLAPPING", "CRASHED")
                or (state == "FLAPPING" and not is_str(body.get("version"))))
    entries = body.get("droplets")
    return type(entries) is not list or len(entries) > max_entries


class HostileInputTests(SynchronousTestCase):
    def setUp(self):
        self.rig = rig = PolicyRig(max_heartbeat_entries=50)
        self.component = Component(rig.config, rig.bus, rig.clock)
        self.component.subscribe()
        # The driver's reactor is never advanced: valid advance_time requests stay queued,
        # only the request handling itself is under test here.
        self.driver = BlackBoxDriver(rig.bus, rig.clock, rig.scheduler, task.Clock(),
                                     rig.metrics)
        self.driver.subscribe()
        self.failures = []

        def observe(event):
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.tried = 0
        self.rejections_seen = 0

    def deliver(self, subject, data, reply):
        rig = self.rig
        metrics = rig.metrics
        before = metrics.rejected_messages.get(subject, 0)
        published = len(rig.bus.published)
        rig.bus.publish(subject, data, reply)
        rig.clock.advance(0)
        self.tried += 1
        self.assertEqual(self.failures, [], f"handler failed on {subject} {data[:200]!r}")
        out = [m for m in rig.bus.published[published + 1:]]
        if subject in REQUEST_SUBJECTS:
            self.assertEqual([m.subject for m in out if m.subject != reply], [],
                             f"{subject} request answered elsewhere than {reply!r}")
            if reply is None:
                self.assertEqual(out, [])
        else:
            self.assertEqual([m for m in out if m.subject not in POLICY_SUBJECTS], [])
        if subject in COUNTED_SUBJECTS:
            after = metrics.rejected_messages.get(subject, 0)
            body = json_object(data)
            if must_be_rejected(subject, body, rig.config.max_heartbeat_entries, reply):
                self.assertEqual(after, before + 1, f"{subject} {data[:200]!r} not counted")
                if subject == ADVANCE and reply:
                    # advance_time answers a bad request with an error, to its own inbox.
                    self.assertEqual([list(orjson.loads(m.data)) for m in out], [["error"]])
                else:
                    self.assertEqual(out, [], f"rejected {subject} request was answered")
                self.rejections_seen += 1
            else:
                self.assertEqual(after, before, f"{subject} {data[:200]!r} rejected")

    def test_hostile_payloads_never_escape_and_are_counted(self):
        """100k generated payloads on every subscribed subject: no exception escapes a
        handler, every unusable message is counted in varz, replies go only to the
        request's reply subject, and an analysis pass over the resulting state completes."""

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(message(), min_size=MESSAGES_PER_EXAMPLE,
                        max_size=MESSAGES_PER_EXAMPLE))
        def storm(messages):
            for subject, payloads, reply in messages:
                for data in payloads:
                    self.deliver(subject, data, reply)
            self.rig.clock.advance(1)

        storm()
        self.assertGreaterEqual(self.tried, MIN_PAYLOADS)
        varz = self.rig.metrics.varz()
        self.assertEqual(varz["rejected_messages_total"], self.rejections_seen)
        self.assertGreater(self.rejections_seen, self.tried // 10)
        self.successResultOf(self.rig.analyze())
        self.assertEqual(self.failures, [])
        # The figure for the closing note.
        print(f"\nhostile payloads tried: {self.tried}, rejected and counted: "
              f"{self.rejections_seen}, droplets created: {len(self.rig.registry)}")
        self.assert_missing_instance_still_started()

    def assert_missing_instance_still_started(self):
        rig = self.rig
        rig.desire("after-storm", instances=2, version="v9")
        rig.advance(rig.intervals.droplet_lost + 1)
        rig.heartbeat(rig.beat("live-0", 0, droplet="after-storm", version="v9"))
        rig.bus.clear()
        self.successResultOf(rig.analyze())
        starts = [s for s in rig.starts() if s["droplet"] == "after-storm"]
        self.assertEqual([s["indices"] for s in starts], [[1]])

    def test_storm_then_missing_instance_started(self):
        """A burst of hostile messages about an app does not stop the policy from starting
        its genuinely missing instance."""
        for data in (b"", b"{", b"[" * 3000, b'{"droplets": 7}', b"9" * 500, b"\xff"):
            for subject in SUBJECTS:
                self.deliver(subject, data, "_INBOX.x" if subject in REQUEST_SUBJECTS else None)
        self.assert_missing_instance_still_started()

    def test_oversized_heartbeat_bounded(self):
        """A heartbeat with more than max_heartbeat_entries entries is rejected whole and
        counted; one at the limit is applied."""
        rig = self.rig
        limit = rig.config.max_heartbeat_entries
        rig.heartbeat(*[rig.beat(f"g{i}", i, droplet="big") for i in range(limit + 1)])
        self.assertNotIn("big", rig.registry)
        self.assertEqual(rig.metrics.varz()["rejected_messages"], {HEARTBEAT: 1})
        rig.heartbeat(*[rig.beat(f"g{i}", i, droplet="big") for i in range(limit)])
        self.assertIn("big", rig.registry)
        self.assertEqual(rig.metrics.instance_heartbeats_received, limit)

    def test_oversized_request_bounded(self):
        """A health or droplet request naming more droplets than the limit gets no reply
        and is counted."""
        rig = self.rig
        rig.desire("app-1")
        many = [{"droplet": "app-1", "version": "v1"}] * (rig.config.max_heartbeat_entries + 1)
        for subject in (HEALTH, DROPLET):
            rig.bus.publish_json(subject, {"droplets": many}, reply="_INBOX.big")
        self.assertEqual(rig.bus.published_json("_INBOX.big"), [])
        self.assertEqual(rig.metrics.varz()["rejected_messages"], {HEALTH: 1, DROPLET: 1})
