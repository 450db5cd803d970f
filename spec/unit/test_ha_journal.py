"""What survives a restart or a failover (issue 11): the journal of crash records and start
intents, its fence, its handover, on task.Clock with an in-memory store.

Each test runs one or two HMs (PolicyRig with `ha_store`) on one clock and one store; an
HM "dies" by no longer being driven, and a "restarted" HM is a new rig with empty memory.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from health_manager.constants import CRASHED, FLAPPING, RUNNING
from health_manager.ha.journal import CRASH, START, WRITE_DELAY, IJournalStore, Journal
from health_manager.interfaces import IDurableState, ILeadership
from health_manager.metrics import Metrics
from health_manager.model.durable import CrashRecord, StartIntent
from health_manager.model.instance import AppInstance
from health_manager.scheduler import Scheduler
from health_manager.testing.journal import FakeLease, InMemoryJournalStore
from health_manager.web.state_view import StateView
from spec.unit.policy_rig import RETRY, PolicyRig, make_config
from spec.unit.policy_rig import START as T0

APP = "app-1"


class Foundation:
    """One clock, one store, and HMs on them; every message reaches every HM."""

    def __init__(self, instances=2):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = InMemoryJournalStore(self.clock)
        self.instances = instances
        self.hms = []

    def hm(self):
        rig = PolicyRig(clock=self.clock, ha_store=self.store)
        rig.desire(instances=self.instances)
        self.hms.append(rig)
        return rig

    def leader(self, rig):
        rig.lease.promote()
        self.clock.advance(0)  # the load
        assert rig.nudger.is_acting(), "loaded and acting"
        return rig

    def kill(self, rig):
        self.hms.remove(rig)

    def advance(self, seconds, step=5, beat=(0,)):
        """Let time pass: heartbeats of the `beat` indices (instance "g" + index, or an
        (index, guid) pair), analysis and queue drains."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.heartbeat(*beat)
            for rig in self.hms:
                rig.analyze()
                rig.nudger.drain()

    def heartbeat(self, *beats):
        pairs = [b if isinstance(b, tuple) else (b, f"g{b}") for b in beats]
        for rig in self.hms:
            rig.heartbeat(*[rig.beat(guid, index) for index, guid in pairs])

    def crash(self, index, guid):
        for rig in self.hms:
            rig.exited(guid, index, crash_timestamp=self.clock.seconds())
        self.clock.advance(0)

    def fresh(self):
        """Every HM trusts its actual state (heard for droplet_lost)."""
        self.advance(self.hms[0].intervals.droplet_lost + 1, beat=(0, 1))

    def record(self, index=1, version="v1"):
        value = self.store.live().get((CRASH, f"{APP}:{version}:{index}"))
        return None if value is None else CrashRecord.from_bytes(value)


def flapping_starts(rig):
    return [s for s in rig.starts() if s["flapping"]]


def crash_then_failover(test, old_leader_sends=True):
    """A leader sends a crash restart (or, without `old_leader_sends`, dies before it
    leaves); 3 s later the standby leads. (foundation, new leader)"""
    f = Foundation()
    a = f.leader(f.hm())
    b = f.hm()
    f.fresh()
    if not old_leader_sends:
        f.store.connected = False  # a's start and its intent never leave
        a.lease.depose()
    f.crash(1, "g1")
    test.assertEqual(len(a.starts()), int(old_leader_sends))
    f.store.connected = True
    if old_leader_sends:
        test.assertIn((START, f"{APP}:v1:1"), f.store.live())
    f.kill(a)
    f.advance(3, step=1)
    f.leader(b)
    return f, b


