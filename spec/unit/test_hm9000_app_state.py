"""The HM9000 contract's app-state API in fake time: the per-DEA heartbeat ledger, the App
JSON (HM9000.md §2.2) and the NATS `app.state` / `app.state.bulk` subjects (§2.1)."""

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import RUNNING
from health_manager.contracts.hm9000.app_state import (
    NOT_DESIRED,
    AppStateRenderer,
    app_state_query,
    bulk_body,
)
from health_manager.contracts.hm9000.ledger import LISTED_STATES, HeartbeatLedger, collect
from health_manager.contracts.hm9000.nats_api import NatsAppStateApi
from health_manager.metrics import HealthFacts, Hm9000Counters, Metrics
from health_manager.web.prometheus import exposition
from spec.hm9000_cc import (
    CRASH_COUNT_FIELDS,
    DESIRED_FIELDS,
    HEARTBEAT_FIELDS,
    find_crashes,
    find_flapping_indices,
    healthy_instances,
)
from spec.unit.policy_rig import PolicyRig

TTL = 30  # the rig's droplet_lost



class Hm9000Rig(PolicyRig):
    """The policy rig with the HM9000 contract's app-state API wired as the Manager wires
    it: the ledger hears ActualState, the NATS API answers on the in-memory bus."""

    def __init__(self, budget=0.010, **options):
        super().__init__(heartbeat_observer=lambda dea, beats: self.ledger.on_heartbeat(
            dea, beats), **options)
        self.counters = Metrics().enable_hm9000()
        self.ledger = HeartbeatLedger(self.clock, self.intervals.droplet_lost, self.counters,
                                      self.registry)
        self.renderer = AppStateRenderer(self.registry, self.ledger, self.freshness,
                                         self.clock, self.intervals.flapping_timeout)
        self.api = NatsAppStateApi(self.bus, self.renderer, self.clock, self.counters,
                                   budget=budget)
        self.api.subscribe()

    def fresh(self):
        """Let the actual state become fresh (the bus has been connected since START)."""
        self.advance(self.intervals.droplet_lost)

    def ask(self, subject, payload, raw=None):
        """A CC request with a reply inbox; the decoded reply, or None when none came."""
        self.bus.clear()
        data = raw if raw is not None else orjson.dumps(payload)
        self.bus.publish(subject, data, reply="_INBOX.cc")
        while True:
            replies = [m for m in self.bus.published if m.subject == "_INBOX.cc"]
            if replies:
                self.assertion_single(replies)
                return orjson.loads(replies[0].data)
            if not self.clock.getDelayedCalls():
                return None
            self.clock.advance(0)

    @staticmethod
    def assertion_single(replies):
        assert len(replies) == 1, replies

    def listed(self, droplet="app-1", version="v1"):
        return listed(self.ledger, droplet, version)


def listed(ledger, droplet, version):
    """(dea, instance, index, state) of every entry the ledger lists for (droplet,
    version), sorted."""
    found = {}
    collect(ledger.present(), {droplet}, found)
    return sorted((dea, beat.instance, beat.index, beat.state)
                  for dea, beat in found.get(droplet, []) if beat.version == version)


