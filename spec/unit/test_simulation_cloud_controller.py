"""The fake Cloud Controller: §3.1/§3.2 acceptance rules, DEA placement, bulk API, auth."""

import base64
from urllib.parse import quote

import orjson
import treq
from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import FAILED, PENDING, STOPPED
from health_manager.simulation.cloud_controller import (
    FAULT_401,
    FAULT_500,
    FAULT_GARBAGE,
    FAULT_HANG,
    BulkApiResource,
    FakeCloudController,
)
from health_manager.testing.bus import InMemoryBus


class CloudControllerCase(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_378_000_000)
        self.bus = InMemoryBus(self.clock)
        self.bus.start()
        self.cc = FakeCloudController(self.bus, self.clock, user="u", password="p")
        self.cc.start()
        self.advertise("dea-a", {})

    def advertise(self, dea, counts):
        self.bus.publish_json("dea.advertise", {"id": dea, "app_id_to_count": counts})

    def dea_starts(self, dea="dea-a"):
        return self.bus.published_json(f"dea.{dea}.start")

    def start(self, **overrides):
        payload = {"droplet": "app-1", "last_updated": 1, "version": "v1", "indices": [1],
                   "running": {"v1": 1}, "flapping": False}
        payload.update(overrides)
        self.bus.publish_json("health.start", payload)
        return self.cc.decisions[-1]

    def stop(self, **overrides):
        payload = {"droplet": "app-1", "last_updated": 1, "version": "v1",
                   "instances": {"i-1": "v1"}, "running": {"v1": 3}}
        payload.update(overrides)
        self.bus.publish_json("health.stop", payload)
        return self.cc.decisions[-1]


class CredentialsTests(CloudControllerCase):
    def test_credentials_reply(self):
        """The CC answers cloudcontroller.bulk.credentials.<partition> with user and password."""
        replies = self.successResultOf(
            self.bus.request("cloudcontroller.bulk.credentials.default", b""))
        self.assertEqual(orjson.loads(replies[0].data), {"user": "u", "password": "p"})

    def test_respondent_uses_queue_group_cc(self):
        """health.start and health.stop are subscribed in queue group cc."""
        queues = {s.subject: s.queue for s in self.bus.subscriptions}
        self.assertEqual((queues["health.start"], queues["health.stop"]), ("cc", "cc"))


class StartRuleTests(CloudControllerCase):
    def setUp(self):
        super().setUp()
        self.cc.create_app("app-1", instances=2, version="v1", place=False)

    def test_accepted_start_goes_to_a_dea(self):
        """A start meeting every §3.1 condition sends one DEA start per index."""
        decision = self.start(indices=[1])
        self.assertTrue(decision.accepted)
        self.assertEqual([(s["droplet"], s["version"], s["index"]) for s in self.dea_starts()],
                         [("app-1", "v1", 1)])

    def test_missing_field_is_malformed(self):
        """A start without droplet, indices, version or running is dropped as malformed."""
        for field in ("droplet", "indices", "version", "running"):
            payload = {"droplet": "app-1", "version": "v1", "indices": [0], "running": {}}
            del payload[field]
            self.bus.publish_json("health.start", payload)
            self.assertEqual(self.cc.decisions[-1].reason, "malformed request")
        self.assertEqual(self.dea_starts(), [])

    def test_unknown_app_refused(self):
        """A start for an app the CC does not have is ignored."""
        self.assertEqual(self.start(droplet="app-x").reason, "app not found")

    def test_stopped_app_refused(self):
        """A start for an app that is not STARTED is ignored."""
        self.cc.apps["app-1"].state = STOPPED
        self.assertEqual(self.start().reason, "app not STARTED")

    def test_other_version_refused(self):
        """A start whose version is not the app's version is ignored."""
        self.assertFalse(self.start(version="v0").accepted)

    def test_unstaged_app_refused_but_failed_staging_accepted(self):
        """A start needs a droplet hash, or staging that failed."""
        app = self.cc.apps["app-1"]
        app.staged, app.package_state = False, PENDING
        self.assertEqual(self.start().reason, "app has no droplet")
        app.package_state = FAILED
        self.assertTrue(self.start().accepted)

    def test_enough_running_refused(self):
        """A start is ignored when running[app.version] is not below app.instances."""
        self.assertFalse(self.start(running={"v1": 2}).accepted)
        self.assertTrue(self.start(running={"v0": 5}).accepted)

    def test_index_not_checked(self):
        """The CC does not check that the index is below app.instances."""
        self.assertTrue(self.start(indices=[7], running={}).accepted)

    def test_least_loaded_dea_chosen(self):
        """Each start goes to the DEA the CC believes least loaded."""
        self.advertise("dea-b", {"other": 2})
        self.advertise("dea-a", {"other": 1})
        self.start(indices=[0], running={})
        self.start(indices=[1], running={})
        self.start(indices=[0], running={})
        self.assertEqual(len(self.dea_starts("dea-a")), 2)
        self.assertEqual(len(self.dea_starts("dea-b")), 1)

    def test_dea_shutdown_removes_dea(self):
        """A DEA that announced dea.shutdown gets no more starts."""
        self.bus.publish_json("dea.shutdown", {"id": "dea-a"})
        self.start(running={})
        self.assertEqual(self.dea_starts(), [])


