"""Redis Sentinel (issue 11, item 6): a master, a replica and `redis-server --sentinel`
processes, all real. The connection follows a master failover; it does not use a replica
that a sentinel names as master; two twistd HMs lead again after the master is SIGKILLed.

Down-after 1000 ms keeps a failover near 2-3 s; the lease periods are test_ha_process's.
The measured times are printed.
"""

import time

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from health_manager.config import build_config
from health_manager.ha.connection import RedisConnection, RedisUnavailable
from health_manager.simulation.redis_server import RedisServer, SentinelServer
from health_manager.simulation.server_process import free_port
from spec.integration.support import LogCapture, sleep, wait_until
from spec.integration.test_ha_process import APP, LEASE, REDIS_PASSWORD, RETRY, HaCluster

MASTER_NAME = "hm-master"


class Replicated:
    """A master, its replica and `count` sentinels watching it (quorum: a majority)."""

    def __init__(self, test, count=1, down_after_ms=1000, watch_replica=False):
        """`watch_replica`: the sentinels wrongly watch the replica as the master."""
        self.master = RedisServer(password=REDIS_PASSWORD)
        self.replica = RedisServer(password=REDIS_PASSWORD, replicaof=self.master)
        directory = test.mktemp()
        watched = self.replica if watch_replica else self.master
        self.sentinels = [
            SentinelServer(watched, directory, MASTER_NAME, count // 2 + 1,
                           down_after_ms=down_after_ms, failover_timeout_ms=3000)
            for _ in range(count)]
        for server in (self.master, self.replica, *self.sentinels):
            test.addCleanup(server.stop)

    def start(self):
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        return self

    def settled(self):
        """Every sentinel knows the replica and the other sentinels: a failover can run."""
        states = [s.master_state() for s in self.sentinels]
        return all(state["slaves"] >= 1 and state["sentinels"] == len(self.sentinels)
                   for state in states)

    def failed_over(self):
        """Every sentinel names the replica, and the replica says it is master."""
        new = f"{self.replica.host}:{self.replica.port}"
        return (all(s.master_state()["address"] == new for s in self.sentinels)
                and self.replica.role() == "master")

    def ha_section(self, extra_sentinels=(), password=REDIS_PASSWORD):
        """`ha.sentinels` (with any `extra_sentinels` first) and the password via ha.redis."""
        return {"sentinels": [*extra_sentinels, *(s.address for s in self.sentinels)],
                "master_name": MASTER_NAME,
                "redis": f"redis://:{password}@127.0.0.1:1/0"}


def connection(test, ha):
    config, warnings = build_config({
        "mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "127.0.0.1"},
        "ha": dict(ha, lease_duration=3, renew_deadline=2, retry_period=0.5)}, {})
    assert any("is not used with ha.sentinels" in w for w in warnings), warnings
    conn = RedisConnection(reactor, config.ha)
    conn.start()
    test.addCleanup(conn.stop)
    return conn


