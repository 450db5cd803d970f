"""ActualState: what DEAs and the CC say happened, turned into model updates and
Harmonizer calls. Subscribes `dea.heartbeat`, `droplet.exited` and `droplet.updated`.

Every field is validated; a bad message is logged once and counted (metrics.reject), a bad
heartbeat entry is counted (metrics.skip_entry) while the other entries still apply. The
heartbeat handler is the hot path: one typed msgspec decode per message (orjson and a
per-entry check when that decode declines) and a few dict lookups per entry.
"""

import orjson
from twisted.internet import defer
from twisted.logger import Logger

from health_manager.constants import (
    EXIT_CRASHED,
    EXIT_DEA_EVACUATION,
    EXIT_DEA_SHUTDOWN,
    EXIT_STOPPED,
)
from health_manager.model.heartbeat import (
    decode_heartbeat_message,
    is_index,
    is_number,
    parse_heartbeat_entry,
)

HEARTBEAT = "dea.heartbeat"
EXITED = "droplet.exited"
UPDATED = "droplet.updated"


class BadMessage(ValueError):
    """A message whose shape or field types the health manager cannot use."""


def decode_object(data):
    """The JSON object in `data`; BadMessage for invalid JSON or a non-object."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadMessage(f"invalid JSON ({e})") from None
    if type(body) is not dict:
        raise BadMessage(f"expected a JSON object, got {type(body).__name__}")
    return body


def require_str(body, key):
    value = body.get(key)
    if type(value) is not str:
        raise BadMessage(f"field {key!r} must be a string, got {value!r}")
    return value


def require_index(body, key="index"):
    value = body.get(key)
    if not is_index(value):
        raise BadMessage(f"field {key!r} must be an integer >= 0, got {value!r}")
    return value


class ActualState:
    log = Logger()

    def __init__(self, config, bus, registry, harmonizer, freshness, metrics, scheduler,
                 heartbeat_observer=None):
        """`heartbeat_observer(dea, beats)`, when given, hears every applied heartbeat
        message: the id of the DEA that sent it (None when the message names none) and its
        entries (None for a skipped one). The HM9000 contract keeps its per-DEA ledger so."""
        self._intervals = config.intervals
        self._max_entries = config.max_heartbeat_entries
        self._bus = bus
        self._registry = registry
        self._harmonizer = harmonizer
        self._freshness = freshness
        self._metrics = metrics
        self._scheduler = scheduler
        self._heartbeat_observer = heartbeat_observer

    def subscribe(self):
        """Subscribe the three subjects and feed the bus connection state to freshness.
        Returns a Deferred firing with the subscriptions."""
        self._bus.add_connection_listener(self._freshness.on_connection_changed)
        if self._bus.connected:
            self._freshness.on_connection_changed(True)
        return defer.gatherResults([
            self._bus.subscribe(HEARTBEAT, self.on_heartbeat),
            self._bus.subscribe(EXITED, self.on_exited),
            self._bus.subscribe(UPDATED, self.on_updated),
        ], consumeErrors=True)

    def _reject(self, subject, problem):
        self._metrics.reject(subject)
        self.log.warn("rejected {subject} message: {problem}", subject=subject,
                      problem=problem)

    def on_heartbeat(self, message):
        metrics = self._metrics
        metrics.heartbeat_msgs_received += 1
        decoded = decode_heartbeat_message(message.data)
        try:
            if decoded is None:
                dea, beats = self._parse_heartbeat(message.data)
            else:
                dea, beats = decoded.dea, decoded.droplets
                if len(beats) > self._max_entries:
                    raise self._too_many(beats)
        except BadMessage as e:
            self._reject(HEARTBEAT, e)
            return
        try:
            self._apply_heartbeat(beats)
            if self._heartbeat_observer is not None:
                self._heartbeat_observer(dea, beats)
        except Exception:
            metrics.reject(HEARTBEAT)
            self.log.failure("failed to apply a {subject} message", subject=HEARTBEAT)

    def _parse_heartbeat(self, data):
        """The reference path, for a message the fast decode did not take: the sender's DEA
        id (None unless a string) and a Heartbeat, or None for an entry to skip, per entry;
        BadMessage when the message is unusable."""
        body = decode_object(data)
        entries = body.get("droplets")
        if type(entries) is not list:
            raise BadMessage("field 'droplets' must be an array")
        if len(entries) > self._max_entries:
            raise self._too_many(entries)
        dea = body.get("dea")
        return (dea if type(dea) is str else None,
                [parse_heartbeat_entry(entry) for entry in entries])

    def _too_many(self, entries):
        return BadMessage(f"{len(entries)} entries, more than max_heartbeat_entries "
                          f"({self._max_entries})")

    def _apply_heartbeat(self, beats):
        self._freshness.on_heartbeat()
        now = self._scheduler.now()
        get_or_create = self._registry.get_or_create
        droplet_lost = self._intervals.droplet_lost
        crowded = None
        skipped = 0
        for beat in beats:
            if beat is None:
                skipped += 1
                continue
            droplet = get_or_create(beat.droplet, now)
            if droplet.process_heartbeat(beat, now, droplet_lost) is not None:
                if crowded is None:
                    crowded = {}
                crowded[droplet.id] = droplet
        if crowded is not None:
            # After the whole message: its other entries may say who else runs.
            for droplet in crowded.values():
                self._harmonizer.on_heartbeat_news(droplet)
        self._metrics.instance_heartbeats_received += len(beats) - skipped
        if skipped:
            self._metrics.skip_entry(HEARTBEAT, skipped)
            self.log.warn("skipped {skipped} of {total} {subject} entries with missing or "
                          "mistyped fields", skipped=skipped, total=len(beats),
                          subject=HEARTBEAT)

    def on_exited(self, message):
        self._metrics.droplet_exited_msgs_received += 1
        try:
            body = decode_object(message.data)
            droplet_id = require_str(body, "droplet")
            version = require_str(body, "version")
            guid = require_str(body, "instance")
            index = require_index(body)
            reason = require_str(body, "reason")
            crash_timestamp = body.get("crash_timestamp")
            if reason == EXIT_CRASHED and not is_number(crash_timestamp):
                raise BadMessage(f"a CRASHED exit needs a numeric 'crash_timestamp', got "
                                 f"{crash_timestamp!r}")
        except BadMessage as e:
            self._reject(EXITED, e)
            return
        try:
            self._apply_exit(droplet_id, version, guid, index, reason, crash_timestamp)
        except Exception:
            self._metrics.reject(EXITED)
            self.log.failure("failed to apply a {subject} message", subject=EXITED)

    def _apply_exit(self, droplet_id, version, guid, index, reason, crash_timestamp):
        now = self._scheduler.now()
        droplet = self._registry.get_or_create(droplet_id, now)
        instance, held = droplet.process_exit(version, index, guid, now)
        if reason == EXIT_CRASHED:
            intervals = self._intervals
            droplet.process_exit_crash(instance, guid, crash_timestamp,
                                       intervals.flapping_timeout, intervals.flapping_death,
                                       now, held)
            self._harmonizer.on_exit_crashed(droplet, version, index, instance, held)
        elif reason == EXIT_DEA_SHUTDOWN or reason == EXIT_DEA_EVACUATION:
            self._harmonizer.on_exit_dea(droplet, version, index, held, guid)
        elif reason == EXIT_STOPPED:
            self._harmonizer.on_exit_stopped(droplet, index)
        else:
            self.log.info("instance exited with unknown reason {reason}: app_id={droplet} "
                          "index={index}", reason=reason, droplet=droplet_id, index=index)

    def on_updated(self, message):
        self._metrics.droplet_updated_msgs_received += 1
        try:
            droplet_id = require_str(decode_object(message.data), "droplet")
        except BadMessage as e:
            self._reject(UPDATED, e)
            return
        try:
            droplet = self._registry.get_or_create(droplet_id, self._scheduler.now())
            self._harmonizer.on_droplet_updated(droplet)
        except Exception:
            self._metrics.reject(UPDATED)
            self.log.failure("failed to apply a {subject} message", subject=UPDATED)
