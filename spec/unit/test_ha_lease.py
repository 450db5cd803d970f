"""Lease on task.Clock over an in-memory lease store: who acts, and when they stop."""

from twisted.internet import defer, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from health_manager.ha.lease import ILeaseStore, LeaseUnavailable
from health_manager.interfaces import ILeadership
from spec.unit.lease_rig import LeaseRig

LEASE, DEADLINE, RETRY = 15, 10, 2


@implementer(ILeaseStore)
class MemoryLeaseStore:
    """The Lua scripts' semantics on a clock; `down` fails calls, `slow` holds them."""

    address = "memory"

    def __init__(self, clock):
        self._clock = clock
        self.holder = None
        self.expires = 0
        self.epoch = 0
        self.down = False
        self.slow = False
        self.held = []
        self.calls = 0

    def start(self):
        pass

    def stop(self):
        return defer.succeed(None)

    def _current(self):
        if self.holder is not None and self._clock.seconds() >= self.expires:
            self.holder = None
        return self.holder

    def _answer(self, compute):
        self.calls += 1
        if self.down:
            return defer.fail(LeaseUnavailable("down"))
        if self.slow:
            d = defer.Deferred()
            self.held.append((d, compute))
            return d
        return defer.succeed(compute())

    def answer_held(self):
        held, self.held = self.held, []
        for d, compute in held:
            d.callback(compute())

    def acquire(self, holder, ttl_ms, seen_epoch=0):
        def compute():
            current = self._current()
            if current == holder:
                self.expires = self._clock.seconds() + ttl_ms / 1000
                return True, self.epoch, holder
            if current is not None:
                return False, self.epoch, current
            self.holder, self.expires = holder, self._clock.seconds() + ttl_ms / 1000
            self.epoch = max(self.epoch, seen_epoch) + 1
            return True, self.epoch, holder
        return self._answer(compute)

    def renew(self, holder, ttl_ms):
        def compute():
            if self._current() != holder:
                return None
            self.expires = self._clock.seconds() + ttl_ms / 1000
            return self.epoch
        return self._answer(compute)

    def release(self, holder):
        def compute():
            if self._current() != holder:
                return False
            self.holder = None
            return True
        return self._answer(compute)


class LogCapture:
    def __init__(self, case):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def ha_lines(self):
        return [e for e in self.events if e.get("log_format", "").startswith("HA:")]


class Rig(LeaseRig):
    def __init__(self, case, count=1):
        clock = task.Clock()
        self.store = MemoryLeaseStore(clock)
        super().__init__(clock, [self.store] * count, LEASE, DEADLINE, RETRY)