class StopRuleTests(CloudControllerCase):
    def setUp(self):
        super().setUp()
        self.cc.create_app("app-1", instances=2, version="v1", place=False)

    def dea_stops(self):
        return self.bus.published_json("dea.stop")

    def test_runaway_app_stopped_whole(self):
        """A stop for an app the CC does not have stops every instance of it."""
        self.assertTrue(self.stop(droplet="gone").accepted)
        self.assertEqual(self.dea_stops(), [{"droplet": "gone"}])

    def test_extra_current_version_accepted(self):
        """A current-version stop leaving at least app.instances running is obeyed."""
        self.assertTrue(self.stop(running={"v1": 3}).accepted)
        self.assertEqual(self.dea_stops(), [{"droplet": "app-1", "instances": ["i-1"]}])

    def test_current_version_below_desired_refused(self):
        """A current-version stop leaving fewer than app.instances running is refused."""
        decision = self.stop(running={"v1": 2})
        self.assertFalse(decision.accepted)
        self.assertEqual(self.dea_stops(), [])

    def test_stopped_app_stop_accepted(self):
        """The remaining-count rule applies only to a STARTED app."""
        self.cc.apps["app-1"].state = STOPPED
        self.assertTrue(self.stop(running={"v1": 1}).accepted)

    def test_old_version_needs_live_version_running(self):
        """An old-version stop is allowed only while the live version has running instances."""
        self.assertFalse(self.stop(instances={"i-9": "v0"}, running={"v0": 1}).accepted)
        self.assertTrue(
            self.stop(instances={"i-9": "v0"}, running={"v0": 1, "v1": 1}).accepted)

    def test_one_refused_group_refuses_all(self):
        """If any version group is refused, nothing is stopped."""
        decision = self.stop(instances={"i-9": "v0", "i-1": "v1"}, running={"v0": 1, "v1": 2})
        self.assertFalse(decision.accepted)
        self.assertEqual(self.dea_stops(), [])

    def test_empty_instances_stops_everything(self):
        """As the real CC, an empty instances map becomes a DEA stop with no filter."""
        decision = self.stop(instances={}, running={"v1": 2})
        self.assertEqual(decision.reason, "empty instances: every instance")
        self.assertEqual(self.dea_stops(), [{"droplet": "app-1", "instances": []}])

    def test_malformed_stop_refused(self):
        """A stop without instances (or with a non-object) is malformed."""
        self.assertEqual(self.stop(instances=["i-1"]).reason, "malformed request")
        self.bus.publish("health.stop", b"not json")
        self.assertEqual(self.cc.decisions[-1].reason, "malformed request")


class AppTableTests(CloudControllerCase):
    def test_create_started_app_places_instances(self):
        """Creating a STARTED app starts every index on the DEAs."""
        self.cc.create_app("app-1", instances=3)
        self.assertEqual(sorted(s["index"] for s in self.dea_starts()), [0, 1, 2])

    def test_changes_publish_droplet_updated(self):
        """Scaling, stopping and a new version each publish droplet.updated {droplet}."""
        self.cc.create_app("app-1", instances=1)
        self.cc.scale_app("app-1", 3)
        self.cc.change_version("app-1", "v2")
        self.cc.stop_app("app-1")
        self.assertEqual(self.bus.published_json("droplet.updated"), [{"droplet": "app-1"}] * 3)
        self.assertEqual(self.cc.apps["app-1"].version, "v2")

    def test_scale_down_stops_high_indices(self):
        """Scaling down stops the instances at the removed indices."""
        app = self.cc.create_app("app-1", instances=3)
        self.cc.scale_app("app-1", 1)
        self.assertEqual(self.bus.published_json("dea.stop"),
                         [{"droplet": "app-1", "version": app.version, "indices": [1, 2]}])


class BulkApiTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.cc = FakeCloudController(InMemoryBus(self.clock), self.clock, user="u",
                                      password="p", user_count=7)
        for n in range(5):
            self.cc.create_app(f"app-{n}", instances=n + 1, place=False)
        self.http = StubTreq(BulkApiResource(self.cc))

    def get(self, path, auth=("u", "p")):
        response = self.successResultOf(self.http.get("http://cc" + path, auth=auth))
        return response.code, self.successResultOf(treq.content(response))

    def apps_page(self, token, batch_size=2):
        code, body = self.get(
            f"/bulk/apps?batch_size={batch_size}&bulk_token={quote(orjson.dumps(token))}")
        self.assertEqual(code, 200)
        return orjson.loads(body)

    def test_paging_in_id_order(self):
        """Pages hold batch_size apps in id order; the token is {"id": last id}; then empty."""
        pages, token = [], {}
        while True:
            page = self.apps_page(token)
            pages.append(list(page["results"]))
            token = page["bulk_token"]
            if not page["results"]:
                break
        self.assertEqual(pages, [["app-0", "app-1"], ["app-2", "app-3"], ["app-4"], []])
        self.assertEqual(token, {"id": None})

    def test_entry_fields(self):
        """Each entry carries the fields HM requires."""
        entry = self.apps_page({}, batch_size=1)["results"]["app-0"]
        self.assertEqual(set(entry), {"id", "instances", "state", "memory", "package_state",
                                      "updated_at", "version"})
        self.assertTrue(entry["updated_at"].endswith(" UTC"))

    def test_deleted_apps_excluded(self):
        """A deleted app is no longer listed."""
        self.cc.delete_app("app-0")
        self.assertNotIn("app-0", self.apps_page({}, batch_size=10)["results"])

    def test_counts(self):
        """/bulk/counts?model=user answers the user count; another model is a 400."""
        self.assertEqual(self.get("/bulk/counts?model=user"), (200, b'{"counts":{"user":7}}'))
        self.assertEqual(self.get("/bulk/counts?model=app")[0], 400)

    def test_basic_auth_required(self):
        """Wrong or missing credentials get 401."""
        self.assertEqual(self.get("/bulk/counts?model=user", auth=("u", "x"))[0], 401)
        self.assertEqual(self.get("/bulk/counts?model=user", auth=None)[0], 401)

    def test_fault_injection(self):
        """The fault switch makes the API answer 500, 401 or garbage."""
        self.cc.fault = FAULT_500
        self.assertEqual(self.get("/bulk/counts?model=user")[0], 500)
        self.cc.fault = FAULT_401
        self.assertEqual(self.get("/bulk/counts?model=user")[0], 401)
        self.cc.fault = FAULT_GARBAGE
        code, body = self.get("/bulk/counts?model=user")
        self.assertEqual(code, 200)
        self.assertRaises(orjson.JSONDecodeError, orjson.loads, body)

    def test_hang_fault(self):
        """The hang fault never answers."""
        self.cc.fault = FAULT_HANG
        self.assertNoResult(self.http.get("http://cc/bulk/counts?model=user", auth=("u", "p")))


