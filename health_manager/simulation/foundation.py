"""The simulated foundation on one bus: a fake Cloud Controller, N simulated DEAs and a
scenario of apps (healthy, crashy, flapping, some instances missing at start), plus the
faults to inject and a snapshot of desired vs actual for the view and the verdict.

It needs only a clock and an IMessageBus, so it runs on real NATS for `simulate` and on
InMemoryBus + task.Clock in unit tests. The health manager's demo configuration is here too.
"""

import attrs
from twisted.internet import defer

from health_manager.constants import CRASHED, RUNNING, STARTED, STARTING
from health_manager.simulation.certificates import listener_ssl_config
from health_manager.simulation.cloud_controller import FakeCloudController
from health_manager.simulation.dea import CRASH_ON_START, SimulatedDea, crash_every

# How a DEA evacuates, by dea_ng's era (lib/dea/lifecycle/evacuation_handler.rb):
# `droplet.exited` DEA_EVACUATION then silence (Nov 2013); those exits and EVACUATING
# heartbeats until its instances are stopped (Dec 2013 - Jun 2016); EVACUATING heartbeats
# only (from Jun 2016).
EVACUATE_BY_EXITS = "exits"
EVACUATE_BY_EXITS_AND_HEARTBEATS = "exits and heartbeats"
EVACUATE_BY_HEARTBEATS = "heartbeats"
EVACUATIONS = (EVACUATE_BY_EXITS, EVACUATE_BY_EXITS_AND_HEARTBEATS, EVACUATE_BY_HEARTBEATS)


@attrs.frozen
class Scenario:
    apps: int = 20
    instances: int = 3
    crashy: float = 0.2  # fraction of apps that crash every `crash_period` s while chaos lasts
    flapping: float = 0.1  # fraction of apps that crash on every start
    missing: float = 0.2  # fraction of instances not running when the simulation begins
    deas: int = 4
    crash_period: float = 12.0
    heartbeat_interval: float = 1.0
    startup_delay: float = 1.0
    shuffle_heartbeats: bool = False  # heartbeat entries in a random order
    # How long a DEA evacuating with EVACUATING heartbeats waits for its instances to be
    # stopped before it leaves anyway (dea_ng's bail-out time, shortened for a demo).
    evacuation_timeout: float = 20.0


def demo_config(mbus, bulk_host, status_port=0):
    """The health manager's configuration for a demo: HM 2.0 keys, intervals shortened so a
    foundation heals in seconds. Flapping apps are given up after 4 crashes within ~15 s;
    crashy apps crash less often than `flapping_timeout`, so each crash restarts at once."""
    return {
        "mbus": mbus,
        "bulk_api": {"host": bulk_host, "batch_size": 100},
        "status": {"port": status_port, "user": "hm", "password": "hm"},
        "logging": {"level": "info"},
        "intervals": {
            "desired_state_update": 5,
            "desired_state_lost": 30,
            "droplet_lost": 3,
            "droplets_analysis": 1,
            "request_queue": 1,
            "queue_batch_size": 40,
            "flapping_death": 1,
            "flapping_timeout": 6,
            "min_restart_delay": 1,
            "max_restart_delay": 3,
            "delay_time_noise": 0.5,
            "giveup_crash_number": 4,
            "droplet_gc_grace_period": 60,
            "droplet_gc": 30,
            "bulk_credentials_timeout": 2,
        },
    }


def hm9000_demo_intervals():
    """HM9000's crash schedule (HM9000.md §5.3) at the demo's scale: 3 restarts at once,
    then 1 s doubling to 8 s, never given up, a count forgotten after twice the longest
    delay without a crash (HM9000: 30 s to 960 s, 1920 s)."""
    return {
        "flapping_death": 3,
        "min_restart_delay": 1,
        "max_restart_delay": 8,
        "delay_time_noise": 0,
        "giveup_crash_number": -1,
        "flapping_timeout": 16,
    }