class LedgerTests(SynchronousTestCase):
    def setUp(self):
        self.rig = Hm9000Rig()

    def test_every_instance_each_dea_lists(self):
        """Every entry of every DEA is listed with its DEA, CRASHED and EVACUATING ones and
        two instances on one index included (the slot model keeps one primary)."""
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1, state="CRASHED"), dea="dea-1")
        rig.heartbeat(rig.beat("g0b", 0), rig.beat("g2", 2, state="EVACUATING", ts=None),
                      rig.beat("x", 0, droplet="app-2"), dea="dea-2")
        self.assertEqual(rig.listed(), [
            ("dea-1", "g0", 0, "RUNNING"), ("dea-1", "g1", 1, "CRASHED"),
            ("dea-2", "g0b", 0, "RUNNING"), ("dea-2", "g2", 2, "EVACUATING")])
        self.assertEqual(rig.listed("app-2"), [("dea-2", "x", 0, "RUNNING")])
        self.assertEqual(rig.listed("app-1", "v2"), [])

    def test_instance_gone_when_its_dea_stops_listing_it(self):
        """A DEA's latest heartbeat is its complete list: what it omits is gone at once."""
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0), rig.beat("g1", 1), dea="dea-1")
        rig.heartbeat(rig.beat("g1", 1), dea="dea-1")
        self.assertEqual(rig.listed(), [("dea-1", "g1", 1, "RUNNING")])
        rig.heartbeat(dea="dea-1")
        self.assertEqual(rig.listed(), [])

    def test_silent_dea_loses_its_instances_after_droplet_lost(self):
        """A DEA silent for longer than droplet_lost no longer lists anything; at exactly
        droplet_lost it still does. Another DEA is not affected."""
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0), dea="dea-1")
        rig.advance(10)
        rig.heartbeat(rig.beat("g1", 1), dea="dea-2")
        rig.advance(TTL - 10)
        self.assertEqual([e[0] for e in rig.listed()], ["dea-1", "dea-2"])
        rig.advance(0.5)
        self.assertEqual(rig.listed(), [("dea-2", "g1", 1, "RUNNING")])
        rig.heartbeat(rig.beat("g0", 0), dea="dea-1")
        self.assertEqual([e[0] for e in rig.listed()], ["dea-1", "dea-2"])

    def test_silent_deas_are_forgotten(self):
        """A DEA gone for good is not kept for ever: heartbeats of others prune it."""
        rig = self.rig
        for n in range(5):
            rig.heartbeat(rig.beat(f"g{n}", n), dea=f"dea-{n}")
        rig.advance(TTL + 1)
        rig.heartbeat(rig.beat("g9", 0), dea="dea-9")
        self.assertEqual(len(rig.ledger), 1)
        self.assertEqual(rig.listed(), [("dea-9", "g9", 0, "RUNNING")])

    def test_reference_path_names_the_dea_too(self):
        """A heartbeat the fast decode declines (an extra field) still reaches the ledger
        with its DEA; its bad entries are not listed."""
        rig = self.rig
        rig.bus.publish_json("dea.heartbeat", {"dea": "dea-7", "extra": 1, "droplets": [
            rig.beat("g0", 0), dict(rig.beat("g1", 1), index="1")]})
        self.assertEqual(rig.listed(), [("dea-7", "g0", 0, "RUNNING")])

    def test_heartbeat_naming_no_dea_is_counted(self):
        """Without a DEA id, the entries still feed the policy but are not listed; the
        counter and /metrics say so."""
        rig = self.rig
        rig.bus.publish_json("dea.heartbeat", {"droplets": [rig.beat("g0", 0)]})
        rig.bus.publish_json("dea.heartbeat", {"dea": 5, "droplets": [rig.beat("g1", 1)]})
        self.assertEqual(rig.listed(), [])
        self.assertEqual(rig.counters.heartbeats_without_dea, 2)
        self.assertEqual(rig.registry.get("app-1").find_instance("v1", 0).state, "RUNNING")


# A few DEAs, apps and instances, so that events collide often.
entry = st.fixed_dictionaries({
    "droplet": st.sampled_from(["a", "b"]), "version": st.sampled_from(["v1", "v2"]),
    "instance": st.sampled_from(["i1", "i2", "i3", "i4"]),
    "index": st.integers(min_value=0, max_value=3),
    "state": st.sampled_from(["STARTING", "RUNNING", "CRASHED", "EVACUATING", "STOPPED"]),
    "state_timestamp": st.floats(min_value=0, max_value=2e9)})
