"""InMemoryBulkClient: the health manager's HTTP client, answered by a FakeCloudController
without sockets, after a latency on the injected clock (for fake-time foundations)."""

import base64
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import defer


class InMemoryResponse:
    """The part of a treq response the desired-state client reads."""

    def __init__(self, code, body):
        self.code = code
        self._body = body

    def content(self):
        return defer.succeed(self._body)


class InMemoryBulkClient:
    """`get(url, auth)` as treq's HTTPClient, served by `cc.bulk_request()`.

    Each answer arrives `latency()` seconds later on `clock`, so heartbeats can overtake a
    bulk pass as they do on a real network; a hanging CC never answers (cancellable).
    """

    def __init__(self, cc, clock, latency=lambda: 0.0):
        self._cc = cc
        self._clock = clock
        self._latency = latency
        self.requests = 0

    def get(self, url, auth=None):
        self.requests += 1
        parts = urlsplit(url)
        header = ""
        if auth is not None:
            header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        answer = self._cc.bulk_request(parts.path, dict(parse_qsl(parts.query)), header)
        if answer is None:
            return defer.Deferred()
        timer = None

        def cancel(_):
            if timer.active():
                timer.cancel()

        pending = defer.Deferred(cancel)
        timer = self._clock.callLater(max(0.0, self._latency()), pending.callback,
                                      InMemoryResponse(*answer))
        return pending
