"""Workload 5: resident bytes per tracked instance.

A fresh child process per size: RSS after imports and after the fleet's ids are built, then
the desired state of every app and one heartbeat per instance, decoded from JSON as the bus
delivers them (so ids are the decoded strings the HM really keeps); after a full GC the
growth is divided by the instances tracked.
"""

import gc
import sys

from bench.common import emit, median, rss_bytes, run_child


def child(instances, mode="hm2", rounds=1):
    """`mode` hm9000: the HM speaks HM9000's contract, so its heartbeat ledger also keeps
    every DEA's latest entries. `rounds` > 1: every DEA heartbeats again, so what is kept
    from the later rounds' freshly decoded strings is counted too (the steady state)."""
    from twisted.internet.task import Clock

    from bench.workload import Core, Fleet, bench_config
    from health_manager.interfaces import BusMessage
    from health_manager.testing.bus import InMemoryBus

    fleet = Fleet(instances)
    clock = Clock()
    core = Core(bench_config(hm9000=mode == "hm9000"), clock, InMemoryBus(clock))
    gc.collect()
    before = rss_bytes()
    apps = list(fleet.desired_apps())
    now = core.scheduler.now()
    for app in apps:
        core.registry.apply_desired(app, now)
    del apps
    handler = core.actual_state.on_heartbeat
    for _ in range(rounds):
        for dea in range(fleet.deas):
            handler(BusMessage("dea.heartbeat", fleet.heartbeat(dea)))
    gc.collect()
    grown = rss_bytes() - before
    emit({"instances": instances, "mode": mode, "rounds": rounds,
          "tracked": core.metrics.instance_heartbeats_received // rounds,
          "rss_growth": grown, "bytes_per_instance": grown / instances})


def run(size):
    plan = [(2_000, 1)] if size == "smoke" else [
        (10_000, 3), (100_000, 3), (1_000_000, 3)]
    results = []
    for instances, runs in plan:
        attempts = [run_child("bench.memory", instances) for _ in range(runs)]
        results.append({"instances": instances, "runs": attempts,
                        "bytes_per_instance": median(
                            [a["bytes_per_instance"] for a in attempts])})
    return results


if __name__ == "__main__":
    child(int(sys.argv[1]), *sys.argv[2:3], *map(int, sys.argv[3:4]))