class LedgerMemoryTests(SynchronousTestCase):
    """The ledger keeps no string of its own where the model holds an equal one, and a
    DEA's unchanged list is not kept again."""

    def setUp(self):
        self.rig = Hm9000Rig()
        self.droplet = self.rig.desire("app-1", instances=2, version="v1")

    def held(self, dea="dea-1"):
        return dict(self.rig.ledger.present())[dea]

    def test_entries_share_the_models_strings(self):
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0, ts=5.0), rig.beat("g1", 1, ts=5.0),
                      rig.beat("x", 0, droplet="app-2", version="w", ts=5.0))
        first, second, other = self.held()
        slots = self.droplet.versions["v1"]
        for beat, index in ((first, 0), (second, 1)):
            self.assertIs(beat.droplet, self.droplet.id)
            self.assertIs(beat.version, self.droplet.live_version)
            self.assertIs(beat.instance, slots[index].guid)
            self.assertIs(beat.state, RUNNING)
        # Not desired: the registry's id (the model made its droplet from this entry).
        self.assertIs(other.droplet, rig.registry.get("app-2").id)
        self.assertEqual((other.version, other.instance), ("w", "x"))
        self.assertEqual(rig.listed(), [("dea-1", "g0", 0, "RUNNING"),
                                        ("dea-1", "g1", 1, "RUNNING")])

    def test_an_unchanged_list_keeps_the_entries_held(self):
        rig = self.rig
        rig.heartbeat(rig.beat("g0", 0, ts=5.0), rig.beat("g1", 1, ts=5.0))
        held = self.held()
        rig.advance(10)
        rig.heartbeat(rig.beat("g0", 0, ts=5.0), rig.beat("g1", 1, ts=5.0))
        self.assertIs(self.held(), held)
        rig.advance(TTL - 1)  # heard 10 s later: still present
        self.assertEqual(len(rig.listed()), 2)
        rig.heartbeat(rig.beat("g0", 0, ts=5.0), rig.beat("g1", 1, state="CRASHED", ts=7.0))
        self.assertIsNot(self.held(), held)
        self.assertEqual(rig.listed(), [("dea-1", "g0", 0, "RUNNING"),
                                        ("dea-1", "g1", 1, "CRASHED")])


event = st.one_of(
    st.tuples(st.just("beat"), st.sampled_from(["d1", "d2", "d3"]),
              st.lists(entry, max_size=5)),
    st.tuples(st.just("wait"), st.sampled_from([0, 1, 10, 29, 30, 31, 45])),
    st.tuples(st.just("ask"), st.sampled_from(["a", "b"]), st.sampled_from(["v1", "v2"])))


class LedgerPropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(event, max_size=25))
    def test_lists_exactly_the_latest_heartbeat_of_each_present_dea(self, events):
        """Whatever the order of heartbeats, silences and queries: the entries listed for
        (droplet, version) are those of the latest heartbeat of each DEA heard within
        droplet_lost, in a state the DEAs of the era send, and nothing else."""
        clock = task.Clock()
        rig = Hm9000Rig(clock=clock)  # only for its beat decoding: the real ingest
        # The rig's registry has none of these droplets: entries keep interned strings.
        ledger = HeartbeatLedger(clock, TTL, Hm9000Counters(), rig.registry)
        latest = {}
        for kind, *args in events + [("ask", "a", "v1"), ("ask", "b", "v2")]:
            if kind == "beat":
                dea, entries = args
                message = orjson.dumps({"dea": dea, "droplets": entries})
                beats = rig.actual._parse_heartbeat(message)[1]
                ledger.on_heartbeat(dea, beats)
                latest[dea] = (clock.seconds(), entries)
            elif kind == "wait":
                clock.advance(args[0])
            else:
                droplet, version = args
                expected = sorted(
                    (dea, e["instance"], e["index"], e["state"])
                    for dea, (heard, entries) in latest.items()
                    if clock.seconds() - heard <= TTL
                    for e in entries
                    if e["droplet"] == droplet and e["version"] == version
                    and e["state"] in LISTED_STATES)
                self.assertEqual(listed(ledger, droplet, version), expected)


