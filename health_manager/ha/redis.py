"""The lease and the journal in Redis: Lua scripts over the shared RedisConnection.

Each script is one atomic step, so two HMs can never both see themselves as the holder:
acquire (`SET NX PX` + `INCR` of the fencing epoch), renew (compare-and-`PEXPIRE`) and
release (compare-and-`DEL`). The journal's batch write is fenced by that epoch.
"""

from zope.interface import implementer

from health_manager.ha.journal import IJournalStore
from health_manager.ha.lease import ILeaseStore

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

# KEYS[1] the epoch key, KEYS[2..n] the entries' keys; ARGV[1] the writer's epoch, then a
# value and a TTL in ms per entry. Writes all of them only while the writer's epoch is the
# stored one (1), else nothing (0): a deposed leader's write never lands.
FENCED_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 2], 'PX', ARGV[2 * i - 1])
end
return 1
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


def leader_key(key_prefix):
    return f"{key_prefix}:leader"


def epoch_key(key_prefix):
    """The fencing epoch: the durable state's writes compare against it (journal.py)."""
    return f"{key_prefix}:epoch"


class _OnConnection:
    """A store over the shared RedisConnection: where it is and whether it is up."""

    def __init__(self, connection):
        self._connection = connection

    @property
    def address(self):
        return self._connection.address

    @property
    def connected(self):
        return self._connection.connected


@implementer(ILeaseStore)
class RedisLeaseStore(_OnConnection):
    """The lease of `key_prefix` on a RedisConnection; starting and stopping the store
    starts and stops that connection."""

    def __init__(self, connection, key_prefix):
        super().__init__(connection)
        self._keys = [leader_key(key_prefix), epoch_key(key_prefix)]

    def start(self):
        self._connection.start()

    def stop(self):
        return self._connection.stop()

    def acquire(self, holder, ttl_ms, seen_epoch=0):
        d = self._connection.run(ACQUIRE, self._keys, [holder, ttl_ms, seen_epoch])
        d.addCallback(lambda r: (bool(r[0]), int(r[1]), _text(r[2])))
        return d

    def renew(self, holder, ttl_ms):
        d = self._connection.run(RENEW, self._keys, [holder, ttl_ms])
        d.addCallback(lambda epoch: int(epoch) or None)
        return d

    def release(self, holder):
        d = self._connection.run(RELEASE, self._keys, [holder])
        d.addCallback(bool)
        return d


def _glob_escaped(text):
    """`text` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@implementer(IJournalStore)
class RedisJournalStore(_OnConnection):
    """The journal's entries as `{key_prefix}:{kind}:{key}` strings with a TTL each."""

    # Keys per SCAN step and per MGET: a few hundred KB per reply at most.
    SCAN_COUNT = 1000

    def __init__(self, connection, key_prefix):
        super().__init__(connection)
        self._prefix = key_prefix
        self._epoch_key = epoch_key(key_prefix)

    def write(self, epoch, entries):
        keys = [self._epoch_key]
        args = [epoch]
        for kind, key, value, ttl_ms in entries:
            keys.append(f"{self._prefix}:{kind}:{key}")
            args += [value, ttl_ms]
        d = self._connection.run(FENCED_WRITE, keys, args)
        d.addCallback(bool)
        return d

    async def load(self, kind):
        pattern = f"{_glob_escaped(self._prefix)}:{kind}:*"
        values = []
        cursor = 0
        while True:
            cursor, keys = await self._connection.call("scan", cursor, pattern,
                                                       self.SCAN_COUNT)
            if keys:
                # An entry that expired between SCAN and MGET comes back as None.
                values += [v for v in await self._connection.call("mget", keys)
                           if v is not None]
            if int(cursor) == 0:
                return values
