"""InMemoryBus: an IMessageBus for unit tests, synchronous and recording every publication.

Delivery happens inside `publish`, in subscription order, so a test sees the effects of a
message as soon as it publishes it. Request timeouts run on the injected clock. Delivery does
not depend on `connected`: the flag only reports state to the code under test.
"""

import itertools

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from health_manager.bus import ReplyGatherer
from health_manager.interfaces import BusMessage, IMessageBus, ISubscription


def subject_matches(pattern, subject):
    """True when `subject` matches the NATS subject `pattern` (`*` one token, `>` the rest)."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(pattern_tokens) == len(subject_tokens)


@implementer(ISubscription)
class InMemorySubscription:
    """One subscription on an InMemoryBus; `active` until unsubscribed."""

    def __init__(self, bus, subject, callback, queue):
        self.subject = subject
        self.callback = callback
        self.queue = queue
        self.active = True
        self._bus = bus

    def unsubscribe(self):
        if self.active:
            self.active = False
            self._bus._forget(self)
        return defer.succeed(None)

    def __repr__(self):
        return f"<InMemorySubscription {self.subject!r} queue={self.queue!r}>"


@implementer(IMessageBus)
class InMemoryBus:
    """A synchronous in-process bus with NATS subject and queue-group semantics."""

    log = Logger()

    def __init__(self, clock):
        self._clock = clock
        self.connected = False
        self.published = []
        self.subscriptions = []
        self._listeners = []
        self._inbox_ids = itertools.count(1)
        self._queue_turns = {}

    # --- IMessageBus -----------------------------------------------------------------------

    def start(self):
        self.set_connected(True)
        return defer.succeed(None)

    def stop(self):
        self.set_connected(False)
        return defer.succeed(None)

    def publish(self, subject, data, reply=None):
        if not isinstance(data, bytes):
            raise TypeError(f"bus payloads are bytes, got {type(data).__name__}")
        message = BusMessage(subject, data, reply)
        self.published.append(message)
        for subscription in self._recipients(subject):
            # A recipient unsubscribed by an earlier callback of this same message is skipped.
            if subscription.active:
                self._deliver(subscription, message)

    def subscribe(self, subject, callback, queue=None):
        subscription = InMemorySubscription(self, subject, callback, queue)
        self.subscriptions.append(subscription)
        return defer.succeed(subscription)

    def request(self, subject, data=b"", timeout=5.0, max_replies=1):
        gatherer = ReplyGatherer(self, self._clock, max_replies, timeout)
        return gatherer.send(subject, data, f"_INBOX.inmemory.{next(self._inbox_ids)}")

    def flush(self, timeout=5.0):
        return defer.succeed(None)

    def add_connection_listener(self, callback):
        self._listeners.append(callback)

    # --- test helpers ----------------------------------------------------------------------

    def set_connected(self, connected):
        """Change the connection state, notifying the listeners when it changes."""
        connected = bool(connected)
        if connected == self.connected:
            return
        self.connected = connected
        for listener in list(self._listeners):
            try:
                listener(connected)
            except Exception:
                self.log.failure("connection listener {listener!r} failed", listener=listener)

    def publish_json(self, subject, payload, reply=None):
        """Publish `payload` encoded with orjson, as a peer on the bus would."""
        self.publish(subject, orjson.dumps(payload), reply)

    def published_json(self, subject):
        """Decoded payloads of every recorded publication on subjects matching `subject`."""
        return [orjson.loads(message.data) for message in self.published
                if subject_matches(subject, message.subject)]

    def subscribed_subjects(self):
        """Subjects of the active subscriptions, in subscription order (inboxes excluded)."""
        return [s.subject for s in self.subscriptions if not s.subject.startswith("_INBOX.")]

    def clear(self):
        """Forget the recorded publications."""
        del self.published[:]

    # --- delivery --------------------------------------------------------------------------

    def _recipients(self, subject):
        """Matching subscriptions in subscription order, one member per queue group."""
        matching = [s for s in self.subscriptions if subject_matches(s.subject, subject)]
        groups: dict[str, list[InMemorySubscription]] = {}
        for subscription in matching:
            if subscription.queue is not None:
                groups.setdefault(subscription.queue, []).append(subscription)
        chosen = set()
        for queue, members in groups.items():
            turn = self._queue_turns.get(queue, 0)
            chosen.add(id(members[turn % len(members)]))
            self._queue_turns[queue] = turn + 1
        return [s for s in matching if s.queue is None or id(s) in chosen]

    def _deliver(self, subscription, message):
        try:
            subscription.callback(message)
        except Exception:
            self.log.failure("subscriber to {subject} failed on a message on {msg_subject}",
                             subject=subscription.subject, msg_subject=message.subject)

    def _forget(self, subscription):
        self.subscriptions.remove(subscription)
