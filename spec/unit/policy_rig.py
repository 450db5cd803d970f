"""A wired policy (ActualState, Harmonizer, Nudger, Reporter) on a fake clock and bus."""

from twisted.internet import task

from health_manager.actual_state import ActualState
from health_manager.config import build_config
from health_manager.constants import STAGED, STARTED
from health_manager.contracts.hm2.messages import Hm2Contract
from health_manager.contracts.hm2.reporter import Reporter
from health_manager.freshness import ActualFreshness
from health_manager.ha.handover import Handover
from health_manager.ha.journal import Journal
from health_manager.harmonizer import Harmonizer
from health_manager.metrics import Metrics
from health_manager.model.desired_app import DesiredApp
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.testing.bus import InMemoryBus
from health_manager.testing.desired import FakeDesiredState
from health_manager.testing.journal import FakeLease

START = 1000.0
RETRY = 1.0  # an HA rig's retry_period


def make_config(intervals=None, **top):
    raw = {"mbus": "nats://127.0.0.1:4222", "bulk_api": {"host": "http://cc"},
           "intervals": intervals or {}}
    raw.update(top)
    config, _ = build_config(raw, {})
    return config


class PolicyRig:
    """Everything the policy needs, wired as the Manager does, with helpers to drive it."""

    def __init__(self, intervals=None, noise=lambda low, high: 0.0, leadership=None,
                 durable=None, clock=None, ha_store=None, contract=None,
                 heartbeat_observer=None, **top):
        """`ha_store` (an InMemoryJournalStore): an HA HM, its journal in that store, its
        lease a FakeLease (`self.lease`) switched by the test. `heartbeat_observer`: the
        ActualState's (a contract's ledger)."""
        self.config = make_config(intervals, **top)
        self.intervals = self.config.intervals
        if clock is None:
            clock = task.Clock()
            clock.advance(START)
        self.clock = clock
        self.scheduler = Scheduler(self.clock)
        self.bus = InMemoryBus(self.clock)
        self.metrics = Metrics()
        self.registry = DropletRegistry()
        if ha_store is not None:
            self.lease = FakeLease(ha_store)
            self.journal = Journal(ha_store, self.scheduler, self.lease, self.intervals,
                                   self.metrics, retry_period=RETRY, write_delay=0)
            leadership = self.handover = Handover(self.lease, self.journal,
                                  lambda records: self.harmonizer.restore_crash_records(records),
                                  self.scheduler, RETRY)
            durable = self.journal
        self.nudger = Nudger(self.scheduler, self.bus, self.metrics,
                             self.intervals.queue_batch_size, self.intervals.request_queue,
                             leadership=leadership, durable=durable, contract=contract)
        self.contract = contract if contract is not None else Hm2Contract()
        self.freshness = ActualFreshness(self.scheduler, self.intervals.droplet_lost)
        self.desired = FakeDesiredState()
        self.noise_calls = []

        def recording_noise(low, high):
            self.noise_calls.append((low, high))
            return noise(low, high)

        self.harmonizer = Harmonizer(self.config, self.scheduler, self.registry, self.nudger,
                                     self.desired, self.freshness, self.metrics,
                                     noise=recording_noise, durable=durable,
                                     policy=self.contract.policy)
        self.actual = ActualState(self.config, self.bus, self.registry, self.harmonizer,
                                  self.freshness, self.metrics, self.scheduler,
                                  heartbeat_observer=heartbeat_observer)
        self.reporter = Reporter(self.bus, self.registry, self.scheduler, self.metrics,
                                 self.config)
        self.actual.subscribe()
        self.reporter.subscribe()
        self.bus.set_connected(True)

    def now(self):
        return self.clock.seconds()

    def advance(self, seconds):
        self.clock.advance(seconds)

    def desire(self, droplet="app-1", instances=1, version="v1", state=STARTED,
               package_state=STAGED, updated_at=100, memory=256):
        app = DesiredApp(id=droplet, state=state, instances=instances, version=version,
                         package_state=package_state, updated_at=updated_at, memory=memory)
        return self.registry.apply_desired(app, self.now())

    def heartbeat(self, *entries, dea="dea-1"):
        self.bus.publish_json("dea.heartbeat", {"dea": dea, "droplets": list(entries)})

    def settle(self, *entries, dea="dea-1"):
        """Heartbeat `entries` now and again droplet_lost later: instances heard over a
        whole droplet_lost are proven alive, so their duplicates and extras may be stopped."""
        self.heartbeat(*entries, dea=dea)
        self.advance(self.intervals.droplet_lost)
        self.heartbeat(*entries, dea=dea)

    def beat(self, guid, index, droplet="app-1", version="v1", state="RUNNING", ts=None):
        return {"droplet": droplet, "version": version, "instance": guid, "index": index,
                "state": state, "state_timestamp": self.now() if ts is None else ts,
                "cc_partition": "default"}

    def exited(self, guid, index, reason="CRASHED", droplet="app-1", version="v1",
               crash_timestamp=None):
        payload = {"droplet": droplet, "version": version, "instance": guid, "index": index,
                   "reason": reason, "exit_status": -1, "exit_description": ""}
        if reason == "CRASHED":
            payload["crash_timestamp"] = (int(self.now()) if crash_timestamp is None
                                          else crash_timestamp)
        self.bus.publish_json("droplet.exited", payload)

    def analyze(self):
        """Run one whole analysis pass, slices included."""
        done = self.harmonizer.analyze_droplets()
        while not done.called:
            self.clock.advance(0)
        return done

    def starts(self):
        return self.bus.published_json(self.contract.start_subject)

    def stops(self):
        return self.bus.published_json(self.contract.stop_subject)
