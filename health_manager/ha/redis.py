"""The lease in Redis: one txredisapi connection and the three Lua scripts over it.

Each script is one atomic step, so two HMs can never both see themselves as the holder:
acquire (`SET NX PX` + `INCR` of the fencing epoch), renew (compare-and-`PEXPIRE`) and
release (compare-and-`DEL`). A call made while the connection is down fails at once
instead of waiting for a reconnect, so the lease's retry loop never stalls.
"""

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

from health_manager.ha.lease import ILeaseStore, LeaseUnavailable

# KEYS[1] leader key, KEYS[2] epoch key; ARGV[1] holder id, ARGV[2] lease in ms, ARGV[3] the
# highest epoch the caller has seen. Returns {1, epoch, holder} when this holder has the
# lease, {0, epoch, holder} otherwise. A holder that still owns the key (its last renewal
# reply was lost) keeps its epoch. The new epoch exceeds every epoch the caller has seen, so
# it keeps growing across a Redis that restarted empty.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0'), holder}
end
if holder then
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0'), holder}
end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if tonumber(ARGV[3]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[3])
end
return {1, redis.call('INCR', KEYS[2]), ARGV[1]}
"""

# Returns the epoch when the holder still owns the key (and extends it), else 0.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
return 0
"""

# Returns 1 when the holder owned the key and deleted it, else 0.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@implementer(ILeaseStore)
class RedisLeaseStore:
    """The lease of `key_prefix` in one Redis, reached through a reconnecting connection."""

    log = Logger()

    def __init__(self, reactor, ha_config, reply_timeout=None, reconnect_delay=None):
        """`reply_timeout` (default: retry_period) bounds each call: a Redis that does not
        answer in time has its connection dropped and re-opened."""
        # txredisapi imports the global reactor: only once HA is configured, after the
        # process has installed the reactor it runs on (asyncio).
        import txredisapi

        self._reactor = reactor
        self._config = ha_config
        self._leader_key = f"{ha_config.key_prefix}:leader"
        self._epoch_key = f"{ha_config.key_prefix}:epoch"
        self._factory = txredisapi.RedisFactory(
            f"{ha_config.redis_host}:{ha_config.redis_port}", ha_config.redis_db, 1,
            isLazy=True, password=ha_config.redis_password,
            replyTimeout=reply_timeout or ha_config.retry_period, convertNumbers=True)
        # Reconnect about once per retry period, not after txredisapi's backoff of up to 10 s:
        # a Redis that is back must let someone lead again within about one retry period.
        self._factory.initialDelay = reconnect_delay or ha_config.retry_period / 2
        self._factory.maxDelay = reconnect_delay or ha_config.retry_period
        # Fires once, on the first connection or a refusal (a wrong password): the refusal
        # is logged here, and every call then fails with LeaseUnavailable.
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

    def acquire(self, holder, ttl_ms, seen_epoch=0):
        d = self._eval(ACQUIRE, holder, ttl_ms, seen_epoch)
        d.addCallback(lambda r: (bool(r[0]), int(r[1]), _text(r[2])))
        return d

    def renew(self, holder, ttl_ms):
        d = self._eval(RENEW, holder, ttl_ms)
        d.addCallback(lambda epoch: int(epoch) or None)
        return d

    def release(self, holder):
        d = self._eval(RELEASE, holder)
        d.addCallback(bool)
        return d

    def _eval(self, script, *args):
        if not self.connected:
            return defer.fail(LeaseUnavailable(f"Redis {self.address} not connected"))
        d = defer.maybeDeferred(self._factory.handler.eval, script,
                                [self._leader_key, self._epoch_key], list(args))
        d.addErrback(self._unavailable)
        return d

    def _refused(self, failure):
        self.log.error("HA: Redis {address} refused the connection: {error}",
                       address=self.address, error=failure.getErrorMessage())

    def _unavailable(self, failure):
        raise LeaseUnavailable(f"Redis {self.address}: {failure.getErrorMessage()}")
