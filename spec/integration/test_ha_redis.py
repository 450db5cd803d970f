"""RedisLeaseStore and RedisJournalStore against a real redis-server: the Lua scripts,
outages, pauses, restarts, the epoch fence."""

import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.ha.connection import RedisConnection
from health_manager.ha.journal import IJournalStore, Journal
from health_manager.ha.lease import LEADER, ILeaseStore, LeaseUnavailable
from health_manager.ha.redis import RedisJournalStore, RedisLeaseStore
from health_manager.metrics import Metrics
from health_manager.model.durable import CrashRecord
from health_manager.scheduler import Scheduler
from health_manager.simulation.redis_server import RedisServer

PASSWORD = "r3dis-pa55"


class RedisCase(unittest.TestCase):
    """A real redis-server per test, and stores on it."""

    def setUp(self):
        self.server = RedisServer(password=PASSWORD)
        self.addCleanup(self.server.stop)
        self.server.start()

    def make_store(self, url=None, prefix="hm-test", journal=False):
        """A lease store on its own connection; with `journal`, (lease store, journal
        store) sharing it."""
        config, _ = build_config({
            "mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "127.0.0.1"},
            "ha": {"redis": url or self.server.url, "lease_duration": 3, "renew_deadline": 2,
                   "retry_period": 0.5, "key_prefix": prefix}}, {})
        self.config = config
        connection = RedisConnection(reactor, config.ha)
        store = RedisLeaseStore(connection, config.ha.key_prefix)
        store.start()
        self.addCleanup(store.stop)
        if journal:
            return store, RedisJournalStore(connection, config.ha.key_prefix)
        return store

    async def until(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"condition not met within {timeout} s")
            await deferLater(reactor, 0.02)


