"""`health_manager simulate --ha N`: N health-manager processes on one embedded Redis
(or, with `--ha-etcd M`, an etcd cluster of M members).

The simulated foundation (fake CC, DEAs, embedded nats-server) runs in this process, as in
`simulate`; the health managers are `twistd -n health_manager` children sharing an embedded
redis-server through an `ha` section. During the chaos phase the leader is SIGKILLed every
`--kill-leader-every` seconds (an instance is crashed at the same moment) and a fresh HM
takes the dead one's place. Each HM's /varz says who leads. The summary gives every
failover's times: SIGKILL -> another HM leads, and SIGKILL -> the first `health.start` for
the instance crashed at the kill. The run is HEALED when every desired instance runs and no
failover caused a duplicate start.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

import attrs
import orjson
import yaml
from twisted.internet import defer, task
from twisted.logger import Logger

from health_manager.bus import NatsBus
from health_manager.simulation.etcd_server import EtcdCluster
from health_manager.simulation.foundation import Foundation, Scenario, demo_config
from health_manager.simulation.nats_server import NatsServer
from health_manager.simulation.redis_server import RedisServer
from health_manager.simulation.server_process import free_port, kill_with_parent
from health_manager.simulation.timers import SimulationTimers

CHAOS_FRACTION = 0.6
LEASE, DEADLINE, RETRY = 3, 2, 0.5
STATUS_AUTH = ("hm", "hm")
EXIT_NOT_HEALED = 1
EXIT_FAILED = 2


def add_arguments(parser):
    """The `--ha` options, added to `simulate`'s parser."""
    parser.add_argument("--ha", type=int, default=0, metavar="N",
                        help="run N health-manager processes on one embedded Redis (HA)")
    parser.add_argument("--kill-leader-every", type=float, default=0, metavar="SECONDS",
                        help="with --ha: SIGKILL the leader this often during the faults")
    parser.add_argument("--json-summary", action="store_true",
                        help="with --ha: end with the summary as one JSON line")
    parser.add_argument("--ha-etcd", type=int, default=0, metavar="MEMBERS",
                        help="with --ha: keep the lease in an embedded etcd cluster of this "
                             "many members (ha.etcd) instead of Redis")


def check_arguments(parser, args):
    if args.ha < 0 or args.ha == 1:
        parser.error("--ha needs at least 2 health managers")
    if args.kill_leader_every < 0:
        parser.error("--kill-leader-every must not be negative")
    if args.kill_leader_every and not args.ha:
        parser.error("--kill-leader-every needs --ha")
    if args.ha_etcd < 0 or (args.ha_etcd and not args.ha):
        parser.error("--ha-etcd needs --ha and a positive number of members")


@attrs.define
class Failover:
    killed: str
    at: float  # monotonic
    crashed: tuple | None  # (droplet, index) crashed at the kill
    new_leader: str | None = None
    took_over: float | None = None
    first_start: float | None = None


def _twistd():
    found = shutil.which("twistd", path=sysconfig.get_path("scripts"))
    return [found] if found else [sys.executable, "-m", "twisted.scripts.twistd"]


