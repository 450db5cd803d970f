"""The etcd stores (ha/etcd.py) on task.Clock over an in-memory v2 keys API: the lease and
its createdIndex epoch under Lease, and the journal's per-entry fence."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.ha.etcd import EtcdJournalStore, EtcdLeaseStore, EtcdUnavailable, envelope
from health_manager.ha.journal import IJournalStore, Journal
from health_manager.ha.lease import LEADER, ILeaseStore, LeaseUnavailable
from health_manager.metrics import Metrics
from health_manager.model.durable import CrashRecord
from health_manager.scheduler import Scheduler
from health_manager.testing.etcd import FakeEtcd, FakeEtcdClient
from spec.unit.lease_rig import LeaseRig

LEASE, DEADLINE, RETRY = 15, 10, 2
PREFIX = "hm"


def result(d):
    """The result of a Deferred that has fired."""
    answers = []
    d.addBoth(answers.append)
    assert answers, "not fired"
    if isinstance(answers[0], Exception) or hasattr(answers[0], "raiseException"):
        answers[0].raiseException()
    return answers[0]


class Rig(LeaseRig):
    """One FakeEtcd, `count` HMs each with its own client, lease store and Lease."""

    def __init__(self, count=2, lease=LEASE):
        clock = task.Clock()
        clock.advance(1000)
        self.etcd = FakeEtcd(clock)
        self.clients = [FakeEtcdClient(self.etcd) for _ in range(count)]
        self.stores = [EtcdLeaseStore(c, PREFIX) for c in self.clients]
        super().__init__(clock, self.stores, lease, DEADLINE, RETRY)


class EtcdLeaseTests(SynchronousTestCase):
    def test_one_acts_with_the_createdindex_as_epoch(self):
        """Two HMs: exactly one acts, both know its epoch: the lease key's createdIndex;
        the key's TTL is the lease duration."""
        rig = Rig()
        verifyObject(ILeaseStore, rig.stores[0])
        rig.start()
        rig.advance(3 * RETRY)
        [leader] = rig.acting()
        node = rig.etcd.node("/hm/leader")
        self.assertEqual(node["value"], leader.holder_id)
        self.assertEqual({lease.epoch for lease in rig.leases}, {node["createdIndex"]})
        self.assertEqual(node["expires"] - rig.clock.seconds(), LEASE)

    def test_cut_off_leader_stops_and_the_other_takes_over_with_a_higher_epoch(self):
        """The leader's etcd unreachable: it stops acting at renew_deadline, the standby
        acts once the key's TTL has run out, with a higher epoch."""
        rig = Rig()
        rig.start()
        [leader] = rig.acting()
        [standby] = [lease for lease in rig.leases if lease is not leader]
        epoch = leader.epoch
        rig.clients[rig.leases.index(leader)].down = True
        cut_at = rig.clock.seconds()
        while leader.is_acting():
            rig.clock.advance(0.25)
        self.assertLessEqual(rig.clock.seconds() - cut_at, DEADLINE)
        while not standby.is_acting():
            rig.clock.advance(0.25)
        self.assertGreaterEqual(rig.clock.seconds() - cut_at, LEASE - RETRY)
        self.assertLessEqual(rig.clock.seconds() - cut_at, LEASE + RETRY)
        self.assertGreater(standby.epoch, epoch)
        self.assertEqual(rig.acting(), [standby])

    def test_ttl_rounded_up_to_whole_seconds(self):
        """etcd counts whole seconds: a 2.5 s lease is a 3 s TTL, never 2."""
        rig = Rig(count=1)
        self.assertEqual(result(rig.stores[0].acquire("a", 2500))[0], True)
        node = rig.etcd.node("/hm/leader")
        self.assertEqual(node["expires"] - rig.clock.seconds(), 3)

    def test_own_key_after_a_lost_reply_keeps_its_epoch(self):
        """An acquire that finds its own holder id (the answer to its create or renew was
        lost) refreshes the key and keeps the epoch."""
        rig = Rig(count=1)
        store = rig.stores[0]
        _, epoch, _ = result(store.acquire("a", 3000))
        rig.clock.advance(2)
        self.assertEqual(result(store.acquire("a", 3000)), (True, epoch, "a"))
        self.assertEqual(rig.etcd.node("/hm/leader")["expires"] - rig.clock.seconds(), 3)

    def test_own_key_gone_before_its_renewal_is_not_claimed(self):
        """The own key found, then expired before the renewal lands: not acquired, and no
        holder named (not this HM)."""
        rig = Rig(count=1)
        store, client = rig.stores[0], rig.clients[0]
        _, epoch, _ = result(store.acquire("a", 3000))
        client.hold = True
        d = store.acquire("a", 3000)
        client.answer_held()  # the create: the key exists
        client.answer_held()  # the read: it is "a"'s
        del rig.etcd.nodes["/hm/leader"]
        client.answer_held()  # the renewal: gone
        self.assertEqual(result(d), (False, epoch, None))

    def test_renew_and_release_compare_the_holder(self):
        rig = Rig(count=1)
        store = rig.stores[0]
        _, epoch, _ = result(store.acquire("a", 3000))
        self.assertIsNone(result(store.renew("b", 3000)))
        self.assertFalse(result(store.release("b")))
        self.assertEqual(result(store.renew("a", 3000)), epoch)
        self.assertTrue(result(store.release("a")))
        self.assertIsNone(result(store.renew("a", 3000)))
        self.assertIsNone(rig.etcd.node("/hm/leader"))

    def test_down_is_unavailable(self):
        rig = Rig(count=1)
        rig.clients[0].down = True
        with self.assertRaises(LeaseUnavailable):
            result(rig.stores[0].acquire("a", 3000))


