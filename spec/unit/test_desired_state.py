"""Unit tests for DesiredState: credentials, paging, validation, errors, backoff, merging."""

import base64

import orjson
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.desired_state import DesiredState, InvalidEntry, parse_entry, parse_updated_at
from health_manager.interfaces import IDesiredState
from health_manager.metrics import DesiredTotals, Metrics
from health_manager.model.desired_app import DesiredApp
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.desired import FakeDesiredState

CREDENTIALS_SUBJECT = "cloudcontroller.bulk.credentials.default"
UPDATED_AT = "2013-09-04 23:26:34 UTC"
UPDATED_EPOCH = 1378337194


def entry(instances=1, state="STARTED", memory=256, version="v1", package_state="STAGED",
          updated_at=UPDATED_AT, **extra):
    return dict(instances=instances, state=state, memory=memory, version=version,
                package_state=package_state, updated_at=updated_at, **extra)


class FakeCloudController(Resource):
    """The bulk API of a CC: pages of `apps` in insertion order, `batch_size` per page.

    Every request is recorded; `responses` (code, body) are served first, in order;
    requests for which `hang_when(path, args)` is true are held until `release()`.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.apps = {}
        self.users = 7
        self.requests = []
        self.responses = []
        self.hang_when = lambda path, args: False
        self.held = []
        self.max_held = 0
        self.custom_pages = None

    def render_GET(self, request):
        path = request.path.decode()
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.requests.append((path, args, request.getHeader("authorization")))
        if self.hang_when(path, args):
            self.held.append(request)
            self.max_held = max(self.max_held, len(self.held))
            return NOT_DONE_YET
        if self.responses:
            code, body = self.responses.pop(0)
            request.setResponseCode(code)
            return body
        return orjson.dumps(self.answer(path, args))

    def answer(self, path, args):
        if path == "/bulk/counts":
            return {"counts": {"user": self.users}}
        token = orjson.loads(args["bulk_token"])
        if self.custom_pages is not None:
            return self.custom_pages[token if isinstance(token, str) else "{}"]
        start = token.get("id") or 0
        batch = int(args["batch_size"])
        ids = list(self.apps)[start:start + batch]
        if not ids:
            return {"results": {}, "bulk_token": {"id": None}}
        return {"results": {i: self.apps[i] for i in ids}, "bulk_token": {"id": start + len(ids)}}

    def release(self, code=200, body=None):
        """Answer every held request: with `body`, or what the CC would have answered."""
        held, self.held = self.held, []
        for request in held:
            path = request.path.decode()
            args = {k.decode(): v[0].decode() for k, v in request.args.items()}
            request.setResponseCode(code)
            request.write(body if body is not None else orjson.dumps(self.answer(path, args)))
            request.finish()

    def paths(self):
        return [path for path, _args, _auth in self.requests]

    def tokens(self):
        return [args["bulk_token"] for path, args, _auth in self.requests
                if path == "/bulk/apps"]


class RecordingBus(InMemoryBus):
    """InMemoryBus that also records the arguments of every request()."""

    def __init__(self, clock):
        super().__init__(clock)
        self.requests = []

    def request(self, subject, data=b"", timeout=5.0, max_replies=1):
        self.requests.append((subject, data, timeout, max_replies))
        return super().request(subject, data, timeout=timeout, max_replies=max_replies)


class DesiredStateTestCase(SynchronousTestCase):
    intervals = {"desired_state_update": 60, "desired_state_lost": 180,
                 "bulk_credentials_timeout": 5, "bulk_request_timeout": 30}
    jitter_value = 0.5

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.config, _ = build_config(
            {"mbus": "nats://127.0.0.1:4222",
             "bulk_api": {"host": "cc.example.com", "batch_size": 2},
             "intervals": self.intervals},
            environ={})
        self.scheduler = Scheduler(self.clock)
        self.bus = RecordingBus(self.clock)
        self.credential_replies = [{"user": "bulk_api", "password": "s3cret"}]
        self.bus.subscribe(CREDENTIALS_SUBJECT, self.answer_credentials)
        self.cc = FakeCloudController()
        self.http = StubTreq(self.cc)
        self.metrics = Metrics()
        self.applied = []
        self.unreadable = []
        self.on_app = self.applied.append
        self.desired = DesiredState(self.config, self.scheduler, self.bus, self.http,
                                    self.metrics, lambda app, asked_at: self.on_app(app),
                                    jitter=lambda: self.jitter_value,
                                    on_unreadable=self.unreadable.append)
        self.addCleanup(self.desired.stop)

    def answer_credentials(self, message):
        if self.credential_replies:
            reply = self.credential_replies[0]
            data = reply if isinstance(reply, bytes) else orjson.dumps(reply)
            self.bus.publish(message.reply, data)

    def refresh(self):
        d = self.desired.refresh()
        self.http.flush()
        return d

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.http.flush()

    def release(self, code=200, body=None):
        self.cc.release(code, body)
        self.http.flush()

    def capture_logs(self):
        return EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def count(self, path):
        return self.cc.paths().count(path)


class InterfaceTests(SynchronousTestCase):
    def test_desired_state_provides_interface(self):
        """DesiredState provides IDesiredState."""
        clock = Clock()
        config, _ = build_config({"mbus": "nats://h:4222", "bulk_api": {"host": "cc"}}, {})
        desired = DesiredState(config, Scheduler(clock), InMemoryBus(clock), StubTreq(Resource()),
                               Metrics(), lambda app: None)
        self.assertTrue(verifyObject(IDesiredState, desired))

    def test_fake_provides_interface(self):
        """FakeDesiredState provides IDesiredState."""
        self.assertTrue(verifyObject(IDesiredState, FakeDesiredState()))

    def test_fake_records_refreshes_and_settable_state(self):
        """The fake counts refresh() calls, fires at once, and is fresh only when available."""
        fake = FakeDesiredState(available=False, fresh=True)
        self.assertIsNone(self.successResultOf(fake.refresh()))
        self.assertEqual(fake.refresh_calls, 1)
        self.assertFalse(fake.is_fresh())
        fake.available = True
        self.assertTrue(fake.is_fresh())
        fake.fresh = False
        self.assertFalse(fake.is_fresh())


class CredentialsTests(DesiredStateTestCase):
    def test_credentials_request(self):
        """Credentials are requested with an empty body on the partition's subject, max 1
        reply, with timeout intervals.bulk_credentials_timeout."""
        self.refresh()
        self.assertEqual(self.bus.requests, [(CREDENTIALS_SUBJECT, b"", 5, 1)])
        self.assertEqual(self.metrics.bulk_credentials_requests, 1)

    def test_basic_auth(self):
        """Every bulk request carries HTTP basic auth with the NATS credentials."""
        self.refresh()
        expected = "Basic " + base64.b64encode(b"bulk_api:s3cret").decode()
        self.assertEqual({auth for _p, _a, auth in self.cc.requests}, {expected})

    def test_credentials_cached(self):
        """Credentials are requested once and reused by later passes."""
        self.refresh()
        self.refresh()
        self.assertEqual(len(self.bus.requests), 1)
        self.assertEqual(self.count("/bulk/counts"), 2)

    def test_credentials_timeout(self):
        """A credentials timeout is logged and counted, marks the desired state unavailable
        and is retried with backoff."""
        self.refresh()
        self.credential_replies = []
        self.desired._credentials = None
        d = self.refresh()
        self.assertNoResult(d)
        self.advance(5)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(self.desired.available)
        self.assertEqual(self.metrics.bulk_api_errors, 1)
        self.credential_replies = [{"user": "bulk_api", "password": "s3cret"}]
        self.advance(1)
        self.assertEqual(len(self.bus.requests), 3)
        self.assertTrue(self.desired.available)

    def test_credentials_without_nats_name_nats(self):
        """With NATS down, the bulk-update error says NATS is why there are no credentials."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.bus.set_connected(False)
        self.credential_replies = []  # nobody can answer without NATS
        d = self.refresh()
        self.advance(5)
        self.successResultOf(d)
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("NATS is not connected, and the credentials come over NATS", errors[0])

    def test_bad_credentials_reply(self):
        """A credentials reply that is not an object with string user and password is
        counted as rejected and fails the pass."""
        for reply in (b"not json", {"user": "u"}, [1, 2], {"user": 1, "password": "p"}):
            self.credential_replies = [reply]
            d = self.refresh()
            self.successResultOf(d)
            self.assertFalse(self.desired.available)
            self.assertEqual(self.cc.requests, [])
        self.assertEqual(self.metrics.rejected_messages, {CREDENTIALS_SUBJECT: 4})

    def test_401_rerequests_credentials(self):
        """A 401 drops the cached credentials; the retry requests them again."""
        self.refresh()
        self.cc.responses = [(401, b"Unauthorized")]
        self.refresh()
        self.assertFalse(self.desired.available)
        self.assertEqual(len(self.bus.requests), 1)
        self.advance(1)
        self.assertEqual(len(self.bus.requests), 2)
        self.assertTrue(self.desired.available)

    def test_500_keeps_credentials(self):
        """A 500 does not drop the credentials."""
        self.refresh()
        self.cc.responses = [(500, b"oops")]
        self.refresh()
        self.advance(1)
        self.assertEqual(len(self.bus.requests), 1)
        self.assertTrue(self.desired.available)

    def test_credentials_never_logged(self):
        """No log event of a pass, successful or failed, contains the bulk password."""
        logged = self.capture_logs()
        self.cc.apps = {"a": entry(state="bogus")}
        self.refresh()
        self.cc.responses = [(401, b"s3cret")]
        self.refresh()
        self.advance(1)
        self.assertTrue(len(logged) > 0)
        for event in logged:
            self.assertNotIn("s3cret", formatEvent(event))
            self.assertNotIn("s3cret", repr(event))


