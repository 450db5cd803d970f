"""EtcdLeaseStore and EtcdJournalStore against a real etcd (v2 keys API): the lease and its
epoch, outages, pauses, failover across members, client TLS, garbage answers, and the
fence, proven with a deposed writer whose write arrives after a newer leader's."""

import time

import orjson
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web import resource, server
from zope.interface.verify import verifyObject

from health_manager.config import build_config
from health_manager.ha.etcd import EtcdClient, EtcdJournalStore, EtcdLeaseStore
from health_manager.ha.journal import IJournalStore, Journal
from health_manager.ha.lease import LEADER, ILeaseStore, LeaseUnavailable
from health_manager.metrics import Metrics
from health_manager.model.durable import CrashRecord
from health_manager.scheduler import Scheduler
from health_manager.simulation.etcd_server import EtcdCluster, EtcdServer
from health_manager.testing.tls import tls_files
from spec.integration.delay_proxy import DelayProxy

PREFIX = "hm-test"


def _config(members, **tls):
    config, _ = build_config({
        "mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "127.0.0.1"},
        "ha": {"etcd": members, "lease_duration": 3, "renew_deadline": 2,
               "retry_period": 0.5, "key_prefix": PREFIX, **tls}}, {})
    return config


class EtcdCase(unittest.TestCase):
    size = 1

    def setUp(self):
        self.etcd = EtcdCluster(self.mktemp(), self.size)
        self.addCleanup(self.etcd.stop)
        self.etcd.start()

    def make_stores(self, members=None, prefix=PREFIX, **tls):
        """(lease store, journal store) on one client of `members` (default: all)."""
        self.config = _config(members or self.etcd.urls, **tls)
        client = EtcdClient(reactor, self.config.ha)
        self.addCleanup(client.stop)
        return EtcdLeaseStore(client, prefix), EtcdJournalStore(client, prefix)

    def lease_store(self, **kwargs):
        return self.make_stores(**kwargs)[0]

    def leader_node(self):
        return self.etcd.get(f"/{PREFIX}/leader")