class CrashRecordTests(SynchronousTestCase):
    def test_interfaces(self):
        """The journal is an IDurableState, its handover an ILeadership, the store an
        IJournalStore."""
        f = Foundation()
        rig = f.hm()
        verifyObject(IDurableState, rig.journal)
        verifyObject(ILeadership, rig.nudger._leadership)
        verifyObject(IJournalStore, f.store)

    def test_each_crash_written_through_with_ttl_of_flapping_timeout(self):
        """The leader writes the slot's record on each crash: count, last crash, FLAPPING,
        the due time of the restart it scheduled; the TTL is flapping_timeout plus the wait
        for that restart."""
        f = Foundation()
        a = f.leader(f.hm())
        f.fresh()
        f.crash(1, "g1")
        record = f.record()
        self.assertEqual((record.crash_count, record.flapping, record.given_up,
                          record.restart_due), (1, False, False, None))
        f.advance(1, beat=(0,))
        now = f.clock.seconds()
        f.crash(1, "g1-b")
        record = f.record()
        self.assertEqual((record.crash_count, record.flapping, record.last_crash),
                         (2, True, now))
        self.assertEqual(record.restart_due, now + a.intervals.min_restart_delay)
        _, expires = f.store.entries[(CRASH, f"{APP}:v1:1")]
        self.assertEqual(expires, now + a.intervals.flapping_timeout
                         + a.intervals.min_restart_delay)

    def test_standby_and_unloaded_leader_write_nothing(self):
        """Only the leader that loaded its epoch's records writes: a standby's memory, or
        a leader's before the load, would overwrite a better record with a partial one."""
        f = Foundation()
        b = f.hm()
        f.fresh()
        f.crash(1, "g1")
        self.assertEqual(f.store.writes, [])
        f.store.connected = False
        b.lease.promote()
        f.clock.advance(0)
        self.assertFalse(b.nudger.is_acting())
        f.crash(1, "g1-b")
        f.store.connected = True
        self.assertEqual(f.store.writes, [])
        f.clock.advance(RETRY)  # the load is retried
        self.assertTrue(b.nudger.is_acting())

    def test_given_up_instance_stays_given_up_after_both_hms_restart(self):
        """Crash an index until the HM gives up; restart every HM (memory lost); crash it
        again: no start, ever."""
        f = Foundation()
        a = f.leader(f.hm())
        f.hm()  # a standby, restarted too
        f.fresh()
        for n, wait in enumerate((1, 61, 121, 241)):
            f.crash(1, f"g1-{n}")
            f.advance(wait, step=1)
        f.crash(1, "g1-last")
        self.assertEqual(a.metrics.flapping_restarts_given_up, 1)
        self.assertTrue(f.record().given_up)
        for rig in list(f.hms):
            f.kill(rig)
        c = f.leader(f.hm())
        self.assertEqual(c.metrics.ha_records_restored, 1)
        slot = c.registry.get(APP).find_instance("v1", 1)
        self.assertEqual((slot.crash_count, slot.state), (5, FLAPPING))
        f.crash(1, "g1-again")
        f.advance(1000, step=10)
        self.assertEqual(c.starts(), [])
        self.assertEqual(c.metrics.flapping_restarts_given_up, 1)

    def test_the_doubling_continues_after_a_restart(self):
        """After a restart the next delay is the one the crash count calls for, not the
        minimum again."""
        f = Foundation()
        f.leader(f.hm())
        f.fresh()
        for n, wait in enumerate((1, 61, 121)):
            f.crash(1, f"g1-{n}")
            f.advance(wait, step=1)
        self.assertEqual(f.record().crash_count, 3)
        f.kill(f.hms[0])
        c = f.leader(f.hm())
        f.crash(1, "g1-3")  # the fourth crash: 60 * 2**2
        pending = c.registry.get(APP).find_instance("v1", 1).pending_restart
        self.assertEqual(pending.when() - f.clock.seconds(), 4 * c.intervals.min_restart_delay)

    def test_pending_restart_fires_at_its_due_time_on_the_new_leader(self):
        """The third crash schedules a restart in 120 s; the leader dies 3 s later; a fresh
        HM that leads sends it at the original due time, flapping, exactly once."""
        for standby_heard_it in (True, False):
            f = Foundation()
            a = f.leader(f.hm())
            b = f.hm() if standby_heard_it else None
            f.fresh()
            for n, wait in enumerate((1, 61)):
                f.crash(1, f"g1-{n}")
                f.advance(wait, step=1)
            f.crash(1, "g1-2")
            due = f.record().restart_due
            self.assertEqual(due - f.clock.seconds(), 2 * a.intervals.min_restart_delay)
            f.advance(3, step=1)
            f.kill(a)
            b = f.leader(b if b is not None else f.hm())
            f.advance(200, step=0.5)
            self.assertEqual(len(flapping_starts(b)), 1, standby_heard_it)
            sent = b.nudger.last_start_sent(APP, 1)
            self.assertLessEqual(abs(sent - due), 1, standby_heard_it)

    def test_deposed_leaders_write_is_refused_and_counted(self):
        """Two HMs both believe they lead (a pause, a Redis failover): the one with the
        older epoch writes nothing; Redis refuses it and it counts and logs the refusal."""
        f = Foundation()
        a = f.leader(f.hm())
        b = f.leader(f.hm())  # epoch 2; a has not noticed yet
        f.fresh()
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        f.crash(1, "g1")
        self.assertEqual(a.metrics.ha_fenced_writes_refused, 2)  # the record and the intent
        self.assertEqual(b.metrics.ha_fenced_writes_refused, 0)
        self.assertEqual({e for e, _, ok in f.store.writes if not ok}, {1})
        self.assertTrue(any("refused" in e.get("log_format", "") and e.get("epoch") == 1
                            for e in logged))

    def test_redis_down_writes_wait_and_the_newest_value_lands(self):
        """A write that fails is kept and retried every retry_period; a newer value of the
        same record replaces it; nothing is lost."""
        f = Foundation()
        a = f.leader(f.hm())
        f.fresh()
        f.store.connected = False
        f.crash(1, "g1")
        f.advance(1, step=1)
        f.crash(1, "g1-b")
        self.assertGreater(a.metrics.ha_record_write_failures, 0)
        self.assertIsNone(f.record())
        f.store.connected = True
        f.clock.advance(RETRY)
        self.assertEqual(f.record().crash_count, 2)

    def test_writes_coalesce_per_key_and_go_in_batches(self):
        """Changes in one reactor turn cost one entry per record and one Redis call per
        100 records."""
        f = Foundation()
        a = f.leader(f.hm())
        for index in range(250):
            for count in (1, 2, 3):
                a.journal.record_crash(CrashRecord(APP, "v1", index, count, T0, True, False,
                                                   None))
        f.clock.advance(0)
        self.assertEqual([n for _, n, _ in f.store.writes], [100, 100, 50])
        self.assertEqual(a.metrics.ha_records_written, 250)
        self.assertEqual(f.record(index=249).crash_count, 3)

    def test_writes_wait_two_ms_so_the_start_leaves_first(self):
        """A record waits WRITE_DELAY before it leaves (the NATS flusher sends the start
        decided with it first); changes meanwhile share its call."""
        clock = task.Clock()
        store = InMemoryJournalStore(clock)
        lease = FakeLease(store)
        journal = Journal(store, Scheduler(clock), lease, make_config().intervals, Metrics(),
                          retry_period=RETRY)
        lease.promote()
        journal.begin(lease.epoch, [])
        journal.record_crash(CrashRecord(APP, "v1", 0, 1, T0, False, False, None))
        clock.advance(0)
        self.assertEqual(store.writes, [])
        journal.record_crash(CrashRecord(APP, "v1", 1, 1, T0, False, False, None))
        clock.advance(WRITE_DELAY)
        self.assertEqual(store.writes, [(1, 2, True)])

    def test_lost_redis_data_is_written_back(self):
        """Redis loses everything (FLUSHALL, a failover to an empty replica): the lease is
        lost with it; once the leader wins it again, its next analysis pass writes back
        every crash history it holds."""
        f = Foundation()
        a = f.leader(f.hm())
        f.fresh()
        f.crash(1, "g1")
        f.advance(1, step=1)
        f.crash(1, "g1-b")
        f.store.flushall()
        a.lease.depose()
        f.leader(a)
        self.assertIsNone(f.record())
        a.analyze()
        f.clock.advance(0)
        self.assertEqual(f.record().crash_count, 2)

    def test_given_up_records_are_kept_alive(self):
        """A give-up lasts as long as the HM remembers it: each write-back pass (every
        flapping_timeout / 2) renews its record before the TTL ends."""
        f = Foundation()
        a = f.leader(f.hm())
        f.fresh()
        for n, wait in enumerate((1, 61, 121, 241)):
            f.crash(1, f"g1-{n}")
            f.advance(wait, step=1)
        f.crash(1, "g1-last")
        f.advance(3 * a.intervals.flapping_timeout, step=20)
        self.assertTrue(f.record().given_up)

    def test_restore_is_sliced_and_acting_waits_for_the_last_slice(self):
        """2,500 records are merged 1,000 per reactor turn; the leader acts only after the
        last slice, and no write leaves before then."""
        f = Foundation()
        for index in range(2500):
            record = CrashRecord(f"app-{index}", "v1", 0, 2, T0, True, False, None)
            f.store.entries[(CRASH, record.key)] = (record.to_bytes(), T0 + 100)
        rig = f.hm()
        slices = []
        restore = rig.harmonizer.restore_crash_records

        def recording_restore(records):
            slices.append(len(records))
            return restore(records)

        rig.harmonizer.restore_crash_records = recording_restore
        rig.lease.promote()
        self.assertEqual(slices, [1000])  # the first at once, the others on later turns
        self.assertFalse(rig.nudger.is_acting())
        f.clock.advance(0)
        self.assertEqual(slices, [1000, 1000, 500])
        self.assertTrue(rig.nudger.is_acting())
        self.assertEqual(len(rig.registry), 2500)  # the rig's own app-1 among them
        self.assertEqual(f.store.writes, [])

    def test_unreadable_entries_skipped_and_counted(self):
        """An entry that is not a record (another writer, a bad version) is skipped with a
        count; the others load."""
        f = Foundation()
        good = CrashRecord(APP, "v1", 1, 3, T0, True, False, None)
        f.store.entries[(CRASH, "x")] = (b"{not json", T0 + 100)
        f.store.entries[(CRASH, "y")] = (b'{"app": "a", "index": -1}', T0 + 100)
        f.store.entries[(CRASH, good.key)] = (good.to_bytes(), T0 + 100)
        c = f.leader(f.hm())
        self.assertEqual(c.metrics.ha_unreadable_records, 2)
        self.assertEqual(c.registry.get(APP).find_instance("v1", 1).crash_count, 3)


