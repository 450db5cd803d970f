"""Hm9000Servers: the HM9000 contract's side of a health manager, built in one place from
the `hm9000` config section: the per-DEA heartbeat ledger (ActualState's heartbeat
observer), the NATS app-state API, `POST /bulk_app_state`, and, with `heartbeat_port`, the
HTTPS heartbeat listener. The Manager builds it with `cc_protocol: hm9000` only."""

from typing import Any

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from health_manager.contracts.hm9000.app_state import AppStateRenderer
from health_manager.contracts.hm9000.heartbeat_listener import HeartbeatListener
from health_manager.contracts.hm9000.http_api import BulkAppStateServer
from health_manager.contracts.hm9000.ledger import HeartbeatLedger
from health_manager.contracts.hm9000.nats_api import NatsAppStateApi
from health_manager.freshness import ActualFreshness
from health_manager.interfaces import IMessageBus
from health_manager.metrics import Metrics
from health_manager.model.registry import DropletRegistry


class Hm9000Servers:
    """`section`: the `hm9000` config (Hm9000Config: api_port, api_address, api_user,
    api_password, heartbeat_port, heartbeat_address, ssl.cert_file/key_file/ca_file).
    `reactor` listens and gives the turns a query is answered over; `clock` is the
    Scheduler's (fake time in black-box mode), which heartbeats and crashes are timed by."""

    def __init__(self, section: Any, reactor: Any, clock: IReactorTime, bus: IMessageBus,
                 registry: DropletRegistry, freshness: ActualFreshness, metrics: Metrics,
                 droplet_lost: float, flapping_timeout: float) -> None:
        counters = metrics.enable_hm9000()
        self.ledger = HeartbeatLedger(clock, droplet_lost, counters, registry)
        renderer = AppStateRenderer(registry, self.ledger, freshness, clock,
                                    flapping_timeout)
        self.nats_api = NatsAppStateApi(bus, renderer, reactor, counters)
        self.api = BulkAppStateServer(reactor, renderer, counters, section.api_port,
                                      section.api_address, section.api_user,
                                      section.api_password)
        self.listener = None
        if section.heartbeat_port is not None:
            ssl = section.ssl
            self.listener = HeartbeatListener(
                reactor, bus, counters, section.heartbeat_port, section.heartbeat_address,
                ssl.cert_file, ssl.key_file, ssl.ca_file)

    @property
    def services(self) -> list[IService]:
        """The listening servers, to be children of the Manager (bound at start)."""
        return [self.api] if self.listener is None else [self.api, self.listener]

    def subscribe(self) -> "defer.Deferred[Any]":
        """The NATS app-state subjects (with the Manager's other subscriptions)."""
        return self.nats_api.subscribe()
