"""The health manager side of the bus benchmarks, run as its own process.

`python -m bench.hm_process NATS_URL INSTANCES [PROBES [REDIS_URL [journal|lease]]]`: the HM
core (NatsBus,
ActualState, Harmonizer with its timers, Nudger) on the asyncio reactor, with the desired
state of a fleet of INSTANCES (and of PROBES crash-probe apps) loaded, and the Manager's
garbage-collection policy installed. Every 10 ms it publishes its progress on
`bench.progress` (what the publisher paces itself by) and keeps (wall, CPU,
instance-heartbeats) samples; it answers `bench.control` requests: `ping`, `report`
(samples and drops), `gc_sweep` (one full collection of the GC policy: the garbage it
kept), `exit`. With REDIS_URL it is an HA leader built as the Manager builds one with
`ha`: a Redis lease, the Journal that writes crash records and start intents through to
Redis and the Handover that loads them before it acts; it answers `ping` only once it
acts. `lease` leaves the journal out (persistence off: the lease gates the Nudger and
nothing is written), for the benchmarks that compare the two. `report` then also gives
the journal's /varz counters.

`python -m bench.hm_process --hm9000 TLS_DIR DROPLET_LOST NATS_URL INSTANCES [PROBES]`: the
same HM speaking HM9000's contract (cc_protocol: hm9000), with the Manager's Hm9000Servers:
the heartbeat ledger, the NATS app-state API, `POST /bulk_app_state` and the mutual-TLS
heartbeat listener (certificates in TLS_DIR, as health_manager.testing.tls makes them), on
free loopback ports that `ping` answers with (`api_port`, `heartbeat_port`). DROPLET_LOST
is the window after which the actual state is fresh (the app-state API answers `{}`
before).
"""

import sys
import time

import orjson

from bench.common import StallMonitor, cpu_time, install_asyncio_reactor, rss_bytes
from bench.workload import Core, Fleet, bench_config

PROGRESS_SUBJECT = "bench.progress"
CONTROL_SUBJECT = "bench.control"
PROGRESS_TICK = 0.01


