"""The Manager: builds every component, wires them in one place, owns start and stop.

Start order: bus connecting and status server listening (so /healthz answers even while
NATS is unreachable) → subscriptions (once connected) → desired refresh and timers.
Stop order is the reverse, bounded so SIGTERM/SIGINT exit within 5 seconds.
The Manager also installs the process's garbage-collection policy (gc_policy.py).
"""

from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from health_manager.actual_state import ActualState
from health_manager.blackbox import BlackBoxDriver
from health_manager.bus import NatsBus
from health_manager.component import Component
from health_manager.config import redact_servers
from health_manager.contracts.hm2.reporter import Reporter
from health_manager.contracts.hm9000.gauges import Hm9000Gauges
from health_manager.contracts.hm9000.servers import Hm9000Servers
from health_manager.contracts.selection import contract_for
from health_manager.desired_state import DesiredState
from health_manager.freshness import ActualFreshness
from health_manager.gc_policy import GcPolicy
from health_manager.ha.connection import RedisConnection
from health_manager.ha.etcd import EtcdClient, EtcdJournalStore, EtcdLeaseStore
from health_manager.ha.handover import Handover
from health_manager.ha.journal import Journal
from health_manager.ha.lease import Lease
from health_manager.ha.redis import RedisJournalStore, RedisLeaseStore
from health_manager.harmonizer import Harmonizer
from health_manager.interfaces import ILeadership
from health_manager.leadership import SingleLeadership
from health_manager.metrics import Metrics
from health_manager.model.registry import DropletRegistry
from health_manager.nudger import Nudger
from health_manager.scheduler import Scheduler
from health_manager.web.state_view import StateView
from health_manager.web.status_server import LogCounts, StatusServer

STOP_TIMEOUT = 4.0


def _ha_stores(reactor, ha):
    """(lease store, journal store) on one etcd client or one Redis connection."""
    if ha.etcd:
        client = EtcdClient(reactor, ha)
        return EtcdLeaseStore(client, ha.key_prefix), EtcdJournalStore(client, ha.key_prefix)
    redis = RedisConnection(reactor, ha)
    return RedisLeaseStore(redis, ha.key_prefix), RedisJournalStore(redis, ha.key_prefix)