class _HeldLease:
    role = LEADER

    def __init__(self, epoch):
        self.epoch = epoch


def _record(count, index=0):
    return CrashRecord("app", "v1", index, count, 1.0, count >= 3, False, None)


class JournalRig:
    """A FakeEtcd with a lease won at `epoch` by "a", and journal stores for writers."""

    def __init__(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.etcd = FakeEtcd(self.clock)

    def win(self, holder):
        """`holder` takes the lease (any old one dropped); its epoch."""
        self.etcd.nodes.pop("/hm/leader", None)
        return result(EtcdLeaseStore(FakeEtcdClient(self.etcd), PREFIX).acquire(holder, 15_000))[1]

    def store(self):
        client = FakeEtcdClient(self.etcd)
        return client, EtcdJournalStore(client, PREFIX)

    def stored(self, key="app:v1:0"):
        node = self.etcd.node(f"/hm/crash/{key}")
        return None if node is None else node["value"]


class EtcdJournalStoreTests(SynchronousTestCase):
    def test_written_in_envelopes_loaded_out_of_them(self):
        rig = JournalRig()
        epoch = rig.win("a")
        _, store = rig.store()
        verifyObject(IJournalStore, store)
        self.assertTrue(result(store.write(epoch, [("crash", "app:v1:0", b'{"n":1}', 4500)])))
        self.assertEqual(rig.stored(), envelope(epoch, b'{"n":1}').decode())
        self.assertEqual(rig.etcd.node("/hm/crash/app:v1:0")["expires"] - rig.clock.seconds(), 5)
        self.assertEqual(result(defer.ensureDeferred(store.load("crash"))), [b'{"n":1}'])
        rig.clock.advance(5)
        self.assertEqual(result(defer.ensureDeferred(store.load("crash"))), [])

    def test_batch_refused_unless_the_lease_is_the_writers_epoch(self):
        """No lease key, or one created at another index: nothing is written."""
        rig = JournalRig()
        _, store = rig.store()
        self.assertFalse(result(store.write(5, [("crash", "app:v1:0", b"1", 5000)])))
        epoch = rig.win("a")
        self.assertFalse(result(store.write(epoch - 1, [("crash", "app:v1:0", b"1", 5000)])))
        self.assertIsNone(rig.stored())

    def test_update_is_one_request_with_the_remembered_index(self):
        rig = JournalRig()
        epoch = rig.win("a")
        client, store = rig.store()
        result(store.write(epoch, [("crash", "app:v1:0", b"1", 5000)]))
        client.requests.clear()
        result(store.write(epoch, [("crash", "app:v1:0", b"2", 5000)]))
        puts = [r for r in client.requests if r[0] == "PUT"]
        self.assertEqual(len(puts), 1)
        self.assertIn("prevIndex", puts[0][2])
        self.assertEqual(rig.stored(), envelope(epoch, b"2").decode())

    def test_older_or_unreadable_entry_replaced_by_a_newer_epoch(self):
        """A new leader (no index known) replaces an older epoch's entry, and garbage."""
        rig = JournalRig()
        old = rig.win("a")
        _, old_store = rig.store()
        result(old_store.write(old, [("crash", "app:v1:0", b'"old"', 5000)]))
        rig.etcd.answer("PUT", "/hm/crash/app:v1:1", {}, "garbage")
        new = rig.win("b")
        _, store = rig.store()
        self.assertTrue(result(store.write(new, [("crash", "app:v1:0", b'"new"', 5000),
                                                 ("crash", "app:v1:1", b'"new"', 5000)])))
        self.assertEqual(rig.stored(), envelope(new, b'"new"').decode())
        self.assertEqual(rig.stored("app:v1:1"), envelope(new, b'"new"').decode())

    def test_late_write_after_a_newer_leaders_refused(self):
        """The old leader's batch passes its lease check, then a newer leader writes the
        entry before the old one's PUT lands: the PUT's compare fails, the re-read shows
        the newer epoch, and the old write is refused (with or without a known index)."""
        for known_index in (True, False):
            rig = JournalRig()
            old = rig.win("a")
            client, old_store = rig.store()
            if known_index:
                result(old_store.write(old, [("crash", "app:v1:0", b'"old 1"', 5000)]))
            client.hold = True
            late = old_store.write(old, [("crash", "app:v1:0", b'"old 2"', 5000)])
            client.answer_held()  # the lease check: still "a"'s
            new = rig.win("b")
            _, store = rig.store()
            self.assertTrue(result(store.write(new, [("crash", "app:v1:0", b'"new"', 5000)])))
            client.hold = False
            client.answer_held()  # the late PUT
            self.assertFalse(result(late))
            self.assertEqual(rig.stored(), envelope(new, b'"new"').decode())

    def test_a_failed_batch_ends_after_all_its_puts(self):
        """etcd fails one put of a batch: the entries not sent yet are not sent, the
        batch fails with LeaseUnavailable once every put has ended, and only then does the
        next batch start."""
        rig = JournalRig()
        epoch = rig.win("a")
        client, store = rig.store()
        entries = [("crash", f"app:v1:{i}", b"1", 5000) for i in range(20)]
        client.hold = True
        first = store.write(epoch, entries)
        ended = []
        first.addBoth(lambda r: ended.append(r) or r)
        second = store.write(epoch, entries[:1])
        client.answer_held()  # the lease check
        self.assertEqual(len(client.held), 8)  # PARALLEL_WRITES puts
        client.down = True
        client.hold = False
        held, client.held = client.held, []
        held[0][0].errback(EtcdUnavailable("etcd went away"))
        self.assertEqual(ended, [])  # seven puts still out
        for d, method, key, params, value in held[1:]:
            d.callback(rig.etcd.answer(method, key, params, value))
        self.assertRaises(LeaseUnavailable, result, first)
        self.assertEqual(len(rig.etcd.nodes) - 1, 7)  # the lease, and the seven answered
        self.assertRaises(LeaseUnavailable, result, second)  # started after, etcd down

    def test_writes_of_one_store_never_overtake_each_other(self):
        """Two batches writing one entry, their answers coming back in reverse order: the
        second batch starts only after the first ended, so its value is the one kept."""
        rig = JournalRig()
        epoch = rig.win("a")
        client, store = rig.store()
        client.hold = True
        first = store.write(epoch, [("crash", "app:v1:0", b"1", 5000)])
        second = store.write(epoch, [("crash", "app:v1:0", b"2", 5000)])
        self.assertEqual(len(client.held), 1)  # only the first batch's lease check
        while client.held:
            client.answer_held(order=list(reversed(range(len(client.held)))))
        self.assertTrue(result(first) and result(second))
        self.assertEqual(rig.stored(), envelope(epoch, b"2").decode())

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 99)),
                    max_size=30))
    def test_an_entrys_epoch_never_goes_down(self, writes):
        """Any order of writes by four writers of increasing epochs (each holding its
        own remembered indices, the lease check skipped as if every one passed it just
        before being deposed): each entry ends with the value of the last write of the
        highest epoch that wrote it."""
        rig = JournalRig()
        epochs = [rig.win(f"hm-{n}") for n in range(4)]
        stores = [rig.store()[1] for _ in epochs]
        expected = {}
        for writer, slot, value in writes:
            epoch = epochs[writer]
            written = result(defer.ensureDeferred(stores[writer]._put(
                epoch, "crash", f"app:v1:{slot}", b"%d" % value, 60_000)))
            best = expected.get(slot)
            self.assertEqual(written, best is None or best[0] <= epoch)
            if written:
                expected[slot] = (epoch, value)
        for slot, (epoch, value) in expected.items():
            self.assertEqual(rig.stored(f"app:v1:{slot}"), envelope(epoch, b"%d" % value).decode())