def hm9000_demo_config(mbus, bulk_host, bulk_user, bulk_password, heartbeat_port,
                       certificate_files, status_port=0):
    """`demo_config` for an HM9000-era foundation: `cc_protocol: hm9000`, the bulk API's
    credentials from the config (HM9000 never asked for them over NATS), the app-state API
    on any free port, and the HTTPS heartbeat listener on `heartbeat_port` with the
    simulation's certificates (the files of `certificates.make_certificates`). The
    intervals are the demo's, with HM9000's crash schedule at the demo's scale."""
    config = demo_config(mbus, bulk_host, status_port)
    config["intervals"].update(hm9000_demo_intervals())
    config["cc_protocol"] = "hm9000"
    config["bulk_api"].update(user=bulk_user, password=bulk_password)
    config["hm9000"] = {
        "api_port": 0,
        "api_address": "127.0.0.1",
        "api_user": "hm9000",
        "api_password": "hm9000-password",
        "heartbeat_port": heartbeat_port,
        "heartbeat_address": "127.0.0.1",
        "ssl": listener_ssl_config(certificate_files),
    }
    return config


@attrs.frozen
class Snapshot:
    """Desired vs actual at one moment, as seen from the CC table and the DEAs."""

    at: float
    apps: int
    flapping_apps: int
    desired: int  # instances of STARTED apps, flapping apps excluded
    running: int  # desired indices with a RUNNING instance of the live version
    starting: int
    crashed: int
    extra: int  # RUNNING instances beyond one per desired index
    deas_active: int
    crashes: int  # crashes seen by the DEAs so far
    heartbeats_sent: int
    starts_accepted: int
    starts_refused: int
    stops_accepted: int
    stops_refused: int

    @property
    def missing(self):
        return self.desired - self.running

    @property
    def healthy(self):
        """Every desired instance running (flapping apps, which HM gives up on, excluded)."""
        return self.missing == 0


