"""What survives a restart or a failover (issue 11), with real processes: twistd HMs, one
nats-server, one redis-server, the fake CC and DEAs.

A given-up instance stays given up after every HM restarts; a pending flapping restart
fires at its original due time on the next leader, once; Redis losing its data (FLUSHALL)
is written back; a slow Redis (each command 500 ms late) slows nothing else.
test_ha_etcd_process runs DurableStateTests on etcd.
"""

import time

import orjson
from twisted.trial.unittest import TestCase

from spec.integration.delay_proxy import DelayProxy
from spec.integration.support import sleep, wait_until
from spec.integration.test_ha_process import APP, LEASE, REDIS_PASSWORD, RETRY, HaCluster

PREFIX = "ha-test"


class DurableCluster(HaCluster):
    def record(self, index):
        """The crash record Redis holds for APP's index, or None."""
        version = self.foundation.cc.apps[APP].version
        value = self.redis.execute("GET", f"{PREFIX}:crash:{APP}:{version}:{index}")
        return None if value is None else orjson.loads(value)

    async def crash_when_live(self, index, timeout=15):
        """Crash the instance at `index` once one is up again."""
        await wait_until(lambda: self.foundation.instance(APP, index)[1] is not None,
                         timeout=timeout, what=f"index {index} live")
        self.crash(index)

    def exited(self, index):
        """A droplet.exited CRASHED for `index`, as a DEA sends it."""
        version = self.foundation.cc.apps[APP].version
        self.foundation.bus.publish("droplet.exited", orjson.dumps({
            "droplet": APP, "version": version, "instance": f"late-{time.time()}",
            "index": index, "reason": "CRASHED", "exit_status": 137,
            "exit_description": "crashed", "crash_timestamp": int(time.time())}))

    def check_clean(self):
        for hm in self.hms:
            self.test.assertNotIn("Traceback", hm.output())
            self.test.assertNotIn(REDIS_PASSWORD, hm.output())


class DurableStateTests(TestCase):
    """What every store keeps (Redis here, etcd in test_ha_etcd_process)."""

    timeout = 120
    cluster_class = DurableCluster

    async def test_given_up_stays_given_up_after_every_hm_restarts(self):
        """Two HMs. Crash an index until it is given up; SIGKILL both and start two new
        ones (no memory); crash it again: no start (without the record, the index would
        be started as missing within droplet_lost)."""
        cluster = await self.cluster_class(self, count=2,
                                           intervals={"giveup_crash_number": 3}).start()
        leader = await cluster.one_leader()
        for _ in range(4):
            await cluster.crash_when_live(1)
        await wait_until(lambda: "given up on restarting" in leader.output(),
                         what="the leader gives up")
        record = cluster.record(1)
        self.assertEqual((record["crash_count"], record["given_up"]), (4, True))
        for hm in cluster.alive():
            hm.process.kill()
            hm.process.wait()
        new = await cluster.spawn(2)
        new_leader = await cluster.one_leader(timeout=LEASE + 5, among=new)
        await wait_until(lambda: "HA: loaded 1 crash records" in new_leader.output(),
                         what="the new leader loaded the record")
        since = time.monotonic()
        cluster.exited(1)
        await sleep(4)  # twice droplet_lost, eight analysis passes
        self.assertEqual(cluster.starts_of(1, since), [])
        self.assertIsNone(cluster.foundation.instance(APP, 1)[1])
        self.assertIn("given up on restarting", new_leader.output())
        cluster.check_clean()

    async def test_pending_restart_fires_on_time_after_sigkill(self):
        """Crash an index to its third crash: the leader schedules a restart in about 8 s
        (noise ±1 s); SIGKILL it. The new leader sends that restart at the recorded due
        time ±1 s, flapping, exactly once."""
        cluster = await self.cluster_class(self, count=2, intervals={
            "min_restart_delay": 4, "max_restart_delay": 16, "delay_time_noise": 1}).start()
        leader = await cluster.one_leader()
        for _ in range(3):
            await cluster.crash_when_live(1)
        await wait_until(lambda: (cluster.record(1) or {}).get("crash_count") == 3
                         and cluster.record(1)["restart_due"] is not None,
                         what="the third crash recorded with its due time")
        due = cluster.record(1)["restart_due"]
        killed_at = time.monotonic()
        leader.process.kill()
        others = [hm for hm in cluster.hms if hm is not leader]
        await cluster.one_leader(timeout=LEASE + RETRY + cluster.expiry_granularity + 2,
                                 among=others)
        await wait_until(lambda: cluster.starts_of(1, killed_at), timeout=20,
                         what="the restart from the new leader")
        arrived = next(at for at, subject, payload in cluster.foundation.recorder.messages
                       if at >= killed_at and subject == "health.start")
        sent_wall = time.time() - (time.monotonic() - arrived)
        await sleep(2)
        starts = cluster.starts_of(1, killed_at)
        self.assertEqual([s["flapping"] for s in starts], [True])
        self.assertLessEqual(abs(sent_wall - due), 1.0)
        print(f"\nrestart due {due - time.time() + (time.monotonic() - killed_at):.2f} s "
              f"after the SIGKILL, sent {sent_wall - due:+.2f} s from due by the new leader")
        cluster.check_clean()


