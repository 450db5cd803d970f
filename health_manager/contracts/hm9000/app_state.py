"""The answer to HM9000's app-state questions: the App JSON of HM9000.md §2.2 for a
(droplet, version), one or many, from the registry (desired state, crash counts) and the
HeartbeatLedger (every instance each DEA lists).

Shape decisions (HM9000.md §2.2):
- `desired` carries the fields of 2013-11-20 to 2016-05 (`id`, `version`, `instances`,
  `state`, `package_state`; HM9000 dropped `memory` and `updated_at` before cf-release
  v151, the first to run HM9000, and `desired` itself in v238). No CC reads `desired`, so
  keeping it is harmless to later CCs and true to the era that had it.
- An app exists when it is desired (STARTED, package STAGED or PENDING, this version) or an
  instance of it is listed: HM9000 until v238. So a desired app without heartbeats answers
  with an empty `instance_heartbeats`, which the CC reads as 0 healthy, not "unknown".
- The reply is `{}` while the actual state is not fresh, as HM9000's from v238 on (only
  actual freshness gates it): a CC asking during a bulk-API outage still sees its instances.
"""

from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from health_manager.constants import PENDING, STAGED, STARTED
from health_manager.contracts.hm9000.ledger import HeartbeatLedger
from health_manager.freshness import ActualFreshness
from health_manager.model.instance import AppInstance
from health_manager.model.registry import DropletRegistry

EMPTY = b"{}"
NOT_DESIRED = {"id": "", "version": "", "instances": 0, "state": "", "package_state": ""}
DESIRED_PACKAGE_STATES = frozenset((STAGED, PENDING))
SLICE_BUDGET = 0.010  # seconds of one reactor turn spent rendering a bulk reply
_CHECK_EVERY = 8  # apps rendered between two looks at the slice's budget


class BadRequest(ValueError):
    """An app-state request that does not parse; the message says why."""


class AppStateRequest(msgspec.Struct):
    # As HM9000's Go decode: a missing field is "", another type is an error.
    droplet: str = ""
    version: str = ""


_ONE = msgspec.json.Decoder(AppStateRequest)
_MANY = msgspec.json.Decoder(list[AppStateRequest])


def parse_app_request(data: bytes) -> tuple[str, str]:
    """(droplet, version) of an `app.state` request `{"droplet", "version"}`."""
    try:
        request = _ONE.decode(data)
    except msgspec.DecodeError as e:
        raise BadRequest(str(e)) from None
    return request.droplet, request.version


def parse_bulk_request(data: bytes) -> list[tuple[str, str]]:
    """[(droplet, version)] of a bulk request, a JSON array of `{"droplet", "version"}`."""
    try:
        requests = _MANY.decode(data)
    except msgspec.DecodeError as e:
        raise BadRequest(str(e)) from None
    return [(request.droplet, request.version) for request in requests]


def crash_series(record: AppInstance, now: float,
                 flapping_timeout: float) -> tuple[int, float] | None:
    """(crash count, when the series began) of a slot's current crash series, or None when
    it has none: HM9000 forgot a count `flapping_timeout` after its last crash (the
    record's TTL), while the slot model only restarts it at the next crash.

    `created_at` should be the first crash of the series; until the slot model records it
    (`AppInstance.crashes_since`), the last crash's time stands in for it. No CC reads it
    but to show "since" beside FLAPPING."""
    last_crash = record.last_crash_timestamp
    if record.crash_count <= 0 or last_crash is None or now - last_crash > flapping_timeout:
        return None
    return record.crash_count, last_crash