class Manager(MultiService):
    log = Logger()

    def __init__(self, config, reactor, bus=None, http_client=None):
        super().__init__()
        self.config = config
        self.reactor = reactor
        intervals = config.intervals
        self.metrics = Metrics()
        if config.black_box_test_mode:
            # Fake time starts at 1 and moves only on healthmanager.advance_time; work that
            # is "immediate" still runs on the real reactor.
            self.clock = task.Clock()
            self.clock.advance(1)
            self.scheduler = Scheduler(self.clock, eventual=reactor,
                                       on_run=self.metrics.observe_run)
        else:
            self.clock = reactor
            self.scheduler = Scheduler(reactor, on_run=self.metrics.observe_run)
        self.bus = bus if bus is not None else NatsBus(reactor, config.mbus)
        self.log_counts = LogCounts()
        self._http_pool = HTTPConnectionPool(reactor, persistent=True)
        self.http_client = http_client if http_client is not None else HTTPClient(
            Agent(reactor, pool=self._http_pool))
        self.registry = DropletRegistry()
        # Start time, uptime and vitals are wall-clock facts for operators, also in black-box mode.
        self.component = Component(config, self.bus, reactor)
        # Who may act: always this HM when it runs alone; with `ha`, the holder of the lease
        # (its id is the component uuid, so /varz ha_leader names another HM's uuid) once
        # it has loaded the journal its predecessors wrote. Alone it keeps nothing durable.
        self.lease = None
        self.journal = None
        self.leadership: ILeadership
        if config.ha is not None:
            ha = config.ha
            lease_store, journal_store = _ha_stores(reactor, ha)
            self.lease = Lease(lease_store, reactor, self.component.uuid,
                                    ha.lease_duration, ha.renew_deadline, ha.retry_period)
            self.journal = Journal(journal_store, self.scheduler, self.lease, intervals,
                                   self.metrics, ha.retry_period)
            # _restore reaches the Harmonizer, built below, only once a lease is won.
            self.leadership = Handover(self.lease, self.journal, self._restore,
                                       self.scheduler, ha.retry_period)
        else:
            self.leadership = SingleLeadership()
        self.metrics.set_leadership_source(self.leadership)
        # The one Cloud Controller contract spoken (cc_protocol): how orders are rendered,
        # the policy parameters its CC needs, and which state queries are answered.
        self.contract = contract_for(config)
        self.nudger = Nudger(self.scheduler, self.bus, self.metrics,
                             intervals.queue_batch_size, intervals.request_queue,
                             leadership=self.leadership, durable=self.journal,
                             contract=self.contract, stop_repeat_window=intervals.droplet_lost)
        self.freshness = ActualFreshness(self.scheduler, intervals.droplet_lost)
        self.desired_state = DesiredState(
            config, self.scheduler, self.bus, self.http_client, self.metrics,
            on_app=self._apply_desired, io_clock=reactor,
            on_unreadable=lambda app_id: self.registry.mark_described(
                app_id, self.scheduler.now()),
            fetch_user_counts=self.contract.fetch_user_counts,
            require_memory_and_updated_at=self.contract.require_memory_and_updated_at)
        self.harmonizer = Harmonizer(
            config, self.scheduler, self.registry, self.nudger, self.desired_state,
            self.freshness, self.metrics, durable=self.journal, policy=self.contract.policy)
        # HM9000's side (cc_protocol: hm9000): the per-DEA heartbeat ledger ActualState
        # feeds, the app-state API (NATS and POST /bulk_app_state), the HTTPS listener.
        self.hm9000_servers = None
        if config.hm9000 is not None:
            self.hm9000_servers = Hm9000Servers(
                config.hm9000, reactor, self.clock, self.bus, self.registry, self.freshness,
                self.metrics, intervals.droplet_lost, intervals.flapping_timeout)
        self.actual_state = ActualState(
            config, self.bus, self.registry, self.harmonizer, self.freshness, self.metrics,
            self.scheduler,
            heartbeat_observer=(None if self.hm9000_servers is None
                                else self.hm9000_servers.ledger.on_heartbeat))
        # The CC's questions, as the contract spoken asks them: HM 2.0's healthmanager.*
        # requests, or HM9000's app-state API and its gauges.
        self.reporter = None
        self.hm9000_gauges = None
        if config.hm9000 is None:
            self.reporter = Reporter(self.bus, self.registry, self.scheduler, self.metrics,
                                     config)
        else:
            self.hm9000_gauges = Hm9000Gauges(
                self.registry, self.scheduler, intervals, self.freshness, self.desired_state,
                self.metrics,
                slice_size=config.number_of_droplets_analyzed_per_analysis_iteration)
        self.state_view = StateView(
            config, self.scheduler, self.registry, self.metrics, self.desired_state,
            self.freshness, self.leadership, self.bus, self.nudger, self.scheduler.now(),
            durable=self.journal)
        self.status_server = StatusServer(
            config, self.metrics, self.component, self.state_view, reactor, reactor,
            log_counts=self.log_counts)
        self.status_server.setServiceParent(self)
        if self.hm9000_servers is not None:
            for service in self.hm9000_servers.services:
                service.setServiceParent(self)
        self.black_box = (BlackBoxDriver(self.bus, self.clock, self.scheduler, reactor,
                                         self.metrics)
                          if config.black_box_test_mode else None)
        self.metrics.set_bus_counters_source(lambda: {
            "nats_dropped_publications": getattr(self.bus, "dropped_publications", 0),
            "nats_slow_consumer_drops": getattr(self.bus, "slow_consumer_drops", 0),
        })
        self.gc_policy = GcPolicy()
        self.scheduler.at_interval(intervals.droplet_gc, self.gc_policy.sweep, "python_gc")
        self._started = None
        self._waiting_for_nats = False

    def _restore(self, records):
        return self.harmonizer.restore_crash_records(records)

    def _apply_desired(self, app, asked_at):
        self.registry.apply_desired(app, self.scheduler.now(), asked_at)

    def startService(self):
        self.gc_policy.install()
        self.bus.add_connection_listener(self._connection_changed)
        self.bus.start()
        if self.lease is not None:
            self.lease.start()
        super().startService()  # the status server listens now
        self._started = defer.Deferred.fromCoroutine(self._start())
        self._started.addErrback(lambda f: self.log.failure("start-up failed", f))

    async def _start(self):
        subscriptions = [
            self.actual_state.subscribe(),
            self.component.subscribe(),
        ]
        if self.reporter is not None:
            subscriptions.append(self.reporter.subscribe())
        if self.hm9000_servers is not None:
            subscriptions.append(self.hm9000_servers.subscribe())
        if self.black_box is not None:
            subscriptions.append(self.black_box.subscribe())
        await defer.gatherResults(subscriptions, consumeErrors=True)
        self.component.announce(self.status_server.host)
        self.harmonizer.prepare()
        if self.hm9000_gauges is not None:
            self.hm9000_gauges.prepare()
        self.scheduler.start()
        if self.bus.connected:
            self._log_started()
        else:
            # "started" only once it can work: until then, say what it waits for.
            self._waiting_for_nats = True
            self.log.info("health manager waiting for NATS at {url}",
                          url=redact_servers(self.config.mbus))

    def _log_started(self):
        self._waiting_for_nats = False
        self.log.info("health manager started (black-box mode: {black_box})",
                      black_box=self.config.black_box_test_mode)

    def _connection_changed(self, connected):
        if connected and self._waiting_for_nats:
            self._log_started()
        if connected:
            # DEAs answer healthmanager.start with a heartbeat at once: no 10 s wait.
            self.bus.publish("healthmanager.start", b"{}")

    def stopService(self):
        d = defer.Deferred.fromCoroutine(self._stop())
        d.addTimeout(STOP_TIMEOUT, self.reactor)
        d.addErrback(lambda f: self.log.failure("stop did not finish cleanly", f))
        return d

    async def _stop(self):
        if self._started is not None and not self._started.called:
            self._started.cancel()
        if self.journal is not None:
            # What the leader decided reaches the store before it lets go of the lease.
            await self.journal.flush()
            if self.journal.pending:
                self.log.warn("HA: stopping with {count} crash records and start intents "
                              "not written to {address}", count=self.journal.pending,
                              address=self.journal.address)
        if self.lease is not None:
            # First, so a standby takes over within about one retry period.
            await self.lease.stop()
        # A pass cut off mid-way by the scheduler's stop would keep `work` waiting.
        self.harmonizer.stop()
        if self.hm9000_gauges is not None:
            self.hm9000_gauges.stop()
        work = self.scheduler.stop()
        self.desired_state.stop()
        dropped = self.nudger.discard_pending()
        if dropped:
            self.log.warn("stopping with {count} queued health.start requests not sent",
                          count=dropped)
        await work
        await self.bus.stop()
        await defer.maybeDeferred(super().stopService)
        await self._http_pool.closeCachedConnections()
        self.gc_policy.uninstall()
        self.log.info("health manager stopped")
