"""DesiredState: the Cloud Controller's desired state, fetched from the bulk API.

Owns the bulk credentials (from the config, as HM9000 took them; else requested over NATS,
cached until a 401 or a transport error), the refresh pass (user counts unless told not to,
then every /bulk/apps page, each valid entry handed to `on_app` as its page arrives), the
merging of overlapping refreshes, retries with backoff and jitter, and the "available" /
"fresh" view the policy gates on (PROTOCOL.md §2, §5.2).
"""

import random
from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from health_manager.constants import FAILED, PENDING, STAGED, STARTED, STOPPED
from health_manager.interfaces import IDesiredState
from health_manager.metrics import DesiredTotals
from health_manager.model.desired_app import DesiredApp
from health_manager.scheduler import Scheduler

BULK_SUBJECT = "bulk_api"
_APP_STATES = (STARTED, STOPPED)
_PACKAGE_STATES = (PENDING, STAGED, FAILED)

# Retry delays: 1 s doubling up to min(desired_state_update, 60) s, each spread by ±25 %
# so that many health managers do not hit a recovering CC in step.
BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 60.0
BACKOFF_JITTER = 0.25


class BulkError(Exception):
    """A refresh pass failed; the message says why (never containing credentials)."""

    def __init__(self, message, drop_credentials=False):
        super().__init__(message)
        self.drop_credentials = drop_credentials


class InvalidEntry(ValueError):
    """A /bulk/apps entry that cannot be applied; the message names what is wrong."""


