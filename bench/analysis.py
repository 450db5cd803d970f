"""Workload 2: one full analysis pass over a registry of N tracked instances.

Each size runs in a fresh child process on the asyncio reactor. The registry holds a fleet
whose desired state is loaded and whose instances all heartbeat; the clock is then moved
so that the pass does the full per-droplet work of a steady foundation: the missing check
is due (older than `droplet_lost`) while every instance is still alive. Measured: wall and
CPU time of the pass, the longest single slice, and the longest reactor stall.
"""

import sys
import time

from bench.common import StallMonitor, cpu_time, emit, install_asyncio_reactor, median, run_child
from bench.workload import Core, Fleet, bench_config

DROPLET_LOST = 30
HEARTBEAT_AGE = 15  # heartbeats this old are alive; droplets created 35 s ago are due


class SteppedClock:
    """The reactor's timers, with a "now" that moves only when the benchmark moves it, so
    that building a large registry does not age its heartbeats."""

    def __init__(self, reactor):
        self._reactor = reactor
        self.now = reactor.seconds()

    def seconds(self):
        return self.now

    def callLater(self, delay, fn, *args, **kwargs):
        return self._reactor.callLater(delay, fn, *args, **kwargs)

    def getDelayedCalls(self):
        return self._reactor.getDelayedCalls()


class SliceTimer:
    """Wraps the scheduler's `immediately` so each analysis slice is timed on its own."""

    def __init__(self, scheduler):
        self.longest = 0.0
        self._immediately = scheduler.immediately
        scheduler.immediately = self._timed

    def _timed(self, fn, name):
        def timed():
            started = time.perf_counter()
            try:
                return fn()
            finally:
                self.longest = max(self.longest, time.perf_counter() - started)
        return self._immediately(timed, name)


def populate(core, fleet, clock):
    """Desired state at t, heartbeats for every instance at t + 20 (in-process delivery)."""
    from health_manager.interfaces import BusMessage

    core.load_desired(fleet)
    clock.now += DROPLET_LOST + 5 - HEARTBEAT_AGE
    handler = core.actual_state.on_heartbeat
    for dea in range(fleet.deas):
        handler(BusMessage("dea.heartbeat", fleet.heartbeat(dea)))
    clock.now += HEARTBEAT_AGE


def child(instances):
    reactor = install_asyncio_reactor()
    from health_manager.gc_policy import GcPolicy
    from health_manager.testing.bus import InMemoryBus

    GcPolicy().install()  # as the Manager does at start
    clock = SteppedClock(reactor)
    bus = InMemoryBus(clock)
    core = Core(bench_config(), clock, bus)
    bus.start()
    fleet = Fleet(instances)
    populate(core, fleet, clock)
    slices = SliceTimer(core.scheduler)
    stalls = StallMonitor(reactor)
    result = {}

    def analyse():
        stalls.start()
        wall, cpu = time.perf_counter(), cpu_time()
        first = time.perf_counter()
        done = core.harmonizer.analyze_droplets()
        slices.longest = max(slices.longest, time.perf_counter() - first)

        def finished(_):
            result.update(
                instances=instances, droplets=len(core.registry),
                wall=time.perf_counter() - wall, cpu=cpu_time() - cpu,
                longest_slice=slices.longest, longest_stall=stalls.longest,
                starts=core.metrics.health_start_messages_sent,
                stops=core.metrics.health_stop_messages_sent,
                running=core.metrics.realtime.running_instances)
            stalls.stop()
            reactor.stop()
        done.addBoth(finished)

    reactor.callLater(0.05, analyse)
    reactor.run()
    emit(result)


def run(size):
    plan = [(2_000, 1)] if size == "smoke" else [
        (10_000, 3), (20_000, 3), (100_000, 3), (1_000_000, 3)]
    results = []
    for instances, runs in plan:
        attempts = [run_child("bench.analysis", instances) for _ in range(runs)]
        results.append({
            "instances": instances, "runs": attempts,
            "cpu": median([a["cpu"] for a in attempts]),
            "wall": median([a["wall"] for a in attempts]),
            "cpu_us_per_instance": median([a["cpu"] for a in attempts]) / instances * 1e6,
            "longest_slice": max(a["longest_slice"] for a in attempts),
            "longest_stall": max(a["longest_stall"] for a in attempts),
        })
    return results


if __name__ == "__main__":
    child(int(sys.argv[1]))
