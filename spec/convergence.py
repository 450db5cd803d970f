"""A whole simulated foundation and a health manager in fake time, with chaos, and the
verdict on whether the health manager healed it (the convergence property, issues 9, 19).

Everything runs on one `task.Clock` and one in-memory bus: the fake Cloud Controller
applies its contract's acceptance rules to every request (HM 2.0's, PROTOCOL.md §3.1/§3.2,
or HM9000's, HM9000.md §1.4), simulated DEAs run, crash, vanish and evacuate instances,
and the health manager's own components (ActualState, DesiredState over an in-memory bulk
client, Harmonizer, Nudger) are wired as the Manager wires them. No
socket, no real sleeping: a foundation of 300 apps × 6 instances runs minutes of
foundation time in about a second.
"""

import math
import random

import attrs
import orjson
from twisted.internet import defer, task
from twisted.logger import Logger

from health_manager.actual_state import ActualState
from health_manager.config import build_config
from health_manager.constants import FLAPPING, RUNNING, STARTED, STARTING
from health_manager.contracts.hm2.messages import Hm2Contract
from health_manager.contracts.hm9000.messages import Hm9000Contract
from health_manager.contracts.selection import contract_for
from health_manager.desired_state import DesiredState
from health_manager.freshness import ActualFreshness
from health_manager.ha.handover import Handover
from health_manager.ha.journal import Journal
from health_manager.harmonizer import Harmonizer
from health_manager.interfaces import BusMessage
from health_manager.metrics import Metrics
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.simulation.foundation import (
    EVACUATE_BY_EXITS_AND_HEARTBEATS,
    EVACUATE_BY_HEARTBEATS,
    Foundation,
    Scenario,
    demo_config,
    hm9000_demo_intervals,
)
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.http import InMemoryBulkClient
from health_manager.testing.journal import FakeLease, InMemoryJournalStore

START = 1_000_000.0
# Heartbeats, exits and app updates are what a NATS cluster may deliver twice or late.
CHAOTIC_SUBJECTS = frozenset({"dea.heartbeat", "droplet.exited", "droplet.updated"})
MAX_MESSAGE_DELAY = 2.0
MIN_ACTIVE_DEAS = 2
# HA runs: seconds from the leader's death until the standby holds the lease, drawn below
# the demo config's droplet_lost (3 s), as a lease shorter than droplet_lost makes it in a
# real foundation: so the old leader's start intents are still live at the promotion.
FAILOVER_DELAYS = (0.5, 2.5)
HA_RETRY = 1.0
HM2 = "hm2"
HM9000 = "hm9000"
STOP_SUBJECTS = {HM2: Hm2Contract.stop_subject, HM9000: Hm9000Contract().stop_subject}


def convergence_config(cc_protocol, cc):
    """The health manager's config for a run: the demo's, and with HM9000's CC the hm9000
    contract with the demo's scaled copy of HM9000's crash schedule (never giving up), the
    bulk API's credentials from the config (as HM9000 read them)."""
    raw = demo_config("nats://127.0.0.1:4222", "http://cc")
    if cc_protocol == HM9000:
        raw["cc_protocol"] = HM9000
        raw["bulk_api"].update(user=cc.user, password=cc.password)
        raw["hm9000"] = {"api_port": 0, "api_user": "hm9000", "api_password": "hm9000"}
        raw["intervals"].update(hm9000_demo_intervals())
    config, _ = build_config(raw, environ={})
    return config