def parse_updated_at(value):
    """Epoch seconds from the CC's `updated_at`: "YYYY-MM-DD HH:MM:SS UTC", a "+0000"
    offset, or ISO-8601 with Z or an offset. Times without a zone are taken as UTC."""
    if not isinstance(value, str):
        raise InvalidEntry(f"updated_at must be a time string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith("UTC"):
        text = text[:-3].rstrip() + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEntry(f"updated_at {value!r} is not a recognised time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def parse_entry(app_id, entry, require_memory_and_updated_at=True):
    """A DesiredApp from one `results` entry, or InvalidEntry naming the problem.

    Without `require_memory_and_updated_at`, an entry may lack `memory` and `updated_at`
    (read as 0): CCs from `80a53d8a7f` (2017-01) send only id, instances, state, version
    and package_state, all HM9000 read; a value that is present is still checked."""
    if not isinstance(entry, dict):
        raise InvalidEntry(f"entry must be an object, got {type(entry).__name__}")
    state = entry.get("state")
    if state not in _APP_STATES:
        raise InvalidEntry(f"state must be STARTED or STOPPED, got {state!r}")
    instances = entry.get("instances")
    if type(instances) is not int or instances < 0:
        raise InvalidEntry(f"instances must be a whole number >= 0, got {instances!r}")
    version = entry.get("version")
    if not isinstance(version, str) or not version:
        raise InvalidEntry(f"version must be a non-empty string, got {version!r}")
    package_state = entry.get("package_state")
    if package_state not in _PACKAGE_STATES:
        raise InvalidEntry(
            f"package_state must be PENDING, STAGED or FAILED, got {package_state!r}")
    memory = entry.get("memory")
    updated_at = entry.get("updated_at")
    if memory is None and not require_memory_and_updated_at:
        memory = 0
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory < 0:
        raise InvalidEntry(f"memory must be a number of MB >= 0, got {memory!r}")
    return DesiredApp(
        id=app_id,
        state=state,
        instances=instances,
        version=version,
        package_state=package_state,
        updated_at=0 if updated_at is None and not require_memory_and_updated_at
        else parse_updated_at(updated_at),
        memory=int(memory),
    )


@implementer(IDesiredState)
class DesiredState:
    """Runs refresh passes against the bulk API, at most one at a time."""

    log = Logger()

    def __init__(self, config, scheduler, bus, http_client, metrics, on_app,
                 jitter=random.random, io_clock=None, on_unreadable=None,
                 fetch_user_counts=True, require_memory_and_updated_at=True):
        """`on_app(DesiredApp, asked_at)` gets each valid entry with the time its page was
        requested (an entry asked for before an app changed describes the old app);
        `on_unreadable(app_id)` the id of
        each entry skipped as invalid (the app exists, its description is unusable).

        `fetch_user_counts`: start each pass with /bulk/counts (HM 2.0 did, for its
        `total_users`; HM9000 never asked). `require_memory_and_updated_at`: entries
        without them are invalid (HM 2.0 read both; HM9000-era CCs stopped sending them
        in 2017, see parse_entry)."""
        self._config = config
        self._scheduler = scheduler
        # Request timeouts are network time, not policy time: in black-box mode they run on
        # the real reactor, so a hanging Cloud Controller cannot wedge an advance_time.
        self._timeouts = Scheduler(io_clock) if io_clock is not None else scheduler
        self._bus = bus
        self._http = http_client
        self._metrics = metrics
        self._on_app = on_app
        self._on_unreadable = on_unreadable
        self._jitter = jitter
        self._base = f"{config.bulk_api.host}/bulk"
        self._fetch_user_counts = fetch_user_counts
        self._require_memory_and_updated_at = require_memory_and_updated_at
        bulk_api = config.bulk_api
        # Credentials from the config are never asked over NATS, nor dropped on a 401.
        self._configured = (None if bulk_api.user is None
                            else (bulk_api.user, bulk_api.password))
        self._backoff_cap = min(config.intervals.desired_state_update, BACKOFF_CAP)

        self.available = False
        self._last_success = None
        self._credentials = None
        self._pass = None  # Deferred of the running pass
        self._follow_up = []  # waiters for the one pass that starts after the running one
        self._retry = None  # Receipt of the pending retry
        self._failures = 0  # consecutive failed passes, for the backoff
        self._stopped = False

    # --- IDesiredState ---------------------------------------------------------------------

    def is_fresh(self):
        return (self.available and self._last_success is not None
                and self._scheduler.now() - self._last_success
                <= self._config.intervals.desired_state_lost)

    @property
    def last_success(self):
        """Scheduler time the last complete bulk pass ended, or None before the first."""
        return self._last_success

    def refresh(self):
        waiter: Deferred[None] = Deferred()
        if self._stopped:
            waiter.callback(None)
            return waiter
        self._cancel_retry()
        if self._pass is None:
            self._start_pass([waiter])
        else:
            self._follow_up.append(waiter)
        return self._scheduler.track(waiter)

    def stop(self):
        """Cancel the retry timer and abandon the running pass; every waiter fires."""
        self._stopped = True
        self._cancel_retry()
        follow_up, self._follow_up = self._follow_up, []
        if self._pass is not None:
            self._pass.cancel()
        for waiter in follow_up:
            waiter.callback(None)

    # --- the pass --------------------------------------------------------------------------

    def _start_pass(self, waiters):
        started = self._scheduler.now()
        totals = DesiredTotals()
        running = Deferred.fromCoroutine(self._walk(totals))
        self._pass = running
        running.addBoth(self._pass_ended, waiters, started, totals)

    async def _walk(self, totals):
        credentials = await self._get_credentials()
        if self._fetch_user_counts:
            await self._fetch_user_count(credentials)
        token: dict[str, object] = {}
        while True:
            query = urlencode({"batch_size": self._config.bulk_api.batch_size,
                               "bulk_token": orjson.dumps(token).decode()})
            asked_at = self._scheduler.now()
            page = await self._get_json(f"{self._base}/apps?{query}", credentials)
            if not isinstance(page, dict):
                raise BulkError(f"/bulk/apps answered a JSON {type(page).__name__}, "
                                f"not an object")
            results = page.get("results")
            if results is None or results == {}:
                return
            if not isinstance(results, dict):
                raise BulkError(f"/bulk/apps 'results' is a {type(results).__name__}, "
                                f"not an object")
            if "bulk_token" not in page:
                raise BulkError("/bulk/apps page has results but no bulk_token")
            self._apply_page(results, totals, asked_at)
            token = page["bulk_token"]

    def _apply_page(self, results, totals, asked_at):
        for app_id, entry in results.items():
            try:
                app = parse_entry(app_id, entry, self._require_memory_and_updated_at)
            except InvalidEntry as e:
                self.log.warn("bulk entry {app_id} skipped: {problem}",
                              app_id=app_id, problem=str(e))
                self._metrics.skip_entry(BULK_SUBJECT)
                if self._on_unreadable is not None:
                    self._on_unreadable(app_id)
                continue
            totals.add(app.state, app.instances, app.memory)
            try:
                self._on_app(app, asked_at)
            except Exception:
                self.log.failure("applying desired state of {app_id} failed", app_id=app_id)

    async def _fetch_user_count(self, credentials):
        body = await self._get_json(f"{self._base}/counts?model=user", credentials)
        counts = body.get("counts") if isinstance(body, dict) else None
        users = counts.get("user", 0) if isinstance(counts, dict) else None
        if type(users) is not int or users < 0:
            raise BulkError("/bulk/counts answered without a whole counts.user")
        self._metrics.total_users = users

    async def _get_json(self, url, credentials):
        """The decoded JSON body of a 200 answer to GET `url`; BulkError otherwise."""
        timeout = self._config.intervals.bulk_request_timeout
        timed_out = []

        def expire():
            timed_out.append(True)
            request.cancel()

        request = Deferred.fromCoroutine(self._get_body(url, credentials))
        timer = self._timeouts.after(timeout, expire, "bulk request timeout")
        path = url[len(self._base):]
        try:
            code, body = await request
        except Exception as e:
            # The HTTP client may report a cancelled request as its own error type.
            if timed_out:
                raise BulkError(f"GET {path} timed out after {timeout} s",
                                drop_credentials=True) from None
            if isinstance(e, CancelledError):
                raise
            raise BulkError(f"GET {path} failed: {type(e).__name__}: {e}",
                            drop_credentials=True) from None
        finally:
            timer.cancel()
        if code == 401:
            self._metrics.bulk_api_unauthorized += 1
            if self._configured is not None:
                raise BulkError(
                    f"GET {path} answered HTTP 401: the Cloud Controller refused the "
                    f"configured credentials (bulk_api.user {self._configured[0]!r}); check "
                    f"bulk_api.user and bulk_api.password (they are not asked over NATS)")
            raise BulkError(f"GET {path} answered HTTP 401: the credentials will be asked "
                            f"again over NATS", drop_credentials=True)
        if code != 200:
            raise BulkError(f"GET {path} answered HTTP {code}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BulkError(f"GET {path} answered a body that is not JSON") from None

    async def _get_body(self, url, credentials):
        response = await self._http.get(url, auth=credentials)
        body = await response.content()
        return response.code, body

    async def _get_credentials(self):
        if self._configured is not None:
            return self._configured
        if self._credentials is not None:
            return self._credentials
        subject = self._config.bulk_credentials_subject
        self._metrics.bulk_credentials_requests += 1
        try:
            replies = await self._bus.request(
                subject, b"", timeout=self._config.intervals.bulk_credentials_timeout,
                max_replies=1)
        except CancelledError:
            raise
        except Exception as e:
            if not self._bus.connected:
                # The credentials come over NATS: without it there is no desired state.
                raise BulkError(f"no bulk credentials on {subject}: NATS is not connected, "
                                f"and the credentials come over NATS") from None
            raise BulkError(f"no bulk credentials on {subject}: {type(e).__name__}") from None
        try:
            reply = orjson.loads(replies[0].data)
        except (orjson.JSONDecodeError, IndexError):
            reply = None
        user = reply.get("user") if isinstance(reply, dict) else None
        password = reply.get("password") if isinstance(reply, dict) else None
        if not isinstance(user, str) or not isinstance(password, str):
            self._metrics.reject(subject)
            raise BulkError(f"bad bulk credentials reply on {subject}: "
                            f"expected an object with string user and password")
        self._credentials = (user, password)
        return self._credentials

    def _pass_ended(self, outcome, waiters, started, totals):
        self._pass = None
        failed = False
        if not isinstance(outcome, Failure):
            self._succeeded(started, totals)
        elif self._stopped:
            self.log.info("bulk update abandoned: stopping")
        else:
            failed = True
            if outcome.check(BulkError):
                self._failed(outcome.value)
            else:
                self.log.failure("bulk update crashed", outcome)
                self._failed(BulkError("internal error"))
        follow_up, self._follow_up = self._follow_up, []
        if follow_up and not self._stopped:
            self._start_pass(follow_up)
        elif failed and not self._stopped:
            self._schedule_retry()
        for waiter in waiters:
            waiter.callback(None)

    def _succeeded(self, started, totals):
        now = self._scheduler.now()
        self.available = True
        self._last_success = now
        self._failures = 0
        self._metrics.publish_desired(totals, now - started)
        self.log.info("bulk update done: {apps} apps in {duration:.3f} s",
                      apps=totals.apps, duration=now - started)

    def _failed(self, error):
        self.available = False
        self._failures += 1
        self._metrics.bulk_api_errors += 1
        if error.drop_credentials:
            self._credentials = None
        self.log.error("bulk update failed, desired state unavailable: {error}",
                       error=str(error))

    # --- retries ---------------------------------------------------------------------------

    def _schedule_retry(self):
        # The exponent is bounded so a long outage cannot overflow the float.
        doublings = min(self._failures - 1, 32)
        delay = min(BACKOFF_INITIAL * 2 ** doublings, self._backoff_cap)
        delay *= 1 + BACKOFF_JITTER * (2 * self._jitter() - 1)
        self.log.info("bulk update retry in {delay:.1f} s", delay=delay)
        self._retry = self._scheduler.after(delay, self._retry_now, "bulk update retry")

    def _retry_now(self):
        self._retry = None
        waiter: Deferred[None] = Deferred()
        self._start_pass([waiter])
        return waiter

    def _cancel_retry(self):
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
