"""HM9000's contract (issue 19), side by side with the NATS path in one run.

`python -m bench.hm9000 [smoke|full]` (or `python -m bench.run --only hm9000`). Four
workloads, each against HM children speaking HM9000's contract (`bench.hm_process
--hm9000`, certificates made by health_manager.testing.tls in a temporary directory), the
two paths of each interleaved run by run:

- `ingest`: DEAS DEAs of 100 entries. Over HTTPS (`bench.https_publisher`: one keep-alive
  mutual-TLS connection per DEA, `POST /dea/heartbeat`), the HM relays each body on NATS
  `dea.heartbeat` and ingests it from there, so the path is TLS + HTTP + one NATS round trip
  + the NATS ingest; beside it the same heartbeats published on NATS (`bench.publisher`).
  Rate and CPU s per million are the HM process's, as bench.ingest measures them.
- `api`: APPS_INSTANCES instances heartbeating at their normal pace (every DEA every
  DEA_INTERVAL), the actual state fresh; `POST /bulk_app_state` (basic auth, one
  keep-alive connection) and NATS `app.state.bulk` asked in turn for the same sets of 1, 50
  and 500 apps; p50/p99 of each request's round trip, and a check that every app asked
  came back with all its instances.
- `latency`: crash → `hm9000.start` at idle, as bench.latency measures crash →
  `health.start`, with an hm2 run beside each hm9000 run.
- `memory`: RSS per instance at MEMORY_INSTANCES in each mode after two rounds of
  heartbeats (so the strings a later heartbeat decodes afresh count: the steady state), as
  bench.memory measures it.
"""

import asyncio
import base64
import http.client
import json
import sys
import tempfile
import time

import nats
import orjson

from bench import latency as latency_bench
from bench.common import median, percentile, reap, run_child, spawn_child
from bench.ingest import _control, _wait_processed, _wait_ready, steady_rate
from bench.workload import ENTRIES_PER_HEARTBEAT, HM9000_API_PASSWORD, HM9000_API_USER, Fleet
from health_manager.simulation.nats_server import NatsServer
from health_manager.testing.tls import tls_files

DEAS = 100
APPS_INSTANCES = 100_000
APP_SETS = (1, 50, 500)
# The actual state is fresh `droplet_lost` after the HM connected, and a DEA silent for
# longer drops out of the app-state replies: so it exceeds the DEAs' heartbeat interval,
# 10 s as real DEAs (the smoke size only waits less).
DROPLET_LOST = 12.0
DEA_INTERVAL = 10.0
MEMORY_INSTANCES = 100_000


def _sizes(size):
    """Per workload: ingest (DEAs, messages, runs); api (instances, requests per set and
    path, runs, droplet_lost, DEA heartbeat interval); latency (crashes, runs); memory
    (instances, runs)."""
    if size == "smoke":
        return {"ingest": (20, 200, 1), "api": (2_000, 5, 1, 2.0, 1.0), "latency": (20, 1),
                "memory": (2_000, 1)}
    return {"ingest": (DEAS, 6_000, 3), "api": (APPS_INSTANCES, 200, 3, DROPLET_LOST,
                                                DEA_INTERVAL),
            "latency": (1_000, 3), "memory": (MEMORY_INSTANCES, 3)}


def _hm(server, tls_dir, instances, probes=0, droplet_lost=DROPLET_LOST):
    return spawn_child("bench.hm_process", "--hm9000", tls_dir, droplet_lost, server.url,
                       instances, probes)


# -- 1. ingest -----------------------------------------------------------------------------

async def _ingest_run(path, deas, messages, tls_dir):
    instances = deas * ENTRIES_PER_HEARTBEAT
    server = NatsServer(die_with_parent=True).start()
    hm = _hm(server, tls_dir, instances)
    try:
        client = await nats.connect(server.url, name="bench-hm9000-ingest")
        ports = await _wait_ready(client)
        if path == "https":
            published = await asyncio.to_thread(
                run_child, "bench.https_publisher", server.url, ports["heartbeat_port"],
                tls_dir, instances, messages)
        else:
            published = await asyncio.to_thread(
                run_child, "bench.publisher", server.url, instances, messages, 0)
        report = await _wait_processed(client, messages * ENTRIES_PER_HEARTBEAT)
        await _control(client, "exit")
        await client.close()
    finally:
        reap(hm)
        server.stop()
    rate, cpu_per_million = steady_rate(report["samples"], instances)
    return {"path": path, "deas": deas, "messages_sent": published["sent"],
            "statuses": published.get("statuses"), "messages_processed": report["msgs"],
            "instance_heartbeats": report["instances"], "rate": rate,
            "cpu_s_per_million": cpu_per_million,
            "https_relayed": report["https_heartbeats_relayed"],
            "https_rejected": report["https_rejected"],
            "https_tls_failures": report["https_tls_failures"],
            "slow_consumer_drops": report["slow_consumer_drops"],
            "rejected": report["rejected"]}


def ingest(size, tls_dir):
    deas, messages, runs = _sizes(size)["ingest"]
    attempts = {"https": [], "nats": []}
    for _ in range(runs):
        for path in attempts:
            attempts[path].append(asyncio.run(_ingest_run(path, deas, messages, tls_dir)))
    return {path: {"deas": deas, "entries": ENTRIES_PER_HEARTBEAT, "messages": messages,
                   "runs": rows, "rate": median([r["rate"] for r in rows]),
                   "cpu_s_per_million": median([r["cpu_s_per_million"] for r in rows])}
            for path, rows in attempts.items()}


# -- 2. the app-state API --------------------------------------------------------------------