class EtcdLeaseStoreTests(EtcdCase):
    async def test_acquire_renew_release(self):
        """One holder at a time; the epoch is the lease key's createdIndex, higher at each
        acquisition; renew and release compare the holder."""
        a, b = self.lease_store(), self.lease_store()
        verifyObject(ILeaseStore, a)
        acquired, epoch, holder = await a.acquire("a", 3000)
        self.assertEqual((acquired, holder), (True, "a"))
        self.assertEqual(epoch, self.leader_node()["createdIndex"])
        self.assertEqual(self.leader_node()["ttl"], 3)
        self.assertEqual(await b.acquire("b", 3000), (False, epoch, "a"))
        self.assertEqual(await a.acquire("a", 3000), (True, epoch, "a"))  # own key: same epoch
        self.assertEqual(await a.renew("a", 3000), epoch)
        self.assertIsNone(await b.renew("b", 3000))
        self.assertFalse(await b.release("b"))
        self.assertTrue(await a.release("a"))
        self.assertIsNone(self.leader_node())
        acquired, second, holder = await b.acquire("b", 3000)
        self.assertEqual((acquired, holder), (True, "b"))
        self.assertGreater(second, epoch)
        self.assertIsNone(await a.renew("a", 3000))

    async def test_lease_expires(self):
        """A lease not renewed is gone after its TTL (whole seconds, plus etcd's 500 ms
        expiry tick); the next acquire gets a higher epoch."""
        a = self.lease_store()
        _, epoch, _ = await a.acquire("a", 1000)
        self.assertEqual((await a.acquire("b", 1000))[0], False)
        await deferLater(reactor, 1.6)
        acquired, second, _ = await a.acquire("b", 1000)
        self.assertTrue(acquired)
        self.assertGreater(second, epoch)

    async def test_down_fails_fast_then_returns_with_its_data(self):
        """etcd stopped: calls fail at once with LeaseUnavailable; started again, the lease
        it kept on disk is still there (a restart is not a wipe)."""
        a = self.lease_store()
        _, epoch, _ = await a.acquire("a", 10_000)
        self.etcd.stop()
        started = time.monotonic()
        with self.assertRaises(LeaseUnavailable):
            await a.renew("a", 10_000)
        self.assertLess(time.monotonic() - started, 0.2)
        self.assertFalse(a.connected)
        self.etcd.start()
        self.assertEqual(await a.renew("a", 10_000), epoch)
        self.assertTrue(a.connected)

    async def test_paused_member_times_out(self):
        """A paused (SIGSTOP) etcd: a call fails within the reply timeout, never hangs."""
        a = self.lease_store()
        await a.acquire("a", 3000)
        member = self.etcd.members[0]
        member.pause()
        self.addCleanup(member.resume)
        started = time.monotonic()
        with self.assertRaises(LeaseUnavailable):
            await a.renew("a", 3000)
        self.assertLess(time.monotonic() - started, 1.5)
        member.resume()
        self.assertIsNotNone(await a.renew("a", 3000))

    async def test_garbage_and_errors_fail_over_to_the_next_member(self):
        """A member that answers 500 or not-JSON fails that call with LeaseUnavailable (no
        crash), and the next call goes to the next member listed."""
        for status, body in ((500, b'{"message": "raft internal"}'), (200, b"<html>")):
            garbage = _Garbage(status, body)
            port = reactor.listenTCP(0, server.Site(garbage), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            a = self.lease_store(members=[f"http://127.0.0.1:{port.getHost().port}",
                                          *self.etcd.urls])
            with self.assertRaises(LeaseUnavailable):
                await a.acquire(f"a{status}", 3000)
            self.assertEqual(garbage.requests, 1)
            acquired, _, _ = await a.acquire(f"a{status}", 3000)
            self.assertTrue(acquired)
            await a.release(f"a{status}")


class _Garbage(resource.Resource):
    isLeaf = True

    def __init__(self, status, body):
        super().__init__()
        self.status, self.body, self.requests = status, body, 0

    def render(self, request):
        self.requests += 1
        request.setResponseCode(self.status)
        return self.body


class EtcdMembersTests(EtcdCase):
    size = 3

    async def test_killed_member_skipped_paused_member_left(self):
        """Three members, listed followers first (a killed raft leader would hold every
        write for an election). The member the client talks to killed: the next call is
        answered by another at once. The killed one back and the other one paused: one call
        times out, the next is answered by the third (two of three keep the quorum)."""
        a = self.lease_store(members=sorted(
            self.etcd.urls, key=lambda url: self.etcd.member_at(url).is_raft_leader()))
        _, epoch, _ = await a.acquire("a", 30_000)  # outlives the blocking restart below
        first = self.etcd.member_at(a._client.member)
        first.kill()
        started = time.monotonic()
        self.assertEqual(await a.renew("a", 3000), epoch)
        self.assertLess(time.monotonic() - started, 0.5)
        second = self.etcd.member_at(a._client.member)
        self.assertIsNot(second, first)
        first.start()
        second.pause()
        self.addCleanup(second.resume)
        with self.assertRaises(LeaseUnavailable):
            await a.renew("a", 3000)
        self.assertEqual(await a.renew("a", 3000), epoch)
        self.assertIsNot(self.etcd.member_at(a._client.member), second)


class _HeldLease:
    """A lease its holder believes it holds at `epoch`, whatever etcd says."""

    role = LEADER

    def __init__(self, epoch):
        self.epoch = epoch


def _record(count):
    return CrashRecord("app", "v1", 0, count, 1.0, count >= 3, False, None)


class EtcdJournalStoreTests(EtcdCase):
    async def test_writes_fenced_by_the_lease_and_loaded_back(self):
        """A write lands only while the lease key's createdIndex is the writer's epoch,
        each entry in its epoch envelope with its TTL; load reads every live entry of a
        kind back out of its envelope, and nothing of another prefix."""
        lease, journal = self.make_stores()
        verifyObject(IJournalStore, journal)
        _, other = self.make_stores(prefix="hm-other")
        _, epoch, _ = await lease.acquire("a", 3000)
        entries = [("crash", f"app:v1:{i}", b'{"n":%d}' % i, 5000) for i in range(3)]
        self.assertTrue(await journal.write(epoch, entries))
        self.assertFalse(await journal.write(epoch + 1, [("crash", "app:v1:0", b"{}", 5000)]))
        self.assertFalse(await other.write(epoch, [("crash", "x", b"{}", 5000)]))  # no lease
        self.assertEqual(sorted(await journal.load("crash")),
                         [b'{"n":0}', b'{"n":1}', b'{"n":2}'])
        self.assertEqual(await journal.load("start"), [])
        self.assertEqual(await other.load("crash"), [])
        node = self.etcd.get(f"/{PREFIX}/crash/app:v1:0")
        self.assertEqual(orjson.loads(node["value"]), {"epoch": epoch, "record": {"n": 0}})
        self.assertTrue(4 <= node["ttl"] <= 5)

    async def test_keys_with_slashes_and_percents_stay_one_entry(self):
        """A version holding "/" or "%" is one key name, read back as written."""
        lease, journal = self.make_stores()
        _, epoch, _ = await lease.acquire("a", 3000)
        self.assertTrue(await journal.write(epoch, [("crash", "app:v/1%2F:0", b"[1]", 5000)]))
        self.assertTrue(await journal.write(epoch, [("crash", "app:v/1%2F:0", b"[2]", 5000)]))
        self.assertEqual(await journal.load("crash"), [b"[2]"])

    async def test_deposed_leaders_journal_write_refused_and_counted(self):
        """A leader whose lease expired and was won by another records a crash: nothing
        is written, the journal counts it, and the newer leader's record stays."""
        lease, store = self.make_stores()
        newer, newer_store = self.make_stores()
        _, old_epoch, _ = await lease.acquire("a", 1000)
        metrics = Metrics()
        journal = Journal(store, Scheduler(reactor), _HeldLease(old_epoch),
                          self.config.intervals, metrics, retry_period=0.5)
        journal.begin(old_epoch, [])
        await deferLater(reactor, 1.6)  # a's lease expires; "b" wins a newer epoch
        acquired, epoch, _ = await newer.acquire("b", 3000)
        self.assertTrue(acquired)
        self.assertTrue(await newer_store.write(epoch, [("crash", "app:v1:0", b'"newer"',
                                                         5000)]))
        journal.record_crash(_record(3))
        await deferLater(reactor, 0.1)
        await journal.flush()
        self.assertEqual((metrics.ha_fenced_writes_refused, metrics.ha_records_written), (1, 0))
        self.assertEqual(await newer_store.load("crash"), [b'"newer"'])

    async def test_late_write_of_a_deposed_leader_never_overrides_a_newer_one(self):
        """The fence's hard case: the old leader's write passes its lease check while it
        still holds the lease, but reaches etcd (through a 1.5 s delay) after a newer
        leader has written the same entry. The per-entry compare-and-swap sees the newer
        epoch and refuses it; the newer record stays."""
        direct, direct_journal = self.make_stores()
        proxy = DelayProxy("127.0.0.1", self.etcd.members[0].port, 1.5).start()
        self.addCleanup(proxy.stop)
        _, slow_journal = self.make_stores(members=[f"http://127.0.0.1:{proxy.listen_port}"])
        newer, newer_journal = self.make_stores()
        # The EtcdClient's reply timeout is the retry period; the slow link needs longer.
        slow_journal._client._timeout = 10
        _, old_epoch, _ = await direct.acquire("a", 2000)
        self.assertTrue(await direct_journal.write(old_epoch, [
            ("crash", "app:v1:0", b'"old 1"', 30_000)]))
        sent_at = time.monotonic()
        # The lease check arrives at ~1.5 s (held until 2-2.5 s), the PUT at ~4.5 s.
        late = slow_journal.write(old_epoch, [("crash", "app:v1:0", b'"old 2"', 30_000)])
        while True:
            acquired, epoch, _ = await newer.acquire("b", 3000)
            if acquired:
                break
            await deferLater(reactor, 0.1)
        self.assertTrue(await newer_journal.write(epoch, [
            ("crash", "app:v1:0", b'"newer"', 30_000)]))
        self.assertLess(time.monotonic() - sent_at, 4.0, "the newer write came too late "
                                                         "to prove anything")
        self.assertFalse(await late)
        self.assertGreater(time.monotonic() - sent_at, 4.5)
        self.assertEqual(await newer_journal.load("crash"), [b'"newer"'])
        node = self.etcd.get(f"/{PREFIX}/crash/app:v1:0")
        self.assertEqual(orjson.loads(node["value"])["epoch"], epoch)


class EtcdTlsTests(unittest.TestCase):
    async def test_client_certificate_required(self):
        """An https etcd asking for client certificates: with ha.etcd_ca_file, cert and key
        the lease is won; with a certificate of another CA, calls fail with
        LeaseUnavailable."""
        files = tls_files(self.mktemp())
        member = EtcdServer(self.mktemp(), tls={
            "ca_file": files["ca_file"], "cert_file": files["server_cert"],
            "key_file": files["server_key"], "client_cert_file": files["client_cert"],
            "client_key_file": files["client_key"]})
        self.addCleanup(member.stop)
        member.start()
        stores = []
        for cert, key in (("client_cert", "client_key"), ("stranger_cert", "stranger_key")):
            config = _config([member.url], etcd_ca_file=files["ca_file"],
                             etcd_cert_file=files[cert], etcd_key_file=files[key])
            client = EtcdClient(reactor, config.ha)
            self.addCleanup(client.stop)
            stores.append(EtcdLeaseStore(client, PREFIX))
        trusted, stranger = stores
        self.assertEqual((await trusted.acquire("a", 3000))[0], True)
        with self.assertRaises(LeaseUnavailable):
            await stranger.acquire("b", 3000)
