"""Durable HA state (issue 11): what the journal costs Redis, the crash path and a burst.

Run through `python -m bench.ha durable PART [...]` (each part takes a minute or two on 2
cores). Every part runs nats-server, a real redis-server, the HM child (bench.hm_process,
an HA leader built as the Manager builds one: lease, Journal, Handover) and a heartbeat
publisher playing the fleet's normal traffic; this process publishes CRASHED
`droplet.exited` messages for distinct probe slots and reads Redis on a socket of its own
(RedisProbe), independently of the HM's client.

- `writes [SPACED [BURST]]`: Redis commands per crash. SPACED crashes at 10/s (each its
  own write) and then BURST crashes published back to back (coalesced per key and batched,
  up to 100 records per fenced Lua call). Counted from Redis's INFO commandstats: Lua calls
  (round trips), SETs (records stored) and all commands, less the lease's renewals (one
  script of 4 commands per renewal, told apart by its PEXPIRE); and the HM's /varz
  `ha_records_written`.
- `latency idle|load [RUNS]`: crash -> start p99 with persistence on (lease + journal)
  against off (lease only), interleaved, RUNS each (bench.latency's run: 300 crashes at
  30/s), Redis flushed before each run.
- `burst [RUNS [CRASHES [SECONDS]]]`: CRASHES crashes (distinct slots) spread over
  SECONDS, in ticks of 10. With the journal every write must be done (crash keys in Redis
  == crashes, `ha_record_write_failures` 0); the HM's longest reactor stall (its 1 ms
  StallMonitor, reset as the burst begins) says whether anything blocked it, against the
  same burst with persistence off (lease only), interleaved, RUNS each. Then, with the
  journal, the first analysis pass since promotion (20 s after the HM started) writes
  back every crash history it still acts on: its Redis calls and the stall while it runs.
"""

import asyncio
import socket
import time
from collections import Counter

import nats

from bench import latency
from bench.common import median, reap, spawn_child
from bench.ingest import _control, _wait_ready
from bench.workload import ENTRIES_PER_HEARTBEAT
from health_manager.simulation.nats_server import NatsServer
from health_manager.simulation.redis_server import RedisServer

FLEET = 20_000
SPACED_RATE = 10.0
CHUNK = 10  # burst crashes published per tick
KEY_PREFIX = "health_manager"  # the HM's default ha.key_prefix
SETTLE = 2.0
RENEWAL_COMMANDS = 4  # EVALSHA of RENEW: the call, GET, PEXPIRE, GET