class AppStateRenderer:
    """Renders App JSON; `clock` is the Scheduler's (fake time in black-box mode)."""

    def __init__(self, registry: DropletRegistry, ledger: HeartbeatLedger,
                 freshness: ActualFreshness, clock: IReactorTime,
                 flapping_timeout: float) -> None:
        self._registry = registry
        self._ledger = ledger
        self._freshness = freshness
        self._clock = clock
        self._flapping_timeout = flapping_timeout

    def is_fresh(self) -> bool:
        return self._freshness.is_fresh()

    def app(self, droplet_id: str, version: str) -> dict[str, Any] | None:
        """The App JSON of (droplet, version), or None when the app does not exist."""
        heartbeats = [
            {"droplet": beat.droplet, "version": beat.version, "instance": beat.instance,
             "index": beat.index, "state": beat.state,
             # EVACUATING entries may carry none: Go's zero value.
             "state_timestamp": float(beat.state_timestamp or 0), "dea_guid": dea}
            for dea, beat in self._ledger.entries(droplet_id, version)]
        droplet = self._registry.get(droplet_id)
        desired = None
        if (droplet is not None and droplet.state == STARTED
                and droplet.live_version == version
                and droplet.package_state in DESIRED_PACKAGE_STATES):
            desired = {"id": droplet_id, "version": version,
                       "instances": droplet.num_instances, "state": droplet.state,
                       "package_state": droplet.package_state}
        if desired is None and not heartbeats:
            return None
        crash_counts = []
        slots = None if droplet is None else droplet.versions.get(version)
        if slots:
            now = self._clock.seconds()
            for index, record in sorted(slots.items()):
                series = crash_series(record, now, self._flapping_timeout)
                if series is not None:
                    crash_counts.append({
                        "droplet": droplet_id, "version": version, "instance_index": index,
                        "crash_count": series[0], "created_at": int(series[1])})
        return {"droplet": droplet_id, "version": version,
                "desired": NOT_DESIRED if desired is None else desired,
                "instance_heartbeats": heartbeats, "crash_counts": crash_counts}

    def app_json(self, droplet_id: str, version: str) -> bytes:
        """The `app.state` reply: the App JSON, or `{}` when not fresh or unknown."""
        if not self.is_fresh():
            return EMPTY
        app = self.app(droplet_id, version)
        return EMPTY if app is None else orjson.dumps(app)



class BulkRender:
    """One bulk reply, rendered over as many reactor turns as it needs (a reply for 500
    apps at 100k instances holds tens of thousands of entries). `done` fires with the body:
    `{}` when the actual state is not fresh when it begins, else guid -> App JSON for the
    apps that exist; a guid asked twice shows the last of its versions that exists (as
    HM9000's map assignment)."""

    def __init__(self, renderer: AppStateRenderer, requests: list[tuple[str, str]],
                 reactor: IReactorTime, budget: float) -> None:
        self._renderer = renderer
        self._requests = requests
        self._reactor = reactor
        self._budget = budget
        self._position = 0
        self._found: dict[str, bytes] = {}
        self._call: IDelayedCall | None = None
        self._cancelled = False
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self.cancel())

    def run(self) -> "defer.Deferred[bytes]":
        if not self._renderer.is_fresh():
            self.done.callback(EMPTY)
        else:
            self._slice()
        return self.done

    def cancel(self) -> None:
        """Stop rendering (the client went away)."""
        self._cancelled = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _slice(self) -> None:
        self._call = None
        if self._cancelled:
            return
        render: Callable[[str, str], dict[str, Any] | None] = self._renderer.app
        seconds = self._reactor.seconds
        requests = self._requests
        found = self._found
        began = seconds()
        position = self._position
        while position < len(requests):
            droplet, version = requests[position]
            position += 1
            app = render(droplet, version)
            if app is not None:
                found[droplet] = orjson.dumps(app)
            if position % _CHECK_EVERY == 0 and seconds() - began >= self._budget:
                break
        self._position = position
        if position < len(requests):
            self._call = self._reactor.callLater(0, self._slice)
            return
        self.done.callback(b"{" + b",".join(orjson.dumps(guid) + b":" + body
                                           for guid, body in found.items()) + b"}")
