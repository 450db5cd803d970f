"""Workload 3: bulk load of the desired state from the simulated Cloud Controller.

Two processes: the simulated CC (health_manager.simulation.cloud_controller) serving
/bulk/apps for APPS apps over HTTP, and the HM side (DesiredState over treq, applying each
page to a registry) on the asyncio reactor. Measured on the HM side: wall and CPU time of a
full refresh at `bulk_api.batch_size` 500, and the longest reactor stall; first the initial
load (every droplet created), then a second refresh (every droplet updated). The HM side runs
the product's garbage-collection policy (gc_policy.GcPolicy); the one full collection its
sweep then makes (what the Manager does at the next droplet GC) is timed as well.
"""

import bisect
import json
import sys
import time

from bench.common import (
    StallMonitor, cpu_time, emit, install_asyncio_reactor, median, run_child, spawn_child,
)


def cc_child(apps):
    """The simulated CC with `apps` STARTED apps; prints {"port": ...}, serves until killed."""
    reactor = install_asyncio_reactor()
    from health_manager.simulation.cloud_controller import FakeCloudController
    from health_manager.testing.bus import InMemoryBus

    class IndexedCloudController(FakeCloudController):
        """Same pages as the simulated CC, found by bisection instead of a sort per page,
        so that the CC's own cost does not hide the HM's in the wall time."""

        def bulk_page(self, token_id, batch_size):
            ids = self._bench_ids
            start = bisect.bisect_right(ids, token_id)
            page = [self._bench_rows[i] for i in range(start, min(start + batch_size,
                                                                     len(ids)))]
            results = {app.guid: app.bulk_entry() for app in page}
            return results, (page[-1].id if page else None)

    from bench.workload import guid

    cc = IndexedCloudController(InMemoryBus(reactor), reactor)
    for number in range(apps):
        cc.create_app(guid("app", number), instances=4, place=False)
    cc._bench_rows = sorted(cc.apps.values(), key=lambda app: app.id)
    cc._bench_ids = [app.id for app in cc._bench_rows]
    cc.listen()
    emit({"url": cc.url, "user": cc.user, "password": cc.password})
    reactor.run()


def hm_child(url, user, password):
    reactor = install_asyncio_reactor()
    import orjson
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from bench.workload import bench_config
    from health_manager.desired_state import DesiredState
    from health_manager.gc_policy import GcPolicy
    from health_manager.metrics import Metrics
    from health_manager.model.registry import DropletRegistry
    from health_manager.scheduler import Scheduler
    from health_manager.testing.bus import InMemoryBus

    config = bench_config()
    config = config.__class__(**{**{a: getattr(config, a) for a in (
        "mbus", "status", "intervals", "logging", "local_route", "pid", "index",
        "cc_partition", "number_of_droplets_analyzed_per_analysis_iteration",
        "black_box_test_mode", "max_heartbeat_entries", "raw")},
        "bulk_api": config.bulk_api.__class__(host=url, batch_size=500)})
    scheduler = Scheduler(reactor)
    bus = InMemoryBus(reactor)
    bus.start()
    credentials = orjson.dumps({"user": user, "password": password})
    bus.subscribe(config.bulk_credentials_subject,
                  lambda message: bus.publish(message.reply, credentials))
    pool = HTTPConnectionPool(reactor, persistent=True)
    registry = DropletRegistry()
    metrics = Metrics()
    desired = DesiredState(config, scheduler, bus, HTTPClient(Agent(reactor, pool=pool)),
                           metrics, on_app=lambda app, asked_at: registry.apply_desired(
                               app, scheduler.now(), asked_at), io_clock=reactor)
    stalls = StallMonitor(reactor)
    gc_policy = GcPolicy()
    gc_policy.install()
    passes = []
    sweep = {}

    async def measure():
        stalls.start()
        for name in ("load", "update"):
            stalls.reset()
            wall, cpu = time.perf_counter(), cpu_time()
            await desired.refresh()
            passes.append({"pass": name, "wall": time.perf_counter() - wall,
                           "cpu": cpu_time() - cpu, "longest_stall": stalls.longest,
                           "apps": metrics.desired.apps, "droplets": len(registry),
                           "available": desired.available})
        wall, cpu = time.perf_counter(), cpu_time()
        found = gc_policy.full_sweep()
        sweep.update(wall=time.perf_counter() - wall, cpu=cpu_time() - cpu, found=found)
        stalls.stop()
        await pool.closeCachedConnections()
        reactor.stop()

    from twisted.internet import defer
    reactor.callLater(0.05, lambda: defer.Deferred.fromCoroutine(measure()))
    reactor.run()
    emit({"passes": passes, "sweep": sweep})


def measure(apps):
    cc = spawn_child("bench.desired", "cc", apps)
    try:
        served = json.loads(cc.stdout.readline())
        return run_child("bench.desired", "hm", served["url"], served["user"],
                         served["password"])
    finally:
        cc.terminate()
        cc.wait(10)


def run(size):
    plan = [(2_000, 1)] if size == "smoke" else [(10_000, 3), (100_000, 3), (250_000, 1)]
    results = []
    for apps, runs in plan:
        measured = [measure(apps) for _ in range(runs)]
        attempts = [m["passes"] for m in measured]
        row = {"apps": apps, "runs": attempts}
        for index, name in enumerate(("load", "update")):
            row[name] = {key: median([a[index][key] for a in attempts])
                         for key in ("wall", "cpu", "longest_stall")}
        row["gc_sweep"] = {key: median([m["sweep"][key] for m in measured])
                           for key in ("wall", "cpu")}
        row["ok"] = all(p["apps"] == apps and p["available"] for a in attempts for p in a)
        results.append(row)
    return results


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "cc":
        cc_child(int(args[0]))
    elif role == "hm":
        hm_child(*args)
    else:
        print(json.dumps(run(role), indent=1))