class ChaosBus(InMemoryBus):
    """An InMemoryBus that records nothing and, while `duplicate` or `delay` is set, delivers
    some heartbeats, exits and updates twice, or late (and so out of order)."""

    def __init__(self, clock, rng):
        super().__init__(clock)
        self._rng = rng
        self.duplicate = 0.0
        self.delay = 0.0
        self.late = {}  # (droplet, index) -> when the last exit held back is delivered
        self.late_updates = {}  # droplet -> when the last droplet.updated held back is

    def publish(self, subject, data, reply=None):
        if subject in CHAOTIC_SUBJECTS and (self.duplicate or self.delay):
            roll = self._rng.random()
            if roll < self.delay:
                delay = self._rng.uniform(0, MAX_MESSAGE_DELAY)
                due = self._clock.seconds() + delay
                if subject == "droplet.exited":
                    exit_ = orjson.loads(data)
                    self.late[(exit_["droplet"], exit_["index"])] = due
                elif subject == "droplet.updated":
                    self.late_updates[orjson.loads(data)["droplet"]] = due
                self._clock.callLater(delay, self.deliver, subject, data, reply)
                return
            if roll < self.delay + self.duplicate:
                self._clock.callLater(self._rng.uniform(0, MAX_MESSAGE_DELAY), self.deliver,
                                      subject, data, reply)
        self.deliver(subject, data, reply)

    def deliver(self, subject, data, reply=None):
        message = BusMessage(subject, data, reply)
        for subscription in self._recipients(subject):
            if subscription.active:
                self._deliver(subscription, message)


class ProcessBus:
    """One health manager process's connection to the shared bus: killing it unsubscribes
    everything and drops every later publication, as a SIGKILL would."""

    def __init__(self, shared):
        self._shared = shared
        self._subscriptions = []
        self.alive = True

    @property
    def connected(self):
        return self.alive and self._shared.connected

    def start(self):
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)

    def publish(self, subject, data, reply=None):
        if self.alive:
            self._shared.publish(subject, data, reply)

    def subscribe(self, subject, callback, queue=None):
        d = self._shared.subscribe(subject, callback, queue)
        d.addCallback(self._subscribed)
        return d

    def _subscribed(self, subscription):
        self._subscriptions.append(subscription)
        if not self.alive:
            subscription.unsubscribe()
        return subscription

    def request(self, subject, data=b"", timeout=5.0, max_replies=1):
        return self._shared.request(subject, data, timeout, max_replies)

    def flush(self, timeout=5.0):
        return defer.succeed(None)

    def add_connection_listener(self, callback):
        self._shared.add_connection_listener(lambda up: callback(up) if self.alive else None)

    def kill(self):
        self.alive = False
        for subscription in self._subscriptions:
            subscription.unsubscribe()


class FakeTimeHealthManager:
    """The health manager's policy components, wired as the Manager wires them, on a fake
    clock, an in-memory bus and an in-memory bulk API client."""

    def __init__(self, clock, shared_bus, cc, rng, bulk_latency, journal_store=None,
                 cc_protocol=HM2):
        """With `journal_store` (HA): a lease (`self.lease`, promoted by the run) and a
        journal in that store, behind a Handover, as the Manager wires them with `ha`.
        `cc_protocol`: the contract spoken, as the Manager picks it from the config."""
        config = convergence_config(cc_protocol, cc)
        self.config = config
        contract = self.contract = contract_for(config)
        intervals = config.intervals
        self.bus = ProcessBus(shared_bus)
        self.scheduler = Scheduler(clock)
        self.metrics = Metrics()
        self.registry = DropletRegistry()
        leadership = journal = self.lease = None
        if journal_store is not None:
            self.lease = FakeLease(journal_store)
            journal = Journal(journal_store, self.scheduler, self.lease, intervals,
                              self.metrics, HA_RETRY)
            leadership = Handover(self.lease, journal,
                                  lambda records: self.harmonizer.restore_crash_records(
                                      records), self.scheduler, HA_RETRY)
        self.nudger = Nudger(self.scheduler, self.bus, self.metrics,
                             intervals.queue_batch_size, intervals.request_queue,
                             leadership=leadership, durable=journal, contract=contract,
                             stop_repeat_window=intervals.droplet_lost)
        self.freshness = ActualFreshness(self.scheduler, intervals.droplet_lost)
        self.http = InMemoryBulkClient(cc, clock, latency=bulk_latency)
        self.desired_state = DesiredState(
            config, self.scheduler, self.bus, self.http, self.metrics,
            on_app=lambda app, asked_at: self.registry.apply_desired(
                app, self.scheduler.now(), asked_at),
            jitter=rng.random,
            on_unreadable=lambda app_id: self.registry.mark_described(
                app_id, self.scheduler.now()),
            fetch_user_counts=contract.fetch_user_counts,
            require_memory_and_updated_at=contract.require_memory_and_updated_at)
        self.harmonizer = Harmonizer(config, self.scheduler, self.registry, self.nudger,
                                     self.desired_state, self.freshness, self.metrics,
                                     noise=rng.uniform, durable=journal,
                                     policy=contract.policy)
        self.actual_state = ActualState(config, self.bus, self.registry, self.harmonizer,
                                        self.freshness, self.metrics, self.scheduler)

    def start(self):
        self.actual_state.subscribe()
        self.harmonizer.prepare()
        self.scheduler.start()

    def kill(self):
        """All memory lost at once: nothing this process scheduled may act any more."""
        self.bus.kill()
        self.scheduler.stop()
        self.desired_state.stop()
        self.nudger.discard_pending()
        for droplet in self.registry:
            droplet.cancel_pending_restarts()