class Foundation:
    def __init__(self, clock, bus, scenario, rng, partition="default", on_decision=None,
                 cc_protocol="hm2", https_heartbeats=None):
        """`cc_protocol` is the contract the CC speaks ("hm2" or "hm9000"; HM9000.md);
        `https_heartbeats(dea_uuid)`, if given, makes the IHeartbeatSender of every other
        DEA (the odd-numbered ones), which then heartbeat over HTTPS instead of NATS."""
        self._clock = clock
        self._rng = rng
        self.scenario = scenario
        self.cc = FakeCloudController(bus, clock, partition=partition, on_decision=on_decision,
                                      user_count=max(1, scenario.apps // 3),
                                      cc_protocol=cc_protocol)
        self._https_heartbeats = https_heartbeats
        self.https_senders = []  # the IHeartbeatSenders https_heartbeats made
        # DEAs of the HM9000 era (from Dec 2014) heartbeat even with no instance.
        self._empty_heartbeats = cc_protocol == "hm9000"
        self._bus = bus
        self._partition = partition
        self.deas = [self._make_dea(n) for n in range(scenario.deas)]
        self.flapping_apps = set()
        self.crashy_apps = set()

    def _make_dea(self, n):
        s = self.scenario
        uuid = f"{n}-dea{n:02d}"
        heartbeats = None
        if self._https_heartbeats is not None and n % 2 == 1:
            heartbeats = self._https_heartbeats(uuid)
            self.https_senders.append(heartbeats)
        return SimulatedDea(self._bus, self._clock, uuid,
                            partition=self._partition, heartbeat_interval=s.heartbeat_interval,
                            startup_delay=s.startup_delay, rng=self._rng,
                            shuffle_heartbeats=s.shuffle_heartbeats, heartbeats=heartbeats,
                            empty_heartbeats=self._empty_heartbeats)

    def add_dea(self):
        """A new, empty DEA joins the foundation; fires once it is subscribed."""
        dea = self._make_dea(len(self.deas))
        self.deas.append(dea)
        self.cc.add_dea(dea.uuid)
        return dea.start()

    def start(self):
        """Start the CC and the DEAs; fires once every subscription is made."""
        started = [self.cc.start()]
        for dea in self.deas:
            started.append(dea.start())
            # The CC learns DEAs from dea.advertise; seeding the pool avoids racing the first.
            self.cc.add_dea(dea.uuid)
        return defer.gatherResults(started, consumeErrors=True)

    def stop(self):
        """Stop the DEAs and the CC; fires once their connections are closed."""
        stopped = [dea.stop() for dea in self.deas]
        stopped.append(defer.maybeDeferred(self.cc.stop))
        return defer.gatherResults(stopped, consumeErrors=True)

    def populate(self):
        """Create the scenario's apps; start their instances except the missing ones."""
        s = self.scenario
        guids = [f"app-{n:04d}" for n in range(s.apps)]
        shuffled = self._rng.sample(guids, len(guids))
        n_flapping = round(s.apps * s.flapping)
        n_crashy = round(s.apps * s.crashy)
        self.flapping_apps = set(shuffled[:n_flapping])
        self.crashy_apps = set(shuffled[n_flapping:n_flapping + n_crashy])
        for guid in guids:
            behaviour = None
            if guid in self.flapping_apps:
                behaviour = CRASH_ON_START
            elif guid in self.crashy_apps:
                behaviour = crash_every(s.crash_period)
            app = self.cc.create_app(guid, instances=s.instances, version=f"{guid}-v1",
                                     memory=128, behaviour=behaviour, place=False)
            present = [i for i in range(s.instances) if self._rng.random() >= s.missing]
            self.cc.start_instances(app, present)

    # --- faults ----------------------------------------------------------------------------

    def active_deas(self):
        return [dea for dea in self.deas if dea.active]

    def _running_instances(self):
        return [(dea, i) for dea in self.active_deas() for i in dea.instances.values()
                if i.state == RUNNING]

    def crash_random(self):
        """Crash one RUNNING instance (droplet.exited CRASHED). Returns its guid or None."""
        found = self._running_instances()
        if not found:
            return None
        dea, instance = self._rng.choice(found)
        dea.crash(instance.guid)
        return instance.guid

    def kill_random(self):
        """Make one RUNNING instance vanish silently. Returns its guid or None."""
        found = self._running_instances()
        if not found:
            return None
        dea, instance = self._rng.choice(found)
        dea.kill(instance.guid)
        return instance.guid

    def evacuate_one(self, how=EVACUATE_BY_EXITS):
        """Evacuate the busiest active DEA, if another one is left, the way `how` says
        (EVACUATIONS). Returns its uuid."""
        if how not in EVACUATIONS:
            raise ValueError(f"no such evacuation: {how!r}")
        active = [dea for dea in self.active_deas() if not dea.evacuating]
        if len(active) < 2:
            return None
        dea = max(active, key=lambda d: (len(d.live_instances()), d.uuid))
        if how == EVACUATE_BY_EXITS:
            dea.evacuate()
        else:
            dea.evacuate_with_heartbeats(self.scenario.evacuation_timeout,
                                         announce_exits=how == EVACUATE_BY_EXITS_AND_HEARTBEATS)
        return dea.uuid

    def calm_down(self):
        """End of chaos: crashy apps stop crashing."""
        for dea in self.deas:
            dea.calm_down()

    # --- what is going on ------------------------------------------------------------------

    def snapshot(self):
        covered = set()
        starting = crashed = running_total = 0
        for dea in self.active_deas():
            for instance in dea.instances.values():
                if instance.state == STARTING:
                    starting += 1
                elif instance.state == CRASHED:
                    crashed += 1
                elif instance.state == RUNNING:
                    running_total += 1
                    app = self.cc.apps.get(instance.droplet)
                    if (app is not None and app.state == STARTED
                            and instance.version == app.version
                            and 0 <= instance.index < app.instances):
                        covered.add((instance.droplet, instance.index))
        desired = sum(app.instances for app in self.cc.apps.values()
                      if app.state == STARTED and app.guid not in self.flapping_apps)
        running = sum(1 for droplet, _ in covered if droplet not in self.flapping_apps)
        counts = self.cc.decision_counts
        return Snapshot(
            at=self._clock.seconds(),
            apps=len(self.cc.apps),
            flapping_apps=len(self.flapping_apps),
            desired=desired,
            running=running,
            starting=starting,
            crashed=crashed,
            extra=running_total - len(covered),
            deas_active=len(self.active_deas()),
            crashes=sum(dea.crashes for dea in self.deas),
            heartbeats_sent=sum(dea.heartbeats_sent for dea in self.deas),
            starts_accepted=counts[("start", True)],
            starts_refused=counts[("start", False)],
            stops_accepted=counts[("stop", True)],
            stops_refused=counts[("stop", False)],
        )