class HmProcess:
    def __init__(self, reactor, url, instances, probes, redis_url=None, durable="journal",
                 hm9000=None):
        """`hm9000`: (TLS_DIR, DROPLET_LOST) to speak HM9000's contract."""
        from health_manager.bus import NatsBus
        from health_manager.gc_policy import GcPolicy
        from health_manager.metrics import Metrics
        from health_manager.scheduler import Scheduler

        self.gc_policy = GcPolicy()
        self.gc_policy.install()  # as the Manager does at start
        self._reactor = reactor
        self.bus = NatsBus(reactor, url, name="bench-hm")
        config = (bench_config(url) if hm9000 is None
                  else bench_config(url, hm9000=True, tls_dir=hm9000[0],
                                droplet_lost=float(hm9000[1])))
        metrics = Metrics()
        scheduler = Scheduler(reactor, on_run=metrics.observe_run)  # as the Manager's
        self.lease = self.leadership = journal = None
        if redis_url:
            self.lease, journal, self.leadership = _ha(
                reactor, url, redis_url, scheduler, metrics, config.intervals,
                lambda records: self.core.harmonizer.restore_crash_records(records))
            if durable == "lease":
                journal, self.leadership = None, self.lease
            elif durable != "journal":
                raise SystemExit(f"journal or lease, not {durable!r}")
        self.core = Core(config, reactor, self.bus, leadership=self.leadership,
                         durable=journal, scheduler=scheduler, metrics=metrics,
                         reactor=reactor)
        self.core.load_desired(Fleet(instances), probes)
        self.samples = []
        self.stalls = StallMonitor(reactor)
        self._last_count = -1

    def start(self):
        from twisted.internet import task

        self.bus.start()
        if self.lease is not None:
            self.lease.start()
        self.core.actual_state.subscribe()
        servers = self.core.servers
        if servers is not None:
            servers.subscribe()
            for service in servers.services:
                service.startService()
        self.bus.subscribe(CONTROL_SUBJECT, self._on_control)
        self.core.harmonizer.prepare()
        self.core.scheduler.start()
        progress = task.LoopingCall(self._progress)
        progress.clock = self._reactor
        progress.start(PROGRESS_TICK)

    def _progress(self):
        metrics = self.core.metrics
        count = metrics.instance_heartbeats_received
        if count != self._last_count:
            self._last_count = count
            self.samples.append((time.perf_counter(), cpu_time(), count))
        if self.bus.connected:
            self.bus.publish(PROGRESS_SUBJECT, orjson.dumps(
                {"msgs": metrics.heartbeat_msgs_received, "instances": count}))

    def _on_control(self, message):
        command = orjson.loads(message.data).get("cmd")
        if (command == "ping" and self.leadership is not None
                and not self.leadership.is_acting()):
            return  # not ready (no lease yet, or the journal not loaded): pinged again
        servers = self.core.servers
        if command == "ping" and servers is not None:
            reply = {"api_port": servers.api.port, "heartbeat_port": servers.listener.port}
        elif command == "stalls":
            self.stalls.start()
            reply = {}
        elif command == "report":
            metrics = self.core.metrics
            reply = {
                "samples": self.samples,
                "msgs": metrics.heartbeat_msgs_received,
                "instances": metrics.instance_heartbeats_received,
                "rejected": metrics.rejected_messages,
                "skipped": metrics.skipped_entries,
                "slow_consumer_drops": self.bus.slow_consumer_drops,
                "starts_sent": metrics.health_start_messages_sent,
                "droplets": len(self.core.registry),
                "longest_stall": self.stalls.longest,
                "longest_stall_cpu": self.stalls.longest_cpu,
                "longest_stall_at": self.stalls.longest_at,
                "rss": rss_bytes(),
                "analysis_passes": metrics.analysis_passes.count,
                # The journal's /varz counters (0 without it).
                "ha_records_written": metrics.ha_records_written,
                "ha_fenced_writes_refused": metrics.ha_fenced_writes_refused,
                "ha_record_write_failures": metrics.ha_record_write_failures,
            }
            if servers is not None:
                counters = metrics.hm9000
                reply["https_heartbeats_relayed"] = counters.https_heartbeats_relayed
                reply["https_rejected"] = sum(counters.https_heartbeats_rejected.values())
                reply["https_tls_failures"] = counters.https_tls_failures
        elif command == "gc_sweep":
            # The cyclic garbage the GC policy kept frozen over the run, and what the
            # one full collection that frees it costs.
            started = time.perf_counter()
            found = self.gc_policy.full_sweep()
            reply = {"found": found, "wall": time.perf_counter() - started}
        elif command == "exit":
            reply = {}
            self._reactor.callLater(0.05, self._reactor.stop)
        else:
            reply = {}
        if message.reply:
            self.bus.publish(message.reply, orjson.dumps(reply))


def _ha(reactor, url, redis_url, scheduler, metrics, intervals, restore):
    """(lease, journal, handover) with the default periods, as the Manager builds them
    from `ha`: one RedisConnection for the lease and the journal."""
    from health_manager.config import build_config
    from health_manager.ha.connection import RedisConnection
    from health_manager.ha.handover import Handover
    from health_manager.ha.journal import Journal
    from health_manager.ha.lease import Lease
    from health_manager.ha.redis import RedisJournalStore, RedisLeaseStore

    config, _ = build_config({"mbus": url, "bulk_api": {"host": "http://127.0.0.1:1"},
                              "ha": {"redis": redis_url}}, {})
    ha = config.ha
    redis = RedisConnection(reactor, ha)
    lease = Lease(RedisLeaseStore(redis, ha.key_prefix), reactor, "bench-hm",
                       ha.lease_duration, ha.renew_deadline, ha.retry_period)
    journal = Journal(RedisJournalStore(redis, ha.key_prefix), scheduler, lease, intervals,
                      metrics, ha.retry_period)
    return lease, journal, Handover(lease, journal, restore, scheduler, ha.retry_period)


def main(url, instances, probes=0, redis_url=None, durable="journal", hm9000=None):
    reactor = install_asyncio_reactor()
    HmProcess(reactor, url, int(instances), int(probes), redis_url, durable, hm9000).start()
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1] == "--hm9000":
        main(*sys.argv[4:7], hm9000=(sys.argv[2], sys.argv[3]))
    else:
        main(*sys.argv[1:6])
