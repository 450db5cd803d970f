"""Several health managers on one Redis (issue 10): three `twistd -n health_manager`
children, one nats-server, one redis-server, the fake CC and DEAs. Exactly one HM acts; a
killed, stopped or paused leader is replaced within the lease; with Redis down no one acts.
test_ha_etcd_process runs the same tests on etcd (a subclass of HaCluster's store hooks).

Short periods (lease 3 s, renew deadline 2 s, retry 0.5 s) keep the module within a minute
or two. The measured failover times are printed.
"""

import signal
import time

import orjson
from twisted.trial.unittest import TestCase

from health_manager.simulation.nats_server import free_port
from health_manager.simulation.redis_server import RedisServer
from spec.integration.support import LiveFoundation, TwistdProcess, sleep, wait_until, write_config

LEASE, DEADLINE, RETRY = 3, 2, 0.5
REDIS_PASSWORD = "redis-Pa55-never-shown"
APP = "app-ha"


class HaCluster:
    """A live foundation, a Redis and `count` HM children sharing it."""

    store_name = "Redis"
    # How late after its TTL the store may expire a key (etcd: its leader's 500 ms tick).
    expiry_granularity = 0.0

    def __init__(self, test, count=3, intervals=None, ha=None):
        """`intervals` and `ha` update the HMs' FAST_INTERVALS and `ha` section."""
        self.test = test
        self.foundation = LiveFoundation(test)
        self.redis = RedisServer(password=REDIS_PASSWORD)
        test.addCleanup(self.redis.stop)
        self.hms = []
        self.count = count
        self.intervals = intervals
        self.ha = {"lease_duration": LEASE, "renew_deadline": DEADLINE,
                   "retry_period": RETRY, "key_prefix": "ha-test", **(ha or {})}

    def start_redis(self):
        self.redis.start()

    def redis_config(self):
        """The keys of the `ha` section that say where Redis is."""
        return {"redis": self.redis.url}

    def stop_store(self):
        """Stop the lease store (start it again with start_redis)."""
        self.redis.stop()

    async def start(self):
        self.start_redis()
        await self.foundation.start()
        self.foundation.place(APP, 4)
        await self.spawn(self.count)
        await wait_until(lambda: self.foundation.running_indices(APP) == [0, 1, 2, 3],
                         what="app running")
        await sleep(2.5)  # droplet_lost: every HM trusts its actual state
        return self

    async def spawn(self, count):
        """Start `count` more HM children; fires once each has the desired state."""
        children = []
        for _ in range(count):
            config = self.foundation.config_mapping(self.intervals)
            config["status"]["port"] = free_port()
            config["ha"] = {**self.redis_config(), **self.ha}
            child = TwistdProcess(self.test, write_config(self.test, **config))
            child.status_port = config["status"]["port"]
            children.append(child)
        self.hms += children
        await wait_until(lambda: all("bulk update done" in hm.output() for hm in children),
                         timeout=30, what="every HM has the desired state")
        return children

    def alive(self):
        return [hm for hm in self.hms if hm.process.poll() is None]

    async def varz(self, hm):
        try:
            code, body = await self.foundation.status_get(hm.status_port, "/varz")
        except Exception:
            return None
        return orjson.loads(body) if code == 200 else None

    async def roles(self, hms=None):
        """{hm: varz} for the HMs that answered."""
        answers = {}
        for hm in hms or self.alive():
            varz = await self.varz(hm)
            if varz is not None:
                answers[hm] = varz
        return answers

    async def leaders(self, hms=None):
        return [hm for hm, varz in (await self.roles(hms)).items()
                if varz["ha_role"] == "leader"]

    async def one_leader(self, timeout=10.0, among=None):
        """Wait until exactly one of the live HMs (or `among`) leads; that HM."""
        found = []

        async def poll():
            found[:] = await self.leaders(among)
            return len(found) == 1

        deadline = time.monotonic() + timeout
        while not await poll():
            if time.monotonic() > deadline:
                raise AssertionError(f"no single leader within {timeout} s: {found}")
            await sleep(0.05)
        return found[0]

    def crash(self, index):
        dea, instance = self.foundation.instance(APP, index)
        assert instance is not None, f"no live instance at {index}"
        dea.crash(instance.guid)

    def starts_of(self, index, since=0.0):
        return [s for s in self.foundation.starts(since)
                if s["droplet"] == APP and s["indices"] == [index]]

    def sent_lines(self):
        return sum(hm.output().count("sent health.start") for hm in self.hms)