def app_sets(fleet, sizes=APP_SETS):
    """{n: [{droplet, version}] of n apps spread over the fleet}."""
    sets = {}
    for count in sizes:
        step = max(1, fleet.apps // count)
        sets[count] = [{"droplet": fleet.app_id(app), "version": fleet.version(app)}
                       for app in range(0, step * count, step)[:count]]
    return sets


class BulkClient:
    """`POST /bulk_app_state` on one keep-alive connection, with basic auth."""

    def __init__(self, port):
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        credentials = f"{HM9000_API_USER}:{HM9000_API_PASSWORD}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode(),
                         "Content-Type": "application/json"}

    def ask(self, body):
        """(seconds, reply body) of one request."""
        began = time.perf_counter()
        self._connection.request("POST", "/bulk_app_state", body, self._headers)
        response = self._connection.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise RuntimeError(f"POST /bulk_app_state answered {response.status}")
        return elapsed, data

    def close(self):
        self._connection.close()


def _complete(reply, wanted, per_app):
    """Every app asked is in the reply, with all its instances listed."""
    apps = orjson.loads(reply)
    return (len(apps) == len(wanted)
            and all(len(apps[w["droplet"]]["instance_heartbeats"]) == per_app
                    for w in wanted))


async def _api_run(instances, requests, tls_dir, droplet_lost, dea_interval):
    fleet = Fleet(instances)
    sets = app_sets(fleet)
    server = NatsServer(die_with_parent=True).start()
    hm = _hm(server, tls_dir, instances, droplet_lost=droplet_lost)
    publisher = None
    bulk = None
    try:
        client = await nats.connect(server.url, name="bench-hm9000-api")
        ports = await _wait_ready(client, deadline=120.0)
        # Every DEA heard once at once, then at its normal pace.
        await asyncio.to_thread(run_child, "bench.publisher", server.url, instances,
                                fleet.deas, 0)
        publisher = spawn_child("bench.publisher", server.url, instances, 0,
                                fleet.deas / dea_interval)
        bulk = BulkClient(ports["api_port"])
        probe = orjson.dumps(sets[1])
        deadline = time.monotonic() + droplet_lost + 30
        while (await asyncio.to_thread(bulk.ask, probe))[1] == b"{}":
            if time.monotonic() > deadline:
                raise RuntimeError("the actual state never became fresh")
            await asyncio.sleep(0.2)
        await _control(client, "stalls")
        results = {}
        for count, wanted in sets.items():
            body = orjson.dumps(wanted)
            http_times, nats_times, complete = [], [], True
            for _ in range(requests):
                elapsed, data = await asyncio.to_thread(bulk.ask, body)
                http_times.append(elapsed)
                began = time.perf_counter()
                reply = await client.request("app.state.bulk", body, timeout=30)
                nats_times.append(time.perf_counter() - began)
                complete = (complete and _complete(data, wanted, fleet.per_app)
                            and _complete(reply.data, wanted, fleet.per_app))
            results[count] = {
                "apps": count, "requests": requests, "complete": complete,
                "reply_bytes": len(data),
                "http_p50": percentile(http_times, 0.50), "http_p99": percentile(http_times, 0.99),
                "nats_p50": percentile(nats_times, 0.50), "nats_p99": percentile(nats_times, 0.99)}
        report = await _control(client, "report")
        await _control(client, "exit")
        await client.close()
    finally:
        if bulk is not None:
            bulk.close()
        if publisher is not None:
            publisher.terminate()
            reap(publisher, 10)
        reap(hm)
        server.stop()
    return {"instances": instances, "sets": results,
            "hm_longest_stall": report["longest_stall"],
            "slow_consumer_drops": report["slow_consumer_drops"]}


def api(size, tls_dir):
    instances, requests, runs, droplet_lost, dea_interval = _sizes(size)["api"]
    attempts = [asyncio.run(_api_run(instances, requests, tls_dir, droplet_lost,
                                     dea_interval)) for _ in range(runs)]
    rows = []
    for count in APP_SETS:
        sets = [a["sets"][count] for a in attempts]
        rows.append({"apps": count, "requests": requests,
                     "complete": all(s["complete"] for s in sets),
                     **{key: median([s[key] for s in sets])
                        for key in ("http_p50", "http_p99", "nats_p50", "nats_p99")}})
    return {"instances": instances, "runs": attempts, "sets": rows}


# -- 3. crash -> start ---------------------------------------------------------------------

def latency(size, tls_dir):
    crashes, runs = _sizes(size)["latency"]
    attempts = {"hm9000": [], "hm2": []}
    for _ in range(runs):
        attempts["hm9000"].append(latency_bench.measure(crashes, False, tls_dir=tls_dir))
        attempts["hm2"].append(latency_bench.measure(crashes, False))
    return {mode: {"crashes": crashes, "runs": rows,
                   "subject": rows[0]["subject"],
                   "p50": median([r["p50"] for r in rows]),
                   "p99": median([r["p99"] for r in rows]),
                   "answered": min(r["answered"] for r in rows)}
            for mode, rows in attempts.items()}


# -- 4. memory -----------------------------------------------------------------------------

def memory(size):
    instances, runs = _sizes(size)["memory"]
    attempts = {"hm9000": [], "hm2": []}
    for _ in range(runs):
        for mode in attempts:
            attempts[mode].append(run_child("bench.memory", instances, mode, 2))
    return {mode: {"instances": instances, "runs": rows,
                   "bytes_per_instance": median([r["bytes_per_instance"] for r in rows])}
            for mode, rows in attempts.items()}


def run(size):
    with tempfile.TemporaryDirectory(prefix="bench-hm9000-") as tls_dir:
        tls_files(tls_dir)
        return {"ingest": ingest(size, tls_dir), "api": api(size, tls_dir),
                "latency": latency(size, tls_dir), "memory": memory(size)}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=1))
