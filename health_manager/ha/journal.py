"""The Journal: the IDurableState of an HA health manager, kept in Redis (redis.py) or etcd
(etcd.py, whose fence differs: see there) by the leader.

What is stored (issue 11), each under `key_prefix` with a TTL, so Redis never keeps what
the HM itself would have forgotten:
- a crash record per (app, version, index) whose history matters (recent crashes, FLAPPING,
  given up, a pending flapping restart): written through on each change, TTL about
  `flapping_timeout` (longer while a restart is pending), and written again by the analysis
  pass every `flapping_timeout / 2` (and right after each promotion), which keeps given-up
  records alive and puts back whatever Redis lost (FLUSHALL, a failover to an empty replica);
- a start intent per health.start sent (epoch and time sent), TTL `droplet_lost`.

Heartbeats are never written: they arrive from every DEA every few seconds and rebuild the
actual state within `droplet_lost` after any restart, so storing them would only turn
100k instance heartbeats a second into Redis writes for nothing a new leader needs.

Writes leave WRITE_DELAY (2 ms) later, coalesced per key and batched (a crash burst costs
one Redis call per batch, not per crash); a write that fails (Redis down or slow) is kept
and retried every `retry_period` unless a newer value of the same key replaced it. Every
write carries the epoch of the leader that decided it and Redis refuses it unless that is
still the stored epoch (fencing): a deposed leader's late write is refused and counted.
Only the leader that has loaded the records of its epoch records anything.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from health_manager.ha.lease import LEADER, LeaseUnavailable
from health_manager.interfaces import IDurableState
from health_manager.model.durable import CrashRecord, StartIntent, slot_key

CRASH = "crash"
START = "start"
# Records per Redis call: big enough that a burst of 10,000 crashes is 100 calls, small
# enough that one call never holds Redis (or this reactor) for long.
BATCH_SIZE = 100
# Seconds a write waits before it leaves. On the very next turn it would run before the
# NATS client's flusher sends the health.start decided with it, and sending a fenced call
# costs about 0.35 ms: every crash restart would wait for its own record (bench/RESULTS.md,
# +0.46 ms at p50). 2 ms lets the start go first and a few more crashes share the call.
WRITE_DELAY = 0.002


class IJournalStore(Interface):
    """Where the journal lives: fenced batch writes and whole-kind reads."""

    address = Attribute("Where the store is, safe to log (no password).")
    connected = Attribute("True while calls can be sent.")

    def write(epoch, entries):
        """Store every (kind, key, value, ttl_ms) of `entries` in one atomic step, only if
        `epoch` is the stored fencing epoch. Fires with True when written, False when
        refused (another leader's epoch); fails with LeaseUnavailable."""

    def load(kind):
        """Fire with the stored values (bytes) of every live entry of `kind`."""


@implementer(IDurableState)
class Journal:
    log = Logger()

    def __init__(self, store, scheduler, lease, intervals, metrics, retry_period,
                 batch_size=BATCH_SIZE, write_delay=WRITE_DELAY):
        self._store = store
        self._scheduler = scheduler
        self._lease = lease
        self._flapping_timeout = intervals.flapping_timeout
        self._droplet_lost = intervals.droplet_lost
        self._metrics = metrics
        self._retry_period = retry_period
        self._batch_size = batch_size
        self._write_delay = write_delay
        self._epoch: int | None = None  # the epoch whose records were loaded: it records
        self._intents = {}  # key -> StartIntent another leader recorded, loaded at promotion
        self._dirty = {}  # (kind, key) -> (epoch, value, ttl_ms), not yet sent
        self._flush_call = None
        self._in_flight = set()
        self._failing = False
        self._next_write_back = None

    # -- IDurableState -------------------------------------------------------------------

    def record_crash(self, record):
        if not self._recording():
            return
        ttl = self._flapping_timeout
        if record.restart_due is not None:
            ttl += max(0.0, record.restart_due - self._scheduler.now())
        self._put(CRASH, record.key, record.to_bytes(), ttl)

    def record_start(self, app_id, version, index):
        if not self._recording():
            return
        intent = StartIntent(app_id, version, index, self._lease.epoch, self._scheduler.now())
        self._put(START, intent.key, intent.to_bytes(), self._droplet_lost)

    def previous_start(self, app_id, version, index, now):
        if not self._intents:
            return None
        key = slot_key(app_id, version, index)
        intent = self._intents.get(key)
        if intent is not None and now - intent.sent_at >= self._droplet_lost:
            del self._intents[key]
            return None
        return intent

    def forget_start(self, app_id, version, index):
        if self._intents:
            self._intents.pop(slot_key(app_id, version, index), None)

    def write_back_due(self, now):
        if self._next_write_back is None or now < self._next_write_back or not self._recording():
            return False
        self._next_write_back = now + self._flapping_timeout / 2
        return True

    # -- promotion and demotion (ha/handover.py) -----------------------------------------

    async def load(self):
        """Read every stored crash record and start intent: (the crash records' raw
        values, for `parse_records`, and the StartIntents, for `begin`). Fails with
        LeaseUnavailable."""
        # Both kinds at once: over a slow link the load costs one round trip per SCAN step.
        try:
            crash_values, start_values = await defer.gatherResults(
                [defer.ensureDeferred(self._store.load(kind)) for kind in (CRASH, START)],
                consumeErrors=True)
        except defer.FirstError as e:
            e.subFailure.raiseException()
        return crash_values, self._parse(start_values, StartIntent.from_bytes, START)

    def parse_records(self, values):
        """The CrashRecords among loaded values; unreadable ones are counted and logged."""
        return self._parse(values, CrashRecord.from_bytes, CRASH)

    def begin(self, epoch, intents):
        """The loaded records are in the model: the leader of `epoch` records from now on,
        and sends no start another leader's live intent covers."""
        now = self._scheduler.now()
        # Its own intents (an epoch this HM held before a blip) need no guard: its own
        # missing-check grace covers them.
        self._intents = {i.key: i for i in intents
                         if i.epoch != epoch and now - i.sent_at < self._droplet_lost}
        self._epoch = epoch
        self._next_write_back = now  # the next analysis pass puts back what Redis lacks

    def deposed(self):
        """No longer the leader: record nothing more. Writes already decided still leave
        (Redis refuses them if a newer leader has the lease)."""
        self._epoch = None
        self._intents = {}
        self._next_write_back = None

    @property
    def address(self):
        """Where the journal is kept, for logs."""
        return self._store.address

    @property
    def intents(self):
        """How many start intents of earlier leaders are held."""
        return len(self._intents)

    @property
    def pending(self):
        """How many records and intents wait to be written."""
        return len(self._dirty)

    def flush(self):
        """Send every pending write now; fires once every write in flight has ended."""
        self._flush()
        return defer.DeferredList(list(self._in_flight))

    # -- writing -------------------------------------------------------------------------

    def _recording(self):
        lease = self._lease
        return (self._epoch is not None and lease.role == LEADER
                and lease.epoch == self._epoch)

    def _put(self, kind, key, value, ttl):
        self._dirty[(kind, key)] = (self._epoch, value, max(1, int(ttl * 1000)))
        if self._flush_call is None:
            self._flush_call = self._scheduler.after(self._write_delay, self._flush,
                                                     "ha journal flush")

    def _flush(self):
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        if not self._dirty:
            return
        if not self._store.connected:
            self._metrics.ha_record_write_failures += len(self._dirty)
            self._write_failed(f"{self._store.address} not connected")
            return
        by_epoch: dict[int, list[tuple[str, str, bytes, int]]] = {}
        for (kind, key), (epoch, value, ttl_ms) in self._dirty.items():
            by_epoch.setdefault(epoch, []).append((kind, key, value, ttl_ms))
        self._dirty = {}
        for epoch, entries in by_epoch.items():
            for start in range(0, len(entries), self._batch_size):
                batch = entries[start:start + self._batch_size]
                d = self._store.write(epoch, batch)
                self._in_flight.add(d)
                d.addCallbacks(self._written, self._not_written, (epoch, batch), None,
                               (epoch, batch))
                d.addBoth(self._landed, d)

    def _landed(self, _, d):
        self._in_flight.discard(d)

    def _written(self, written, epoch, batch):
        if written:
            self._metrics.ha_records_written += len(batch)
            if self._failing:
                self._failing = False
                self.log.info("HA: crash records and start intents written to {address} again",
                              address=self._store.address)
            return
        self._metrics.ha_fenced_writes_refused += len(batch)
        self.log.warn("HA: {address} refused {count} writes of epoch {epoch}: another leader "
                      "holds the lease (this HM was deposed)", address=self._store.address,
                      count=len(batch), epoch=epoch)

    def _not_written(self, failure, epoch, batch):
        failure.trap(LeaseUnavailable)
        self._metrics.ha_record_write_failures += len(batch)
        dirty = self._dirty
        for kind, key, value, ttl_ms in batch:
            dirty.setdefault((kind, key), (epoch, value, ttl_ms))  # unless a newer one waits
        self._write_failed(failure.getErrorMessage())

    def _write_failed(self, error):
        if not self._failing:
            self._failing = True
            self.log.warn("HA: crash records and start intents not written, retrying every "
                          "{retry} s ({count} waiting): {error}", retry=self._retry_period,
                          count=len(self._dirty), error=error)
        if self._flush_call is None:
            self._flush_call = self._scheduler.after(self._retry_period, self._flush,
                                                     "ha journal retry")

    # -- loading -------------------------------------------------------------------------

    def _parse(self, values, parse, kind):
        parsed = []
        for value in values:
            try:
                parsed.append(parse(value))
            except ValueError as e:
                self._metrics.ha_unreadable_records += 1
                self.log.warn("HA: unreadable {kind} entry in {address} skipped: {error}",
                              kind=kind, address=self._store.address, error=e)
        return parsed