class HaProcessTests(TestCase):
    timeout = 90
    cluster_class = HaCluster

    async def test_one_leader_one_start_one_reply(self):
        """Three HMs: one leads (same epoch everywhere), a crash gets one start, a
        healthmanager.health request one reply, and /healthz is `ok` on the standbys too."""
        cluster = await self.cluster_class(self).start()
        leader = await cluster.one_leader()
        roles = await cluster.roles()
        self.assertEqual(sorted(v["ha_role"] for v in roles.values()),
                         ["leader", "standby", "standby"])
        self.assertEqual({v["ha_leader"] for v in roles.values()}, {roles[leader]["uuid"]})
        epoch = roles[leader]["ha_epoch"]
        self.assertEqual({v["ha_epoch"] for v in roles.values()}, {epoch})
        for hm in cluster.hms:
            code, body = await cluster.foundation.status_get(hm.status_port, "/healthz")
            self.assertEqual((code, body), (200, b"ok"))
        since = time.monotonic()
        cluster.crash(1)
        await wait_until(lambda: cluster.starts_of(1, since), what="crash restart")
        await sleep(2 * LEASE)
        self.assertEqual(len(cluster.starts_of(1, since)), 1)
        self.assertEqual(len(cluster.foundation.starts(since)), 1)
        self.assertIn(f"epoch={epoch}",
                      leader.output().split("sent health.start")[1].splitlines()[0])
        replies = await cluster.foundation.request(
            "healthmanager.health", {"droplets": [{"droplet": APP, "version": "v1"}]},
            max_replies=3, timeout=1.0)
        self.assertEqual(len(replies), 1, replies)
        for hm in cluster.hms:
            self.assertNotIn(REDIS_PASSWORD, hm.output())
            self.assertNotIn("Traceback", hm.output())

    async def test_sigkill_leader(self):
        """SIGKILL of the leader: another leads within lease + retry; the instance that
        crashed at the kill gets one start; the next crash gets one start."""
        cluster = await self.cluster_class(self).start()
        leader = await cluster.one_leader()
        epoch = (await cluster.varz(leader))["ha_epoch"]
        killed_at = time.monotonic()
        leader.process.kill()
        await sleep(0.1)
        cluster.crash(2)
        new_leader = await cluster.one_leader(timeout=LEASE + RETRY + 2)
        took_over = time.monotonic() - killed_at
        await wait_until(lambda: cluster.starts_of(2, killed_at), timeout=10,
                         what="restart by the new leader")
        first_start = cluster.foundation.recorder.messages[-1][0] - killed_at
        self.assertLessEqual(took_over, LEASE + RETRY + cluster.expiry_granularity + 0.5)
        since = time.monotonic()
        await wait_until(lambda: 2 in cluster.foundation.running_indices(APP), what="running")
        cluster.crash(0)
        await wait_until(lambda: cluster.starts_of(0, since), what="next crash restart")
        await sleep(LEASE)
        self.assertEqual(len(cluster.starts_of(2, killed_at)), 1)
        self.assertEqual(len(cluster.starts_of(0, since)), 1)
        self.assertGreater((await cluster.varz(new_leader))["ha_epoch"], epoch)
        print(f"\n{cluster.store_name}: SIGKILL -> new leader {took_over:.2f} s; -> first "
              f"start for the instance crashed at the kill {first_start:.2f} s (lease {LEASE} "
              f"s, retry {RETRY} s, droplet_lost 2 s)")

    async def test_sigterm_hands_over(self):
        """SIGTERM of the leader: it releases the lease; another leads within 2 x retry."""
        cluster = await self.cluster_class(self).start()
        leader = await cluster.one_leader()
        others = [hm for hm in cluster.hms if hm is not leader]
        stopped_at = time.monotonic()
        leader.process.send_signal(signal.SIGTERM)
        await cluster.one_leader(timeout=5, among=others)
        handover = time.monotonic() - stopped_at
        self.assertLessEqual(handover, 2 * RETRY + 0.3)
        await wait_until(lambda: leader.process.poll() is not None, what="leader exited")
        self.assertIn("HA: lease released", leader.output())
        print(f"\nSIGTERM -> new leader {handover:.2f} s (retry {RETRY} s)")

    async def test_paused_leader_stays_silent(self):
        """SIGSTOP the leader past its lease, crash an instance while it is paused, SIGCONT:
        exactly one start in all, from the new leader; the resumed HM sends nothing."""
        cluster = await self.cluster_class(self).start()
        leader = await cluster.one_leader()
        others = [hm for hm in cluster.hms if hm is not leader]
        since = time.monotonic()
        leader.process.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: leader.process.poll() is None
                        and leader.process.send_signal(signal.SIGCONT))
        await cluster.one_leader(timeout=LEASE + RETRY + cluster.expiry_granularity + 2,
                                 among=others)
        cluster.crash(3)
        await wait_until(lambda: cluster.starts_of(3, since), what="restart by the new leader")
        sent_before = leader.output().count("sent health.")
        leader.process.send_signal(signal.SIGCONT)
        await sleep(2 * LEASE)
        self.assertEqual(len(cluster.starts_of(3, since)), 1)
        self.assertEqual(len(cluster.foundation.starts(since)), 1)
        self.assertEqual(leader.output().count("sent health."), sent_before)
        self.assertEqual((await cluster.varz(leader))["ha_role"], "standby")
        self.assertEqual(len(await cluster.leaders()), 1)

    async def test_store_down_no_one_acts(self):
        """The store (Redis, etcd) stopped: after renew_deadline no HM acts and a crash gets
        no start; restarted: one leader, and the index is then started once."""
        cluster = await self.cluster_class(self).start()
        await cluster.one_leader()
        stopped_at = time.monotonic()
        cluster.stop_store()

        async def all_standby():
            roles = await cluster.roles()
            return len(roles) == 3 and all(v["ha_role"] == "standby" for v in roles.values())

        while not await all_standby():
            self.assertLess(time.monotonic() - stopped_at, DEADLINE + RETRY + 1.5)
            await sleep(0.05)
        # The leader stops at its first retry after renew_deadline (is_acting() is False
        # from the deadline itself); the standbys never acted.
        self.assertGreaterEqual(time.monotonic() - stopped_at, DEADLINE - RETRY)
        since = time.monotonic()
        cluster.crash(1)
        await sleep(LEASE)  # droplet_lost passes: the index is missing, yet no one acts
        self.assertEqual(cluster.foundation.starts(since), [])
        cluster.start_redis()
        await cluster.one_leader(timeout=5)
        await wait_until(lambda: cluster.starts_of(1, since), what="start after the store is back")
        await sleep(LEASE)
        self.assertEqual(len(cluster.starts_of(1, since)), 1)
        self.assertEqual(len(cluster.foundation.starts(since)), 1)
        for hm in cluster.hms:
            output = hm.output()
            # Once for the outage, not once per retry (there were ~10 retries); a second
            # line is allowed for a reply timeout on a loaded machine as the store comes back.
            self.assertIn(output.count("lease store unreachable"), (1, 2), output)
            self.assertNotIn("Traceback", output)