class AppJsonTests(SynchronousTestCase):
    def setUp(self):
        self.rig = Hm9000Rig()

    def test_shape_field_by_field(self):
        """Every field of HM9000.md §2.2 with its JSON type, and the CC's reading of it."""
        rig = self.rig
        rig.desire(instances=3)
        rig.heartbeat(rig.beat("g0", 0, ts=1000), rig.beat("g1", 1, state="STARTING", ts=1001),
                      rig.beat("gx", 5), dea="dea-1")
        rig.heartbeat(rig.beat("g2", 2, state="CRASHED", ts=1002),
                      rig.beat("g0b", 0), dea="dea-2")
        for n in range(3):
            rig.exited(f"c{n}", 2, crash_timestamp=1000 + n)
        rig.fresh()
        rig.heartbeat(rig.beat("g0", 0, ts=1000), rig.beat("g1", 1, state="STARTING", ts=1001),
                      rig.beat("gx", 5), dea="dea-1")
        rig.heartbeat(rig.beat("g2", 2, state="CRASHED", ts=1002),
                      rig.beat("g0b", 0), dea="dea-2")
        reply = rig.ask("app.state", {"droplet": "app-1", "version": "v1"})
        self.assertEqual(set(reply), {"droplet", "version", "desired", "instance_heartbeats",
                                      "crash_counts"})
        self.assertEqual((reply["droplet"], reply["version"]), ("app-1", "v1"))
        self.assertEqual(reply["desired"], {"id": "app-1", "version": "v1", "instances": 3,
                                            "state": "STARTED", "package_state": "STAGED"})
        for beat in reply["instance_heartbeats"]:
            self.assertEqual({k: type(v) for k, v in beat.items()}, HEARTBEAT_FIELDS)
        self.assertEqual(
            sorted((b["dea_guid"], b["instance"], b["index"], b["state"], b["state_timestamp"])
                   for b in reply["instance_heartbeats"]),
            [("dea-1", "g0", 0, "RUNNING", 1000.0), ("dea-1", "g1", 1, "STARTING", 1001.0),
             ("dea-1", "gx", 5, "RUNNING", rig.now()), ("dea-2", "g0b", 0, "RUNNING", rig.now()),
             ("dea-2", "g2", 2, "CRASHED", 1002.0)])
        self.assertEqual(reply["crash_counts"], [
            {"droplet": "app-1", "version": "v1", "instance_index": 2, "crash_count": 3,
             "created_at": 1000}])
        for count in reply["crash_counts"]:
            self.assertEqual({k: type(v) for k, v in count.items()}, CRASH_COUNT_FIELDS)
        # The CC: indices 0 and 1 healthy (5 is beyond instances), 2 flapping and crashed.
        by_guid = {"app-1": reply}
        self.assertEqual(healthy_instances(by_guid, "app-1", 3), 2)
        self.assertEqual(find_flapping_indices(by_guid, "app-1"),
                         [{"index": 2, "since": 1000}])
        self.assertEqual(find_crashes(by_guid, "app-1"), [{"instance": "g2", "since": 1002.0}])

    def test_desired_app_without_heartbeats_shows_zero_healthy(self):
        """Included with an empty list: the CC shows 0 healthy, not unknown (-1)."""
        rig = self.rig
        rig.desire(instances=2, package_state="PENDING")
        rig.fresh()
        reply = rig.ask("app.state.bulk", [{"droplet": "app-1", "version": "v1"}])
        self.assertEqual(reply["app-1"]["instance_heartbeats"], [])
        self.assertEqual(reply["app-1"]["crash_counts"], [])
        self.assertEqual(reply["app-1"]["desired"]["package_state"], "PENDING")
        self.assertEqual(healthy_instances(reply, "app-1", 2), 0)

    def test_not_desired_has_zero_values(self):
        """An app heard but not desired (unknown to the CC, STOPPED, FAILED, or another
        version) carries `desired` with Go's zero values."""
        rig = self.rig
        rig.desire("app-2", state="STOPPED")
        rig.desire("app-3", package_state="FAILED")
        rig.desire("app-4", version="v2")
        for app in ("app-1", "app-2", "app-3", "app-4"):
            rig.heartbeat(rig.beat("g", 0, droplet=app), dea=f"dea-{app}")
        rig.fresh()
        for app in ("app-1", "app-2", "app-3", "app-4"):
            rig.heartbeat(rig.beat("g", 0, droplet=app), dea=f"dea-{app}")
        reply = rig.ask("app.state.bulk", [{"droplet": a, "version": "v1"}
                                           for a in ("app-1", "app-2", "app-3", "app-4")])
        self.assertEqual(sorted(reply), ["app-1", "app-2", "app-3", "app-4"])
        for app in reply.values():
            self.assertEqual(app["desired"], NOT_DESIRED)
            self.assertEqual({k: type(v) for k, v in app["desired"].items()}, DESIRED_FIELDS)

    def test_unknown_app_answers_empty(self):
        """Neither desired nor heard: `{}` for app.state, omitted from a bulk reply; the CC
        reads -1 (unknown)."""
        rig = self.rig
        rig.desire("app-2", state="STOPPED")
        rig.fresh()
        self.assertEqual(rig.ask("app.state", {"droplet": "app-2", "version": "v1"}), {})
        reply = rig.ask("app.state.bulk", [{"droplet": "app-2", "version": "v1"},
                                           {"droplet": "nope", "version": "v1"}])
        self.assertEqual(reply, {})
        self.assertEqual(healthy_instances(reply, "nope", 1), -1)

    def test_empty_until_actual_state_is_fresh(self):
        """`{}` until the bus has been connected for droplet_lost, and again after it drops."""
        rig = self.rig
        rig.desire()
        rig.heartbeat(rig.beat("g0", 0))
        bulk = [{"droplet": "app-1", "version": "v1"}]
        rig.advance(TTL - 1)
        self.assertEqual(rig.ask("app.state", bulk[0]), {})
        self.assertEqual(rig.ask("app.state.bulk", bulk), {})
        rig.advance(1)
        self.assertEqual(rig.ask("app.state", bulk[0])["droplet"], "app-1")
        rig.bus.set_connected(False)
        self.assertEqual(rig.ask("app.state.bulk", bulk), {})

    def test_crash_count_forgotten_after_flapping_timeout(self):
        """A count expires `flapping_timeout` after its last crash (HM9000's record TTL):
        the CC stops showing FLAPPING although the slot model keeps the number until the
        next crash, which begins a new series."""
        rig = self.rig
        rig.desire()
        for n in range(3):
            rig.exited(f"c{n}", 0, crash_timestamp=int(rig.now()))
        rig.fresh()
        request = {"droplet": "app-1", "version": "v1"}
        self.assertEqual(rig.ask("app.state", request)["crash_counts"][0]["crash_count"], 3)
        rig.advance(rig.intervals.flapping_timeout - TTL)
        self.assertEqual(len(rig.ask("app.state", request)["crash_counts"]), 1)
        rig.advance(1)
        self.assertEqual(rig.ask("app.state", request)["crash_counts"], [])
        # The next crash begins a new series: count 1, created at that crash.
        rig.exited("c9", 0, crash_timestamp=int(rig.now()))
        self.assertEqual([(c["crash_count"], c["created_at"])
                          for c in rig.ask("app.state", request)["crash_counts"]],
                         [(1, int(rig.now()))])