@attrs.frozen
class FoundationSpec:
    """One random foundation and its chaos: everything a run depends on."""

    seed: int
    apps: int
    instances: int
    deas: int = 4
    crashy: float = 0.2
    flapping: float = 0.1
    missing: float = 0.2
    chaos: float = 30.0  # seconds of faults
    fault_interval: float = 1.0  # mean seconds between injected faults
    message_chaos: bool = True  # heartbeats, exits, updates delivered twice or late
    hm_restart: bool = True  # the health manager loses its memory once, mid-chaos
    hm_delay: float = 2.0  # seconds of heartbeats before the health manager starts
    # Two HMs on one journal: the restart is then the leader's death, the standby leading
    # FAILOVER_DELAYS later with what it heard and what the journal kept, and a new standby.
    ha: bool = False
    # The CC's contract: HM 2.0's, or HM9000's (then DEAs also evacuate with EVACUATING
    # heartbeats, and crash-looping apps are checked to be restarted on its schedule).
    cc_protocol: str = HM2

    def describe(self):
        return (f"seed={self.seed} apps={self.apps} instances={self.instances} "
                f"deas={self.deas} crashy={self.crashy} flapping={self.flapping} "
                f"missing={self.missing} chaos={self.chaos}s "
                f"fault_interval={self.fault_interval}s message_chaos={self.message_chaos} "
                f"hm_restart={self.hm_restart} hm_delay={self.hm_delay} ha={self.ha} "
                f"cc_protocol={self.cc_protocol}")


FAULTS = ("crash", "crash", "crash", "kill", "kill", "duplicate", "duplicate", "scale",
          "version", "evacuate", "shutdown", "dea_dies", "dea_joins")


def heal_bound(intervals, desired_instances):
    """Seconds after the chaos ends by which every foundation must be healed.

    Derived from the intervals, each term the longest wait one stage of healing can add:
    - late messages still arriving: MAX_MESSAGE_DELAY;
    - a silent loss is noticed: droplet_lost, plus one analysis period;
    - the missing-check grace after the last start, stop or update: droplet_lost;
    - a crash history forgotten (a given-up instance retried): flapping_timeout;
    - a pending flapping restart: max_restart_delay + delay_time_noise;
    - the desired state after a scale or version change: desired_state_update;
    - the rate limit, for every desired instance at once: its instances / queue_batch_size
      drains of request_queue;
    - the replacement starting and heartbeating: 2 × (startup delay + heartbeat period),
      once for the start and once for a duplicate's stop;
    - counted twice, because one round can leave work for another (a start refused by a
      DEA that died unnoticed, then placed elsewhere).
    """
    one_round = (MAX_MESSAGE_DELAY + intervals.droplet_lost + intervals.droplets_analysis
                 + intervals.droplet_lost + intervals.flapping_timeout
                 + intervals.max_restart_delay + intervals.delay_time_noise
                 + intervals.desired_state_update
                 + math.ceil(desired_instances / intervals.queue_batch_size)
                 * intervals.request_queue
                 + 2 * (1.0 + 1.0))
    return 2 * one_round


