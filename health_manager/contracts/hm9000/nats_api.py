"""HM9000's app-state API on NATS (HM9000.md §2.1): `app.state` and `app.state.bulk`,
asked by the Cloud Controllers of 2013-10 to 2014-10 (and by later ones when
`/bulk_app_state` answers 404).

Both are subscribed in queue group `hm9000`, so one HM of several answers each request,
and every HM can: all hold the whole actual state. A request without a reply subject is
ignored (nobody would read the answer); one that does not parse is answered `{}`, counted
and logged, as HM9000 answered it.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from health_manager.contracts.hm9000.app_state import (
    EMPTY,
    SLICE_BUDGET,
    AppStateRenderer,
    BadRequest,
    app_state_query,
    bulk_body,
    parse_app_request,
    parse_bulk_request,
    single_body,
)
from health_manager.interfaces import BusMessage, IMessageBus
from health_manager.metrics import Hm9000Counters

APP_STATE = "app.state"
APP_STATE_BULK = "app.state.bulk"
QUEUE_GROUP = "hm9000"


class NatsAppStateApi:
    log = Logger()

    def __init__(self, bus: IMessageBus, renderer: AppStateRenderer, reactor: IReactorTime,
                 counters: Hm9000Counters, budget: float = SLICE_BUDGET) -> None:
        """`reactor` gives the turns a big bulk reply is rendered over, `budget` seconds
        each."""
        self._bus = bus
        self._renderer = renderer
        self._reactor = reactor
        self._counters = counters
        self._budget = budget

    def subscribe(self) -> "defer.Deferred[Any]":
        """Subscribe both subjects; fires with the subscriptions."""
        return defer.gatherResults([
            self._bus.subscribe(APP_STATE, self.on_app_state, queue=QUEUE_GROUP),
            self._bus.subscribe(APP_STATE_BULK, self.on_app_state_bulk, queue=QUEUE_GROUP),
        ], consumeErrors=True)

    def on_app_state(self, message: BusMessage) -> None:
        reply = message.reply
        if reply is None:
            return
        self._counters.count_request(APP_STATE)
        try:
            droplet, version = parse_app_request(message.data)
        except BadRequest as e:
            self._bad_request(APP_STATE, reply, e)
            return
        self._answer(APP_STATE, reply, [(droplet, version)],
                     lambda found: single_body(found, droplet))

    def on_app_state_bulk(self, message: BusMessage) -> None:
        reply = message.reply
        if reply is None:
            return
        self._counters.count_request(APP_STATE_BULK)
        try:
            requests = parse_bulk_request(message.data)
        except BadRequest as e:
            self._bad_request(APP_STATE_BULK, reply, e)
            return
        self._answer(APP_STATE_BULK, reply, requests, bulk_body)

    def _answer(self, subject: str, reply: str, requests: list[tuple[str, str]],
                body: Callable[[dict[str, bytes] | None], bytes]) -> None:
        answered = app_state_query(self._renderer, requests, self._reactor, self._budget).run()
        answered.addCallback(lambda found: self._bus.publish(reply, body(found)))
        answered.addErrback(lambda failure: self.log.failure(
            "answering an {subject} request failed", failure, subject=subject))

    def _bad_request(self, subject: str, reply: str, problem: BadRequest) -> None:
        self._counters.count_bad_request(subject)
        self.log.warn("answered {{}} to an {subject} request that does not parse: {problem}",
                      subject=subject, problem=problem)
        self._bus.publish(reply, EMPTY)