class NatsApiTests(SynchronousTestCase):
    def setUp(self):
        self.rig = Hm9000Rig()
        self.rig.desire(instances=2)
        self.rig.fresh()

    def test_subscribed_in_queue_group_hm9000(self):
        queues = {s.subject: s.queue for s in self.rig.bus.subscriptions}
        self.assertEqual(queues["app.state"], "hm9000")
        self.assertEqual(queues["app.state.bulk"], "hm9000")

    def test_request_without_reply_subject_ignored(self):
        rig = self.rig
        rig.bus.clear()
        rig.bus.publish_json("app.state", {"droplet": "app-1", "version": "v1"})
        rig.bus.publish_json("app.state.bulk", [{"droplet": "app-1", "version": "v1"}])
        rig.clock.advance(0)
        self.assertEqual([m.subject for m in rig.bus.published],
                         ["app.state", "app.state.bulk"])
        self.assertEqual(rig.counters.app_state_requests, {})

    def test_bad_requests_answer_empty_and_are_counted(self):
        """Not JSON, the wrong shape, or a field of the wrong type: `{}`, counted per
        subject."""
        rig = self.rig
        for raw in (b"{nope", b"[]", b'{"droplet": 5}'):
            self.assertEqual(rig.ask("app.state", None, raw=raw), {})
        for raw in (b"{}", b'[{"droplet": "app-1", "version": 1}]', b"[1]"):
            self.assertEqual(rig.ask("app.state.bulk", None, raw=raw), {})
        self.assertEqual(rig.counters.app_state_bad_requests,
                         {"app.state": 3, "app.state.bulk": 3})
        self.assertEqual(rig.counters.app_state_requests,
                         {"app.state": 3, "app.state.bulk": 3})

    def test_bulk_same_guid_twice_last_existing_version_wins(self):
        """As HM9000's map assignment: a later request for a guid replaces an earlier one,
        unless that version does not exist."""
        rig = self.rig
        rig.heartbeat(rig.beat("old", 0, version="v0"))
        reply = rig.ask("app.state.bulk", [{"droplet": "app-1", "version": "v0"},
                                           {"droplet": "app-1", "version": "v1"}])
        self.assertEqual(reply["app-1"]["version"], "v1")
        reply = rig.ask("app.state.bulk", [{"droplet": "app-1", "version": "v0"},
                                           {"droplet": "app-1", "version": "v9"}])
        self.assertEqual(reply["app-1"]["version"], "v0")
        self.assertEqual(list(reply), ["app-1"])

    def test_missing_fields_read_as_empty_strings(self):
        """As Go decoded them: a request without `version` asks for version ""."""
        rig = self.rig
        rig.heartbeat(rig.beat("g", 0, version=""))
        self.assertEqual(rig.ask("app.state", {"droplet": "app-1"})["version"], "")


