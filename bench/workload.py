"""Synthetic foundations for the benchmarks: apps, DEAs, heartbeats and the HM core.

A fleet of `instances` RUNNING instances, `INSTANCES_PER_APP` per app, spread round-robin
over DEAs holding `ENTRIES_PER_HEARTBEAT` each, so one DEA heartbeat is one message of 100
entries (the size the Ruby figures were measured with). Ids look like the real ones (36-char
guids), because string sizes matter for memory and decode time.
"""

import orjson

from health_manager.actual_state import ActualState
from health_manager.config import build_config
from health_manager.contracts.hm9000.servers import Hm9000Servers
from health_manager.contracts.selection import contract_for
from health_manager.freshness import ActualFreshness
from health_manager.harmonizer import Harmonizer
from health_manager.metrics import Metrics
from health_manager.model.desired_app import DesiredApp
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.desired import FakeDesiredState

INSTANCES_PER_APP = 4
ENTRIES_PER_HEARTBEAT = 100
STATE_TIMESTAMP = 1_378_337_194.52


_KINDS = {"app": 0xA, "version": 0xB, "instance": 0xC, "dea": 0xD}


def guid(kind, number):
    """A stable guid-shaped id (36 chars) for the `number`-th thing of `kind`."""
    return "%08x-7e57-4000-8000-%012x" % (_KINDS[kind] << 24 | number >> 48, number)


PROBE_BASE = 10**9


def probe_id(number):
    return guid("app", PROBE_BASE + number)


def probe_version(number):
    return guid("version", PROBE_BASE + number)


class Fleet:
    """`instances` running instances of `instances // INSTANCES_PER_APP` apps."""

    def __init__(self, instances, per_app=INSTANCES_PER_APP, per_heartbeat=ENTRIES_PER_HEARTBEAT):
        self.instances = instances
        self.per_app = per_app
        self.per_heartbeat = per_heartbeat
        self.apps = max(1, instances // per_app)
        self.deas = max(1, -(-instances // per_heartbeat))
        self._app_ids = [guid("app", app) for app in range(self.apps)]
        self._versions = [guid("version", app) for app in range(self.apps)]

    def app_id(self, app):
        return self._app_ids[app]

    def version(self, app):
        return self._versions[app]

    def desired_apps(self, updated_at=1_378_330_000):
        for app in range(self.apps):
            yield DesiredApp(id=self.app_id(app), state="STARTED", instances=self.per_app,
                             version=self.version(app), package_state="STAGED",
                             updated_at=updated_at, memory=256)

    def probe_apps(self, count, package_state="PENDING"):
        """Apps for crash probes, numbered apart from the fleet's. Their package is PENDING,
        so the missing check never starts them: every start they get is a crash restart.
        HM9000's CC starts nothing of an app that is not STAGED, and neither does the HM
        speaking its contract: there they are STAGED, and the run keeps the missing check
        away by never letting the actual state become fresh (bench.latency)."""
        for number in range(count):
            yield DesiredApp(id=probe_id(number), state="STARTED", instances=1,
                             version=probe_version(number), package_state=package_state,
                             updated_at=1_378_330_000, memory=256)

    def entry(self, number, state="RUNNING"):
        """The heartbeat entry of the `number`-th instance (app-major numbering)."""
        app, index = divmod(number, self.per_app)
        return {"cc_partition": "default", "droplet": self.app_id(app),
                "version": self.version(app), "instance": guid("instance", number),
                "index": index, "state": state, "state_timestamp": STATE_TIMESTAMP}

    def heartbeat(self, dea):
        """One DEA's heartbeat, encoded. Instance i lives on DEA i % deas (round robin)."""
        numbers = range(dea, self.instances, self.deas)
        return orjson.dumps({"dea": guid("dea", dea),
                             "droplets": [self.entry(n) for n in numbers]})

    def heartbeats(self):
        for dea in range(self.deas):
            yield self.heartbeat(dea)


HM9000_API_USER = "bench"
HM9000_API_PASSWORD = "bench"


def bench_config(mbus="nats://127.0.0.1:4222", hm9000=False, tls_dir=None, **intervals):
    """HM 2.0's contract, or with `hm9000` HM9000's, its app-state API on a free loopback
    port and, with `tls_dir` (health_manager.testing.tls.tls_files there), its HTTPS
    heartbeat listener on another."""
    raw = {
        "mbus": mbus,
        "bulk_api": {"host": "http://127.0.0.1:1"},
        "status": {"user": "bench", "password": "bench"},
        "intervals": intervals,
    }
    if hm9000:
        raw["cc_protocol"] = "hm9000"
        raw["bulk_api"].update(user="bench", password="bench")
        raw["hm9000"] = section = {
            "api_port": 0, "api_address": "127.0.0.1", "api_user": HM9000_API_USER,
            "api_password": HM9000_API_PASSWORD}
        if tls_dir is not None:
            section.update(heartbeat_port=0, heartbeat_address="127.0.0.1", ssl={
                "cert_file": f"{tls_dir}/server_cert.pem",
                "key_file": f"{tls_dir}/server_key.pem", "ca_file": f"{tls_dir}/ca_file.pem"})
    config, _warnings = build_config(raw, {})
    return config


class Core:
    """The HM core the benchmarks drive: registry, ActualState, Harmonizer and Nudger,
    wired as the Manager wires them, with a desired state that is always fresh.
    `durable`: the IDurableState the Nudger and Harmonizer record to (an HA journal, built
    beforehand on the `scheduler` and `metrics` passed in). With `config.hm9000` it speaks
    HM9000's contract and, as the Manager, builds Hm9000Servers (`servers`: the ledger
    ActualState feeds, the app-state API, the HTTPS listener) on `reactor`."""

    def __init__(self, config, clock, bus, leadership=None, durable=None, scheduler=None,
                 metrics=None, reactor=None):
        self.config = config
        self.bus = bus
        self.scheduler = scheduler if scheduler is not None else Scheduler(clock)
        self.metrics = metrics if metrics is not None else Metrics()
        self.registry = DropletRegistry()
        self.desired_state = FakeDesiredState()
        intervals = config.intervals
        contract = self.contract = contract_for(config)
        self.nudger = Nudger(self.scheduler, bus, self.metrics, intervals.queue_batch_size,
                             intervals.request_queue, leadership=leadership,
                             durable=durable, contract=contract)
        self.freshness = ActualFreshness(self.scheduler, intervals.droplet_lost)
        self.harmonizer = Harmonizer(config, self.scheduler, self.registry, self.nudger,
                                     self.desired_state, self.freshness, self.metrics,
                                     durable=durable, policy=contract.policy)
        self.servers = None
        if config.hm9000 is not None:
            self.servers = Hm9000Servers(
                config.hm9000, clock if reactor is None else reactor, clock, bus,
                self.registry, self.freshness, self.metrics, intervals.droplet_lost,
                intervals.flapping_timeout)
        self.actual_state = ActualState(
            config, bus, self.registry, self.harmonizer, self.freshness, self.metrics,
            self.scheduler, heartbeat_observer=(
                None if self.servers is None else self.servers.ledger.on_heartbeat))

    def load_desired(self, fleet, probes=0):
        now = self.scheduler.now()
        for app in fleet.desired_apps():
            self.registry.apply_desired(app, now)
        staged = self.contract.policy.start_only_staged_apps
        for app in fleet.probe_apps(probes, "STAGED" if staged else "PENDING"):
            self.registry.apply_desired(app, now)