class StartIntentTests(SynchronousTestCase):
    """A new leader does not repeat a start the old one sent (Kubernetes' expectations)."""

    def test_start_recorded_with_ttl_droplet_lost(self):
        """Each start sent is recorded: epoch and time, for droplet_lost."""
        f, _ = crash_then_failover(self)
        intent = StartIntent.from_bytes(f.store.live()[(START, f"{APP}:v1:1")])
        self.assertEqual((intent.epoch, intent.sent_at), (1, T0 + 31))
        self.assertEqual(f.store.entries[(START, f"{APP}:v1:1")][1], T0 + 31 + 30)

    def test_new_leader_does_not_repeat_a_live_intent(self):
        """The old leader's replacement comes up: the new leader sends nothing."""
        f, b = crash_then_failover(self)
        f.advance(5, step=1, beat=(0,))
        f.advance(60, step=5, beat=(0, (1, "g1-replacement")))
        self.assertEqual(b.starts(), [])
        self.assertGreaterEqual(b.metrics.ha_starts_skipped_for_intent, 1)

    def test_still_missing_after_the_intent_expires_started_once(self):
        """Nothing came up: once the intent has expired the missing check starts it, once."""
        f, b = crash_then_failover(self)
        f.advance(b.intervals.droplet_lost + 25, step=5, beat=(0,))
        self.assertEqual([s["indices"] for s in b.starts()], [[1]])

    def test_crash_without_an_intent_started_at_promotion(self):
        """The old leader died before its start left: the new leader starts the index at
        its first analysis, not droplet_lost later (no stopgap grace on a standby)."""
        f, b = crash_then_failover(self, old_leader_sends=False)
        b.analyze()
        b.nudger.drain()
        self.assertEqual([s["indices"] for s in b.starts()], [[1]])

    def test_an_exit_after_the_start_spends_the_intent(self):
        """The instance the old start made is evacuated: the new leader restarts it at once."""
        f, b = crash_then_failover(self)
        for rig in f.hms:
            rig.exited("g1-new", 1, reason="DEA_EVACUATION")
        f.clock.advance(0)
        self.assertEqual([s["indices"] for s in b.starts()], [[1]])


