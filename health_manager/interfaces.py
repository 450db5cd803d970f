"""Interfaces with more than one provider: the message bus (NATS and in-memory)."""

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@attrs.frozen(slots=True)
class BusMessage:
    """One message as delivered to a subscriber: raw bytes, decoded by the handler."""

    subject: str
    data: bytes
    reply: str | None = None


class RequestTimeout(Exception):
    """A request got no reply within its timeout."""


class ISubscription(Interface):
    subject = Attribute("The subject subscribed to.")

    def unsubscribe() -> Deferred[Any]:
        """Stop delivery. Returns a Deferred that fires once unsubscribed."""


class IMessageBus(Interface):
    """Publish/subscribe/request over NATS, seen only through Deferreds.

    Callbacks run on the reactor thread. Subscriptions made before the bus is connected take
    effect once it connects and survive reconnects without duplicates.
    """

    connected = Attribute("True while a server connection is up.")

    def start() -> Deferred[Any]:
        """Begin connecting (retrying forever). Returns a Deferred that fires at once; the
        connection state is reported to connection listeners."""

    def stop() -> Deferred[Any]:
        """Drain subscriptions and pending publications, then close. Returns a Deferred."""

    def publish(subject: str, data: bytes, reply: str | None = None) -> None:
        """Queue `data` (bytes) for `subject`. Never raises for a lost connection: the
        client buffers while reconnecting."""

    def subscribe(subject: str, callback: Callable[[BusMessage], object],
                  queue: str | None = None) -> Deferred[ISubscription]:
        """Call `callback(BusMessage)` for every message on `subject` (optionally in a queue
        group). Returns a Deferred firing with an ISubscription."""

    def request(subject: str, data: bytes = b"", timeout: float = 5.0,
                max_replies: int = 1) -> Deferred[list[BusMessage]]:
        """Publish `data` with a fresh reply inbox and collect up to `max_replies` replies.

        Fires with the list of BusMessage replies once `max_replies` arrived, or with the
        replies so far when `timeout` seconds pass; fails with RequestTimeout when none came.
        """

    def flush(timeout: float = 5.0) -> Deferred[Any]:
        """Fire once every publication made so far has reached the server (a round trip)."""

    def add_connection_listener(callback: Callable[[bool], object]) -> None:
        """Call `callback(connected: bool)` on every change of the connection state."""


class IDesiredState(Interface):
    """The Cloud Controller's desired state, as the policy sees it."""

    available = Attribute("True after a complete bulk pass succeeded, until a pass fails.")
    last_success = Attribute("Scheduler time the last complete bulk pass ended, or None.")

    def is_fresh() -> bool:
        """True when available and a complete bulk pass finished within
        `intervals.desired_state_lost` seconds: only then may the policy stop extra apps,
        start missing instances or garbage-collect droplets."""

    def refresh() -> Deferred[None]:
        """Fetch every /bulk/apps page (after the user counts, for HM 2.0's CCs),
        applying each valid app entry.
        Overlapping calls are merged: while a pass runs, further calls share one follow-up
        pass. Returns a Deferred that fires (never fails) when the pass it joined ends."""


class ILeadership(Interface):
    """Whether this health manager may act (publish `health.start` / `health.stop`).

    One HM alone always acts; with HA (DESIGN.md §8) only the holder of a fresh lease does.
    The policy and the Nudger ask this, never the lease store itself.
    """

    role = Attribute('"single", "leader" or "standby".')
    leader_id = Attribute("The id of the HM believed to lead, or None when unknown.")
    epoch = Attribute("The fencing epoch of the lease held or last seen, or None.")
    transitions = Attribute("How many times this HM's role changed.")

    def is_acting() -> bool:
        """True only while this HM may publish starts and stops right now."""


class IDurableState(Interface):
    """What survives a restart or a failover: crash records and start intents (issue 11).

    One HM alone keeps nothing (as HM 2.0); with HA the leader writes through to Redis
    (health_manager/ha/journal.py). The policy tells it each change and asks it about
    starts another leader sent; it never talks to Redis itself.
    """

    def record_crash(record: Any) -> None:
        """A slot's crash history changed (a crash, a restart scheduled, sent or given up):
        store this CrashRecord (health_manager/model/durable.py)."""

    def record_start(app_id: str, version: str, index: int) -> None:
        """A health.start for (app, version, index) was just sent."""

    def previous_start(app_id: str, version: str, index: int, now: float) -> Any:
        """The live StartIntent another leader recorded for (app, version, index), or
        None: while there is one, the start it sent may still come up."""

    def forget_start(app_id: str, version: str, index: int) -> None:
        """The instance a previous start made exited or crashed: that start is spent."""

    def write_back_due(now: float) -> bool:
        """Whether the analysis pass starting now should record every crash history the
        HM holds (after a promotion, and before the stored records' TTL runs out)."""
