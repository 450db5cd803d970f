"""NatsBus: IMessageBus over nats-py on Twisted's asyncio reactor, and request/reply gathering.

Nothing outside this module sees asyncio. The bus connects in the background and retries
forever; subscriptions and publications made before the first connection are kept here and
handed to the client once it is up. After that nats-py buffers publications and replays
subscriptions across reconnects by itself, so this module never resubscribes on a reconnect
(HM 2.0's cf-message-bus did, and processed messages twice after an outage).

A NATS cluster is several servers: nats-py connects to one, picked at random (its default,
as most NATS clients do, so that clients spread over the cluster and do not all reconnect
to one), and on a drop tries the others in a new random order, including those the
cluster announces (INFO connect_urls), each with the same credentials.
`server` names the one it is on, and the log says so on each (re)connection.
"""

import asyncio
import collections
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import nats.aio.client
import nats.errors
import nats.js.api
from nats.nuid import NUID
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from health_manager.config import redact_servers, split_servers
from health_manager.interfaces import BusMessage, IMessageBus, ISubscription, RequestTimeout

_STATUS = nats.js.api.Header.STATUS.value
# While NATS is unreachable: one line when it becomes so, then a reminder at most this often.
UNREACHABLE_REMINDER = 60.0


def _credentials(user, password):
    """(nats-py connect options, the userinfo shown in logs) for a URI's user and password:
    a user alone is a token, as nats-py reads it in a URI."""
    if user is None:
        return {}, ""
    if password is None:
        return {"token": user}, "***@"
    return {"user": user, "password": password}, f"{user}:***@"


def _without_userinfo(uri):
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class OutageLog:
    """The log of one NATS outage: a line when the state changes (unreachable, connected
    again) and a reminder each `reminder` seconds in between, never a line per attempt."""

    log = Logger(namespace="health_manager.bus.NatsBus")

    def __init__(self, clock, url, cap, reminder=UNREACHABLE_REMINDER, servers=1):
        """`cap` is the longest wait between two attempts (the backoff's ceiling);
        `servers` are configured: NATS is unreachable once as many attempts failed (one
        member of a cluster down is no outage while another answers)."""
        self._clock = clock
        self._url = url
        self._cap = cap
        self._reminder = reminder
        self._servers = servers
        self._since = None  # when the outage began, None while connected
        self._logged_at = None
        self._announced = False  # its first line is out
        self.failures = 0

    def disconnected(self):
        """The link dropped (its own line was logged): the outage starts now."""
        if self._since is None:
            self._since = self._logged_at = self._clock.seconds()
            self.failures = 0
            self._announced = True

    def failed(self, error, retry):
        """One failed attempt; `retry` is the current delay before the next one."""
        now = self._clock.seconds()
        self.failures += 1
        if self._since is None:
            self._since = now
        if not self._announced:
            if self.failures < self._servers:
                return
            self._announced = True
            self._logged_at = now
            self.log.warn("NATS unreachable at {url}: {error}; retrying after {retry:g} s, "
                          "backing off to every {cap:g} s; a reminder every {reminder:g} s",
                          url=self._url, error=error, retry=retry, cap=self._cap,
                          reminder=self._reminder)
        elif now - self._logged_at >= self._reminder:
            self._logged_at = now
            self.log.warn("NATS still unreachable at {url} after {seconds:.0f} s and "
                          "{attempts} attempts: {error}", url=self._url, error=error,
                          seconds=now - self._since, attempts=self.failures)

    def connected(self):
        """Connected: returns (seconds, failed attempts) of the outage that ended, if any."""
        since, self._since = self._since, None
        failures, self.failures = self.failures, 0
        self._announced = False
        return None if since is None else (self._clock.seconds() - since, failures)