class RedisDurableStateTests(TestCase):
    """What only Redis shows: its data lost (FLUSHALL), its commands slowed."""

    timeout = 120

    async def test_flushall_is_written_back(self):
        """FLUSHALL: no HM crashes; the lease is won again with a higher epoch and the
        leader writes back the crash record it holds."""
        cluster = await DurableCluster(self, count=2).start()
        leader = await cluster.one_leader()
        await cluster.crash_when_live(1)
        await cluster.crash_when_live(1)
        await wait_until(lambda: (cluster.record(1) or {}).get("crash_count") == 2,
                         what="record written")
        epoch = (await cluster.varz(leader))["ha_epoch"]
        cluster.redis.execute("FLUSHALL")
        await wait_until(lambda: cluster.record(1) is not None, timeout=10,
                         what="the record written back")
        self.assertEqual(cluster.record(1)["crash_count"], 2)
        now_leader = await cluster.one_leader()
        self.assertGreater((await cluster.varz(now_leader))["ha_epoch"], epoch)
        self.assertEqual(len(cluster.alive()), 2)
        cluster.check_clean()

    async def test_slow_redis_slows_nothing_else(self):
        """Every Redis command 500 ms late: the leader still leads, heartbeats are taken in
        at the usual rate, a crash is restarted at once, /varz answers at once, and the
        crash record still lands."""
        cluster = DurableCluster(self, count=1, ha={
            "lease_duration": 8, "renew_deadline": 5, "retry_period": 2})
        cluster.redis.start()
        proxy = DelayProxy("127.0.0.1", cluster.redis.port, 0.5).start()
        self.addCleanup(proxy.stop)
        cluster.ha["redis"] = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{proxy.listen_port}/0"
        cluster.start_redis = lambda: None  # started above, behind the proxy
        await cluster.start()
        leader = await cluster.one_leader(timeout=15)
        await wait_until(lambda: "acting as epoch" in leader.output(), timeout=10,
                         what="the journal loaded (a few slow round trips)")
        before = (await cluster.varz(leader))["instance_heartbeats_received"]
        began = time.monotonic()
        crashed_at = time.monotonic()
        cluster.crash(1)
        await wait_until(lambda: cluster.starts_of(1, crashed_at), timeout=5, what="restart")
        restart = cluster.foundation.recorder.messages[-1][0] - crashed_at
        slowest = 0.0
        for _ in range(10):
            asked = time.monotonic()
            varz = await cluster.varz(leader)
            slowest = max(slowest, time.monotonic() - asked)
            await sleep(0.3)
        await wait_until(lambda: cluster.record(1) is not None, what="record written")
        varz = await cluster.varz(leader)
        rate = (varz["instance_heartbeats_received"] - before) / (time.monotonic() - began)
        self.assertEqual(varz["ha_role"], "leader")
        self.assertLess(restart, 0.5)
        self.assertLess(slowest, 0.25)
        # 2 DEAs heartbeat their 4 instances every 0.5 s: 8 entries a second.
        self.assertGreater(rate, 6)
        self.assertGreaterEqual(varz["ha_records_written"], 2)
        self.assertEqual(varz["ha_record_write_failures"], 0)
        print(f"\nRedis +500 ms per command: crash -> start {restart * 1000:.0f} ms, "
              f"slowest /varz {slowest * 1000:.0f} ms, {rate:.1f} heartbeat entries/s")
        cluster.check_clean()
