"""The Nudger: the only sender of starts and stops, rendered by the contract spoken.

The policy hands it orders (orders.py); the injected contract (health_manager/contracts)
turns each into the messages its Cloud Controller acts on. Starts wait in a de-duplicating
priority set and leave under a rate limit of `batch_size` per `period` seconds (a sliding
window): at once when the window has room, otherwise on the next `drain()`. Stops and
flapping restarts are published directly.

A queued start is an intent (its key, e.g. app and index) with a function that builds its
StartOrder when it leaves. Unlike HM 2.0, whose queue held finished payloads keyed with
their `running` counts (§5.11), the payload is built from the state at send time, and a start
whose index no longer needs one is dropped (HM9000 checked each message again before
sending it): a start that waited out a burst can neither carry stale counts nor start an
index twice.

The HA gate (DESIGN.md §8) sits here, where decisions leave the process: right before each
publication the injected ILeadership is asked `is_acting()`. A start or stop decided while
not acting is dropped, never sent later, so a standby's queue stays empty and a deposed
leader that resumes from a pause sends nothing it decided before.
"""

import heapq
from collections import OrderedDict, deque

import attrs
from twisted.logger import Logger

from health_manager.contracts.hm2.messages import Hm2Contract
from health_manager.durable import NothingDurable
from health_manager.leadership import SingleLeadership

# How many (droplet, index) start times the Nudger remembers for the operator views.
SENT_STARTS_KEPT = 100_000


