"""Benchmark: the operator surface over 100k apps never blocks the reactor for > 20 ms.

Builds a registry of `--apps` apps (3 instances each, one app in 50 missing an instance),
then times every reactor turn of: /v1/apps?unhealthy=1 (a walk over every app, for the few
unhealthy ones), /v1/apps?limit=2000 (the largest page, JSON encoding included), the
status page `/`, and /metrics. Each figure is the longest single turn (wall time).

    python -m bench.apps_api [--apps 100000]
"""

import argparse
import base64
import json
import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from health_manager.component import Component
from health_manager.gc_policy import GcPolicy
from health_manager.web.status_server import StatusServer, Vitals
from spec.unit.view_rig import PASSWORD, USER, ViewRig

LIMIT = 0.020


class TurnReactor:
    """Enough of a reactor for the status site: real time, and every `callLater(0, ...)`
    (the next reactor turn) kept so that each turn can be run and timed on its own.
    Later calls (the site's idle timeouts) are never due within a benchmark."""

    def __init__(self):
        self._turns = []
        self.turns = []

    def seconds(self):
        return time.monotonic()

    def callLater(self, delay, fn, *args, **kwargs):
        call = _Call(fn, args, kwargs)
        if delay == 0:
            self._turns.append(call)
        return call

    def run_pending(self):
        while self._turns:
            call = self._turns.pop(0)
            if call.cancelled:
                continue
            began = time.perf_counter()
            call.fn(*call.args, **call.kwargs)
            self.turns.append(time.perf_counter() - began)


class _Call:
    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.cancelled = False

    def active(self):
        return not self.cancelled

    def cancel(self):
        self.cancelled = True

    def reset(self, delay):
        pass


def build(apps):
    """The rig, with the Manager's GC policy installed (a running HM has it too)."""
    GcPolicy().install()
    rig = ViewRig()
    beats = []
    for n in range(apps):
        droplet = f"app-{n:06d}"
        rig.desire(droplet, instances=3)
        for index in range(3 if n % 50 else 2):
            beats.append(rig.beat(f"{droplet}-{index}", index, droplet=droplet))
    for start in range(0, len(beats), 1000):
        rig.heartbeat(*beats[start:start + 1000])
    rig.warm_up()
    return rig


def request(site, timed, path):
    """Longest turn (s), turns, and the body size of GET `path` through the real site."""
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    timed.turns = []
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    began = time.perf_counter()
    protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: hm\r\nConnection: close\r\n"
                          b"Authorization: Basic " + auth + b"\r\n\r\n")
    first = time.perf_counter() - began
    timed.run_pending()
    turns = [first] + timed.turns
    return max(turns), len(turns), len(transport.value())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.apps_api")
    parser.add_argument("--apps", type=int, default=100_000)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    rig = build(args.apps)
    print(f"built {args.apps} apps in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    rig.analyze()
    timed = TurnReactor()
    server = StatusServer(rig.config, rig.metrics, Component(rig.config, rig.bus, rig.clock),
                          rig.view, timed, rig.clock, vitals=Vitals(rig.clock, dict))
    results = {}
    for path in (b"/v1/apps?unhealthy=1&limit=2000", b"/v1/apps?limit=2000",
                 b"/v1/apps?limit=500", b"/", b"/metrics", b"/v1/apps/app-000050"):
        runs = [request(server.site, timed, path) for _ in range(3)]
        longest = sorted(r[0] for r in runs)[1]
        results[path.decode()] = {"longest_turn_ms": round(longest * 1000, 2),
                                  "turns": runs[0][1], "bytes": runs[0][2],
                                  "within_20ms": longest <= LIMIT}
    print(json.dumps({"apps": args.apps, "results": results}, indent=2))
    return 0 if all(r["within_20ms"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