class Verdict:
    """What went wrong in one run, with the log lines that show it."""

    def __init__(self):
        self.problems = []
        self.heal_time = None
        self.refusals = {}  # app -> refused requests
        self.requests = 0

    @property
    def ok(self):
        return not self.problems


class ConvergenceRun:
    """Build the foundation of `spec`, run its chaos, then wait for healing."""

    log = Logger()

    def __init__(self, spec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.clock = task.Clock()
        self.clock.advance(START)
        self.bus = ChaosBus(self.clock, self.rng)
        self.bus.start()
        self.trace = []  # (time, app, text)
        self.verdict = Verdict()
        self.scenario = Scenario(
            apps=spec.apps, instances=spec.instances, crashy=spec.crashy,
            flapping=spec.flapping, missing=spec.missing, deas=spec.deas,
            shuffle_heartbeats=True)
        # Subscribed before the CC, so a stop is judged against the DEAs before it acts.
        self.bus.subscribe(STOP_SUBJECTS[spec.cc_protocol], self._check_stop)
        self.foundation = Foundation(self.clock, self.bus, self.scenario, self.rng,
                                     on_decision=self._decided, cc_protocol=spec.cc_protocol)
        self.starts_accepted = {}  # (app, index) -> [when the CC accepted a start of it]
        self.hm = None  # the one that acts (HA: the leader, or the standby about to lead)
        self.standby = None
        self.journal_store = InMemoryJournalStore(self.clock) if spec.ha else None
        self.hm_generation = 0
        self.versions = 1
        self.silent_deaths = {}  # (app, index) -> when an instance of it vanished silently
        # (app, index) -> when an instance of it began to evacuate, which its DEA tells
        # only in its next heartbeat.
        self.evacuations = {}
        intervals = self.intervals = convergence_config(spec.cc_protocol,
                                                        self.foundation.cc).intervals
        # How long the health manager may take to notice a silent death: droplet_lost with
        # no heartbeat, plus the heartbeat period, plus the bus's delay: a heartbeat sent
        # just before the death may be delivered (late or again) MAX_MESSAGE_DELAY later,
        # and to the health manager it is then a fresh one (seed 697: killed at 3.25 s,
        # heard at 4.95 and 5.25 s, its duplicate stopped at 8.0 s).
        self.detection_time = (intervals.droplet_lost + self.scenario.heartbeat_interval
                               + MAX_MESSAGE_DELAY)

    # --- running ---------------------------------------------------------------------------

    def run(self):
        spec = self.spec
        self.foundation.start()
        self.foundation.populate()
        self._advance(spec.hm_delay)
        self._start_hm()
        chaos_end = self.clock.seconds() + spec.chaos
        restart_at = (self.clock.seconds() + self.rng.uniform(0, spec.chaos)
                      if spec.hm_restart else None)
        if spec.message_chaos:
            self.bus.duplicate, self.bus.delay = 0.05, 0.05
        next_fault = self.clock.seconds() + self.rng.expovariate(1 / spec.fault_interval)
        while self.clock.seconds() < chaos_end:
            if restart_at is not None and self.clock.seconds() >= restart_at:
                restart_at = None
                self._restart_hm()
            if self.clock.seconds() >= next_fault:
                self._inject(self.rng.choice(FAULTS))
                next_fault += self.rng.expovariate(1 / spec.fault_interval)
            self._advance(0.25)
        self.bus.duplicate = self.bus.delay = 0.0
        self.foundation.calm_down()
        calm_at = self.clock.seconds()
        desired = sum(app.instances for app in self.foundation.cc.apps.values())
        bound = heal_bound(self.hm.config.intervals, desired)
        while self.clock.seconds() - calm_at <= bound:
            self._advance(0.5)
            if not self.unhealed():
                self.verdict.heal_time = self.clock.seconds() - calm_at
                break
        else:
            for app, problem in self.unhealed():
                self.verdict.problems.append(
                    (app, f"not healed {bound:.0f} s after the chaos: {problem}"))
        if spec.cc_protocol == HM9000:
            self._check_crash_loops_restarted()
        return self.verdict

    def _check_crash_loops_restarted(self):
        """HM9000 never gives up: every crash-looping app's index 0 keeps being restarted,
        on its schedule (its delay is capped at max_restart_delay), for as long as it is
        watched. While such an app has no instance running, its other indices wait (the
        index-0 guard), so index 0 is the one judged."""
        intervals = self.intervals
        # After a start: the instance starts and crashes (startup delay), the crash is
        # heard, and the restart waits at most max_restart_delay; the rest is slack for an
        # analysis period and the missing check, should a crash be judged there.
        gap = (intervals.max_restart_delay + self.scenario.startup_delay
               + intervals.droplet_lost + intervals.droplets_analysis + 1.0)
        watch_from = self.clock.seconds()
        self._advance(3 * gap)
        watch_to = self.clock.seconds()
        for guid in sorted(self.foundation.flapping_apps):
            app = self.foundation.cc.apps.get(guid)
            if app is None or app.state != STARTED or app.instances < 1:
                continue
            times = [t for t in self.starts_accepted.get((guid, 0), ())
                     if watch_from - gap <= t <= watch_to]
            edges = [watch_from] + [t for t in times if t >= watch_from] + [watch_to]
            longest = max(b - a for a, b in zip(edges, edges[1:], strict=False))
            if longest > gap:
                self.verdict.problems.append(
                    (guid, f"crash-looping index 0 not restarted for {longest:.1f} s "
                           f"(at most {gap:.1f} s on HM9000's schedule)"))

    def _advance(self, seconds):
        """Advance fake time by `seconds`, firing every timer at its own time."""
        end = self.clock.seconds() + seconds
        clock = self.clock
        while clock.calls:
            due = min(call.getTime() for call in clock.calls)
            if due > end:
                break
            clock.advance(max(0.0, due - clock.seconds()))
        clock.advance(max(0.0, end - clock.seconds()))

    def _start_hm(self):
        self.hm = self._new_hm()
        if self.spec.ha:
            self._promote(self.hm)
            self.standby = self._new_hm()

    def _new_hm(self):
        self.hm_generation += 1
        hm = FakeTimeHealthManager(self.clock, self.bus, self.foundation.cc, self.rng,
                                   bulk_latency=lambda: self.rng.uniform(0, 1.5),
                                   journal_store=self.journal_store,
                                   cc_protocol=self.spec.cc_protocol)
        hm.generation = self.hm_generation
        hm.start()
        self._note(None, f"health manager #{hm.generation} started")
        return hm

    def _promote(self, hm):
        hm.lease.promote()
        self._note(None, f"health manager #{hm.generation} leads")

    def _restart_hm(self):
        self.hm.kill()
        self._note(None, f"health manager #{self.hm.generation} killed")
        if not self.spec.ha:
            self._start_hm()
            return
        self.hm, self.standby = self.standby, None
        self.clock.callLater(self.rng.uniform(*FAILOVER_DELAYS), self._promote, self.hm)
        self.standby = self._new_hm()

    # --- chaos -----------------------------------------------------------------------------

    def _inject(self, fault):
        foundation = self.foundation
        rng = self.rng
        active = foundation.active_deas()
        # An evacuating DEA is still active, but leaving: it takes no new instance.
        staying = [dea for dea in active if not dea.evacuating]
        running = [(dea, i) for dea in active for i in dea.instances.values()
                   if i.state == RUNNING]
        if fault in ("crash", "kill", "duplicate") and running:
            dea, instance = rng.choice(running)
            if fault == "crash":
                dea.crash(instance.guid)
            elif fault == "kill":
                dea.kill(instance.guid)
                self.silent_deaths[(instance.droplet, instance.index)] = self.clock.seconds()
            else:
                other = rng.choice(staying)  # a RUNNING instance's DEA is staying
                app = foundation.cc.apps.get(instance.droplet)
                copy = other.start_instance(instance.droplet, instance.version,
                                            instance.index,
                                            app.behaviour if app is not None else None)
                instance = copy
            self._note(instance.droplet, f"chaos: {fault} {instance.guid} "
                                         f"index {instance.index}")
        elif fault in ("scale", "version") and foundation.cc.apps:
            guid = rng.choice(sorted(foundation.cc.apps))
            if fault == "scale":
                count = rng.randint(0, self.spec.instances + 2)
                foundation.cc.scale_app(guid, count)
                self._note(guid, f"chaos: scaled to {count}")
            else:
                self.versions += 1
                foundation.cc.change_version(guid, f"{guid}-v{self.versions}")
                self._note(guid, f"chaos: new version {guid}-v{self.versions}")
        elif fault in ("evacuate", "shutdown", "dea_dies") and len(staying) > MIN_ACTIVE_DEAS:
            dea = rng.choice(staying)
            if fault == "evacuate" and self.spec.cc_protocol == HM9000:
                # The HM9000 era's DEAs: EVACUATING heartbeats, until Jun 2016 with exits.
                how = rng.choice((EVACUATE_BY_HEARTBEATS, EVACUATE_BY_EXITS_AND_HEARTBEATS))
                for instance in dea.live_instances():
                    self.evacuations[(instance.droplet, instance.index)] = (
                        self.clock.seconds())
                dea.evacuate_with_heartbeats(
                    self.scenario.evacuation_timeout,
                    announce_exits=how == EVACUATE_BY_EXITS_AND_HEARTBEATS)
                fault = f"evacuate ({how})"
            elif fault == "evacuate":
                dea.evacuate()
            elif fault == "shutdown":
                dea.shutdown()
            else:
                for instance in dea.live_instances():
                    self.silent_deaths[(instance.droplet, instance.index)] = (
                        self.clock.seconds())
                dea.stop()
            self._note(None, f"chaos: DEA {dea.uuid} {fault}")
        elif fault == "dea_joins":
            foundation.add_dea()
            self._note(None, "chaos: a DEA joins")

    # --- what is true ----------------------------------------------------------------------

    def live_by_app(self):
        """app -> [(version, index, guid, state)] of every STARTING/RUNNING instance."""
        live = {}
        for dea in self.foundation.active_deas():
            for i in dea.instances.values():
                if i.state == RUNNING or i.state == STARTING:
                    live.setdefault(i.droplet, []).append((i.version, i.index, i.guid,
                                                           i.state))
        return live

    def given_up(self, app, index):
        """True when the health manager gave up restarting this index (§5.5,
        giveup_crash_number): its operator's policy, not a failure to heal."""
        giveup = self.hm.config.intervals.giveup_crash_number
        droplet = self.hm.registry.get(app.guid)
        record = None if droplet is None else droplet.find_instance(app.version, index)
        return (giveup > 0 and record is not None and record.state == FLAPPING
                and record.crash_count > giveup and record.pending_restart is None)

    def unhealed(self):
        """(app, problem) for each app that does not run exactly its desired instances;
        flapping apps and indices the health manager gave up on are not judged."""
        live = self.live_by_app()
        problems = []
        flapping = self.foundation.flapping_apps
        for guid, app in self.foundation.cc.apps.items():
            if guid in flapping:
                continue
            instances = live.get(guid, [])
            wanted = app.instances if app.state == STARTED else 0
            running = {}
            for version, index, instance, state in instances:
                if version == app.version and index < wanted and state == RUNNING:
                    running.setdefault(index, []).append(instance)
            given_up = [i for i in range(wanted)
                        if i not in running and self.given_up(app, i)]
            missing = [i for i in range(wanted) if i not in running and i not in given_up]
            duplicated = {i: g for i, g in running.items() if len(g) > 1}
            unwanted = [(v, i, g) for v, i, g, s in instances
                        if v != app.version or i >= wanted]
            if given_up:
                # The CC refuses any stop that leaves a STARTED app below its desired count
                # (§3.2), so with an index down for good the surplus can only go down to
                # that count, and old versions are kept as capacity.
                current = sum(1 for v, _, _, _ in instances if v == app.version)
                if missing or current > wanted:
                    problems.append((guid, f"missing {missing} with {given_up} given up, "
                                           f"{current} live for {wanted} wanted"))
            elif missing or duplicated or unwanted:
                problems.append((guid, f"missing {missing} duplicated {duplicated} "
                                       f"unwanted {unwanted}"))
        return problems

    def _check_stop(self, message):
        """No stop may name the only running instance of an index that should run, unless
        the health manager could not know: the other instance vanished silently less than
        a detection time ago, or began to evacuate and its DEA has not yet said so in a
        heartbeat, or its exit, or the app's droplet.updated, is still held back by the
        bus. HM9000's CC executes a stop with `is_duplicate: true` whatever it names (and
        refuses any other stop of a wanted instance), so there the rule is that no
        `is_duplicate` stop names the only running instance of its index."""
        try:
            payload = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            return
        guid = payload.get("droplet")
        self._note(guid, f"HM {message.subject} {payload}")
        app = self.foundation.cc.apps.get(guid)
        if app is None or app.state != STARTED:
            return
        live = self.live_by_app().get(guid, [])
        if self.spec.cc_protocol == HM9000:
            named = {payload.get("instance_guid")} if payload.get("is_duplicate") else set()
        else:
            named = set(payload.get("instances") or ())
        for version, index, instance, _state in live:
            if instance not in named or version != app.version or index >= app.instances:
                continue
            others = [g for v, i, g, s in live
                      if v == version and i == index and s == RUNNING and g not in named]
            now = self.clock.seconds()
            unknowable = (now - self.silent_deaths.get((guid, index), -math.inf)
                          <= self.detection_time
                          or now - self.evacuations.get((guid, index), -math.inf)
                          <= self.scenario.heartbeat_interval + MAX_MESSAGE_DELAY
                          or self.bus.late.get((guid, index), -math.inf) >= now
                          or self.bus.late_updates.get(guid, -math.inf) >= now)
            if not others and not unknowable:
                self.verdict.problems.append(
                    (guid, f"stop named {instance}, the only running instance of wanted "
                           f"index {index}"))

    def _decided(self, decision):
        self.verdict.requests += 1
        verdict = "accepted" if decision.accepted else "REFUSED"
        self._note(decision.droplet, f"CC {verdict} {decision.op} "
                                     f"({decision.reason}) {decision.payload}")
        if decision.accepted and decision.op == "start":
            for index in _started_indices(decision.payload):
                self.starts_accepted.setdefault((decision.droplet, index), []).append(
                    self.clock.seconds())
        if not decision.accepted:
            self.verdict.refusals[decision.droplet] = (
                self.verdict.refusals.get(decision.droplet, 0) + 1)

    def _note(self, app, text):
        self.trace.append((self.clock.seconds() - START, app, text))

    def story(self, app, limit=60):
        """The trace lines about `app` (and the foundation-wide ones), the last `limit`."""
        lines = [f"t={t:7.2f} {text}" for t, who, text in self.trace
                 if who == app or who is None]
        return "\n".join(lines[-limit:])


def _started_indices(payload):
    """The indices a start asks for, in either contract's shape."""
    if "instance_index" in payload:
        return [payload["instance_index"]]
    return payload.get("indices") or []