class Hm9000RespondentTests(SynchronousTestCase):
    """With cc_protocol hm9000 the CC acts on hm9000.start / hm9000.stop only, judged by
    health_manager.contracts.hm9000.acceptance (its rules are tested there)."""

    def setUp(self):
        self.clock = task.Clock()
        self.bus = InMemoryBus(self.clock)
        self.bus.start()
        self.cc = FakeCloudController(self.bus, self.clock, user="u", password="p",
                                      cc_protocol="hm9000")
        self.cc.start()
        self.bus.publish_json("dea.advertise", {"id": "dea-a", "app_id_to_count": {}})
        self.cc.create_app("app-1", instances=2, version="v1", place=False)

    def start(self, **overrides):
        payload = {"message_id": "m", "droplet": "app-1", "version": "v1", "instance_index": 1}
        payload.update(overrides)
        self.bus.publish_json("hm9000.start", payload)
        return self.cc.decisions[-1]

    def stop(self, **overrides):
        payload = {"message_id": "m", "droplet": "app-1", "version": "v1",
                   "instance_guid": "i-1", "instance_index": 1, "is_duplicate": False}
        payload.update(overrides)
        self.bus.publish_json("hm9000.stop", payload)
        return self.cc.decisions[-1]

    def test_subscribes_hm9000_subjects_in_queue_group_cc(self):
        """hm9000.start and hm9000.stop in queue group cc; no health.* respondent."""
        queues = {s.subject: s.queue for s in self.bus.subscriptions}
        self.assertEqual((queues["hm9000.start"], queues["hm9000.stop"]), ("cc", "cc"))
        self.assertNotIn("health.start", queues)
        self.assertNotIn("health.stop", queues)

    def test_accepted_start_starts_exactly_that_index(self):
        """Even with index 1 already running somewhere: the CC counts nothing."""
        self.start(instance_index=1)
        decision = self.start(instance_index=1)
        self.assertEqual((decision.op, decision.droplet, decision.accepted, decision.reason),
                         ("start", "app-1", True, "will-start"))
        self.assertEqual([(s["droplet"], s["version"], s["index"])
                          for s in self.bus.published_json("dea.dea-a.start")],
                         [("app-1", "v1", 1), ("app-1", "v1", 1)])

    def test_refused_start_is_recorded_and_starts_nothing(self):
        decision = self.start(instance_index=2)
        self.assertEqual((decision.accepted, decision.reason),
                         (False, "Instance index is outside desired number of instances"))
        self.assertEqual(self.bus.published_json("dea.dea-a.start"), [])
        self.assertEqual(self.cc.decision_counts[("start", False)], 1)

    def test_accepted_stop_stops_exactly_that_instance(self):
        decision = self.stop(is_duplicate=True)
        self.assertEqual((decision.op, decision.accepted, decision.reason),
                         ("stop", True, "Instance is duplicate"))
        self.assertEqual(self.bus.published_json("dea.stop"),
                         [{"droplet": "app-1", "instances": ["i-1"]}])

    def test_stop_of_unknown_app_stops_that_instance(self):
        self.assertTrue(self.stop(droplet="gone").accepted)
        self.assertEqual(self.bus.published_json("dea.stop"),
                         [{"droplet": "gone", "instances": ["i-1"]}])

    def test_refused_stop_stops_nothing(self):
        decision = self.stop()
        self.assertEqual((decision.accepted, decision.reason), (False, "will-not-stop"))
        self.assertEqual(self.bus.published_json("dea.stop"), [])

    def test_garbage_is_malformed(self):
        """Not JSON, or a key missing: recorded as malformed, nothing done."""
        self.bus.publish("hm9000.start", b"{not json")
        self.assertEqual(self.cc.decisions[-1].reason, "malformed request")
        self.assertEqual(self.stop(is_duplicate=None, instance_guid=None,
                                   droplet=None).reason, "App not found")
        self.bus.publish_json("hm9000.stop", {"droplet": "app-1"})
        self.assertEqual(self.cc.decisions[-1].reason, "malformed request")

    def test_health_messages_ignored(self):
        """An HM 2.0 start reaches no respondent of this CC."""
        self.bus.publish_json("health.start", {
            "droplet": "app-1", "version": "v1", "indices": [0], "running": {}})
        self.assertEqual(list(self.cc.decisions), [])

    def test_credentials_and_counts_still_served(self):
        """ccng answered the NATS credentials request and /bulk/counts until 2017-06
        (legacy_bulk.rb): HM9000 just never asked."""
        replies = self.successResultOf(
            self.bus.request("cloudcontroller.bulk.credentials.default", b""))
        self.assertEqual(orjson.loads(replies[0].data), {"user": "u", "password": "p"})
        auth = "Basic " + base64.b64encode(b"u:p").decode()
        self.assertEqual(self.cc.bulk_request("/bulk/counts", {"model": "user"}, auth)[0], 200)

    def test_unknown_protocol_refused(self):
        with self.assertRaises(ValueError):
            FakeCloudController(self.bus, self.clock, cc_protocol="hm3")
