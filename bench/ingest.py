"""Workload 1: heartbeat ingest end to end through a real nats-server.

Three processes: nats-server, the HM (bench.hm_process) and the publisher
(bench.publisher), which replays the fleet's 100-entry DEA heartbeats as fast as the HM
keeps up. The rate is what the HM *processed* (its own counter), over the steady part of
the run (after every DEA's first heartbeat created its records). CPU is the HM process's.
A second, in-process measurement splits the handler's cost into decode and model update.
"""

import asyncio
import json
import sys
import time
import urllib.request

import nats
import orjson

from bench.common import emit, median, reap, run_child, spawn_child
from bench.workload import ENTRIES_PER_HEARTBEAT
from health_manager.simulation.nats_server import NatsServer, free_port

STEADY_MESSAGES = 15_000  # after the first round: ~6 s at the 250k/s target
SPLIT_REPEATS = 3


async def _control(client, command, timeout=10.0):
    reply = await client.request("bench.control", orjson.dumps({"cmd": command}),
                                 timeout=timeout)
    return orjson.loads(reply.data)


async def _wait_ready(client, deadline=60.0):
    started = time.monotonic()
    while True:
        try:
            return await _control(client, "ping", timeout=0.5)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() - started > deadline:
                raise
            await asyncio.sleep(0.1)


async def _wait_processed(client, expected, idle_timeout=5.0):
    """Wait until the HM processed `expected` instance-heartbeats, or stopped advancing."""
    last, last_change = -1, time.monotonic()
    while True:
        report = await _control(client, "report", timeout=30.0)
        if report["instances"] >= expected:
            return report
        if report["instances"] != last:
            last, last_change = report["instances"], time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            return report
        await asyncio.sleep(0.2)


def _server_slow_consumers(monitor_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=5) as r:
        return json.load(r).get("slow_consumers", 0)


def steady_rate(samples, skip):
    """(instance-heartbeats/s, CPU s per million) between the first sample at or past
    `skip` processed and the last sample."""
    steady = [s for s in samples if s[2] >= skip] or samples
    first, last = steady[0], steady[-1]
    counted = last[2] - first[2]
    if counted <= 0 or last[0] <= first[0]:
        return 0.0, 0.0
    return counted / (last[0] - first[0]), (last[1] - first[1]) / counted * 1e6


async def _one_run(instances, messages, redis_url=None):
    monitor = free_port()
    server = NatsServer(extra_args=["-m", str(monitor)], die_with_parent=True).start()
    hm = spawn_child("bench.hm_process", server.url, instances,
                     *([0, redis_url] if redis_url else []))
    try:
        client = await nats.connect(server.url, name="bench-ingest")
        await _wait_ready(client)
        published = await asyncio.to_thread(
            run_child, "bench.publisher", server.url, instances, messages, 0)
        report = await _wait_processed(client, messages * ENTRIES_PER_HEARTBEAT)
        swept = await _control(client, "gc_sweep", timeout=30.0)
        await _control(client, "exit")
        await client.close()
    finally:
        try:
            slow = _server_slow_consumers(monitor)
        finally:
            reap(hm)
            server.stop()
    rate, cpu_per_million = steady_rate(report["samples"], instances)
    return {
        "instances": instances, "messages_sent": published["sent"],
        "messages_processed": report["msgs"], "instance_heartbeats": report["instances"],
        "rate": rate, "cpu_s_per_million": cpu_per_million,
        "slow_consumer_drops": report["slow_consumer_drops"],
        "server_slow_consumers": slow, "rejected": report["rejected"],
        "gc_garbage_found": swept["found"], "gc_sweep_wall": swept["wall"],
        "hm_rss": report["rss"],
    }


def measure(instances, messages, redis_url=None):
    """`redis_url`: the HM is an HA leader holding a lease in that Redis, with its journal."""
    return asyncio.run(_one_run(instances, messages, redis_url))


def split(instances, mode="hm2"):
    """In-process µs per instance-heartbeat: decode (the typed msgspec decode with its
    checks) and the whole handler; model update = handler - decode. Best of SPLIT_REPEATS
    passes over the fleet. `mode` hm9000: the handler also feeds the HM9000 heartbeat
    ledger (unchanged lists, as in steady state)."""
    from twisted.internet.task import Clock

    from bench.workload import Core, Fleet, bench_config
    from health_manager.interfaces import BusMessage
    from health_manager.model.heartbeat import decode_heartbeat_message
    from health_manager.testing.bus import InMemoryBus

    fleet = Fleet(instances)
    clock = Clock()
    core = Core(bench_config(hm9000=mode == "hm9000"), clock, InMemoryBus(clock))
    core.load_desired(fleet)
    messages = [BusMessage("dea.heartbeat", data) for data in fleet.heartbeats()]
    handler = core.actual_state.on_heartbeat
    for message in messages:  # the first round creates the records
        handler(message)
    count = fleet.instances

    def best(fn):
        times = []
        for _ in range(SPLIT_REPEATS):
            started = time.process_time()
            fn()
            times.append(time.process_time() - started)
        return min(times) / count * 1e6

    decode = best(lambda: [decode_heartbeat_message(m.data) for m in messages])
    whole = best(lambda: [handler(m) for m in messages])
    return {"decode_us": decode, "handler_us": whole, "model_us": max(0.0, whole - decode)}


def run(size):
    """Fleets are whole multiples of 100 instances: every message carries 100 entries."""
    if size == "smoke":
        plan = [(2_000, 200, 1)]
    else:
        plan = [(10_000, None, 1), (100_000, None, 3), (1_000_000, None, 1)]
    results = []
    for instances, messages, runs in plan:
        deas = instances // ENTRIES_PER_HEARTBEAT
        messages = messages or deas + max(2 * deas, STEADY_MESSAGES)
        attempts = [measure(instances, messages) for _ in range(runs)]
        splits = [run_child("bench.ingest", "split", instances) for _ in range(runs)]
        results.append({
            "instances": instances, "runs": attempts,
            "rate": median([a["rate"] for a in attempts]),
            "cpu_s_per_million": median([a["cpu_s_per_million"] for a in attempts]),
            "decode_us": median([s["decode_us"] for s in splits]),
            "model_us": median([s["model_us"] for s in splits]),
            "handler_us": median([s["handler_us"] for s in splits]),
            "drops": sum(a["slow_consumer_drops"] + a["server_slow_consumers"]
                         for a in attempts),
        })
    return results


if __name__ == "__main__":
    if sys.argv[1] == "split":
        emit(split(int(sys.argv[2]), *sys.argv[3:4]))
    else:
        print(json.dumps(run(sys.argv[1]), indent=1))