class OperatorViewTests(SynchronousTestCase):
    """What /v1/apps says while a new leader loads, and of a start another leader sent."""

    def view(self, rig):
        return StateView(rig.config, rig.scheduler, rig.registry, rig.metrics, rig.desired,
                         rig.freshness, rig.handover, rig.bus, rig.nudger, rig.now(),
                         durable=rig.journal)

    def test_loading_leader_says_so(self):
        """A leader whose journal is not loaded yet says it is loading, not "standby"."""
        f = Foundation()
        rig = f.hm()
        f.store.connected = False
        rig.lease.promote()
        self.assertEqual(self.view(rig).global_reason(),
                         "new leader: loading what earlier leaders recorded")

    def test_index_started_by_the_previous_leader(self):
        """An index the old leader started is explained by its intent."""
        f, b = crash_then_failover(self)
        [slot] = [s for s in self.view(b).app_detail(APP)["versions"]["v1"]
                  if s["index"] == 1]
        self.assertEqual(slot["reason"], "start sent 3 s ago by the leader of epoch 1, "
                                         "waiting for its heartbeat")


class AdoptCrashRecordTests(SynchronousTestCase):
    """How a stored history merges into a slot (AppInstance.adopt_crash_record)."""

    def slot(self, count=0, last=None, state=CRASHED):
        slot = AppInstance(0)
        slot.crash_count, slot.last_crash_timestamp, slot.state = count, last, state
        return slot

    def test_same_series_keeps_the_higher_count(self):
        """Two HMs that saw one series keep the higher count and the later crash."""
        slot = self.slot(2, 1000)
        self.assertFalse(slot.adopt_crash_record(5, 990, 500, 1))
        self.assertEqual((slot.crash_count, slot.last_crash_timestamp, slot.state),
                         (5, 1000, FLAPPING))

    def test_a_later_series_wins_an_older_one_is_ignored(self):
        """A stored series that began after this slot's quiet period replaces it; one that
        ended before this slot's began changes nothing."""
        slot = self.slot(4, 1000)
        self.assertTrue(slot.adopt_crash_record(1, 2000, 500, 1))
        self.assertEqual((slot.crash_count, slot.state), (1, CRASHED))
        self.assertFalse(slot.adopt_crash_record(9, 100, 500, 1))
        self.assertEqual(slot.crash_count, 1)

    def test_a_running_slot_keeps_its_state(self):
        """An instance running now stays RUNNING; only its crash history is adopted."""
        slot = self.slot(0, None, RUNNING)
        self.assertTrue(slot.adopt_crash_record(3, 1000, 500, 1))
        self.assertEqual((slot.crash_count, slot.state), (3, RUNNING))