class EtcdJournalTests(SynchronousTestCase):
    """The Journal (ha/journal.py) over EtcdJournalStore."""

    def setUp(self):
        self.rig = JournalRig()
        self.config, _ = build_config({"mbus": "nats://127.0.0.1:4222",
                                       "bulk_api": {"host": "127.0.0.1"}}, {})
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.rig.clock)

    def journal(self, epoch):
        _, store = self.rig.store()
        journal = Journal(store, self.scheduler, _HeldLease(epoch), self.config.intervals,
                          self.metrics, retry_period=RETRY)
        journal.begin(epoch, [])
        return journal

    def test_deposed_leaders_record_refused_and_counted(self):
        old = self.rig.win("a")
        journal = self.journal(old)
        journal.record_crash(_record(1))
        self.rig.clock.advance(0.01)
        self.assertEqual(self.metrics.ha_records_written, 1)
        self.rig.win("b")
        journal.record_crash(_record(2))
        self.rig.clock.advance(0.01)
        self.assertEqual((self.metrics.ha_records_written,
                          self.metrics.ha_fenced_writes_refused), (1, 1))

    def test_unreachable_etcd_retried_every_retry_period(self):
        epoch = self.rig.win("a")
        client, store = self.rig.store()
        journal = Journal(store, self.scheduler, _HeldLease(epoch), self.config.intervals,
                          self.metrics, retry_period=RETRY)
        journal.begin(epoch, [])
        client.down = True
        journal.record_crash(_record(1))
        self.rig.clock.advance(0.01)
        self.assertEqual((self.metrics.ha_record_write_failures, journal.pending), (1, 1))
        client.down = False
        # The lease's next call on the shared client finds etcd back.
        result(EtcdLeaseStore(client, PREFIX).renew("a", 15_000))
        self.rig.clock.advance(RETRY)
        self.assertEqual((self.metrics.ha_records_written, journal.pending), (1, 0))
        self.assertIsNotNone(self.rig.stored())