class AppStateQueryTests(SynchronousTestCase):
    def test_big_question_answered_over_several_turns(self):
        """With no time budget a turn does one step (a few DEAs scanned, or one app
        rendered) and yields to the reactor; the reply is the one a single turn gives,
        and a cancelled query stops."""
        rig = Hm9000Rig(budget=0)
        apps = [f"app-{n}" for n in range(40)]

        def heartbeats():
            for n, app in enumerate(apps):
                rig.heartbeat(rig.beat("g", 0, droplet=app), rig.beat("h", 1, droplet=app),
                              dea=f"dea-{n}")

        for app in apps:
            rig.desire(app, instances=2)
        heartbeats()
        rig.fresh()
        heartbeats()
        requests = [(app, "v1") for app in apps] + [("app-0", "v9"), ("x", "v1")]
        whole = self.successResultOf(app_state_query(rig.renderer, requests, rig.clock,
                                                   budget=60).run())
        self.assertEqual(list(whole), apps)
        sliced = app_state_query(rig.renderer, requests, rig.clock, budget=0).run()
        self.assertFalse(sliced.called)
        self.assertEqual(len(rig.clock.getDelayedCalls()), 1)
        rig.clock.advance(0)  # task.Clock runs every turn the slices schedule
        self.assertEqual(self.successResultOf(sliced), whole)
        reply = orjson.loads(bulk_body(whole))
        self.assertEqual({guid: [b["instance"] for b in app["instance_heartbeats"]]
                          for guid, app in reply.items()},
                         {app: ["g", "h"] for app in apps})
        cancelled = app_state_query(rig.renderer, requests, rig.clock, budget=0).run()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        self.assertEqual(rig.clock.getDelayedCalls(), [])


class CounterTests(SynchronousTestCase):
    def test_varz_and_metrics_only_with_hm9000(self):
        """The contract's counters appear in /varz and /metrics once enabled, not before."""
        metrics = Metrics()
        self.assertNotIn("app_state_requests", metrics.varz())
        counters = metrics.enable_hm9000()
        counters.count_request("bulk_app_state")
        counters.count_https_rejected("nats_disconnected")
        counters.https_heartbeats_relayed = 4
        varz = metrics.varz()
        self.assertEqual(varz["app_state_requests"], {"bulk_app_state": 1})
        self.assertEqual(varz["https_heartbeats_rejected"], {"nats_disconnected": 1})
        facts = HealthFacts(nats_connected=True, nats_reconnects=0, actual_fresh=True,
                            desired_fresh=True, desired_age=1.0, ha_role="single",
                            ha_epoch=None, ha_transitions=0)
        text = exposition(metrics.families(facts)).decode()
        self.assertIn('health_manager_app_state_requests_total{api="bulk_app_state"} 1.0',
                      text)
        self.assertIn('health_manager_https_heartbeats_total{result="relayed"} 4.0', text)
        self.assertIn('health_manager_https_heartbeats_total{result="nats_disconnected"} 1.0',
                      text)