class PagingTests(DesiredStateTestCase):
    def test_paging_with_token_round_trip(self):
        """Pages are fetched with batch_size and the previous page's bulk_token as JSON,
        starting with {}, until a page has empty results."""
        self.cc.apps = {f"app-{i}": entry() for i in range(5)}
        self.refresh()
        self.assertEqual(self.cc.paths(), ["/bulk/counts"] + ["/bulk/apps"] * 4)
        self.assertEqual(self.cc.tokens(), ["{}", '{"id":2}', '{"id":4}', '{"id":5}'])
        self.assertEqual({args["batch_size"] for _p, args, _a in self.cc.requests[1:]}, {"2"})
        self.assertEqual([app.id for app in self.applied], [f"app-{i}" for i in range(5)])

    def test_string_token_sent_back_as_json(self):
        """An opaque string token "done!" is sent back as the JSON text "\\"done!\\""."""
        self.cc.custom_pages = {
            "{}": {"results": {"a": entry()}, "bulk_token": "done!"},
            "done!": {"results": {}},
        }
        self.refresh()
        self.assertEqual(self.cc.tokens(), ["{}", '"done!"'])
        self.assertTrue(self.desired.available)

    def test_query_is_url_encoded(self):
        """The bulk_token query parameter is URL-encoded ({} is sent as %7B%7D)."""
        urls = []
        get = self.http.get

        def recording_get(url, **kwargs):
            urls.append(url)
            return get(url, **kwargs)

        self.http.get = recording_get
        self.refresh()
        self.assertEqual(urls, [
            "http://cc.example.com/bulk/counts?model=user",
            "http://cc.example.com/bulk/apps?batch_size=2&bulk_token=%7B%7D",
        ])

    def test_missing_results_ends_pass(self):
        """A page without `results` ends the pass successfully."""
        self.cc.custom_pages = {"{}": {"bulk_token": {"id": None}}}
        self.refresh()
        self.assertTrue(self.desired.available)

    def test_short_page_does_not_end_pass(self):
        """A page shorter than batch_size does not end the pass; only an empty page does."""
        self.cc.custom_pages = {
            "{}": {"results": {"a": entry()}, "bulk_token": "next"},
            "next": {"results": {"b": entry()}, "bulk_token": "last"},
            "last": {"results": {}, "bulk_token": None},
        }
        self.refresh()
        self.assertEqual([app.id for app in self.applied], ["a", "b"])
        self.assertEqual(self.cc.tokens(), ["{}", '"next"', '"last"'])

    def test_entries_applied_as_page_arrives(self):
        """Each page's entries are applied as soon as it arrives, before the pass ends."""
        self.cc.apps = {f"app-{i}": entry() for i in range(3)}
        self.cc.hang_when = lambda path, args: args.get("bulk_token") == '{"id":2}'
        d = self.refresh()
        self.assertEqual([app.id for app in self.applied], ["app-0", "app-1"])
        self.assertNoResult(d)
        self.assertFalse(self.desired.available)
        self.cc.hang_when = lambda path, args: False
        self.release()
        self.successResultOf(d)
        self.assertEqual(len(self.applied), 3)
        self.assertTrue(self.desired.available)

    def test_entry_parsed(self):
        """A valid entry becomes a DesiredApp keyed by its results key, memory as int MB."""
        self.cc.apps = {"app-1": entry(instances=3, memory=256.0, version="ver-a",
                                       package_state="PENDING", state="STOPPED", id="other")}
        self.refresh()
        self.assertEqual(self.applied, [DesiredApp(
            id="app-1", state="STOPPED", instances=3, version="ver-a", package_state="PENDING",
            updated_at=UPDATED_EPOCH, memory=256)])

    def test_user_counts(self):
        """/bulk/counts?model=user sets total_users from counts.user."""
        self.cc.users = 1234
        self.refresh()
        self.assertEqual(self.metrics.total_users, 1234)
        self.assertEqual(self.cc.requests[0][1], {"model": "user"})

    def test_user_counts_default_zero(self):
        """A counts answer without counts.user sets total_users to 0."""
        self.metrics.total_users = 5
        self.cc.responses = [(200, b'{"counts": {}}')]
        self.refresh()
        self.assertEqual(self.metrics.total_users, 0)
        self.assertTrue(self.desired.available)

    def test_desired_totals_published_at_pass_end(self):
        """Desired totals summed over the pass, and its duration, are published when the
        pass completes, not before."""
        self.cc.apps = {"a": entry(instances=2, memory=128), "b": entry(state="STOPPED"),
                        "c": entry(instances=1, memory=64)}
        self.cc.hang_when = lambda path, args: args.get("bulk_token") == '{"id":3}'
        self.refresh()
        self.assertEqual(self.metrics.desired, DesiredTotals())
        self.advance(3)
        self.cc.hang_when = lambda path, args: False
        self.release()
        self.assertEqual(self.metrics.desired, DesiredTotals(
            apps=3, started_apps=2, instances=4, started_instances=3, memory=576,
            started_memory=320))
        self.assertEqual(self.metrics.bulk_update_loop_duration, 3)

    def test_on_app_failure_does_not_stop_pass(self):
        """An exception from on_app is logged and the rest of the pass is applied."""
        seen = []

        def on_app(app):
            seen.append(app.id)
            if app.id == "a":
                raise RuntimeError("boom")

        self.on_app = on_app
        self.cc.apps = {"a": entry(), "b": entry()}
        self.refresh()
        self.assertEqual(seen, ["a", "b"])
        self.assertTrue(self.desired.available)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ValidationTests(DesiredStateTestCase):
    def test_bad_entries_skipped_and_counted(self):
        """A bad entry is logged with its app id, counted as a skipped bulk_api entry and
        skipped; the other entries of the page are applied."""
        logged = self.capture_logs()
        bad = {
            "bad-state": entry(state="RUNNING"),
            "bad-instances": entry(instances=-1),
            "bool-instances": entry(instances=True),
            "float-instances": entry(instances=1.5),
            "no-version": entry(version=None),
            "empty-version": entry(version=""),
            "bad-package": entry(package_state="UNKNOWN"),
            "bad-time": entry(updated_at="yesterday"),
            "null-time": entry(updated_at=None),
            "bad-memory": entry(memory="256"),
            "bool-memory": entry(memory=False),
            "not-object": [1, 2],
        }
        self.cc.custom_pages = {
            "{}": {"results": dict(good1=entry(), **bad, good2=entry()), "bulk_token": "x"},
            "x": {"results": {}},
        }
        self.refresh()
        self.assertEqual([app.id for app in self.applied], ["good1", "good2"])
        self.assertEqual(self.metrics.skipped_entries, {"bulk_api": len(bad)})
        self.assertTrue(self.desired.available)
        skipped = {event["app_id"] for event in logged if "app_id" in event}
        self.assertEqual(skipped, set(bad))
        # The CC still lists these apps: they must not become "extra apps".
        self.assertEqual(set(self.unreadable), set(bad))

    def test_updated_at_formats(self):
        """updated_at is accepted as "... UTC", "+0000" offsets and ISO-8601 with Z or an
        offset, and becomes epoch seconds."""
        for text in ("2013-09-04 23:26:34 UTC", "2013-09-04 23:26:34 +0000",
                     "2013-09-04 23:26:34+00:00", "2013-09-04T23:26:34Z",
                     "2013-09-04T23:26:34.250Z", "2013-09-05T01:26:34+02:00",
                     "2013-09-04T21:26:34-0200"):
            self.assertEqual(parse_updated_at(text), UPDATED_EPOCH, text)

    def test_updated_at_rejected(self):
        """updated_at that is not a time string is an invalid entry."""
        for value in ("04/09/2013", "", 1378337194, None):
            self.assertRaises(InvalidEntry, parse_updated_at, value)


