"""The Nudger: the only publisher of `health.start` and `health.stop`.

Starts wait in a de-duplicating priority set and leave under a rate limit of `batch_size`
per `period` seconds (a sliding window): at once when the window has room, otherwise on
the next `drain()`. Stops and flapping restarts are published directly.

The HA gate (DESIGN.md §8) sits here, where decisions leave the process: right before each
publication the injected ILeadership is asked `is_acting()`. A start or stop decided while
not acting is dropped, never sent later, so a standby's queue stays empty and a deposed
leader that resumes from a pause sends nothing it decided before.
"""

import heapq
from collections import deque

import orjson
from twisted.logger import Logger

from health_manager.leadership import SingleLeadership

START_SUBJECT = "health.start"
STOP_SUBJECT = "health.stop"


def dedup_key(payload):
    """A start's identity in the queue: its payload without `last_updated` (§5.11)."""
    return orjson.dumps({k: v for k, v in payload.items() if k != "last_updated"},
                        option=orjson.OPT_SORT_KEYS)


class Nudger:
    log = Logger()

    def __init__(self, scheduler, bus, metrics, batch_size, period, leadership=None):
        self._scheduler = scheduler
        self._leadership = leadership if leadership is not None else SingleLeadership()
        self._was_acting = True
        self._bus = bus
        self._metrics = metrics
        self._batch_size = batch_size
        self._period = period
        self._queued = {}  # key -> [priority, sequence, payload]
        self._heap = []  # (-priority, sequence, key); entries no longer in _queued are stale
        self._sequence = 0
        self._sent_times = deque()  # send times of the last `batch_size` queued starts
        metrics.set_queue_length_source(self.__len__)

    def __len__(self):
        return len(self._queued)

    def queue_start(self, payload, priority):
        """Queue a start; a duplicate is dropped, or raises the queued one's priority."""
        if not self._acting():
            self._suppressed(1)
            return
        key = dedup_key(payload)
        entry = self._queued.get(key)
        if entry is None:
            self._push(key, payload, priority)
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
            payload = self._pop()
            if payload is None:
                break
            self._sent_times.append(self._scheduler.now())
            self.publish_start(payload)
            sent += 1
        return sent

    def publish_start(self, payload):
        """Publish a start at once, bypassing the queue (flapping restarts)."""
        if not self._acting():
            self._suppressed(1)
            return False
        self._bus.publish(START_SUBJECT, orjson.dumps(payload))
        self._metrics.health_start_messages_sent += 1
        self.log.info("sent health.start: app_id={droplet} indices={indices} "
                      "flapping={flapping} epoch={epoch}", droplet=payload.get("droplet"),
                      indices=payload.get("indices"), flapping=payload.get("flapping"),
                      epoch=self._leadership.epoch)
        return True

    def publish_stop(self, payload):
        """Publish a stop at once; refuses one without instances (the DEA would stop all)."""
        if not payload.get("instances"):
            self.log.warn("refused health.stop without instances for droplet {droplet}",
                          droplet=payload.get("droplet"))
            return False
        if not self._acting():
            self._suppressed(1)
            return False
        self._bus.publish(STOP_SUBJECT, orjson.dumps(payload))
        self._metrics.health_stop_messages_sent += 1
        self.log.info("sent health.stop: app_id={droplet} instances={instances} "
                      "epoch={epoch}", droplet=payload.get("droplet"),
                      instances=sorted(payload["instances"]), epoch=self._leadership.epoch)
        return True

    def discard_pending(self):
        """Drop every queued start (shutdown); returns how many were dropped."""
        count = len(self._queued)
        self._queued.clear()
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
                self.log.info("acting: health.start and health.stop are sent (role {role}, "
                              "epoch {epoch})", role=leadership.role, epoch=leadership.epoch)
            else:
                self.log.info("not acting: health.start and health.stop are dropped (role "
                              "{role}, leader {leader}, epoch {epoch})", role=leadership.role,
                              leader=leadership.leader_id, epoch=leadership.epoch)
        return acting

    def _suppressed(self, count):
        self._metrics.ha_suppressed_messages += count

    def _push(self, key, payload, priority):
        self._sequence += 1
        self._queued[key] = [priority, self._sequence, payload]
        heapq.heappush(self._heap, (-priority, self._sequence, key))

    def _pop(self):
        heap = self._heap
        while heap:
            negative_priority, sequence, key = heapq.heappop(heap)
            entry = self._queued.get(key)
            if entry is not None and entry[1] == sequence:
                del self._queued[key]
                return entry[2]
        return None

    def _budget_left(self):
        times = self._sent_times
        now = self._scheduler.now()
        while times and now - times[0] >= self._period:
            times.popleft()
        return len(times) < self._batch_size
