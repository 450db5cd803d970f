"""RedisConnection: the one txredisapi connection an HA health manager keeps to Redis.

The lease (redis.py) and the durable state (journal.py) share it. A call made while the
connection is down fails at once with RedisUnavailable instead of waiting for a reconnect,
so neither the lease's retry loop nor a write ever stalls behind an outage; a Redis that
does not answer within `reply_timeout` has its connection dropped and re-opened.
"""

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger

from health_manager.ha.lease import LeaseUnavailable


class RedisUnavailable(LeaseUnavailable):
    """Redis could not be reached, or did not answer in time."""


class RedisConnection:
    """One lazily reconnecting connection to `ha.redis`."""

    log = Logger()

    def __init__(self, reactor, ha_config, reply_timeout=None, reconnect_delay=None):
        """`reply_timeout` (default: retry_period) bounds each call."""
        # txredisapi imports the global reactor: only once HA is configured, after the
        # process has installed the reactor it runs on (asyncio).
        import txredisapi

        self._reactor = reactor
        self._config = ha_config
        self._factory = txredisapi.RedisFactory(
            f"{ha_config.redis_host}:{ha_config.redis_port}", ha_config.redis_db, 1,
            isLazy=True, password=ha_config.redis_password,
            replyTimeout=reply_timeout or ha_config.retry_period, convertNumbers=True)
        # Reconnect about once per retry period, not after txredisapi's backoff of up to 10 s:
        # a Redis that is back must let someone lead again within about one retry period.
        self._factory.initialDelay = reconnect_delay or ha_config.retry_period / 2
        self._factory.maxDelay = reconnect_delay or ha_config.retry_period
        # Fires once, on the first connection or a refusal (a wrong password): the refusal
        # is logged here, and every call then fails with RedisUnavailable.
        self._factory.deferred.addCallbacks(lambda _: None, self._refused)
        self._started = False

    @property
    def address(self):
        return self._config.redis_uri

    @property
    def connected(self):
        return self._factory.size > 0

    def start(self):
        """Begin connecting (and reconnecting for ever)."""
        if self._started:
            return
        self._started = True
        config = self._config
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, config.redis_host, config.redis_port, timeout=config.retry_period)
        if config.redis_tls:
            endpoint = wrapClientTLS(optionsForClientTLS(config.redis_host), endpoint)
        self._factory.startConnecting(endpoint)

    def stop(self):
        """Close the connection; fires once it is closed."""
        if not self._started:
            return defer.succeed(None)
        self._started = False
        return self._factory.disconnect()

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
