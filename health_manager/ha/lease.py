"""Lease: the ILeadership of a health manager among several on one lease store.

Every `retry_period` a standby tries to acquire the lease and the leader renews it. The
leader acts only while its last successful renewal (timed from when that call was sent, on
the monotonic clock) is younger than `renew_deadline`: `is_acting()` computes this each time
it is asked, so a process that was paused (SIGSTOP, a frozen VM) is silent the moment it
resumes, before any timer has run. Redis down or slow is never an error here: no one acts,
the loop keeps trying, and each change is logged once.
"""

import time

from twisted.internet import task
from twisted.logger import Logger, LogLevel
from zope.interface import Attribute, Interface, implementer

from health_manager.interfaces import ILeadership

LEADER = "leader"
STANDBY = "standby"
STOPPING = "stopping"


class LeaseUnavailable(Exception):
    """The lease store could not be reached or did not answer."""


class ILeaseStore(Interface):
    """Where the lease lives: one atomic step per call."""

    address = Attribute("Where the store is, safe to log (no password).")

    def start():
        """Begin connecting."""

    def stop():
        """Disconnect; returns a Deferred."""

    def acquire(holder, ttl_ms, seen_epoch=0):
        """Take the lease when free (or already `holder`'s) with an epoch above both the
        stored one and `seen_epoch`. Fires with (acquired, epoch, current_holder); fails
        with LeaseUnavailable."""

    def renew(holder, ttl_ms):
        """Extend `holder`'s lease. Fires with its epoch, or None when `holder` lost it."""

    def release(holder):
        """Give the lease up if `holder` still has it. Fires with True when it did."""


@implementer(ILeadership)
class Lease:
    """This HM's leadership, held as a lease in an ILeaseStore (Redis or etcd)."""

    log = Logger()

    def __init__(self, store, clock, holder_id, lease_duration, renew_deadline, retry_period,
                 monotonic=time.monotonic):
        self._store = store
        self._clock = clock
        self.holder_id = holder_id
        self._ttl_ms = int(lease_duration * 1000)
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._monotonic = monotonic
        self.role = STANDBY
        self.leader_id = None
        self.epoch = None
        self.transitions = 0
        self._renewed_at = None  # monotonic send time of the last successful acquire/renew
        self._in_flight = None
        self._reachable = None  # unknown until the first answer or failure
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._listeners = []

    def add_listener(self, callback):
        """Call `callback()` after every change of role."""
        self._listeners.append(callback)

    # -- ILeadership ---------------------------------------------------------------------

    def is_acting(self):
        return (self.role == LEADER and self._renewed_at is not None
                and self._monotonic() - self._renewed_at < self._renew_deadline)

    # -- life cycle ----------------------------------------------------------------------

    def start(self):
        self.log.info("HA: {holder} competing for the lease at {address} (lease {lease} s, "
                      "renew deadline {deadline} s, retry {retry} s)", holder=self.holder_id,
                      address=self._store.address, lease=self._lease_duration,
                      deadline=self._renew_deadline, retry=self._retry_period)
        self._store.start()
        # The first try after one retry period: by then a reachable store is connected.
        self._loop.start(self._retry_period, now=False)

    async def stop(self):
        """Stop competing; a leader releases the lease so a standby takes over at its next
        retry instead of waiting for the lease to expire."""
        if self._loop.running:
            self._loop.stop()
        if self._in_flight is not None:
            # Its answer decides whether there is a lease to release (an acquire may have
            # just succeeded); it fires within the store's reply timeout.
            await self._in_flight
        was_leader = self.role == LEADER
        self._set_role(STANDBY, None, STOPPING)
        if was_leader:
            try:
                released = await self._store.release(self.holder_id)
            except LeaseUnavailable as e:
                self.log.warn("HA: lease not released (it expires in {lease} s): {error}",
                              lease=self._lease_duration, error=e)
            else:
                if released:
                    self.log.info("HA: lease released (epoch {epoch})", epoch=self.epoch)
        await self._store.stop()

    # -- the retry loop ------------------------------------------------------------------

    def _tick(self):
        # A LoopingCall that raises stops for good: every tick catches and logs.
        try:
            self._try_once()
        except Exception:
            self.log.failure("HA: lease retry failed", level=LogLevel.error)

    def _try_once(self):
        if self.role == LEADER and not self.is_acting():
            self._set_role(STANDBY, None,
                           f"lease not renewed for {self._renew_deadline} s (renew_deadline)")
        if self._in_flight is not None:
            return  # a slow store: never more than one call outstanding
        sent = self._monotonic()
        if self.role == LEADER:
            d = self._store.renew(self.holder_id, self._ttl_ms)
            d.addCallback(self._renewed, sent)
        else:
            d = self._store.acquire(self.holder_id, self._ttl_ms, self.epoch or 0)
            d.addCallback(self._acquire_answered, sent)
        d.addErrback(self._failed)
        d.addBoth(self._done)
        if not d.called:
            self._in_flight = d

    def _done(self, _):
        self._in_flight = None

    def _renewed(self, epoch, sent):
        self._set_reachable(True)
        if self.role != LEADER:
            return  # demoted while this call was out; the next acquire settles it
        if epoch is None:
            self._set_role(STANDBY, None, "the lease was taken over")
            return
        self._renewed_at = sent
        self.epoch = epoch

    def _acquire_answered(self, answer, sent):
        self._set_reachable(True)
        acquired, epoch, holder = answer
        if epoch:
            self.epoch = epoch
        if acquired and holder == self.holder_id:
            self._renewed_at = sent
            self._set_role(LEADER, self.holder_id, "lease acquired")
        else:
            self._set_role(STANDBY, holder, "lease held by another HM")

    def _failed(self, failure):
        if not failure.check(LeaseUnavailable):
            self.log.failure("HA: unexpected lease store error", failure, LogLevel.error)
        self._set_reachable(False, failure.getErrorMessage())
        if self.role == STANDBY and self.leader_id is not None:
            self.leader_id = None  # no longer known

    def _set_reachable(self, reachable, error=None):
        if reachable == self._reachable:
            return
        first = self._reachable is None
        self._reachable = reachable
        if not reachable:
            self.log.warn("HA: lease store unreachable, retrying every {retry} s (no HM acts "
                          "while no one holds the lease): {error}", retry=self._retry_period,
                          error=error)
        elif not first:
            self.log.info("HA: lease store reachable again at {address}",
                          address=self._store.address)

    def _set_role(self, role, leader_id, reason):
        changed_leader = leader_id != self.leader_id
        self.leader_id = leader_id
        if role == self.role:
            if changed_leader and role == STANDBY and leader_id is not None:
                self.log.info("HA: standby, leader is {leader} (epoch {epoch})",
                              leader=leader_id, epoch=self.epoch)
            return
        self.role = role
        self.transitions += 1
        if role == LEADER:
            self.log.info("HA: became leader, epoch {epoch} ({reason})", epoch=self.epoch,
                          reason=reason)
        else:
            self._renewed_at = None
            # A clean stop is routine; losing the lease while running is worth a warning.
            emit = self.log.info if reason == STOPPING else self.log.warn
            emit("HA: stopped acting, now standby ({reason}); leader {leader}, epoch {epoch}",
                 reason=reason, leader=leader_id, epoch=self.epoch)
        for callback in self._listeners:
            callback()