class FailureTests(DesiredStateTestCase):
    def test_500_marks_unavailable(self):
        """A non-200 ends the pass: desired state unavailable, the status logged, the error
        counted, and refresh() still fires with None."""
        logged = self.capture_logs()
        self.refresh()
        self.cc.responses = [(200, b'{"counts": {"user": 1}}'), (500, b"oops")]
        d = self.refresh()
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(self.desired.available)
        self.assertEqual(self.metrics.bulk_api_errors, 1)
        errors = [formatEvent(e) for e in logged if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("500", errors[0])

    def test_backoff_delays_grow_to_cap(self):
        """Failed passes are retried after 1, 2, 4, ... seconds, capped at
        min(desired_state_update, 60)."""
        self.cc.hang_when = lambda path, args: False
        self.cc.responses = [(500, b"")] * 9
        self.refresh()
        retry_times = []
        for _ in range(600):
            before = self.count("/bulk/counts")
            self.advance(0.5)
            if self.count("/bulk/counts") > before:
                retry_times.append(self.clock.seconds())
        gaps = [b - a for a, b in zip([1000] + retry_times, retry_times, strict=False)]
        self.assertEqual(gaps, [1, 2, 4, 8, 16, 32, 60, 60, 60])
        self.assertTrue(self.desired.available)

    def test_backoff_jitter(self):
        """The retry delay is spread by the injected jitter (±25 %)."""
        self.jitter_value = 1.0
        self.cc.responses = [(500, b"")]
        self.refresh()
        self.advance(1)
        self.assertEqual(self.count("/bulk/counts"), 1)
        self.jitter_value = 0.0
        self.cc.responses = [(500, b"")]
        self.advance(0.25)
        self.assertEqual(self.count("/bulk/counts"), 2)
        self.advance(1)
        self.assertEqual(self.count("/bulk/counts"), 2)
        self.advance(0.5)
        self.assertEqual(self.count("/bulk/counts"), 3)

    def test_backoff_reset_on_success(self):
        """A successful pass resets the backoff to its first delay."""
        self.cc.responses = [(500, b"")] * 2
        self.refresh()
        self.advance(1)
        self.advance(2)
        self.assertTrue(self.desired.available)
        self.cc.responses = [(500, b"")]
        self.refresh()
        self.advance(1)
        self.assertEqual(self.count("/bulk/counts"), 5)
        self.assertTrue(self.desired.available)

    def test_garbage_is_failure(self):
        """A body that is not JSON, not an object, or with non-object results fails the
        pass like a non-200, without an exception escaping."""
        for body in (b"<html>", b"[1, 2]", b'{"results": [1]}', b'"text"',
                     b'{"results": {"a": {}}}'):
            self.cc.responses = [(200, b'{"counts": {"user": 1}}'), (200, body)]
            d = self.refresh()
            self.assertIsNone(self.successResultOf(d))
            self.assertFalse(self.desired.available, body)
        self.assertEqual(self.metrics.bulk_api_errors, 5)

    def test_bad_counts_is_failure(self):
        """A /bulk/counts answer without a whole counts.user fails the pass."""
        for body in (b"nope", b'{"counts": {"user": "many"}}', b'{"counts": 3}'):
            self.cc.responses = [(200, body)]
            self.refresh()
            self.assertFalse(self.desired.available, body)
        self.assertEqual(self.count("/bulk/apps"), 0)

    def test_hanging_request_times_out(self):
        """A request without an answer for intervals.bulk_request_timeout fails the pass."""
        logged = self.capture_logs()
        self.cc.hang_when = lambda path, args: path == "/bulk/apps"
        d = self.refresh()
        self.advance(29.5)
        self.assertNoResult(d)
        self.advance(0.5)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(self.desired.available)
        self.assertEqual(self.metrics.bulk_api_errors, 1)
        errors = [formatEvent(e) for e in logged if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("timed out", errors[0])

    def test_transport_error_drops_credentials(self):
        """A timeout drops the credentials, so the retry requests them again."""
        self.cc.hang_when = lambda path, args: path == "/bulk/counts"
        self.refresh()
        self.advance(30)
        self.cc.hang_when = lambda path, args: False
        self.advance(1)
        self.assertEqual(len(self.bus.requests), 2)
        self.assertTrue(self.desired.available)


class MergingTests(DesiredStateTestCase):
    def test_overlapping_refreshes_merged(self):
        """Three refresh() calls during a pass lead to exactly one follow-up pass, which
        starts when the first ends; two passes never walk at once."""
        self.cc.apps = {"a": entry()}
        self.cc.hang_when = lambda path, args: path == "/bulk/counts"
        first = self.refresh()
        joined = [self.refresh() for _ in range(3)]
        self.assertEqual(self.count("/bulk/counts"), 1)
        self.release()
        self.successResultOf(first)
        for d in joined:
            self.assertNoResult(d)
        self.assertEqual(self.count("/bulk/counts"), 2)
        self.release()
        for d in joined:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.count("/bulk/counts"), 2)
        self.assertEqual(self.cc.max_held, 1)

    def test_refresh_tracked_by_scheduler(self):
        """refresh() Deferreds are tracked, so the scheduler is idle only once they fire."""
        self.cc.hang_when = lambda path, args: path == "/bulk/counts"
        self.refresh()
        idle = self.scheduler.idle()
        self.assertNoResult(idle)
        self.cc.hang_when = lambda path, args: False
        self.release()
        self.successResultOf(idle)

    def test_refresh_replaces_pending_retry(self):
        """refresh() while a retry is pending cancels it and starts a pass at once."""
        self.cc.responses = [(500, b"")]
        self.refresh()
        self.refresh()
        self.assertEqual(self.count("/bulk/counts"), 2)
        self.assertTrue(self.desired.available)
        self.advance(5)
        self.assertEqual(self.count("/bulk/counts"), 2)

    def test_stop_cancels_retry(self):
        """stop() cancels a pending retry."""
        self.cc.responses = [(500, b"")]
        self.refresh()
        self.desired.stop()
        self.advance(120)
        self.assertEqual(self.count("/bulk/counts"), 1)

    def test_stop_abandons_pass(self):
        """stop() abandons the running pass: its waiters and the follow-up's fire, nothing
        is applied or retried afterwards."""
        self.cc.apps = {"a": entry()}
        self.cc.hang_when = lambda path, args: path == "/bulk/counts"
        first = self.refresh()
        follow_up = self.refresh()
        self.desired.stop()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(follow_up))
        self.advance(120)
        self.assertEqual(self.count("/bulk/counts"), 1)
        self.assertEqual(self.applied, [])
        self.assertEqual(self.metrics.bulk_api_errors, 0)
        self.assertIsNone(self.successResultOf(self.desired.refresh()))