class RedisLeaseStoreTests(RedisCase):
    async def test_scripts_acquire_renew_release(self):
        """One holder at a time; epochs count acquisitions; renew and release compare ids."""
        a, b = self.make_store(), self.make_store()
        verifyObject(ILeaseStore, a)
        await self.until(lambda: a.connected and b.connected)
        self.assertEqual(await a.acquire("a", 3000), (True, 1, "a"))
        self.assertEqual(await b.acquire("b", 3000), (False, 1, "a"))
        self.assertEqual(await a.acquire("a", 3000), (True, 1, "a"))  # own key: same epoch
        self.assertEqual(await a.renew("a", 3000), 1)
        self.assertIsNone(await b.renew("b", 3000))
        self.assertFalse(await b.release("b"))
        self.assertTrue(await a.release("a"))
        self.assertEqual(await b.acquire("b", 3000), (True, 2, "b"))
        self.assertIsNone(await a.renew("a", 3000))

    async def test_epoch_above_every_seen_one(self):
        """Acquiring with a seen epoch above the stored one (Redis restarted empty) gives
        seen + 1: the fencing token never goes back."""
        a = self.make_store()
        await self.until(lambda: a.connected)
        self.assertEqual(await a.acquire("a", 3000, 41), (True, 42, "a"))
        await a.release("a")
        self.assertEqual(await a.acquire("b", 3000, 7), (True, 43, "b"))

    async def test_lease_expires(self):
        """A lease not renewed is gone after its PX time; the next acquire bumps the epoch."""
        a = self.make_store()
        await self.until(lambda: a.connected)
        await a.acquire("a", 200)
        await deferLater(reactor, 0.3)
        self.assertEqual(await a.acquire("b", 200), (True, 2, "b"))

    async def test_prefixes_are_separate(self):
        """Two key prefixes (two foundations) hold separate leases on one Redis."""
        a, b = self.make_store(prefix="cf1"), self.make_store(prefix="cf2")
        await self.until(lambda: a.connected and b.connected)
        self.assertEqual(await a.acquire("a", 3000), (True, 1, "a"))
        self.assertEqual(await b.acquire("b", 3000), (True, 1, "b"))

    async def test_down_fails_fast_then_reconnects(self):
        """Redis killed: calls fail at once with LeaseUnavailable; restarted: they work."""
        a = self.make_store()
        await self.until(lambda: a.connected)
        self.server.kill()
        await self.until(lambda: not a.connected)
        started = time.monotonic()
        with self.assertRaises(LeaseUnavailable):
            await a.acquire("a", 3000)
        self.assertLess(time.monotonic() - started, 0.1)
        self.server.start()
        await self.until(lambda: a.connected, timeout=3)
        self.assertEqual(await a.acquire("a", 3000), (True, 1, "a"))

    async def test_paused_redis_times_out(self):
        """A paused (SIGSTOP) Redis: a call fails within the reply timeout, never hangs."""
        a = self.make_store()
        await self.until(lambda: a.connected)
        self.server.pause()
        started = time.monotonic()
        with self.assertRaises(LeaseUnavailable):
            await a.acquire("a", 3000)
        self.assertLess(time.monotonic() - started, 1.5)
        self.server.resume()
        answers = []
        deadline = time.monotonic() + 3
        while not answers and time.monotonic() < deadline:  # as the lease's retry loop does
            try:
                answers.append(await a.acquire("a", 3000))
            except LeaseUnavailable:
                await deferLater(reactor, 0.1)
        self.assertEqual(answers, [(True, 1, "a")])

    async def test_wrong_password_is_unavailable(self):
        """A wrong password never connects: one error line, calls fail with
        LeaseUnavailable."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        a = self.make_store(url=f"redis://:wrong@127.0.0.1:{self.server.port}/0")
        await deferLater(reactor, 0.3)
        with self.assertRaises(LeaseUnavailable):
            await a.acquire("a", 3000)
        refused = [e for e in events if "refused the connection" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1)
        self.assertNotIn("wrong", formatEvent(refused[0]).replace("WRONGPASS", ""))


class _HeldLease:
    """A lease its holder believes it holds at `epoch`, whatever Redis says."""

    role = LEADER

    def __init__(self, epoch):
        self.epoch = epoch


class RedisJournalStoreTests(RedisCase):
    """The journal's fenced writes and loads against the real scripts."""

    async def test_writes_are_fenced_by_the_stored_epoch(self):
        """A write lands only with the stored epoch, each entry with its TTL; load reads
        every live entry of a kind back, and nothing of another prefix."""
        lease, journal = self.make_store(journal=True)
        verifyObject(IJournalStore, journal)
        _, other = self.make_store(prefix="hm-other", journal=True)
        await self.until(lambda: journal.connected and other.connected)
        self.assertEqual((await lease.acquire("a", 3000))[1], 1)
        entries = [("crash", f"app:v1:{i}", f'{{"n": {i}}}', 5000) for i in range(3)]
        self.assertTrue(await journal.write(1, entries))
        self.assertFalse(await journal.write(2, [("crash", "app:v1:0", "{}", 5000)]))
        self.assertFalse(await other.write(1, [("crash", "x", "{}", 5000)]))  # no lease
        self.assertEqual(sorted(await journal.load("crash")),
                         ['{"n": 0}', '{"n": 1}', '{"n": 2}'])
        self.assertEqual(await journal.load("start"), [])
        self.assertEqual(await other.load("crash"), [])
        self.assertTrue(4000 < self.server.execute("PTTL", "hm-test:crash:app:v1:0") <= 5000)

    async def test_deposed_leaders_journal_write_refused_and_counted(self):
        """A leader at epoch 1 that has not noticed epoch 2 records a crash: Redis refuses
        it, the journal counts it, and the newer leader's record stays."""
        lease, store = self.make_store(journal=True)
        newer, _ = self.make_store(journal=True)
        await self.until(lambda: store.connected and newer.connected)
        await lease.acquire("a", 200)
        metrics = Metrics()
        journal = Journal(store, Scheduler(reactor), _HeldLease(1), self.config.intervals,
                          metrics, retry_period=0.5)
        journal.begin(1, [])
        await deferLater(reactor, 0.3)  # a's lease expires; "b" wins epoch 2
        self.assertEqual(await newer.acquire("b", 3000), (True, 2, "b"))
        self.assertTrue(await store.write(2, [("crash", "app:v1:0", "newer", 5000)]))
        journal.record_crash(CrashRecord("app", "v1", 0, 3, 1.0, True, False, None))
        await deferLater(reactor, 0.1)
        await journal.flush()
        self.assertEqual((metrics.ha_fenced_writes_refused, metrics.ha_records_written), (1, 0))
        self.assertEqual(self.server.execute("GET", "hm-test:crash:app:v1:0"), "newer")