# Crash streams: (index, seconds until the next event) pairs over a 4-instance app.
crash_streams = st.lists(st.tuples(st.integers(0, 3), st.floats(0, 300)), min_size=1,
                         max_size=25)


class HandoverPropertyTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None, database=None)
    @given(crash_streams, st.booleans())
    def test_a_new_leader_remembers_what_the_old_one_knew(self, stream, standby_heard):
        """Whatever the crashes, a leader that takes over from a dead one (a warm standby
        or a fresh HM) holds the same crash count, flapping state, give-up and pending
        restart due time for every slot the old leader had a record for."""
        f = Foundation(instances=4)
        a = f.leader(f.hm())
        b = f.hm() if standby_heard else None
        f.advance(a.intervals.droplet_lost + 1, beat=(0, 1, 2, 3))
        for n, (index, gap) in enumerate(stream):
            f.crash(index, f"g{index}-{n}")
            f.advance(gap, step=20, beat=())  # analysis passes, and their write-backs
        f.kill(a)
        b = f.leader(b if b is not None else f.hm())
        intervals = a.intervals
        now = f.clock.seconds()
        for index in range(4):
            old = a.registry.get(APP).find_instance("v1", index)
            if old is None or not old.crash_count:
                continue
            if old.last_crash_timestamp <= now - intervals.flapping_timeout and not (
                    old.crash_count > intervals.giveup_crash_number):
                continue  # the record has expired, as the old leader's count would reset
            new = b.registry.get(APP).find_instance("v1", index)
            self.assertEqual((new.crash_count, new.last_crash_timestamp),
                             (old.crash_count, old.last_crash_timestamp), index)
            if old.state in (CRASHED, FLAPPING):
                self.assertEqual(new.state, old.state, index)
            old_due = (old.pending_restart.when()
                       if old.pending_restart is not None and old.pending_restart.active()
                       else None)
            new_due = (new.pending_restart.when()
                       if new.pending_restart is not None and new.pending_restart.active()
                       else None)
            if old_due is not None:
                self.assertEqual(new_due, old_due, index)
