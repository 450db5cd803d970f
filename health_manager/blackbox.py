"""Black-box test mode: an outside process moves the health manager's fake clock.

`healthmanager.advance_time {"seconds": N}` advances the clock one second at a time; each
step runs what falls due and waits until all work it caused (bulk-API fetches included) has
finished. The reply `{"seconds": N}` is published only after the last step's publications
have reached the server, so the driver can assert right after it.
"""

import orjson
from twisted.internet import defer, task
from twisted.logger import Logger

SUBJECT = "healthmanager.advance_time"
MAX_SECONDS = 7 * 24 * 3600


class BlackBoxDriver:
    log = Logger()

    def __init__(self, bus, clock, scheduler, reactor, metrics):
        self._bus = bus
        self._metrics = metrics
        self._clock = clock
        self._scheduler = scheduler
        self._reactor = reactor
        # Requests are served one after another, in arrival order.
        self._queue = defer.DeferredLock()

    def subscribe(self):
        return self._bus.subscribe(SUBJECT, self._on_request)

    def _on_request(self, message):
        seconds, error = parse_request(message.data)
        if error is None and not message.reply:
            error = "no reply subject"
        if error is not None:
            self._metrics.reject(SUBJECT)
            self.log.warn("bad advance_time request: {error}", error=error)
            if message.reply:
                self._bus.publish(message.reply, orjson.dumps({"error": error}))
            return
        d = self._queue.run(self.advance, seconds)
        d.addCallback(lambda _: self._bus.publish(message.reply,
                                                  orjson.dumps({"seconds": seconds})))
        d.addErrback(lambda f: self.log.failure("advance_time failed", f))

    async def advance(self, seconds):
        """Advance the fake clock by `seconds`, one second at a time, waiting for work."""
        # Messages published by the driver before this request may still sit in other
        # subscriptions' queues: let them run first.
        await task.deferLater(self._reactor, 0, lambda: None)
        await self._settle()
        for _ in range(seconds):
            self._clock.advance(1)
            await self._settle()
        await self._bus.flush()

    async def _settle(self):
        await self._scheduler.idle()
        # Work finishing may have scheduled "immediate" follow-ups on the reactor.
        await task.deferLater(self._reactor, 0, lambda: None)
        await self._scheduler.idle()


def parse_request(data):
    """(seconds, None) for a valid request, else (None, reason)."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, "payload is not JSON"
    if not isinstance(payload, dict):
        return None, "payload must be a JSON object"
    seconds = payload.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return None, "seconds must be a whole number"
    if seconds < 0:
        return None, "seconds must not be negative"
    if seconds > MAX_SECONDS:
        return None, f"seconds must be at most {MAX_SECONDS}"
    return seconds, None