class HmChild:
    """One `twistd -n health_manager` child with its own config, status port and log file."""

    def __init__(self, name, workdir, config):
        self.name = name
        self.status_port = free_port()
        config = dict(config, status=dict(config["status"], port=self.status_port),
                      local_route="127.0.0.1")
        self.config_path = os.path.join(workdir, f"{name}.yml")
        self.log_path = os.path.join(workdir, f"{name}.log")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*_twistd(), "-n", "--pidfile=", "health_manager", "-c", self.config_path],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=kill_with_parent)
        self.uuid = None
        self.role = None
        self.epoch = None

    @property
    def alive(self):
        return self.process.poll() is None

    def kill(self, signum=signal.SIGKILL):
        if self.alive:
            self.process.send_signal(signum)

    def reap(self, timeout=5):
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class HaSimulationRun:
    log = Logger()

    def __init__(self, reactor, args, out):
        # Imported here: treq installs the default reactor, and `simulate` parses its
        # arguments before it installs the asyncio one.
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self._reactor = reactor
        self._args = args
        self._out = out
        self._rng = random.Random(args.seed)
        self.scenario = Scenario(
            apps=args.apps, instances=args.instances, crashy=args.crashy,
            flapping=args.flapping, missing=args.missing, deas=args.deas,
            crash_period=args.crash_period)
        self.nats = NatsServer(die_with_parent=True)
        self.workdir = tempfile.mkdtemp(prefix="hm-simulate-ha-")
        self.redis = self.etcd = None
        if args.ha_etcd:
            self.etcd = EtcdCluster(os.path.join(self.workdir, "etcd"), args.ha_etcd,
                                    die_with_parent=True)
        else:
            self.redis = RedisServer(die_with_parent=True)
        self.hms = []
        self.failovers = []
        self.starts = []  # (monotonic, droplet, index, flapping)
        self.losses = []  # (monotonic, droplet, index): exits seen on the bus, silent kills
        self.exit_code = EXIT_FAILED
        self.phase = "starting"
        self._names = iter(f"hm-{n}" for n in range(1, 1000))
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent(reactor, pool=self._pool))
        self._timers = SimulationTimers(reactor)
        self._began = None
        self._last_line = 0.0
        self._finished = False
        self.bus = self.foundation = None
        self._hm_config = None

    # --- start ---------------------------------------------------------------------------

    def begin(self):
        d = defer.Deferred.fromCoroutine(self._begin())
        d.addErrback(self._failed)

    async def _begin(self):
        self.nats.start()
        (self.etcd or self.redis).start()
        self.bus = NatsBus(self._reactor, self.nats.url, name="simulation")
        self.bus.start()
        while not self.bus.connected:
            await task.deferLater(self._reactor, 0.05)
        self.foundation = Foundation(self._reactor, self.bus, self.scenario, self._rng)
        self.foundation.cc.listen()
        await self.foundation.start()
        await self.bus.subscribe("health.start", self._on_start)
        await self.bus.subscribe("droplet.exited", self._on_exit)
        await self.bus.flush()
        config = demo_config(self.nats.url, self.foundation.cc.url)
        store = {"etcd": self.etcd.urls} if self.etcd else {"redis": self.redis.url}
        config["ha"] = {**store, "lease_duration": LEASE, "renew_deadline": DEADLINE,
                        "retry_period": RETRY, "key_prefix": "simulate"}
        self._hm_config = config
        for _ in range(self._args.ha):
            self._spawn()
        self.foundation.populate()
        self._began = time.monotonic()
        if self.redis is not None:
            self._redis_commands_at_begin = self.redis.commands_processed()
        self.phase = "chaos"
        chaos_end = self._args.duration * CHAOS_FRACTION
        self._timers.every(self._args.fault_interval, self._inject_fault, now=False)
        self._timers.every(0.25, self._poll, now=True)
        if self._args.kill_leader_every:
            self._timers.every(self._args.kill_leader_every, self._kill_leader, now=False)
        self._reactor.callLater(chaos_end, self._calm_down)

    def _spawn(self):
        hm = HmChild(next(self._names), self.workdir, self._hm_config)
        self.hms.append(hm)
        self._print(f"started {hm.name} (pid {hm.process.pid}, status port {hm.status_port})")
        return hm

    def _failed(self, failure):
        self.log.failure("simulation failed", failure)
        sys.stderr.write(f"health_manager simulate --ha: {failure.getErrorMessage()}\n")
        self.exit_code = EXIT_FAILED
        self._finished = True
        self._reactor.stop()

    # --- what happens --------------------------------------------------------------------

    def _on_start(self, message):
        try:
            payload = orjson.loads(message.data)
            droplet, indices = payload["droplet"], list(payload["indices"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        now = time.monotonic()
        for index in indices:
            self.starts.append((now, droplet, index, bool(payload.get("flapping"))))
            for failover in self.failovers:
                if failover.first_start is None and failover.crashed == (droplet, index):
                    failover.first_start = now - failover.at

    def _on_exit(self, message):
        try:
            payload = orjson.loads(message.data)
            self.losses.append((time.monotonic(), payload["droplet"], payload["index"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return

    def _inject_fault(self):
        if self.phase != "chaos":
            return
        if self._rng.random() < 1 / 3:
            where = {instance.guid: (instance.droplet, instance.index)
                     for dea in self.foundation.deas for instance in dea.instances.values()}
            guid = self.foundation.kill_random()
            if guid is not None:
                self.losses.append((time.monotonic(), *where[guid]))
        else:
            self.foundation.crash_random()

    def _calm_down(self):
        self.phase = "settling"
        self.foundation.calm_down()

    def _kill_leader(self):
        if self.phase != "chaos":
            return
        leaders = [hm for hm in self.hms if hm.alive and hm.role == "leader"]
        if len(leaders) != 1:
            return  # no settled leader yet: the next period tries again
        leader = leaders[0]
        crashed = self._crash_one()
        leader.kill()
        self.failovers.append(Failover(killed=leader.name, at=time.monotonic(),
                                       crashed=crashed))
        self._print(f"killed leader {leader.name} (epoch {leader.epoch})"
                    + (f"; crashed {crashed[0]}[{crashed[1]}]" if crashed else ""))
        leader.role = None
        self._reactor.callLater(1.0, self._replace, leader)

    def _crash_one(self):
        """Crash a RUNNING instance of a steady app (neither crashy nor flapping, so its
        restart is an ordinary crash restart, not a delayed flapping one)."""
        foundation = self.foundation
        steady = [(dea, instance) for dea in foundation.active_deas()
                  for instance in dea.instances.values()
                  if instance.state == "RUNNING"
                  and instance.droplet not in foundation.crashy_apps
                  and instance.droplet not in foundation.flapping_apps]
        if not steady:
            return None
        dea, instance = self._rng.choice(steady)
        dea.crash(instance.guid)
        return (instance.droplet, instance.index)

    def _replace(self, dead):
        dead.reap()
        self.hms.remove(dead)
        self._spawn()

    async def _varz(self, hm):
        import treq

        try:
            response = await self._http.get(
                f"http://127.0.0.1:{hm.status_port}/varz", auth=STATUS_AUTH, timeout=0.5)
            return orjson.loads(await treq.content(response))
        except Exception:
            return None

    async def _poll(self):
        for hm in list(self.hms):
            if not hm.alive:
                hm.role = None
                continue
            varz = await self._varz(hm)
            if varz is None:
                continue
            hm.uuid, hm.role, hm.epoch = varz.get("uuid"), varz.get("ha_role"), \
                varz.get("ha_epoch")
            if hm.role == "leader":
                for failover in self.failovers:
                    if failover.took_over is None and hm.name != failover.killed:
                        failover.took_over = time.monotonic() - failover.at
                        failover.new_leader = hm.name
                        self._print(f"{hm.name} leads (epoch {hm.epoch}) "
                                    f"{failover.took_over:.2f} s after the kill")
        self._tick()

    def _tick(self):
        if self._began is None or self._finished:
            return
        elapsed = time.monotonic() - self._began
        snapshot = self.foundation.snapshot()
        if elapsed - self._last_line >= 2:
            self._last_line = elapsed
            leaders = [f"{hm.name} (epoch {hm.epoch})" for hm in self.hms
                       if hm.role == "leader"]
            self._print(f"{elapsed:5.1f} s {self.phase:9} leader {', '.join(leaders) or '-'}"
                        f" | running {snapshot.running}/{snapshot.desired}, missing "
                        f"{snapshot.missing}, starts {len(self.starts)}, failovers "
                        f"{len(self.failovers)}")
        if elapsed >= self._args.duration and self.phase == "settling" and (
                snapshot.healthy or elapsed >= self._args.duration + self._args.grace):
            self.finish()

    def _print(self, line):
        self._out.write(line + "\n")
        self._out.flush()

    # --- the end -------------------------------------------------------------------------

    def duplicate_starts(self):
        """Starts that repeat one already made for the same index, less than droplet_lost
        before, with no exit or kill of that index in between, in the window after a leader
        kill (the lease plus twice the missing-check grace). Flapping restarts excluded."""
        grace = self._hm_config["intervals"]["droplet_lost"]
        window = LEASE + RETRY + 2 * grace
        timeline = sorted([(at, 1, d, i, flapping) for at, d, i, flapping in self.starts]
                          + [(at, 0, d, i, False) for at, d, i in self.losses])
        last_start, lost_since = {}, set()
        duplicates = 0
        for at, is_start, droplet, index, flapping in timeline:
            key = (droplet, index)
            if not is_start:
                lost_since.add(key)
                continue
            if flapping:
                continue
            previous = last_start.get(key)
            if (previous is not None and key not in lost_since and at - previous < grace
                    and any(f.at <= at <= f.at + window for f in self.failovers)):
                duplicates += 1
            last_start[key] = at
            lost_since.discard(key)
        return duplicates

    def summary(self):
        snapshot = self.foundation.snapshot()
        took = [f.took_over for f in self.failovers if f.took_over is not None]
        elapsed = time.monotonic() - self._began
        redis_rate = None
        if self.redis is not None:
            try:
                redis_rate = (self.redis.commands_processed()
                              - self._redis_commands_at_begin) / elapsed
            except OSError:
                pass
        first = [f.first_start for f in self.failovers if f.first_start is not None]
        return {
            "healed": snapshot.healthy and self.duplicate_starts() == 0,
            "running": snapshot.running, "desired": snapshot.desired,
            "health_managers": self._args.ha,
            "store": f"etcd x{self._args.ha_etcd}" if self.etcd else "redis",
            "lease_duration": LEASE, "renew_deadline": DEADLINE, "retry_period": RETRY,
            "droplet_lost": self._hm_config["intervals"]["droplet_lost"],
            "failovers": [attrs.asdict(f) for f in self.failovers],
            "took_over_s": sorted(round(t, 2) for t in took),
            "first_start_s": sorted(round(t, 2) for t in first),
            "duplicate_starts_after_failover": self.duplicate_starts(),
            "starts": len(self.starts),
            "instances": self.scenario.apps * self.scenario.instances,
            "redis_commands_per_s": redis_rate,
            "starts_refused_by_cc": snapshot.starts_refused,
            "logs": self.workdir,
        }

    def finish(self, stop_reactor=True):
        if self._finished:
            return
        self._finished = True
        if self.foundation is not None and self._began is not None:
            summary = self.summary()
            self.exit_code = 0 if summary["healed"] else EXIT_NOT_HEALED
            self._print(f"{'HEALED' if summary['healed'] else 'NOT HEALED'}: running "
                        f"{summary['running']}/{summary['desired']}, {len(self.failovers)} "
                        f"leader kills, duplicate starts after a failover "
                        f"{summary['duplicate_starts_after_failover']}")
            if summary["took_over_s"]:
                self._print(f"SIGKILL -> another HM leads (s): {summary['took_over_s']} "
                            f"(lease {LEASE} s + retry {RETRY} s = {LEASE + RETRY} s)")
            if summary["first_start_s"]:
                self._print(f"SIGKILL -> first start for the instance crashed at the kill "
                            f"(s): {summary['first_start_s']}")
            if summary["redis_commands_per_s"] is not None:
                self._print(f"Redis: {summary['redis_commands_per_s']:.1f} commands/s for "
                            f"{self._args.ha} HMs (a lease call per HM per retry period, "
                            "and the leader's crash records and start intents: about one "
                            "call per crash)")
            self._print(f"HM logs: {self.workdir}")
            if self._args.json_summary:
                self._print(json.dumps(summary))
        if stop_reactor:
            self._reactor.stop()

    def shutdown(self):
        """Before reactor shutdown: stop the HMs, the foundation, Redis and NATS."""
        self.finish(stop_reactor=False)
        self._timers.stop()
        for hm in self.hms:
            hm.kill(signal.SIGTERM)
        for hm in self.hms:
            hm.reap()
        d = defer.Deferred.fromCoroutine(self._shutdown())
        d.addTimeout(8, self._reactor)
        d.addErrback(lambda f: self.log.failure("shutdown did not finish cleanly", f))
        d.addBoth(lambda _: self.stop_servers())
        return d

    async def _shutdown(self):
        if self.foundation is not None:
            await defer.maybeDeferred(self.foundation.stop)
        if self.bus is not None:
            await self.bus.stop()
        await self._pool.closeCachedConnections()

    def stop_servers(self):
        for hm in self.hms:
            hm.kill()
        (self.etcd or self.redis).stop()
        self.nats.stop()


def run(reactor, args, out):
    """Run `simulate --ha` on an installed reactor; the process exit code."""
    simulation = HaSimulationRun(reactor, args, out)
    reactor.addSystemEventTrigger("before", "shutdown", simulation.shutdown)
    reactor.callWhenRunning(simulation.begin)
    try:
        reactor.run()
    finally:
        simulation.stop_servers()
    return simulation.exit_code
