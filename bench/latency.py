"""Workload 4: crash → `health.start` latency, at idle and under ingest load (and crash →
`hm9000.start` with HM9000's contract, for bench.hm9000).

nats-server, the HM (bench.hm_process, fleet of FLEET instances with desired state) and a
heartbeat publisher process: at idle it plays the fleet's normal traffic (every instance
every 10 s), under load LOAD_RATE instance-heartbeats/s. This process publishes CRASHED
`droplet.exited` messages at CRASH_RATE per second (below the rate limit of
`queue_batch_size` per `request_queue`) and times each until its `health.start` arrives,
on one monotonic clock. The crashing apps are probes whose package is PENDING (with
HM9000's contract: STAGED, and the actual state never fresh), so no missing-instance start
of the analysis can be mistaken for a crash restart. Also reported:
the most starts seen in any `request_queue` window (must stay ≤ `queue_batch_size`).
"""

import asyncio
import json
import sys
import time

import nats
import orjson

from bench.common import median, percentile, reap, spawn_child
from bench.ingest import _control, _wait_ready
from bench.workload import (
    ENTRIES_PER_HEARTBEAT,
    PROBE_BASE,
    bench_config,
    guid,
    probe_id,
    probe_version,
)
from health_manager.contracts.hm2.messages import START_SUBJECT
from health_manager.simulation.nats_server import NatsServer

FLEET = 20_000
LOAD_RATE = 100_000  # instance-heartbeats/s: 40 % of the ingest target
IDLE_RATE = FLEET / 10  # each instance heartbeats every 10 s, as DEAs do
CRASH_RATE = 30.0
SETTLE = 3.0
NEVER_FRESH = 3600.0  # droplet_lost of an hm9000 run: longer than any run


def max_in_window(times, window):
    """The most timestamps falling in any half-open interval of `window` seconds."""
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def crash(number, timestamp=1378337201):
    """A CRASHED droplet.exited of probe `number`'s index 0, crashed at `timestamp`."""
    return orjson.dumps({
        "droplet": probe_id(number), "version": probe_version(number),
        "instance": guid("instance", PROBE_BASE + number), "index": 0, "reason": "CRASHED",
        "exit_status": 137, "exit_description": "bench", "crash_timestamp": timestamp,
        "cc_partition": "default"})


async def _one_run(crashes, load, redis_url=None, durable="journal", tls_dir=None):
    config = bench_config(hm9000=tls_dir is not None)
    intervals = config.intervals
    subject = START_SUBJECT if tls_dir is None else config.hm9000.start_subject
    server = NatsServer(die_with_parent=True).start()
    if tls_dir is None:
        hm = spawn_child("bench.hm_process", server.url, FLEET, crashes,
                         *([redis_url, durable] if redis_url else []))
    else:
        # The probes are STAGED here (workload.Fleet.probe_apps): an actual state that
        # never becomes fresh within the run keeps the missing check from starting them.
        hm = spawn_child("bench.hm_process", "--hm9000", tls_dir, NEVER_FRESH,
                         server.url, FLEET, crashes)
    publisher = None
    try:
        client = await nats.connect(server.url, name="bench-latency")
        await _wait_ready(client)
        rate = (LOAD_RATE if load else IDLE_RATE) / ENTRIES_PER_HEARTBEAT
        publisher = spawn_child("bench.publisher", server.url, FLEET, 0, rate)
        await asyncio.sleep(SETTLE)
        await _control(client, "stalls")
        sent, latencies, arrivals = {}, {}, []

        async def on_start(msg):
            now = time.perf_counter()
            arrivals.append(now)
            droplet = orjson.loads(msg.data)["droplet"]
            if droplet in sent and droplet not in latencies:
                latencies[droplet] = now - sent[droplet]

        await client.subscribe(subject, cb=on_start)
        await client.flush()
        started = time.perf_counter()
        for number in range(crashes):
            delay = started + number / CRASH_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = crash(number)
            sent[orjson.loads(payload)["droplet"]] = time.perf_counter()
            await client.publish("droplet.exited", payload)
        deadline = time.perf_counter() + SETTLE
        while len(latencies) < crashes and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        report = await _control(client, "report")
        await _control(client, "exit")
        await client.close()
    finally:
        if publisher is not None:
            publisher.terminate()
            reap(publisher, 10)
        reap(hm)
        server.stop()
    values = sorted(latencies.values())
    return {
        "crashes": crashes, "answered": len(values), "load": load, "subject": subject,
        "p50": percentile(values, 0.50), "p99": percentile(values, 0.99),
        "max": values[-1] if values else 0.0,
        "max_starts_per_window": max_in_window(sorted(arrivals), intervals.request_queue),
        "queue_batch_size": intervals.queue_batch_size,
        "hm_instance_heartbeats": report["instances"],
        "hm_longest_stall": report["longest_stall"],
        "slow_consumer_drops": report["slow_consumer_drops"],
        "ha_records_written": report["ha_records_written"],
        "ha_record_write_failures": report["ha_record_write_failures"],
    }


def measure(crashes, load, redis_url=None, durable="journal", tls_dir=None):
    """`redis_url`: the HM is an HA leader holding a lease in that Redis, with its journal
    (`durable` "journal") or without ("lease"). `tls_dir`: the HM speaks HM9000's contract
    (bench.hm_process --hm9000), so the crash is answered by `hm9000.start`."""
    return asyncio.run(_one_run(crashes, load, redis_url, durable, tls_dir))


def run(size):
    crashes, runs = (40, 1) if size == "smoke" else (1_000, 3)
    results = []
    for load in (False, True):
        attempts = [measure(crashes, load) for _ in range(runs)]
        results.append({
            "load": load, "runs": attempts,
            "p50": median([a["p50"] for a in attempts]),
            "p99": median([a["p99"] for a in attempts]),
            "answered": min(a["answered"] for a in attempts), "crashes": crashes,
            "max_starts_per_window": max(a["max_starts_per_window"] for a in attempts),
            "queue_batch_size": attempts[0]["queue_batch_size"],
        })
    return results


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1]), indent=1))
