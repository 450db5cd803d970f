"""HA figures: what warm standbys cost the Cloud Controller, and failover times.

`python -m bench.ha cc [APPS ...]`: the simulated CC (bench.desired's indexed one) in its
own process serves full desired-state passes at `batch_size` 500 to one HM-side child;
measured on the CC process: CPU seconds, requests and bytes written per pass. Every standby
fetching at the normal cadence adds one such pass per `desired_state_update`.

`python -m bench.ha leader [RUNS]`: the leader's ingest rate (100k tracked instances) and
crash -> start p99 under load, an HA leader (its Nudger gated by a Redis lease, its journal
writing crash records and start intents) against a single HM, interleaved in the same run;
Redis commands per second meanwhile.

`python -m bench.ha durable writes|latency|burst|smoke ...`: the durable state's costs
(issue 11): Redis writes per crash, crash -> start p99 with persistence on against off,
a burst of 10,000 crashes; see bench/durable.py.

`python -m bench.ha failover [KILLS] [ETCD_MEMBERS]`: `simulate --ha 3` with the leader
SIGKILLed every few seconds; the failover times from its summary (SIGKILL -> another HM
leads; SIGKILL -> the new leader's first health.start). With ETCD_MEMBERS, on an etcd
cluster of that many members (`--ha-etcd`) instead of Redis.
"""

import json
import math
import subprocess
import sys
import time

import orjson
import psutil

from bench.common import child_env, median, run_child, spawn_child


def page_bytes(batch_size=500):
    """The size of one full /bulk/apps page as the simulated CC renders it."""
    from twisted.internet import task

    from bench.workload import guid
    from health_manager.simulation.cloud_controller import FakeCloudController
    from health_manager.testing.bus import InMemoryBus

    clock = task.Clock()
    cc = FakeCloudController(InMemoryBus(clock), clock)
    for number in range(batch_size):
        cc.create_app(guid("app", number), instances=4, place=False)
    results, last_id = cc.bulk_page(0, batch_size)
    return len(orjson.dumps({"results": results, "bulk_token": {"id": last_id}}))


def cc_pass_cost(apps):
    cc = spawn_child("bench.desired", "cc", apps)
    try:
        served = json.loads(cc.stdout.readline())
        process = psutil.Process(cc.pid)
        cpu = sum(process.cpu_times()[:2])
        started = time.perf_counter()
        hm = run_child("bench.desired", "hm", served["url"], served["user"],
                       served["password"])
        wall = time.perf_counter() - started
        passes = len(hm["passes"])
        return {
            "apps": apps, "passes": passes,
            "cc_cpu_s_per_pass": (sum(process.cpu_times()[:2]) - cpu) / passes,
            "mib_per_pass": math.ceil(apps / 500) * page_bytes() / 2 ** 20,
            "requests_per_pass": math.ceil(apps / 500) + 1,  # pages, plus /bulk/counts
            "hm_wall_s": wall,
        }
    finally:
        cc.terminate()
        cc.wait(10)


def cc(apps_list):
    rows = []
    for apps in apps_list:
        runs = [cc_pass_cost(apps) for _ in range(3)]
        row = {key: median([r[key] for r in runs]) for key in runs[0]}
        row["runs_cc_cpu_s"] = [round(r["cc_cpu_s_per_pass"], 3) for r in runs]
        rows.append(row)
    return rows


def failover(kills, etcd_members=0):
    from health_manager.simulation.ha_run import CHAOS_FRACTION

    period = 8
    # Leaders are killed only during the faults (the first CHAOS_FRACTION of the run).
    duration = round(period * (kills + 0.5) / CHAOS_FRACTION)
    done = subprocess.run(
        [sys.executable, "-m", "health_manager.cli", "simulate", "--ha", "3",
         "--kill-leader-every", str(period), "--duration", str(duration), "--plain",
         "--seed", "7", "--ha-etcd", str(etcd_members),
         "--json-summary"],
        env=child_env(), capture_output=True, text=True, timeout=duration + 120)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["exit_code"] = done.returncode
    return summary


def leader(runs):
    from bench import ingest, latency
    from bench.durable import RedisProbe
    from health_manager.simulation.redis_server import RedisServer

    redis = RedisServer(die_with_parent=True).start()
    probe = RedisProbe(redis)
    try:
        rows = {"single": [], "leader": []}
        for _ in range(runs):
            for name, url in (("single", None), ("leader", redis.url)):
                # The journal of the previous run would make these crashes repeats.
                probe.flushall()
                commands, started = redis.commands_processed(), time.monotonic()
                rate = ingest.measure(100_000, 3_000, url)
                p99 = latency.measure(300, True, url)
                rows[name].append({
                    "ingest_rate": rate["rate"], "cpu_s_per_million":
                    rate["cpu_s_per_million"], "crash_start_p99": p99["p99"],
                    "answered": p99["answered"],
                    "redis_commands_per_s": (redis.commands_processed() - commands)
                    / (time.monotonic() - started)})
        return {name: {"runs": measured, **{key: median([m[key] for m in measured])
                                            for key in measured[0]}}
                for name, measured in rows.items()}
    finally:
        probe.close()
        redis.stop()


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    if what == "cc":
        print(json.dumps(cc([int(a) for a in args] or [10_000, 100_000]), indent=1))
    elif what == "leader":
        print(json.dumps(leader(int(args[0]) if args else 2), indent=1))
    elif what == "failover":
        print(json.dumps(failover(*[int(a) for a in args] or [4]), indent=1))
    elif what == "durable":
        from bench import durable
        print(json.dumps(durable.run(*args), indent=1))
    else:
        raise SystemExit("python -m bench.ha cc|leader|failover|durable ...")