class LeaseTests(SynchronousTestCase):
    def test_provides_interfaces(self):
        """Lease provides ILeadership; the memory store provides ILeaseStore."""
        rig = Rig(self)
        verifyObject(ILeadership, rig.leases[0])
        verifyObject(ILeaseStore, rig.store)

    def test_first_acquires_others_stand_by(self):
        """Of three HMs exactly one leads, with epoch 1; the others know who leads."""
        rig = Rig(self, 3)
        rig.start()
        self.assertEqual(rig.acting_ids(), ["hm-0"])
        self.assertEqual([lease.role for lease in rig.leases], ["leader", "standby", "standby"])
        self.assertEqual({lease.epoch for lease in rig.leases}, {1})
        self.assertEqual({lease.leader_id for lease in rig.leases}, {"hm-0"})
        rig.advance(60)
        self.assertEqual(rig.acting_ids(), ["hm-0"])
        self.assertEqual(rig.leases[0].transitions, 1)

    def test_dead_leader_replaced_within_lease_plus_retry(self):
        """When the leader stops renewing, another leads within lease + retry, epoch 2."""
        rig = Rig(self, 2)
        rig.start()
        rig.leases[0]._loop.stop()  # dies: no renewal, no release
        rig.leases[0].role = "standby"
        waited = 0
        while rig.acting_ids() != ["hm-1"]:
            rig.clock.advance(0.25)
            waited += 0.25
        self.assertLessEqual(waited, LEASE + RETRY)
        self.assertEqual(rig.leases[1].epoch, 2)

    def test_clean_stop_releases(self):
        """A leader's stop() deletes the lease: a standby leads at its next retry."""
        rig = Rig(self, 2)
        rig.start()
        self.successResultOf(defer.Deferred.fromCoroutine(rig.leases[0].stop()))
        self.assertIsNone(rig.store.holder)
        self.assertFalse(rig.leases[0].is_acting())
        rig.clock.advance(RETRY)
        self.assertEqual(rig.acting_ids(), ["hm-1"])

    def test_stop_waits_for_an_acquire_in_flight(self):
        """A stop during an acquire that then succeeds still releases the lease."""
        rig = Rig(self, 2)
        rig.start()
        standby = rig.leases[1]
        self.successResultOf(defer.Deferred.fromCoroutine(rig.leases[0].stop()))
        rig.store.slow = True
        rig.clock.advance(RETRY)  # the standby's acquire is out
        stopping = defer.Deferred.fromCoroutine(standby.stop())
        self.assertNoResult(stopping)
        rig.store.slow = False
        rig.store.answer_held()
        self.successResultOf(stopping)
        self.assertIsNone(rig.store.holder)
        self.assertFalse(standby.is_acting())

    def test_pause_past_deadline_silences_at_once(self):
        """After a pause longer than renew_deadline, is_acting() is False before any timer."""
        rig = Rig(self)
        rig.start()
        rig.clock.rightNow += DEADLINE  # the process was frozen: no timer ran
        self.assertFalse(rig.leases[0].is_acting())

    def test_paused_leader_deposed_stays_silent(self):
        """A leader paused past its lease finds another leader and never acts again."""
        rig = Rig(self, 2)
        rig.start()
        paused = rig.leases[0]
        paused._loop.stop()
        for _ in range(int((LEASE + RETRY) / 0.25)):
            rig.clock.advance(0.25)
            self.assertFalse(paused.is_acting() and rig.leases[1].is_acting())
        self.assertEqual(rig.acting_ids(), ["hm-1"])
        paused._loop.start(RETRY, now=True)  # resumes
        self.assertEqual(rig.acting_ids(), ["hm-1"])
        self.assertEqual((paused.role, paused.leader_id, paused.epoch), ("standby", "hm-1", 2))

    def test_store_down_no_one_acts_then_one_leads(self):
        """Store down: the leader stops acting after renew_deadline; back: one leader."""
        rig = Rig(self, 2)
        rig.start()
        rig.store.down = True
        rig.advance(DEADLINE - 0.5)
        self.assertEqual(rig.acting_ids(), ["hm-0"])
        rig.advance(1)
        self.assertEqual(rig.acting_ids(), [])
        self.assertEqual([lease.role for lease in rig.leases], ["standby", "standby"])
        rig.advance(30)
        self.assertEqual(rig.acting_ids(), [])
        rig.store.down = False
        rig.store.holder, rig.store.epoch = None, 0  # a restarted Redis has lost its data
        rig.advance(RETRY)
        self.assertEqual(len(rig.acting_ids()), 1)
        self.assertEqual({lease.epoch for lease in rig.leases}, {2})  # fencing token still grows

    def test_store_down_logged_once_per_transition(self):
        """A long outage gives one unreachable line, one demotion, one reachable-again."""
        logs = LogCapture(self)
        rig = Rig(self)
        rig.start()
        rig.store.down = True
        rig.advance(60)
        rig.store.down = False
        rig.advance(RETRY * 2)
        formats = [e["log_format"].split(" ", 3)[:3] for e in logs.ha_lines()]
        self.assertEqual([" ".join(f) for f in formats], [
            "HA: {holder} competing", "HA: became leader,", "HA: lease store",
            "HA: stopped acting,", "HA: lease store", "HA: became leader,"])
        self.assertGreater(rig.store.calls, 25)

    def test_slow_store_one_call_outstanding(self):
        """A store that does not answer gets one call at a time; the leader stops acting."""
        rig = Rig(self)
        rig.start()
        rig.store.slow = True
        rig.advance(DEADLINE + RETRY)
        self.assertEqual(len(rig.store.held), 1)
        self.assertFalse(rig.leases[0].is_acting())
        rig.store.slow = False
        rig.store.answer_held()  # a renewal sent long ago cannot restore acting
        self.assertFalse(rig.leases[0].is_acting())
        rig.clock.advance(RETRY)
        self.assertTrue(rig.leases[0].is_acting())  # re-acquired its own key

    def test_late_renewal_counts_from_its_send_time(self):
        """A renewal answered late extends acting only to send time + renew_deadline."""
        rig = Rig(self)
        rig.start()
        lease = rig.leases[0]
        rig.store.slow = True
        rig.advance(RETRY)  # renewal sent at t=2, held
        rig.clock.advance(DEADLINE - RETRY - 0.5)
        rig.store.slow = False
        rig.store.answer_held()
        self.assertTrue(lease.is_acting())
        rig.clock.rightNow += 3  # frozen: no further renewal ran
        self.assertFalse(lease.is_acting())

    def test_takeover_detected_on_renew(self):
        """A leader whose key now names another HM becomes standby at its next renewal."""
        rig = Rig(self)
        rig.start()
        rig.store.holder, rig.store.epoch = "intruder", 7
        rig.clock.advance(RETRY)
        lease = rig.leases[0]
        self.assertEqual(lease.role, "standby")
        rig.clock.advance(RETRY)
        self.assertEqual((lease.leader_id, lease.epoch), ("intruder", 7))

    def test_unexpected_store_error_logged_not_raised(self):
        """A store that raises something unexpected is logged; the loop goes on."""
        logs = LogCapture(self)
        rig = Rig(self)
        rig.store.acquire = lambda holder, ttl, seen: defer.fail(ValueError("odd reply"))
        rig.start()
        rig.advance(RETRY * 3)
        self.assertTrue(rig.leases[0]._loop.running)
        self.assertEqual(len([e for e in logs.events if e.get("log_failure")]), 4)
        self.flushLoggedErrors(ValueError)
        self.assertEqual(
            [e for e in logs.events if e.get("log_level") == LogLevel.critical], [])

    def test_store_raising_does_not_stop_the_loop(self):
        """A store call that raises (instead of failing its Deferred) is logged each time;
        the retry loop keeps running."""
        logs = LogCapture(self)
        rig = Rig(self)

        def broken(holder, ttl, seen):
            raise RuntimeError("broken store")

        rig.store.acquire = broken
        rig.start()
        rig.advance(RETRY * 2)
        self.assertTrue(rig.leases[0]._loop.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.assertEqual(len([e for e in logs.events if e.get("log_failure")]), 3)
