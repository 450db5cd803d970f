"""Measuring helpers shared by the benchmarks: clocks, reactor stalls, statistics, children.

Every figure is wall time plus process CPU time; a "stall" is the longest time the reactor
could not run a 1 ms timer, i.e. the longest stretch some callback blocked it. The CPU
time the process used during that stretch tells the two causes apart on a shared machine:
about the stall's length when its own work blocked it, near 0 when the OS ran someone else.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import psutil
from twisted.internet import task

STALL_TICK = 0.001


def cpu_time():
    """CPU seconds used by this process so far (all threads, user + system)."""
    return time.process_time()


def rss_bytes(pid=None):
    return psutil.Process(pid).memory_info().rss


class StallMonitor:
    """A 1 ms LoopingCall on `reactor` recording the longest gap between its ticks, and the
    process CPU time spent during it (`longest_cpu`) and when it ended (`longest_at`,
    seconds after start or reset)."""

    def __init__(self, reactor, tick=STALL_TICK):
        self._tick = tick
        self._loop = task.LoopingCall(self._beat)
        self._loop.clock = reactor
        self._last = None
        self._last_cpu = None
        self.longest = 0.0
        self.longest_cpu = 0.0
        self.longest_at = 0.0
        self._began = None

    def start(self):
        self.reset()
        if not self._loop.running:
            self._loop.start(self._tick, now=False)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def reset(self):
        self._last = self._began = time.perf_counter()
        self._last_cpu = cpu_time()
        self.longest = self.longest_cpu = self.longest_at = 0.0

    def _beat(self):
        now, cpu = time.perf_counter(), cpu_time()
        gap = now - self._last - self._tick
        if gap > self.longest:
            self.longest = gap
            self.longest_cpu = cpu - self._last_cpu
            self.longest_at = now - self._began
        self._last, self._last_cpu = now, cpu


def median(values):
    return statistics.median(values) if values else 0.0


def percentile(values, fraction):
    """The nearest-rank percentile of `values` (fraction in 0..1)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def child_env():
    """The environment for a benchmark child: this checkout first on the import path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_child(module, *args, timeout=900):
    """Run `python -m module args` and return the JSON object it prints last on stdout."""
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spawn_child(module, *args):
    """Start `python -m module args` with piped stdout (lines of JSON), for long children."""
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], env=child_env(),
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def reap(process, timeout=60):
    """Wait for a child we started to exit; kill it (by its pid) if it does not."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def emit(result):
    """Print a child's result as one JSON line (the last line is what run_child reads)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def install_asyncio_reactor():
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import reactor
    return reactor
