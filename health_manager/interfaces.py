"""Interfaces with more than one provider: the message bus (NATS and in-memory)."""

import attrs
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

    def unsubscribe():
        """Stop delivery. Returns a Deferred that fires once unsubscribed."""


class IMessageBus(Interface):
    """Publish/subscribe/request over NATS, seen only through Deferreds.

    Callbacks run on the reactor thread. Subscriptions made before the bus is connected take
    effect once it connects and survive reconnects without duplicates.
    """

    connected = Attribute("True while a server connection is up.")

    def start():
        """Begin connecting (retrying forever). Returns a Deferred that fires at once; the
        connection state is reported to connection listeners."""

    def stop():
        """Drain subscriptions and pending publications, then close. Returns a Deferred."""

    def publish(subject, data, reply=None):
        """Queue `data` (bytes) for `subject`. Never raises for a lost connection: the
        client buffers while reconnecting."""

    def subscribe(subject, callback, queue=None):
        """Call `callback(BusMessage)` for every message on `subject` (optionally in a queue
        group). Returns a Deferred firing with an ISubscription."""

    def request(subject, data=b"", timeout=5.0, max_replies=1):
        """Publish `data` with a fresh reply inbox and collect up to `max_replies` replies.

        Fires with the list of BusMessage replies once `max_replies` arrived, or with the
        replies so far when `timeout` seconds pass; fails with RequestTimeout when none came.
        """

    def flush(timeout=5.0):
        """Fire once every publication made so far has reached the server (a round trip)."""

    def add_connection_listener(callback):
        """Call `callback(connected: bool)` on every change of the connection state."""


class IDesiredState(Interface):
    """The Cloud Controller's desired state, as the policy sees it."""

    available = Attribute("True after a complete bulk pass succeeded, until a pass fails.")
    last_success = Attribute("Scheduler time the last complete bulk pass ended, or None.")

    def is_fresh():
        """True when available and a complete bulk pass finished within
        `intervals.desired_state_lost` seconds: only then may the policy stop extra apps,
        start missing instances or garbage-collect droplets."""

    def refresh():
        """Fetch user counts and every /bulk/apps page, applying each valid app entry.
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

    def is_acting():
        """True only while this HM may publish starts and stops right now."""
