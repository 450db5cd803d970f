"""RedisConnection: the one txredisapi connection an HA health manager keeps to Redis.

That Redis is `ha.redis`, or with `ha.sentinels` whichever master the sentinels name
(sentinel.py finds it again at each reconnection, so a failover is followed).

The lease (redis.py) and the durable state (journal.py) share it. A call made while the
connection is down fails at once with RedisUnavailable instead of waiting for a reconnect,
so neither the lease's retry loop nor a write ever stalls behind an outage; a Redis that
does not answer within `reply_timeout` has its connection dropped and re-opened.
"""

from twisted.internet import defer
from twisted.logger import Logger

from health_manager.ha.endpoint import redis_endpoint
from health_manager.ha.lease import LeaseUnavailable


class RedisUnavailable(LeaseUnavailable):
    """Redis could not be reached, or did not answer in time."""


class RedisConnection:
    """One lazily reconnecting connection to `ha.redis`, or to the sentinels' master."""

    log = Logger()

    def __init__(self, reactor, ha_config, reply_timeout=None, reconnect_delay=None):
        """`reply_timeout` (default: retry_period) bounds each call."""
        # txredisapi imports the global reactor: only once HA is configured, after the
        # process has installed the reactor it runs on (asyncio).
        import txredisapi

        from health_manager.ha import sentinel

        self._config = ha_config
        reply_timeout = reply_timeout or ha_config.retry_period
        # Reconnect about once per retry period, not after txredisapi's backoff of up to 10 s:
        # a Redis that is back must let someone lead again within about one retry period.
        reconnect_delay = reconnect_delay or ha_config.retry_period
        self._discovery = None
        factory_class = txredisapi.RedisFactory
        if ha_config.sentinels:
            self._discovery = sentinel.SentinelDiscovery(
                reactor, ha_config.sentinels, ha_config.master_name, reply_timeout,
                reconnect_delay, ha_config.redis_tls)
            self._endpoint = sentinel.SentinelMasterEndpoint(
                reactor, self._discovery, ha_config.retry_period, ha_config.redis_tls)
            factory_class = sentinel.MasterFactory
        else:
            self._endpoint = redis_endpoint(
                reactor, ha_config.redis_host, ha_config.redis_port, ha_config.retry_period,
                ha_config.redis_tls)
        self._factory = factory_class(
            self.address, ha_config.redis_db, 1, isLazy=True,
            password=ha_config.redis_password, replyTimeout=reply_timeout,
            convertNumbers=True)
        self._factory.initialDelay = reconnect_delay / 2
        self._factory.maxDelay = reconnect_delay
        # Fires once, on the first connection or a refusal (a wrong password): the refusal
        # is logged here, and every call then fails with RedisUnavailable.
        self._factory.deferred.addCallbacks(lambda _: None, self._refused)
        self._started = False

    @property
    def address(self):
        """Where Redis is, for logs: the URI or the sentinels and master name, no password."""
        if self._discovery is not None:
            return self._discovery.address
        return self._config.redis_uri

    @property
    def connected(self):
        return self._factory.size > 0

    def start(self):
        """Begin connecting (and reconnecting for ever)."""
        if self._started:
            return
        self._started = True
        if self._discovery is not None:
            self._discovery.start()
        self._factory.startConnecting(self._endpoint)

    def stop(self):
        """Close the connection (and those to the sentinels); fires once they are closed."""
        if not self._started:
            return defer.succeed(None)
        self._started = False
        closing = [self._factory.disconnect()]
        if self._discovery is not None:
            closing.append(self._discovery.stop())
        return defer.gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

    def run(self, script, keys, args):
        """Run a Lua script; fires with its reply or fails with RedisUnavailable.
        (txredisapi sends it by SHA1 once this connection has sent it whole.)"""
        return self.call("eval", script, keys, args)

    def call(self, command, *args):
        """Send one txredisapi command (`scan`, `mget`, ...) on the connection."""
        if not self.connected:
            return defer.fail(RedisUnavailable(f"Redis {self.address} not connected"))
        d = defer.maybeDeferred(getattr(self._factory.handler, command), *args)
        d.addErrback(self._unavailable)
        return d

    def _refused(self, failure):
        self.log.error("HA: Redis {address} refused the connection: {error}",
                       address=self.address, error=failure.getErrorMessage())

    def _unavailable(self, failure):
        if failure.check(RedisUnavailable):
            return failure
        raise RedisUnavailable(f"Redis {self.address}: {failure.getErrorMessage()}")