class ReplyGatherer:
    """One request: up to `max_replies` replies on a private inbox, or a timeout on `clock`.

    `result` fires with the list of BusMessage replies, or fails with RequestTimeout when none
    came. The inbox is subscribed before the request is published, and unsubscribed at the end.
    """

    def __init__(self, bus, clock, max_replies, timeout):
        self.result: defer.Deferred[list[BusMessage]] = defer.Deferred(
            lambda _: self._finish())
        self._bus = bus
        self._clock = clock
        self._max_replies = max_replies
        self._timeout = timeout
        self._replies = []
        self._subscription = None
        self._timer = None
        self._subject = None

    def send(self, subject, data, inbox):
        self._subject = subject
        subscribed = self._bus.subscribe(inbox, self._on_reply)
        subscribed.addCallbacks(self._publish, self._failed, callbackArgs=(subject, data, inbox))
        return self.result

    def _publish(self, subscription, subject, data, inbox):
        self._subscription = subscription
        if self.result.called:
            subscription.unsubscribe()
            return
        self._timer = self._clock.callLater(self._timeout, self._on_timeout)
        self._bus.publish(subject, data, reply=inbox)

    def _on_reply(self, message):
        if self.result.called:
            return
        self._replies.append(message)
        if len(self._replies) >= self._max_replies:
            self._finish()
            self.result.callback(self._replies)

    def _on_timeout(self):
        self._timer = None
        self._finish()
        if self._replies:
            self.result.callback(self._replies)
        else:
            self.result.errback(RequestTimeout(
                f"no reply on {self._subject!r} within {self._timeout} s"))

    def _failed(self, failure):
        if not self.result.called:
            self.result.errback(failure)

    def _finish(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None


@implementer(ISubscription)
class NatsSubscription:
    """A subscription of ours; bound to a nats-py subscription once the client is connected."""

    def __init__(self, bus, subject, callback, queue):
        self.subject = subject
        self.queue = queue
        self.callback = callback
        self.active = True
        self.client_sub = None
        self._bus = bus

    def unsubscribe(self):
        if not self.active:
            return defer.succeed(None)
        self.active = False
        return self._bus._unsubscribe(self)


@implementer(IMessageBus)
class NatsBus:
    """The message bus of a running health manager, on nats-py."""

    log = Logger()

    def __init__(self, reactor, servers: str | Sequence[str], name="health_manager",
                 reconnect_time_wait=1.0, max_retry_delay=10.0, connect_timeout=2.0,
                 ping_interval=30, pending_size=64 * 1024 * 1024, stop_timeout=4.0,
                 client_factory=nats.aio.client.Client):
        """`servers`: a cluster's nats:// URIs, as a list or separated by commas as in
        `mbus`, all with the same credentials (config.nats_servers checks that).
        `reconnect_time_wait` paces nats-py's own connection attempts; `max_retry_delay`
        caps our backoff when a whole connect call fails; `pending_size` bytes of
        publications are buffered while disconnected; `stop` gives up after
        `stop_timeout`."""
        self._reactor = reactor
        self._loop = reactor._asyncioEventloop
        if isinstance(servers, str):
            servers = [uri.strip() for uri in split_servers(servers)]
        self._safe_url = redact_servers(servers)
        # The credentials go to nats-py as options, not inside the URIs: it then uses them on
        # the servers the cluster announces too, and sees those as the ones configured.
        first = urlsplit(servers[0])
        self._password = first.password
        self._credentials, self._shown_userinfo = _credentials(first.username, first.password)
        self._servers = [_without_userinfo(uri) for uri in servers]
        self._name = name
        self._reconnect_time_wait = reconnect_time_wait
        self._max_retry_delay = max_retry_delay
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._pending_size = pending_size
        self._stop_timeout = stop_timeout
        self._client_factory = client_factory
        self.connected = False
        self.server = None  # the server connected to, password redacted; None while not
        self.dropped_publications = 0
        self.slow_consumer_drops = 0
        self.reconnects = 0  # connections regained after the first
        self._ever_connected = False
        self._outage = OutageLog(reactor, self._safe_url, max_retry_delay,
                                 servers=len(servers))
        self._last_slow_consumer_log = None
        self._listeners: list[Callable[[bool], object]] = []
        self._subscriptions: list[NatsSubscription] = []
        self._early_publications: list[tuple[str, bytes, str | None]] = []
        # (subject, payload, reply subject or "")
        self._outbox: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._sender = None
        self._early_bytes = 0
        self._client = None
        self._ready = False
        self._connect_task = None
        self._stopping = False
        self._nuid = NUID()

    @property
    def failed_attempts(self):
        """Connection attempts failed in the current outage (0 while connected)."""
        return self._outage.failures

    # --- IMessageBus -----------------------------------------------------------------------

    def start(self):
        if self._connect_task is None and not self._stopping:
            self._connect_task = self._loop.create_task(self._connect_forever())
        return defer.succeed(None)

    def stop(self):
        self._stopping = True
        return self._as_deferred(self._shutdown())

    def publish(self, subject, data, reply=None):
        if not isinstance(data, bytes):
            raise TypeError(f"bus payloads are bytes, got {type(data).__name__}")
        if not self._ready:
            self._buffer_early(subject, data, reply)
            return
        self._outbox.append((subject, data, reply or ""))
        if self._sender is None:
            self._sender = self._loop.create_task(self._send_outbox(self._client))

    def subscribe(self, subject, callback, queue=None):
        subscription = NatsSubscription(self, subject, callback, queue)
        self._subscriptions.append(subscription)
        if not self._ready:
            return defer.succeed(subscription)
        bound = self._as_deferred(self._bind(self._client, subscription))
        bound.addCallbacks(lambda _: subscription, self._bind_failed,
                           errbackArgs=(subscription,))
        return bound

    def request(self, subject, data=b"", timeout=5.0, max_replies=1):
        gatherer = ReplyGatherer(self, self._reactor, max_replies, timeout)
        return gatherer.send(subject, data, f"_INBOX.{self._nuid.next().decode()}")

    def flush(self, timeout=5.0):
        if not self._ready or self._stopping:
            return defer.fail(RequestTimeout("flush: not connected to NATS"))
        return self._as_deferred(self._flush(self._client, timeout))

    def add_connection_listener(self, callback):
        self._listeners.append(callback)

    # --- connection ------------------------------------------------------------------------

    async def _connect_forever(self):
        """Connect, retrying with a capped doubling delay when nats-py gives up on a call."""
        delay = self._reconnect_time_wait
        while not self._stopping:
            client = self._client_factory()
            self._client = client
            try:
                await client.connect(**self._connect_options(client))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._outage.failed(self._scrub(error), delay)
                await self._close_quietly(client)
                await self._sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            await self._on_first_connect(client)
            return

    def _connect_options(self, client):
        return dict(
            servers=self._servers, **self._credentials, name=self._name, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=self._reconnect_time_wait,
            connect_timeout=self._connect_timeout, ping_interval=self._ping_interval,
            pending_size=self._pending_size, drain_timeout=self._stop_timeout,
            error_cb=self._error_callback(client),
            disconnected_cb=self._state_callback(client, False),
            reconnected_cb=self._state_callback(client, True),
            closed_cb=self._closed_callback(client))

    async def _on_first_connect(self, client):
        """Bind the subscriptions made so far, then send the publications made so far."""
        # Subscriptions made while binding land in the list too: loop until none is left.
        unbound = self._unbound()
        while unbound:
            for subscription in unbound:
                try:
                    await self._bind(client, subscription)
                except nats.errors.Error as error:
                    self._forget(subscription)
                    self.log.error("NATS subscription to {subject} refused: {error}",
                                   subject=subscription.subject, error=self._scrub(error))
            unbound = self._unbound()
        self._ready = True
        early, self._early_publications, self._early_bytes = self._early_publications, [], 0
        for subject, data, reply in early:
            self.publish(subject, data, reply)
        # The link may have dropped while binding; nats-py then reports the reconnect.
        self._set_connected(client.is_connected)

    def _unbound(self):
        return [s for s in self._subscriptions if s.client_sub is None]

    def _state_callback(self, client, connected):
        async def on_state_change():
            if client is self._client:
                self._set_connected(connected)
        return on_state_change

    def _closed_callback(self, client):
        async def on_closed():
            if client is not self._client:
                return
            self._set_connected(False)
            if self._stopping:
                return
            # nats-py closes for good on some server errors: start over with a new client;
            # the old one is gone, so binding every subscription again cannot duplicate.
            self.log.warn("NATS connection to {url} closed by the client; reconnecting",
                          url=self._safe_url)
            self._ready = False
            for subscription in self._subscriptions:
                subscription.client_sub = None
            self._connect_task = self._loop.create_task(self._connect_forever())
        return on_closed

    def _error_callback(self, client: nats.aio.client.Client):
        async def on_error(error):
            # Errors of a replaced client, or while stopping, are no news.
            if client is not self._client or self._stopping:
                return
            if isinstance(error, nats.errors.SlowConsumerError):
                self._slow_consumer(error.subject)
            elif not self.connected:
                # nats-py waits `reconnect_time_wait` between attempts and reads it anew
                # each time: doubling it (up to max_retry_delay) is the capped backoff.
                options = client.options
                wait = options.get("reconnect_time_wait", self._reconnect_time_wait)
                self._outage.failed(self._scrub(error), wait)
                options["reconnect_time_wait"] = min(wait * 2, self._max_retry_delay)
            else:
                self.log.warn("NATS error on {url}: {error}",
                              url=self.server, error=self._scrub(error))
        return on_error

    def _set_connected(self, connected):
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            client = self._client
            if client is not None and getattr(client, "options", None) is not None:
                client.options["reconnect_time_wait"] = self._reconnect_time_wait
            self.server = self._server_of(client)
            outage = self._outage.connected()
            if outage is None:
                self.log.info("NATS connected to {url}", url=self.server)
            else:
                self.log.info("NATS connected to {url} after {seconds:.0f} s and {attempts} "
                              "failed attempts", url=self.server, seconds=outage[0],
                              attempts=outage[1])
        else:
            self._outage.disconnected()
            if self._stopping:  # our own drain and close: nothing went wrong
                self.log.info("NATS connection to {url} closed",
                              url=self.server or self._safe_url)
            else:
                self.log.warn("NATS disconnected from {url}", url=self.server or self._safe_url)
            self.server = None
        for listener in list(self._listeners):
            try:
                listener(connected)
            except Exception:
                self.log.failure("connection listener {listener!r} failed", listener=listener)

    def _server_of(self, client):
        """The server `client` is connected to, as a URI with the password redacted."""
        url = client.connected_url
        if url is None:  # the link dropped again already
            return self._safe_url
        return f"{url.scheme}://{self._shown_userinfo}{url.netloc}"

    async def _shutdown(self):
        """Drain, then close; bounded by `stop_timeout` even when the server is gone."""
        connecting, self._connect_task = self._connect_task, None
        if connecting is not None:
            await self._cancel(connecting)
        client = self._client
        if client is not None and client.is_connected:
            try:
                await asyncio.wait_for(client.drain(), self._stop_timeout * 0.6)
            except Exception as error:
                self.log.warn("NATS drain on stop failed: {error}", error=self._scrub(error))
        if client is not None:
            await self._close_quietly(client)
            # nats-py's reconnect loop can outlive close() when a cancel is lost (below).
            reconnecting = getattr(client, "_reconnection_task", None)
            if reconnecting is not None:
                await self._cancel(reconnecting)
        self._ready = False
        self._set_connected(False)

    async def _close_quietly(self, client):
        if client.is_closed:
            return
        try:
            await asyncio.wait_for(client.close(), self._stop_timeout * 0.2)
        except Exception as error:
            self.log.debug("NATS close failed: {error}", error=self._scrub(error))

    async def _cancel(self, task):
        """Cancel `task` and wait for it to end, cancelling again if a cancel was lost:
        Python 3.11's asyncio.wait_for can swallow one when a connect attempt fails at the
        same moment, and nats-py's connect loop then retries forever on a closed client."""
        for _ in range(10):
            if task.done():
                return
            task.cancel()
            await asyncio.wait([task], timeout=0.05)
        self.log.warn("NATS client task {task!r} ignored cancellation", task=task)

    # --- subscriptions and publications ----------------------------------------------------

    async def _bind(self, client, subscription):
        callback = subscription.callback
        log = self.log

        async def deliver(msg):
            # The heartbeat hot path: one BusMessage and one call, nothing else. Messages
            # with a status header come from the server (a "no responders" answer to a
            # request), not from a peer: a request waits for real replies or its timeout.
            if msg.headers and _STATUS in msg.headers:
                return
            try:
                callback(BusMessage(msg.subject, msg.data, msg.reply or None))
            except Exception:
                log.failure("subscriber to {subject} failed on a message on {msg_subject}",
                            subject=subscription.subject, msg_subject=msg.subject)

        client_sub = await client.subscribe(
            subscription.subject, queue=subscription.queue or "", cb=deliver)
        if subscription.active:
            subscription.client_sub = client_sub
        else:
            await client_sub.unsubscribe()

    def _bind_failed(self, failure, subscription):
        self._forget(subscription)
        return failure

    def _forget(self, subscription):
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _unsubscribe(self, subscription):
        self._forget(subscription)
        client_sub, subscription.client_sub = subscription.client_sub, None
        if client_sub is None:
            return defer.succeed(None)
        return self._as_deferred(self._unsubscribe_client(client_sub, subscription.subject))

    async def _unsubscribe_client(self, client_sub, subject):
        try:
            await client_sub.unsubscribe()
        except nats.errors.Error as error:
            # A closed or draining connection has dropped the interest already.
            self.log.debug("unsubscribe from {subject}: {error}", subject=subject, error=error)

    def _buffer_early(self, subject, data, reply):
        if self._stopping or self._early_bytes + len(data) > self._pending_size:
            self._drop(subject, "not connected and the buffer is full")
            return
        self._early_publications.append((subject, data, reply))
        self._early_bytes += len(data)

    async def _send_outbox(self, client):
        """Hand queued publications to the client in order: one task per burst, not per
        message (a task each costs more than the publication itself)."""
        outbox = self._outbox
        try:
            while outbox:
                subject, data, reply = outbox.popleft()
                try:
                    await client.publish(subject, data, reply)
                except nats.errors.Error as error:
                    self._drop(subject, self._scrub(error))
        finally:
            self._sender = None

    def _drop(self, subject, reason):
        self.dropped_publications += 1
        self.log.warn("NATS publication on {subject} dropped: {reason} ({dropped} so far)",
                      subject=subject, reason=reason, dropped=self.dropped_publications)

    def _slow_consumer(self, subject):
        # A flood drops many messages: one line a second with the running count is enough.
        self.slow_consumer_drops += 1
        now = self._reactor.seconds()
        if self._last_slow_consumer_log is None or now - self._last_slow_consumer_log >= 1:
            self._last_slow_consumer_log = now
            self.log.warn("NATS slow consumer on {subject}: {dropped} messages dropped so far",
                          subject=subject, dropped=self.slow_consumer_drops)

    async def _flush(self, client, timeout):
        try:
            await client.flush(timeout)
        except nats.errors.Error as error:
            raise RequestTimeout(f"flush: {self._scrub(error)}") from None

    # --- asyncio bridge --------------------------------------------------------------------

    def _as_deferred(self, coro):
        return defer.Deferred.fromFuture(asyncio.ensure_future(coro, loop=self._loop))

    async def _sleep(self, seconds):
        await task.deferLater(self._reactor, seconds).asFuture(self._loop)

    def _scrub(self, error):
        """The error's text with the password taken out, safe for logs."""
        text = str(error) or type(error).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

