"""Handover: the ILeadership of an HA health manager, the lease plus its journal.

A new leader must not act on an empty memory: it would restart what the last leader gave
up on, start the flapping backoff over and repeat starts still coming up. So leading is
in two steps: the lease is acquired (Lease), then the journal of crash records and
start intents is loaded and merged into the model (Harmonizer.restore_crash_records); only
then does `is_acting()` say yes. A load that fails (Redis gone again) is retried every
`retry_period` while the lease is held.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from health_manager.ha.lease import LEADER, LeaseUnavailable
from health_manager.interfaces import ILeadership

# Crash records parsed and merged per reactor turn at promotion (about 10 ms).
RESTORE_SLICE = 1000


@implementer(ILeadership)
class Handover:
    log = Logger()

    def __init__(self, lease, journal, restore, scheduler, retry_period,
                 monotonic=time.monotonic):
        """`restore(records)` merges loaded CrashRecords into the model."""
        self._lease = lease
        self._journal = journal
        self._restore = restore
        self._scheduler = scheduler
        self._retry_period = retry_period
        self._monotonic = monotonic
        self._loaded_epoch = None
        self._loading = None
        lease.add_listener(self._role_changed)

    @property
    def role(self):
        return self._lease.role

    @property
    def leader_id(self):
        return self._lease.leader_id

    @property
    def epoch(self):
        return self._lease.epoch

    @property
    def transitions(self):
        return self._lease.transitions

    def is_acting(self):
        lease = self._lease
        if not lease.is_acting():
            return False
        if self._loaded_epoch == lease.epoch:
            return True
        self._load()  # a new epoch without a change of role (never expected): load it
        return False

    def _role_changed(self):
        if self._lease.role == LEADER:
            self._load()
        elif self._loaded_epoch is not None or self._loading is not None:
            self._loaded_epoch = None
            self._journal.deposed()

    def _load(self):
        if self._loading is not None:
            return
        epoch = self._lease.epoch
        self._loading = defer.Deferred.fromCoroutine(self._load_and_restore(epoch))
        self._loading.addErrback(self._load_failed)
        self._loading.addBoth(self._load_ended)

    def _load_ended(self, _):
        self._loading = None

    def _still_leading(self, epoch):
        return self._lease.role == LEADER and self._lease.epoch == epoch

    async def _load_and_restore(self, epoch):
        began = self._monotonic()
        values, intents = await self._journal.load()
        restored = records = 0
        # A slice of records per reactor turn: 10,000 crash-looping instances must not
        # stall heartbeat ingest at the moment of failover.
        for start in range(0, len(values), RESTORE_SLICE):
            if start:
                await self._next_turn()
            if not self._still_leading(epoch):
                return
            batch = self._journal.parse_records(values[start:start + RESTORE_SLICE])
            records += len(batch)
            restored += self._restore(batch)
        if not self._still_leading(epoch):
            return
        self._journal.begin(epoch, intents)
        self._loaded_epoch = epoch
        self.log.info("HA: loaded {records} crash records ({restored} newer than this HM "
                      "knew) and {intents} start intents of earlier leaders in {ms:.0f} ms; "
                      "acting as epoch {epoch}", records=records, restored=restored,
                      intents=self._journal.intents, epoch=epoch,
                      ms=(self._monotonic() - began) * 1000)

    def _next_turn(self):
        d: defer.Deferred[None] = defer.Deferred()
        self._scheduler.immediately(lambda: d.callback(None), "ha journal restore slice")
        return d

    def _load_failed(self, failure):
        if not failure.check(LeaseUnavailable):
            self.log.failure("HA: loading the crash records failed", failure)
        else:
            self.log.warn("HA: crash records not loaded, not acting yet; retrying in "
                          "{retry} s: {error}", retry=self._retry_period,
                          error=failure.getErrorMessage())
        self._scheduler.after(self._retry_period, self._retry, "ha journal load retry")

    def _retry(self):
        if self._lease.role == LEADER and self._loaded_epoch != self._lease.epoch:
            self._load()
