"""How a simulated DEA delivers its heartbeat: on NATS as `dea.heartbeat` (every DEA until
cf-release v234), or as HTTPS `POST /dea/heartbeat` with a client certificate (dea_ng
`lib/dea/utils/hm9000.rb`, HTTPS only from cf-release v235; HM9000.md §3.2). The body is
the same JSON either way.
"""

import orjson
import treq
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import Interface, implementer

HEARTBEAT_SUBJECT = "dea.heartbeat"
HEARTBEAT_PATH = "/dea/heartbeat"
# dea_ng: 5 s connect/send/receive timeouts; the listener answers 202 when it took it.
HTTPS_TIMEOUT = 5.0
ACCEPTED = 202


class IHeartbeatSender(Interface):
    # zope.interface methods are declared without `self`.
    def send(payload):  # noqa: N805
        """Deliver one heartbeat (a dict: the `dea.heartbeat` payload)."""

    def stop():
        """Give up whatever is in flight; returns a Deferred that fires when done."""


@implementer(IHeartbeatSender)
class NatsHeartbeats:
    def __init__(self, bus):
        self._bus = bus

    def send(self, payload):
        self._bus.publish(HEARTBEAT_SUBJECT, orjson.dumps(payload))

    def stop(self):
        return defer.succeed(None)


@implementer(IPolicyForHTTPS)
class _ClientCertificatePolicy:
    """Every connection of the Agent uses the one set of client TLS options, made for the
    listener's hostname with the DEA's certificate."""

    def __init__(self, tls_options):
        self._tls_options = tls_options

    def creatorForNetloc(self, hostname, port):  # noqa: N802 (IPolicyForHTTPS's name)
        return self._tls_options


@implementer(IHeartbeatSender)
class HttpsHeartbeats:
    """POSTs each heartbeat to `url` (https://host:port) over mutual TLS on keep-alive
    connections. A refusal (any status but 202) or a failure (TLS, connection, timeout)
    is logged and counted; the next heartbeat is sent regardless, as dea_ng did."""

    log = Logger()

    def __init__(self, reactor, url, tls_options, timeout=HTTPS_TIMEOUT):
        self._reactor = reactor
        self.url = url.rstrip("/") + HEARTBEAT_PATH
        self._timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._client = treq.client.HTTPClient(Agent(
            reactor, contextFactory=_ClientCertificatePolicy(tls_options), pool=self._pool))
        self._in_flight: set[defer.Deferred] = set()
        self._stopping = False
        self.sent = 0
        self.accepted = 0
        self.refused = 0
        self.failed = 0

    def send(self, payload):
        self.sent += 1
        d = self._client.post(
            self.url, data=orjson.dumps(payload),
            headers=Headers({b"Content-Type": [b"application/json"]}),
            reactor=self._reactor, timeout=self._timeout)
        d.addCallback(self._answered, payload.get("dea"))
        d.addErrback(self._failed, payload.get("dea"))
        self._in_flight.add(d)
        d.addBoth(self._done, d)

    def _answered(self, response, dea):
        # The body is read even when unused: only then does the connection go back to the
        # pool.
        return treq.content(response).addCallback(self._judged, response.code, dea)

    def _judged(self, body, code, dea):
        if code == ACCEPTED:
            self.accepted += 1
            return
        self.refused += 1
        self.log.warn("dea {dea}: heartbeat refused by {url}: HTTP {code} {body!r}",
                      dea=dea, url=self.url, code=code, body=body[:200])

    def _failed(self, failure, dea):
        if failure.check(defer.CancelledError) and self._stopping:
            return
        self.failed += 1
        self.log.warn("dea {dea}: heartbeat to {url} failed: {error}",
                      dea=dea, url=self.url, error=failure.getErrorMessage())

    def _done(self, result, d):
        self._in_flight.discard(d)
        return result

    def stop(self):
        self._stopping = True
        for d in list(self._in_flight):
            d.cancel()
        return self._pool.closeCachedConnections()