class FreshnessTests(DesiredStateTestCase):
    intervals = dict(DesiredStateTestCase.intervals, desired_state_lost=100)

    def test_unavailable_initially(self):
        """Before any pass the desired state is neither available nor fresh."""
        self.assertFalse(self.desired.available)
        self.assertFalse(self.desired.is_fresh())

    def test_fresh_after_pass_until_lost(self):
        """After a complete pass the desired state is fresh for desired_state_lost seconds."""
        self.refresh()
        self.assertTrue(self.desired.is_fresh())
        self.advance(100)
        self.assertTrue(self.desired.is_fresh())
        self.advance(1)
        self.assertFalse(self.desired.is_fresh())
        self.assertTrue(self.desired.available)

    def test_not_fresh_after_failure(self):
        """A failed pass makes the desired state unavailable and not fresh."""
        self.refresh()
        self.cc.responses = [(503, b"")]
        self.refresh()
        self.assertFalse(self.desired.available)
        self.assertFalse(self.desired.is_fresh())

    def test_available_needs_complete_pass(self):
        """A 200 page mid-pass does not make the desired state available; the full pass does."""
        self.cc.apps = {"a": entry(), "b": entry(), "c": entry()}
        self.cc.hang_when = lambda path, args: args.get("bulk_token") == '{"id":2}'
        self.refresh()
        self.assertEqual(len(self.applied), 2)
        self.assertFalse(self.desired.available)