class RedisProbe:
    """Plain RESP commands to a RedisServer on a socket of its own. It tallies the commands
    it sent itself, so that commandstats shows only what the HM made Redis do."""

    def __init__(self, server):
        self._sock = socket.create_connection((server.host, server.port), timeout=10)
        self._file = self._sock.makefile("rb")
        self._own = Counter()
        if server.password:
            self.command("AUTH", server.password)

    def close(self):
        self._file.close()
        self._sock.close()

    def command(self, *args):
        self._own[str(args[0]).lower()] += 1
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self):
        line = self._file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2]
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"redis: unexpected reply {line!r}")

    def commandstats(self):
        """{command: calls} from INFO commandstats (calls made inside scripts included),
        less this probe's own, and 'all': their sum."""
        own = dict(self._own)  # before this INFO, which Redis counts once it has answered
        calls = {}
        for line in self.command("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, stats = line[len("cmdstat_"):].split(":", 1)
                calls[name] = int(stats.split(",", 1)[0].split("=", 1)[1]) - own.get(name, 0)
        calls["all"] = sum(calls.values())
        return calls

    def count(self, kind):
        """How many journal entries of `kind` (crash, start) Redis holds."""
        self._own["keys"] += 1
        return self.command("EVAL", "return #redis.call('KEYS', ARGV[1])", 0,
                            f"{KEY_PREFIX}:{kind}:*")

    def flushall(self):
        self.command("FLUSHALL")


def redis_cost(before, after, crashes):
    """What the journal cost Redis between two commandstats, per crash."""
    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    renewals = delta("pexpire")
    lua = delta("evalsha") + delta("eval") - renewals
    journal = delta("all") - RENEWAL_COMMANDS * renewals
    return {
        "crashes": crashes, "lua_calls": lua, "sets": delta("set"),
        "journal_commands": journal, "lease_renewals": renewals,
        "lua_calls_per_crash": lua / crashes, "sets_per_crash": delta("set") / crashes,
        "commands_per_crash": journal / crashes,
        "all_commands_per_crash": delta("all") / crashes,
        "by_command": {name: delta(name) for name in sorted(after)
                       if delta(name) and name != "all"},
    }


class _Rig:
    """nats-server, redis-server, the HM child with its journal, the idle publisher."""

    def __init__(self, fleet, probes, durable="journal"):
        self.fleet, self.probes, self.durable = fleet, probes, durable
        self.crashed = set()

    async def __aenter__(self):
        self.redis = RedisServer(die_with_parent=True).start()
        self.nats = NatsServer(die_with_parent=True).start()
        self.probe = RedisProbe(self.redis)
        self.hm = spawn_child("bench.hm_process", self.nats.url, self.fleet, self.probes,
                              self.redis.url, self.durable)
        self.publisher = None
        self.client = await nats.connect(self.nats.url, name="bench-durable")
        await _wait_ready(self.client)
        # Idle traffic: every instance heartbeats every 10 s, as DEAs do.
        self.publisher = spawn_child("bench.publisher", self.nats.url, self.fleet, 0,
                                     max(1.0, self.fleet / 10 / ENTRIES_PER_HEARTBEAT))
        await asyncio.sleep(SETTLE)
        return self

    async def crash(self, number):
        self.crashed.add(number)
        await self.client.publish("droplet.exited", latency.crash(number, int(time.time())))

    async def report(self):
        return await _control(self.client, "report")

    async def __aexit__(self, *exc):
        try:
            await _control(self.client, "exit")
            await self.client.close()
        finally:
            if self.publisher is not None:
                self.publisher.terminate()
                reap(self.publisher, 10)
            reap(self.hm)
            self.probe.close()
            self.nats.stop()
            self.redis.stop()


async def _wait_for_keys(probe, kind, expected, timeout):
    """Poll Redis until it holds `expected` entries of `kind`; (count, seconds waited)."""
    started = time.perf_counter()
    while True:
        count = probe.count(kind)
        waited = time.perf_counter() - started
        if count >= expected or waited > timeout:
            return count, waited
        await asyncio.sleep(0.1)


async def _writes(spaced, burst, fleet):
    async with _Rig(fleet, spaced + burst) as rig:
        result = {}
        for name, numbers, rate in (("spaced", range(spaced), SPACED_RATE),
                                    ("burst", range(spaced, spaced + burst), None)):
            report, stats = await rig.report(), rig.probe.commandstats()
            started = time.perf_counter()
            for position, number in enumerate(numbers):
                if rate:
                    delay = started + position / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await rig.crash(number)
            await rig.client.flush()
            keys, _ = await _wait_for_keys(rig.probe, "crash", numbers.stop, 10.0)
            await asyncio.sleep(0.3)  # the starts sent with the last crashes land too
            after_report, after_stats = await rig.report(), rig.probe.commandstats()
            written = after_report["ha_records_written"] - report["ha_records_written"]
            result[name] = {
                **redis_cost(stats, after_stats, len(numbers)),
                "crash_keys": keys - numbers.start, "window_s": time.perf_counter() - started,
                "starts_sent": after_report["starts_sent"] - report["starts_sent"],
                "ha_records_written": written,
                "ha_records_written_per_crash": written / len(numbers),
                "ha_record_write_failures": after_report["ha_record_write_failures"],
                # A pass in the window would add its write-back (see burst).
                "analysis_passes": after_report["analysis_passes"] - report["analysis_passes"],
            }
        return result


def writes(spaced=100, burst=1_000, fleet=FLEET):
    return asyncio.run(_writes(spaced, burst, fleet))


async def _burst(crashes, seconds, fleet, durable, with_write_back):
    async with _Rig(fleet, crashes, durable) as rig:
        passes = (await rig.report())["analysis_passes"]
        stats = rig.probe.commandstats()
        await _control(rig.client, "stalls")  # the HM's stall monitor starts now
        started = time.perf_counter()
        ticks = -(-crashes // CHUNK)
        for tick in range(ticks):
            delay = started + tick * seconds / ticks - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for number in range(tick * CHUNK, min(crashes, (tick + 1) * CHUNK)):
                await rig.crash(number)
        await rig.client.flush()
        sent_in = time.perf_counter() - started
        keys, waited = await _wait_for_keys(rig.probe, "crash", crashes,
                                            30.0 if durable == "journal" else 0.0)
        await asyncio.sleep(0.5)  # the intents of the starts sent meanwhile land too
        report, after = await rig.report(), rig.probe.commandstats()
        intents = rig.probe.count("start")
        write_back = (await _write_back(rig, report) if durable == "journal" and with_write_back
                      else None)
        return {
            "crashes": crashes, "seconds": seconds, "published_in_s": sent_in,
            "all_written_after_last_crash_s": waited,
            "crash_keys": keys, "start_keys": intents,
            "ha_records_written": report["ha_records_written"],
            "ha_record_write_failures": report["ha_record_write_failures"],
            "ha_fenced_writes_refused": report["ha_fenced_writes_refused"],
            "starts_sent": report["starts_sent"],
            "hm_longest_stall": report["longest_stall"],
            "hm_longest_stall_cpu": report["longest_stall_cpu"],
            "hm_longest_stall_at_s": report["longest_stall_at"],
            "slow_consumer_drops": report["slow_consumer_drops"],
            "redis": redis_cost(stats, after, crashes),
            # Persistence off writes nothing: no key to count.
            "lost": crashes - keys if durable == "journal" else None,
            "analysis_passes_in_burst": report["analysis_passes"] - passes,
            "write_back": write_back,
        }


async def _write_back(rig, before):
    """The first analysis pass since promotion writes back every crash history the HM
    still acts on (journal.py): wait for it (analysis runs every 20 s) and measure it."""
    if before["analysis_passes"] > 0:
        return None  # it ran before the burst: the next one is flapping_timeout / 2 away
    stats = rig.probe.commandstats()
    await _control(rig.client, "stalls")
    deadline = time.perf_counter() + 25.0
    report = before
    while report["analysis_passes"] == 0 and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
        report = await rig.report()
    written = report["ha_records_written"]
    while time.perf_counter() < deadline:  # until its writes have all landed
        await asyncio.sleep(0.3)
        report = await rig.report()
        if report["ha_records_written"] == written:
            break
        written = report["ha_records_written"]
    after = rig.probe.commandstats()
    return {
        "analysis_passes": report["analysis_passes"] - before["analysis_passes"],
        "ha_records_written": report["ha_records_written"] - before["ha_records_written"],
        "starts_sent": report["starts_sent"] - before["starts_sent"],  # their intents too
        "ha_record_write_failures": report["ha_record_write_failures"],
        "hm_longest_stall": report["longest_stall"],
        "hm_longest_stall_cpu": report["longest_stall_cpu"],
        "redis": redis_cost(stats, after, len(rig.crashed)),
    }


def burst(runs=3, crashes=10_000, seconds=10.0, fleet=FLEET, with_write_back=True):
    """The burst with persistence off and on, interleaved, `runs` each."""
    rows = {"off": [], "on": []}
    for _ in range(runs):
        for name, durable in (("off", "lease"), ("on", "journal")):
            rows[name].append(asyncio.run(_burst(crashes, seconds, fleet, durable,
                                                 with_write_back)))
    result = {name: {
        "runs": measured, "crashes": crashes, "seconds": seconds,
        "hm_longest_stall": median([m["hm_longest_stall"] for m in measured]),
        "hm_longest_stall_max": max(m["hm_longest_stall"] for m in measured),
        "slow_consumer_drops": sum(m["slow_consumer_drops"] for m in measured),
    } for name, measured in rows.items()}
    on = rows["on"]
    result["on"].update({
        "crash_keys_min": min(m["crash_keys"] for m in on),
        "lost_max": max(m["lost"] for m in on),
        "ha_record_write_failures": max(m["ha_record_write_failures"] for m in on),
        "all_written_after_last_crash_s": max(m["all_written_after_last_crash_s"]
                                              for m in on),
        "lua_calls_per_crash": median([m["redis"]["lua_calls_per_crash"] for m in on]),
    })
    backs = [m["write_back"] for m in on if m["write_back"]]
    if backs:
        result["on"]["write_back"] = {
            "observed": len(backs),
            "crash_records": median([b["ha_records_written"] - b["starts_sent"]
                                     for b in backs]),
            "lua_calls": median([b["redis"]["lua_calls"] for b in backs]),
            "hm_longest_stall_max": max(b["hm_longest_stall"] for b in backs),
            "ha_record_write_failures": max(b["ha_record_write_failures"] for b in backs),
        }
    return result


def crash_latency(load, runs, crashes=300):
    """Persistence off (lease only) and on (lease + journal), interleaved, `runs` each."""
    redis = RedisServer(die_with_parent=True).start()
    probe = RedisProbe(redis)
    try:
        rows = {"off": [], "on": []}
        for _ in range(runs):
            for name, durable in (("off", "lease"), ("on", "journal")):
                probe.flushall()  # no crash record of the previous run is loaded
                rows[name].append(latency.measure(crashes, load, redis.url, durable))
        return {name: {
            "runs": measured, "load": load, "crashes": crashes,
            "p50": median([m["p50"] for m in measured]),
            "p99": median([m["p99"] for m in measured]),
            "answered": min(m["answered"] for m in measured),
            "ha_records_written": median([m["ha_records_written"] for m in measured]),
            "ha_record_write_failures": max(m["ha_record_write_failures"]
                                            for m in measured),
            "hm_longest_stall": median([m["hm_longest_stall"] for m in measured]),
        } for name, measured in rows.items()}
    finally:
        probe.close()
        redis.stop()


def smoke():
    """Every part at a tiny size, in seconds: the figures are not meant to be read."""
    return {
        "writes": writes(10, 200, fleet=2_000),
        "latency": crash_latency(False, 1, crashes=30),
        "burst": burst(1, 1_000, 1.0, fleet=2_000, with_write_back=False),
    }


def run(part, *args):
    if part == "writes":
        return writes(*map(int, args))
    if part == "latency":
        load, *runs = args or ("idle",)
        if load not in ("idle", "load"):
            raise SystemExit("durable latency idle|load [RUNS]")
        return crash_latency(load == "load", int(runs[0]) if runs else 3)
    if part == "burst":
        runs, crashes, seconds = (list(args) + [3, 10_000, 10.0][len(args):])[:3]
        return burst(int(runs), int(crashes), float(seconds))
    if part == "smoke":
        return smoke()
    raise SystemExit("durable writes|latency|burst|smoke")