class SentinelConnectionTests(TestCase):
    timeout = 30

    def setUp(self):
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)

    async def test_follows_failover(self):
        """Through the sentinels (a dead one listed first) to the master; the master
        SIGKILLed: calls fail at once, then reach the promoted replica, which has the data."""
        redis = Replicated(self).start()
        conn = connection(self, redis.ha_section(extra_sentinels=[f"127.0.0.1:{free_port()}"]))
        self.assertIn(f"master {MASTER_NAME}", conn.address)
        self.assertIn(redis.sentinels[0].address, conn.address)
        self.assertNotIn(REDIS_PASSWORD, conn.address)
        await wait_until(lambda: conn.connected, timeout=5, what="connected via sentinel")
        self.assertEqual(await conn.call("set", "hm-sentinel", "before"), "OK")
        await wait_until(lambda: redis.replica.execute("GET", "hm-sentinel") == "before",
                         what="replicated")
        await wait_until(redis.settled, timeout=10, what="the sentinel knows the replica")
        killed_at = time.monotonic()
        redis.master.kill()
        await wait_until(lambda: not conn.connected, timeout=2, what="connection lost")
        started = time.monotonic()
        with self.assertRaises(RedisUnavailable):
            await conn.call("get", "hm-sentinel")
        self.assertLess(time.monotonic() - started, 0.1)
        await wait_until(lambda: conn.connected, timeout=10, what="reconnected")
        reconnected = time.monotonic() - killed_at
        self.assertTrue(redis.failed_over())
        self.assertEqual(await conn.call("get", "hm-sentinel"), "before")
        self.assertEqual(await conn.call("set", "hm-sentinel", "after"), "OK")
        self.assertEqual(redis.replica.execute("GET", "hm-sentinel"), "after")
        text = self.logs.text()
        for server in (redis.master, redis.replica):
            self.assertIn(f"name {MASTER_NAME} at 127.0.0.1:{server.port} as master", text)
        self.assertNotIn(REDIS_PASSWORD, text)
        print(f"\nmaster SIGKILL -> connection on the promoted replica {reconnected:.2f} s "
              "(1 sentinel, down-after 1 s, retry 0.5 s)")

    async def test_replica_named_as_master_not_used(self):
        """A sentinel that names a replica as master: the connection is dropped on ROLE,
        never used (calls fail with RedisUnavailable), and the log says why."""
        # Watching the replica under the master's name; down-after 60 s keeps its flags
        # "master" for the whole test.
        redis = Replicated(self, down_after_ms=60_000, watch_replica=True).start()
        conn = connection(self, redis.ha_section())
        await wait_until(lambda: self.logs.count("is a slave, not a master: dropped") >= 1,
                         timeout=5, what="replica dropped")
        await sleep(1.2)  # two more reconnection attempts, each dropped again
        self.assertFalse(conn.connected)
        with self.assertRaises(RedisUnavailable):
            await conn.call("get", "x")
        self.assertIn(f"127.0.0.1:{redis.replica.port} is a slave", self.logs.text())

    async def test_wrong_password_refused(self):
        """A wrong password for the master named by the sentinels: the refusal is logged
        once, without the password, and calls fail with RedisUnavailable."""
        redis = Replicated(self).start()
        conn = connection(self, redis.ha_section(password="wrong-Pa55"))
        await wait_until(lambda: self.logs.count("refused the connection") == 1,
                         timeout=5, what="refusal logged")
        await sleep(1.0)
        self.assertEqual(self.logs.count("refused the connection"), 1)
        with self.assertRaises(RedisUnavailable):
            await conn.call("get", "x")
        self.assertNotIn("wrong-Pa55", self.logs.text())


class SentinelCluster(HaCluster):
    """HaCluster on a replicated Redis behind three sentinels (quorum 2)."""

    def __init__(self, test, count=2):
        super().__init__(test, count)
        self.replicated = Replicated(test, count=3)
        self.redis = self.replicated.master

    def start_redis(self):
        self.replicated.start()

    def redis_config(self):
        return self.replicated.ha_section()


class SentinelFailoverTests(TestCase):
    timeout = 60

    async def test_master_sigkill_leadership_resumes(self):
        """Two twistd HMs behind three sentinels. SIGKILL the master: within lease +
        the sentinel failover time exactly one HM leads again, holding the lease on the
        promoted replica, and a crash gets exactly one start."""
        cluster = await SentinelCluster(self).start()
        redis = cluster.replicated
        await cluster.one_leader()
        await wait_until(redis.settled, timeout=10, what="sentinels know each other")
        killed_at = time.monotonic()
        redis.master.kill()
        await wait_until(redis.failed_over, timeout=15, step=0.02, what="failover")
        failover = time.monotonic() - killed_at

        def leads_on_new_master(hm, varz):
            return redis.replica.execute("GET", "ha-test:leader") == varz["uuid"]

        found = []

        async def resumed():
            roles = await cluster.roles()
            found[:] = [(hm, v) for hm, v in roles.items() if v["ha_role"] == "leader"]
            return len(found) == 1 and leads_on_new_master(*found[0])

        deadline = killed_at + failover + LEASE + 0.5
        while not await resumed():
            self.assertLess(time.monotonic(), deadline, f"leaders: {found}")
            await sleep(0.05)
        took = time.monotonic() - killed_at
        leader, varz = found[0]
        self.assertGreaterEqual(redis.replica.execute("PTTL", "ha-test:leader"), 0)
        since = time.monotonic()
        await wait_until(lambda: 1 in cluster.foundation.running_indices(APP), what="running")
        cluster.crash(1)
        await wait_until(lambda: cluster.starts_of(1, since), timeout=10, what="restart")
        await sleep(LEASE)
        self.assertEqual(len(cluster.starts_of(1, since)), 1)
        self.assertEqual(len(await cluster.leaders()), 1)
        for hm in cluster.hms:
            output = hm.output()
            self.assertNotIn(REDIS_PASSWORD, output)
            self.assertNotIn("Traceback", output)
            self.assertIn("is not used with ha.sentinels", output)
        print(f"\nmaster SIGKILL -> sentinel failover {failover:.2f} s -> one leader on the "
              f"new master {took:.2f} s (epoch {varz['ha_epoch']}; lease {LEASE} s, "
              f"retry {RETRY} s, 3 sentinels quorum 2, down-after 1 s)")