class IoClockTests(SynchronousTestCase):
    def test_request_timeout_runs_on_the_io_clock(self):
        """With an io_clock (black-box mode), a hanging request times out in real time even
        though the policy clock does not move."""
        policy_clock, io_clock = Clock(), Clock()
        config, _ = build_config({"mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "cc"}},
                                 environ={})
        scheduler = Scheduler(policy_clock)
        hanging = Deferred()
        errors = []

        class HangingClient:
            def get(self, *args, **kwargs):
                return hanging

        state = DesiredState(config, scheduler, None, HangingClient(), Metrics(),
                             on_app=lambda app, asked_at: None, io_clock=io_clock)
        d = Deferred.fromCoroutine(state._get_json(state._base + "/counts", ("u", "p")))
        d.addErrback(errors.append)
        policy_clock.advance(10_000)
        self.assertEqual(errors, [])
        io_clock.advance(config.intervals.bulk_request_timeout)
        self.assertEqual(len(errors), 1)
        self.assertIn("timed out", str(errors[0].value))


class ConfiguredCredentialsTestCase(DesiredStateTestCase):
    """bulk_api.user/password set: HM9000's way of getting the bulk credentials."""

    bulk_api = {"host": "cc.example.com", "batch_size": 2, "user": "cfg_user",
                "password": "cfg-pass"}
    extra = {}
    options = {}

    def setUp(self):
        super().setUp()
        self.desired.stop()
        self.config, _ = build_config(
            {"mbus": "nats://127.0.0.1:4222", "bulk_api": self.bulk_api,
             "intervals": self.intervals, **self.extra}, environ={})
        self.desired = DesiredState(self.config, self.scheduler, self.bus, self.http,
                                    self.metrics, lambda app, asked_at: self.on_app(app),
                                    jitter=lambda: self.jitter_value,
                                    on_unreadable=self.unreadable.append, **self.options)
        self.addCleanup(self.desired.stop)


class ConfiguredCredentialsTests(ConfiguredCredentialsTestCase):
    def test_configured_credentials_used_without_nats(self):
        """Every request carries the configured Basic auth; nothing is asked over NATS."""
        self.cc.apps = {"a": entry()}
        self.refresh()
        self.assertTrue(self.desired.available)
        self.assertEqual(self.bus.requests, [])
        self.assertEqual(self.metrics.bulk_credentials_requests, 0)
        expected = "Basic " + base64.b64encode(b"cfg_user:cfg-pass").decode()
        self.assertEqual({auth for _path, _args, auth in self.cc.requests}, {expected})
        self.assertEqual(self.cc.paths(), ["/bulk/counts", "/bulk/apps", "/bulk/apps"])

    def test_401_names_the_configured_credentials_and_never_asks_nats(self):
        """A 401 is logged as wrong configured credentials, counted, and retried with the
        same credentials: never a NATS request."""
        logged = self.capture_logs()
        self.cc.responses = [(401, b"Unauthorized"), (401, b"Unauthorized")]
        self.refresh()
        self.assertFalse(self.desired.available)
        self.assertEqual(self.metrics.bulk_api_unauthorized, 1)
        self.assertEqual(self.metrics.bulk_api_errors, 1)
        errors = [formatEvent(e) for e in logged if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("refused the configured credentials", errors[0])
        self.assertIn("bulk_api.user 'cfg_user'", errors[0])
        self.assertNotIn("cfg-pass", errors[0])
        self.advance(1)
        self.assertEqual(self.metrics.bulk_api_unauthorized, 2)
        self.advance(2)
        self.assertTrue(self.desired.available)
        self.assertEqual(self.bus.requests, [])
        expected = "Basic " + base64.b64encode(b"cfg_user:cfg-pass").decode()
        self.assertEqual({auth for _path, _args, auth in self.cc.requests}, {expected})

    def test_transport_error_keeps_configured_credentials(self):
        """A hanging CC fails the pass; the retry uses the configured credentials still."""
        self.cc.hang_when = lambda path, args: path == "/bulk/counts"
        self.refresh()
        self.advance(30)
        self.assertFalse(self.desired.available)
        self.cc.hang_when = lambda path, args: False
        self.advance(1)
        self.assertTrue(self.desired.available)
        self.assertEqual(self.bus.requests, [])


class NatsCredentialsUnauthorizedTests(DesiredStateTestCase):
    def test_401_is_counted_and_asks_again(self):
        """Without configured credentials a 401 is counted and the log says they will be
        asked again over NATS."""
        logged = self.capture_logs()
        self.cc.responses = [(401, b"Unauthorized")]
        self.refresh()
        self.assertEqual(self.metrics.bulk_api_unauthorized, 1)
        errors = [formatEvent(e) for e in logged if e["log_level"] == LogLevel.error]
        self.assertIn("asked again over NATS", errors[0])


class Hm9000DesiredStateTests(ConfiguredCredentialsTestCase):
    """As the hm9000 mode builds it: no /bulk/counts, entries as 2017's CCs send them."""

    options = {"fetch_user_counts": False, "require_memory_and_updated_at": False}

    def test_no_user_counts_request(self):
        """HM9000 never asked /bulk/counts: the pass is /bulk/apps pages only."""
        self.cc.apps = {"a": entry(), "b": entry(), "c": entry()}
        self.refresh()
        self.assertTrue(self.desired.available)
        self.assertEqual(self.cc.paths(), ["/bulk/apps"] * 3)
        self.assertEqual(self.metrics.total_users, 0)

    def test_entries_without_memory_and_updated_at(self):
        """An entry of ccng 80a53d8a7f (2017-01) has neither memory nor updated_at: it is
        applied with both 0; a present but bad value is still refused."""
        lean = {"id": "app-1", "instances": 2, "state": "STARTED", "version": "v9",
                "package_state": "PENDING"}
        self.cc.custom_pages = {
            "{}": {"results": {"app-1": lean, "app-2": entry(),
                               "bad-memory": dict(lean, memory="256"),
                               "bad-time": dict(lean, updated_at="yesterday")},
                   "bulk_token": "x"},
            "x": {"results": {}, "bulk_token": "x"},
        }
        self.refresh()
        self.assertTrue(self.desired.available)
        self.assertEqual(self.applied, [
            DesiredApp(id="app-1", state="STARTED", instances=2, version="v9",
                       package_state="PENDING", updated_at=0, memory=0),
            DesiredApp(id="app-2", state="STARTED", instances=1, version="v1",
                       package_state="STAGED", updated_at=UPDATED_EPOCH, memory=256)])
        self.assertEqual(set(self.unreadable), {"bad-memory", "bad-time"})

    def test_hm2_pass_refuses_entries_without_them(self):
        """HM 2.0's CCs always sent memory and updated_at: by default an entry without
        them is unreadable."""
        self.assertRaises(InvalidEntry, parse_entry, "a", {
            "instances": 1, "state": "STARTED", "version": "v", "package_state": "STAGED"})
