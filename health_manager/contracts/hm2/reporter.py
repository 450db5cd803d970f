"""The Reporter: answers `healthmanager.status`, `.health` and `.droplet` from the registry.

Replies go only to the request's own reply subject; a request without one, for an unknown
droplet, or with a bad payload gets no reply (bad payloads are counted via metrics.reject).
"""

import orjson
from twisted.internet import defer
from twisted.logger import Logger

from health_manager.actual_state import BadMessage, decode_object, require_str
from health_manager.constants import CRASHED, FLAPPING

STATUS = "healthmanager.status"
HEALTH = "healthmanager.health"
DROPLET = "healthmanager.droplet"
REQUEST_QUEUE_GROUP = "health_manager"


class Reporter:
    log = Logger()

    def __init__(self, bus, registry, scheduler, metrics, config):
        self._bus = bus
        self._registry = registry
        self._scheduler = scheduler
        self._metrics = metrics
        self._max_entries = config.max_heartbeat_entries
        # With several HMs (HA), one queue group: each request gets exactly one reply.
        self._queue = REQUEST_QUEUE_GROUP if config.ha is not None else None

    def subscribe(self):
        """Subscribe the three request subjects; fires with the subscriptions."""
        return defer.gatherResults([
            self._bus.subscribe(STATUS, self.on_status, queue=self._queue),
            self._bus.subscribe(HEALTH, self.on_health, queue=self._queue),
            self._bus.subscribe(DROPLET, self.on_droplet, queue=self._queue),
        ], consumeErrors=True)

    def _reject(self, subject, problem):
        self._metrics.reject(subject)
        self.log.warn("rejected {subject} request: {problem}", subject=subject,
                      problem=problem)

    def _reply(self, message, payload):
        self._bus.publish(message.reply, orjson.dumps(payload))

    def on_status(self, message):
        self._metrics.healthmanager_status_msgs_received += 1
        try:
            body = decode_object(message.data)
            droplet_id = require_str(body, "droplet")
            state = require_str(body, "state")
            if state == FLAPPING:
                version = require_str(body, "version")
            elif state != CRASHED:
                raise BadMessage(f"field 'state' must be FLAPPING or CRASHED, got {state!r}")
        except BadMessage as e:
            self._reject(STATUS, e)
            return
        droplet = self._registry.get(droplet_id)
        if droplet is None or not message.reply:
            return
        if state == FLAPPING:
            self._reply(message, {"indices": [
                {"index": index, "since": since}
                for index, since in droplet.flapping_indices(version)]})
        else:
            self._reply(message, {"instances": [
                {"instance": guid, "since": crash_timestamp}
                for guid, (_, crash_timestamp) in droplet.crashes.items()]})

    def on_health(self, message):
        self._metrics.healthmanager_health_request_msgs_received += 1
        self._answer_each(message, HEALTH, ("droplet", "version"), lambda droplet, entry: {
            "droplet": droplet.id, "version": entry["version"],
            "healthy": droplet.healthy_count(entry["version"])})

    def on_droplet(self, message):
        self._metrics.healthmanager_droplet_request_msgs_received += 1
        self._answer_each(message, DROPLET, ("droplet",),
                          lambda droplet, entry: droplet.to_view())

    def _answer_each(self, message, subject, fields, answer):
        """One reply per entry naming a known droplet (§1.8, §1.9); entries whose `fields`
        are not strings are skipped and counted, unknown droplets get no reply."""
        try:
            entries = self._entries(message)
        except BadMessage as e:
            self._reject(subject, e)
            return
        skipped = 0
        for entry in entries:
            if type(entry) is not dict or any(type(entry.get(f)) is not str for f in fields):
                skipped += 1
                continue
            droplet = self._registry.get(entry["droplet"])
            if droplet is not None and message.reply:
                self._reply(message, answer(droplet, entry))
        self._count_skipped(subject, skipped, len(entries))

    def _entries(self, message):
        entries = decode_object(message.data).get("droplets")
        if type(entries) is not list:
            raise BadMessage("field 'droplets' must be an array")
        if len(entries) > self._max_entries:
            raise BadMessage(f"{len(entries)} entries, more than {self._max_entries}")
        return entries

    def _count_skipped(self, subject, skipped, total):
        if skipped:
            self._metrics.skip_entry(subject, skipped)
            self.log.warn("skipped {skipped} of {total} {subject} entries with missing or "
                          "mistyped fields", skipped=skipped, total=total, subject=subject)
