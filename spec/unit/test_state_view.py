"""Unit tests: the StateView's answers, above all the reason given when the health manager
is not acting on an instance, and the /v1/apps API built on it (paging, filters)."""

import orjson
from twisted.trial.unittest import SynchronousTestCase

from health_manager.constants import FLAPPING, PENDING
from health_manager.web import apps_api
from spec.unit.test_web_metrics import Standby
from spec.unit.view_rig import ViewRig


class ReasonTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ViewRig()

    def slot(self, index, droplet="app-1"):
        detail = self.rig.view.app_detail(droplet)
        [slot] = [s for s in detail["versions"]["v1"] if s["index"] == index]
        return slot

    def test_waiting_for_actual_freshness(self):
        """Before the actual state is fresh a missing instance waits, with the seconds
        left said."""
        self.rig.desire(instances=1)
        self.rig.advance(18)
        self.assertEqual(self.slot(0)["reason"],
                         "waiting for actual-state freshness (12 s left)")
        self.assertEqual(self.rig.view.app_summary(self.rig.registry.get("app-1"))[
            "reason"], "index 0: waiting for actual-state freshness (12 s left)")

    def test_desired_state_stale(self):
        """While the desired state is stale, the reason names the time it went stale."""
        self.rig.desire(instances=1)
        self.rig.desired.fresh = False
        self.rig.desired.last_success = 36_131.0  # 10:02:11 UTC
        self.assertEqual(self.slot(0)["reason"], "desired state stale since 10:02:11")

    def test_standby(self):
        """A standby names the leader that acts."""
        rig = ViewRig(leadership=Standby())
        rig.desire(instances=1)
        self.rig = rig
        self.assertEqual(self.slot(0)["reason"], "standby: the leader acts (hm-0)")
        self.assertEqual(rig.view.summary()["not_acting"], "standby: the leader acts (hm-0)")

    def test_given_up(self):
        """A flapping instance past giveup_crash_number is given up, and says after how
        many crashes."""
        droplet = self.rig.desire(instances=1)
        record = droplet.instance("v1", 0, self.rig.now())
        record.state = FLAPPING
        record.crash_count = 5
        self.rig.warm_up()
        slot = self.slot(0)
        self.assertEqual((slot["given_up"], slot["reason"]), (True, "given up after 5 crashes"))

    def test_flapping_restart_pending(self):
        """A flapping instance waiting for its delayed restart says when it comes."""
        rig = self.rig
        rig.desire(instances=1)
        rig.warm_up()
        rig.heartbeat(rig.beat("g0", 0))
        rig.exited("g0", 0)
        rig.heartbeat(rig.beat("g1", 0))
        rig.exited("g1", 0)
        slot = self.slot(0)
        self.assertEqual(slot["state"], FLAPPING)
        self.assertEqual(slot["next_restart_in"], 60.0)
        self.assertEqual(slot["reason"], "flapping: restart in 60 s (crash 2)")
        self.assertEqual(rig.view.app_summary(rig.registry.get("app-1"))[
            "next_restart_in"], 60.0)

    def test_start_sent_and_queued(self):
        """A start sent says how long ago; one held by the rate limit says it is queued."""
        rig = ViewRig(intervals={"queue_batch_size": 1})
        self.rig = rig
        rig.desire(instances=2)
        rig.warm_up()
        rig.analyze()
        rig.advance(3)
        self.assertEqual(self.slot(0)["reason"],
                         "start sent 3 s ago, waiting for its heartbeat")
        self.assertEqual(self.slot(1)["reason"],
                         "start queued (missing), waiting for the rate limit")

    def test_missing_check_pending(self):
        """After a sent start is older than droplet_lost, the next missing check is named."""
        rig = self.rig
        rig.desire(instances=1)
        rig.warm_up()
        rig.analyze()
        rig.advance(31)
        droplet = rig.registry.get("app-1")
        droplet.reset_missing_check(rig.now() - 20)
        self.assertEqual(self.slot(0)["reason"], "missing check in 10 s")

    def test_package_pending(self):
        """An unstaged app is started only once staged."""
        self.rig.desire(instances=1, package_state=PENDING)
        self.rig.warm_up()
        self.assertEqual(self.slot(0)["reason"], "package is PENDING: started once staged")

    def test_running_has_no_reason_and_heartbeat_age(self):
        """A running instance has no reason, its guid and its heartbeat's age."""
        rig = self.rig
        rig.desire(instances=1)
        rig.heartbeat(rig.beat("g0", 0))
        rig.advance(4)
        slot = self.slot(0)
        self.assertEqual((slot["reason"], slot["guid"], slot["heartbeat_age"]),
                         (None, "g0", 4.0))

    def test_extra_instance(self):
        """A live instance of an old version is listed with the reason it is stopped."""
        rig = self.rig
        rig.desire(instances=1)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("old", 0, version="v0"))
        rig.warm_up()
        detail = rig.view.app_detail("app-1")
        self.assertEqual(detail["versions"]["v0"][0]["reason"],
                         "extra instance: stopped at the next analysis")
        self.assertTrue(detail["unhealthy"])

    def test_unknown_app(self):
        """An unknown guid has no detail."""
        self.assertIsNone(self.rig.view.app_detail("nope"))


class AppsApiTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ViewRig()
        rig = self.rig
        for n in range(25):
            rig.desire(f"app-{n:02d}", instances=1)
        rig.heartbeat(*(rig.beat(f"g{n}", 0, droplet=f"app-{n:02d}") for n in range(25)
                        if n % 5))

    def get(self, path):
        code, headers, body = self.rig.get(path)
        self.assertEqual(headers[b"content-type"], b"application/json")
        return code, orjson.loads(body)

    def test_paged(self):
        """/v1/apps answers `limit` entries and the `next` offset, until none is left."""
        seen = []
        start = 0
        while start is not None:
            code, body = self.get(b"/v1/apps?limit=10&start=%d" % start)
            self.assertEqual(code, 200)
            seen += [a["app"] for a in body["apps"]]
            start = body["next"]
        self.assertEqual(seen, [f"app-{n:02d}" for n in range(25)])

    def test_unhealthy_filter(self):
        """?unhealthy=1 lists only apps with instances not running."""
        code, body = self.get(b"/v1/apps?unhealthy=1")
        self.assertEqual([a["app"] for a in body["apps"]],
                         [f"app-{n:02d}" for n in range(0, 25, 5)])
        self.assertEqual(body["summary"]["apps"], 25)

    def test_app_filter(self):
        """?app=GUID lists that app only (or nothing)."""
        code, body = self.get(b"/v1/apps?app=app-07")
        self.assertEqual([(a["app"], a["running"]) for a in body["apps"]], [("app-07", 1)])
        code, body = self.get(b"/v1/apps?app=nope")
        self.assertEqual(body["apps"], [])

    def test_detail_and_404(self):
        """/v1/apps/GUID answers the app's detail, 404 for an unknown app."""
        code, body = self.get(b"/v1/apps/app-05")
        self.assertEqual((code, body["app"], body["missing"]), (200, "app-05", 1))
        code, body = self.get(b"/v1/apps/nope")
        self.assertEqual(code, 404)
        self.assertIn("nope", body["error"])

    def test_bad_query(self):
        """A bad paging or filter value answers 400 naming the parameter."""
        for query in (b"limit=0", b"limit=x", b"start=-1", b"unhealthy=maybe"):
            code, body = self.get(b"/v1/apps?" + query)
            self.assertEqual(code, 400, query)
            self.assertIn(query.split(b"=")[0].decode(), body["error"])

    def test_listing_yields_between_slices(self):
        """A listing walks a slice of apps per reactor turn, not all at once."""
        clock = self.rig.clock
        turns = []
        call_later = clock.callLater
        self.patch(clock, "callLater",
                   lambda delay, fn: turns.append(delay) or call_later(delay, fn))
        d, _scan = apps_api.listing(self.rig.view, clock, unhealthy=True, slice_apps=4)
        self.assertFalse(d.called)
        clock.advance(0)
        # 25 apps, 4 per turn: 7 slices, the first at once, each later one a turn away.
        self.assertEqual(turns, [0] * 6)
        self.assertEqual(len(self.successResultOf(d)["apps"]), 5)

    def test_cancelled_listing_stops(self):
        """A listing whose client went away schedules no further slice."""
        d, scan = apps_api.listing(self.rig.view, self.rig.clock, slice_apps=4)
        scan.cancel()
        self.assertEqual(self.rig.clock.getDelayedCalls(), [])
        d.addErrback(lambda f: None)


class ReadOnlyTests(SynchronousTestCase):
    def test_serving_changes_nothing(self):
        """Serving every resource leaves the registry, the queue and the metrics as they
        were: the view only reads."""
        rig = ViewRig(intervals={"queue_batch_size": 1})
        rig.desire("app-1", instances=3)
        rig.desire("app-2", instances=1)
        rig.heartbeat(rig.beat("g0", 0), rig.beat("old", 5, version="v0"))
        rig.warm_up()
        rig.analyze()
        before = ([d.to_view() for d in rig.registry], len(rig.nudger),
                  rig.metrics.varz(), rig.clock.getDelayedCalls())
        for path in (b"/", b"/v1/apps", b"/v1/apps?unhealthy=1", b"/v1/apps/app-1",
                     b"/v1/apps/app-2", b"/v1/apps/unknown", b"/metrics", b"/healthz"):
            self.assertIn(rig.get(path)[0], (200, 404), path)
        after = ([d.to_view() for d in rig.registry], len(rig.nudger),
                 rig.metrics.varz(), rig.clock.getDelayedCalls())
        self.assertEqual(after, before)


class PageTests(SynchronousTestCase):
    def test_page_escapes_and_orders(self):
        """The page is HTML with the summary first, unhealthy apps before healthy ones,
        every app id escaped, and a refresh."""
        rig = ViewRig()
        rig.desire("<b>bad</b>", instances=1)
        rig.desire("fine", instances=1)
        rig.heartbeat(rig.beat("g", 0, droplet="fine"))
        code, headers, body = rig.get(b"/")
        page = body.decode()
        self.assertEqual((code, headers[b"content-type"]), (200, b"text/html; charset=utf-8"))
        self.assertIn("&lt;b&gt;bad&lt;/b&gt;", page)
        self.assertNotIn("<b>bad</b>", page)
        self.assertLess(page.index('id="summary"'), page.index('id="unhealthy"'))
        self.assertLess(page.index("&lt;b&gt;bad"), page.index('id="healthy"'))
        self.assertLess(page.index('id="healthy"'), page.index("<td>fine</td>"))
        self.assertIn('<meta http-equiv="refresh" content="5">', page)