class Nudger:
    log = Logger()

    def __init__(self, scheduler, bus, metrics, batch_size, period, leadership=None,
                 durable=None, contract=None, stop_repeat_window=0.0):
        self._scheduler = scheduler
        self._contract = contract = contract if contract is not None else Hm2Contract()
        # The subject is part of the format, so "sent health.start" (or hm9000.start) is the
        # line operators grep for, in text and in JSON logs alike.
        self._sent_start_format = (f"sent {contract.start_subject}: app_id={{droplet}} "
                                   "indices={indices} flapping={flapping} epoch={epoch}")
        self._sent_stop_format = (f"sent {contract.stop_subject}: app_id={{droplet}} "
                                  "instances={instances} epoch={epoch}")
        self._leadership = leadership if leadership is not None else SingleLeadership()
        # Each start sent is recorded as an intent, so a new leader does not repeat it.
        self._durable = durable if durable is not None else NothingDurable()
        self._was_acting = True
        self._bus = bus
        self._metrics = metrics
        self._batch_size = batch_size
        self._period = period
        self._queued = {}  # (droplet id, index) -> [priority, sequence, build]
        self._queued_by_droplet = {}  # droplet id -> {key: None}: the operator views' index
        self._heap = []  # (-priority, sequence, key); entries no longer in _queued are stale
        self._sequence = 0
        # Send times of the last `batch_size` queued starts.
        self._sent_times: deque[float] = deque()
        # (droplet, index) -> when its last start was sent, for "why not" answers; bounded.
        self._last_sent = OrderedDict()
        # An instance stopped less than this long ago is not named again: the CC's stop
        # reaches its DEA at once, and the instance then needs a heartbeat period to drop
        # out of the actual state (HM9000 kept a sent stop 30 s for the same reason).
        self._stop_repeat_window = stop_repeat_window
        self._stopped_at = OrderedDict()  # instance guid -> when a stop last named it
        metrics.set_queue_length_source(self.__len__)

    def __len__(self):
        return len(self._queued)

    def queue_start(self, droplet_id, index, priority, build):
        """Queue a start of `index`; `build()` gives its StartOrder when it leaves, or None
        when it is no longer needed. A start already queued for the same index is kept, at
        the higher of the two priorities. Not acting (HA standby): dropped at once."""
        if not self._acting():
            self._suppressed(1)
            return
        key = (droplet_id, index)
        entry = self._queued.get(key)
        if entry is None:
            self._push(key, build, priority)
        elif priority > entry[0]:
            # Unlike HM 2.0, an evacuation must not wait behind the crash restart it repeats.
            self._push(key, entry[2], priority)
        self.drain()

    def drain(self):
        """Publish queued starts, highest priority first, while the rate limit allows."""
        sent = 0
        if self._queued and not self._acting():
            self._suppressed(self.discard_pending())
            return sent
        while self._queued and self._budget_left():
            entry = self._pop()
            if entry is None:
                break
            order = entry[2]()
            if order is None:
                self._metrics.queued_starts_dropped += 1
                continue
            self._sent_times.append(self._scheduler.now())
            self.publish_start(order, priority=entry[0])
            sent += 1
        return sent

    def publish_start(self, order, priority=None):
        """Send a StartOrder at once, bypassing the queue (flapping restarts)."""
        if not self._acting():
            self._suppressed(1)
            return False
        contract = self._contract
        self._bus.publish(contract.start_subject, contract.start_message(order))
        self._metrics.health_start_messages_sent += 1
        self._metrics.count_start(priority)
        droplet_id, index = order.droplet.id, order.index
        last_sent = self._last_sent
        key = (droplet_id, index)
        last_sent.pop(key, None)
        last_sent[key] = self._scheduler.now()
        self._durable.record_start(droplet_id, order.version, index)
        while len(last_sent) > SENT_STARTS_KEPT:
            last_sent.popitem(last=False)
        self.log.info(self._sent_start_format, droplet=droplet_id, indices=[index],
                      flapping=order.flapping, epoch=self._leadership.epoch)
        return True

    def publish_stop(self, order, reason=None):
        """Send a StopOrder at once; refuses one without instances (the DEA would stop
        all). `reason` (the policy's words) only labels the stop in the metrics."""
        if not order.instances:
            self.log.warn("refused a stop without instances for droplet {droplet}",
                          droplet=order.droplet.id)
            return False
        if not self._acting():
            self._suppressed(1)
            return False
        if self._stop_repeat_window:
            order = self._not_stopped_lately(order)
            if order is None:
                return False
        contract = self._contract
        for message in contract.stop_messages(order):
            self._bus.publish(contract.stop_subject, message)
            self._metrics.health_stop_messages_sent += 1
        self._metrics.count_stop(reason)
        self.log.info(self._sent_stop_format, droplet=order.droplet.id,
                      instances=sorted(order.instances), epoch=self._leadership.epoch)
        return True

    def _not_stopped_lately(self, order):
        """`order` without the instances a stop named within the repeat window (None when
        that leaves none); the others are remembered as stopped now."""
        now = self._scheduler.now()
        window = self._stop_repeat_window
        stopped_at = self._stopped_at
        while stopped_at:
            guid, when = next(iter(stopped_at.items()))
            if now - when < window and len(stopped_at) <= SENT_STARTS_KEPT:
                break
            del stopped_at[guid]
        fresh = {guid: target for guid, target in order.instances.items()
                 if guid not in stopped_at}
        if not fresh:
            return None
        for guid in fresh:
            stopped_at[guid] = now
        return order if len(fresh) == len(order.instances) else attrs.evolve(
            order, instances=fresh)

    # -- read-only views for the operator surface (health_manager/web) -------------------

    def last_start_sent(self, droplet_id, index):
        """When a start for (droplet, index) was last sent, or None if not remembered."""
        return self._last_sent.get((droplet_id, index))

    def queued_starts(self, droplet_id):
        """{index: priority} of the starts of one droplet waiting in the queue."""
        return {index: self._queued[(droplet_id, index)][0]
                for _, index in self._queued_by_droplet.get(droplet_id, ())}

    def discard_pending(self):
        """Drop every queued start (shutdown); returns how many were dropped."""
        count = len(self._queued)
        self._queued.clear()
        self._queued_by_droplet.clear()
        self._heap.clear()
        return count

    def is_acting(self):
        """Whether a start or stop decided now would be sent (HA: this HM leads)."""
        return self._acting()

    def _acting(self):
        """Ask the leadership now; log once per change, not once per message."""
        acting = self._leadership.is_acting()
        if acting != self._was_acting:
            self._was_acting = acting
            leadership = self._leadership
            if acting:
                self.log.info("acting: {start} and {stop} are sent (role {role}, epoch "
                              "{epoch})", start=self._contract.start_subject,
                              stop=self._contract.stop_subject, role=leadership.role,
                              epoch=leadership.epoch)
            else:
                self.log.info("not acting: {start} and {stop} are dropped (role {role}, "
                              "leader {leader}, epoch {epoch})",
                              start=self._contract.start_subject,
                              stop=self._contract.stop_subject, role=leadership.role,
                              leader=leadership.leader_id, epoch=leadership.epoch)
        return acting

    def _suppressed(self, count):
        self._metrics.ha_suppressed_messages += count

    def _push(self, key, build, priority):
        self._sequence += 1
        self._queued[key] = [priority, self._sequence, build]
        self._queued_by_droplet.setdefault(key[0], {})[key] = None
        heapq.heappush(self._heap, (-priority, self._sequence, key))

    def _pop(self):
        heap = self._heap
        while heap:
            negative_priority, sequence, key = heapq.heappop(heap)
            entry = self._queued.get(key)
            if entry is not None and entry[1] == sequence:
                del self._queued[key]
                self._unindex(key)
                return entry
        return None

    def _unindex(self, key):
        keys = self._queued_by_droplet.get(key[0])
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._queued_by_droplet[key[0]]

    def _budget_left(self):
        times = self._sent_times
        now = self._scheduler.now()
        while times and now - times[0] >= self._period:
            times.popleft()
        return len(times) < self._batch_size
